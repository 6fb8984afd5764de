"""The command line: fpsim formats / values / verify (bench is timed by hand, not tested)."""

import subprocess
import sys

import numpy as np
import pytest

import fpsim
from fpsim.app.cli import ML_DTYPES_FORMATS, main


def run(capsys, *argv):
    """(exit status, stdout, stderr) of ``fpsim *argv`` run in-process."""
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse exits for --help and usage errors
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def test_formats_lists_every_format(capsys):
    status, out, err = run(capsys, "formats")
    assert status == 0 and err == ""
    first_column = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert set(fpsim.list_formats()) <= first_column
    row = next(line for line in out.splitlines() if line.startswith("float8_e4m3fn "))
    assert "448" in row.split() and "e4m3fn" in row.split()


def test_formats_kind_filter(capsys):
    status, out, _ = run(capsys, "formats", "--kind", "int")
    assert status == 0
    assert "int8" in out and "float8_e4m3fn" not in out


@pytest.mark.parametrize("name", ["float4_e2m1fn", "e2m1fn"])
def test_values_e2m1fn_has_one_row_per_code(capsys, name):
    status, out, err = run(capsys, "values", name)
    assert status == 0 and err == ""
    rows = [line.split() for line in out.splitlines() if line.startswith("0x")]
    assert len(rows) == 2**4
    assert [r[0] for r in rows] == [f"0x{c:X}" for c in range(16)]
    values = [float(r[4]) for r in rows]
    np.testing.assert_array_equal(values, fpsim.get_format("float4_e2m1fn").values())
    assert rows[7][1:] == ["0", "11", "1", "6.0", "normal"]
    assert rows[1][-1] == "subnormal" and rows[8][-1] == "zero"


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e8m0fnu", "p3109_p1", "ocp_int8", "int4"])
def test_values_row_count(capsys, name):
    status, out, _ = run(capsys, "values", name)
    assert status == 0
    bits = fpsim.get_format(name).bits
    assert f"{2**bits} codes" in out.splitlines()[0]
    assert len(out.splitlines()) == 2**bits + 3  # title, header, rule


@pytest.mark.parametrize(
    "argv, names",
    [
        (["values", "e4m3f"], ["FMT", "'e4m3f'", "'e4m3fn'"]),
        (["values", "flaot4_e2m1fn"], ["FMT", "'flaot4_e2m1fn'", "'float4_e2m1fn'"]),
        (["verify", "--formats", "e5m3"], ["--formats", "'e5m3'", "'e5m2'"]),
        (["verify", "--formats", "float16"], ["--formats", "float16", "float8_e4m3fn"]),
        (["verify", "--chunk", "0"], ["--chunk", "'0'"]),
        (["bench", "--formats", "int9"], ["--formats", "'int9'", "'int8'"]),
        (["nosuchcommand"], ["nosuchcommand"]),
        ([], ["COMMAND"]),
    ],
)
def test_user_errors_are_one_line_with_status_2(capsys, argv, names):
    status, out, err = run(capsys, *argv)
    assert status == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "error" in err and "Traceback" not in err
    for name in names:
        assert name in err


@pytest.mark.parametrize("command", ["formats", "values", "verify", "bench"])
def test_every_command_has_help(capsys, command):
    status, out, _ = run(capsys, command, "--help")
    assert status == 0
    assert out.startswith("usage: fpsim " + command)


def test_verify_small_sample(capsys):
    pytest.importorskip("ml_dtypes")
    status, out, err = run(capsys, "verify", "--formats", "e2m1fn", "e4m3fn",
                           "--sample", "4096", "--chunk", "1024")
    assert status == 0, out + err
    assert "float4_e2m1fn" in out and "float8_e4m3fn" in out
    assert "OK:" in out and "FAIL" not in out


def test_verify_e8m0_counts_the_known_ml_dtypes_bug_apart(capsys, ml_quirks):
    """The e8m0 bug of ml_dtypes < 0.7 is counted apart only if the installed version has it."""
    status, out, _ = run(capsys, "verify", "--formats", "float8_e8m0fnu", "--sample", "1024")
    assert status == 0
    row = next(line for line in out.splitlines() if line.startswith("float8_e8m0fnu "))
    _, _, mismatches, known, *_ = row.split()
    assert mismatches == "0"
    # the boundary points include inputs in (2^-127, 1.5 * 2^-127)
    assert (int(known.replace(",", "")) > 0) == ml_quirks.e8m0_tie_bug
    assert ("known bug of ml_dtypes < 0.7" in out) == ml_quirks.e8m0_tie_bug
    assert f"e8m0 tie bug of ml_dtypes < 0.7: {'present' if ml_quirks.e8m0_tie_bug else 'absent'}" in out


def test_verify_e8m0_bug_is_a_failure_when_ml_dtypes_is_right(capsys, monkeypatch, ml_quirks):
    """fpsim giving the old ml_dtypes answer (2^-126) is a mismatch against a fixed ml_dtypes."""
    if ml_quirks.e8m0_tie_bug:
        pytest.skip(f"ml_dtypes {ml_quirks.version} has the e8m0 bug; the test above covers it")
    real = fpsim.encode

    def old_bug(x, fmt, **kw):
        codes = real(x, fmt, **kw)
        xa = np.asarray(x)
        codes[(xa > 2.0**-127) & (xa < 1.5 * 2.0**-127)] = 1
        return codes

    monkeypatch.setattr(fpsim.codec, "encode", old_bug)
    status, out, _ = run(capsys, "verify", "--formats", "float8_e8m0fnu", "--sample", "1024")
    assert status == 1 and "FAILED" in out


def test_known_ml_dtypes_bug_follows_the_probe():
    from fpsim.app.verify import MlDtypesQuirks, known_ml_dtypes_bug

    x = np.array([np.float32(2**-127) * np.float32(1.25)])
    old = MlDtypesQuirks("0.5.0", e8m0_tie_bug=True, float64_double_rounding=True)
    new = MlDtypesQuirks("0.7.0", e8m0_tie_bug=False, float64_double_rounding=False)
    args = ("float8_e8m0fnu", x, np.array([0]), np.array([1]))
    assert known_ml_dtypes_bug(*args, quirks=old).tolist() == [True]
    assert known_ml_dtypes_bug(*args, quirks=new).tolist() == [False]


def test_verify_reports_unexplained_mismatches(capsys, monkeypatch):
    """A wrong encode makes verify print the inputs and exit 1."""
    pytest.importorskip("ml_dtypes")
    real = fpsim.encode

    def off_by_one(x, fmt, **kw):
        codes = real(x, fmt, **kw)
        codes[np.asarray(x) == 1.0] += 1
        return codes

    monkeypatch.setattr(fpsim.codec, "encode", off_by_one)
    status, out, _ = run(capsys, "verify", "--formats", "e4m3fn", "--sample", "256")
    assert status == 1
    assert "mismatch: float8_e4m3fn: input 0x3F800000 (1.0): fpsim 0x39, ml_dtypes 0x38" in out
    assert "FAILED" in out


def test_verify_stochastic_checks_fast_kernels_against_the_generic_one(capsys, monkeypatch):
    status, out, err = run(capsys, "verify", "--stochastic", "--formats", "e4m3fn", "int8",
                           "p3109_k8p3se", "e8m0fnu", "--sample", "4096", "--chunk", "2048")
    assert status == 0, out + err
    assert "float64 kernel" in out and "OK: 4 format(s)" in out
    # a fast kernel that is off on float32 input only: caught, with the input shown
    real = fpsim.encode

    def off_for_float32(x, fmt, **kw):
        codes = real(x, fmt, **kw)
        x = np.asarray(x)
        if x.dtype == np.float32:
            codes[x == 1.0] += 1
        return codes

    monkeypatch.setattr(fpsim.codec, "encode", off_for_float32)
    status, out, _ = run(capsys, "verify", "--stochastic", "--formats", "e4m3fn",
                         "--sample", "256")
    assert status == 1
    assert "mismatch: float8_e4m3fn: input 0x3F800000 (1.0): fpsim 0x39, float64 kernel 0x38" in out


def test_verify_without_ml_dtypes(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # makes `import ml_dtypes` fail
    status, _, err = run(capsys, "verify", "--formats", "e4m3fn", "--sample", "16")
    assert status == 2
    assert len(err.strip().splitlines()) == 1
    assert "pip install ml_dtypes" in err


def test_ml_dtypes_formats_are_registered():
    for name in ML_DTYPES_FORMATS:
        assert fpsim.get_format(name).bits <= 8
    assert len(ML_DTYPES_FORMATS) == 12  # the 11 of ml_dtypes 0.5 and float8_e5m3fnu (0.7)


def test_python_dash_m():
    """``python -m fpsim`` runs the same command line (in a subprocess)."""
    res = subprocess.run([sys.executable, "-m", "fpsim", "values", "nosuch"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1 and "unknown format 'nosuch'" in res.stderr


def test_encode_prints_bits_value_and_error(capsys):
    status, out, err = run(capsys, "encode", "3.14159", "-1e-3", "465", "--format", "e4m3fn",
                           "--rounding", "toward_zero", "--saturate")
    assert status == 0 and err == ""
    rows = [line.split() for line in out.splitlines()[3:]]
    # 3.14159 toward zero -> 3.0 = 0 1000 100; -1e-3 -> -0; 465 saturates to 448
    assert rows[0][:6] == ["3.14159", "0x44", "0", "1000", "100", "3"]
    assert rows[1][1] == "0x80"
    assert rows[2][1] == "0x7e" and rows[2][5] == "448"


def test_encode_user_errors(capsys):
    status, _, err = run(capsys, "encode", "1", "--format", "e4m3fn", "--rounding", "nearest")
    assert status == 2 and "nearest_even" in err and len(err.strip().splitlines()) == 1
    status, _, err = run(capsys, "encode", "x", "--format", "e4m3fn")
    assert status == 2


def test_fetch_rejects_unknown_models(capsys):
    status, _, err = run(capsys, "fetch", "gpt5")
    assert status == 2 and "minilm" in err


# ---- clear one-line errors, checked before any long work (issue 9) ---------------------
def _no_work(monkeypatch):
    """Make the long parts fail loudly if they are reached."""
    import fpsim.app.evaluate
    import fpsim.app.report

    def boom(*a, **k):
        raise AssertionError("the prerequisites must be checked before any work")

    monkeypatch.setattr(fpsim.app.evaluate, "evaluate", boom)
    monkeypatch.setattr(fpsim.app.report, "synthetic_table", boom)


@pytest.mark.parametrize("argv, fragment", [
    (["eval", "--config", "{tmp}/missing.json"], "missing.json"),
    (["eval", "--config", "{tmp}/bad.yaml"], "YAML is not supported"),
    (["eval", "--preset", "int8", "--json", "{tmp}/no/such/folder/r.json"],
     "--json: folder .*no/such/folder does not exist"),
    (["report", "--out", "/proc/x"], "--out: cannot create the report folder /proc/x"),
    (["report", "--out", "{tmp}/file.txt"], "--out: .*file.txt is a file"),
    (["bench", "--log2-size", "40"], "--log2-size: .*at most 30"),
    (["eval", "--preset", "int8", "--config", "{tmp}/gate.json"],
     "'down', 'gate', 'up' that this model does not have"),
])
def test_cli_errors_are_one_line_and_come_first(capsys, monkeypatch, tmp_path, argv, fragment):
    (tmp_path / "bad.yaml").write_text("sites: {}\n")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "gate.json").write_text('{"sites": {"gate": "int8", "up": "int8", "down": "int8"}}')
    _no_work(monkeypatch)
    from fpsim.models import weights

    monkeypatch.setattr(weights, "fetch", lambda *a, **k: None)
    status, out, err = run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert status == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("fpsim") and "error:" in lines[0]
    import re

    assert re.search(fragment, lines[0]), lines[0]
    assert not (tmp_path / "no").exists()


def test_report_checks_the_models_extra_first(capsys, monkeypatch, tmp_path):
    """Without safetensors/tokenizers, `fpsim report` fails at once and leaves no folder."""
    _no_work(monkeypatch)
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers -> ImportError
    status, _, err = run(capsys, "report", "--out", str(tmp_path / "rep"))
    assert status == 2 and "pip install 'fpsim[models]'" in err and "tokenizers" in err
    assert not (tmp_path / "rep").exists()


def test_verify_integer_formats_against_numpy_rint(capsys):
    status, out, _ = run(capsys, "verify", "--formats", "int1", "uint1", "int2", "uint2",
                         "int8", "--sample", "4096")
    assert status == 0, out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:1] in "iu"}
    assert set(rows) == {"int1", "uint1", "int2", "uint2", "int8"}
    assert all(r[2] == "0" and r[-1] == "ok" for r in rows.values())
    assert "numpy's rint" in out


def test_verify_catches_a_wrong_integer_rounding(capsys, monkeypatch):
    """Truncation instead of rounding (what ml_dtypes' integer casts do) is a mismatch."""
    real = fpsim.encode

    def truncating(x, fmt, **kw):
        if fpsim.get_format(fmt).name == "int2":
            with np.errstate(invalid="ignore"):
                t = np.clip(np.trunc(np.nan_to_num(np.asarray(x, np.float64))), -2, 1)
            return t.astype(np.int8)
        return real(x, fmt, **kw)

    monkeypatch.setattr(fpsim.codec, "encode", truncating)
    status, out, _ = run(capsys, "verify", "--formats", "int2", "--sample", "4096")
    assert status == 1 and "mismatch: int2" in out
