"""encode / decode / quantize: validate, flatten, dispatch to the Numba kernels.

The semantics (rounding, overflow, specials) are those of ``docs/numerics.md``.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np

from . import dispatch
from ._kernels import generic, use_parallel
from ._kernels import scalar as cast
from .formats import IntFormat, get_format
from .rounding import check_saturate, resolve_seed

__all__ = ["encode", "decode", "quantize"]


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
    if dt in dispatch.FLOAT_LAYOUT:
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
    if isinstance(x, (np.ndarray, np.generic)) and dt is not None and dt not in dispatch.FLOAT_LAYOUT \
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


# ---- dask arrays: the same functions, block by block --------------------------
def _is_dask(x) -> bool:
    """A dask array?  Asked without importing dask (only its users have it)."""
    return type(x).__module__.startswith("dask.")


def _lazy(func, x, fmt, *, rounding, saturate, rng, out):
    """``func(x, fmt, ...)`` on a dask array, lazily, one call per chunk (``map_blocks``):
    bitwise the NumPy result, since every element is rounded on its own."""
    if out is not None:
        raise TypeError("out= is not supported for a dask array x (the result is a new lazy "
                        "dask array)")
    fmt = get_format(fmt)
    if dispatch.mode_for(fmt, rounding) == cast.STOCHASTIC and x.npartitions > 1:
        raise ValueError(
            f"rounding='stochastic' keys its random bits to each element's index in the array; "
            f"x is a dask array of {x.npartitions} chunks whose blocks would reuse the same "
            "bits: pass x.rechunk(-1) (one chunk) or a deterministic rounding")
    seed = None if rng is None else int(resolve_seed(rng))  # one seed for every block
    kw = dict(rounding=rounding, saturate=check_saturate(saturate), rng=seed)
    meta = func(np.empty((0,) * x.ndim, x.dtype), fmt, **kw)  # validates, gives the dtype
    return x.map_blocks(func, fmt, dtype=meta.dtype, meta=meta, **kw)


# ---- public API ----------------------------------------------------------
def encode(x, fmt, *, rounding="nearest_even", saturate=False, rng=None, out=None):
    """Encode floats as the codes of ``fmt``, rounding once from the input's precision.

    Parameters
    ----------
    x : array_like of float16, float32 or float64
        Values to encode (any shape; Python floats and lists are accepted).  A
        ``dask.array`` gives a lazy dask array of the codes, computed chunk by chunk
        (``map_blocks``, bitwise the NumPy result; stochastic rounding needs one chunk).
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
    if _is_dask(x):
        return _lazy(encode, x, fmt, rounding=rounding, saturate=saturate, rng=rng, out=out)
    fmt = get_format(fmt)
    mode = dispatch.mode_for(fmt, rounding)
    saturate = check_saturate(saturate)
    seed = resolve_seed(rng) if (mode == cast.STOCHASTIC or rng is not None) else np.uint64(0)
    x, mask = _unmask(x)
    arr = _unalias(_as_float_array(x), out)
    res = _prepare_out(out, arr.shape, fmt.code_dtype)
    if arr.size:
        dispatch.run(arr, fmt, mode, saturate, seed, res.reshape(-1), values=False)
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
    ndarray (a lazy dask array for a dask array ``x``)
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
    if _is_dask(x):
        return _lazy(quantize, x, fmt, rounding=rounding, saturate=saturate, rng=rng, out=out)
    fmt = get_format(fmt)
    mode = dispatch.mode_for(fmt, rounding)
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
        dispatch.run(arr, fmt, mode, saturate, seed, work.reshape(-1), values=True)
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
    if dtype not in dispatch.FLOAT_LAYOUT:
        raise TypeError(f"dtype must be float16, float32 or float64, got {dtype}")
    if isinstance(codes, (bool, np.bool_)):
        raise TypeError("codes must be integers, got a bool")
    codes, mask = _unmask(codes)
    arr = np.asarray(codes)
    if arr.dtype.kind not in "iu":
        raise TypeError(
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
    flat_out[...] = dispatch.decode_codes(flat, fmt, dtype)
    return _result(res, arr.ndim == 0)
