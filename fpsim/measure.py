"""Quantize and measure: :func:`error_report` and the sweeps the plots draw.

:mod:`fpsim.metrics` compares two arrays; this module makes the second one (with
:func:`fpsim.quantize` or :func:`fpsim.fake_quantize`) and measures it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .codec import quantize
from .formats import FloatFormat, IntFormat, get_format
from .metrics import (
    Counts,
    cosine_similarity,
    counts,
    max_abs_error,
    mse,
    relative_error,
    sqnr_db,
    ulp_error_stats,
)
from .metrics import EVENTS as _EVENTS

__all__ = ["ErrorReport", "error_report"]

_QUANTIZABLE = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _format_arg(fmt, name: str):
    """get_format(fmt), its error messages prefixed with the argument's name."""
    try:
        return get_format(fmt)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    except TypeError as exc:
        raise TypeError(f"{name}: {exc}") from None


def _quantizable(arr: np.ndarray) -> np.ndarray:
    """arr if float16/32/64, else float64 (integers, ml_dtypes); TypeError if not real numbers."""
    if arr.dtype in _QUANTIZABLE:
        return arr
    if arr.dtype.kind not in "biuf" and arr.dtype.kind != "V":
        raise TypeError(f"x must be an array of real numbers, got dtype {arr.dtype}")
    if arr.dtype.kind == "b":
        raise TypeError("x must be an array of real numbers, got dtype bool")
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"x must be an array of real numbers, got dtype {arr.dtype}") from None


_METRIC_FIELDS = (
    "mse", "rmse", "sqnr_db", "neg_log_mse_db", "max_abs_error", "rel_error_mean",
    "rel_error_median", "rel_error_max", "cosine_similarity", "ulp_error_mean", "ulp_error_max",
)


@dataclass(frozen=True)
class ErrorReport:
    """The main error metrics of ``x_hat`` against ``x``, with range counts.

    Made by :func:`error_report`; ``str(report)`` is an aligned two-column table and
    :meth:`to_dict` gives plain Python types for ``json.dumps``. ``ulp_error_*`` and
    ``counts`` are None when no format is known.

    Examples
    --------
    >>> r = error_report([0.3, 1.0, -2.6], "e4m3fn")
    >>> r.n, round(r.sqnr_db, 2), r.counts.n
    (3, 28.88, 3)
    >>> r.to_dict()["format"]
    'float8_e4m3fn'
    """

    n: int
    mse: float
    rmse: float
    sqnr_db: float
    neg_log_mse_db: float
    max_abs_error: float
    rel_error_mean: float
    rel_error_median: float
    rel_error_max: float
    cosine_similarity: float
    ulp_error_mean: float | None
    ulp_error_max: float | None
    counts: Counts | None
    format: str | None
    rounding: str | None = None
    saturate: bool | None = None
    recipe: str | None = None

    def to_dict(self) -> dict:
        """Every field as plain Python types (``counts`` as a nested dict with rates).

        Non-finite metrics stay floats (``inf``, ``nan``): ``json.dumps`` writes them as
        ``Infinity``/``NaN``, which ``json.loads`` reads back.
        """
        d = {
            "format": self.format, "rounding": self.rounding, "saturate": self.saturate,
            "recipe": self.recipe, "n": int(self.n),
        }
        for name in _METRIC_FIELDS:
            v = getattr(self, name)
            d[name] = None if v is None else float(v)
        d["counts"] = None if self.counts is None else self.counts.to_dict()
        return d

    def _title(self) -> str:
        src = self.recipe or self.format or "x_hat given"
        opts = [f"{k}={v}" for k, v in (("rounding", self.rounding), ("saturate", self.saturate))
                if v is not None]
        if self.recipe and self.format:
            opts.insert(0, f"format={self.format}")
        return f"ErrorReport: {src}" + (f" ({', '.join(opts)})" if opts else "")

    def __str__(self) -> str:
        rows = [("elements", str(self.n))]
        for name in _METRIC_FIELDS:
            v = getattr(self, name)
            if v is not None:
                rows.append((name, f"{v:.6g}"))
        if self.counts is not None:
            for e in _EVENTS:
                rows.append((e, f"{getattr(self.counts, e)} ({self.counts.rate(e):.4%})"))
        width = max(len(k) for k, _ in rows)
        return "\n".join([self._title()] + [f"  {k:<{width}}  {v}" for k, v in rows])


def _is_format_spec(spec) -> bool:
    if isinstance(spec, str):
        try:
            get_format(spec)
        except ValueError:
            from .quant import RECIPES

            return spec.strip().lower() not in RECIPES
        return True
    return isinstance(spec, (FloatFormat, IntFormat, np.dtype, type))


def _is_quant_spec(spec) -> bool:
    from .quant import RECIPES, QuantSpec

    return isinstance(spec, QuantSpec) or (
        isinstance(spec, str) and spec.strip().lower() in RECIPES)


def _resolve(x, spec, fmt, rounding, saturate, rng):
    """``(x_hat, format or None, report metadata)`` from the second argument of error_report."""
    if _is_format_spec(spec):
        target = _format_arg(spec, "x_hat_or_spec")
        if fmt is not None and _format_arg(fmt, "fmt") != target:
            raise ValueError(
                f"fmt={_format_arg(fmt, 'fmt').name!r} disagrees with the format to quantize "
                f"to, {target.name!r}; pass one of them"
            )
        arr = np.asarray(x)
        xq = _quantizable(arr)
        x_hat = quantize(xq, target, rounding=rounding, saturate=saturate, rng=rng)
        meta = {"format": target.name, "rounding": rounding, "saturate": bool(saturate)}
        return x_hat, target, meta
    if _is_quant_spec(spec):
        from .quant import fake_quantize, resolve_spec

        qs = resolve_spec(spec)
        arr = np.asarray(x)
        xq = _quantizable(arr)
        x_hat = fake_quantize(xq, qs, rng=rng)
        meta = {"format": qs.name or qs.describe(), "rounding": qs.rounding,
                "saturate": bool(qs.saturate)}
        # ulps and range counts refer to the element format, which scaling moves:
        # report them against x_hat's own grid only when the caller names one.
        target = None if fmt is None else _format_arg(fmt, "fmt")
        return x_hat, target, meta
    target = None if fmt is None else _format_arg(fmt, "fmt")
    meta = {"format": None if target is None else target.name}
    return spec, target, meta


def error_report(x, x_hat_or_spec, *, fmt=None, rounding="nearest_even", saturate=False,
                 rng=None) -> ErrorReport:
    """Error metrics and range counts of an approximation of ``x``, in one table.

    Parameters
    ----------
    x : array_like of real numbers
        The reference values.
    x_hat_or_spec : array_like, str, FloatFormat, IntFormat or QuantSpec
        Either the approximation ``x_hat`` (same shape as ``x``); or a format to quantize
        ``x`` to with :func:`fpsim.quantize`, a plain cast (``x`` is quantized in its own
        dtype if that is float16/32/64, else in float64); or a QuantSpec or a recipe name
        that is not a format name (``"mxfp8_e4m3"``, ``"nvfp4"``, ``"int8_channel"``...),
        applied with :func:`fpsim.fake_quantize` (scaled).
    fmt : str, FloatFormat, IntFormat or None
        The format ``x_hat`` is on, when ``x_hat`` is given; needed for the ulp errors and
        the counts (left None in the report without it). If the second argument is a
        format, ``fmt`` may only repeat it.
    rounding, saturate, rng
        Passed to :func:`fpsim.quantize` when quantizing; unused (and reported as None)
        when ``x_hat`` is given. With ``saturate=False`` overflows become Inf/NaN and make
        the error metrics Inf/NaN; the counts show how many.

    Returns
    -------
    ErrorReport

    Raises
    ------
    ValueError
        A string that is not a format name (the message lists the formats), shapes differ,
        empty arrays, or ``fmt`` disagreeing with the format to quantize to.
    TypeError
        Non-numeric arrays, or bad ``rounding``/``saturate``/``rng`` types.

    Examples
    --------
    >>> r = error_report([0.3, 1.0, -2.6], "e4m3fn")  # quantized: 0.3125, 1, -2.5
    >>> round(r.max_abs_error, 4), r.counts.overflow, r.format
    (0.1, 0, 'float8_e4m3fn')
    >>> print(error_report([1.0, 2.0], [1.0, 2.0]))  # doctest: +NORMALIZE_WHITESPACE
    ErrorReport: x_hat given
      elements           2
      mse                0
      rmse               0
      sqnr_db            inf
      neg_log_mse_db     inf
      max_abs_error      0
      rel_error_mean     0
      rel_error_median   0
      rel_error_max      0
      cosine_similarity  1
    """
    a = _quantizable(np.asarray(x))
    x_hat, target, meta = _resolve(a, x_hat_or_spec, fmt, rounding, saturate, rng)
    b = np.asarray(x_hat)
    rel = relative_error(a, b)
    if target is not None:
        ulp_mean, ulp_max = ulp_error_stats(a, b, target)
        c = counts(a, b, target, saturate=meta.get("saturate"))
    else:
        ulp_mean = ulp_max = c = None
    m = mse(a, b)  # rmse and neg_log_mse_db from it, as those functions do
    with np.errstate(divide="ignore"):
        neg_log = float(-10.0 * np.log10(m))
    return ErrorReport(
        n=int(a.size),
        mse=m,
        rmse=float(np.sqrt(m)),
        sqnr_db=sqnr_db(a, b),
        neg_log_mse_db=neg_log,
        max_abs_error=max_abs_error(a, b),
        rel_error_mean=rel.mean,
        rel_error_median=rel.median,
        rel_error_max=rel.max,
        cosine_similarity=cosine_similarity(a, b),
        ulp_error_mean=ulp_mean,
        ulp_error_max=ulp_max,
        counts=c,
        **meta,
    )
