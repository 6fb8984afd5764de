"""Your own checkpoint: Hugging Face folders and GGUF files, loaded into fpsim's models.

:func:`load_path` (what :func:`fpsim.models.load` calls for a path) reads

* a **Hugging Face folder**: ``config.json``, the weights as ``*.safetensors`` (one file, or
  shards listed in ``model.safetensors.index.json``) and ``tokenizer.json``, of

  - the Llama family (``model_type`` ``llama``, ``mistral``, ``qwen2``: Llama 2/3,
    SmolLM, Mistral, Qwen2/2.5): grouped-query attention, ``head_dim``, tied or untied
    embeddings, Qwen2's Q/K/V biases, RoPE scaling ``linear`` and ``llama3`` -> a
    :class:`~fpsim.models.llama.Llama`;
  - BERT (``model_type`` ``bert``: BERT, MiniLM, sentence-transformers models) -> a
    :class:`~fpsim.models.bert.MiniLM`, pooled as the folder's ``modules.json`` says;

* a **GGUF file** (see :mod:`fpsim.models.gguf_io`) of the ``llama`` or ``qwen2``
  architecture -> a :class:`~fpsim.models.llama.Llama`, or of the ``bert`` architecture
  (llama.cpp's converter's layout, or :func:`fpsim.models.export.export_gguf`'s) -> a
  :class:`~fpsim.models.bert.MiniLM`, its WordPiece tokenizer built from the file's
  vocabulary (:func:`~fpsim.models.gguf_io.wordpiece_tokenizer`).

Weights are stored as float32 whatever the file holds (F32 tensors are memory-mapped; BF16
and F16 are widened exactly; F64 is rounded), in fpsim's readable names and ``(in, out)``
layout: this module is the only place Hugging Face's tensor names appear.  Hugging Face's
Q/K rows are already in the rotate-half order fpsim's RoPE uses (only GGUF's ``llama``
files are permuted, and :mod:`fpsim.models.llama` un-permutes them).

Every loaded model has a ``weights_source`` attribute, the description of the weights its
"FP32" run is, e.g. ``"Hugging Face safetensors (BF16) from /models/qwen, converted to
float32"``: quote it with every result.

Examples
--------
>>> import pathlib, tempfile
>>> from fpsim.models.weights import model_path
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> for f in ("config.json", "tokenizer.json", "model.safetensors"):   # a plain HF folder
...     (folder / f).symlink_to(model_path("minilm", f))
>>> model = load_path(folder)
>>> type(model).__name__, model.cfg.pooling, model.cfg.normalize     # no modules.json
('MiniLM', 'mean', False)
>>> model.weights_source.startswith("Hugging Face safetensors (F32) from ")
True
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

from .weights import ModelFilesError, UnsupportedModelError

__all__ = ["ARCHITECTURES", "Safetensors", "load_folder", "load_path", "read_config"]

#: Hugging Face ``model_type`` -> the fpsim model family that runs it
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "llama", "bert": "bert"}

#: safetensors dtype -> (numpy dtype of the stored bytes, how it becomes float32)
_DTYPES = {"F32": ("<f4", "exact"), "F16": ("<f2", "exact"), "BF16": ("<u2", "exact"),
           "F64": ("<f8", "rounded")}

_INDEX = "model.safetensors.index.json"


# ---- safetensors, read by hand: memory-mapped F32, exact BF16/F16 -----------------------
def _read_header(path: pathlib.Path) -> tuple[dict, int]:
    """A safetensors file's JSON header and the offset of its data (raises if damaged)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n > size - 8:
                raise ValueError(f"header of {n} bytes in a file of {size}")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ModelFilesError(f"{path} is not a readable safetensors file ({e}): it is "
                              "truncated or corrupted; replace it with a complete copy") from None
    header.pop("__metadata__", None)
    return header, 8 + n


class Safetensors:
    """The tensors of one or more ``.safetensors`` files (a checkpoint's shards), by name.

    The files are parsed by hand (the format is a JSON header and raw little-endian bytes),
    so that F32 tensors are memory-mapped, not copied, and BF16 tensors, which NumPy has no
    type for, are widened to float32 exactly (the 16 bits become the high half of a float32).

    Parameters
    ----------
    files : sequence of path-like

    Raises
    ------
    ModelFilesError
        A file is missing, truncated or corrupted, or two files hold the same tensor.

    Examples
    --------
    >>> from fpsim.models.weights import model_path
    >>> st = Safetensors([model_path("minilm", "model.safetensors")])
    >>> st.dtype("embeddings.word_embeddings.weight"), st.shape("pooler.dense.bias")
    ('F32', (384,))
    >>> st.float32("pooler.dense.bias").dtype
    dtype('float32')
    """

    def __init__(self, files):
        self.files = [pathlib.Path(f) for f in files]
        self._entries = {}  # name -> (file, dtype, shape, start, end)
        for path in self.files:
            if not path.is_file():
                raise ModelFilesError(f"weight file {path} is missing")
            header, data_start = _read_header(path)
            data_size = path.stat().st_size - data_start
            for name, e in header.items():
                try:
                    dtype, shape = str(e["dtype"]), tuple(int(n) for n in e["shape"])
                    begin, end = (int(o) for o in e["data_offsets"])
                except (KeyError, TypeError, ValueError):
                    raise ModelFilesError(f"{path}: malformed header entry for {name!r}: "
                                          f"{e!r}") from None
                if not 0 <= begin <= end <= data_size:
                    raise ModelFilesError(f"{path}: tensor {name!r} ends past the end of the "
                                          "file: it is truncated or corrupted")
                if name in self._entries:
                    raise ModelFilesError(f"tensor {name!r} is in both {self._entries[name][0]} "
                                          f"and {path}")
                self._entries[name] = (path, dtype, shape, data_start + begin, data_start + end)
        self._maps = {}

    def __contains__(self, name) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        """Every tensor name, in file order."""
        return list(self._entries)

    def dtype(self, name: str) -> str:
        """The safetensors dtype of a tensor (``"F32"``, ``"BF16"``, ...)."""
        return self._entries[name][1]

    def shape(self, name: str) -> tuple:
        return self._entries[name][2]

    def _map(self, path):
        if path not in self._maps:
            self._maps[path] = np.memmap(path, dtype=np.uint8, mode="r")
        return self._maps[path]

    def float32(self, name: str, shape: tuple | None = None) -> np.ndarray:
        """The tensor as float32: a read-only memory map for F32, a converted copy else.

        Parameters
        ----------
        name : str
        shape : tuple, optional
            The shape the model needs: a different one raises ModelFilesError.

        Raises
        ------
        ModelFilesError
            No such tensor, a shape other than ``shape``, or a size that does not match.
        UnsupportedModelError
            A dtype that is not F32, BF16, F16 or F64 (e.g. I8, F8_E4M3).
        """
        if name not in self._entries:
            where = ", ".join(str(f.name) for f in self.files)
            raise ModelFilesError(f"the checkpoint has no tensor {name!r} (files: {where})")
        path, dtype, got, begin, end = self._entries[name]
        if shape is not None and tuple(shape) != got:
            raise ModelFilesError(f"tensor {name!r} in {path.name} has shape {got}; config.json "
                                  f"implies {tuple(shape)}")
        if dtype not in _DTYPES:
            raise UnsupportedModelError(f"tensor {name!r} in {path.name} is {dtype}; fpsim reads "
                                        f"{', '.join(_DTYPES)} safetensors")
        stored = np.dtype(_DTYPES[dtype][0])
        if end - begin != stored.itemsize * int(np.prod(got)):
            raise ModelFilesError(f"tensor {name!r} in {path.name} has {end - begin} bytes, not "
                                  f"{stored.itemsize * int(np.prod(got))} for {dtype} {got}: "
                                  "the file is corrupted")
        raw = self._map(path)[begin:end].view(stored).reshape(got)
        if dtype == "F32":
            return raw
        if dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32)

    def describe(self, names) -> str:
        """``"F32"``, ``"BF16"``, ``"BF16 x50, F32 x11"``: the dtypes of ``names``."""
        counts: dict = {}
        for n in names:
            counts[self.dtype(n)] = counts.get(self.dtype(n), 0) + 1
        if len(counts) == 1:
            return next(iter(counts))
        return ", ".join(f"{d} x{c}" for d, c in sorted(counts.items(), key=lambda kv: -kv[1]))


def _checkpoint(folder: pathlib.Path) -> Safetensors:
    """The folder's safetensors: the shards of ``model.safetensors.index.json``, or every
    ``*.safetensors`` file."""
    index = folder / _INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelFilesError(f"{index} is not a readable index ({e!r})") from None
        for f in files:
            if not (folder / f).is_file():
                raise ModelFilesError(f"weight file {folder / f} is missing (listed in {_INDEX})")
        st = Safetensors([folder / f for f in files])
        for name, f in weight_map.items():
            if name not in st or st._entries[name][0].name != f:
                raise ModelFilesError(f"{_INDEX} puts tensor {name!r} in {f}, which does not "
                                      "hold it")
        return st
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelFilesError(f"weight file {folder / 'model.safetensors'} is missing: the folder "
                              "has no *.safetensors file (PyTorch .bin checkpoints are not "
                              "read; convert them to safetensors)")
    return Safetensors(files)


# ---- config.json -> fpsim hyper-parameters ---------------------------------------------
def read_config(folder) -> dict:
    """``config.json`` of a Hugging Face folder, with its ``model_type`` checked.

    Raises
    ------
    ModelFilesError
        No ``config.json``, or not JSON.
    UnsupportedModelError
        A ``model_type`` fpsim does not run (the message lists those it does).

    Examples
    --------
    >>> from fpsim.models.weights import model_path
    >>> read_config(model_path("minilm", "config.json").parent)["model_type"]
    'bert'
    """
    path = pathlib.Path(folder) / "config.json"
    if not path.is_file():
        raise ModelFilesError(f"{path} is missing: a Hugging Face model folder has a "
                              "config.json (with model_type, hidden_size, ...)")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelFilesError(f"{path} is not readable JSON ({e})") from None
    model_type = cfg.get("model_type") if isinstance(cfg, dict) else None
    if model_type not in ARCHITECTURES:
        raise UnsupportedModelError(
            f"{path}: model_type {model_type!r} is not supported; fpsim runs "
            f"{', '.join(repr(t) for t in ARCHITECTURES)} (Llama-style decoders and BERT "
            "encoders)")
    return cfg


def _get(cfg, key, path, default=None):
    v = cfg.get(key, default)
    if v is None:
        raise ModelFilesError(f"{path}/config.json has no {key!r}")
    return v


def _rope_factors(cfg, head_dim, theta, path):
    """RoPE frequency divisors (``hd/2`` floats) of ``rope_scaling``, or None."""
    from .llama import llama3_rope_factors

    rs = cfg.get("rope_scaling")
    if not rs:
        return None
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "default":
        return None
    if kind == "linear":
        return (float(rs["factor"]),) * (head_dim // 2)
    if kind == "llama3":
        f = llama3_rope_factors(
            head_dim, theta, factor=float(rs["factor"]),
            low_freq_factor=float(rs["low_freq_factor"]),
            high_freq_factor=float(rs["high_freq_factor"]),
            original_max_position_embeddings=int(rs["original_max_position_embeddings"]))
        return tuple(float(x) for x in f)
    raise UnsupportedModelError(f"{path}/config.json: rope_scaling type {kind!r} is not "
                                "supported; only 'linear' and 'llama3'")


def _llama_hparams(cfg, path):
    from .gguf_io import LlamaHParams

    if cfg.get("hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"{path}/config.json: hidden_act {cfg['hidden_act']!r} is "
                                    "not supported (Llama's SwiGLU uses 'silu')")
    if cfg.get("mlp_bias"):
        raise UnsupportedModelError(f"{path}/config.json: mlp_bias=true is not supported")
    if cfg.get("attention_bias") and cfg["model_type"] != "qwen2":
        raise UnsupportedModelError(f"{path}/config.json: attention_bias=true (biases on "
                                    "q/k/v and o_proj) is not supported")
    d, n_head = int(_get(cfg, "hidden_size", path)), int(_get(cfg, "num_attention_heads", path))
    head_dim = int(cfg.get("head_dim") or d // n_head)
    theta = float(cfg.get("rope_theta", 10000.0))
    n_ctx = int(cfg.get("max_position_embeddings", 2048))
    window = cfg.get("sliding_window")
    if window and (cfg["model_type"] == "mistral" or cfg.get("use_sliding_window")):
        n_ctx = min(n_ctx, int(window))  # sliding-window attention is not modelled
    return LlamaHParams(
        n_layer=int(_get(cfg, "num_hidden_layers", path)), n_embd=d,
        n_ff=int(_get(cfg, "intermediate_size", path)), n_head=n_head,
        n_head_kv=int(cfg.get("num_key_value_heads") or n_head), head_dim=head_dim,
        rope_theta=theta, rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        n_vocab=int(_get(cfg, "vocab_size", path)), n_ctx=n_ctx,
        rope_factors=_rope_factors(cfg, head_dim, theta, path))


def _tokenizer(path: pathlib.Path):
    """The ``tokenizers.Tokenizer`` of a tokenizer.json, without truncation or padding."""
    if not path.is_file():
        raise ModelFilesError(f"{path} is missing: fpsim tokenizes with the `tokenizers` "
                              "package's tokenizer.json (save it with "
                              "AutoTokenizer.from_pretrained(...).save_pretrained(folder))")
    try:
        from tokenizers import Tokenizer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("tokenizing needs the `tokenizers` package: "
                          "pip install 'fpsim[models]'") from e
    try:
        tk = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust parser's errors are plain Exceptions
        raise ModelFilesError(f"{path} is not a readable tokenizer.json ({e})") from None
    tk.no_truncation()
    tk.no_padding()
    return tk


def _source(st: Safetensors, names, folder) -> str:
    dtypes = st.describe(names)
    how = "float32" if dtypes == "F32" else "converted to float32"
    return f"Hugging Face safetensors ({dtypes}) from {folder.resolve()}, {how}"


def _first(v):
    return v[0] if isinstance(v, (list, tuple)) and v else v


# ---- the Llama family ------------------------------------------------------------------
#: LlamaBlock field -> Hugging Face tensor name after ``model.layers.{i}.``
_LLAMA_BLOCK = {
    "attn_norm": "input_layernorm.weight",
    "wq": "self_attn.q_proj.weight", "wk": "self_attn.k_proj.weight",
    "wv": "self_attn.v_proj.weight", "wo": "self_attn.o_proj.weight",
    "ffn_norm": "post_attention_layernorm.weight",
    "w_gate": "mlp.gate_proj.weight", "w_up": "mlp.up_proj.weight",
    "w_down": "mlp.down_proj.weight",
    "bq": "self_attn.q_proj.bias", "bk": "self_attn.k_proj.bias", "bv": "self_attn.v_proj.bias",
}


def _llama_shapes(hp):
    d, q, kv, f = hp.n_embd, hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim, hp.n_ff
    return {"attn_norm": (d,), "wq": (q, d), "wk": (kv, d), "wv": (kv, d), "wo": (d, q),
            "ffn_norm": (d,), "w_gate": (f, d), "w_up": (f, d), "w_down": (d, f),
            "bq": (q,), "bk": (kv,), "bv": (kv,)}


def _load_llama(folder, cfg, quant, trace):
    from .gguf_io import TokenizerSpec
    from .llama import Llama, weights_from_rows

    hp = _llama_hparams(cfg, folder)
    tokenizer = _tokenizer(folder / "tokenizer.json")
    st = _checkpoint(folder)
    shapes = _llama_shapes(hp)
    biases = cfg["model_type"] == "qwen2"  # Qwen2's q/k/v projections have biases
    used = []

    def get(name, shape):
        used.append(name)
        return st.float32(name, shape)

    blocks = []
    for i in range(hp.n_layer):
        if f"model.layers.{i}.self_attn.o_proj.bias" in st:
            raise UnsupportedModelError(f"{folder}: o_proj biases are not supported")
        blocks.append({f: get(f"model.layers.{i}.{name}", shapes[f])
                       for f, name in _LLAMA_BLOCK.items() if biases or not f.startswith("b")})
    vd = (hp.n_vocab, hp.n_embd)
    embedding = get("model.embed_tokens.weight", vd)
    tied = bool(cfg.get("tie_word_embeddings", False))
    lm_head = None if tied else get("lm_head.weight", vd)
    weights = weights_from_rows(embedding, get("model.norm.weight", (hp.n_embd,)), lm_head,
                                blocks)
    gen = folder / "generation_config.json"
    gen_cfg = json.loads(gen.read_text()) if gen.is_file() else {}
    eos = _first(gen_cfg.get("eos_token_id", cfg.get("eos_token_id")))
    bos = _first(gen_cfg.get("bos_token_id", cfg.get("bos_token_id")))
    spec = TokenizerSpec(model="tokenizer.json", pre="tokenizer.json", tokens=(),
                         token_types=(), merges=(), bos_id=bos, eos_id=eos, unk_id=None,
                         pad_id=_first(cfg.get("pad_token_id")), add_bos=False)
    return Llama(hp, weights, spec, quant=quant, trace=trace, tokenizer=tokenizer,
                 weights_source=_source(st, used, folder))


# ---- BERT ------------------------------------------------------------------------------
def _pooling(folder: pathlib.Path):
    """``(pooling, normalize)`` from sentence-transformers' ``modules.json``; without it,
    mean pooling, not normalised (what sentence-transformers does with a plain model)."""
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return "mean", False
    pooling, normalize = "mean", False
    for m in json.loads(modules_path.read_text()):
        kind = str(m.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Transformer":
            continue
        if kind == "Normalize":
            normalize = True
        elif kind == "Pooling":
            pc_path = folder / m.get("path", "") / "config.json"
            if not pc_path.is_file():
                raise ModelFilesError(f"{pc_path} is missing (the Pooling module of "
                                      "modules.json)")
            pc = json.loads(pc_path.read_text())
            modes = [k.removeprefix("pooling_mode_") for k, v in pc.items()
                     if k.startswith("pooling_mode_") and v]
            if modes == ["mean_tokens"]:
                pooling = "mean"
            elif modes == ["cls_token"]:
                pooling = "cls"
            else:
                raise UnsupportedModelError(f"{pc_path}: pooling {modes} is not supported; "
                                            "only mean_tokens or cls_token")
        else:
            raise UnsupportedModelError(f"{modules_path}: module {m.get('type')!r} is not "
                                        "supported; only Transformer, Pooling, Normalize")
    return pooling, normalize


def _max_seq_length(folder: pathlib.Path, n_positions: int) -> int:
    for name, key in (("sentence_bert_config.json", "max_seq_length"),
                      ("tokenizer_config.json", "model_max_length")):
        path = folder / name
        if path.is_file():
            v = json.loads(path.read_text()).get(key)
            if isinstance(v, int) and 0 < v:
                return min(v, n_positions)
    return n_positions


def _load_bert(folder, cfg, quant, trace):
    from .bert import _LAYER_KEYS, SITES, BertConfig, MiniLM, weights_from_checkpoint
    from .context import QuantContext

    if cfg.get("hidden_act", "gelu") != "gelu":
        raise UnsupportedModelError(f"{folder}/config.json: hidden_act {cfg['hidden_act']!r} is "
                                    "not supported (only exact 'gelu')")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise UnsupportedModelError(f"{folder}/config.json: position_embedding_type "
                                    f"{cfg['position_embedding_type']!r} is not supported")
    pooling, normalize = _pooling(folder)
    n_positions = int(_get(cfg, "max_position_embeddings", folder))
    bc = BertConfig(n_layers=int(_get(cfg, "num_hidden_layers", folder)),
                    n_heads=int(_get(cfg, "num_attention_heads", folder)),
                    d_model=int(_get(cfg, "hidden_size", folder)),
                    d_ffn=int(_get(cfg, "intermediate_size", folder)),
                    n_positions=n_positions, eps=float(cfg.get("layer_norm_eps", 1e-12)),
                    pooling=pooling, normalize=normalize,
                    max_seq_length=_max_seq_length(folder, n_positions))
    tokenizer = _tokenizer(folder / "tokenizer.json")
    st = _checkpoint(folder)
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in st else ""  # BertFor...
    d, f = bc.d_model, bc.d_ffn
    shapes = {"embeddings.word_embeddings.weight": (int(_get(cfg, "vocab_size", folder)), d),
              "embeddings.position_embeddings.weight": (n_positions, d),
              "embeddings.token_type_embeddings.weight": (int(cfg.get("type_vocab_size", 2)), d)}
    layer_shapes = {"wq": (d, d), "wk": (d, d), "wv": (d, d), "wo": (d, d), "w_in": (f, d),
                    "b_in": (f,), "w_out": (d, f)}  # (out, in); the rest (d,)
    for field, key in _LAYER_KEYS.items():
        shapes[key] = layer_shapes.get(field, (d,))
    used = []

    def tensor(key):  # "encoder.layer.3.output.dense.weight" -> float32 array
        name = prefix + key
        used.append(name)
        short = key.split(".", 3)[3] if key.startswith("encoder.layer.") else key
        return st.float32(name, shapes.get(short, (d,)))

    emb, layers = weights_from_checkpoint(tensor, bc)
    ctx = QuantContext(quant, n_layers=bc.n_layers, trace=trace, sites=SITES)
    return MiniLM(emb, layers, bc, tokenizer, ctx, weights_source=_source(st, used, folder))


def _load_bert_gguf(path: pathlib.Path, quant, trace, cache, tokenizer):
    """A ``bert`` GGUF file -> :class:`~fpsim.models.bert.MiniLM`.

    The pooling is the file's ``bert.pooling_type`` (mean or CLS; ``none``, as llama.cpp's
    converter leaves a model without sentence-transformers' ``modules.json``, pools by
    mean), the embedding L2-normalised (a GGUF file does not say; llama.cpp's
    ``llama-embedding`` normalises by default, as sentence-transformers' MiniLM does);
    texts are cut at ``bert.context_length`` tokens.
    """
    from .bert import BertConfig, Embeddings, EncoderLayer, MiniLM, SITES
    from .context import QuantContext
    from .gguf_io import (BERT_LAYER_TENSORS, BERT_TENSORS, describe_gguf, load_gguf,
                          wordpiece_tokenizer)

    g = load_gguf(path, cache=cache, architectures=("bert",))
    hp, t = g.hparams, g.tensors
    if hp.pooling not in ("none", "mean", "cls"):
        raise UnsupportedModelError(f"{path}: bert.pooling_type {hp.pooling!r} is not "
                                    "supported; only mean, cls (or none: mean)")
    if hp.n_embd % hp.n_head:
        raise ModelFilesError(f"{path}: bert.embedding_length {hp.n_embd} is not a multiple "
                              f"of bert.attention.head_count {hp.n_head}")
    d, f = hp.n_embd, hp.n_ff
    n_vocab = t["token_embd.weight"].shape[0] if "token_embd.weight" in t else None
    n_types = t["token_types.weight"].shape[0] if "token_types.weight" in t else None
    shapes = {"token": (n_vocab, d), "position": (hp.n_ctx, d), "segment": (n_types, d),
              "wq": (d, d), "wk": (d, d), "wv": (d, d), "wo": (d, d), "w_in": (f, d),
              "b_in": (f,), "w_out": (d, f)}  # (out, in) as stored; the rest (d,)

    def tensor(name, field):
        if name not in t:
            raise ModelFilesError(f"{path} has no tensor {name!r}: not a complete BERT GGUF "
                                  "file (llama.cpp's bert layout)")
        a, want = t[name], shapes.get(field, (d,))
        if a.shape != want:
            raise ModelFilesError(f"tensor {name!r} in {path} has shape {a.shape}; the bert.* "
                                  f"metadata implies {want}")
        # the file's (out, in) rows -> the forward pass's (in, out), as for a checkpoint
        return np.ascontiguousarray(a.T) if field.startswith("w") else np.asarray(a)

    emb = Embeddings(**{field: tensor(name, field) for field, name in BERT_TENSORS.items()})
    layers = [EncoderLayer(**{field: tensor(f"blk.{i}.{name}", field)
                              for field, name in BERT_LAYER_TENSORS.items()})
              for i in range(hp.n_layer)]
    bc = BertConfig(n_layers=hp.n_layer, n_heads=hp.n_head, d_model=d, d_ffn=f,
                    n_positions=hp.n_ctx, eps=hp.eps,
                    pooling="cls" if hp.pooling == "cls" else "mean", normalize=True,
                    max_seq_length=hp.n_ctx)
    if tokenizer is None:
        if g.tokenizer.model != "bert":
            raise UnsupportedModelError(
                f"{path}: tokenizer.ggml.model {g.tokenizer.model!r} is not WordPiece "
                "('bert'); pass tokenizer= (the model's tokenizer.json)")
        try:
            tokenizer = wordpiece_tokenizer(g.tokenizer)
        except ValueError as e:
            raise ModelFilesError(f"{path}: {e}") from None
    ctx = QuantContext(quant, n_layers=bc.n_layers, trace=trace, sites=SITES)
    model = MiniLM(emb, layers, bc, tokenizer, ctx, weights_source=describe_gguf(g))
    model.tokenizer_spec = g.tokenizer  # what export_gguf writes back
    return model


# ---- entry points ----------------------------------------------------------------------
def load_folder(folder, quant=None, *, trace: bool = False):
    """Load a Hugging Face model folder into a :class:`~fpsim.models.llama.Llama` or a
    :class:`~fpsim.models.bert.MiniLM`.

    Parameters
    ----------
    folder : path-like
        Holds ``config.json``, ``tokenizer.json`` and ``model.safetensors`` (or shards with
        ``model.safetensors.index.json``); for BERT optionally sentence-transformers'
        ``modules.json``, ``1_Pooling/config.json`` and ``sentence_bert_config.json``.
    quant : QuantConfig, preset name or None
    trace : bool

    Returns
    -------
    Llama or MiniLM
        Llama-family models generate without BOS (as every fpsim Llama) and stop at the
        first ``eos_token_id`` of ``generation_config.json`` (else ``config.json``).  A BERT
        model without ``modules.json`` embeds by mean pooling, **not** normalised (what
        sentence-transformers does with a plain Hugging Face model); texts are cut at
        ``sentence_bert_config.json``'s ``max_seq_length``, else the tokenizer's
        ``model_max_length``, else the position table's size.

    Raises
    ------
    ModelFilesError
        A file is missing (config.json, tokenizer.json, the weights, a shard), a tensor is
        missing or has another shape than config.json implies, a file is corrupted.
    UnsupportedModelError
        A ``model_type`` or feature fpsim does not run (also a ValueError).

    Examples
    --------
    >>> load_folder("no/such/folder")
    Traceback (most recent call last):
    ...
    fpsim.models.weights.ModelFilesError: no/such/folder is not a folder
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ModelFilesError(f"{folder} is not a folder")
    cfg = read_config(folder)
    family = ARCHITECTURES[cfg["model_type"]]
    load = _load_llama if family == "llama" else _load_bert
    return load(folder, cfg, quant, trace)


def load_path(path, quant=None, *, trace: bool = False, cache: bool = True, tokenizer=None):
    """Load a Hugging Face folder (:func:`load_folder`) or a ``.gguf`` file.

    Parameters
    ----------
    path : str or os.PathLike
    quant : QuantConfig, preset name or None
    trace : bool
    cache : bool
        GGUF only: keep a memory-mapped float32 copy next to the file
        (:func:`fpsim.models.gguf_io.load_gguf`); False reads it into memory.
    tokenizer : path-like, optional
        GGUF only: a ``tokenizer.json`` to use instead of the file's own vocabulary (fpsim
        builds byte-level BPE and WordPiece tokenizers from GGUF; others, such as Llama 2's
        SentencePiece, need this).

    Returns
    -------
    Llama or MiniLM
        A ``bert`` GGUF file gives a MiniLM pooled as its ``bert.pooling_type`` says (mean
        for ``none``), L2-normalised, cut at ``bert.context_length`` tokens.

    Raises
    ------
    ModelFilesError
        The path does not exist, or see :func:`load_folder` and
        :func:`fpsim.models.gguf_io.load_gguf`.
    UnsupportedModelError
        An architecture fpsim does not run.
    """
    path = pathlib.Path(os.fspath(path)).expanduser()
    if path.is_dir():
        if tokenizer is not None or not cache:
            raise TypeError("tokenizer= and cache= apply to GGUF files only")
        return load_folder(path, quant, trace=trace)
    if not path.exists():
        raise ModelFilesError(f"{path} does not exist: pass a Hugging Face model folder or a "
                              ".gguf file")
    if path.suffix.lower() != ".gguf":
        raise ModelFilesError(f"{path} is a file but not a .gguf file: pass a .gguf file or the "
                              "Hugging Face folder that holds config.json")
    from .gguf_io import gguf_architecture
    from .llama import Llama

    tk = None if tokenizer is None else _tokenizer(pathlib.Path(tokenizer))
    if gguf_architecture(path) == "bert":
        return _load_bert_gguf(path, quant, trace, cache, tk)
    return Llama.from_gguf(path, quant, trace=trace, cache=cache, tokenizer=tk)
