"""fpsim.quant.torchao and the ``*_torchao`` recipes: torchao 0.18's MX and NVFP4 bits.

The oracle is tests/golden/torchao_blocks.npz, written by torchao's own code
(tests/golden/make_torchao_golden.py, hand-run with torch 2.13 and torchao 0.18 on the CPU).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import fpsim
from fpsim.quant import QuantSpec, resolve_spec
from fpsim.quant import torchao as ta

GOLDEN = np.load(pathlib.Path(__file__).parents[1] / "golden" / "torchao_blocks.npz")
DISTS = sorted({k.split("/")[1] for k in GOLDEN.files if k.startswith("x/")})
ELEMENTS = {"e4m3": "mxfp8_e4m3_torchao", "e5m2": "mxfp8_e5m2_torchao",
            "e2m3": "mxfp6_e2m3_torchao", "e3m2": "mxfp6_e3m2_torchao",
            "e2m1": "mxfp4_e2m1_torchao"}
RULES = ("floor", "ceil", "even", "rceil")


def _bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


def test_golden_data_is_torchao_018():
    meta = json.loads(str(GOLDEN["meta"]))
    assert meta["torchao"].startswith("0.18") and meta["torch"].startswith("2.13")
    assert len(DISTS) == 8


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("elem", list(ELEMENTS))
@pytest.mark.parametrize("dist", DISTS)
def test_mx_recipes_are_torchao_bit_for_bit(dist, elem, rule):
    x = GOLDEN[f"x/{dist}"]
    key = f"{dist}/mx_{elem}_{rule}"
    qt = fpsim.quantize_tensor(x, ELEMENTS[elem], scale_rule=rule)
    np.testing.assert_array_equal(qt.scale_codes, GOLDEN[f"{key}/scale"])
    np.testing.assert_array_equal(np.asarray(qt.codes, np.uint8), GOLDEN[f"{key}/codes"])
    np.testing.assert_array_equal(_bits(qt.dequantize()), _bits(GOLDEN[f"{key}/deq"]))
    v = fpsim.fake_quantize(x, ELEMENTS[elem], scale_rule=rule)
    np.testing.assert_array_equal(_bits(v), _bits(GOLDEN[f"{key}/deq"]))


@pytest.mark.parametrize("two_level", [False, True])
@pytest.mark.parametrize("dist", DISTS)
def test_nvfp4_torchao_is_torchao_bit_for_bit(dist, two_level):
    x = GOLDEN[f"x/{dist}"]
    key = f"{dist}/nvfp4_{'2level' if two_level else '1level'}"
    qt = fpsim.quantize_tensor(x, "nvfp4_torchao", tensor_scale=two_level)
    np.testing.assert_array_equal(qt.scale_codes, GOLDEN[f"{key}/scale"])
    np.testing.assert_array_equal(np.asarray(qt.codes, np.uint8), GOLDEN[f"{key}/codes"])
    np.testing.assert_array_equal(_bits(qt.dequantize()), _bits(GOLDEN[f"{key}/deq"]))
    if two_level:
        assert np.float32(qt.tensor_scale) == GOLDEN[f"{key}/tensor_scale"]
    v = fpsim.fake_quantize(x, "nvfp4_torchao", tensor_scale=two_level)
    np.testing.assert_array_equal(_bits(v), _bits(GOLDEN[f"{key}/deq"]))


def test_where_fpsims_own_recipes_differ_from_torchao():
    """What docs/numerics.md states: fpsim's OCP floor and ceil differ from torchao only on
    float32-subnormal block maxima (torchao divides by 2**-126 but stores 2**-127), its
    ``even`` is another rule, and NVFP4 two-level differs where torchao multiplies by a
    float32 reciprocal."""
    def differs(recipe, key, **kw):
        return [d for d in DISTS if not np.array_equal(
            _bits(fpsim.fake_quantize(GOLDEN[f"x/{d}"], recipe, **kw)),
            _bits(GOLDEN[f"{d}/{key}/deq"]))]

    for elem in ELEMENTS:
        ocp = ELEMENTS[elem].removesuffix("_torchao")
        assert differs(ocp, f"mx_{elem}_floor", scale_rule="floor") == ["tiny"]
        assert differs(ocp, f"mx_{elem}_ceil", scale_rule="ceil") == ["tiny"]
        assert len(differs(ocp, f"mx_{elem}_even", scale_rule="even")) >= 3
    assert differs("nvfp4", "nvfp4_2level") != []
    assert "gauss" not in differs("nvfp4", "nvfp4_2level")  # same bits on ordinary data


def test_floor_on_subnormal_block_maxima_is_torchaos_quirk():
    """A float32-subnormal block maximum: the stored scale is 2**-127 but torchao divided by
    2**-126, so the dequantized block is half the input (exactly, for E4M3 codes)."""
    x = np.full(32, 1.5 * 2.0 ** -128, np.float32)  # x / 2**-126 = 0.375, an E4M3 value
    s, c, v = ta.mx_quantize(x, "float8_e4m3fn", scale_rule="floor")
    assert s.tolist() == [0]  # 2**-127
    np.testing.assert_array_equal(v, x / 2)


def test_axis_moves_the_blocks():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    for recipe in ("mxfp8_e4m3_torchao", "nvfp4_torchao"):
        a = fpsim.fake_quantize(x, recipe, axis=0)
        np.testing.assert_array_equal(a, fpsim.fake_quantize(x.T.copy(), recipe).T)
        qt = fpsim.quantize_tensor(x, recipe, axis=0)
        assert qt.codes.shape == x.shape
        np.testing.assert_array_equal(qt.dequantize(), a)


@pytest.mark.parametrize("recipe", ["mxfp8_e4m3_torchao", "mxfp4_e2m1_torchao",
                                    "nvfp4_torchao"])
def test_a_partial_block_is_padded_with_zeros(recipe):
    """torchao refuses a length that is not a multiple of the block; fpsim pads with zeros
    (documented), which gives the first values of the padded tensor's result."""
    x = np.random.default_rng(2).standard_normal((3, 40)).astype(np.float32)
    padded = np.concatenate([x, np.zeros((3, 24), np.float32)], axis=1)
    np.testing.assert_array_equal(fpsim.fake_quantize(x, recipe),
                                  fpsim.fake_quantize(padded, recipe)[:, :40])
    qt = fpsim.quantize_tensor(x, recipe)
    assert qt.codes.shape == x.shape and qt.scale_codes.shape[1] == -(-40 // qt.spec.block_size)


def test_all_zero_tensor_two_level_gives_zeros():
    """Documented: torchao divides 0 by 0 here; fpsim gives zeros and tensor scale 0."""
    qt = fpsim.quantize_tensor(np.zeros((2, 32), np.float32), "nvfp4_torchao")
    assert qt.tensor_scale == 0.0
    np.testing.assert_array_equal(qt.dequantize(), 0.0)


def test_bad_input_is_refused_with_a_clear_error():
    x = np.ones(32, np.float32)
    x[3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        fpsim.fake_quantize(x, "mxfp8_e4m3_torchao")
    with pytest.raises(ValueError, match="stack"):
        QuantSpec(format="int8", granularity="block", stack="torchao")
    with pytest.raises(ValueError, match="stack must be one of"):
        QuantSpec(format="float8_e4m3fn", granularity="block", scale_rule="floor", stack="tf")
    with pytest.raises(ValueError, match="nearest_even"):
        resolve_spec("mxfp8_e4m3_torchao", rounding="stochastic")
    with pytest.raises(ValueError, match="scale_rule must be one of"):
        ta.mx_quantize(np.ones(32, np.float32), "e4m3fn", scale_rule="amax")


def test_recipes_are_listed_and_round_trip_through_configs(tmp_path):
    from fpsim.models import QuantConfig

    for name in [*ELEMENTS.values(), "nvfp4_torchao"]:
        spec = resolve_spec(name)
        assert spec.stack == "torchao" and "torchao" in spec.describe()
        cfg = QuantConfig(sites={"q": name})
        cfg.save(tmp_path / "c.json")
        assert QuantConfig.load(tmp_path / "c.json") == cfg
