"""QuantSpec, recipes, quantize_tensor / fake_quantize, calibration and delayed scaling."""

import json
import os

import numpy as np
import pytest

import fpsim
from fpsim import scaling

JIT_DISABLED = os.environ.get("NUMBA_DISABLE_JIT", "0") == "1"
RECIPES = sorted(scaling.RECIPES) + ["e4m3fn", "float8_e5m2", "bfloat16", "p3109_p4"]


def data(shape=(16, 96), seed=0, dist="normal"):
    rng = np.random.default_rng(seed)
    if dist == "t":
        return rng.standard_t(3, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name", RECIPES)
def test_dequantize_equals_fake_quantize(name):
    x = data()
    qt = fpsim.quantize_tensor(x, name)
    np.testing.assert_array_equal(qt.dequantize(), fpsim.fake_quantize(x, name))
    assert qt.codes.shape == x.shape and qt.shape == x.shape
    assert qt.bits_per_value >= qt.spec.format.bits


@pytest.mark.parametrize("name", RECIPES)
def test_elements_within_format_and_no_nan_scales(name):
    x = data(seed=1, dist="t")
    x[0] = 0.0  # a zero row
    qt = fpsim.quantize_tensor(x, name)
    elems = fpsim.decode(qt.codes, qt.spec.format, dtype=np.float64)
    fmt = qt.spec.format
    lo = fmt.min if isinstance(fmt, fpsim.IntFormat) else -fmt.max
    assert (elems >= lo).all() and (elems <= fmt.max).all()
    s = np.asarray(qt.scales, dtype=np.float64)
    assert np.isfinite(s).all() and (s > 0).all()


def test_int8_per_tensor_hand_derived():
    # amax 4 -> scale 4 / 127; 0.5 / scale = 15.875 -> 16; -1 -> -31.75 -> -32; 2 -> 63.5 -> 64
    # (ties to even); 4 -> 127.
    x = np.array([0.5, -1.0, 2.0, 4.0], np.float32)
    qt = fpsim.quantize_tensor(x, "int8")
    assert qt.codes.tolist() == [16, -32, 64, 127]
    assert qt.scales == np.float32(4 / 127)


def test_channel_and_token_granularity():
    x = data((6, 10))
    per_row = fpsim.fake_quantize(x, "int8_channel")  # axis=-1: one scale per row
    manual = np.stack([fpsim.fake_quantize(r, "int8") for r in x])
    np.testing.assert_array_equal(per_row, manual)
    per_col = fpsim.fake_quantize(x, "int8", granularity="channel", axis=0)
    manual = np.stack([fpsim.fake_quantize(c, "int8") for c in x.T], axis=1)
    np.testing.assert_array_equal(per_col, manual)
    assert fpsim.quantize_tensor(x, "int8_token").scales.shape == (6, 1)


def test_block_granularity_matches_manual_blocks():
    x = data((3, 40))
    got = fpsim.fake_quantize(x, "e4m3fn", granularity="block", block_size=16)
    for r in range(3):
        for b0 in range(0, 40, 16):
            seg = x[r, b0:b0 + 16]
            np.testing.assert_array_equal(got[r, b0:b0 + 16], fpsim.fake_quantize(seg, "e4m3fn"))


def test_deepseek_tiles():
    x = data((200, 300), seed=2)
    qt = fpsim.quantize_tensor(x, "fp8_deepseek_weight")
    assert qt.scales.shape == (2, 3)
    tile = x[128:200, 256:300]
    np.testing.assert_array_equal(qt.dequantize()[128:, 256:], fpsim.fake_quantize(tile, "e4m3fn"))
    assert qt.scales[1, 2] == np.float32(np.abs(tile).max() / 448)
    act = fpsim.quantize_tensor(x, "fp8_deepseek_activation")
    assert act.scales.shape == (200, 3)


def test_asymmetric_int8_hand_derived():
    # min 0, max 2.55 -> scale 0.01 (float32), zero point round(-128 - 0 / 0.01) = -128;
    # 1.0 -> 100 - 128 = -28 -> dequantized (-28 + 128) * 0.01 = 1.0
    x = np.array([0.0, 1.0, 2.55], np.float32)
    qt = fpsim.quantize_tensor(x, "int8_asym")
    assert qt.zero_points == -128
    assert qt.codes.tolist() == [-128, -28, 127]
    np.testing.assert_allclose(qt.dequantize(), x, atol=0.005)


def test_mx_recipe_uses_block_kernel_and_overrides():
    x = data((4, 64))
    a = fpsim.fake_quantize(x, "mxfp8_e4m3", scale_rule="rceil", axis=0)
    b, _ = fpsim.blocks.mx_fake_quantize(x, "e4m3fn", scale_rule="rceil", axis=0)
    np.testing.assert_array_equal(a, b)
    qt = fpsim.quantize_tensor(x, "mxfp4_e2m1")
    assert qt.bits_per_value == 4.25 and qt.scale_codes.dtype == np.uint8


def test_nvfp4_storage():
    x = data((4, 64))
    qt = fpsim.quantize_tensor(x, "nvfp4")
    # 4 bits per element, one E4M3 byte per 16, and one FP32 tensor scale
    assert qt.nbytes == (256 * 4 + 16 * 8 + 32) // 8
    np.testing.assert_array_equal(qt.dequantize(), fpsim.blocks.nvfp4_encode(x)[0])


@pytest.mark.parametrize("cal", scaling.CALIBRATIONS)
def test_calibrations_clip_within_amax(cal):
    x = data((1, 4000), seed=3, dist="t")
    spec = fpsim.recipe("int8", calibration=cal)
    clip = scaling.clip_value(x, spec)
    assert 0 < clip[0, 0] <= np.abs(x).max()


def test_mse_calibration_beats_max_on_heavy_tails():
    x = data((1, 20000), seed=4, dist="t")

    def err(cal):
        return float(np.mean((fpsim.fake_quantize(x, "int4", calibration=cal) - x) ** 2))

    assert err("mse") < err("max")
    assert err("percentile") < err("max")


def test_static_calibration():
    spec = fpsim.calibrate(np.array([1.0, -3.0, 2.0], np.float32), "int8")
    assert spec.amax == (3.0,)
    y = fpsim.fake_quantize(np.array([6.0, 1.5], np.float32), spec)
    assert y.tolist() == [3.0, np.float32(np.float32(3 / 127) * 64)]  # 6 clips to 3
    chan = fpsim.calibrate(data((5, 8)), "int8_channel")
    assert len(chan.amax) == 5
    with pytest.raises(ValueError, match="no finite values"):
        fpsim.calibrate(np.array([np.nan, np.inf]), "int8")
    with pytest.raises(ValueError, match="scale groups"):
        fpsim.fake_quantize(data((4, 8)), chan)


def test_specials_and_empty():
    x = np.array([np.nan, np.inf, -np.inf, 1.0, -2.0], np.float32)
    y = fpsim.fake_quantize(x, "e4m3fn")
    assert np.isnan(y[0]) and y[1] == 2.0 and y[2] == -2.0 and y[3] == 1.0
    z = fpsim.fake_quantize(np.zeros(7, np.float32), "int8")
    assert (z == 0).all()
    assert fpsim.fake_quantize(np.zeros((0, 4), np.float32), "int8_channel").shape == (0, 4)
    assert fpsim.fake_quantize(np.zeros((3, 0), np.float32), "mxfp8_e4m3").shape == (3, 0)
    assert fpsim.quantize_tensor(np.zeros(0, np.float32), "int8").nbytes == 4


def test_delayed_scaling():
    ds = fpsim.DelayedScaling("e4m3fn", history_len=2, margin=1)
    y0 = ds(np.array([896.0, 1.0], np.float32))  # step 0 uses scale 1: 896 saturates
    assert y0.tolist() == [448.0, 1.0] and ds.overflows == 1
    assert ds.scale == np.float32(896 * 2 / 448)
    ds(np.array([10.0], np.float32))
    ds(np.array([10.0], np.float32))  # 896 has left the history of length 2
    assert ds.scale == np.float32(10 * 2 / 448)
    recent = fpsim.DelayedScaling("e4m3fn", algo="most_recent")
    recent(np.array([100.0], np.float32))
    recent(np.array([1.0], np.float32))
    assert recent.scale == np.float32(1 / 448)


def test_spec_describe_and_recipe_names():
    s = fpsim.recipe("nvfp4")
    assert "tensor scale" in s.describe()
    assert fpsim.recipe("E4M3FN").format.name == "float8_e4m3fn"
    assert json.dumps(s.describe())


@pytest.mark.parametrize(
    "call, exc, fragment",
    [
        (lambda: fpsim.fake_quantize(np.ones(4), "mxfp8_e4m4"), ValueError, "mxfp8_e4m3"),
        (lambda: fpsim.fake_quantize(np.ones(4), "int8", granularity="row"), ValueError,
         "granularity"),
        (lambda: fpsim.fake_quantize(np.ones(4), "int8", calibration="entropy"), ValueError,
         "calibration"),
        (lambda: fpsim.fake_quantize(np.ones(4), "int8", granularity="channel", axis=2),
         ValueError, "axis"),
        (lambda: fpsim.fake_quantize(np.ones(4), "int8", granularity="block", block_size=0),
         ValueError, "block_size"),
        (lambda: fpsim.fake_quantize(np.ones(4), "int8", bogus=1), TypeError, "bogus"),
        (lambda: fpsim.fake_quantize(np.ones(4), "e4m3fn", symmetric=False), ValueError,
         "integer format"),
        (lambda: fpsim.fake_quantize(np.ones(4), "int8", scale_rule="floor",
                                     scale_format="bfloat16"), ValueError, "power-of-two"),
        (lambda: fpsim.fake_quantize(np.ones(4), "int8", percentile=0), ValueError,
         "percentile"),
        (lambda: fpsim.fake_quantize(np.arange(4), "int8"), TypeError, "float"),
        (lambda: fpsim.fake_quantize(np.ones(4), 3.0), TypeError, "recipe name"),
        (lambda: fpsim.fake_quantize(np.ones((4, 4)), "fp8_deepseek_weight", axis=0) if False
         else fpsim.fake_quantize(np.ones(4), "fp8_deepseek_weight"), ValueError, "two dimensions"),
        (lambda: fpsim.fake_quantize(np.ones(32), "nvfp4", format="int8"), ValueError, "NVFP4"),
        (lambda: fpsim.DelayedScaling("int8_channel"), ValueError, "per-tensor"),
    ],
)
def test_invalid_arguments(call, exc, fragment):
    with pytest.raises(exc, match=fragment):
        call()


def test_empty_vectors_per_token():
    qt = fpsim.quantize_tensor(np.zeros((2, 0), np.float32), "int8_token")
    assert qt.scales.shape == (2, 1) and qt.dequantize().shape == (2, 0)
    qt = fpsim.quantize_tensor(np.zeros((0, 2), np.float32), "int8_channel", axis=0)
    assert qt.scales.shape == (1, 2)


@pytest.mark.parametrize("recipe_name", ["int8", "int8_token", "int8_channel", "e4m3fn",
                                         "float8_e5m2", "int4", "p3109_p3"])
def test_fused_fake_quantize_equals_general_path(recipe_name, monkeypatch):
    x = data((33, 70), seed=9, dist="t")
    x[3, 4] = np.nan
    x[5, 6] = np.inf
    x[7] = 0.0
    fast = fpsim.fake_quantize(x, recipe_name)
    monkeypatch.setattr(scaling, "_fast_fake_quantize", lambda *a: None)
    slow = fpsim.fake_quantize(x, recipe_name)
    np.testing.assert_array_equal(fast, slow)
    big = data((300, 256), seed=10)  # the parallel per-row kernel
    slow_big = fpsim.fake_quantize(big, recipe_name)
    monkeypatch.undo()
    np.testing.assert_array_equal(fpsim.fake_quantize(big, recipe_name), slow_big)
