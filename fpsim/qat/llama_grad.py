"""Llama's (SmolLM2's) forward pass keeping what its backward pass needs, the backward
pass, and the distillation loop on logits.

:func:`forward` computes what :class:`fpsim.models.llama.Llama` computes for full
sequences (causal attention, no KV cache; the same layer functions and sites, quantized by
a :class:`~fpsim.qat.quantizer.QATQuantizer`) up to the logits; :func:`backward` takes
the gradient w.r.t. the logits.  Parameters are a flat dict: ``"embedding"`` ([V, d]),
``"norm"``, ``"lm_head"`` ([d, V]; absent when tied to the embedding, as in SmolLM2) and
``"blocks.<i>.<name>"`` for each field of :class:`~fpsim.models.llama.LlamaBlock`.

Shapes: ``B`` batch, ``T`` tokens, ``d`` width, ``H``/``Hkv`` query/key-value heads,
``G = H // Hkv``, ``hd`` head width, ``F`` MLP width, ``V`` vocabulary.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..models.llama import (SITES, LlamaBlock, LlamaWeights, causal_mask, rms_norm, rope,
                            rope_angles, silu, softmax)
from ..rounding import seed_of
from .backward import (embedding_backward, kl_logits_loss, linear_backward, mix_backward,
                       rms_norm_backward, rope_backward, scores_backward, softmax_backward,
                       swiglu_backward)
from .quantizer import QATQuantizer

__all__ = ["BLOCK_FIELDS", "backward", "forward", "model_with", "params_of", "quantizer",
           "train_llama"]

#: the trained weights of one decoder block (LlamaBlock's fields but the QuaRot rotation)
BLOCK_FIELDS = ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w_gate", "w_up", "w_down")


def _tied(weights) -> bool:
    return np.shares_memory(weights.lm_head, weights.embedding)


def params_of(model) -> dict:
    """A float32 copy of every weight of a :class:`~fpsim.models.llama.Llama`, by name."""
    w = model.weights
    out = {"embedding": np.array(w.embedding, np.float32), "norm": np.array(w.norm, np.float32)}
    if not _tied(w):
        out["lm_head"] = np.array(w.lm_head, np.float32)
    for i, blk in enumerate(w.blocks):
        if blk.down_rotation is not None:
            raise ValueError("QAT does not train rotated (QuaRot) weights")
        for n in BLOCK_FIELDS:
            out[f"blocks.{i}.{n}"] = np.array(getattr(blk, n), np.float32)
    return out


def _lm_head(params):
    return params["lm_head"] if "lm_head" in params else params["embedding"].T  # [d, V]


def model_with(model, params: dict, quant=None):
    """The same Llama (tokenizer, hyperparameters) with the weights ``params``, under ``quant``."""
    blocks = tuple(LlamaBlock(**{n: params[f"blocks.{i}.{n}"] for n in BLOCK_FIELDS})
                   for i in range(model.hparams.n_layer))
    weights = LlamaWeights(params["embedding"], blocks, params["norm"], _lm_head(params))
    return type(model)(model.hparams, weights, model.tokenizer_spec, quant=quant,
                       tokenizer=model.tokenizer)


def quantizer(quant, hp, **kw) -> QATQuantizer:
    """The :class:`QATQuantizer` of ``quant`` for a Llama with hyperparameters ``hp``."""
    return QATQuantizer(quant, n_layers=hp.n_layer, sites=SITES, **kw)


# ---- pieces --------------------------------------------------------------------------
def _linear(qz, site, i, x, w):  # [..., I], [I, O] -> [..., O], cache
    xq, wq, x_back, w_back = qz.linear(site, i, x, w)  # [..., I], [I, O]
    return xq @ wq, (xq, wq, x_back, w_back)  # [..., O]


def _linear_back(dy, c, *, weight=True):  # [..., O] -> [..., I], [I, O] or None
    xq, wq, x_back, w_back = c
    dxq = dy @ wq.T  # [..., I]
    dw = w_back(linear_backward(dy, xq, wq)[1]) if weight else None  # [I, O]
    return x_back(dxq), dw


def _attention(h, p, i, cos, sin, mask, hp, qz):  # [B, T, d] -> [B, T, d], cache
    b, t, _ = h.shape
    hd, n_head, n_kv = hp.head_dim, hp.n_head, hp.n_head_kv
    c = {}
    q, c["q"] = _linear(qz, "q", i, h, p["wq"])  # [B, T, H*hd]
    k, c["k"] = _linear(qz, "k", i, h, p["wk"])  # [B, T, Hkv*hd]
    v, c["v"] = _linear(qz, "v", i, h, p["wv"])  # [B, T, Hkv*hd]
    q = q.reshape(b, t, n_head, hd).transpose(0, 2, 1, 3)  # [B, H, T, hd]
    k = k.reshape(b, t, n_kv, hd).transpose(0, 2, 1, 3)  # [B, Hkv, T, hd]
    v = v.reshape(b, t, n_kv, hd).transpose(0, 2, 1, 3)  # [B, Hkv, T, hd]
    q, k = rope(q, cos, sin), rope(k, cos, sin)  # [B, H, T, hd], [B, Hkv, T, hd]
    k, c["cache.k"] = qz.act("kv_cache", i, k)  # [B, Hkv, T, hd]
    v, c["cache.v"] = qz.act("kv_cache", i, v)  # [B, Hkv, T, hd]
    q, c["attn.q"] = qz.act("attn.q", i, q)  # [B, H, T, hd]
    k, c["attn.k"] = qz.act("attn.k", i, k)  # [B, Hkv, T, hd]
    v, c["attn.v"] = qz.act("attn.v", i, v)  # [B, Hkv, T, hd]
    g = n_head // n_kv
    scores = q.reshape(b, n_kv, g, t, hd) @ k[:, :, None].swapaxes(-1, -2)  # [B, Hkv, G, T, T]
    scores *= scores.dtype.type(1 / math.sqrt(hd))
    scores += mask
    probs = softmax(scores).reshape(b, n_head, t, t)  # [B, H, T, T]
    pq, c["probs"] = qz.act("attn.probs", i, probs)  # [B, H, T, T]
    out = (pq.reshape(b, n_kv, g, t, t) @ v[:, :, None]).reshape(b, n_head, t, hd)
    out = out.transpose(0, 2, 1, 3).reshape(b, t, n_head * hd)  # [B, T, H*hd]
    y, c["o"] = _linear(qz, "o", i, out, p["wo"])  # [B, T, d]
    c.update(qh=q, kh=k, vh=v, p=probs, pq=pq)
    return y, c


def _attention_back(dy, c, cos, sin, hp, g):  # [B, T, d] -> [B, T, d]; grads into g
    b, t, _ = dy.shape
    hd, n_head, n_kv = hp.head_dim, hp.n_head, hp.n_head_kv
    dout, g["wo"] = _linear_back(dy, c["o"])  # [B, T, H*hd]
    dout = dout.reshape(b, t, n_head, hd).transpose(0, 2, 1, 3)  # [B, H, T, hd]
    dpq, dv = mix_backward(dout, c["pq"], c["vh"])  # [B, H, T, T], [B, Hkv, T, hd]
    dp = c["probs"](dpq)  # [B, H, T, T]
    dq, dk = scores_backward(softmax_backward(dp, c["p"]), c["qh"], c["kh"])
    dq, dk = c["attn.q"](dq), c["cache.k"](c["attn.k"](dk))  # [B, H | Hkv, T, hd]
    dv = c["cache.v"](c["attn.v"](dv))  # [B, Hkv, T, hd]
    dq, dk = rope_backward(dq, cos, sin), rope_backward(dk, cos, sin)
    dx = 0
    for name, dh in (("q", dq), ("k", dk), ("v", dv)):
        dlin = dh.transpose(0, 2, 1, 3).reshape(b, t, -1)  # [B, T, heads*hd]
        dxn, g[f"w{name}"] = _linear_back(dlin, c[name])  # [B, T, d]
        dx = dx + dxn
    return dx


def _block(x, p, i, cos, sin, mask, hp, qz):  # [B, T, d] -> [B, T, d], cache
    h = rms_norm(x, p["attn_norm"], hp.rms_eps)  # [B, T, d]
    a, ca = _attention(h, p, i, cos, sin, mask, hp, qz)  # [B, T, d]
    x1 = x + a  # [B, T, d]
    h2 = rms_norm(x1, p["ffn_norm"], hp.rms_eps)  # [B, T, d]
    gate, c_gate = _linear(qz, "gate", i, h2, p["w_gate"])  # [B, T, F]
    up, c_up = _linear(qz, "up", i, h2, p["w_up"])  # [B, T, F]
    y, c_down = _linear(qz, "down", i, silu(gate) * up, p["w_down"])  # [B, T, d]
    return x1 + y, dict(x=x, attn=ca, x1=x1, gate=gate, up=up, c_gate=c_gate, c_up=c_up,
                        c_down=c_down)


def _block_back(dy, c, p, cos, sin, hp):  # [B, T, d] -> [B, T, d], grads
    g = {}
    dh, g["w_down"] = _linear_back(dy, c["c_down"])  # [B, T, F]
    dgate, dup = swiglu_backward(dh, c["gate"], c["up"])  # [B, T, F] x2
    dh2a, g["w_gate"] = _linear_back(dgate, c["c_gate"])  # [B, T, d]
    dh2b, g["w_up"] = _linear_back(dup, c["c_up"])  # [B, T, d]
    dx1, g["ffn_norm"] = rms_norm_backward(dh2a + dh2b, c["x1"], p["ffn_norm"], hp.rms_eps)
    dx1 = dx1 + dy  # [B, T, d]
    dh = _attention_back(dx1, c["attn"], cos, sin, hp, g)  # [B, T, d]
    dx, g["attn_norm"] = rms_norm_backward(dh, c["x"], p["attn_norm"], hp.rms_eps)
    return dx + dx1, g


def _block_params(params, i):
    return {n: params[f"blocks.{i}.{n}"] for n in BLOCK_FIELDS}


# ---- the model -----------------------------------------------------------------------
def forward(params, ids, hp, qz):  # [B, T] -> [B, T, V], cache
    """Next-token logits of full sequences ``ids`` ([B, T] ints) and the backward cache."""
    b, t = ids.shape
    dtype = params["norm"].dtype
    cos, sin = (a.astype(dtype) for a in rope_angles(np.arange(t), hp.head_dim, hp.rope_theta))
    mask = causal_mask(t, t).astype(dtype)  # [T, T]
    table, _ = qz.weight("embed", None, params["embedding"], linear=False)  # [V, d]
    x = table[ids]  # [B, T, d]
    caches = []
    for i in range(hp.n_layer):
        x, c = _block(x, _block_params(params, i), i, cos, sin, mask, hp, qz)  # [B, T, d]
        caches.append(c)
    h = rms_norm(x, params["norm"], hp.rms_eps)  # [B, T, d]
    logits, c_head = _linear(qz, "lm_head", None, h, _lm_head(params))  # [B, T, V]
    return logits, dict(ids=ids, cos=cos, sin=sin, layers=caches, x=x, c_head=c_head)


def backward(dlogits, cache, params, hp, *, embeddings: bool = False) -> dict:
    """Gradients of every parameter given ``d loss / d logits`` ([B, T, V]).

    ``embeddings=False`` leaves out the embedding and LM head (tied in SmolLM2: 28M
    parameters whose gradient costs as much as the LM head's forward pass).
    """
    grads = {}
    dh, dhead = _linear_back(dlogits, cache["c_head"], weight=embeddings)  # [B, T, d]
    dx, grads["norm"] = rms_norm_backward(dh, cache["x"], params["norm"], hp.rms_eps)
    cos, sin = cache["cos"], cache["sin"]
    for i in reversed(range(hp.n_layer)):
        dx, g = _block_back(dx, cache["layers"][i], _block_params(params, i), cos, sin, hp)
        grads.update({f"blocks.{i}.{n}": v for n, v in g.items()})
    if embeddings:
        demb = embedding_backward(dx, cache["ids"], params["embedding"].shape[0])  # [V, d]
        if "lm_head" in params:
            grads["lm_head"] = dhead
            grads["embedding"] = demb
        else:
            grads["embedding"] = demb + dhead.T
    return grads


# ---- distillation on logits ----------------------------------------------------------
def llama_data(model, *, seq_len: int = 128, held_out_tokens: int = 1024):
    """(training windows [n, seq_len], held-out ids): the public-domain prose tokenized, its
    last ``held_out_tokens`` tokens held out."""
    from .. import data

    ids = np.asarray(model.tokenize(data.public_domain_text()), np.int64)
    test, rest = ids[-held_out_tokens:], ids[:-held_out_tokens]
    n = len(rest) // seq_len
    return rest[: n * seq_len].reshape(n, seq_len), test


def train_llama(model, config, *, steps, lr, batch_size, rng, ste, lsq, progress, clip,
                time_limit, warmup, seq_len, eval_every, held_out_tokens=1024):
    from .distill import Adam, _progress, _update

    windows, test = llama_data(model, seq_len=seq_len, held_out_tokens=held_out_tokens)
    params = params_of(model)
    hp = model.hparams
    qz = quantizer(config, hp, ste=ste, lsq=lsq, rng=rng)
    fp32 = model.with_quant(None)

    def metrics():
        if qz.scales:
            eval_qz = quantizer(config, hp, lsq=True, rng=rng)
            eval_qz.scales = qz.scales
            logits, _ = forward(params, test[None], hp, eval_qz)
            from .backward import _log_softmax

            lp = _log_softmax(logits[0, :-1].astype(np.float64))[0]
            nll = -lp[np.arange(len(test) - 1), test[1:]]
            return {"perplexity": float(np.exp(np.mean(nll)))}
        return {"perplexity": model_with(model, params, config).perplexity(test)}

    before = metrics()
    gen = np.random.default_rng(seed_of(rng))
    opt = Adam(lr=lr)
    losses, history = [], []
    bar = _progress(steps, progress, f"QAT {type(model).__name__} {config.name}")
    t0 = time.perf_counter()
    for step in range(steps):
        ids = windows[gen.choice(len(windows), size=min(batch_size, len(windows)),
                                 replace=False)]  # [B, T]
        teacher = fp32.logits(ids)  # [B, T, V]
        qz.zero_grad()
        logits, cache = forward(params, ids, hp, qz)  # [B, T, V]
        V = logits.shape[-1]
        loss, dz = kl_logits_loss(logits.reshape(-1, V), teacher.reshape(-1, V))
        del teacher
        grads = backward(dz.reshape(logits.shape), cache, params, hp)
        del cache, logits
        grads.update(qz.grads)
        _update(opt, params, qz.scales, grads, step=step, steps=steps, lr=lr, warmup=warmup,
                clip=clip)
        losses.append(loss)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
        if eval_every and (step + 1) % eval_every == 0:
            history.append((step + 1, metrics()["perplexity"]))
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    after = metrics()
    after["fp32"] = fp32.perplexity(test)
    before["fp32"] = after["fp32"]
    if history:
        after["history"] = history
    return params, dict(qz.scales), losses, before, after, seconds
