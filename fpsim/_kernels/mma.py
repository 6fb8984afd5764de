"""Matrix-unit kernels: the dot-add algorithms of GPU tensor cores and matrix cores.

Each kernel computes ``D = A @ B + C`` one output element at a time, running the
instruction's fused dot-add over consecutive slices of ``step`` products along K and
keeping the running sum in the output type between slices (a ``k``-deep instruction chained
along K, as a GEMM kernel's main loop does).  ``fpsim.reference.mma`` is the readable twin of
every loop here (it states the algorithms, after MMA-Sim); this file is the fast form:

* Operands are split once into integer significands and exponents (:func:`split`): ``x ==
  M * 2**(e - frac)`` with ``e`` clamped to the type's smallest normal exponent and
  ``e = -126`` for zero, exactly MMA-Sim's decomposition.  A product's significand is then
  the int64 ``Ma * Mb`` (at most 48 bits) and its truncation to ``n_frac`` fractional bits
  relative to the largest exponent is a shift; the aligned sum is exact in int64.
* Non-finite operands (and NaN scales) take the float64 path that classifies the sum as
  MMA-Sim does: NaN for any NaN, for inf - inf or for 0 * inf, else the infinity.

Output kinds (``out_kind``): 0 float32 truncated to 23 fraction bits, 1 float32 truncated to
13 (E8M13: Hopper/Ada FP8), 2 float16 rounded to nearest-even.  Results are float64 values
(exact in the output type, or +-inf, or NaN); the caller casts and sets the NaN encoding.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from ._util import inline, jit, pjit, prange
from .accumulate import bits_f64, f64_bits, fma32

#: exponent MMA-Sim gives a zero operand
ZERO_EXP = -126
OUT_F32, OUT_E8M13, OUT_F16 = 0, 1, 2

if numba.config.DISABLE_JIT:

    def fma64(x, y, z):
        """float64 x * y + z with one rounding."""
        if not (math.isfinite(x) and math.isfinite(y)):
            return x * y + z
        if not math.isfinite(z):
            return z
        exact = Fraction(x) * Fraction(y) + Fraction(z)
        if exact == 0:
            p = x * y  # exact zero product or cancellation: IEEE's zero-sign rule
            return p + z if (p == 0 and z == 0) else 0.0
        try:
            return float(exact)  # Fraction -> float rounds to nearest-even once
        except OverflowError:
            return math.inf if exact > 0 else -math.inf

else:

    @intrinsic
    def fma64(typingctx, x, y, z):
        """float64 x * y + z with one rounding (llvm.fma.f64)."""
        sig = types.float64(types.float64, types.float64, types.float64)

        def codegen(context, builder, signature, args):
            return builder.fma(*args)

        return sig, codegen


# ---- operands --------------------------------------------------------------------------
@jit
def split(x, frac, emin, sig, exp):
    """Integer significand and exponent of every finite x: x == sig * 2**(exp - frac)."""
    for i in range(x.size):
        v = x[i]
        if v == 0.0 or not math.isfinite(v):
            sig[i] = 0
            exp[i] = ZERO_EXP
            continue
        m, e = math.frexp(v)  # v = m * 2**e, 0.5 <= |m| < 1
        e -= 1
        if e < emin:
            e = emin
        sig[i] = np.int64(math.ldexp(v, int(frac - e)))
        exp[i] = e


@inline
def _shift_trunc(p, sh):
    """trunc(p * 2**sh) for an int64 p (toward zero)."""
    if sh >= 0:
        return p << sh
    if sh <= -63:
        return 0
    if p >= 0:
        return p >> (-sh)
    return -((-p) >> (-sh))


@inline
def _shift_floor(p, sh):
    """floor(p * 2**sh) for an int64 p."""
    if sh >= 0:
        return p << sh
    if sh <= -63:
        return -1 if p < 0 else 0
    return p >> (-sh)


@inline
def _pow2(e):
    """2.0**e for a normal float64 exponent (-1022 <= e <= 1023), from its bits."""
    return bits_f64(np.int64(e + 1023) << 52)


@inline
def _exponent(x):
    """floor(log2(|x|)) of a non-zero, normal float64 (its biased exponent field)."""
    return ((f64_bits(x) >> 52) & 0x7FF) - 1023


@inline
def _bitlen(x):
    """Bit length of a positive int64 below 2**53 (exact through float64)."""
    return _exponent(float(x)) + 1


@inline
def normalise(total, unit, out_kind):
    """The value total * 2**unit (total an int64) in the output type, as a float64."""
    if total == 0:
        return 0.0
    neg = total < 0
    mag = -total if neg else total
    e = _bitlen(mag) - 1 + unit
    if out_kind == OUT_F16:
        p, emin, limit = 10, -14, 16
    elif out_kind == OUT_E8M13:
        p, emin, limit = 13, -126, 128
    else:
        p, emin, limit = 23, -126, 128
    if e < emin:
        e = emin
    shift = (e - p) - unit
    if shift > 0:
        if out_kind == OUT_F16:  # nearest-even
            q = mag >> shift
            rem = mag - (q << shift)
            half = np.int64(1) << (shift - 1)
            if rem > half or (rem == half and (q & 1)):
                q += 1
            mag = q
        else:  # toward zero
            mag = mag >> shift
        unit = e - p
    v = float(mag) * _pow2(unit)
    if v >= _pow2(limit):
        v = math.inf
    return -v if neg else v


# ---- NVIDIA: fused dot-add with truncation ---------------------------------------------
@inline
def _nv_special(a, b_t, i, j, lo, hi, sa, sb, c):
    """MMA-Sim's float64 sum of the slice's products plus c (finite sums are not used)."""
    t = 0.0
    for l in range(lo, hi):
        t += a[i, l] * b_t[j, l] * sa * sb
    return t + c


@inline
def _nv_slice(a, b_t, i, j, lo, hi, scale):
    """sum over the slice of trunc(a*b * scale): each product is exact in float64, so is its
    power-of-two scaling; the truncated terms are integers below 2**40, summed in int64."""
    total = np.int64(0)
    for l in range(lo, hi):
        total += np.int64(a[i, l] * b_t[j, l] * scale)  # conversion truncates toward zero
    return total


@inline
def _nv_top(ea, eb, i, j, lo, hi):
    """max over the slice of ea + eb (exponents held as float64: the max vectorises)."""
    top = -1e300
    for l in range(lo, hi):
        top = max(top, ea[i, l] + eb[j, l])
    return int(top)


@inline
def _nv_step(a, b_t, ea, eb, s, c_emin, ssa, ssb, esa, esb, special_a, special_b, i, j,
             lo, step, block, n_frac, out_kind):
    """One fused dot-add: products lo .. lo+step of output (i, j) onto the running sum s."""
    hi = lo + step
    blk = lo // block
    sa, sb = ssa[i, blk], ssb[j, blk]
    if (special_a[i, lo // step] or special_b[j, lo // step] or not math.isfinite(s)
            or not (math.isfinite(sa) and math.isfinite(sb))):
        t = _nv_special(a, b_t, i, j, lo, hi, sa, sb, s)
        if not math.isfinite(t):
            return t
    # c's exponent in the running sum's type (zero: -126)
    if s == 0.0:
        ec = ZERO_EXP
    else:
        ec = max(_exponent(s), c_emin)
    se = esa[i, blk] + esb[j, blk]
    top = max(ec, _nv_top(ea, eb, i, j, lo, hi) + se)
    # every term (c too) is trunc(value * 2**(n_frac - top)): an integer count of units
    total = np.int64(s * _pow2(n_frac - top)) + _nv_slice(a, b_t, i, j, lo, hi,
                                                           _pow2(n_frac - top + se))
    return normalise(total, top - n_frac, out_kind)


#: rows per block of the NVIDIA kernel: the running sums of a block stay in cache while the
#: K slices stream by
ROWS = 16


@jit
def _nv_rows(a, b_t, ea, eb, c, c_emin, ssa, ssb, esa, esb, special_a, special_b, r0, r1,
             step, block, n_frac, out_kind, out):
    for i in range(r0, r1):
        for j in range(b_t.shape[0]):
            out[i, j] = c[i, j]
    for lo in range(0, a.shape[1], step):
        for i in range(r0, r1):
            for j in range(b_t.shape[0]):
                out[i, j] = _nv_step(a, b_t, ea, eb, out[i, j], c_emin, ssa, ssb, esa, esb,
                                     special_a, special_b, i, j, lo, step, block, n_frac,
                                     out_kind)


@jit
def nv_fused_serial(a, b_t, ea, eb, c, c_emin, ssa, ssb, esa, esb, special_a, special_b,
                    step, block, n_frac, out_kind, out):
    m = a.shape[0]
    for r0 in range(0, m, ROWS):
        _nv_rows(a, b_t, ea, eb, c, c_emin, ssa, ssb, esa, esb, special_a, special_b, r0,
                 min(r0 + ROWS, m), step, block, n_frac, out_kind, out)


@pjit
def nv_fused_parallel(a, b_t, ea, eb, c, c_emin, ssa, ssb, esa, esb, special_a, special_b,
                      step, block, n_frac, out_kind, out):
    m = a.shape[0]
    for blk in prange((m + ROWS - 1) // ROWS):
        r0 = blk * ROWS
        _nv_rows(a, b_t, ea, eb, c, c_emin, ssa, ssb, esa, esb, special_a, special_b, r0,
                 min(r0 + ROWS, m), step, block, n_frac, out_kind, out)


# ---- NVIDIA Blackwell mxf4nvf4: FP4 groups of 16 under block scales ----------------------
@jit
def _block_fp4_element(qa, qb_t, cv, sa, sb_t, ms_a, es_a, ms_b, es_b, s_frac, block, lo, hi,
                       n_frac, i, j):
    bad = math.isnan(cv)
    for blk in range(lo // block, hi // block):
        bad = bad or math.isnan(sa[i, blk]) or math.isnan(sb_t[j, blk])
    if bad:
        return math.nan
    if math.isinf(cv):
        return cv
    if cv == 0.0:
        mc, ec = np.int64(0), ZERO_EXP
    else:
        m_, e_ = math.frexp(cv)
        ec = max(e_ - 1, -126)
        mc = np.int64(math.ldexp(cv, 23 - ec))
    top = ec
    for g in range(lo, hi, 16):
        blk = g // block
        e = es_a[i, blk] + es_b[j, blk]
        if e > top:
            top = e
    total = _shift_trunc(mc, n_frac + ec - top - 23)
    for g in range(lo, hi, 16):
        blk = g // block
        grp = np.int64(0)
        for l in range(g, g + 16):
            grp += qa[i, l] * qb_t[j, l]
        p = grp * ms_a[i, blk] * ms_b[j, blk]
        if p != 0:
            total += _shift_trunc(p, n_frac + es_a[i, blk] + es_b[j, blk] - top - 2 - 2 * s_frac)
    return normalise(total, top - n_frac, OUT_F32)


@jit
def nv_block_fp4(qa, qb_t, c, sa, sb_t, ms_a, es_a, ms_b, es_b, s_frac, block, depth, n_frac,
                 out):
    """Blackwell mxf4nvf4, chained every ``depth`` products along K.  qa/qb_t: the FP4
    values times 2 as int64 (e2m1 values are multiples of 1/2)."""
    k = qa.shape[1]
    for i in range(qa.shape[0]):
        for j in range(qb_t.shape[0]):
            s = c[i, j]
            for lo in range(0, k, depth):
                s = _block_fp4_element(qa, qb_t, s, sa, sb_t, ms_a, es_a, ms_b, es_b, s_frac,
                                       block, lo, lo + depth, n_frac, i, j)
            out[i, j] = s


# ---- sequential FMA (f64 everywhere, AMD f32) ---------------------------------------------
@jit
def fma_chain64(a, b_t, c, out):
    for i in range(a.shape[0]):
        for j in range(b_t.shape[0]):
            s = c[i, j]
            for l in range(a.shape[1]):
                s = fma64(a[i, l], b_t[j, l], s)
            out[i, j] = s


@jit
def fma_chain32(a, b_t, c, out):
    for i in range(a.shape[0]):
        for j in range(b_t.shape[0]):
            s = c[i, j]
            for l in range(a.shape[1]):
                s = fma32(a[i, l], b_t[j, l], s)
            out[i, j] = s


# ---- AMD CDNA1/2 f16/bf16: float32 pairwise trees -----------------------------------------
@jit
def _flush32(x):
    """A float32 subnormal to a zero of its sign."""
    if abs(x) < np.float32(1.1754943508222875e-38):
        return x * np.float32(0.0)
    return x


@jit
def amd_pairwise(a, b_t, c, group, flush, out):
    """CDNA1/2: float32 FMAs in a binary tree over each group of ``group`` (a power of two)
    products, each group added to the running float32 sum.  a, b_t, c float32, inputs
    already flushed by the caller where the instruction flushes them."""
    k = a.shape[1]
    buf = np.empty(group, dtype=np.float32)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for i in range(a.shape[0]):
        for j in range(b_t.shape[0]):
            s = c[i, j]
            for lo in range(0, k, group):
                n = min(group, k - lo)
                for t in range(n):
                    buf[t] = fma32(a[i, lo + t], b_t[j, lo + t], zero)
                    if flush:
                        buf[t] = _flush32(buf[t])
                while n > 1:
                    n //= 2
                    for t in range(n):
                        buf[t] = fma32(buf[2 * t], one, buf[2 * t + 1])
                        if flush:
                            buf[t] = _flush32(buf[t])
                s = fma32(s, one, buf[0])
                if flush:
                    s = _flush32(s)
            out[i, j] = s


# ---- AMD CDNA3: fused dot-add, rounded down -------------------------------------------------
@jit
def _fused_part(ma, ea, mb, eb, i, j, lo, hi, stride, first, fab, n):
    """(sum, top) of products lo+first, lo+first+stride, ... aligned and truncated to n bits;
    top = -2**30 when there is none."""
    top = -(1 << 30)
    for l in range(lo + first, hi, stride):
        e = ea[i, l] + eb[j, l]
        if e > top:
            top = e
    total = np.int64(0)
    for l in range(lo + first, hi, stride):
        p = ma[i, l] * mb[j, l]
        if p != 0:
            total += _shift_trunc(p, n + ea[i, l] + eb[j, l] - top - fab)
    return total, top


@jit
def _amd_element(a, b_t, ma, ea, mb, eb, fab, c, i, j, group, fp8):
    k = a.shape[1]
    s = c
    two128 = math.ldexp(1.0, 128)
    for lo in range(0, k, group):
        hi = min(lo + group, k)
        t = 0.0
        for l in range(lo, hi):
            t += a[i, l] * b_t[j, l]
        t += s
        if not math.isfinite(t):
            s = np.float32(t)
            continue
        p_inf = False
        n_inf = False
        for l in range(lo, hi):
            p = a[i, l] * b_t[j, l]
            if p >= two128:
                p_inf = True
            elif p <= -two128:
                n_inf = True
        if p_inf or n_inf:
            s = np.float32(math.nan if (p_inf and n_inf) else (math.inf if p_inf else -math.inf))
            continue
        if s == 0.0:
            mc, ec = np.int64(0), ZERO_EXP
        else:
            m_, e_ = math.frexp(s)
            ec = max(e_ - 1, -126)
            mc = np.int64(math.ldexp(s, 23 - ec))
        if fp8:
            s0, e0 = _fused_part(ma, ea, mb, eb, i, j, lo, hi, 2, 0, fab, 24)
            s1, e1 = _fused_part(ma, ea, mb, eb, i, j, lo, hi, 2, 1, fab, 24)
            e = max(e0, e1)
            tot = _shift_floor(s0, e0 - e) + _shift_floor(s1, e1 - e)  # units 2**(e-24)
            top = max(e, ec)
            tot = _shift_floor(tot, 7 + e - top)  # units 2**(top-31)
            if ec >= top - 25:
                tot += _shift_floor(mc, 1 + ec - top) << 7  # c: units 2**(top-24)
        else:
            s0, e = _fused_part(ma, ea, mb, eb, i, j, lo, hi, 1, 0, fab, 24)
            top = max(e, ec)
            tot = _shift_floor(s0, 7 + e - top) + (_shift_floor(mc, 1 + ec - top) << 7)
        s = np.float32(math.ldexp(float(tot), int(top - 31)))
    return s


@jit
def amd_fused(a, b_t, ma, ea, mb, eb, fab, c, group, fp8, out):
    for i in range(a.shape[0]):
        for j in range(b_t.shape[0]):
            out[i, j] = _amd_element(a, b_t, ma, ea, mb, eb, fab, c[i, j], i, j, group, fp8)
