"""Scaled quantization: per-tensor, per-channel/token and per-block scales.

A :class:`QuantSpec` says how a tensor is quantized; :func:`quantize_tensor`
returns a :class:`QuantizedTensor` (codes + scales), :func:`fake_quantize`
the dequantized values directly.  ``spec`` may be a QuantSpec or a recipe
name (see :func:`recipe`), and keyword overrides adjust it::

    fpsim.fake_quantize(x, "mxfp8_e4m3", axis=0, scale_rule="rceil")
    fpsim.fake_quantize(x, "int8", calibration="mse")

Conventions
-----------
* ``scales`` are dequantization multipliers: ``x_hat = element * scale``
  (``scale_inv`` in Transformer Engine's terms, ``2**X`` in OCP MX).
* Elements are ``x / scale`` computed in float32 and then rounded once into
  the element format; power-of-two block scales (MX) are applied exactly.
* Groups: ``tensor`` (one scale), ``channel`` / ``token`` (one scale per
  vector along ``axis``: ``axis=-1`` on a (out, in) weight is per output
  channel, on (tokens, features) activations per token), ``block`` (blocks of
  ``block_size`` along ``axis``; a pair ``(128, 128)`` tiles the last two axes).
* Non-finite values never set a scale: the clip value comes from the finite
  values (a group with none gets scale 1); NaN stays NaN and +-Inf saturates.
* A group whose clip value is 0 gets scale 1 (never NaN or Inf).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import blocks as _blocks
from .codec import decode, encode, quantize
from .formats import FloatFormat, IntFormat, get_format

__all__ = [
    "QuantSpec",
    "QuantizedTensor",
    "DelayedScaling",
    "GRANULARITIES",
    "CALIBRATIONS",
    "SCALE_RULES",
    "RECIPES",
    "recipe",
    "resolve_spec",
    "quantize_tensor",
    "fake_quantize",
    "calibrate",
    "clip_value",
]

GRANULARITIES = ("tensor", "channel", "token", "block")
CALIBRATIONS = ("max", "percentile", "mse", "kl")
#: "amax": scale = clip / element max (any scale format); the power-of-two
#: rules of :mod:`fpsim.blocks` give E8M0 scales.
SCALE_RULES = ("amax",) + _blocks.SCALE_RULES


def _fmt(v, name):
    try:
        return get_format(v)
    except (ValueError, TypeError) as e:
        raise type(e)(f"{name}: {e}") from None


@dataclass(frozen=True, kw_only=True)
class QuantSpec:
    """How to quantize a tensor: element format, rounding, scale groups and rule.

    Parameters
    ----------
    format : str or format
        Element format (``"float8_e4m3fn"``, ``"int8"``, ``"float4_e2m1fn"``...).
    rounding : str
        Element rounding mode (IEEE names, see ``fpsim.ROUNDINGS``).
    saturate : bool
        Clamp elements to +-max (default True: scaled recipes saturate).
    granularity : {"tensor", "channel", "token", "block"}
    axis : int
        Axis of the vectors (channel/token) or blocks (block) sharing a scale.
    block_size : int or (int, int)
        Block length (``block``); a pair tiles the last two axes.
    scale_format : str, format or None
        Format the scales are stored in: None (float32), ``"float8_e8m0fnu"``
        (power of two), ``"float8_e4m3fn"`` (NVFP4 blocks), ``"bfloat16"``...
    scale_rule : str
        ``"amax"`` (scale = clip / element max, rounded up into scale_format)
        or a power-of-two rule ``"floor"`` (OCP MX), ``"ceil"``, ``"even"``,
        ``"rceil"``.
    calibration : {"max", "percentile", "mse", "kl"}
        How the clip value of each group is chosen.
    percentile : float
        For ``calibration="percentile"``.
    symmetric : bool
        False gives an affine (zero-point) integer quantizer.
    tensor_scale : bool
        A second, FP32 per-tensor scale above the block scales (NVFP4).
    amax : float or tuple of float, optional
        Static clip value(s) (from :func:`calibrate`); None computes them per call.
    name : str
        Recipe name, for reports.

    Examples
    --------
    >>> spec = QuantSpec(format="int8", granularity="channel")
    >>> spec.format.name, spec.granularity
    ('int8', 'channel')
    """

    format: Any
    rounding: str = "nearest_even"
    saturate: bool = True
    granularity: str = "tensor"
    axis: int = -1
    block_size: Any = 32
    scale_format: Any = None
    scale_rule: str = "amax"
    calibration: str = "max"
    percentile: float = 99.99
    symmetric: bool = True
    tensor_scale: bool = False
    amax: Any = None
    name: str = field(default="", compare=False)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "format", _fmt(self.format, "format"))
        if self.scale_format is not None:
            set_(self, "scale_format", _fmt(self.scale_format, "scale_format"))
        from .rounding import check_saturate, rounding_mode

        rounding_mode(self.rounding)
        check_saturate(self.saturate)
        _choice("granularity", self.granularity, GRANULARITIES)
        _choice("scale_rule", self.scale_rule, SCALE_RULES)
        _choice("calibration", self.calibration, CALIBRATIONS)
        if not isinstance(self.axis, (int, np.integer)) or isinstance(self.axis, bool):
            raise TypeError(f"axis must be an int, got {self.axis!r}")
        bs = self.block_size
        if isinstance(bs, (list, tuple)):
            if len(bs) != 2 or not all(isinstance(b, (int, np.integer)) and b > 0 for b in bs):
                raise ValueError(f"block_size must be a positive int or a pair of them, got {bs!r}")
            set_(self, "block_size", tuple(int(b) for b in bs))
        elif not isinstance(bs, (int, np.integer)) or isinstance(bs, bool) or bs < 1:
            raise ValueError(f"block_size must be a positive int or a pair of them, got {bs!r}")
        if not 0 < float(self.percentile) <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.scale_rule != "amax":
            sf = self.scale_format
            if sf is None:
                set_(self, "scale_format", get_format("float8_e8m0fnu"))
            elif not (isinstance(sf, FloatFormat) and sf.mantissa_bits == 0):
                raise ValueError(
                    f"scale_rule={self.scale_rule!r} gives power-of-two scales, which "
                    f"scale_format {sf.name} cannot hold; use float8_e8m0fnu or scale_rule='amax'"
                )
        if not self.symmetric and not isinstance(self.format, IntFormat):
            raise ValueError("symmetric=False (zero points) needs an integer format")
        if self.tensor_scale and self.granularity != "block":
            raise ValueError("tensor_scale=True (two-level scaling) needs granularity='block'")
        if isinstance(self.amax, (list, np.ndarray)):
            set_(self, "amax", tuple(float(a) for a in np.ravel(self.amax)))

    @property
    def is_mx(self) -> bool:
        """A power-of-two (E8M0) block scale: the OCP MX kernels apply."""
        return (self.granularity == "block" and self.scale_rule != "amax"
                and isinstance(self.block_size, int) and not self.tensor_scale)

    def describe(self) -> str:
        """One line: format, groups, scale format and rule."""
        g = self.granularity
        if g == "block":
            g = f"block {self.block_size} along axis {self.axis}"
        elif g != "tensor":
            g = f"{g} (axis {self.axis})"
        sf = self.scale_format.name if self.scale_format is not None else "float32"
        parts = [self.format.name, g, f"scale {sf}/{self.scale_rule}",
                 f"calibration {self.calibration}", self.rounding]
        if self.tensor_scale:
            parts.append("+ fp32 tensor scale")
        if not self.symmetric:
            parts.append("asymmetric")
        return ", ".join(parts)


def _choice(name, value, allowed):
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}{hint}")


# ---- recipes --------------------------------------------------------------
def _mx(elem):
    return dict(format=elem, granularity="block", block_size=32, scale_rule="floor",
                scale_format="float8_e8m0fnu")


RECIPES: dict[str, dict] = {
    # OCP MX v1.0
    **{name: _mx(elem) for name, elem in _blocks.MX_ELEMENTS.items()},
    # NVFP4: E2M1, E4M3 scale per 16, FP32 tensor scale
    "nvfp4": dict(format="float4_e2m1fn", granularity="block", block_size=16,
                  scale_format="float8_e4m3fn", tensor_scale=True),
    # integers
    "int8": dict(format="int8"),
    "int8_channel": dict(format="int8", granularity="channel"),
    "int8_token": dict(format="int8", granularity="token"),
    "int8_asym": dict(format="int8", symmetric=False),
    "uint8_asym": dict(format="uint8", symmetric=False),
    "int4_block32": dict(format="int4", granularity="block", block_size=32),
    # DeepSeek-V3 fine-grained FP8
    "fp8_deepseek_activation": dict(format="float8_e4m3fn", granularity="block",
                                    block_size=128),
    "fp8_deepseek_weight": dict(format="float8_e4m3fn", granularity="block",
                                block_size=(128, 128)),
}


def recipe(name: str, **overrides) -> QuantSpec:
    """The QuantSpec of a named recipe, with keyword overrides.

    Any float format name (``"e4m3fn"``, ``"float8_e5m2"``...) is per-tensor
    amax scaling into that format; :data:`RECIPES` lists the others.

    Examples
    --------
    >>> recipe("mxfp4_e2m1").describe()
    'float4_e2m1fn, block 32 along axis -1, scale float8_e8m0fnu/floor, calibration max, nearest_even'
    """
    if not isinstance(name, str):
        raise TypeError(f"spec must be a QuantSpec or a recipe name, got {type(name).__name__}")
    key = name.strip().lower()
    if key in RECIPES:
        kw = dict(RECIPES[key])
    else:
        try:
            fmt = get_format(key)
        except ValueError:
            allowed = sorted(RECIPES) + ["<any format name>"]
            close = difflib.get_close_matches(key, list(RECIPES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown recipe {name!r}{hint} Recipes: {', '.join(allowed)}") from None
        kw = dict(format=fmt)
    kw.update(overrides)
    kw.setdefault("name", key)
    return QuantSpec(**kw)


def resolve_spec(spec, **overrides) -> QuantSpec:
    """A QuantSpec from a QuantSpec or recipe name, with keyword overrides.

    Examples
    --------
    >>> s = resolve_spec("int8")
    >>> s.name, s.granularity, s.calibration
    ('int8', 'tensor', 'max')
    >>> resolve_spec(s) is s, resolve_spec(s, calibration="percentile").calibration
    (True, 'percentile')
    """
    if isinstance(spec, QuantSpec):
        if not overrides:
            return spec
        fields = {f.name for f in dataclasses.fields(QuantSpec)}
        bad = set(overrides) - fields
        if bad:
            raise TypeError(f"unknown QuantSpec option(s) {sorted(bad)}; allowed: {sorted(fields)}")
        return dataclasses.replace(spec, **overrides)
    fields = {f.name for f in dataclasses.fields(QuantSpec)}
    bad = set(overrides) - fields
    if bad:
        raise TypeError(f"unknown QuantSpec option(s) {sorted(bad)}; allowed: {sorted(fields)}")
    return recipe(spec, **overrides)


# ---- groups ------------------------------------------------------------------
def _as_float(x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        if arr.dtype.kind in "iu" and not isinstance(x, np.ndarray):
            arr = arr.astype(np.float64)
        else:
            raise TypeError(f"x must be a float array, got dtype {arr.dtype}")
    return arr


class _Groups:
    """Reshape x so that each scale group is one row: (groups, elements)."""

    def __init__(self, shape, spec: QuantSpec):
        self.shape = tuple(shape)
        self.spec = spec
        nd = len(shape)
        g = spec.granularity
        if g != "tensor" and nd == 0:
            raise ValueError(f"granularity={g!r} needs an array with at least one dimension")
        if g == "block" and isinstance(spec.block_size, tuple):
            if nd < 2:
                raise ValueError("2-D blocks need an array with at least two dimensions")
            self.kind = "tile"
        else:
            self.kind = g
        if self.kind in ("channel", "token", "block"):
            if not -nd <= spec.axis < nd:
                raise ValueError(f"axis {spec.axis} is out of range for an array of {nd} "
                                 "dimension(s)")
            self.axis = spec.axis % nd

    def split(self, x: np.ndarray) -> np.ndarray:
        """(groups, group_len) array; pads blocks/tiles with zeros."""
        if self.kind == "tensor":
            return x.reshape(1, -1)
        if self.kind in ("channel", "token"):
            m = np.moveaxis(x, self.axis, -1)
            return m.reshape(int(np.prod(m.shape[:-1], dtype=np.int64)), m.shape[-1])
        if self.kind == "block":
            k = self.spec.block_size
            m = np.moveaxis(x, self.axis, -1)
            n = m.shape[-1]
            nb = -(-n // k)
            rows = m.reshape(-1, n)
            buf = np.zeros((rows.shape[0], nb * k), dtype=x.dtype)
            buf[:, :n] = rows
            self.moved_shape = m.shape
            self.nb = nb
            return buf.reshape(-1, k)
        # tiles over the last two axes
        br, bc = self.spec.block_size
        *lead, r, c = x.shape
        nr, nc = -(-r // br), -(-c // bc)
        buf = np.zeros((*lead, nr * br, nc * bc), dtype=x.dtype)
        buf[..., :r, :c] = x
        t = buf.reshape(-1, nr, br, nc, bc).transpose(0, 1, 3, 2, 4)
        self.tile_dims = (nr, nc)
        return t.reshape(-1, br * bc)

    def join(self, g: np.ndarray) -> np.ndarray:
        """Inverse of split (drops padding)."""
        if self.kind == "tensor":
            return g.reshape(self.shape)
        if self.kind in ("channel", "token"):
            moved = list(np.moveaxis(np.empty(self.shape, dtype=np.int8), self.axis, -1).shape)
            return np.moveaxis(g.reshape(moved), -1, self.axis)
        if self.kind == "block":
            n = self.moved_shape[-1]
            rows = g.reshape(-1, self.nb * self.spec.block_size)[:, :n]
            return np.moveaxis(rows.reshape(self.moved_shape), -1, self.axis)
        br, bc = self.spec.block_size
        nr, nc = self.tile_dims
        *lead, r, c = self.shape
        t = g.reshape(-1, nr, nc, br, bc).transpose(0, 1, 3, 2, 4)
        return t.reshape(*lead, nr * br, nc * bc)[..., :r, :c]

    def scale_shape(self) -> tuple:
        """Shape of the per-group scales as stored in a QuantizedTensor."""
        if self.kind == "tensor":
            return ()
        if self.kind in ("channel", "token"):
            s = list(self.shape)
            s[self.axis] = 1
            return tuple(s)
        if self.kind == "block":
            s = list(self.moved_shape[:-1]) + [self.nb]
            return tuple(np.moveaxis(np.empty(s, dtype=np.int8), -1, self.axis).shape)
        *lead, _, _ = self.shape
        return (*lead, *self.tile_dims)

    def scales_out(self, per_group: np.ndarray) -> np.ndarray:
        if self.kind == "tensor":
            return per_group.reshape(())
        if self.kind in ("channel", "token"):
            return per_group.reshape(self.scale_shape())
        if self.kind == "block":
            s = per_group.reshape(tuple(self.moved_shape[:-1]) + (self.nb,))
            return np.moveaxis(s, -1, self.axis)
        return per_group.reshape(self.scale_shape())

    def scales_in(self, stored: np.ndarray) -> np.ndarray:
        """Per-group column (groups, 1) from stored scales."""
        if self.kind == "block":
            return np.moveaxis(stored, self.axis, -1).reshape(-1, 1)
        return np.asarray(stored).reshape(-1, 1)


# ---- clip values (calibration) ------------------------------------------------
def _finite_abs(g: np.ndarray) -> np.ndarray:
    a = np.abs(g.astype(np.float64))
    return np.where(np.isfinite(a), a, 0.0)


def _fake_rows(g: np.ndarray, clip: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Fake-quantize rows of g with per-row clip values (scale = clip / max)."""
    scale = _scale_from_clip(clip, spec)
    y = (g / scale).astype(np.float32)
    q = quantize(y, spec.format, rounding="nearest_even", saturate=True)
    return q.astype(np.float64) * scale


def _mse_clip(g: np.ndarray, spec: QuantSpec, n: int = 100) -> np.ndarray:
    amax = _finite_abs(g).max(axis=1, keepdims=True)
    gf = np.where(np.isfinite(g), g, 0.0).astype(np.float64)
    best = amax.copy()
    best_err = np.full(amax.shape, np.inf)
    for frac in np.linspace(1.0 / n, 1.0, n):
        c = amax * frac
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
    KL(P || Q) wins.
    """
    out = np.empty((g.shape[0], 1))
    for row in range(g.shape[0]):
        a = _finite_abs(g[row:row + 1])[0]
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
            with np.errstate(divide="ignore"):  # q = 0 where p > 0: KL is infinite
                kl = float(np.sum(ps[nz] * np.log(ps[nz] / qs[nz])))
            if kl < best_kl:
                best, best_kl = c, kl
        out[row] = best
    return out


def clip_value(g: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Clip value of each row of ``g`` (groups, n) under ``spec.calibration``.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.array([[1.0, -3.0, 2.0], [0.5, 0.25, -0.125]])
    >>> clip_value(g, recipe("int8")).tolist()  # calibration "max": the row's absmax
    [[3.0], [0.5]]
    """
    cal = spec.calibration
    if cal == "max":
        return _finite_abs(g).max(axis=1, keepdims=True) if g.shape[1] else np.zeros((g.shape[0], 1))
    if cal == "percentile":
        return np.percentile(_finite_abs(g), spec.percentile, axis=1, keepdims=True)
    if cal == "mse":
        return _mse_clip(g, spec)
    return _kl_clip(g, spec)


def _scale_from_clip(clip: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Dequantization scale per group (float32 values, > 0, finite)."""
    fmax = spec.format.max
    clip = np.asarray(clip, dtype=np.float64)
    safe = np.where((clip > 0) & np.isfinite(clip), clip, fmax)
    if spec.scale_rule != "amax":
        es = _blocks.scale_exponent(safe.astype(np.float32), spec.format,
                                    scale_rule=spec.scale_rule).reshape(clip.shape)
        scale = np.ldexp(1.0, es)
    else:
        scale = safe / fmax
        if spec.scale_format is not None:
            # round the scale up so clip / scale stays within range
            sq = quantize(scale.astype(np.float32), spec.scale_format, rounding="toward_positive",
                          saturate=True).astype(np.float64)
            scale = np.where(sq > 0, sq, spec.scale_format.smallest_subnormal)
    scale = np.where(clip > 0, scale, 1.0)
    return scale.astype(np.float32).astype(np.float64)


# ---- the quantized tensor ------------------------------------------------------
@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """Codes and scales of a quantized tensor.

    Attributes
    ----------
    codes : ndarray
        Element codes (shape of the input); integer values for int formats.
    scales : ndarray of float32
        Dequantization multipliers per group (``()`` for one per tensor).
    zero_points : ndarray or None
        Per-group zero points of an affine integer quantizer.
    spec : QuantSpec
    shape : tuple
    tensor_scale : float
        FP32 per-tensor scale of two-level recipes (NVFP4), else 1.
    scale_codes : ndarray or None
        The scales' own codes when they are stored in a small format.

    Examples
    --------
    >>> import numpy as np
    >>> qt = quantize_tensor(np.array([0.5, -1.0, 2.0, 4.0], np.float32), "int8")
    >>> qt.shape, qt.nbytes, qt.zero_points is None
    ((4,), 8, True)
    >>> qt.dequantize(np.float64).round(3).tolist()
    [0.504, -1.008, 2.016, 4.0]
    """

    codes: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    spec: QuantSpec
    shape: tuple
    tensor_scale: float = 1.0
    scale_codes: np.ndarray | None = None

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        """The values the codes stand for, in ``dtype``."""
        spec = self.spec
        elems = decode(self.codes, spec.format, dtype=np.float64)
        groups = _Groups(self.shape, spec)
        if groups.kind in ("block", "tile"):
            groups.split(np.zeros(self.shape, dtype=np.float32))  # sets padding info
        e = groups.split(elems)
        s = groups.scales_in(self.scales).astype(np.float32)
        if self.tensor_scale != 1.0:  # two-level: the scales multiply in float32 first
            s = s * np.float32(self.tensor_scale)
        s = s.astype(np.float64)
        if self.zero_points is not None:
            z = groups.scales_in(self.zero_points).astype(np.float64)
            e = e - z
        return groups.join(e * s).astype(dtype)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Storage in bytes: packed elements + scales (+ zero points, tensor scale)."""
        bits = self.size * self.spec.format.bits
        n_scales = int(np.size(self.scales))
        sbits = self.spec.scale_format.bits if self.spec.scale_format is not None else 32
        bits += n_scales * sbits
        if self.zero_points is not None:
            bits += int(np.size(self.zero_points)) * self.spec.format.bits
        if self.spec.tensor_scale:
            bits += 32
        return -(-bits // 8)

    @property
    def bits_per_value(self) -> float:
        """Average storage bits per element, scales included."""
        return 8.0 * self.nbytes / self.size if self.size else float("nan")

    def __repr__(self) -> str:
        return (f"QuantizedTensor(shape={self.shape}, spec={self.spec.describe()!r}, "
                f"bits_per_value={self.bits_per_value:.3f})")


# ---- entry points ----------------------------------------------------------
def _static_clip(spec: QuantSpec, n_groups: int):
    a = np.asarray(spec.amax, dtype=np.float64).reshape(-1, 1)
    if a.shape[0] == 1:
        a = np.repeat(a, n_groups, axis=0)
    if a.shape[0] != n_groups:
        raise ValueError(f"spec.amax has {a.shape[0]} values but x has {n_groups} scale groups")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError("spec.amax must be finite and >= 0")
    return a


def _quantize_groups(x: np.ndarray, spec: QuantSpec, rng):
    """(codes, scales, zero_points, groups) for non-MX, non-NVFP4 specs."""
    groups = _Groups(x.shape, spec)
    g = groups.split(x)
    fmt = spec.format
    if spec.amax is not None:
        clip = _static_clip(spec, g.shape[0])
    elif not spec.symmetric:
        clip = None
    else:
        clip = clip_value(g, spec)
    zp = None
    if spec.symmetric:
        scale = _scale_from_clip(clip, spec)
        with np.errstate(over="ignore", invalid="ignore"):
            y = (g.astype(np.float32) / scale.astype(np.float32)).astype(np.float32)
        codes = encode(y, fmt, rounding=spec.rounding, saturate=spec.saturate, rng=rng)
    else:
        gf = np.where(np.isfinite(g), g, 0.0).astype(np.float64)
        lo = np.minimum(gf.min(axis=1, keepdims=True), 0.0) if gf.shape[1] else np.zeros((g.shape[0], 1))
        hi = np.maximum(gf.max(axis=1, keepdims=True), 0.0) if gf.shape[1] else np.zeros((g.shape[0], 1))
        qmin, qmax = fmt.min_int, fmt.max_int
        scale = np.where(hi > lo, (hi - lo) / (qmax - qmin), 1.0).astype(np.float32).astype(np.float64)
        zp = np.clip(np.rint(qmin - lo / scale), qmin, qmax)
        with np.errstate(over="ignore", invalid="ignore"):
            y = (g / scale + zp).astype(np.float32)
        codes = encode(y, fmt, rounding=spec.rounding, saturate=True, rng=rng)
    return codes, scale, zp, groups


def quantize_tensor(x, spec, *, rng=None, **overrides) -> QuantizedTensor:
    """Quantize x with scales: the codes, scales and zero points.

    Parameters
    ----------
    x : array_like of float
    spec : QuantSpec or str
        A QuantSpec or a recipe name (``"mxfp8_e4m3"``, ``"nvfp4"``, ``"int8"``,
        ``"e4m3fn"``...).
    rng : seed or numpy.random.Generator
        For stochastic rounding.
    **overrides
        QuantSpec fields to change, e.g. ``axis=0``, ``block_size=16``,
        ``scale_rule="rceil"``, ``granularity="channel"``, ``calibration="mse"``.

    Returns
    -------
    QuantizedTensor

    Raises
    ------
    ValueError, TypeError
        Unknown recipe or option, bad axis, non-float input.

    Examples
    --------
    >>> import numpy as np, fpsim
    >>> qt = fpsim.quantize_tensor(np.array([0.5, -1.0, 2.0, 4.0], np.float32), "int8")
    >>> qt.codes.tolist(), float(qt.scales)
    ([16, -32, 64, 127], 0.031496062874794006)
    """
    spec = resolve_spec(spec, **overrides)
    x = _as_float(x)
    if spec.is_mx:
        if spec.amax is not None:
            raise ValueError("static amax is not supported for MX block scales (they are per block)")
        codes, scale_codes = _blocks.mx_encode(
            x, spec.format, axis=spec.axis, block_size=spec.block_size,
            scale_rule=spec.scale_rule, rounding=spec.rounding, rng=rng)
        with np.errstate(invalid="ignore"):
            scales = decode(scale_codes, "float8_e8m0fnu")
        return QuantizedTensor(codes=codes, scales=scales, zero_points=None, spec=spec,
                               shape=x.shape, scale_codes=scale_codes)
    if spec.tensor_scale:
        amax = None if spec.amax is None else float(np.max(spec.amax))
        _, codes, block_codes, s_t = _blocks.nvfp4_encode(
            x, axis=spec.axis, block_size=spec.block_size, rounding=spec.rounding, rng=rng,
            tensor_amax=amax) if spec.format.name == "float4_e2m1fn" and \
            spec.scale_format is not None and spec.scale_format.name == "float8_e4m3fn" \
            else _unsupported_two_level(spec)
        scales = decode(block_codes, spec.scale_format)
        return QuantizedTensor(codes=codes, scales=scales, zero_points=None, spec=spec,
                               shape=x.shape, tensor_scale=float(s_t), scale_codes=block_codes)
    codes, scale, zp, groups = _quantize_groups(x, spec, rng)
    scales = groups.scales_out(scale.astype(np.float32))
    zps = None if zp is None else groups.scales_out(zp.astype(np.int32))
    scale_codes = None
    if spec.scale_format is not None:
        scale_codes = encode(scales.astype(np.float32), spec.scale_format, saturate=True)
    return QuantizedTensor(codes=groups.join(codes), scales=scales, zero_points=zps, spec=spec,
                           shape=x.shape, scale_codes=scale_codes)


def _unsupported_two_level(spec):
    raise ValueError("tensor_scale=True is implemented for NVFP4 (float4_e2m1fn elements with "
                     f"float8_e4m3fn block scales); got {spec.format.name} / "
                     f"{getattr(spec.scale_format, 'name', None)}")


def fake_quantize(x, spec, *, rng=None, **overrides) -> np.ndarray:
    """x quantized with scales and dequantized again, in x's float dtype.

    Same arguments as :func:`quantize_tensor`; MX specs run one fused kernel.

    Examples
    --------
    >>> import numpy as np, fpsim
    >>> fpsim.fake_quantize(np.array([1.0, 2.0, 300.0, 1000.0], np.float32), "mxfp8_e4m3",
    ...                     block_size=4).tolist()
    [1.0, 2.0, 288.0, 896.0]
    """
    spec = resolve_spec(spec, **overrides)
    x = _as_float(x)
    dtype = x.dtype
    if spec.is_mx and spec.amax is None:
        v, _ = _blocks.mx_fake_quantize(x, spec.format, axis=spec.axis,
                                        block_size=spec.block_size,
                                        scale_rule=spec.scale_rule, rounding=spec.rounding,
                                        rng=rng)
        return v.astype(dtype, copy=False)
    if spec.tensor_scale:
        return quantize_tensor(x, spec, rng=rng).dequantize(dtype)
    fast = _fast_fake_quantize(x, spec, rng)
    if fast is not None:
        return fast
    if spec.symmetric:
        groups = _Groups(x.shape, spec)
        g = groups.split(x)
        clip = _static_clip(spec, g.shape[0]) if spec.amax is not None else clip_value(g, spec)
        scale = _scale_from_clip(clip, spec).astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            y = (g.astype(np.float32) / scale).astype(np.float32)
        q = quantize(y, spec.format, rounding=spec.rounding, saturate=spec.saturate, rng=rng)
        return groups.join(q * scale).astype(dtype, copy=False)
    return quantize_tensor(x, spec, rng=rng).dequantize(dtype)


def _fast_fake_quantize(x: np.ndarray, spec: QuantSpec, rng):
    """The fused kernel for the common case (float32, dynamic max scaling per tensor
    or per vector along the last axis, a table-exact format); None if it does not apply."""
    from ._kernels import _util
    from ._kernels import lut as klut
    from .codec import _hi16_ok, _hi16_table, _mode_for

    if (x.dtype != np.float32 or x.ndim == 0 or x.size == 0 or not spec.symmetric
            or spec.calibration != "max" or spec.amax is not None
            or spec.scale_rule != "amax" or spec.scale_format is not None
            or spec.rounding == "stochastic" or not _hi16_ok(spec.format)):
        return None
    g = spec.granularity
    if g == "tensor":
        per_row = False
    elif g in ("channel", "token") and spec.axis % x.ndim == x.ndim - 1:
        per_row = True
    else:
        return None
    x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1]) if per_row else \
        np.ascontiguousarray(x).reshape(1, -1)
    out = np.empty_like(x2)
    table = _hi16_table(spec.format, _mode_for(spec.format, spec.rounding), spec.saturate,
                        np.dtype(np.float32))
    fmax = float(spec.format.max)
    if per_row and x2.size >= _util.PARALLEL_THRESHOLD and x2.shape[0] > 1:
        klut.fake_quant_rows_parallel(x2, out, table, fmax)
    else:
        klut.fake_quant_rows(x2, out, table, fmax, per_row)
    return out.reshape(x.shape)


def calibrate(data, spec, **overrides) -> QuantSpec:
    """A static spec: the clip values of ``spec``'s calibration, measured on ``data``.

    ``data`` is one array or a list of arrays with the same scale groups (the
    clip value of each group is the largest over the arrays); the result
    carries ``amax`` (one value per group) and uses it on every later call.

    Raises
    ------
    ValueError
        If data has no finite values.

    Examples
    --------
    >>> import numpy as np, fpsim
    >>> s = fpsim.calibrate(np.array([1.0, -3.0, 2.0]), "int8")
    >>> s.amax
    (3.0,)
    """
    spec = resolve_spec(spec, **overrides)
    if spec.is_mx or spec.tensor_scale:
        raise ValueError("block-scaled recipes compute their scales per block; nothing to calibrate")
    arrays = list(data) if isinstance(data, (list, tuple)) and data and isinstance(
        data[0], np.ndarray) else [data]
    clips = []
    for arr in arrays:
        arr = _as_float(arr)
        if not np.isfinite(arr).any():
            raise ValueError("calibration data has no finite values")
        clips.append(clip_value(_Groups(arr.shape, spec).split(arr), spec).ravel())
    if len({c.size for c in clips}) != 1:
        raise ValueError("calibration arrays must give the same number of scale groups")
    amax = tuple(float(v) for v in np.max(np.stack(clips), axis=0))
    return dataclasses.replace(spec, amax=amax)


class DelayedScaling:
    """Transformer Engine style delayed scaling over a sequence of tensors.

    The scale used at step t comes from the amax history of the steps before
    it (initially 1, as in TE); each call then records the tensor's amax.

    Parameters
    ----------
    spec : QuantSpec or str
        Per-tensor spec (default ``"float8_e4m3fn"``).
    history_len : int
        Length of the amax history.
    algo : {"max", "most_recent"}
    margin : int
        The scale leaves ``2**margin`` headroom: ``scale = amax * 2**margin / max``.

    Examples
    --------
    >>> import numpy as np
    >>> ds = DelayedScaling("e4m3fn", history_len=4)
    >>> _ = ds(np.array([1.0, 896.0], np.float32))  # scale 1 at step 0: 896 saturates
    >>> float(ds.scale)  # next step: 896 / 448
    2.0
    """

    def __init__(self, spec="float8_e4m3fn", *, history_len: int = 1024, algo: str = "max",
                 margin: int = 0):
        self.spec = resolve_spec(spec)
        if self.spec.granularity != "tensor":
            raise ValueError("DelayedScaling needs a per-tensor spec")
        if not isinstance(history_len, int) or history_len < 1:
            raise ValueError(f"history_len must be a positive int, got {history_len!r}")
        _choice("algo", algo, ("max", "most_recent"))
        if not isinstance(margin, int):
            raise TypeError(f"margin must be an int, got {margin!r}")
        self.history_len, self.algo, self.margin = history_len, algo, margin
        self.amax_history: list[float] = []
        self.scale = np.float32(1.0)
        self.overflows = 0

    def __call__(self, x) -> np.ndarray:
        x = _as_float(x)
        finite = np.abs(x[np.isfinite(x)])
        amax = float(finite.max()) if finite.size else 0.0
        y = (x.astype(np.float32) / self.scale).astype(np.float32)
        self.overflows += int(np.count_nonzero(np.abs(y) > self.spec.format.max))
        q = quantize(y, self.spec.format, rounding=self.spec.rounding,
                     saturate=self.spec.saturate)
        out = (q * self.scale).astype(x.dtype, copy=False)
        self.amax_history = (self.amax_history + [amax])[-self.history_len:]
        ref = max(self.amax_history) if self.algo == "max" else self.amax_history[-1]
        if ref > 0:
            self.scale = np.float32(ref * 2.0**self.margin / self.spec.format.max)
        return out
