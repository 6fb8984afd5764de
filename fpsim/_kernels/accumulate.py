"""Matmul kernels with an emulated accumulator: C[i, j] = sum_k a[i, k] * b[k, j].

Products are formed in float64 from float32 operands, so they are exact
(24 + 24 significant bits <= 53).  Each output is summed **sequentially over
k** (k = 0, 1, ..., K-1) and every partial sum is rounded into the
accumulator: ``acc = round(acc + p_k)``, a single correct rounding of the
exact sum.  The exact sum of two float64 numbers is first rounded *to odd*
in float64 (``add_odd``); rounding that to a format of at most 51
significant bits by nearest-even gives the same result as rounding the exact
sum directly (the round-to-odd theorem: 53 >= p + 2).

Accumulator kinds (``kind``)::

    0 FLOAT32  float32: one fused multiply-add per product (exact a*b + acc,
               rounded once), on float32 buffers
    1 FAST     round to nearest-even on the bits of a float64: any signed
               binary format with subnormals and p <= 51 bits (rounder ``rp``).
               Sums in the normal range take a shortcut (``_fast_row``: the
               TwoSum error breaks ties, no round-to-odd); a row with a
               subnormal, overflowing or NaN sum is redone in full
    2 CODEC    any fpsim FloatFormat: the scalar codec kernel + a decode LUT

``promote > 0`` restarts the accumulator every ``promote`` products after
adding it to a float32 total (DeepSeek-V3's promotion to CUDA cores).
The tensor-core model and the int32 accumulator have their own loops below.
``fpsim.reference.accumulate`` is the readable pure-Python twin of every
loop here.

Loops: outputs are computed in tiles of ``ROWS`` rows by ``COLS`` columns
whose running accumulators live in a small buffer; the k loop runs over the
tile, the innermost loop over columns (it vectorises: all the rounding is
branch-free bit arithmetic).  A tile is one compiled function, called by the
serial kernels in a loop and by the parallel ones from ``prange`` (which
keeps their compilation short).
"""

import math

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from ._util import inline, jit, pjit, prange
from .bits import bits_f64, f64_bits
from .scalar import encode_float

FLOAT32, FAST, CODEC = range(3)
ROWS = 4
COLS = 256

# Indices of the rounder tuple ``rp`` of FAST accumulators.
(
    RP_SHIFT,  # 52 - mantissa bits: float64 fraction bits dropped
    RP_TINY,  # 2**emin: below it the format is subnormal
    RP_MAGIC,  # 1.5 * 2**(emin - m + 52): (|x| + magic) - magic rounds to the subnormal grid
    RP_MAX,  # largest finite value
    RP_OVERFLOW,  # value of an overflow: inf, nan or max
    RP_NEGZERO,  # 1 if the format has -0
) = range(6)

_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1


# ---- fused multiply-add in float32 ---------------------------------------------
if numba.config.DISABLE_JIT:  # plain Python

    def fma32(x, y, z):
        """float32 x * y + z with one rounding (the product is exact in float64)."""
        return np.float32(add_odd(np.float64(z), np.float64(x) * np.float64(y)))

else:

    @intrinsic
    def fma32(typingctx, x, y, z):
        """float32 x * y + z with one rounding (llvm.fma.f32)."""
        sig = types.float32(types.float32, types.float32, types.float32)

        def codegen(context, builder, signature, args):
            return builder.fma(*args)

        return sig, codegen


# ---- scalar steps ----------------------------------------------------------------
@inline
def two_sum_err(x, y, s):
    """The rounding error of s = fl(x + y): x + y == s + err exactly (Knuth's TwoSum)."""
    bv = s - x
    return (x - (s - bv)) + (y - bv)


@inline
def to_odd(s, err):
    """The exact s + err rounded to odd in float64 (|err| <= half an ulp of s)."""
    sb = f64_bits(s)
    # inexact and s even: step one ulp toward the exact sum (+1 moves away from zero);
    # abs(err) > 0 is False for the NaN err of an infinite s
    step = np.int64(-1) if (f64_bits(err) ^ sb) < 0 else np.int64(1)
    if abs(err) > 0.0 and (sb & 1) == 0:
        sb += step
    return bits_f64(sb)


@inline
def add_odd(x, y):
    """x + y rounded to odd in float64."""
    s = x + y
    return to_odd(s, two_sum_err(x, y, s))


@inline
def round_fast(x, rp):
    """x rounded to nearest-even in the format of rounder ``rp``, any range (Inf, NaN too).

    For a correct rounding of an exact sum, x is that sum rounded to odd."""
    shift = rp[RP_SHIFT]
    xb = f64_bits(x)
    # nearest-even on the magnitude bits (a carry moves into the exponent)
    unit = np.int64(1) << shift
    half = (unit >> 1) - 1
    # (the last kept bit, tested without a 64-bit arithmetic shift: AVX2 has none)
    rb = (xb + half + np.int64((xb & unit) != 0)) & ~(unit - 1)
    y = bits_f64(rb)
    ax = abs(x)
    if ax < rp[RP_TINY]:  # subnormal range: a fixed quantum
        y = math.copysign((ax + rp[RP_MAGIC]) - rp[RP_MAGIC], x)
    if abs(y) > rp[RP_MAX]:
        y = math.copysign(rp[RP_OVERFLOW], x)
    if math.isnan(x):
        y = x
    if rp[RP_NEGZERO] == 0:
        y = y + 0.0  # -0 -> +0
    return y


@inline
def add_f32(x, y):
    """float32(x + y), rounded once."""
    return np.float64(np.float32(add_odd(x, y)))


# ---- float accumulators ----------------------------------------------------------
@jit
def _float32_tile(a, b, out, i0, promote):
    """Rows i0 .. i0 + ROWS of ``out`` with a float32 accumulator: one fused
    multiply-add per product (the exact a * b + acc, rounded once)."""
    K = a.shape[1]
    N = b.shape[1]
    nr = min(ROWS, a.shape[0] - i0)
    acc = np.zeros((ROWS, COLS), dtype=np.float32)
    tot = np.zeros((ROWS, COLS), dtype=np.float32)
    for j0 in range(0, N, COLS):
        nj = min(COLS, N - j0)
        acc[:, :] = 0.0
        tot[:, :] = 0.0
        for k in range(K):
            for r in range(nr):
                aik = a[i0 + r, k]
                row = acc[r]
                brow = b[k, j0:j0 + nj]
                for j in range(nj):
                    row[j] = fma32(aik, brow[j], row[j])
            if promote > 0 and (k + 1) % promote == 0:
                for r in range(nr):
                    for j in range(nj):
                        tot[r, j] = tot[r, j] + acc[r, j]
                        acc[r, j] = 0.0
        for r in range(nr):
            for j in range(nj):
                out[i0 + r, j0 + j] = tot[r, j] + acc[r, j] if promote > 0 else acc[r, j]


@inline
def _fast_row(row, aik, brow, sums, errs, rp):
    """row[j] = round(row[j] + aik * brow[j]) in the normal range of a FAST format.

    The exact sum is s + err (TwoSum).  While s is normal and finite (or 0), rounding
    s on its bits decides like rounding the exact sum if the tie-breaker at a
    midpoint is err's direction when err != 0 (s = RN(x + y) with the midpoint
    representable: rem > half or < half means the same for s and x + y).  s and err
    are kept: if some s was subnormal, beyond max or NaN, the row is redone by
    ``_full_row`` and this returns True.
    """
    unit = np.int64(1) << rp[RP_SHIFT]
    half = (unit >> 1) - 1
    tiny = rp[RP_TINY]
    fmax = rp[RP_MAX]
    keep_negzero = rp[RP_NEGZERO] != 0
    redo = False
    for j in range(row.size):
        x = row[j]
        y = aik * np.float64(brow[j])
        s = x + y
        err = two_sum_err(x, y, s)
        sb = f64_bits(s)
        if err == 0.0:
            tie = np.int64((sb & unit) != 0)  # ties to even
        else:
            tie = np.int64((f64_bits(err) ^ sb) >= 0)  # up iff the exact sum is beyond s
        r = bits_f64((sb + half + tie) & ~(unit - 1))
        row[j] = r if keep_negzero else r + 0.0
        sums[j] = s
        errs[j] = err
        a = abs(s)
        redo |= not (a <= fmax) or (a < tiny and a != 0.0)
    return redo


@inline
def _full_row(row, sums, errs, rp):
    """row[j] = the exact sums[j] + errs[j] rounded by ``round_fast`` (every range)."""
    for j in range(row.size):
        row[j] = round_fast(to_odd(sums[j], errs[j]), rp)


@inline
def _step(row, aik, brow, sums, errs, kind, rp, fp, lut, mode):
    """row[j] = round(row[j] + aik * brow[j]), every j."""
    if kind == FAST:
        if _fast_row(row, aik, brow, sums, errs, rp):
            _full_row(row, sums, errs, rp)
    else:
        for j in range(row.size):
            s = add_odd(row[j], aik * np.float64(brow[j]))
            row[j] = lut[encode_float(f64_bits(s), 52, 11, fp, mode, False, 0)]


@jit
def _float_tile(a, b, out, i0, kind, rp, fp, lut, mode, promote):
    """Rows i0 .. i0 + ROWS of ``out`` (fewer at the end) with a FAST or CODEC accumulator."""
    K = a.shape[1]
    N = b.shape[1]
    nr = min(ROWS, a.shape[0] - i0)
    acc = np.zeros((ROWS, COLS))
    tot = np.zeros((ROWS, COLS))
    sums = np.zeros(COLS)
    errs = np.zeros(COLS)
    for j0 in range(0, N, COLS):
        nj = min(COLS, N - j0)
        acc[:, :] = 0.0
        tot[:, :] = 0.0
        for k in range(K):
            for r in range(nr):
                _step(acc[r, :nj], np.float64(a[i0 + r, k]), b[k, j0:j0 + nj], sums[:nj],
                      errs[:nj], kind, rp, fp, lut, mode)
            if promote > 0 and (k + 1) % promote == 0:
                for r in range(nr):
                    for j in range(nj):
                        tot[r, j] = add_f32(tot[r, j], acc[r, j])
                        acc[r, j] = 0.0
        for r in range(nr):
            for j in range(nj):
                out[i0 + r, j0 + j] = add_f32(tot[r, j], acc[r, j]) if promote > 0 else acc[r, j]


@jit
def matmul_float_serial(a, b, out, kind, rp, fp, lut, mode, promote):
    """out = a @ b (float32 operands) summed sequentially over k in the accumulator ``kind``."""
    for i0 in range(0, a.shape[0], ROWS):
        if kind == FLOAT32:
            _float32_tile(a, b, out, i0, promote)
        else:
            _float_tile(a, b, out, i0, kind, rp, fp, lut, mode, promote)


@pjit
def matmul_float_parallel(a, b, out, kind, rp, fp, lut, mode, promote):
    for t in prange((a.shape[0] + ROWS - 1) // ROWS):
        if kind == FLOAT32:
            _float32_tile(a, b, out, t * ROWS, promote)
        else:
            _float_tile(a, b, out, t * ROWS, kind, rp, fp, lut, mode, promote)


# ---- tensor-core model -----------------------------------------------------------
@jit
def _tensorcore_tile(a, b, out, i0, bits, group, promote):
    """Groups of ``group`` products, aligned to the largest exponent of the group and
    of the accumulator, truncated to ``bits`` fraction bits, summed exactly, added to a
    float32 accumulator (nearest-even)."""
    K = a.shape[1]
    N = b.shape[1]
    nr = min(ROWS, a.shape[0] - i0)
    acc = np.zeros((ROWS, COLS))
    tot = np.zeros((ROWS, COLS))
    amax = np.zeros((ROWS, COLS))
    scale = np.zeros((ROWS, COLS))
    quantum = np.zeros((ROWS, COLS))
    gsum = np.zeros((ROWS, COLS))
    for j0 in range(0, N, COLS):
        nj = min(COLS, N - j0)
        acc[:, :] = 0.0
        tot[:, :] = 0.0
        for g0 in range(0, K, group):
            g1 = min(g0 + group, K)
            for r in range(nr):
                for j in range(nj):
                    amax[r, j] = abs(acc[r, j])
            for k in range(g0, g1):
                for r in range(nr):
                    aik = np.float64(a[i0 + r, k])
                    mrow = amax[r]
                    brow = b[k, j0:j0 + nj]
                    for j in range(nj):
                        mrow[j] = np.maximum(mrow[j], abs(aik * np.float64(brow[j])))
            for r in range(nr):
                for j in range(nj):
                    # biased exponent field of the largest term (0 if all are 0,
                    # 2047 if one is Inf): scale = 2**(bits - E), quantum = 2**(E - bits)
                    e = (f64_bits(amax[r, j]) & 0x7FF0000000000000) >> 52
                    scale[r, j] = bits_f64(min(max(2046 + bits - e, 1), 2046) << 52)
                    quantum[r, j] = bits_f64(min(max(e - bits, 1), 2046) << 52)
                    gsum[r, j] = 0.0
            for k in range(g0, g1):
                for r in range(nr):
                    aik = np.float64(a[i0 + r, k])
                    srow = scale[r]
                    grow = gsum[r]
                    brow = b[k, j0:j0 + nj]
                    for j in range(nj):
                        # exact: p * scale is a power-of-two scaling, the integer part
                        # has at most bits + 1 bits and the sum of 32 fits in 53
                        grow[j] += np.trunc(aik * np.float64(brow[j]) * srow[j])
            for r in range(nr):
                for j in range(nj):
                    acc[r, j] = add_f32(acc[r, j], gsum[r, j] * quantum[r, j])
            if promote > 0 and g1 % promote == 0:
                for r in range(nr):
                    for j in range(nj):
                        tot[r, j] = add_f32(tot[r, j], acc[r, j])
                        acc[r, j] = 0.0
        for r in range(nr):
            for j in range(nj):
                out[i0 + r, j0 + j] = add_f32(tot[r, j], acc[r, j]) if promote > 0 else acc[r, j]


@jit
def matmul_tensorcore_serial(a, b, out, bits, group, promote):
    """out = a @ b through the tensor-core accumulator model (see _tensorcore_tile)."""
    for i0 in range(0, a.shape[0], ROWS):
        _tensorcore_tile(a, b, out, i0, bits, group, promote)


@pjit
def matmul_tensorcore_parallel(a, b, out, bits, group, promote):
    for t in prange((a.shape[0] + ROWS - 1) // ROWS):
        _tensorcore_tile(a, b, out, t * ROWS, bits, group, promote)


# ---- int32 accumulation of integer codes ------------------------------------------
@jit
def _int_tile(a, b, out, overflow, i0):
    """Exact int64 sums of integer products; ``overflow`` flags outputs whose running
    sum (in k order) left the int32 range at least once."""
    K = a.shape[1]
    N = b.shape[1]
    nr = min(ROWS, a.shape[0] - i0)
    acc = np.zeros((ROWS, COLS), dtype=np.int64)
    flag = np.zeros((ROWS, COLS), dtype=np.int64)
    for j0 in range(0, N, COLS):
        nj = min(COLS, N - j0)
        acc[:, :] = 0
        flag[:, :] = 0
        for k in range(K):
            for r in range(nr):
                aik = np.int64(a[i0 + r, k])
                row = acc[r]
                frow = flag[r]
                brow = b[k, j0:j0 + nj]
                for j in range(nj):
                    s = row[j] + aik * np.int64(brow[j])
                    row[j] = s
                    frow[j] |= np.int64(s > _INT32_MAX) | np.int64(s < _INT32_MIN)
        for r in range(nr):
            for j in range(nj):
                out[i0 + r, j0 + j] = acc[r, j]
                overflow[i0 + r, j0 + j] = flag[r, j] != 0


@jit
def matmul_int_serial(a, b, out, overflow):
    """out = a @ b for integer arrays, exactly (int64), with int32 overflow flags."""
    for i0 in range(0, a.shape[0], ROWS):
        _int_tile(a, b, out, overflow, i0)


@pjit
def matmul_int_parallel(a, b, out, overflow):
    for t in prange((a.shape[0] + ROWS - 1) // ROWS):
        _int_tile(a, b, out, overflow, t * ROWS)
