"""Compile the Numba kernels ahead of use, on every core: ``fpsim warmup``.

fpsim's kernels compile on their first call and are cached on disk (Numba's cache, in
``NUMBA_CACHE_DIR`` or beside the package), so only the first run on a machine pays for
compilation.  :func:`warmup` pays it up front: it runs small representative calls (the
casts of the README, stochastic rounding, the block recipes, the standard presets' linears),
grouped into tasks that run in separate processes at once, and shows a progress bar.  Later
processes load the compiled kernels from the cache in milliseconds.

What is compiled is what those calls need: the serial and the parallel loop of each kernel,
for float32 inputs (``tasks=TASKS`` adds float16 and float64).  A kernel a task does not reach (e.g. a matrix
instruction of :mod:`fpsim.mma`) still compiles on its first use.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

__all__ = ["DEFAULT_TASKS", "TASKS", "warmup"]

_BIG = 1 << 17  # elements: above the parallel threshold, so the parallel loops compile too


def _data(n, dtype=np.float32, cols=256):  # [n] and, when n allows, [n / cols, cols]
    x = np.random.default_rng(0).standard_normal(n).astype(dtype)
    return x, (x.reshape(-1, cols) if n % cols == 0 else None)


def _casts(dtypes=(np.float32,)) -> None:  # encode / decode / quantize (the README's)
    from .. import codec

    for dtype in dtypes:
        for n in (64, _BIG):
            x, _ = _data(n, dtype)
            for fmt in ("float8_e4m3fn", "int8"):
                codes = codec.encode(x, fmt)
                codec.decode(codes, fmt)
                codec.quantize(x, fmt, saturate=True)


def _stochastic(dtypes=(np.float32,)) -> None:  # stochastic rounding (its own kernels)
    from .. import codec

    for dtype in dtypes:
        for n in (64, _BIG):
            x, _ = _data(n, dtype)
            for fmt in ("float8_e4m3fn", "float4_e2m1fn", "int8"):
                codec.quantize(x, fmt, rounding="stochastic", rng=0)


def _mx_float() -> None:  # OCP MX with float elements
    from .. import quant

    for n in (256 * 32, _BIG):
        _, x = _data(n)
        quant.fake_quantize(x, "mxfp4_e2m1")
        quant.quantize_tensor(x, "mxfp8_e4m3")


def _mx_int_and_nvfp4() -> None:  # MX INT8 elements, NVFP4, DeepSeek tiles, scaled ints
    from .. import quant

    for n in (256 * 32, _BIG):
        _, x = _data(n)
        for r in ("mxint8", "nvfp4", "fp8_deepseek_activation", "int8_channel", "int4_block128"):
            quant.fake_quantize(x, r)


def _presets() -> None:  # the standard presets' linears (what fpsim report runs)
    from ..models import QuantContext
    from .report import REPORT_PRESETS

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 384)).astype(np.float32)
    w = (rng.standard_normal((384, 384)) / 20).astype(np.float32)
    for name in REPORT_PRESETS:
        ctx = QuantContext(name)
        ctx.linear("up", 0, x, w)
        ctx.linear("up", 0, np.tile(x, (4, 1)), w)
    for name in ("int8", "mxfp4"):  # the traced statistics of fpsim eval and report
        ctx = QuantContext(name, trace=True)
        ctx.linear("up", 0, x, w)
        ctx.linear("up", 0, np.tile(x, (4, 1)), w)


def _other_dtypes() -> None:  # float16 and float64 inputs take other loops
    _casts((np.float16, np.float64))
    _stochastic((np.float16, np.float64))


#: name -> the calls that compile its kernels (each task runs in a process of its own)
TASKS = {
    "casts": _casts,
    "stochastic rounding": _stochastic,
    "MX float elements": _mx_float,
    "MX INT8, NVFP4, tiles, scaled integers": _mx_int_and_nvfp4,
    "standard presets": _presets,
    "float16 and float64 inputs": _other_dtypes,
}
#: what :func:`warmup` compiles by default: float32 inputs (the README, ``fpsim report``)
DEFAULT_TASKS = tuple(TASKS)[:-1]


def _run_task(name: str, quiet: bool = False) -> tuple[str, float]:
    if quiet:  # the progress bar speaks for the worker processes: no compile notices
        os.environ["FPSIM_COMPILE_NOTICE"] = "off"
    t0 = time.perf_counter()
    TASKS[name]()
    return name, time.perf_counter() - t0


def warmup(*, jobs: int | None = None, tasks=None, progress: bool = True) -> dict:
    """Compile the kernels the common calls need, in ``jobs`` processes at once.

    Parameters
    ----------
    jobs : int, optional
        Processes (default: the number of CPUs, at most the number of tasks); 1 runs the
        tasks in this process.
    tasks : iterable of str, optional
        Names from :data:`TASKS` (default: :data:`DEFAULT_TASKS`, the float32 paths).
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    dict
        ``{task: seconds}`` and ``"total"``: the wall time.  A second run, with the cache
        filled, takes about a second per task.

    Raises
    ------
    ValueError
        An unknown task name, or ``jobs`` below 1.

    Examples
    --------
    >>> from fpsim.app.warmup import warmup
    >>> sorted(warmup(jobs=1, tasks=["casts"], progress=False))
    ['casts', 'total']
    """
    names = list(DEFAULT_TASKS) if tasks is None else list(tasks)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown warmup task(s) {unknown}; tasks: {', '.join(TASKS)}")
    jobs = min(os.cpu_count() or 1, len(names)) if jobs is None else int(jobs)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(names), desc="fpsim warmup: compiling kernels", file=sys.stderr,
                       unit="task")
        except ImportError:  # pragma: no cover - tqdm is a dependency
            bar = None
    t0 = time.perf_counter()
    out: dict = {}
    if jobs == 1:
        for n in names:
            out[n] = _run_task(n)[1]
            if bar is not None:
                bar.update(1)
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        # spawn: fresh interpreters (no forked Numba thread pool), each writing the cache
        with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            for fut in cf.as_completed([pool.submit(_run_task, n, True) for n in names]):
                n, s = fut.result()
                out[n] = s
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"{n}: {s:.0f} s")
    if bar is not None:
        bar.close()
    out["total"] = time.perf_counter() - t0
    return out
