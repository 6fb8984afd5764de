"""encode / decode / quantize: validate, flatten, dispatch to the Numba kernels.

The semantics (rounding, overflow, specials) are those of ``docs/numerics.md``.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np

from ._kernels import _util, generic, lut, stochastic
from ._kernels import scalar as cast
from .formats import FloatFormat, IntFormat, get_format
from .rounding import check_saturate, resolve_seed, rounding_mode

__all__ = ["encode", "decode", "quantize"]

# float dtype -> (signed int view, mantissa bits, exponent bits)
_FLOAT_LAYOUT = {
    np.dtype(np.float16): (np.int16, 10, 5),
    np.dtype(np.float32): (np.int32, 23, 8),
    np.dtype(np.float64): (np.int64, 52, 11),
}


# ---- format parameters for the kernels -----------------------------------
@functools.lru_cache(maxsize=None)
def _float_params(fmt: FloatFormat) -> tuple:
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
def _int_params(fmt: IntFormat) -> tuple:
    p = [0] * 5
    p[cast.IP_SCALE_EXP] = fmt.scale_exp
    p[cast.IP_MIN_INT] = fmt.min_int
    p[cast.IP_MAX_INT] = fmt.max_int
    p[cast.IP_BITS] = fmt.bits
    p[cast.IP_BIT_PATTERNS] = int(fmt.bit_patterns)
    return tuple(int(v) for v in p)


@functools.lru_cache(maxsize=None)
def _lut(fmt, dtype: np.dtype) -> np.ndarray:
    """Value of every code in ``dtype``; NaN codes with the sign bit give -NaN."""
    vals = fmt.values()
    with np.errstate(over="ignore"):
        lut = vals.astype(dtype)
    if isinstance(fmt, FloatFormat) and fmt.signed and fmt.has_nan:
        neg_nan = np.isnan(vals) & ((np.arange(vals.size) & fmt.sign_bit) != 0)
        lut[neg_nan] = -np.abs(lut[neg_nan])
    lut.setflags(write=False)
    return lut


def _mode_for(fmt, rounding) -> int:
    mode = rounding_mode(rounding)
    if mode == cast.NEAREST_EVEN and isinstance(fmt, FloatFormat) and fmt.ties == "away":
        mode = cast.NEAREST_AWAY
    return mode


# ---- argument handling ---------------------------------------------------
def _as_float_array(x, name="x") -> np.ndarray:
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be floating point, got a bool")
    if isinstance(x, (numbers.Real,)) and not isinstance(x, np.generic):
        return np.asarray(float(x), dtype=np.float64)
    if isinstance(x, (list, tuple)):
        arr = np.asarray(x)
        if arr.dtype.kind in "iu" and arr.dtype != np.bool_:
            arr = arr.astype(np.float64)
    else:
        arr = np.asarray(x)
    dt = arr.dtype
    if dt.kind == "f" and not dt.isnative:
        arr = arr.astype(dt.newbyteorder("="))
        dt = arr.dtype
    if dt in _FLOAT_LAYOUT:
        return arr
    if dt.kind == "V" or dt.name in ("bfloat16",) or dt.name.startswith("float8") or (
        dt.name.startswith("float6") or dt.name.startswith("float4")
    ):
        # ml_dtypes arrays: every one of them widens exactly to float32
        try:
            return arr.astype(np.float32)
        except (TypeError, ValueError):
            pass
    raise TypeError(
        f"{name} must be a float16, float32 or float64 array (or Python floats), "
        f"got dtype {dt}"
    )


def _prepare_out(out, shape, dtype, name="out") -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(out).__name__}")
    if isinstance(out, np.ma.MaskedArray):
        raise TypeError(f"{name} must be a plain numpy array, got a masked array; the result "
                        "of a masked input is a masked array with a copy of its mask")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{name} must be a writeable C-contiguous array")
    return out


def _result(out: np.ndarray, scalar: bool):
    return out[()] if scalar else out


def _unalias(arr: np.ndarray, out) -> np.ndarray:
    """``arr``, copied if ``out`` shares memory with it (so no input is read after it is
    overwritten: in place, ``out=x``, and partial overlaps give the out-of-place result)."""
    if out is not None and isinstance(out, np.ndarray) and np.may_share_memory(arr, out):
        return arr.copy()
    return arr


def _unmask(x):
    """(data, mask copy) of a masked array, else (x, None)."""
    if isinstance(x, np.ma.MaskedArray):
        return x.data, np.ma.getmaskarray(x).copy()
    return x, None


def _remask(res, mask):
    return res if mask is None else np.ma.MaskedArray(res, mask=mask)


def _ml_dtype(x):
    """The dtype of an ml_dtypes array or scalar input (bfloat16, float8_*, ...), else None."""
    dt = getattr(x, "dtype", None)
    if isinstance(x, (np.ndarray, np.generic)) and dt is not None and dt not in _FLOAT_LAYOUT \
            and dt.kind in "Vf" and dt.itemsize <= 2:
        return dt
    return None


@functools.lru_cache(maxsize=None)
def _holds(fmt, dtype: np.dtype) -> bool:
    """Does ``dtype`` hold every value of ``fmt`` exactly (Inf and NaN included)?"""
    if isinstance(fmt, IntFormat) and not fmt.bit_patterns:
        codes = np.arange(fmt.min_int, fmt.max_int + 1, dtype=np.int64)
    else:
        codes = np.arange(1 << fmt.bits, dtype=np.int64)
    values = decode(codes, fmt)
    with np.errstate(all="ignore"):
        back = values.astype(dtype).astype(np.float32)
    same = (back == values) | (np.isnan(back) & np.isnan(values))
    return bool(same.all())




# ---- tables for the fast loops --------------------------------------------
_HI16_INPUTS = None


def _hi16_ok(fmt) -> bool:
    """Whether a float32's code depends only on its top 16 bits and a sticky bit."""
    if isinstance(fmt, FloatFormat):
        return fmt.mantissa_bits <= 6
    return fmt.max_int <= 127 and fmt.min_int >= -128


def _sr_ok(fmt) -> bool:
    """The stochastic table path also needs float32 subnormal inputs to stay below
    the format's normal range (not so for float8_e8m0fnu, emin = -127)."""
    return not isinstance(fmt, FloatFormat) or fmt.emin >= -126


def _sr_float_ok(fmt) -> bool:
    """Whether stochastic rounding of float32 can use the 32-bit block kernels
    (:mod:`fpsim._kernels.stochastic`): signed float formats with zero and
    subnormals whose exponents lie inside float32's (:func:`_sr_int_ok`: integers)."""
    return (isinstance(fmt, FloatFormat) and fmt.signed and fmt.has_zero and fmt.subnormals
            and fmt.mantissa_bits <= 22 and fmt.emin >= -126 and fmt.emax <= 127)


def _sr_int_ok(fmt) -> bool:
    """Integer formats up to 16 bits whose grid step 2**scale_exp is a float32 normal."""
    return isinstance(fmt, IntFormat) and fmt.bits <= 16 and -120 <= fmt.scale_exp <= 100


@functools.lru_cache(maxsize=256)
def _sr_params(fmt, saturate: bool) -> tuple:
    """The constants of the block kernels (a tuple of uint32)."""
    if isinstance(fmt, IntFormat):
        p = [0] * 4
        p[stochastic.I_CUTBASE] = 150 + fmt.scale_exp
        p[stochastic.I_MAX_POS] = fmt.max_int
        p[stochastic.I_MAX_NEG] = -fmt.min_int
        p[stochastic.I_MASK] = (1 << fmt.bits) - 1 if fmt.bit_patterns else 0xFFFFFFFF
        return tuple(np.uint32(v) for v in p)
    fp = _float_params(fmt)

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
    value_bits = _lut(fmt, np.dtype(np.float32)).view(np.uint32)
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


def _generic_fixed_r(x: np.ndarray, fmt, mode: int, saturate: bool, r: int) -> np.ndarray:
    view, mbits, ebits = _FLOAT_LAYOUT[x.dtype]
    out = np.empty(x.shape, dtype=fmt.code_dtype)
    with np.errstate(over="ignore"):
        if isinstance(fmt, FloatFormat):
            generic.encode_float_fixed_r(x.view(view), out, mbits, ebits, _float_params(fmt),
                                         mode, saturate, r)
        else:
            generic.encode_int_fixed_r(x.view(view), out, mbits, ebits, _int_params(fmt), mode, r)
    return out


def _codes_to_values(fmt, codes: np.ndarray, dtype) -> np.ndarray:
    if isinstance(fmt, IntFormat) and not fmt.bit_patterns:
        return (codes.astype(np.float64) * 2.0**fmt.scale_exp).astype(dtype)
    return _lut(fmt, np.dtype(dtype))[codes]


def _hi16_inputs(low: int) -> np.ndarray:
    return ((np.arange(1 << 16, dtype=np.uint32) << 16) | np.uint32(low)).view(np.float32)


@functools.lru_cache(maxsize=256)
def _hi16_table(fmt, mode: int, saturate: bool, dtype) -> np.ndarray:
    """Codes (dtype None) or values for (top 16 bits, low 16 bits != 0)."""
    codes = np.concatenate([
        _generic_fixed_r(_hi16_inputs(0), fmt, mode, saturate, 0),
        _generic_fixed_r(_hi16_inputs(1), fmt, mode, saturate, 0),
    ])
    table = codes if dtype is None else _codes_to_values(fmt, codes, dtype)
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=256)
def _f16_table(fmt, mode: int, saturate: bool, dtype) -> np.ndarray:
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    codes = _generic_fixed_r(x, fmt, mode, saturate, 0)
    table = codes if dtype is None else _codes_to_values(fmt, codes, dtype)
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=64)
def _sr_tables(fmt, saturate: bool, dtype):
    """Tables for stochastic rounding of float32 inputs.

    ``table`` stacks four 65536-entry parts indexed by the top 16 bits: the
    code when not rounding up for an exact low half, for an inexact one, then
    twice the code when rounding up.  ``shift`` gives, per input exponent
    field, where the rounding point lies (the 32-bit fraction is taken there).
    """
    down0 = _generic_fixed_r(_hi16_inputs(0), fmt, cast.STOCHASTIC, saturate, 0xFFFFFFFF)
    down1 = _generic_fixed_r(_hi16_inputs(1), fmt, cast.STOCHASTIC, saturate, 0xFFFFFFFF)
    up = _generic_fixed_r(_hi16_inputs(0xFFFF), fmt, cast.STOCHASTIC, saturate, 0)
    table = np.concatenate([down0, down1, up, up])
    if dtype is not None:
        table = _codes_to_values(fmt, table, dtype)
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


def _as_numba(a: np.ndarray) -> np.ndarray:
    """Numba has no float16 arrays: pass their bit patterns (copies are exact)."""
    return a.view(np.uint16) if a.dtype == np.float16 else a


def _run_sr_blocks(xb, fmt, saturate, seed, flat_out, values, parallel) -> None:
    """Stochastic rounding of float32 bits ``xb`` with :mod:`fpsim._kernels.stochastic`."""
    p = _sr_params(fmt, saturate)
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


def _run(arr, fmt, mode, saturate, seed, flat_out, *, values: bool) -> None:
    """Encode (or quantize, if ``values``) ``arr`` into ``flat_out``."""
    view, mbits, ebits = _FLOAT_LAYOUT[arr.dtype]
    flat = np.ascontiguousarray(arr).reshape(-1)
    if values and arr.dtype == np.float16 and mode == cast.STOCHASTIC:
        # the generic loops compute in float: go through codes
        codes = np.empty(flat.shape, fmt.code_dtype)
        _run(arr, fmt, mode, saturate, seed, codes, values=False)
        flat_out[...] = _codes_to_values(fmt, codes, np.float16)
        return
    flat_out = _as_numba(flat_out)
    parallel = flat.size >= _util.PARALLEL_THRESHOLD
    vdtype = arr.dtype if values else None
    if arr.dtype == np.float32 and mode == cast.STOCHASTIC and (
            _sr_float_ok(fmt) or _sr_int_ok(fmt)):
        with np.errstate(over="ignore"):  # the generator's arithmetic wraps (plain-Python runs)
            _run_sr_blocks(flat.view(np.uint32), fmt, saturate, seed, flat_out, values, parallel)
        return
    if arr.dtype == np.float32 and _hi16_ok(fmt) and (mode != cast.STOCHASTIC or _sr_ok(fmt)):
        xb = flat.view(np.uint32)
        if mode == cast.STOCHASTIC:
            table, shift = _sr_tables(fmt, saturate, vdtype)
            k = lut.sr_hi16_parallel if parallel else lut.sr_hi16_serial
            with np.errstate(over="ignore"):
                k(xb, flat_out, _as_numba(table), shift, seed)
        else:
            k = lut.hi16_parallel if parallel else lut.hi16_serial
            k(xb, flat_out, _as_numba(_hi16_table(fmt, mode, saturate, vdtype)))
        return
    if arr.dtype == np.float16 and mode != cast.STOCHASTIC:
        k = lut.direct_parallel if parallel else lut.direct_serial
        k(flat.view(np.uint16), flat_out, _as_numba(_f16_table(fmt, mode, saturate, vdtype)))
        return
    xb = flat.view(view)
    with np.errstate(over="ignore"):
        if isinstance(fmt, FloatFormat):
            if values:
                k = generic.quantize_float_parallel if parallel else generic.quantize_float_serial
                k(xb, flat_out, _lut(fmt, arr.dtype), mbits, ebits, _float_params(fmt), mode,
                  saturate, seed)
            else:
                k = generic.encode_float_parallel if parallel else generic.encode_float_serial
                k(xb, flat_out, mbits, ebits, _float_params(fmt), mode, saturate, seed)
        else:
            p = _int_params(fmt)
            if values:
                k = generic.quantize_int_parallel if parallel else generic.quantize_int_serial
                if fmt.bit_patterns:  # the value, not the bit pattern
                    p = p[: cast.IP_BIT_PATTERNS] + (0,)
                k(xb, flat_out, arr.dtype.type(2.0**fmt.scale_exp), mbits, ebits, p, mode, seed)
            else:
                k = generic.encode_int_parallel if parallel else generic.encode_int_serial
                k(xb, flat_out, mbits, ebits, p, mode, seed)


# ---- public API ----------------------------------------------------------
def encode(x, fmt, *, rounding="nearest_even", saturate=False, rng=None, out=None):
    """Encode floats as the codes of ``fmt``, rounding once from the input's precision.

    Parameters
    ----------
    x : array_like of float16, float32 or float64
        Values to encode (any shape; Python floats and lists are accepted).
    fmt : str, FloatFormat, IntFormat or dtype
        Target format, e.g. ``"float8_e4m3fn"`` or ``"e4m3fn"``.
    rounding : str
        One of ``nearest_even`` (default), ``nearest_away``, ``toward_zero``,
        ``toward_positive``, ``toward_negative``, ``odd``, ``stochastic``.
    saturate : bool
        Clamp overflow and +-Inf to +-max instead of Inf/NaN.
    rng : int, numpy.random.Generator or None
        Seed for ``stochastic`` rounding (the same seed gives the same codes).
    out : ndarray, optional
        Preallocated C-contiguous output of the right shape and code dtype.

    Returns
    -------
    ndarray
        Codes of the same shape: uint8 for formats of 8 bits or fewer, uint16
        for wider ones; the plain integer formats return their integer values.

    Raises
    ------
    ValueError
        Unknown format or rounding name, or a bad ``out``.
    TypeError
        ``x`` is not floating point, ``saturate`` is not a bool, or ``rng`` is
        of the wrong type.

    Examples
    --------
    >>> import fpsim
    >>> fpsim.encode([1.0, 464.0, 465.0], "e4m3fn").tolist()
    [56, 126, 127]
    >>> int(fpsim.encode(1e6, "e4m3fn", saturate=True))
    126
    """
    fmt = get_format(fmt)
    mode = _mode_for(fmt, rounding)
    saturate = check_saturate(saturate)
    seed = resolve_seed(rng) if (mode == cast.STOCHASTIC or rng is not None) else np.uint64(0)
    x, mask = _unmask(x)
    arr = _unalias(_as_float_array(x), out)
    res = _prepare_out(out, arr.shape, fmt.code_dtype)
    if arr.size:
        _run(arr, fmt, mode, saturate, seed, res.reshape(-1), values=False)
    return _remask(_result(res, arr.ndim == 0), mask)


def quantize(x, fmt, *, rounding="nearest_even", saturate=False, rng=None, out=None):
    """Round ``x`` onto the grid of ``fmt``, returning values in ``x``'s dtype.

    One fused pass: the same codes as :func:`encode`, decoded on the fly.
    Values that ``x``'s dtype cannot hold (e.g. 2**16 in float16) become Inf.

    Parameters
    ----------
    x, fmt, rounding, saturate, rng
        As for :func:`encode`.
    out : ndarray, optional
        Preallocated C-contiguous output with x's shape and dtype.

    Returns
    -------
    ndarray
        Same shape and dtype as ``x`` (float64 for Python floats). An ml_dtypes
        input (``bfloat16``, ``float8_*``, ...) comes back in its own dtype when that
        dtype holds every value of ``fmt`` (Inf and NaN included), else as float32.
        A masked array gives a masked array with a copy of its mask. ``out`` may be
        ``x`` itself or overlap it: the result is the same as out of place.

    Raises
    ------
    ValueError, TypeError
        As for :func:`encode`.

    Examples
    --------
    >>> import fpsim, numpy as np
    >>> fpsim.quantize(np.array([0.3, 3.3, 1000.0], np.float32), "e4m3fn", saturate=True).tolist()
    [0.3125, 3.25, 448.0]
    """
    fmt = get_format(fmt)
    mode = _mode_for(fmt, rounding)
    saturate = check_saturate(saturate)
    seed = resolve_seed(rng) if (mode == cast.STOCHASTIC or rng is not None) else np.uint64(0)
    x, mask = _unmask(x)
    ml = _ml_dtype(x)
    arr = _unalias(_as_float_array(x), out)
    if ml is not None and _holds(fmt, ml):  # computed in float32, returned in x's dtype
        res = _prepare_out(out, arr.shape, ml)
        work = np.empty(arr.shape, arr.dtype)
    else:
        res = work = _prepare_out(out, arr.shape, arr.dtype)
    if arr.size:
        _run(arr, fmt, mode, saturate, seed, work.reshape(-1), values=True)
        if work is not res:
            res[...] = work  # exact: the dtype holds every value of fmt
    return _remask(_result(res, arr.ndim == 0), mask)


def decode(codes, fmt, *, dtype=np.float32, out=None):
    """Values of the codes of ``fmt``.

    Parameters
    ----------
    codes : array_like of integers
        Codes as returned by :func:`encode` (any integer dtype); for the
        plain integer formats, their integer values.
    fmt : str, FloatFormat, IntFormat or dtype
    dtype : float16, float32 (default) or float64
    out : ndarray, optional

    Returns
    -------
    ndarray
        Same shape as ``codes``. NaN codes give NaN (negative NaN for codes
        with the sign bit set).

    Raises
    ------
    ValueError
        Codes that are not integers, or lie outside the format (the message
        says how many and the index of the first).

    Examples
    --------
    >>> import fpsim
    >>> fpsim.decode([0x38, 0x7E, 0x7F], "e4m3fn").tolist()
    [1.0, 448.0, nan]
    """
    fmt = get_format(fmt)
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float16, float32 or float64, got {dtype!r}") from None
    if dtype not in _FLOAT_LAYOUT:
        raise TypeError(f"dtype must be float16, float32 or float64, got {dtype}")
    if isinstance(codes, (bool, np.bool_)):
        raise ValueError("codes must be integers, got a bool")
    codes, mask = _unmask(codes)
    arr = np.asarray(codes)
    if arr.dtype.kind not in "iu":
        raise ValueError(
            f"codes must be an integer array (uint8/uint16 codes from fpsim.encode), "
            f"got dtype {arr.dtype}"
        )
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    arr = _unalias(arr, out)
    res = _prepare_out(out, arr.shape, dtype)
    if mask is not None:
        return _remask(decode(arr, fmt, dtype=dtype, out=res), mask)
    if arr.size == 0:
        return _result(res, arr.ndim == 0)
    flat = np.ascontiguousarray(arr).reshape(-1)
    flat_out = res.reshape(-1)
    if isinstance(fmt, IntFormat) and not fmt.bit_patterns:
        lo, hi = fmt.min_int, fmt.max_int
    else:
        lo, hi = 0, (1 << fmt.bits) - 1
    info = np.iinfo(arr.dtype)
    if (info.min < lo or info.max > hi) and (flat.min() < lo or flat.max() > hi):
        count, first = generic.count_outside(flat, lo, hi)
        if count:
            raise ValueError(
                f"codes: {count} value(s) outside [{lo}, {hi}] for format {fmt.name}; "
                f"the first is {flat[first]} at flat index {first}"
            )
    if isinstance(fmt, IntFormat) and not fmt.bit_patterns:
        if dtype == np.float16:
            flat_out[...] = flat * np.float16(2.0**fmt.scale_exp)
        else:
            generic.decode_int_serial(flat, flat_out, dtype.type(2.0**fmt.scale_exp))
        return _result(res, arr.ndim == 0)
    lut = _lut(fmt, dtype)
    parallel = flat.size >= _util.PARALLEL_THRESHOLD
    k = generic.decode_lut_parallel if parallel else generic.decode_lut_serial
    k(flat, _as_numba(flat_out), _as_numba(lut))
    return _result(res, arr.ndim == 0)
