"""Table-driven loops for float32 and float16 inputs.

For a format whose rounding point always lies at or above bit 17 of a float32
input (formats with at most 6 mantissa bits, and small integers), the code of
a float32 depends only on its top 16 bits and on whether its low 16 bits are
zero.  ``fpsim.codec`` builds a 2 x 65536-entry table with the generic scalar
kernel, so these loops give the generic kernel's codes bit for bit at a
fraction of the cost.  Float16 inputs index a 65536-entry table directly.
``quantize`` uses the same loops with tables of values instead of codes.
Stochastic rounding uses two tables (the code below and above) and compares
the 32-bit fraction with the element's random bits.
"""

import numpy as np

from ._util import jit, pjit, prange
from .scalar import stochastic_bits

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


@jit
def sr_hi16_serial(xb, out, down, up, shift_tab, seed):
    for i in range(xb.size):
        b = np.int64(xb[i])
        a = b & 0x7FFFFFFF
        be = a >> 23
        sig = (a & 0x7FFFFF) | ((np.int64(1) << 23) if be != 0 else 0)
        s = shift_tab[be]
        frac32 = ((sig << (32 - s)) & 0xFFFFFFFF) if s <= 32 else (sig >> (s - 32))
        j = b >> 16
        out[i] = up[j] if frac32 > stochastic_bits(seed, i) else down[j]


@pjit
def sr_hi16_parallel(xb, out, down, up, shift_tab, seed):
    for i in prange(xb.size):
        b = np.int64(xb[i])
        a = b & 0x7FFFFFFF
        be = a >> 23
        sig = (a & 0x7FFFFF) | ((np.int64(1) << 23) if be != 0 else 0)
        s = shift_tab[be]
        frac32 = ((sig << (32 - s)) & 0xFFFFFFFF) if s <= 32 else (sig >> (s - 32))
        j = b >> 16
        out[i] = up[j] if frac32 > stochastic_bits(seed, i) else down[j]
