"""sphinx-gallery over ``analysis/``: the scripts run unchanged, as ``python analysis/x.py``.

The analysis scripts are plain programs: they find ``analysis/output/`` from their own
``__file__``, save their figures there with ``Figure.savefig`` (mostly without pyplot)
and write Markdown tables next to them.  Three hooks let sphinx-gallery run them as they
are (each named in ``conf.py`` by its dotted path, so the config stays picklable):

* :func:`prepare_examples` (called by ``conf.py``) makes ``docs/_analysis/``: a symlink
  to every ``analysis/*.py`` plus the gallery header (``docs/gallery_header.rst``).
  sphinx-gallery wants a header file inside the examples folder, and ``analysis/`` holds
  only scripts and their output.
* :func:`reset_argv` gives each script its real ``__file__`` (sphinx-gallery runs
  examples without one) and no command-line arguments.
* :func:`snapshot_outputs` (a ``reset_modules`` hook, before each script) and
  :func:`scrape_outputs` (the image scraper, after each code block) show on the gallery
  page every PNG the block wrote or rewrote in ``analysis/output/``, followed by every
  Markdown table it wrote there, rendered as a table.  So a figure appears whether or not
  it went through pyplot, and exactly once.
"""

from __future__ import annotations

import pathlib
import re
import shutil

ROOT = pathlib.Path(__file__).resolve().parents[2]
ANALYSIS = ROOT / "analysis"
OUTPUT = ANALYSIS / "output"
MIRROR = ROOT / "docs" / "_analysis"
HEADER = ROOT / "docs" / "gallery_header.rst"

_snapshot: dict[pathlib.Path, tuple[int, int]] = {}


def prepare_examples() -> str:
    """(Re)make docs/_analysis/ (symlinks to analysis/*.py + GALLERY_HEADER.rst); its path."""
    if MIRROR.exists():
        shutil.rmtree(MIRROR)
    MIRROR.mkdir(parents=True)
    shutil.copyfile(HEADER, MIRROR / "GALLERY_HEADER.rst")
    for script in sorted(ANALYSIS.glob("*.py")):
        (MIRROR / script.name).symlink_to(script)
    return str(MIRROR)


def reset_argv(gallery_conf, script_vars) -> list[str]:
    """No arguments; the script's real path as ``__file__`` (in analysis/, not the mirror)."""
    src = pathlib.Path(script_vars["src_file"]).resolve()
    script_vars["example_globals"]["__file__"] = str(src)
    return []


def _state() -> dict[pathlib.Path, tuple[int, int]]:
    if not OUTPUT.is_dir():
        return {}
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in OUTPUT.iterdir() if p.is_file()}


def _written(suffix: str) -> list[pathlib.Path]:
    now = _state()
    new = [p for p, st in now.items() if p.suffix == suffix and _snapshot.get(p) != st]
    return sorted(new, key=lambda p: (now[p][0], p.name))


def snapshot_outputs(gallery_conf, fname, when) -> None:
    """Remember analysis/output/ as it is before a script runs."""
    _snapshot.clear()
    _snapshot.update(_state())


def _cell(text: str) -> str:
    return re.sub(r"([\\`*_|])", r"\\\1", text.strip())


def _markdown_to_rst(text: str) -> str:
    """A '# title' line and GitHub pipe tables as reST (other lines as paragraphs)."""
    out, table = [], []

    def flush():
        if not table:
            return
        rows = [[_cell(c) for c in line.strip().strip("|").split("|")] for line in table
                if not re.fullmatch(r"\|?[\s:|-]+\|?", line.strip())]
        out.extend([".. list-table::", "   :header-rows: 1", ""])
        for row in rows:
            out.append(f"   * - {row[0]}")
            out.extend(f"     - {c}" if c else "     -" for c in row[1:])
        out.append("")
        table.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            out.extend([f"**{_cell(line.lstrip('#'))}**", ""])
        elif line.strip():
            out.extend([_cell(line), ""])
    flush()
    return "\n".join(out)


def scrape_outputs(block, block_vars, gallery_conf) -> str:
    """reST for the PNGs and Markdown tables the block just wrote into analysis/output/."""
    from sphinx_gallery.scrapers import figure_rst

    rst = ""
    for png, dest in zip(_written(".png"), block_vars["image_path_iterator"]):
        shutil.copyfile(png, dest)  # one full-width figure each, titled by its file name
        rst += figure_rst([dest], gallery_conf["src_dir"], fig_titles=png.name)
    for md in _written(".md"):
        rst += "\n\n" + _markdown_to_rst(md.read_text()) + "\n"
    _snapshot.clear()
    _snapshot.update(_state())
    return rst


# ---- titles ------------------------------------------------------------------------------
# The analysis scripts' docstrings open with a sentence, not a reST title.  A gallery page
# needs a title, so the page of each script without one gets the sentence's first clause
# ("The MX table: SQNR of ..." -> "The MX table"), and so does its thumbnail.
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")


def example_title(script: pathlib.Path) -> str | None:
    """A short title from the script's docstring; None if the docstring has a reST title."""
    import ast

    doc = ast.get_docstring(ast.parse(script.read_text())) or ""
    first = doc.strip().split("\n\n")[0]
    lines = first.splitlines()
    if len(lines) > 1 and _UNDERLINE.match(lines[1]):
        return None
    text = " ".join(first.split())
    m = re.match(r"(.+?)(?::\s|,\s|\.\s|\.$|\s\()", text)
    title = (m.group(1) if m else text).strip()
    return title if 0 < len(title) <= 70 else script.name


def _rst_title(text: str) -> list[str]:
    return [_cell(text), "=" * (len(_cell(text)) + 2), ""]


def _add_titles(app, docname, source) -> None:
    """source-read: give untitled gallery pages (and their thumbnails) a title."""
    if not docname.startswith("auto_examples/"):
        return
    text = source[0]
    if docname == "auto_examples/index":
        for script in sorted(ANALYSIS.glob("*.py")):
            title = example_title(script)
            if title is None:
                continue
            pattern = (rf"(:doc:`/auto_examples/{re.escape(script.stem)}`.*?"
                       r"<div class=\"sphx-glr-thumbnail-title\">).*?(</div>)")
            text = re.sub(pattern, lambda m, t=title: m.group(1) + html_escape(t) + m.group(2),
                          text, count=1, flags=re.DOTALL)
    else:
        script = ANALYSIS / (docname.split("/", 1)[1] + ".py")
        label = f".. _sphx_glr_auto_examples_{script.stem}.py:\n\n"
        title = example_title(script) if script.is_file() else None
        start = text.find(label)
        end = text.find(".. GENERATED FROM PYTHON SOURCE LINES", start)
        if start != -1 and end != -1:
            head = "\n".join(_rst_title(title)) + "\n" if title is not None else ""
            body = _escape_pipes(text[start + len(label):end])
            text = text[:start] + label + head + body + text[end:]
    source[0] = text


def _escape_pipes(text: str) -> str:
    """``|x|`` in a docstring means an absolute value, not a reST substitution: escape the
    bars outside ``literals`` (a table row, ``| ... |`` or ``+---+``, is left alone)."""
    out = []
    for line in text.split("\n"):
        if re.fullmatch(r"\s*(\+[-=+]+\+|\|.*\|)\s*", line):
            out.append(line)
            continue
        parts = re.split(r"(``.+?``)", line)
        out.append("".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts)))
    return "\n".join(out)


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


def setup(app):
    app.connect("source-read", _add_titles)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
