"""torchao's MX and NVFP4 quantizers, bit for bit (torchao 0.18, eager PyTorch on float32).

The recipes ``mxfp8_e4m3_torchao`` ... ``mxfp4_e2m1_torchao`` and ``nvfp4_torchao`` run these
functions; each step below is the float32 operation torchao's reference code performs
(``torchao.prototype.mx_formats``: ``mx_tensor.to_mx`` / ``to_dtype`` and
``nvfp4_tensor.nvfp4_quantize`` / ``NVFP4Tensor.dequantize``), so every code, scale and
dequantized value is torchao's (tests compare them with golden data its own code made,
``tests/golden/make_torchao_golden.py``).

MX, blocks of ``block_size`` along ``axis``, ``amax`` the block's largest magnitude
(float32), ``emax`` the exponent of the element format's largest power of two:

* ``floor``: ``e = exponent_field(amax) - 127 - emax`` (the float32 bits; a float32
  subnormal amax has exponent -127), ``even``: the same after rounding amax's significand
  to the element's mantissa bits (add half an element ulp to the bits, drop the rest), and
  ``ceil``: one more when amax's significand is not 1.  The E8M0 code is
  ``clip(e, -127, 128) + 127``; elements are ``x / max(2**e, 2**-126)`` (the scale is
  clamped to float32's smallest normal for the division, while the stored code keeps
  ``2**e``: block maxima below ``2**-126 * 2**emax`` dequantize at half or less of the
  value they were encoded at), clamped to +-max for FP8, cast with round-to-nearest-even.
* ``rceil`` (cuBLAS's rule, torchao's eager fallback): ``d = amax / max_elem`` (float32
  division), ``E = clip(ceil(log2(d)), -127, 127) + 127`` with ``log2`` rounded to float32;
  elements ``x * 2**(127 - E)`` (``x * 1.0`` when ``E == 0``), clamped to +-max, cast.
* Dequantization: ``element * 2**(E - 127)`` in float32 (NaN for code 255).

NVFP4 (blocks of 16 along ``axis``, FP4 E2M1 elements, E4M3 block scales), all float32:

* two-level (default): ``t = amax_tensor / 2688`` (``448 * 6``), block scale
  ``s = e4m3(clip((amax_block / 6) / t, 2**-6, 448))``, elements
  ``fp4(clip(x * ((1 / t) / s), -6, 6))``, dequantized ``fp4 * (t * s)``;
* single level (``tensor_scale=False``): ``s = e4m3(clip(amax_block / 6, 2**-6, 448))``,
  elements ``fp4(clip(x * (1 / s), -6, 6))``, dequantized ``fp4 * s``.

Documented choices where torchao gives no answer: lengths that are not a multiple of the
block are padded with zeros (torchao asserts), float64 input saturates to float32's range
before anything else (fpsim's rule for block recipes).  Where torchao's output is not a
number: NaN in a block makes its MX scale
code 255 (torchao: the whole block NaN), so NaN inputs are refused with a ValueError here,
as are infinities; an all-zero tensor under two-level NVFP4 (torchao divides 0 by 0) gives
zeros with tensor scale 0.
"""

from __future__ import annotations

import numpy as np

from ..formats import get_format
from ._cast import E2M1, E4M3, decode, encode

__all__ = ["TORCHAO_SCALE_RULES", "mx_quantize", "nvfp4_quantize"]

#: torchao's ScaleCalculationMode, by fpsim's scale_rule names
TORCHAO_SCALE_RULES = ("floor", "ceil", "even", "rceil")

_F32 = np.float32


def _blocks_last(x, axis: int, block: int, what: str) -> tuple[np.ndarray, int]:
    """x as float32 blocks (..., n_blocks, block) along ``axis`` (moved last), zero-padded,
    and the axis' length.  float64 beyond float32's range saturates to +-FLT_MAX."""
    x = np.asarray(x)
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: x holds NaN or Inf; torchao's quantizers turn them into "
                         "whole NaN blocks or NaN tensors, so fpsim refuses them here (use the "
                         "recipe without _torchao for fpsim's element-wise NaN rule)")
    if x.dtype != np.float32:
        big = float(np.finfo(np.float32).max)
        x = np.clip(x, -big, big).astype(np.float32)
    x = np.moveaxis(x, axis, -1)
    n = x.shape[-1]
    pad = -n % block  # torchao refuses such lengths; fpsim pads with zeros (amax unchanged)
    if pad:
        x = np.concatenate([x, np.zeros(x.shape[:-1] + (pad,), np.float32)], axis=-1)
    return np.ascontiguousarray(x).reshape(*x.shape[:-1], (n + pad) // block, block), n


def _unblock(a: np.ndarray, n: int, axis: int, move: bool = True) -> np.ndarray:
    a = a.reshape(*a.shape[:-2], a.shape[-2] * a.shape[-1])[..., :n]
    return np.moveaxis(a, -1, axis) if move else a


def _pow2_f32(e: np.ndarray) -> np.ndarray:
    """2.0**e as float32 for integer e in [-149, 127] (subnormals included)."""
    return np.ldexp(np.float32(1), e.astype(np.int32)).astype(np.float32)


def _emax(fmt) -> int:
    return int(np.floor(np.log2(float(fmt.max))))


def mx_quantize(x, fmt, *, block_size=32, scale_rule="floor", axis=-1):
    """torchao's ``to_mx`` and ``to_dtype``: E8M0 scale codes, element codes and the
    dequantized float32 values.

    Parameters
    ----------
    x : array_like of float
        Finite values (float64 beyond float32's range saturates to +-FLT_MAX first).  A
        length of ``axis`` that is not a multiple of ``block_size`` is padded with zeros
        (torchao refuses it; zeros change no block maximum).
    fmt : str or FloatFormat
        Element format: float8_e4m3fn, float8_e5m2, float6_e2m3fn, float6_e3m2fn or
        float4_e2m1fn.
    block_size : int
    scale_rule : {"floor", "ceil", "even", "rceil"}
        torchao's ScaleCalculationMode.
    axis : int
        The blocks' axis.

    Returns
    -------
    scale_codes : uint8 ndarray, x's shape with ``axis`` divided by ``block_size`` (moved last)
    codes : uint8 ndarray, x's shape with ``axis`` moved last
    values : float32 ndarray, x's shape

    Examples
    --------
    >>> s, c, v = mx_quantize(np.array([1.0, 3.0, 0.5, 500.0], np.float32), "e4m3fn",
    ...                       block_size=4)
    >>> s.tolist(), v.tolist()
    ([127], [1.0, 3.0, 0.5, 448.0])
    """
    fmt = get_format(fmt)
    if scale_rule not in TORCHAO_SCALE_RULES:
        raise ValueError(f"scale_rule must be one of {', '.join(TORCHAO_SCALE_RULES)} "
                         f"(torchao's ScaleCalculationMode), got {scale_rule!r}")
    xb, n = _blocks_last(x, axis, block_size, "mx_quantize")
    amax = np.abs(xb).max(axis=-1, keepdims=True) if xb.size else np.zeros(
        xb.shape[:-1] + (1,), np.float32)
    max_pos = _F32(fmt.max)
    emax = _emax(fmt)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        if scale_rule == "rceil":
            descale = amax / max_pos
            l2 = np.log2(descale.astype(np.float64)).astype(np.float32)
            e = np.clip(np.ceil(l2), -127, 127).astype(np.int32) + 127
            rcp = np.where(e == 0, _F32(1.0), _pow2_f32(127 - e))
            scaled = np.clip(xb * rcp, -max_pos, max_pos)
        else:
            bits = amax.view(np.int32)
            if scale_rule == "even":
                mbits = fmt.mantissa_bits
                bits = (bits + np.int32(1 << (23 - mbits - 1))) & np.int32(-(1 << 23))
            p2 = ((bits >> 23) & 0xFF) - 127
            if scale_rule == "ceil":
                p2 = p2 + ((bits & 0x7FFFFF) > 0)
            e = np.clip(p2 - emax, -127, 128) + 127
            scale = np.maximum(_pow2_f32(e - 127), _F32(2.0 ** -126))
            scaled = xb / scale
            if fmt.name in ("float8_e4m3fn", "float8_e5m2"):
                scaled = np.clip(scaled, -max_pos, max_pos)
    codes = encode(scaled.astype(np.float32), fmt, saturate=True)
    elems = decode(codes, fmt, dtype=np.float32)
    with np.errstate(over="ignore"):
        values = (elems * _pow2_f32(np.minimum(e, 254) - 127)).astype(np.float32)
    return (e[..., 0].astype(np.uint8),
            _unblock(np.asarray(codes), n, axis, move=False).astype(np.uint8),
            _unblock(values, n, axis))


def nvfp4_quantize(x, *, tensor_scale=True, axis=-1):
    """torchao's ``nvfp4_quantize`` (blocks of 16) and ``NVFP4Tensor.dequantize``: E4M3
    scale codes, FP4 codes, the dequantized float32 values and the per-tensor scale (1.0
    for the single-level variant).

    Examples
    --------
    >>> s, c, v, t = nvfp4_quantize(np.linspace(-3, 3, 16, dtype=np.float32))
    >>> bool(t == np.float32(3) / np.float32(2688)), round(float(np.abs(v - np.linspace(-3, 3, 16)).max()), 3)
    (True, 0.4)
    """
    xb, n = _blocks_last(x, axis, 16, "nvfp4_quantize")
    amax_b = np.abs(xb).max(axis=-1, keepdims=True) if xb.size else np.zeros(
        xb.shape[:-1] + (1,), np.float32)
    block_scale = amax_b / _F32(6.0)
    lo, hi = _F32(2.0 ** -6), _F32(448.0)
    if tensor_scale:
        t = _F32(np.abs(xb).max() if xb.size else 0.0) / _F32(2688.0)
        if t == 0:  # all zeros (torchao: 0 / 0); documented: zeros
            t_div = _F32(1.0)
        else:
            t_div = t
        s_codes = encode(np.clip(block_scale / t_div, lo, hi), E4M3, saturate=True)
        s = decode(s_codes, E4M3, dtype=np.float32)
        rcp = (_F32(1.0) / t_div) / s
        deq_scale = t * s
    else:
        t = _F32(1.0)
        s_codes = encode(np.clip(block_scale, lo, hi), E4M3, saturate=True)
        s = decode(s_codes, E4M3, dtype=np.float32)
        rcp = _F32(1.0) / s
        deq_scale = s
    scaled = np.clip(xb * rcp, _F32(-6.0), _F32(6.0))
    codes = encode(scaled.astype(np.float32), E2M1, saturate=True)
    values = (decode(codes, E2M1, dtype=np.float32) * deq_scale).astype(np.float32)
    return (np.asarray(s_codes)[..., 0].astype(np.uint8),
            _unblock(np.asarray(codes), n, axis, move=False).astype(np.uint8),
            _unblock(values, n, axis), t)
