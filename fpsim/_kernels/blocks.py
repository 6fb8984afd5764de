"""Block-scaled (OCP MX) kernels: a power-of-two scale per block of k elements.

The input is a float32 array viewed as int32 and laid out as (blocks, k).
Each block's scale 2**es is chosen from the block's amax by a scale rule; its
elements are then encoded with every format exponent shifted by ``es``, which
is exactly ``x / 2**es`` rounded once (no intermediate float32 rounding).

Scale rules (``rule``)::

    0 floor  es = floor(log2 amax) - emax_elem                (OCP MX v1.0)
    1 ceil   es = ceil(log2 amax) - emax_elem
    2 even   es = E - emax_elem, E = exponent of amax rounded to the nearest
             power of two, ties to the even exponent
    3 rceil  es = ceil(log2(amax / max_elem))                  (never clips)

``es`` is clamped to the E8M0 range [-127, 127]. NaN and Inf never set a
scale: amax is taken over the finite elements, and a block whose finite amax
is 0 (or that holds no finite value) gets scale 1 (0x7F).  Elements are then
encoded one by one: NaN stays NaN (the element's NaN code, or for formats
without NaN the code the element cast gives NaN, with the value NaN), and
+-Inf saturates to +-max_elem, like every finite element beyond the range.
"""

import math

import numpy as np

from ._util import inline, jit, pjit, prange
from .scalar import IP_BITS, IP_SCALE_EXP, STOCHASTIC, encode_float, encode_int, stochastic_bits

FLOOR, CEIL, EVEN, RCEIL = range(4)


@inline
def block_exponent(xb, start, k, rule, emax_elem, max_mant23):
    """Scale exponent es for the block xb[start:start+k] from its finite values."""
    amax = np.int64(0)
    for j in range(k):
        a = np.int64(xb[start + j]) & 0x7FFFFFFF
        if a > amax and a < 0x7F800000:  # NaN and Inf never set a scale
            amax = a
    if amax == 0:
        return 0
    be = amax >> 23
    mant = amax & 0x7FFFFF
    if be == 0:  # float32 subnormal: normalise
        e = -126
        while mant < 0x800000:
            mant <<= 1
            e -= 1
        mant &= 0x7FFFFF
    else:
        e = be - 127
    if rule == CEIL:
        e += 1 if mant != 0 else 0
    elif rule == EVEN:
        if mant > 0x400000 or (mant == 0x400000 and (e & 1) == 1):
            e += 1
    elif rule == RCEIL:
        e += 1 if mant > max_mant23 else 0
    es = e - emax_elem
    if es < -127:
        es = -127
    elif es > 127:
        es = 127
    return es


_F32_MAX = 3.4028234663852886e38  # float32's largest finite value


@inline
def _block(g, xb, codes, values, scale_codes, k, fp, ip, is_int, rule, emax_elem, max_mant23,
           mode, seed, lut, want_values):
    start = g * k
    es = block_exponent(xb, start, k, rule, emax_elem, max_mant23)
    scale_codes[g] = es + 127
    mult = math.ldexp(1.0, int(es))
    for j in range(k):
        i = start + j
        r = stochastic_bits(seed, i) if mode == STOCHASTIC else 0
        b = np.int64(xb[i])
        if is_int:
            # ip carries bit_patterns=0: n is the signed integer; store its bits
            n = encode_int(b, 23, 8, ip, mode, r, es)
            codes[i] = n & ((np.int64(1) << ip[IP_BITS]) - 1)
            if want_values:
                v = n * math.ldexp(1.0, int(ip[IP_SCALE_EXP] + es))
                # OCP INT8's -2 in the top block (-2 * 2^127) is beyond float32: saturate
                values[i] = max(v, -_F32_MAX)
        else:
            c = encode_float(b, 23, 8, fp, mode, True, r, es)
            codes[i] = c
            if want_values:
                values[i] = lut[c] * mult
        if want_values and (b & 0x7FFFFFFF) > 0x7F800000:  # NaN stays NaN
            values[i] = np.nan


@jit
def mx_serial(xb, codes, values, scale_codes, k, fp, ip, is_int, rule, emax_elem, max_mant23,
              mode, seed, lut, want_values):
    for g in range(scale_codes.size):
        _block(g, xb, codes, values, scale_codes, k, fp, ip, is_int, rule, emax_elem,
               max_mant23, mode, seed, lut, want_values)


@pjit
def mx_parallel(xb, codes, values, scale_codes, k, fp, ip, is_int, rule, emax_elem, max_mant23,
                mode, seed, lut, want_values):
    for g in prange(scale_codes.size):
        _block(g, xb, codes, values, scale_codes, k, fp, ip, is_int, rule, emax_elem,
               max_mant23, mode, seed, lut, want_values)
