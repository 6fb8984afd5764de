"""fpsim.qat.fakequant: the straight-through estimator through every kind of recipe, and
LSQ against Esser et al.'s formulation run by torch autograd (tests/golden/autograd.npz)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import fpsim
from fpsim.quant.spec import QuantSpec, recipe
from fpsim.qat import fakequant as fq

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden" / "autograd.npz"

RECIPES = [
    "int8", "int8_token", "int8_feature", "int8_asym", "uint8_asym", "int4_block32",
    "mxfp4_e2m1", "mxfp6_e2m3", "mxfp8_e4m3", "mxint8", "nvfp4", "float8_e4m3fn",
    QuantSpec(format="int8", calibration="percentile", percentile=99.0),
    QuantSpec(format="int4", granularity="channel", axis=0),
    QuantSpec(format="int8", granularity="channel", axis=0, rounding="toward_zero"),
    QuantSpec(format="int8", amax=1.0),
    recipe("mxfp4_e2m1", scale_rule="rceil"),
    "nvfp4_te",
]


def _x(shape=(8, 64), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, 3] = 9.0  # an outlier
    return x


def _name(s):
    return s if isinstance(s, str) else s.describe()


@pytest.mark.parametrize("spec", RECIPES, ids=_name)
def test_ste_forward_is_fake_quantize(spec):
    x = _x()
    xq, inside = fq.fake_quantize_ste(x, spec)
    np.testing.assert_array_equal(xq, fpsim.fake_quantize(x, spec))
    if inside is not None:
        assert inside.shape == x.shape and inside.dtype == bool
        # outside the range: the quantizer saturated x to a smaller magnitude
        assert np.all(np.abs(x[~inside]) > np.abs(xq[~inside]))
        # inside: the error is below the group's largest gap (much below |x|'s top)
        assert np.all(np.abs(xq[inside] - x[inside]) <= np.abs(x).max())


def test_mx_fast_mask_equals_the_general_one():
    x = _x((4, 96), seed=3) * np.float32(5)
    spec = recipe("mxfp4_e2m1")
    _, fast = fq.fake_quantize_ste(x, spec)
    qt = fpsim.quantize_tensor(x, spec)
    s = qt.element_scale()
    general = np.abs(x) <= 6.0 * s
    np.testing.assert_array_equal(fast, general)
    assert not fast.all()  # the floor rule clips some block maxima of E2M1


def test_clipped_mask_static_amax_and_affine():
    x = np.array([0.5, -0.99, 1.5, -3.0], np.float32)
    _, inside = fq.fake_quantize_ste(x, QuantSpec(format="int8", amax=1.0))
    assert inside.tolist() == [True, True, False, False]
    _, inside = fq.fake_quantize_ste(x, QuantSpec(format="int8", symmetric=False, amax=1.0,
                                                  amin=-1.0))
    assert inside.tolist() == [True, True, False, False]


@pytest.mark.parametrize("spec", ["int8", "int8_token", "float8_e4m3fn"])
def test_dynamic_amax_never_clips(spec):
    assert fq.fake_quantize_ste(_x(), spec)[1] is None


def test_ste_backward_modes():
    dy = np.arange(4.0)
    inside = np.array([True, False, True, False])
    assert fq.ste_backward(dy, inside).tolist() == [0.0, 0.0, 2.0, 0.0]
    assert fq.ste_backward(dy, inside, ste="plain").tolist() == [0.0, 1.0, 2.0, 3.0]
    assert fq.ste_backward(dy, None).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_stochastic_rounding_draws_like_fake_quantize():
    x = _x()
    spec = recipe("mxfp4_e2m1", rounding="stochastic")
    np.testing.assert_array_equal(fq.fake_quantize_ste(x, spec, rng=7)[0],
                                  fpsim.fake_quantize(x, spec, rng=7))


# ---- LSQ ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden():
    z = np.load(GOLDEN)
    return {k: z[k] for k in z.files}


@pytest.mark.parametrize("case", ["lsq_tensor", "lsq_channel"])
def test_lsq_matches_torch(golden, case):
    x, s, dy = golden[f"{case}.x"], golden[f"{case}.s"], golden[f"{case}.dy"]
    np.testing.assert_allclose(fq.lsq_fake_quantize(x, s, "int4"), golden[f"{case}.out"],
                               rtol=1e-12)
    dx, ds = fq.lsq_backward(dy, x, s, "int4")
    np.testing.assert_allclose(dx, golden[f"{case}.grad.x"], rtol=1e-12)
    np.testing.assert_allclose(ds, golden[f"{case}.grad.s"], rtol=1e-9)
    assert ds.shape == s.shape


def test_lsq_scale_gradient_by_hand():
    """LSQ's d x_q / d s: round(v) - v inside the range, the clamped level outside."""
    x = np.array([0.31, -0.77, 0.05, 2.9, -3.3])  # v = x / 0.2 = 1.55, -3.85, 0.25, 14.5, -16.5
    dx, ds = fq.lsq_backward(np.ones(5), x, np.array(0.2), "int4", grad_scale=False)
    by_hand = (2 - 1.55) + (-4 + 3.85) + (0 - 0.25) + 7 + -8
    assert float(ds) == pytest.approx(by_hand, rel=1e-12)
    assert dx.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_lsq_init_starts_from_round_to_nearest():
    w = _x((64, 16))
    spec = QuantSpec(format="int4", granularity="channel", axis=0)  # per output column
    s = fq.lsq_init_scale(w, spec, axis=1)
    assert s.shape == (1, 16)
    np.testing.assert_allclose(fq.lsq_fake_quantize(w, s, spec), fpsim.fake_quantize(w, spec),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("spec", ["mxfp4_e2m1", "nvfp4"])
def test_lsq_on_blocks_is_a_pre_scale(spec):
    w = _x((64, 8))
    s = fq.lsq_init_scale(w, spec, axis=1)
    assert s.shape == (1, 8) and np.all(s == 1)
    np.testing.assert_array_equal(fq.lsq_fake_quantize(w, s, spec), fpsim.fake_quantize(w, spec))
    s2 = np.full((1, 8), 0.8, np.float32)
    np.testing.assert_allclose(fq.lsq_fake_quantize(w, s2, spec),
                               0.8 * fpsim.fake_quantize(w / np.float32(0.8), spec), rtol=1e-6)
    dx, ds = fq.lsq_backward(np.ones_like(w), w, s2, spec)
    assert ds.shape == (1, 8) and np.all(np.isfinite(ds)) and np.any(ds != 0)
    assert dx.shape == w.shape


def test_lsq_grad_scale():
    assert fq.lsq_grad_scale(64, "int4") == pytest.approx(1 / np.sqrt(64 * 7))
    assert fq.lsq_grad_scale(32, "mxfp4_e2m1") == pytest.approx(1 / np.sqrt(32 * 6))


@pytest.mark.parametrize("call, match", [
    (lambda: fq.ste_backward(np.ones(2), None, ste="clip"), "ste must be one of"),
    (lambda: fq.lsq_fake_quantize(np.ones(3), 1.0, "int8_asym"), "symmetric"),
    (lambda: fq.lsq_fake_quantize(np.ones((2, 3)), np.ones(2), "int4"), "broadcast"),
    (lambda: fq.lsq_fake_quantize(np.ones(3), -1.0, "int4"), "positive"),
    (lambda: fq.lsq_fake_quantize(np.ones(32), 1.0, "nvfp4_te"), "stacks"),
])
def test_invalid_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
