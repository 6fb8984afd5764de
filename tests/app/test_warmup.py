"""fpsim.app.warmup: compiling the kernels ahead of use."""

import pytest

from fpsim.app import warmup as wu


def test_warmup_runs_the_tasks_and_times_them():
    res = wu.warmup(jobs=1, tasks=["casts"], progress=False)
    assert set(res) == {"casts", "total"} and 0 < res["casts"] <= res["total"]


def test_warmup_in_processes_fills_the_shared_cache():
    # spawned processes run the tasks; their results come back by name
    res = wu.warmup(jobs=2, tasks=["MX float elements", "standard presets"], progress=False)
    assert set(res) == {"MX float elements", "standard presets", "total"}


def test_default_tasks_are_the_float32_paths():
    assert set(wu.DEFAULT_TASKS) < set(wu.TASKS)
    assert "float16 and float64 inputs" not in wu.DEFAULT_TASKS


@pytest.mark.parametrize("kwargs, match", [
    (dict(tasks=["nope"]), "unknown warmup task"),
    (dict(jobs=0), "jobs must be at least 1"),
])
def test_warmup_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        wu.warmup(progress=False, **kwargs)


def test_worker_processes_leave_progress_to_the_bar(tmp_path):
    """With compiles announced at once (FPSIM_COMPILE_NOTICE=0), the spawned workers still
    print no notice of their own: the progress bar speaks for them."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), FPSIM_COMPILE_NOTICE="0")
    code = ("from fpsim.app.warmup import warmup\n"
            "warmup(jobs=2, tasks=['casts', 'MX float elements'], progress=False)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "compiling the Numba kernel" not in proc.stderr
