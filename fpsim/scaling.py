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
  values (a group with none gets scale 1); NaN stays NaN element by element
  (``QuantizedTensor.nan_mask`` keeps it for formats without NaN) and +-Inf
  saturates to the group's range.  float64 input beyond float32's range
  saturates to +-FLT_MAX; a tiny clip value gives a scale of at least 2**-149.
* Affine (``symmetric=False``) integer recipes take ``max`` or ``percentile``
  calibration; :func:`calibrate` gives them a static range (``amin``, ``amax``).
* The work is done in chunks of groups: peak memory stays within a few times
  the input's size.
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
        For an affine (``symmetric=False``) spec, the high end(s) of the range.
    name : str
        Recipe name, for reports.
    amin : float or tuple of float, optional
        Static low end(s) (<= 0) of an affine range, with ``amax``; from
        :func:`calibrate`.  An affine spec with ``amax`` but no ``amin`` uses
        ``[-amax, amax]``.

    Raises
    ------
    TypeError
        A field of the wrong type (``symmetric="False"``, ``block_size=32.0``...).
    ValueError
        A field value outside what is allowed.

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
    amin: Any = None

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "format", _fmt(self.format, "format"))
        if self.scale_format is not None:
            sf = _fmt(self.scale_format, "scale_format")
            if not isinstance(sf, FloatFormat):
                raise ValueError(f"scale_format must be None or a float format (float32 scales "
                                 f"when None), e.g. 'float8_e8m0fnu', 'float8_e4m3fn', "
                                 f"'bfloat16'; got {sf.name!r}")
            set_(self, "scale_format", sf)
        from .rounding import check_saturate, rounding_mode

        rounding_mode(self.rounding)
        check_saturate(self.saturate)
        set_(self, "saturate", bool(self.saturate))
        for name in ("symmetric", "tensor_scale"):
            v = getattr(self, name)
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {v!r}")
            set_(self, name, bool(v))
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {self.name!r}")
        _choice("granularity", self.granularity, GRANULARITIES)
        _choice("scale_rule", self.scale_rule, SCALE_RULES)
        _choice("calibration", self.calibration, CALIBRATIONS)
        set_(self, "axis", _blocks.check_int(self.axis, "axis"))
        bs = self.block_size
        if isinstance(bs, (list, tuple)):
            if len(bs) != 2:
                raise ValueError(f"block_size must be a positive int or a pair of them, got {bs!r}")
            set_(self, "block_size", tuple(_blocks.check_int(b, "block_size", minimum=1)
                                           for b in bs))
        else:
            set_(self, "block_size", _blocks.check_int(bs, "block_size", minimum=1))
        p = self.percentile
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer,
                                                                 np.floating)):
            raise TypeError(f"percentile must be a real number in (0, 100], got {p!r}")
        if not 0 < float(p) <= 100:  # also refuses NaN
            raise ValueError(f"percentile must be in (0, 100], got {p!r}")
        set_(self, "percentile", float(p))
        if self.scale_rule != "amax":
            sf = self.scale_format
            if sf is None:
                set_(self, "scale_format", get_format("float8_e8m0fnu"))
            elif sf.mantissa_bits != 0:
                raise ValueError(
                    f"scale_rule={self.scale_rule!r} gives power-of-two scales, which "
                    f"scale_format {sf.name} cannot hold; use float8_e8m0fnu or scale_rule='amax'"
                )
        if not self.symmetric and not isinstance(self.format, IntFormat):
            raise ValueError("symmetric=False (zero points) needs an integer format")
        if not self.symmetric and self.calibration not in ("max", "percentile"):
            raise ValueError(f"calibration={self.calibration!r} is not available with "
                             "symmetric=False; asymmetric recipes take 'max' or 'percentile'")
        if self.tensor_scale and self.granularity != "block":
            raise ValueError("tensor_scale=True (two-level scaling) needs granularity='block'")
        set_(self, "amax", _range_values(self.amax, "amax", 1))
        set_(self, "amin", _range_values(self.amin, "amin", -1))
        if self.amin is not None:
            if self.symmetric:
                raise ValueError("amin (the static low end of an affine range) needs "
                                 f"symmetric=False, got amin={self.amin!r}")
            if self.amax is None or np.size(self.amin) != np.size(self.amax):
                raise ValueError("amin needs amax with the same number of values, got "
                                 f"amin={self.amin!r}, amax={self.amax!r}")

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


def _range_values(v, name, sign):
    """Static range values: None, a number or a sequence of numbers, finite, sign * v >= 0."""
    if v is None:
        return None
    scalar = np.ndim(v) == 0
    items = [v] if scalar else list(np.ravel(np.asarray(v, dtype=object)))
    for a in items:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, float, np.integer,
                                                                 np.floating)):
            raise TypeError(f"{name} must be a real number or a sequence of them, got {v!r}")
    vals = [float(a) for a in items]
    bound = ">= 0" if sign > 0 else "<= 0"
    if not all(np.isfinite(a) and sign * a >= 0 for a in vals):
        raise ValueError(f"{name} must be finite and {bound}, got {v!r}")
    return vals[0] if scalar else tuple(vals)


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
_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).smallest_subnormal)


def _as_float(x) -> np.ndarray:
    if isinstance(x, np.ma.MaskedArray):
        _blocks.check_array(x)  # raises: masked arrays are refused
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        if arr.dtype.kind in "iu" and not isinstance(x, np.ndarray):
            arr = arr.astype(np.float64)
        else:
            raise TypeError(f"x must be a float array, got dtype {arr.dtype}")
    return arr


def _prod(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


class _Groups:
    """The scale groups of an array of ``shape``: each group is one row of a 2-D
    (groups, elements) layout.  :meth:`bands` walks that layout in chunks of rows
    (padding blocks and tiles with zeros) and :meth:`put` writes a chunk's results
    back, so that no full-size temporary is needed."""

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
        self.axis = None
        if self.kind in ("channel", "token", "block"):
            self.axis = _blocks.check_axis(spec.axis, nd)
            moved = list(self.shape)
            moved.append(moved.pop(self.axis))
            self.moved_shape = tuple(moved)
            self.rows, self.n = _prod(moved[:-1]), moved[-1]
        if self.kind == "tensor":
            self.n_groups = 1
        elif self.kind in ("channel", "token"):
            self.n_groups = self.rows
        elif self.kind == "block":
            self.nb = -(-self.n // spec.block_size)
            self.n_groups = self.rows * self.nb
        else:
            br, bc = spec.block_size
            *lead, r, c = self.shape
            self.lead = _prod(lead)
            self.tile_dims = (-(-r // br), -(-c // bc))
            self.n_groups = self.lead * self.tile_dims[0] * self.tile_dims[1]

    # -- whole-array layout (calibration, stochastic rounding) --
    def split(self, x: np.ndarray) -> np.ndarray:
        """(groups, group_len) array; pads blocks/tiles with zeros."""
        if self.kind == "tensor":
            return x.reshape(1, -1)
        if self.kind in ("channel", "token"):
            return np.moveaxis(x, self.axis, -1).reshape(self.rows, self.n)
        if self.kind == "block":
            k = self.spec.block_size
            buf = np.zeros((self.rows, self.nb * k), dtype=x.dtype)
            buf[:, :self.n] = np.moveaxis(x, self.axis, -1).reshape(self.rows, self.n)
            return buf.reshape(self.n_groups, k)
        br, bc = self.spec.block_size
        nr, nc = self.tile_dims
        *lead, r, c = x.shape
        buf = np.zeros((*lead, nr * br, nc * bc), dtype=x.dtype)
        buf[..., :r, :c] = x
        t = buf.reshape(self.lead, nr, br, nc, bc).transpose(0, 1, 3, 2, 4)
        return t.reshape(self.n_groups, br * bc)

    def join(self, g: np.ndarray) -> np.ndarray:
        """Inverse of split (drops padding)."""
        if self.kind == "tensor":
            return g.reshape(self.shape)
        if self.kind in ("channel", "token"):
            return np.moveaxis(g.reshape(self.moved_shape), -1, self.axis)
        if self.kind == "block":
            rows = g.reshape(self.rows, self.nb * self.spec.block_size)[:, :self.n]
            return np.moveaxis(rows.reshape(self.moved_shape), -1, self.axis)
        br, bc = self.spec.block_size
        nr, nc = self.tile_dims
        *lead, r, c = self.shape
        t = g.reshape(self.lead, nr, nc, br, bc).transpose(0, 1, 3, 2, 4)
        return t.reshape(*lead, nr * br, nc * bc)[..., :r, :c]

    # -- chunked layout --
    def new_out(self, dtype) -> np.ndarray:
        """An output array that :meth:`put` fills (axis moved last for vectors/blocks)."""
        if self.kind in ("channel", "token", "block"):
            return np.empty(self.moved_shape, dtype=dtype)
        return np.empty(self.shape, dtype=dtype)

    def finish(self, out: np.ndarray) -> np.ndarray:
        """The filled output of :meth:`new_out` in the input's layout."""
        if self.kind in ("channel", "token", "block"):
            return np.moveaxis(out, -1, self.axis)
        return out

    def bands(self, x: np.ndarray, *, whole: bool = False):
        """Yield ``(group_slice, band, key)``: ``band`` holds whole groups as rows
        (``whole=True``: one band, the full :meth:`split` layout)."""
        if whole:
            yield slice(0, self.n_groups), self.split(x), None
            return
        chunk = _blocks.CHUNK
        if self.kind == "tensor":
            flat = x.reshape(-1)
            if flat.size == 0:
                yield slice(0, 1), flat.reshape(1, 0), slice(0, 0)
            for c0 in range(0, flat.size, chunk):
                cs = slice(c0, min(flat.size, c0 + chunk))
                yield slice(0, 1), flat[cs].reshape(1, -1), cs
        elif self.kind in ("channel", "token", "block"):
            m2 = np.moveaxis(x, self.axis, -1).reshape(self.rows, self.n)
            if self.kind != "block":
                for rs in _blocks.row_chunks(self.rows, self.n):
                    yield rs, m2[rs], rs
                return
            k, nb = self.spec.block_size, self.nb
            for rs in _blocks.row_chunks(self.rows, nb * k):
                sub = m2[rs]
                if self.n != nb * k:
                    pad = np.zeros((sub.shape[0], nb * k), dtype=x.dtype)
                    pad[:, :self.n] = sub
                    sub = pad
                yield slice(rs.start * nb, rs.stop * nb), sub.reshape(-1, k), rs
        else:
            br, bc = self.spec.block_size
            nr, nc = self.tile_dims
            *_, r, c = self.shape
            x3 = x.reshape(self.lead, r, c)
            for lead in range(self.lead):
                for i in range(nr):
                    rsl = slice(i * br, min(r, (i + 1) * br))
                    pad = np.zeros((br, nc * bc), dtype=x.dtype)
                    pad[:rsl.stop - rsl.start, :c] = x3[lead, rsl, :]
                    band = pad.reshape(br, nc, bc).transpose(1, 0, 2).reshape(nc, br * bc)
                    g0 = (lead * nr + i) * nc
                    yield slice(g0, g0 + nc), band, (lead, rsl)

    def put(self, out: np.ndarray, key, vals: np.ndarray) -> None:
        """Write a band's results (rows = groups) into ``out`` from :meth:`new_out`."""
        if key is None:  # whole layout
            j = self.join(vals)
            out[...] = np.moveaxis(j, self.axis, -1) if self.axis is not None else j
        elif self.kind == "tensor":
            out.reshape(-1)[key] = vals.reshape(-1)
        elif self.kind in ("channel", "token"):
            out.reshape(self.rows, self.n)[key] = vals
        elif self.kind == "block":
            rows = key.stop - key.start
            out.reshape(self.rows, self.n)[key] = vals.reshape(rows, -1)[:, :self.n]
        else:
            br, bc = self.spec.block_size
            nr, nc = self.tile_dims
            *_, r, c = self.shape
            lead, rsl = key
            t = vals.reshape(nc, br, bc).transpose(1, 0, 2).reshape(br, nc * bc)
            out.reshape(self.lead, r, c)[lead, rsl, :] = t[:rsl.stop - rsl.start, :c]

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


def _band_absmax(band: np.ndarray) -> np.ndarray:
    """Largest finite |value| of each row (0 for none), float64."""
    if band.shape[1] == 0:
        return np.zeros(band.shape[0])
    a = np.abs(band)
    a[~(a < np.inf)] = 0  # NaN and Inf never set a scale
    return a.max(axis=1).astype(np.float64)


def _band_minmax(band: np.ndarray):
    """(min, max) of each row's finite values, widened to include 0, float64."""
    if band.shape[1] == 0:
        z = np.zeros(band.shape[0])
        return z, z.copy()
    fin = np.isfinite(band)
    lo = np.where(fin, band, 0).min(axis=1).astype(np.float64)
    hi = np.where(fin, band, 0).max(axis=1).astype(np.float64)
    return np.minimum(lo, 0.0), np.maximum(hi, 0.0)


def _finite_rows(g: np.ndarray):
    """Each row's finite values as float64 (an iterator)."""
    for row in g:
        yield row[np.isfinite(row)].astype(np.float64)


def _fake_rows(g: np.ndarray, clip: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Fake-quantize rows of g with per-row clip values (scale = clip / max)."""
    scale = _scale_from_clip(clip, spec)
    with np.errstate(over="ignore"):
        y = (g / scale).astype(np.float32)
    q = quantize(y, spec.format, rounding="nearest_even", saturate=True)
    return q.astype(np.float64) * scale


def _mse_clip(g: np.ndarray, spec: QuantSpec, n: int = 100) -> np.ndarray:
    amax = np.minimum(_finite_abs(g).max(axis=1, keepdims=True), _F32_MAX) if g.shape[1] \
        else np.zeros((g.shape[0], 1))
    gf = np.clip(np.where(np.isfinite(g), g, 0.0).astype(np.float64), -_F32_MAX, _F32_MAX)
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
    for row, v in enumerate(_finite_rows(g)):
        a = np.minimum(np.abs(v), _F32_MAX)
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


def _percentile_rows(g: np.ndarray, q: float) -> np.ndarray:
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
    >>> clip_value(g, recipe("int8")).tolist()  # calibration "max": the row's absmax
    [[3.0], [0.5]]
    """
    g = np.asarray(g)
    cal = spec.calibration
    if cal == "max":
        out = np.zeros((g.shape[0], 1))
        for rs in _blocks.row_chunks(g.shape[0], g.shape[1]):
            out[rs, 0] = _band_absmax(g[rs])
        return out
    if cal == "percentile":
        return _percentile_rows([np.abs(v) for v in _finite_rows(g)], spec.percentile)
    if g.shape[0] == 0:
        return np.zeros((0, 1))
    if cal == "mse":
        return _mse_clip(g, spec)
    return _kl_clip(g, spec)


def _scale_from_clip(clip: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Dequantization scale per group (float32 values, > 0, finite, and
    ``scale * max_elem`` within float32's range)."""
    fmax = spec.format.max
    clip = np.minimum(np.asarray(clip, dtype=np.float64), _F32_MAX)
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
    scale = np.maximum(scale, _F32_TINY)  # a tiny amax: the smallest float32, never 0
    over = scale * fmax > _F32_MAX  # the top element must dequantize to a finite float32
    if over.any():
        down = (scale * (1.0 - 2.0**-23)).astype(np.float32).astype(np.float64)
        if spec.scale_format is not None:
            down = quantize(down.astype(np.float32), spec.scale_format, rounding="toward_zero",
                            saturate=True).astype(np.float64)
        scale = np.where(over, down, scale)
    return scale


def _asym_range(x: np.ndarray, groups: _Groups, spec: QuantSpec):
    """(lo, hi) per group, (groups, 1) float64, lo <= 0 <= hi, within float32's range."""
    if spec.amax is not None:
        hi = _static_clip(spec, groups.n_groups)
        lo = -hi if spec.amin is None else _static_clip(spec, groups.n_groups, "amin")
    elif spec.calibration == "percentile":
        g = groups.split(x)
        rows = list(_finite_rows(g))
        lo = np.minimum(_percentile_rows(rows, 100.0 - spec.percentile), 0.0)
        hi = np.maximum(_percentile_rows(rows, spec.percentile), 0.0)
    else:
        lo = np.zeros((groups.n_groups, 1))
        hi = np.zeros((groups.n_groups, 1))
        for gs, band, _ in groups.bands(x):
            bl, bh = _band_minmax(band)
            lo[gs, 0] = np.minimum(lo[gs, 0], bl)
            hi[gs, 0] = np.maximum(hi[gs, 0], bh)
    return np.maximum(lo, -_F32_MAX), np.minimum(hi, _F32_MAX)


def _affine(lo: np.ndarray, hi: np.ndarray, fmt):
    """(scale, zero point) of an affine integer quantizer for the range [lo, hi]."""
    qmin, qmax = fmt.min_int, fmt.max_int
    scale = np.where(hi > lo, (hi - lo) / (qmax - qmin), 1.0).astype(np.float32)
    scale = np.maximum(scale.astype(np.float64), _F32_TINY)
    zp = np.clip(np.rint(qmin - lo / scale), qmin, qmax)
    return scale, zp


def _group_scales(x: np.ndarray, groups: _Groups, spec: QuantSpec):
    """(scale, zero point or None) per group, each (groups, 1) float64."""
    if not spec.symmetric:
        return _affine(*_asym_range(x, groups, spec), spec.format)
    clip = _static_clip(spec, groups.n_groups) if spec.amax is not None else \
        _group_clip(x, groups, spec)
    return _scale_from_clip(clip, spec), None


def _encode_band(band, spec: QuantSpec, scale, zp, rng, *, values: bool):
    """Codes (or dequantized values) of a band of groups with per-row scales."""
    fmt = spec.format
    with np.errstate(over="ignore", invalid="ignore"):
        if zp is None:
            s32 = scale.astype(np.float32)
            y = (_blocks.to_float32(band) / s32).astype(np.float32)
            if values:
                q = quantize(y, fmt, rounding=spec.rounding, saturate=spec.saturate, rng=rng)
                v = q * s32
            else:
                return encode(y, fmt, rounding=spec.rounding, saturate=spec.saturate, rng=rng)
        else:
            y = (band / scale + zp).astype(np.float32)
            codes = encode(y, fmt, rounding=spec.rounding, saturate=True, rng=rng)
            if not values:
                return codes
            v = _clip_to(((decode(codes, fmt, dtype=np.float64) - zp) * scale), band.dtype)
    v[np.isnan(band)] = np.nan  # NaN stays NaN, whatever the element format
    return v


def _run_groups(x: np.ndarray, spec: QuantSpec, rng, *, values: bool):
    """Chunked quantization of the non-MX, non-NVFP4 specs: (result, scale, zp, groups),
    where result is the dequantized values (``values=True``) or the codes."""
    groups = _Groups(x.shape, spec)
    scale, zp = _group_scales(x, groups, spec)
    whole = spec.rounding == "stochastic"  # the random bits follow the element index
    dtype = x.dtype if values else spec.format.code_dtype
    out = groups.new_out(dtype)
    for gs, band, key in groups.bands(x, whole=whole):
        r = _encode_band(band, spec, scale[gs], None if zp is None else zp[gs], rng,
                         values=values)
        groups.put(out, key, r)
    return groups.finish(out), scale, zp, groups


def _clip_to(v: np.ndarray, dtype) -> np.ndarray:
    """v (float64) clipped to dtype's finite range (an affine range's far end can
    exceed it by a rounding): dequantized values are never Inf."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.itemsize < 8:
        m = float(np.finfo(dtype).max)
        np.clip(v, -m, m, out=v)
    return v


def _nan_mask(x: np.ndarray, fmt):
    """Where x is NaN, for element formats that cannot hold NaN (else None)."""
    if isinstance(fmt, FloatFormat) and fmt.has_nan:
        return None
    m = np.isnan(x)
    return m if m.any() else None


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
    nan_mask : ndarray of bool or None
        Where the input was NaN, for element formats that cannot hold NaN
        (integers, FP6, FP4); :meth:`dequantize` gives NaN there.  Not counted in
        :attr:`nbytes` (it stands for the NaN a real kernel would propagate).

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
    nan_mask: np.ndarray | None = None

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        """The values the codes stand for, in ``dtype`` (computed in chunks)."""
        spec = self.spec
        groups = _Groups(self.shape, spec)
        s = groups.scales_in(self.scales).astype(np.float32)
        if self.tensor_scale != 1.0:  # two-level: the scales multiply in float32 first
            s = s * np.float32(self.tensor_scale)
        s = s.astype(np.float64)
        z = None if self.zero_points is None else \
            groups.scales_in(self.zero_points).astype(np.float64)
        out = groups.new_out(dtype)
        with np.errstate(over="ignore"):
            for gs, band, key in groups.bands(np.asarray(self.codes)):
                e = decode(band, spec.format, dtype=np.float64)
                if z is not None:
                    e -= z[gs]
                e *= s[gs]
                groups.put(out, key, _clip_to(e, out.dtype))
        out = groups.finish(out)
        if self.nan_mask is not None:
            out[self.nan_mask] = np.nan
        return out

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
def _static_clip(spec: QuantSpec, n_groups: int, name: str = "amax"):
    vals = getattr(spec, name)
    a = np.abs(np.asarray(vals, dtype=np.float64).reshape(-1, 1))
    if a.shape[0] == 1:
        a = np.repeat(a, n_groups, axis=0)
    if a.shape[0] != n_groups:
        raise ValueError(f"spec.{name} has {a.shape[0]} values but x has {n_groups} scale groups")
    return a if name == "amax" else -a


def _quantize_groups(x: np.ndarray, spec: QuantSpec, rng):
    """(codes, scales, zero_points, groups) for non-MX, non-NVFP4 specs."""
    codes, scale, zp, groups = _run_groups(x, spec, rng, values=False)
    return codes, scale, zp, groups


def _prepare(x, spec, overrides):
    spec = resolve_spec(spec, **overrides)
    x = _as_float(x)
    if not (spec.is_mx or spec.tensor_scale):
        _Groups(x.shape, spec)  # validates axis and dimensions
    return spec, x


def quantize_tensor(x, spec, *, rng=None, **overrides) -> QuantizedTensor:
    """Quantize x with scales: the codes, scales and zero points.

    Parameters
    ----------
    x : array_like of float
        Not a masked array (TypeError): pass ``x.filled(np.nan)`` to quantize
        masked values as NaN.
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
        Unknown recipe or option, axis out of range, non-float or masked input.

    Examples
    --------
    >>> import numpy as np, fpsim
    >>> qt = fpsim.quantize_tensor(np.array([0.5, -1.0, 2.0, 4.0], np.float32), "int8")
    >>> qt.codes.tolist(), float(qt.scales)
    ([16, -32, 64, 127], 0.031496062874794006)
    """
    spec, x = _prepare(x, spec, overrides)
    mask = _nan_mask(x, spec.format)
    if spec.is_mx:
        if spec.amax is not None:
            raise ValueError("static amax is not supported for MX block scales (they are per block)")
        codes, scale_codes = _blocks.mx_encode(
            x, spec.format, axis=spec.axis, block_size=spec.block_size,
            scale_rule=spec.scale_rule, rounding=spec.rounding, rng=rng)
        with np.errstate(invalid="ignore"):
            scales = decode(scale_codes, "float8_e8m0fnu")
        return QuantizedTensor(codes=codes, scales=scales, zero_points=None, spec=spec,
                               shape=x.shape, scale_codes=scale_codes, nan_mask=mask)
    if spec.tensor_scale:
        _check_two_level(spec)
        amax = None if spec.amax is None else float(np.max(spec.amax))
        _, codes, block_codes, s_t = _blocks.nvfp4_encode(
            x, axis=spec.axis, block_size=spec.block_size, rounding=spec.rounding, rng=rng,
            tensor_amax=amax)
        scales = decode(block_codes, spec.scale_format)
        return QuantizedTensor(codes=codes, scales=scales, zero_points=None, spec=spec,
                               shape=x.shape, tensor_scale=float(s_t), scale_codes=block_codes,
                               nan_mask=mask)
    codes, scale, zp, groups = _quantize_groups(x, spec, rng)
    scales = groups.scales_out(scale.astype(np.float32))
    zps = None if zp is None else groups.scales_out(zp.astype(np.int32))
    scale_codes = None
    if spec.scale_format is not None:
        scale_codes = encode(scales.astype(np.float32), spec.scale_format, saturate=True)
    return QuantizedTensor(codes=codes, scales=scales, zero_points=zps, spec=spec,
                           shape=x.shape, scale_codes=scale_codes, nan_mask=mask)


def _check_two_level(spec):
    if not (spec.format.name == "float4_e2m1fn" and spec.scale_format is not None
            and spec.scale_format.name == "float8_e4m3fn"):
        _unsupported_two_level(spec)


def _unsupported_two_level(spec):
    raise ValueError("tensor_scale=True is implemented for NVFP4 (float4_e2m1fn elements with "
                     f"float8_e4m3fn block scales); got {spec.format.name} / "
                     f"{getattr(spec.scale_format, 'name', None)}")


def fake_quantize(x, spec, *, rng=None, **overrides) -> np.ndarray:
    """x quantized with scales and dequantized again, in x's float dtype.

    Same arguments as :func:`quantize_tensor`; MX specs run one fused kernel.
    NaN stays NaN, +-Inf saturates to its group's largest magnitude, and the
    scales come from the finite values (see the numerics page).  Memory stays
    near the output's size: the work is done in chunks.

    Examples
    --------
    >>> import numpy as np, fpsim
    >>> fpsim.fake_quantize(np.array([1.0, 2.0, 300.0, 1000.0], np.float32), "mxfp8_e4m3",
    ...                     block_size=4).tolist()
    [1.0, 2.0, 288.0, 896.0]
    """
    spec, x = _prepare(x, spec, overrides)
    dtype = x.dtype
    if spec.is_mx and spec.amax is None:
        v, _ = _blocks.mx_fake_quantize(x, spec.format, axis=spec.axis,
                                        block_size=spec.block_size,
                                        scale_rule=spec.scale_rule, rounding=spec.rounding,
                                        rng=rng)
        return v.astype(dtype, copy=False)
    if spec.tensor_scale:
        _check_two_level(spec)
        amax = None if spec.amax is None else float(np.max(spec.amax))
        v, _, _, _ = _blocks.nvfp4_encode(
            x, axis=spec.axis, block_size=spec.block_size, rounding=spec.rounding, rng=rng,
            tensor_amax=amax, want_codes=False)
        return v.astype(dtype, copy=False)
    if spec.is_mx:
        raise ValueError("static amax is not supported for MX block scales (they are per block)")
    fast = _fast_fake_quantize(x, spec, rng)
    if fast is not None:
        return fast
    v, _, _, _ = _run_groups(x, spec, rng, values=True)
    return v


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
    elif g in ("channel", "token") and _blocks.check_axis(spec.axis, x.ndim) == x.ndim - 1:
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
    if not (isinstance(spec.format, FloatFormat) and spec.format.has_nan):
        for rs in _blocks.row_chunks(x2.shape[0], x2.shape[1]):
            nan = np.isnan(x2[rs])
            if nan.any():
                out[rs][nan] = np.nan  # NaN stays NaN
    return out.reshape(x.shape)


def calibrate(data, spec, **overrides) -> QuantSpec:
    """A static spec: the clip values of ``spec``'s calibration, measured on ``data``.

    ``data`` is one array or a list of arrays with the same scale groups (the
    clip value of each group is the largest over the arrays); the result
    carries ``amax`` (one value per group) and uses it on every later call.
    For an affine spec (``symmetric=False``) it carries the range: ``amin``
    and ``amax`` per group (the smallest low end and largest high end over the
    arrays).  NaN and Inf are ignored.

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
    spec = resolve_spec(spec, **overrides)
    if spec.is_mx or spec.tensor_scale:
        raise ValueError("block-scaled recipes compute their scales per block; nothing to calibrate")
    spec = dataclasses.replace(spec, amax=None, amin=None)
    arrays = list(data) if isinstance(data, (list, tuple)) and data and isinstance(
        data[0], np.ndarray) else [data]
    lows, highs = [], []
    for arr in arrays:
        arr = _as_float(arr)
        groups = _Groups(arr.shape, spec)
        if not np.isfinite(arr).any():
            raise ValueError("calibration data has no finite values")
        if spec.symmetric:
            highs.append(_group_clip(arr, groups, spec).ravel())
        else:
            lo, hi = _asym_range(arr, groups, spec)
            lows.append(lo.ravel())
            highs.append(hi.ravel())
    if len({c.size for c in highs}) != 1:
        raise ValueError("calibration arrays must give the same number of scale groups")
    amax = tuple(float(v) for v in np.max(np.stack(highs), axis=0))
    amin = None if spec.symmetric else tuple(float(v) for v in np.min(np.stack(lows), axis=0))
    return dataclasses.replace(spec, amax=amax, amin=amin)


def _group_clip(x, groups, spec):
    if spec.calibration == "max":
        clip = np.zeros((groups.n_groups, 1))
        for gs, band, _ in groups.bands(x):
            clip[gs, 0] = np.maximum(clip[gs, 0], _band_absmax(band))
        return clip
    return clip_value(groups.split(x), spec)


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
        The scale leaves ``2**margin`` headroom: ``scale = amax * 2**margin / max``
        (an int in [-127, 127]; the scale is kept within float32's range).

    Raises
    ------
    TypeError
        A non-integer history_len or margin.
    ValueError
        history_len < 1, margin outside [-127, 127], unknown algo, a spec that is
        not per tensor.

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
        history_len = _blocks.check_int(history_len, "history_len", minimum=1)
        _choice("algo", algo, ("max", "most_recent"))
        margin = _blocks.check_int(margin, "margin")
        if not -127 <= margin <= 127:
            raise ValueError(f"margin must be an int in [-127, 127] (a power-of-two headroom "
                             f"2**margin within float32's range), got {margin!r}")
        self.history_len, self.algo, self.margin = history_len, algo, margin
        self.amax_history: list[float] = []
        self.scale = np.float32(1.0)
        self.overflows = 0

    def __call__(self, x) -> np.ndarray:
        x = _as_float(x)
        fmt = self.spec.format
        a = np.abs(x)
        a = a[a < np.inf]  # NaN and Inf never set a scale
        amax = min(float(a.max()), _F32_MAX) if a.size else 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            y = (_blocks.to_float32(x) / self.scale).astype(np.float32)
            self.overflows += int(np.count_nonzero(np.abs(y) > fmt.max))
            q = quantize(y, fmt, rounding=self.spec.rounding, saturate=self.spec.saturate)
            out = (q * self.scale).astype(x.dtype, copy=False)
        if not (isinstance(fmt, FloatFormat) and fmt.has_nan):
            out[np.isnan(x)] = np.nan  # NaN stays NaN
        self.amax_history = (self.amax_history + [amax])[-self.history_len:]
        ref = max(self.amax_history) if self.algo == "max" else self.amax_history[-1]
        if ref > 0:
            s = ref * 2.0**self.margin / fmt.max
            self.scale = np.float32(min(max(s, _F32_TINY), _F32_MAX / fmt.max))
        return out
