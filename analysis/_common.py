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


def _git(*args) -> str | None:
    """The output of a git command run in this folder, or None without git."""
    import subprocess

    try:
        out = subprocess.run(["git", *args], cwd=OUTPUT.parent, capture_output=True,
                             text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def run_metadata(**fields) -> dict:
    """What a stored measurement records about its run: ``fields`` first, then the fpsim
    version and commit, the uncommitted changes under ``fpsim/``, the UTC date and the
    thread settings."""
    import datetime
    import os

    import fpsim

    dirty = _git("status", "--porcelain", "--", ":(top)fpsim")
    return {
        **fields,
        "fpsim_version": fpsim.__version__, "fpsim_commit": _git("rev-parse", "HEAD"),
        "fpsim_uncommitted": dirty.splitlines() if dirty else [],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "threads": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS",
                                                    "NUMBA_NUM_THREADS")},
    }


def write_json(path: pathlib.Path, obj) -> None:
    """Write ``obj`` as indented JSON (numpy scalars as Python numbers)."""
    import json

    import numpy as np

    def scalar(x):
        if isinstance(x, np.generic):
            return x.item()
        raise TypeError(f"not JSON: {type(x).__name__}")

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=scalar) + "\n")


def stored_source(stored: dict, checked: str) -> str:
    """The line that says where a stored run came from: its command, commit and date, and
    ``checked`` (what was measured again now)."""
    commit = (stored.get("fpsim_commit") or "unknown")[:10]
    if stored.get("fpsim_uncommitted"):
        commit += " with uncommitted changes"
    return (f"Measured by `{stored['command']}` (fpsim {commit}, {stored['date'][:10]}); "
            f"{checked}")


def two_panel_figure():
    """``(plt, fig, (left, right))``: a 12 x 4.8 inch figure of two axes side by side, drawn
    with the Agg backend (matplotlib imported here, only by the scripts that plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    return plt, fig, axes


def save_two_panel_figure(plt, fig, axes, path, title: str, legend_locs, *,
                          grid_which: str = "major") -> None:
    """Grid and legend on both axes of :func:`two_panel_figure`, the title, then save
    ``path`` at 110 dpi and close the figure."""
    for ax, loc in zip(axes, legend_locs):
        ax.grid(alpha=0.3, which=grid_which)
        ax.legend(fontsize=9, loc=loc)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
