"""Gradients of fake quantization: the straight-through estimator and LSQ.

Fake quantization ``x -> fake_quantize(x, spec)`` is piecewise constant, so its true
gradient is zero almost everywhere.  Quantization-aware training replaces it:

* **STE** (straight-through estimator, Bengio et al. 2013): the gradient passes as if the
  quantizer were the identity.  ``"plain"`` passes it everywhere; ``"clipped"`` passes it
  only where ``x`` lies inside the range its scale group can represent
  (``[lo * s, hi * s]``, ``s`` the group's scale, ``lo``/``hi`` the element format's
  extremes) and gives zero where the quantizer saturated ``x`` (the derivative of the clamp).
  It works for any recipe: per-tensor, per-channel, per-token, affine integers, OCP MX
  blocks (E8M0 power-of-two scales, where the floor rule can clip a block's largest
  elements), NVFP4 (E4M3 block scales and an FP32 tensor scale).  The scales themselves are
  computed from ``x`` (``amax``) and treated as constants (no gradient through ``amax``).
  With a Hadamard transform (``spec.hadamard``) the clipped mask is not computed (the
  clamp acts in the rotated domain): the gradient passes plainly.

* **LSQ** (learned step size, Esser et al. 2019): the quantizer becomes
  ``x_q = s * R(x / s)`` with a learned scale ``s`` (one per tensor, or per channel:
  any shape that broadcasts against ``x``) and its gradient

  ``d x_q / d s = R(v) - v`` inside the range, ``R(v)`` (the clamped level) outside,
  ``v = x / s``,

  multiplied by ``g = 1 / sqrt(N * Qp)`` (``N`` elements per scale, ``Qp`` the largest
  level: ``max_int`` for integers, the format's max for floats); ``d x_q / d x`` is the
  clipped STE.  ``R`` is

  - for per-tensor / per-channel / per-token recipes, the element format alone
    (rounding and saturating ``v`` to its grid): ``s`` *replaces* the recipe's amax scale
    (initialise it with :func:`lsq_init_scale`);
  - for block recipes (MX, NVFP4, ``int4_block32``), the recipe's own block quantizer:
    its block scales still come from the block maxima of ``v``, and ``s`` is a learned
    per-tensor or per-channel *pre-scale* (initialise it to 1) that moves where the
    elements fall on the grid relative to the block scale (a power of two cancels
    against E8M0 scales; an amax-scaled block, ``int4_block32``, cancels it exactly, so
    there LSQ learns nothing).  The block scale is held constant in the gradient.

Affine (zero-point) recipes are refused by LSQ (LSQ+ would learn the offset too).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..codec import quantize
from ..formats import FloatFormat
from ..quant.blocks import mx_fake_quantize
from ..quant.recipes import fake_quantize, quantize_tensor
from ..quant.spec import resolve_spec

__all__ = [
    "STE_MODES",
    "fake_quantize_ste",
    "lsq_backward",
    "lsq_fake_quantize",
    "lsq_grad_scale",
    "lsq_init_scale",
    "ste_backward",
]

#: How the straight-through estimator passes gradients: everywhere, or only unclipped.
STE_MODES = ("plain", "clipped")


def _check_ste(ste):
    if ste not in STE_MODES:
        raise ValueError(f"ste must be one of {STE_MODES}, got {ste!r}")
    return ste


def _format_range(fmt):
    """(lo, hi): the element format's most negative and largest values."""
    hi = float(fmt.max)
    if isinstance(fmt, FloatFormat):
        return (-hi if fmt.signed else 0.0), hi
    return float(fmt.min), hi


def _is_block(spec) -> bool:
    return spec.granularity == "block" or spec.tensor_scale


def _dynamic_max(spec) -> bool:
    """Scales that map each group's amax exactly onto the format's max: nothing clips."""
    return (spec.symmetric and spec.calibration == "max" and spec.amax is None
            and spec.scale_rule == "amax" and spec.scale_format is None
            and spec.stack is None and spec.hadamard is None and not _is_block(spec))


#: relative slack of the range test: a group's amax maps onto the format's max up to the
#: float32 rounding of its scale, which must not count as clipping
_SLACK = 1 + 4 * float(np.finfo(np.float32).eps)


def _inside(x, lo_s, hi_s):
    with np.errstate(invalid="ignore"):
        return (x >= lo_s * _SLACK) & (x <= hi_s * _SLACK)


def fake_quantize_ste(x, spec, *, rng=None):
    """``fake_quantize(x, spec)`` and where its clipped STE passes the gradient.

    Parameters
    ----------
    x : ndarray of float
    spec : QuantSpec or recipe name
    rng : seed or numpy.random.Generator, optional
        For stochastic rounding (the same draws as :func:`fpsim.fake_quantize`).

    Returns
    -------
    xq : ndarray
        Exactly ``fpsim.fake_quantize(x, spec, rng=rng)``.
    inside : ndarray of bool or None
        True where ``x`` is inside its scale group's representable range (the clipped
        STE passes the gradient there); None when nothing can clip (dynamic amax scales
        per tensor, channel or token) or when it is not computed (Hadamard recipes).

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 3.0, 7.5]], np.float32)
    >>> from fpsim.quant.spec import recipe
    >>> xq, inside = fake_quantize_ste(x, recipe("mxfp4_e2m1", block_size=4))  # scale 1
    >>> xq.tolist(), inside.tolist()                       # 7.5 saturates to 6
    ([[1.0, 2.0, 3.0, 6.0]], [[True, True, True, False]])
    >>> fake_quantize_ste(x, "int8")[1] is None            # amax scaling never clips
    True
    """
    spec = resolve_spec(spec)
    x = np.asarray(x)
    fmt = spec.format
    if _dynamic_max(spec) and spec.granularity != "tensor" and x.ndim > 1 \
            and spec.axis % x.ndim != x.ndim - 1 and spec.rounding != "stochastic":
        # the same groups with the vectors along the last axis: fpsim's fused kernel
        moved = np.ascontiguousarray(np.moveaxis(x, spec.axis, -1))
        xq = fake_quantize(moved, dataclasses.replace(spec, axis=-1))
        return np.moveaxis(xq, -1, spec.axis), None
    if _dynamic_max(spec) or spec.hadamard is not None:
        return fake_quantize(x, spec, rng=rng), None
    lo, hi = _format_range(fmt)
    if spec.is_mx and spec.amax is None and spec.stack is None:
        xq, codes = mx_fake_quantize(x, fmt, axis=spec.axis, block_size=spec.block_size,
                                     scale_rule=spec.scale_rule, rounding=spec.rounding,
                                     rng=rng, return_details=True)
        axis = spec.axis % x.ndim
        scale = np.ldexp(1.0, codes.astype(np.int64) - 127)  # [..., blocks, ...]
        scale = np.repeat(scale, spec.block_size, axis=axis).take(
            np.arange(x.shape[axis]), axis=axis)  # shape of x
        return xq.astype(x.dtype, copy=False), _inside(x, lo * scale, hi * scale)
    xq = fake_quantize(x, spec, rng=rng)
    qt = quantize_tensor(x, spec, rng=rng)
    s = qt.element_scale()
    z = qt.element_zero_point()
    if z is not None:
        lo, hi = float(fmt.min_int), float(fmt.max_int)
        return xq, _inside(x, (lo - z) * s, (hi - z) * s)
    return xq, _inside(x, lo * s, hi * s)


def ste_backward(dy, inside, *, ste="clipped"):
    """The gradient w.r.t. ``x`` of a fake quantizer given ``dy`` w.r.t. its output.

    Parameters
    ----------
    dy : ndarray
    inside : ndarray of bool or None
        From :func:`fake_quantize_ste`.
    ste : {"plain", "clipped"}

    Examples
    --------
    >>> ste_backward(np.ones(3), np.array([True, False, True])).tolist()
    [1.0, 0.0, 1.0]
    >>> ste_backward(np.ones(3), np.array([True, False, True]), ste="plain").tolist()
    [1.0, 1.0, 1.0]
    """
    if _check_ste(ste) == "plain" or inside is None:
        return dy
    return np.where(inside, dy, dy.dtype.type(0))


# ---- LSQ ----------------------------------------------------------------------------
def _lsq_spec(spec):
    spec = resolve_spec(spec)
    if not spec.symmetric:
        raise ValueError(f"LSQ learns a symmetric scale; recipe {spec.name or spec.describe()!r}"
                         " is affine (symmetric=False): use its symmetric version")
    if spec.hadamard is not None or spec.stack is not None:
        raise ValueError("LSQ does not support Hadamard recipes or other stacks "
                         f"(stack={spec.stack!r}, hadamard={spec.hadamard!r})")
    return spec


def _check_scale(x, scale):
    scale = np.asarray(scale)
    try:
        np.broadcast_shapes(scale.shape, x.shape)
    except ValueError:
        raise ValueError(f"scale of shape {scale.shape} does not broadcast against x of shape "
                         f"{x.shape}") from None
    if scale.ndim > x.ndim or np.broadcast_shapes(scale.shape, x.shape) != x.shape:
        raise ValueError(f"scale of shape {scale.shape} must broadcast to x's shape {x.shape}")
    if not np.all(scale > 0):
        raise ValueError("scale must be positive everywhere, got min "
                         f"{float(np.min(scale)) if scale.size else 'empty'}")
    return scale


def _levels(v, spec, rng):
    """R(v) and where the STE passes (see the module doc)."""
    if _is_block(spec):
        q, inside = fake_quantize_ste(v, spec, rng=rng)
        return q, (np.ones(v.shape, bool) if inside is None else inside)
    lo, hi = _format_range(spec.format)
    q = quantize(v, spec.format, rounding=spec.rounding, saturate=True, rng=rng)
    return q, _inside(v, lo, hi)


def lsq_fake_quantize(x, scale, spec, *, rng=None):
    """LSQ's quantizer ``s * R(x / s)`` (see the module doc for ``R``).

    Parameters
    ----------
    x : ndarray of float
    scale : ndarray or float
        Positive; broadcasts against ``x`` (``()`` per tensor, ``(1, O)`` per output
        column of an (in, out) weight).
    spec : QuantSpec or recipe name
        Symmetric.

    Examples
    --------
    >>> lsq_fake_quantize(np.array([0.26, -1.0, 9.0]), 0.5, "int4").tolist()
    [0.5, -1.0, 3.5]
    """
    spec = _lsq_spec(spec)
    x = np.asarray(x)
    scale = _check_scale(x, scale)
    v = x / scale
    q, _ = _levels(v.astype(x.dtype, copy=False), spec, rng)
    return (q * scale).astype(x.dtype, copy=False)


def lsq_grad_scale(n_per_scale, spec) -> float:
    """LSQ's gradient scale ``g = 1 / sqrt(N * Qp)``.

    Examples
    --------
    >>> lsq_grad_scale(64, "int4")                          # Qp = 7
    0.0472455591261534
    """
    spec = resolve_spec(spec)
    qp = float(spec.format.max_int) if not isinstance(spec.format, FloatFormat) \
        else float(spec.format.max)
    return 1.0 / math.sqrt(max(int(n_per_scale), 1) * qp)


def lsq_backward(dy, x, scale, spec, *, rng=None, grad_scale=True):
    """Gradients of :func:`lsq_fake_quantize` w.r.t. ``x`` (clipped STE) and ``scale``.

    Parameters
    ----------
    dy : ndarray, shape of x
    x, scale, spec, rng
        As given to :func:`lsq_fake_quantize`.
    grad_scale : bool
        Multiply the scale's gradient by :func:`lsq_grad_scale` (``N`` = elements per
        scale), as LSQ does.

    Returns
    -------
    dx : ndarray, shape of x
    dscale : ndarray, shape of scale

    Examples
    --------
    >>> dx, ds = lsq_backward(np.ones(3), np.array([0.26, -1.0, 9.0]), np.array(0.5), "int4",
    ...                       grad_scale=False)
    >>> dx.tolist(), round(float(ds), 6)                   # (1 - 0.52) + (-2 + 2) + 7
    ([1.0, 1.0, 0.0], 7.48)
    """
    spec = _lsq_spec(spec)
    x = np.asarray(x)
    scale = _check_scale(x, scale)
    v = (x / scale).astype(x.dtype, copy=False)
    q, inside = _levels(v, spec, rng)
    dx = np.where(inside, dy, 0).astype(dy.dtype, copy=False)
    per = dy * np.where(inside, q - v, q)  # [...] d x_q / d s, elementwise
    # sum over the axes the scale is broadcast along
    lead = x.ndim - scale.ndim
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(scale.shape) if n == 1
                                      and x.shape[lead + i] != 1)
    ds = np.sum(per, axis=axes, keepdims=False).reshape(scale.shape) if axes else \
        per.reshape(scale.shape)
    if grad_scale:
        ds = ds * lsq_grad_scale(x.size // max(scale.size, 1), spec)
    return dx, ds.astype(scale.dtype if scale.dtype.kind == "f" else np.float64, copy=False)


def lsq_init_scale(x, spec, *, axis=None):
    """A starting LSQ scale for ``x``: one per tensor (``axis=None``, shape ``()``) or one
    per index of ``axis`` (the other axes reduced and kept with size 1).

    For element recipes it is the recipe's own amax scale ``amax / Qp``, so LSQ starts
    from round-to-nearest; for block recipes it is 1 (the neutral pre-scale).

    Examples
    --------
    >>> w = np.array([[1.0, -2.0], [0.5, 7.0]])
    >>> lsq_init_scale(w, "int4").tolist()                 # per tensor: 7 / 7
    1.0
    >>> lsq_init_scale(w, "int4", axis=1).tolist()         # per column of an (in, out) weight
    [[0.14285714285714285, 1.0]]
    """
    spec = _lsq_spec(spec)
    x = np.asarray(x)
    if _is_block(spec):
        shape = () if axis is None else tuple(n if i == axis % x.ndim else 1
                                              for i, n in enumerate(x.shape))
        return np.ones(shape, dtype=np.float32 if x.dtype == np.float32 else np.float64)
    qp = float(spec.format.max_int) if not isinstance(spec.format, FloatFormat) \
        else float(spec.format.max)
    if axis is None:
        amax = np.max(np.abs(x))
    else:
        others = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
        amax = np.max(np.abs(x), axis=others, keepdims=True)
    s = np.maximum(amax / qp, np.finfo(np.float32).tiny)
    return np.asarray(s, dtype=x.dtype)
