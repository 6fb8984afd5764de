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
    ulp,
    ulp_error_stats,
)
from .metrics import EVENTS as _EVENTS

__all__ = ["ErrorReport", "error_report", "recipe_counts"]

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
    >>> import fpsim
    >>> r = error_report([0.3, 1.0, -2.6], fpsim.get_format("e4m3fn"))
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

        Standard JSON: non-finite metrics (``inf``, ``nan``) become the strings ``"inf"``,
        ``"-inf"``, ``"nan"`` (JSON has no such numbers), so ``json.dumps(report.to_dict(),
        allow_nan=False)`` works for every report.
        """
        d = {
            "format": self.format, "rounding": self.rounding, "saturate": self.saturate,
            "recipe": self.recipe, "n": int(self.n),
        }
        for name in _METRIC_FIELDS:
            v = getattr(self, name)
            d[name] = None if v is None else _json_float(float(v))
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
            if self.counts.groups is not None:
                rows.append(("groups", str(self.counts.groups)))
                rows.append(("groups_saturated", str(self.counts.groups_saturated)))
        width = max(len(k) for k, _ in rows)
        return "\n".join([self._title()] + [f"  {k:<{width}}  {v}" for k, v in rows])


def _json_float(v: float):
    if np.isfinite(v):
        return v
    return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")


def _is_format_object(spec) -> bool:
    """A format named by an object (a plain cast), not by a string (a recipe)."""
    if isinstance(spec, (FloatFormat, IntFormat, np.dtype)):
        return True
    if isinstance(spec, type):
        try:
            np.dtype(spec)
        except TypeError:
            return False
        return True
    return False


def _is_recipe(spec) -> bool:
    from .quant import QuantSpec

    return isinstance(spec, (str, QuantSpec))


def _element_range(fmt) -> tuple[float, float]:
    if isinstance(fmt, IntFormat):
        return float(fmt.min), float(fmt.max)
    lo = -fmt.max if fmt.signed else 0.0
    return float(lo), float(fmt.max)


def recipe_counts(x, qt) -> Counts:
    """Range counts of a scaled quantization, in the element format's own units.

    Each element is divided by its scale (plus its zero point, for affine recipes) and
    compared with its code's value: ``overflow`` and ``saturated`` are elements beyond the
    element format's range *after scaling* by more than half a step at the range end (so
    clipped to their group's largest value, not merely rounded to it),
    ``underflow`` non-zero elements flushed to zero, ``nan``/``inf`` as for a cast; ``groups``
    is the number of scale groups and ``groups_saturated`` those with a saturated element.

    Parameters
    ----------
    x : array_like
        The input of ``qt``.
    qt : fpsim.quant.QuantizedTensor
        From ``quantize_tensor(x, spec)``.

    Examples
    --------
    >>> import numpy as np, fpsim
    >>> x = np.ones((2, 32), np.float32); x[1, 3] = 15000.0  # block 1: scale 2**11, 7.3 > 6
    >>> c = recipe_counts(x, fpsim.quantize_tensor(x, "mxfp4_e2m1"))
    >>> c.saturated, c.groups_saturated, c.groups
    (1, 1, 2)
    """
    a = np.asarray(x, dtype=np.float64)
    s = qt.element_scale()
    z = qt.element_zero_point()
    e = qt.element_values()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        y = a / s
        if z is not None:
            y = y + z
    fmt = qt.spec.format
    lo, hi = _element_range(fmt)
    # x / scale carries float rounding (amax / max is not exact): an element beyond the range
    # end by less than half a step there would round to the end anyway, so it is not clipped
    half_hi = 0.5 * float(ulp(np.float64(hi), fmt)) if isinstance(fmt, FloatFormat) else 0.5
    half_lo = 0.5 * float(ulp(np.float64(lo), fmt)) if isinstance(fmt, FloatFormat) else 0.5
    snap_hi = (y > hi) & (y <= hi + half_hi)
    snap_lo = (y < lo) & (y >= lo - half_lo)
    y = np.where(snap_hi, hi, np.where(snap_lo, lo, y))
    c = counts(y, e, fmt, saturate=bool(qt.spec.saturate))
    beyond = ~np.isnan(y) & ((y > hi) | (y < lo))
    gid = qt.group_index()
    return Counts(**{**c.__dict__, "groups": int(qt.n_groups),
                     "groups_saturated": int(np.unique(gid[beyond]).size)})


def _resolve(x, spec, fmt, rounding, saturate, rng):
    """``(x_hat, format for ulps or None, counts or None, report metadata)``."""
    if _is_recipe(spec):
        from .quant import fake_quantize, quantize_tensor, resolve_spec
        from .rounding import resolve_seed

        over = {k: v for k, v in (("rounding", rounding), ("saturate", saturate))
                if v is not None}
        qs = resolve_spec(spec, **over)
        arr = _quantizable(np.asarray(x))
        seed = None if rng is None and qs.rounding != "stochastic" else int(resolve_seed(rng))
        x_hat = fake_quantize(arr, qs, rng=seed)
        c = recipe_counts(arr, quantize_tensor(arr, qs, rng=seed))
        meta = {"format": qs.format.name, "recipe": qs.name or qs.describe(),
                "rounding": qs.rounding, "saturate": bool(qs.saturate)}
        # ulps refer to a grid, which scaling moves: only against a format the caller names
        target = None if fmt is None else _format_arg(fmt, "fmt")
        return x_hat, target, c, meta
    if _is_format_object(spec):
        target = _format_arg(spec, "x_hat_or_spec")
        if fmt is not None and _format_arg(fmt, "fmt") != target:
            raise ValueError(
                f"fmt={_format_arg(fmt, 'fmt').name!r} disagrees with the format to quantize "
                f"to, {target.name!r}; pass one of them"
            )
        rounding = "nearest_even" if rounding is None else rounding
        saturate = False if saturate is None else saturate
        arr = np.asarray(x)
        xq = _quantizable(arr)
        x_hat = quantize(xq, target, rounding=rounding, saturate=saturate, rng=rng)
        meta = {"format": target.name, "rounding": rounding, "saturate": bool(saturate)}
        return x_hat, target, None, meta
    target = None if fmt is None else _format_arg(fmt, "fmt")
    meta = {"format": None if target is None else target.name}
    return spec, target, None, meta


def error_report(x, x_hat_or_spec, *, fmt=None, rounding=None, saturate=None,
                 rng=None) -> ErrorReport:
    """Error metrics and range counts of an approximation of ``x``, in one table.

    Parameters
    ----------
    x : array_like of real numbers
        The reference values.
    x_hat_or_spec : array_like, str, QuantSpec, FloatFormat, IntFormat or dtype
        What to measure, with one meaning per kind of argument:

        - a **string or QuantSpec** is a recipe, exactly as :func:`fpsim.fake_quantize`
          reads it: ``"int8"`` and ``"e4m3fn"`` are per-tensor amax-scaled, ``"nvfp4"``
          block-scaled, and so on;
        - a **format object** (``fpsim.get_format("e4m3fn")``, an ml_dtypes or numpy dtype or
          type) is a plain cast with :func:`fpsim.quantize` (``x`` in its own dtype if that
          is float16/32/64, else float64), no scale;
        - an **array** is the approximation ``x_hat`` itself (same shape as ``x``).
    fmt : str, FloatFormat, IntFormat or None
        The grid ``x_hat`` is on, for the ulp errors (and, for a given ``x_hat``, the
        counts). With a format object it may only repeat it.
    rounding, saturate : optional
        Override the recipe's rounding/saturation, or set the cast's (default
        ``nearest_even``, ``saturate=False``: overflows become Inf/NaN and make the metrics
        Inf/NaN; the counts show how many).  Unused (reported as None) for a given ``x_hat``.
    rng : int seed, Generator or None
        For stochastic rounding.

    Returns
    -------
    ErrorReport

    Raises
    ------
    ValueError
        A string that is not a recipe or format name (the message lists them), shapes
        differ, empty arrays, or ``fmt`` disagreeing with the format to quantize to.
    TypeError
        Non-numeric arrays, or bad ``rounding``/``saturate``/``rng`` types.

    Examples
    --------
    >>> import fpsim
    >>> x = [0.3, 1.0, -2.6]
    >>> r = error_report(x, fpsim.get_format("e4m3fn"))  # a cast: 0.3125, 1, -2.5
    >>> round(r.max_abs_error, 4), r.counts.overflow, r.format
    (0.1, 0, 'float8_e4m3fn')
    >>> r = error_report(x, "int8")   # a recipe: scaled per tensor, as fake_quantize does
    >>> r.sqnr_db == fpsim.metrics.sqnr_db(x, fpsim.fake_quantize(x, "int8")), r.counts.groups
    (True, 1)
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
    x_hat, target, c, meta = _resolve(a, x_hat_or_spec, fmt, rounding, saturate, rng)
    b = np.asarray(x_hat)
    rel = relative_error(a, b)
    if target is not None:
        ulp_mean, ulp_max = ulp_error_stats(a, b, target)
        if c is None:
            c = counts(a, b, target, saturate=meta.get("saturate"))
    else:
        ulp_mean = ulp_max = None
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
