"""fpsim._kernels._util: the kernel cache (fresh, robust, optional) and threading safety.

Each test runs Python in a subprocess (with a timeout, so a hang fails instead of
stalling the suite): caches, forks and threading layers are per-process state.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="about Numba's compiled code")


def run_py(code: str, *, cwd=None, env=None, timeout=240) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY",)}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def ok(proc) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


# ---- the environment -------------------------------------------------------------------
def test_import_and_parallel_calls_leave_the_environment_unchanged():
    out = ok(run_py("""
        import os
        before = dict(os.environ)
        import numpy as np, fpsim
        after_import = dict(os.environ)
        fpsim.quantize(np.ones(1 << 17, np.float32), "e4m3fn")  # a parallel kernel
        print(before == after_import, before == dict(os.environ))
    """))
    assert out.split() == ["True", "True"]


def test_a_users_wait_policy_is_kept():
    out = ok(run_py("""
        import os, numpy as np, fpsim
        fpsim.quantize(np.ones(1 << 17, np.float32), "e4m3fn")
        print(os.environ["OMP_WAIT_POLICY"])
    """, env={"OMP_WAIT_POLICY": "ACTIVE"}))
    assert out.strip() == "ACTIVE"


# ---- the cache ---------------------------------------------------------------------------
PROBE_KERNEL = """
from ._util import jit
from ._probe_helper import value


@jit
def probe(n):
    return value() * n
"""


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the fpsim package with a probe kernel that inlines a helper from another file."""
    dst = tmp_path / "fpsim"
    shutil.copytree(ROOT / "fpsim", dst, ignore=shutil.ignore_patterns("__pycache__"))
    (dst / "_kernels" / "_probe.py").write_text(PROBE_KERNEL)
    (dst / "_kernels" / "_probe_helper.py").write_text(
        "from ._util import inline\n\n\n@inline\ndef value():\n    return 1\n")
    return tmp_path


RUN_PROBE = """
import warnings
warnings.simplefilter("error", RuntimeWarning)  # no warning expected
from fpsim._kernels._probe import probe
print(probe(10), probe.stats.cache_hits.get(probe.signatures[0], 0))
"""


def test_editing_a_helper_in_another_file_recompiles(package_copy):
    env = {"PYTHONPATH": str(package_copy), "NUMBA_CACHE_DIR": ""}
    assert ok(run_py(RUN_PROBE, cwd=package_copy, env=env)).split() == ["10", "0"]  # compiled
    assert ok(run_py(RUN_PROBE, cwd=package_copy, env=env)).split() == ["10", "1"]  # cached
    helper = package_copy / "fpsim" / "_kernels" / "_probe_helper.py"
    helper.write_text(helper.read_text().replace("return 1", "return 2"))
    assert ok(run_py(RUN_PROBE, cwd=package_copy, env=env)).split() == ["20", "0"]


def test_a_damaged_cache_is_recompiled(package_copy):
    env = {"PYTHONPATH": str(package_copy), "NUMBA_CACHE_DIR": ""}
    ok(run_py(RUN_PROBE, cwd=package_copy, env=env))
    files = list((package_copy / "fpsim" / "_kernels" / "__pycache__").glob("_probe.*.nb*"))
    assert {f.suffix for f in files} == {".nbi", ".nbc"}
    for f in files:
        f.write_bytes(f.read_bytes()[:40] + b"garbage")
    for expect_hits in ("0", "1"):  # recompiled and saved again, then read from the cache
        assert ok(run_py(RUN_PROBE, cwd=package_copy, env=env)).split() == ["10", expect_hits]


def test_no_writable_cache_folder_compiles_without_a_cache_after_one_warning(package_copy):
    out = ok(run_py("""
        import warnings
        import numba.core.caching as caching
        caching.CacheImpl._locator_classes = []  # as in a read-only install: no locator
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import numpy as np, fpsim
            from fpsim._kernels._probe import probe
            print(probe(10), float(fpsim.quantize(np.float32(3.3), "e4m3fn")))
        print(sum("NUMBA_CACHE_DIR" in str(w.message) for w in caught))
    """, cwd=package_copy, env={"PYTHONPATH": str(package_copy), "NUMBA_CACHE_DIR": ""}))
    assert out.split() == ["10", "3.25", "1"]


# ---- fork, spawn, threads -------------------------------------------------------------------
POOL = """
import multiprocessing as mp
import numpy as np
import fpsim


def work(seed):
    x = np.random.default_rng(seed).standard_normal(1 << 18).astype(np.float32)
    return float(fpsim.quantize(x, "e4m3fn", rounding="stochastic", rng=seed).sum())


if __name__ == "__main__":
    want = [work(s) for s in range(4)]  # parallel kernels in the parent first
    with mp.get_context("{method}").Pool(2) as pool:
        got = pool.map(work, range(4))
    print(got == want)
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_process_pools_after_parallel_calls(tmp_path, method):
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent(POOL).replace("{method}", method))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "True"


THREADS = """
import threading
import numpy as np
import fpsim

xs = [np.random.default_rng(s).standard_normal(1 << 18).astype(np.float32) for s in range(4)]
want = [fpsim.quantize(x, "e5m2", rounding="stochastic", rng=1) for x in xs]
got = [None] * 4

def work(i):
    for _ in range(5):
        got[i] = fpsim.quantize(xs[i], "e5m2", rounding="stochastic", rng=1)

threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
import numba
print(all((g == w).all() for g, w in zip(got, want)), numba.threading_layer())
"""


@pytest.mark.parametrize("layer", ["default", "workqueue", "omp"])
def test_four_python_threads(layer):
    env = {} if layer == "default" else {"NUMBA_THREADING_LAYER": layer}
    proc = run_py(THREADS, env=env, timeout=300)
    if layer == "omp" and "No threading layer could be loaded" in proc.stderr:
        pytest.skip("no OpenMP runtime on this machine")  # the other two still run
    out = ok(proc).split()
    assert out[0] == "True"
    if layer != "default":
        assert out[1] == layer


# ---- progress of long compiles -------------------------------------------------------------
@pytest.mark.parametrize("setting, expect_notice", [("0", True), ("off", False), ("600", False)])
def test_a_long_compile_is_named_on_stderr(package_copy, setting, expect_notice):
    env = {"PYTHONPATH": str(package_copy), "NUMBA_CACHE_DIR": "",
           "FPSIM_COMPILE_NOTICE": setting}
    proc = run_py(RUN_PROBE, cwd=package_copy, env=env)
    assert ok(proc).split() == ["10", "0"]  # compiled here
    announced = "compiling the Numba kernel _probe.probe (first use" in proc.stderr
    assert announced == expect_notice, proc.stderr
    assert ("compiled in" in proc.stderr) == expect_notice
    again = run_py(RUN_PROBE, cwd=package_copy, env=env)  # from the cache: nothing to say
    assert ok(again).split() == ["10", "1"]
    assert "compiling" not in again.stderr


def test_a_bad_notice_setting_warns_and_uses_the_default(package_copy):
    proc = run_py("""
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from fpsim._kernels._probe import probe
            print(probe(10))
        print(sum("FPSIM_COMPILE_NOTICE" in str(w.message) for w in caught))
    """, cwd=package_copy, env={"PYTHONPATH": str(package_copy), "NUMBA_CACHE_DIR": "",
                                "FPSIM_COMPILE_NOTICE": "soon"})
    assert ok(proc).split() == ["10", "1"]
