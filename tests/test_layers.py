"""The package's layers: every import in fpsim (module level and inside functions) goes down.

The map (also in ``fpsim/__init__.py`` and ``docs/api.md``), lowest first::

    formats, rounding -> _kernels -> codec, dispatch -> p3109_projection -> quant -> metrics
        -> measure, strategies -> plotting -> data -> models -> qat -> app

``reference`` (the pure-Python oracles) stands beside the stack: it may use the format
and spec definitions but never the code it checks (codec, dispatch, _kernels), and only
the tests import it.  Private names (``_x``) and private modules never cross a layer,
except the modules of ``_kernels``, the kernel layer itself.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "fpsim"

LAYERS = [
    ("formats", "rounding"),
    ("_kernels",),
    ("codec", "dispatch"),
    ("p3109_projection",),  # P3109 projection specifications, on codec's casts
    ("quant",),
    ("mma",),  # the public face of quant.mma: ``from fpsim import mma``
    ("metrics",),
    ("measure", "strategies"),
    ("plotting",),
    ("data",),
    ("models",),
    ("qat",),  # quantization-aware training: backward passes over the models' layers
    ("app",),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
#: the oracles: below quant's rank for what they may import, but never the checked code
REFERENCE_MAY_NOT = {"codec", "dispatch", "_kernels"}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path):
    """(line, imported module, imported name or None) for every import in the file."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "fpsim":
                    yield node.lineno, a.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "fpsim":
                continue
            for a in node.names:
                # ``from fpsim.quant import blocks``: the name may be a module
                sub = f"{target}.{a.name}"
                is_module = (ROOT.parent / (sub.replace(".", "/") + ".py")).exists() or (
                    ROOT.parent / sub.replace(".", "/")).is_dir()
                yield node.lineno, (sub if is_module else target), (None if is_module else a.name)


def _layer(module: str) -> str | None:
    """The top-level part of fpsim a module belongs to ('quant', 'codec', ...)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _private(module: str, name: str | None) -> bool:
    parts = module.split(".")[1:]
    if parts and parts[0] == "_kernels":
        parts = parts[1:]  # the kernel layer's own modules are its interface
    return any(p.startswith("_") and not p.startswith("__") for p in parts) or (
        name is not None and name.startswith("_") and not name.startswith("__"))


def edges():
    for path in sorted(ROOT.rglob("*.py")):
        src = _module_name(path)
        for line, target, name in _imports(path):
            yield src, f"{path.relative_to(ROOT.parent)}:{line}", target, name


def violations():
    bad = []
    for src, where, target, name in edges():
        s, t = _layer(src), _layer(target)
        what = f"{where}: {src} imports {target}" + (f".{name}" if name else "")
        if t in ("_compat", "__main__"):
            continue
        if s is None or s in ("__main__", "_compat"):
            # the package's face: fpsim/__init__ re-exports the library layers only;
            # models, data, app and the rest load lazily through __getattr__
            if s is None and t is not None and RANK.get(t, 99) > RANK["measure"]:
                bad.append(what + " (fpsim/__init__ must not import a layer above measure)")
            continue
        if t is None and name == "__version__":
            continue
        if t is None:
            bad.append(what + " (import the module that defines it, not the package)")
            continue
        if s == t:
            continue
        if s == "reference":
            if t in REFERENCE_MAY_NOT or RANK.get(t, 99) > RANK["quant"]:
                bad.append(what + " (an oracle must not use the code it checks)")
            continue
        if t == "reference":
            bad.append(what + " (only the tests import the oracles)")
            continue
        if s not in RANK or t not in RANK:
            bad.append(what + f" (a module outside the layer map: {s if s not in RANK else t})")
            continue
        if RANK[t] > RANK[s]:
            bad.append(what + f" (upward: {s} is below {t})")
        elif RANK[t] == RANK[s] and s != t and not {s, t} <= {"codec", "dispatch"}:
            bad.append(what + f" (sideways: {s} and {t} share a layer)")
        elif _private(target, name) and not {s, t} <= {"codec", "dispatch"}:
            bad.append(what + " (a private name crosses a layer)")
    return bad


def test_every_import_goes_down_the_layers():
    assert violations() == []


def test_the_map_covers_every_module():
    tops = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
            if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    tops -= {"__init__", "__main__", "_compat", "reference"}
    assert tops <= set(RANK), sorted(tops - set(RANK))


def test_numba_is_imported_only_in_kernels():
    for path in sorted(ROOT.rglob("*.py")):
        if "_kernels" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "numba" for n in names), path


def test_matplotlib_is_imported_only_in_plotting():
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "plotting.py":
            continue
        src = path.read_text()
        tree = ast.parse(src)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                    node.module or ""]
                assert not any(n.split(".")[0] == "matplotlib" for n in names), path


def test_plotting_only_draws():
    """plotting imports formats, metrics and measure only: every quantization it shows is
    computed by fpsim.measure (issue 10)."""
    used = {_layer(target) for _, target, _ in _imports(ROOT / "plotting.py")}
    assert used <= {"formats", "metrics", "measure"}, used


@pytest.mark.parametrize("source, expected", [
    ("from ..models import load", "upward"),
    ("from ..codec import _as_float_array", "private"),
    ("from ..app.tables import format_table", "upward"),
])
def test_the_checker_catches_bad_edges(tmp_path, source, expected):
    """A forbidden edge planted in a copy of a quant module is reported."""
    fake_root = tmp_path / "fpsim"
    (fake_root / "quant").mkdir(parents=True)
    (fake_root / "__init__.py").write_text("")
    (fake_root / "quant" / "__init__.py").write_text("")
    (fake_root / "quant" / "bad.py").write_text(source + "\n")
    for name in ("models", "app"):
        (fake_root / name).mkdir()
        (fake_root / name / "__init__.py").write_text("")
    (fake_root / "app" / "tables.py").write_text("")
    (fake_root / "codec.py").write_text("")
    globals()["ROOT"], old = fake_root, ROOT
    try:
        found = violations()
    finally:
        globals()["ROOT"] = old
    assert len(found) == 1 and expected in found[0], found
