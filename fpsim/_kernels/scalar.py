"""Scalar bit-level kernels: round one input to a code.

Every kernel works on the integer bit pattern of its input (float16, float32
and float64 viewed as int16, int32, int64), so rounding is exact and happens
once.  Format details arrive as plain ints in a tuple built by
``fpsim.codec``; ``fpsim.reference`` is the readable twin these kernels are
tested against.

Rounding-mode numbers (``mode``)::

    0 nearest_even  1 nearest_away  2 toward_zero  3 toward_positive
    4 toward_negative  5 odd  6 stochastic
"""

import numpy as np

from ._util import inline

# splitmix64 constants (see docs/numerics.md, "Stochastic rounding's random bits")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_LOW32 = np.uint64(0xFFFFFFFF)

NEAREST_EVEN, NEAREST_AWAY, TOWARD_ZERO, TOWARD_POSITIVE, TOWARD_NEGATIVE, ODD, STOCHASTIC = range(7)

# Indices of the float-format parameter tuple ``fp``.
(
    FP_MBITS,  # stored mantissa bits
    FP_EMIN,  # unbiased exponent of the smallest normal
    FP_EMAX,  # unbiased exponent of the largest finite value
    FP_EFIELD_EMIN,  # exponent field of the smallest normal (1, or 0 without zero)
    FP_MAX_CODE,  # magnitude code of max
    FP_SUBNORMALS,
    FP_HAS_ZERO,
    FP_SIGNED,
    FP_SIGN_BIT,
    FP_NAN_POS,  # code for a +NaN input
    FP_NAN_NEG,  # code for a -NaN input
    FP_HAS_NAN,
    FP_HAS_INF,
    FP_INF_POS,
    FP_INF_NEG,
    FP_NEGZERO,  # code for -0 (0 where the format has no -0)
    FP_NEG_NAN,  # unsigned formats: 1 if every negative input (not -0) is NaN
) = range(17)
FP_SIZE = 17  # length of the tuple

# Indices of the integer-format parameter tuple ``ip``.
IP_SCALE_EXP, IP_MIN_INT, IP_MAX_INT, IP_BITS, IP_BIT_PATTERNS = range(5)


@inline
def splitmix64_mix(z):
    """splitmix64's output function of its state ``z`` (uint64)."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@inline
def stochastic_pair(seed, k):
    """64 random bits for elements 2k and 2k+1: splitmix64 keyed by (seed, k)."""
    return splitmix64_mix(seed + np.uint64(k + 1) * _GOLDEN)


@inline
def stochastic_bits(seed, index):
    """The 32 random bits of element ``index``: low half of its pair's draw if even."""
    z = stochastic_pair(seed, index >> 1)
    return np.int64((z >> np.uint64(32 * (index & 1))) & _LOW32)


@inline
def round_code(offset, sig, shift, mode, neg, r):
    """Round ``offset + sig / 2**shift`` to an integer code.

    ``sig >= 1``; ties and odd-rounding look at the parity of the code itself,
    so ``offset`` must be the code of the grid point below ``sig`` when the
    fraction is dropped.  ``r`` is the 32-bit random number (stochastic only).
    """
    if shift <= 0:
        return offset + (sig << (-shift))
    if shift > 62:
        # sig < 2**62: the fraction is non-zero and below one half.
        if mode == STOCHASTIC:
            s2 = shift - 32
            frac32 = (sig >> s2) if s2 < 63 else 0
            return offset + (1 if frac32 > r else 0)
        if mode == TOWARD_POSITIVE:
            return offset + (0 if neg else 1)
        if mode == TOWARD_NEGATIVE:
            return offset + (1 if neg else 0)
        if mode == ODD:
            return offset | 1
        return offset
    # Branch-free where the outcome depends on the data (signs and fractions
    # are unpredictable; the mode is not).
    q = offset + (sig >> shift)
    rem = sig & ((np.int64(1) << shift) - 1)
    inexact = np.int64(rem != 0)
    if mode == NEAREST_EVEN:
        half = np.int64(1) << (shift - 1)
        q += np.int64(rem > half) | (np.int64(rem == half) & q & 1)
    elif mode == NEAREST_AWAY:
        q += np.int64(rem >= (np.int64(1) << (shift - 1)))
    elif mode == TOWARD_POSITIVE:
        q += inexact & np.int64(not neg)
    elif mode == TOWARD_NEGATIVE:
        q += inexact & np.int64(neg)
    elif mode == ODD:
        q |= inexact
    elif mode == STOCHASTIC:
        frac32 = (rem >> (shift - 32)) if shift >= 32 else (rem << (32 - shift))
        q += np.int64(frac32 > r)
    return q


@inline
def _overflow(neg, to_max, fp):
    """Code for a result beyond max (``to_max``: saturate / directed toward max)."""
    if neg and fp[FP_SIGNED] == 0:
        return 0 if (to_max or fp[FP_HAS_NAN] == 0) else fp[FP_NAN_POS]
    sign = fp[FP_SIGN_BIT] if neg else 0
    if to_max:
        return fp[FP_MAX_CODE] | sign
    if fp[FP_HAS_INF] != 0:
        return fp[FP_INF_NEG] if neg else fp[FP_INF_POS]
    if fp[FP_HAS_NAN] != 0:
        return fp[FP_NAN_NEG] if neg else fp[FP_NAN_POS]
    return fp[FP_MAX_CODE] | sign


@inline
def encode_float(b, in_mbits, in_ebits, fp, mode, saturate, r, eshift=0):
    """Code of the float whose bit pattern (as a signed int) is ``b``.

    ``eshift`` adds to every exponent of the format: it encodes ``x / 2**eshift``
    exactly (a power-of-two block scale, with no intermediate rounding).
    """
    neg = b < 0
    a = b & ((np.int64(1) << (in_mbits + in_ebits)) - 1)
    in_emask = (np.int64(1) << in_ebits) - 1
    be = a >> in_mbits
    mant = a & ((np.int64(1) << in_mbits) - 1)
    mbits = fp[FP_MBITS]
    emin = fp[FP_EMIN] + eshift
    if be == in_emask:
        if mant != 0:
            return fp[FP_NAN_NEG] if neg else fp[FP_NAN_POS]
        return _overflow(neg, saturate, fp)
    if a == 0:
        if fp[FP_HAS_ZERO] == 0:
            return 0 if (saturate or fp[FP_HAS_NAN] == 0) else fp[FP_NAN_POS]
        return fp[FP_NEGZERO] if neg else 0
    in_bias = in_emask >> 1
    if be == 0:
        e = 1 - in_bias
        sig = mant
        while sig < (np.int64(1) << in_mbits):
            sig <<= 1
            e -= 1
    else:
        e = be - in_bias
        sig = mant | (np.int64(1) << in_mbits)
    # |x| = sig * 2**(e - in_mbits), with 2**in_mbits <= sig < 2**(in_mbits + 1)
    if e > fp[FP_EMAX] + eshift + 1:
        mag = fp[FP_MAX_CODE] + 1
    elif e >= emin:
        offset = ((e - emin + fp[FP_EFIELD_EMIN]) << mbits) - (np.int64(1) << mbits)
        mag = round_code(offset, sig, in_mbits - mbits, mode, neg, r)
    elif fp[FP_HAS_ZERO] == 0:
        mag = 0
    elif fp[FP_SUBNORMALS] != 0:
        mag = round_code(0, sig, in_mbits - mbits + (emin - e), mode, neg, r)
    else:
        mag = round_code(0, sig, in_mbits + (emin - e), mode, neg, r) << mbits
    if mag > fp[FP_MAX_CODE]:
        if neg and fp[FP_SIGNED] == 0:  # a negative overflow is no zero: NaN
            return 0 if (saturate or fp[FP_HAS_NAN] == 0) else fp[FP_NAN_POS]
        to_max = (
            saturate
            or mode == TOWARD_ZERO
            or (mode == TOWARD_POSITIVE and neg)
            or (mode == TOWARD_NEGATIVE and not neg)
        )
        return _overflow(neg, to_max, fp)
    if fp[FP_SIGNED] == 0:
        if neg and (mag != 0 or fp[FP_HAS_ZERO] == 0 or fp[FP_NEG_NAN] != 0):
            return 0 if (saturate or fp[FP_HAS_NAN] == 0) else fp[FP_NAN_POS]
        return mag
    # Branch-free sign: -0 keeps the sign bit only where the format has -0.
    sign = fp[FP_NEGZERO] if mag == 0 else fp[FP_SIGN_BIT]
    return mag | (sign & -np.int64(neg))


@inline
def encode_int(b, in_mbits, in_ebits, ip, mode, r, eshift=0):
    """Integer ``n`` (clipped to the format) for the float with bit pattern ``b``.

    ``eshift`` encodes ``x / 2**eshift`` exactly (a power-of-two block scale).
    """
    neg = b < 0
    a = b & ((np.int64(1) << (in_mbits + in_ebits)) - 1)
    in_emask = (np.int64(1) << in_ebits) - 1
    be = a >> in_mbits
    mant = a & ((np.int64(1) << in_mbits) - 1)
    lo = ip[IP_MIN_INT]
    hi = ip[IP_MAX_INT]
    if be == in_emask:
        if mant != 0:
            n = np.int64(0)
        else:
            n = lo if neg else hi
    elif a == 0:
        n = np.int64(0)
    else:
        in_bias = in_emask >> 1
        if be == 0:
            e = 1 - in_bias
            sig = mant
            while sig < (np.int64(1) << in_mbits):
                sig <<= 1
                e -= 1
        else:
            e = be - in_bias
            sig = mant | (np.int64(1) << in_mbits)
        # |x| / 2**scale_exp = sig * 2**(e - scale_exp - in_mbits)
        p = e - ip[IP_SCALE_EXP] - eshift
        if p > ip[IP_BITS] + 1:
            n = lo if neg else hi
        else:
            m = round_code(0, sig, in_mbits - p, mode, neg, r)
            n = -m if neg else m
            if n < lo:
                n = lo
            elif n > hi:
                n = hi
    if ip[IP_BIT_PATTERNS] != 0:
        return n & ((np.int64(1) << ip[IP_BITS]) - 1)
    return n
