"""SmolLM2 perplexity under 4-bit and 8-bit recipes, with and without QuaRot's rotation.

1. Every decoder linear's weight and input quantized (the LM head stays in FP32), each plain
   and with ``QuantConfig(rotation="hadamard")`` (QuaRot: a random Hadamard rotation of the
   residual stream folded into the weights, plus the online Hadamard before ``down``;
   :mod:`fpsim.models.rotation`): INT8 per tensor (QuaRot's case: one scale for activations
   with outlier channels), 8-bit weights with 4-bit activations in blocks of 32, and W4A4
   in NVFP4 (``nvfp4``), MXFP4 (``mxfp4_e2m1``) and INT4 in blocks of 32 (``int4_block32``).
   The rotation spreads outlier channels over all channels: a large gain where one scale
   covers them, and on SmolLM2 a loss for 4-bit *block* weights, which the folded RMSNorm
   scales (mixed into every row by the rotation) make harder to quantize.
2. The ordering torchao reports for Llama-3.1-8B (wikitext perplexity: bf16 7.33 < fp8
   rowwise 7.42 ~ int8 W8A8 7.45 < mxfp8 7.60 < nvfp4 8.45), here on SmolLM2-135M with the
   bit-exact torchao recipes: ``bfloat16`` casts, FP8 E4M3 per-channel weights and per-token
   activations, INT8 per-channel / per-token, ``mxfp8_e4m3_torchao`` under torchao's FLOOR
   and RCEIL scales, and ``nvfp4_torchao``.

Data and metric: the first 512 tokens of fpsim's public-domain text (one window),
perplexity of the next-token loss, with the 95% bootstrap interval of the difference to FP32
(``fpsim.app.evaluate``).  Run: ``python analysis/smollm2_w4a4_rotation.py`` (a few minutes on
two cores, about 25 model runs of 512 tokens; needs ``python -m fpsim fetch smollm2``); writes
analysis/output/smollm2_w4a4_rotation.{md,png}.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

from fpsim.app.evaluate import evaluate
from fpsim.models import QuantConfig
from fpsim.quant import QuantSpec

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import markdown_table, output_path  # noqa: E402

LINEARS = ("q", "k", "v", "o", "gate", "up", "down")


def w_a(weight, act, **kw) -> dict:
    sites = {s: weight for s in LINEARS}
    sites.update({f"{s}.input": act for s in LINEARS})
    return dict(sites=sites, **kw)


def configs() -> tuple[list, list]:
    w4a4 = []
    for label, weight, act in (("W8A8 INT8 per tensor", "int8", "int8"),
                               ("W8 A4 INT4 g32", "int8_weight_channel", "int4_block32"),
                               ("W4A4 NVFP4", "nvfp4", "nvfp4"),
                               ("W4A4 MXFP4", "mxfp4_e2m1", "mxfp4_e2m1"),
                               ("W4A4 INT4 g32", "int4_block32", "int4_block32")):
        for rot in (None, "hadamard"):
            name = f"{label}{' + rotation' if rot else ''}"
            w4a4.append(QuantConfig(**w_a(weight, act, rotation=rot), name=name))
    fp8_channel = QuantSpec(format="float8_e4m3fn", granularity="channel")
    fp8_token = QuantSpec(format="float8_e4m3fn", granularity="token")
    ladder = [
        QuantConfig(**w_a("bfloat16", "bfloat16"), name="bf16"),
        QuantConfig(**w_a(fp8_channel, fp8_token), name="fp8 rowwise"),
        QuantConfig(**w_a("int8_weight_channel", "int8_token"), name="int8 W8A8"),
        QuantConfig(**w_a(QuantSpec(format="float8_e4m3fn", granularity="block",
                                    block_size=32, scale_rule="floor", stack="torchao"),
                          QuantSpec(format="float8_e4m3fn", granularity="block",
                                    block_size=32, scale_rule="floor", stack="torchao")),
                    name="mxfp8 (torchao, floor)"),
        QuantConfig(**w_a(QuantSpec(format="float8_e4m3fn", granularity="block",
                                    block_size=32, scale_rule="rceil", stack="torchao"),
                          QuantSpec(format="float8_e4m3fn", granularity="block",
                                    block_size=32, scale_rule="rceil", stack="torchao")),
                    name="mxfp8 (torchao, rceil)"),
        QuantConfig(**w_a("nvfp4_torchao", "nvfp4_torchao"), name="nvfp4 (torchao)"),
    ]
    return w4a4, ladder


def main():
    w4a4, ladder = configs()
    results = evaluate("smollm2", ["fp32", *w4a4, *ladder], max_tokens=512, progress=False,
                       n_boot=200)
    rows = []
    for r in results:
        m = r.metrics
        lo, hi = m["ppl_delta_ci95"]
        rows.append([r.preset, f"{m['ppl']:.3f}",
                     f"{m['ppl_delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                     f"{m['kl_mean']:.4f}"])
    head = ["config", "perplexity", "delta vs FP32 [95% CI]", "mean KL (nats)"]
    text = ("# SmolLM2-135M: W4A4 with and without QuaRot's rotation; torchao's 8-bit ladder\n\n"
            "First 512 tokens of fpsim's public-domain text; FP32 is the "
            "Q4_1 GGUF weights as float32. Script: analysis/smollm2_w4a4_rotation.py.\n\n"
            + markdown_table(head, rows))
    output_path("smollm2_w4a4_rotation.md").write_text(text)
    print(text)
    plot(results, output_path("smollm2_w4a4_rotation.png"))


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.preset for r in results]
    ppl = np.array([r.metrics["ppl"] for r in results])
    colors = ["tab:gray" if n == "fp32" else "tab:green" if "rotation" in n else
              "tab:red" if n.startswith("W") else "tab:blue"
              for n in names]
    fig, ax = plt.subplots(figsize=(11, 4.8), layout="constrained")
    ax.bar(range(len(names)), ppl, color=colors)
    ax.axhline(ppl[0], color="k", lw=0.8, ls="--", label=f"FP32 {ppl[0]:.2f}")
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("perplexity (log scale, lower is better)")
    ax.set_title("SmolLM2-135M: plain (red) vs QuaRot-rotated (green); torchao's ladder (blue)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3, which="both")
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
