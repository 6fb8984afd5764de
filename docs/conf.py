"""Sphinx configuration of the fpsim documentation.

Build (warnings are errors, as in CI)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Pages are MyST Markdown; docstrings are numpy style, rendered by ``sphinx.ext.napoleon``;
the API reference, the format tables and the CLI page are generated from the code at
build time (``docs/_ext/``); the gallery runs every script of ``analysis/``.
"""

from __future__ import annotations

import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import gallery_hooks

import fpsim

project = "fpsim"
author = "the fpsim authors"
copyright = "the fpsim authors"
release = version = fpsim.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx_gallery.gen_gallery",
    "api_listing",
    "cli_help",
    "format_table",
    "quant_tables",
    "gallery_hooks",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_analysis", "gallery_header.rst", "auto_examples/*.md5",
                    "Thumbs.db", ".DS_Store"]
nitpicky = False  # docstring types ("array_like of float") are prose, not cross-references

# ---- MyST --------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# ---- autodoc + napoleon (numpy-style docstrings) -------------------------------------------
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"  # the numpy-style Parameters sections say the types
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False


# ---- sphinx-gallery over analysis/ ---------------------------------------------------------
# The scripts run unchanged (see docs/_ext/gallery_hooks.py): from a mirror folder that holds
# the gallery header, with their real __file__; each page shows the PNGs and Markdown tables
# the script wrote into analysis/output/.  The hooks are named by dotted path so that the
# configuration stays picklable.
sphinx_gallery_conf = {
    "examples_dirs": gallery_hooks.prepare_examples(),
    "gallery_dirs": "auto_examples",
    # run every script; files starting with "_" are helpers (analysis/_common.py)
    "filename_pattern": r"/[^_/][^/]*\.py$",
    "ignore_pattern": r"(^|/)_[^/]*\.py$",
    "image_scrapers": ("gallery_hooks.scrape_outputs",),
    "reset_modules": ("matplotlib", "gallery_hooks.snapshot_outputs"),
    "reset_argv": "gallery_hooks.reset_argv",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
}

# ---- HTML ---------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"fpsim {release}"
html_static_path = ["_static"]
html_css_files = ["fpsim.css"]
