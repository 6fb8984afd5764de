"""Quantization-aware training of MiniLM: MXFP4 W4A4 and INT4/INT8 W4A8 after 300 steps.

:func:`fpsim.qat.train` distils a fake-quantized student of all-MiniLM-L6-v2 from the FP32
model (the teacher), in NumPy, with straight-through gradients through every quantizer
(``ste="clipped"``) and Adam on float32 master weights.  Two configs, 300 steps each, seed
0, the library's defaults for MiniLM (:doc:`/qat`):

* ``mxfp4``: every linear's weights and inputs in OCP MXFP4 (E2M1 in blocks of 32, E8M0
  scales), "W4A4"; ``w4a8``: INT4 weights with one scale per output channel and INT8
  activations with one scale per token, on every linear;
* loss: the mean cosine distance between the student's and the teacher's sentence
  embeddings (mean-pooled last hidden states) plus 3 times the hidden-state loss (every
  layer's output against the teacher's: mean squared error over the teacher's mean
  square, averaged over the 6 layers);
* data: batches of 48 texts, a quarter training sentences (the public-domain prose split
  into sentences plus a seeded 75 % of fpsim's ``sentences.txt``), three quarters fresh
  synthetic texts drawn every step and labelled by the teacher; the other 25 % of
  ``sentences.txt`` (80 sentences) are held out and never trained on;
* Adam at a peak learning rate of 2e-4 (10 times that for norms and biases), 10 warm-up
  steps, cosine decay to a tenth, gradient-norm clipping at 1; embeddings frozen;
* metric: the mean (and minimum) cosine between the student's and the FP32 embeddings of
  the 80 held-out sentences, before training (plain round-to-nearest fake quantization),
  every 25 steps and after the 300 steps.  FP32 scores 1 by definition.

"training" is the time of the 300 steps (including the twelve held-out evaluations on
the way, a few seconds each); "wall" is the whole :func:`~fpsim.qat.train` call (model
load, the teacher's held-out embeddings, the metric before and after, training).  Both
depend on the machine: the stored run used one thread (``OPENBLAS_NUM_THREADS=1
NUMBA_NUM_THREADS=1``) on a 2-core machine with another job on the other core.

**The target of the issue that asked for QAT (mean cosine >= 0.99 for both configs) is
not reached**: the table shows what 300 steps reach.  :doc:`/qat` discusses what limits
each config (the outlier channels of the 4-bit activations for ``mxfp4``; the INT4
per-channel weights for ``w4a8``) and what else was tried.

Run ``python analysis/qat_minilm.py --full`` to train both configs (about 20 minutes on
one core; it writes analysis/data/qat_minilm.json, with the fpsim commit and the date).
Without ``--full`` the script checks the stored run against fpsim as it is now -- the
"before" cosines of both configs and the loss of their first training step, measured
again (about half a minute) -- and shows the stored table and curves.  Needs
``python -m fpsim fetch minilm``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

from fpsim.models.bert import MiniLM
from fpsim.qat import train

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import (markdown_table, output_path, run_metadata, stored_source,  # noqa: E402
                     write_json)

HERE = pathlib.Path(__file__).resolve().parent
STORED = HERE / "data" / "qat_minilm.json"
PRESETS = {"mxfp4": "MXFP4 weights and activations (W4A4)",
           "w4a8": "INT4 per-channel weights, INT8 per-token activations"}
STEPS = 300
SEED = 0
EVAL_EVERY = 25
TARGET = 0.99  # the target mean cosine
COMMAND = "python analysis/qat_minilm.py --full"



def run(preset: str) -> dict:
    """Train ``preset`` for STEPS steps; the row stored in the JSON."""
    t0 = time.perf_counter()
    res = train("minilm", preset, steps=STEPS, rng=SEED, eval_every=EVAL_EVERY,
                progress=False)
    wall = time.perf_counter() - t0
    row = {
        "preset": preset, "quantization": PRESETS[preset], "steps": len(res.losses),
        "seed": SEED,
        "before": {k: float(v) for k, v in res.before.items()},
        "after": {k: float(v) for k, v in res.after.items() if k != "history"},
        "history": [[int(s), float(c)] for s, c in res.after.get("history", [])],
        "training_s": round(res.seconds, 1), "wall_s": round(wall, 1),
        "settings": res.settings,
        "losses": [float(v) for v in res.losses],
        "call": f'fpsim.qat.train("minilm", "{preset}", steps={STEPS}, rng={SEED}, '
                f"eval_every={EVAL_EVERY})",
        "cli": f"fpsim qat --model minilm --preset {preset} --steps {STEPS} --seed {SEED}",
    }
    print(f"{preset}: mean cosine {row['before']['mean_cosine']:.4f} -> "
          f"{row['after']['mean_cosine']:.4f} (min {row['after']['min_cosine']:.4f}), "
          f"training {res.seconds:.0f} s, wall {wall:.0f} s", flush=True)
    return row


def measure_full() -> dict:
    stored = run_metadata(model="minilm", command=COMMAND, eval_every=EVAL_EVERY, rows=[])
    for preset in PRESETS:
        stored["rows"].append(run(preset))
        write_json(STORED, stored)
    return stored


def check(stored: dict) -> None:
    """Measure the 'before' metrics and the first step's loss again; stop if they moved."""
    model = MiniLM.load()
    for row in stored["rows"]:
        res = train(model, row["preset"], steps=1, rng=row["seed"], progress=False)
        now = {"before mean cosine": (res.before["mean_cosine"], row["before"]["mean_cosine"]),
               "before min cosine": (res.before["min_cosine"], row["before"]["min_cosine"]),
               "first-step loss": (float(res.losses[0]), row["losses"][0])}
        for what, (new, old) in now.items():
            tol = 1e-4 * abs(old) if what == "first-step loss" else 1e-5
            if not abs(new - old) <= tol:
                raise SystemExit(f"{row['preset']}: the stored {what} is {old}, measured {new} "
                                 f"now: rerun `{COMMAND}`")
        print(f"{row['preset']}: before {res.before['mean_cosine']:.6f} (stored "
              f"{row['before']['mean_cosine']:.6f}), first-step loss {res.losses[0]:.6f} "
              f"(stored {row['losses'][0]:.6f})", flush=True)


def report(stored: dict, source: str) -> None:
    rows = stored["rows"]
    table = [[f"{r['preset']}: {r['quantization']}", r["steps"],
              f"{r['before']['mean_cosine']:.4f}", f"{r['after']['mean_cosine']:.4f}",
              f"{r['after']['mean_cosine'] - r['before']['mean_cosine']:+.4f}",
              f"{r['after']['min_cosine']:.4f}", f"{r['training_s']:.0f}",
              f"{r['wall_s'] / 60:.1f}"] for r in rows]
    text = ("# QAT of MiniLM: held-out mean cosine to FP32, before and after training\n\n"
            "Mean cosine between the quantized and the FP32 embeddings of the 80 held-out "
            "sentences (FP32: 1 by definition; the issue's target: 0.99). Seed "
            f"{rows[0]['seed']}, the library's defaults. {source}\n\n"
            + markdown_table(["config", "steps", "before", "after", "gain",
                              "min cosine after", "training [s]", "wall [min]"], table))
    output_path("qat_minilm.md").write_text(text)
    print(text)
    plot(rows, output_path("qat_minilm.png"))


def plot(rows, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_cos) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    for r, color in zip(rows, ("tab:blue", "tab:orange")):
        label = f"{r['preset']} ({r['quantization']})"
        loss = np.asarray(r["losses"])
        steps = np.arange(1, loss.size + 1)
        window = min(15, loss.size)
        ax_loss.plot(steps, loss, color=color, alpha=0.3, lw=0.8)
        mean = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax_loss.plot(steps[window - 1:], mean, color=color, lw=2,
                     label=f"{r['preset']}, running mean of {window} steps")
        points = [(0, r["before"]["mean_cosine"])] + [tuple(h) for h in r["history"]]
        if points[-1][0] != r["steps"]:
            points.append((r["steps"], r["after"]["mean_cosine"]))
        x, y = zip(*points)
        ax_cos.plot(x, y, color=color, marker="o", ms=4, label=label)
        ax_cos.annotate(f"{y[-1]:.4f}", (x[-1], y[-1]), xytext=(-8, -14),
                        textcoords="offset points", ha="right", color=color, fontsize=9)
        ax_cos.annotate(f"{y[0]:.4f}", (x[0], y[0]), xytext=(6, -4),
                        textcoords="offset points", color=color, fontsize=9)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("training step")
    ax_loss.set_ylabel("loss: cosine distance + 3 x hidden-state loss")
    ax_loss.set_title("Training loss (faint: every step, on that step's batch)")
    ax_cos.axhline(TARGET, color="gray", ls="--", lw=1, label=f"issue's target ({TARGET})")
    ax_cos.set_xlabel("training step")
    ax_cos.set_ylabel("mean cosine to FP32, 80 held-out sentences")
    ax_cos.set_title(f"Held-out mean cosine (every {EVAL_EVERY} steps)")
    for ax in (ax_loss, ax_cos):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=9, loc="lower right" if ax is ax_cos else "upper right")
    fig.suptitle("Quantization-aware training of MiniLM (all-MiniLM-L6-v2) by distillation "
                 "from FP32")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    # a literal description: the gallery runs the script without its docstring
    p = argparse.ArgumentParser(description="Quantization-aware training of MiniLM "
                                            "(mxfp4 and w4a8, 300 steps)")
    p.add_argument("--full", action="store_true",
                   help="train both configs (about 20 minutes on one core) and store them")
    args = p.parse_args(argv)
    if args.full:
        report(measure_full(), "Measured now.")
        return
    stored = json.loads(STORED.read_text())
    check(stored)
    report(stored, stored_source(stored, "the 'before' cosines and the first step's loss, "
                                         "measured again now, agree."))

if __name__ == "__main__":
    main()
