"""Sweeps on Dask: a grid of cells (models x presets x seeds, tensors x recipes x seeds) run
as tasks on a ``dask.distributed`` cluster, their results kept in one table (``fpsim sweep``).

* **Cells.**  A model cell evaluates one preset (or :class:`~fpsim.models.QuantConfig`) on
  ``"minilm"``, ``"smollm2"`` or a checkpoint path with one seed of stochastic rounding,
  against the FP32 model, with the metrics of :mod:`fpsim.app.evaluate`.  A tensor cell draws
  a synthetic tensor (:data:`DISTRIBUTIONS`, or your own ``name -> f(size, rng)``) and
  measures one recipe on it with :func:`fpsim.error_report` (SQNR, errors, range counts).
* **The cluster.**  A :class:`distributed.LocalCluster` of worker processes by default, or
  the scheduler at ``scheduler=`` (an address such as ``"tcp://10.0.0.5:8786"``, or a
  :class:`distributed.Client`).  Each worker process loads a model's weights once, and runs
  its FP32 reference once, for all the cells it gets (:data:`_WORKER_CACHE`).
* **The table.**  One row per cell, keyed by ``key`` (``"model=minilm|preset=int8|seed=0"``):
  Parquet (``.parquet``, through pyarrow) or JSON lines (``.jsonl``), rewritten atomically as
  cells finish.  A rerun reads it and runs only the cells without a row (``status`` ``"ok"``
  or ``"error"``); a cell whose own code raised is recorded as ``"error"`` with the
  exception's type and message, and one whose worker died (``KilledWorker``) as ``"lost"``,
  which the next run retries.  No cell's failure loses another's row.

dask and pyarrow are optional (``pip install 'fpsim[sweep]'``) and imported lazily.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DISTRIBUTIONS", "Cell", "cells", "sweep", "run_cell", "read_table", "write_table",
           "summary", "require_dask"]

#: the synthetic tensors of tensor cells: name -> f(size, rng) -> float32 array (rows of 256)
DISTRIBUTIONS = {
    "gaussian": lambda n, rng: rng.standard_normal(n),
    "laplace": lambda n, rng: rng.laplace(size=n),
    "uniform": lambda n, rng: rng.uniform(-1.0, 1.0, n),
    "student_t3": lambda n, rng: rng.standard_t(3, n),
    "student_t4": lambda n, rng: rng.standard_t(4, n),
    "lognormal": lambda n, rng: rng.lognormal(0.0, 1.0, n) * rng.choice([-1.0, 1.0], n),
}

#: the table's key columns, first in every row
KEY_COLUMNS = ("key", "kind", "model", "preset", "tensor", "size", "recipe", "seed")
#: row statuses a rerun skips (``"lost"`` cells, whose worker died, run again)
FINISHED = ("ok", "error")
TABLE_SUFFIXES = (".parquet", ".jsonl", ".json")


def require_dask():
    """Import ``distributed`` (and check pyarrow is not needed yet), or raise ImportError
    saying what to install."""
    try:
        import distributed
    except ImportError:
        raise ImportError("sweeps run on dask.distributed: pip install 'fpsim[sweep]' "
                          "(dask[distributed], pyarrow)") from None
    return distributed


# ---- the grid ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One cell of a sweep: a model x preset x seed, or a tensor x recipe x seed.

    Examples
    --------
    >>> Cell("tensor", tensor="gaussian", size=4096, recipe="mxfp8_e4m3", seed=1).key
    'tensor=gaussian|size=4096|recipe=mxfp8_e4m3|seed=1'
    >>> Cell("model", model="minilm", preset="int8", seed=0).key
    'model=minilm|preset=int8|seed=0'
    """

    kind: str
    model: str | None = None
    preset: str | None = None
    tensor: str | None = None
    size: int | None = None
    recipe: str | None = None
    seed: int = 0
    #: a QuantConfig given instead of a preset name (its name is ``preset``)
    config: object = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        names = ("model", "preset", "seed") if self.kind == "model" else (
            "tensor", "size", "recipe", "seed")
        return "|".join(f"{n}={getattr(self, n)}" for n in names)

    def columns(self) -> dict:
        """The key columns of its row."""
        return {"key": self.key, "kind": self.kind, "model": self.model, "preset": self.preset,
                "tensor": self.tensor, "size": self.size, "recipe": self.recipe,
                "seed": int(self.seed)}


def _names(value, name: str) -> list:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)) or not hasattr(value, "__iter__"):
        value = [value]
    return list(value)


def cells(*, models=(), presets=(), seeds=(0,), tensors=(), recipes=(),
          size: int = 1 << 16) -> list[Cell]:
    """The grid: every model x preset x seed, then every tensor x recipe x seed.

    Parameters
    ----------
    models : iterable of str or path
        ``"minilm"``, ``"smollm2"`` or checkpoint paths (see :func:`fpsim.models.load`).
    presets : iterable of str or QuantConfig
        Preset names (:data:`fpsim.models.PRESETS`) or QuantConfig objects.
    seeds : iterable of int
        Seeds of stochastic rounding (and, for tensors, of the data).
    tensors : iterable of str, or dict name -> f(size, rng)
        Names in :data:`DISTRIBUTIONS`, or your own generators.
    recipes : iterable of str or QuantSpec
        Recipes for :func:`fpsim.error_report` (``"mxfp8_e4m3"``, ``"int8"``, ...).
    size : int
        Elements per synthetic tensor (a multiple of 256: rows of 256).

    Raises
    ------
    ValueError
        A tensor name not in :data:`DISTRIBUTIONS`, a bad ``size``, models without presets
        (or presets without models), tensors without recipes, or negative seeds.

    Examples
    --------
    >>> [c.key for c in cells(tensors=["gaussian"], recipes=["int8", "nvfp4"], seeds=[0],
    ...                       size=512)]
    ['tensor=gaussian|size=512|recipe=int8|seed=0', 'tensor=gaussian|size=512|recipe=nvfp4|seed=0']
    """
    models, presets = _names(models, "models"), _names(presets, "presets")
    tensors = dict(tensors) if isinstance(tensors, dict) else _names(tensors, "tensors")
    recipes, seeds = _names(recipes, "recipes"), _names(seeds, "seeds")
    if bool(models) != bool(presets):
        raise ValueError(f"models and presets go together: got models={models!r}, "
                         f"presets={presets!r}")
    if bool(tensors) != bool(recipes):
        raise ValueError(f"tensors and recipes go together: got tensors={list(tensors)!r}, "
                         f"recipes={recipes!r}")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0
                        for s in seeds):
        raise ValueError(f"seeds must be non-negative ints, got {seeds!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0 \
            or size % 256:
        raise ValueError(f"size must be a positive multiple of 256 (rows of 256), got {size!r}")
    if not isinstance(tensors, dict):
        bad = [t for t in tensors if t not in DISTRIBUTIONS]
        if bad:
            raise ValueError(f"tensors: unknown distribution {bad[0]!r}; choose from "
                             f"{', '.join(DISTRIBUTIONS)} (or pass a dict name -> f(size, rng))")
    out = []
    for model in models:
        for p in presets:
            name = p if isinstance(p, str) else getattr(p, "name", None)
            if not isinstance(name, str):
                raise TypeError(f"presets: expected preset names or QuantConfig objects, got "
                                f"{type(p).__name__}")
            for s in seeds:
                out.append(Cell("model", model=os.fspath(model), preset=name, seed=int(s),
                                config=None if isinstance(p, str) else p))
    for t in tensors:
        for r in recipes:
            rname = r if isinstance(r, str) else getattr(r, "name", None) or r.describe()
            for s in seeds:
                out.append(Cell("tensor", tensor=t, size=int(size), recipe=rname, seed=int(s),
                                config=None if isinstance(r, str) else r))
    return out


# ---- the work on a worker ----------------------------------------------------------------
#: per worker process: FP32 models and their reference outputs, loaded once
_WORKER_CACHE: dict = {}
_CACHE_LOCK = threading.RLock()


def _cached(key, make):
    """``make()`` once per worker process (a lock: workers may run several threads)."""
    with _CACHE_LOCK:
        if key not in _WORKER_CACHE:
            _WORKER_CACHE[key] = make()
        return _WORKER_CACHE[key]


def _fp32(model: str):
    from ..models import load

    return _cached(("fp32", model), lambda: load(model))


def _quantized(ref, cfg, seed: int):
    """The FP32 model ``ref`` under ``cfg``, sharing its weights (as ``load(..., quant=cfg,
    rng=seed)`` gives, without reading the files again)."""
    from ..models import QuantContext
    from ..models import bert

    if hasattr(ref, "with_quant"):  # Llama family
        m = ref.with_quant(cfg)
    else:  # MiniLM / BERT
        ctx = QuantContext(cfg, n_layers=ref.cfg.n_layers, sites=bert.SITES)
        m = type(ref)(ref.emb, ref.layers, ref.cfg, ref.tokenizer, ctx,
                      weights_source=ref.weights_source)
    m.ctx.reseed(seed)
    return m


def _reference(model: str, opts: dict) -> dict:
    """The FP32 run that every cell of ``model`` compares with (once per worker)."""
    from .. import data

    def make():
        ref = _fp32(model)
        if hasattr(ref, "embed"):
            texts = opts["sentences"] if opts["sentences"] is not None else data.sentences()
            probe = texts[:16]
            return dict(texts=texts, probe=probe,
                        e_ref=ref.embed(texts, batch_size=opts["batch_size"]),
                        h_ref=ref.hidden_states(probe),
                        mask=ref.attention_mask(probe) if hasattr(ref, "attention_mask")
                        else None)
        ids = np.asarray(ref.tokenize(data.public_domain_text())[:opts["max_tokens"]])
        w = opts["window"]
        windows = [ids[i:i + w] for i in range(0, ids.size - 1, w) if ids[i:i + w].size > 1]
        if not windows:
            raise ValueError("the evaluation text gives fewer than 2 tokens")
        logits = [ref.logits(x) for x in windows]
        return dict(windows=windows, targets=np.concatenate([x[1:] for x in windows]),
                    lr=np.concatenate([lg[:-1] for lg in logits]),
                    h_ref=ref.hidden_states(windows[0][:128]))

    key = ("reference", model, json.dumps(opts, sort_keys=True, default=str))
    return _cached(key, make)


def _model_result(cell: Cell, opts: dict) -> dict:
    from ..models import preset
    from .evaluate import embedding_metrics, layer_sqnr, lm_metrics, weight_storage

    ref = _fp32(cell.model)
    r = _reference(cell.model, opts)
    cfg = preset(cell.config if cell.config is not None else cell.preset)
    m = _quantized(ref, cfg, cell.seed)
    if "e_ref" in r:
        metrics = embedding_metrics(r["e_ref"], m.embed(r["texts"],
                                                        batch_size=opts["batch_size"]))
        h = layer_sqnr(r["h_ref"], m.hidden_states(r["probe"]), r["mask"])
    else:
        lq = np.concatenate([m.logits(w)[:-1] for w in r["windows"]])
        metrics = lm_metrics(r["lr"], lq, r["targets"], n_boot=opts["n_boot"])
        h = layer_sqnr(r["h_ref"], m.hidden_states(r["windows"][0][:128]))
    storage = weight_storage(ref.linear_weights(), cfg, quantized=m.ctx.weight_specs)
    return dict(metrics, bits_per_weight=storage.get("bits_per_weight"),
                details=dict(description=cfg.description, storage=storage, layer_sqnr_db=h))


def _tensor(cell: Cell, generator) -> np.ndarray:
    rng = np.random.default_rng([cell.seed, zlib.crc32(cell.tensor.encode())])
    x = np.asarray(generator(cell.size, rng), dtype=np.float32)
    return x.reshape(-1, 256) if x.size % 256 == 0 else x


def _tensor_result(cell: Cell, generator) -> dict:
    from ..measure import error_report

    x = _tensor(cell, generator)
    d = error_report(x, cell.config if cell.config is not None else cell.recipe,
                     rng=cell.seed).to_dict()
    counts = d.pop("counts")
    out = {k: (float(v) if isinstance(v, str) and k not in ("format", "rounding", "recipe")
               else v) for k, v in d.items() if k != "recipe"}
    out["details"] = dict(counts=counts)
    return out


def run_cell(cell: Cell, opts: dict, generator=None) -> dict:
    """The row of one cell (what a worker runs).  Errors of the cell's own code become an
    ``"error"`` row with the exception's type and message: they never reach dask.

    Examples
    --------
    >>> c = Cell("tensor", tensor="gaussian", size=256, recipe="int8", seed=0)
    >>> row = run_cell(c, {})
    >>> row["status"], row["sqnr_db"] > 30
    ('ok', True)
    >>> bad = run_cell(Cell("tensor", tensor="gaussian", size=256, recipe="int9"), {})
    >>> bad["status"], bad["error_type"]
    ('error', 'ValueError')
    """
    t0 = time.perf_counter()
    row = cell.columns()
    try:
        if cell.kind == "model":
            res = _model_result(cell, opts)
        else:
            res = _tensor_result(cell, generator or DISTRIBUTIONS[cell.tensor])
        row.update(status="ok", error_type=None, error=None)
        row.update(res)
    except Exception as err:  # recorded in the row: a cell never takes the sweep down
        row.update(status="error", error_type=type(err).__name__, error=str(err))
    row["seconds"] = time.perf_counter() - t0
    row["worker"] = _worker_name()
    return row


def _worker_name() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().name if get_worker() is not None else None
    except (ImportError, ValueError):
        return None


# ---- the table -----------------------------------------------------------------------------
def _check_path(path) -> pathlib.Path:
    p = pathlib.Path(path)
    if p.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"out: the table's suffix picks its format: .parquet (pyarrow) or "
                         f".jsonl (JSON lines), got {str(path)!r}")
    return p


def _flat(row: dict) -> dict:
    """A row with ``details`` as a JSON string (so every Parquet column is a scalar)."""
    from .evaluate import strict_json

    out = dict(row)
    if isinstance(out.get("details"), (dict, list)):
        out["details"] = strict_json(out["details"])
    return out


def read_table(path) -> list[dict]:
    """The rows of a sweep's table (``[]`` if there is no file); ``details`` parsed back.

    Raises
    ------
    ValueError
        ``path`` has neither a .parquet nor a .jsonl suffix.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.jsonl"
    >>> write_table(p, [{"key": "a", "status": "ok", "sqnr_db": 31.5, "details": {"n": 1}}])
    >>> read_table(p)
    [{'key': 'a', 'status': 'ok', 'sqnr_db': 31.5, 'details': {'n': 1}}]
    >>> write_table(p.with_suffix(".parquet"), read_table(p))
    >>> read_table(p.with_suffix(".parquet")) == read_table(p)
    True
    """
    p = _check_path(path)
    if not p.exists():
        return []
    if p.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(p).to_pylist()
    else:
        rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    rows = [{k: v for k, v in r.items() if v is not None or k in KEY_COLUMNS} for r in rows]
    for r in rows:
        if isinstance(r.get("details"), str):
            r["details"] = json.loads(r["details"])
    return rows


def write_table(path, rows: list[dict]) -> None:
    """Write ``rows`` (one per key) to ``path``, atomically (a temporary file, then rename):
    Parquet through pyarrow for ``.parquet``, else JSON lines (NaN and Inf as null)."""
    from .evaluate import strict_json

    p = _check_path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    flat = [_flat(r) for r in rows]
    if p.suffix.lower() == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("a .parquet table needs pyarrow: pip install 'fpsim[sweep]', "
                              "or write JSON lines (.jsonl)") from None
        names = list(dict.fromkeys(k for r in flat for k in r))
        cols = {}
        for n in names:
            vals = [r.get(n) for r in flat]
            if any(isinstance(v, float) for v in vals):  # ints and floats: one float column
                vals = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
                        else v for v in vals]
            cols[n] = vals
        pq.write_table(pa.table(cols), tmp)
    else:
        tmp.write_text("".join(strict_json(r) + "\n" for r in flat))
    os.replace(tmp, p)


# ---- the driver ----------------------------------------------------------------------------
def _client(scheduler, n_workers):
    """(client, cluster or None): the given client, one for the address, or a LocalCluster."""
    distributed = require_dask()
    if isinstance(scheduler, distributed.Client):
        return scheduler, None, False
    if scheduler is not None:
        if not isinstance(scheduler, str):
            raise TypeError(f"scheduler must be an address (str) or a distributed.Client, got "
                            f"{type(scheduler).__name__}")
        return distributed.Client(scheduler), None, True
    n = n_workers if n_workers is not None else max(1, min(4, os.cpu_count() or 1))
    cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    return distributed.Client(cluster), cluster, True


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc="sweep", unit="cell", file=sys.stderr)


def sweep(*, models=(), presets=(), seeds=(0,), tensors=(), recipes=(), size: int = 1 << 16,
          out="sweep.parquet", scheduler=None, n_workers: int | None = None,
          sentences=None, max_tokens: int = 1024, window: int = 512, batch_size: int = 64,
          n_boot: int = 1000, retry_errors: bool = False, progress: bool = True) -> list[dict]:
    """Run a grid of cells on a Dask cluster and keep their results in the table ``out``.

    Parameters
    ----------
    models, presets, seeds, tensors, recipes, size
        The grid, as for :func:`cells`.
    out : str or path
        The table: ``.parquet`` (pyarrow) or ``.jsonl`` (JSON lines).  Cells that already
        have an ``"ok"`` or ``"error"`` row are skipped (a rerun resumes).
    scheduler : str, distributed.Client or None
        The cluster: a scheduler address, a client, or None for a LocalCluster of
        ``n_workers`` processes with one thread each (closed at the end).
    n_workers : int
        Workers of the LocalCluster (default: the CPUs, at most 4).
    sentences : list of str or int
        MiniLM's sentences (an int: the first that many of :func:`fpsim.data.sentences`).
    max_tokens, window, batch_size, n_boot
        As for :func:`fpsim.app.evaluate.evaluate`.
    retry_errors : bool
        Run again the cells recorded as ``"error"``.
    progress : bool
        A progress bar (tqdm) on stderr.

    Returns
    -------
    list of dict
        Every row of the table after the run (the grid's cells first, in grid order).

    Raises
    ------
    ImportError
        dask.distributed (or pyarrow for .parquet) is not installed.
    ValueError, TypeError
        A bad grid (see :func:`cells`), ``out`` suffix or ``scheduler``.

    Examples
    --------
    >>> import fpsim, tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "synthetic.jsonl"
    >>> rows = fpsim.sweep(tensors=["gaussian", "laplace"], recipes=["int8", "mxfp8_e4m3"],
    ...                    seeds=[0, 1], size=4096, out=out, n_workers=1, progress=False)
    >>> len(rows), sorted({r["status"] for r in rows})
    (8, ['ok'])
    >>> rows[0]["key"], round(rows[0]["sqnr_db"], 1)
    ('tensor=gaussian|size=4096|recipe=int8|seed=0', 40.5)
    """
    generators = dict(tensors) if isinstance(tensors, dict) else {}
    grid = cells(models=models, presets=presets, seeds=seeds, tensors=tensors,
                 recipes=recipes, size=size)
    path = _check_path(out)
    if not path.parent.is_dir():
        raise ValueError(f"out: folder {path.parent} does not exist")
    if isinstance(sentences, (int, np.integer)) and not isinstance(sentences, bool):
        from .. import data

        sentences = data.sentences()[:int(sentences)]
    opts = dict(sentences=None if sentences is None else list(sentences),
                max_tokens=int(max_tokens), window=int(window), batch_size=int(batch_size),
                n_boot=int(n_boot))
    rows = {r["key"]: r for r in read_table(path)}
    keep = ("ok",) if retry_errors else FINISHED
    todo = [c for c in grid if rows.get(c.key, {}).get("status") not in keep]
    if todo:
        _run(todo, opts, generators, rows, path, scheduler, n_workers, progress)
    order = {c.key: i for i, c in enumerate(grid)}
    final = sorted(rows.values(), key=lambda r: order.get(r["key"], len(order)))
    write_table(path, final)
    return final


def _run(todo, opts, generators, rows, path, scheduler, n_workers, progress) -> None:
    distributed = require_dask()
    client, cluster, own = _client(scheduler, n_workers)
    bar = _progress(len(todo), progress)
    try:
        futures = {}
        for c in todo:
            gen = generators.get(c.tensor) if c.kind == "tensor" else None
            f = client.submit(run_cell, c, opts, gen, pure=False,
                              key=f"fpsim-sweep-{c.key}-{time.monotonic_ns()}")
            futures[f] = c
        last = 0.0
        for f in distributed.as_completed(list(futures)):
            c = futures[f]
            try:
                row = f.result()
            except Exception as err:  # the worker died or the task was lost: retried later
                row = dict(c.columns(), status="lost", error_type=type(err).__name__,
                           error=str(err))
            rows[c.key] = row
            if bar is not None:
                bar.update(1)
            if time.monotonic() - last > 1.0:  # the table as it stands, at most once a second
                write_table(path, list(rows.values()))
                last = time.monotonic()
    finally:
        if bar is not None:
            bar.close()
        write_table(path, list(rows.values()))
        if own:
            client.close()
        if cluster is not None:
            cluster.close()


def summary(rows: list[dict]) -> str:
    """A short text table of a sweep's rows: key, status and its main metric.

    Examples
    --------
    >>> print(summary([{"key": "tensor=g|size=256|recipe=int8|seed=0", "status": "ok",
    ...                 "sqnr_db": 40.123}]))
    cell                                  status  metric
    ------------------------------------  ------  -------------
    tensor=g|size=256|recipe=int8|seed=0  ok      sqnr_db 40.12
    """
    from .tables import format_table

    lines = []
    for r in rows:
        if r.get("status") != "ok":
            what = f"{r.get('error_type')}: {r.get('error')}"[:60]
        else:
            name = next((k for k in ("cosine_mean", "ppl", "sqnr_db") if k in r), None)
            v = r.get(name) if name else None
            what = f"{name} {v:.4g}" if isinstance(v, float) and math.isfinite(v) else str(v)
        lines.append([r["key"], r.get("status"), what])
    return format_table(["cell", "status", "metric"], lines)
