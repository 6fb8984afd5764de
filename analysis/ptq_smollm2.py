"""GPTQ and AWQ on SmolLM2: 4-bit weights rounded to nearest, by GPTQ and by AWQ.

The GPTQ paper (Frantar et al., 2022, Table 3: Llama/OPT perplexity with 4-bit weights in
groups of 128) and the AWQ paper (Lin et al., 2023) both report the ordering
FP16 < GPTQ ~ AWQ < round-to-nearest (RTN).  Here the same on SmolLM2-135M-Instruct, with
fpsim's NumPy GPTQ (:mod:`fpsim.quant.gptq`) and AWQ (:mod:`fpsim.quant.awq`) driven by
``QuantConfig(weight_algorithm=...)``:

* weights: every linear of the 30 decoder layers (q, k, v, o, gate, up, down) in INT4 with
  one scale per 128 inputs (``int4_block128``), MXFP4 (E2M1 in blocks of 32 with E8M0
  scales) or NVFP4 (E2M1 in blocks of 16, E4M3 scales, FP32 tensor scale); activations,
  embedding and the tied lm_head in FP32 (weight-only, "W4A16");
* GPTQ: damping 0.01, lazy batches of 128, with and without ``act_order``; AWQ: a 20-point
  alpha grid and the clip search;
* calibration: the first 4,096 tokens of fpsim's shipped sentences (joined), in rows of 256
  (:func:`fpsim.models.ptq.calibrate`); evaluation: the perplexity of the first 1,024
  tokens of fpsim's public-domain text, which the calibration never sees;
* "FP32" is SmolLM2's packaged weights: the Q4_1 GGUF, dequantized to float32.

Run ``python analysis/ptq_smollm2.py --full`` to measure every row (about 15 minutes on two
cores; it writes analysis/data/ptq_smollm2.json).  Without ``--full`` the script measures
the FP32, INT4 RTN and INT4 GPTQ (act_order) rows again and shows the stored table after
checking that those rows agree (FP32 and RTN to 0.1 %; GPTQ, whose calibration moves with
the machine's BLAS kernels, to 5 %).  Needs ``python -m fpsim fetch smollm2``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import fpsim
from fpsim.models import QuantConfig

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import markdown_table, output_path  # noqa: E402

STORED = pathlib.Path(__file__).resolve().parent / "data" / "ptq_smollm2.json"
LINEARS = ("q", "k", "v", "o", "gate", "up", "down")
WEIGHTS = {"INT4 g128": "int4_block128", "MXFP4": "mxfp4_e2m1", "NVFP4": "nvfp4"}
ALGORITHMS = {"RTN": (None, {}), "GPTQ": ("gptq", {}),
              "GPTQ act_order": ("gptq", {"act_order": True}), "AWQ": ("awq", {})}
QUICK = [("FP32", None), ("INT4 g128", "RTN"), ("INT4 g128", "GPTQ act_order")]
TOKENS = 1024
#: GPTQ's stored perplexity is checked to within this relative tolerance (FP32 and RTN to
#: 0.1 %): its Hessians come from the machine's BLAS, whose AVX-512 kernels sum in another
#: order than the AVX2 ones, and a few of its round-to-nearest decisions flip with them
#: (measured: 32.93 and 32.37 for the same code on two machines).
GPTQ_RTOL = 0.05


def config(weights: str, algorithm: str) -> QuantConfig:
    algo, opts = ALGORITHMS[algorithm]
    return QuantConfig(sites={s: WEIGHTS[weights] for s in LINEARS}, weight_algorithm=algo,
                       options=dict(opts), name=f"{weights} {algorithm}")


def measure(cells, save=None) -> list[dict]:
    fp32 = fpsim.models.load("smollm2")
    ids = fp32.tokenize(fpsim.data.public_domain_text())[:TOKENS]
    rows = []
    for weights, algorithm in cells:
        t0 = time.perf_counter()
        model = fp32 if weights == "FP32" else fp32.with_quant(config(weights, algorithm))
        t_cal = time.perf_counter() - t0
        ppl = model.perplexity(ids)
        rows.append({"weights": weights, "algorithm": algorithm or "-", "perplexity": ppl,
                     "calibration_s": round(t_cal, 1)})
        print(f"{weights:10s} {algorithm or '-':15s} perplexity {ppl:8.3f}  "
              f"(calibration {t_cal:.0f} s)", flush=True)
        if save is not None:
            save(rows)
    return rows


def report(rows, source: str) -> None:
    fp32 = next(r["perplexity"] for r in rows if r["weights"] == "FP32")
    table = [[r["weights"], r["algorithm"], f"{r['perplexity']:.2f}",
              f"{r['perplexity'] - fp32:+.2f}", f"{r['calibration_s']:.0f}"] for r in rows]
    text = markdown_table(["weights", "algorithm", "perplexity", "vs FP32",
                           "calibration [s]"], table)
    print(text)
    print(source)
    output_path("ptq_smollm2.md").write_text(text + "\n" + source + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description="GPTQ and AWQ on SmolLM2 (4-bit weights)")
    p.add_argument("--full", action="store_true", help="measure every row and store them")
    args = p.parse_args(argv)
    if args.full:
        cells = [("FP32", None)] + [(w, a) for w in WEIGHTS for a in ALGORITHMS]

        def save(rows):
            STORED.parent.mkdir(exist_ok=True)
            STORED.write_text(json.dumps({"tokens": TOKENS, "rows": rows}, indent=1) + "\n")

        report(measure(cells, save), "Measured now.")
        return
    stored = json.loads(STORED.read_text())
    for new in measure(QUICK):
        old = next(r for r in stored["rows"]
                   if (r["weights"], r["algorithm"]) == (new["weights"], new["algorithm"]))
        rtol = GPTQ_RTOL if new["algorithm"].startswith("GPTQ") else 1e-3
        if abs(new["perplexity"] - old["perplexity"]) > rtol * old["perplexity"]:
            raise SystemExit(f"stored perplexity of {new['weights']} {new['algorithm']} is "
                             f"{old['perplexity']}, measured {new['perplexity']} now: rerun "
                             "with --full")
    report(stored["rows"], "Rows measured by `python analysis/ptq_smollm2.py --full`; the "
                           "FP32, INT4 RTN and INT4 GPTQ act_order rows re-measured now agree.")


if __name__ == "__main__":
    main()
