"""Speed of the bit-exact matrix units: fpsim.mma next to float32 BLAS and MMA-Sim, one run.

Times, as medians after a warm-up (which also compiles the kernels):

* ``mma.matmul`` on Hopper FP8 ``wgmma`` (``m64n256k32.f32.e4m3.e4m3``) of an (M, 4096) x
  (4096, N) product of E4M3 values (M = N = 512 by default; ``--size`` changes it), every
  output element the exact instruction chained along K;
* ``np.matmul`` of the same operands in float32 (OpenBLAS, with the threads it was given);
* MMA-Sim (microsoft/MMA-Sim, Python loops per element) on one ``m64n8k32`` tile, when it is
  available: set ``MMASIM_DIR`` to a checkout and ``MMA_GOLDEN_VENV`` to a venv with torch (the
  one ``tests/golden/make_mma_golden.py`` builds); it runs there in a subprocess.

Ratios are per multiply-add, from this one run.  fpsim's kernel uses every core Numba has;
BLAS uses ``OPENBLAS_NUM_THREADS`` (set it to the core count for a like-for-like ratio).
Run: ``OPENBLAS_NUM_THREADS=2 python analysis/bench_mma.py`` (about 10 s); writes
analysis/output/bench_mma.md.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

import fpsim
from fpsim import mma

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import markdown_table, output_path  # noqa: E402

MMASIM_SNIPPET = """
import sys, time; sys.path.insert(0, sys.argv[1])
import torch
from mmasim.simulator.nv_ptx import wgmma
inst = wgmma("Hopper", "m64n8k32.f32.e4m3.e4m3")
A = torch.randn(64, 32).to(torch.float8_e4m3fn); B = torch.randn(32, 8).to(torch.float8_e4m3fn)
C = torch.zeros(64, 8)
ts = []
for _ in range(3):
    t = time.perf_counter(); inst(A, B, C); ts.append(time.perf_counter() - t)
print(sorted(ts)[1] / (64 * 8 * 32))
"""


def median_time(fn, repeat):
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def mmasim_seconds_per_mac():
    src, venv = os.environ.get("MMASIM_DIR"), os.environ.get("MMA_GOLDEN_VENV", "/tmp/mma-venv")
    py = pathlib.Path(venv) / "bin" / "python"
    if not src or not py.exists():
        return None
    r = subprocess.run([str(py), "-c", MMASIM_SNIPPET, src], capture_output=True, text=True)
    return float(r.stdout.strip()) if r.returncode == 0 else None


def main(argv=None):
    p = argparse.ArgumentParser(description="fpsim.mma speed next to float32 BLAS and MMA-Sim")
    p.add_argument("--size", type=int, default=512, help="M = N (default 512); K = 4096")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    m = n = args.size
    k = 4096
    rng = np.random.default_rng(0)
    a = fpsim.quantize(rng.standard_normal((m, k)), "e4m3fn").astype(np.float64)
    b = fpsim.quantize(rng.standard_normal((k, n)), "e4m3fn").astype(np.float64)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    inst = mma.instruction("Hopper", "wgmma", "m64n256k32.f32.e4m3.e4m3")
    macs = m * n * k
    t_mma = median_time(lambda: mma.matmul(a, b, instruction=inst), args.repeat)
    t_blas = median_time(lambda: a32 @ b32, max(args.repeat, 10))
    t_sim = mmasim_seconds_per_mac()
    rows = [["fpsim mma.matmul (Hopper wgmma e4m3)", f"{t_mma * 1e3:.1f}",
             f"{t_mma / macs * 1e9:.2f}", f"{t_mma / t_blas:.0f}x slower"],
            ["np.matmul float32 (BLAS)", f"{t_blas * 1e3:.2f}", f"{t_blas / macs * 1e9:.4f}",
             "1"]]
    if t_sim is not None:
        rows.append(["MMA-Sim (m64n8k32 tile)", f"{t_sim * macs * 1e3:.0f} (extrapolated)",
                     f"{t_sim * 1e9:.0f}", f"fpsim is {t_sim * macs / t_mma:.0f}x faster"])
    else:
        rows.append(["MMA-Sim", "not available here (set MMASIM_DIR, MMA_GOLDEN_VENV)", "-",
                     "-"])
    text = (f"# fpsim.mma speed: ({m}, {k}) x ({k}, {n}), {os.cpu_count()} cpus, "
            f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}\n\n"
            + markdown_table(["implementation", "ms", "ns per multiply-add", "ratio"], rows)
            + "\nScript: analysis/bench_mma.py (medians of one run).\n")
    out = output_path("bench_mma.md")
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
