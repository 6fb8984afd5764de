"""Stochastic rounding of float32 inputs by 32-bit arithmetic, in SIMD-friendly blocks.

The table loops of :mod:`fpsim._kernels.lut` need two dependent look-ups per
element when rounding stochastically, and the generator's draws sit in the
middle of the loop: the compiler vectorises none of it.  Here each block of
``BLOCK`` elements goes through plain loops that LLVM vectorises eight
elements wide (all arithmetic is ``uint32``, see :mod:`fpsim._kernels.u32`):

1. draw the block's random bits into a buffer (``splitmix64_mix``: the same
   bits as ``stochastic_pair`` gives every other kernel, element ``i`` gets the
   low half of draw ``i // 2`` if ``i`` is even, else the high half);
2. float formats, one of three loops, each exact on the inputs it does not flag:

   * *fast*: results that are normal numbers of the format.  The code is the
     input's bits shifted right and rebased, plus one when the dropped
     fraction, scaled to 32 bits, exceeds the element's random bits;
   * *semi*: also subnormal results and zeros (the cut then moves with the
     input's exponent); flags only tiny inputs (whose fraction reaches below
     the significand), overflow and Inf/NaN;
   * *general*: every input;

   a block starts with the loop its predecessor's counts point to (the fast
   one while few inputs fall outside its range, e.g. float8_e5m2 on N(0, 1)
   data; the semi one for float8_e4m3fn and float4_e2m1fn, whose subnormals
   are common) and falls through to the next loop when the first flags more
   than ``DENSE`` inputs;
3. the few flagged inputs again through the general rule (groups of 8 with
   no flag are skipped).

Integer formats have a single loop (the general rule is short for them).

Every path computes exactly what ``fpsim.reference`` defines for stochastic
rounding (``docs/numerics.md``); the tests compare them with the generic
kernel for every format this module takes, on every top half of a float32.

The float formats: signed, with zero and subnormals, at most 22 mantissa bits
and exponents inside float32's (``fpsim.codec._sr_float_ok``).  Their magnitude
codes are ``(exponent field << mantissa bits) | mantissa`` with field 1 for
the smallest normal, so a code is a float32's bits with another bias.
Constants arrive as a tuple of uint32 (indices ``F_*`` and ``I_*``).
"""

import numpy as np

from . import u32
from ._util import inline, jit, pjit, prange
from .scalar import splitmix64_mix

#: Elements per block (its random bits and flags stay in the L1 cache).
BLOCK = 2048
#: A block with more flagged inputs than this is redone whole by the general loop
#: (measured break-even: the general loop costs about what 13 sparse fixes do).
DENSE = 16

(
    F_MBITS,  # mantissa bits m
    F_SHIFT,  # 23 - m: where a float32 normal is cut
    F_KBIAS,  # float32 exponent field of the format's smallest normal (127 + emin)
    F_CBASE,  # (F_KBIAS - 1) << m: rebases a float32's top bits to a code
    F_FSHIFT,  # 9 + m: brings the dropped fraction to the top of 32 bits
    F_MAX_CODE,  # magnitude code of max
    F_OVF_POS,  # code for a positive overflow (Inf, NaN or max by the format and saturate=)
    F_OVF_NEG,
    F_NAN_POS,  # code for a NaN input with the sign bit clear
    F_NAN_NEG,
    F_SIGN_SHIFT,  # bits - 1: the sign bit's place in a code
    F_NEGZERO,  # 1 if the format has -0
    F_FAST_LO,  # |x| bits from which the result is a normal number ...
    F_FAST_SPAN,  # ... up to F_FAST_LO + F_FAST_SPAN (max itself)
    F_SUBSCALE,  # float32 bits of 2**(emin - m): the value of subnormal code 1
    F_OVFV_POS,  # float32 bits of the values of F_OVF_POS, F_OVF_NEG, F_NAN_POS, F_NAN_NEG
    F_OVFV_NEG,
    F_NANV_POS,
    F_NANV_NEG,
    F_SEMI_LO,  # |x| bits from which the semi loop's fraction lies in the significand ...
    F_SEMI_SPAN,  # ... up to F_SEMI_LO + F_SEMI_SPAN (max itself)
) = range(21)

(
    I_CUTBASE,  # 150 + scale_exp: n = significand >> (I_CUTBASE - exponent field)
    I_MAX_POS,  # max_int
    I_MAX_NEG,  # -min_int
    I_MASK,  # 2**bits - 1 for formats that return bit patterns (ocp_int8), else all ones
) = range(4)

_U = np.uint32
_ABS = _U(0x7FFFFFFF)
_SIGN = _U(0x80000000)
_INF = _U(0x7F800000)
_Z = _U(0)
_1 = _U(1)
_23 = _U(23)
_31 = _U(31)
_32 = _U(32)
_40 = _U(40)
_LOW32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment (scalar.stochastic_pair)


@inline
def _fill_bits(r32, seed, pair0, npairs):
    """The random bits of elements 2*pair0 ... 2*(pair0 + npairs) - 1: those of
    ``stochastic_pair``, its state stepped by addition (no multiply per draw)."""
    state = seed + np.uint64(pair0 + 1) * _GOLDEN
    for j in range(npairs):
        z = splitmix64_mix(state)
        state += _GOLDEN
        r32[2 * j] = np.uint32(z & _LOW32)
        r32[2 * j + 1] = np.uint32(z >> _S32)


@inline
def _split(a):
    """(exponent field, at least 1; significand) of a float32 magnitude's bits."""
    be1 = u32.umax(u32.shr(a, _23), _1)
    return be1, u32.sub(a, u32.shl(u32.sub(be1, _1), _23))


@inline
def _cut(sig, cut, r):
    """``floor(sig / 2**cut)`` plus one with probability the dropped fraction:
    one when the fraction, as 32 bits, exceeds ``r``.  ``sig < 2**24``, ``cut >= 1``."""
    hi = u32.shr(sig, u32.umin(cut, _31))
    # the fraction's 32 bits: sig's low bits shifted up (cut <= 32), or its high bits down
    fl = u32.shl(sig, u32.band(u32.sub(_32, cut), _31))
    fr = u32.shr(sig, u32.umin(u32.sub(cut, _32), _31))  # wraps to 31 (gives 0) below 32
    return u32.add(hi, u32.gt(u32.select(u32.sgt(_U(33), cut), fl, fr), r))


@inline
def _magnitude(a, r, p):
    """Magnitude code of the float32 magnitude bits ``a`` (beyond max: above F_MAX_CODE)."""
    be1, sig = _split(a)
    kb = p[F_KBIAS]
    top = u32.umax(kb, be1)
    cut = u32.add(p[F_SHIFT], u32.umin(u32.sub(top, be1), _40))
    return u32.add(u32.shl(u32.sub(top, kb), p[F_MBITS]), _cut(sig, cut, r))


@inline
def float_code(b, r, p):
    """Code of the float32 with bits ``b`` given random bits ``r``: any input."""
    a = u32.band(b, _ABS)
    code = _magnitude(a, r, p)
    neg = u32.shr(b, _31)
    s = u32.band(neg, u32.bor(u32.umin(code, _1), p[F_NEGZERO]))
    res = u32.bor(code, u32.shl(s, p[F_SIGN_SHIFT]))
    res = u32.select(u32.sgt(code, p[F_MAX_CODE]), u32.select(neg, p[F_OVF_NEG], p[F_OVF_POS]),
                     res)
    return u32.select(u32.sgt(a, _INF), u32.select(neg, p[F_NAN_NEG], p[F_NAN_POS]), res)


@inline
def float_value(b, r, p):
    """The float32 bits of the value of ``float_code(b, r, p)``, computed directly."""
    a = u32.band(b, _ABS)
    code = _magnitude(a, r, p)
    neg = u32.shr(b, _31)
    normal = u32.shl(u32.add(code, p[F_CBASE]), p[F_SHIFT])
    scale = np.uint32(p[F_SUBSCALE]).view(np.float32)
    subnormal = np.float32(np.float32(np.int32(code)) * scale).view(np.uint32)
    mag = u32.select(u32.shr(code, p[F_MBITS]), normal, subnormal)
    s = u32.band(neg, u32.bor(u32.umin(code, _1), p[F_NEGZERO]))
    res = u32.bor(mag, u32.shl(s, _31))
    res = u32.select(u32.sgt(code, p[F_MAX_CODE]), u32.select(neg, p[F_OVFV_NEG], p[F_OVFV_POS]),
                     res)
    return u32.select(u32.sgt(a, _INF), u32.select(neg, p[F_NANV_NEG], p[F_NANV_POS]), res)


@inline
def int_value(b, r, p):
    """Signed integer ``n`` (as uint32 bits) of the float32 with bits ``b``."""
    a = u32.band(b, _ABS)
    be1, sig = _split(a)
    neg = u32.shr(b, _31)
    lim = u32.select(neg, p[I_MAX_NEG], p[I_MAX_POS])
    big = u32.sgt(be1, u32.sub(p[I_CUTBASE], _1))  # |x| >= 2**23 units: clip
    n = _cut(sig, u32.select(big, _1, u32.sub(p[I_CUTBASE], be1)), r)
    n = u32.select(big, lim, u32.umin(n, lim))
    n = u32.select(u32.sgt(a, _INF), _Z, n)  # NaN gives 0
    return u32.select(neg, u32.sub(_Z, n), n)


@inline
def _outside(a, lo, span):
    """1 where ``a`` lies outside [lo, lo + span] (unsigned: wraps below lo)."""
    return u32.gt(u32.sub(a, lo), span)


@inline
def _fast(x, out, r32, flags, p, values):
    """Normal results only; flags the other inputs and returns how many."""
    sh = p[F_SHIFT]
    cbase = p[F_CBASE]
    fsh = p[F_FSHIFT]
    ssh = p[F_SIGN_SHIFT]
    lo = p[F_FAST_LO]
    span = p[F_FAST_SPAN]
    bad = _Z
    for j in range(x.size):
        b = x[j]
        a = u32.band(b, _ABS)
        q = u32.add(u32.shr(a, sh), u32.gt(u32.shl(a, fsh), r32[j]))
        if values:  # the float32 bits of the value: the input cut and carried
            out[j] = u32.bor(u32.shl(q, sh), u32.band(b, _SIGN))
        else:
            out[j] = u32.bor(u32.sub(q, cbase), u32.shl(u32.shr(b, _31), ssh))
        f = _outside(a, lo, span)
        flags[j] = f
        bad = u32.add(bad, f)
    return bad


@inline
def _semi(x, out, r32, flags, p, values):
    """Normal and subnormal results (and zeros) whose fraction lies in the input's
    significand; flags tiny, overflowing and non-finite inputs.  Returns (inputs
    outside the fast loop's range, inputs flagged)."""
    kb = p[F_KBIAS]
    sh = p[F_SHIFT]
    m = p[F_MBITS]
    nz = p[F_NEGZERO]
    lo = p[F_SEMI_LO]
    span = p[F_SEMI_SPAN]
    scale = np.uint32(p[F_SUBSCALE]).view(np.float32)
    nfast = _Z
    bad = _Z
    for j in range(x.size):
        b = x[j]
        a = u32.band(b, _ABS)
        be1, sig = _split(a)
        top = u32.umax(kb, be1)
        cut = u32.add(sh, u32.sub(top, be1))  # <= 32 for inputs not flagged
        hi = u32.shr(sig, u32.umin(cut, _31))
        up = u32.gt(u32.shl(sig, u32.band(u32.sub(_32, cut), _31)), r32[j])
        code = u32.add(u32.add(u32.shl(u32.sub(top, kb), m), hi), up)
        s = u32.band(u32.shr(b, _31), u32.bor(u32.umin(code, _1), nz))
        if values:
            normal = u32.shl(u32.add(code, p[F_CBASE]), sh)
            subnormal = np.float32(np.float32(np.int32(code)) * scale).view(np.uint32)
            out[j] = u32.bor(u32.select(u32.shr(code, m), normal, subnormal), u32.shl(s, _31))
        else:
            out[j] = u32.bor(code, u32.shl(s, p[F_SIGN_SHIFT]))
        f = u32.band(_outside(a, lo, span), u32.umin(a, _1))
        flags[j] = f
        bad = u32.add(bad, f)
        nfast = u32.add(nfast, _outside(a, p[F_FAST_LO], p[F_FAST_SPAN]))
    return nfast, bad


@inline
def _general(x, out, r32, p, values):
    """The general rule for every input.  Returns (inputs outside the fast loop's
    range, inputs the semi loop would flag)."""
    nfast = _Z
    nsemi = _Z
    for j in range(x.size):
        b = x[j]
        out[j] = float_value(b, r32[j], p) if values else float_code(b, r32[j], p)
        a = u32.band(b, _ABS)
        nfast = u32.add(nfast, _outside(a, p[F_FAST_LO], p[F_FAST_SPAN]))
        nsemi = u32.add(nsemi, u32.band(_outside(a, p[F_SEMI_LO], p[F_SEMI_SPAN]),
                                        u32.umin(a, _1)))
    return nfast, nsemi


@inline
def _sparse(x, out, r32, flags, p, values):
    """The general rule for the flagged inputs (groups of 8 without a flag are skipped)."""
    words = flags.view(np.uint64)
    n = x.size
    for g in range((n + 7) >> 3):
        if words[g] != 0:
            for j in range(g * 8, min(g * 8 + 8, n)):
                if flags[j] != 0:
                    b = x[j]
                    out[j] = float_value(b, r32[j], p) if values else float_code(b, r32[j], p)


# loop choice per block: the fast loop while it flags few inputs, else the semi
# loop while that flags few, else the general loop; each block starts with the
# choice its predecessor's counts point to
_FAST, _SEMI, _GENERAL = 0, 1, 2


@inline
def _float_block(xb, out, r32, flags, seed, blk, p, values, mode):
    """One block; returns the loop the next block starts with."""
    i0 = blk * BLOCK
    m = min(BLOCK, xb.size - i0)
    _fill_bits(r32, seed, i0 >> 1, (m + 1) >> 1)
    x = xb[i0:i0 + m]
    o = out[i0:i0 + m]
    if mode == _FAST:
        bad = _fast(x, o, r32, flags, p, values)
        if bad <= DENSE:
            if bad != _Z:
                _sparse(x, o, r32, flags, p, values)
            return _FAST
        mode = _SEMI
    if mode == _SEMI:
        nfast, bad = _semi(x, o, r32, flags, p, values)
        if bad <= DENSE:
            if bad != _Z:
                _sparse(x, o, r32, flags, p, values)
            return _FAST if nfast <= DENSE else _SEMI
    nfast, nsemi = _general(x, o, r32, p, values)
    if nfast <= DENSE:
        return _FAST
    return _SEMI if nsemi <= DENSE else _GENERAL


@inline
def _int_block(xb, out, r32, seed, blk, p, scale, values):
    i0 = blk * BLOCK
    m = min(BLOCK, xb.size - i0)
    _fill_bits(r32, seed, i0 >> 1, (m + 1) >> 1)
    for j in range(m):
        n = int_value(xb[i0 + j], r32[j], p)
        if values:
            out[i0 + j] = np.float32(np.int32(n)) * scale  # n as two's complement
        else:
            out[i0 + j] = np.int32(u32.band(n, p[I_MASK]))


@inline
def _float_range(xb, out, seed, p, values, b0, b1):
    """Blocks ``b0 <= blk < b1``, with their own buffers."""
    r32 = np.empty(BLOCK, dtype=np.uint32)
    flags = np.zeros(BLOCK, dtype=np.uint8)
    mode = _FAST
    for blk in range(b0, b1):
        mode = _float_block(xb, out, r32, flags, seed, blk, p, values, mode)


@inline
def _int_range(xb, out, seed, p, scale, values, b0, b1):
    r32 = np.empty(BLOCK, dtype=np.uint32)
    for blk in range(b0, b1):
        _int_block(xb, out, r32, seed, blk, p, scale, values)


# The parallel entry points split the blocks into at most 64 chunks; their prange loop is
# in the entry point itself (Numba parallelises only its own loops, before LLVM inlines).
_CHUNKS = 64


# The entry points pass ``values`` as a constant, so each compiles to branch-free loops.
@jit
def float_codes_serial(xb, out, seed, p):
    """Stochastic codes of the float32 bit patterns ``xb`` (uint32) into ``out``."""
    _float_range(xb, out, seed, p, False, 0, (xb.size + BLOCK - 1) // BLOCK)


@pjit
def float_codes_parallel(xb, out, seed, p):
    nb = (xb.size + BLOCK - 1) // BLOCK
    nc = min(nb, _CHUNKS)
    for c in prange(nc):
        _float_range(xb, out, seed, p, False, c * nb // nc, (c + 1) * nb // nc)


@jit
def float_values_serial(xb, out, seed, p):
    """The float32 bits (``out``: uint32) of the stochastically rounded values."""
    _float_range(xb, out, seed, p, True, 0, (xb.size + BLOCK - 1) // BLOCK)


@pjit
def float_values_parallel(xb, out, seed, p):
    nb = (xb.size + BLOCK - 1) // BLOCK
    nc = min(nb, _CHUNKS)
    for c in prange(nc):
        _float_range(xb, out, seed, p, True, c * nb // nc, (c + 1) * nb // nc)


@jit
def int_codes_serial(xb, out, seed, p):
    """Stochastically rounded integers of the float32 bit patterns ``xb``."""
    _int_range(xb, out, seed, p, np.float32(1.0), False, 0, (xb.size + BLOCK - 1) // BLOCK)


@pjit
def int_codes_parallel(xb, out, seed, p):
    nb = (xb.size + BLOCK - 1) // BLOCK
    nc = min(nb, _CHUNKS)
    for c in prange(nc):
        _int_range(xb, out, seed, p, np.float32(1.0), False, c * nb // nc, (c + 1) * nb // nc)


@jit
def int_values_serial(xb, out, seed, p, scale):
    """Their float32 values, ``n * scale``."""
    _int_range(xb, out, seed, p, scale, True, 0, (xb.size + BLOCK - 1) // BLOCK)


@pjit
def int_values_parallel(xb, out, seed, p, scale):
    nb = (xb.size + BLOCK - 1) // BLOCK
    nc = min(nb, _CHUNKS)
    for c in prange(nc):
        _int_range(xb, out, seed, p, scale, True, c * nb // nc, (c + 1) * nb // nc)
