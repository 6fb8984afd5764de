"""Sphinx directives that document fpsim's public API from each module's ``__all__``.

``api-module``
    ``{api-module} fpsim.quant`` documents the module docstring, then every name in
    the module's ``__all__`` that is *defined* there (classes, exceptions, functions and
    data, in ``__all__`` order) with autodoc.  Names a module re-exports from another
    are documented once, in their home module.  A module that does not exist yet is
    left out with a note (the docs build before every planned module is written); a
    module that exists but fails to import is an error.
``api-toplevel``
    A table of ``fpsim.__all__``: each name, a link to where it is documented and the
    first line of its docstring.

Nothing is listed by hand, so a new public function appears in the reference as soon
as it is added to ``__all__``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types

from _rst import parse_rst
from docutils import nodes
from sphinx.util.docutils import SphinxDirective

_LONG_VALUE = 160  # autodata values with a longer repr are shown without their value


def _home(modname: str, name: str, obj) -> str:
    """The module that defines ``obj`` (for data: the deepest fpsim module holding it)."""
    if inspect.isclass(obj) or inspect.isroutine(obj):
        return obj.__module__
    holders = [m for m, mod in list(sys.modules.items())
               if (m == "fpsim" or m.startswith("fpsim.")) and mod is not None
               and getattr(mod, name, None) is obj]
    return max(holders, key=len) if holders else modname


def _first_line(obj, home: str, name: str) -> str:
    """First paragraph of the docstring (for data: of its ``#:`` comment)."""
    if inspect.isclass(obj) or inspect.isroutine(obj) or isinstance(obj, types.ModuleType):
        doc = inspect.getdoc(obj) or ""
    else:
        doc = _attr_doc(home, name)
    return doc.strip().split("\n\n")[0].replace("\n", " ")


def _attr_doc(modname: str, name: str) -> str:
    """The ``#:`` comment of a module-level name ("" if it has none)."""
    from sphinx.pycode import ModuleAnalyzer

    return "\n".join(ModuleAnalyzer.for_module(modname).find_attr_docs().get(("", name), []))


class ApiModule(SphinxDirective):
    """autodoc of the names a module defines and lists in ``__all__``."""

    required_arguments = 1
    has_content = False

    def run(self):
        modname = self.arguments[0]
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as err:
            if err.name != modname:
                raise
            return [nodes.paragraph(text=f"{modname} is not written yet.")]
        lines = [f".. automodule:: {modname}", "   :no-members:", ""]
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if isinstance(obj, types.ModuleType) or _home(modname, name, obj) != modname:
                continue
            target = f"{modname}.{name}"
            if inspect.isclass(obj) and issubclass(obj, BaseException):
                lines += [f".. autoexception:: {target}", ""]
            elif inspect.isclass(obj):
                lines += [f".. autoclass:: {target}", ""]
            elif inspect.isroutine(obj):
                lines += [f".. autofunction:: {target}", ""]
            elif _attr_doc(modname, name):
                lines += [f".. autodata:: {target}"]
                if len(repr(obj)) > _LONG_VALUE:
                    lines += ["   :no-value:"]
                lines += [""]
            else:  # no ``#:`` comment: autodoc would show the docstring of the value's type
                lines += [f".. py:data:: {name}", f"   :module: {modname}"]
                if len(repr(obj)) <= _LONG_VALUE:
                    lines += [f"   :value: {obj!r}"]
                lines += [""]
        return parse_rst(self, lines, f"api-module {modname}")


class ApiTopLevel(SphinxDirective):
    """A table of the names ``import fpsim`` gives, linked to their documentation."""

    has_content = False

    def run(self):
        import fpsim

        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 30 70", "",
                 "   * - name", "     - what it is"]
        for name in fpsim.__all__:
            obj = getattr(fpsim, name)
            if isinstance(obj, types.ModuleType):
                ref = f":py:mod:`fpsim.{name} <{obj.__name__}>`"
                summary = _first_line(obj, obj.__name__, name)
            else:
                home = _home("fpsim", name, obj)
                ref = f":py:obj:`fpsim.{name} <{home}.{name}>`"
                summary = _first_line(obj, home, name)
            lines += [f"   * - {ref}", f"     - {summary}" if summary else "     -"]
        return parse_rst(self, lines, "api-toplevel")


def setup(app):
    app.add_directive("api-module", ApiModule)
    app.add_directive("api-toplevel", ApiTopLevel)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
