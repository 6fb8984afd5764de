"""fpsim.qat.bert_grad: MiniLM's training forward equals the library's forward, and its
backward pass equals finite differences (a tiny random BERT, and a slice of the real one),
torch autograd (one encoder layer) and the straight-through estimator's definition."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest

from fpsim.models.bert import BertConfig
from fpsim.models.config import QuantConfig
from fpsim.quant.spec import QuantSpec
from fpsim.qat import bert_grad as bg
from fpsim.qat.quantizer import QATQuantizer

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden" / "autograd.npz"


def tiny_params(cfg, vocab=11, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    D, F = cfg.d_model, cfg.d_ffn

    def w(*shape, scale=0.4):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    p = {"emb.token": w(vocab, D, scale=1.0), "emb.position": w(cfg.n_positions, D),
         "emb.segment": w(2, D), "emb.norm_g": 1 + w(D, scale=0.1), "emb.norm_b": w(D, scale=0.1)}
    shapes = dict(wq=(D, D), bq=(D,), wk=(D, D), bk=(D,), wv=(D, D), bv=(D,), wo=(D, D), bo=(D,),
                  attn_norm_g=(D,), attn_norm_b=(D,), w_in=(D, F), b_in=(F,), w_out=(F, D),
                  b_out=(D,), ffn_norm_g=(D,), ffn_norm_b=(D,))
    for i in range(cfg.n_layers):
        for n, s in shapes.items():
            p[f"layers.{i}.{n}"] = (1 + w(*s, scale=0.1)) if n.endswith("norm_g") else w(*s)
    return p


CFG = BertConfig(n_layers=2, n_heads=2, d_model=8, d_ffn=12, n_positions=6, eps=1e-12)
IDS = np.array([[1, 5, 7, 2, 0], [1, 9, 2, 0, 0], [3, 3, 4, 4, 6]])
LENGTHS = np.array([4, 3, 5])


def fd_check(params, loss_of, grads, names, *, h=1e-6, n=None, rtol=1e-5, atol=1e-8, seed=0):
    """Central differences of loss_of(params) for (a sample of) the entries of each name."""
    rng = np.random.default_rng(seed)
    for name in names:
        a = params[name]
        flat = a.reshape(-1)
        idx = np.arange(flat.size) if n is None or flat.size <= n else rng.choice(
            flat.size, n, replace=False)
        num = np.empty(len(idx))
        for j, i in enumerate(idx):
            old = flat[i]
            flat[i] = old + h
            up = loss_of(params)
            flat[i] = old - h
            down = loss_of(params)
            flat[i] = old
            num[j] = (up - down) / (2 * h)
        np.testing.assert_allclose(grads[name].reshape(-1)[idx], num, rtol=rtol, atol=atol,
                                   err_msg=name)


def test_tiny_bert_backward_equals_finite_differences():
    params = tiny_params(CFG)
    qz = QATQuantizer(None, n_layers=CFG.n_layers, sites=bg.SITES)
    dy = np.random.default_rng(1).standard_normal((3, CFG.d_model))

    def loss_of(p):
        return float(np.sum(bg.forward(p, IDS, LENGTHS, CFG, qz)[0] * dy))

    pooled, cache = bg.forward(params, IDS, LENGTHS, CFG, qz)
    grads = bg.backward(dy, cache, params, CFG, embeddings=True)
    assert set(grads) == set(params)
    fd_check(params, loss_of, grads, sorted(params))


def test_encoder_layer_equals_torch_autograd():
    z = np.load(GOLDEN)
    c = {k[len("bert_layer."):]: z[k] for k in z.files if k.startswith("bert_layer.")}
    names = ["wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "g1", "b1", "w_in", "b_in",
             "w_out", "b_out", "g2", "b2"]
    ours = ["wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "attn_norm_g", "attn_norm_b",
            "w_in", "b_in", "w_out", "b_out", "ffn_norm_g", "ffn_norm_b"]
    p = {o: c[n] for o, n in zip(ours, names)}
    B, T, D = c["x"].shape
    cfg = BertConfig(n_layers=1, n_heads=2, d_model=D, d_ffn=c["w_in"].shape[1], eps=1e-12)
    qz = QATQuantizer(None, n_layers=1, sites=bg.SITES)
    rows = np.arange(B * T)  # torch computes the padded queries too: keep every row
    x = c["x"].reshape(B * T, D)
    y, cache = bg._layer(x, rows, c["mask"], p, 0, cfg, qz)
    np.testing.assert_allclose(y.reshape(B, T, D), c["out"], rtol=1e-10, atol=1e-12)
    dx, g = bg._layer_back(c["dy"].reshape(B * T, D), cache, p, rows, B, T, cfg)
    np.testing.assert_allclose(dx.reshape(B, T, D), c["grad.x"], rtol=1e-8, atol=1e-12)
    for o, n in zip(ours, names):
        np.testing.assert_allclose(g[o], c[f"grad.{n}"], rtol=1e-8, atol=1e-12, err_msg=o)


def test_ste_gradient_is_the_gradient_at_the_quantized_weights():
    """With weights quantized and plain STE, d loss / d w is the FP32 gradient evaluated
    with every weight replaced by its fake-quantized value."""
    params = tiny_params(CFG, dtype=np.float32)
    spec = QuantSpec(format="int4", granularity="channel")
    config = QuantConfig(sites={s: spec for s in ("q", "k", "v", "o", "ffn_in", "ffn_out")})
    qz = QATQuantizer(config, n_layers=CFG.n_layers, sites=bg.SITES, ste="plain")
    dy = np.random.default_rng(1).standard_normal((3, CFG.d_model)).astype(np.float32)
    _, cache = bg.forward(params, IDS, LENGTHS, CFG, qz)
    g_q = bg.backward(dy, cache, params, CFG)
    import fpsim

    wspec = QuantSpec(format="int4", granularity="channel", axis=0)
    pq = {k: (fpsim.fake_quantize(v, wspec) if k.split(".")[-1] in
              ("wq", "wk", "wv", "wo", "w_in", "w_out") else v) for k, v in params.items()}
    fp32 = QATQuantizer(None, n_layers=CFG.n_layers, sites=bg.SITES)
    _, cache = bg.forward(pq, IDS, LENGTHS, CFG, fp32)
    g_ref = bg.backward(dy, cache, pq, CFG)
    for k in g_ref:
        np.testing.assert_allclose(g_q[k], g_ref[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_online_rotation_gradient_is_the_gradient_at_the_rotated_quantized_weights():
    """rotation="online_hadamard", weights quantized, plain STE: the linear is
    ``(x R) Q(R^T w) = x (R Q(R^T w))``, and since ``R`` is orthogonal d loss / d w is the
    FP32 gradient with every weight replaced by ``R Q(R^T w)``."""
    import fpsim
    from fpsim.models.rotation import online_rotation

    params = tiny_params(CFG, dtype=np.float32)
    spec = QuantSpec(format="int4", granularity="channel")
    config = QuantConfig(sites={s: spec for s in ("q", "k", "v", "o", "ffn_in", "ffn_out")},
                         rotation="online_hadamard")
    qz = QATQuantizer(config, n_layers=CFG.n_layers, sites=bg.SITES, ste="plain")
    dy = np.random.default_rng(1).standard_normal((3, CFG.d_model)).astype(np.float32)
    pooled, cache = bg.forward(params, IDS, LENGTHS, CFG, qz)
    g_q = bg.backward(dy, cache, params, CFG)
    wspec = QuantSpec(format="int4", granularity="channel", axis=0)

    def effective(w):
        r = online_rotation(w.shape[0]).astype(np.float64)
        wq = fpsim.fake_quantize((r.T @ w.astype(np.float64)).astype(np.float32), wspec)
        return (r @ wq).astype(np.float32)

    pq = {k: (effective(v) if k.split(".")[-1] in ("wq", "wk", "wv", "wo", "w_in", "w_out")
              else v) for k, v in params.items()}
    fp32 = QATQuantizer(None, n_layers=CFG.n_layers, sites=bg.SITES)
    ref_pooled, cache = bg.forward(pq, IDS, LENGTHS, CFG, fp32)
    np.testing.assert_allclose(pooled, ref_pooled, rtol=1e-4, atol=1e-5)
    g_ref = bg.backward(dy, cache, pq, CFG)
    for k in g_ref:
        np.testing.assert_allclose(g_q[k], g_ref[k], rtol=1e-4, atol=1e-5, err_msg=k)
    # the rotation matters: without it the gradients differ
    plain = QATQuantizer(dataclasses.replace(config, rotation=None), n_layers=CFG.n_layers,
                         sites=bg.SITES, ste="plain")
    _, cache = bg.forward(params, IDS, LENGTHS, CFG, plain)
    assert not np.allclose(bg.backward(dy, cache, params, CFG)["layers.0.wq"],
                           g_q["layers.0.wq"], rtol=1e-4, atol=1e-5)


def test_clipped_ste_zeros_saturated_weights():
    params = tiny_params(CFG, dtype=np.float32)
    params["layers.0.wq"][0, 0] = 50.0  # far outside a static range
    config = QuantConfig(sites={"q": QuantSpec(format="int8", amax=2.0)})
    qz = QATQuantizer(config, n_layers=CFG.n_layers, sites=bg.SITES)
    dy = np.ones((3, CFG.d_model), np.float32)
    _, cache = bg.forward(params, IDS, LENGTHS, CFG, qz)
    g = bg.backward(dy, cache, params, CFG)
    assert g["layers.0.wq"][0, 0] == 0 and np.count_nonzero(g["layers.0.wq"]) > 1


@pytest.fixture(scope="module")
def minilm(model_files):
    model_files("minilm")
    from fpsim.models.bert import MiniLM

    return MiniLM.load()


TEXTS = ["A cat sits on the mat.", "Prices rose sharply.", "Hi"]


ONLINE_W4A8 = QuantConfig(sites={**{s: QuantSpec(format="int4", granularity="channel")
                                    for s in ("q", "k", "v", "o", "ffn_in", "ffn_out")},
                                 **{f"{s}.input": "int8_token"
                                    for s in ("q", "k", "v", "o", "ffn_in", "ffn_out")}},
                          rotation="online_hadamard", name="w4a8_online_hadamard")


@pytest.mark.parametrize("preset", [None, "mxfp4", "int8", ONLINE_W4A8],
                         ids=["fp32", "mxfp4", "int8", "w4a8_online_hadamard"])
def test_forward_equals_the_library(minilm, preset):
    from fpsim.models.layers import l2_normalize

    params = bg.params_of(minilm)
    ids, lengths = minilm.pad(minilm.tokenize(TEXTS))
    qz = bg.quantizer(preset, minilm.cfg)
    pooled, _ = bg.forward(params, ids, lengths, minilm.cfg, qz)
    ref = bg.model_with(minilm, params, preset).embed(TEXTS, batch_size=len(TEXTS))
    np.testing.assert_allclose(l2_normalize(pooled), ref, atol=2e-6)


def test_real_minilm_slice_equals_finite_differences(minilm):
    """One real encoder layer in float64, two short sentences: sampled entries of every
    parameter against central differences."""
    import dataclasses

    params = {k: v.astype(np.float64) for k, v in bg.params_of(minilm).items()
              if not k.startswith("layers.") or k.startswith("layers.0.")}
    used = np.array([0, 101, 102, 1037, 4937, 7632])  # [PAD] [CLS] [SEP] a cat hi
    params["emb.token"] = params["emb.token"][used]  # a table of the used rows only
    cfg = dataclasses.replace(minilm.cfg, n_layers=1)
    ids = np.searchsorted(used, np.array([[101, 1037, 4937, 102], [101, 7632, 102, 0]]))
    lengths = np.array([4, 3])
    qz = QATQuantizer(None, n_layers=1, sites=bg.SITES)
    dy = np.random.default_rng(2).standard_normal((2, cfg.d_model))

    def loss_of(p):
        return float(np.sum(bg.forward(p, ids, lengths, cfg, qz)[0] * dy))

    _, cache = bg.forward(params, ids, lengths, cfg, qz)
    grads = bg.backward(dy, cache, params, cfg, embeddings=True)
    fd_check(params, loss_of, grads, sorted(grads), n=6, h=1e-5, rtol=1e-4, atol=1e-7)


def test_gradients_of_a_loss_on_the_hidden_states():
    params = tiny_params(CFG)
    qz = QATQuantizer(None, n_layers=CFG.n_layers, sites=bg.SITES)
    rng = np.random.default_rng(3)
    dy = rng.standard_normal((3, CFG.d_model))
    r = [rng.standard_normal((int(LENGTHS.sum()), CFG.d_model)) for _ in range(CFG.n_layers)]

    def loss_of(p):
        pooled, c = bg.forward(p, IDS, LENGTHS, CFG, qz)
        return float(np.sum(pooled * dy) + sum(np.sum(s * ri) for s, ri in zip(c["states"], r)))

    _, cache = bg.forward(params, IDS, LENGTHS, CFG, qz)
    grads = bg.backward(dy, cache, params, CFG, dstates=r)
    fd_check(params, loss_of, grads, ["layers.0.wq", "layers.0.ffn_norm_g", "emb.norm_b"], n=8)
