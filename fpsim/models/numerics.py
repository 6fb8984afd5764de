"""Numerics of other stacks that the models reproduce bit for bit: PyTorch's
``torch.ao.quantization.quantize_dynamic`` int8 linear.
"""

from __future__ import annotations

import numpy as np

from ..quant import int_matmul

__all__ = ["torch_dynamic_int8_linear"]


def _fma32(a: np.ndarray, b, c) -> np.ndarray:
    """float32 ``a * b + c`` rounded once (up to a double rounding through float64 in the
    sum, which needs a sum within 2**-29 relative of a float32 tie)."""
    return (a.astype(np.float64) * np.float64(b) + np.asarray(c, np.float64)).astype(np.float32)


def torch_dynamic_int8_linear(x: np.ndarray, w: np.ndarray,
                              b: np.ndarray | None = None) -> np.ndarray:
    """``x @ w (+ b)`` with the numerics of PyTorch's dynamic quantization of nn.Linear.

    ``torch.ao.quantization.quantize_dynamic`` with its default qconfig (fbgemm / x86
    engine), step by step as its kernels do, in float32:

    * weights per-tensor symmetric qint8: scale ``max|w| / 127.5``, ``round(w / scale)``
      (half to even, in float32) clamped to [-128, 127];
    * activations on every call, per tensor, affine quint8 with ``reduce_range``:
      range [0, 127], scale ``(max - min) / 127`` over the range widened to include 0,
      zero point ``-round(min / scale)``, ``round(fma(x, 1 / scale, zero point))``;
    * products summed exactly in int32;
    * output ``fma(float32(acc), float32(s_x * s_w), b)``.

    ``tests/golden/make_torch_dynamic_golden.py`` records torch 2.13's outputs; this
    function reproduces them bit for bit (``tests/test_models_quant.py``).
    """
    w32 = np.asarray(w, dtype=np.float32)
    amax_w = float(np.max(np.abs(w32))) if w32.size else 0.0
    s_w = np.float32(amax_w / 127.5) if amax_w > 0 else np.float32(1.0)
    wq = np.clip(np.rint(w32 / s_w), -128, 127)
    x2 = np.asarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    lo = min(float(x2.min()) if x2.size else 0.0, 0.0)
    hi = max(float(x2.max()) if x2.size else 0.0, 0.0)
    s_x = np.float32((hi - lo) / 127.0) if hi > lo else np.float32(1.0)
    zp = int(np.clip(-np.rint(lo / ((hi - lo) / 127.0)), 0, 127)) if hi > lo else 0
    xq = np.clip(np.rint(_fma32(x2, np.float32(1.0) / s_x, np.float32(zp))), 0, 127)
    acc = int_matmul(xq - np.float32(zp), wq)  # exact, as int32 is while it does not wrap
    bias = np.float32(0.0) if b is None else np.asarray(b, dtype=np.float32)
    y = _fma32(acc.astype(np.float32), np.float32(s_x * s_w), bias)
    return y.reshape(*x.shape[:-1], w.shape[-1])
