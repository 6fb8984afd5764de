"""fpsim: bit-exact simulation of low-precision number formats for deep learning."""

from . import data, metrics, models
from .accumulate import (
    ACCUMULATORS,
    AccumulationReport,
    AccumulatorFormat,
    AccumulatorOverflowWarning,
    qdot,
    qmatmul,
)
from .codec import decode, encode, quantize
from .formats import (
    FloatFormat,
    IntFormat,
    finfo,
    get_format,
    iinfo,
    list_formats,
    p3109,
)
from .metrics import ErrorReport, error_report
from .outliers import (
    LLMInt8Details,
    llm_int8_fake_quantize,
    llm_int8_matmul,
    smooth,
    smoothing_factors,
    smoothquant_matmul,
)
from .rounding import ROUNDINGS
from .scaling import (
    DelayedScaling,
    QuantizedTensor,
    QuantSpec,
    calibrate,
    fake_quantize,
    quantize_tensor,
    recipe,
)

__all__ = [
    "ACCUMULATORS",
    "AccumulationReport",
    "AccumulatorFormat",
    "AccumulatorOverflowWarning",
    "qdot",
    "qmatmul",
    "LLMInt8Details",
    "llm_int8_fake_quantize",
    "llm_int8_matmul",
    "smooth",
    "smoothing_factors",
    "smoothquant_matmul",
    "data",
    "metrics",
    "models",
    "ErrorReport",
    "error_report",
    "DelayedScaling",
    "QuantizedTensor",
    "QuantSpec",
    "calibrate",
    "fake_quantize",
    "quantize_tensor",
    "recipe",
    "ROUNDINGS",
    "decode",
    "encode",
    "quantize",
    "FloatFormat",
    "IntFormat",
    "finfo",
    "get_format",
    "iinfo",
    "list_formats",
    "p3109",
]
__version__ = "0.1.0"
