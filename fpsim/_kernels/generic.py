"""Generic loops: any float format, any input dtype, any rounding mode.

They call the scalar kernels of :mod:`fpsim._kernels.scalar` once per
element; ``fpsim._kernels.lut`` has the faster table-driven loops used for
float32 and float16 inputs where a table is exact.
"""

import numpy as np

from ._util import jit, pjit, prange
from .scalar import STOCHASTIC, encode_float, encode_int, stochastic_bits


@jit
def encode_float_serial(xb, out, in_mbits, in_ebits, fp, mode, saturate, seed):
    for i in range(xb.size):
        r = stochastic_bits(seed, i) if mode == STOCHASTIC else 0
        out[i] = encode_float(np.int64(xb[i]), in_mbits, in_ebits, fp, mode, saturate, r)


@pjit
def encode_float_parallel(xb, out, in_mbits, in_ebits, fp, mode, saturate, seed):
    for i in prange(xb.size):
        r = stochastic_bits(seed, i) if mode == STOCHASTIC else 0
        out[i] = encode_float(np.int64(xb[i]), in_mbits, in_ebits, fp, mode, saturate, r)


@jit
def quantize_float_serial(xb, out, lut, in_mbits, in_ebits, fp, mode, saturate, seed):
    for i in range(xb.size):
        r = stochastic_bits(seed, i) if mode == STOCHASTIC else 0
        out[i] = lut[encode_float(np.int64(xb[i]), in_mbits, in_ebits, fp, mode, saturate, r)]


@pjit
def quantize_float_parallel(xb, out, lut, in_mbits, in_ebits, fp, mode, saturate, seed):
    for i in prange(xb.size):
        r = stochastic_bits(seed, i) if mode == STOCHASTIC else 0
        out[i] = lut[encode_float(np.int64(xb[i]), in_mbits, in_ebits, fp, mode, saturate, r)]


@jit
def encode_int_serial(xb, out, in_mbits, in_ebits, ip, mode, seed):
    for i in range(xb.size):
        r = stochastic_bits(seed, i) if mode == STOCHASTIC else 0
        out[i] = encode_int(np.int64(xb[i]), in_mbits, in_ebits, ip, mode, r)


@pjit
def encode_int_parallel(xb, out, in_mbits, in_ebits, ip, mode, seed):
    for i in prange(xb.size):
        r = stochastic_bits(seed, i) if mode == STOCHASTIC else 0
        out[i] = encode_int(np.int64(xb[i]), in_mbits, in_ebits, ip, mode, r)


@jit
def quantize_int_serial(xb, out, scale, in_mbits, in_ebits, ip, mode, seed):
    for i in range(xb.size):
        r = stochastic_bits(seed, i) if mode == STOCHASTIC else 0
        out[i] = encode_int(np.int64(xb[i]), in_mbits, in_ebits, ip, mode, r) * scale


@pjit
def quantize_int_parallel(xb, out, scale, in_mbits, in_ebits, ip, mode, seed):
    for i in prange(xb.size):
        r = stochastic_bits(seed, i) if mode == STOCHASTIC else 0
        out[i] = encode_int(np.int64(xb[i]), in_mbits, in_ebits, ip, mode, r) * scale


@jit
def decode_lut_serial(codes, out, lut):
    """out[i] = lut[codes[i]] (codes already validated)."""
    for i in range(codes.size):
        out[i] = lut[codes[i]]


@pjit
def decode_lut_parallel(codes, out, lut):
    for i in prange(codes.size):
        out[i] = lut[codes[i]]


@jit
def decode_int_serial(codes, out, scale):
    for i in range(codes.size):
        out[i] = codes[i] * scale


@jit
def count_outside(codes, lo, hi):
    """(how many codes lie outside [lo, hi], index of the first one or -1)."""
    count = 0
    first = -1
    for i in range(codes.size):
        c = np.int64(codes[i])
        if c < lo or c > hi:
            if first < 0:
                first = i
            count += 1
    return count, first


@jit
def encode_float_fixed_r(xb, out, in_mbits, in_ebits, fp, mode, saturate, r):
    """Like encode_float_serial with one random number ``r`` for every element (tables)."""
    for i in range(xb.size):
        out[i] = encode_float(np.int64(xb[i]), in_mbits, in_ebits, fp, mode, saturate, r)


@jit
def encode_int_fixed_r(xb, out, in_mbits, in_ebits, ip, mode, r):
    for i in range(xb.size):
        out[i] = encode_int(np.int64(xb[i]), in_mbits, in_ebits, ip, mode, r)
