"""MiniLM's forward pass keeping what its backward pass needs, and the backward pass.

:func:`forward` computes what :mod:`fpsim.models.bert` computes (the same layer functions,
the same sites quantized by the same specs, through a :class:`~fpsim.qat.quantizer.QATQuantizer`
instead of a QuantContext) up to the mean-pooled sentence vectors, and returns a cache;
:func:`backward` takes the gradient w.r.t. those vectors and returns the gradient of every
parameter.  Parameters are a flat dict of arrays named after the model's readable names:
``"emb.token"``, ``"emb.position"``, ``"emb.segment"``, ``"emb.norm_g"``, ``"emb.norm_b"``
and ``"layers.<i>.<name>"`` for each field of :class:`~fpsim.models.bert.EncoderLayer`.

Shapes: ``B`` sentences, ``T`` padded tokens, ``N`` real tokens, ``D`` width, ``H``
heads, ``F`` FFN width.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..models.bert import Embeddings, EncoderLayer, MiniLM, SITES, pack, unpack
from ..models.layers import (attention_weights, gelu, layer_norm, mean_pool, merge_heads,
                             padding_mask, split_heads)
from .backward import (embedding_backward, gelu_backward, layer_norm_backward,
                       linear_backward, mean_pool_backward, mix_backward, scores_backward,
                       softmax_backward)
from .quantizer import QATQuantizer

__all__ = ["LAYER_FIELDS", "backward", "forward", "model_with", "params_of", "quantizer"]

#: the weights of one encoder layer, as :class:`~fpsim.models.bert.EncoderLayer` names them
LAYER_FIELDS = tuple(f.name for f in dataclasses.fields(EncoderLayer))
_EMB_FIELDS = tuple(f.name for f in dataclasses.fields(Embeddings))


def params_of(model: MiniLM) -> dict:
    """A float32 copy of every weight of ``model``, by name (see the module doc).

    Examples
    --------
    >>> p = params_of(MiniLM.load())                        # after `python -m fpsim fetch minilm`
    >>> p["layers.0.wq"].shape, p["emb.norm_g"].shape
    ((384, 384), (384,))
    """
    out = {f"emb.{n}": np.array(getattr(model.emb, n), np.float32) for n in _EMB_FIELDS}
    for i, layer in enumerate(model.layers):
        for n in LAYER_FIELDS:
            out[f"layers.{i}.{n}"] = np.array(getattr(layer, n), np.float32)
    return out


def model_with(model: MiniLM, params: dict, quant=None) -> MiniLM:
    """A :class:`MiniLM` with ``model``'s tokenizer and config and the weights ``params``,
    under ``quant`` (evaluate trained weights with the library's own forward pass)."""
    from ..models.context import QuantContext

    emb = Embeddings(**{n: params[f"emb.{n}"] for n in _EMB_FIELDS})
    layers = [EncoderLayer(**{n: params[f"layers.{i}.{n}"] for n in LAYER_FIELDS})
              for i in range(model.cfg.n_layers)]
    ctx = QuantContext(quant, n_layers=model.cfg.n_layers, sites=SITES)
    return MiniLM(emb, layers, model.cfg, model.tokenizer, ctx)


def quantizer(quant, cfg, **kw) -> QATQuantizer:
    """The :class:`QATQuantizer` of ``quant`` for a BERT of ``cfg.n_layers`` layers."""
    return QATQuantizer(quant, n_layers=cfg.n_layers, sites=SITES, **kw)


# ---- pieces --------------------------------------------------------------------------
def _linear(qz, site, i, x, w, b):  # [N, I], [I, O], [O] -> [N, O], cache
    xq, wq, x_back, w_back = qz.linear(site, i, x, w)  # [N, I], [I, O]
    y = xq @ wq  # [N, O]
    y = y + b  # [N, O]
    return y, (xq, wq, x_back, w_back)


def _linear_back(dy, c):  # [N, O] -> [N, I], [I, O], [O]
    xq, wq, x_back, w_back = c
    dxq, dwq, db = linear_backward(dy, xq, wq)  # [N, I], [I, O], [O]
    return x_back(dxq), w_back(dwq), db


def _attention(x, rows, mask, p, i, H, qz):  # [N, D] -> [N, D], cache
    B, T = mask.shape[0], mask.shape[-1]
    c = {}
    heads = {}
    for name in ("q", "k", "v"):
        y, c[name] = _linear(qz, name, i, x, p[f"w{name}"], p[f"b{name}"])  # [N, D]
        h = split_heads(unpack(y, rows, B, T), H)  # [B, H, T, d]
        heads[name], c[f"attn.{name}"] = qz.act(f"attn.{name}", i, h)  # [B, H, T, d]
    probs = attention_weights(heads["q"], heads["k"], mask)  # [B, H, T, T]
    pq, c["probs_back"] = qz.act("attn.probs", i, probs)  # [B, H, T, T]
    out = pack(merge_heads(pq @ heads["v"]), rows)  # [N, D]
    y, c["o"] = _linear(qz, "o", i, out, p["wo"], p["bo"])  # [N, D]
    c.update(heads=heads, probs=probs, pq=pq)
    return y, c


def _attention_back(dy, c, rows, B, T, H, g):  # [N, D] -> [N, D]; grads into g
    dout, g["wo"], g["bo"] = _linear_back(dy, c["o"])  # [N, D]
    dout = split_heads(unpack(dout, rows, B, T), H)  # [B, H, T, d]
    heads = c["heads"]
    dpq, dv = mix_backward(dout, c["pq"], heads["v"])  # [B, H, T, T], [B, H, T, d]
    dprobs = c["probs_back"](dpq)  # [B, H, T, T]
    dq, dk = scores_backward(softmax_backward(dprobs, c["probs"]), heads["q"], heads["k"])
    dx = 0
    for name, dh in (("q", dq), ("k", dk), ("v", dv)):
        dh = c[f"attn.{name}"](dh)  # [B, H, T, d]
        dlin = pack(merge_heads(dh), rows)  # [N, D]
        dxn, g[f"w{name}"], g[f"b{name}"] = _linear_back(dlin, c[name])  # [N, D]
        dx = dx + dxn
    return dx


def _layer(x, rows, mask, p, i, cfg, qz):  # [N, D] -> [N, D], cache
    a, ca = _attention(x, rows, mask, p, i, cfg.n_heads, qz)  # [N, D]
    r1 = x + a  # [N, D]
    h = layer_norm(r1, p["attn_norm_g"], p["attn_norm_b"], cfg.eps)  # [N, D]
    u, c_in = _linear(qz, "ffn_in", i, h, p["w_in"], p["b_in"])  # [N, F]
    f, c_out = _linear(qz, "ffn_out", i, gelu(u), p["w_out"], p["b_out"])  # [N, D]
    r2 = h + f  # [N, D]
    y = layer_norm(r2, p["ffn_norm_g"], p["ffn_norm_b"], cfg.eps)  # [N, D]
    return y, dict(attn=ca, r1=r1, h=h, u=u, c_in=c_in, c_out=c_out, r2=r2)


def _layer_back(dy, c, p, rows, B, T, cfg):  # [N, D] -> [N, D], grads
    g = {}
    dr2, g["ffn_norm_g"], g["ffn_norm_b"] = layer_norm_backward(dy, c["r2"], p["ffn_norm_g"],
                                                                cfg.eps)  # [N, D]
    dgelu, g["w_out"], g["b_out"] = _linear_back(dr2, c["c_out"])  # [N, F]
    dh, g["w_in"], g["b_in"] = _linear_back(gelu_backward(dgelu, c["u"]), c["c_in"])  # [N, D]
    dh = dh + dr2  # [N, D]
    dr1, g["attn_norm_g"], g["attn_norm_b"] = layer_norm_backward(dh, c["r1"], p["attn_norm_g"],
                                                                  cfg.eps)  # [N, D]
    dx = dr1 + _attention_back(dr1, c["attn"], rows, B, T, cfg.n_heads, g)  # [N, D]
    return dx, g


def _layer_params(params, i):
    return {n: params[f"layers.{i}.{n}"] for n in LAYER_FIELDS}


# ---- the model -----------------------------------------------------------------------
def forward(params, ids, lengths, cfg, qz):  # [B, T], [B] -> [B, D], cache
    """Mean-pooled last hidden states (before L2 normalisation) and the backward cache.

    Parameters
    ----------
    params : dict of ndarray
        See the module doc (float32 to train, float64 for finite differences).
    ids : ndarray of int, shape (B, T)
        Right-padded token ids.
    lengths : ndarray of int, shape (B,)
    cfg : BertConfig
    qz : QATQuantizer

    Returns
    -------
    pooled : ndarray, shape (B, D)
    cache : dict
        What :func:`backward` needs; ``cache["states"]`` holds every layer's output
        (packed real tokens, [N, D]) for hidden-state distillation.
    """
    B, T = ids.shape
    rows = np.flatnonzero(np.arange(T) < lengths[:, None])  # [N]
    mask = padding_mask(lengths, T, dtype=params["emb.norm_g"].dtype.type)  # [B, 1, 1, T]
    tok_ids, positions = ids.reshape(-1)[rows], rows % T  # [N] x2
    table, table_back = qz.weight("embed", None, params["emb.token"], linear=False)  # [V, D]
    e = table[tok_ids] + params["emb.position"][positions] + params["emb.segment"][0]  # [N, D]
    x = layer_norm(e, params["emb.norm_g"], params["emb.norm_b"], cfg.eps)  # [N, D]
    caches, states = [], []
    for i in range(cfg.n_layers):
        x, c = _layer(x, rows, mask, _layer_params(params, i), i, cfg, qz)  # [N, D]
        caches.append(c)
        states.append(x)
    valid = np.arange(T) < lengths[:, None]  # [B, T]
    pooled = mean_pool(unpack(x, rows, B, T), valid)  # [B, D]
    return pooled, dict(rows=rows, B=B, T=T, valid=valid, tok_ids=tok_ids, positions=positions,
                        e=e, layers=caches, table_back=table_back, states=states)


def backward(dpooled, cache, params, cfg, *, embeddings: bool = False, dstates=None) -> dict:
    """Gradients of every parameter given ``d loss / d pooled`` ([B, D]).

    ``embeddings=False`` leaves out the token, position and segment tables (the
    embeddings' layer norm is still included): their gradients are large and sparse.
    ``dstates`` (optional, a list of ``n_layers`` arrays [N, D] or None) adds the gradient
    of a loss on the layers' outputs ``cache["states"]``.
    """
    rows, B, T = cache["rows"], cache["B"], cache["T"]
    dx = pack(mean_pool_backward(dpooled, cache["valid"]), rows)  # [N, D]
    grads = {}
    for i in reversed(range(cfg.n_layers)):
        if dstates is not None and dstates[i] is not None:
            dx = dx + dstates[i]  # [N, D]
        dx, g = _layer_back(dx, cache["layers"][i], _layer_params(params, i), rows, B, T, cfg)
        grads.update({f"layers.{i}.{n}": v for n, v in g.items()})
    de, grads["emb.norm_g"], grads["emb.norm_b"] = layer_norm_backward(
        dx, cache["e"], params["emb.norm_g"], cfg.eps)  # [N, D]
    if embeddings:
        V, P = params["emb.token"].shape[0], params["emb.position"].shape[0]
        grads["emb.token"] = cache["table_back"](embedding_backward(de, cache["tok_ids"], V))
        grads["emb.position"] = embedding_backward(de, cache["positions"], P)
        seg = np.zeros_like(params["emb.segment"])
        seg[0] = de.sum(axis=0)
        grads["emb.segment"] = seg
    return grads
