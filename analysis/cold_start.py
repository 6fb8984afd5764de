"""Cold start: how long the README's examples and ``fpsim report`` spend compiling kernels.

fpsim's kernels are Numba functions, compiled on their first call and then cached on disk
(``NUMBA_CACHE_DIR``, else ``__pycache__`` beside the sources).  A fresh install pays for
that once.  This script measures it the way a new user meets it: each step runs in a new
Python process with an empty kernel cache, then again in a new process with the cache the
first run filled.  "Compiling" is the time Numba spent compiling in the cold run (its
``numba:compile`` events, which fire for real compiles only, not for cache loads); the warm
run's wall time is the work itself.

Steps, in the order a newcomer takes them, sharing one cache folder:

1. ``README examples``: every Python example of README.md (the doctest block, the model
   block and the plotting block; the Hypothesis block only defines a test), run as written;
2. ``fpsim report`` (with ``--report``, about 3 minutes more): the main job.

The bar (issue 13): at most 20 s of compiling in all.  A second table gives the first call of
each public function alone, each in a new process with an empty cache (the bar: a few
seconds each).  Run ``python analysis/cold_start.py [--report]``; writes
analysis/output/cold_start.md.  Needs ``python -m fpsim fetch minilm``.
"""

from __future__ import annotations

import argparse
import doctest
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import markdown_table, output_path  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
BAR_SECONDS = 20.0


def readme_examples(readme: pathlib.Path = ROOT / "README.md") -> str:
    """The README's Python examples as one script (doctest blocks as their source)."""
    parts = []
    for block in re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S):
        if block.lstrip().startswith(">>>"):
            examples = doctest.DocTestParser().get_examples(block)
            parts.append("".join(ex.source for ex in examples))
        elif "@given" in block:  # defines a test of the user's own kernel: nothing to run
            continue
        else:
            parts.append(block)
    return "\n".join(parts)


#: Runs a script or module (argv[1]: "script" or "module") and writes to the file argv[2] the
#: seconds Numba spent compiling (the outermost "numba:compile" events: real compiles, not
#: cache loads) and the wall time.
_TIMED = """
import json, runpy, sys, time
from numba.core import event

compiling, depth, start = [0.0], [0], [0.0]


class Listener(event.Listener):
    def on_start(self, ev):
        if depth[0] == 0:
            start[0] = time.perf_counter()
        depth[0] += 1

    def on_end(self, ev):
        depth[0] -= 1
        if depth[0] == 0:
            compiling[0] += time.perf_counter() - start[0]


event.register("numba:compile", Listener())
kind, out, target, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
sys.argv = [target] + args
t0 = time.perf_counter()
try:
    if kind == "script":
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
except SystemExit as e:
    if e.code not in (None, 0):
        raise
with open(out, "w") as f:
    json.dump({"compiling": compiling[0], "wall": time.perf_counter() - t0}, f)
"""


def timed_run(kind: str, target: str, args: list[str], env: dict, cwd: str) -> dict:
    """Wall and compiling seconds of a script or module run in a new process."""
    out = os.path.join(cwd, "timing.json")
    subprocess.run([sys.executable, "-c", _TIMED, kind, out, target, *args], env=env, cwd=cwd,
                   check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)


#: First calls of the public functions, each measured alone (its own empty cache).
FIRST_CALLS = {
    "encode (e4m3fn)": 'fpsim.encode(x, "float8_e4m3fn")',
    "decode (e4m3fn)": 'fpsim.decode(np.zeros(8, np.uint8), "float8_e4m3fn")',
    "quantize (e2m1, toward_zero)": 'fpsim.quantize(x, "float4_e2m1fn", rounding="toward_zero")',
    "quantize (stochastic)": 'fpsim.quantize(x, "e4m3fn", rounding="stochastic", rng=0)',
    "quantize (float64 input)": 'fpsim.quantize(x.astype(np.float64), "e5m2")',
    "quantize (float16 input)": 'fpsim.quantize(x.astype(np.float16), "e5m2")',
    "fake_quantize (mxfp4_e2m1)": 'fpsim.fake_quantize(x, "mxfp4_e2m1")',
    "fake_quantize (nvfp4)": 'fpsim.fake_quantize(x, "nvfp4")',
    "fake_quantize (int8_channel)": 'fpsim.fake_quantize(x, "int8_channel")',
    "quantize_tensor (mxfp8_e4m3)": 'fpsim.quantize_tensor(x, "mxfp8_e4m3")',
    "calibrate (mse, e4m3fn)": 'fpsim.calibrate(x, "e4m3fn", calibration="mse")',
    "error_report (e5m2)": 'fpsim.error_report(x, "e5m2")',
    "qmatmul (int8, int32 accumulator)":
        'fpsim.qmatmul(x, x.T, a_spec="int8_token", b_spec="int8_channel", accumulator="int32")',
    "llm_int8_matmul": 'fpsim.llm_int8_matmul(x, x.T)',
    "smoothquant_matmul": 'fpsim.smoothquant_matmul(x, x.T)',
    "mma.matmul (Hopper FP8 wgmma)":
        'fpsim.mma.matmul(x[:64, :64], x[:64, :64], instruction=fpsim.mma.instruction('
        '"Hopper", "wgmma", "m64n8k32.f32.e4m3.e4m3"), round_inputs=True)',
}


def first_calls(env: dict, tmp: str) -> list[list]:
    """Seconds of each public function's first call with an empty cache, and of its second."""
    rows = []
    for name, call in FIRST_CALLS.items():
        code = (f"import time, numpy as np, fpsim, fpsim.mma\n"
                f"x = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)\n"
                f"t = time.perf_counter(); {call}; t1 = time.perf_counter() - t\n"
                f"t = time.perf_counter(); {call}; t2 = time.perf_counter() - t\n"
                f"print(t1, t2)")
        cache = tempfile.mkdtemp(dir=tmp)
        out = subprocess.run([sys.executable, "-c", code], env=dict(env, NUMBA_CACHE_DIR=cache),
                             cwd=tmp, check=True, capture_output=True, text=True).stdout
        t1, t2 = (float(v) for v in out.split())
        rows.append([name, t1, t2 * 1e3])
    return rows


def measure(with_report: bool) -> list[list]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(tmp, "numba"),
                   OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg")
        script = pathlib.Path(tmp, "readme_examples.py")
        script.write_text(readme_examples())
        steps = [("README examples", "script", str(script), [])]
        if with_report:
            steps.append(("fpsim report", "module", "fpsim",
                          ["report", "--out", os.path.join(tmp, "report")]))
        for name, kind, target, args in steps:
            cold = timed_run(kind, target, args, env, tmp)
            warm = timed_run(kind, target, args, env, tmp)
            rows.append([name, cold["wall"], warm["wall"], cold["compiling"]])
    rows.append(["all"] + [sum(r[i] for r in rows) for i in (1, 2, 3)])
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Seconds the README's examples (and fpsim report) spend compiling "
                    "kernels on a fresh install.")
    parser.add_argument("--report", action="store_true",
                        help="also time fpsim report cold and warm (about 3 minutes more)")
    args = parser.parse_args(argv)
    rows = measure(args.report)
    table = markdown_table(["step", "cold (s)", "warm (s)", "compiling (s)"], rows)
    verdict = (f"\nCompiling in all: {rows[-1][3]:.1f} s (bar: {BAR_SECONDS:.0f} s, "
               f"{'met' if rows[-1][3] <= BAR_SECONDS else 'not met'}).\n")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        calls = first_calls(env, tmp)
    calls_table = ("\nFirst call of each public function on a 256 x 256 float32 array, each "
                   "in a new process with an empty kernel cache:\n\n"
                   + markdown_table(["call", "first call (s)", "second call (ms)"], calls))
    output_path("cold_start.md").write_text(table + verdict + calls_table)
    print(table + verdict + calls_table)


if __name__ == "__main__":
    main()
