"""Quantization-aware training of MiniLM: MXFP4 W4A4 and INT4/INT8 W4A8 after 300 steps.

:func:`fpsim.qat.train` distils a fake-quantized student of all-MiniLM-L6-v2 from the FP32
model (the teacher), in NumPy, with straight-through gradients through every quantizer
(``ste="clipped"``) and Adam on float32 master weights.  Seven configs, 300 steps each,
seed 0, the library's defaults for MiniLM (:doc:`/qat`):

* ``mxfp4``: every linear's weights and inputs in OCP MXFP4 (E2M1 in blocks of 32, E8M0
  scales), "W4A4"; ``w4a8``: INT4 weights with one scale per output channel and INT8
  activations with one scale per token, on every linear; ``w4g32a8``: the same with INT4
  weights in groups of 32 along the input (``int4_block32``, a float32 scale each);
* each also with ``rotation="online_hadamard"``: every linear computes
  ``Q(x R) @ Q(R^T W) + b`` with a fixed random Hadamard matrix ``R`` of its input width
  (the same function in exact arithmetic; outlier channels spread over all channels), in
  training and in the evaluated model alike;
* and a diagnostic, ``mxfp4_weight_only``: the ``mxfp4`` weights with FP32 activations;
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

**The target of the issue that asked for QAT (mean cosine >= 0.99 on the held-out
sentences, INT4 W4A8 and MXFP4, in under 15 minutes on 2 cores)**: reached for INT4 W4A8
with INT4 weights in groups of 32 and the online Hadamard rotation (``w4g32a8 +
online_hadamard``: 0.9906, 678 s of training on one core); not with per-channel INT4
weights (0.9835 with the rotation) and not for ``mxfp4`` (0.968 with or without it).  The
diagnostic row shows why: with FP32 activations, the MXFP4 weights alone end at about
0.987 after the same training, below the target before any activation is quantized.  :doc:`/qat` discusses what limits each config and what else
was tried.

Run ``python analysis/qat_minilm.py --full --jobs 2`` to train the seven configs (about 45
minutes on two cores, one config on each; ``--full --only CONFIG ...`` trains some of them
again and replaces their rows).  It writes analysis/data/qat_minilm.json, with the fpsim
commit and the date of each run.  Without ``--full`` the script checks the stored run
against fpsim as it is now -- the "before" cosines of every config and the loss of their
first training step, measured again (about a minute) -- and shows the stored table and
curves.  Needs ``python -m fpsim fetch minilm``.
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
                     save_two_panel_figure, two_panel_figure, write_json)

HERE = pathlib.Path(__file__).resolve().parent
STORED = HERE / "data" / "qat_minilm.json"
PRESETS = {"mxfp4": "MXFP4 weights and activations (W4A4)",
           "w4a8": "INT4 per-channel weights, INT8 per-token activations",
           "w4g32a8": "INT4 weights in groups of 32, INT8 per-token activations",
           "mxfp4_weight_only": "MXFP4 weights, FP32 activations (a diagnostic: what the "
                                "weights alone allow)"}
#: the trained configs: (preset, rotation)
CONFIGS = [(p, r) for r in (None, "online_hadamard") for p in list(PRESETS)[:3]] + [
    ("mxfp4_weight_only", None)]
STEPS = 300
SEED = 0
EVAL_EVERY = 25
TARGET = 0.99  # the target mean cosine
COMMAND = "python analysis/qat_minilm.py --full --jobs 2"


def label(preset: str, rotation: str | None) -> str:
    return preset if rotation is None else f"{preset} + {rotation}"


def run(config) -> dict:
    """Train ``(preset, rotation)`` for STEPS steps; the row stored in the JSON."""
    preset, rotation = config
    t0 = time.perf_counter()
    res = train("minilm", preset, steps=STEPS, rng=SEED, eval_every=EVAL_EVERY,
                progress=False, rotation=rotation)
    wall = time.perf_counter() - t0
    rot_call = "" if rotation is None else f', rotation="{rotation}"'
    rot_cli = "" if rotation is None else f" --rotation {rotation}"
    row = {
        "preset": preset, "rotation": rotation, "label": label(preset, rotation),
        "quantization": PRESETS[preset] + ("" if rotation is None else
                                           ", a random Hadamard at every linear's input"),
        "steps": len(res.losses), "seed": SEED, "run": run_metadata(),
        "before": {k: float(v) for k, v in res.before.items()},
        "after": {k: float(v) for k, v in res.after.items() if k != "history"},
        "history": [[int(s), float(c)] for s, c in res.after.get("history", [])],
        "training_s": round(res.seconds, 1), "wall_s": round(wall, 1),
        "settings": res.settings,
        "losses": [float(v) for v in res.losses],
        "call": f'fpsim.qat.train("minilm", "{preset}", steps={STEPS}, rng={SEED}, '
                f"eval_every={EVAL_EVERY}{rot_call})",
        "cli": f"fpsim qat --model minilm --preset {preset} --steps {STEPS} --seed {SEED}"
               + rot_cli,
    }
    print(f"{row['label']}: mean cosine {row['before']['mean_cosine']:.4f} -> "
          f"{row['after']['mean_cosine']:.4f} (min {row['after']['min_cosine']:.4f}), "
          f"training {res.seconds:.0f} s, wall {wall:.0f} s", flush=True)
    return row


def measure_full(jobs: int = 1, only=None) -> dict:
    """Train every config (``jobs`` at a time, each in its own process) and store them;
    ``only``: train just these labels and put their rows into the stored run."""
    configs = [c for c in CONFIGS if only is None or label(*c) in only]
    if only is not None:
        unknown = sorted(set(only) - {label(*c) for c in CONFIGS})
        if unknown:
            raise SystemExit(f"--only: unknown config(s) {unknown}; configs: "
                             + ", ".join(repr(label(*c)) for c in CONFIGS))
        stored = json.loads(STORED.read_text())
    else:
        stored = run_metadata(model="minilm", command=COMMAND, eval_every=EVAL_EVERY,
                              jobs=jobs, rows=[])
    if jobs == 1:
        rows = [run(c) for c in configs]
    else:
        import concurrent.futures
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            rows = list(pool.map(run, configs))
    by_label = {r["label"]: r for r in stored["rows"]}
    by_label.update({r["label"]: r for r in rows})
    stored["rows"] = [by_label[label(*c)] for c in CONFIGS if label(*c) in by_label]
    write_json(STORED, stored)
    return stored


def later_rows(stored: dict) -> str:
    """The rows trained by a later ``--only`` run than the stored file's, with their commit."""
    out = []
    for r in stored["rows"]:
        run_ = r.get("run")
        if run_ and run_.get("fpsim_commit") != stored.get("fpsim_commit"):
            commit = (run_.get("fpsim_commit") or "unknown")[:10]
            if run_.get("fpsim_uncommitted"):
                commit += " with uncommitted changes"
            out.append(f"{r['label']} (fpsim {commit}, {run_['date'][:10]})")
    return (" Trained later with `--only`: " + ", ".join(out) + ".") if out else ""


def check(stored: dict) -> None:
    """Measure the 'before' metrics and the first step's loss again; stop if they moved."""
    model = MiniLM.load()
    for row in stored["rows"]:
        res = train(model, row["preset"], steps=1, rng=row["seed"], progress=False,
                    rotation=row.get("rotation"))
        now = {"before mean cosine": (res.before["mean_cosine"], row["before"]["mean_cosine"]),
               "before min cosine": (res.before["min_cosine"], row["before"]["min_cosine"]),
               "first-step loss": (float(res.losses[0]), row["losses"][0])}
        for what, (new, old) in now.items():
            tol = 1e-4 * abs(old) if what == "first-step loss" else 1e-5
            if not abs(new - old) <= tol:
                raise SystemExit(f"{row['label']}: the stored {what} is {old}, measured {new} "
                                 f"now: rerun `{COMMAND}`")
        print(f"{row['label']}: before {res.before['mean_cosine']:.6f} (stored "
              f"{row['before']['mean_cosine']:.6f}), first-step loss {res.losses[0]:.6f} "
              f"(stored {row['losses'][0]:.6f})", flush=True)


def report(stored: dict, source: str) -> None:
    rows = stored["rows"]
    table = [[f"{r['label']}: {r['quantization']}", r["steps"],
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
    plt, fig, (ax_loss, ax_cos) = two_panel_figure()
    colors = {"mxfp4": "tab:blue", "w4a8": "tab:orange", "w4g32a8": "tab:green",
              "mxfp4_weight_only": "tab:purple"}
    for r in rows:
        color, ls = colors[r["preset"]], "-" if r.get("rotation") is None else "--"
        if r["preset"] == "mxfp4_weight_only":
            ls = ":"
        name = r["label"]
        loss = np.asarray(r["losses"])
        steps = np.arange(1, loss.size + 1)
        window = min(15, loss.size)
        ax_loss.plot(steps, loss, color=color, alpha=0.3, lw=0.8)
        mean = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax_loss.plot(steps[window - 1:], mean, color=color, lw=2, ls=ls,
                     label=f"{name}, running mean of {window} steps")
        points = [(0, r["before"]["mean_cosine"])] + [tuple(h) for h in r["history"]]
        if points[-1][0] != r["steps"]:
            points.append((r["steps"], r["after"]["mean_cosine"]))
        x, y = zip(*points)
        ax_cos.plot(x, y, color=color, ls=ls, marker="o", ms=4, label=name)
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
    save_two_panel_figure(plt, fig, (ax_loss, ax_cos), path,
                          "Quantization-aware training of MiniLM (all-MiniLM-L6-v2) by "
                          "distillation from FP32", ("upper right", "lower right"),
                          grid_which="both")


def main(argv=None):
    # a literal description: the gallery runs the script without its docstring
    p = argparse.ArgumentParser(description="Quantization-aware training of MiniLM "
                                            "(mxfp4 and w4a8, with and without an online "
                                            "Hadamard rotation, 300 steps)")
    p.add_argument("--full", action="store_true",
                   help="train the seven configs (about an hour on one core) and store them")
    p.add_argument("--jobs", type=int, default=1,
                   help="with --full: configs trained at once, one process (and one thread) "
                        "each")
    p.add_argument("--only", nargs="+", metavar="CONFIG",
                   help="with --full: train just these configs (e.g. 'w4g32a8 + "
                        "online_hadamard') and replace their rows in the stored run")
    args = p.parse_args(argv)
    if args.full:
        report(measure_full(max(1, args.jobs), args.only),
               "Measured now." if args.only is None else "Partly measured now.")
        return
    stored = json.loads(STORED.read_text())
    check(stored)
    report(stored, stored_source(stored, "the 'before' cosines and the first step's loss, "
                                         "measured again now, agree.") + later_rows(stored))


if __name__ == "__main__":
    main()
