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

__all__ = [
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
