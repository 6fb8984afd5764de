"""fpsim: bit-exact simulation of low-precision number formats for deep learning.

The package is built in layers, each importing only from the ones before it
(``tests/test_layers.py`` enforces it; ``docs/api.md`` draws the map)::

    formats, rounding -> _kernels -> codec -> quant/ -> metrics -> measure, strategies
        -> plotting -> data, models/ -> qat/ -> app/         (reference/: the oracles)

``fpsim.models``, ``fpsim.data``, ``fpsim.plotting``, ... load on first use.
"""

import importlib as _importlib

from . import _compat, metrics
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
from .measure import ErrorReport, error_report
from .quant import (
    ACCUMULATORS,
    AccumulationReport,
    AccumulatorFormat,
    AccumulatorOverflowWarning,
    DelayedScaling,
    LLMInt8Details,
    QuantizedTensor,
    QuantSpec,
    calibrate,
    fake_quantize,
    llm_int8_fake_quantize,
    llm_int8_matmul,
    qdot,
    qmatmul,
    quantize_tensor,
    recipe,
    smooth,
    smoothing_factors,
    smoothquant_matmul,
)
from .rounding import ROUNDINGS

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
    "sweep",
]
__version__ = "0.1.0"

#: Subpackages and modules imported on first attribute access.
_LAZY = ("data", "models", "measure", "plotting", "strategies", "reference", "app", "quant",
         "mma", "qat")


def sweep(**kwargs):
    """Run a grid of models x presets x seeds (and tensors x recipes) on a Dask cluster:
    :func:`fpsim.app.sweep.sweep`, loaded on first call (it needs ``fpsim[sweep]``)."""
    return _importlib.import_module(f"{__name__}.app.sweep").sweep(**kwargs)


def __getattr__(name):
    """``fpsim.models``, ``fpsim.data``, ...: imported on first use, so the base of the
    package never depends on its top."""
    if name in _LAZY:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


_compat.install()
