"""Make tests/golden/autograd.npz: torch autograd gradients, the oracle for fpsim.qat's backward passes.

Run BY HAND, never in CI, and never imported by fpsim (it needs torch)::

    /tmp/mma-venv/bin/python tests/golden/make_autograd_golden.py

(any Python with ``torch`` and ``numpy``; made with torch 2.13.0 CPU).  Everything is
float64 with small shapes (the file stays well under 1 MB).  For each case ``c`` the file
holds its inputs ``c.<name>``, the upstream gradient ``c.dy`` (the loss is
``sum(out * dy)``, or the scalar loss itself where there is no ``dy``) and torch's
gradients ``c.grad.<name>``; ``meta`` is JSON (versions, the case list).

Cases: linear, embedding, layer_norm, rms_norm, gelu (exact erf), silu, swiglu, softmax,
attention with a padding mask (BERT), causal grouped-query attention (Llama), rotate-half
RoPE, mean pool + L2 normalise, cosine loss, KL on logits, LSQ (int4, per tensor and per
channel, Esser et al.'s grad_scale / round_pass formulation), a whole post-LN BERT encoder
layer and a whole pre-norm Llama decoder block (tiny random weights).
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

OUT = pathlib.Path(__file__).with_name("autograd.npz")
rng = np.random.default_rng(20240612)
store: dict[str, np.ndarray] = {}
cases: list[str] = []


def arr(*shape, scale=1.0):
    return scale * rng.standard_normal(shape)


def record(case, inputs: dict, fn, dy_shape=None, *, dy=None):
    """Run fn on torch copies of ``inputs`` (those that are float arrays require grad)."""
    cases.append(case)
    ts = {}
    for k, v in inputs.items():
        store[f"{case}.{k}"] = np.asarray(v)
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            ts[k] = torch.tensor(v, dtype=torch.float64, requires_grad=True)
        else:
            ts[k] = torch.tensor(v)
    out = fn(**ts)
    if out.ndim == 0 and dy is None:
        loss = out
    else:
        dy = arr(*out.shape) if dy is None else dy
        store[f"{case}.dy"] = dy
        loss = (out * torch.tensor(dy)).sum()
    store[f"{case}.out"] = out.detach().numpy()
    loss.backward()
    for k, t in ts.items():
        if t.is_floating_point() and t.grad is not None:
            store[f"{case}.grad.{k}"] = t.grad.numpy()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def rope_cos_sin(T, hd, theta=1e4):
    inv = theta ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(T)[:, None] * inv
    ang = np.concatenate([ang, ang], axis=-1)
    return np.cos(ang), np.sin(ang)


def padding_mask(lengths, T):
    keep = np.arange(T) < np.asarray(lengths)[:, None]
    return np.where(keep, 0.0, -np.inf)[:, None, None, :]


def gqa(q, k, v, mask):  # [B,H,T,d], [B,Hkv,S,d] x2, [.., T, S]
    g = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(g, dim=1)
    v = v.repeat_interleave(g, dim=1)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask
    return torch.softmax(s, dim=-1) @ v


# ---- layers -------------------------------------------------------------------------
record("linear", dict(x=arr(2, 3, 5), w=arr(5, 4), b=arr(4)), lambda x, w, b: x @ w + b)
record("embedding", dict(table=arr(7, 3), ids=np.array([[1, 4, 1], [0, 6, 4]])),
       lambda table, ids: table[ids])
record("layer_norm", dict(x=arr(2, 3, 6, scale=3.0) + 1.0, g=arr(6), b=arr(6)),
       lambda x, g, b: F.layer_norm(x, (6,), g, b, eps=1e-12))
record("rms_norm", dict(x=arr(2, 3, 6), g=arr(6)),
       lambda x, g: x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * g)
record("gelu", dict(x=np.concatenate([arr(20, scale=3.0), [0.0, -8.0, 8.0]])),
       lambda x: F.gelu(x))
record("silu", dict(x=np.concatenate([arr(20, scale=3.0), [0.0, -30.0]])), lambda x: F.silu(x))
record("swiglu", dict(x=arr(3, 4), w_gate=arr(4, 6), w_up=arr(4, 6), w_down=arr(6, 4)),
       lambda x, w_gate, w_up, w_down: (F.silu(x @ w_gate) * (x @ w_up)) @ w_down)
record("softmax", dict(s=arr(3, 5)), lambda s: torch.softmax(s, dim=-1))
record("attention_padding",
       dict(q=arr(2, 3, 4, 5), k=arr(2, 3, 4, 5), v=arr(2, 3, 4, 5),
            mask=padding_mask([4, 2], 4)),
       lambda q, k, v, mask: gqa(q, k, v, mask))
causal = np.where(np.tril(np.ones((5, 5))) > 0, 0.0, -np.inf)
record("attention_causal_gqa",
       dict(q=arr(1, 4, 5, 6), k=arr(1, 2, 5, 6), v=arr(1, 2, 5, 6), mask=causal),
       lambda q, k, v, mask: gqa(q, k, v, mask))
cos, sin = rope_cos_sin(5, 6)
record("rope", dict(x=arr(2, 3, 5, 6), cos=cos, sin=sin),
       lambda x, cos, sin: x * cos + rotate_half(x) * sin)
record("pool_normalize", dict(h=arr(2, 4, 5), mask=np.array([[1, 1, 1, 0], [1, 1, 0, 0]])),
       lambda h, mask: F.normalize((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True),
                                   dim=-1))
record("cosine_loss", dict(s=arr(3, 5), t=arr(3, 5)),
       lambda s, t: (1 - F.cosine_similarity(s, t, dim=-1)).mean())
record("kl_logits", dict(student=arr(4, 7, scale=2.0), teacher=arr(4, 7, scale=2.0)),
       lambda student, teacher: F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1),
                                         reduction="batchmean", log_target=True))


# ---- LSQ (Esser et al. 2019, as their reference code writes it) --------------------
def grad_scale(x, g):
    return (x - x * g).detach() + x * g


def round_pass(x):
    return (x.round() - x).detach() + x


def lsq(x, s, qn, qp):
    g = 1.0 / math.sqrt(x.numel() / s.numel() * qp)
    s = grad_scale(s, g)
    return round_pass(torch.clamp(x / s, qn, qp)) * s


x = arr(6, 5)
x[0, 0] = 0.02  # some values outside the range, some inside
record("lsq_tensor", dict(x=x, s=np.array(0.3)), lambda x, s: lsq(x, s, -8, 7))
record("lsq_channel", dict(x=arr(6, 5), s=np.abs(arr(1, 5, scale=0.2)) + 0.1),
       lambda x, s: lsq(x, s, -8, 7))


# ---- whole layers -------------------------------------------------------------------
def bert_layer(x, wq, bq, wk, bk, wv, bv, wo, bo, g1, b1, w_in, b_in, w_out, b_out, g2, b2,
               mask):  # x [B, T, D] (padding rows included), H = 2
    B, T, D = x.shape
    H = 2

    def heads(t):
        return t.reshape(B, T, H, D // H).transpose(1, 2)

    a = gqa(heads(x @ wq + bq), heads(x @ wk + bk), heads(x @ wv + bv), mask)
    a = a.transpose(1, 2).reshape(B, T, D) @ wo + bo
    h = F.layer_norm(x + a, (D,), g1, b1, eps=1e-12)
    f = F.gelu(h @ w_in + b_in) @ w_out + b_out
    return F.layer_norm(h + f, (D,), g2, b2, eps=1e-12)


D, Fd = 8, 12
record("bert_layer", dict(
    x=arr(2, 4, D), wq=arr(D, D, scale=0.4), bq=arr(D, scale=0.1), wk=arr(D, D, scale=0.4),
    bk=arr(D, scale=0.1), wv=arr(D, D, scale=0.4), bv=arr(D, scale=0.1),
    wo=arr(D, D, scale=0.4), bo=arr(D, scale=0.1), g1=1 + arr(D, scale=0.1),
    b1=arr(D, scale=0.1), w_in=arr(D, Fd, scale=0.4), b_in=arr(Fd, scale=0.1),
    w_out=arr(Fd, D, scale=0.3), b_out=arr(D, scale=0.1), g2=1 + arr(D, scale=0.1),
    b2=arr(D, scale=0.1), mask=padding_mask([4, 3], 4)), bert_layer)


def llama_block(x, attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down, cos, sin, mask):
    # x [B, T, d]; H = 4, Hkv = 2, hd = 4
    B, T, d = x.shape
    H, Hkv, hd = 4, 2, 4

    def rms(t, g):
        return t / torch.sqrt((t * t).mean(-1, keepdim=True) + 1e-5) * g

    h = rms(x, attn_norm)
    q = (h @ wq).reshape(B, T, H, hd).transpose(1, 2)
    k = (h @ wk).reshape(B, T, Hkv, hd).transpose(1, 2)
    v = (h @ wv).reshape(B, T, Hkv, hd).transpose(1, 2)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    a = gqa(q, k, v, mask).transpose(1, 2).reshape(B, T, H * hd) @ wo
    x = x + a
    h = rms(x, ffn_norm)
    return x + (F.silu(h @ w_gate) * (h @ w_up)) @ w_down


d, hd, dff, T = 8, 4, 12, 5
cos, sin = rope_cos_sin(T, hd)
record("llama_block", dict(
    x=arr(2, T, d), attn_norm=1 + arr(d, scale=0.1), wq=arr(d, 16, scale=0.4),
    wk=arr(d, 8, scale=0.4), wv=arr(d, 8, scale=0.4), wo=arr(16, d, scale=0.3),
    ffn_norm=1 + arr(d, scale=0.1), w_gate=arr(d, dff, scale=0.4), w_up=arr(d, dff, scale=0.4),
    w_down=arr(dff, d, scale=0.3), cos=cos, sin=sin, mask=causal), llama_block)

store["meta"] = np.array(json.dumps({"torch": torch.__version__, "numpy": np.__version__,
                                     "cases": cases}))
np.savez_compressed(OUT, **store)
print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(cases)} cases)")
