"""Cost of a fake-quantized forward pass next to the FP32 one, per preset, one run.

For each model (SmolLM2: the logits of 512 tokens; MiniLM: the embeddings of 64 shipped
sentences) and each preset, times ``forward()`` on the FP32 model and on the model under
the preset, interleaved (FP32, preset, FP32, preset, ...) so that both see the same machine,
and prints the ratio of the medians.  The weights are fake-quantized once, before the timing
(a model quantizes them on its first call and keeps them): what is timed is the pass a user
repeats.  The bars (issue 13): at most 1.2x for the per-channel / per-token INT8 and FP8
presets, at most 2x for MX and NVFP4.  The presets that emulate a GPU matrix instruction
bit for bit (``fp8_deepseek``, ``fp8_hopper*``: 15-20x) are not in the default list; pass
``--presets fp8_deepseek`` to time them.

Run with single-threaded BLAS, as the bars are stated:
``OPENBLAS_NUM_THREADS=1 python analysis/bench_forward.py`` (about 3 minutes; ``--repeat``,
``--presets``, ``--model``); writes analysis/output/bench_forward.md.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

import fpsim
from fpsim.models import load

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import markdown_table, output_path  # noqa: E402

#: preset -> the bar its forward pass must meet (ratio to FP32)
BARS = {"int8": 1.2, "int8_tensor": 1.2, "int8_weight_only": 1.2, "fp8_e4m3": 1.2,
        "fp8_e5m2": 1.2, "mxfp8": 2.0, "mxfp6": 2.0, "mxfp4": 2.0,
        "nvfp4": 2.0}


def forward_of(name: str, model):
    if name == "smollm2":
        ids = np.asarray(model.tokenize(fpsim.data.public_domain_text())[:512])
        return lambda: model.logits(ids)
    texts = fpsim.data.sentences()[:64]
    return lambda: model.embed(texts, batch_size=64)


def bench(name: str, presets, repeat: int) -> list[list]:
    ref = load(name)
    f_ref = forward_of(name, ref)
    f_ref()  # warm-up
    rows = []
    for p in presets:
        m = ref.with_quant(p) if hasattr(ref, "with_quant") else load(name, quant=p)
        f_q = forward_of(name, m)
        f_q()  # weights quantized here, kernels compiled
        t_ref, t_q = [], []
        for _ in range(repeat):
            for f, ts in ((f_ref, t_ref), (f_q, t_q)):
                t0 = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t0)
        a, b = float(np.median(t_ref)), float(np.median(t_q))
        bar = BARS.get(p)
        rows.append([name, p, a * 1e3, b * 1e3, b / a, "-" if bar is None else f"<= {bar}",
                     "-" if bar is None else ("yes" if b / a <= bar else "NO")])
        print(f"{name:8s} {p:20s} fp32 {a * 1e3:8.1f} ms  preset {b * 1e3:8.1f} ms  "
              f"ratio {b / a:5.2f}", flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Forward pass per preset next to FP32.")
    ap.add_argument("--model", nargs="+", default=["smollm2", "minilm"])
    ap.add_argument("--presets", nargs="+", default=list(BARS))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "(unset)")
    rows = []
    for name in args.model:
        rows += bench(name, args.presets, args.repeat)
    header = ["model", "preset", "FP32 ms", "preset ms", "ratio", "bar", "met"]
    text = (f"Forward pass, fake-quantized vs FP32 (medians of {args.repeat} interleaved runs; "
            f"OPENBLAS_NUM_THREADS={blas}, {os.cpu_count()} cpus)\n\n"
            + markdown_table(header, rows))
    output_path("bench_forward.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
