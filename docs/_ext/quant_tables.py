"""Sphinx directives ``recipe-table`` and ``preset-table``, generated from the code.

``recipe-table``
    Every named recipe of :data:`fpsim.quant.RECIPES` with the QuantSpec it gives
    (``fpsim.recipe(name).describe()``).
``preset-table``
    Every model preset of :data:`fpsim.models.PRESETS` with its description.
"""

from __future__ import annotations

import re

from _rst import parse_rst
from sphinx.util.docutils import SphinxDirective


def _escape(text: str) -> str:
    return re.sub(r"([\\`*_|])", r"\\\1", text)


def _table(directive, header, rows, source):
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {row[0]}")
        lines += [f"     - {cell}" for cell in row[1:]]
    return parse_rst(directive, lines, source)


class RecipeTable(SphinxDirective):
    has_content = False

    def run(self):
        from fpsim.quant import RECIPES, recipe

        rows = [[f"``{name}``", _escape(recipe(name).describe())] for name in RECIPES]
        return _table(self, ["recipe", "QuantSpec"], rows, "recipe-table")


class PresetTable(SphinxDirective):
    has_content = False

    def run(self):
        from fpsim.models import PRESETS

        rows = [[f"``{name}``", _escape(kw.get("description", ""))]
                for name, kw in PRESETS.items()]
        return _table(self, ["preset", "what it quantizes"], rows, "preset-table")


def setup(app):
    app.add_directive("recipe-table", RecipeTable)
    app.add_directive("preset-table", PresetTable)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
