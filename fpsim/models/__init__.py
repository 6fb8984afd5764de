"""Reference transformers in pure NumPy on real published weights.

``fpsim.models.load(name, quant=None)`` is the entry point (a fixed contract):
``"minilm"`` (all-MiniLM-L6-v2 sentence embeddings), ``"smollm2"``
(SmolLM2-135M-Instruct, from its Q4_1 GGUF), or the path of your own checkpoint (a
Hugging Face folder or a GGUF file, :mod:`fpsim.models.hf`).  ``quant`` is a
:class:`~fpsim.models.QuantConfig`, a preset name or None (FP32).
"""

from __future__ import annotations

import os

from .config import SITES, QuantConfig
from .context import QuantContext, SiteStats
from .presets import PRESETS, preset

__all__ = ["load", "MODELS", "SITES", "QuantConfig", "QuantContext", "SiteStats", "PRESETS", "preset"]

MODELS = ("minilm", "smollm2")


def load(name, quant=None, *, rng=None, **kwargs):
    """Load a reference model or your own checkpoint, optionally quantized.

    Parameters
    ----------
    name : {"minilm", "smollm2"}, str or os.PathLike
        A packaged model, or the path of a Hugging Face folder (``config.json``,
        ``*.safetensors``, ``tokenizer.json``; Llama/Mistral/Qwen2 or BERT) or of a
        ``.gguf`` file (``llama``, ``qwen2``, ``bert``): see :mod:`fpsim.models.hf`.  A folder
        called ``minilm`` is ``"./minilm"``.
    quant : QuantConfig, preset name or None
    rng : int seed, numpy.random.Generator or None
        Root seed of stochastic rounding (None: the default seed 0, so runs repeat); every
        site, layer, operand and call draws its own stream (:class:`QuantContext`).
    **kwargs
        Passed to the model's ``load`` (e.g. ``trace=True``; for a GGUF path also
        ``cache=`` and ``tokenizer=``, see :func:`fpsim.models.hf.load_path`).

    Returns
    -------
    fpsim.models.bert.MiniLM or fpsim.models.llama.Llama
        (:class:`~fpsim.models.llama.SmolLM2` for ``"smollm2"``).  Its ``weights_source``
        says which weights the FP32 run is.

    Raises
    ------
    ValueError
        Unknown model or preset.
    fpsim.models.weights.ModelFilesError
        The model files are missing or corrupted (the message says how to fetch them), or
        a checkpoint lacks a file or tensor or has a wrong shape.
    fpsim.models.weights.UnsupportedModelError
        A checkpoint of an architecture fpsim does not run (a ValueError too).

    Examples
    --------
    >>> import fpsim
    >>> model = fpsim.models.load("minilm")
    >>> type(model).__name__, model.embed(["A cat sits.", "A dog runs."]).shape
    ('MiniLM', (2, 384))
    >>> fpsim.models.load("minilm", quant="int8").ctx.config.name
    'int8'
    >>> fpsim.models.load("smollm2").weights_source.startswith("SmolLM2-135M-Instruct Q4_1 GGUF")
    True
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a model name ({', '.join(MODELS)}) or a path, got "
                        f"{type(name).__name__}")
    if isinstance(name, os.PathLike) or name not in MODELS:
        if isinstance(name, str) and not _looks_like_path(name):
            raise ValueError(f"unknown model {name!r}; models: {', '.join(MODELS)}, or the "
                             "path of a Hugging Face folder or .gguf file")
        from .hf import load_path

        model = load_path(name, quant, **kwargs)
    elif name == "minilm":
        from .bert import MiniLM

        model = MiniLM.load(quant=quant, **kwargs)
    elif name == "smollm2":
        from .llama import SmolLM2

        model = SmolLM2.load(quant=quant, **kwargs)
    model.ctx.reseed(rng)
    return model


def _looks_like_path(name: str) -> bool:
    """Whether a string that is not a model name means a path (it exists, has a
    separator, or ends in .gguf): else it is reported as an unknown model name."""
    return (os.path.exists(name) or os.sep in name or "/" in name
            or name.lower().endswith(".gguf"))
