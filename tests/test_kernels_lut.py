"""fpsim._kernels.lut's fused fake-quantization: the arithmetic rounding against the table.

The table (values of the generic scalar kernel, itself checked against ml_dtypes, gfloat and
the pure-Python reference in tests/test_codec.py) is the oracle. For the formats the table
serves, a float32's value depends on its top 16 bits and on whether its low 16 bits are zero,
so every top half with the low halves 0, 1, 0x7FFF, 0x8000 and 0xFFFF covers each input class.
"""

import math

import numpy as np
import pytest

from fpsim import dispatch
from fpsim._kernels import lut
from fpsim._kernels import scalar as cast
from fpsim.formats import FloatFormat, get_format, list_formats

LOWS = (0, 1, 0x7FFF, 0x8000, 0xFFFF)
TABLE_FORMATS = [n for n in list_formats() if dispatch.hi16_ok(get_format(n))]
ARITH_FORMATS = [n for n in TABLE_FORMATS
                 if dispatch.arith_params(get_format(n), cast.NEAREST_EVEN) != dispatch.NO_ARITH]


def _inputs() -> np.ndarray:
    hi = np.arange(1 << 16, dtype=np.uint32) << 16
    return np.concatenate([hi | low for low in LOWS]).view(np.float32)


def _table_values(x, table):
    """The table's values of float32 x; a NaN stays NaN also where the format has none."""
    b = x.view(np.uint32).astype(np.int64)
    v = table[(b >> 16) + np.where((b & 0xFFFF) != 0, 1 << 16, 0)]
    return np.where(np.isnan(x) & ~np.isnan(v), np.float32(np.nan), v)


def _beyond_max(x, fmt) -> np.ndarray:
    """NaN, Inf, and the inputs that round (nearest-even, unbounded) beyond fmt.max."""
    if isinstance(fmt, FloatFormat):
        ulp = 2.0 ** (math.frexp(fmt.max)[1] - 1 - fmt.mantissa_bits)
    else:
        ulp = 2.0 ** fmt.scale_exp
    edge = fmt.max + ulp / 2  # the midpoint above max: a tie goes to the even side
    max_is_odd = (fmt.max / ulp) % 2 == 1
    with np.errstate(invalid="ignore"):  # (signalling NaNs)
        ax = np.abs(x.astype(np.float64))
    return ~np.isfinite(x) | (ax > edge) | ((ax == edge) & max_is_odd)


def test_the_common_formats_take_the_arithmetic():
    for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
                 "float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn", "int8", "int4"):
        assert name in ARITH_FORMATS, name
    # not nearest-even, or no zero / no sign: the table only
    assert dispatch.arith_params(get_format("float8_e8m0fnu"), cast.NEAREST_EVEN) == dispatch.NO_ARITH
    assert dispatch.arith_params(get_format("float8_e4m3fn"), cast.TOWARD_ZERO) == dispatch.NO_ARITH


@pytest.mark.parametrize("saturate", [False, True])
@pytest.mark.parametrize("name", ARITH_FORMATS)
def test_arithmetic_equals_the_table_on_every_input_class(name, saturate):
    fmt = get_format(name)
    table = dispatch.hi16_table(fmt, cast.NEAREST_EVEN, saturate, np.dtype(np.float32))
    ap = dispatch.arith_params(fmt, cast.NEAREST_EVEN)
    x = _inputs()
    want = _table_values(x, table)
    # one element per row: each row is rounded by arithmetic unless it is a special
    out = np.empty_like(x)
    redone = lut.fake_quant_scaled(x.reshape(-1, 1), out.reshape(-1, 1), np.float32(1.0), table, ap)
    np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32))
    # the table did exactly the rows the arithmetic may not: NaN, Inf, beyond max,
    # and an integer format's asymmetric minimum
    special = _beyond_max(x, fmt)
    assert redone == int(special.sum())
    # and long rows of ordinary values vectorised, with a scale: still the table's values
    fine = x[~special][: 1 << 17]
    rows = fine[: fine.size // 512 * 512].reshape(-1, 512)
    scale = np.float32(0.375)
    out = np.empty_like(rows)
    assert lut.fake_quant_scaled(rows * scale, out, scale, table, ap) == 0
    want = _table_values((rows * scale) / scale, table) * scale
    np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("name", ["float8_e4m3fn", "int8"])
def test_a_row_with_a_special_is_redone_by_the_table(name):
    fmt = get_format(name)
    table = dispatch.hi16_table(fmt, cast.NEAREST_EVEN, False, np.dtype(np.float32))
    ap = dispatch.arith_params(fmt, cast.NEAREST_EVEN)
    x = np.linspace(-fmt.max, fmt.max, 3 * 64, dtype=np.float32).reshape(3, 64)
    x[1, 7] = np.nan
    x[2, 0] = 2 * fmt.max
    out = np.empty_like(x)
    assert lut.fake_quant_scaled(x, out, np.float32(1.0), table, ap) == 2
    np.testing.assert_array_equal(out.view(np.uint32), _table_values(x, table).view(np.uint32))


def test_table_only_formats_give_the_table():
    fmt = FloatFormat(exponent_bits=3, mantissa_bits=2, subnormals=False, name="nosub_e3m2")
    assert dispatch.arith_params(fmt, cast.NEAREST_EVEN) == dispatch.NO_ARITH
    table = dispatch.hi16_table(fmt, cast.NEAREST_EVEN, True, np.dtype(np.float32))
    x = np.linspace(-20, 20, 256, dtype=np.float32).reshape(4, 64)
    out = np.empty_like(x)
    assert lut.fake_quant_scaled(x, out, np.float32(1.0), table, dispatch.NO_ARITH) == 4
    np.testing.assert_array_equal(out, _table_values(x, table))
