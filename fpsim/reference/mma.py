"""Readable pure-Python matrix-unit arithmetic: the oracle for ``fpsim._kernels.mma``.

One output element at a time, on Python floats, in the form MMA-Sim (microsoft/MMA-Sim,
arXiv 2511.10909) writes its algorithms: every operand is split into a significand and an
exponent (:func:`sig_exp`), the products' significands are aligned to the largest exponent
and truncated to ``n_frac`` fractional bits (:func:`fused_sum`), and the sum is normalised
into the output type.  Every float operation here is exact (the significands have at most
48 bits and the aligned sums fewer than 53), so Python floats carry no rounding of their
own; the two correctly rounded FMAs use :class:`fractions.Fraction`.

``docs/numerics.md`` ("Matrix units") states each algorithm; ``tests/golden/mma.npz``
(MMA-Sim's own outputs) checks this module and the kernels alike.

Types are named as PTX/MMA-Sim spell them: ``f64 f32 tf32 f16 bf16 e4m3 e5m2 e2m1 ue8m0
ue4m3`` and AMD's ``fp8`` (E4M3FNUZ) and ``bf8`` (E5M2FNUZ).
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction

#: (fraction bits, smallest normal exponent) of each type, as MMA-Sim decomposes it.  FP4
#: (``e2m1``) values are decomposed as float32 (MMA-Sim decodes FP4 to float32).
TYPES = {
    "f64": (52, -1022), "f32": (23, -126), "tf32": (23, -126), "xf32": (23, -126),
    "f16": (10, -14), "bf16": (7, -126), "e4m3": (3, -6), "e5m2": (2, -14),
    "fp8": (3, -7), "bf8": (2, -15), "e2m1": (23, -126), "ue8m0": (0, -127), "ue4m3": (3, -6),
}
#: exponent MMA-Sim gives a zero operand, whatever its type
ZERO_EXPONENT = -126


def sig_exp(x: float, t: str) -> tuple[float, int]:
    """(significand, exponent) of a finite x with ``x == s * 2**e``, 1 <= |s| < 2 for normal
    numbers of type t, the smallest normal exponent for subnormals, and -126 for zero."""
    s, e = math.frexp(x)
    s, e = s * 2.0, e - 1
    emin = TYPES[t][1]
    if e < emin:
        s *= 2.0 ** (e - emin)
        e = emin
    if s == 0.0:
        e = ZERO_EXPONENT
    return s, e


def fused_sum(sigs: list[float], exps: list[int], n_frac: int) -> tuple[float, int]:
    """Align every term to the largest exponent, truncate each toward zero to ``n_frac``
    fractional bits, add exactly: (sum of significands, largest exponent)."""
    top = max(exps)
    total = 0.0
    for s, e in zip(sigs, exps):
        total += math.trunc(s * 2.0 ** (n_frac + e - top)) * 2.0 ** -n_frac
    return total, top


def round_fraction(q: Fraction, frac: int, emin: int, emax: int) -> float:
    """Round an exact rational to nearest-even in a binary format (frac bits, exponents
    emin..emax); beyond the largest finite value: +-inf.  q must be non-zero."""
    neg = q < 0
    a = -q if neg else q
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    e = max(e, emin)
    quantum = Fraction(2) ** (e - frac)
    n = a / quantum
    r = math.floor(n)
    if n - r > Fraction(1, 2) or (n - r == Fraction(1, 2) and r % 2):
        r += 1
    value = r * quantum
    if value >= Fraction(2) ** (emax + 1):
        return -math.inf if neg else math.inf
    return -float(value) if neg else float(value)


def fma(a: float, b: float, c: float, bits: int = 64) -> float:
    """a * b + c rounded once to float64 (``bits=64``) or float32 (``bits=32``), IEEE 754."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return a * b + c  # inf * x, 0 * inf, nan: no rounding involved
    if not math.isfinite(c):
        return c  # a finite product (however large) leaves an infinite or NaN c
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    if exact == 0:
        p_neg = math.copysign(1.0, a) * math.copysign(1.0, b) < 0
        both_zero = (a == 0 or b == 0) and c == 0
        return -0.0 if both_zero and p_neg and math.copysign(1.0, c) < 0 else 0.0
    frac, emin, emax = (52, -1022, 1023) if bits == 64 else (23, -126, 127)
    r = round_fraction(exact, frac, emin, emax)
    return math.copysign(0.0, exact) if r == 0 else r


def f32(x: float) -> float:
    """Round a float64 to float32 (nearest-even, overflow to inf)."""
    if x == 0 or not math.isfinite(x):
        return x
    return round_fraction(Fraction(x), 23, -126, 127)


def tf32(x: float) -> float:
    """A float32 with the low 13 bits of its encoding cleared (tf32: 10 fraction bits kept,
    truncated toward zero; what MMA-Sim's ``truncate_to_tf32`` does to the bit pattern)."""
    (bits,) = struct.unpack("<I", struct.pack("<f", x))
    (y,) = struct.unpack("<f", struct.pack("<I", bits & ~0x1FFF & 0xFFFFFFFF))
    return y


# ------------------------------------------------------------------------------ NVIDIA
def normalise(s: float, e: int, output: str) -> float:
    """The value s * 2**e in the output type: ``f32`` (truncated to 23 fraction bits),
    ``f32_e8m13`` (truncated to 13: Hopper/Ada FP8) or ``f16`` (nearest-even to 10)."""
    x = s * 2.0 ** e
    if output == "f16":
        s, e = sig_exp(x, "f16")
        v = round(s * 2.0 ** 10) * 2.0 ** (e - 10)
        return math.copysign(math.inf, v) if abs(v) >= 2.0 ** 16 else v
    s, e = sig_exp(x, "f32")
    n = 13 if output == "f32_e8m13" else 23
    v = math.trunc(s * 2.0 ** n) * 2.0 ** (e - n)
    return math.copysign(math.inf, v) if abs(v) >= 2.0 ** 128 else v


def nv_dot_add(a, b, c, *, a_type, b_type, c_type, n_frac, output,
               scale_a=1.0, scale_b=1.0, scale_type="ue8m0") -> float:
    """One fused dot-add of NVIDIA's tensor cores: sum_i a_i*b_i*scale_a*scale_b + c.

    NaN anywhere (or inf - inf, 0 * inf) gives NaN, an infinite total gives that infinity;
    otherwise the aligned, truncated sum (:func:`fused_sum`) normalised by :func:`normalise`.
    Zero results are +0.  Only the scales' exponents enter the sum (they are powers of two).
    """
    total = sum(x * y * scale_a * scale_b for x, y in zip(a, b)) + c
    if math.isnan(total) or math.isinf(total):
        return total
    _, esa = sig_exp(scale_a, scale_type)
    _, esb = sig_exp(scale_b, scale_type)
    sc, ec = sig_exp(c, c_type)
    sigs, exps = [sc], [ec]
    for x, y in zip(a, b):
        sx, ex = sig_exp(x, a_type)
        sy, ey = sig_exp(y, b_type)
        sigs.append(sx * sy)
        exps.append(ex + ey + esa + esb)
    s, e = fused_sum(sigs, exps, n_frac)
    return normalise(s, e, output)


def nv_block_fp4_dot_add(a, b, c, scale_a, scale_b, *, block, scale_type, n_frac) -> float:
    """Blackwell's ``mxf4nvf4`` dot-add: FP4 products summed exactly in groups of 16, each
    group times its two block scales, the groups and c aligned and truncated to ``n_frac``
    bits (:func:`fused_sum`), normalised to float32 by truncation.

    NaN in a scale or c gives NaN.  An infinite c gives c (MMA-Sim raises there; the finite
    products cannot change an infinity).  ``ue4m3`` scales are used by magnitude.
    """
    if any(math.isnan(x) for x in list(scale_a) + list(scale_b)) or math.isnan(c):
        return math.nan
    if math.isinf(c):
        return c
    sc, ec = sig_exp(c, "f32")
    sigs, exps = [sc], [ec]
    for k in range(0, len(a), 16):
        s = sum(x * y for x, y in zip(a[k:k + 16], b[k:k + 16]))
        s0, e0 = sig_exp(abs(scale_a[k // block]), scale_type)
        s1, e1 = sig_exp(abs(scale_b[k // block]), scale_type)
        sigs.append(s * s0 * s1)
        exps.append(e0 + e1)
    s, e = fused_sum(sigs, exps, n_frac)
    return normalise(s, e, "f32")


# ------------------------------------------------------------------------------ AMD
def amd_fused_rd_dot_add(a, b, c, *, a_type, b_type, c_type, fp8) -> float:
    """One fused dot-add of AMD's matrix cores (CDNA3 f16/bf16/xf32/fp8), before the
    round-to-nearest into float32 that :func:`element` applies.

    Products aligned and truncated to 24 fraction bits; FP8 sums even and odd products
    apart and rounds their sum down to 24 bits; the total is rounded down to 31 bits, c down
    to 24 (for FP8, c further than 25 binades below the products is dropped).  A product
    of magnitude >= 2**128 is an infinity (both signs: NaN).
    """
    total = sum(x * y for x, y in zip(a, b)) + c
    if math.isnan(total) or math.isinf(total):
        return total
    sigs, exps = [], []
    p_inf = n_inf = False
    for x, y in zip(a, b):
        if x * y >= 2.0 ** 128:
            p_inf = True
        elif x * y <= -(2.0 ** 128):
            n_inf = True
        else:
            sx, ex = sig_exp(x, a_type)
            sy, ey = sig_exp(y, b_type)
            sigs.append(sx * sy)
            exps.append(ex + ey)
    if p_inf or n_inf:
        return math.nan if p_inf and n_inf else (math.inf if p_inf else -math.inf)
    sc, ec = sig_exp(c, c_type)
    n = 24
    if fp8:
        s0, e0 = fused_sum(sigs[0::2], exps[0::2], n)
        s1, e1 = fused_sum(sigs[1::2], exps[1::2], n)
        top = max(e0, e1)
        s0 = math.floor(s0 * 2.0 ** (n + e0 - top)) * 2.0 ** -n
        s1 = math.floor(s1 * 2.0 ** (n + e1 - top)) * 2.0 ** -n
        s, e = s0 + s1, top
        top = max(e, ec)
        s = math.floor(s * 2.0 ** (31 + e - top)) * 2.0 ** -31
        sc = math.floor(sc * 2.0 ** (24 + ec - top)) * 2.0 ** -24 if ec >= top - 25 else 0.0
    else:
        s, e = fused_sum(sigs, exps, n)
        top = max(e, ec)
        s = math.floor(s * 2.0 ** (31 + e - top)) * 2.0 ** -31
        sc = math.floor(sc * 2.0 ** (24 + ec - top)) * 2.0 ** -24
    return (s + sc) * 2.0 ** top


def flush(x: float, t: str, keep_sign: bool = False) -> float:
    """Subnormals of type t to zero (+0, or a zero of x's sign with ``keep_sign``)."""
    if abs(x) < 2.0 ** TYPES[t][1]:
        return math.copysign(0.0, x) if keep_sign else 0.0
    return x


def pairwise_dot(a, b, flush_subnormals: bool) -> float:
    """CDNA1/2's f16/bf16 dot product: float32 FMAs in a binary tree (left half, right half)."""
    if len(a) == 1:
        s = fma(a[0], b[0], 0.0, 32)
    else:
        m = len(a) // 2
        s = fma(pairwise_dot(a[:m], b[:m], flush_subnormals), 1.0,
                pairwise_dot(a[m:], b[m:], flush_subnormals), 32)
    return flush(s, "f32", keep_sign=True) if flush_subnormals else s


# ------------------------------------------------------------------------------ one element
def element(a, b, c, *, family, a_type, b_type, c_type, d_type, n_frac=0, output="f32",
            chunks=1, group=1, flush_subnormals=False, truncate_tf32=False, fp8=False,
            scale_a=None, scale_b=None, scale_type="ue8m0", block=32, depth=None) -> float:
    """D[i, j] of one instruction from row a = A[i, :], column b = B[:, j] and c = C[i, j].

    ``family`` is the algorithm: ``"fma"`` (sequential FMAs in d_type: f64 everywhere, AMD
    f32), ``"nv_fused"`` (``chunks`` consecutive fused dot-adds of k/chunks products each,
    the running sum kept in the output type), ``"nv_block_fp4"`` (Blackwell ``mxf4nvf4``),
    ``"amd_pairwise"`` (CDNA1/2 f16/bf16: groups of ``group`` products by
    :func:`pairwise_dot`, added to the running float32 sum) and ``"amd_fused"`` (CDNA3:
    groups of ``group`` products by :func:`amd_fused_rd_dot_add`, each result rounded to
    float32).  Scales (block-scaled ops) are lists over this row's / column's blocks.
    ``depth`` is the instruction's k: a longer row is that many products at a time, chained
    (the running sum is the next slice's c); default: the whole row is one instruction.
    """
    a, b = list(map(float, a)), list(map(float, b))
    k = len(a)
    depth = k if depth is None else depth
    if truncate_tf32:
        a, b = [tf32(x) for x in a], [tf32(y) for y in b]
    if family == "fma":
        bits = 64 if d_type == "f64" else 32
        s = float(c)
        for x, y in zip(a, b):
            s = fma(x, y, s, bits)
        return s
    if family == "nv_fused":
        s, ctype = float(c), d_type  # the running sum lives in the output type
        step = depth // chunks
        for lo in range(0, k, step):
            sa = 1.0 if scale_a is None else float(scale_a[lo // block])
            sb = 1.0 if scale_b is None else float(scale_b[lo // block])
            s = nv_dot_add(a[lo:lo + step], b[lo:lo + step], s, a_type=a_type, b_type=b_type,
                           c_type=ctype, n_frac=n_frac, output=output, scale_a=sa,
                           scale_b=sb, scale_type=scale_type)
        return s
    if family == "nv_block_fp4":
        s = float(c)
        per = depth // block  # blocks per instruction
        for lo in range(0, k, depth):
            s = nv_block_fp4_dot_add(a[lo:lo + depth], b[lo:lo + depth], s,
                                     [float(x) for x in scale_a[lo // block:][:per]],
                                     [float(x) for x in scale_b[lo // block:][:per]],
                                     block=block, scale_type=scale_type, n_frac=n_frac)
        return s
    if family == "amd_pairwise":
        if flush_subnormals:
            a = [flush(x, a_type) for x in a]
            b = [flush(y, b_type) for y in b]
            c = flush(float(c), c_type)
        s = float(c)
        for lo in range(0, k, group):
            s = fma(s, 1.0, pairwise_dot(a[lo:lo + group], b[lo:lo + group], flush_subnormals), 32)
            if flush_subnormals:
                s = flush(s, "f32", keep_sign=True)
        return s
    if family == "amd_fused":
        s = float(c)
        for lo in range(0, k, group):
            s = f32(amd_fused_rd_dot_add(a[lo:lo + group], b[lo:lo + group], s,
                                         a_type=a_type, b_type=b_type, c_type=c_type, fp8=fp8))
        return s
    raise ValueError(f"family={family!r}: not one of fma, nv_fused, nv_block_fp4, "
                     "amd_pairwise, amd_fused")
