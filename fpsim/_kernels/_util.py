"""The one place fpsim configures Numba: the jit decorators, their cache, and threading.

Caching. Kernels inline helpers from other files of this package (``scalar.py``,
``u32.py``), but Numba keys its on-disk cache on the kernel's own file only, so an edited
helper would leave stale machine code in use. :class:`KernelCache` keys every entry on a
hash of all ``fpsim/_kernels/*.py`` sources as well, recompiles an entry it cannot read
(a damaged cache file), and when no cache folder is writable (a read-only install with no
``NUMBA_CACHE_DIR``) the kernels compile on first use without a cache, after one warning.

Threads. Parallel kernels (``pjit``) run one at a time (a lock), so several Python
threads may call fpsim at once under any Numba threading layer, including ``workqueue``,
which aborts the process on concurrent use. A process forked after the parent ran a
parallel kernel runs serial kernels only (GNU OpenMP hangs in such a child); ``spawn``ed
processes are fresh. Numba's OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``,
unless the user set a policy): the variable is set only while the thread pool starts, then
restored, so importing fpsim changes nothing in ``os.environ``.

Progress. A kernel's first compile on a machine can take a few seconds; one that is still
compiling after ``FPSIM_COMPILE_NOTICE`` seconds (default 2; ``off`` for never) is named on
stderr, and the time it took is printed when it is done.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import sys
import threading
import time
import warnings

import numba
from numba.core import caching as _caching
from numba.core import config as _config
from numba.core import event as _event

#: Arrays at least this long are processed by the parallel (both cores) kernels.
PARALLEL_THRESHOLD = 1 << 16


def sources_digest() -> str:
    """SHA-256 over every kernel source file (names and bytes), the cache's freshness key."""
    h = hashlib.sha256()
    for path in sorted(pathlib.Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


_SOURCES = sources_digest()
_warned: set = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class KernelCache(_caching.FunctionCache):
    """Numba's per-function cache, fresh for every kernel source and robust to damage."""

    def __init__(self, py_func):
        super().__init__(py_func)
        stamp = self._cache_file._source_stamp
        self._cache_file._source_stamp = (stamp, _SOURCES)

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception:  # a damaged or truncated cache file: compile afresh
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception:
            try:  # a damaged index: start it afresh, once
                self._cache_file.flush()
                super().save_overload(sig, data)
            except Exception as e:
                _warn_once("save", f"fpsim: cannot write Numba's kernel cache in "
                                   f"{self.cache_path} ({e}); kernels compile in every process")


def _cached(dispatcher, py_func):
    """Give ``dispatcher`` a :class:`KernelCache` (none, with one warning, if impossible)."""
    if _config.DISABLE_JIT or not hasattr(dispatcher, "_cache"):
        return dispatcher  # NUMBA_DISABLE_JIT=1: the plain Python function
    try:
        dispatcher._cache = KernelCache(py_func)
    except RuntimeError as e:  # "no locator available": nowhere writable to cache
        _warn_once("locator", f"fpsim: Numba has no writable folder to cache compiled "
                              f"kernels in ({e}); they compile on first use in every process. "
                              "Set NUMBA_CACHE_DIR to a writable folder to cache them.")
    return dispatcher


def _decorator(**options):
    def decorate(py_func):
        return _cached(numba.njit(**options)(py_func), py_func)

    return decorate


# ---- progress of long compiles ------------------------------------------------------
def _notice_seconds():
    value = os.environ.get("FPSIM_COMPILE_NOTICE", "2")
    if value.strip().lower() in ("off", "never", "none", ""):
        return None
    try:
        seconds = float(value)
    except ValueError:
        _warn_once("notice", f"fpsim: FPSIM_COMPILE_NOTICE={value!r} is not a number of "
                             "seconds or 'off'; using 2")
        return 2.0
    return seconds if seconds >= 0 else None


class _CompileNotice(_event.Listener):
    """Names an fpsim kernel on stderr when its compile outlasts ``FPSIM_COMPILE_NOTICE``.

    Numba broadcasts ``numba:compile`` for real compiles only (not cache loads), nested for
    the helpers a kernel calls; only the outermost fpsim kernel is announced.
    """

    def __init__(self):
        self._depth = 0
        self._timer = None
        self._announced = False
        self._t0 = 0.0

    def _announce(self, name):
        self._announced = True
        print(f"fpsim: compiling the Numba kernel {name} (first use on this machine; cached "
              "afterwards) ...", file=sys.stderr, flush=True)

    def on_start(self, event):
        self._depth += 1
        if self._depth != 1:
            return
        py_func = getattr(event.data.get("dispatcher"), "py_func", None)
        seconds = _notice_seconds()
        if seconds is None or not getattr(py_func, "__module__", "").startswith("fpsim."):
            return
        self._t0 = time.perf_counter()
        self._announced = False
        name = f"{py_func.__module__.rsplit('.', 1)[-1]}.{py_func.__name__}"
        self._timer = threading.Timer(seconds, self._announce, args=(name,))
        self._timer.daemon = True
        self._timer.start()

    def on_end(self, event):
        self._depth -= 1
        if self._depth != 0 or self._timer is None:
            return
        self._timer.cancel()
        self._timer = None
        if self._announced:
            print(f"fpsim: ... compiled in {time.perf_counter() - self._t0:.1f} s",
                  file=sys.stderr, flush=True)


_event.register("numba:compile", _CompileNotice())


# ---- threads ------------------------------------------------------------------------
_PARALLEL_LOCK = threading.RLock()
_launched = False


def _launch_threads() -> None:
    """Start Numba's thread pool with passive waiting, leaving os.environ as it was."""
    global _launched
    from numba.np.ufunc import parallel as _parallel

    key = "OMP_WAIT_POLICY"
    before = os.environ.get(key)
    if before is None:
        os.environ[key] = "PASSIVE"
    try:
        _parallel._launch_threads()
    finally:
        if before is None:
            os.environ.pop(key, None)
    _launched = True


def _after_fork_in_child() -> None:
    """A child forked after parallel kernels ran uses serial kernels only."""
    global PARALLEL_THRESHOLD, _PARALLEL_LOCK
    _PARALLEL_LOCK = threading.RLock()  # the parent's may have been held by another thread
    if _launched or getattr(sys.modules.get("numba.np.ufunc.parallel"), "_is_initialized",
                            False):
        PARALLEL_THRESHOLD = sys.maxsize


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ParallelKernel:
    """A parallel Numba kernel that runs one call at a time (see the module docstring)."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.__name__ = getattr(dispatcher, "__name__", "kernel")
        self.__doc__ = getattr(dispatcher, "__doc__", None)
        self.__wrapped__ = dispatcher

    def __call__(self, *args):
        with _PARALLEL_LOCK:
            if not _launched and not _config.DISABLE_JIT:
                _launch_threads()
            return self.dispatcher(*args)

    def __getattr__(self, name):
        return getattr(self.dispatcher, name)


def _parallel_decorator(**options):
    inner = _decorator(**options)

    def decorate(py_func):
        return ParallelKernel(inner(py_func))

    return decorate


jit = _decorator(nogil=True)
pjit = _parallel_decorator(nogil=True, parallel=True)
#: For helpers called from the loops: compiled once each, and marked ``alwaysinline`` for
#: LLVM, so that each loop is optimised as one function (a plain call costs ~10x), without
#: Numba's IR-level inlining, which types every helper again at every call site and made
#: first calls compile 3-10x longer (an MX cast: 8.5 s against 2 s).
#: A ``prange`` loop must be in the parallel kernel itself: Numba's parallel transform runs
#: before LLVM inlines anything.
inline = _decorator(nogil=True, forceinline=True)
prange = numba.prange


def num_threads() -> int:
    """Numba threads the parallel kernels use."""
    return numba.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set how many threads the parallel kernels use (1 <= n <= cores)."""
    numba.set_num_threads(n)
