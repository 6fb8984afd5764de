"""fpsim.models.rotation: online Hadamard rotations of every quantized linear
(QuantConfig(rotation="online_hadamard")), on any model; QuaRot's folded rotation
(rotation="hadamard") is tested with the Llama models in test_llama.py."""

from __future__ import annotations

import numpy as np
import pytest

import fpsim
from fpsim.models import QuantConfig, QuantContext
from fpsim.models.rotation import ROTATIONS, online_rotation, rotate_online
from fpsim.quant.spec import QuantSpec

W4A8 = {"q": QuantSpec(format="int4", granularity="channel"), "q.input": "int8_token"}


def _data(n_in=48, n_out=20, rows=7, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n_in)).astype(np.float32)
    x[:, 5] *= 30  # an outlier channel
    w = (0.1 * rng.standard_normal((n_in, n_out))).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    return x, w, b


def test_online_rotation_is_an_orthogonal_random_hadamard_fixed_by_the_width():
    assert "online_hadamard" in ROTATIONS
    for n in (8, 12, 384, 1536):
        r = online_rotation(n)
        assert r.dtype == np.float32 and r.shape == (n, n)
        np.testing.assert_allclose(r.astype(np.float64) @ r.T, np.eye(n), atol=1e-6)
        np.testing.assert_array_equal(np.abs(r), np.float32(1 / np.sqrt(n)))
        assert online_rotation(n) is r  # cached: the same matrix for every linear and call
    # the signs are random (a fixed seed), not Sylvester's plain matrix
    assert (online_rotation(384)[:, 0] < 0).any() and (online_rotation(384)[:, 0] > 0).any()
    with pytest.raises(ValueError, match="no Hadamard matrix of order 40"):
        online_rotation(40)


@pytest.mark.parametrize("n", [8, 12, 48, 384, 576, 1536])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rotate_online_is_the_product_with_the_dense_matrix(n, dtype):
    """The Kronecker-factored product equals ``x @ R`` and ``x @ R^T`` (float64 reference)
    to the rounding of ``dtype``, on 1-D and 3-D arrays."""
    rng = np.random.default_rng(n)
    r = online_rotation(n).astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for shape in [(n,), (2, 3, n)]:
        x = rng.standard_normal(shape).astype(dtype)
        y = rotate_online(x)
        assert y.dtype == dtype and y.shape == x.shape
        np.testing.assert_allclose(y, x.astype(np.float64) @ r, atol=tol * np.sqrt(n))
        np.testing.assert_allclose(rotate_online(x, inverse=True), x.astype(np.float64) @ r.T,
                                   atol=tol * np.sqrt(n))
    assert rotate_online(np.ones((0, n))).shape == (0, n)


def test_a_rotated_linear_is_the_quantized_product_of_the_rotated_operands():
    x, w, b = _data()
    ctx = QuantContext(QuantConfig(sites=W4A8, rotation="online_hadamard"))
    r = online_rotation(48)
    rw = rotate_online(w.T).T  # R^T w
    np.testing.assert_allclose(rw, r.T @ w, atol=1e-5)
    np.testing.assert_allclose(rotate_online(x), x @ r, rtol=1e-5, atol=1e-4)
    want = (fpsim.fake_quantize(rotate_online(x), "int8_token")
            @ np.ascontiguousarray(fpsim.fake_quantize(  # the layout of w (BLAS sums by it)
                rw, QuantSpec(format="int4", granularity="channel", axis=0))) + b)
    np.testing.assert_array_equal(ctx.linear("q", 0, x, w, b), want)
    # the same numbers again (the rotated, quantized weight is cached per weight array)
    np.testing.assert_array_equal(ctx.linear("q", 0, x, w, b), want)
    # the rng of the context does not choose the rotation (trained weights depend on it)
    other = QuantContext(QuantConfig(sites=W4A8, rotation="online_hadamard"), rng=7)
    np.testing.assert_array_equal(other.linear("q", 0, x, w, b), want)


def test_rotation_moves_an_outlier_channel_into_every_channel():
    """What the rotation is for: an outlier channel no longer sets the per-token INT8 scale
    of the other channels, so the product is closer to FP32."""
    x, w, b = _data()
    exact = x.astype(np.float64) @ w + b

    def err(rotation):
        int4_token = QuantSpec(format="int4", granularity="token")
        ctx = QuantContext(QuantConfig(sites={"q.input": int4_token}, rotation=rotation))
        return np.abs(ctx.linear("q", 0, x, w, b) - exact).mean()

    assert err("online_hadamard") < 0.5 * err(None)


def test_unquantized_linears_are_not_rotated():
    x, w, b = _data()
    ctx = QuantContext(QuantConfig(sites=W4A8, rotation="online_hadamard"))
    np.testing.assert_array_equal(ctx.linear("o", 0, x, w, b), x @ w + b)
    # a linear whose input alone is quantized is rotated (the weight stays FP32)
    ctx = QuantContext(QuantConfig(sites={"o.input": "int8_token"}, rotation="online_hadamard"))
    np.testing.assert_array_equal(
        ctx.linear("o", 0, x, w, b),
        fpsim.fake_quantize(rotate_online(x), "int8_token")
        @ np.ascontiguousarray(rotate_online(w.T).T) + b)  # w's layout, as the context


def test_a_width_without_a_hadamard_matrix_names_the_linear():
    x, w, b = _data(n_in=40)
    ctx = QuantContext(QuantConfig(sites=W4A8, rotation="online_hadamard"))
    with pytest.raises(ValueError, match=r"'q'.*width 40.*no Hadamard matrix of order 40"):
        ctx.linear("q", 0, x, w, b)


def test_config_round_trips_and_refuses_unknown_rotations(tmp_path):
    cfg = QuantConfig(sites=W4A8, rotation="online_hadamard")
    for ext in ("json", "toml"):
        cfg.save(tmp_path / f"c.{ext}")
        assert QuantConfig.load(tmp_path / f"c.{ext}") == cfg
    with pytest.raises(ValueError, match="'online_hadamard'"):
        QuantConfig(rotation="online")


@pytest.fixture(scope="module")
def minilm(model_files):
    model_files("minilm")
    from fpsim.models.bert import MiniLM

    return MiniLM.load()


TEXTS = ["A cat sits on the mat.", "Prices rose sharply in the spring.", "Hi"]


def test_minilm_refuses_quarot_and_runs_the_online_rotation(minilm):
    """Post-LayerNorm BERT has no place to fold QuaRot's rotation: rotation='hadamard' is an
    error (it was silently ignored), rotation='online_hadamard' rotates every quantized
    linear, and in FP32 changes nothing."""
    with pytest.raises(ValueError, match="post-LayerNorm.*online_hadamard"):
        minilm.with_quant(QuantConfig(sites=W4A8, rotation="hadamard"))
    fp32 = minilm.embed(TEXTS)
    same = minilm.with_quant(QuantConfig(rotation="online_hadamard")).embed(TEXTS)
    np.testing.assert_array_equal(same, fp32)  # nothing quantized: nothing rotated
    plain = minilm.with_quant("int4_g128").embed(TEXTS)
    rot = minilm.with_quant(QuantConfig(sites=fpsim.models.preset("int4_g128").sites,
                                        rotation="online_hadamard", portable=True)
                            ).embed(TEXTS)
    assert not np.array_equal(rot, plain)
    cos = lambda e: float(np.mean(np.sum(e * fp32, axis=-1)))  # noqa: E731
    assert cos(rot) > 0.9 and np.isfinite(rot).all()

