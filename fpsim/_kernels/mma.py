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
from llvmlite import ir as llvmlite_ir
from numba.core import cgutils
from numba.extending import intrinsic

from ._util import inline, jit, pjit, prange
from .accumulate import fma32
from .bits import bits_f64, f64_bits

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
def out_params(out_kind):
    """(fraction bits, smallest exponent, overflow exponent) of an output kind."""
    if out_kind == OUT_F16:
        return 10, -14, 16
    if out_kind == OUT_E8M13:
        return 13, -126, 128
    return 23, -126, 128


@inline
def normalise(total, unit, out_kind):
    """The value total * 2**unit (total an int64) in the output type, as a float64."""
    if total == 0:
        return 0.0
    neg = total < 0
    mag = -total if neg else total
    e = _bitlen(mag) - 1 + unit
    p, emin, limit = out_params(out_kind)
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
# The fast form works on a tile of ROWS rows by COLS output columns at a time, vectorised
# over the columns: for one row and one K slice, every lane j holds the largest exponent
# ``top[j]`` and the truncated sum ``tot[j]``, both float64.  Each product a*b is exact in
# float64 (at most 48 significant bits), so is its scaling by 2**(n_frac - top); its
# truncation is an integer below 2**(n_frac + 2), and the sum of a slice's integers (and of
# c's) stays below 2**53: float64 holds the int64 sum of the scalar form exactly.  Lanes with
# a non-finite operand, scale or running sum take the scalar step (:func:`_nv_step`).

if numba.config.DISABLE_JIT:

    def ftrunc(x):
        """x rounded toward zero, as a float64 (keeps the sign of a zero)."""
        return math.copysign(float(math.trunc(x)), x) if math.isfinite(x) else x

    def frint(x):
        """x rounded to the nearest integer, ties to even, as a float64."""
        return float(np.rint(x))

else:

    def _unary_intrinsic(name):
        @intrinsic
        def fn(typingctx, x):
            sig = types.float64(types.float64)

            def codegen(context, builder, signature, args):
                mod = builder.module
                fnty = llvmlite_ir.FunctionType(llvmlite_ir.DoubleType(),
                                                [llvmlite_ir.DoubleType()])
                f = cgutils.get_or_insert_function(mod, fnty, name)
                return builder.call(f, args)

            return sig, codegen

        return fn

    ftrunc = _unary_intrinsic("llvm.trunc.f64")
    frint = _unary_intrinsic("llvm.rint.f64")


@inline
def _nv_special(a, b, i, j, lo, hi, sa, sb, c):
    """MMA-Sim's float64 sum of the slice's products plus c (finite sums are not used)."""
    t = 0.0
    for l in range(lo, hi):
        t += a[i, l] * b[l, j] * sa * sb
    return t + c


@inline
def _exponent_or(x, floor):
    """max(floor(log2|x|), floor) of a finite x; ``ZERO_EXP`` for a zero."""
    if x == 0.0:
        return float(ZERO_EXP)
    e = float(((f64_bits(x) >> 52) & 0x7FF) - 1023)
    return e if e > floor else floor


@inline
def _nv_step(a, b, ea, eb, s, c_emin, sa, sb, se, i, j, lo, hi, n_frac, out_kind):
    """One fused dot-add, scalar: products lo .. hi of output (i, j) onto the running sum s
    (sa, sb the block scales' values, se their exponents' sum)."""
    if not (math.isfinite(s) and math.isfinite(sa) and math.isfinite(sb)):
        t = _nv_special(a, b, i, j, lo, hi, sa, sb, s)
        if not math.isfinite(t):
            return t
    else:
        for l in range(lo, hi):
            if not (math.isfinite(a[i, l]) and math.isfinite(b[l, j])):
                t = _nv_special(a, b, i, j, lo, hi, sa, sb, s)
                if not math.isfinite(t):
                    return t
                break
    top = _exponent_or(s, float(c_emin)) - se
    for l in range(lo, hi):
        e = ea[i, l] + eb[l, j]
        top = e if e > top else top
    top += se
    # every term (c too) is trunc(value * 2**(n_frac - top)): an integer count of units
    total = np.int64(s * _pow2(int(n_frac - top)))
    scale = _pow2(int(n_frac - top + se))
    for l in range(lo, hi):
        total += np.int64(a[i, l] * b[l, j] * scale)  # conversion truncates toward zero
    return normalise(total, int(top) - n_frac, out_kind)


@inline
def _pow2f(e):
    """2.0**e for an integral float64 e in the normal range (through int32: vectorises)."""
    return bits_f64(np.int64(np.int32(e) + 1023) << 52)


@inline
def _expf(x):
    """floor(log2|x|) of a non-zero normal float64, as a float64 (through int32)."""
    return float(np.int32((f64_bits(x) >> 52) & 0x7FF) - np.int32(1023))


@inline
def _round_out(v, p, emin, limit, nearest):
    """A finite float64 v rounded to p fraction bits (exponent at least emin): toward zero,
    or to nearest-even; +-inf at 2**limit and beyond; a zero is +0."""
    e = _expf(v)
    e = e if e > emin else emin
    x = v * _pow2f(p - e)
    r = frint(x) if nearest else ftrunc(x)
    w = r * _pow2f(e - p) + 0.0
    if abs(w) >= _pow2f(limit):
        w = math.copysign(math.inf, w)
    return w


#: rows and columns of a tile of the NVIDIA kernel: the tile's running sums stay in cache
#: while the K slices stream by
ROWS, COLS = 32, 512


@jit
def _nv_tile(a, b, ea, eb, c, c_emin, ssa, ssb, esa, esb, bad_a, bad_b, r0, r1, j0, j1,
             step, block, n_frac, out_kind, out):
    # every lane loop runs jj = 0 .. nj over views that start at column j0: indices Numba
    # and LLVM see as non-negative, so the loops vectorise with plain vector loads
    nj = j1 - j0
    top = np.empty(nj)
    tot = np.empty(nj)
    scl = np.empty(nj)
    prev = np.empty(nj)
    pi, emin_i, limit_i = out_params(out_kind)
    p, emin, limit = float(pi), float(emin_i), float(limit_i)
    nearest = out_kind == OUT_F16
    cfl = float(c_emin)
    for i in range(r0, r1):
        o, ci = out[i, j0:j1], c[i, j0:j1]
        for jj in range(nj):
            o[jj] = ci[jj]
    for lo in range(0, a.shape[1], step):
        hi = lo + step
        blk = lo // block
        sl = lo // step
        seb = esb[blk, j0:j1]
        for i in range(r0, r1):
            o = out[i, j0:j1]
            se_a = esa[i, blk]
            # the largest exponent: c's (in the output type), then every product's
            for jj in range(nj):
                s = o[jj]
                prev[jj] = s
                es = _expf(s)
                es = es if es > cfl else cfl
                es = es if s != 0.0 else float(ZERO_EXP)
                top[jj] = es - (se_a + seb[jj])
            for l in range(lo, hi):
                e_a = ea[i, l]
                ebl = eb[l, j0:j1]
                for jj in range(nj):
                    # "+ 0.0": a plain select here compiles to a slow masked store
                    top[jj] = max(e_a + ebl[jj], top[jj]) + 0.0
            # c's units, then the products' (the scale's exponent se moves top back)
            for jj in range(nj):
                t = top[jj]
                tot[jj] = ftrunc(prev[jj] * _pow2f(n_frac - t - se_a - seb[jj]))
                scl[jj] = _pow2f(n_frac - t)
            for l in range(lo, hi):
                x = a[i, l]
                bl = b[l, j0:j1]
                for jj in range(nj):
                    tot[jj] += ftrunc(x * bl[jj] * scl[jj])
            for jj in range(nj):
                v = tot[jj] * _pow2f(top[jj] + se_a + seb[jj] - n_frac)
                o[jj] = _round_out(v, p, emin, limit, nearest)
            bb = bad_b[sl, j0:j1]
            row_bad = bad_a[i, sl]
            for jj in range(nj):
                if row_bad or bb[jj] or not math.isfinite(prev[jj]):
                    j = j0 + jj
                    o[jj] = _nv_step(a, b, ea, eb, prev[jj], c_emin, ssa[i, blk], ssb[blk, j],
                                     se_a + seb[jj], i, j, lo, hi, n_frac, out_kind)


@jit
def nv_fused_serial(a, b, ea, eb, c, c_emin, ssa, ssb, esa, esb, bad_a, bad_b, step, block,
                    n_frac, out_kind, out):
    m, n = out.shape
    for r0 in range(0, m, ROWS):
        for j0 in range(0, n, COLS):
            _nv_tile(a, b, ea, eb, c, c_emin, ssa, ssb, esa, esb, bad_a, bad_b, r0,
                     min(r0 + ROWS, m), j0, min(j0 + COLS, n), step, block, n_frac,
                     out_kind, out)


@pjit
def nv_fused_parallel(a, b, ea, eb, c, c_emin, ssa, ssb, esa, esb, bad_a, bad_b, step,
                      block, n_frac, out_kind, out):
    m, n = out.shape
    nr = (m + ROWS - 1) // ROWS
    nc = (n + COLS - 1) // COLS
    for t in prange(nr * nc):
        r0 = (t // nc) * ROWS
        j0 = (t % nc) * COLS
        _nv_tile(a, b, ea, eb, c, c_emin, ssa, ssb, esa, esb, bad_a, bad_b, r0,
                 min(r0 + ROWS, m), j0, min(j0 + COLS, n), step, block, n_frac, out_kind,
                 out)


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
