"""The MX table: SQNR of every OCP MX format (and NVFP4, per-tensor FP8 and INT8) on N(0,1) data,
for each power-of-two scale rule, with the fraction of elements and of blocks that saturate.

An element saturates when |x| / X exceeds the element format's max (X the block scale); the OCP
``floor`` rule allows that (NUMERICS.md: about 17% of Gaussian blocks for E4M3), ``rceil`` never.

Run: ``python analysis/mx_table.py`` (a few seconds); writes analysis/output/mx_table.{md,png}.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

import fpsim
from fpsim.quant import blocks
from fpsim.metrics import sqnr_db

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import markdown_table, output_path  # noqa: E402

SHAPE = (8192, 512)  # 4M values, 131072 blocks of 32
SEED = 0


def saturation(x, element, rule):
    """(fraction of elements, fraction of blocks) with |x| / X > element max."""
    fmt = fpsim.get_format(element)
    _, sc = blocks.mx_encode(x, fmt, scale_rule=rule)
    scale = np.ldexp(1.0, sc.astype(np.int64) - 127)
    y = np.abs(x).reshape(x.shape[0], -1, 32) / scale[..., None]
    sat = y > fmt.max
    return float(sat.mean()), float(sat.any(axis=-1).mean())


def main():
    x = np.random.default_rng(SEED).standard_normal(SHAPE).astype(np.float32)
    rows = []
    results = {}
    for name, element in blocks.MX_ELEMENTS.items():
        for rule in blocks.SCALE_RULES:
            s = sqnr_db(x, fpsim.fake_quantize(x, name, scale_rule=rule))
            el, bl = saturation(x, element, rule)
            results[(name, rule)] = s
            rows.append([name, rule, s, f"{100 * el:.3f}%", f"{100 * bl:.2f}%"])
    others = [("nvfp4", "nvfp4"), ("e4m3fn per-tensor", "float8_e4m3fn"),
              ("e5m2 per-tensor", "float8_e5m2"), ("int8 per-tensor", "int8"),
              ("int8 per-channel", "int8_channel")]
    for label, rec in others:
        s = sqnr_db(x, fpsim.fake_quantize(x, rec))
        results[(label, "-")] = s
        rows.append([label, "amax (fp32/e4m3 scale)", s, "0.000%", "0.00%"])
    table = markdown_table(["recipe", "scale rule", "SQNR (dB)", "saturated elements",
                            "blocks with saturation"], rows)
    md = output_path("mx_table.md")
    md.write_text(f"# MX formats on N(0,1) ({SHAPE[0]}x{SHAPE[1]} values, seed {SEED})\n\n"
                  + table)
    print(table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.8), layout="constrained")
    names = list(blocks.MX_ELEMENTS)
    width = 0.2
    for i, rule in enumerate(blocks.SCALE_RULES):
        ax.bar(np.arange(len(names)) + (i - 1.5) * width,
               [results[(n, rule)] for n in names], width, label=f"MX, {rule}")
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_xlim(-0.6, len(names) - 0.4)
    for label, _ in others[:3]:
        ax.axhline(results[(label, "-")], ls="--", lw=1, color="gray")
        ax.text(-0.55, results[(label, "-")] + 0.3, label, va="bottom", ha="left", fontsize=8,
                color="dimgray", bbox=dict(fc="white", ec="none", alpha=0.85, pad=1))
    ax.set_ylabel("SQNR (dB)")
    ax.set_title("MX block formats on N(0,1): SQNR by scale rule")
    ax.legend(ncols=4, loc="upper center", fontsize=9)
    ax.set_ylim(0, max(results.values()) * 1.15)
    ax.grid(axis="y", alpha=0.3)
    png = output_path("mx_table.png")
    fig.savefig(png, dpi=120)
    print(f"wrote {md} and {png}")


if __name__ == "__main__":
    main()
