"""GGUF export: the file gguf.GGUFReader reads, its tensors' ggml types and bytes, and the
model loaded back from it computing the fake-quantized model's outputs bit for bit:
SmolLM2 (llama.cpp's ``llama``) and MiniLM (llama.cpp's ``bert``: its tensor names, keys
and phantom-space WordPiece vocabulary, read back into a tokenizer with the shipped ids)."""

import numpy as np
import pytest

import fpsim
from fpsim.app.cli import main
from fpsim.models import QuantConfig
from fpsim.models.export import export_gguf
from fpsim.models.llama import Llama


@pytest.fixture(scope="module")
def smollm2(model_files):
    model_files("smollm2")
    return fpsim.models.load("smollm2")


@pytest.mark.parametrize("preset, ggml", [("gguf_q4_0", "Q4_0"), ("gguf_mxfp4", "MXFP4")])
def test_exported_gguf_reproduces_the_fake_quantized_model(smollm2, tmp_path, preset, ggml):
    import gguf

    model = smollm2.with_quant(preset)
    out = export_gguf(model, tmp_path / "m.gguf")
    reader = gguf.GGUFReader(out)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    n = smollm2.hparams.n_layer
    for i in (0, n - 1):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                     "ffn_down"):
            assert types[f"blk.{i}.{name}.weight"] == ggml
        assert types[f"blk.{i}.attn_norm.weight"] == "F32"
    assert types["token_embd.weight"] == "F32" and "output.weight" not in types  # tied
    # the bytes of a tensor are fpsim's packing of that weight (rows (out, in))
    down = next(t for t in reader.tensors if t.name == "blk.3.ffn_down.weight")
    qt = fpsim.quantize_tensor(np.ascontiguousarray(smollm2.weights.blocks[3].w_down.T),
                               model.ctx.spec("down", 3))
    assert np.array_equal(np.asarray(down.data).reshape(-1), qt.to_ggml().reshape(-1))
    back = Llama.from_gguf(out)
    assert back.tokenizer_spec == smollm2.tokenizer_spec
    assert back.hparams == smollm2.hparams
    ids = smollm2.tokenize("Alice was beginning to get very tired of sitting by her sister")
    assert np.array_equal(back.logits(ids), model.logits(ids))


def test_fp32_export_is_the_model(smollm2, tmp_path):
    out = export_gguf(smollm2, tmp_path / "f32.gguf")
    back = Llama.from_gguf(out)
    ids = smollm2.tokenize("The Declaration")
    assert np.array_equal(back.logits(ids), smollm2.logits(ids))


@pytest.mark.parametrize("quant, match", [
    ("int8", "quantizes activations"),
    (QuantConfig(sites={"q": "int4_block32"}), "not one of llama.cpp's block formats"),
    (QuantConfig(sites={"lm_head": "ggml_q8_0"}), "tied lm_head"),
    ("fp8_hopper", "accumulator"),
])
def test_what_a_gguf_cannot_hold_is_refused(smollm2, tmp_path, quant, match):
    with pytest.raises(ValueError, match=match):
        export_gguf(smollm2.with_quant(quant), tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_a_rotated_model_is_refused():
    """QuaRot's online Hadamard before ``down``, and one before every linear, are not in
    llama.cpp's graphs."""
    from types import SimpleNamespace

    from fpsim.models import QuantContext
    from fpsim.models.export import _check_exportable

    for rotation in ("hadamard", "online_hadamard"):
        ctx = QuantContext(QuantConfig(sites={"q": "ggml_q4_0"}, rotation=rotation))
        with pytest.raises(ValueError, match=f"rotation='{rotation}' needs an online Hadamard"):
            _check_exportable(SimpleNamespace(hparams=None, ctx=ctx))


def test_export_refuses_a_missing_folder_and_another_model(smollm2, tmp_path):
    from types import SimpleNamespace

    from fpsim.models import QuantContext

    with pytest.raises(ValueError, match="does not exist"):
        export_gguf(smollm2, tmp_path / "no" / "x.gguf")
    with pytest.raises(ValueError, match=r"Llama-family decoders .* and BERT encoders "
                                         r"\(MiniLM\); got SimpleNamespace"):
        export_gguf(SimpleNamespace(ctx=QuantContext(None)), tmp_path / "x.gguf")


def test_cli_export_prints_the_real_file_size(smollm2, tmp_path, capsys):
    out = tmp_path / "q8.gguf"
    assert main(["export", "--model", "smollm2", "--preset", "gguf_q8_0", "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{out.stat().st_size} bytes" in printed
    assert main(["export", "--model", "smollm2", "--preset", "int8", "--out",
                 str(tmp_path / "y.gguf")]) == 2
    assert "quantizes activations" in capsys.readouterr().err


def test_a_hugging_face_folder_exports_with_its_tokenizer(smollm2, tmp_path):
    """A model loaded from a Hugging Face folder (2 layers of SmolLM2 here) gets GGUF
    tokenizer metadata from its tokenizer.json; the file loads back to the same outputs."""
    from test_hf import smol_config, smol_tensors, write_folder

    from fpsim.models.gguf_io import bpe_tokenizer

    folder = write_folder(tmp_path / "hf", smol_config(smollm2, n_layer=2),
                          smol_tensors(smollm2, n_layer=2),
                          bpe_tokenizer(smollm2.tokenizer_spec))
    model = fpsim.models.load(folder, quant="gguf_q8_0")
    out = export_gguf(model, tmp_path / "hf.gguf")
    back = fpsim.models.load(out)
    assert back.tokenizer_spec.tokens == smollm2.tokenizer_spec.tokens
    assert set(back.tokenizer_spec.merges) == set(smollm2.tokenizer_spec.merges)
    ids = smollm2.tokenize("So she was considering in her own mind")
    assert np.array_equal(back.logits(ids), model.logits(ids))
    # your own checkpoint in the evaluation: the exported file, by path, from the CLI layer
    from fpsim.app.evaluate import evaluate

    (res,) = evaluate(str(out), ["int8"], max_tokens=32, progress=False, n_boot=10)
    assert res.model == str(out) and np.isfinite(res.metrics["ppl"])
    assert str(out) in res.description  # which weights the FP32 baseline is


def test_gptq_weights_in_a_ggml_format_export_as_gptq_made_them(smollm2, tmp_path):
    from test_hf import smol_config, smol_tensors, write_folder

    from fpsim.models.gguf_io import bpe_tokenizer

    folder = write_folder(tmp_path / "hf", smol_config(smollm2, n_layer=2),
                          smol_tensors(smollm2, n_layer=2),
                          bpe_tokenizer(smollm2.tokenizer_spec))
    cfg = QuantConfig(sites={s: "ggml_q4_0" for s in ("q", "k", "v", "o", "gate", "up", "down")},
                      weight_algorithm="gptq", options={"calibration_tokens": 512})
    model = fpsim.models.load(folder, quant=cfg)
    rtn = fpsim.models.load(folder, quant="gguf_q4_0")
    ids = smollm2.tokenize("Alice was beginning to get very tired")
    assert not np.array_equal(model.logits(ids), rtn.logits(ids))  # GPTQ's, not RTN's
    back = fpsim.models.load(export_gguf(model, tmp_path / "gptq.gguf"))
    assert np.array_equal(back.logits(ids), model.logits(ids))
    with pytest.raises(ValueError, match="weight_algorithm='awq'"):
        export_gguf(fpsim.models.load(folder, quant=QuantConfig(
            sites={"down": "int4_block32"}, weight_algorithm="awq")), tmp_path / "a.gguf")


# ---- MiniLM: llama.cpp's bert layout ------------------------------------------------------
@pytest.fixture(scope="module")
def minilm(model_files):
    model_files("minilm")
    return fpsim.models.load("minilm")


def bert_tensor_names(n_layer):
    """The tensors of a BERT encoder without classifier in gguf's own tables."""
    import gguf

    names = gguf.TENSOR_NAMES
    skip = {gguf.MODEL_TENSOR.ATTN_QKV, gguf.MODEL_TENSOR.OUTPUT_NORM, gguf.MODEL_TENSOR.CLS,
            gguf.MODEL_TENSOR.CLS_OUT}
    out = set()
    for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.BERT]:
        if t in skip:
            continue
        ends = (".weight",) if t in (gguf.MODEL_TENSOR.TOKEN_EMBD, gguf.MODEL_TENSOR.POS_EMBD,
                                     gguf.MODEL_TENSOR.TOKEN_TYPES) else (".weight", ".bias")
        for i in range(n_layer) if "{bid}" in names[t] else [None]:
            out |= {names[t].format(bid=i) + e for e in ends}
    return out


SENTENCES = ["A cat sits on the mat.", "Dogs run in the park!", "", "ünïcödé wörds",
             "The quick brown fox jumps over the lazy dog."]


@pytest.mark.parametrize("preset, ggml", [("gguf_q8_0", "Q8_0"), ("gguf_q4_0", "Q4_0")])
def test_minilm_gguf_reproduces_the_fake_quantized_model(minilm, tmp_path, capsys, preset, ggml):
    import gguf

    model = fpsim.models.load("minilm", quant=preset)
    out = tmp_path / f"minilm-{ggml}.gguf"
    if preset == "gguf_q8_0":  # from the command line
        assert main(["export", "--model", "minilm", "--preset", preset, "--out", str(out)]) == 0
        assert f"{out.stat().st_size} bytes" in capsys.readouterr().out
    else:
        export_gguf(model, out)
    reader = gguf.GGUFReader(out)
    meta = {k: f.contents() for k, f in reader.fields.items()}
    K, arch = gguf.Keys, "bert"
    assert meta[K.General.ARCHITECTURE] == arch
    cfg = minilm.cfg
    for key, want in ((K.LLM.CONTEXT_LENGTH, 512), (K.LLM.EMBEDDING_LENGTH, cfg.d_model),
                      (K.LLM.FEED_FORWARD_LENGTH, cfg.d_ffn), (K.LLM.BLOCK_COUNT, cfg.n_layers),
                      (K.Attention.HEAD_COUNT, cfg.n_heads),
                      (K.LLM.POOLING_TYPE, gguf.PoolingType.MEAN),
                      (K.Attention.CAUSAL, False)):
        assert meta[key.format(arch=arch)] == want, key
    assert np.float32(meta[K.Attention.LAYERNORM_EPS.format(arch=arch)]) == np.float32(1e-12)
    tokens = meta[K.Tokenizer.LIST]
    assert meta[K.Tokenizer.MODEL] == "bert" and len(tokens) == 30522
    assert [tokens[i] for i in (0, 100, 101, 102, 103)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                            "[MASK]"]
    assert tokens[minilm.tokenizer.token_to_id("the")] == "\u2581the"
    assert tokens[minilm.tokenizer.token_to_id("##ing")] == "ing"
    assert (meta[K.Tokenizer.BOS_ID], meta[K.Tokenizer.SEP_ID], meta[K.Tokenizer.UNK_ID],
            meta[K.Tokenizer.PAD_ID], meta[K.Tokenizer.MASK_ID]) == (101, 102, 100, 0, 103)
    assert meta[K.Tokenizer.TOKEN_TYPE_COUNT] == 2
    # tensors: llama.cpp's names; linears in the preset's type, (in, out) as ggml's (ne0, ne1)
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == bert_tensor_names(cfg.n_layers)
    for name, t in tensors.items():
        linear = name.endswith(("attn_q.weight", "attn_k.weight", "attn_v.weight",
                                "attn_output.weight", "ffn_up.weight", "ffn_down.weight"))
        assert t.tensor_type.name == (ggml if linear else "F32"), name
    assert tensors["blk.0.ffn_up.weight"].shape.tolist() == [cfg.d_model, cfg.d_ffn]
    assert tensors["position_embd.weight"].shape.tolist() == [cfg.d_model, 512]
    qt = fpsim.quantize_tensor(np.ascontiguousarray(minilm.layers[5].w_out.T),
                               model.ctx.spec("ffn_out", 5))
    assert np.array_equal(np.asarray(tensors["blk.5.ffn_down.weight"].data).reshape(-1),
                          qt.to_ggml().reshape(-1))
    back = fpsim.models.load(out, cache=False)
    assert type(back).__name__ == "MiniLM" and back.ctx.config is None
    assert back.tokenize(SENTENCES) == minilm.tokenize(SENTENCES)
    assert np.array_equal(back.embed(SENTENCES), model.embed(SENTENCES))
    assert not np.array_equal(back.embed(SENTENCES), minilm.embed(SENTENCES))  # quantized


def test_minilm_fp32_export_is_the_model_and_its_tokenizer(minilm, tmp_path):
    """The FP32 file: the FP32 model's embeddings bit for bit; the tokenizer built from the
    file's vocabulary gives the shipped tokenizer.json's ids on every shipped sentence, and
    writes back the same GGUF vocabulary."""
    from fpsim.models.export import _wordpiece_spec

    out = export_gguf(minilm, tmp_path / "minilm-f32.gguf")
    back = fpsim.models.load(out, cache=False)
    assert back.weights_source.startswith("GGUF bert file ") and "F32 x101" in back.weights_source
    assert np.array_equal(back.embed(SENTENCES), minilm.embed(SENTENCES))
    texts = fpsim.data.sentences()
    assert back.tokenize(texts) == minilm.tokenize(texts)
    assert back.tokenizer_spec == _wordpiece_spec(minilm.tokenizer)
    assert _wordpiece_spec(back.tokenizer) == back.tokenizer_spec


@pytest.mark.parametrize("quant, match", [
    ("int8", "quantizes activations"),
    (QuantConfig(sites={"embed": "ggml_q8_0"}), "quantized token embedding table"),
    (QuantConfig(sites={"ffn_in": "int4_block32"}), "not one of llama.cpp's block formats"),
])
def test_what_a_bert_gguf_cannot_hold_is_refused(minilm, tmp_path, quant, match):
    with pytest.raises(ValueError, match=match):
        export_gguf(fpsim.models.load("minilm", quant=quant), tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
