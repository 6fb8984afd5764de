"""(internal) Casts for the quant layer, on resolved arguments: straight to fpsim.dispatch.

:func:`fpsim.codec.encode`/``quantize``/``decode`` validate what users pass; inside the quant
layer the format is already a resolved object (a QuantSpec holds one) and the arrays are
float arrays, so a recipe's path goes down to the kernels without climbing back into codec
or looking a format up by name again (issue 10).
"""

from __future__ import annotations

import numpy as np

from .. import dispatch
from .._kernels import scalar as _scalar
from ..formats import get_format
from ..rounding import resolve_seed

#: the formats the recipes name themselves, resolved once
E4M3 = get_format("float8_e4m3fn")
E2M1 = get_format("float4_e2m1fn")
E8M0 = get_format("float8_e8m0fnu")

_FLOATS = (np.float16, np.float32, np.float64)


def _floats(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.type not in _FLOATS:
        a = a.astype(np.float64)
    return np.ascontiguousarray(a)


def _seed(mode, rng):
    return resolve_seed(rng) if (mode == _scalar.STOCHASTIC or rng is not None) \
        else np.uint64(0)


def encode(x, fmt, *, rounding="nearest_even", saturate=False, rng=None) -> np.ndarray:
    """Codes of float array ``x`` in the resolved format ``fmt``."""
    mode = dispatch.mode_for(fmt, rounding)
    return dispatch.encode_codes(_floats(x), fmt, mode, bool(saturate), _seed(mode, rng))


def quantize(x, fmt, *, rounding="nearest_even", saturate=False, rng=None) -> np.ndarray:
    """Float array ``x`` rounded onto the resolved format ``fmt``, in x's dtype."""
    mode = dispatch.mode_for(fmt, rounding)
    return dispatch.quantize_values(_floats(x), fmt, mode, bool(saturate), _seed(mode, rng))


def decode(codes, fmt, *, dtype=np.float32) -> np.ndarray:
    """Values of the (in-range) codes of the resolved format ``fmt``."""
    return dispatch.decode_codes(np.asarray(codes), fmt, dtype)
