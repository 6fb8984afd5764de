"""Export a quantized model as a GGUF file that llama.cpp (and fpsim) can load.

:func:`export_gguf` writes the model's hyperparameters, its tokenizer and its tensors, in
llama.cpp's layout: a Llama-family decoder (SmolLM2, Llama, Qwen2) as ``llama`` or
``qwen2``, a BERT encoder (MiniLM) as ``bert`` (the tensors and keys of llama.cpp's
``convert_hf_to_gguf.py`` ``BertModel``).  Every linear whose weight recipe is one of
llama.cpp's block formats (``ggml_q4_0``..., e.g. the ``gguf_q4_0`` preset) is stored in
that ggml type, packed by :meth:`fpsim.quant.QuantizedTensor.to_ggml` (bit for bit what
``gguf.quants`` writes); the other tensors (norms, biases, the token, position and
token-type embeddings, linears the config leaves in FP32) are stored as F32.  Loading the
file back (:func:`fpsim.models.load`) gives the weights the fake-quantized model computes
with, bit for bit, and so the same outputs.

A model loaded from a Hugging Face folder gets GGUF tokenizer metadata made from its
``tokenizer.json``: byte-level BPE (vocabulary, merges, special tokens as CONTROL; the
pre-tokenizer is written as ``default``), or WordPiece (``tokenizer.ggml.model`` ``bert``,
the vocabulary in llama.cpp's phantom-space form, [CLS] as BOS, [SEP] as EOS and
separator).  Only what a GGUF file can hold is exported: weight formats of llama.cpp, no
activation quantization, no accumulator model, no QuaRot rotation (each is refused with an
error).
"""

from __future__ import annotations

import pathlib

import numpy as np

__all__ = ["export_gguf"]

_BLOCK_NAMES = {"wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output",
                "w_gate": "ffn_gate", "w_up": "ffn_up", "w_down": "ffn_down"}
_SITES = {"wq": "q", "wk": "k", "wv": "v", "wo": "o", "w_gate": "gate", "w_up": "up",
          "w_down": "down"}


def _is_bert(model) -> bool:
    from .bert import MiniLM

    return isinstance(model, MiniLM)


def _check_exportable(model) -> None:
    cfg = model.ctx.config
    if not hasattr(model, "hparams") and not _is_bert(model):
        raise ValueError("export_gguf writes Llama-family decoders (SmolLM2, Llama, Qwen2) "
                         f"and BERT encoders (MiniLM); got {type(model).__name__}")
    if cfg is None:
        return
    problems = []
    acts = sorted({s for s, v in cfg.sites.items() if v is not None and "." in s}
                  | {s for o in cfg.layers.values() for s, v in o.items()
                     if v is not None and "." in s})
    if acts:
        problems.append(f"it quantizes activations ({', '.join(acts)}), which a GGUF file "
                        "does not hold")
    if cfg.accumulator is not None or cfg.accumulators:
        problems.append("it models an accumulator / matrix instruction")
    if cfg.linear_mode != "fake_quant":
        problems.append(f"linear_mode={cfg.linear_mode!r}")
    if cfg.rotation is not None:
        problems.append(f"rotation={cfg.rotation!r} needs an online Hadamard transform "
                        "llama.cpp's graphs do not run")
    if cfg.weight_algorithm == "awq":
        problems.append("weight_algorithm='awq' (its per-linear input factors would have to be "
                        "folded into the operations before the linears)")
    if problems:
        raise ValueError(f"cannot export config {cfg.name!r} to GGUF: " + "; ".join(problems)
                         + ". Use a weight-only preset in llama.cpp's formats (gguf_q8_0, "
                         "gguf_q4_0, gguf_q4_1, gguf_q5_0, gguf_q5_1, gguf_mxfp4) or None")


def _weight_spec(model, site, layer):
    spec = model.ctx.spec(site, layer)
    if spec is None:
        return None
    if spec.stack != "ggml":
        raise ValueError(f"cannot export site {site!r} (layer {layer}): its recipe "
                         f"{spec.name or spec.describe()!r} is not one of llama.cpp's block "
                         f"formats (ggml_q8_0, ggml_q4_0, ...); GGUF stores those or F32")
    return spec


def _wordpiece_spec(tokenizer):
    """GGUF tokenizer metadata (a ``TokenizerSpec``, model ``bert``) from a Hugging Face
    WordPiece ``tokenizer.json``, as llama.cpp's converter writes it: the vocabulary by id
    in phantom-space form (``the`` -> ``"\u2581the"``, ``##ing`` -> ``"ing"``, special tokens
    as they are, CONTROL), [CLS] as BOS, [SEP] as EOS and separator, the unknown, padding
    and mask tokens."""
    import json

    from .gguf_io import TOKEN_CONTROL, TOKEN_NORMAL, TokenizerSpec

    tj = json.loads(tokenizer.to_str())
    wp = tj.get("model", {})
    prefix = wp.get("continuing_subword_prefix", "##")
    if prefix != "##":
        raise ValueError(f"export_gguf writes WordPiece vocabularies with the '##' prefix "
                         f"(llama.cpp's); this tokenizer.json uses {prefix!r}")
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    for tok, i in vocab.items():
        tokens[i] = tok
    special = {t["id"] for t in tj.get("added_tokens", []) if t.get("special")}
    tokens = [t if i in special else t[2:] if t.startswith("##") else "\u2581" + t
              for i, t in enumerate(tokens)]
    # [CLS] and [SEP] from the post-processor's template, [CLS] $A [SEP]
    single = (tj.get("post_processor") or {}).get("single") or []
    ends = [e.get("SpecialToken", {}).get("id") for e in single[:1] + single[-1:]]
    cls, sep = (ends if len(ends) == 2 and None not in ends else ("[CLS]", "[SEP]"))
    pad = (tj.get("padding") or {}).get("pad_token", "[PAD]")

    def tid(tok):
        return tokenizer.token_to_id(tok) if tok is not None else None

    return TokenizerSpec(
        model="bert", pre="default", tokens=tuple(tokens),
        token_types=tuple(TOKEN_CONTROL if i in special else TOKEN_NORMAL for i in range(n)),
        merges=(), bos_id=tid(cls), eos_id=tid(sep), unk_id=tid(wp.get("unk_token", "[UNK]")),
        pad_id=tid(pad), add_bos=True, sep_id=tid(sep), mask_id=tid("[MASK]"), add_eos=True)


def _spec_from_tokenizer(model):
    """GGUF tokenizer metadata (a ``TokenizerSpec``) from a Hugging Face ``tokenizer.json``
    BPE tokenizer: its vocabulary by id, its merges, special tokens as CONTROL."""
    import dataclasses
    import json

    from .gguf_io import TOKEN_CONTROL, TOKEN_NORMAL

    tj = json.loads(model.tokenizer.to_str())
    if tj.get("model", {}).get("type") != "BPE":
        raise ValueError("export_gguf writes byte-level BPE tokenizers (gpt2-style); this "
                         f"model's tokenizer.json is {tj.get('model', {}).get('type')!r}")
    vocab = model.tokenizer.get_vocab(with_added_tokens=True)
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    for tok, i in vocab.items():
        tokens[i] = tok
    special = {t["id"] for t in tj.get("added_tokens", []) if t.get("special")}
    types = [TOKEN_CONTROL if i in special else TOKEN_NORMAL for i in range(n)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"].get("merges", [])]
    return dataclasses.replace(model.tokenizer_spec, model="gpt2", pre="default",
                               tokens=tuple(tokens), token_types=tuple(types),
                               merges=tuple(merges))


def _tokenizer(writer, spec) -> None:
    writer.add_tokenizer_model(spec.model)
    writer.add_tokenizer_pre(spec.pre)
    writer.add_token_list(list(spec.tokens))
    writer.add_token_types(list(spec.token_types))
    if spec.merges:
        writer.add_token_merges(list(spec.merges))
    for key, v in (("bos", spec.bos_id), ("eos", spec.eos_id), ("unk", spec.unk_id),
                   ("sep", spec.sep_id), ("pad", spec.pad_id), ("mask", spec.mask_id)):
        if v is not None:
            getattr(writer, f"add_{key}_token_id")(int(v))
    writer.add_add_bos_token(bool(spec.add_bos))
    if spec.add_eos:
        writer.add_add_eos_token(True)


def _hparams(writer, hp) -> None:
    writer.add_context_length(int(hp.n_ctx))
    writer.add_embedding_length(int(hp.n_embd))
    writer.add_block_count(int(hp.n_layer))
    writer.add_feed_forward_length(int(hp.n_ff))
    writer.add_head_count(int(hp.n_head))
    writer.add_head_count_kv(int(hp.n_head_kv))
    writer.add_rope_dimension_count(int(hp.head_dim))
    writer.add_rope_freq_base(float(hp.rope_theta))
    writer.add_layer_norm_rms_eps(float(hp.rms_eps))
    writer.add_vocab_size(int(hp.n_vocab))
    factors = getattr(hp, "rope_factors", None)
    if factors is not None:
        f = np.asarray(factors, np.float64)
        if not np.all(f == f[0]):
            raise ValueError("export_gguf writes linear RoPE scaling only (one factor); this "
                             "model's RoPE factors vary by frequency")
        import gguf

        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(f[0]))


def _linear_writer(writer, model):
    """``linear(tname, rows, site, layer, heads=None)``: write a linear's weight.

    ``rows`` is (out, in) in Hugging Face's order; Q/K rows are permuted (``heads``) as
    llama.cpp's ``llama`` files store them.  A weight in one of llama.cpp's block formats
    is written in that ggml type (GPTQ's weights, installed in the context, as they are;
    the others quantized here), any other as F32."""
    import gguf

    from ..quant import quantize_tensor
    from ..quant.ggml import ggml_type
    from .gguf_io import permute_qk

    def linear(tname, rows, site, layer, heads=None):
        spec = _weight_spec(model, site, layer)
        if spec is None:
            rows = rows if heads is None else permute_qk(rows, heads)
            writer.add_tensor(tname, np.ascontiguousarray(rows, dtype=np.float32))
            return
        installed = model.ctx.installed.get((site, layer))
        if installed is not None:
            packed = installed[0].to_ggml()  # bytes (out, row bytes)
        else:
            packed = quantize_tensor(np.ascontiguousarray(rows, np.float32), spec).to_ggml()
        if heads is not None:  # whole rows move: a row's blocks and bytes stay together
            packed = permute_qk(packed, heads)
        writer.add_tensor(tname, np.ascontiguousarray(packed),
                          raw_dtype=gguf.GGMLQuantizationType[ggml_type(spec).name.upper()])

    return linear


def _write_llama(writer, model, f32, linear) -> None:
    from .gguf_io import permute_qk

    hp, w = model.hparams, model.weights
    embed_spec = model.ctx.spec("embed", None)
    if embed_spec is not None:
        raise ValueError("cannot export a quantized embedding table (site 'embed'): "
                         "the tied lm_head would share it")
    f32("token_embd.weight", w.embedding)
    f32("output_norm.weight", w.norm)
    tied = w.lm_head.base is not None and np.shares_memory(w.lm_head, w.embedding)
    head_spec = _weight_spec(model, "lm_head", None)
    if tied and head_spec is not None:
        raise ValueError("cannot quantize the tied lm_head separately from the embedding "
                         "table in a GGUF file; leave lm_head in FP32")
    if not tied:
        linear("output.weight", w.lm_head.T, "lm_head", None)
    permuted = writer.arch == "llama"
    for i, blk in enumerate(w.blocks):
        f32(f"blk.{i}.attn_norm.weight", blk.attn_norm)
        f32(f"blk.{i}.ffn_norm.weight", blk.ffn_norm)
        for field, tname in _BLOCK_NAMES.items():
            heads = None
            if permuted and field in ("wq", "wk"):
                heads = hp.n_head if field == "wq" else hp.n_head_kv
            linear(f"blk.{i}.{tname}.weight", getattr(blk, field).T, _SITES[field], i, heads)
        for field, tname, heads in (("bq", "attn_q", hp.n_head), ("bk", "attn_k", hp.n_head_kv),
                                    ("bv", "attn_v", None)):
            b = getattr(blk, field, None)
            if b is not None:
                if permuted and heads is not None:
                    b = permute_qk(b, heads)
                f32(f"blk.{i}.{tname}.bias", b)


#: EncoderLayer weight -> the QuantConfig site of its linear
_BERT_SITES = {"wq": "q", "wk": "k", "wv": "v", "wo": "o", "w_in": "ffn_in", "w_out": "ffn_out"}


def _write_bert(writer, model, f32, linear) -> None:
    """A MiniLM/BERT encoder in llama.cpp's ``bert`` layout (``convert_hf_to_gguf.py``'s
    ``BertModel``): hyperparameters, then every tensor (see
    :data:`fpsim.models.gguf_io.BERT_TENSORS`)."""
    import gguf

    from .gguf_io import BERT_LAYER_TENSORS, BERT_TENSORS

    if model.ctx.spec("embed", None) is not None:
        raise ValueError("cannot export a quantized token embedding table (site 'embed'): "
                         "export_gguf writes embeddings as F32; leave 'embed' in FP32")
    cfg, emb = model.cfg, model.emb
    writer.add_context_length(int(emb.position.shape[0]))
    writer.add_embedding_length(int(cfg.d_model))
    writer.add_feed_forward_length(int(cfg.d_ffn))
    writer.add_block_count(int(cfg.n_layers))
    writer.add_head_count(int(cfg.n_heads))
    writer.add_layer_norm_eps(float(cfg.eps))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN if cfg.pooling == "mean"
                            else gguf.PoolingType.CLS)
    writer.add_token_type_count(int(emb.segment.shape[0]))
    for field, tname in BERT_TENSORS.items():
        f32(tname, getattr(emb, field))
    for i, p in enumerate(model.layers):
        for field, tname in BERT_LAYER_TENSORS.items():
            if field in _BERT_SITES:  # (in, out) -> the file's (out, in) rows
                linear(f"blk.{i}.{tname}", getattr(p, field).T, _BERT_SITES[field], i)
            else:
                f32(f"blk.{i}.{tname}", getattr(p, field))


def export_gguf(model, path, *, name: str | None = None) -> pathlib.Path:
    """Write ``model`` (a Llama decoder or a BERT encoder, and its quantization config) as
    a GGUF file.

    Parameters
    ----------
    model : Llama or MiniLM
        E.g. ``fpsim.models.load("smollm2", quant="gguf_q4_0")`` (written as llama.cpp's
        ``llama``/``qwen2``) or ``fpsim.models.load("minilm", quant="gguf_q8_0")``
        (written as llama.cpp's ``bert``, mean or CLS pooling as the model pools).
    path : path-like
        The ``.gguf`` file to write (its folder must exist).
    name : str, optional
        ``general.name`` (default: the config's name).

    Returns
    -------
    pathlib.Path
        The file written; its size is the model's real storage.

    Raises
    ------
    ValueError
        The config quantizes something a GGUF file cannot hold (see the module doc), or
        ``model`` is neither a Llama decoder nor a BERT encoder.

    Examples
    --------
    >>> import tempfile, pathlib, fpsim
    >>> model = fpsim.models.load("smollm2", quant="gguf_q8_0")   # after `fpsim fetch smollm2`
    >>> out = export_gguf(model, pathlib.Path(tempfile.mkdtemp()) / "smollm2-q8_0.gguf")
    >>> back = fpsim.models.load(out)
    >>> ids = model.tokenize("The cat")
    >>> bool((back.logits(ids) == model.logits(ids)).all())
    True

    A sentence encoder, in llama.cpp's ``bert`` layout; the same embeddings back in fpsim:

    >>> minilm = fpsim.models.load("minilm", quant="gguf_q4_0")   # after `fpsim fetch minilm`
    >>> out = export_gguf(minilm, pathlib.Path(tempfile.mkdtemp()) / "minilm-q4_0.gguf")
    >>> back = fpsim.models.load(out)
    >>> type(back).__name__, bool((back.embed(["A cat."]) == minilm.embed(["A cat."])).all())
    ('MiniLM', True)
    """
    import gguf

    _check_exportable(model)
    path = pathlib.Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"path: the folder {path.parent} does not exist")
    bert = _is_bert(model)
    tok = getattr(model, "tokenizer_spec", None)
    if bert:
        arch = "bert"
        if tok is None or not tok.tokens:  # loaded from a Hugging Face folder
            tok = _wordpiece_spec(model.tokenizer)
    else:
        arch = getattr(model, "architecture", "llama")
        arch = arch if arch in ("llama", "qwen2") else "llama"
        if tok is None or not tok.tokens:  # loaded from a Hugging Face folder
            tok = _spec_from_tokenizer(model)
    cfg = model.ctx.config
    writer = gguf.GGUFWriter(str(path), arch)  # holds the tensors until written below
    writing = False
    try:
        writer.add_name(name or (cfg.name if cfg is not None else "fp32"))
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        if not bert:
            _hparams(writer, model.hparams)
        _tokenizer(writer, tok)

        def f32(tname, a):
            writer.add_tensor(tname, np.ascontiguousarray(a, dtype=np.float32))

        (_write_bert if bert else _write_llama)(writer, model, f32, _linear_writer(writer, model))
        writing = True
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        if writing:  # a partial file; a refused model leaves the folder as it was
            path.unlink(missing_ok=True)
        raise
    writer.close()
    return path
