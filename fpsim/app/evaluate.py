"""Evaluate quantization recipes on the reference models against their FP32 runs.

* MiniLM (sentence embeddings) on the sentences shipped in :mod:`fpsim.data`: cosine
  between quantized and FP32 embeddings (mean and worst), Spearman correlation of the
  pairwise-similarity matrices, nearest-neighbour agreement.
* SmolLM2 (language model) on the public-domain text in :mod:`fpsim.data`: perplexity,
  its difference to FP32 with a paired bootstrap confidence interval, the mean KL
  divergence of the next-token distributions from FP32's, and top-1 agreement.  Its FP32
  baseline already sits on the Q4_1 grid of the published GGUF: weight results are
  relative to the Q4_1 weights.
* For both: storage of the weights (bytes including scales and zero points, bits per
  weight, ratio to FP32) and, per layer, the SQNR of the hidden state against FP32.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from typing import Callable, Iterable

import numpy as np

from ..metrics import kl_divergence, sqnr_db
from ..rounding import as_generator

__all__ = [
    "spearman",
    "nearest_neighbour_agreement",
    "embedding_metrics",
    "lm_metrics",
    "bootstrap_ci",
    "weight_storage",
    "layer_sqnr",
    "evaluate",
    "default_presets",
    "EvalResult",
    "results_markdown",
]


# ---- statistics ---------------------------------------------------------------
def _rank(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size, dtype=np.float64)
    sa = a[order]
    ranks[order] = np.arange(1, a.size + 1, dtype=np.float64)
    # average the ranks of tied runs
    boundaries = np.flatnonzero(np.diff(sa) != 0) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [a.size]])
    for s, e in zip(starts, ends):
        if e - s > 1:
            ranks[order[s:e]] = (s + 1 + e) / 2.0
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation of two equal-length vectors (ties averaged).

    Examples
    --------
    >>> spearman([1, 2, 3, 4], [10, 20, 30, 40])
    1.0
    >>> spearman([1, 2, 3], [3, 2, 1])
    -1.0
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"spearman needs two vectors of the same length >= 2, got {a.shape} "
                         f"and {b.shape}")
    ra, rb = _rank(a), _rank(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / den) if den else float("nan")


def nearest_neighbour_agreement(e_ref: np.ndarray, e_q: np.ndarray) -> float:
    """Fraction of rows whose nearest other row (cosine) is the same in both embeddings.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    >>> q = np.array([[0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    >>> round(nearest_neighbour_agreement(ref, q), 4)
    0.6667
    """
    def nn(e):
        s = e @ e.T
        np.fill_diagonal(s, -np.inf)
        return np.argmax(s, axis=1)

    return float(np.mean(nn(e_ref) == nn(e_q)))


def embedding_metrics(e_ref: np.ndarray, e_q: np.ndarray) -> dict:
    """Cosine (mean, worst), Spearman of pairwise similarities, NN agreement.

    Both inputs are (n, d) L2-normalised embeddings.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    >>> q = np.array([[0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    >>> {k: round(v, 4) for k, v in embedding_metrics(ref, q).items()}
    {'cosine_mean': 0.9333, 'cosine_min': 0.8, 'similarity_spearman': 0.5, 'nn_agreement': 0.6667}
    """
    e_ref = np.asarray(e_ref, dtype=np.float64)
    e_q = np.asarray(e_q, dtype=np.float64)
    cos = np.sum(e_ref * e_q, axis=1) / (
        np.linalg.norm(e_ref, axis=1) * np.linalg.norm(e_q, axis=1))
    iu = np.triu_indices(e_ref.shape[0], k=1)
    s_ref = (e_ref @ e_ref.T)[iu]
    s_q = (e_q @ e_q.T)[iu]
    return {
        "cosine_mean": float(np.mean(cos)),
        "cosine_min": float(np.min(cos)),
        "similarity_spearman": spearman(s_ref, s_q),
        "nn_agreement": nearest_neighbour_agreement(e_ref, e_q),
    }


def bootstrap_ci(diff_fn: Callable[[np.ndarray], float], n: int, *, n_boot: int = 1000,
                 level: float = 0.95, rng=0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``diff_fn(indices)`` over resampled indices.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(10.0)
    >>> bootstrap_ci(lambda i: float(np.mean(x[i])), x.size, n_boot=200)
    (2.9, 6.4)
    """
    g = as_generator(rng)
    stats = np.array([diff_fn(g.integers(0, n, n)) for _ in range(n_boot)])
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


_CHUNK = 64  # rows of logits per step of lm_metrics (64 x 49152 float64: 25 MB)


def _lse(lg):  # [c, V] float64 -> [c] log-sum-exp (NaN for a row with Inf)
    m = lg.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        return np.log(np.exp(lg - m).sum(axis=1)) + m[:, 0]


def _chunk_stats(a, b, t):
    """Cross-entropies of a and b (float64 logits [c, V]) at targets t, and KL(a || b)."""
    lse_a, lse_b = _lse(a), _lse(b)
    rows = np.arange(a.shape[0])
    l_a, l_b = lse_a - a[rows, t], lse_b - b[rows, t]
    if np.isfinite(lse_a).all() and np.isfinite(lse_b).all():
        lp_a = a - lse_a[:, None]  # [c, V] log-probabilities
        kl = np.sum(np.exp(lp_a) * (lp_a - (b - lse_b[:, None])), axis=1)
        kl = np.maximum(kl, 0.0)  # >= 0 in exact arithmetic
    else:  # infinities: the documented rules of kl_divergence
        kl = kl_divergence(a, b, axis=-1, from_logits=True)
    return l_a, l_b, kl


def lm_metrics(logits_ref: np.ndarray, logits_q: np.ndarray, targets: np.ndarray, *,
               n_boot: int = 1000, rng=0) -> dict:
    """Perplexities, their difference with a paired bootstrap CI, mean KL and top-1 agreement.

    ``logits_*`` are (T, vocab) next-token logits, ``targets`` the (T,) next tokens.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    >>> q = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    >>> m = lm_metrics(ref, q, np.array([0, 1]), n_boot=100)
    >>> m["tokens"], round(m["ppl_fp32"], 4), round(m["ppl"], 4), m["top1_agreement"]
    (2, 1.2707, 1.4851, 1.0)
    """
    n = np.shape(logits_ref)[0]
    l_ref, l_q, kl = np.empty(n), np.empty(n), np.empty(n)
    top1 = np.empty(n, bool)
    for s in range(0, n, _CHUNK):  # rows in chunks: float64 temporaries stay small
        a = np.asarray(logits_ref[s:s + _CHUNK], np.float64)  # [c, V]
        b = np.asarray(logits_q[s:s + _CHUNK], np.float64)  # [c, V]
        t = np.asarray(targets[s:s + _CHUNK])
        l_ref[s:s + len(a)], l_q[s:s + len(a)], kl[s:s + len(a)] = _chunk_stats(a, b, t)
        top1[s:s + len(a)] = np.argmax(a, 1) == np.argmax(b, 1)
    ppl_ref, ppl_q = float(np.exp(l_ref.mean())), float(np.exp(l_q.mean()))
    lo, hi = bootstrap_ci(lambda i: float(np.exp(l_q[i].mean()) - np.exp(l_ref[i].mean())),
                          l_ref.size, n_boot=n_boot, rng=rng)
    return {
        "tokens": int(l_ref.size),
        "ppl_fp32": ppl_ref,
        "ppl": ppl_q,
        "ppl_delta": ppl_q - ppl_ref,
        "ppl_delta_ci95": [lo, hi],
        "kl_mean": float(np.mean(kl)),
        "top1_agreement": float(np.mean(top1)),
    }


def layer_sqnr(h_ref: Iterable[np.ndarray], h_q: Iterable[np.ndarray],
               mask: np.ndarray | None = None) -> list[float]:
    """SQNR (dB) of each layer's hidden state against the FP32 run's.

    Examples
    --------
    >>> import numpy as np
    >>> h_ref = [np.ones(4), np.arange(4.0)]
    >>> [round(v, 2) for v in layer_sqnr(h_ref, [np.ones(4) * 1.01, np.arange(4.0) + 0.1])]
    [40.0, 25.44]
    """
    out = []
    for a, b in zip(h_ref, h_q):
        a = np.asarray(a)
        b = np.asarray(b)
        if mask is not None:
            a, b = a[mask], b[mask]
        out.append(sqnr_db(a, b))
    return out


def weight_storage(weights: dict, config, *, quantized: dict | None = None) -> dict:
    """Bytes of the weights under ``config`` (scales and zero points included).

    ``weights`` maps (site, layer) -> weight array in (in, out) layout.  ``quantized``, the
    record a model's context keeps (``model.ctx.weight_specs``: (site, layer) -> the spec it
    quantized that weight with), counts exactly what the model did; without it each weight's
    spec comes from ``config`` with the model's rule (:meth:`QuantContext.weight_spec`), the
    layer count taken from the weights (so negative ``exclude_layers`` count from the end).

    Examples
    --------
    >>> import numpy as np
    >>> from fpsim.models import preset
    >>> w = {("q", 0): np.ones((64, 32), np.float32)}
    >>> weight_storage(w, preset("int8"))  # int8 codes + a float32 scale per output column
    {'weights': 2048, 'bytes': 2176, 'bits_per_weight': 8.5, 'ratio_to_fp32': 0.265625}
    >>> weight_storage(w, None)["ratio_to_fp32"]
    1.0
    """
    from ..models import QuantContext
    from ..quant import quantize_tensor

    fp32_bytes = 0
    q_bytes = 0
    count = 0
    sizes: dict = {}
    layers = [layer for _, layer in weights if isinstance(layer, (int, np.integer))]
    n_layers = max(layers) + 1 if layers else None
    for (site, layer), w in weights.items():
        n = int(np.size(w))
        count += n
        fp32_bytes += 4 * n
        if quantized is not None:
            spec = quantized.get((site, layer))
        else:
            spec = None if config is None else QuantContext.weight_spec(
                config.spec_for(site, layer, n_layers))
        if spec is None:
            q_bytes += 4 * n
            continue
        # a QuantizedTensor's nbytes depends on its spec and shape only: one per pair
        try:
            key = (spec, np.shape(w))
            hash(key)
        except TypeError:  # pragma: no cover - specs are frozen dataclasses
            key = None
        if key is None or key not in sizes:
            nb = quantize_tensor(w, spec).nbytes
            if key is None:
                q_bytes += nb
                continue
            sizes[key] = nb
        q_bytes += sizes[key]
    return {
        "weights": count,
        "bytes": int(q_bytes),
        "bits_per_weight": 8.0 * q_bytes / count if count else float("nan"),
        "ratio_to_fp32": q_bytes / fp32_bytes if fp32_bytes else float("nan"),
    }


# ---- driver ------------------------------------------------------------------------
@dataclasses.dataclass
class EvalResult:
    """One preset evaluated on one model.

    Examples
    --------
    >>> r = EvalResult(model="minilm", preset="int8", description="", metrics={},
    ...                storage={}, layer_sqnr_db=[], trace=[], seconds=0.0)
    >>> r.to_dict()["preset"]
    'int8'
    """

    model: str
    preset: str
    description: str
    metrics: dict
    storage: dict
    layer_sqnr_db: list
    trace: list
    seconds: float
    #: root seed of the run's stochastic rounding (fpsim.rounding.child_seed derives the rest)
    seed: int = 0
    #: MiniLM: sentences per batch (quantized embeddings depend on it); SmolLM2: window
    batch_size: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_info() -> dict:
    """Versions (fpsim, numpy, numba, python) and the machine: what a results file records.

    Examples
    --------
    >>> sorted(run_info())
    ['machine', 'versions']
    """
    import os
    import platform
    from importlib import metadata

    from .. import __version__

    return {"versions": {"fpsim": __version__, "numpy": np.__version__,
                         "numba": metadata.version("numba"), "python": platform.python_version()},
            "machine": {"platform": platform.platform(), "processor": platform.machine(),
                        "cpu_count": os.cpu_count()}}


def strict_json(obj, **kwargs) -> str:
    """``json.dumps`` of ``obj`` as standard JSON: NaN and infinities become null (JSON has no
    such numbers), numpy scalars and arrays plain numbers and lists.

    Examples
    --------
    >>> strict_json({"a": float("inf"), "b": [1.5, float("nan")]})
    '{"a": null, "b": [1.5, null]}'
    """
    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, np.ndarray):
            return clean(v.tolist())
        if isinstance(v, (np.bool_, bool)):
            return bool(v)
        if isinstance(v, (np.integer, int)):
            return int(v)
        if isinstance(v, (np.floating, float)):
            return float(v) if math.isfinite(v) else None
        return v

    return json.dumps(clean(obj), allow_nan=False, **kwargs)


def _progress(iterable, desc, enabled):
    items = list(iterable)
    if not enabled:
        return items
    try:
        from tqdm import tqdm

        return tqdm(items, desc=desc, file=sys.stderr, leave=False)
    except ImportError:  # pragma: no cover
        return items


def _load_traced(ref, model, cfg, seed):
    """``model`` under ``cfg`` (sharing the FP32 ``ref``'s weights where the model can),
    recording the weights' statistics as they are quantized: as ``load(model, cfg,
    rng=seed)``."""
    from ..models import load

    if hasattr(ref, "with_quant"):
        m = ref.with_quant(cfg)
        m.ctx.reseed(seed)
    else:
        m = load(model, quant=cfg, rng=seed)
    m.ctx.trace_weights = True
    return m


def default_presets() -> list[str]:
    """The presets :func:`evaluate` runs when none are named: every preset of
    :data:`fpsim.models.PRESETS` but those that emulate a matrix instruction or an accumulator
    (``fp8_hopper*``, ``fp8_attention_hopper*``, ``fp8_deepseek``: bit-exact GEMMs, 5 to 10
    times a plain preset's time) and those that calibrate weights with GPTQ or AWQ.  Name
    them, or pass ``presets="all"``, to run them too.

    Examples
    --------
    >>> names = default_presets()
    >>> "int8" in names, "fp8_hopper" in names, "int4_g128_gptq" in names
    (True, False, False)
    """
    from ..models import PRESETS, preset

    return [name for name in PRESETS if not _is_slow(preset(name))]


def _is_slow(cfg) -> bool:
    """An emulated accumulator or matrix instruction, or a weight algorithm (GPTQ/AWQ)."""
    return bool(cfg.accumulator or cfg.accumulators or cfg.weight_algorithm)


#: a preset's cost in FP32 passes (its pass, the weights' quantization, the traced probe and
#: the metrics), measured on 2 cores (SmolLM2: 7.6 s a preset after a 5.5 s FP32 pass;
#: MiniLM: 2.6 s after 2 s); presets on a matrix instruction or with GPTQ/AWQ cost more
_PRESET_COST = 1.4


def _estimate(t_ref: float, names, model: str, enabled: bool) -> None:
    """Say on stderr about how long the presets will take (from the FP32 pass's time)."""
    if not enabled:
        return
    from ..models import preset

    slow = [n for n in names if isinstance(n, str) and _is_slow(preset(n))]
    est = t_ref * _PRESET_COST * len(names)
    more = (f"; {len(slow)} of them ({', '.join(slow)}) emulate a matrix instruction or run "
            "GPTQ/AWQ and take longer" if slow else "")
    print(f"fpsim eval: {model}'s FP32 pass took {t_ref:.0f} s; {len(names)} preset(s), about "
          f"{_duration(est)}{more}", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _release_memory() -> None:
    """Give the freed memory of the last preset back to the system before the next one.

    glibc's malloc keeps freed blocks below its (adaptive, up to 32 MB) mmap threshold in
    its heap, so without this a run over many presets grows by the fragments of each.
    """
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _window_logits(model, windows) -> np.ndarray:
    """The next-token logits of every window but its last position, stacked: (T, V)."""
    out = np.empty((sum(len(w) - 1 for w in windows), model.hparams.n_vocab), np.float32)
    at = 0
    for w in windows:
        out[at:at + len(w) - 1] = model.logits(w)[:-1]
        at += len(w) - 1
    return out


def _start_trace(model) -> None:
    """Record the activations' statistics too from now on (the weights' are recorded once,
    when first quantized: see :func:`_load_traced`)."""
    model.ctx.tracing = True


def _trace_rows(ctx) -> list[dict]:
    return [dict(site=s, layer=layer, **st.to_dict()) for (s, layer), st in ctx.trace.items()]


def evaluate(model="minilm", presets: Iterable[str] | None = None, *,
             sentences: list[str] | None = None, text: str | None = None,
             max_tokens: int = 1024, window: int = 512, progress: bool = True,
             n_boot: int = 1000, batch_size: int = 64, rng=None) -> list[EvalResult]:
    """Evaluate presets on ``model`` against its FP32 run.

    Parameters
    ----------
    model : "minilm", "smollm2" or a path
        A packaged model, or your own checkpoint (a Hugging Face folder or GGUF file, see
        :func:`fpsim.models.load`): encoders are measured as MiniLM, decoders as SmolLM2.
    presets : iterable of str or QuantConfig, or "all"
        Default: :func:`default_presets`; ``"all"``: every preset in
        :data:`fpsim.models.PRESETS`.
    sentences : list of str
        MiniLM inputs (default: :func:`fpsim.data.sentences`).
    text : str
        SmolLM2 input (default: :func:`fpsim.data.public_domain_text`).
    max_tokens, window : int
        SmolLM2: evaluate the first ``max_tokens`` tokens in windows of ``window``.
    progress : bool
        Show a progress bar (tqdm) on stderr.
    batch_size : int
        MiniLM sentences per batch (quantized embeddings depend on the batching; recorded).
    rng : int seed, numpy.random.Generator or None
        Root seed of stochastic rounding, the same for every preset (None: 0); recorded in
        each result's ``seed``.

    Returns
    -------
    list of EvalResult

    Examples
    --------
    >>> import fpsim
    >>> res = evaluate("minilm", ["int8"], sentences=fpsim.data.sentences()[:4], progress=False)
    >>> r = res[0]
    >>> r.model, r.preset, len(r.layer_sqnr_db), r.storage["bits_per_weight"]
    ('minilm', 'int8', 7, 8.0625)
    >>> r.metrics["cosine_mean"] > 0.99, r.metrics["nn_agreement"]
    (True, 1.0)
    """
    from .. import data
    from ..models import load
    from ..models import PRESETS, preset

    from ..rounding import seed_of

    if isinstance(presets, str) and presets == "all":
        names = list(PRESETS)
    elif isinstance(presets, str):
        raise TypeError(f"presets must be a list of preset names or QuantConfigs, or 'all'; "
                        f"got the string {presets!r} (write [{presets!r}] for one preset)")
    else:
        names = default_presets() if presets is None else list(presets)
    seed = seed_of(rng)
    from ..models.bert import MiniLM
    from ..models.llama import Llama

    ref = load(model)
    label = model if model in ("minilm", "smollm2") else str(model)
    results = []
    if isinstance(ref, MiniLM):
        texts = data.sentences() if sentences is None else list(sentences)
        t_ref = time.perf_counter()
        e_ref = ref.embed(texts, batch_size=batch_size)
        _estimate(time.perf_counter() - t_ref, names, "minilm", progress)
        probe = texts[:16]
        h_ref = ref.hidden_states(probe)
        mask = ref.attention_mask(probe) if hasattr(ref, "attention_mask") else None
        for name in _progress(names, "minilm presets", progress):
            t0 = time.perf_counter()
            cfg = preset(name)
            m = _load_traced(ref, model, cfg, seed)
            e_q = m.embed(texts, batch_size=batch_size)
            metrics = embedding_metrics(e_ref, e_q)
            _start_trace(m)  # statistics from the probe batch only: tracing costs time
            h_q = m.hidden_states(probe)
            results.append(EvalResult(
                model=label, preset=cfg.name,
                description=f"{cfg.description} (FP32: {ref.weights_source})", metrics=metrics,
                storage=weight_storage(ref.linear_weights(), cfg,
                                       quantized=m.ctx.weight_specs),
                layer_sqnr_db=layer_sqnr(h_ref, h_q, mask), trace=_trace_rows(m.ctx),
                seconds=time.perf_counter() - t0, seed=seed, batch_size=batch_size))
        return results
    if not isinstance(ref, Llama):  # pragma: no cover - load() returns one of the two
        raise ValueError(f"model must be an encoder or a decoder, got {type(ref).__name__}")
    txt = data.public_domain_text() if text is None else text
    ids = np.asarray(ref.tokenize(txt)[:max_tokens])
    if ids.size < 2:
        raise ValueError("the evaluation text gives fewer than 2 tokens")
    windows = [ids[i:i + window] for i in range(0, ids.size - 1, window) if ids[i:i + window].size > 1]
    targets = np.concatenate([w[1:] for w in windows])
    t_ref = time.perf_counter()
    lr = _window_logits(ref, windows)
    _estimate(time.perf_counter() - t_ref, names, "smollm2", progress)
    h_ref = ref.hidden_states(windows[0][:128])
    for name in _progress(names, "smollm2 presets", progress):
        t0 = time.perf_counter()
        cfg = preset(name)
        m = _load_traced(ref, model, cfg, seed)
        lq = _window_logits(m, windows)
        metrics = lm_metrics(lr, lq, targets, n_boot=n_boot)
        _start_trace(m)
        h_q = m.hidden_states(windows[0][:128])
        results.append(EvalResult(
            model=label, preset=cfg.name,
            description=f"{cfg.description} (FP32: {ref.weights_source})",
            metrics=metrics, storage=weight_storage(ref.linear_weights(), cfg,
                                                    quantized=m.ctx.weight_specs),
            layer_sqnr_db=layer_sqnr(h_ref, h_q), trace=_trace_rows(m.ctx),
            seconds=time.perf_counter() - t0, seed=seed, batch_size=window))
        del m
        _release_memory()
    return results


def results_markdown(results: list[EvalResult]) -> str:
    """A Markdown table of evaluation results (one row per preset).

    Examples
    --------
    >>> r = EvalResult(model="minilm", preset="int8", description="",
    ...                metrics={"cosine_mean": 0.997, "cosine_min": 0.996,
    ...                         "similarity_spearman": 1.0, "nn_agreement": 1.0},
    ...                storage={"bits_per_weight": 8.0625, "ratio_to_fp32": 0.252},
    ...                layer_sqnr_db=[22.5], trace=[], seconds=0.0)
    >>> print(results_markdown([r]).splitlines()[-1])
    | int8 | 0.99700 | 0.99600 | 1.00000 | 1.000 | 8.06 | 0.252 | 22.5 |
    """
    if not results:
        return ""
    if "cosine_mean" in results[0].metrics:  # an encoder's results
        header = ["preset", "cosine mean", "cosine min", "similarity Spearman",
                  "NN agreement", "bits/weight", "size vs FP32", "last-layer SQNR (dB)"]
        rows = [[r.preset, f"{r.metrics['cosine_mean']:.5f}", f"{r.metrics['cosine_min']:.5f}",
                 f"{r.metrics['similarity_spearman']:.5f}", f"{r.metrics['nn_agreement']:.3f}",
                 f"{r.storage['bits_per_weight']:.2f}", f"{r.storage['ratio_to_fp32']:.3f}",
                 f"{r.layer_sqnr_db[-1]:.1f}" if r.layer_sqnr_db else "-"] for r in results]
    else:
        header = ["preset", "perplexity", "delta vs FP32 [95% CI]", "mean KL (nats)",
                  "top-1 agreement", "bits/weight", "size vs FP32"]
        rows = []
        for r in results:
            m = r.metrics
            lo, hi = m["ppl_delta_ci95"]
            rows.append([r.preset, f"{m['ppl']:.3f}", f"{m['ppl_delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                         f"{m['kl_mean']:.4f}", f"{m['top1_agreement']:.3f}",
                         f"{r.storage['bits_per_weight']:.2f}", f"{r.storage['ratio_to_fp32']:.3f}"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def results_json(results: list[EvalResult]) -> str:
    """The results as standard JSON: ``{"run": run_info(), "results": [...]}`` (non-finite
    numbers are null)."""
    return strict_json({"run": run_info(), "results": [r.to_dict() for r in results]},
                       indent=1)

