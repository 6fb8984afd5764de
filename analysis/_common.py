"""Shared helpers for the analysis scripts: output folder and Markdown tables."""

from __future__ import annotations

import pathlib

OUTPUT = pathlib.Path(__file__).resolve().parent / "output"


def output_path(name: str) -> pathlib.Path:
    """Path of an output file, creating analysis/output/ if needed."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT / name


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub Markdown table; floats printed with 2 decimals."""

    def cell(v):
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
