"""fpsim.sweep / fpsim sweep on a real dask.distributed LocalCluster (2 worker processes):
the grid's rows, a failing cell recorded with its error, a worker killed mid-sweep and the
rerun that completes the table, model weights loaded once per worker, verify on the cluster."""

import os
import pathlib

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

import dask  # noqa: E402

import fpsim  # noqa: E402
from fpsim.app import cli, sweep as sw, verify  # noqa: E402


@pytest.fixture(scope="module")
def client():
    # a worker that dies fails its task at once (KilledWorker), instead of 3 restarts
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=":0")
        c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def _by_key(rows):
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), "a cell has two rows"
    return {r["key"]: r for r in rows}


def test_synthetic_grid_and_a_failing_recipe(client, tmp_path):
    out = tmp_path / "synth.parquet"
    rows = fpsim.sweep(tensors=["gaussian", "student_t3"],
                       recipes=["int8", "mxfp8_e4m3", "not_a_recipe"], seeds=[0, 1], size=2048,
                       out=out, scheduler=client, progress=False)
    assert len(rows) == 12
    table = _by_key(sw.read_table(out))
    assert table.keys() == _by_key(rows).keys()
    for r in rows:
        if r["recipe"] == "not_a_recipe":  # recorded with its error; the others unaffected
            assert r["status"] == "error" and r["error_type"] == "ValueError"
            assert "not_a_recipe" in r["error"]
            continue
        assert r["status"] == "ok", r
        assert r["worker"] in (0, 1)
        # the same numbers as fpsim.error_report on the same tensor, in this process
        x = sw._tensor(sw.Cell("tensor", tensor=r["tensor"], size=2048, seed=r["seed"]),
                       sw.DISTRIBUTIONS[r["tensor"]])
        want = fpsim.error_report(x, r["recipe"], rng=r["seed"])
        assert r["sqnr_db"] == want.sqnr_db and r["mse"] == want.mse
        assert table[r["key"]]["sqnr_db"] == r["sqnr_db"]
        assert r["details"]["counts"]["n"] == 2048
    # a rerun runs nothing: every cell has a row ("ok" or "error")
    again = fpsim.sweep(tensors=["gaussian", "student_t3"],
                        recipes=["int8", "mxfp8_e4m3", "not_a_recipe"], seeds=[0, 1], size=2048,
                        out=out, scheduler=client, progress=False)
    assert [(r["key"], r["seconds"]) for r in again] == [(r["key"], r["seconds"]) for r in rows]


def test_a_worker_killed_mid_sweep_then_the_rerun_completes_the_table(client, tmp_path):
    out = tmp_path / "resume.jsonl"
    marker = tmp_path / "healthy"

    def crash(n, rng):  # kills its worker process until the marker file exists
        if not marker.exists():
            os._exit(1)
        return rng.standard_normal(n)

    tensors = {"gaussian": lambda n, rng: rng.standard_normal(n), "crash": crash}
    grid = dict(tensors=tensors, recipes=["int8", "mxfp4_e2m1"], seeds=[0, 1], size=1024,
                out=out, scheduler=client, progress=False)
    first = _by_key(fpsim.sweep(**grid))
    assert len(first) == 8
    crashed = [k for k in first if "tensor=crash" in k]
    assert {first[k]["status"] for k in crashed} == {"lost"}
    assert {first[k]["error_type"] for k in crashed} == {"KilledWorker"}
    assert {r["status"] for r in first.values()} <= {"ok", "lost"}
    done = {k: r for k, r in first.items() if r["status"] == "ok"}
    assert len(done) >= 2  # the other cells finished on the surviving worker

    client.wait_for_workers(2, timeout=60)  # the nanny restarts the dead worker
    marker.touch()
    second = fpsim.sweep(**grid)
    table = _by_key(sw.read_table(out))  # raises if a cell has two rows
    assert table.keys() == first.keys() and len(second) == 8
    assert {r["status"] for r in table.values()} == {"ok"}
    for k, r in done.items():  # finished cells were not run again
        assert table[k]["seconds"] == r["seconds"] and table[k]["sqnr_db"] == r["sqnr_db"]


def test_minilm_presets_x_seeds_load_the_model_once_per_worker(client, tmp_path, model_files):
    model_files("minilm")
    sentences = fpsim.data.sentences()[:6]
    out = tmp_path / "minilm.parquet"
    rows = fpsim.sweep(models=["minilm"], presets=["int8", "fp8_e4m3"], seeds=[0, 1],
                       sentences=sentences, out=out, scheduler=client, progress=False)
    assert [r["key"] for r in rows] == [f"model=minilm|preset={p}|seed={s}"
                                        for p in ("int8", "fp8_e4m3") for s in (0, 1)]
    assert {r["status"] for r in rows} == {"ok"}, rows
    from fpsim.app.evaluate import evaluate

    want = evaluate("minilm", ["int8"], sentences=sentences, progress=False, rng=1)[0]
    got = _by_key(rows)["model=minilm|preset=int8|seed=1"]
    assert {k: got[k] for k in want.metrics} == want.metrics  # bit for bit
    assert got["details"]["layer_sqnr_db"] == pytest.approx(want.layer_sqnr_db, nan_ok=True)
    assert got["bits_per_weight"] == want.storage["bits_per_weight"]
    # each worker that ran a cell holds one FP32 model and one FP32 reference run
    kinds = client.run(lambda: sorted(k[0] for k in __import__(
        "fpsim.app.sweep", fromlist=["x"])._WORKER_CACHE if "minilm" in k))
    used = {r["worker"] for r in rows}
    ran = [v for v in kinds.values() if v]
    assert len(ran) == len(used) and all(v == ["fp32", "reference"] for v in ran)


def test_cli_sweep_and_its_help(client, tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    rc = cli.main(["sweep", "--tensor", "laplace", "--recipe", "int8", "nvfp4", "--size", "512",
                   "--seeds", "0", "1", "--out", str(out), "--scheduler",
                   client.scheduler.address, "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "tensor=laplace|size=512|recipe=nvfp4|seed=1" in text and "4 cells: 4 ok" in text
    assert len(sw.read_table(out)) == 4
    rc = cli.main(["sweep", "--tensor", "laplace", "--recipe", "int9", "--size", "512",
                   "--out", str(out), "--scheduler", client.scheduler.address, "--quiet"])
    assert rc == 1 and "1 error" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["sweep", "--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    assert "--scheduler ADDRESS" in help_text and ".parquet" in help_text


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(tensors=["gaussian"], recipes=["int8"], out="t.csv"), ValueError, "suffix"),
    (dict(tensors=["gauss"], recipes=["int8"]), ValueError, "unknown distribution 'gauss'"),
    (dict(tensors=["gaussian"], recipes=["int8"], size=1000), ValueError, "multiple of 256"),
    (dict(models=["minilm"]), ValueError, "models and presets go together"),
    (dict(tensors=["gaussian"]), ValueError, "tensors and recipes go together"),
    (dict(tensors=["gaussian"], recipes=["int8"], seeds=[-1]), ValueError, "seeds"),
    (dict(tensors=["gaussian"], recipes=["int8"], scheduler=8786), TypeError, "scheduler"),
])
def test_invalid_arguments(tmp_path, kwargs, error, match):
    kwargs.setdefault("out", "t.jsonl")
    kwargs["out"] = tmp_path / kwargs["out"]
    with pytest.raises(error, match=match):
        fpsim.sweep(**kwargs)


def test_verify_exhaustive_chunks_on_the_cluster(client):
    names = ["float8_e4m3fn", "float4_e2m1fn", "int8"]
    total, chunk = 1 << 20, 1 << 18
    remote = {n: verify._Stats(n) for n in names}
    verify._run_on_dask(client, remote, names, total, chunk, False, 0, 5)
    local = verify._exhaustive_chunk(0, total, names, False, 0, 5)
    for n in names:
        assert remote[n].checked == total
        assert (remote[n].mismatches, remote[n].known, remote[n].examples) == (
            local[n].mismatches, local[n].known, local[n].examples)
