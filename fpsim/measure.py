"""Quantize and measure: :func:`error_report` and the sweeps the plots draw.

:mod:`fpsim.metrics` compares two arrays; this module makes the second one (with
:func:`fpsim.quantize` or :func:`fpsim.fake_quantize`) and measures it.
"""

from __future__ import annotations

import dataclasses
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

__all__ = ["ErrorReport", "MxScaleStats", "RecipeErrors", "ScaleSweep", "cast_relative_error",
           "error_report", "is_recipe_arg", "mx_recipe_names", "mx_scale_rules",
           "mx_scale_stats", "recipe_counts", "recipe_errors", "resolve_recipe", "scale_sweep"]

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
    element format's range *after scaling* (clipped to their group's largest value; beyond
    it by more than the float32 rounding of the scale, 2**-20 relative),
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
    # x / scale carries the float32 rounding of the scale (amax / max is not exact): the
    # element that set an amax scale lands a few ulps of float32 beyond the range end
    tol = 2.0 ** -20
    snap_hi = (y > hi) & (y <= hi + abs(hi) * tol)
    snap_lo = (y < lo) & (y >= lo - abs(lo) * tol)
    y = np.where(snap_hi, hi, np.where(snap_lo, lo, y))
    c = counts(y, e, fmt, saturate=bool(qt.spec.saturate))
    beyond = ~np.isnan(y) & ((y > hi) | (y < lo))
    gid = qt.group_index()
    return dataclasses.replace(c, groups=int(qt.n_groups),
                               groups_saturated=int(np.unique(gid[beyond]).size))


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


# ---- the sweeps the plots draw (fpsim.plotting only draws what these return) ---------------
def is_recipe_arg(spec) -> bool:
    """True for what :func:`fpsim.fake_quantize` takes as a spec: a name or a QuantSpec."""
    return _is_recipe(spec)


def resolve_recipe(spec):
    """``fpsim.quant.resolve_spec(spec)``: the QuantSpec of a recipe name or a QuantSpec."""
    from .quant import resolve_spec

    return resolve_spec(spec)


def cast_relative_error(x, fmt, *, rounding="nearest_even", saturate=False, rng=None):
    """``(q, rel)``: a plain cast of ``x`` to ``fmt`` (float64) and ``|q - x| / |x|``,
    NaN where ``q`` is not finite.

    Examples
    --------
    >>> q, rel = cast_relative_error(np.array([0.3, 1.0]), "e4m3fn")
    >>> q.tolist(), float(rel[1])
    ([0.3125, 1.0], 0.0)
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        q = np.asarray(quantize(x, get_format(fmt), rounding=rounding, saturate=saturate,
                                rng=rng), dtype=np.float64)
        rel = np.abs(q - x) / np.abs(x)
    rel[~np.isfinite(q)] = np.nan
    return q, rel


@dataclass(frozen=True)
class RecipeErrors:
    """Per-element errors of one recipe on ``x`` (see :func:`recipe_errors`)."""

    label: str
    errors: np.ndarray
    sqnr_db: float
    non_finite: int


def recipe_errors(x, spec, *, error="absolute", rng=None) -> RecipeErrors:
    """The errors ``fake_quantize(x, spec)`` makes on the finite elements of ``x``.

    ``errors`` holds ``|x_hat - x|`` (``error="relative"``: divided by ``|x|``, over the
    non-zero ``x``) where both are finite; ``sqnr_db`` is over the finite ``x``;
    ``non_finite`` counts finite ``x`` whose ``x_hat`` is not.

    Examples
    --------
    >>> r = recipe_errors(np.array([1.0, 2.0, 3.0], np.float32), "int8")
    >>> r.label, r.errors.size, r.non_finite
    ('int8', 3, 0)
    """
    from .quant import fake_quantize, resolve_spec

    if error not in ("absolute", "relative"):
        raise ValueError(f"error must be 'absolute' or 'relative', got {error!r}")
    resolved = resolve_spec(spec)
    x = np.asarray(x)
    fin = np.isfinite(x)
    x64 = x.astype(np.float64)
    xq = np.asarray(fake_quantize(x, resolved, rng=rng), dtype=np.float64)
    ok = fin & np.isfinite(xq)
    e = np.abs(xq[ok] - x64[ok])
    if error == "relative":
        nz = x64[ok] != 0
        e = e[nz] / np.abs(x64[ok][nz])
    with np.errstate(all="ignore"):
        db = float(sqnr_db(x64[fin], xq[fin]))
    label = spec if isinstance(spec, str) else (resolved.name or resolved.describe())
    return RecipeErrors(label, e, db, int(np.count_nonzero(fin & ~np.isfinite(xq))))


@dataclass(frozen=True)
class ScaleSweep:
    """SQNR and range events of ``quantize(x * s) / s`` over scales (see :func:`scale_sweep`)."""

    scales: np.ndarray
    sqnr_db: np.ndarray
    overflow_pct: np.ndarray
    underflow_pct: np.ndarray
    amax_scale: float
    amax_sqnr_db: float


def scale_sweep(x, fmt, scales, *, rounding="nearest_even", saturate=False) -> ScaleSweep:
    """SQNR of a cast after multiplying by each scale, and the % of overflowing and
    flushed elements; also the point of the amax scale ``max / max|x|``.

    ``x`` is flattened and its non-finite values dropped.

    Examples
    --------
    >>> sw = scale_sweep(np.array([1.0, -2.0, 0.5]), "e4m3fn", [1.0, 1000.0])
    >>> sw.overflow_pct.tolist(), sw.amax_scale
    ([0.0, 100.0], 224.0)
    """
    fmt = get_format(fmt)
    x64 = np.asarray(x, dtype=np.float64).ravel()
    x64 = x64[np.isfinite(x64)]
    scales = np.asarray(scales, dtype=np.float64)
    nz = x64 != 0
    db = np.empty(scales.size)
    over = np.empty(scales.size)
    under = np.empty(scales.size)

    def one(s):
        with np.errstate(all="ignore"):
            y = x64 * s
            q = np.asarray(quantize(y, fmt, rounding=rounding, saturate=saturate),
                           dtype=np.float64) / s
            return y, q, sqnr_db(x64, q)

    for j, s in enumerate(scales):
        y, q, db[j] = one(s)
        over[j] = 100.0 * np.count_nonzero(np.abs(y) > fmt.max) / x64.size
        under[j] = 100.0 * np.count_nonzero(nz & (q == 0)) / x64.size
    db[~np.isfinite(db)] = np.nan
    amax = float(np.abs(x64).max())
    s_amax = fmt.max / amax
    v = float(one(s_amax)[2])
    return ScaleSweep(scales, db, over, under, s_amax, v if np.isfinite(v) else float("nan"))


@dataclass(frozen=True)
class MxScaleStats:
    """Block-scale exponents and clipping of an MX recipe under one scale rule."""

    rule: str
    exponents: np.ndarray
    clipped_fraction: np.ndarray
    clipped: int
    elements: int


def mx_recipe_names() -> list[str]:
    """The MX recipes (power-of-two E8M0 block scales)."""
    from .quant import RECIPES
    from .quant import blocks as _blocks

    return [r for r in RECIPES if r in _blocks.MX_ELEMENTS]


def mx_scale_rules() -> tuple:
    """The block-scale rules of MX recipes (``floor``, ``ceil``, ``even``, ``rceil``)."""
    from .quant import blocks as _blocks

    return tuple(_blocks.SCALE_RULES)


def mx_scale_stats(x, spec, rule) -> MxScaleStats:
    """Per block of an MX recipe (``spec`` with E8M0 scales) under scale rule ``rule``: the
    scale exponents and the fraction of its elements beyond the element max after scaling
    (all-NaN blocks, whose scale is the NaN code, are left out).

    Examples
    --------
    >>> st = mx_scale_stats(np.r_[np.ones(31), 7.5].astype(np.float32), "mxfp4_e2m1", "floor")
    >>> st.exponents.tolist(), st.clipped
    ([0], 1)
    """
    from .quant import blocks as _blocks
    from .quant import resolve_spec

    spec = resolve_spec(spec)
    x = np.asarray(x)
    if x.ndim == 0:
        x = x.reshape(1)
    fmt, k = spec.format, spec.block_size
    if not -x.ndim <= spec.axis < x.ndim:
        raise ValueError(f"the recipe's axis {spec.axis} is out of range for x with "
                         f"{x.ndim} dimension(s)")
    moved = np.moveaxis(x.astype(np.float32), spec.axis, -1)
    length = moved.shape[-1]
    nb = -(-length // k)
    buf = np.zeros((int(np.prod(moved.shape[:-1], dtype=np.int64)), nb * k), np.float32)
    buf[:, :length] = moved.reshape(buf.shape[0], length)
    valid = (np.arange(nb * k) < length).reshape(nb, k).sum(axis=1)  # elements per block
    _, sc = _blocks.mx_encode(buf, fmt, axis=-1, block_size=k, scale_rule=rule,
                              rounding=spec.rounding)
    ok = sc != 255
    es = sc.astype(np.int64) - 127
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = np.abs(buf.reshape(buf.shape[0], nb, k)) / np.ldexp(1.0, es)[..., None]
        clipped = np.sum(scaled > fmt.max, axis=-1)
    frac = clipped / valid[None, :]
    return MxScaleStats(rule, es[ok], frac[ok], int(clipped[ok].sum()),
                        int(np.sum(valid[None, :] * ok)))
