"""Quantization-aware training (QAT) in NumPy: backward passes, fake-quantization
gradients and distillation of a quantized student from its FP32 teacher.

* :mod:`fpsim.qat.backward` -- the backward pass of every layer the models use (linear,
  embedding, LayerNorm, RMSNorm, GELU, SiLU/SwiGLU, softmax attention with masks and
  grouped-query heads, RoPE) and the distillation losses;
* :mod:`fpsim.qat.fakequant` -- the straight-through estimator (plain or clipped) through
  any recipe, and LSQ's learned step sizes;
* :mod:`fpsim.qat.quantizer` -- a QuantConfig's sites as differentiable fake quantizers;
* :mod:`fpsim.qat.bert_grad`, :mod:`fpsim.qat.llama_grad` -- the models' forward passes
  keeping what their backward passes need;
* :mod:`fpsim.qat.distill` -- :func:`train`, the distillation loop (Adam), also
  ``fpsim.qat.train``.
"""

from __future__ import annotations

import importlib as _importlib

__all__ = ["QATResult", "train"]


def __getattr__(name):
    if name in ("backward", "fakequant", "quantizer", "bert_grad", "llama_grad", "distill"):
        return _importlib.import_module(f"{__name__}.{name}")
    if name in ("train", "QATResult", "qat_config"):
        return getattr(_importlib.import_module(f"{__name__}.distill"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
