"""Argument validation of the scaled-quantization entry points (table-driven)."""

import numpy as np
import pytest

import fpsim
from fpsim.quant import blocks
from fpsim import quant as scaling
from fpsim.quant import _groups as groups_mod

X2 = np.ones((2, 3), np.float32)
X1 = np.ones(4, np.float32)
MASKED = np.ma.masked_array(np.array([1.0, 2.0], np.float32), mask=[False, True])

# Every QuantSpec field given a value of the wrong type: (field, bad value, exception, words).
BAD_FIELDS = [
    ("symmetric", "False", TypeError, "symmetric"),
    ("symmetric", 0, TypeError, "symmetric"),
    ("tensor_scale", "yes", TypeError, "tensor_scale"),
    ("tensor_scale", 1, TypeError, "tensor_scale"),
    ("saturate", "True", TypeError, "saturate"),
    ("axis", 1.0, TypeError, "axis"),
    ("axis", True, TypeError, "axis"),
    ("block_size", 32.0, TypeError, "block_size"),
    ("block_size", True, TypeError, "block_size"),
    ("block_size", (128, 128.0), TypeError, "block_size"),
    ("block_size", 0, ValueError, "block_size"),
    ("block_size", (128,), ValueError, "block_size"),
    ("percentile", "50", TypeError, "percentile"),
    ("percentile", True, TypeError, "percentile"),
    ("percentile", float("nan"), ValueError, "percentile"),
    ("percentile", 100.5, ValueError, "percentile"),
    ("granularity", 3, TypeError, "granularity"),
    ("calibration", None, TypeError, "calibration"),
    ("scale_rule", "round", ValueError, "scale_rule"),
    ("scale_format", "int8", ValueError, "scale_format"),
    ("scale_format", "ocp_int8", ValueError, "scale_format"),
    ("scale_format", 8, TypeError, "scale_format"),
    ("rounding", "nearest", ValueError, "nearest"),
    ("amax", "3.0", TypeError, "amax"),
    ("amax", (1.0, "x"), TypeError, "amax"),
    ("amax", -1.0, ValueError, "amax"),
    ("amax", float("inf"), ValueError, "amax"),
    ("amin", (1.0,), ValueError, "amin"),
    ("name", 3, TypeError, "name"),
]


@pytest.mark.parametrize("field, value, exc, words", BAD_FIELDS)
def test_quantspec_field_types(field, value, exc, words):
    with pytest.raises(exc, match=words):
        scaling.QuantSpec(format="int8", **{field: value})
    with pytest.raises(exc, match=words):  # the same through a recipe override
        fpsim.recipe("int8", **{field: value})


@pytest.mark.parametrize(
    "overrides, attr, expected",
    [
        (dict(block_size=np.int64(32)), "is_mx", True),
        (dict(block_size=np.int32(16)), "block_size", 16),
        (dict(axis=np.int64(0)), "axis", 0),
        (dict(block_size=(np.int64(64), np.uint16(64))), "block_size", (64, 64)),
        (dict(percentile=np.float32(99.0)), "percentile", 99.0),
        (dict(percentile=np.int64(90)), "percentile", 90.0),
    ],
)
def test_numpy_scalars_are_accepted(overrides, attr, expected):
    spec = fpsim.recipe("mxfp8_e4m3", **overrides)
    got = getattr(spec, attr)
    assert got == expected and type(got) is type(expected)


def test_numpy_integer_block_size_runs_the_mx_kernel():
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    np.testing.assert_array_equal(fpsim.fake_quantize(x, "mxfp8_e4m3", block_size=np.int64(32)),
                                  fpsim.fake_quantize(x, "mxfp8_e4m3"))


ENTRY_POINTS = [
    lambda x, r, **kw: fpsim.fake_quantize(x, r, **kw),
    lambda x, r, **kw: fpsim.quantize_tensor(x, r, **kw),
    lambda x, r, **kw: fpsim.calibrate(x, r, **kw),
]
AXIS_RECIPES = ["int8_channel", "int8_token", "int8_asym", "int4_block32", "mxfp8_e4m3",
                "mxint8", "nvfp4", "fp8_deepseek_activation", "e4m3fn"]


# calibrate() refuses block recipes (nothing to calibrate): not in the table
AXIS_CASES = [(e, n) for e in range(len(ENTRY_POINTS)) for n in AXIS_RECIPES
              if e != 2 or not (fpsim.recipe(n).is_mx or fpsim.recipe(n).tensor_scale)]


@pytest.mark.parametrize("entry, name", AXIS_CASES)
@pytest.mark.parametrize("axis", [2, 5, -3])
def test_axis_out_of_range(entry, name, axis):
    spec = fpsim.recipe(name)
    granularity = {} if spec.granularity != "tensor" else dict(granularity="channel")
    with pytest.raises(ValueError, match=rf"axis.*{axis}.*ndim.*2"):
        ENTRY_POINTS[entry](X2, name, axis=axis, **granularity)


def test_axis_in_range_counts_from_the_end():
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    np.testing.assert_array_equal(fpsim.fake_quantize(x, "int8_channel", axis=-2),
                                  fpsim.fake_quantize(x, "int8_channel", axis=0))


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: fpsim.fake_quantize(MASKED, "int8"), TypeError, "masked"),
        (lambda: fpsim.quantize_tensor(MASKED, "mxfp8_e4m3"), TypeError, "masked"),
        (lambda: fpsim.calibrate(MASKED, "int8"), TypeError, "masked"),
        (lambda: fpsim.calibrate([MASKED], "int8"), TypeError, "masked"),
        (lambda: fpsim.DelayedScaling()(MASKED), TypeError, "masked"),
        (lambda: fpsim.DelayedScaling(margin=2000), ValueError, "margin"),
        (lambda: fpsim.DelayedScaling(margin=-2000), ValueError, "margin"),
        (lambda: fpsim.DelayedScaling(margin=1.5), TypeError, "margin"),
        (lambda: fpsim.DelayedScaling(margin=True), TypeError, "margin"),
        (lambda: fpsim.DelayedScaling(history_len=0), ValueError, "history_len"),
        (lambda: fpsim.DelayedScaling(history_len=2.0), TypeError, "history_len"),
        (lambda: fpsim.DelayedScaling(algo="mean"), ValueError, "algo"),
        (lambda: fpsim.fake_quantize(X1, "int8_asym", calibration="mse"), ValueError,
         "calibration"),
        (lambda: fpsim.fake_quantize(X1, "int8_asym", calibration="kl"), ValueError,
         "calibration"),
        (lambda: blocks.mx_encode(X1, "e4m3fn", block_size=2.5), TypeError, "block_size"),
        (lambda: blocks.mx_encode(X1, "e4m3fn", block_size=True), TypeError, "block_size"),
        (lambda: blocks.mx_encode(X1, "e4m3fn", axis=1.0), TypeError, "axis"),
        (lambda: blocks.nvfp4_encode(X1, block_size=2.5), TypeError, "block_size"),
        (lambda: blocks.nvfp4_encode(X1, tensor_amax=-1.0), ValueError, "tensor_amax"),
        (lambda: blocks.nvfp4_encode(np.ma.masked_array(X1)), TypeError, "masked"),
    ],
)
def test_invalid_arguments(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


@pytest.mark.parametrize("call", [
    lambda: fpsim.fake_quantize(X2, "int1"),  # the fused kernel (it divided by max = 0)
    lambda: fpsim.fake_quantize(X2, "int1", calibration="mse"),  # the general path (NaN)
    lambda: fpsim.quantize_tensor(X2, "int1"),
    lambda: fpsim.recipe("int1"),
])
def test_a_symmetric_recipe_needs_a_positive_max(call):
    # int1 holds -1 and 0: symmetric scaling maps amax onto max = 0, which no scale does
    with pytest.raises(ValueError, match="int1.*symmetric=False"):
        call()
    # the affine form works: [-1, 0] spans the range
    np.testing.assert_array_equal(fpsim.fake_quantize(X2 - 0.5, "int1", symmetric=False), X2 - 0.5)


def test_margin_in_range_works():
    ds = fpsim.DelayedScaling("e4m3fn", margin=np.int64(3), history_len=np.int64(2))
    ds(np.array([448.0], np.float32))
    assert ds.scale == np.float32(8.0)
    big = fpsim.DelayedScaling("e4m3fn", margin=127)
    big(np.array([3e38], np.float32))
    assert np.isfinite(big.scale) and big.scale > 0
