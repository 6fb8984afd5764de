"""SQNR versus exponent bits, after Kuzmin et al. 2022, "FP8 Quantization: The Power of the
Exponent" (Fig. 2 / Table 1 setting): 8-bit formats INT8, E2M5, E3M4, E4M3, E5M2 on Gaussian,
Student-t(8) and uniform data, each with an MSE-optimal per-tensor clip value (grid search), next
to the theoretical ceilings (float: 6.02 m + 13.5 dB with m mantissa bits; INT8 on a Gaussian with
optimal clipping: about 40.5 dB).

The float formats here have no special values (every code is a number), as in the paper, whose
formats also have a free bias: with scaling, the bias does not matter.

Run: ``python analysis/sqnr_vs_exponent_bits.py`` (about 20 s); writes
analysis/output/sqnr_vs_exponent_bits.{md,png}.
"""

from __future__ import annotations

import sys

import numpy as np

import fpsim
from fpsim.metrics import sqnr_db

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import markdown_table, output_path  # noqa: E402

N = 1_000_000
SEED = 0


def formats():
    out = [("INT8", fpsim.get_format("int8"), 0)]
    for e in (2, 3, 4, 5):
        m = 7 - e
        fmt = fpsim.FloatFormat(exponent_bits=e, mantissa_bits=m, specials="none",
                                name=f"E{e}M{m}")
        out.append((f"E{e}M{m}", fmt, e))
    return out


def distributions(rng):
    return {
        "gaussian": rng.standard_normal(N),
        "student_t8": rng.standard_t(8, N),
        "uniform": rng.uniform(-1, 1, N),
    }


def ceiling(label: str, e: int) -> float:
    if label == "INT8":
        return 40.5  # NUMERICS.md: Gaussian, optimal clipping at 3.92 sigma
    return 6.02 * (7 - e) + 13.5


def main():
    rng = np.random.default_rng(SEED)
    data = {k: v.astype(np.float32) for k, v in distributions(rng).items()}
    rows, results = [], {}
    for label, fmt, e in formats():
        row = [label]
        for dname, x in data.items():
            spec = fpsim.QuantSpec(format=fmt, calibration="mse")
            s = sqnr_db(x, fpsim.fake_quantize(x, spec))
            results[(label, dname)] = s
            row.append(s)
        row.append(ceiling(label, e))
        rows.append(row)
    header = ["format"] + [f"{d} (dB)" for d in data] + ["ceiling (dB)"]
    table = markdown_table(header, rows)
    md = output_path("sqnr_vs_exponent_bits.md")
    md.write_text(
        "# SQNR versus exponent bits (MSE-optimal clipping, 10^6 samples, seed 0)\n\n" + table
        + "\nCeiling: 6.02 m + 13.5 dB for a float with m mantissa bits and no over/underflow;"
        " 40.5 dB for INT8 on a Gaussian with optimal clipping.\n")
    print(table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    labels = [f[0] for f in formats()]
    xs = np.arange(len(labels))
    markers = {"gaussian": "o", "student_t8": "s", "uniform": "^"}
    for dname in data:
        ax.plot(xs, [results[(lab, dname)] for lab in labels], marker=markers[dname],
                label=dname.replace("_t8", "-t (8)"))
    ax.plot(xs, [ceiling(lab, f[2]) for lab, f in zip(labels, formats())], "k--", lw=1,
            label="ceiling")
    ax.set_xticks(xs, labels)
    ax.set_xlabel("8-bit format (more exponent bits to the right)")
    ax.set_ylabel("SQNR (dB)")
    ax.set_title("SQNR of 8-bit formats with MSE-optimal clipping")
    ax.grid(alpha=0.3)
    ax.legend()
    png = output_path("sqnr_vs_exponent_bits.png")
    fig.savefig(png, dpi=120)
    print(f"wrote {md} and {png}")


if __name__ == "__main__":
    main()
