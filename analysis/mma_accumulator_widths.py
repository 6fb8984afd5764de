"""How many bits each GPU matrix unit keeps when it adds products: measured, not assumed.

MMA-Sim (Xie et al. 2025, "MMA-Sim: Bit-Accurate Reference Model of Tensor Cores and Matrix
Cores", arXiv:2511.10909) found that tensor cores align all products of a dot-add to the
largest exponent and truncate each to a fixed number of fractional bits: 13 on Hopper FP8
(``wgmma``, into an E8M13 accumulator) and Ada FP8 ``mma``, 23/24/25 on FP16/BF16/TF32 paths
by architecture (Volta/Turing-Ada/Hopper-Blackwell), 35 in Blackwell's block-scaled FP4
(``mxf4nvf4``), 24 in AMD CDNA3's fused adders.  ``fpsim.mma`` implements those algorithms;
this script *measures* the width of every instruction family through its public call, with
one targeted vector per width ``j``:

    a = [2**h, 2**(h - j//2), 0, ...],  b = [2**h, 2**(h - j + j//2), 0, ...],  C = -2**(2h)

The first product P = 2**(2h) sets the alignment, C cancels it exactly, and the result is
the small product 2**(2h - j) if the adder kept it, 0 otherwise.  ``h`` is chosen so that
every operand is a normal or subnormal value of the input types.  The kept width is the
largest ``j`` that survives.  FP4-only kinds are measured through their block scales (the
second block scaled by 2**-j).  CDNA1/2 add in float32 FMA trees: 23 bits, by float32 rounding.

Run: ``python analysis/mma_accumulator_widths.py`` (a few seconds); writes
analysis/output/mma_accumulator_widths.{md,png}.
"""

from __future__ import annotations

import sys

import numpy as np

from fpsim import mma

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import markdown_table, output_path  # noqa: E402

#: (label, arch, op, qualifier): one instruction per family and input width
PROBES = [
    ("Volta f16", "Volta", "mma", "m8n8k4.f32.f16.f16.f32"),
    ("Turing f16", "Turing", "mma", "m16n8k8.f32.f16.f16.f32"),
    ("Ampere f16", "Ampere", "mma", "m16n8k16.f32.f16.f16.f32"),
    ("Ampere bf16", "Ampere", "mma", "m16n8k16.f32.bf16.bf16.f32"),
    ("Ampere tf32", "Ampere", "mma", "m16n8k8.f32.tf32.tf32.f32"),
    ("Ada f16", "Ada Lovelace", "mma", "m16n8k16.f32.f16.f16.f32"),
    ("Ada e4m3", "Ada Lovelace", "mma", "m16n8k32.f32.e4m3.e4m3.f32"),
    ("Hopper mma f16", "Hopper", "mma", "m16n8k16.f32.f16.f16.f32"),
    ("Hopper wgmma f16", "Hopper", "wgmma", "m64n8k16.f32.f16.f16"),
    ("Hopper wgmma bf16", "Hopper", "wgmma", "m64n8k16.f32.bf16.bf16"),
    ("Hopper wgmma tf32", "Hopper", "wgmma", "m64n8k8.f32.tf32.tf32"),
    ("Hopper wgmma e4m3", "Hopper", "wgmma", "m64n8k32.f32.e4m3.e4m3"),
    ("Hopper wgmma e5m2", "Hopper", "wgmma", "m64n8k32.f32.e5m2.e5m2"),
    ("Blackwell tcgen05 f16", "Blackwell", "tcgen05.mma", "m64n8k16.f32.f16.f16"),
    ("Blackwell tcgen05 e4m3", "Blackwell", "tcgen05.mma", "m64n8k32.f32.e4m3.e4m3"),
    ("Blackwell mxf8f6f4 e4m3", "Blackwell", "tcgen05.mma.block_scale",
     "m128n8k32.block32.f32.e4m3.e4m3.ue8m0"),
    ("Blackwell mxf4nvf4", "Blackwell", "tcgen05.mma.block_scale",
     "m128n8k64.block16.f32.e2m1.e2m1.ue8m0"),
    ("RTX Blackwell e4m3", "RTX Blackwell", "mma", "m16n8k32.f32.e4m3.e4m3.f32"),
    ("RTX Blackwell mxf4nvf4", "RTX Blackwell", "mma.block_scale",
     "m16n8k64.block16.f32.e2m1.e2m1.f32.ue4m3"),
    ("CDNA1 f16", "CDNA1", "mfma", "f32_32x32x8f16"),
    ("CDNA2 bf16", "CDNA2", "mfma", "f32_32x32x8bf16_1k"),
    ("CDNA3 f16", "CDNA3", "mfma", "f32_32x32x8_f16"),
    ("CDNA3 xf32", "CDNA3", "mfma", "f32_16x16x8_xf32"),
    ("CDNA3 fp8", "CDNA3", "mfma", "f32_16x16x32_fp8_fp8"),
]
#: the widths MMA-Sim reports (arXiv:2511.10909), for the comparison column
PUBLISHED = {"Volta": 23, "Turing": 24, "Ampere": 24, "Ada Lovelace": 24, "Hopper": 25,
             "Blackwell": 25, "RTX Blackwell": 25}
#: largest power-of-two exponent h with 2**h a value of each input type
TOP = {"f16": 7, "bf16": 20, "tf32": 20, "xf32": 20, "e4m3": 8, "e5m2": 7, "fp8": 7, "bf8": 7}


def published(inst) -> int:
    if inst.family == "nv_block_fp4":
        return 35
    if inst.op == "mfma":
        return 23 if inst.family == "amd_pairwise" else 24
    if inst.a_type in ("e4m3", "e5m2") and (inst.op == "wgmma" or inst.arch == "Ada Lovelace"):
        return 13
    return 25 if "block_scale" in inst.op or inst.op == "wgmma" else PUBLISHED[inst.arch]


def survives(inst, j: int) -> bool:
    """Does 2**-j (relative) survive next to a cancelled product?"""
    if inst.family == "nv_block_fp4":  # block scales move the second block's product
        # block 0: 4 * 4 * 256 * 256 = 2**20; block 1: a1 * b1 * s_a1 * s_b1 = 2**(20 - j)
        a = np.zeros((1, inst.k)); b = np.zeros((inst.k, 1))
        nb = inst.k // inst.block
        sa, sb = np.ones((1, nb)), np.ones((nb, 1))
        a[0, 0] = b[0, 0] = 4.0
        sa[0, 0] = sb[0, 0] = 256.0
        t = 20 - j
        half = 0.5 if t < -16 else 1.0  # FP4 0.5 * 0.5 = 2**-2 helps reach small products
        t += 2 if half == 0.5 else 0
        a[0, inst.block] = b[inst.block, 0] = half
        sa[0, 1], sb[1, 0] = 2.0 ** (t // 2), 2.0 ** (t - t // 2)
        try:
            d = mma.matmul(a, b, instruction=inst, c=np.full((1, 1), -(2.0 ** 20)),
                           scale_a=sa, scale_b=sb)
        except ValueError:  # the scale type cannot express it
            return False
        return float(d[0, 0]) == 2.0 ** (20 - j)
    h = TOP[inst.a_type]
    a = np.zeros((1, inst.k)); b = np.zeros((inst.k, 1))
    a[0, 0] = b[0, 0] = 2.0 ** h
    a[0, 1], b[1, 0] = 2.0 ** (h - j // 2), 2.0 ** (h - j + j // 2)
    kw = {}
    if inst.block:
        kw = {"scale_a": np.ones((1, inst.k // inst.block)),
              "scale_b": np.ones((inst.k // inst.block, 1))}
    try:
        d = mma.matmul(a, b, instruction=inst, c=np.full((1, 1), -(2.0 ** (2 * h))), **kw)
    except ValueError:  # 2**(h - j) is below the input type's range: cannot measure
        return False
    return float(d[0, 0]) == 2.0 ** (2 * h - j)


def kept_bits(inst) -> int:
    kept = 0
    for j in range(1, 41):
        if survives(inst, j):
            kept = j
    return kept


def main():
    rows = []
    for label, arch, op, q in PROBES:
        inst = mma.instruction(arch, op, q)
        rows.append([label, f"{op} {q}", kept_bits(inst), published(inst)])
    md = ["# Bits kept by the matrix units' adders\n\n",
          "Measured through `fpsim.mma` with one targeted vector per width (see the script's "
          "docstring); 'MMA-Sim' is the width arXiv:2511.10909 reports. "
          "Script: analysis/mma_accumulator_widths.py.\n\n",
          markdown_table(["instruction", "op / qualifier", "measured", "MMA-Sim"], rows)]
    out = output_path("mma_accumulator_widths.md")
    out.write_text("".join(md))
    print("".join(md))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 7), layout="constrained")
    y = np.arange(len(rows))
    colors = ["tab:red" if r[2] <= 13 else "tab:purple" if r[2] >= 35 else "tab:blue"
              for r in rows]
    ax.barh(y, [r[2] for r in rows], color=colors)
    for yi, r in zip(y, rows):
        ax.text(r[2] + 0.3, yi, str(r[2]), va="center", fontsize=9)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=9)
    ax.invert_yaxis()
    ax.axvline(23, color="k", ls=":", lw=1)
    ax.text(23.2, len(rows) - 0.5, "float32 significand (23)", fontsize=8)
    ax.set_xlabel("fractional bits kept when products are aligned and added")
    ax.set_title("Matrix-unit adder widths, measured through fpsim.mma")
    png = output_path("mma_accumulator_widths.png")
    fig.savefig(png, dpi=120)
    print(f"wrote {out} and {png}")


if __name__ == "__main__":
    main()
