"""fpsim.qat.llama_grad: the Llama backward pass against finite differences (a tiny random
model: GQA, RoPE, RMSNorm, SwiGLU, tied LM head) and torch autograd (one decoder block),
and its forward pass against the library's."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from fpsim.models.gguf_io import LlamaHParams
from fpsim.models.llama import rope_angles
from fpsim.qat import llama_grad as lg
from fpsim.qat.quantizer import QATQuantizer


GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden" / "autograd.npz"
HP = LlamaHParams(n_layer=2, n_embd=8, n_ff=12, n_head=4, n_head_kv=2, head_dim=4,
                  rope_theta=1e4, rms_eps=1e-5, n_vocab=13, n_ctx=16)


def tiny_params(hp=HP, seed=0, dtype=np.float64, tied=True):
    rng = np.random.default_rng(seed)
    d, f, hd = hp.n_embd, hp.n_ff, hp.head_dim

    def w(*shape, scale=0.4):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    p = {"embedding": w(hp.n_vocab, d, scale=1.0), "norm": 1 + w(d, scale=0.1)}
    if not tied:
        p["lm_head"] = w(d, hp.n_vocab)
    for i in range(hp.n_layer):
        p.update({f"blocks.{i}.attn_norm": 1 + w(d, scale=0.1),
                  f"blocks.{i}.wq": w(d, hp.n_head * hd), f"blocks.{i}.wk": w(d, hp.n_head_kv * hd),
                  f"blocks.{i}.wv": w(d, hp.n_head_kv * hd), f"blocks.{i}.wo": w(hp.n_head * hd, d),
                  f"blocks.{i}.ffn_norm": 1 + w(d, scale=0.1), f"blocks.{i}.w_gate": w(d, f),
                  f"blocks.{i}.w_up": w(d, f), f"blocks.{i}.w_down": w(f, d)})
    return p


IDS = np.array([[1, 5, 7, 2, 12], [3, 3, 0, 9, 4]])


def fd_check(params, loss_of, grads, names, *, h=1e-6, n=None, rtol=1e-5, atol=1e-8, seed=0):
    """Central differences of loss_of(params) for a sample of the entries of each name."""
    rng = np.random.default_rng(seed)
    for name in names:
        flat = params[name].reshape(-1)
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


@pytest.mark.parametrize("tied", [True, False])
def test_tiny_llama_backward_equals_finite_differences(tied):
    params = tiny_params(tied=tied)
    qz = QATQuantizer(None, n_layers=HP.n_layer, sites=lg.SITES)
    dy = np.random.default_rng(1).standard_normal((2, 5, HP.n_vocab))

    def loss_of(p):
        return float(np.sum(lg.forward(p, IDS, HP, qz)[0] * dy))

    _, cache = lg.forward(params, IDS, HP, qz)
    grads = lg.backward(dy, cache, params, HP, embeddings=True)
    assert set(grads) == set(params)
    fd_check(params, loss_of, grads, sorted(params), n=40)


def test_kl_distillation_gradient_end_to_end():
    """d KL / d params through the whole model, against finite differences of the KL."""
    from fpsim.qat.backward import kl_logits_loss

    params = tiny_params()
    teacher = lg.forward(tiny_params(seed=5), IDS, HP,
                         QATQuantizer(None, n_layers=2, sites=lg.SITES))[0].reshape(-1, 13)
    qz = QATQuantizer(None, n_layers=2, sites=lg.SITES)

    def loss_of(p):
        return kl_logits_loss(lg.forward(p, IDS, HP, qz)[0].reshape(-1, 13), teacher)[0]

    logits, cache = lg.forward(params, IDS, HP, qz)
    _, dz = kl_logits_loss(logits.reshape(-1, 13), teacher)
    grads = lg.backward(dz.reshape(logits.shape), cache, params, HP)
    fd_check(params, loss_of, grads, ["blocks.0.wk", "blocks.1.w_down", "norm"], n=10)


def test_decoder_block_equals_torch_autograd():
    z = np.load(GOLDEN)
    c = {k[len("llama_block."):]: z[k] for k in z.files if k.startswith("llama_block.")}
    names = ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w_gate", "w_up", "w_down")
    p = {n: c[n] for n in names}
    hp = LlamaHParams(n_layer=1, n_embd=8, n_ff=12, n_head=4, n_head_kv=2, head_dim=4,
                      rope_theta=1e4, rms_eps=1e-5, n_vocab=13, n_ctx=16)
    qz = QATQuantizer(None, n_layers=1, sites=lg.SITES)
    y, cache = lg._block(c["x"], p, 0, c["cos"], c["sin"], c["mask"], hp, qz)
    np.testing.assert_allclose(y, c["out"], rtol=1e-10, atol=1e-12)
    dx, g = lg._block_back(c["dy"], cache, p, c["cos"], c["sin"], hp)
    np.testing.assert_allclose(dx, c["grad.x"], rtol=1e-8, atol=1e-12)
    for n in names:
        np.testing.assert_allclose(g[n], c[f"grad.{n}"], rtol=1e-8, atol=1e-12, err_msg=n)


def test_forward_equals_the_library_model():
    from fpsim.models.llama import Llama, LlamaBlock, LlamaWeights

    params = tiny_params(dtype=np.float32)
    blocks = tuple(LlamaBlock(**{n: params[f"blocks.{i}.{n}"] for n in lg.BLOCK_FIELDS})
                   for i in range(2))
    weights = LlamaWeights(params["embedding"], blocks, params["norm"], params["embedding"].T)
    model = Llama.__new__(Llama)  # no tokenizer needed for logits
    from fpsim.models.context import QuantContext

    from fpsim.models.config import QuantConfig
    from fpsim.models.presets import preset as library_preset

    online = QuantConfig(sites=dict(library_preset("int8").sites), rotation="online_hadamard",
                         portable=True)
    for preset in (None, "mxfp4", "int8", online):
        model.hparams, model.weights = HP, weights
        model.ctx = QuantContext(preset, n_layers=2, sites=lg.SITES)
        ref = model.logits(IDS)
        ours, _ = lg.forward(lg.params_of(model), IDS, HP, lg.quantizer(preset, HP))
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5, err_msg=str(preset))
