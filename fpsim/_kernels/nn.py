"""Elementwise neural-network kernels that NumPy lacks: the exact (erf) GELU.

``gelu(x) = x * Phi(x) = x / 2 * (1 + erf(x / sqrt(2)))``, evaluated in float64 with
``math.erf`` and rounded once to the output's dtype (float32 in the models).  NumPy has
no ``erf``, and the tanh approximation of GELU is off by up to 4.7e-4 (near x = -2.7),
which shows in a BERT's hidden states (BERT checkpoints were trained with the exact
GELU).  ``gelu(-inf)`` is its limit, -0.0 (the formula would give ``-inf * 0 = nan``).

Kernels take flat contiguous arrays and write into a preallocated output;
:func:`fpsim.models.layers.gelu` is the public wrapper (it validates, flattens and
picks the serial or parallel kernel by size).  :func:`gelu_reference` is the
readable pure-Python twin the tests compare the kernels with.
"""

import math

from ._util import inline, jit, pjit, prange

_SQRT_HALF = math.sqrt(0.5)


@inline
def gelu_scalar(x):
    """Exact GELU of one float64 ``x``."""
    if x == -math.inf:
        return -0.0
    return 0.5 * x * (1.0 + math.erf(x * _SQRT_HALF))


@jit
def gelu_serial(x, out):
    """``out[i] = gelu(x[i])`` for flat arrays (one thread)."""
    for i in range(x.size):
        out[i] = gelu_scalar(float(x[i]))


@pjit
def gelu_parallel(x, out):
    """``out[i] = gelu(x[i])`` for flat arrays (all Numba threads)."""
    for i in prange(x.size):
        out[i] = gelu_scalar(float(x[i]))


def gelu_reference(values):
    """The readable twin: exact GELU of each value (a list of Python floats)."""
    return [-0.0 if v == -math.inf else 0.5 * v * (1.0 + math.erf(v * math.sqrt(0.5)))
            for v in values]
