"""The one place fpsim configures Numba: a shared jit decorator and threading helpers."""

import os

# Numba's OpenMP threads spin while they wait for work.  Next to OpenBLAS's own
# spinning threads, or any other busy process on a 2-core machine, that made
# fpsim's parallel kernels several times slower than serial ones (measured: a
# per-row fake-quant kernel 8 ms parallel vs 2.4 ms serial; 2.6 ms with passive
# waiting).  Passive waiting costs only a wake-up per call.  A user's own
# setting wins; it only takes effect if libgomp is not loaded yet.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402

#: Arrays at least this long are processed by the parallel (both cores) kernels.
PARALLEL_THRESHOLD = 1 << 16

jit = numba.njit(cache=True, nogil=True)
pjit = numba.njit(cache=True, nogil=True, parallel=True)
#: For scalar helpers called from the loops: inlined at the Numba IR level so
#: that LLVM optimises each loop as one function (a plain call costs ~10x).
inline = numba.njit(cache=True, nogil=True, inline="always")
prange = numba.prange


def num_threads() -> int:
    """Numba threads the parallel kernels use."""
    return numba.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set how many threads the parallel kernels use (1 <= n <= cores)."""
    numba.set_num_threads(n)
