"""Numba kernels: the only package of fpsim that imports numba."""
