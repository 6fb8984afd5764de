"""One pass over a tensor and its quantized copy: the statistics a traced site records.

For values ``x`` and their quantized ``q`` (flat arrays, the same length), cut into rows of
``n`` elements (the last may be shorter) and each row into blocks of ``k`` elements with a
limit per block (``limit[row * nb + block]``), the kernels write per row:

* ``fsum[row, 0]``: the sum of ``x**2`` over finite ``x`` (the signal);
* ``fsum[row, 1]``: the sum of ``(q - x)**2`` over finite ``x`` (the noise);
* ``fsum[row, 2]``: the largest ``|x|`` over finite ``x`` (0 if none);
* ``isum[row, 0]``: how many ``|x|`` exceed their block's limit (saturated; NaN never does,
  an infinity always does unless the limit is infinite);
* ``isum[row, 1]``: how many nonzero ``x`` (NaN included) have ``q == 0`` (underflow).

Everything is computed in float64, summed in element order within a row; the caller adds
the rows in order, so the numbers do not depend on the thread count.  NumPy would make
five float64 temporaries of the tensor for this; :func:`error_stats_reference` is the
readable pure-Python twin the tests compare the kernels with.
"""

import math

import numpy as np

from ._util import inline, jit, pjit, prange


@inline
def _row(x, q, limit, n, k, nb, r, fsum, isum):
    start = r * n
    end = min(x.size, start + n)
    signal = 0.0
    noise = 0.0
    amax = 0.0
    sat = 0
    under = 0
    for b0 in range(start, end, k):
        lim = limit[r * nb + (b0 - start) // k]
        for j in range(b0, min(b0 + k, end)):
            xv = np.float64(x[j])
            qv = np.float64(q[j])
            a = abs(xv)
            if a > lim:
                sat += 1
            if xv != 0.0 and qv == 0.0:
                under += 1
            if math.isfinite(xv):
                if a > amax:
                    amax = a
                signal += xv * xv
                d = qv - xv
                noise += d * d
    fsum[r, 0] = signal
    fsum[r, 1] = noise
    fsum[r, 2] = amax
    isum[r, 0] = sat
    isum[r, 1] = under


@jit
def error_stats_serial(x, q, limit, n, k, nb, fsum, isum):
    """The per-row statistics (module docstring), one thread."""
    for r in range(fsum.shape[0]):
        _row(x, q, limit, n, k, nb, r, fsum, isum)


@pjit
def error_stats_parallel(x, q, limit, n, k, nb, fsum, isum):
    """The per-row statistics (module docstring), rows over all Numba threads."""
    for r in prange(fsum.shape[0]):
        _row(x, q, limit, n, k, nb, r, fsum, isum)


def error_stats_reference(x, q, limit, n, k):
    """Pure-Python twin: ``(signal, noise, amax, saturated, underflow)`` per row, as a list.

    Examples
    --------
    >>> error_stats_reference([1.0, -3.0, 0.5, float("inf")], [1.0, -2.0, 0.0, 2.0],
    ...                       [2.0, 9.0], n=4, k=2)
    [(10.25, 1.25, 3.0, 2, 1)]
    """
    x = [float(v) for v in np.ravel(x)]
    q = [float(v) for v in np.ravel(q)]
    limit = [float(v) for v in np.ravel(limit)]
    nb = -(-n // k)
    rows = []
    for r, start in enumerate(range(0, len(x), n)):
        signal = noise = amax = 0.0
        sat = under = 0
        for j in range(start, min(len(x), start + n)):
            xv, qv = x[j], q[j]
            if abs(xv) > limit[r * nb + (j - start) // k]:
                sat += 1
            if xv != 0 and qv == 0:
                under += 1
            if math.isfinite(xv):
                amax = max(amax, abs(xv))
                signal += xv * xv
                noise += (qv - xv) ** 2
        rows.append((signal, noise, amax, sat, under))
    return rows
