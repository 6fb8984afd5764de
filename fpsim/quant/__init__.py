"""Scaled quantization of tensors: what a quantization is, and doing it.

=================  ==========================================================
``spec``           :class:`QuantSpec`, the named recipes, :func:`resolve_spec`
``_groups``        (internal) scale groups of an array, walked in chunks
``calibration``    clip values (max, percentile, MSE, KL) and :func:`calibrate`
``recipes``        :func:`quantize_tensor`, :func:`fake_quantize`
``blocks``         OCP MX and NVFP4 block kernels' wrappers
``delayed``        :class:`DelayedScaling` (Transformer Engine)
``outliers``       LLM.int8() and SmoothQuant
``accumulate``     low-precision accumulation: :func:`qmatmul`, :func:`qdot`
``mma``            GPU matrix units bit for bit (``from fpsim import mma``)
``_args``          (internal) renamed keywords, the ``return_details`` flag
=================  ==========================================================

Everything here sits on :mod:`fpsim.codec` and :mod:`fpsim._kernels`; nothing here
imports the metrics, the models or the application.
"""

from .accumulate import (
    ACCUMULATORS,
    AccumulationReport,
    AccumulatorFormat,
    AccumulatorOverflowWarning,
    int_matmul,
    qdot,
    qmatmul,
)
from .calibration import calibrate, clip_value
from .delayed import DelayedScaling
from .outliers import (
    LLMInt8Details,
    llm_int8_fake_quantize,
    llm_int8_matmul,
    smooth,
    smoothing_factors,
    smoothquant_matmul,
)
from .recipes import QuantizedTensor, fake_quantize, hadamard_signs, quantize_tensor
from .spec import (
    CALIBRATIONS,
    GRANULARITIES,
    KEEP,
    OVERRIDABLE,
    RECIPES,
    SCALE_RULES,
    QuantSpec,
    recipe,
    resolve_spec,
)

__all__ = [
    "ACCUMULATORS", "AccumulationReport", "AccumulatorFormat", "AccumulatorOverflowWarning",
    "int_matmul", "qdot", "qmatmul", "calibrate", "clip_value", "DelayedScaling", "LLMInt8Details",
    "llm_int8_fake_quantize", "llm_int8_matmul", "smooth", "smoothing_factors",
    "smoothquant_matmul", "QuantizedTensor", "fake_quantize", "hadamard_signs", "quantize_tensor",
    "CALIBRATIONS",
    "GRANULARITIES", "KEEP", "OVERRIDABLE", "RECIPES", "SCALE_RULES", "QuantSpec", "recipe",
    "resolve_spec",
]
