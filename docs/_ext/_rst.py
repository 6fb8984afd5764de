"""Parse generated reStructuredText inside a directive, in a MyST or a reST document."""

from __future__ import annotations

from docutils import nodes
from docutils.statemachine import StringList


def parse_rst(directive, lines: list[str], source: str) -> list[nodes.Node]:
    """Nodes for ``lines`` of reST (wrapped in ``{eval-rst}`` when the page is MyST)."""
    if type(directive.state).__module__.startswith("myst_parser"):
        lines = ["`````{eval-rst}", *lines, "`````"]
    container = nodes.container()
    directive.state.nested_parse(StringList(lines, source=source), directive.content_offset,
                                 container)
    return container.children
