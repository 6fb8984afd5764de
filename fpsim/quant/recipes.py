"""Scaled quantization: :func:`quantize_tensor` (codes + scales, a
:class:`QuantizedTensor`) and :func:`fake_quantize` (the dequantized values).

See :mod:`fpsim.quant.spec` for the conventions.
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass

import numpy as np

from ._cast import E2M1, E4M3, E8M0, decode, encode, quantize
from ..formats import FloatFormat
from . import blocks as _blocks
from . import ggml as _ggml
from ._groups import F32_TINY, Groups, as_float
from .calibration import asym_range, group_clip, scale_from_clip, static_clip
from .spec import KEEP, QuantSpec, given, resolve_spec

__all__ = ["QuantizedTensor", "quantize_tensor", "fake_quantize"]


def _affine(lo: np.ndarray, hi: np.ndarray, fmt):
    """(scale, zero point) of an affine integer quantizer for the range [lo, hi]."""
    qmin, qmax = fmt.min_int, fmt.max_int
    scale = np.where(hi > lo, (hi - lo) / (qmax - qmin), 1.0).astype(np.float32)
    scale = np.maximum(scale.astype(np.float64), F32_TINY)
    zp = np.clip(np.rint(qmin - lo / scale), qmin, qmax)
    return scale, zp


def _group_scales(x: np.ndarray, groups: Groups, spec: QuantSpec):
    """(scale, zero point or None) per group, each (groups, 1) float64."""
    if not spec.symmetric:
        return _affine(*asym_range(x, groups, spec), spec.format)
    clip = static_clip(spec, groups.n_groups) if spec.amax is not None else \
        group_clip(x, groups, spec)
    return scale_from_clip(clip, spec), None


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
    groups = Groups(x.shape, spec)
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
    signs: np.ndarray | None = None

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        """The values the codes stand for, in ``dtype`` (computed in chunks).  With an int
        ``spec.hadamard`` the codes and scales are the rotated tensor's, and the values are
        rotated back (``nvfp4_ms_eden``: with the call's random ``signs``)."""
        spec = self.spec
        if spec.stack == "quartet" and spec.hadamard is not None:
            from .quartet import rotate

            inner = dataclasses.replace(self, spec=dataclasses.replace(spec, hadamard=None),
                                        signs=None)
            v = inner.dequantize(np.float64)
            if self.signs is None or v.size == 0:
                return v.astype(dtype)
            axis = _blocks.check_axis(spec.axis, v.ndim)
            with np.errstate(over="ignore"):
                v = rotate(np.moveaxis(v, axis, -1), self.signs, inverse=True)
            return _clip_to(np.moveaxis(v, -1, axis), np.dtype(dtype)).astype(dtype)
        if isinstance(spec.hadamard, int):
            inner = dataclasses.replace(self, spec=dataclasses.replace(spec, hadamard=None))
            return _hadamard(inner.dequantize(np.float64), spec, inverse=True).astype(dtype)
        if spec.stack == "ggml":  # ggml's float32 arithmetic (fpsim.quant.ggml)
            return _ggml.dequantize(self).astype(dtype, copy=False)
        groups = Groups(self.shape, spec)
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

    def to_ggml(self) -> np.ndarray:
        """The packed bytes of a ggml recipe's tensor (``ggml_q4_0``...), uint8 of shape
        ``(*shape[:-1], row bytes)``: exactly ``gguf.quants.quantize``'s array;
        ``.tobytes()`` is a GGUF file's tensor data.  :func:`fpsim.quant.ggml.from_ggml`
        reads it back.

        Raises
        ------
        ValueError
            The spec is not a ggml recipe (``stack="ggml"``).

        Examples
        --------
        >>> import numpy as np
        >>> qt = quantize_tensor(np.ones(32, np.float32), "ggml_q8_0")
        >>> qt.to_ggml()[:4].tolist()  # float16 scale 1/127, then int8 codes
        [8, 32, 127, 127]
        """
        if self.spec.stack != "ggml":
            raise ValueError(f"to_ggml() needs a ggml recipe (stack='ggml': ggml_q8_0, "
                             f"ggml_q4_0, ...), got {self.spec.describe()}")
        return _ggml.to_ggml(self)

    def _groups(self) -> Groups:
        """The scale groups; a ggml K-quant's are its sub-blocks (16 or 32)."""
        if self.spec.stack == "ggml":
            g = _ggml.ggml_type(self.spec).group
            return Groups(self.shape, dataclasses.replace(self.spec, block_size=g, stack=None))
        return Groups(self.shape, self.spec)

    # ---- per-element views (for measuring: fpsim.measure.error_report's counts) ----
    def _per_element(self, per_group: np.ndarray) -> np.ndarray:
        groups = self._groups()
        width = groups.split(np.zeros(self.shape, dtype=np.int8)).shape[1]
        col = np.asarray(per_group).reshape(-1, 1)
        return np.ascontiguousarray(groups.join(np.broadcast_to(col, (col.shape[0], width))))

    @property
    def n_groups(self) -> int:
        """Number of scale groups (1 per tensor, channels, blocks or tiles)."""
        return self._groups().n_groups

    def group_index(self) -> np.ndarray:
        """The scale group of every element (int64, shape of the tensor).

        Examples
        --------
        >>> import numpy as np
        >>> qt = quantize_tensor(np.ones((2, 3), np.float32), "int8_token")
        >>> qt.group_index().tolist()
        [[0, 0, 0], [1, 1, 1]]
        """
        return self._per_element(np.arange(self.n_groups, dtype=np.int64))

    def element_scale(self) -> np.ndarray:
        """The scale of every element (float64, shape of the tensor): its group's scale,
        times the tensor scale for two-level recipes, as :meth:`dequantize` multiplies."""
        groups = self._groups()
        s = groups.scales_in(self.scales).astype(np.float32)
        if self.tensor_scale != 1.0:
            s = s * np.float32(self.tensor_scale)
        return self._per_element(s.astype(np.float64))

    def element_zero_point(self) -> np.ndarray | None:
        """The zero point of every element (affine recipes; None for symmetric ones).  A ggml
        recipe's offset ``o`` (``x_hat = element * scale + o``) is the zero point ``-o / scale``
        (0 where the scale is 0)."""
        if self.spec.stack == "ggml":
            s, o = _ggml.group_params(self)
            if o is None:
                return None
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.where(s != 0, -o.astype(np.float64) / s, 0.0)
            return self._per_element(z)
        if self.zero_points is None:
            return None
        groups = Groups(self.shape, self.spec)
        return self._per_element(groups.scales_in(self.zero_points).astype(np.float64))

    def element_values(self) -> np.ndarray:
        """The codes as values of the element format (float64, before any scaling; NaN where
        the input was NaN)."""
        e = decode(np.asarray(self.codes), self.spec.format, dtype=np.float64).reshape(self.shape)
        if self.nan_mask is not None:
            e[self.nan_mask] = np.nan
        return e

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Storage in bytes: packed elements + scales (+ zero points, tensor scale); a ggml
        recipe's is ggml's (blocks times the block's bytes)."""
        if self.spec.stack == "ggml":
            return _ggml.nbytes(self.spec, self.shape)
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
def _quantize_groups(x: np.ndarray, spec: QuantSpec, rng):
    """(codes, scales, zero_points, groups) for non-MX, non-NVFP4 specs."""
    codes, scale, zp, groups = _run_groups(x, spec, rng, values=False)
    return codes, scale, zp, groups


def _prepare(x, spec, overrides: dict):
    spec = resolve_spec(spec, **overrides)
    x = as_float(x)
    if not (spec.is_mx or spec.tensor_scale):
        Groups(x.shape, spec)  # validates axis and dimensions
    return spec, x


def quantize_tensor(x, spec, *, rng=None, format=KEEP, rounding=KEEP, saturate=KEEP,
                  granularity=KEEP, axis=KEEP, block_size=KEEP, scale_format=KEEP,
                  scale_rule=KEEP, calibration=KEEP, percentile=KEEP, symmetric=KEEP,
                  tensor_scale=KEEP, amax=KEEP, amin=KEEP, stack=KEEP, row_scaled=KEEP, error=KEEP, e4m3_max=KEEP,
           hadamard=KEEP, name=KEEP) -> QuantizedTensor:
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
    format, rounding, saturate, granularity, axis, block_size, scale_format, scale_rule, \
calibration, percentile, symmetric, tensor_scale, amax, amin, name : optional
        QuantSpec fields to change, e.g. ``axis=0``, ``block_size=16``,
        ``scale_rule="rceil"``, ``granularity="channel"``, ``calibration="mse"``;
        ``KEEP`` (the default) keeps the spec's value.

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
    spec, x = _prepare(x, spec, given(format=format, rounding=rounding, saturate=saturate,
                        granularity=granularity, axis=axis, block_size=block_size,
                        scale_format=scale_format, scale_rule=scale_rule,
                        calibration=calibration, percentile=percentile,
                        symmetric=symmetric, tensor_scale=tensor_scale, amax=amax,
                        amin=amin, stack=stack, row_scaled=row_scaled, error=error,
                      e4m3_max=e4m3_max, hadamard=hadamard, name=name))
    if spec.stack == "quartet":
        return _quartet(x, spec, rng)
    if isinstance(spec.hadamard, int):
        y = _hadamard(x, spec)
        qt = quantize_tensor(y, dataclasses.replace(spec, hadamard=None), rng=rng)
        return dataclasses.replace(qt, spec=spec, shape=x.shape)
    mask = _nan_mask(x, spec.format)
    if spec.stack == "torchao":
        codes, scale_codes, values, t = _torchao(x, spec)
        scales = decode(scale_codes, spec.scale_format)
        return QuantizedTensor(codes=codes, scales=scales, zero_points=None, spec=spec,
                               shape=x.shape, tensor_scale=float(t), scale_codes=scale_codes,
                               nan_mask=None)
    if spec.stack == "te":
        codes, scale_codes, scales = _te(x, spec, rng)[:3]
        return QuantizedTensor(codes=codes, scales=scales, zero_points=None, spec=spec,
                               shape=x.shape, scale_codes=scale_codes, nan_mask=None)
    if spec.stack == "ggml":
        codes, scale_codes = _ggml.quantize(x, spec, axis=spec.axis)
        return _ggml.tensor(codes, scale_codes, spec, x.shape)
    if spec.is_mx:
        if spec.amax is not None:
            raise ValueError("static amax is not supported for MX block scales (they are per block)")
        codes, scale_codes = _blocks.mx_encode(
            x, spec.format, axis=spec.axis, block_size=spec.block_size,
            scale_rule=spec.scale_rule, rounding=spec.rounding, rng=rng)
        with np.errstate(invalid="ignore"):
            scales = decode(scale_codes, E8M0)
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


def _torchao(x, spec):
    """(codes, scale codes, values, tensor scale) of a ``stack="torchao"`` spec, codes in
    x's layout and scale codes with the block axis shortened (as fpsim's MX encoders)."""
    from . import torchao

    axis = _blocks.check_axis(spec.axis, max(x.ndim, 1))
    xx = x.reshape(1) if x.ndim == 0 else x
    if spec.scale_rule == "amax":  # NVFP4
        s, c, v, t = torchao.nvfp4_quantize(xx, tensor_scale=spec.tensor_scale, axis=axis)
    else:
        s, c, v = torchao.mx_quantize(xx, spec.format, block_size=spec.block_size,
                                      scale_rule=spec.scale_rule, axis=axis)
        t = 1.0
    c, s = np.moveaxis(c, -1, axis), np.moveaxis(s, -1, axis)
    return c.reshape(x.shape), s, v.reshape(x.shape), t


def hadamard_signs(h: int) -> np.ndarray:
    """The random signs of fpsim's size-``h`` Hadamard transform (seeded: the same every run).

    Examples
    --------
    >>> hadamard_signs(16)[:6].tolist()
    [1.0, -1.0, -1.0, -1.0, 1.0, -1.0]
    """
    return np.random.default_rng([0x48414441, h]).choice([-1.0, 1.0], h)


def _hadamard_matrix(h: int) -> np.ndarray:
    m = np.ones((1, 1))
    while m.shape[0] < h:
        m = np.block([[m, m], [m, -m]])
    return hadamard_signs(h)[:, None] * m / np.sqrt(h)


def _hadamard(x, spec, *, inverse=False) -> np.ndarray:
    """x rotated (or rotated back) by the spec's Hadamard transform along its axis, float64."""
    h = spec.hadamard
    if x.ndim == 0 or x.size == 0:
        return np.asarray(x, np.float64)
    axis = _blocks.check_axis(spec.axis, x.ndim)
    n = x.shape[axis]
    if n % h:
        raise ValueError(f"hadamard={h}: the length {n} of axis {spec.axis} must be a multiple "
                         f"of {h}")
    if not inverse and not np.isfinite(x).all():
        raise ValueError(f"hadamard={h}: x holds NaN or Inf, which the transform would spread "
                         f"over their whole group of {h}; remove them or drop hadamard=")
    t = _hadamard_matrix(h)
    y = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    y = y.reshape(*y.shape[:-1], n // h, h) @ (t.T if inverse else t)
    return np.moveaxis(y.reshape(*y.shape[:-2], n), -1, axis)


def _te(x, spec, rng=None):
    """(codes, E4M3 scale codes, scales, values) of a ``stack="te"`` spec.  ``scales`` are
    the float32 factors TE's dequantization multiplies every element of a block (or tile)
    by, ``(s * amax) * (1 / (6 * e4m3_max))``, so ``dequantize()`` gives TE's values."""
    from . import te

    tile = spec.block_size if isinstance(spec.block_size, tuple) else (1, 16)
    if tile == (16, 16):
        if x.ndim != 2 or _blocks.check_axis(spec.axis, 2) != 1:
            raise ValueError("16x16 NVFP4 tiles (nvfp4_te_2d, nvfp4_4over6_2d) take a 2-D "
                             f"array tiled along axis=-1, got shape {x.shape}, axis={spec.axis}")
        xx = x
    else:
        axis = _blocks.check_axis(spec.axis, max(x.ndim, 1))
        xx = np.moveaxis(x.reshape(1) if x.ndim == 0 else x, axis, -1)
    s, c, v, amax = te.nvfp4_quantize(xx, tile=tile, row_scaled=spec.row_scaled,
                                      error=spec.error, e4m3_max=spec.e4m3_max,
                                      rht=spec.hadamard == "te", rounding=spec.rounding,
                                      rng=rng)
    bound = spec.e4m3_max if spec.error is not None else 448
    s_val = decode(s, spec.scale_format, dtype=np.float32)
    a = amax.reshape(-1, 1) if spec.row_scaled else amax.reshape(1, 1)
    factors = ((s_val * a) * np.float32(1.0 / (6.0 * bound))).astype(np.float32)
    if tile == (16, 16):
        s, factors = s[::16], factors[::16]
        return c, s, factors, v
    nb = s.shape[1]
    s = np.moveaxis(s.reshape(*xx.shape[:-1], nb), -1, axis)
    factors = np.moveaxis(factors.reshape(*xx.shape[:-1], nb), -1, axis)
    c = np.moveaxis(c, -1, axis).reshape(x.shape)
    v = np.moveaxis(v, -1, axis).reshape(x.shape)
    return c, s, factors, v


def _quartet(x, spec, rng):
    """The QuantizedTensor of a ``stack="quartet"`` spec (Quartet II's quantizers): E4M3
    block scales, the tensor scale ``s_dec``, and for MS-EDEN the rotated tensor's codes with
    the call's rotation signs."""
    from . import quartet

    axis = _blocks.check_axis(spec.axis, max(x.ndim, 1))
    xx = np.moveaxis(x.reshape(1) if x.ndim == 0 else x, axis, -1)
    n = xx.shape[-1]
    h = spec.hadamard
    if h is not None and x.size:
        h = min(h, n & -n)  # the largest power of two (<= spec.hadamard) dividing the axis
        if h < 16:
            raise ValueError(f"nvfp4_ms_eden rotates groups of whole NVFP4 blocks: the length "
                             f"{n} of axis {spec.axis} must be a multiple of 16")
    s, c, _, s_dec, signs = quartet.quartet_quantize(
        xx, method="sr" if spec.hadamard is None else "ms_eden", hadamard=h, rng=rng)
    nb = s.shape[1]
    sc = np.moveaxis(s.reshape(*xx.shape[:-1], nb), -1, axis)
    scales = decode(sc, spec.scale_format, dtype=np.float32)
    c = np.moveaxis(c, -1, axis).reshape(x.shape)
    return QuantizedTensor(codes=c, scales=scales, zero_points=None, spec=spec, shape=x.shape,
                           tensor_scale=float(s_dec), scale_codes=sc, nan_mask=None,
                           signs=signs)


def _check_two_level(spec):
    if not (spec.format.name == "float4_e2m1fn" and spec.scale_format is not None
            and spec.scale_format.name == "float8_e4m3fn"):
        _unsupported_two_level(spec)


def _unsupported_two_level(spec):
    raise ValueError("tensor_scale=True is implemented for NVFP4 (float4_e2m1fn elements with "
                     f"float8_e4m3fn block scales); got {spec.format.name} / "
                     f"{getattr(spec.scale_format, 'name', None)}")


def fake_quantize(x, spec, *, rng=None, format=KEEP, rounding=KEEP, saturate=KEEP,
                  granularity=KEEP, axis=KEEP, block_size=KEEP, scale_format=KEEP,
                  scale_rule=KEEP, calibration=KEEP, percentile=KEEP, symmetric=KEEP,
                  tensor_scale=KEEP, amax=KEEP, amin=KEEP, stack=KEEP, row_scaled=KEEP, error=KEEP, e4m3_max=KEEP,
           hadamard=KEEP, name=KEEP) -> np.ndarray:
    """x quantized with scales and dequantized again, in x's float dtype.

    Same arguments as :func:`quantize_tensor`; MX specs run one fused kernel.
    A ``dask.array`` ``x`` gives a lazy dask array, one call per chunk, bitwise the
    NumPy result (see :func:`_dask_fake_quantize` for the chunks it needs).  NaN stays NaN, +-Inf saturates to its group's largest magnitude, and the
    scales come from the finite values (see the numerics page).  Memory stays
    near the output's size: the work is done in chunks.

    Examples
    --------
    >>> import numpy as np, fpsim
    >>> fpsim.fake_quantize(np.array([1.0, 2.0, 300.0, 1000.0], np.float32), "mxfp8_e4m3",
    ...                     block_size=4).tolist()
    [1.0, 2.0, 288.0, 896.0]
    """
    overrides = given(format=format, rounding=rounding, saturate=saturate,
                      granularity=granularity, axis=axis, block_size=block_size,
                      scale_format=scale_format, scale_rule=scale_rule,
                      calibration=calibration, percentile=percentile,
                      symmetric=symmetric, tensor_scale=tensor_scale, amax=amax,
                      amin=amin, stack=stack, row_scaled=row_scaled, error=error,
                      e4m3_max=e4m3_max, hadamard=hadamard, name=name)
    if type(x).__module__.startswith("dask."):  # without importing dask
        return _dask_fake_quantize(x, resolve_spec(spec, **overrides), rng)
    spec, x = _prepare(x, spec, overrides)
    dtype = x.dtype
    if spec.stack == "quartet" or isinstance(spec.hadamard, int):
        # the same values as quantize_tensor's dequantize()
        return quantize_tensor(x, spec, rng=rng).dequantize(dtype)
    if spec.stack == "torchao":
        return _torchao(x, spec)[2].astype(dtype, copy=False)
    if spec.stack == "te":
        return _te(x, spec, rng)[3].astype(dtype, copy=False)
    if spec.stack == "ggml":
        return _ggml.fake_quantize(x, spec, axis=spec.axis).astype(dtype, copy=False)
    if spec.is_mx and spec.amax is None:
        v = _blocks.mx_fake_quantize(x, spec.format, axis=spec.axis,
                                     block_size=spec.block_size,
                                     scale_rule=spec.scale_rule, rounding=spec.rounding,
                                     rng=rng, return_details=False)
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
    if (spec.granularity == "tensor" and spec.rounding != "stochastic" and x.ndim >= 2
            and x.flags.f_contiguous and not x.flags.c_contiguous):
        # one scale for every element, each rounded alone: work in x's memory order
        # (a transposed weight is its C-ordered transpose), not on a C-ordered copy
        return _values(x.T, spec, rng).T
    return _values(x, spec, rng)


def _values(x: np.ndarray, spec: QuantSpec, rng) -> np.ndarray:
    fast = _fast_fake_quantize(x, spec, rng)
    if fast is not None:
        return fast
    v, _, _, _ = _run_groups(x, spec, rng, values=True)
    return v


def _fast_fake_quantize(x: np.ndarray, spec: QuantSpec, rng):
    """The fused kernel for the common case (float32, dynamic max scaling per tensor
    or per vector along the last axis, a table-exact format); None if it does not apply."""
    from .._kernels import use_parallel
    from .._kernels import lut as klut
    from .. import dispatch

    if (x.dtype != np.float32 or x.ndim == 0 or x.size == 0 or not spec.symmetric
            or spec.calibration != "max" or spec.amax is not None
            or spec.scale_rule != "amax" or spec.scale_format is not None
            or spec.rounding == "stochastic" or not dispatch.hi16_ok(spec.format)):
        return None
    g = spec.granularity
    if g == "tensor":
        per_row = False
    elif g in ("channel", "token") and _blocks.check_axis(spec.axis, x.ndim) == x.ndim - 1:
        per_row = True
    else:
        return None
    # per tensor, any rows will do (one scale for all): the last axis, or one row
    x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    parallel = use_parallel(x2.size) and x2.shape[0] > 1
    if not per_row and not parallel:
        x2 = x2.reshape(1, -1)
    out = np.empty_like(x2)
    mode = dispatch.mode_for(spec.format, spec.rounding)
    table = dispatch.hi16_table(spec.format, mode, spec.saturate, np.dtype(np.float32))
    ap = dispatch.arith_params(spec.format, mode)
    fmax = float(spec.format.max)
    if parallel and per_row:
        klut.fake_quant_rows_parallel(x2, out, table, fmax, ap)
    elif parallel:
        klut.fake_quant_tensor_parallel(x2, out, table, fmax, ap)
    else:
        klut.fake_quant_rows(x2, out, table, fmax, per_row, ap)
    return out.reshape(x.shape)  # (the kernels keep NaN a NaN in formats without one)


# ---- dask arrays ----------------------------------------------------------------------
def _dask_fake_quantize(x, spec: QuantSpec, rng):
    """:func:`fake_quantize` of a dask array, lazily, chunk by chunk (``map_blocks``).

    No scale group may straddle two chunks, so that every chunk computes the scales the
    whole array would:

    * blocks (MX, NVFP4, ggml, ``int4_block32``...) along ``spec.axis``: every chunk along
      that axis but the last must hold whole blocks (a multiple of the block size; of the
      Hadamard size too), else ValueError; 2-D tiles the same along the last two axes;
    * per-channel / per-token scales: the array is rechunked to one chunk along the axis;
    * one scale per tensor (per-tensor recipes, NVFP4's tensor scale, ``stack="te"``):
      one chunk (unless a static ``amax`` fixes the scale: then any chunks do);
    * stochastic rounding keys its bits to the element index: one chunk only.
    """
    as_float(np.empty(0, x.dtype))  # the dtype error of the NumPy path, now
    nd = x.ndim
    whole = spec.stack == "te" or (spec.amax is None and (
        spec.granularity == "tensor" or spec.tensor_scale))
    if nd == 0 or whole:
        x = x.rechunk(-1)
    elif spec.granularity in ("channel", "token") or (
            isinstance(spec.hadamard, int) and spec.granularity != "block"):
        x = x.rechunk({_blocks.check_axis(spec.axis, nd): -1})
    elif spec.granularity == "block":
        tiles = isinstance(spec.block_size, tuple)
        axes = (nd - 2, nd - 1) if tiles else (_blocks.check_axis(spec.axis, nd),)
        sizes = spec.block_size if tiles else (spec.block_size,)
        for ax, k in zip(axes, sizes):
            if isinstance(spec.hadamard, int):
                k = int(np.lcm(k, spec.hadamard))
            if any(c % k for c in x.chunks[ax][:-1]):
                raise ValueError(
                    f"x: the chunks {x.chunks[ax]} of the dask array along axis {ax} split "
                    f"the recipe's blocks of {k} ({spec.describe()}): every chunk but the "
                    f"last must be a multiple of {k}; rechunk, e.g. "
                    f"x.rechunk({{{ax}: {k * max(1, x.chunks[ax][0] // k)}}})")
    if spec.rounding == "stochastic" and x.npartitions > 1:
        raise ValueError(f"rounding='stochastic' keys its random bits to each element's index; "
                         f"x is a dask array of {x.npartitions} chunks: pass x.rechunk(-1)")
    return x.map_blocks(fake_quantize, spec, rng=rng, dtype=x.dtype,
                        meta=np.empty((0,) * nd, x.dtype))
