"""The format figures of fpsim.plotting: number lines, error sawtooths, error histograms,
SQNR versus scale and MX block-scale histograms.

Run: ``python analysis/format_figures.py`` (about 10 s); writes into analysis/output/:

* ``number_lines.png``: where the values of every FP8 / FP6 / FP4 element format lie
  (float8_e8m0fnu, a scale format spanning 2**-127..2**127, is left out: it would squash
  the rest);
* ``relative_error.png``: the rounding-error sawtooth of e4m3fn, e5m2, e2m1fn, bfloat16;
* ``error_histogram.png``: the error of N(0, 1) data in e4m3fn, e5m2, int8 (per-tensor
  amax scaling) and the block formats mxfp4_e2m1 and nvfp4;
* ``sqnr_vs_scale.png``: the SQNR of N(0, 1) data against the scale for e4m3fn, e5m2,
  e2m1fn, int8;
* ``mx_scales_mxfp8_e4m3.png`` and ``mx_scales_mxfp4_e2m1.png``: block-scale exponents and
  clipping per block under the OCP ``floor`` rule and ``rceil``, on activation-like data
  (N(0, 1) times a log-normal scale per channel).
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

from fpsim import plotting

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import output_path

SEED = 0
DPI = 130

NUMBER_LINE_FORMATS = [
    "float8_e4m3fn", "float8_e4m3", "float8_e4m3fnuz", "float8_e4m3b11fnuz", "float8_e5m2",
    "float8_e5m2fnuz", "float8_e3m4", "float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn",
]


def activations(rng, tokens=512, channels=1024) -> np.ndarray:
    """N(0, 1) times a log-normal scale per channel (sigma 1): blocks along channels mix
    small and large channels, as real activations do."""
    scale = np.exp(rng.standard_normal(channels))
    return (rng.standard_normal((tokens, channels)) * scale).astype(np.float32)


def main():
    rng = np.random.default_rng(SEED)
    gauss = rng.standard_normal(1 << 20).astype(np.float32)
    figures = {
        "number_lines": lambda: plotting.number_line(NUMBER_LINE_FORMATS),
        "relative_error": lambda: plotting.relative_error(
            ["e4m3fn", "e5m2", "e2m1fn", "bfloat16"]),
        "error_histogram": lambda: plotting.error_histogram(
            gauss, ["e4m3fn", "e5m2", "int8", "mxfp4_e2m1", "nvfp4"]),
        "sqnr_vs_scale": lambda: plotting.sqnr_vs_scale(
            gauss[: 1 << 16], ["e4m3fn", "e5m2", "e2m1fn", "int8"]),
    }
    act = activations(rng)
    for r in ("mxfp8_e4m3", "mxfp4_e2m1"):
        figures[f"mx_scales_{r}"] = lambda r=r: plotting.mx_scale_histogram(act, r)
    for name, make in figures.items():
        t = time.perf_counter()
        fig = make()
        path = output_path(f"{name}.png")
        fig.savefig(path, dpi=DPI)
        print(f"wrote {path} ({time.perf_counter() - t:.1f} s)")


if __name__ == "__main__":
    main()
