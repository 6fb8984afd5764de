"""fpsim: bit-exact simulation of low-precision number formats for deep learning."""

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
