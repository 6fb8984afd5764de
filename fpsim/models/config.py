"""Quantization at every site of a transformer: QuantConfig, presets, and the runtime
context the forward passes call.

Sites (the names a QuantConfig maps to QuantSpecs):

* weights of every linear: ``q k v o`` (attention), ``gate up down`` (Llama MLP),
  ``ffn_in ffn_out`` (BERT MLP), ``lm_head``, ``embed``;
* the activation entering each linear: ``<linear>.input`` (e.g. ``q.input``);
* attention inputs: ``attn.q``, ``attn.k``, ``attn.v``, ``attn.probs``;
* the KV cache: ``kv_cache`` (keys and values as stored);
* the accumulator of every matmul: ``accumulator`` (one for all matmuls, or per linear
  via ``accumulators={"q": ...}``).

A forward pass gets a :class:`QuantContext` (``QuantContext(None)`` is FP32: every method
is the identity) and calls ``ctx.linear(name, layer, x, w, b)``, ``ctx.act(site, layer, x)``
and ``ctx.matmul(site, layer, a, b)``.  Weights are fake-quantized once per context and
cached.  The context's :attr:`trace` records, per site and layer, the amax, the counts of
saturated and underflowed values, and the SQNR of the quantized tensor.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import pathlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..quant import QuantSpec, resolve_spec


__all__ = ["LINEAR_MODES", "LINEAR_SITES", "ACT_SITES", "SITES", "MATMUL_SITES", "OPTIONS",
           "QuantConfig"]


#: How a linear layer computes: fake-quantized operands (any QuantSpec), LLM.int8(),
#: SmoothQuant, or the numerics of torch.ao.quantization.quantize_dynamic.
LINEAR_MODES = ("fake_quant", "llm_int8", "smoothquant", "torch_dynamic_int8")

LINEAR_SITES = ("q", "k", "v", "o", "gate", "up", "down", "ffn_in", "ffn_out", "lm_head",
                "embed")
ACT_SITES = tuple(f"{s}.input" for s in LINEAR_SITES if s != "embed") + (
    "attn.q", "attn.k", "attn.v", "attn.probs", "kv_cache")
SITES = LINEAR_SITES + ACT_SITES
#: matmuls that are not linears, named for ``accumulators=`` only: attention's scores
#: ``q @ k^T`` (operands ``attn.q``, ``attn.k``) and output ``probs @ v`` (``attn.probs``,
#: ``attn.v``)
MATMUL_SITES = ("attn.qk", "attn.pv")


def _check_site(site: str, where: str = "site", allowed=SITES):
    if site not in allowed:
        close = difflib.get_close_matches(site, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown {where} {site!r}{hint}; sites: {', '.join(allowed)}")


def _spec_to_json(spec):
    if spec is None or isinstance(spec, str):
        return spec
    d = {}
    for f in dataclasses.fields(QuantSpec):
        v = getattr(spec, f.name)
        if f.name in ("format", "scale_format"):
            v = None if v is None else v.name
        d[f.name] = list(v) if isinstance(v, tuple) else v
    return d


def _spec_from_json(v, site: str = "?"):
    if v is None or (isinstance(v, str) and v.lower() in ("none", "fp32")):
        return None  # TOML has no null: "none" keeps a site in FP32
    if isinstance(v, str):
        return v
    if isinstance(v, dict):
        names = [f.name for f in dataclasses.fields(QuantSpec)]
        bad = sorted(set(v) - set(names))
        if bad:
            close = difflib.get_close_matches(bad[0], names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"site {site!r}: unknown QuantSpec field(s) {bad}{hint}; "
                             f"fields: {', '.join(names)}")
        return QuantSpec(**v)
    raise TypeError(f"site {site!r}: a spec must be a recipe name, a QuantSpec table or null, "
                    f"got {v!r}")


#: QuantConfig.options: name -> (what it needs, check)
OPTIONS = ("threshold", "alpha", "promote_every", "accumulator_bits", "act_order", "damp",
           "n_grid", "clip", "calibration_tokens")
#: How weights are rounded: None (round to nearest, the recipe itself), GPTQ or AWQ
#: (:mod:`fpsim.quant.gptq`, :mod:`fpsim.quant.awq`, run by :mod:`fpsim.models.ptq`).
WEIGHT_ALGORITHMS = (None, "gptq", "awq")
#: options of each weight algorithm
_ALGORITHM_OPTIONS = {"act_order": "gptq", "damp": "gptq", "n_grid": "awq", "clip": "awq"}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_))


def instruction_of(acc):
    """The :class:`fpsim.mma.Instruction` an accumulator spelled ``"arch:op:qualifier"`` names
    (``"Hopper:wgmma:m64n256k32.f32.e4m3.e4m3"``), or None for the other accumulator names."""
    if not isinstance(acc, str) or ":" not in acc:
        return None
    parts = acc.split(":")
    if len(parts) != 3:
        raise ValueError(f"accumulator {acc!r}: a matrix instruction is spelled "
                         "'arch:op:qualifier', e.g. 'Hopper:wgmma:m64n256k32.f32.e4m3.e4m3'")
    from .. import mma

    try:
        return mma.instruction(*parts)
    except ValueError as e:
        raise ValueError(f"accumulator {acc!r}: {e}") from None


def _check_options(cfg) -> None:
    opts = cfg.options
    if not isinstance(opts, dict):
        raise TypeError(f"options must be a dict, got {type(opts).__name__}")
    accs = {a for a in [cfg.accumulator, *cfg.accumulators.values()]
            if a is not None and a != "fp32"}
    for key, v in opts.items():
        if key not in OPTIONS:
            close = difflib.get_close_matches(str(key), OPTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown option {key!r}{hint}; options: {', '.join(OPTIONS)}")
        if key in _ALGORITHM_OPTIONS or key == "calibration_tokens":
            need = _ALGORITHM_OPTIONS.get(key)
            if (need is None and cfg.weight_algorithm is None) or (
                    need is not None and cfg.weight_algorithm != need):
                raise ValueError(f"option {key!r} applies only with weight_algorithm="
                                 f"{need or 'gptq or awq'!r}, not {cfg.weight_algorithm!r}")
            if key in ("act_order", "clip"):
                if not isinstance(v, (bool, np.bool_)):
                    raise TypeError(f"option {key!r} must be True or False, got {v!r}")
            elif key == "damp":
                if not _is_real(v) or not 0 <= v < 1:
                    raise ValueError(f"option 'damp' must be a number in [0, 1), got {v!r}")
            elif not _is_int(v) or v < 1:
                raise ValueError(f"option {key!r} must be a positive int, got {v!r}")
            continue
        if key in ("threshold", "alpha"):
            mode = "llm_int8" if key == "threshold" else "smoothquant"
            if cfg.linear_mode != mode:
                raise ValueError(f"option {key!r} applies only with linear_mode={mode!r}, "
                                 f"not {cfg.linear_mode!r}")
            if not _is_real(v):
                raise TypeError(f"option {key!r} must be a number, got {v!r}")
            if key == "alpha" and not 0 <= v <= 1:
                raise ValueError(f"option 'alpha' must lie in [0, 1], got {v!r}")
            if key == "threshold" and not v >= 0:
                raise ValueError(f"option 'threshold' must be >= 0, got {v!r}")
        else:
            if not accs:
                raise ValueError(f"option {key!r} applies only with an accumulator "
                                 "(accumulator= or accumulators=), and this config has none")
            if not _is_int(v):
                raise TypeError(f"option {key!r} must be an int, got {v!r}")
            if key == "accumulator_bits" and not accs <= {"tensorcore", "aligned_truncation"}:
                raise ValueError("option 'accumulator_bits' applies only to the 'tensorcore' "
                                 f"accumulator, not {sorted(accs)}")
            if key == "promote_every":
                for acc in accs:
                    inst = instruction_of(acc)
                    if inst is not None and (v <= 0 or v % inst.k):
                        raise ValueError(f"option 'promote_every' must be a positive multiple "
                                         f"of the instruction's k={inst.k} for {acc!r}, "
                                         f"got {v!r}")


def _check_layer_index(i, what: str) -> int:
    if not _is_int(i):
        raise TypeError(f"{what} must be ints (layer indices, negative from the end), "
                        f"got {i!r}")
    return int(i)


@dataclass(frozen=True)
class QuantConfig:
    """Which QuantSpec applies at each site, with per-layer overrides and exclusions.

    Parameters
    ----------
    sites : dict
        Site name -> QuantSpec, recipe name or None (left in FP32).
    layers : dict
        Layer index -> {site: spec} overriding ``sites`` for that layer.
    exclude_layers : tuple of int
        Layers kept entirely in FP32 (negative indices count from the end).
    accumulator : str or None
        Accumulator of every linear (see :func:`fpsim.qmatmul`), or a GPU matrix
        instruction spelled ``"arch:op:qualifier"`` (:mod:`fpsim.mma`); None is plain FP32
        BLAS.
    accumulators : dict
        Per site accumulator overrides: a linear site, or attention's matmuls ``attn.qk``
        (``q @ k^T``) and ``attn.pv`` (``probs @ v``), which run on an accumulator only when
        named here (Llama models).  On an instruction, a matmul's operand sites must be
        quantized to the instruction's input types, with scales constant along K.
    linear_mode : str
        How the linears compute: one of ``LINEAR_MODES``.
    options : dict
        ``threshold`` (``llm_int8``), ``alpha`` (``smoothquant``), ``promote_every`` and
        ``accumulator_bits`` (with an accumulator; bits for ``tensorcore`` only). Unknown or
        inapplicable options are errors.
    delayed : dict or None
        Transformer Engine delayed scaling of the activations (history_len, algo, margin).
    name : str
        Preset name, for reports.
    description : str
    rotation : None, "hadamard" or "online_hadamard"
        ``"hadamard"``, QuaRot: a seeded random Hadamard rotation of a Llama's residual
        stream folded into its weights (RMSNorm scales absorbed), plus the online Hadamard
        before ``down``; the FP32 model's outputs do not change.  ``"online_hadamard"``, any
        model: every quantized linear computes ``Q(x R) @ Q(R^T W) + b`` with a fixed random
        Hadamard ``R`` of its input width (:mod:`fpsim.models.rotation`).
    weight_algorithm : None, "gptq" or "awq"
        How the linears' weights are rounded to their recipe: None rounds each to nearest;
        ``"gptq"`` (options ``act_order``, ``damp``) and ``"awq"`` (options ``n_grid``,
        ``clip``) run on calibration text when the model is built, layer after layer
        (option ``calibration_tokens``; :mod:`fpsim.models.ptq`).  Needs
        ``linear_mode="fake_quant"``.
    portable : bool
        The config names the sites of several models (as the presets do); each model uses
        those it has. When False (the default for your own configs), a model refuses a config
        that names a site it does not have, so that nothing silently stays in FP32.

    Notes
    -----
    Layer indices (the keys of ``layers`` and the entries of ``exclude_layers``) may be
    negative, counting from the end; a model with n layers refuses indices below -n or
    above n - 1.

    Examples
    --------
    >>> cfg = QuantConfig(sites={"q": "int8_channel", "q.input": "int8_token"})
    >>> cfg.spec_for("q", 0).format.name
    'int8'
    """

    sites: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)
    exclude_layers: tuple = ()
    accumulator: Any = None
    accumulators: dict = field(default_factory=dict)
    linear_mode: str = "fake_quant"
    options: dict = field(default_factory=dict)
    delayed: dict | None = None
    name: str = "custom"
    description: str = ""
    portable: bool = False
    rotation: Any = None
    weight_algorithm: Any = None

    def __post_init__(self):
        for fname, types, what in [("sites", dict, "a dict"), ("layers", dict, "a dict"),
                                   ("accumulators", dict, "a dict"),
                                   ("linear_mode", str, "a str"), ("name", str, "a str"),
                                   ("description", str, "a str")]:
            if not isinstance(getattr(self, fname), types):
                raise TypeError(f"{fname} must be {what}, got {getattr(self, fname)!r}")
        if not isinstance(self.portable, (bool, np.bool_)):
            raise TypeError(f"portable must be True or False, got {self.portable!r}")
        if self.rotation not in (None, "hadamard", "online_hadamard"):
            raise ValueError(f"rotation must be None, 'hadamard' (QuaRot's random Hadamard "
                             f"rotation of a Llama's residual stream) or 'online_hadamard' "
                             f"(a random Hadamard at every quantized linear's input), got "
                             f"{self.rotation!r}")
        if self.weight_algorithm not in WEIGHT_ALGORITHMS:
            raise ValueError(f"weight_algorithm must be None, 'gptq' or 'awq', got "
                             f"{self.weight_algorithm!r}")
        if self.weight_algorithm is not None and self.linear_mode != "fake_quant":
            raise ValueError(f"weight_algorithm={self.weight_algorithm!r} needs "
                             f"linear_mode='fake_quant', not {self.linear_mode!r}")
        if self.accumulator is not None and not isinstance(self.accumulator, str):
            raise TypeError(f"accumulator must be a name (str) or None, got {self.accumulator!r}")
        for s, a in self.accumulators.items():
            if not isinstance(a, str):
                raise TypeError(f"accumulators[{s!r}] must be a name (str), got {a!r}")
        if self.delayed is not None and not isinstance(self.delayed, dict):
            raise TypeError(f"delayed must be a dict or None, got {self.delayed!r}")
        if isinstance(self.exclude_layers, (str, bytes)) or not isinstance(
                self.exclude_layers, (list, tuple)):
            raise TypeError(f"exclude_layers must be a list or tuple of ints, "
                            f"got {self.exclude_layers!r}")
        for i in self.exclude_layers:
            _check_layer_index(i, "exclude_layers")
        for layer, over in self.layers.items():
            _check_layer_index(layer, "layers keys")
            if not isinstance(over, dict):
                raise TypeError(f"layers[{layer}] must be a dict site -> spec, got {over!r}")
        for spec_map, where in [(self.sites, ""), *((o, f"layers[{k}] ")
                                                   for k, o in self.layers.items())]:
            for site, v in spec_map.items():
                if v is not None and not isinstance(v, (str, QuantSpec)):
                    raise TypeError(f"{where}site {site!r}: a spec must be a QuantSpec, a recipe "
                                    f"name or None, got {v!r}")
        if self.linear_mode not in LINEAR_MODES:
            raise ValueError(f"linear_mode must be one of {', '.join(LINEAR_MODES)}, "
                             f"got {self.linear_mode!r}")
        if self.delayed is not None:
            bad = set(self.delayed) - {"history_len", "algo", "margin"}
            if bad:
                raise ValueError(f"unknown delayed-scaling option(s) {sorted(bad)}; allowed: "
                                 "history_len, algo, margin")
        for s in self.sites:
            _check_site(s)
        for layer, over in self.layers.items():
            if not isinstance(layer, int):
                raise TypeError(f"layers keys must be ints, got {layer!r}")
            for s in over:
                _check_site(s)
        for s in self.accumulators:
            _check_site(s, "accumulator site", SITES + MATMUL_SITES)
        for acc in [self.accumulator, *self.accumulators.values()]:
            instruction_of(acc)  # a malformed instruction spelling fails here
        _check_options(self)
        resolved = {s: (None if v is None else resolve_spec(v)) for s, v in self.sites.items()}
        object.__setattr__(self, "sites", resolved)
        object.__setattr__(self, "layers", {
            k: {s: (None if v is None else resolve_spec(v)) for s, v in over.items()}
            for k, over in self.layers.items()})
        object.__setattr__(self, "exclude_layers", tuple(int(i) for i in self.exclude_layers))
        object.__setattr__(self, "portable", bool(self.portable))

    def spec_for(self, site: str, layer: int | None, n_layers: int | None = None):
        """The QuantSpec at ``site`` in ``layer`` (None: FP32).

        Negative layer indices in the config count from the end when ``n_layers`` is given.
        """
        def norm(i):
            return i % n_layers if (n_layers and i < 0) else i

        if layer is not None and self.exclude_layers:
            if layer in {norm(i) for i in self.exclude_layers}:
                return None
        if layer is not None:
            for k, over in self.layers.items():
                if norm(k) == layer and site in over:
                    return over[site]
        return self.sites.get(site)

    def check_model(self, *, sites, n_layers: int | None = None) -> None:
        """Raise ValueError if the config does not fit a model with these sites and layers.

        A site the config quantizes but the model does not have is an error unless the
        config is ``portable``; a layer index outside ``[-n_layers, n_layers)`` always is.

        Examples
        --------
        >>> QuantConfig(sites={"gate": "int8"}).check_model(sites=("q", "k"), n_layers=6)
        Traceback (most recent call last):
        ...
        ValueError: QuantConfig 'custom' quantizes site(s) 'gate' that this model does not have (it has q, k); remove them, or set portable=True to skip sites a model lacks
        """
        if not self.portable:
            named = {s for s, v in self.sites.items() if v is not None}
            named |= {s for o in self.layers.values() for s, v in o.items() if v is not None}
            named |= {s if s in MATMUL_SITES else s.split(".")[0] for s in self.accumulators}
            missing = sorted(s for s in named if s not in sites)
            if missing:
                raise ValueError(
                    f"QuantConfig {self.name!r} quantizes site(s) "
                    f"{', '.join(repr(s) for s in missing)} that this model does not have "
                    f"(it has {', '.join(sites)}); remove them, or set portable=True to skip "
                    "sites a model lacks")
        if n_layers is not None:
            for what, idx in [("layers key", list(self.layers)),
                              ("exclude_layers entry", list(self.exclude_layers))]:
                for i in idx:
                    if not -n_layers <= i < n_layers:
                        raise ValueError(f"QuantConfig {self.name!r}: {what} {i} is outside "
                                         f"[{-n_layers}, {n_layers - 1}] for a model with "
                                         f"{n_layers} layers")

    def accumulator_for(self, site: str):
        return self.accumulators.get(site, self.accumulator)

    # ---- files ------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "sites": {s: _spec_to_json(v) for s, v in self.sites.items()},
            "layers": {str(k): {s: _spec_to_json(v) for s, v in o.items()}
                       for k, o in self.layers.items()},
            "exclude_layers": list(self.exclude_layers),
            "accumulator": self.accumulator,
            "accumulators": dict(self.accumulators),
            "linear_mode": self.linear_mode,
            "options": dict(self.options),
            "delayed": None if self.delayed is None else dict(self.delayed),
            "portable": self.portable,
            "rotation": self.rotation,
            "weight_algorithm": self.weight_algorithm,
        }

    @classmethod
    def from_dict(cls, d: dict) -> QuantConfig:
        """The config of a dict as :meth:`to_dict` (or a JSON/TOML file) writes it."""
        if not isinstance(d, dict):
            raise TypeError(f"a QuantConfig must be a dict (a JSON object or TOML table), "
                            f"got {type(d).__name__}")
        allowed = {"name", "description", "sites", "layers", "exclude_layers", "accumulator",
                   "accumulators", "linear_mode", "options", "delayed", "portable",
                   "rotation", "weight_algorithm"}
        bad = set(d) - allowed
        if bad:
            raise ValueError(f"unknown QuantConfig key(s) {sorted(bad)}; allowed: {sorted(allowed)}")
        for key in ("sites", "layers", "accumulators", "options"):
            if not isinstance(d.get(key, {}), dict):
                raise TypeError(f"{key} must be a dict (JSON object / TOML table), "
                                f"got {d[key]!r}")

        def layer_key(k):
            if isinstance(k, str) and k.strip().lstrip("-").isdigit():
                return int(k)
            if _is_int(k):
                return int(k)
            raise ValueError(f"layers key {k!r} is not a layer index (an int, negative from "
                             "the end)")

        layers = {}
        for k, o in d.get("layers", {}).items():
            if not isinstance(o, dict):
                raise TypeError(f"layers[{k!r}] must be a dict site -> spec, got {o!r}")
            layers[layer_key(k)] = {s: _spec_from_json(v, s) for s, v in o.items()}
        excl = d.get("exclude_layers", ())
        if not isinstance(excl, (list, tuple)):
            raise TypeError(f"exclude_layers must be a list of ints, got {excl!r}")
        return cls(
            sites={s: _spec_from_json(v, s) for s, v in d.get("sites", {}).items()},
            layers=layers,
            exclude_layers=tuple(excl),
            accumulator=d.get("accumulator"),
            accumulators=dict(d.get("accumulators", {})),
            linear_mode=d.get("linear_mode", "fake_quant"),
            options=dict(d.get("options", {})),
            delayed=d.get("delayed"),
            name=d.get("name", "custom"),
            description=d.get("description", ""),
            portable=d.get("portable", False),
            rotation=d.get("rotation"),
            weight_algorithm=d.get("weight_algorithm"),
        )

    def save(self, path) -> None:
        """Write the config as JSON (``.json``) or TOML (``.toml``)."""
        path = pathlib.Path(path)
        d = self.to_dict()
        if path.suffix == ".toml":
            path.write_text(_to_toml(d))
        else:
            path.write_text(json.dumps(d, indent=2))

    @classmethod
    def load(cls, path) -> QuantConfig:
        """Read a config written by :meth:`save`: TOML for ``.toml``, else JSON.

        Raises
        ------
        FileNotFoundError
            No such file.
        ValueError
            A YAML file, text that does not parse, or a config that is not valid; the
            message names the file.
        """
        path = pathlib.Path(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            raise ValueError(f"{path}: YAML is not supported; write the config as .json or "
                             ".toml (QuantConfig.save writes both)")
        text = path.read_text()
        if path.suffix.lower() == ".toml":
            import tomllib

            try:
                d = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"{path}: not valid TOML: {e}") from None
        else:
            try:
                d = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno} column "
                                 f"{e.colno}); fpsim reads .json as JSON and .toml as TOML"
                                 ) from None
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None


def _toml_value(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def _to_toml(d: dict) -> str:
    """TOML for a config dict (None values are left out: TOML has no null)."""
    lines = []
    for k in ("name", "description", "accumulator", "exclude_layers", "linear_mode", "portable",
              "rotation", "weight_algorithm"):
        if d.get(k) is not None:
            lines.append(f"{k} = {_toml_value(d[k])}")

    def table(prefix, mapping):
        simple = {k: v for k, v in mapping.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in mapping.items() if isinstance(v, dict)}
        lines.append(f"\n[{prefix}]")
        for k, v in simple.items():
            lines.append(f"{json.dumps(k)} = {_toml_value('none' if v is None else v)}")
        for k, v in nested.items():
            if all(not isinstance(x, dict) for x in v.values()) and k not in ("layers",):
                lines.append(f"\n[{prefix}.{json.dumps(k)}]")
                for kk, vv in v.items():
                    if vv is not None:
                        lines.append(f"{kk} = {_toml_value(vv)}")
            else:
                table(f"{prefix}.{json.dumps(k)}", v)

    table("sites", d.get("sites", {}))
    if d.get("options"):
        table("options", d["options"])
    if d.get("delayed"):
        table("delayed", d["delayed"])
    if d.get("accumulators"):
        table("accumulators", d["accumulators"])
    for layer, over in d.get("layers", {}).items():
        table(f"layers.{json.dumps(layer)}", over)
    return "\n".join(lines) + "\n"
