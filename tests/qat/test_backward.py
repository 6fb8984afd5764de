"""fpsim.qat.backward: every layer's backward pass against central finite differences
(float64) and against torch autograd (tests/golden/autograd.npz, made by
tests/golden/make_autograd_golden.py)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from fpsim.models.layers import (attention_weights, gelu, l2_normalize, layer_norm, mean_pool,
                                 padding_mask)
from fpsim.models.llama import causal_mask, rms_norm, rope, rope_angles, silu
from fpsim.models.llama import softmax as llama_softmax
from fpsim.qat import backward as bw

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden" / "autograd.npz"


def numeric_grad(f, x, dy, h=1e-6):
    """Central differences of sum(f(x) * dy) w.r.t. every element of x (float64)."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        up = np.sum(f(x) * dy)
        x[i] = old - h
        down = np.sum(f(x) * dy)
        x[i] = old
        g[i] = (up - down) / (2 * h)
    return g


def assert_close(a, b, rtol=1e-6, atol=1e-8):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


rng = np.random.default_rng(0)


def randn(*shape, scale=1.0):
    return scale * rng.standard_normal(shape)


# ---- finite differences ---------------------------------------------------------------
def test_linear_fd():
    x, w, b = randn(2, 3, 4), randn(4, 5), randn(5)
    dy = randn(2, 3, 5)
    dx, dw, db = bw.linear_backward(dy, x, w)
    assert_close(dx, numeric_grad(lambda t: t @ w + b, x, dy))
    assert_close(dw, numeric_grad(lambda t: x @ t + b, w, dy))
    assert_close(db, numeric_grad(lambda t: x @ w + t, b, dy))


def test_embedding_fd():
    table, ids = randn(6, 3), np.array([[0, 5, 0], [2, 2, 2]])
    dy = randn(2, 3, 3)
    assert_close(bw.embedding_backward(dy, ids, 6), numeric_grad(lambda t: t[ids], table, dy))


@pytest.mark.parametrize("eps", [1e-12, 1e-5])
def test_layer_norm_fd(eps):
    x, g, b = randn(3, 7, scale=2.0) + 0.5, randn(7), randn(7)
    dy = randn(3, 7)
    dx, dg, db = bw.layer_norm_backward(dy, x, g, eps)
    assert_close(dx, numeric_grad(lambda t: layer_norm(t, g, b, eps), x, dy), rtol=1e-5)
    assert_close(dg, numeric_grad(lambda t: layer_norm(x, t, b, eps), g, dy))
    assert_close(db, numeric_grad(lambda t: layer_norm(x, g, t, eps), b, dy))


def test_rms_norm_fd():
    x, g = randn(2, 3, 6), randn(6)
    dy = randn(2, 3, 6)
    dx, dg = bw.rms_norm_backward(dy, x, g, 1e-5)
    assert_close(dx, numeric_grad(lambda t: rms_norm(t, g, 1e-5), x, dy))
    assert_close(dg, numeric_grad(lambda t: rms_norm(x, t, 1e-5), g, dy))


def test_gelu_fd():
    x = np.concatenate([randn(30, scale=3.0), [0.0, 1e-9, -1e-9, -7.0, 7.0]])
    dy = randn(x.size)
    assert_close(bw.gelu_backward(dy, x), numeric_grad(gelu, x, dy))


def test_gelu_backward_float32_and_limits():
    x = np.array([-np.inf, -40.0, 0.0, 40.0, np.inf], np.float32)
    g = bw.gelu_backward(np.ones(5, np.float32), x)
    assert g.dtype == np.float32
    assert g.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_silu_and_swiglu_fd():
    x = randn(20, scale=3.0)
    dy = randn(20)
    assert_close(bw.silu_backward(dy, x), numeric_grad(silu, x, dy))
    gate, up = randn(3, 4), randn(3, 4)
    dh = randn(3, 4)
    dg, du = bw.swiglu_backward(dh, gate, up)
    assert_close(dg, numeric_grad(lambda t: silu(t) * up, gate, dh))
    assert_close(du, numeric_grad(lambda t: silu(gate) * t, up, dh))


def test_softmax_fd_with_masked_entries():
    s = randn(3, 5)
    s[0, 3:] = -np.inf  # masked keys
    s[2, :] = -np.inf  # a row masked everywhere (fpsim's softmax gives zeros)
    from fpsim.models.layers import softmax

    p = softmax(s)
    dy = randn(3, 5)
    d = bw.softmax_backward(dy, p)
    finite = np.isfinite(s)
    num = numeric_grad(lambda t: softmax(np.where(finite, t, -np.inf)), np.where(finite, s, 0), dy)
    assert_close(np.where(finite, d, 0), np.where(finite, num, 0))
    assert np.all(d[~finite] == 0)


def _attn(q, k, v, mask):
    """Reference: grouped-query attention by repeating key-value heads."""
    g = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    return attention_weights(q, k, mask) @ v


@pytest.mark.parametrize("case", ["padding", "causal_gqa", "gqa_cross"])
def test_attention_fd(case):
    if case == "padding":
        q, k, v = randn(2, 2, 4, 3), randn(2, 2, 4, 3), randn(2, 2, 4, 3)
        mask = padding_mask([4, 2], 4, dtype=np.float64)
    elif case == "causal_gqa":
        q, k, v = randn(1, 4, 5, 3), randn(1, 2, 5, 3), randn(1, 2, 5, 3)
        mask = causal_mask(5, 5).astype(np.float64)
    else:  # queries after cached keys (T < S), 3 query heads per key head
        q, k, v = randn(1, 3, 2, 4), randn(1, 1, 5, 4), randn(1, 1, 5, 4)
        mask = causal_mask(2, 5).astype(np.float64)
    g = q.shape[1] // k.shape[1]
    p = attention_weights(q, np.repeat(k, g, axis=1), mask)
    dout = randn(*q.shape[:3], v.shape[-1])
    dq, dk, dv = bw.attention_backward(dout, q, k, v, p)
    assert_close(dq, numeric_grad(lambda t: _attn(t, k, v, mask), q, dout))
    assert_close(dk, numeric_grad(lambda t: _attn(q, t, v, mask), k, dout))
    assert_close(dv, numeric_grad(lambda t: _attn(q, k, t, mask), v, dout))


def test_rope_fd():
    cos, sin = (a.astype(np.float64) for a in rope_angles(np.arange(4), 6, 1e4))
    x = randn(2, 4, 6)
    dy = randn(2, 4, 6)
    assert_close(bw.rope_backward(dy, cos, sin), numeric_grad(lambda t: rope(t, cos, sin), x, dy))


def test_pool_normalize_fd():
    h = randn(2, 4, 3)
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0]])
    dy = randn(2, 3)
    pooled = mean_pool(h, mask)
    d = bw.mean_pool_backward(bw.l2_normalize_backward(dy, pooled), mask)
    assert_close(d, numeric_grad(lambda t: l2_normalize(mean_pool(t, mask)), h, dy))


def test_losses_fd():
    s, t = randn(3, 4), randn(3, 4)
    loss, ds = bw.cosine_loss(s, t)
    assert_close(ds, numeric_grad(lambda u: np.array(bw.cosine_loss(u, t)[0]), s, 1.0))
    z, zt = randn(3, 6, scale=2.0), randn(3, 6, scale=2.0)
    for tau in (1.0, 2.0):
        loss, dz = bw.kl_logits_loss(z, zt, temperature=tau)
        assert loss > 0
        f = lambda u: np.array(bw.kl_logits_loss(u, zt, temperature=tau)[0])  # noqa: E731
        assert_close(dz, numeric_grad(f, z, 1.0))


# ---- torch autograd -------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden():
    z = np.load(GOLDEN)
    meta = json.loads(str(z["meta"]))
    return {k: z[k] for k in z.files}, meta


def _case(golden, name):
    data, _ = golden
    pre = f"{name}."
    return {k[len(pre):]: v for k, v in data.items() if k.startswith(pre)}


def test_golden_file_is_small_and_complete(golden):
    assert GOLDEN.stat().st_size < 1_000_000
    assert {"linear", "attention_causal_gqa", "lsq_channel", "bert_layer",
            "llama_block"} <= set(golden[1]["cases"])


def test_torch_layers(golden):
    c = _case(golden, "linear")
    dx, dw, db = bw.linear_backward(c["dy"], c["x"], c["w"])
    assert_close(dx, c["grad.x"]), assert_close(dw, c["grad.w"]), assert_close(db, c["grad.b"])
    c = _case(golden, "embedding")
    assert_close(bw.embedding_backward(c["dy"], c["ids"], 7), c["grad.table"])
    c = _case(golden, "layer_norm")
    assert_close(layer_norm(c["x"], c["g"], c["b"], 1e-12), c["out"])
    dx, dg, db = bw.layer_norm_backward(c["dy"], c["x"], c["g"], 1e-12)
    assert_close(dx, c["grad.x"]), assert_close(dg, c["grad.g"]), assert_close(db, c["grad.b"])
    c = _case(golden, "rms_norm")
    dx, dg = bw.rms_norm_backward(c["dy"], c["x"], c["g"], 1e-5)
    assert_close(dx, c["grad.x"]), assert_close(dg, c["grad.g"])
    c = _case(golden, "gelu")
    assert_close(gelu(c["x"]), c["out"])
    assert_close(bw.gelu_backward(c["dy"], c["x"]), c["grad.x"], rtol=1e-12, atol=1e-14)
    c = _case(golden, "silu")
    assert_close(bw.silu_backward(c["dy"], c["x"]), c["grad.x"])
    c = _case(golden, "swiglu")
    gate, up = c["x"] @ c["w_gate"], c["x"] @ c["w_up"]
    dh, dw_down, _ = bw.linear_backward(c["dy"], silu(gate) * up, c["w_down"])
    dgate, dup = bw.swiglu_backward(dh, gate, up)
    dx1, dw_gate, _ = bw.linear_backward(dgate, c["x"], c["w_gate"])
    dx2, dw_up, _ = bw.linear_backward(dup, c["x"], c["w_up"])
    assert_close(dx1 + dx2, c["grad.x"]), assert_close(dw_gate, c["grad.w_gate"])
    assert_close(dw_up, c["grad.w_up"]), assert_close(dw_down, c["grad.w_down"])
    c = _case(golden, "softmax")
    p = llama_softmax(c["s"])
    assert_close(bw.softmax_backward(c["dy"], p), c["grad.s"])


@pytest.mark.parametrize("name", ["attention_padding", "attention_causal_gqa"])
def test_torch_attention(golden, name):
    c = _case(golden, name)
    g = c["q"].shape[1] // c["k"].shape[1]
    p = attention_weights(c["q"], np.repeat(c["k"], g, axis=1), c["mask"])
    assert_close(_attn(c["q"], c["k"], c["v"], c["mask"]), c["out"])
    dq, dk, dv = bw.attention_backward(c["dy"], c["q"], c["k"], c["v"], p)
    assert_close(dq, c["grad.q"]), assert_close(dk, c["grad.k"]), assert_close(dv, c["grad.v"])


def test_torch_rope_pool_losses(golden):
    c = _case(golden, "rope")
    assert_close(rope(c["x"], c["cos"], c["sin"]), c["out"])
    assert_close(bw.rope_backward(c["dy"], c["cos"], c["sin"]), c["grad.x"])
    c = _case(golden, "pool_normalize")
    pooled = mean_pool(c["h"], c["mask"])
    d = bw.mean_pool_backward(bw.l2_normalize_backward(c["dy"], pooled), c["mask"])
    assert_close(d, c["grad.h"])
    c = _case(golden, "cosine_loss")
    loss, ds = bw.cosine_loss(c["s"], c["t"])
    assert_close(loss, c["out"]), assert_close(ds, c["grad.s"])
    c = _case(golden, "kl_logits")
    loss, dz = bw.kl_logits_loss(c["student"], c["teacher"])
    assert_close(loss, c["out"]), assert_close(dz, c["grad.student"])
