"""Speed of encode / decode / quantize next to ml_dtypes and a memcpy (``fpsim bench``).

One run times, on 2^24 float32 values drawn from N(0, 1):

- ``fpsim.encode`` / ``fpsim.decode`` / ``fpsim.quantize`` with ``rounding``
  ``nearest_even`` and ``stochastic``, into preallocated ``out=`` arrays and
  allocating their result;
- the reference: ``x.astype(ml_dtypes.<type>)``, ``codes.astype(np.float32)``
  and the astype-and-back for quantize (for ``int8``, which ml_dtypes lacks,
  numpy's ``rint`` + ``clip`` + ``astype``);
- ``np.copyto(out, x)``, a memcpy of the input: the floor for any elementwise pass.

Each timing is the median of ``repeat`` runs after one untimed warm-up (which
also compiles the Numba kernels).
"""

from __future__ import annotations

import os
import platform
import time
import warnings
from importlib import metadata

import numpy as np

from ..formats import IntFormat, get_format

__all__ = ["DEFAULT_FORMATS", "run_bench", "time_median"]

DEFAULT_FORMATS = ("float8_e4m3fn", "float8_e5m2", "float4_e2m1fn", "int8")
_SEED_SR = 12345  # the stochastic-rounding seed (fixed: reproducible codes)


def time_median(fn, repeat: int = 7) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _reference(fmt, x, ml_dtypes):
    """{op: (label, callable)} of the reference casts, or None if there is none."""
    mltype = getattr(ml_dtypes, fmt.name, None)
    if mltype is not None:
        codes = x.astype(mltype)
        return {"encode": ("ml_dtypes astype", lambda: x.astype(mltype)),
                "decode": ("ml_dtypes astype", lambda: codes.astype(np.float32)),
                "quantize": ("ml_dtypes astype+back", lambda: x.astype(mltype).astype(np.float32))}
    if isinstance(fmt, IntFormat) and not fmt.bit_patterns and fmt.scale_exp == 0:
        dt = fmt.code_dtype
        lo, hi = fmt.min_int, fmt.max_int
        codes = np.clip(np.rint(x), lo, hi).astype(dt)
        return {"encode": ("numpy rint+clip+astype", lambda: np.clip(np.rint(x), lo, hi).astype(dt)),
                "decode": ("numpy astype", lambda: codes.astype(np.float32)),
                "quantize": ("numpy rint+clip", lambda: np.clip(np.rint(x), lo, hi))}
    return None


def run_bench(names=None, *, log2_size: int = 24, repeat: int = 7, seed: int = 0,
              file=None) -> int:
    """Time the codecs and print a table; returns 0."""
    import sys

    from ..codec import decode, encode, quantize
    from .tables import format_table
    from .verify import require_ml_dtypes

    out = file if file is not None else sys.stdout
    ml_dtypes = require_ml_dtypes()
    fmts = [get_format(n) for n in (names or DEFAULT_FORMATS)]
    n = 1 << log2_size
    x = np.random.default_rng(seed).standard_normal(n, dtype=np.float32)
    xbuf = np.empty_like(x)

    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "?"

    print(f"fpsim bench: 2^{log2_size} float32 values from N(0,1), median of {repeat} runs "
          f"after a warm-up; numpy {np.__version__}, numba {version('numba')}, ml_dtypes "
          f"{ml_dtypes.__version__}, {platform.machine()}, {os.cpu_count()} cpus", file=out,
          flush=True)
    t_memcpy = time_median(lambda: np.copyto(xbuf, x), repeat)

    header = ["format", "op", "implementation", "ms", "Mvalues/s", "t/reference", "t/memcpy"]
    rows = []
    times = {}

    def add(fmt_name, op, impl, t, t_ref):
        times[fmt_name, op, impl] = t
        rows.append([fmt_name, op, impl, f"{t * 1e3:.2f}", f"{n / t / 1e6:.0f}",
                     f"{t / t_ref:.2f}" if t_ref else "-", f"{t / t_memcpy:.1f}"])
        print("  ".join(rows[-1]), file=sys.stderr, flush=True)  # progress

    add("-", "copy", "np.copyto(out, x)", t_memcpy, None)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for fmt in fmts:
            ref = _reference(fmt, x, ml_dtypes)
            t_ref = {op: time_median(fn, repeat) for op, (_, fn) in (ref or {}).items()}
            codes = encode(x, fmt)
            cbuf = np.empty_like(codes)
            qbuf = np.empty_like(x)
            for op in ("encode", "decode", "quantize"):
                if ref is not None:
                    add(fmt.name, op, ref[op][0], t_ref[op], t_ref[op])
                if op == "decode":
                    variants = [
                        ("fpsim out=", lambda c=codes, f=fmt, b=qbuf: decode(c, f, out=b)),
                        ("fpsim", lambda c=codes, f=fmt: decode(c, f)),
                    ]
                else:
                    fn = encode if op == "encode" else quantize
                    buf = cbuf if op == "encode" else qbuf
                    variants = []
                    for rnd in ("nearest_even", "stochastic"):
                        kw = {"rounding": rnd, "rng": _SEED_SR if rnd == "stochastic" else None}
                        variants += [
                            (f"fpsim {rnd} out=",
                             lambda fn=fn, f=fmt, kw=kw, b=buf: fn(x, f, out=b, **kw)),
                            (f"fpsim {rnd}", lambda fn=fn, f=fmt, kw=kw: fn(x, f, **kw)),
                        ]
                for impl, fn in variants:
                    add(fmt.name, op, impl, time_median(fn, repeat), t_ref.get(op))

    print(format_table(header, rows, right={3, 4, 5, 6}), file=out)
    print("t/reference, t/memcpy: time divided by the reference cast's (ml_dtypes, or numpy "
          "for int8) and by a memcpy of the input; below 1 is faster.", file=out)
    sr_rows = []
    for fmt in fmts:
        for op in ("encode", "quantize"):
            t_ne = times.get((fmt.name, op, "fpsim nearest_even out="))
            t_sr = times.get((fmt.name, op, "fpsim stochastic out="))
            if t_ne and t_sr:
                sr_rows.append([fmt.name, op, f"{t_ne * 1e3:.2f}", f"{t_sr * 1e3:.2f}",
                                f"{t_ne / t_sr:.2f}"])
    if sr_rows:
        print(file=out)
        print(format_table(["format", "op", "nearest_even ms", "stochastic ms",
                            "stochastic speed / nearest_even"], sr_rows, right={2, 3, 4}),
              file=out)
    return 0
