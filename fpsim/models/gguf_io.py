"""Read llama.cpp's GGUF model files: hyper-parameters, tokenizer and float32 tensors.

Two families are read: Llama-style decoders (``general.architecture`` ``llama`` or
``qwen2``, :class:`LlamaHParams`) and BERT encoders (``bert``, :class:`BertHParams`, with
llama.cpp's WordPiece vocabulary, :func:`wordpiece_tokenizer`).

The file is parsed with ``gguf.GGUFReader`` (llama.cpp's own Python package) and every
tensor is dequantized to float32 with ``gguf.quants.dequantize`` (F32, F16, Q8_0, Q4_1,
...).  Quantized GGUF weights are therefore *already* on a low-precision grid: every
weight-quantization result on such a model is relative to those weights (for SmolLM2,
"relative to the Q4_1 weights"), not to the original BF16 checkpoint.

Parsing the GGUF metadata takes seconds (tens of thousands of vocabulary strings) and
dequantizing takes more, so :func:`load_gguf` keeps the dequantized tensors in a float32
``.npy`` file next to the GGUF, keyed by the GGUF's SHA-256, plus a ``.json`` index with
the hyper-parameters and tokenizer, and memory-maps it on later loads.  The cache is
built only from a GGUF whose SHA-256 is the expected one, written with plain writes
after a free-space check (never through a memory map, which dies of SIGBUS on a full
disk), moved into place when complete, and checked on load: the index records the
``.npy``'s SHA-256, size and times; the ``.npy`` is hashed again when its ``stat``
differs, and rebuilt if the hash does not match.

Tensors keep GGUF's names (``blk.0.attn_q.weight``) and NumPy's view of GGUF's shape
(``(ne1, ne0)``, i.e. ``(out, in)`` for a linear); mapping them to a model's parameter
names and layout is the model loader's job.  llama.cpp's converter permutes the rows of
``attn_q``/``attn_k`` for its interleaved RoPE: :func:`unpermute_qk` undoes it.

Needs the ``fpsim[models]`` extra (``gguf``, ``tokenizers``), imported only when used.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import hashlib
import io
import json
import os
import pathlib
import warnings
from dataclasses import dataclass

import numpy as np

from .weights import (
    ModelFilesError,
    UnsupportedModelError,
    _check_free_space,
    _fetch_command,
    _locked,
    _part_name,
    _sha256,
    _stat_stamp,
    _write_json,
)

__all__ = [
    "ARCHITECTURES",
    "BERT_LAYER_TENSORS",
    "BERT_TENSORS",
    "BertHParams",
    "GGUFModel",
    "LlamaHParams",
    "POOLING_TYPES",
    "TokenizerSpec",
    "bpe_tokenizer",
    "describe_gguf",
    "gguf_architecture",
    "load_gguf",
    "permute_qk",
    "read_gguf",
    "unpermute_qk",
    "wordpiece_tokenizer",
]

#: the GGUF architectures fpsim reads (``general.architecture``): Llama-style decoders
#: (``llama`` files have llama.cpp's Q/K row permutation, ``qwen2`` files have Q/K/V
#: biases) and BERT encoders (``bert``: MiniLM, BERT, sentence-transformers models)
ARCHITECTURES = ("llama", "qwen2", "bert")

#: the Llama-style decoders among :data:`ARCHITECTURES` (what :func:`load_gguf` reads
#: unless told otherwise)
_LLAMA_ARCHITECTURES = ("llama", "qwen2")

#: llama.cpp's BERT tensors (``gguf.constants.TENSOR_NAMES`` of ``MODEL_ARCH.BERT``) by
#: fpsim's names: the embeddings (:class:`fpsim.models.bert.Embeddings` fields), then
#: every layer's, after ``blk.{i}.`` (:class:`fpsim.models.bert.EncoderLayer` fields)
BERT_TENSORS = {
    "token": "token_embd.weight", "position": "position_embd.weight",
    "segment": "token_types.weight", "norm_g": "token_embd_norm.weight",
    "norm_b": "token_embd_norm.bias",
}
BERT_LAYER_TENSORS = {
    "wq": "attn_q.weight", "bq": "attn_q.bias", "wk": "attn_k.weight", "bk": "attn_k.bias",
    "wv": "attn_v.weight", "bv": "attn_v.bias", "wo": "attn_output.weight",
    "bo": "attn_output.bias", "attn_norm_g": "attn_output_norm.weight",
    "attn_norm_b": "attn_output_norm.bias", "w_in": "ffn_up.weight", "b_in": "ffn_up.bias",
    "w_out": "ffn_down.weight", "b_out": "ffn_down.bias",
    "ffn_norm_g": "layer_output_norm.weight", "ffn_norm_b": "layer_output_norm.bias",
}

#: ``{arch}.pooling_type`` (llama.cpp's ``enum llama_pooling_type``) -> its name
POOLING_TYPES = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}

#: bump when the cache layout changes (old caches are then ignored, not misread)
_CACHE_VERSION = 1

#: GGUF token types (llama.cpp's ``llama_token_type``)
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = \
    1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class LlamaHParams:
    """Hyper-parameters of a Llama decoder, read from ``llama.*`` GGUF keys.

    Examples
    --------
    >>> hp = LlamaHParams(n_layer=1, n_embd=8, n_ff=16, n_head=2, n_head_kv=1, head_dim=4,
    ...                   rope_theta=1e4, rms_eps=1e-5, n_vocab=10, n_ctx=16)
    >>> hp.n_head // hp.n_head_kv                           # query heads per key-value head
    2
    """

    n_layer: int        # llama.block_count
    n_embd: int         # llama.embedding_length
    n_ff: int           # llama.feed_forward_length
    n_head: int         # llama.attention.head_count
    n_head_kv: int      # llama.attention.head_count_kv
    head_dim: int       # llama.rope.dimension_count (else n_embd // n_head)
    rope_theta: float   # llama.rope.freq_base
    rms_eps: float      # llama.attention.layer_norm_rms_epsilon
    n_vocab: int        # llama.vocab_size (else the tokenizer's size)
    n_ctx: int          # llama.context_length
    #: RoPE frequency divisors, hd/2 floats (llama.rope.scaling.*, rope_freqs), None: ones
    rope_factors: tuple | None = None

    def __post_init__(self):
        if self.rope_factors is not None:  # a list when read back from JSON
            object.__setattr__(self, "rope_factors", tuple(float(f) for f in self.rope_factors))


@dataclass(frozen=True)
class BertHParams:
    """Hyper-parameters of a BERT encoder, read from ``bert.*`` GGUF keys.

    Examples
    --------
    >>> hp = BertHParams(n_layer=6, n_embd=384, n_ff=1536, n_head=12, n_ctx=512, eps=1e-12,
    ...                  pooling="mean")
    >>> hp.n_embd // hp.n_head                               # head width
    32
    """

    n_layer: int        # bert.block_count
    n_embd: int         # bert.embedding_length
    n_ff: int           # bert.feed_forward_length
    n_head: int         # bert.attention.head_count
    n_ctx: int          # bert.context_length (the position table's rows)
    eps: float          # bert.attention.layer_norm_epsilon
    pooling: str        # bert.pooling_type: "none", "mean", "cls", "last" or "rank"


@dataclass(frozen=True)
class TokenizerSpec:
    """The tokenizer stored in a GGUF file (``tokenizer.ggml.*`` keys).

    Examples
    --------
    >>> spec = TokenizerSpec(model="gpt2", pre="default", tokens=("a", "b", "ab"),
    ...                      token_types=(1, 1, 1), merges=("a b",), bos_id=None, eos_id=None,
    ...                      unk_id=None, pad_id=None, add_bos=False)
    >>> len(spec.tokens), spec.merges
    (3, ('a b',))
    """

    model: str                  # "gpt2": byte-level BPE; "bert": WordPiece
    pre: str                    # pre-tokenizer name, e.g. "smollm"
    tokens: tuple               # id -> token string (byte-level alphabet; "bert": phantom
                                # space, "\u2581word" starts a word, "ing" continues one)
    token_types: tuple          # id -> TOKEN_NORMAL, TOKEN_CONTROL, ...
    merges: tuple               # "left right" strings, highest priority first
    bos_id: int | None          # "bert": [CLS]
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool
    sep_id: int | None = None   # tokenizer.ggml.seperator_token_id ("bert": [SEP])
    mask_id: int | None = None  # tokenizer.ggml.mask_token_id
    add_eos: bool = False       # tokenizer.ggml.add_eos_token


@dataclass(frozen=True)
class GGUFModel:
    """A GGUF file's contents with every tensor dequantized to float32.

    Examples
    --------
    >>> from fpsim.models.weights import model_path
    >>> g = load_gguf(model_path("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    >>> g.architecture, g.hparams.n_layer, g.tokenizer.tokens[g.tokenizer.eos_id]
    ('llama', 30, '<|im_end|>')
    """

    path: pathlib.Path
    architecture: str
    hparams: LlamaHParams | BertHParams
    tokenizer: TokenizerSpec
    #: GGUF name -> float32 array of shape (ne1, ne0) ((out, in) for a linear); read-only
    tensors: dict
    #: GGUF name -> the type it is stored as in the file ("Q4_1", "Q8_0", "F32", ...)
    tensor_types: dict


# ---- errors ----------------------------------------------------------------------------
def _bad_file(path, reason: str, model: str | None) -> ModelFilesError:
    fix = (f"delete it and run `{_fetch_command(model)}` again" if model
           else "replace it with a complete copy")
    return ModelFilesError(f"{path} is not a readable GGUF file ({reason}): it is truncated or "
                           f"corrupted; {fix}")


def _import_gguf():
    try:
        import gguf
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading GGUF files needs the `gguf` package: "
                          "pip install 'fpsim[models]'") from e
    return gguf


# ---- reading ---------------------------------------------------------------------------
def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _hparams(reader, arch: str, n_tokens: int) -> LlamaHParams:
    def get(name, default=None):
        v = _field(reader, f"{arch}.{name}", default)
        if v is None:
            raise KeyError(f"{arch}.{name}")
        return v

    n_embd, n_head = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = int(get("rope.dimension_count", n_embd // n_head))
    scaling = str(_field(reader, f"{arch}.rope.scaling.type", "none"))
    if scaling == "linear":
        factors = (float(get("rope.scaling.factor")),) * (head_dim // 2)
    elif scaling == "none":
        factors = None
    else:
        raise UnsupportedModelError(f"RoPE scaling {scaling!r} ({arch}.rope.scaling.type) is "
                                    "not supported; only linear, and Llama 3's rope_freqs")
    return LlamaHParams(
        n_layer=int(get("block_count")),
        n_embd=n_embd,
        n_ff=int(get("feed_forward_length")),
        n_head=n_head,
        n_head_kv=int(get("attention.head_count_kv", n_head)),
        head_dim=head_dim,
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rms_eps=float(get("attention.layer_norm_rms_epsilon")),
        n_vocab=int(get("vocab_size", n_tokens)),
        n_ctx=int(get("context_length")),
        rope_factors=factors,
    )


def _short_float(v) -> float:
    """A float32 metadata value as the double its shortest repr names (``1e-12``, not
    ``9.9999999600419720025e-13``): the value the checkpoint's config wrote."""
    return float(str(np.float32(v)))


def _bert_hparams(reader, arch: str) -> BertHParams:
    def get(name, default=None):
        v = _field(reader, f"{arch}.{name}", default)
        if v is None:
            raise KeyError(f"{arch}.{name}")
        return v

    if bool(_field(reader, f"{arch}.attention.causal", False)):
        raise UnsupportedModelError(f"{arch}.attention.causal is true: fpsim's BERT encoder "
                                    "attends both ways (causal false)")
    pooling = int(_field(reader, f"{arch}.pooling_type", 0))
    if pooling not in POOLING_TYPES:
        raise KeyError(f"{arch}.pooling_type = {pooling}, not one of llama.cpp's "
                       f"{sorted(POOLING_TYPES)}")
    return BertHParams(
        n_layer=int(get("block_count")),
        n_embd=int(get("embedding_length")),
        n_ff=int(get("feed_forward_length")),
        n_head=int(get("attention.head_count")),
        n_ctx=int(get("context_length")),
        eps=_short_float(get("attention.layer_norm_epsilon")),
        pooling=POOLING_TYPES[pooling],
    )


def _tokenizer_spec(reader) -> TokenizerSpec:
    def opt_int(key):
        v = _field(reader, f"tokenizer.ggml.{key}")
        return None if v is None else int(v)

    tokens = _field(reader, "tokenizer.ggml.tokens")
    if tokens is None:
        raise KeyError("tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type", [TOKEN_NORMAL] * len(tokens))
    return TokenizerSpec(
        model=str(_field(reader, "tokenizer.ggml.model", "gpt2")),
        pre=str(_field(reader, "tokenizer.ggml.pre", "default")),
        tokens=tuple(tokens),
        token_types=tuple(int(t) for t in types),
        merges=tuple(_field(reader, "tokenizer.ggml.merges", [])),
        bos_id=opt_int("bos_token_id"),
        eos_id=opt_int("eos_token_id"),
        unk_id=opt_int("unknown_token_id"),
        pad_id=opt_int("padding_token_id"),
        add_bos=bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        sep_id=opt_int("seperator_token_id"),  # sic: gguf's spelling
        mask_id=opt_int("mask_token_id"),
        add_eos=bool(_field(reader, "tokenizer.ggml.add_eos_token", False)),
    )


def _open(path: pathlib.Path, model: str | None):
    """A GGUFReader over ``path`` whose tensors all lie inside the file."""
    gguf = _import_gguf()
    if not path.exists():
        fix = f"fetch it with `{_fetch_command(model)}`" if model else "check the path"
        raise ModelFilesError(f"model file {path} is missing; {fix}")
    try:
        reader = gguf.GGUFReader(path, "r")
    except Exception as e:  # the reader fails in many ways on a damaged file
        raise _bad_file(path, f"{type(e).__name__}: {e}", model) from e
    size = path.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise _bad_file(path, f"tensor {t.name} ends past the end of the file", model)
    return reader


def _check_architecture(arch: str, path, architectures) -> None:
    if arch in architectures:
        return
    if arch in ARCHITECTURES:  # a family the caller does not load
        raise UnsupportedModelError(
            f"{path} holds a {arch!r} model (general.architecture), not one of "
            f"{', '.join(architectures)}; load it with fpsim.models.load(path)")
    raise UnsupportedModelError(
        f"{path} holds a {arch!r} model (general.architecture); fpsim reads GGUF files of "
        f"the architectures {', '.join(ARCHITECTURES)} (Llama-style decoders and BERT "
        "encoders)")


def _read_meta(reader, path, model, architectures=_LLAMA_ARCHITECTURES):
    try:
        arch = str(_field(reader, "general.architecture"))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise _bad_file(path, f"missing or malformed metadata {e}", model) from e
    _check_architecture(arch, path, architectures)
    try:
        tok = _tokenizer_spec(reader)
        hp = (_bert_hparams(reader, arch) if arch == "bert"
              else _hparams(reader, arch, len(tok.tokens)))
    except UnsupportedModelError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise _bad_file(path, f"missing or malformed metadata {e}", model) from e
    return arch, hp, tok


def _dequantize(reader_tensor, path, model) -> np.ndarray:
    gguf = _import_gguf()
    t = reader_tensor
    try:
        a = gguf.quants.dequantize(t.data, t.tensor_type)
    except Exception as e:
        raise _bad_file(path, f"tensor {t.name}: {type(e).__name__}: {e}", model) from e
    shape = tuple(int(n) for n in reversed(t.shape.tolist()))  # GGUF (ne0, ne1) -> (ne1, ne0)
    a = np.asarray(a, dtype=np.float32).reshape(shape)
    if not np.isfinite(a).all():
        raise _bad_file(path, f"tensor {t.name} has non-finite values", model)
    return a


def read_gguf(path, *, model: str | None = None,
              architectures=_LLAMA_ARCHITECTURES) -> GGUFModel:
    """Read a GGUF file and dequantize all its tensors to float32 (no cache).

    Parameters
    ----------
    path : path-like
        The ``.gguf`` file.
    model : str, optional
        fpsim's name for the model (e.g. ``"smollm2"``), so that errors name the
        ``python -m fpsim fetch`` command that repairs the file.
    architectures : tuple of str
        The ``general.architecture`` values accepted (default: the Llama-style
        decoders ``llama``, ``qwen2``; pass ``("bert",)`` for BERT encoders).

    Returns
    -------
    GGUFModel

    Raises
    ------
    ModelFilesError
        The file is missing, truncated or corrupted.
    UnsupportedModelError
        Another architecture than ``architectures``.
    ImportError
        The ``gguf`` package is not installed.

    Examples
    --------
    Reading a real model takes seconds (:func:`load_gguf` caches the result); a missing
    file raises an error that says what to do:

    >>> read_gguf("no-such-file.gguf")
    Traceback (most recent call last):
    ...
    fpsim.models.weights.ModelFilesError: model file no-such-file.gguf is missing; check the path
    """
    path = pathlib.Path(path)
    reader = _open(path, model)
    arch, hp, tok = _read_meta(reader, path, model, architectures)
    tensors = {t.name: _dequantize(t, path, model) for t in reader.tensors}
    for a in tensors.values():
        a.flags.writeable = False
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    return GGUFModel(path, arch, hp, tok, tensors, types)


# ---- the float32 cache -----------------------------------------------------------------
def _cache_paths(path: pathlib.Path, sha256: str):
    stem = f"{path.name}.{sha256[:16]}.f32v{_CACHE_VERSION}"
    return path.with_name(stem + ".npy"), path.with_name(stem + ".json")


def _npy_content_ok(npy: pathlib.Path, index: pathlib.Path, meta: dict) -> bool:
    """The ``.npy`` against the SHA-256 and stamp recorded in its index (rehash if stale)."""
    want = meta["npy"]
    stamp = _stat_stamp(npy)
    if stamp == {k: want.get(k) for k in stamp}:
        return True
    if stamp["size"] != want["size"] or _sha256(npy) != want["sha256"]:
        return False
    meta["npy"] = dict(want, **stamp)  # same content, new times (copied, touched)
    try:
        _write_json(index, meta)
    except OSError:
        pass
    return True


def _load_cache(path, npy, index, sha256) -> GGUFModel | None:
    """The cached model, or None if the cache is absent, stale or damaged."""
    try:
        meta = json.loads(index.read_text())
        if meta.get("version") != _CACHE_VERSION or meta.get("sha256") != sha256:
            return None
        if not _npy_content_ok(npy, index, meta):
            return None
        flat = np.load(npy, mmap_mode="r")
        if flat.dtype != np.float32 or flat.shape != (meta["n_floats"],):
            return None
        tensors, types = {}, {}
        for name, (offset, shape, qtype) in meta["tensors"].items():
            n = int(np.prod(shape))
            tensors[name] = flat[offset:offset + n].reshape(shape)
            types[name] = qtype
        tok = meta["tokenizer"]
        tok["tokens"], tok["token_types"], tok["merges"] = (
            tuple(tok["tokens"]), tuple(tok["token_types"]), tuple(tok["merges"]))
        hp_class = BertHParams if meta["architecture"] == "bert" else LlamaHParams
        return GGUFModel(path, meta["architecture"], hp_class(**meta["hparams"]),
                         TokenizerSpec(**tok), tensors, types)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _npy_header(n_floats: int) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
              "shape": (n_floats,)})
    return buf.getvalue()


def _reserve(f, size: int) -> None:
    """Allocate ``size`` bytes of ``f`` now, where the file system can (ENOSPC up front)."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # unsupported
                raise


def _write_cache(path, npy, index, sha256, model, architectures=_LLAMA_ARCHITECTURES) -> None:
    """Dequantize every tensor into a float32 ``.npy`` (plain writes), then its index.

    Raises ModelFilesError if ``path``'s SHA-256 is not ``sha256`` (nothing is written),
    CacheError if the folder has too little free space, OSError if writing fails; a
    failure leaves no partial file.
    """
    before = _stat_stamp(path)
    got = _sha256(path)
    if got != sha256:
        raise _bad_file(path, f"SHA-256 {got}, expected {sha256}", model)
    reader = _open(path, model)
    arch, hp, tok = _read_meta(reader, path, model, architectures)
    offsets, n_floats = {}, 0
    for t in reader.tensors:
        shape = [int(n) for n in reversed(t.shape.tolist())]
        offsets[t.name] = (n_floats, shape, t.tensor_type.name)
        n_floats += int(np.prod(shape))
    header = _npy_header(n_floats)
    size = len(header) + 4 * n_floats
    _check_free_space(path.parent, size, f"the float32 cache of {path.name}")
    tmp_npy = _part_name(npy)
    try:
        h = hashlib.sha256(header)
        with open(tmp_npy, "wb") as f:
            _reserve(f, size)
            f.write(header)
            for t in reader.tensors:  # in offset order
                data = np.ascontiguousarray(_dequantize(t, path, model), dtype="<f4").data
                h.update(data)
                f.write(data)
            if f.tell() != size:  # pragma: no cover - a bug, not a run-time condition
                raise ModelFilesError(f"{tmp_npy}: wrote {f.tell()} bytes, expected {size}")
            f.flush()
            os.fsync(f.fileno())
        if _stat_stamp(path) != before:
            raise ModelFilesError(f"{path} changed while its float32 cache was being built; "
                                  "load it again")
        meta = {"version": _CACHE_VERSION, "sha256": sha256, "source": path.name,
                "architecture": arch, "n_floats": n_floats,
                "hparams": dataclasses.asdict(hp), "tokenizer": dataclasses.asdict(tok),
                "tensors": offsets}
        index.unlink(missing_ok=True)     # readers see no cache rather than a mismatched one
        os.replace(tmp_npy, npy)
        meta["npy"] = dict(_stat_stamp(npy), sha256=h.hexdigest())
        _write_json(index, meta)          # the index is written last: it marks a complete cache
    finally:
        tmp_npy.unlink(missing_ok=True)


def _ensure_cache(path: pathlib.Path, sha256: str, *, model: str | None = None,
                  rebuild: bool = False, architectures=_LLAMA_ARCHITECTURES) -> GGUFModel:
    """The cached model, building it (under the folder's lock) if absent, stale or damaged.

    ``rebuild`` first deletes every float32 cache of ``path`` (any checksum, any version).
    Raises what :func:`_write_cache` raises.
    """
    npy, index = _cache_paths(path, sha256)
    with _locked(path.parent):
        if rebuild:
            for old in path.parent.glob(glob.escape(path.name) + ".*.f32v*"):
                old.unlink(missing_ok=True)
        else:
            got = _load_cache(path, npy, index, sha256)  # another process may have built it
            if got is not None:
                return got
        _write_cache(path, npy, index, sha256, model, architectures)
    got = _load_cache(path, npy, index, sha256)
    if got is None:  # pragma: no cover - damaged between writing and reading
        raise ModelFilesError(f"the float32 cache {npy} of {path} could not be read back")
    return got


def load_gguf(path, *, sha256: str | None = None, model: str | None = None,
              cache: bool = True, architectures=_LLAMA_ARCHITECTURES) -> GGUFModel:
    """Read a GGUF file through a memory-mapped float32 cache kept next to it.

    The first load dequantizes every tensor into ``<file>.<sha256[:16]>.f32v1.npy`` (with
    a ``.json`` index); later loads memory-map it.  A stale or damaged cache (checked by
    size and times against its index, by SHA-256 when they differ) is rebuilt.  If the
    cache cannot be written (read-only folder, too little free space), a warning says
    why and the file is read into memory instead.

    Parameters
    ----------
    path : path-like
        The ``.gguf`` file.
    sha256 : str, optional
        The file's expected SHA-256 (e.g. the pinned checksum): a cache is built only
        from a file with this checksum.  Else it is computed.
    model : str, optional
        fpsim's name for the model, for error messages (see :func:`read_gguf`).
    cache : bool
        False reads and dequantizes the file without touching the cache.
    architectures : tuple of str
        The ``general.architecture`` values accepted (see :func:`read_gguf`).

    Returns
    -------
    GGUFModel
        Its tensors are read-only (memory-mapped when cached).

    Raises
    ------
    ModelFilesError
        The file is missing, truncated or corrupted, or its SHA-256 is not ``sha256``.
    UnsupportedModelError
        Another architecture than ``architectures``.

    Examples
    --------
    >>> from fpsim.models.weights import model_path
    >>> g = load_gguf(model_path("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    >>> g.tensor_types["token_embd.weight"], g.tensors["token_embd.weight"].shape
    ('Q8_0', (49152, 576))
    """
    path = pathlib.Path(path)
    if not cache:
        return read_gguf(path, model=model, architectures=architectures)
    if not path.exists():
        _open(path, model)  # raises the missing-file error
    sha256 = sha256 or _sha256(path)
    npy, index = _cache_paths(path, sha256)
    got = _load_cache(path, npy, index, sha256)
    if got is not None:
        _check_architecture(got.architecture, path, architectures)
        return got
    try:
        got = _ensure_cache(path, sha256, model=model, architectures=architectures)
        _check_architecture(got.architecture, path, architectures)  # a cache built earlier
        return got
    except OSError as e:  # read-only folder, disk full: work without the cache
        warnings.warn(f"fpsim: not using a float32 cache for {path.name}: {e}; reading it into "
                      "memory instead", stacklevel=2)
    return read_gguf(path, model=model, architectures=architectures)


def gguf_architecture(path) -> str:
    """A GGUF file's ``general.architecture``, read from its header alone.

    GGUF writers (gguf's ``GGUFWriter``, so llama.cpp's converters) put it first, and only
    the first key is parsed; a file with another first key is opened with
    ``gguf.GGUFReader``.

    Raises
    ------
    ModelFilesError
        The file is missing, not GGUF, or has no ``general.architecture``.

    Examples
    --------
    >>> from fpsim.models.weights import model_path
    >>> gguf_architecture(model_path("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    'llama'
    """
    import struct

    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(24)  # magic, version u32, n_tensors u64, n_kv u64 (little-endian)
            if len(head) == 24 and head[:4] == b"GGUF" and struct.unpack("<Q", head[16:])[0]:
                (n,) = struct.unpack("<Q", f.read(8))
                key = f.read(n) if n < 256 else b""
                (vtype,) = struct.unpack("<I", f.read(4))
                if key == b"general.architecture" and vtype == 8:  # GGUFValueType.STRING
                    (n,) = struct.unpack("<Q", f.read(8))
                    if n < 256:
                        return f.read(n).decode("utf-8")
    except (OSError, struct.error, UnicodeDecodeError):
        pass
    reader = _open(path, None)  # raises if missing or not GGUF
    try:
        return str(_field(reader, "general.architecture"))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise _bad_file(path, f"missing or malformed metadata {e}", None) from e


def describe_gguf(g: GGUFModel) -> str:
    """What a GGUF model's float32 weights are, for reports (the file and its tensor types).

    Examples
    --------
    >>> from fpsim.models.weights import model_path
    >>> s = describe_gguf(load_gguf(model_path("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")))
    >>> s.startswith("GGUF llama file /"), s.split("(")[1]
    (True, 'tensors Q4_1 x210, F32 x61, Q8_0 x1), dequantized to float32')
    """
    counts: dict = {}
    for qtype in g.tensor_types.values():
        counts[qtype] = counts.get(qtype, 0) + 1
    types = ", ".join(f"{q} x{n}" for q, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return (f"GGUF {g.architecture} file {g.path.resolve()} (tensors {types}), "
            "dequantized to float32")


# ---- tokenizer -------------------------------------------------------------------------
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
#: GGUF pre-tokenizer names this module knows -> what runs before ByteLevel: None (GPT-2's
#: regex), "digits" (digits one by one, then GPT-2's regex) or a split regex (ByteLevel's
#: own regex off), as in the models' tokenizer.json files (Qwen2: single digits, Llama 3:
#: groups of up to 3)
_PRE_TOKENIZERS = {"smollm": "digits", "default": None, "gpt2": None,
                   "qwen2": _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}"),
                   "llama-bpe": _LLAMA3_SPLIT}


def bpe_tokenizer(spec: TokenizerSpec):
    """A ``tokenizers.Tokenizer`` for a GGUF byte-level BPE vocabulary (``model == "gpt2"``).

    ByteLevel pre-tokenizer (GPT-2's regex, no prefix space), digits split one by one for
    the ``"smollm"`` pre-tokenizer, ByteLevel decoder, CONTROL and USER_DEFINED tokens
    matched as special tokens, and no BOS added: the tokenizer transformers builds
    from the same file.

    Raises
    ------
    ValueError
        A tokenizer model or pre-tokenizer this function does not know.

    Examples
    --------
    >>> spec = TokenizerSpec(model="gpt2", pre="default", tokens=("a", "b", "ab", "<|end|>"),
    ...                      token_types=(1, 1, 1, TOKEN_CONTROL), merges=("a b",), bos_id=None,
    ...                      eos_id=3, unk_id=None, pad_id=None, add_bos=False)
    >>> bpe_tokenizer(spec).encode("abab<|end|>", add_special_tokens=False).ids
    [2, 2, 3]
    """
    try:
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("tokenizing needs the `tokenizers` package: "
                          "pip install 'fpsim[models]'") from e
    if spec.model != "gpt2":
        raise ValueError(f"tokenizer model {spec.model!r} is not supported; only 'gpt2' "
                         "(byte-level BPE)")
    if spec.pre not in _PRE_TOKENIZERS:
        raise ValueError(f"GGUF pre-tokenizer {spec.pre!r} is not supported; known: "
                         f"{', '.join(_PRE_TOKENIZERS)}")
    vocab = {tok: i for i, tok in enumerate(spec.tokens)}
    merges = [tuple(m.split(" ", 1)) for m in spec.merges]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    pre = _PRE_TOKENIZERS[spec.pre]
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pre in (None, "digits"))
    if pre is None:
        tk.pre_tokenizer = byte_level
    elif pre == "digits":
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pre), behavior="isolated", invert=False), byte_level])
    tk.decoder = decoders.ByteLevel()
    special = [AddedToken(spec.tokens[i], special=(t == TOKEN_CONTROL), normalized=False)
               for i, t in enumerate(spec.token_types) if t in (TOKEN_CONTROL, TOKEN_USER_DEFINED)]
    tk.add_special_tokens(special)
    return tk


def wordpiece_tokenizer(spec: TokenizerSpec, *, lowercase: bool | None = None):
    """A ``tokenizers.Tokenizer`` for a GGUF WordPiece vocabulary (``model == "bert"``).

    llama.cpp's converter stores BERT's vocabulary in "phantom space" form: a word-initial
    piece ``the`` as ``"\u2581the"``, a continuation ``##ing`` as ``"ing"``, special
    (CONTROL) tokens as they are; this undoes it and builds what a BERT ``tokenizer.json``
    holds: ``BertNormalizer``, ``BertPreTokenizer``, ``WordPiece`` (``##`` prefix, the
    file's unknown token), ``[CLS] $A [SEP]`` from the file's BOS (or ``[CLS]``) and
    separator (or EOS, or ``[SEP]``), a WordPiece decoder, CONTROL tokens as special tokens.

    Parameters
    ----------
    spec : TokenizerSpec
    lowercase : bool, optional
        Lowercase (and strip accents from) the text first.  A GGUF file does not say (and
        llama.cpp always lowercases): by default, True when no NORMAL token of the
        vocabulary has an upper-case letter (an uncased vocabulary, as MiniLM's).

    Raises
    ------
    ValueError
        ``spec`` is not a WordPiece vocabulary, or has no unknown or [CLS]/[SEP] tokens.

    Examples
    --------
    >>> spec = TokenizerSpec(model="bert", pre="default",
    ...                      tokens=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "\u2581play", "ing"),
    ...                      token_types=(3, 3, 3, 3, 1, 1), merges=(), bos_id=2, eos_id=3,
    ...                      unk_id=1, pad_id=0, add_bos=True, sep_id=3)
    >>> wordpiece_tokenizer(spec).encode("Playing").ids
    [2, 4, 5, 3]
    """
    try:
        from tokenizers import (AddedToken, Tokenizer, decoders, models, normalizers,
                                pre_tokenizers, processors)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("tokenizing needs the `tokenizers` package: "
                          "pip install 'fpsim[models]'") from e
    if spec.model != "bert":
        raise ValueError(f"tokenizer model {spec.model!r} is not WordPiece ('bert')")
    if len(spec.token_types) != len(spec.tokens):
        raise ValueError(f"tokenizer.ggml.token_type has {len(spec.token_types)} entries for "
                         f"{len(spec.tokens)} tokens")
    control = [t == TOKEN_CONTROL for t in spec.token_types]
    pieces = [tok if c else tok[1:] if tok.startswith("\u2581") else "##" + tok
              for tok, c in zip(spec.tokens, control)]
    vocab = {}
    for i, piece in enumerate(pieces):
        vocab.setdefault(piece, i)  # the first id of a duplicate, as a tokenizer.json loads

    def special(i, name, fallback):
        if i is not None and 0 <= i < len(pieces):
            return pieces[i]
        if fallback in vocab:
            return fallback
        raise ValueError(f"the GGUF vocabulary has no {name} token (tokenizer.ggml.*_token_id "
                         f"or {fallback})")

    unk = special(spec.unk_id, "unknown", "[UNK]")
    cls = special(spec.bos_id, "[CLS] (BOS)", "[CLS]")
    sep = special(spec.sep_id if spec.sep_id is not None else spec.eos_id, "[SEP]", "[SEP]")
    if lowercase is None:
        lowercase = not any(p != p.lower() for p, c in zip(pieces, control) if not c)
    tk = Tokenizer(models.WordPiece(vocab=vocab, unk_token=unk, continuing_subword_prefix="##",
                                    max_input_chars_per_word=100))
    tk.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                               strip_accents=None, lowercase=bool(lowercase))
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tk.add_special_tokens([AddedToken(pieces[i], special=True, normalized=False)
                           for i, c in enumerate(control) if c])
    return tk


# ---- llama.cpp's Q/K row permutation ---------------------------------------------------
def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's permutation of a Q or K projection (HF rotate-half -> interleaved RoPE).

    ``w`` is ``(n_head * head_dim, in)``: within each head, row ``i`` of the first half and
    row ``i`` of the second half (the pair HF's rotate-half RoPE rotates together) become
    rows ``2i`` and ``2i + 1``.

    Examples
    --------
    >>> permute_qk(np.arange(4.0)[:, None], 1).ravel()     # one head of width 4
    array([0., 2., 1., 3.])
    """
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2) \
            .reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of :func:`permute_qk`: GGUF's Q/K rows back to HF's layout.

    ``n_head`` is the number of query heads for Q and of key-value heads for K.

    Examples
    --------
    >>> w = np.arange(24.0).reshape(8, 3)   # 2 heads of dim 4
    >>> bool(np.array_equal(unpermute_qk(permute_qk(w, 2), 2), w))
    True
    """
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2) \
            .reshape(w.shape)
