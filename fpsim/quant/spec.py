"""What a quantization is: :class:`QuantSpec`, the named recipes and their resolution.

Scales are per tensor, per channel/token or per block.  A :class:`QuantSpec` says how a tensor is quantized; :func:`quantize_tensor`
returns a :class:`QuantizedTensor` (codes + scales), :func:`fake_quantize`
the dequantized values directly.  ``spec`` may be a QuantSpec or a recipe
name (see :func:`recipe`), and keyword overrides adjust it::

    fpsim.fake_quantize(x, "mxfp8_e4m3", axis=0, scale_rule="rceil")
    fpsim.fake_quantize(x, "int8", calibration="mse")

Scaling conventions
-------------------
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
import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..formats import FloatFormat, IntFormat, get_format
from . import blocks as _blocks
from . import ggml as _ggml

__all__ = ["QuantSpec", "GRANULARITIES", "CALIBRATIONS", "SCALE_RULES", "RECIPES", "recipe",
           "resolve_spec"]

GRANULARITIES = ("tensor", "channel", "token", "block")
CALIBRATIONS = ("max", "percentile", "mse", "kl")
#: "amax": scale = clip / element max (any scale format); the power-of-two
#: rules of :mod:`fpsim.quant.blocks` give E8M0 scales.
SCALE_RULES = ("amax",) + _blocks.SCALE_RULES


def check_format(v, name):
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
    stack : None, "torchao", "te", "ggml" or "quartet"
        Whose arithmetic the block recipe reproduces: None is fpsim's own (OCP MX as
        gfloat and microxcaling compute it; NVFP4 as ``docs/numerics.md`` states);
        ``"torchao"`` is torchao 0.18's quantizers bit for bit (:mod:`fpsim.quant.torchao`:
        MX with torchao's ScaleCalculationMode, NVFP4 one- or two-level); ``"te"`` is
        Transformer Engine's NVFP4 reference quantizer (:mod:`fpsim.quant.te`); ``"ggml"``
        is llama.cpp's block formats (:mod:`fpsim.quant.ggml`: Q8_0, Q4_0, ..., the
        K-quants), the type given by the format, block size, symmetry and scale format;
        ``"quartet"`` is Quartet II's unbiased NVFP4 quantizers for gradients
        (:mod:`fpsim.quant.quartet`: ``nvfp4_quartet2_sr``, and ``nvfp4_ms_eden`` with
        ``hadamard``).
    row_scaled : bool
        ``stack="te"``: one global amax per row (TE's ``row_scaled_nvfp4``).
    error : None, "mae" or "mse"
        ``stack="te"``: 4-over-6, choosing per block the scale that maps its max to 4 or
        to 6 by this error (None: plain NVFP4).
    e4m3_max : {448, 256}
        ``stack="te"`` with 4-over-6: the E4M3 bound of the global scale.
    hadamard : None, int or "te"
        An int ``h`` (a power of two): a random Hadamard transform of size ``h`` along the
        block axis (``axis``) before quantizing, undone after: ``x -> (x @ T) -> quantize
        -> @ T.T`` per group of ``h`` with ``T = diag(signs) @ H_h / sqrt(h)``, the signs
        seeded (:func:`fpsim.quant.hadamard_signs`); the axis length must be a multiple of
        ``h``.  ``"te"``: TE's 16-point transform (its fixed signs) before quantizing, the
        values left in the rotated domain (``nvfp4_te_rht``).  With ``stack="quartet"``,
        an int selects MS-EDEN with rotations of ``h`` (random signs drawn from ``rng`` per
        call, the values rotated back; an axis length that ``h`` does not divide uses the
        largest power of two >= 16 that does).

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
    stack: Any = None
    row_scaled: bool = False
    error: Any = None
    e4m3_max: int = 448
    hadamard: Any = None

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "format", check_format(self.format, "format"))
        if self.scale_format is not None:
            sf = check_format(self.scale_format, "scale_format")
            if not isinstance(sf, FloatFormat):
                raise ValueError(f"scale_format must be None or a float format (float32 scales "
                                 f"when None), e.g. 'float8_e8m0fnu', 'float8_e4m3fn', "
                                 f"'bfloat16'; got {sf.name!r}")
            set_(self, "scale_format", sf)
        from ..rounding import check_saturate, rounding_mode

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
        check_choice("granularity", self.granularity, GRANULARITIES)
        check_choice("scale_rule", self.scale_rule, SCALE_RULES)
        check_choice("calibration", self.calibration, CALIBRATIONS)
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
        if self.symmetric and self.format.max <= 0:
            raise ValueError(
                f"format {self.format.name} has no positive value (max {self.format.max:g}), "
                "so a symmetric recipe cannot scale amax onto it; use symmetric=False (an "
                "affine range with a zero point)")
        if not self.symmetric and self.calibration not in ("max", "percentile"):
            raise ValueError(f"calibration={self.calibration!r} is not available with "
                             "symmetric=False; asymmetric recipes take 'max' or 'percentile'")
        if self.tensor_scale and self.granularity != "block":
            raise ValueError("tensor_scale=True (two-level scaling) needs granularity='block'")
        _check_stack(self)
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
        if self.error is not None:
            parts.append(f"4-over-6 by {self.error} (E4M3 bound {self.e4m3_max})")
        if self.row_scaled:
            parts.append("amax per row")
        if self.hadamard is not None:
            parts.append(f"{self.hadamard} Hadamard transform first")
        if self.stack is not None:
            parts.append(f"as {self.stack} computes it")
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


def check_choice(name, value, allowed):
    """value must be one of the allowed names: TypeError for a non-string, ValueError else."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {', '.join(allowed)}; got {value!r} "
                        f"of type {type(value).__name__}")
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}{hint}")


# ---- keyword overrides -----------------------------------------------------
class _Keep:
    """The default of an override: keep the spec's own value (None is a real value)."""

    def __repr__(self) -> str:
        return "KEEP"

    def __reduce__(self):
        return "KEEP"


KEEP = _Keep()
#: The QuantSpec fields every spec-taking function accepts as keyword overrides.
OVERRIDABLE = ('format', 'rounding', 'saturate', 'granularity', 'axis', 'block_size',
               'scale_format', 'scale_rule', 'calibration', 'percentile', 'symmetric',
               'tensor_scale', 'amax', 'amin', 'stack', 'row_scaled', 'error', 'e4m3_max',
               'hadamard', 'name')


def given(**fields) -> dict:
    """The overrides actually passed (those not ``KEEP``)."""
    return {k: v for k, v in fields.items() if v is not KEEP}


STACKS = (None, "torchao", "te", "ggml", "quartet")
_TORCHAO_MX = ("float8_e4m3fn", "float8_e5m2", "float6_e2m3fn", "float6_e3m2fn",
               "float4_e2m1fn")


def _check_stack(spec) -> None:
    """A stack-exact spec must be one that stack runs: its block recipes, as it runs them."""
    if not isinstance(spec.row_scaled, (bool, np.bool_)):
        raise TypeError(f"row_scaled must be True or False, got {spec.row_scaled!r}")
    object.__setattr__(spec, "row_scaled", bool(spec.row_scaled))
    h = spec.hadamard
    if h is not None and h != "te":
        if isinstance(h, (bool, np.bool_)) or not isinstance(h, (int, np.integer)):
            raise TypeError(f"hadamard must be None, 'te' or a power of two >= 2 (an int), "
                            f"got {h!r}")
        if h < 2 or h & (h - 1):
            raise ValueError(f"hadamard must be a power of two >= 2, got {h!r}")
        if spec.stack == "quartet":
            if h < 16:
                raise ValueError(f"hadamard={h}: MS-EDEN's rotation spans whole NVFP4 blocks "
                                 f"(a power of two >= 16; Quartet II's kernels use 128)")
        elif spec.stack is not None:
            raise ValueError(f"hadamard={h} (fpsim's seeded transform) is not part of "
                             f"stack={spec.stack!r}; nvfp4_te_rht is TE's")
        object.__setattr__(spec, "hadamard", int(h))
    te_only = {"row_scaled": spec.row_scaled, "error": spec.error is not None,
               "e4m3_max": spec.e4m3_max != 448, "hadamard='te'": spec.hadamard == "te"}
    if spec.stack != "te" and any(te_only.values()):
        used = ", ".join(k for k, v in te_only.items() if v)
        raise ValueError(f"{used} apply only to Transformer Engine's NVFP4 (stack='te', "
                         f"recipes nvfp4_te*, nvfp4_4over6*), not stack={spec.stack!r}")
    if spec.stack is None:
        return
    if spec.stack not in STACKS:
        check_choice("stack", spec.stack, [s for s in STACKS if s is not None])
    if spec.stack == "te":
        _check_te(spec)
        return
    if spec.stack == "quartet":
        _check_quartet(spec)
        return
    if spec.stack == "ggml":
        _ggml.check_spec(spec)
        return
    nvfp4 = (spec.format.name == "float4_e2m1fn" and spec.scale_format is not None
             and spec.scale_format.name == "float8_e4m3fn" and spec.block_size == 16
             and spec.scale_rule == "amax")
    mx = (spec.format.name in _TORCHAO_MX and spec.scale_rule != "amax"
          and isinstance(spec.block_size, int) and not spec.tensor_scale)
    problems = []
    if spec.granularity != "block" or not (nvfp4 or mx):
        problems.append("MX blocks (elements " + ", ".join(_TORCHAO_MX) + ", a power-of-two "
                        "scale_rule) or NVFP4 (float4_e2m1fn, float8_e4m3fn scales, "
                        "block_size=16, scale_rule='amax')")
    if spec.rounding != "nearest_even" or not spec.saturate:
        problems.append("rounding='nearest_even' with saturate=True")
    if spec.calibration != "max" or spec.amax is not None or not spec.symmetric:
        problems.append("dynamic max scaling (calibration='max', no static amax, symmetric)")
    if problems:
        raise ValueError(f"stack={spec.stack!r} reproduces {spec.stack}'s own block "
                         f"quantizers; it needs " + "; ".join(problems) + f" (got {spec.describe()})")


def _check_te(spec) -> None:
    if spec.error is not None:
        check_choice("error", spec.error, ["mae", "mse"])
    if spec.e4m3_max not in (448, 256) or isinstance(spec.e4m3_max, bool):
        raise ValueError(f"e4m3_max must be 448 or 256, got {spec.e4m3_max!r}")
    if spec.e4m3_max == 256 and spec.error is None:
        raise ValueError("e4m3_max=256 is 4-over-6's option: set error='mae' or 'mse'")
    if spec.hadamard is not None:
        check_choice("hadamard", spec.hadamard, ["te"])
    problems = []
    if not (spec.format.name == "float4_e2m1fn" and spec.scale_format is not None
            and spec.scale_format.name == "float8_e4m3fn" and spec.granularity == "block"
            and spec.block_size in (16, (16, 16)) and spec.scale_rule == "amax"
            and spec.tensor_scale):
        problems.append("NVFP4 (float4_e2m1fn, float8_e4m3fn scales, blocks of 16 or 16x16 "
                        "tiles, tensor_scale=True)")
    if spec.block_size == (16, 16) and (spec.row_scaled or spec.hadamard is not None):
        problems.append("1x16 blocks for row_scaled and hadamard")
    if spec.rounding not in ("nearest_even", "stochastic") or not spec.saturate:
        problems.append("rounding='nearest_even' (or 'stochastic', TE's option for gradients) "
                        "with saturate=True")
    if spec.rounding == "stochastic" and spec.error is not None:
        problems.append("round-to-nearest with 4-over-6 (TE's stochastic rounding is plain "
                        "NVFP4's)")
    if spec.calibration != "max" or spec.amax is not None or not spec.symmetric:
        problems.append("dynamic max scaling (calibration='max', no static amax, symmetric)")
    if problems:
        raise ValueError("stack='te' reproduces Transformer Engine's NVFP4 quantizer; it needs "
                         + "; ".join(problems) + f" (got {spec.describe()})")


def _check_quartet(spec) -> None:
    problems = []
    if not (spec.format.name == "float4_e2m1fn" and spec.scale_format is not None
            and spec.scale_format.name == "float8_e4m3fn" and spec.granularity == "block"
            and spec.block_size == 16 and spec.scale_rule == "amax" and spec.tensor_scale):
        problems.append("NVFP4 (float4_e2m1fn, float8_e4m3fn scales, blocks of 16, "
                        "tensor_scale=True)")
    if spec.rounding != "stochastic" or not spec.saturate:
        problems.append("rounding='stochastic' with saturate=True (the quantizers are "
                        "unbiased by their randomness: in the elements for "
                        "nvfp4_quartet2_sr, in the block scales for nvfp4_ms_eden)")
    if spec.calibration != "max" or spec.amax is not None or not spec.symmetric:
        problems.append("dynamic max scaling (calibration='max', no static amax, symmetric)")
    if problems:
        raise ValueError("stack='quartet' is Quartet II's unbiased NVFP4 quantizers "
                         "(nvfp4_quartet2_sr, nvfp4_ms_eden); it needs "
                         + "; ".join(problems) + f" (got {spec.describe()})")


# ---- recipes --------------------------------------------------------------
def _mx(elem):
    return dict(format=elem, granularity="block", block_size=32, scale_rule="floor",
                scale_format="float8_e8m0fnu")


_NVFP4 = dict(format="float4_e2m1fn", granularity="block", block_size=16,
              scale_format="float8_e4m3fn", tensor_scale=True)

RECIPES: dict[str, dict] = {
    # OCP MX v1.0
    **{name: _mx(elem) for name, elem in _blocks.MX_ELEMENTS.items()},
    # NVFP4: E2M1, E4M3 scale per 16, FP32 tensor scale
    "nvfp4": dict(format="float4_e2m1fn", granularity="block", block_size=16,
                  scale_format="float8_e4m3fn", tensor_scale=True),
    # torchao 0.18's own quantizers, bit for bit (fpsim.quant.torchao)
    **{f"{name}_torchao": dict(_mx(elem), stack="torchao")
       for name, elem in _blocks.MX_ELEMENTS.items() if elem in _TORCHAO_MX},
    "nvfp4_torchao": dict(format="float4_e2m1fn", granularity="block", block_size=16,
                          scale_format="float8_e4m3fn", tensor_scale=True, stack="torchao"),
    # Transformer Engine's NVFP4 reference quantizer, bit for bit (fpsim.quant.te)
    "nvfp4_te": dict(_NVFP4, stack="te"),
    "nvfp4_te_2d": dict(_NVFP4, stack="te", block_size=(16, 16)),
    "nvfp4_te_rht": dict(_NVFP4, stack="te", hadamard="te"),
    "nvfp4_4over6": dict(_NVFP4, stack="te", error="mae"),
    "nvfp4_4over6_2d": dict(_NVFP4, stack="te", error="mae", block_size=(16, 16)),
    # Quartet II's unbiased gradient quantizers (fpsim.quant.quartet): stochastic rounding
    # with the block max mapped to 6 * 16/17, and MS-EDEN (random Hadamard transform of 128,
    # round-to-nearest elements, EDEN-corrected block scales rounded stochastically)
    "nvfp4_quartet2_sr": dict(_NVFP4, stack="quartet", rounding="stochastic"),
    "nvfp4_ms_eden": dict(_NVFP4, stack="quartet", rounding="stochastic", hadamard=128),
    # llama.cpp's block formats, bit for bit (fpsim.quant.ggml): ggml_q8_0 ... ggml_q6_k
    **{f"ggml_{t.name}": t.spec_fields() for t in _ggml.GGML_TYPES.values()},
    # integers
    "int8": dict(format="int8"),
    # named by what they scale (docs/recipes.md, "Integer recipes"):
    # a weight stored (out, in), as checkpoints and torch.nn.Linear store it: one scale per
    # output channel = per row, vectors along the input axis (fpsim's models keep W (in, out)
    # and turn this into axis=0 themselves)
    "int8_weight_channel": dict(format="int8", granularity="channel"),
    "int8_channel": dict(format="int8", granularity="channel"),  # = int8_weight_channel
    # an activation (tokens, features): one scale per token (row) ...
    "int8_token": dict(format="int8", granularity="token"),
    # ... or one per feature (column: vectors along the token axis, -2)
    "int8_feature": dict(format="int8", granularity="channel", axis=-2),
    "int8_asym": dict(format="int8", symmetric=False),
    "uint8_asym": dict(format="uint8", symmetric=False),
    "int4_block32": dict(format="int4", granularity="block", block_size=32),
    # GPTQ's and AWQ's weight format: INT4, one scale per 128 inputs ("W4 g128")
    "int4_block128": dict(format="int4", granularity="block", block_size=128),
    # DeepSeek-V3 fine-grained FP8
    "fp8_deepseek_activation": dict(format="float8_e4m3fn", granularity="block",
                                    block_size=128),
    "fp8_deepseek_weight": dict(format="float8_e4m3fn", granularity="block",
                                block_size=(128, 128)),
}


def recipe(name: str, *,
           format=KEEP, rounding=KEEP, saturate=KEEP, granularity=KEEP, axis=KEEP,
           block_size=KEEP, scale_format=KEEP, scale_rule=KEEP, calibration=KEEP,
           percentile=KEEP, symmetric=KEEP, tensor_scale=KEEP, amax=KEEP,
           amin=KEEP, stack=KEEP, row_scaled=KEEP, error=KEEP, e4m3_max=KEEP,
           hadamard=KEEP) -> QuantSpec:
    """The QuantSpec of a named recipe, with keyword overrides of its fields (the keyword
    arguments of :class:`QuantSpec`; ``KEEP``, the default, keeps the recipe's value).

    Any format name (``"e4m3fn"``, ``"float8_e5m2"``, ``"int4"``...) is per-tensor
    amax scaling into that format; :data:`RECIPES` lists the others.

    Examples
    --------
    >>> recipe("mxfp4_e2m1").describe()
    'float4_e2m1fn, block 32 along axis -1, scale float8_e8m0fnu/floor, calibration max, nearest_even'
    """
    overrides = given(format=format, rounding=rounding, saturate=saturate,
                      granularity=granularity, axis=axis, block_size=block_size,
                      scale_format=scale_format, scale_rule=scale_rule,
                      calibration=calibration, percentile=percentile, symmetric=symmetric,
                      tensor_scale=tensor_scale, amax=amax, amin=amin, stack=stack, row_scaled=row_scaled, error=error,
                      e4m3_max=e4m3_max, hadamard=hadamard)
    if not isinstance(name, str):
        raise TypeError(f"spec must be a QuantSpec or a recipe name, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in RECIPES:
        fmt = _format_named(key)
        if fmt is None:
            allowed = sorted(RECIPES) + ["<any format name>"]
            close = difflib.get_close_matches(key, list(RECIPES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown recipe {name!r}{hint} Recipes: {', '.join(allowed)}")
        if overrides:  # (the defaults alone may not make a valid spec: int1 needs symmetric=False)
            return QuantSpec(**{"format": fmt, "name": key, **overrides})
    base = _named(key)
    return dataclasses.replace(base, **overrides) if overrides else base


@functools.lru_cache(maxsize=256)
def _format_named(key: str):
    """The format a name stands for, or None (looked up once per name)."""
    try:
        return get_format(key)
    except ValueError:
        return None


@functools.lru_cache(maxsize=None)
def _named(key: str) -> QuantSpec:
    """The QuantSpec a recipe or format name stands for, built (and its formats looked up)
    once per process: specs are frozen, so every caller can share it."""
    if key in RECIPES:
        return QuantSpec(**RECIPES[key], name=key)
    return QuantSpec(format=get_format(key), name=key)


def resolve_spec(spec, *,
                 format=KEEP, rounding=KEEP, saturate=KEEP, granularity=KEEP, axis=KEEP,
                 block_size=KEEP, scale_format=KEEP, scale_rule=KEEP, calibration=KEEP,
                 percentile=KEEP, symmetric=KEEP, tensor_scale=KEEP, amax=KEEP, amin=KEEP, stack=KEEP, row_scaled=KEEP, error=KEEP, e4m3_max=KEEP,
           hadamard=KEEP,
                 name=KEEP) -> QuantSpec:
    """A QuantSpec from a QuantSpec or recipe name, with keyword overrides of its fields
    (``KEEP``, the default, keeps the spec's value).

    Examples
    --------
    >>> s = resolve_spec("int8")
    >>> s.name, s.granularity, s.calibration
    ('int8', 'tensor', 'max')
    >>> resolve_spec(s) is s, resolve_spec(s, calibration="percentile").calibration
    (True, 'percentile')
    """
    overrides = given(format=format, rounding=rounding, saturate=saturate,
                      granularity=granularity, axis=axis, block_size=block_size,
                      scale_format=scale_format, scale_rule=scale_rule,
                      calibration=calibration, percentile=percentile, symmetric=symmetric,
                      tensor_scale=tensor_scale, amax=amax, amin=amin, stack=stack, row_scaled=row_scaled, error=error,
                      e4m3_max=e4m3_max, hadamard=hadamard, name=name)
    if isinstance(spec, QuantSpec):
        if not overrides:
            return spec
        return dataclasses.replace(spec, **overrides)
    label = overrides.pop("name", None)
    out = recipe(spec, **overrides)
    return out if label is None else dataclasses.replace(out, name=label)
