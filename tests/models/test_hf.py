"""Your own checkpoint (fpsim.models.hf): Hugging Face folders and GGUF files.

No network: the checkpoints are written here, in tmp_path, from the packaged models.

* SmolLM2: the packaged Q4_1 GGUF, dequantized to float32, written as a Hugging Face Llama
  folder (HF's config.json schema and tensor names, Q/K rows in HF's order, a tokenizer.json
  built from the GGUF's vocabulary with ``bpe_tokenizer``) and loaded back: logits, tokens,
  generation equal the packaged model's **bit for bit** (same float32 numbers, same
  layouts, same forward pass).  Variants on the first 4 layers against the packaged model
  cut to 4 layers, also bitwise: sharded with an index, Qwen2-style (``model_type``
  "qwen2", zero Q/K/V biases, an untied lm_head copy), BF16 (against the packaged weights
  rounded to bfloat16 by ml_dtypes), and GGUF files written with gguf's GGUFWriter (F32;
  ``llama`` with llama.cpp's Q/K permutation, ``qwen2`` without).
* A tiny random Qwen2 / Llama 3 model (nonzero Q/K/V biases, GQA, untied head, RoPE
  scaling ``llama3`` and ``linear``) against a float64 per-head oracle written here from
  transformers' formulas; the same model as a GGUF file with llama.cpp's ``rope_freqs``.
* MiniLM: the packaged safetensors written as a sentence-transformers folder (modules.json,
  1_Pooling, 2_Normalize) equals the packaged model bitwise; a plain folder pools without
  normalising; CLS pooling; sharded; BF16 and F16 files against ml_dtypes / NumPy rounding.
* BERT GGUF files as llama.cpp's converter writes them (phantom-space WordPiece vocabulary,
  F16 linears and token embedding, F32 position/token-type tables, norms and biases): the
  packaged MiniLM's, equal bitwise to MiniLM with those weights rounded to float16, with
  the shipped tokenizer's ids; a tiny one for clear errors (missing tensor or key, shape,
  causal, pooling).
* The safetensors reader against the ``safetensors`` package; clear errors (table-driven).
"""

import dataclasses
import json
import math
import pathlib
import shutil

import numpy as np
import pytest

import fpsim
from fpsim.models import hf
from fpsim.models.bert import MiniLM
from fpsim.models.context import QuantContext
from fpsim.models.gguf_io import TokenizerSpec, bpe_tokenizer, permute_qk
from fpsim.models.llama import Llama, LlamaWeights, llama3_rope_factors, weights_from_rows
from fpsim.models.weights import ModelFilesError, UnsupportedModelError, model_path

ml_dtypes = pytest.importorskip("ml_dtypes")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
TEXTS = ["The capital of France is", "Numbers: 12345 and 3.14!", "<|im_start|>user\nHi<|im_end|>"]
SENTENCES = ["A cat sits on the mat.", "Dogs run in the park!", "", "ünïcödé wörds"]
N_CUT = 4  # layers of the variants


# ---- writing checkpoints ---------------------------------------------------------------
def save_safetensors(path, tensors, dtype="F32"):
    """Write float32 arrays as F32, BF16 (ml_dtypes' bfloat16, rounded to nearest even) or
    F16 with the safetensors package; non-float tensors are kept."""
    np_dtype = {"F32": np.float32, "BF16": ml_dtypes.bfloat16, "F16": np.float16}[dtype]
    safetensors_numpy.save_file(
        {k: np.ascontiguousarray(v.astype(np_dtype) if v.dtype == np.float32 else v)
         for k, v in tensors.items()}, str(path))


def write_folder(folder, config, tensors, tokenizer, *, shards=1, dtype="F32", extra=None):
    """A Hugging Face folder: config.json, tokenizer.json, model.safetensors or ``shards``
    files with model.safetensors.index.json (HF's names and schema)."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if isinstance(tokenizer, (str, pathlib.Path)):
        shutil.copy(tokenizer, folder / "tokenizer.json")
    else:
        tokenizer.save(str(folder / "tokenizer.json"))
    names = list(tensors)
    if shards == 1:
        save_safetensors(folder / "model.safetensors", tensors, dtype)
    else:
        weight_map, total = {}, 0
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: tensors[k] for k in names[s::shards]}
            save_safetensors(folder / fname, part, dtype)
            weight_map.update({k: fname for k in part})
            total += sum(v.nbytes for v in part.values())
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    for name, obj in (extra or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(obj))
    return folder


def smol_config(model, n_layer=None, **over):
    """SmolLM2-135M-Instruct's config.json (HF's LlamaConfig schema), from the GGUF's values."""
    hp, spec = model.hparams, model.tokenizer_spec
    cfg = {"architectures": ["LlamaForCausalLM"], "attention_bias": False,
           "attention_dropout": 0.0, "bos_token_id": spec.bos_id, "eos_token_id": spec.eos_id,
           "head_dim": hp.head_dim, "hidden_act": "silu", "hidden_size": hp.n_embd,
           "initializer_range": 0.041666666666666664, "intermediate_size": hp.n_ff,
           "max_position_embeddings": hp.n_ctx, "mlp_bias": False, "model_type": "llama",
           "num_attention_heads": hp.n_head, "num_hidden_layers": n_layer or hp.n_layer,
           "num_key_value_heads": hp.n_head_kv, "pad_token_id": spec.pad_id,
           "pretraining_tp": 1, "rms_norm_eps": hp.rms_eps, "rope_scaling": None,
           "rope_theta": hp.rope_theta, "tie_word_embeddings": True, "torch_dtype": "float32",
           "transformers_version": "4.42.3", "use_cache": True, "vocab_size": hp.n_vocab}
    cfg.update(over)
    return cfg


def smol_tensors(model, n_layer=None, *, biases=False, untied=False):
    """The packaged weights under HF's names, (out, in), Q/K rows in HF's order."""
    w = model.weights
    out = {"model.embed_tokens.weight": np.asarray(w.embedding),
           "model.norm.weight": np.asarray(w.norm)}
    for i, b in enumerate(w.blocks[:n_layer]):
        p = f"model.layers.{i}."
        out.update({p + "input_layernorm.weight": b.attn_norm,
                    p + "post_attention_layernorm.weight": b.ffn_norm,
                    p + "self_attn.q_proj.weight": b.wq.T, p + "self_attn.k_proj.weight": b.wk.T,
                    p + "self_attn.v_proj.weight": b.wv.T, p + "self_attn.o_proj.weight": b.wo.T,
                    p + "mlp.gate_proj.weight": b.w_gate.T, p + "mlp.up_proj.weight": b.w_up.T,
                    p + "mlp.down_proj.weight": b.w_down.T})
        if biases:
            for n, m in (("q", b.wq), ("k", b.wk), ("v", b.wv)):
                out[p + f"self_attn.{n}_proj.bias"] = np.zeros(m.shape[1], np.float32)
    if untied:
        out["lm_head.weight"] = np.array(w.embedding)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def cut(model, n_layer, round_to=None):
    """The packaged model with its first ``n_layer`` layers (the weights rounded to
    ``round_to`` and back to float32 if given, in the layout every loader makes)."""
    w = model.weights
    if round_to is None:
        weights = LlamaWeights(w.embedding, w.blocks[:n_layer], w.norm, w.lm_head)
    else:
        def r(a):
            return np.ascontiguousarray(a).astype(round_to).astype(np.float32)

        blocks = [{f: r(getattr(b, f).T if f.startswith("w") else getattr(b, f))
                   for f in ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w_gate", "w_up",
                             "w_down")} for b in w.blocks[:n_layer]]
        weights = weights_from_rows(r(w.embedding), r(w.norm), None, blocks)
    hp = dataclasses.replace(model.hparams, n_layer=n_layer)
    return Llama(hp, weights, model.tokenizer_spec, tokenizer=model.tokenizer)


@pytest.fixture(scope="module")
def smollm2(model_files):
    model_files("smollm2")
    return fpsim.models.load("smollm2")


@pytest.fixture(scope="module")
def minilm(model_files):
    model_files("minilm")
    return fpsim.models.load("minilm")


@pytest.fixture(scope="module")
def smol_tokenizer(smollm2):
    return bpe_tokenizer(smollm2.tokenizer_spec)


@pytest.fixture(scope="module")
def smol_folder(smollm2, smol_tokenizer, tmp_path_factory):
    """All of SmolLM2 (30 layers, float32, 540 MB) as one model.safetensors."""
    folder = tmp_path_factory.mktemp("smollm2-hf")
    return write_folder(folder, smol_config(smollm2), smol_tensors(smollm2), smol_tokenizer,
                        extra={"generation_config.json": {"bos_token_id": 1, "eos_token_id": 2}})


# ---- SmolLM2 -------------------------------------------------------------------------
def test_smollm2_folder_equals_packaged_bitwise(smollm2, smol_folder):
    model = fpsim.models.load(smol_folder)
    assert type(model) is Llama
    assert model.hparams == smollm2.hparams
    assert model.weights_source == (f"Hugging Face safetensors (F32) from {smol_folder.resolve()}"
                                    ", float32")
    assert "Q4_1" in smollm2.weights_source
    assert model.tokenizer_spec.eos_id == smollm2.tokenizer_spec.eos_id == 2
    for text in TEXTS:
        assert model.tokenize(text) == smollm2.tokenize(text)
    ids = smollm2.tokenize(TEXTS[0])
    np.testing.assert_array_equal(model.logits(ids), smollm2.logits(ids))
    assert model.generate(ids, 3) == smollm2.generate(ids, 3)
    assert model.perplexity(TEXTS[1]) == smollm2.perplexity(TEXTS[1])
    # quantization presets act on the same weights the same way
    q = fpsim.models.load(smol_folder, quant="int8", rng=3)
    np.testing.assert_array_equal(q.logits(ids), smollm2.with_quant("int8").logits(ids))
    assert q.weights_source == model.weights_source


@pytest.mark.parametrize("variant", ["sharded", "qwen2", "bf16"])
def test_smollm2_variants_equal_packaged_bitwise(variant, smollm2, smol_tokenizer, tmp_path):
    cfg = smol_config(smollm2, N_CUT)
    kw, tensors, ref = {}, None, cut(smollm2, N_CUT)
    if variant == "sharded":
        kw["shards"] = 3
    elif variant == "qwen2":  # Qwen2's code path: biases, untied head, another model_type
        cfg.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"],
                   tie_word_embeddings=False, use_sliding_window=False, sliding_window=4096)
        tensors = smol_tensors(smollm2, N_CUT, biases=True, untied=True)
    else:
        kw["dtype"] = "BF16"
        ref = cut(smollm2, N_CUT, round_to=ml_dtypes.bfloat16)
    folder = write_folder(tmp_path, cfg, tensors or smol_tensors(smollm2, N_CUT),
                          smol_tokenizer, **kw)
    model = fpsim.models.load(folder)
    ids = smollm2.tokenize(TEXTS[2])
    np.testing.assert_array_equal(model.logits(ids), ref.logits(ids))
    if variant == "qwen2":
        assert model.weights.blocks[0].bq is not None
        assert model.weights.lm_head is not model.weights.embedding.T
        assert model.hparams.n_ctx == smollm2.hparams.n_ctx  # sliding window is off
    if variant == "bf16":
        assert model.weights_source.startswith("Hugging Face safetensors (BF16) from ")
        assert model.weights_source.endswith("converted to float32")


def write_gguf(path, arch, hp, spec, tensors_hf, *, rope_freqs=None):
    """HF-layout tensors written as llama.cpp's converter writes them (F32): Q/K weights
    and biases permuted for ``llama``, not for ``qwen2``."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(hp.n_layer)
    w.add_context_length(hp.n_ctx)
    w.add_embedding_length(hp.n_embd)
    w.add_feed_forward_length(hp.n_ff)
    w.add_head_count(hp.n_head)
    w.add_head_count_kv(hp.n_head_kv)
    w.add_rope_freq_base(hp.rope_theta)
    w.add_layer_norm_rms_eps(hp.rms_eps)
    w.add_rope_dimension_count(hp.head_dim)
    w.add_vocab_size(hp.n_vocab)
    w.add_tokenizer_model(spec.model)
    w.add_tokenizer_pre(spec.pre)
    w.add_token_list(list(spec.tokens))
    w.add_token_types(list(spec.token_types))
    w.add_token_merges(list(spec.merges))
    if spec.bos_id is not None:
        w.add_bos_token_id(spec.bos_id)
    w.add_eos_token_id(spec.eos_id)
    names = {"input_layernorm.weight": "attn_norm.weight",
             "post_attention_layernorm.weight": "ffn_norm.weight",
             "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
             "self_attn.v_proj.weight": "attn_v.weight",
             "self_attn.o_proj.weight": "attn_output.weight",
             "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
             "mlp.down_proj.weight": "ffn_down.weight", "self_attn.q_proj.bias": "attn_q.bias",
             "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.bias": "attn_v.bias"}
    for k, v in tensors_hf.items():
        if k == "model.embed_tokens.weight":
            name = "token_embd.weight"
        elif k == "model.norm.weight":
            name = "output_norm.weight"
        elif k == "lm_head.weight":
            name = "output.weight"
        else:
            _, _, i, rest = k.split(".", 3)
            name = f"blk.{i}.{names[rest]}"
            if arch == "llama" and "attn_q" in name:
                v = permute_qk(v, hp.n_head)
            elif arch == "llama" and "attn_k" in name:
                v = permute_qk(v, hp.n_head_kv)
        w.add_tensor(name, np.ascontiguousarray(v, dtype=np.float32))
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_smollm2_gguf_round_trip_bitwise(arch, smollm2, tmp_path):
    hp = dataclasses.replace(smollm2.hparams, n_layer=N_CUT)
    tensors = smol_tensors(smollm2, N_CUT, biases=arch == "qwen2")
    path = write_gguf(tmp_path / f"smol-{arch}.gguf", arch, hp, smollm2.tokenizer_spec, tensors)
    model = fpsim.models.load(str(path), cache=False)
    assert model.weights_source.startswith(f"GGUF {arch} file ")
    assert model.weights_source.endswith("(tensors F32 x" + str(len(tensors)) + "), "
                                         "dequantized to float32")
    ids = smollm2.tokenize(TEXTS[2])
    assert model.tokenize(TEXTS[2]) == ids
    np.testing.assert_array_equal(model.logits(ids), cut(smollm2, N_CUT).logits(ids))


# ---- a tiny Qwen2 / Llama 3 model against a float64 oracle ------------------------------
TINY = dict(d=16, n_head=4, n_kv=2, hd=8, ff=24, V=48, L=2, theta=10000.0, eps=1e-6)
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 1024}


def hf_llama3_inv_freq(hd, theta, rs):
    """transformers' _compute_llama3_parameters, transcribed (float64)."""
    inv_freq = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    old = rs["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / rs["low_freq_factor"], old / rs["high_freq_factor"]
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = np.where(wavelen > low_wavelen, inv_freq / rs["factor"], inv_freq)
    smooth = (old / wavelen - rs["low_freq_factor"]) / (rs["high_freq_factor"]
                                                        - rs["low_freq_factor"])
    smoothed = (1 - smooth) * inv_freq_llama / rs["factor"] + smooth * inv_freq_llama
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, inv_freq_llama)


def tiny_tensors(seed=0):
    rng = np.random.default_rng(seed)
    t = TINY

    def rnd(*shape, scale=0.3):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    out = {"model.embed_tokens.weight": rnd(t["V"], t["d"], scale=1.0),
           "model.norm.weight": 1 + rnd(t["d"]), "lm_head.weight": rnd(t["V"], t["d"])}
    for i in range(t["L"]):
        p = f"model.layers.{i}."
        q, kv = t["n_head"] * t["hd"], t["n_kv"] * t["hd"]
        out.update({p + "input_layernorm.weight": 1 + rnd(t["d"]),
                    p + "post_attention_layernorm.weight": 1 + rnd(t["d"]),
                    p + "self_attn.q_proj.weight": rnd(q, t["d"]),
                    p + "self_attn.k_proj.weight": rnd(kv, t["d"]),
                    p + "self_attn.v_proj.weight": rnd(kv, t["d"]),
                    p + "self_attn.o_proj.weight": rnd(t["d"], q),
                    p + "self_attn.q_proj.bias": rnd(q), p + "self_attn.k_proj.bias": rnd(kv),
                    p + "self_attn.v_proj.bias": rnd(kv),
                    p + "mlp.gate_proj.weight": rnd(t["ff"], t["d"]),
                    p + "mlp.up_proj.weight": rnd(t["ff"], t["d"]),
                    p + "mlp.down_proj.weight": rnd(t["d"], t["ff"])})
    return out


def oracle_logits(tensors, ids, inv_freq):
    """Float64 forward pass of a Qwen2-style decoder, one head at a time (HF's modeling code:
    biases on q/k/v, rotate-half RoPE with ``inv_freq``, GQA, SwiGLU, untied head)."""
    t = TINY
    g = {k: v.astype(np.float64) for k, v in tensors.items()}
    T, hd = len(ids), t["hd"]
    ang = np.arange(T)[:, None] * inv_freq  # [T, hd/2]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

    def norm(v, w):
        return v / np.sqrt(np.mean(v ** 2, -1, keepdims=True) + t["eps"]) * w

    def rope(x):
        return x * cos + np.concatenate([-x[:, hd // 2:], x[:, :hd // 2]], -1) * sin

    x = g["model.embed_tokens.weight"][ids]
    for i in range(t["L"]):
        p = lambda n: g[f"model.layers.{i}.{n}"]  # noqa: E731
        h = norm(x, p("input_layernorm.weight"))
        q, k, v = (h @ p(f"self_attn.{n}_proj.weight").T + p(f"self_attn.{n}_proj.bias")
                   for n in "qkv")
        heads = []
        for j in range(t["n_head"]):
            kv = j // (t["n_head"] // t["n_kv"])
            s = rope(q[:, j * hd:(j + 1) * hd]) @ rope(k[:, kv * hd:(kv + 1) * hd]).T
            s = s / math.sqrt(hd) + np.triu(np.full((T, T), -np.inf), 1)
            pr = np.exp(s - s.max(1, keepdims=True))
            heads.append(pr / pr.sum(1, keepdims=True) @ v[:, kv * hd:(kv + 1) * hd])
        x = x + np.concatenate(heads, -1) @ p("self_attn.o_proj.weight").T
        h = norm(x, p("post_attention_layernorm.weight"))
        a = h @ p("mlp.gate_proj.weight").T
        x = x + (a / (1 + np.exp(-a)) * (h @ p("mlp.up_proj.weight").T)) @ p(
            "mlp.down_proj.weight").T
    return norm(x, g["model.norm.weight"]) @ g["lm_head.weight"].T


def tiny_config(**over):
    t = TINY
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
           "hidden_size": t["d"], "head_dim": t["hd"], "intermediate_size": t["ff"],
           "num_hidden_layers": t["L"],
           "num_attention_heads": t["n_head"], "num_key_value_heads": t["n_kv"],
           "rms_norm_eps": t["eps"], "rope_theta": t["theta"], "max_position_embeddings": 128,
           "vocab_size": t["V"], "tie_word_embeddings": False, "bos_token_id": 0,
           "eos_token_id": 1, "rope_scaling": None, "use_sliding_window": False}
    cfg.update(over)
    return cfg


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tk = Tokenizer(models.WordLevel({f"w{i}": i for i in range(TINY["V"])}, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return tk


def test_llama3_rope_factors_match_transformers():
    for hd, theta in ((8, 10000.0), (64, 500000.0), (128, 500000.0)):
        rs = dict(LLAMA3, original_max_position_embeddings=8192 if hd > 8 else 1024)
        base = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
        f = llama3_rope_factors(hd, theta, **{k: v for k, v in rs.items() if k != "rope_type"})
        np.testing.assert_allclose(base / f, hf_llama3_inv_freq(hd, theta, rs), rtol=1e-14)
        assert {1.0, 8.0} <= set(f.tolist()) and len(set(f.tolist())) > 2  # all three bands


@pytest.mark.parametrize("rope_scaling", [None, "linear", "llama3"])
def test_tiny_qwen2_matches_float64_oracle(rope_scaling, tmp_path):
    tensors = tiny_tensors()
    hd, theta = TINY["hd"], TINY["theta"]
    inv_freq = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    rs = None
    if rope_scaling == "linear":
        rs = {"rope_type": "linear", "factor": 4.0}
        inv_freq = inv_freq / 4.0
    elif rope_scaling == "llama3":
        rs = LLAMA3
        inv_freq = hf_llama3_inv_freq(hd, theta, rs)
    folder = write_folder(tmp_path, tiny_config(rope_scaling=rs), tensors, tiny_tokenizer())
    model = fpsim.models.load(folder)
    ids = np.random.default_rng(1).integers(0, TINY["V"], 100)
    want = oracle_logits(tensors, ids, inv_freq)
    got = model.logits(ids)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)  # float32 vs float64
    if rope_scaling:  # the scaling matters at these positions
        plain = oracle_logits(tensors, ids, 1.0 / theta ** (np.arange(0, hd, 2) / hd))
        assert np.abs(plain - want).max() > 1e-2
    # without biases the oracle differs: they are applied
    no_bias = {k: (0 * v if k.endswith(".bias") else v) for k, v in tensors.items()}
    assert np.abs(oracle_logits(no_bias, ids, inv_freq) - want).max() > 1e-2
    assert model.tokenize("w3 w5") == [3, 5]


def test_tiny_llama3_gguf_rope_freqs_equals_folder(tmp_path):
    """llama.cpp stores Llama 3's scaling as a rope_freqs tensor (float32 divisors); a
    ``llama`` GGUF with permuted Q/K gives the folder's logits up to that float32 rounding."""
    tensors = {k: v for k, v in tiny_tensors(2).items() if not k.endswith(".bias")}
    folder = write_folder(tmp_path / "hf", tiny_config(model_type="llama", rope_scaling=LLAMA3),
                          tensors, tiny_tokenizer())
    ref = fpsim.models.load(folder)
    spec = TokenizerSpec(model="gpt2", pre="default",
                         tokens=tuple(f"w{i}" for i in range(TINY["V"])),
                         token_types=(1,) * TINY["V"], merges=(), bos_id=0, eos_id=1,
                         unk_id=None, pad_id=None, add_bos=False)
    factors = llama3_rope_factors(TINY["hd"], TINY["theta"],
                                  **{k: v for k, v in LLAMA3.items() if k != "rope_type"})
    path = write_gguf(tmp_path / "tiny.gguf", "llama", ref.hparams, spec, tensors,
                      rope_freqs=factors)
    model = fpsim.models.load(path, cache=False)
    assert model.hparams.rope_factors == pytest.approx(ref.hparams.rope_factors, rel=1e-7)
    ids = np.random.default_rng(3).integers(0, TINY["V"], 100)
    np.testing.assert_allclose(model.logits(ids), ref.logits(ids), atol=1e-4)


# ---- MiniLM ----------------------------------------------------------------------------
ST_FILES = {
    "modules.json": [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"}],
    "1_Pooling/config.json": {"word_embedding_dimension": 384, "pooling_mode_cls_token": False,
                              "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                              "pooling_mode_mean_sqrt_len_tokens": False},
    "sentence_bert_config.json": {"max_seq_length": 256, "do_lower_case": False},
}


def minilm_folder(folder, *, dtype="F32", shards=1, extra=ST_FILES, config_over=None,
                  drop=(), prefix=""):
    tensors = safetensors_numpy.load_file(str(model_path("minilm", "model.safetensors")))
    tensors = {prefix + k: v for k, v in tensors.items() if k not in drop}
    cfg = json.loads(model_path("minilm", "config.json").read_text())
    cfg.update(config_over or {})
    return write_folder(folder, cfg, tensors, model_path("minilm", "tokenizer.json"),
                        dtype=dtype, shards=shards, extra=extra)


@pytest.mark.parametrize("shards,prefix", [(1, ""), (2, ""), (1, "bert.")])
def test_sentence_transformers_folder_equals_packaged_bitwise(shards, prefix, minilm, tmp_path):
    model = fpsim.models.load(minilm_folder(tmp_path, shards=shards, prefix=prefix))
    assert type(model) is MiniLM
    assert model.cfg == minilm.cfg
    np.testing.assert_array_equal(model.embed(SENTENCES), minilm.embed(SENTENCES))
    for a, b in zip(model.hidden_states(SENTENCES), minilm.hidden_states(SENTENCES)):
        np.testing.assert_array_equal(a, b)
    assert model.weights_source.startswith("Hugging Face safetensors (F32) from ")
    assert "all-MiniLM-L6-v2" in minilm.weights_source
    np.testing.assert_array_equal(fpsim.models.load(tmp_path, quant="int8").embed(SENTENCES),
                                  fpsim.models.load("minilm", quant="int8").embed(SENTENCES))


def test_plain_bert_folder_mean_pools_without_normalizing(minilm, tmp_path):
    model = fpsim.models.load(minilm_folder(tmp_path, extra={}))
    assert (model.cfg.pooling, model.cfg.normalize, model.cfg.max_seq_length) == ("mean", False,
                                                                                  512)
    e = model.embed(SENTENCES)
    norms = np.linalg.norm(e, axis=1)
    assert not np.allclose(norms, 1)
    np.testing.assert_allclose(e / norms[:, None], minilm.embed(SENTENCES), atol=1e-6)


def test_cls_pooling(minilm, tmp_path):
    extra = dict(ST_FILES)
    extra["1_Pooling/config.json"] = dict(extra["1_Pooling/config.json"],
                                          pooling_mode_cls_token=True,
                                          pooling_mode_mean_tokens=False)
    model = fpsim.models.load(minilm_folder(tmp_path, extra=extra))
    assert (model.cfg.pooling, model.cfg.normalize) == ("cls", True)
    h = minilm.hidden_states(SENTENCES)[-1][:, 0]
    np.testing.assert_allclose(model.embed(SENTENCES),
                               h / np.linalg.norm(h, axis=1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize("dtype,round_to", [("BF16", ml_dtypes.bfloat16), ("F16", np.float16)])
def test_half_precision_bert_is_widened_exactly(dtype, round_to, minilm, tmp_path):
    model = fpsim.models.load(minilm_folder(tmp_path, dtype=dtype))
    assert model.weights_source.startswith(f"Hugging Face safetensors ({dtype}) from ")
    tensors = safetensors_numpy.load_file(str(model_path("minilm", "model.safetensors")))

    def r(a):
        return a.astype(round_to).astype(np.float32)

    want = r(tensors["encoder.layer.2.attention.self.query.weight"]).T
    np.testing.assert_array_equal(model.layers[2].wq, want)
    from fpsim.models.bert import weights_from_checkpoint

    emb, layers = weights_from_checkpoint(lambda k: r(tensors[k]), minilm.cfg)
    ref = MiniLM(emb, layers, minilm.cfg, minilm.tokenizer, QuantContext(None))
    np.testing.assert_array_equal(model.embed(SENTENCES), ref.embed(SENTENCES))
    assert np.abs(model.embed(SENTENCES) - minilm.embed(SENTENCES)).max() > 0  # rounded


# ---- the safetensors reader ----------------------------------------------------------
def test_reader_matches_safetensors_package(model_files):
    model_files("minilm")
    path = model_path("minilm", "model.safetensors")
    want = safetensors_numpy.load_file(str(path))
    st = hf.Safetensors([path])
    assert st.names() and set(st.names()) == set(want)
    for k, v in want.items():
        if v.dtype == np.float32:
            got = st.float32(k)
            assert got.dtype == np.float32 and not got.flags.writeable  # memory-mapped
            np.testing.assert_array_equal(got, v)


@pytest.mark.parametrize("dtype,np_dtype", [("BF16", ml_dtypes.bfloat16), ("F16", np.float16),
                                            ("F64", np.float64)])
def test_reader_widens_like_ml_dtypes(dtype, np_dtype, tmp_path):
    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-42, 3e38, 65504, 6e-8])
    x = np.concatenate([special, rng.standard_normal(1000) * 10.0 ** rng.integers(-8, 8, 1000)])
    with np.errstate(over="ignore"):
        stored = x.astype(np_dtype)  # 3e38 is inf in float16
    safetensors_numpy.save_file({"t": stored.reshape(2, -1)}, str(tmp_path / "a.safetensors"))
    got = hf.Safetensors([tmp_path / "a.safetensors"]).float32("t")
    want = stored.astype(np.float32).reshape(2, -1)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))  # bit for bit


# ---- errors ----------------------------------------------------------------------------
def _drop(name):
    def f(folder):
        (folder / name).unlink()
    return f


def _config(**over):
    def f(folder):
        cfg = json.loads((folder / "config.json").read_text())
        cfg.update(over)
        (folder / "config.json").write_text(json.dumps(cfg))
    return f


def _rewrite_tensors(fn):
    def f(folder):
        t = safetensors_numpy.load_file(str(folder / "model.safetensors"))
        safetensors_numpy.save_file(fn(t), str(folder / "model.safetensors"))
    return f


def _truncate(folder):
    p = folder / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-1000])


def _bad_index(folder):
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"embeddings.word_embeddings.weight": "model-00002-of-00002.safetensors"}}))


ERRORS = [
    ("unsupported model_type", _config(model_type="gpt2"), UnsupportedModelError,
     r"model_type 'gpt2' is not supported; fpsim runs 'llama', 'mistral', 'qwen2', 'bert'"),
    ("missing config.json", _drop("config.json"), ModelFilesError, r"config.json is missing"),
    ("missing tokenizer.json", _drop("tokenizer.json"), ModelFilesError,
     r"tokenizer.json is missing"),
    ("missing weight file", _drop("model.safetensors"), ModelFilesError,
     r"weight file .*model.safetensors is missing: the folder has no \*.safetensors"),
    ("missing shard", _bad_index, ModelFilesError,
     r"weight file .*model-00002-of-00002.safetensors is missing \(listed in "),
    ("missing tensor", _rewrite_tensors(
        lambda t: {k: v for k, v in t.items() if "layer.3.output.dense.weight" not in k}),
     ModelFilesError, r"no tensor 'encoder.layer.3.output.dense.weight'"),
    ("shape mismatch", _config(intermediate_size=1024), ModelFilesError,
     r"tensor 'encoder.layer.0.intermediate.dense.weight' in model.safetensors has shape "
     r"\(1536, 384\); config.json implies \(1024, 384\)"),
    ("integer weights", _rewrite_tensors(
        lambda t: dict(t, **{"embeddings.LayerNorm.bias": np.zeros(384, np.int8)})),
     UnsupportedModelError, r"'embeddings.LayerNorm.bias' in model.safetensors is I8"),
    ("truncated file", _truncate, ModelFilesError, r"ends past the end of the file"),
    ("unsupported activation", _config(hidden_act="relu"), UnsupportedModelError,
     r"hidden_act 'relu'"),
]


@pytest.mark.parametrize("what,damage,error,match", ERRORS, ids=[e[0] for e in ERRORS])
def test_clear_errors(what, damage, error, match, model_files, tmp_path):
    model_files("minilm")
    folder = minilm_folder(tmp_path / "m", extra={})
    damage(folder)
    with pytest.raises(error, match=match):
        fpsim.models.load(folder)


def test_llama_config_errors(tmp_path):
    tensors = tiny_tensors()
    for over, match in (({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
                         r"rope_scaling type 'yarn' is not supported; only 'linear' and 'llama3'"),
                        ({"model_type": "llama", "attention_bias": True},
                         r"attention_bias=true"),
                        ({"num_key_value_heads": 4}, r"'model.layers.0.self_attn.k_proj.weight' "
                         r"in model.safetensors has shape \(16, 16\); config.json implies "
                         r"\(32, 16\)")):
        folder = write_folder(tmp_path / str(len(match)), tiny_config(**over), tensors,
                              tiny_tokenizer())
        with pytest.raises(ModelFilesError, match=match):
            fpsim.models.load(folder)
    folder = write_folder(tmp_path / "nobias", tiny_config(),
                          {k: v for k, v in tensors.items() if "q_proj.bias" not in k},
                          tiny_tokenizer())
    with pytest.raises(ModelFilesError, match=r"no tensor 'model.layers.0.self_attn.q_proj.bias'"):
        fpsim.models.load(folder)


def test_path_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model 'gpt5'; models: minilm, smollm2, or"):
        fpsim.models.load("gpt5")
    with pytest.raises(ModelFilesError, match=r"does not exist"):
        fpsim.models.load(tmp_path / "nothing")
    with pytest.raises(ModelFilesError, match=r"does not exist"):
        fpsim.models.load("nothing.gguf")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ModelFilesError, match=r"not a .gguf file"):
        fpsim.models.load(tmp_path / "w.bin")
    with pytest.raises(TypeError, match=r"name must be a model name"):
        fpsim.models.load(3)
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")  # an architecture not read
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedModelError,
                       match=r"holds a 'gpt2' model .* llama, qwen2, bert"):
        fpsim.models.load(tmp_path / "gpt2.gguf")


# ---- BERT GGUF files (llama.cpp's bert layout) ------------------------------------------
def phantom_vocab(tokenizer_json):
    """The vocabulary and token types llama.cpp's converter writes for a WordPiece
    tokenizer.json: special tokens CONTROL and as they are, ``##x`` -> ``x``, ``x`` ->
    ``"\u2581x"`` (its ``BertModel.set_vocab``)."""
    tj = json.loads(pathlib.Path(tokenizer_json).read_text())
    vocab = tj["model"]["vocab"]
    special = {t["id"] for t in tj["added_tokens"] if t["special"]}
    tokens, types = [None] * len(vocab), [1] * len(vocab)
    for tok, i in vocab.items():
        if i in special:
            tokens[i], types[i] = tok, 3
        else:
            tokens[i] = tok[2:] if tok.startswith("##") else "\u2581" + tok
    return tokens, types


def write_bert_gguf(path, tensors, tokens, types, *, n_layer, n_head, n_ctx, arch="bert",
                    eps=1e-12, causal=False, pooling=1, skip=(), half=()):
    """A BERT GGUF file with gguf's GGUFWriter, keys and tensor names as llama.cpp's
    converter writes them; ``tensors``: GGUF name -> float32 array (out, in); the names in
    ``half`` stored as F16, those in ``skip`` (tensors or keys) left out."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    d, f = tensors["blk.0.ffn_up.weight"].shape[::-1]
    meta = {"block_count": n_layer, "context_length": n_ctx, "embedding_length": d,
            "feed_forward_length": f, "head_count": n_head, "layer_norm_eps": eps}
    for key, v in meta.items():
        if key not in skip:
            getattr(w, f"add_{key}")(v)
    w.add_causal_attention(causal)
    w.add_pooling_type(gguf.PoolingType(pooling))
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_type_count(2)
    for key, tok in (("bos", "[CLS]"), ("eos", "[SEP]"), ("unk", "[UNK]"), ("sep", "[SEP]"),
                     ("pad", "[PAD]")):
        getattr(w, f"add_{key}_token_id")(tokens.index(tok))
    for name, a in tensors.items():
        if name not in skip:
            w.add_tensor(name, np.ascontiguousarray(a.astype(np.float16 if name in half
                                                               else np.float32)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return pathlib.Path(path)


#: Hugging Face BERT name -> llama.cpp's (the converter's tensor map)
HF_TO_GGUF = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
    **{f"{hf}.{wb}": f"{gg}.{wb}" for hf, gg in (
        ("attention.self.query", "attn_q"), ("attention.self.key", "attn_k"),
        ("attention.self.value", "attn_v"), ("attention.output.dense", "attn_output"),
        ("attention.output.LayerNorm", "attn_output_norm"), ("intermediate.dense", "ffn_up"),
        ("output.dense", "ffn_down"), ("output.LayerNorm", "layer_output_norm"))
       for wb in ("weight", "bias")},
}


def test_minilm_gguf_as_llama_cpp_converts_it(minilm, tmp_path):
    """The packaged MiniLM as ``convert_hf_to_gguf.py --outtype f16`` writes it: 2-D
    weights F16 except the position and token-type tables.  Loading it gives MiniLM with
    those weights rounded to float16, bit for bit, and the shipped tokenizer's ids."""
    tensors = safetensors_numpy.load_file(str(model_path("minilm", "model.safetensors")))
    gg = {}
    for key, a in tensors.items():
        layer = key.startswith("encoder.layer.")
        short = key.split(".", 3)[3] if layer else key
        if short in HF_TO_GGUF:
            gg[("blk." + key.split(".")[2] + "." if layer else "") + HF_TO_GGUF[short]] = a
    assert len(gg) == 5 + 16 * 6
    half = {n for n, a in gg.items() if a.ndim == 2 and n not in ("position_embd.weight",
                                                                  "token_types.weight")}
    tokens, types = phantom_vocab(model_path("minilm", "tokenizer.json"))
    path = write_bert_gguf(tmp_path / "minilm-f16.gguf", gg, tokens, types, n_layer=6,
                           n_head=12, n_ctx=512, half=half)
    model = fpsim.models.load(path, cache=False)
    assert type(model) is MiniLM and model.weights_source.startswith("GGUF bert file ")
    assert model.cfg == dataclasses.replace(minilm.cfg, max_seq_length=512)
    texts = fpsim.data.sentences()
    assert model.tokenize(texts) == minilm.tokenize(texts)
    from fpsim.models.bert import weights_from_checkpoint

    def r(key):
        a = tensors[key]
        return a.astype(np.float16).astype(np.float32) if (
            a.ndim == 2 and "position" not in key and "token_type" not in key) else a

    emb, layers = weights_from_checkpoint(r, minilm.cfg)
    ref = MiniLM(emb, layers, minilm.cfg, minilm.tokenizer, QuantContext(None))
    np.testing.assert_array_equal(model.embed(SENTENCES), ref.embed(SENTENCES))


def tiny_bert_tensors(n_vocab=7, d=8, f=16, n_ctx=16, seed=0):
    """A random one-layer BERT's tensors by GGUF name, (out, in)."""
    shapes = {"token_embd.weight": (n_vocab, d), "position_embd.weight": (n_ctx, d),
              "token_types.weight": (2, d), "token_embd_norm.weight": (d,),
              "token_embd_norm.bias": (d,)}
    for name, out, inp in (("attn_q", d, d), ("attn_k", d, d), ("attn_v", d, d),
                           ("attn_output", d, d), ("attn_output_norm", d, None),
                           ("ffn_up", f, d), ("ffn_down", d, f), ("layer_output_norm", d, None)):
        shapes[f"blk.0.{name}.weight"] = (out,) if inp is None else (out, inp)
        shapes[f"blk.0.{name}.bias"] = (out,)
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


TINY_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "\u2581a", "\u2581cat", "s"]
TINY_TYPES = [3, 3, 3, 3, 1, 1, 1]


@pytest.mark.parametrize("change, error, match", [
    (dict(skip=("blk.0.ffn_down.weight",)), ModelFilesError,
     r"has no tensor 'blk.0.ffn_down.weight': not a complete BERT GGUF"),
    (dict(skip=("feed_forward_length",)), ModelFilesError,
     r"missing or malformed metadata 'bert.feed_forward_length'"),
    (dict(n_head=3), ModelFilesError, r"not a multiple of bert.attention.head_count 3"),
    (dict(n_ctx=32), ModelFilesError,
     r"'position_embd.weight' .* has shape \(16, 8\); the bert.\* metadata implies \(32, 8\)"),
    (dict(causal=True), UnsupportedModelError, r"bert.attention.causal is true"),
    (dict(pooling=3), UnsupportedModelError, r"pooling_type 'last' is not supported"),
    (dict(arch="nomic-bert"), UnsupportedModelError,
     r"holds a 'nomic-bert' model .* llama, qwen2, bert"),
])
def test_bert_gguf_errors_name_what_is_wrong(change, error, match, tmp_path):
    kw = dict(n_layer=1, n_head=2, n_ctx=16) | change
    path = write_bert_gguf(tmp_path / "tiny.gguf", tiny_bert_tensors(), TINY_TOKENS,
                           TINY_TYPES, **kw)
    with pytest.raises(error, match=match):
        fpsim.models.load(path, cache=False)


def test_tiny_bert_gguf_loads_and_a_decoder_loader_refuses_it(tmp_path):
    path = write_bert_gguf(tmp_path / "tiny.gguf", tiny_bert_tensors(), TINY_TOKENS,
                           TINY_TYPES, n_layer=1, n_head=2, n_ctx=16, pooling=0)
    model = fpsim.models.load(path)  # through the float32 cache
    assert model.tokenize(["A cats", ""]) == [[2, 4, 5, 6, 3], [2, 3]]
    assert model.cfg.pooling == "mean" and model.embed(["a cat"]).shape == (1, 8)
    assert fpsim.models.load(path).cfg == model.cfg  # from the cache
    with pytest.raises(UnsupportedModelError, match=r"holds a 'bert' model .*, not one of "
                                                    r"llama, qwen2; load it with"):
        Llama.from_gguf(path)
