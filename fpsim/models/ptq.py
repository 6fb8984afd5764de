"""Post-training weight quantization of a model: GPTQ and AWQ on calibration text.

A :class:`~fpsim.models.QuantConfig` with ``weight_algorithm="gptq"`` or ``"awq"`` rounds
every quantized linear's weight with that algorithm (:mod:`fpsim.quant.gptq`,
:mod:`fpsim.quant.awq`) instead of to nearest.  :func:`calibrate` runs one forward pass of
the calibration tokens through the model; each linear, when the pass reaches it, takes its
inputs (the outputs of the layers before it, already quantized: GPTQ's sequential order),
computes its weight, installs it in ``model.ctx`` and passes its quantized output on.  The
models' loaders call it, so ``fpsim.models.load("smollm2", quant=config)`` is ready to use.

Calibration text is held out from what fpsim's evaluations measure for each model: SmolLM2
(measured on the public-domain text) calibrates on the shipped sentences
(:func:`fpsim.data.sentences`, joined, in rows of 256 tokens), MiniLM (measured on the
sentences) on the public-domain text's sentences; ``calibration_tokens``
of them (4096 by default).
"""

from __future__ import annotations

import re
import sys

import numpy as np

from .. import data

__all__ = ["calibrate", "calibration_texts"]

_ROW = 256


def calibration_texts(model) -> list[str]:
    """The calibration texts of a model: what its evaluations do not measure.

    Examples
    --------
    >>> class Decoder: hparams = None
    >>> import fpsim
    >>> calibration_texts(Decoder()) == fpsim.data.sentences()
    True
    """
    if hasattr(model, "hparams"):  # a decoder, measured on the public-domain text
        return data.sentences()
    return _sentences(data.public_domain_text())  # an encoder, measured on the sentences


def _sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.;:!?])\s+", " ".join(text.split()))
    return [p for p in parts if len(p.split()) >= 3]


def _progress(total: int, desc: str, show: bool):
    if not show:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with fpsim[models]
        return None
    return tqdm(total=total, desc=desc, unit="linear", file=sys.stderr, leave=False)


def _n_linears(model) -> int:
    ctx = model.ctx
    return sum(ctx.spec(site, layer) is not None for site, layer in model.linear_weights())


def calibrate(model, *, tokens: int | None = None, progress: bool | None = None) -> dict:
    """Compute the weights of ``model.ctx.config.weight_algorithm`` (GPTQ or AWQ).

    Parameters
    ----------
    model : Llama or MiniLM
        A model whose config names a weight algorithm.
    tokens : int, optional
        Calibration tokens (default: the config's option ``calibration_tokens``, else 4096).
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).

    Returns
    -------
    dict
        ``(site, layer) -> QuantizedTensor`` of the installed weights.
    """
    ctx = model.ctx
    cfg = ctx.config
    if cfg is None or cfg.weight_algorithm is None:
        raise ValueError("calibrate needs a QuantConfig with weight_algorithm='gptq' or 'awq'")
    n = tokens if tokens is not None else int(cfg.options.get("calibration_tokens", 4096))
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"tokens must be a positive int, got {n!r}")
    show = sys.stderr.isatty() if progress is None else progress
    bar = _progress(_n_linears(model), f"{cfg.weight_algorithm} ({cfg.name})", show)
    ctx.installed = {}
    ctx.calibrating = True
    ctx.on_calibrated = None if bar is None else (lambda site, layer: bar.update(1))
    try:
        if hasattr(model, "hparams"):  # a Llama decoder: rows of token ids
            ids = np.asarray(model.tokenize(" ".join(calibration_texts(model))), np.int64)[:n]
            rows = max(len(ids) // _ROW, 1)
            ids = ids[:rows * _ROW].reshape(rows, -1) if len(ids) >= _ROW else ids[None]
            model.logits(ids)
        else:  # an encoder: the calibration section's sentences, padded
            texts, count = [], 0
            for t in calibration_texts(model):
                texts.append(t)
                count += len(model.tokenize([t])[0])
                if count >= n:
                    break
            ids, lengths = model.pad(model.tokenize(texts))
            model._encode(ids, lengths)
    finally:
        ctx.calibrating = False
        ctx.on_calibrated = None
        if bar is not None:
            bar.close()
    return {k: v[0] for k, v in ctx.installed.items()}
