"""Sphinx directive ``cli-help``: the ``--help`` of ``fpsim`` and of every subcommand.

Built from :func:`fpsim.app.cli.build_parser` at build time, so a new subcommand or option
shows up without editing the docs::

    ```{cli-help}
    ```

One section per subcommand, in the parser's order, each with the subcommand's
description and its ``--help`` text.
"""

from __future__ import annotations

import argparse
import contextlib
import os

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

WIDTH = 90  # columns of the help text


@contextlib.contextmanager
def _columns(n: int):
    """argparse wraps help to $COLUMNS; pin it so the build does not depend on the terminal."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(n)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _subcommands(parser: argparse.ArgumentParser):
    """(name, help, subparser) of each subcommand, in the order they were added."""
    for action in parser._actions:  # argparse has no public way to list subparsers
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


class CliHelp(SphinxDirective):
    """Sections with the help of ``fpsim`` and of each subcommand."""

    has_content = False

    def run(self):
        from fpsim.app.cli import build_parser

        with _columns(WIDTH):
            parser = build_parser()
            out = [nodes.literal_block(text=parser.format_help().rstrip(), language="text")]
            for name, help_, sub in _subcommands(parser):
                section = nodes.section(ids=[nodes.make_id(f"fpsim-{name}")])
                title = nodes.title()
                title += nodes.literal(text=f"fpsim {name}")
                section += title
                if help_:
                    section += nodes.paragraph(text=help_[0].upper() + help_[1:] + ".")
                section += nodes.literal_block(text=sub.format_help().rstrip(), language="text")
                out.append(section)
        return out


def setup(app):
    app.add_directive("cli-help", CliHelp)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
