"""Table-driven loops for float32 and float16 inputs.

For a format whose rounding point always lies at or above bit 17 of a float32
input (formats with at most 6 mantissa bits, and small integers), the code of
a float32 depends only on its top 16 bits and on whether its low 16 bits are
zero.  ``fpsim.codec`` builds a 2 x 65536-entry table with the generic scalar
kernel, so these loops give the generic kernel's codes bit for bit at a
fraction of the cost.  Float16 inputs index a 65536-entry table directly.
``quantize`` uses the same loops with tables of values instead of codes.
Stochastic rounding stacks the codes below (for exact and inexact low
halves) and above, and compares the 32-bit fraction with the element's
random bits; it serves the formats that the faster 32-bit block kernels of
:mod:`fpsim._kernels.stochastic` do not take (the unsigned ones).
"""

import numpy as np

from ._util import inline, jit, pjit, prange
from .scalar import stochastic_bits, stochastic_pair

_LOW32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)

_LOW = 0xFFFF
_SECOND = 1 << 16


@jit
def hi16_serial(xb, out, table):
    for i in range(xb.size):
        b = np.int64(xb[i])
        out[i] = table[(b >> 16) + (_SECOND if (b & _LOW) != 0 else 0)]


@pjit
def hi16_parallel(xb, out, table):
    for i in prange(xb.size):
        b = np.int64(xb[i])
        out[i] = table[(b >> 16) + (_SECOND if (b & _LOW) != 0 else 0)]


@jit
def direct_serial(xb, out, table):
    for i in range(xb.size):
        out[i] = table[np.int64(xb[i])]


@pjit
def direct_parallel(xb, out, table):
    for i in prange(xb.size):
        out[i] = table[np.int64(xb[i])]


@inline
def _sr_one(b, table, shift_tab, r):
    """Code of one float32 (bits ``b``) given its 32 random bits ``r``."""
    a = b & 0x7FFFFFFF
    be = a >> 23
    sig = (a & 0x7FFFFF) | ((np.int64(1) << 23) if be != 0 else 0)
    s = shift_tab[be]
    frac32 = ((sig << (32 - s)) & 0xFFFFFFFF) if s <= 32 else (sig >> (s - 32))
    # table = [down exact; down inexact; up; up]: an index, not a branch (the
    # choice is a coin flip)
    j = (b >> 16) + (_SECOND if (b & _LOW) != 0 else 0)
    return table[j + (np.int64(frac32 > r) << 17)]


@jit
def sr_hi16_serial(xb, out, table, shift_tab, seed):
    n = xb.size
    for k in range(n >> 1):
        z = stochastic_pair(seed, k)
        out[2 * k] = _sr_one(np.int64(xb[2 * k]), table, shift_tab, np.int64(z & _LOW32))
        out[2 * k + 1] = _sr_one(np.int64(xb[2 * k + 1]), table, shift_tab, np.int64(z >> _S32))
    if n & 1:
        out[n - 1] = _sr_one(np.int64(xb[n - 1]), table, shift_tab, stochastic_bits(seed, n - 1))


@pjit
def sr_hi16_parallel(xb, out, table, shift_tab, seed):
    n = xb.size
    for k in prange(n >> 1):
        z = stochastic_pair(seed, k)
        out[2 * k] = _sr_one(np.int64(xb[2 * k]), table, shift_tab, np.int64(z & _LOW32))
        out[2 * k + 1] = _sr_one(np.int64(xb[2 * k + 1]), table, shift_tab, np.int64(z >> _S32))
    if n & 1:
        out[n - 1] = _sr_one(np.int64(xb[n - 1]), table, shift_tab, stochastic_bits(seed, n - 1))


@inline
def _row_amax(x, r):
    m = np.float32(0.0)
    for j in range(x.shape[1]):
        a = abs(x[r, j])
        if a > m and a < np.inf:  # NaN and Inf never set a scale
            m = a
    return m


@inline
def _amax_scale(amax, fmax):
    """float32(amax / fmax), 1 for amax 0, at least the smallest float32 (never 0), and
    stepped down when ``fmax * scale`` would overflow float32 (as scaling._scale_from_clip)."""
    if amax <= 0:
        return np.float32(1.0)
    s = max(np.float32(np.float64(amax) / fmax), np.float32(1e-45))
    if np.float64(s) * fmax > 3.4028234663852886e38:
        s = np.float32(np.float64(s) * (1.0 - 2.0**-23))
    return s


@inline
def _fake_quant_row(x, out, buf, r, scale, table):
    n = x.shape[1]
    for j in range(n):
        buf[j] = x[r, j] / scale
    bits = buf.view(np.uint32)
    for j in range(n):
        b = np.int64(bits[j])
        out[r, j] = table[(b >> 16) + (_SECOND if (b & _LOW) != 0 else 0)] * scale


@jit
def fake_quant_rows(x, out, table, fmax, per_row):
    """Fused amax-scaled fake quantization of float32 rows (or the whole 2-D array).

    scale = float32(amax / fmax) (1 where amax is 0), elements ``x / scale`` rounded
    through ``table`` (float32 values on the hi16 index), times scale.  Mirrors
    ``fpsim.quant.fake_quantize`` for symmetric max-calibrated amax scaling.
    """
    rows = x.shape[0]
    buf = np.empty(x.shape[1], dtype=np.float32)
    if per_row:
        for r in range(rows):
            amax = _row_amax(x, r)
            scale = _amax_scale(amax, fmax)
            _fake_quant_row(x, out, buf, r, scale, table)
    else:
        amax = np.float32(0.0)
        for r in range(rows):
            amax = max(amax, _row_amax(x, r))
        scale = _amax_scale(amax, fmax)
        for r in range(rows):
            _fake_quant_row(x, out, buf, r, scale, table)


@pjit
def fake_quant_tensor_parallel(x, out, table, fmax):
    """fake_quant_rows(..., per_row=False) over both cores: one scale from the largest
    finite magnitude of all rows, then the rows quantized independently."""
    rows = x.shape[0]
    maxima = np.zeros(rows, dtype=np.float32)
    for r in prange(rows):
        maxima[r] = _row_amax(x, r)
    amax = np.float32(0.0)
    for r in range(rows):
        amax = max(amax, maxima[r])
    scale = _amax_scale(amax, fmax)
    for r in prange(rows):
        buf = np.empty(x.shape[1], dtype=np.float32)
        _fake_quant_row(x, out, buf, r, scale, table)


@pjit
def fake_quant_rows_parallel(x, out, table, fmax):
    """Per-row version of fake_quant_rows over both cores."""
    rows = x.shape[0]
    for r in prange(rows):
        buf = np.empty(x.shape[1], dtype=np.float32)
        amax = _row_amax(x, r)
        scale = _amax_scale(amax, fmax)
        _fake_quant_row(x, out, buf, r, scale, table)
