"""Llama in NumPy (fpsim.models.llama, fpsim.models.gguf_io).

* layer functions against float64 oracles written here (rms_norm, rope, silu, attention);
* llama.cpp's Q/K row permutation: interleaved RoPE on GGUF's rows == HF's rotate-half
  RoPE on un-permuted rows;
* a tiny random Llama written to a GGUF file here (llama.cpp's permutation applied as
  its converter does) against a float64 per-head reference forward pass;
* SmolLM2-135M-Instruct (slow) against tests/golden/smollm2.npz, made by
  tests/golden/make_smollm2_golden.py with Hugging Face transformers from the SAME Q4_1
  GGUF file: tokens, logits, losses, perplexity, hidden states, greedy generation;
* missing, truncated and corrupted files raise ModelFilesError naming the fetch command.
"""

import json
import pathlib
import shutil
import warnings

import numpy as np
import pytest

import fpsim

from fpsim.models import weights
from fpsim.models.gguf_io import (
    bpe_tokenizer,
    load_gguf,
    permute_qk,
    read_gguf,
    unpermute_qk,
)
from fpsim.models.llama import (
    KVCache,
    Llama,
    SmolLM2,
    attention,
    causal_mask,
    rms_norm,
    rope,
    rope_angles,
    silu,
    softmax,
)
from fpsim.models import QuantConfig
from fpsim.models.weights import ModelFilesError

GOLDEN = pathlib.Path(__file__).parents[1] / "golden" / "smollm2.npz"
FETCH = "python -m fpsim fetch smollm2"


# ---- oracles -----------------------------------------------------------------------
def llama_cpp_permute(w, n_head, n_head_kv=None):
    """convert_hf_to_gguf.py's LlamaModel.permute, verbatim."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def rope_interleaved(x, positions, theta):  # [T, hd] -> [T, hd], pairs (2i, 2i+1)
    """llama.cpp's (GPT-J style) RoPE, float64."""
    hd = x.shape[-1]
    ang = positions[:, None] * theta ** (-np.arange(0, hd, 2) / hd)  # [T, hd/2]
    a, b = x[:, 0::2], x[:, 1::2]
    out = np.empty_like(x, dtype=np.float64)
    out[:, 0::2] = a * np.cos(ang) - b * np.sin(ang)
    out[:, 1::2] = b * np.cos(ang) + a * np.sin(ang)
    return out


def rope_half64(x, positions, theta):  # [T, hd] -> [T, hd], pairs (i, i + hd/2)
    hd = x.shape[-1]
    ang = positions[:, None] * theta ** (-np.arange(0, hd, 2) / hd)  # [T, hd/2]
    a, b = x[:, :hd // 2], x[:, hd // 2:]
    return np.concatenate([a * np.cos(ang) - b * np.sin(ang),
                           b * np.cos(ang) + a * np.sin(ang)], axis=-1)


def reference_forward(p, ids, hp):
    """Float64 Llama forward pass, one head at a time, on HF-layout (out, in) weights."""
    hd, n_head, n_kv = hp["head_dim"], hp["n_head"], hp["n_head_kv"]
    T = len(ids)
    pos = np.arange(T, dtype=np.float64)

    def norm(v, g):
        return v / np.sqrt(np.mean(v ** 2, axis=-1, keepdims=True) + hp["rms_eps"]) * g

    x = p["embed"][ids]
    for lay in p["layers"]:
        h = norm(x, lay["attn_norm"])
        q, k, v = h @ lay["wq"].T, h @ lay["wk"].T, h @ lay["wv"].T
        heads = []
        for i in range(n_head):
            j = i // (n_head // n_kv)
            qi = rope_half64(q[:, i * hd:(i + 1) * hd], pos, hp["theta"])
            kj = rope_half64(k[:, j * hd:(j + 1) * hd], pos, hp["theta"])
            s = qi @ kj.T / np.sqrt(hd)
            s[np.triu_indices(T, 1)] = -np.inf
            pr = np.exp(s - s.max(axis=1, keepdims=True))
            heads.append(pr / pr.sum(axis=1, keepdims=True) @ v[:, j * hd:(j + 1) * hd])
        x = x + np.concatenate(heads, axis=-1) @ lay["wo"].T
        h = norm(x, lay["ffn_norm"])
        g = h @ lay["w_gate"].T
        x = x + (g / (1 + np.exp(-g)) * (h @ lay["w_up"].T)) @ lay["w_down"].T
    return norm(x, p["out_norm"]) @ p["embed"].T


# ---- layer functions ---------------------------------------------------------------
def test_rms_norm_matches_formula_and_is_scale_invariant():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 16)).astype(np.float32)
    g = rng.standard_normal(16).astype(np.float32)
    x64 = x.astype(np.float64)
    want = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-5) * g
    got = rms_norm(x, g, 1e-5)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rms_norm(100 * x, g, 0.0), rms_norm(x, g, 0.0), rtol=1e-5)
    y = rms_norm(x, np.ones(16, np.float32), 0.0)
    np.testing.assert_allclose(np.sqrt((y.astype(np.float64) ** 2).mean(-1)), 1, rtol=1e-6)


def test_rope_matches_oracle_keeps_norms_and_depends_on_relative_position():
    rng = np.random.default_rng(1)
    hd, theta = 64, 100000.0
    x = rng.standard_normal((7, hd)).astype(np.float32)
    pos = np.arange(3, 10)
    cos, sin = rope_angles(pos, hd, theta)
    got = rope(x, cos, sin)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, rope_half64(x.astype(np.float64), pos, theta), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(x, axis=-1),
                               rtol=1e-5)
    c0, s0 = rope_angles(np.array([0]), hd, theta)
    np.testing.assert_array_equal(rope(x[:1], c0, s0), x[:1])
    # <rope(q, m), rope(k, n)> depends on m - n only
    q, k = x[0], x[1]

    def score(m, n):
        cq, sq = rope_angles(np.array([m]), hd, theta)
        ck, sk = rope_angles(np.array([n]), hd, theta)
        return float(rope(q[None], cq, sq)[0] @ rope(k[None], ck, sk)[0])

    assert score(5, 2) == pytest.approx(score(103, 100), rel=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 3), rel=1e-4)


def test_rope_angles_match_hf_float32_formula():
    # HF: inv_freq = 1 / base ** (arange(0, hd, 2) / hd) in float32, angle = pos * inv_freq
    hd, theta, pos = 64, 100000.0, np.arange(64)
    inv = (1.0 / (np.float32(theta) ** (np.arange(0, hd, 2, dtype=np.float32) / hd)))
    ang = (pos[:, None].astype(np.float32) * inv).astype(np.float32)
    cos, sin = rope_angles(pos, hd, theta)
    np.testing.assert_allclose(cos, np.cos(np.concatenate([ang, ang], -1)), atol=2e-5)
    np.testing.assert_allclose(sin, np.sin(np.concatenate([ang, ang], -1)), atol=2e-5)


@pytest.mark.parametrize("n_head", [1, 3, 9])
def test_unpermute_inverts_llama_cpp_permutation(n_head):
    w = np.random.default_rng(n_head).standard_normal((n_head * 8, 5))
    np.testing.assert_array_equal(permute_qk(w, n_head), llama_cpp_permute(w, n_head))
    np.testing.assert_array_equal(unpermute_qk(llama_cpp_permute(w, n_head), n_head), w)
    np.testing.assert_array_equal(permute_qk(unpermute_qk(w, n_head), n_head), w)


def test_interleaved_rope_on_gguf_rows_equals_rotate_half_on_hf_rows():
    """Why un-permuting is right: llama.cpp's RoPE on its permuted Q/K rows gives the
    same vectors (permuted) as HF's rotate-half RoPE on HF rows, so the same scores."""
    rng = np.random.default_rng(2)
    hd, n_head, d, T, theta = 16, 3, 24, 6, 10000.0
    wq_hf = rng.standard_normal((n_head * hd, d))
    wk_hf = rng.standard_normal((n_head * hd, d))
    x = rng.standard_normal((T, d))
    pos = np.arange(T, dtype=np.float64)
    wq_gguf, wk_gguf = llama_cpp_permute(wq_hf, n_head), llama_cpp_permute(wk_hf, n_head)
    cos, sin = rope_angles(pos, hd, theta)
    for h in range(n_head):
        rows = slice(h * hd, (h + 1) * hd)
        q_cpp = rope_interleaved(x @ wq_gguf[rows].T, pos, theta)
        k_cpp = rope_interleaved(x @ wk_gguf[rows].T, pos, theta)
        q_hf = rope(x @ unpermute_qk(wq_gguf, n_head)[rows].T, cos, sin)
        k_hf = rope(x @ unpermute_qk(wk_gguf, n_head)[rows].T, cos, sin)
        np.testing.assert_allclose(q_hf, unpermute_qk(q_cpp.T, 1).T, atol=1e-5)
        np.testing.assert_allclose(q_hf @ k_hf.T, q_cpp @ k_cpp.T, atol=1e-4)


def test_silu_matches_formula_without_overflow_warnings():
    x = np.array([-1000, -90, -10, -1, 0, 1, 10, 90, 1000], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = silu(x)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        want = x64 / (1 + np.exp(-x64))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30)
    assert got.dtype == np.float32


def test_softmax_and_causal_mask():
    m = causal_mask(2, 5)  # two new queries after three cached keys
    assert m.dtype == np.float32 and m.shape == (2, 5)
    np.testing.assert_array_equal(m == 0, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(np.isinf(causal_mask(3, 3)), np.triu(np.ones((3, 3)), 1))
    np.testing.assert_array_equal(causal_mask(2, 5, start=1) == 0, [[1, 1, 0, 0, 0],
                                                                   [1, 1, 1, 0, 0]])
    p = softmax(np.array([[0.0, -np.inf, 1.0]], np.float32))
    np.testing.assert_allclose(p, [[1 / (1 + np.e), 0, np.e / (1 + np.e)]], rtol=1e-6)


def test_grouped_query_attention_matches_per_head_oracle():
    rng = np.random.default_rng(3)
    B, H, Hkv, T, S, hd = 2, 6, 2, 3, 5, 8
    q = rng.standard_normal((B, H, T, hd)).astype(np.float32)
    k = rng.standard_normal((B, Hkv, S, hd)).astype(np.float32)
    v = rng.standard_normal((B, Hkv, S, hd)).astype(np.float32)
    got = attention(q, k, v, causal_mask(T, S))
    assert got.shape == (B, H, T, hd) and got.dtype == np.float32
    for b in range(B):
        for h in range(H):
            j = h // (H // Hkv)
            s = q[b, h].astype(np.float64) @ k[b, j].T / np.sqrt(hd)
            s[np.arange(S)[None, :] > np.arange(S - T, S)[:, None]] = -np.inf
            p = np.exp(s - s.max(1, keepdims=True))
            np.testing.assert_allclose(got[b, h], p / p.sum(1, keepdims=True) @ v[b, j],
                                       atol=1e-5)


def test_attention_chunks_long_query_blocks_identically(monkeypatch):
    from fpsim.models import llama

    rng = np.random.default_rng(4)
    q = rng.standard_normal((1, 2, 40, 8)).astype(np.float32)
    k = rng.standard_normal((1, 1, 40, 8)).astype(np.float32)
    v = rng.standard_normal((1, 1, 40, 8)).astype(np.float32)
    full = attention(q, k, v, causal_mask(40, 40))
    np.testing.assert_array_equal(attention(q, k, v), full)  # None: causal
    np.testing.assert_allclose(attention(q[:, :, 30:], k, v), full[:, :, 30:], atol=1e-6)
    monkeypatch.setattr(llama, "_ATTN_CHUNK", 300)  # 7 query rows per block
    np.testing.assert_allclose(attention(q, k, v, causal_mask(40, 40)), full, atol=1e-6)
    np.testing.assert_allclose(attention(q, k, v), full, atol=1e-6)
    np.testing.assert_allclose(attention(q[:, :, 11:], k, v), full[:, :, 11:], atol=1e-6)


HOPPER = "Hopper:wgmma:m64n256k32.f32.e4m3.e4m3"


def _fp8_attention(**options):
    from fpsim.models import QuantConfig
    from fpsim.models.context import QuantContext
    from fpsim.quant import QuantSpec

    sites = {s: "float8_e4m3fn" for s in ("attn.q", "attn.k", "attn.v")}
    sites["attn.probs"] = QuantSpec(format="float8_e4m3fn", amax=448.0)  # scale 1
    return QuantContext(QuantConfig(sites=sites, options=options,
                                    accumulators={"attn.qk": HOPPER, "attn.pv": HOPPER}))


def _qkv(rng, t, s, h=2, n_kv=1, hd=32):
    q = rng.standard_normal((1, h, t, hd)).astype(np.float32)
    k = rng.standard_normal((1, n_kv, s, hd)).astype(np.float32)
    v = rng.standard_normal((1, n_kv, s, hd)).astype(np.float32)
    return q, k, v


def test_attention_mma_without_instructions_is_attention(monkeypatch):
    from fpsim.models import llama
    from fpsim.models.context import QuantContext

    q, k, v = _qkv(np.random.default_rng(5), 40, 40, h=4, n_kv=2)
    want = attention(q, k, v)
    got = llama.attention_mma(q, k, v, ctx=QuantContext(None), layer=0)
    np.testing.assert_allclose(got, want, atol=1e-6)
    monkeypatch.setattr(llama, "_ATTN_CHUNK", 300)  # blocks of 7 query rows, keys cut
    np.testing.assert_allclose(llama.attention_mma(q, k, v, ctx=QuantContext(None), layer=0),
                               want, atol=1e-6)


def test_attention_on_instructions_is_the_instruction_on_the_codes():
    """Scores and output are fpsim.mma on the E4M3 element values, scaled in float32; PV
    multiplies exp(s - rowmax) cast to E4M3 and divides by the row sum (FlashAttention)."""
    from fpsim import mma
    from fpsim.models import llama
    from fpsim.quant import quantize_tensor

    ctx = _fp8_attention()
    q, k, v = _qkv(np.random.default_rng(6), 5, 70)
    got = llama.attention_mma(q, k, v, ctx=ctx, layer=0, qk=ctx.instruction("attn.qk", 0),
                              pv=ctx.instruction("attn.pv", 0))
    inst = mma.instruction("Hopper", "wgmma", "m64n256k32.f32.e4m3.e4m3")
    qt, kt, vt = (quantize_tensor(x, "float8_e4m3fn") for x in (q, k, v))
    sq, sk, sv = (np.float32(t.element_scale().flat[0]) for t in (qt, kt, vt))
    mask = causal_mask(5, 70)
    for h in range(2):
        s = mma.matmul(qt.element_values()[0, h], kt.element_values()[0, 0].T,
                       instruction=inst) * (sq * sk)
        s = s * np.float32(1 / np.sqrt(32)) + mask
        p = np.exp(s - s.max(axis=1, keepdims=True))
        pq = fpsim.quantize(p, "e4m3fn").astype(np.float64)
        o = mma.matmul(pq, vt.element_values()[0, 0], instruction=inst) * sv
        row = p.sum(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
        np.testing.assert_array_equal(got[0, h], o / row)
    assert not np.array_equal(got, attention(q, k, v))  # FP8 changed something


def test_attention_on_instructions_in_blocks_is_exact(monkeypatch):
    """Query blocks and the keys a block masks (left out) change no bit."""
    from fpsim.models import llama

    ctx = _fp8_attention()
    q, k, v = _qkv(np.random.default_rng(7), 48, 48)
    kw = dict(ctx=ctx, layer=0, qk=ctx.instruction("attn.qk", 0),
              pv=ctx.instruction("attn.pv", 0))
    whole = llama.attention_mma(q, k, v, **kw)
    monkeypatch.setattr(llama, "_ATTN_CHUNK", 48 * 5)  # 5 query rows a block
    np.testing.assert_array_equal(llama.attention_mma(q, k, v, **kw), whole)


def test_promotion_cuts_the_pv_error_at_long_context():
    """PV over 4096 keys: Hopper's E8M13 accumulator drifts; promotion every 128 keys
    does not (errors against float64 on the same FP8 operands)."""
    from fpsim.models import llama

    rng = np.random.default_rng(8)
    q, k, v = _qkv(rng, 2, 4096, hd=64)
    q *= 0.1  # flat attention: many keys matter
    v = np.abs(v) + 1  # a sum that grows with the keys: truncation accumulates
    mask = np.zeros((2, 4096), np.float32)
    # float64 on the same operands: E4M3 exp(s - rowmax) and per-tensor E4M3 values
    s = q[0].astype(np.float64) @ k[0, 0].T.astype(np.float64) / 8.0
    p = np.exp(s - s.max(axis=-1, keepdims=True)).astype(np.float32)
    pq = fpsim.quantize(p, "e4m3fn").astype(np.float64)
    sv = np.float32(np.abs(v).max()) / np.float32(448)
    vq = fpsim.quantize(v[0, 0] / sv, "e4m3fn").astype(np.float64) * sv
    ref = pq @ vq / p.sum(axis=-1, dtype=np.float64)[..., None]
    errs = {}
    for name, ctx in (("hopper", _fp8_attention()), ("promoted", _fp8_attention(
            promote_every=128))):
        got = llama.attention_mma(q, k, v, mask=mask, ctx=ctx, layer=0, qk=None,
                                  pv=ctx.instruction("attn.pv", 0))[0]
        errs[name] = np.abs(got - ref).max() / np.abs(ref).max()
    # measured 8% against 0.07%: within a 128-key span the E8M13 truncation (2**-13 per
    # 32-product slice) remains
    assert errs["hopper"] > 20 * errs["promoted"], errs
    assert errs["promoted"] < 2e-3, errs


def test_attention_instruction_needs_its_operands_quantized():
    from fpsim.models import QuantConfig, llama
    from fpsim.models.context import QuantContext

    ctx = QuantContext(QuantConfig(sites={"attn.q": "float8_e4m3fn"},
                                   accumulators={"attn.qk": HOPPER}))
    q, k, v = _qkv(np.random.default_rng(9), 3, 3)
    with pytest.raises(ValueError, match="'attn.qk'.*operand 'attn.k' quantized"):
        llama.attention_mma(q, k, v, ctx=ctx, layer=0, qk=ctx.instruction("attn.qk", 0))
    ctx = QuantContext(QuantConfig(sites={"attn.q": "float8_e5m2", "attn.k": "float8_e4m3fn"},
                                   accumulators={"attn.qk": HOPPER}))
    with pytest.raises(ValueError, match="'attn.q' has format float8_e5m2, not .*e4m3"):
        llama.attention_mma(q, k, v, ctx=ctx, layer=0, qk=ctx.instruction("attn.qk", 0))
    with pytest.raises(ValueError, match="unknown accumulator site 'attn.kq'"):
        QuantConfig(accumulators={"attn.kq": HOPPER})


def test_kv_cache_append_and_capacity():
    c = KVCache(n_layer=2, batch=1, n_head_kv=1, head_dim=4, capacity=3)
    k = np.ones((1, 1, 2, 4), np.float32)
    ks, vs = c.append(0, k, 2 * k)
    assert ks.shape == (1, 1, 2, 4) and (vs == 2).all()
    c.length = 2
    with pytest.raises(ValueError, match="holds 3 positions; 4 needed"):
        c.append(0, k, k)


# ---- a tiny Llama in a GGUF file written here --------------------------------------
TINY = {"n_layer": 2, "n_embd": 32, "n_ff": 48, "n_head": 4, "n_head_kv": 2, "head_dim": 8,
        "theta": 10000.0, "rms_eps": 1e-5, "n_ctx": 64}


def _byte_level_alphabet():
    from tokenizers.pre_tokenizers import ByteLevel

    return sorted(ByteLevel.alphabet())


def write_tiny_gguf(path, seed=0, arch="llama"):
    """A random tiny Llama in HF layout, written as llama.cpp's converter writes it.

    Returns the HF-layout float64 weights (Q8_0 tensors as dequantized)."""
    import gguf

    rng = np.random.default_rng(seed)
    hp = TINY
    d, hd = hp["n_embd"], hp["head_dim"]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + _byte_level_alphabet() + ["Ġt", "he", "Ġthe"]
    merges = ["Ġ t", "h e", "Ġt he"]
    types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
    V = len(tokens)

    def rnd(*shape, scale=0.2):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(hp["n_layer"])
    w.add_context_length(hp["n_ctx"])
    w.add_embedding_length(d)
    w.add_feed_forward_length(hp["n_ff"])
    w.add_head_count(hp["n_head"])
    w.add_head_count_kv(hp["n_head_kv"])
    w.add_rope_freq_base(hp["theta"])
    w.add_layer_norm_rms_eps(hp["rms_eps"])
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(V)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)

    p = {"layers": []}
    embed = rnd(V, d, scale=1.0)
    q8 = gguf.quants.quantize(embed, gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("token_embd.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    p["embed"] = gguf.quants.dequantize(q8, gguf.GGMLQuantizationType.Q8_0).astype(np.float64)
    for i in range(hp["n_layer"]):
        lay = {"attn_norm": 1 + rnd(d), "ffn_norm": 1 + rnd(d),
               "wq": rnd(hp["n_head"] * hd, d), "wk": rnd(hp["n_head_kv"] * hd, d),
               "wv": rnd(hp["n_head_kv"] * hd, d), "wo": rnd(d, hp["n_head"] * hd),
               "w_gate": rnd(hp["n_ff"], d), "w_up": rnd(hp["n_ff"], d),
               "w_down": rnd(d, hp["n_ff"])}
        gguf_names = {"attn_norm": "attn_norm", "ffn_norm": "ffn_norm", "wq": "attn_q",
                      "wk": "attn_k", "wv": "attn_v", "wo": "attn_output",
                      "w_gate": "ffn_gate", "w_up": "ffn_up", "w_down": "ffn_down"}
        for name, arr in lay.items():
            if name == "wq":
                arr = llama_cpp_permute(arr, hp["n_head"], hp["n_head"])
            elif name == "wk":
                arr = llama_cpp_permute(arr, hp["n_head"], hp["n_head_kv"])
            w.add_tensor(f"blk.{i}.{gguf_names[name]}.weight", arr)
        p["layers"].append({k: v.astype(np.float64) for k, v in lay.items()})
    p["out_norm"] = (1 + rnd(d)).astype(np.float64)
    w.add_tensor("output_norm.weight", p["out_norm"].astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return p


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.gguf"
    return path, write_tiny_gguf(path)


def test_read_gguf_metadata_tensors_and_types(tiny):
    path, p = tiny
    g = read_gguf(path)
    hp = g.hparams
    assert (hp.n_layer, hp.n_embd, hp.n_ff, hp.n_head, hp.n_head_kv, hp.head_dim, hp.n_ctx) \
        == (2, 32, 48, 4, 2, 8, 64)
    assert hp.rope_theta == 10000.0 and hp.rms_eps == pytest.approx(1e-5)
    assert hp.n_vocab == len(g.tokenizer.tokens) == 3 + 256 + 3
    assert g.tensor_types["token_embd.weight"] == "Q8_0"
    assert g.tensor_types["blk.0.attn_q.weight"] == "F32"
    assert g.tensors["blk.0.attn_k.weight"].shape == (16, 32)  # (out, in)
    np.testing.assert_array_equal(g.tensors["token_embd.weight"], p["embed"].astype(np.float32))
    np.testing.assert_array_equal(unpermute_qk(g.tensors["blk.1.attn_k.weight"], 2),
                                  p["layers"][1]["wk"].astype(np.float32))
    assert g.tokenizer.eos_id == 2 and g.tokenizer.add_bos is False


def test_tokenizer_from_gguf_vocabulary(tiny):
    path, _ = tiny
    tk = bpe_tokenizer(read_gguf(path).tokenizer)
    ids = tk.encode("the the12<|im_end|>", add_special_tokens=False).ids
    toks = [tk.id_to_token(i) for i in ids]
    assert toks == ["t", "he", "Ġthe", "1", "2", "<|im_end|>"]
    assert tk.decode(tk.encode("a  é\n🙂", add_special_tokens=False).ids) == "a  é\n🙂"


def test_tiny_llama_matches_float64_reference(tiny):
    path, p = tiny
    model = Llama.from_gguf(path)
    ids = [5, 70, 261, 3, 100, 200, 7, 8, 9, 250]
    want = reference_forward(p, ids, dict(TINY, rms_eps=TINY["rms_eps"]))
    got = model.logits(ids)
    assert got.shape == (len(ids), len(p["embed"])) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
    # batch of two sequences, each as alone
    batch = np.array([ids, ids[::-1]])
    np.testing.assert_allclose(model.logits(batch)[1], model.logits(ids[::-1]), atol=1e-5)
    # KV-cached greedy decoding == full recompute
    assert model.generate(ids[:4], 8, stop_at_eos=False) == \
        model.generate(ids[:4], 8, stop_at_eos=False, use_cache=False)
    hs = model.hidden_states(ids)
    assert hs.shape == (TINY["n_layer"] + 1, len(ids), TINY["n_embd"])


def test_quantized_weights_keep_the_layout_of_the_fp32_ones(tiny):
    """A fake-quantized weight is laid out in memory as the weight it replaces: BLAS may sum
    in another order for another layout (OpenBLAS's AVX-512 small-matrix kernels do), so a
    model loaded from a GGUF of already-quantized weights would otherwise not reproduce the
    fake-quantized model bit for bit on such a machine."""
    path, _ = tiny
    model = Llama.from_gguf(path)
    base = model.linear_weights()
    layouts = {(w.flags.c_contiguous, w.flags.f_contiguous) for w in base.values()}
    assert (False, True) in layouts  # transposed views of the (out, in) tensors
    wq = model.with_quant("int8_weight_only")
    wq.logits([1, 2, 3])  # quantizes the weights
    quantized = {k[:2]: v for k, v in wq.ctx._weights.items()}
    assert quantized.keys() == base.keys()  # every linear, the lm_head too
    for key, w in quantized.items():
        assert (w.flags.c_contiguous, w.flags.f_contiguous) == \
            (base[key].flags.c_contiguous, base[key].flags.f_contiguous), key


def test_gguf_cache_is_memory_mapped_reused_and_rebuilt(tiny, tmp_path):
    src, _ = tiny
    path = tmp_path / "tiny.gguf"
    shutil.copy(src, path)
    g1 = load_gguf(path)
    npy = list(tmp_path.glob("tiny.gguf.*.f32v1.npy"))
    index = list(tmp_path.glob("tiny.gguf.*.f32v1.json"))
    assert len(npy) == 1 and len(index) == 1
    g2 = load_gguf(path)
    t = g2.tensors["blk.0.ffn_up.weight"]
    assert isinstance(t.base, np.memmap) or isinstance(t.base.base, np.memmap) \
        or not t.flags.owndata
    for name, a in read_gguf(path).tensors.items():
        np.testing.assert_array_equal(g1.tensors[name], a)
        np.testing.assert_array_equal(g2.tensors[name], a)
    assert g2.tokenizer == g1.tokenizer and g2.hparams == g1.hparams
    # a damaged cache is rebuilt (a new file: g1 and g2 still map the old one)
    head = npy[0].read_bytes()[:1000]
    npy[0].unlink()
    npy[0].write_bytes(head)
    g3 = load_gguf(path)
    np.testing.assert_array_equal(g3.tensors["output_norm.weight"],
                                  g1.tensors["output_norm.weight"])
    # a cache keyed by another checksum is not used
    meta = json.loads(index[0].read_text())
    assert meta["sha256"] == weights._sha256(path)


def test_truncated_or_foreign_gguf_raises_model_files_error(tiny, tmp_path):
    src, _ = tiny
    data = src.read_bytes()
    for cut in (10, 200, len(data) // 2, len(data) - 5):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFilesError, match="truncated or corrupted.*" + FETCH):
            read_gguf(bad, model="smollm2")
        with pytest.raises(ModelFilesError, match="truncated or corrupted"):
            load_gguf(bad)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ModelFilesError, match="GGUF"):
        read_gguf(junk)
    with pytest.raises(ModelFilesError, match="missing.*" + FETCH):
        load_gguf(tmp_path / "nothing.gguf", model="smollm2")
    other = tmp_path / "other.gguf"
    write_tiny_gguf(other, arch="gpt2")
    with pytest.raises(ModelFilesError, match="architectures llama, qwen2, bert"):
        read_gguf(other)


# ---- SmolLM2 against Hugging Face transformers (same Q4_1 GGUF) ----------------------
@pytest.fixture(scope="session")
def golden():
    with np.load(GOLDEN) as g:
        return dict(g)


@pytest.fixture(scope="session")
def smollm2(model_files):
    model_files("smollm2")
    return SmolLM2.load()


@pytest.fixture(scope="session")
def seq_logits(smollm2, golden):
    return smollm2.logits(golden["seq_ids"])


@pytest.mark.slow
def test_hparams_read_from_the_file(smollm2):
    hp = smollm2.hparams
    assert (hp.n_layer, hp.n_embd, hp.n_head, hp.n_head_kv, hp.head_dim, hp.n_ff) == \
        (30, 576, 9, 3, 64, 1536)
    assert hp.rope_theta == 100000.0 and hp.n_vocab == 49152 and hp.n_ctx == 8192
    assert hp.rms_eps == pytest.approx(1e-5)
    assert "Q4_1" in SmolLM2.BASELINE


@pytest.mark.slow
def test_token_ids_match_hf_tokenizer(smollm2, golden):
    off = golden["text_offsets"]
    for i, text in enumerate(golden["texts"]):
        assert smollm2.tokenize(str(text)) == golden["text_ids"][off[i]:off[i + 1]].tolist(), text
        assert smollm2.decode(smollm2.tokenize(str(text))) == str(text)
    assert smollm2.tokenize("") == []
    assert smollm2.tokenize("Hello")[0] != smollm2.tokenizer_spec.bos_id  # no BOS added


@pytest.mark.slow
def test_logits_match_hf(seq_logits, golden):
    z = seq_logits
    assert z.shape == (64, 49152) and z.dtype == np.float32
    assert np.abs(z[golden["logits_rows"]] - golden["logits_full"]).max() <= 1e-3
    topk = np.take_along_axis(z, golden["topk_ids"], axis=-1)
    assert np.abs(topk - golden["topk_logits"]).max() <= 1e-3
    np.testing.assert_array_equal(z.argmax(-1), golden["argmax"])


@pytest.mark.slow
def test_losses_and_perplexity_match_hf(smollm2, golden):
    losses = smollm2.token_losses(golden["seq_ids"])
    assert losses.shape == (63,)
    np.testing.assert_allclose(losses, golden["token_losses"], atol=1e-3)
    ppl = smollm2.perplexity(golden["seq_ids"].tolist())
    assert ppl == pytest.approx(float(golden["perplexity"]), rel=1e-4)
    text = str(golden["texts"][0])
    assert smollm2.perplexity(text) == pytest.approx(
        float(np.exp(smollm2.token_losses(smollm2.tokenize(text)).mean())), rel=1e-12)


@pytest.mark.slow
def test_hidden_states_match_hf(smollm2, golden):
    hs = smollm2.hidden_states(golden["seq_ids"])
    assert hs.shape == (31, 64, 576)
    for j, layer in enumerate(golden["hidden_layers"]):
        ref = golden["hidden"][j]
        assert np.abs(hs[layer] - ref).max() <= 1e-5 * np.abs(ref).max(), layer


@pytest.mark.slow
@pytest.mark.parametrize("j", [0, 1])
def test_greedy_generation_matches_hf_and_full_recompute(smollm2, golden, j):
    prompt = golden[f"gen_prompt_ids_{j}"].tolist()
    want = golden[f"gen_new_ids_{j}"].tolist()
    got = smollm2.generate(prompt, len(want))
    assert got == want, (smollm2.decode(got), smollm2.decode(want))
    if j == 0:
        assert smollm2.generate(prompt, 8, use_cache=False) == want[:8]


@pytest.mark.slow
def test_int8_changes_logits_but_keeps_top1(smollm2, golden, seq_logits):
    """INT8 W8A8 (per-channel weights, per-token activations), relative to the Q4_1
    weights: measured top-1 agreement 54/64, perplexity 16.75 vs 16.96."""
    q = smollm2.with_quant("int8")
    z = q.logits(golden["seq_ids"])
    assert z.dtype == np.float32 and np.abs(z - seq_logits).max() > 1e-2
    agree = np.mean(z.argmax(-1) == seq_logits.argmax(-1))
    assert agree >= 0.75, agree
    ids = golden["seq_ids"]
    z64 = z[:-1].astype(np.float64)
    lse = np.log(np.exp(z64 - z64.max(-1, keepdims=True)).sum(-1)) + z64.max(-1)
    ppl = float(np.exp(np.mean(lse - z64[np.arange(63), ids[1:]])))
    assert ppl == pytest.approx(float(golden["perplexity"]), rel=0.1)
    # the FP32 model sharing those weights is untouched (and causal: a prefix's logits)
    np.testing.assert_allclose(smollm2.logits(golden["seq_ids"][:8]), seq_logits[:8], atol=1e-4)


class SpyContext:
    """Records every (method, site, layer) a forward pass calls; changes nothing."""

    def __init__(self):
        self.calls = set()

    def linear(self, site, layer, x, w, b=None):
        assert w.shape[0] == x.shape[-1], (site, w.shape, x.shape)  # (in, out) layout
        self.calls.add(("linear", site, layer))
        return x @ w

    def act(self, site, layer, x):
        self.calls.add(("act", site, layer))
        return x

    def weight(self, site, layer, w):
        self.calls.add(("weight", site, layer))
        return w

    def instruction(self, site, layer):
        self.calls.add(("instruction", site, layer))
        return None  # attention's matmuls in float32


@pytest.mark.slow
def test_every_site_is_called(smollm2, golden):
    spy = smollm2.with_quant()
    spy.ctx = SpyContext()
    spy.generate(golden["seq_ids"][:5], 2)
    linears = {"q", "k", "v", "o", "gate", "up", "down"}
    acts = {"attn.q", "attn.k", "attn.v", "attn.probs", "kv_cache"}
    want = {("linear", s, i) for s in linears for i in range(30)}
    want |= {("act", s, i) for s in acts for i in range(30)}
    want |= {("instruction", s, i) for s in ("attn.qk", "attn.pv") for i in range(30)}
    want |= {("linear", "lm_head", None), ("weight", "embed", None)}
    assert spy.ctx.calls == want


@pytest.mark.slow
def test_trace_records_attention_and_kv_cache_sites(smollm2, golden):
    cfg = QuantConfig(sites={"kv_cache": "int8_token", "attn.probs": "int8", "q": "int8_channel"})
    q = smollm2.with_quant(cfg, trace=True)
    q.logits(golden["seq_ids"][:16])
    assert {site for site, _ in q.ctx.trace} == {"kv_cache", "attn.probs", "q"}
    kv = q.ctx.trace[("kv_cache", 3)]
    assert kv.calls == 2 and kv.elements == 2 * 3 * 16 * 64  # keys and values, 3 heads
    assert 20 < kv.sqnr_db < 60


@pytest.mark.slow
def test_invalid_inputs_give_clear_errors(smollm2):
    with pytest.raises(ValueError, match="empty text"):
        smollm2.logits(smollm2.tokenize(""))
    with pytest.raises(ValueError, match="at least 2"):
        smollm2.perplexity("Hi")
    with pytest.raises(ValueError, match="context length 8192"):
        smollm2.logits([0] * 8193)
    with pytest.raises(ValueError, match="context length"):
        smollm2.generate([5, 6], 8191)
    with pytest.raises(ValueError, match=r"\[0, 49152\)"):
        smollm2.logits([5, 49152])
    with pytest.raises(TypeError, match="tokenize"):
        smollm2.logits("some text")
    with pytest.raises(TypeError, match="str"):
        smollm2.tokenize(b"bytes")


@pytest.mark.slow
def test_missing_or_corrupt_gguf_names_the_fetch_command(smollm2, tmp_path, monkeypatch):
    real = weights.model_path("smollm2", SmolLM2.FILENAME)
    monkeypatch.setenv("FPSIM_CACHE", str(tmp_path))
    with pytest.raises(ModelFilesError, match="missing.*" + FETCH):
        SmolLM2.load()
    (tmp_path / "smollm2").mkdir()
    bad = tmp_path / "smollm2" / SmolLM2.FILENAME
    with open(real, "rb") as f:
        bad.write_bytes(f.read(1_000_000))
    with pytest.raises(ModelFilesError, match="truncated or corrupted.*" + FETCH):
        SmolLM2.load()
    with pytest.raises(ModelFilesError, match="truncated or corrupted.*" + FETCH):
        read_gguf(bad, model="smollm2")


# ---- QuaRot rotation (QuantConfig(rotation="hadamard")) -----------------------------------
def test_rotated_tiny_llama_computes_the_same_function(tiny):
    """Orthogonal rotations folded into the weights change no output beyond float32 noise;
    the weights themselves do change (norm scales become ones)."""
    path, _ = tiny
    base = Llama.from_gguf(path)
    rot = base.with_quant(QuantConfig(rotation="hadamard"))
    ids = [5, 70, 261, 3, 100, 200, 7, 8, 9, 250]
    want = base.logits(ids)
    np.testing.assert_allclose(rot.logits(ids), want, atol=1e-5 * np.abs(want).max())
    assert not np.allclose(rot.weights.embedding, base.weights.embedding)
    assert (rot.weights.blocks[0].attn_norm == 1).all() and (rot.weights.norm == 1).all()
    assert rot.weights.blocks[1].down_rotation.shape == (48, 48)
    assert rot.with_quant(None).weights is base.weights  # the loaded weights are kept
    # the seed (models' rng=) picks the signs: another seed, another rotation
    from fpsim.models.llama import _rotated

    assert not np.allclose(_rotated(base.weights, 1).embedding, rot.weights.embedding)


def test_rotation_config_checks_and_round_trips(tmp_path):
    with pytest.raises(ValueError, match="rotation must be None, 'hadamard'"):
        QuantConfig(rotation="quarot")
    cfg = QuantConfig(sites={"down": "int4_block32"}, rotation="hadamard")
    for ext in ("json", "toml"):
        cfg.save(tmp_path / f"c.{ext}")
        assert QuantConfig.load(tmp_path / f"c.{ext}") == cfg
    from fpsim.models.rotation import hadamard_matrix

    for n in (48, 576, 1536):
        q = hadamard_matrix(n, seed=3)
        np.testing.assert_allclose(q @ q.T, np.eye(n), atol=1e-12)
    with pytest.raises(ValueError, match="no Hadamard matrix of order 40"):
        hadamard_matrix(40)


@pytest.mark.slow
def test_rotated_smollm2_matches_the_original(smollm2, golden, seq_logits):
    """SmolLM2 with QuaRot's rotation in FP32 gives the original logits to float32
    precision (the bound of the HF comparison, 1e-3, and the same argmax)."""
    rot = smollm2.with_quant(QuantConfig(rotation="hadamard"))
    z = rot.logits(golden["seq_ids"])
    assert np.abs(z - seq_logits).max() <= 1e-3
    np.testing.assert_array_equal(z.argmax(-1), seq_logits.argmax(-1))
