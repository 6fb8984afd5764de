"""The main report: standard recipes on synthetic data and on the default model (MiniLM).

``fpsim report`` (or :func:`make_report`) writes a folder with ``index.md`` (the tables and
figures), ``results.json`` and PNG figures, and prints the summary tables.
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

__all__ = ["make_report", "check_prerequisites", "SYNTHETIC_RECIPES", "REPORT_PRESETS"]

#: Recipes compared on synthetic data.
SYNTHETIC_RECIPES = ("bfloat16", "float8_e4m3fn", "float8_e5m2", "int8", "int8_channel",
                     "mxfp8_e4m3", "mxfp6_e2m3", "mxfp4_e2m1", "mxint8", "nvfp4",
                     "fp8_deepseek_activation")
#: Presets the report runs on MiniLM.
REPORT_PRESETS = ("bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "fp8_e4m3_delayed", "int8",
                  "int8_tensor", "int8_weight_only", "llm_int8", "smoothquant",
                  "torch_dynamic_int8", "mxfp8", "mxfp6", "mxfp4", "nvfp4")


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def check_prerequisites(out_dir) -> None:
    """Raise before any work if the report cannot be made: the models extra is missing or
    ``out_dir`` cannot be written. Leaves nothing behind.

    Raises
    ------
    ImportError
        safetensors or tokenizers (the ``models`` extra) is not installed.
    ValueError
        ``out_dir`` is a file, or cannot be created or written.
    """
    import importlib

    for mod in ("safetensors", "tokenizers"):
        try:
            importlib.import_module(mod)
        except ImportError:
            raise ImportError(f"fpsim report runs MiniLM, which needs {mod}: "
                              "pip install 'fpsim[models]'") from None
    import tempfile

    out = pathlib.Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"argument --out: {out} is a file, not a folder")
    missing = []  # the folders we would create, deepest first
    p = out
    while not p.exists():
        missing.append(p)
        p = p.parent
    try:  # really try (root passes os.access checks; /proc refuses anyway), then undo
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise ValueError(f"argument --out: cannot create the report folder {out} "
                         f"({e.strerror or e})") from None
    finally:
        for folder in missing:
            try:
                folder.rmdir()
            except OSError:
                pass


def synthetic_table(*, n: int = 1 << 18, seed: int = 0) -> tuple[list[dict], dict]:
    """SQNR and range counts of each recipe on Gaussian, Student-t(4) and Laplace data."""
    from ..metrics import sqnr_db
    from ..quant import fake_quantize

    rng = np.random.default_rng(seed)
    data = {
        "gaussian": rng.standard_normal((n // 256, 256)).astype(np.float32),
        "student_t4": rng.standard_t(4, (n // 256, 256)).astype(np.float32),
        "laplace": rng.laplace(size=(n // 256, 256)).astype(np.float32),
    }
    rows = []
    for recipe in SYNTHETIC_RECIPES:
        row = {"recipe": recipe}
        for name, x in data.items():
            row[name] = sqnr_db(x, fake_quantize(x, recipe))
        rows.append(row)
    return rows, data


def _md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def make_report(out_dir="fpsim-report", *, presets=REPORT_PRESETS, quick: bool = False,
                quiet: bool = False) -> pathlib.Path:
    """Run the report and write it to ``out_dir``; returns the path of ``index.md``.

    Parameters
    ----------
    out_dir : path
    presets : iterable of str
        MiniLM presets to evaluate (FP32 is the reference).
    quick : bool
        Fewer sentences and samples (for tests and a first look).
    quiet : bool
        No progress output.

    Examples
    --------
    >>> import tempfile
    >>> index = make_report(tempfile.mkdtemp(), presets=("int8",), quick=True, quiet=True)
    >>> index.name, (index.parent / "results.json").exists()
    ('index.md', True)
    """
    from .. import data
    from .evaluate import evaluate, results_markdown, run_info, strict_json

    check_prerequisites(out_dir)
    presets = tuple(presets)
    t_start = time.perf_counter()
    out = pathlib.Path(out_dir)
    figures: list[tuple[str, str]] = []

    _log(f"fpsim report: synthetic data, then {len(presets)} presets on MiniLM (a time "
         "estimate follows MiniLM's FP32 pass; a first run on a machine also compiles the "
         "kernels, which `fpsim warmup` does on every core)", quiet)
    syn_rows, syn_data = synthetic_table(n=1 << (14 if quick else 18))
    syn_md = _md_table(["recipe", "Gaussian SQNR (dB)", "Student-t(4) SQNR (dB)",
                        "Laplace SQNR (dB)"],
                       [[r["recipe"], f"{r['gaussian']:.2f}", f"{r['student_t4']:.2f}",
                         f"{r['laplace']:.2f}"] for r in syn_rows])

    _log("fpsim report: MiniLM (fetching the model files if needed)", quiet)
    from ..models import weights

    weights.fetch("minilm", quiet=quiet)
    sentences = data.sentences()
    if quick:
        sentences = sentences[:48]
    results = evaluate("minilm", presets, sentences=sentences, progress=not quiet)
    model_md = results_markdown(results)

    out.mkdir(parents=True, exist_ok=True)
    _log("fpsim report: figures", quiet)
    try:
        figures = _figures(out, syn_data, results)
    except ImportError as e:  # matplotlib missing: tables only
        _log(f"fpsim report: no figures ({e}); pip install 'fpsim[plot]'", quiet)

    payload = {
        "run": run_info(),
        "synthetic": syn_rows,
        "minilm": [r.to_dict() for r in results],
        "seconds": time.perf_counter() - t_start,
    }
    (out / "results.json").write_text(strict_json(payload, indent=1))  # standard JSON
    lines = [
        "# fpsim report",
        "",
        "What each recipe does to tensors and to a real model, against FP32.",
        "",
        "## Synthetic data",
        "",
        f"{syn_data['gaussian'].size} values per distribution; "
        "SQNR = 10 log10(signal power / error power).",
        "",
        syn_md,
        "## all-MiniLM-L6-v2 sentence embeddings",
        "",
        f"{len(sentences)} sentences shipped with fpsim; every metric compares the quantized "
        "model's embeddings with the FP32 model's. Bits per weight include scales and zero "
        "points.",
        "",
        model_md,
        "Presets:",
        "",
    ]
    lines += [f"- `{r.preset}`: {r.description}" for r in results]
    lines += ["", "## Figures", ""]
    for fname, caption in figures:
        lines += [f"### {caption}", "", f"![{caption}]({fname})", ""]
    lines += [f"_Made by fpsim in {payload['seconds']:.0f} s._", ""]
    index = out / "index.md"
    index.write_text("\n".join(lines))
    if not quiet:
        print("\nSynthetic data (SQNR, dB)\n")
        print(syn_md)
        print("MiniLM embeddings against FP32\n")
        print(model_md)
        print(f"Report written to {index}")
    return index


def _figures(out: pathlib.Path, syn_data: dict, results) -> list[tuple[str, str]]:
    from .. import plotting

    figs = []

    def save(fig, name, caption):
        fig.savefig(out / name, dpi=110)
        figs.append((name, caption))

    save(plotting.number_line(["float8_e4m3fn", "float8_e5m2", "float6_e2m3fn",
                               "float6_e3m2fn", "float4_e2m1fn"]),
         "number_line.png", "Where the values of the small formats lie")
    save(plotting.relative_error(["float8_e4m3fn", "float8_e5m2", "float4_e2m1fn",
                                  "bfloat16"]),
         "relative_error.png", "Relative rounding error versus magnitude")
    x = syn_data["gaussian"]
    save(plotting.error_histogram(x, ["float8_e4m3fn", "float8_e5m2", "int8", "mxfp4_e2m1",
                                      "nvfp4"]),
         "error_histogram.png", "Error histograms on N(0,1) data")
    save(plotting.sqnr_vs_scale(x.ravel()[:1 << 14], ["float8_e4m3fn", "float8_e5m2",
                                                     "float4_e2m1fn", "int8"]),
         "sqnr_vs_scale.png", "SQNR versus scale: why scaling matters")
    save(plotting.mx_scale_histogram(x), "mx_scales.png",
         "MX block scales and saturation by scale rule")
    by_name = {r.preset: r for r in results}
    for name in ("int8", "fp8_e4m3", "mxfp4"):
        if name in by_name and by_name[name].trace:
            save(plotting.layer_heatmaps(by_name[name].trace),
                 f"layers_{name}.png", f"MiniLM per-layer, per-site statistics ({name})")
    if hasattr(plotting, "layer_sqnr_lines"):
        save(plotting.layer_sqnr_lines({r.preset: r.layer_sqnr_db for r in results}),
             "layer_sqnr.png", "MiniLM hidden-state SQNR against FP32, layer by layer")
    return figs
