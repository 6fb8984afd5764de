"""The codec layer's lower half: kernel parameters of a format, the lookup tables of
the fast loops, and the dispatch of one flat array to its kernel.

Everything here takes resolved objects (a :class:`~fpsim.formats.FloatFormat` or
:class:`~fpsim.formats.IntFormat`, an integer rounding mode, a bool, a uint64 seed):
:mod:`fpsim.codec` and :mod:`fpsim.quant` validate at the edge and call down once.
"""

from __future__ import annotations

import functools

import numpy as np

from ._kernels import generic, stochastic, use_parallel
from ._kernels import lut as klut
from ._kernels import scalar as cast
from .formats import FloatFormat, IntFormat
from .rounding import rounding_mode

FLOAT_LAYOUT = {
    np.dtype(np.float16): (np.int16, 10, 5),
    np.dtype(np.float32): (np.int32, 23, 8),
    np.dtype(np.float64): (np.int64, 52, 11),
}


# ---- format parameters for the kernels -----------------------------------
@functools.lru_cache(maxsize=None)
def float_params(fmt: FloatFormat) -> tuple:
    if fmt.has_nan:
        nan_pos, nan_neg = fmt.nan_code(False), fmt.nan_code(True)
    elif fmt.signed:
        # No NaN (fp6, fp4): a zero with the inverse of the NaN's sign, as ml_dtypes.
        nan_pos, nan_neg = fmt.sign_bit, 0
    else:
        nan_pos = nan_neg = 0
    p = [0] * cast.FP_SIZE
    p[cast.FP_MBITS] = fmt.mantissa_bits
    p[cast.FP_EMIN] = fmt.emin
    p[cast.FP_EMAX] = fmt.emax
    p[cast.FP_EFIELD_EMIN] = 1 if fmt.has_zero else 0
    p[cast.FP_MAX_CODE] = fmt.max_code
    p[cast.FP_SUBNORMALS] = int(fmt.subnormals)
    p[cast.FP_HAS_ZERO] = int(fmt.has_zero)
    p[cast.FP_SIGNED] = int(fmt.signed)
    p[cast.FP_SIGN_BIT] = fmt.sign_bit
    p[cast.FP_NAN_POS] = nan_pos
    p[cast.FP_NAN_NEG] = nan_neg
    p[cast.FP_HAS_NAN] = int(fmt.has_nan)
    p[cast.FP_HAS_INF] = int(fmt.has_inf)
    p[cast.FP_INF_POS] = max(fmt.inf_code(False), 0)
    p[cast.FP_INF_NEG] = max(fmt.inf_code(True), 0)
    p[cast.FP_NEGZERO] = fmt.sign_bit if fmt.has_negative_zero else 0
    p[cast.FP_NEG_NAN] = int(not fmt.signed and fmt.negatives == "nan")
    return tuple(int(v) for v in p)


@functools.lru_cache(maxsize=None)
def int_params(fmt: IntFormat) -> tuple:
    p = [0] * 5
    p[cast.IP_SCALE_EXP] = fmt.scale_exp
    p[cast.IP_MIN_INT] = fmt.min_int
    p[cast.IP_MAX_INT] = fmt.max_int
    p[cast.IP_BITS] = fmt.bits
    p[cast.IP_BIT_PATTERNS] = int(fmt.bit_patterns)
    return tuple(int(v) for v in p)


@functools.lru_cache(maxsize=None)
def lut(fmt, dtype: np.dtype) -> np.ndarray:
    """Value of every code in ``dtype``; NaN codes with the sign bit give -NaN."""
    vals = fmt.values()
    with np.errstate(over="ignore"):
        table = vals.astype(dtype)
    if isinstance(fmt, FloatFormat) and fmt.signed and fmt.has_nan:
        neg_nan = np.isnan(vals) & ((np.arange(vals.size) & fmt.sign_bit) != 0)
        table[neg_nan] = -np.abs(table[neg_nan])
    table.setflags(write=False)
    return table


def mode_for(fmt, rounding) -> int:
    mode = rounding_mode(rounding)
    if mode == cast.NEAREST_EVEN and isinstance(fmt, FloatFormat) and fmt.ties == "away":
        mode = cast.NEAREST_AWAY
    return mode


# ---- tables for the fast loops --------------------------------------------
HI16_INPUTS = None


def hi16_ok(fmt) -> bool:
    """Whether a float32's code depends only on its top 16 bits and a sticky bit."""
    if isinstance(fmt, FloatFormat):
        return fmt.mantissa_bits <= 6
    return fmt.max_int <= 127 and fmt.min_int >= -128


#: ``ap`` of a format the fused fake-quantization loops round by table only.
NO_ARITH = (-1, 0.0, 0.0, 0.0, 0)


@functools.lru_cache(maxsize=None)
def arith_params(fmt, mode: int) -> tuple:
    """The ``ap`` tuple with which :mod:`fpsim._kernels.lut`'s fused loops round a
    float32 to ``fmt`` by arithmetic, or :data:`NO_ARITH` (table only).

    The arithmetic covers nearest-even to signed float formats with zero and
    subnormals inside float32's range (mantissa 1 to 6: the table is the fallback),
    and to signed integer formats of at most 8 bits.
    """
    if mode != cast.NEAREST_EVEN or not hi16_ok(fmt):
        return NO_ARITH
    if isinstance(fmt, FloatFormat):
        m = fmt.mantissa_bits
        # (no mantissa: the last kept bit is the exponent's, whose parity differs
        # from the format's when its bias is even, as P3109's precision-1 formats)
        if not (fmt.signed and fmt.has_zero and fmt.subnormals and fmt.ties == "even"
                and m >= 1 and fmt.emin >= -126 and fmt.emax <= 100):
            return NO_ARITH
        return (23 - m, 2.0 ** fmt.emin, 1.5 * 2.0 ** (fmt.emin - m + 23), float(fmt.max),
                int(fmt.has_negative_zero))
    if not fmt.signed or not -100 <= fmt.scale_exp <= 100:
        return NO_ARITH
    return (0, np.inf, 1.5 * 2.0 ** (fmt.scale_exp + 23), float(fmt.max), 0)


def sr_ok(fmt) -> bool:
    """The stochastic table path also needs float32 subnormal inputs to stay below
    the format's normal range (not so for float8_e8m0fnu, emin = -127)."""
    return not isinstance(fmt, FloatFormat) or fmt.emin >= -126


def sr_float_ok(fmt) -> bool:
    """Whether stochastic rounding of float32 can use the 32-bit block kernels
    (:mod:`fpsim._kernels.stochastic`): signed float formats with zero and
    subnormals whose exponents lie inside float32's (:func:`sr_int_ok`: integers)."""
    return (isinstance(fmt, FloatFormat) and fmt.signed and fmt.has_zero and fmt.subnormals
            and fmt.mantissa_bits <= 22 and fmt.emin >= -126 and fmt.emax <= 127)


def sr_int_ok(fmt) -> bool:
    """Integer formats up to 16 bits whose grid step 2**scale_exp is a float32 normal."""
    return isinstance(fmt, IntFormat) and fmt.bits <= 16 and -120 <= fmt.scale_exp <= 100


@functools.lru_cache(maxsize=256)
def sr_params(fmt, saturate: bool) -> tuple:
    """The constants of the block kernels (a tuple of uint32)."""
    if isinstance(fmt, IntFormat):
        p = [0] * 4
        p[stochastic.I_CUTBASE] = 150 + fmt.scale_exp
        p[stochastic.I_MAX_POS] = fmt.max_int
        p[stochastic.I_MAX_NEG] = -fmt.min_int
        p[stochastic.I_MASK] = (1 << fmt.bits) - 1 if fmt.bit_patterns else 0xFFFFFFFF
        return tuple(np.uint32(v) for v in p)
    fp = float_params(fmt)

    def overflow(neg: bool) -> int:
        sign = fmt.sign_bit if neg else 0
        if saturate or not (fmt.has_inf or fmt.has_nan):
            return fmt.max_code | sign
        if fmt.has_inf:
            return fmt.inf_code(neg)
        return fp[cast.FP_NAN_NEG if neg else cast.FP_NAN_POS]

    m = fmt.mantissa_bits
    kbias = 127 + fmt.emin
    fast_lo = kbias << 23
    fast_hi = int(np.float32(fmt.max).view(np.uint32))
    p = [0] * 21
    p[stochastic.F_MBITS] = m
    p[stochastic.F_SHIFT] = 23 - m
    p[stochastic.F_KBIAS] = kbias
    p[stochastic.F_CBASE] = (kbias - 1) << m
    p[stochastic.F_FSHIFT] = 9 + m
    p[stochastic.F_MAX_CODE] = fmt.max_code
    p[stochastic.F_OVF_POS] = overflow(False)
    p[stochastic.F_OVF_NEG] = overflow(True)
    p[stochastic.F_NAN_POS] = fp[cast.FP_NAN_POS]
    p[stochastic.F_NAN_NEG] = fp[cast.FP_NAN_NEG]
    p[stochastic.F_SIGN_SHIFT] = fmt.bits - 1
    p[stochastic.F_NEGZERO] = int(fmt.has_negative_zero)
    p[stochastic.F_FAST_LO] = fast_lo
    p[stochastic.F_FAST_SPAN] = fast_hi - fast_lo
    p[stochastic.F_SUBSCALE] = int(np.float32(2.0 ** (fmt.emin - m)).view(np.uint32))
    value_bits = lut(fmt, np.dtype(np.float32)).view(np.uint32)
    for code_i, value_i in ((stochastic.F_OVF_POS, stochastic.F_OVFV_POS),
                            (stochastic.F_OVF_NEG, stochastic.F_OVFV_NEG),
                            (stochastic.F_NAN_POS, stochastic.F_NANV_POS),
                            (stochastic.F_NAN_NEG, stochastic.F_NANV_NEG)):
        p[value_i] = int(value_bits[p[code_i]])
    # the semi loop: the cut (23 - m + kbias - field) is at most 32 from this field on
    semi_lo = max(kbias + 23 - m - 32, 1) << 23
    p[stochastic.F_SEMI_LO] = semi_lo
    p[stochastic.F_SEMI_SPAN] = fast_hi - semi_lo
    return tuple(np.uint32(v) for v in p)


def generic_fixed_r(x: np.ndarray, fmt, mode: int, saturate: bool, r: int) -> np.ndarray:
    view, mbits, ebits = FLOAT_LAYOUT[x.dtype]
    out = np.empty(x.shape, dtype=fmt.code_dtype)
    with np.errstate(over="ignore"):
        if isinstance(fmt, FloatFormat):
            generic.encode_float_fixed_r(x.view(view), out, mbits, ebits, float_params(fmt),
                                         mode, saturate, r)
        else:
            generic.encode_int_fixed_r(x.view(view), out, mbits, ebits, int_params(fmt), mode, r)
    return out


def codes_to_values(fmt, codes: np.ndarray, dtype) -> np.ndarray:
    if isinstance(fmt, IntFormat) and not fmt.bit_patterns:
        return (codes.astype(np.float64) * 2.0**fmt.scale_exp).astype(dtype)
    return lut(fmt, np.dtype(dtype))[codes]


def hi16_inputs(low: int) -> np.ndarray:
    return ((np.arange(1 << 16, dtype=np.uint32) << 16) | np.uint32(low)).view(np.float32)


@functools.lru_cache(maxsize=256)
def hi16_table(fmt, mode: int, saturate: bool, dtype) -> np.ndarray:
    """Codes (dtype None) or values for (top 16 bits, low 16 bits != 0)."""
    codes = np.concatenate([
        generic_fixed_r(hi16_inputs(0), fmt, mode, saturate, 0),
        generic_fixed_r(hi16_inputs(1), fmt, mode, saturate, 0),
    ])
    table = codes if dtype is None else codes_to_values(fmt, codes, dtype)
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=256)
def f16_table(fmt, mode: int, saturate: bool, dtype) -> np.ndarray:
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    codes = generic_fixed_r(x, fmt, mode, saturate, 0)
    table = codes if dtype is None else codes_to_values(fmt, codes, dtype)
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=64)
def sr_tables(fmt, saturate: bool, dtype):
    """Tables for stochastic rounding of float32 inputs.

    ``table`` stacks four 65536-entry parts indexed by the top 16 bits: the
    code when not rounding up for an exact low half, for an inexact one, then
    twice the code when rounding up.  ``shift`` gives, per input exponent
    field, where the rounding point lies (the 32-bit fraction is taken there).
    """
    down0 = generic_fixed_r(hi16_inputs(0), fmt, cast.STOCHASTIC, saturate, 0xFFFFFFFF)
    down1 = generic_fixed_r(hi16_inputs(1), fmt, cast.STOCHASTIC, saturate, 0xFFFFFFFF)
    up = generic_fixed_r(hi16_inputs(0xFFFF), fmt, cast.STOCHASTIC, saturate, 0)
    table = np.concatenate([down0, down1, up, up])
    if dtype is not None:
        table = codes_to_values(fmt, table, dtype)
    shift = np.zeros(256, dtype=np.int64)
    for be in range(256):
        e = max(be, 1) - 127
        if isinstance(fmt, FloatFormat):
            m = fmt.mantissa_bits
            if e > fmt.emax + 1 or be == 255:
                s = 0
            elif e >= fmt.emin:
                s = 23 - m
            elif not fmt.has_zero:
                s = 0
            elif fmt.subnormals:
                s = 23 - m + fmt.emin - e
            else:
                s = 23 + fmt.emin - e
        else:
            p = e - fmt.scale_exp
            s = 0 if (p > fmt.bits + 1 or be == 255) else 23 - p
        shift[be] = min(max(s, 0), 56)
    for t in (table, shift):
        t.setflags(write=False)
    return table, shift


def as_numba(a: np.ndarray) -> np.ndarray:
    """Numba has no float16 arrays: pass their bit patterns (copies are exact)."""
    return a.view(np.uint16) if a.dtype == np.float16 else a


def run_sr_blocks(xb, fmt, saturate, seed, flat_out, values, parallel) -> None:
    """Stochastic rounding of float32 bits ``xb`` with :mod:`fpsim._kernels.stochastic`."""
    p = sr_params(fmt, saturate)
    if isinstance(fmt, IntFormat):
        if values:
            k = stochastic.int_values_parallel if parallel else stochastic.int_values_serial
            k(xb, flat_out, seed, p, np.float32(2.0**fmt.scale_exp))
        else:
            k = stochastic.int_codes_parallel if parallel else stochastic.int_codes_serial
            k(xb, flat_out, seed, p)
    elif values:
        k = stochastic.float_values_parallel if parallel else stochastic.float_values_serial
        k(xb, flat_out.view(np.uint32), seed, p)
    else:
        k = stochastic.float_codes_parallel if parallel else stochastic.float_codes_serial
        k(xb, flat_out, seed, p)


def run(arr, fmt, mode, saturate, seed, flat_out, *, values: bool) -> None:
    """Encode (or quantize, if ``values``) ``arr`` into ``flat_out``."""
    view, mbits, ebits = FLOAT_LAYOUT[arr.dtype]
    flat = np.ascontiguousarray(arr).reshape(-1)
    if values and arr.dtype == np.float16 and mode == cast.STOCHASTIC:
        # the generic loops compute in float: go through codes
        codes = np.empty(flat.shape, fmt.code_dtype)
        run(arr, fmt, mode, saturate, seed, codes, values=False)
        flat_out[...] = codes_to_values(fmt, codes, np.float16)
        return
    flat_out = as_numba(flat_out)
    parallel = use_parallel(flat.size)
    vdtype = arr.dtype if values else None
    if arr.dtype == np.float32 and mode == cast.STOCHASTIC and (
            sr_float_ok(fmt) or sr_int_ok(fmt)):
        with np.errstate(over="ignore"):  # the generator's arithmetic wraps (plain-Python runs)
            run_sr_blocks(flat.view(np.uint32), fmt, saturate, seed, flat_out, values, parallel)
        return
    if arr.dtype == np.float32 and hi16_ok(fmt) and (mode != cast.STOCHASTIC or sr_ok(fmt)):
        xb = flat.view(np.uint32)
        if mode == cast.STOCHASTIC:
            table, shift = sr_tables(fmt, saturate, vdtype)
            k = klut.sr_hi16_parallel if parallel else klut.sr_hi16_serial
            with np.errstate(over="ignore"):
                k(xb, flat_out, as_numba(table), shift, seed)
        else:
            k = klut.hi16_parallel if parallel else klut.hi16_serial
            k(xb, flat_out, as_numba(hi16_table(fmt, mode, saturate, vdtype)))
        return
    if arr.dtype == np.float16 and mode != cast.STOCHASTIC:
        k = klut.direct_parallel if parallel else klut.direct_serial
        k(flat.view(np.uint16), flat_out, as_numba(f16_table(fmt, mode, saturate, vdtype)))
        return
    xb = flat.view(view)
    with np.errstate(over="ignore"):
        if isinstance(fmt, FloatFormat):
            if values:
                k = generic.quantize_float_parallel if parallel else generic.quantize_float_serial
                k(xb, flat_out, lut(fmt, arr.dtype), mbits, ebits, float_params(fmt), mode,
                  saturate, seed)
            else:
                k = generic.encode_float_parallel if parallel else generic.encode_float_serial
                k(xb, flat_out, mbits, ebits, float_params(fmt), mode, saturate, seed)
        else:
            p = int_params(fmt)
            if values:
                k = generic.quantize_int_parallel if parallel else generic.quantize_int_serial
                if fmt.bit_patterns:  # the value, not the bit pattern
                    p = p[: cast.IP_BIT_PATTERNS] + (0,)
                k(xb, flat_out, arr.dtype.type(2.0**fmt.scale_exp), mbits, ebits, p, mode, seed)
            else:
                k = generic.encode_int_parallel if parallel else generic.encode_int_serial
                k(xb, flat_out, mbits, ebits, p, mode, seed)




# ---- resolved entry points: what the layers above call (no validation here) ------------------
def encode_codes(arr: np.ndarray, fmt, mode: int, saturate: bool, seed) -> np.ndarray:
    """The codes of a float16/32/64 array: ``fmt`` a resolved format, ``mode`` an int
    rounding mode, ``saturate`` a bool, ``seed`` a uint64.  The caller has validated them
    (:func:`fpsim.codec.encode` does, for users)."""
    res = np.empty(arr.shape, fmt.code_dtype)
    if arr.size:
        run(arr, fmt, mode, saturate, seed, res.reshape(-1), values=False)
    return res


def quantize_values(arr: np.ndarray, fmt, mode: int, saturate: bool, seed) -> np.ndarray:
    """``arr`` rounded onto ``fmt``'s grid, in ``arr``'s dtype (resolved arguments)."""
    res = np.empty(arr.shape, arr.dtype)
    if arr.size:
        run(arr, fmt, mode, saturate, seed, res.reshape(-1), values=True)
    return res


def decode_codes(codes: np.ndarray, fmt, dtype) -> np.ndarray:
    """Values of in-range integer codes of ``fmt`` in float ``dtype`` (resolved arguments;
    :func:`fpsim.codec.decode` checks the range for users)."""
    dtype = np.dtype(dtype)
    arr = np.asarray(codes)
    res = np.empty(arr.shape, dtype)
    if arr.size == 0:
        return res
    flat = np.ascontiguousarray(arr).reshape(-1)
    flat_out = res.reshape(-1)
    if isinstance(fmt, IntFormat) and not fmt.bit_patterns:
        if dtype == np.float16:
            flat_out[...] = flat * np.float16(2.0**fmt.scale_exp)
        else:
            generic.decode_int_serial(flat, flat_out, dtype.type(2.0**fmt.scale_exp))
        return res
    table = lut(fmt, dtype)
    k = generic.decode_lut_parallel if use_parallel(flat.size) else generic.decode_lut_serial
    k(flat, as_numba(flat_out), as_numba(table))
    return res
