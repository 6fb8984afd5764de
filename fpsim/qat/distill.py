"""Quantization-aware training by distillation: :func:`train`.

The student is the model under a QuantConfig (every quantized site a fake quantizer with
straight-through gradients, optionally LSQ scales for the weights), the teacher the same
model in FP32; the data is fpsim's shipped text (:mod:`fpsim.data`).

* MiniLM: the loss is the mean cosine distance between the student's and the teacher's
  sentence embeddings (mean-pooled last hidden states) plus a hidden-state loss on every
  layer's output; training sentences are the public-domain prose split into sentences plus
  a seeded share of ``sentences.txt``, the rest of ``sentences.txt`` is held out.  Most of
  each batch is fresh synthetic text (:func:`synthetic_texts`) that the teacher labels on
  the fly.  Metric: mean cosine between the quantized and the FP32 embeddings of the
  held-out sentences.
* SmolLM2 (any Llama): the loss is KL(teacher || student) of the next-token
  distributions on windows of the public-domain prose; the last sections are held out.
  Metric: perplexity of the held-out text.

The optimizer is Adam (Kingma & Ba 2015) on the float32 master weights, with global
gradient-norm clipping; batches are drawn with ``rng``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np

from ..rounding import seed_of

__all__ = ["Adam", "QAT_PRESETS", "QATResult", "SYNTHETIC_KINDS", "hidden_state_loss",
           "minilm_data", "qat_config", "split_sentences", "synthetic_texts", "train",
           "vocab_words"]


class Adam:
    """Adam with bias correction, updating float32 arrays in place.

    Examples
    --------
    >>> p = {"w": np.array([1.0, -1.0], np.float32)}
    >>> opt = Adam(lr=0.1)
    >>> opt.step(p, {"w": np.array([2.0, -3.0], np.float32)})
    >>> p["w"].tolist()                                     # the first step moves lr * sign
    [0.8999999761581421, -0.8999999761581421]
    """

    def __init__(self, lr: float = 1e-4, betas=(0.9, 0.999), eps: float = 1e-8):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        self.lr, (self.b1, self.b2), self.eps = float(lr), betas, float(eps)
        self.t = 0
        self.m: dict = {}
        self.v: dict = {}

    def step(self, params: dict, grads: dict, *, lr: float | None = None,
             lr_scale: dict | None = None) -> None:
        """One update of every ``params[k]`` that has a ``grads[k]``; ``lr_scale`` maps some
        keys to a multiplier of the learning rate."""
        self.t += 1
        lr = self.lr if lr is None else lr
        lr_scale = lr_scale or {}
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for k, g in grads.items():
            if k not in self.m:
                self.m[k] = np.zeros_like(params[k])
                self.v[k] = np.zeros_like(params[k])
            m, v = self.m[k], self.v[k]
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * (g * g)
            step = lr * lr_scale.get(k, 1.0) / c1
            params[k] -= (step * m / (np.sqrt(v / c2) + self.eps)).astype(params[k].dtype)


def _clip(grads: dict, max_norm: float) -> float:
    norm = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
    if max_norm and norm > max_norm:
        for g in grads.values():
            g *= max_norm / norm
    return norm


def _update(opt, params: dict, scales: dict, grads: dict, *, step: int, steps: int,
            lr: float, warmup: int, clip: float, lr_scale: dict | None = None) -> None:
    """One optimiser step of both training loops: clip the gradient norm, then Adam at the
    learning rate of ``step`` (linear warm-up, cosine decay to a tenth; times
    ``lr_scale[k]`` for the keys it names); learned scales stay positive."""
    _clip(grads, clip)
    ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
    cosine = 0.5 * (1 + math.cos(math.pi * step / steps))
    opt.step({**params, **scales}, grads, lr=lr * ramp * (0.1 + 0.9 * cosine),
             lr_scale=lr_scale)
    for s in scales.values():
        np.maximum(s, np.float32(1e-8), out=s)


@dataclass
class QATResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : str
        ``"minilm"`` or ``"smollm2"`` (or the class name of a Llama).
    config : QuantConfig
        The quantization the student was trained for.
    params : dict of ndarray
        The trained weights (the names of :mod:`fpsim.qat.bert_grad` / ``llama_grad``).
    scales : dict of ndarray
        LSQ's learned scales (empty without ``lsq``).
    losses : list of float
        The training loss of every step.
    before, after : dict
        Held-out metrics of the student before and after training (and of FP32).
    seconds : float
        Wall time of the training steps.
    settings : dict
        The arguments of the run.
    """

    model: str
    config: object
    params: dict
    scales: dict
    losses: list
    before: dict
    after: dict
    seconds: float
    settings: dict = field(default_factory=dict)
    _base: object = field(default=None, repr=False)

    def quantized_model(self):
        """The library's model with the trained weights under :attr:`config` (STE only:
        LSQ's scales are not a QuantConfig)."""
        if self.scales:
            raise ValueError("LSQ-trained scales cannot be expressed as a QuantConfig; "
                             "evaluate with fpsim.qat's forward pass")
        if self.model == "minilm":
            from .bert_grad import model_with

            return model_with(self._base, self.params, self.config)
        from .llama_grad import model_with

        return model_with(self._base, self.params, self.config)

    def plot(self, **kw):
        """The loss curve (:func:`fpsim.plotting.qat_loss_curve`)."""
        from ..plotting import qat_loss_curve

        return qat_loss_curve(self.losses, title=f"QAT of {self.model} for "
                              f"{getattr(self.config, 'name', '') or 'config'}", **kw)

    def summary(self) -> str:
        keys = [k for k in self.before if k != "fp32" and isinstance(self.after.get(k), float)]
        parts = [f"{k}: {self.before[k]:.4f} -> {self.after[k]:.4f}" for k in keys]
        if "fp32" in self.after:
            parts.append(f"fp32: {self.after['fp32']:.4f}")
        return (f"QAT {self.model} {getattr(self.config, 'name', '')}: {len(self.losses)} steps "
                f"in {self.seconds:.0f} s; " + "; ".join(parts))


def _progress(n, enabled, desc):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=n, desc=desc, leave=False)


# ---- MiniLM --------------------------------------------------------------------------
def split_sentences(text: str, *, min_words: int = 4, max_words: int = 60) -> list[str]:
    """Sentences of prose (split after ``.``, ``!``, ``?``), short and long ones dropped.

    Examples
    --------
    >>> split_sentences("One two three four. Five six! Seven eight nine ten eleven?")
    ['One two three four.', 'Seven eight nine ten eleven?']
    """
    parts = re.split(r"(?<=[.!?])[\"']?\s+", " ".join(text.split()))
    return [p.strip() for p in parts if min_words <= len(p.split()) <= max_words]


def minilm_data(*, held_out: float = 0.25, rng=0):
    """(train texts, held-out texts): the held-out share of ``sentences.txt`` (seeded)."""
    from .. import data

    sents = data.sentences()
    order = np.random.default_rng(seed_of(rng)).permutation(len(sents))
    n_out = int(round(held_out * len(sents)))
    test = [sents[i] for i in sorted(order[:n_out])]
    train = [sents[i] for i in sorted(order[n_out:])] + split_sentences(data.public_domain_text())
    return train, test


def _embed_metrics(e_q, e_ref) -> dict:
    cos = np.sum(e_q * e_ref, axis=-1) / (np.linalg.norm(e_q, axis=-1)
                                          * np.linalg.norm(e_ref, axis=-1))
    return {"mean_cosine": float(np.mean(cos)), "min_cosine": float(np.min(cos))}


def _minilm_embed(params, ids_list, model, qz, batch_size=64):
    from ..models.layers import l2_normalize
    from .bert_grad import forward

    out = np.zeros((len(ids_list), model.cfg.d_model), np.float32)
    for s in range(0, len(ids_list), batch_size):
        ids, lengths = model.pad(ids_list[s:s + batch_size])
        out[s:s + batch_size] = l2_normalize(forward(params, ids, lengths, model.cfg, qz)[0])
    return out


def hidden_state_loss(student, teacher, *, weight=1.0):
    """``weight`` times the mean over layers of ``mean((s - t)**2) / mean(t**2)`` (hidden-state
    distillation, as TinyBERT / TernaryBERT), and its gradient w.r.t. each student state.

    Examples
    --------
    >>> loss, d = hidden_state_loss([np.ones((2, 3))], [np.full((2, 3), 2.0)])
    >>> loss, d[0][0].tolist()
    (0.25, [-0.08333333333333333, -0.08333333333333333, -0.08333333333333333])
    """
    total, grads = 0.0, []
    n = len(student)
    for s, t in zip(student, teacher):
        norm = float(np.mean(np.square(t, dtype=np.float64))) or 1.0
        diff = s - t
        total += float(np.mean(np.square(diff, dtype=np.float64))) / norm
        grads.append((diff * (2 * weight / (n * norm * diff.size))).astype(s.dtype))
    return weight * total / n, grads


def vocab_words(tokenizer) -> list[str]:
    """The whole lower-case words (two letters or more) of a WordPiece tokenizer's vocabulary,
    in the order of their ids (BERT's vocabulary lists the common words first).

    Examples
    --------
    >>> from fpsim.models.bert import MiniLM
    >>> words = vocab_words(MiniLM.load().tokenizer)           # after `fpsim fetch minilm`
    >>> words[:4], len(words) > 20000
    (['the', 'of', 'and', 'in'], True)
    """
    get = getattr(tokenizer, "get_vocab", None)
    if get is None:
        return []
    vocab = get()
    return sorted((t for t in vocab if re.fullmatch(r"[a-z]{2,}", t)), key=vocab.__getitem__)


#: the kinds of text :func:`synthetic_texts` draws (with equal probability)
SYNTHETIC_KINDS = ("window", "substitute", "vocab")


def synthetic_texts(n: int, *, sentences, words, vocab=(), rng, max_words: int = 20,
                    substitute: float = 0.3) -> list[str]:
    """``n`` fresh distillation inputs for a sentence encoder (data-free distillation: the
    teacher labels any text), each drawn at random from one of :data:`SYNTHETIC_KINDS`:

    * ``"window"``: 3 to ``max_words`` consecutive words of ``words`` (the prose);
    * ``"substitute"``: one of ``sentences`` with a share ``substitute`` of its words
      replaced by words of ``vocab``;
    * ``"vocab"``: 2 to ``max_words`` words of ``vocab``.

    Words of ``vocab`` are drawn with probability proportional to ``1 / (rank + 10)``
    (``vocab`` lists common words first, as :func:`vocab_words` does).  Without a
    ``vocab`` every text is a window.  Only ``sentences`` and ``words`` are read: give
    them no held-out text.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> texts = synthetic_texts(3, sentences=["a cat sat on the mat"],
    ...                         words="it was the best of times".split(),
    ...                         vocab=["dog", "ran", "red"], rng=rng, max_words=5)
    >>> len(texts), all(isinstance(t, str) and t for t in texts)
    (3, True)
    """
    words = list(words)
    if len(words) < max_words + 1:
        raise ValueError(f"words must hold more than max_words={max_words} words")
    if max_words < 3:
        raise ValueError(f"max_words must be >= 3, got {max_words!r}")
    gen = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    vocab = list(vocab)
    if vocab:
        p = 1.0 / (np.arange(len(vocab)) + 10.0)
        p /= p.sum()
    kinds = gen.integers(0, len(SYNTHETIC_KINDS) if vocab and sentences else 1, n)
    out = []
    for kind in kinds:
        if kind == 0:  # a window of the prose
            k = int(gen.integers(3, max_words + 1))
            a = int(gen.integers(0, len(words) - k + 1))
            out.append(" ".join(words[a:a + k]))
        elif kind == 1:  # a sentence with some words replaced
            ws = sentences[int(gen.integers(len(sentences)))].split()
            swap = gen.random(len(ws)) < substitute
            new = gen.choice(len(vocab), size=len(ws), p=p)
            out.append(" ".join(vocab[j] if s else w for w, s, j in zip(ws, swap, new)))
        else:  # common words at random
            k = int(gen.integers(2, max_words + 1))
            out.append(" ".join(vocab[j] for j in gen.choice(len(vocab), size=k, p=p)))
    return out


def _small_params(params) -> list[str]:
    """The names of the norms' gains and biases and the linears' biases (not the weights)."""
    return [k for k, v in params.items() if v.ndim == 1]


def _train_minilm(model, config, *, steps, lr, batch_size, rng, ste, lsq, progress, clip,
                  train_embeddings, held_out, time_limit, warmup, eval_every,
                  hidden_weight=0.0, augment=0.0, small_lr=1.0, max_words=20):
    from .. import data
    from .bert_grad import backward, forward, params_of, quantizer
    from .backward import cosine_loss

    train_texts, test_texts = minilm_data(held_out=held_out, rng=rng)
    train_ids = model.tokenize(train_texts)
    test_ids = model.tokenize(test_texts)
    params = params_of(model)  # the student's, trained in place
    teacher = params_of(model)  # the FP32 teacher's, frozen
    fp32 = quantizer(None, model.cfg)
    on_the_fly = bool(augment or hidden_weight)
    teacher_train = None if on_the_fly else _minilm_embed(teacher, train_ids, model, fp32)
    teacher_test = _minilm_embed(teacher, test_ids, model, fp32)  # [m, D]
    words = data.public_domain_text().split() if augment else []
    vocab = vocab_words(model.tokenizer) if augment else []
    qz = quantizer(config, model.cfg, ste=ste, lsq=lsq, rng=rng)
    lr_scale = {k: small_lr for k in _small_params(params)} if small_lr != 1 else None

    def metrics():
        eval_qz = quantizer(config, model.cfg, lsq=lsq, rng=rng)
        eval_qz.scales = qz.scales
        return _embed_metrics(_minilm_embed(params, test_ids, model, eval_qz), teacher_test)

    before = metrics()
    gen = np.random.default_rng(seed_of(rng))
    opt = Adam(lr=lr)
    losses, history = [], []
    bar = _progress(steps, progress, f"QAT minilm {getattr(qz.ctx.config, 'name', '')}")
    t0 = time.perf_counter()
    for step in range(steps):
        n_aug = int(round(augment * batch_size))
        pick = gen.choice(len(train_ids), size=min(batch_size - n_aug, len(train_ids)),
                          replace=False)
        extra = synthetic_texts(n_aug, sentences=train_texts, words=words,
                                vocab=vocab, rng=gen, max_words=max_words) if n_aug else []
        batch = [train_ids[j] for j in pick] + (model.tokenize(extra) if extra else [])
        ids, lengths = model.pad(batch)
        qz.zero_grad()
        pooled, cache = forward(params, ids, lengths, model.cfg, qz)
        if on_the_fly:  # the teacher labels the batch
            target, t_cache = forward(teacher, ids, lengths, model.cfg, fp32)
        else:
            target = teacher_train[pick]  # [B, D]
        loss, dpooled = cosine_loss(pooled, target)
        dstates = None
        if hidden_weight:
            extra_loss, dstates = hidden_state_loss(cache["states"], t_cache["states"],
                                                    weight=hidden_weight)
            loss += extra_loss
        grads = backward(dpooled, cache, params, model.cfg, embeddings=train_embeddings,
                         dstates=dstates)
        grads.update(qz.grads)
        _update(opt, params, qz.scales, grads, step=step, steps=steps, lr=lr, warmup=warmup,
                clip=clip, lr_scale=lr_scale)
        losses.append(loss)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.5f}")
        if eval_every and (step + 1) % eval_every == 0:
            history.append((step + 1, metrics()["mean_cosine"]))
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    after = metrics()
    after["fp32"] = 1.0
    if history:
        after["history"] = history
    return params, dict(qz.scales), losses, before, after, seconds


# ---- the entry point -----------------------------------------------------------------
def _load(model):
    if isinstance(model, str):
        from ..models.bert import MiniLM
        from ..models.llama import SmolLM2

        name = model.lower()
        if name == "minilm":
            return "minilm", MiniLM.load()
        if name == "smollm2":
            return "smollm2", SmolLM2.load()
        raise ValueError(f"model must be 'minilm', 'smollm2' or a loaded model, got {model!r}")
    from ..models.bert import MiniLM
    from ..models.llama import Llama

    if isinstance(model, MiniLM):
        return "minilm", model
    if isinstance(model, Llama):
        return getattr(model, "NAME", type(model).__name__.lower()), model
    raise TypeError(f"model must be 'minilm', 'smollm2', a MiniLM or a Llama, got "
                    f"{type(model).__name__}")


def train(model, preset, *, steps: int = 200, lr: float | None = None, batch_size: int | None = None,
          rng=0, ste: str = "clipped", lsq: bool = False, progress: bool = True,
          clip: float = 1.0, train_embeddings: bool = False, held_out: float = 0.25,
          time_limit: float | None = None, warmup: int = 10, eval_every: int = 0,
          seq_len: int = 128, held_out_tokens: int = 1024,
          hidden_weight: float | None = None, augment: float | None = None,
          small_lr: float | None = None, max_words: int = 20,
          rotation: str | None = None) -> QATResult:
    """Distil a quantized student from the FP32 model (quantization-aware training).

    Parameters
    ----------
    model : {"minilm", "smollm2"}, MiniLM or Llama
        The model (loaded in FP32 when named; a loaded model's own weights are used,
        not its QuantContext).
    preset : str or QuantConfig
        What the student quantizes (a preset name such as ``"mxfp4"``, ``"w4a8"`` or
        ``"w4"`` -- see :data:`QAT_PRESETS` -- or any fake-quant QuantConfig).
    steps : int
        Adam steps.
    lr : float, optional
        Peak learning rate (default 2e-4 for MiniLM, 2e-5 for Llama); warmed up over
        ``warmup`` steps, then cosine-decayed to a tenth.
    batch_size : int, optional
        Texts (MiniLM, default 48) or windows of ``seq_len`` tokens (Llama, default 4)
        per step.
    rng : int seed or numpy.random.Generator
        Seeds the data split, the batches and any stochastic rounding.
    ste : {"plain", "clipped"}
        The straight-through estimator (:mod:`fpsim.qat.fakequant`).
    lsq : bool
        Learn a scale per output column of every quantized weight (LSQ).
    progress : bool
        A tqdm progress bar with the running loss.
    clip : float
        Global gradient-norm clipping (0 disables it).
    train_embeddings : bool
        Also train MiniLM's token/position tables (Llama's tied embedding always stays).
    held_out : float
        MiniLM: the share of ``sentences.txt`` held out for the metrics.
    time_limit : float, optional
        Stop after this many seconds of training.
    eval_every : int
        Also record the held-out metric every this many steps (``after["history"]``).
    seq_len : int
        Llama: tokens per training window.
    held_out_tokens : int
        Llama: the last tokens of the prose held out for the perplexity.
    hidden_weight : float, optional
        MiniLM: add this times the hidden-state distillation loss
        (:func:`hidden_state_loss`, every layer's output against the teacher's; default 3).
    augment : float, optional
        MiniLM: the share of each batch replaced by fresh synthetic texts
        (:func:`synthetic_texts`: windows of the prose, training sentences with words
        replaced, runs of vocabulary words; default 0.75) against over-fitting the ~480
        training sentences; the teacher labels every batch.
    small_lr : float, optional
        MiniLM: the learning rate of the norms' gains and biases and of the linears' biases,
        as a multiple of ``lr`` (default 10: they adapt fast and generalise well).
    max_words : int
        MiniLM: the longest synthetic text, in words.
    rotation : {None, "online_hadamard"}
        Set the config's rotation: ``"online_hadamard"`` trains (and evaluates) every
        quantized linear as ``Q(x R) @ Q(R^T W)`` with a fixed random Hadamard ``R``
        (:mod:`fpsim.models.rotation`); the trained weights stay in the original basis, so
        :meth:`QATResult.quantized_model` runs them under the same config.  None keeps the
        preset's own rotation.

    Returns
    -------
    QATResult

    Raises
    ------
    ValueError
        Unknown model or preset, a config QAT cannot differentiate, bad numbers.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    config = qat_config(preset)  # refuse a bad preset before loading the model
    if rotation is not None:
        if rotation != "online_hadamard":
            raise ValueError(f"rotation must be None or 'online_hadamard' (QAT does not train "
                             f"QuaRot's folded rotation), got {rotation!r}")
        if not config.sites and not config.layers:
            raise ValueError(f"rotation='online_hadamard' needs a quantized preset (FP32 "
                             f"linears are not rotated), and {config.name!r} quantizes "
                             f"nothing")
        config = dataclasses.replace(config, rotation=rotation,
                                     name=f"{config.name}+online_hadamard")
    name, base = _load(model)
    if name == "minilm":  # the defaults measured best (docs/qat.md)
        lr = 2e-4 if lr is None else lr
        batch_size = batch_size or 48
        hidden_weight = 3.0 if hidden_weight is None else hidden_weight
        augment = 0.75 if augment is None else augment
        small_lr = 10.0 if small_lr is None else small_lr
        if not 0 <= augment <= 1:
            raise ValueError(f"augment must be in [0, 1], got {augment!r}")
    settings = dict(steps=int(steps), lr=lr, batch_size=batch_size, rng=seed_of(rng), ste=ste,
                    lsq=lsq, clip=clip, time_limit=time_limit, hidden_weight=hidden_weight,
                    augment=augment, small_lr=small_lr,
                    rotation=None if config is None else config.rotation)
    if name == "minilm":
        out = _train_minilm(base, config, steps=int(steps), lr=lr, batch_size=batch_size,
                            rng=rng, ste=ste, lsq=lsq, progress=progress, clip=clip,
                            train_embeddings=train_embeddings, held_out=held_out,
                            time_limit=time_limit, warmup=warmup, eval_every=eval_every,
                            hidden_weight=hidden_weight, augment=augment, small_lr=small_lr,
                            max_words=max_words)
    else:
        from .llama_grad import train_llama

        out = train_llama(base, config, steps=int(steps), lr=2e-5 if lr is None else lr,
                          batch_size=batch_size or 4, rng=rng, ste=ste, lsq=lsq,
                          progress=progress, clip=clip, time_limit=time_limit, warmup=warmup,
                          seq_len=seq_len, eval_every=eval_every,
                          held_out_tokens=held_out_tokens)
    params, scales, losses, before, after, seconds = out
    return QATResult(name, config, params, scales, losses, before, after, seconds, settings,
                     _base=base)


# ---- configs -------------------------------------------------------------------------
_BERT_LINEARS = ("q", "k", "v", "o", "ffn_in", "ffn_out")
_LLAMA_LINEARS = ("q", "k", "v", "o", "gate", "up", "down")
_INT4_CHANNEL = dict(format="int4", granularity="channel")

#: QAT's own names for integer W4 configs (the library's presets work too)
QAT_PRESETS = {
    "w4a8": "INT4 per-channel weights, INT8 per-token activations (every linear but lm_head)",
    "w4": "INT4 per-channel weights, FP32 activations (every linear but lm_head)",
    "w4g32": "INT4 weights in groups of 32 along the input (int4_block32), FP32 activations",
    "w4g32a8": "INT4 weights in groups of 32 along the input (int4_block32), INT8 per-token "
               "activations",
    "mxfp4_weight_only": "MXFP4 weights (E2M1, E8M0 scale per 32 inputs), FP32 activations "
                         "(every linear but lm_head): how far the weights alone limit mxfp4",
}


def qat_config(preset):
    """The QuantConfig of ``preset``: a QuantConfig, a library preset, or one of
    :data:`QAT_PRESETS`.

    Examples
    --------
    >>> qat_config("w4a8").spec_for("ffn_in.input", 0).granularity
    'token'
    """
    from ..models.config import QuantConfig
    from ..models.presets import preset as library_preset
    from ..quant.spec import QuantSpec

    if isinstance(preset, str) and preset.lower() in QAT_PRESETS:
        key = preset.lower()
        w = ("mxfp4_e2m1" if key == "mxfp4_weight_only"
             else "int4_block32" if key.startswith("w4g32")
             else QuantSpec(**_INT4_CHANNEL, name="int4_channel"))
        sites = {s: w for s in _BERT_LINEARS + _LLAMA_LINEARS}
        if key.endswith("a8"):
            sites.update({f"{s}.input": "int8_token" for s in _BERT_LINEARS + _LLAMA_LINEARS})
        return QuantConfig(name=key, portable=True, sites=sites,
                           description=QAT_PRESETS[key])
    return library_preset(preset)
