"""Error metrics: how far an approximation ``x_hat`` is from the reference ``x``.

Pure NumPy (no Numba, no matplotlib).  Conventions shared by every function:

- ``x`` and ``x_hat`` have the same shape (no broadcasting) and real dtypes (float, int or
  ml_dtypes); everything is computed in float64.
- The error is ``x_hat - x``, except that it is 0 where ``x == x_hat`` (so equal infinities,
  e.g. an Inf input kept as Inf, contribute no error).
- NaN is never dropped silently: a NaN in ``x`` or ``x_hat`` makes the metrics it enters NaN.
  :func:`counts` says how many NaN results there are.
- ``axis=None`` (the default) reduces over every element and returns a Python float; an int
  or a tuple of ints reduces over those axes and returns a float64 array.
- Empty arrays raise ValueError (a metric of nothing is almost always a caller's bug; numpy's
  ``mean([])`` would give NaN with a RuntimeWarning), as do ``x`` and ``x_hat`` of different
  shapes; arrays that are not real numbers (bool, complex, str, object) raise TypeError.
- Memory: a reduction over every element (``axis=None``; :func:`counts`,
  :func:`error_report`) walks the flattened arrays in blocks of 2**18 elements, widening one
  block at a time to float64, accumulating sums in float64 and counts in ints (the median
  takes a few passes of radix selection). Its peak memory is a few blocks (a few MB)
  whatever the size of the input; the element-wise :func:`ulp` and :func:`ulp_error` add only
  their float64 result, :func:`error_report` of a format only ``x_hat``. Results do not
  depend on the block size, exactly for counts, maxima and medians and up to float64
  rounding (the order of summation) for sums. Reductions over some axes (``axis`` an int or
  a tuple not covering every axis) work on whole float64 copies.

:func:`error_report` gathers the main metrics and the counts into an :class:`ErrorReport`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .formats import FloatFormat, IntFormat, get_format

__all__ = [
    "Counts",
    "RelativeError",
    "cosine_similarity",
    "counts",
    "kl_divergence",
    "max_abs_error",
    "mse",
    "neg_log_mse_db",
    "relative_error",
    "rmse",
    "sqnr_db",
    "ulp",
    "ulp_error",
    "ulp_error_stats",
    "UlpErrorStats",
]

_QUANTIZABLE = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

#: Elements per block of the reductions over every element: they widen one block at a time
#: to float64 (2 MB a temporary), never whole arrays. Tests shrink it to check that
#: the result does not depend on it.
_CHUNK = 1 << 18


# ---- argument handling ---------------------------------------------------
def _checked(a, name: str) -> np.ndarray:
    """``a`` as an array of real numbers in its own dtype (no copy); TypeError for bools,
    strings, complex, objects and structured arrays."""
    if isinstance(a, (str, bytes)):
        raise TypeError(f"{name} must be an array of real numbers, got a {type(a).__name__}")
    arr = np.asarray(a)
    kind = arr.dtype.kind
    if kind in "fiu":
        return arr
    if kind == "V" and arr.dtype.fields is None:  # ml_dtypes (bfloat16, float8_*, ...)
        try:
            np.zeros(1, arr.dtype).astype(np.float64)  # they widen exactly
            return arr
        except (TypeError, ValueError):
            pass
    what = "bool" if kind == "b" else str(arr.dtype)
    raise TypeError(
        f"{name} must be an array of real numbers (float, int or ml_dtypes), got dtype {what}"
    )


def _as_real(a, name: str) -> np.ndarray:
    """``a`` as a float64 array (a copy unless it is one); TypeError as :func:`_checked`."""
    return _checked(a, name).astype(np.float64, copy=False)


def _f64(*arrays) -> tuple[np.ndarray, ...]:
    return tuple(a.astype(np.float64, copy=False) for a in arrays)


def _blocks(*arrays):
    """Yield ``(start, block, ...)``: float64 copies of ``_CHUNK`` consecutive elements of
    each array, flattened in C order (the arrays have one shape)."""
    flats = [a.reshape(-1) if a.flags.c_contiguous else a.flat for a in arrays]
    step = _CHUNK
    for i in range(0, arrays[0].size, step):
        yield (i,) + tuple(np.asarray(f[i:i + step], dtype=np.float64) for f in flats)


def _whole(axis, ndim: int) -> bool:
    """Whether ``axis`` (checked by :func:`_check_axis`) reduces over every axis; an axis
    out of range or repeated gives False, and numpy then raises."""
    if axis is None:
        return True
    axes = axis if isinstance(axis, tuple) else (axis,)
    return sorted(int(a) + ndim if a < 0 else int(a) for a in axes) == list(range(ndim))


def _amax_finite(*arrays) -> list[float]:
    """Largest finite ``|a|`` of each array (0 if none), in one pass over the blocks."""
    m = [0.0] * len(arrays)
    for _, *blocks in _blocks(*arrays):
        for j, v in enumerate(blocks):
            m[j] = max(m[j], float(np.max(np.where(np.isfinite(v), np.abs(v), 0.0))))
    return m


def _pow2(amax: float) -> float:
    """The power of two that brings ``amax`` into [0.5, 1) (1 for 0): :func:`_pow2_scale`."""
    return math.ldexp(1.0, -math.frexp(amax)[1])


def _pair(x, x_hat, names=("x", "x_hat")) -> tuple[np.ndarray, np.ndarray]:
    """Checked arrays of one shape and at least one element, in their own dtypes."""
    a, b = _checked(x, names[0]), _checked(x_hat, names[1])
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape; got {a.shape} and {b.shape}"
        )
    if a.size == 0:
        raise ValueError(f"{names[0]} and {names[1]} are empty; metrics need at least one element")
    return a, b


def _check_axis(axis, *, allow_none: bool = True):
    if axis is None and allow_none:
        return None
    ok_int = isinstance(axis, (numbers.Integral, np.integer)) and not isinstance(axis, bool)
    ok_tuple = isinstance(axis, tuple) and all(
        isinstance(a, (numbers.Integral, np.integer)) and not isinstance(a, bool) for a in axis
    )
    if not (ok_int or ok_tuple):
        allowed = "None, an int or a tuple of ints" if allow_none else "an int or a tuple of ints"
        raise TypeError(f"axis must be {allowed}, got {axis!r}")
    return axis


def _out(v):
    """A Python float for a 0-d result, else a float64 array."""
    v = np.asarray(v, dtype=np.float64)
    return float(v) if v.ndim == 0 else v


def _error(x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """``x_hat - x``, exactly 0 where they are equal (equal infinities included)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(x == x_hat, 0.0, x_hat - x)


def _pow2_scale(a: np.ndarray, axis) -> np.ndarray:
    """Per-slice power of two that brings the largest finite |a| into [0.5, 1).

    Multiplying by it is exact (barring underflow of negligible elements), so sums of squares
    neither overflow nor lose the ratios the metrics take.
    """
    finite_abs = np.where(np.isfinite(a), np.abs(a), 0.0)
    amax = np.max(finite_abs, axis=axis, keepdims=True)
    _, e = np.frexp(amax)  # e = 0 for amax = 0: scale 1
    return np.ldexp(1.0, -e)


def _format_arg(fmt, name: str):
    try:
        return get_format(fmt)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    except TypeError as exc:
        raise TypeError(f"{name}: {exc}") from None


# ---- error magnitudes -----------------------------------------------------
def mse(x, x_hat, *, axis=None):
    """Mean squared error, ``mean((x_hat - x)**2)``.

    Parameters
    ----------
    x, x_hat : array_like of real numbers
        Reference and approximation, same shape.
    axis : None, int or tuple of ints
        Axes to average over; None (default) averages over all elements.

    Returns
    -------
    float or ndarray
        A float for ``axis=None``, else a float64 array. NaN if a NaN enters the mean;
        Inf if an error is infinite (e.g. an overflow to Inf).

    Raises
    ------
    ValueError
        Shapes differ, the arrays are empty, or ``axis`` is out of range.
    TypeError
        A non-numeric array or a bad ``axis`` type.

    Examples
    --------
    >>> mse([1.0, 2.0, 3.0], [1.0, 2.5, 2.0])  # (0 + 0.25 + 1) / 3
    0.4166666666666667
    """
    a, b = _pair(x, x_hat)
    axis = _check_axis(axis)
    if _whole(axis, a.ndim):
        total = np.float64(0.0)
        for _, u, v in _blocks(a, b):
            err = _error(u, v)
            with np.errstate(over="ignore", invalid="ignore"):
                total += np.sum(err * err)
        return _out(total / a.size)
    err = _error(*_f64(a, b))
    with np.errstate(over="ignore", invalid="ignore"):
        return _out(np.mean(err * err, axis=axis))


def rmse(x, x_hat, *, axis=None):
    """Root mean squared error, ``sqrt(mse(x, x_hat))``.

    Parameters
    ----------
    x, x_hat : array_like of real numbers
        Reference and approximation, same shape.
    axis : None, int or tuple of ints
        As for :func:`mse`.

    Returns
    -------
    float or ndarray

    Raises
    ------
    ValueError, TypeError
        As for :func:`mse`.

    Examples
    --------
    >>> rmse([0.0, 0.0], [3.0, -3.0])
    3.0
    """
    return _out(np.sqrt(mse(x, x_hat, axis=axis)))


def sqnr_db(x, x_hat, *, axis=None):
    """Signal-to-quantization-noise ratio in dB: ``10 log10(sum x**2 / sum (x_hat - x)**2)``.

    Normalised by the signal power, so it does not change when ``x`` and ``x_hat`` are both
    multiplied by the same non-zero constant. This is a fixed entry point: scripts rely on
    ``fpsim.metrics.sqnr_db(x, x_hat)`` returning a float.

    Parameters
    ----------
    x, x_hat : array_like of real numbers
        Reference (the signal) and approximation, same shape.
    axis : None, int or tuple of ints
        Axes to sum over; None (default) sums over all elements.

    Returns
    -------
    float or ndarray
        ``inf`` where the error is zero (also when the signal is zero too), ``-inf`` where
        the signal is zero but the error is not, NaN where a NaN is in ``x`` or ``x_hat``
        (a NaN in ``x_hat`` propagates: it is never skipped). An infinite error (overflow
        to Inf) gives ``-inf``.

    Raises
    ------
    ValueError, TypeError
        As for :func:`mse`.

    Examples
    --------
    >>> sqnr_db([3.0, 4.0], [3.0, 4.5])  # 10 log10(25 / 0.25)
    20.0
    >>> sqnr_db([1.0, 2.0], [1.0, 2.0])
    inf
    """
    a, b = _pair(x, x_hat)
    axis = _check_axis(axis)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        if _whole(axis, a.ndim):
            s = _pow2(_amax_finite(a)[0])
            signal = noise = np.float64(0.0)
            for _, u, v in _blocks(a, b):
                err = _error(u, v) * s
                u = u * s
                signal += np.sum(u * u)
                noise += np.sum(err * err)
        else:
            a, b = _f64(a, b)
            err = _error(a, b)
            s = _pow2_scale(a, axis)
            a, err = a * s, err * s
            signal = np.sum(a * a, axis=axis)
            noise = np.sum(err * err, axis=axis)
        db = 10.0 * np.log10(signal / noise)
    return _out(np.where(noise == 0, np.inf, db))


def neg_log_mse_db(x, x_hat, *, axis=None):
    """``-10 log10(MSE)`` in dB, the unnormalised "SNR" some papers report.

    Unlike :func:`sqnr_db` it is not divided by the signal power, so it depends on the
    scale of ``x``; the two agree when ``mean(x**2) == 1`` (e.g. standardised data).

    Parameters
    ----------
    x, x_hat : array_like of real numbers
        Reference and approximation, same shape.
    axis : None, int or tuple of ints
        As for :func:`mse`.

    Returns
    -------
    float or ndarray
        ``inf`` where the MSE is 0; NaN propagates.

    Raises
    ------
    ValueError, TypeError
        As for :func:`mse`.

    Examples
    --------
    >>> neg_log_mse_db([0.0, 0.0], [0.1, -0.1])  # -10 log10(0.01)
    20.0
    """
    m = mse(x, x_hat, axis=axis)
    with np.errstate(divide="ignore"):
        return _out(-10.0 * np.log10(m))


def max_abs_error(x, x_hat, *, axis=None):
    """Largest absolute error, ``max |x_hat - x|``.

    Parameters
    ----------
    x, x_hat : array_like of real numbers
        Reference and approximation, same shape.
    axis : None, int or tuple of ints
        As for :func:`mse`.

    Returns
    -------
    float or ndarray
        NaN if a NaN is present.

    Raises
    ------
    ValueError, TypeError
        As for :func:`mse`.

    Examples
    --------
    >>> max_abs_error([1.0, 2.0, 3.0], [1.5, 2.0, 0.0])
    3.0
    """
    a, b = _pair(x, x_hat)
    axis = _check_axis(axis)
    if _whole(axis, a.ndim):
        m = np.float64(0.0)
        for _, u, v in _blocks(a, b):
            m = np.maximum(m, np.max(np.abs(_error(u, v))))  # NaN propagates
        return _out(m)
    return _out(np.max(np.abs(_error(*_f64(a, b))), axis=axis))


class RelativeError(NamedTuple):
    """Statistics of ``|x_hat - x| / |x|`` over the elements where ``x != 0``.

    Examples
    --------
    >>> relative_error([1.0, 2.0, 4.0], [1.25, 2.0, 3.0])
    RelativeError(mean=0.16666666666666666, median=0.25, max=0.25)
    """

    mean: float | np.ndarray
    median: float | np.ndarray
    max: float | np.ndarray


def relative_error(x, x_hat, *, axis=None) -> RelativeError:
    """Mean, median and max of the relative error ``|x_hat - x| / |x|`` over ``x != 0``.

    Elements with ``x == 0`` are left out (their relative error is undefined); a slice with
    no such element gives NaN. NaN in ``x`` or ``x_hat`` (at ``x != 0``) propagates to all
    three statistics. An infinite ``x`` follows IEEE arithmetic (``x_hat == x`` gives 0,
    a finite ``x_hat`` gives NaN).

    Parameters
    ----------
    x, x_hat : array_like of real numbers
        Reference and approximation, same shape.
    axis : None, int or tuple of ints
        As for :func:`mse`.

    Returns
    -------
    RelativeError
        Named tuple ``(mean, median, max)`` of floats (``axis=None``) or arrays.

    Raises
    ------
    ValueError, TypeError
        As for :func:`mse`.

    Examples
    --------
    >>> r = relative_error([0.0, 1.0, 2.0, 4.0], [5.0, 1.5, 2.0, 3.0])  # 0.5, 0, 0.25
    >>> r.mean, r.median, r.max
    (0.25, 0.25, 0.5)
    """
    a, b = _pair(x, x_hat)
    axis = _check_axis(axis)
    if _whole(axis, a.ndim):
        return _relative_error_streamed(a, b)
    a, b = _f64(a, b)
    used = a != 0  # NaN x counts as used, so that it propagates
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(_error(a, b)) / np.abs(a)
        n = np.sum(used, axis=axis)
        mean = np.sum(np.where(used, rel, 0.0), axis=axis) / n
        mx = np.where(n > 0, np.max(np.where(used, rel, -np.inf), axis=axis), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-excluded slices
        med = np.nanmedian(np.where(used, rel, np.nan), axis=axis)
    med = np.where(np.any(used & np.isnan(rel), axis=axis), np.nan, med)
    return RelativeError(_out(mean), _out(med), _out(mx))


def _relative_errors(a, b):
    """Yield the blocks of ``|x_hat - x| / |x|`` over ``x != 0`` (NaN x included)."""
    for _, u, v in _blocks(a, b):
        used = u != 0
        u, v = u[used], v[used]
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.abs(_error(u, v)) / np.abs(u)
        yield rel


def _relative_error_streamed(a, b) -> RelativeError:
    n, total, mx = 0, np.float64(0.0), np.float64(-np.inf)
    for rel in _relative_errors(a, b):
        if rel.size:
            n += rel.size
            total += np.sum(rel)
            mx = np.maximum(mx, np.max(rel))
    if n == 0:
        return RelativeError(math.nan, math.nan, math.nan)
    med = math.nan if np.isnan(mx) else _median(lambda: _relative_errors(a, b), n)
    return RelativeError(float(total / n), med, float(mx))


def _median(values, n: int) -> float:
    """numpy's median of the ``n`` values, none NaN or negative, that ``values()`` yields in
    blocks, reading them block by block (see :func:`_kth_smallest`)."""
    if n <= _CHUNK:
        return float(np.median(np.concatenate(list(values()))))
    k = (n - 1) // 2
    lo = _kth_smallest(values, n, k)
    if n % 2:
        return lo
    # the next one up: lo again if more than k + 1 values are <= lo, else the least above it
    at_most, above = 0, math.inf
    for v in values():
        at_most += int(np.count_nonzero(v <= lo))
        bigger = v[v > lo]
        if bigger.size:
            above = min(above, float(bigger.min()))
    return (lo + (lo if at_most > k + 1 else above)) / 2  # as np.median: the mean of the two


def _from_bits(bits: int) -> float:
    return float(np.array(bits, np.uint64).view(np.float64))


def _kth_smallest(values, n: int, k: int) -> float:
    """The ``k``-th smallest (from 0) of the ``n`` values, none NaN or negative, that
    ``values()`` yields in blocks.

    Radix selection on the float64 bit patterns, which order as the values do for
    non-negative floats: each pass over the data counts the next 16 bits of the candidates
    (the values whose leading bits match the answer's so far) in a histogram, so memory stays
    at a block and 65536 counts. It stops when all candidates are equal, when all 64 bits are
    known, or when at most ``_CHUNK`` candidates are left: one more pass gathers those and
    ``np.partition`` picks the answer.
    """
    prefix, shift, count = 0, 64, n  # candidates: values whose top 64 - shift bits == prefix
    while count > _CHUNK:
        shift -= 16
        hist = np.zeros(1 << 16, np.int64)
        least, most = 2**64, -1
        for v in values():
            u = v.view(np.uint64)
            if shift < 48:
                u = u[(u >> np.uint64(shift + 16)) == np.uint64(prefix)]
            if u.size:
                least, most = min(least, int(u.min())), max(most, int(u.max()))
            digits = (u >> np.uint64(shift)) & np.uint64(0xFFFF)
            hist += np.bincount(digits.astype(np.intp), minlength=1 << 16)
        if least == most:  # all candidates are one value (e.g. many exact zeros)
            return _from_bits(least)
        cum = np.cumsum(hist)
        d = int(np.searchsorted(cum, k, side="right"))  # the digit of the k-th smallest
        k -= int(cum[d - 1]) if d else 0
        count = int(hist[d])
        prefix = (prefix << 16) | d
        if shift == 0:
            return _from_bits(prefix)
    found = [v[(v.view(np.uint64) >> np.uint64(shift)) == np.uint64(prefix)] for v in values()]
    return float(np.partition(np.concatenate(found), k)[k])


# ---- units of the target format -------------------------------------------
def ulp(x, fmt):
    """Spacing of the grid of ``fmt`` at ``x`` (one unit in the last place).

    For a float format with ``m`` mantissa bits: ``2**(e - m)`` with ``e = floor(log2|x|)``
    clamped to ``[emin, emax]`` of the format, so below the smallest normal it is the
    subnormal spacing (``smallest_subnormal``; the gap up to the smallest normal for formats
    without subnormals) and above ``max`` it stays the spacing of the top binade. For an
    integer format it is ``2**scale_exp``. Derived from the format spec, as
    :func:`fpsim.finfo` is.

    Parameters
    ----------
    x : array_like of real numbers
    fmt : str, FloatFormat, IntFormat or dtype
        The target format.

    Returns
    -------
    float or ndarray
        Same shape as ``x`` (a float for a scalar); ``±Inf`` gives the top binade's ulp,
        NaN gives NaN.

    Raises
    ------
    ValueError
        Unknown format name.
    TypeError
        ``x`` is not numeric.

    Examples
    --------
    >>> ulp([1.0, 3.0, 300.0, 1e6, 0.0], "e4m3fn").tolist()
    [0.125, 0.25, 32.0, 32.0, 0.001953125]
    """
    fmt = _format_arg(fmt, "fmt")
    a = _checked(x, "x")
    out = np.empty(a.shape, np.float64)
    flat = out.reshape(-1)
    for i, v in _blocks(a):
        flat[i:i + v.size] = _ulp(v, fmt)
    return _out(out)


def _ulp(v: np.ndarray, fmt) -> np.ndarray:
    """:func:`ulp` of a float64 array, for a resolved format."""
    a = np.abs(v)
    if isinstance(fmt, IntFormat):
        u = np.full(a.shape, math.ldexp(1.0, fmt.scale_exp))
    else:
        _, e = np.frexp(np.where(np.isfinite(a), a, fmt.max))  # a = f * 2**e, f in [0.5, 1)
        e = np.clip(e.astype(np.int64) - 1, fmt.emin, fmt.emax)
        u = np.ldexp(1.0, e - fmt.mantissa_bits)
        u = np.where(a < fmt.smallest_normal, fmt.smallest_subnormal, u)
    return np.where(np.isnan(a), np.nan, u)


def ulp_error(x, x_hat, fmt):
    """Error in units of the target format's ulp at ``x``: ``|x_hat - x| / ulp(x, fmt)``.

    Element-wise (reduce it yourself, e.g. ``.max()``). Correct rounding to nearest gives
    at most 0.5 inside the format's range, the directed modes less than 1.

    Parameters
    ----------
    x, x_hat : array_like of real numbers
        Reference and approximation, same shape.
    fmt : str, FloatFormat, IntFormat or dtype
        The target format (see :func:`ulp`).

    Returns
    -------
    float or ndarray
        Same shape as ``x``; NaN where either is NaN.

    Raises
    ------
    ValueError
        Shapes differ, arrays are empty, or an unknown format name.
    TypeError
        A non-numeric array.

    Examples
    --------
    >>> ulp_error([1.0, 1.0, 100.0], [1.0625, 1.125, 98.0], "e4m3fn").tolist()
    [0.5, 1.0, 0.25]
    """
    a, b = _pair(x, x_hat)
    fmt = _format_arg(fmt, "fmt")
    out = np.empty(a.shape, np.float64)
    flat = out.reshape(-1)
    for i, u, v in _blocks(a, b):
        with np.errstate(invalid="ignore"):
            flat[i:i + u.size] = np.abs(_error(u, v)) / _ulp(u, fmt)
    return _out(out)


# ---- similarity of directions and distributions ---------------------------
def cosine_similarity(x, x_hat, *, axis=None):
    """Cosine of the angle between ``x`` and ``x_hat``: ``<x, x_hat> / (|x| |x_hat|)``.

    Conventions for zero vectors: both zero gives 1 (they are identical), exactly one zero
    gives 0 (e.g. everything underflowed: no agreement in direction). NaN propagates.

    Parameters
    ----------
    x, x_hat : array_like of real numbers
        Same shape.
    axis : None, int or tuple of ints
        Axes that form the vectors; None (default) treats the whole array as one vector.

    Returns
    -------
    float or ndarray
        In [-1, 1].

    Raises
    ------
    ValueError, TypeError
        As for :func:`mse`.

    Examples
    --------
    >>> cosine_similarity([1.0, 0.0], [1.0, 1.0])  # 1 / sqrt(2)
    0.7071067811865475
    >>> cosine_similarity([[1.0, 2.0], [3.0, 0.0]], [[2.0, 4.0], [0.0, 1.0]], axis=-1).tolist()
    [1.0, 0.0]
    """
    a, b = _pair(x, x_hat)
    axis = _check_axis(axis)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        if _whole(axis, a.ndim):
            sa, sb = (_pow2(m) for m in _amax_finite(a, b))  # cosine ignores scales
            dot = na = nb = np.float64(0.0)
            for _, u, v in _blocks(a, b):
                u, v = u * sa, v * sb
                dot += np.sum(u * v)
                na += np.sum(u * u)  # squared norms, <= n after scaling
                nb += np.sum(v * v)
        else:
            a, b = _f64(a, b)
            a, b = a * _pow2_scale(a, axis), b * _pow2_scale(b, axis)  # cosine ignores scales
            dot = np.sum(a * b, axis=axis)
            na = np.sum(a * a, axis=axis)  # squared norms, <= n after scaling
            nb = np.sum(b * b, axis=axis)
        c = dot / np.sqrt(na * nb)
    c = np.where((na == 0) | (nb == 0), np.where((na == 0) & (nb == 0), 1.0, 0.0), c)
    return _out(np.clip(c, -1.0, 1.0))


def _log_softmax(z: np.ndarray, axis) -> np.ndarray:
    m = np.max(z, axis=axis, keepdims=True)
    z = z - np.where(np.isfinite(m), m, 0.0)  # shift first: logits z and z + c agree exactly
    with np.errstate(divide="ignore"):
        return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def kl_divergence(p, q, *, axis=-1, from_logits=False):
    """Kullback-Leibler divergence ``KL(p || q) = sum p log(p / q)``, in nats.

    ``p`` is the reference distribution (e.g. the full-precision model's output) and ``q``
    the approximation. Divide by ``log(2)`` for bits.

    Parameters
    ----------
    p, q : array_like of real numbers
        Same shape. With ``from_logits=False`` (default): non-negative probabilities or
        weights (e.g. histogram counts), normalised along ``axis`` here, so they need not sum
        to 1. With ``from_logits=True``: logits (unnormalised log-probabilities), turned into
        distributions by a numerically stable softmax along ``axis``; ``-inf`` logits are
        allowed (masked entries).
    axis : int, tuple of ints or None
        The axis (or axes) holding each distribution; default -1. None treats the whole
        array as one distribution.
    from_logits : bool
        Whether ``p`` and ``q`` are logits rather than probabilities.

    Returns
    -------
    float or ndarray
        One value per distribution (a float when there is one), >= 0. Terms with ``p == 0``
        contribute 0; ``p > 0`` where ``q == 0`` gives ``inf``. NaN propagates, and a
        distribution whose weights sum to 0 gives NaN.

    Raises
    ------
    ValueError
        Shapes differ, arrays are empty, negative probabilities (``from_logits=False``),
        or ``axis`` out of range.
    TypeError
        Non-numeric arrays, or ``from_logits`` not a bool.

    Examples
    --------
    >>> kl_divergence([0.5, 0.5], [0.25, 0.75])  # 0.5 log 2 + 0.5 log(2/3)
    0.14384103622589045
    >>> kl_divergence([0.0, 0.0], [1.0, 1.0], from_logits=True)
    0.0
    """
    a, b = _pair(p, q, names=("p", "q"))
    axis = _check_axis(axis)
    if not isinstance(from_logits, (bool, np.bool_)):
        raise TypeError(f"from_logits must be True or False, got {from_logits!r}")
    if _whole(axis, a.ndim):
        return _kl_streamed(a, b, bool(from_logits))
    a, b = _f64(a, b)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if from_logits:
            logp, logq = _log_softmax(a, axis), _log_softmax(b, axis)
            pp = np.exp(logp)
        else:
            for name, arr in (("p", a), ("q", b)):
                if np.any(arr < 0):
                    raise ValueError(
                        f"{name} must hold non-negative probabilities (pass "
                        f"from_logits=True for logits); its smallest entry is {np.nanmin(arr)}"
                    )
            pp = a / np.sum(a, axis=axis, keepdims=True)
            qq = b / np.sum(b, axis=axis, keepdims=True)
            logp, logq = np.log(pp), np.log(qq)
        terms = np.where(pp > 0, pp * (logp - logq), np.where(np.isnan(pp), np.nan, 0.0))
        kl = np.sum(terms, axis=axis)
    return _out(np.maximum(kl, 0.0))  # rounding can leave -1e-17; NaN stays NaN


def _kl_streamed(a, b, from_logits: bool) -> float:
    """:func:`kl_divergence` over every element, in passes over blocks."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if from_logits:  # log-softmax: shift by the max (if finite), log of the sum of exps
            ma = mb = np.float64(-np.inf)
            for _, u, v in _blocks(a, b):
                ma, mb = np.maximum(ma, np.max(u)), np.maximum(mb, np.max(v))
            ma, mb = (m if np.isfinite(m) else 0.0 for m in (ma, mb))
            sa = sb = np.float64(0.0)
            for _, u, v in _blocks(a, b):
                sa += np.sum(np.exp(u - ma))
                sb += np.sum(np.exp(v - mb))
            la, lb = np.log(sa), np.log(sb)
        else:
            lo = [np.float64(np.nan)] * 2
            sa = sb = np.float64(0.0)
            for _, u, v in _blocks(a, b):
                lo = [np.fmin(lo[0], np.fmin.reduce(u)), np.fmin(lo[1], np.fmin.reduce(v))]
                sa += np.sum(u)
                sb += np.sum(v)
            for name, m in zip("pq", lo):
                if m < 0:
                    raise ValueError(
                        f"{name} must hold non-negative probabilities (pass "
                        f"from_logits=True for logits); its smallest entry is {m}"
                    )
        kl = np.float64(0.0)
        for _, u, v in _blocks(a, b):
            if from_logits:
                logp, logq = (u - ma) - la, (v - mb) - lb
                pp = np.exp(logp)
            else:
                pp = u / sa
                logp, logq = np.log(pp), np.log(v / sb)
            kl += np.sum(np.where(pp > 0, pp * (logp - logq),
                                  np.where(np.isnan(pp), np.nan, 0.0)))
    return _out(np.maximum(kl, 0.0))  # rounding can leave -1e-17; NaN stays NaN


# ---- range events ------------------------------------------------------------
EVENTS = ("overflow", "saturated", "underflow", "subnormal", "nan", "inf")


@dataclass(frozen=True)
class Counts:
    """How many elements hit each range event (see :func:`counts`), and their rates.

    Examples
    --------
    >>> import numpy as np, fpsim
    >>> x = np.array([1.0, 500.0, 1e-5], np.float32)
    >>> c = counts(x, fpsim.quantize(x, "e4m3fn", saturate=True), "e4m3fn")
    >>> c.n, c.overflow, c.saturated, c.underflow, round(c.rate("overflow"), 4)
    (3, 1, 1, 1, 0.3333)
    >>> c.to_dict()["underflow_rate"] == c.rate("underflow")
    True
    """

    n: int
    overflow: int
    saturated: int
    underflow: int
    subnormal: int
    nan: int
    inf: int
    saturate: bool | None = None
    #: scaled recipes: the number of scale groups, and those with a saturated element
    groups: int | None = None
    groups_saturated: int | None = None

    def rate(self, event: str) -> float:
        """Fraction of the ``n`` elements counted under ``event`` (e.g. ``"overflow"``)."""
        if event not in EVENTS:
            raise ValueError(f"event must be one of {', '.join(EVENTS)}; got {event!r}")
        return getattr(self, event) / self.n

    def to_dict(self) -> dict:
        """Counts, ``<event>_rate`` for each event, and ``saturate``, as plain Python types."""
        d = {"n": int(self.n)}
        d.update({e: int(getattr(self, e)) for e in EVENTS})
        d.update({f"{e}_rate": float(self.rate(e)) for e in EVENTS})
        d["saturate"] = self.saturate
        if self.groups is not None:
            d["groups"] = int(self.groups)
            d["groups_saturated"] = int(self.groups_saturated)
        return d


def _range(fmt) -> tuple[float, float]:
    """Lowest and highest finite value an input may take without overflowing."""
    if isinstance(fmt, IntFormat):
        return fmt.min, fmt.max
    return (-fmt.max if fmt.signed else -math.inf), fmt.max


def counts(x, x_hat, fmt, *, saturate=None) -> Counts:
    """Count overflow, saturation, underflow, subnormal, NaN and Inf events.

    Each count is over the elements of ``x`` (of ``n`` in all); the categories may overlap.

    - ``overflow``: finite ``x`` outside the format's range (``|x| > max``; for integer
      formats ``x`` outside ``[min, max]``; negative inputs to unsigned float formats are
      not overflows, they show up as ``nan`` or ``underflow``).
    - ``saturated``: ``x`` beyond the range (Inf included) whose ``x_hat`` is the range end
      on that side (``±max``).
    - ``underflow``: non-zero, non-NaN ``x`` whose ``x_hat`` is zero.
    - ``subnormal``: non-zero ``x_hat`` below the smallest normal in magnitude (always 0 for
      integer formats and formats without subnormals).
    - ``nan``: ``x_hat`` NaN where ``x`` is not.
    - ``inf``: ``x_hat`` infinite where ``x`` is finite (overflow to Inf).

    Parameters
    ----------
    x, x_hat : array_like of real numbers
        Input and its quantized values (e.g. from :func:`fpsim.quantize`), same shape.
    fmt : str, FloatFormat, IntFormat or dtype
        The format ``x_hat`` is on.
    saturate : bool or None
        The overflow policy ``x_hat`` was produced with, if known; it is recorded in the
        result (and printed by :class:`ErrorReport`) and does not change the counts, which
        are read off the data.

    Returns
    -------
    Counts
        With ``rate(event)`` and ``to_dict()``.

    Raises
    ------
    ValueError
        Shapes differ, arrays are empty, or an unknown format name.
    TypeError
        Non-numeric arrays, or ``saturate`` not None or a bool.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([1000.0, 448.0, 1e-4, 3e-3, 0.0, np.nan, 1.0])
    >>> xq = np.array([448.0, 448.0, 0.0, 0.00390625, 0.0, np.nan, np.nan])
    >>> c = counts(x, xq, "e4m3fn")
    >>> c.overflow, c.saturated, c.underflow, c.subnormal, c.nan, c.rate("nan")
    (1, 1, 1, 1, 1, 0.14285714285714285)
    """
    a, b = _pair(x, x_hat)
    fmt = _format_arg(fmt, "fmt")
    if saturate is not None and not isinstance(saturate, (bool, np.bool_)):
        raise TypeError(f"saturate must be None, True or False, got {saturate!r}")
    lo, hi = _range(fmt)
    has_sub = isinstance(fmt, FloatFormat) and fmt.subnormals and fmt.has_zero
    tally = dict.fromkeys(EVENTS, 0)
    for _, u, v in _blocks(a, b):
        finite = np.isfinite(u)
        above, below = u > hi, u < lo
        tally["overflow"] += int(np.count_nonzero(finite & (above | below)))
        tally["saturated"] += int(np.count_nonzero((above & (v == hi)) | (below & (v == lo))))
        tally["underflow"] += int(np.count_nonzero((u != 0) & ~np.isnan(u) & (v == 0)))
        if has_sub:
            sub = (v != 0) & (np.abs(v) < fmt.smallest_normal)
            tally["subnormal"] += int(np.count_nonzero(sub))
        tally["nan"] += int(np.count_nonzero(np.isnan(v) & ~np.isnan(u)))
        tally["inf"] += int(np.count_nonzero(np.isinf(v) & finite))
    return Counts(n=int(a.size), **tally, saturate=None if saturate is None else bool(saturate))


class UlpErrorStats(NamedTuple):
    """Mean and maximum of :func:`ulp_error` over every element."""

    mean: float
    max: float


def ulp_error_stats(x, x_hat, fmt) -> UlpErrorStats:
    """Mean and maximum :func:`ulp_error`, walking the arrays block by block.

    The same numbers as ``ulp_error(x, x_hat, fmt).mean()`` and ``.max()`` (NaN propagates),
    without a float64 array of the input's size.

    Examples
    --------
    >>> ulp_error_stats([1.0, 2.0], [1.125, 2.0], "e4m3fn")
    UlpErrorStats(mean=0.5, max=1.0)
    """
    target = _format_arg(fmt, "fmt")
    a, b = _pair(_checked(x, "x"), _checked(x_hat, "x_hat"))
    total, mx = np.float64(0.0), np.float64(0.0)
    for _, u, v in _blocks(a, b):
        with np.errstate(invalid="ignore"):
            e = np.abs(_error(u, v)) / _ulp(u, target)
        total += np.sum(e)
        mx = np.maximum(mx, np.max(e))  # NaN propagates
    return UlpErrorStats(float(total / a.size), float(mx))
