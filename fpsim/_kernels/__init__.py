"""Numba kernels: the only package of fpsim that imports numba.

The layers above call the kernels of its modules with plain ints, floats and arrays, and
ask :func:`use_parallel` whether a loop is worth the threads.
"""


def use_parallel(n: int) -> bool:
    """Whether a loop over ``n`` elements runs the parallel kernel.

    Read at call time: a process forked after a parallel launch turns it off
    (see :mod:`fpsim._kernels._util`), and tests may lower the threshold.
    """
    from . import _util

    return n >= _util.PARALLEL_THRESHOLD
