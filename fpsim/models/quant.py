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

from ..scaling import QuantSpec, fake_quantize, resolve_spec

__all__ = ["LINEAR_SITES", "ACT_SITES", "SITES", "QuantConfig", "QuantContext", "PRESETS",
           "preset", "SiteStats"]

#: How a linear layer computes: fake-quantized operands (any QuantSpec), LLM.int8(),
#: SmoothQuant, or the numerics of torch.ao.quantization.quantize_dynamic.
LINEAR_MODES = ("fake_quant", "llm_int8", "smoothquant", "torch_dynamic_int8")

LINEAR_SITES = ("q", "k", "v", "o", "gate", "up", "down", "ffn_in", "ffn_out", "lm_head",
                "embed")
ACT_SITES = tuple(f"{s}.input" for s in LINEAR_SITES if s != "embed") + (
    "attn.q", "attn.k", "attn.v", "attn.probs", "kv_cache")
SITES = LINEAR_SITES + ACT_SITES


def _check_site(site: str, where: str = "site"):
    if site not in SITES:
        close = difflib.get_close_matches(site, SITES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown {where} {site!r}{hint}; sites: {', '.join(SITES)}")


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
OPTIONS = ("threshold", "alpha", "promote_every", "accumulator_bits")


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_))


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
            if key == "accumulator_bits" and accs != {"tensorcore"}:
                raise ValueError("option 'accumulator_bits' applies only to the 'tensorcore' "
                                 f"accumulator, not {sorted(accs)}")


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
        Accumulator of every matmul (see :func:`fpsim.qmatmul`); None is plain FP32 BLAS.
    accumulators : dict
        Per linear site accumulator overrides.
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

    def __post_init__(self):
        for fname, types, what in [("sites", dict, "a dict"), ("layers", dict, "a dict"),
                                   ("accumulators", dict, "a dict"),
                                   ("linear_mode", str, "a str"), ("name", str, "a str"),
                                   ("description", str, "a str")]:
            if not isinstance(getattr(self, fname), types):
                raise TypeError(f"{fname} must be {what}, got {getattr(self, fname)!r}")
        if not isinstance(self.portable, (bool, np.bool_)):
            raise TypeError(f"portable must be True or False, got {self.portable!r}")
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
            _check_site(s, "accumulator site")
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
            named |= {s.split(".")[0] for s in self.accumulators}
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
        }

    @classmethod
    def from_dict(cls, d: dict) -> QuantConfig:
        """The config of a dict as :meth:`to_dict` (or a JSON/TOML file) writes it."""
        if not isinstance(d, dict):
            raise TypeError(f"a QuantConfig must be a dict (a JSON object or TOML table), "
                            f"got {type(d).__name__}")
        allowed = {"name", "description", "sites", "layers", "exclude_layers", "accumulator",
                   "accumulators", "linear_mode", "options", "delayed", "portable"}
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
    for k in ("name", "description", "accumulator", "exclude_layers", "linear_mode", "portable"):
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


# ---- presets --------------------------------------------------------------
def _w8a8(weight, act, linears, **kw):
    sites = {s: weight for s in linears}
    sites.update({f"{s}.input": act for s in linears})
    return dict(sites=sites, **kw)


_LINEARS = ("q", "k", "v", "o", "gate", "up", "down", "ffn_in", "ffn_out", "lm_head")

PRESETS: dict[str, dict] = {
    "fp32": dict(description="no quantization (the reference)"),
    "bf16": dict(**_w8a8("bfloat16", "bfloat16", _LINEARS),
                 description="weights and linear inputs cast to bfloat16 (plain cast)"),
    "fp16": dict(**_w8a8("float16", "float16", _LINEARS),
                 description="weights and linear inputs cast to float16 (plain cast)"),
    "fp8_e4m3": dict(**_w8a8("float8_e4m3fn", "float8_e4m3fn", _LINEARS),
                     description="FP8 E4M3 W8A8, per-tensor dynamic amax scaling"),
    "fp8_e5m2": dict(**_w8a8("float8_e5m2", "float8_e5m2", _LINEARS),
                     description="FP8 E5M2 W8A8, per-tensor dynamic amax scaling"),
    "fp8_deepseek": dict(**_w8a8("fp8_deepseek_weight", "fp8_deepseek_activation", _LINEARS),
                         accumulator="tensorcore", options=dict(promote_every=128),
                         description="DeepSeek-V3 FP8: 128x128 weight blocks, 1x128 activation "
                                     "tiles, 14-bit tensor-core accumulation with promotion "
                                     "every 128"),
    "fp8_e4m3_delayed": dict(**_w8a8("float8_e4m3fn", "float8_e4m3fn", _LINEARS),
                             delayed=dict(history_len=16, algo="max", margin=0),
                             description="FP8 E4M3 W8A8, Transformer Engine delayed scaling of "
                                         "activations (amax history 16, max, margin 0); "
                                         "per-tensor weights"),
    "llm_int8": dict(linear_mode="llm_int8", options=dict(threshold=6.0),
                     sites={s: "int8" for s in _LINEARS},
                     description="LLM.int8(): vector-wise INT8 with feature columns holding "
                                 "|x| >= 6 kept in float16"),
    "smoothquant": dict(linear_mode="smoothquant", options=dict(alpha=0.5),
                        sites={s: "int8" for s in _LINEARS},
                        description="SmoothQuant (alpha 0.5, smoothing from each call's "
                                    "activations) with per-token INT8 activations and "
                                    "per-channel INT8 weights"),
    "torch_dynamic_int8": dict(linear_mode="torch_dynamic_int8",
                               sites={s: "int8" for s in _LINEARS},
                               description="torch.ao.quantization.quantize_dynamic on Linear "
                                           "layers: per-tensor symmetric int8 weights (scale "
                                           "amax/127.5), activations per call per tensor affine "
                                           "uint8 with reduce_range (0..127), int32 "
                                           "accumulation, float output"),
    "int8": dict(**_w8a8("int8_channel", "int8_token", _LINEARS),
                 description="INT8 W8A8: per-channel weights, per-token activations"),
    "int8_tensor": dict(**_w8a8("int8", "int8", _LINEARS),
                        description="INT8 W8A8, per-tensor weights and activations"),
    "int8_weight_only": dict(sites={s: "int8_channel" for s in _LINEARS},
                             description="INT8 per-channel weights, FP32 activations"),
    "mxfp8": dict(**_w8a8("mxfp8_e4m3", "mxfp8_e4m3", _LINEARS),
                  description="OCP MXFP8 (E4M3, k=32, floor scale rule) weights and activations"),
    "mxfp6": dict(**_w8a8("mxfp6_e2m3", "mxfp6_e2m3", _LINEARS),
                  description="OCP MXFP6 (E2M3) weights and activations"),
    "mxfp4": dict(**_w8a8("mxfp4_e2m1", "mxfp4_e2m1", _LINEARS),
                  description="OCP MXFP4 (E2M1) weights and activations"),
    "nvfp4": dict(**_w8a8("nvfp4", "nvfp4", _LINEARS),
                  description="NVFP4: E2M1, E4M3 scale per 16, FP32 tensor scale"),
}


def preset(name: str) -> QuantConfig:
    """The QuantConfig of a named preset (see :data:`PRESETS`).

    Examples
    --------
    >>> preset("int8").spec_for("up.input", 3).granularity
    'token'
    """
    if isinstance(name, QuantConfig):
        return name
    if not isinstance(name, str):
        raise TypeError(f"quant must be a QuantConfig, a preset name or None, got {type(name).__name__}")
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown preset {name!r}{hint}; presets: {', '.join(PRESETS)}")
    kw = dict(PRESETS[name])
    return QuantConfig(name=name, portable=True, **kw)


# ---- runtime ----------------------------------------------------------------
@dataclass
class SiteStats:
    """What happened at one site in one layer (accumulated over calls).

    Examples
    --------
    >>> s = SiteStats(calls=1, elements=4, amax=2.0, signal=100.0, noise=1.0)
    >>> s.sqnr_db, SiteStats().sqnr_db
    (20.0, inf)
    """

    calls: int = 0
    elements: int = 0
    amax: float = 0.0
    saturated: int = 0
    underflow: int = 0
    signal: float = 0.0
    noise: float = 0.0

    @property
    def sqnr_db(self) -> float:
        if self.noise == 0:
            return float("inf")
        return float(10 * np.log10(self.signal / self.noise)) if self.signal > 0 else float("-inf")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sqnr_db"] = self.sqnr_db
        return d


class QuantContext:
    """The runtime a forward pass calls at every site (FP32 when ``config`` is None).

    Parameters
    ----------
    config : QuantConfig, preset name or None
    n_layers : int, optional
        The model's layers: negative layer indices count from the end, and indices
        outside ``[-n_layers, n_layers)`` are refused.
    sites : iterable of str, optional
        The sites the model has; a config that is not ``portable`` may quantize only these.
    trace : bool
        Record :class:`SiteStats` per (site, layer).
    rng : seed or Generator, for stochastic rounding.

    Examples
    --------
    >>> ctx = QuantContext("int8")
    >>> ctx.is_fp32, QuantContext().is_fp32, ctx.spec("q", 0).name
    (False, True, 'int8_channel')
    """

    def __init__(self, config=None, *, n_layers: int | None = None, trace: bool = False,
                 rng=None, sites=None):
        self.config = None if config is None else preset(config)
        if self.config is not None and (sites is not None or n_layers is not None):
            self.config.check_model(sites=tuple(SITES if sites is None else sites),
                                    n_layers=n_layers)
        self.n_layers = n_layers
        self.tracing = trace
        self.trace: dict[tuple[str, int | None], SiteStats] = {}
        self.rng = rng
        self._weights: dict[tuple[str, int | None, int], np.ndarray] = {}
        self._delayed: dict = {}

    @property
    def is_fp32(self) -> bool:
        return self.config is None or (not self.config.sites and self.config.accumulator is None
                                       and not self.config.layers)

    def spec(self, site: str, layer: int | None):
        if self.config is None:
            return None
        return self.config.spec_for(site, layer, self.n_layers)

    def _traced(self, site, layer, x, spec):
        """Quantize x and record its statistics.

        ``saturated`` counts elements clipped to the format's range: for MX specs those
        beyond their block's range (``|x| > X * max_elem``), otherwise those beyond the
        largest magnitude of the quantized tensor (plus infinities).
        """
        from ..blocks import mx_fake_quantize

        x64 = x.astype(np.float64, copy=False)
        fin = np.isfinite(x64)
        if spec.is_mx:
            xq, scale_codes = mx_fake_quantize(
                x, spec.format, axis=spec.axis, block_size=spec.block_size,
                scale_rule=spec.scale_rule, rounding=spec.rounding, rng=self.rng)
            xq = xq.astype(x.dtype, copy=False)
            k = spec.block_size
            n = x.shape[spec.axis]
            scale = np.ldexp(1.0, scale_codes.astype(np.int64) - 127)
            scale = np.repeat(scale, k, axis=spec.axis).take(np.arange(n), axis=spec.axis)
            with np.errstate(invalid="ignore"):
                saturated = int(np.count_nonzero(np.abs(x64) > scale * spec.format.max))
        else:
            xq = fake_quantize(x, spec, rng=self.rng)
            top = float(np.max(np.abs(xq[np.isfinite(xq)]))) if np.isfinite(xq).any() else 0.0
            saturated = int(np.count_nonzero(np.abs(x64[fin]) > top)) + int(
                np.count_nonzero(np.isinf(x64)))
        st = self.trace.setdefault((site, layer), SiteStats())
        err = xq.astype(np.float64) - x64
        st.calls += 1
        st.elements += x.size
        if fin.any():
            st.amax = max(st.amax, float(np.abs(x64[fin]).max()))
        st.signal += float(np.sum(x64[fin] ** 2))
        st.noise += float(np.sum(err[fin] ** 2))
        st.underflow += int(np.count_nonzero((x64 != 0) & (xq == 0)))
        st.saturated += saturated
        return xq

    def quantize(self, site: str, layer: int | None, x: np.ndarray) -> np.ndarray:
        """Fake-quantize ``x`` at ``site`` (the identity where the config says FP32)."""
        spec = self.spec(site, layer)
        if spec is None:
            return x
        if self.config.delayed is not None and site in ACT_SITES:
            from ..scaling import DelayedScaling

            ds = self._delayed.get((site, layer))
            if ds is None:
                ds = self._delayed[(site, layer)] = DelayedScaling(spec, **self.config.delayed)
            before = ds.overflows
            xq = ds(x)
            if self.tracing:
                st = self.trace.setdefault((site, layer), SiteStats())
                x64 = x.astype(np.float64)
                st.calls += 1
                st.elements += x.size
                st.amax = max(st.amax, float(np.nanmax(np.abs(x64))) if x.size else 0.0)
                st.signal += float(np.sum(x64**2))
                st.noise += float(np.sum((xq - x64) ** 2))
                st.saturated += ds.overflows - before
                st.underflow += int(np.count_nonzero((x64 != 0) & (xq == 0)))
            return xq
        if self.tracing:
            return self._traced(site, layer, x, spec)
        return fake_quantize(x, spec, rng=self.rng)

    act = quantize

    def weight(self, site: str, layer: int | None, w: np.ndarray) -> np.ndarray:
        """The fake-quantized weight at ``site`` (cached per weight array)."""
        spec = self.spec(site, layer)
        if spec is None:
            return w
        key = (site, layer, id(w))
        if key not in self._weights:
            self._weights[key] = self.quantize(site, layer, w)
        return self._weights[key]

    def matmul(self, site: str, layer: int | None, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a @ b`` in the accumulator the config names for ``site`` (BLAS for FP32)."""
        acc = None if self.config is None else self.config.accumulator_for(site)
        if acc is None or acc == "fp32":
            return a @ b
        from ..accumulate import qmatmul

        lead = a.shape[:-1]
        kw = {}
        for opt in ("promote_every", "accumulator_bits"):  # checked by QuantConfig
            if self.config.options.get(opt) is not None:
                kw[opt] = self.config.options[opt]
        out = qmatmul(a.reshape(-1, a.shape[-1]), b, accumulator=acc, **kw)
        return np.asarray(out, dtype=np.float32).reshape(*lead, b.shape[-1])

    def linear(self, site: str, layer: int | None, x: np.ndarray, w: np.ndarray,
               b: np.ndarray | None = None) -> np.ndarray:
        """``x @ w + b`` with w in (in, out) layout, quantized as the config says.

        The weight is quantized with scale groups along its input axis (``axis=0``
        for per-channel / block specs), the activation along its last axis.
        """
        mode = "fake_quant" if self.config is None else self.config.linear_mode
        if mode == "torch_dynamic_int8" and self.spec(site, layer) is not None:
            return self._special_linear(mode, site, layer, x, w, b)  # b inside torch's FMA
        if mode != "fake_quant" and self.spec(site, layer) is not None:
            y = self._special_linear(mode, site, layer, x, w)
            return y if b is None else y + b
        xq = self.act(f"{site}.input", layer, x)
        wspec = self.spec(site, layer)
        if wspec is not None and wspec.granularity != "tensor" and wspec.axis == -1 \
                and not (isinstance(wspec.block_size, tuple)):
            # per output channel / blocks along the reduction (input) axis of a (in, out) weight
            wspec = dataclasses.replace(wspec, axis=0)
        wq = w if wspec is None else self._weight_with(site, layer, w, wspec)
        y = self.matmul(site, layer, xq, wq)
        if b is not None:
            y = y + b
        return y

    def _weight_with(self, site, layer, w, spec):
        key = (site, layer, id(w))
        if key not in self._weights:
            wq = (self._traced(site, layer, w, spec) if self.tracing
                  else fake_quantize(w, spec, rng=self.rng))
            self._weights[key] = np.ascontiguousarray(wq)  # BLAS is fastest on C order
        return self._weights[key]

    def _special_linear(self, mode, site, layer, x, w, b=None):
        from .. import outliers

        opts = self.config.options
        if mode == "llm_int8":
            y = outliers.llm_int8_matmul(x, w, threshold=opts.get("threshold", 6.0))
        elif mode == "smoothquant":
            y = outliers.smoothquant_matmul(x, w, alpha=opts.get("alpha", 0.5))
        else:
            y = torch_dynamic_int8_linear(x, w, b)
        if self.tracing:
            ref = x.astype(np.float64) @ w.astype(np.float64)
            if b is not None:
                ref = ref + b
            st = self.trace.setdefault((f"{site}.output", layer), SiteStats())
            st.calls += 1
            st.elements += y.size
            st.signal += float(np.sum(ref**2))
            st.noise += float(np.sum((y - ref) ** 2))
        return np.asarray(y, dtype=np.float32)


def _fma32(a: np.ndarray, b, c) -> np.ndarray:
    """float32 ``a * b + c`` rounded once (up to a double rounding through float64 in the
    sum, which needs a sum within 2**-29 relative of a float32 tie)."""
    return (a.astype(np.float64) * np.float64(b) + np.asarray(c, np.float64)).astype(np.float32)


def torch_dynamic_int8_linear(x: np.ndarray, w: np.ndarray,
                              b: np.ndarray | None = None) -> np.ndarray:
    """``x @ w (+ b)`` with the numerics of PyTorch's dynamic quantization of nn.Linear.

    ``torch.ao.quantization.quantize_dynamic`` with its default qconfig (fbgemm / x86
    engine), step by step as its kernels do, in float32:

    * weights per-tensor symmetric qint8: scale ``max|w| / 127.5``, ``round(w / scale)``
      (half to even, in float32) clamped to [-128, 127];
    * activations on every call, per tensor, affine quint8 with ``reduce_range``:
      range [0, 127], scale ``(max - min) / 127`` over the range widened to include 0,
      zero point ``-round(min / scale)``, ``round(fma(x, 1 / scale, zero point))``;
    * products summed exactly in int32;
    * output ``fma(float32(acc), float32(s_x * s_w), b)``.

    ``tests/golden/make_torch_dynamic_golden.py`` records torch 2.13's outputs; this
    function reproduces them bit for bit (``tests/test_models_quant.py``).
    """
    w32 = np.asarray(w, dtype=np.float32)
    amax_w = float(np.max(np.abs(w32))) if w32.size else 0.0
    s_w = np.float32(amax_w / 127.5) if amax_w > 0 else np.float32(1.0)
    wq = np.clip(np.rint(w32 / s_w), -128, 127)
    x2 = np.asarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    lo = min(float(x2.min()) if x2.size else 0.0, 0.0)
    hi = max(float(x2.max()) if x2.size else 0.0, 0.0)
    s_x = np.float32((hi - lo) / 127.0) if hi > lo else np.float32(1.0)
    zp = int(np.clip(-np.rint(lo / ((hi - lo) / 127.0)), 0, 127)) if hi > lo else 0
    xq = np.clip(np.rint(_fma32(x2, np.float32(1.0) / s_x, np.float32(zp))), 0, 127)
    acc = (xq.astype(np.float64) - zp) @ wq.astype(np.float64)  # exact: integers < 2**53
    bias = np.float32(0.0) if b is None else np.asarray(b, dtype=np.float32)
    y = _fma32(acc.astype(np.float32), np.float32(s_x * s_w), bias)
    return y.reshape(*x.shape[:-1], w.shape[-1])
