"""Sphinx directive ``format-table``: the table of registered formats, built from the registry.

Every number comes from ``fpsim.finfo`` / ``fpsim.iinfo`` and the format objects at build
time, so the table cannot drift from the code::

    ```{format-table}
    :kind: float
    :include: ^p3109_
    ```

Options: ``:kind:`` (``float`` or ``int``, required), ``:include:`` / ``:exclude:``
(regular expressions on the format name).
"""

from __future__ import annotations

import math
import re
from typing import ClassVar

from _rst import parse_rst
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective


def _num(v: float) -> str:
    """Exact decimal for short values, else 6 significant digits; powers of two far from 1
    as 2^k (exact and short)."""
    if not math.isfinite(v):
        return str(v)
    m, e = math.frexp(abs(v))
    if v != 0 and m == 0.5 and not -4 <= e - 1 <= 10:
        return ("-" if v < 0 else "") + f"2\\ :sup:`{e - 1}`"
    text = repr(float(v)) if len(repr(float(v))) <= 10 else f"{v:.6g}"
    return text.removesuffix(".0")


def _yn(b: bool) -> str:
    return "yes" if b else "no"


def _escape(text: str) -> str:
    return re.sub(r"([\\`*_|])", r"\\\1", text)


def _name_cell(fmt) -> str:
    aliases = ", ".join(f"``{a}``" for a in fmt.aliases)
    return f"``{fmt.name}``" + (f" ({aliases})" if aliases else "")


def _float_rows(names):
    import fpsim

    header = ["name (aliases)", "bits", "e / m", "bias", "max", "smallest normal",
              "smallest subnormal", "eps", "Inf", "NaN", "-0"]
    rows = []
    for name in names:
        fmt = fpsim.get_format(name)
        fi = fpsim.finfo(fmt)
        sub = _num(fi.smallest_subnormal) if fmt.subnormals and fmt.has_zero else "none"
        rows.append([
            _name_cell(fmt), str(fmt.bits) + ("" if fmt.signed else " (unsigned)"),
            f"{fmt.exponent_bits} / {fmt.mantissa_bits}", str(fmt.bias),
            _num(fi.max), _num(fi.smallest_normal), sub, _num(fi.eps),
            _yn(fmt.has_inf), _yn(fmt.has_nan), _yn(fmt.has_negative_zero),
        ])
    return header, rows


def _int_rows(names):
    import fpsim

    header = ["name (aliases)", "bits", "signed", "min", "max", "step", "symmetric",
              "codes are"]
    rows = []
    for name in names:
        fmt = fpsim.get_format(name)
        ii = fpsim.iinfo(fmt)
        rows.append([
            _name_cell(fmt), str(fmt.bits), _yn(fmt.signed), _num(ii.min), _num(ii.max), _num(2.0 ** fmt.scale_exp),
            _yn(fmt.symmetric), "bit patterns" if fmt.bit_patterns else "integer values",
        ])
    return header, rows


class FormatTable(SphinxDirective):
    """Render a list-table of the registered formats of one kind."""

    has_content = False
    option_spec: ClassVar[dict] = {
        "kind": lambda arg: directives.choice(arg, ("float", "int")),
        "include": directives.unchanged,
        "exclude": directives.unchanged,
    }

    def run(self):
        import fpsim

        kind = self.options.get("kind")
        if kind is None:
            raise self.error("format-table needs :kind: float or :kind: int")
        names = fpsim.list_formats(kind)
        if "include" in self.options:
            names = [n for n in names if re.search(self.options["include"], n)]
        if "exclude" in self.options:
            names = [n for n in names if not re.search(self.options["exclude"], n)]
        if not names:
            raise self.error(f"format-table: no {kind} format matches the options")
        header, rows = _float_rows(names) if kind == "float" else _int_rows(names)
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: auto", "   :class: fpsim-format-table", ""]
        for row in [[_escape(h) for h in header], *rows]:
            lines.append(f"   * - {row[0]}")
            lines += [f"     - {cell}" if cell else "     -" for cell in row[1:]]
        return parse_rst(self, lines, "format-table")


def setup(app):
    app.add_directive("format-table", FormatTable)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
