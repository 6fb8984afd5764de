"""Reference transformers in pure NumPy on real published weights.

``fpsim.models.load(name, quant=None)`` is the entry point (a fixed contract):
``"minilm"`` (all-MiniLM-L6-v2 sentence embeddings) or ``"smollm2"``
(SmolLM2-135M-Instruct, from its Q4_1 GGUF).  ``quant`` is a
:class:`~fpsim.models.QuantConfig`, a preset name or None (FP32).
"""

from __future__ import annotations

from .config import SITES, QuantConfig
from .context import QuantContext, SiteStats
from .presets import PRESETS, preset

__all__ = ["load", "MODELS", "SITES", "QuantConfig", "QuantContext", "SiteStats", "PRESETS", "preset"]

MODELS = ("minilm", "smollm2")


def load(name: str, quant=None, *, rng=None, **kwargs):
    """Load a reference model, optionally quantized.

    Parameters
    ----------
    name : {"minilm", "smollm2"}
    quant : QuantConfig, preset name or None
    rng : int seed, numpy.random.Generator or None
        Root seed of stochastic rounding (None: the default seed 0, so runs repeat); every
        site, layer, operand and call draws its own stream (:class:`QuantContext`).
    **kwargs
        Passed to the model's ``load`` (e.g. ``trace=True``).

    Returns
    -------
    fpsim.models.bert.MiniLM or fpsim.models.llama.SmolLM2

    Raises
    ------
    ValueError
        Unknown model or preset.
    fpsim.models.weights.ModelFilesError
        The model files are missing or corrupted (the message says how to fetch them).

    Examples
    --------
    >>> import fpsim
    >>> model = fpsim.models.load("minilm")
    >>> type(model).__name__, model.embed(["A cat sits.", "A dog runs."]).shape
    ('MiniLM', (2, 384))
    >>> fpsim.models.load("minilm", quant="int8").ctx.config.name
    'int8'
    """
    if name == "minilm":
        from .bert import MiniLM

        model = MiniLM.load(quant=quant, **kwargs)
    elif name == "smollm2":
        from .llama import SmolLM2

        model = SmolLM2.load(quant=quant, **kwargs)
    else:
        raise ValueError(f"unknown model {name!r}; models: {', '.join(MODELS)}")
    model.ctx.reseed(rng)
    return model
