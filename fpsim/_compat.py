"""The module paths of fpsim 0.1 that moved in the layered layout, still importable.

``import fpsim.scaling`` (or ``from fpsim.cli import main``) gives a module that forwards
every attribute to its new home, imported on first use; new code imports the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

#: old module path -> new module path
MOVED = {
    "fpsim.scaling": "fpsim.quant",
    "fpsim.blocks": "fpsim.quant.blocks",
    "fpsim.accumulate": "fpsim.quant.accumulate",
    "fpsim.outliers": "fpsim.quant.outliers",
    "fpsim.cli": "fpsim.app.cli",
    "fpsim.report": "fpsim.app.report",
    "fpsim.evaluate": "fpsim.app.evaluate",
    "fpsim.verify": "fpsim.app.verify",
    "fpsim.bench": "fpsim.app.bench",
    "fpsim.models.quant": "fpsim.models.config",
}


class _Forward(types.ModuleType):
    def __getattr__(self, name):
        return getattr(importlib.import_module(MOVED[self.__name__]), name)

    def __dir__(self):
        return dir(importlib.import_module(MOVED[self.__name__]))


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return _Forward(spec.name, f"Moved to {MOVED[spec.name]}.")

    def exec_module(self, module):
        pass


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
