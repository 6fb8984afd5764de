"""Calibration: the clip value of each scale group (max, percentile, MSE, KL), the
scale it gives, and :func:`calibrate` for static specs."""

from __future__ import annotations

import dataclasses

import numpy as np

from ._cast import quantize
from . import blocks as _blocks
from ._groups import (F32_MAX, F32_TINY, Groups, as_float, band_absmax, band_minmax, finite_abs,
                      finite_rows)
from .spec import KEEP, QuantSpec, given, resolve_spec

__all__ = ["calibrate", "clip_value"]


def _fake_rows(g: np.ndarray, clip: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Fake-quantize rows of g with per-row clip values (scale = clip / max)."""
    scale = scale_from_clip(clip, spec)
    with np.errstate(over="ignore"):
        y = (g / scale).astype(np.float32)
    q = quantize(y, spec.format, rounding="nearest_even", saturate=True)
    return q.astype(np.float64) * scale


def _mse_clip(g: np.ndarray, spec: QuantSpec, n: int = 100) -> np.ndarray:
    amax = np.minimum(finite_abs(g).max(axis=1, keepdims=True), F32_MAX) if g.shape[1] \
        else np.zeros((g.shape[0], 1))
    gf = np.clip(np.where(np.isfinite(g), g, 0.0).astype(np.float64), -F32_MAX, F32_MAX)
    best = amax.copy()
    best_err = np.full(amax.shape, np.inf)
    for frac in np.linspace(1.0 / n, 1.0, n):
        c = amax * frac
        with np.errstate(over="ignore"):
            err = ((_fake_rows(gf, c, spec) - gf) ** 2).sum(axis=1, keepdims=True)
        better = err < best_err
        best = np.where(better, c, best)
        best_err = np.where(better, err, best_err)
    return best


def _kl_clip(g: np.ndarray, spec: QuantSpec, bins: int = 2048, n: int = 100) -> np.ndarray:
    """Entropy calibration, TensorRT's method generalised to any format.

    For each candidate clip ``c`` (a bin edge of the 2048-bin histogram of
    |x|): P is the histogram up to ``c`` with the outliers folded into its last
    bin; the bins are grouped by the quantization level their centre rounds to
    (for int8 these are TensorRT's 128 merged chunks), and Q spreads each
    group's mass, without the outliers, evenly over the group's non-empty bins.  The clip minimising
    KL(P || Q) wins.  Only the finite values count.
    """
    out = np.empty((g.shape[0], 1))
    for row, v in enumerate(finite_rows(g)):
        a = np.minimum(np.abs(v), F32_MAX)
        amax = a.max() if a.size else 0.0
        if amax == 0:
            out[row] = 0.0
            continue
        hist, edges = np.histogram(a, bins=bins, range=(0, amax))
        best, best_kl = amax, np.inf
        for i in np.unique(np.linspace(bins // 16, bins, n).astype(int)):
            c = edges[i]
            p = hist[:i].astype(np.float64)
            p[-1] += hist[i:].sum()
            centres = (edges[:i] + edges[1:i + 1]) / 2
            levels = _fake_rows(centres[None, :], np.array([[c]]), spec)[0]
            _, grp = np.unique(levels, return_inverse=True)
            nz = p > 0
            # Q comes from the clipped histogram *without* the folded outliers
            # (as TensorRT / MXNet do): clipping costs the outliers' mass.
            mass = np.bincount(grp, weights=hist[:i].astype(np.float64))
            count = np.bincount(grp, weights=nz.astype(np.float64))
            q = np.where(nz, mass[grp] / np.maximum(count[grp], 1), 0.0)
            ps, qs = p / p.sum(), q / q.sum()
            with np.errstate(divide="ignore", invalid="ignore"):  # q = 0 where p > 0: KL is inf
                kl = float(np.sum(ps[nz] * np.log(ps[nz] / qs[nz])))
            if kl < best_kl:
                best, best_kl = c, kl
        out[row] = best
    return out


def percentile_rows(g: np.ndarray, q: float) -> np.ndarray:
    return np.array([[np.percentile(v, q) if v.size else 0.0] for v in g], dtype=np.float64) \
        .reshape(-1, 1)


def clip_value(g: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Clip value of each row of ``g`` (groups, n) under ``spec.calibration``.

    Only the finite values count (NaN and Inf never set a clip value); a row with
    none gets 0.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.array([[1.0, -3.0, 2.0], [0.5, 0.25, -0.125]])
    >>> from fpsim.quant import recipe
    >>> clip_value(g, recipe("int8")).tolist()  # calibration "max": the row's absmax
    [[3.0], [0.5]]
    """
    g = np.asarray(g)
    cal = spec.calibration
    if cal == "max":
        out = np.zeros((g.shape[0], 1))
        for rs in _blocks.row_chunks(g.shape[0], g.shape[1]):
            out[rs, 0] = band_absmax(g[rs])
        return out
    if cal == "percentile":
        return percentile_rows([np.abs(v) for v in finite_rows(g)], spec.percentile)
    if g.shape[0] == 0:
        return np.zeros((0, 1))
    if cal == "mse":
        return _mse_clip(g, spec)
    return _kl_clip(g, spec)


def scale_from_clip(clip: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Dequantization scale per group (float32 values, > 0, finite, and
    ``scale * max_elem`` within float32's range)."""
    fmax = spec.format.max
    clip = np.minimum(np.asarray(clip, dtype=np.float64), F32_MAX)
    safe = np.where((clip > 0) & np.isfinite(clip), clip, fmax)
    if spec.scale_rule != "amax":
        es = _blocks.scale_exponent(safe.astype(np.float32), spec.format,
                                    scale_rule=spec.scale_rule).reshape(clip.shape)
        scale = np.ldexp(1.0, es)
    else:
        scale = (safe / fmax).astype(np.float32).astype(np.float64)
        if spec.scale_format is not None:
            # round the scale up so clip / scale stays within range
            sq = quantize(scale.astype(np.float32), spec.scale_format,
                          rounding="toward_positive", saturate=True).astype(np.float64)
            scale = np.where(sq > 0, sq, spec.scale_format.smallest_subnormal)
    scale = np.where(clip > 0, scale, 1.0).astype(np.float32).astype(np.float64)
    scale = np.maximum(scale, F32_TINY)  # a tiny amax: the smallest float32, never 0
    over = scale * fmax > F32_MAX  # the top element must dequantize to a finite float32
    if over.any():
        down = (scale * (1.0 - 2.0**-23)).astype(np.float32).astype(np.float64)
        if spec.scale_format is not None:
            down = quantize(down.astype(np.float32), spec.scale_format, rounding="toward_zero",
                            saturate=True).astype(np.float64)
        scale = np.where(over, down, scale)
    return scale


def asym_range(x: np.ndarray, groups: Groups, spec: QuantSpec):
    """(lo, hi) per group, (groups, 1) float64, lo <= 0 <= hi, within float32's range."""
    if spec.amax is not None:
        hi = static_clip(spec, groups.n_groups)
        lo = -hi if spec.amin is None else static_clip(spec, groups.n_groups, "amin")
    elif spec.calibration == "percentile":
        g = groups.split(x)
        rows = list(finite_rows(g))
        lo = np.minimum(percentile_rows(rows, 100.0 - spec.percentile), 0.0)
        hi = np.maximum(percentile_rows(rows, spec.percentile), 0.0)
    else:
        lo = np.zeros((groups.n_groups, 1))
        hi = np.zeros((groups.n_groups, 1))
        for gs, band, _ in groups.bands(x):
            bl, bh = band_minmax(band)
            lo[gs, 0] = np.minimum(lo[gs, 0], bl)
            hi[gs, 0] = np.maximum(hi[gs, 0], bh)
    return np.maximum(lo, -F32_MAX), np.minimum(hi, F32_MAX)


def static_clip(spec: QuantSpec, n_groups: int, name: str = "amax"):
    vals = getattr(spec, name)
    a = np.abs(np.asarray(vals, dtype=np.float64).reshape(-1, 1))
    if a.shape[0] == 1:
        a = np.repeat(a, n_groups, axis=0)
    if a.shape[0] != n_groups:
        raise ValueError(f"spec.{name} has {a.shape[0]} values but x has {n_groups} scale groups")
    return a if name == "amax" else -a


def calibrate(data, spec, *, format=KEEP, rounding=KEEP, saturate=KEEP,
              granularity=KEEP, axis=KEEP, block_size=KEEP, scale_format=KEEP,
              scale_rule=KEEP, calibration=KEEP, percentile=KEEP, symmetric=KEEP,
              tensor_scale=KEEP, amax=KEEP, amin=KEEP, stack=KEEP, row_scaled=KEEP, error=KEEP, e4m3_max=KEEP,
           hadamard=KEEP, name=KEEP) -> QuantSpec:
    """A static spec: the clip values of ``spec``'s calibration, measured on ``data``.

    ``data`` is one array or a list of arrays with the same scale groups (the
    clip value of each group is the largest over the arrays); the result
    carries ``amax`` (one value per group) and uses it on every later call.
    For an affine spec (``symmetric=False``) it carries the range: ``amin``
    and ``amax`` per group (the smallest low end and largest high end over the
    arrays).  NaN and Inf are ignored.  Calibration is deterministic, so it takes no ``rng``:
    its ``mse``/``kl`` searches score candidate clips with round-to-nearest-even whatever the
    spec's rounding (the calibrated spec keeps its rounding for later calls).

    Raises
    ------
    ValueError
        If data has no finite values, or an axis is out of range.
    TypeError
        Non-float or masked data.

    Examples
    --------
    >>> import numpy as np, fpsim
    >>> s = fpsim.calibrate(np.array([1.0, -3.0, 2.0]), "int8")
    >>> s.amax
    (3.0,)
    >>> s = fpsim.calibrate(np.array([1.0, -3.0, 2.0]), "int8_asym")
    >>> s.amin, s.amax
    ((-3.0,), (2.0,))
    """
    spec = resolve_spec(spec, **given(format=format, rounding=rounding, saturate=saturate,
                                      granularity=granularity, axis=axis, block_size=block_size,
                                      scale_format=scale_format, scale_rule=scale_rule,
                                      calibration=calibration, percentile=percentile,
                                      symmetric=symmetric, tensor_scale=tensor_scale, amax=amax,
                                      amin=amin, stack=stack, row_scaled=row_scaled, error=error,
                      e4m3_max=e4m3_max, hadamard=hadamard, name=name))
    if spec.is_mx or spec.tensor_scale:
        raise ValueError("block-scaled recipes compute their scales per block; nothing to calibrate")
    spec = dataclasses.replace(spec, amax=None, amin=None)
    arrays = list(data) if isinstance(data, (list, tuple)) and data and isinstance(
        data[0], np.ndarray) else [data]
    lows, highs = [], []
    for arr in arrays:
        arr = as_float(arr)
        groups = Groups(arr.shape, spec)
        if not np.isfinite(arr).any():
            raise ValueError("calibration data has no finite values")
        if spec.symmetric:
            highs.append(group_clip(arr, groups, spec).ravel())
        else:
            lo, hi = asym_range(arr, groups, spec)
            lows.append(lo.ravel())
            highs.append(hi.ravel())
    if len({c.size for c in highs}) != 1:
        raise ValueError("calibration arrays must give the same number of scale groups")
    amax = tuple(float(v) for v in np.max(np.stack(highs), axis=0))
    amin = None if spec.symmetric else tuple(float(v) for v in np.min(np.stack(lows), axis=0))
    return dataclasses.replace(spec, amax=amax, amin=amin)


def group_clip(x, groups, spec):
    if spec.calibration == "max":
        clip = np.zeros((groups.n_groups, 1))
        for gs, band, _ in groups.bands(x):
            clip[gs, 0] = np.maximum(clip[gs, 0], band_absmax(band))
        return clip
    return clip_value(groups.split(x), spec)
