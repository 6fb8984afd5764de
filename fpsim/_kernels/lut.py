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

The fused fake-quantization loops (``fake_quant_*``) round the common formats
(signed floats with zero and subnormals, signed integers; nearest-even) by
arithmetic instead, which vectorises: the ``ap`` tuple of
``fpsim.dispatch.arith_params``.  The arithmetic is exact only where the result
is finite and at most ``fmax`` in magnitude; a row holding any other element
(NaN, Inf, an overflow, the asymmetric minimum of an integer format) is redone
through the table, which stays the reference (``tests/test_kernels_lut.py``
checks the two agree on every float32 bit pattern class).
"""

import math

import numpy as np

from ._util import inline, jit, pjit, prange
from .bits import bits_f32, f32_bits
from .scalar import stochastic_bits, stochastic_pair

_LOW32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)

_LOW = 0xFFFF
_SECOND = 1 << 16
_MAG = np.int32(0x7FFFFFFF)
_INF_BITS = np.int32(0x7F800000)


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
    """The largest finite magnitude of row r (0 if none): NaN and Inf never set a scale.
    A maximum of the magnitude bits (ordered as the values), which vectorises."""
    m = np.int32(0)
    for j in range(x.shape[1]):
        a = f32_bits(x[r, j]) & _MAG
        m = max(m, a if a < _INF_BITS else np.int32(0))
    return bits_f32(m)


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


# indices of the ``ap`` tuple (fpsim.dispatch.arith_params)
(
    AP_SHIFT,  # 23 - mantissa bits: float32 fraction bits dropped (0 for integers); -1: no arithmetic
    AP_TINY,  # 2**emin (Inf for integers): below it a fixed quantum
    AP_MAGIC,  # 1.5 * 2**(23 + log2 quantum): (|y| + magic) - magic rounds to that quantum
    AP_MAX,  # largest finite magnitude: beyond it (or NaN) the table decides
    AP_NEGZERO,  # 1 if the format has -0
) = range(5)
# (integers take the fixed quantum everywhere, AP_TINY being Inf: the bit path, which
# shift 0 would get wrong, only meets their NaN and Inf, and those go to the table)


@inline
def _arith_row(x, out, r, scale, ap):
    """out[r] = fake quantization of x[r] / scale by arithmetic (nearest-even);
    False if some element is beyond the format's finite range or NaN (then
    out[r] is not final).  Branch-free, so the loop vectorises."""
    shift = np.int32(ap[AP_SHIFT])
    unit = np.int32(1) << shift
    half = (unit >> np.int32(1)) - np.int32(1)
    keep = ~(unit - np.int32(1))
    tiny = np.float32(ap[AP_TINY])
    magic = np.float32(ap[AP_MAGIC])
    fmax = np.float32(ap[AP_MAX])
    negzero = ap[AP_NEGZERO] != 0
    ok = True
    for j in range(x.shape[1]):
        y = x[r, j] / scale
        ay = abs(y)
        # nearest-even on the magnitude bits (a carry moves into the exponent); NaN
        # and Inf are held at Inf's bits, so nothing wraps
        a = min(f32_bits(ay), _INF_BITS)
        v = bits_f32((a + half + ((a >> shift) & np.int32(1))) & keep)
        if ay < tiny:  # below the normal range: a fixed quantum
            v = (ay + magic) - magic
        ok &= v <= fmax
        v = np.float32(np.copysign(v, y))
        if not negzero:
            v = v + np.float32(0.0)  # -0 -> +0
        out[r, j] = v * scale
    return ok


@inline
def _table_row(x, out, buf, r, scale, table):
    n = x.shape[1]
    for j in range(n):
        buf[j] = x[r, j] / scale
    bits = buf.view(np.uint32)
    for j in range(n):
        b = np.int64(bits[j])
        v = table[(b >> 16) + (_SECOND if (b & _LOW) != 0 else 0)]
        if math.isnan(buf[j]) and not math.isnan(v):
            v = np.float32(np.nan)  # NaN stays NaN in formats without one
        out[r, j] = v * scale


@inline
def _fake_quant_row(x, out, buf, r, scale, table, ap):
    """out[r] = table-exact fake quantization of x[r] / scale (NaN stays NaN, also in
    formats without one); True if the table had to do it (the arithmetic does not
    apply or met a special)."""
    if ap[AP_SHIFT] >= 0 and _arith_row(x, out, r, scale, ap):
        return False
    _table_row(x, out, buf, r, scale, table)
    return True


@jit
def fake_quant_scaled(x, out, scale, table, ap):
    """out = fake quantization of the 2-D float32 ``x`` with one given ``scale``
    (float32); returns how many rows the table did.  The kernels below, with
    the scale fixed (and the test of the arithmetic against the table)."""
    buf = np.empty(x.shape[1], dtype=np.float32)
    redone = 0
    for r in range(x.shape[0]):
        redone += _fake_quant_row(x, out, buf, r, scale, table, ap)
    return redone


@jit
def fake_quant_rows(x, out, table, fmax, per_row, ap):
    """Fused amax-scaled fake quantization of float32 rows (or the whole 2-D array).

    scale = float32(amax / fmax) (1 where amax is 0), elements ``x / scale`` rounded
    through ``table`` (float32 values on the hi16 index) or, where it gives the
    same values, by the arithmetic of ``ap``; times scale.  Mirrors
    ``fpsim.quant.fake_quantize`` for symmetric max-calibrated amax scaling.
    """
    rows = x.shape[0]
    buf = np.empty(x.shape[1], dtype=np.float32)
    if per_row:
        for r in range(rows):
            amax = _row_amax(x, r)
            scale = _amax_scale(amax, fmax)
            _fake_quant_row(x, out, buf, r, scale, table, ap)
    else:
        amax = np.float32(0.0)
        for r in range(rows):
            amax = max(amax, _row_amax(x, r))
        scale = _amax_scale(amax, fmax)
        for r in range(rows):
            _fake_quant_row(x, out, buf, r, scale, table, ap)


@pjit
def fake_quant_tensor_parallel(x, out, table, fmax, ap):
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
        _fake_quant_row(x, out, buf, r, scale, table, ap)


@pjit
def fake_quant_rows_parallel(x, out, table, fmax, ap):
    """Per-row version of fake_quant_rows over both cores."""
    rows = x.shape[0]
    for r in prange(rows):
        buf = np.empty(x.shape[1], dtype=np.float32)
        amax = _row_amax(x, r)
        scale = _amax_scale(amax, fmax)
        _fake_quant_row(x, out, buf, r, scale, table, ap)
