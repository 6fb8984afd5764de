"""Extract the IEEE P3109 value tables into tests/golden/p3109/ (run by hand, not by the tests).

The P3109 working group's public repository ships, under ``Value Tables/Hexadecimal/``, one CSV
per binary format ``Binary{K}p{P}{s|u}{e|f}`` for K = 3..16 and every precision P: the columns
``codepoint,value,subnormal``, values in C's ``%a`` hexadecimal notation (or ``Inf``, ``-Inf``,
``NaN``), subnormals marked ``*``.  This script reads those CSVs at a pinned commit and writes:

``tests/golden/p3109/value_tables.npz``
    For each format whose values all fit float64 (exactly): key ``Binary{K}p{P}{s|u}{e|f}``, the
    float64 bit patterns of the values of codes ``0 .. 2**K - 1`` stored as wrapping uint64
    differences (``np.diff`` with a leading 0; ``np.cumsum`` undoes it exactly), which zlib
    packs small because the values step evenly within a binade; NaN codes hold the bits of
    ``float('nan')``.  Key ``{name}.subnormal``: ``np.packbits`` of the CSV's ``*`` column.
``tests/golden/p3109/manifest.json``
    The source (repository, commit, folder) and, per format (one line each), its
    parameters, its NaN and Inf codes and largest finite value as the CSV gives them, and
    whether float64 holds it (formats with 12 or more exponent bits reach 2**2047 and do not);
    ``max_finite_exponent`` is ``floor(log2(max finite))``.

Usage (from the repository root)::

    python tests/golden/make_p3109_golden.py --repo /path/to/P3109-Public [--commit HASH]

``--repo`` is a clone (or bare git dir) of github.com/P3109/Public; without it the script
clones it into a temporary folder.  The commit defaults to the pinned one below.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile
from fractions import Fraction

import numpy as np

REPOSITORY = "https://github.com/P3109/Public"
COMMIT = "26df0d048ac240046a821a8116b36618ccfeb79b"
TABLES = "Value Tables/Hexadecimal"
OUT = pathlib.Path(__file__).resolve().parent / "p3109"
NAME = re.compile(r"Binary(\d+)p(\d+)([su])([ef])\.csv")
HEX = re.compile(r"(-?)0x([0-9a-f]+)(?:\.([0-9a-f]*))?p([+-]\d+)")


def git(repo: str, *args: str) -> bytes:
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True).stdout


def exact_value(text: str):
    """The exact value of one CSV cell: a Fraction, or the strings 'inf', '-inf', 'nan'."""
    if text in ("Inf", "-Inf", "NaN"):
        return text.lower()
    m = HEX.fullmatch(text)
    if m is None:
        raise ValueError(f"unreadable value {text!r}")
    sign, whole, frac, exp = m.groups()
    frac = frac or ""
    digits = int(whole + frac, 16)
    v = Fraction(digits, 16 ** len(frac)) * Fraction(2) ** int(exp)
    return -v if sign else v


def as_float64(v) -> float | None:
    """``v`` as a float64 if it holds it exactly, else None."""
    if isinstance(v, str):
        return float(v)
    if v != 0 and abs(v) >= 2**1024:
        return None
    f = float(v)
    return f if Fraction(f) == v else None


def read_table(text: str, k: int):
    """(exact values, subnormal flags) of one CSV, checking its layout."""
    lines = text.strip().splitlines()
    if lines[0].strip() != "codepoint,value,subnormal":
        raise ValueError(f"unexpected header {lines[0]!r}")
    rows = [ln.split(",") for ln in lines[1:]]
    if len(rows) != 2**k:
        raise ValueError(f"{len(rows)} rows for K={k}")
    values, sub = [], []
    for i, (code, value, flag) in enumerate(rows):
        if int(code, 16) != i:
            raise ValueError(f"row {i} has code {code}")
        values.append(exact_value(value.strip()))
        sub.append(flag.strip() == "*")
    return values, np.array(sub)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", help="clone or bare git dir of P3109/Public (default: clone it)")
    ap.add_argument("--commit", default=COMMIT)
    args = ap.parse_args(argv)
    repo = args.repo
    if repo is None:
        repo = tempfile.mkdtemp(prefix="p3109-")
        subprocess.run(["git", "clone", "--quiet", REPOSITORY, repo], check=True)
    commit = git(repo, "rev-parse", f"{args.commit}^{{commit}}").decode().strip()
    paths = [p for p in git(repo, "ls-tree", "-r", "--name-only", commit, "--", TABLES)
             .decode().splitlines() if p.endswith(".csv")]

    arrays: dict[str, np.ndarray] = {}
    formats = {}
    for path in sorted(paths, key=lambda p: tuple(int(n) for n in NAME.search(p).groups()[:2])
                       + NAME.search(p).groups()[2:]):
        k, p, s, d = NAME.search(path).groups()
        k, p = int(k), int(p)
        raw = git(repo, "show", f"{commit}:{path}")
        values, sub = read_table(raw.decode(), k)
        name = f"Binary{k}p{p}{s}{d}"
        finite = [v for v in values if not isinstance(v, str)]
        top = max(finite)
        entry = {
            "k": k, "p": p, "signed": s == "s", "domain": "extended" if d == "e" else "finite",
            "nan_codes": [i for i, v in enumerate(values) if v == "nan"],
            "inf_codes": [i for i, v in enumerate(values) if v == "inf"],
            "neg_inf_codes": [i for i, v in enumerate(values) if v == "-inf"],
            "max_finite_exponent": top.numerator.bit_length() - top.denominator.bit_length(),
            "max_finite_hex": float(top).hex() if top < 2**1024 else None,
            "subnormal_count": int(sub.sum()),
        }
        floats = [as_float64(v) for v in values]
        entry["float64"] = all(f is not None for f in floats)
        if entry["float64"]:
            bits = np.array(floats, dtype=np.float64).view(np.uint64)
            arrays[name] = np.diff(bits, prepend=np.uint64(0))
            arrays[f"{name}.subnormal"] = np.packbits(sub)
        formats[name] = entry
        print(name, "float64" if entry["float64"] else "beyond float64", file=sys.stderr)

    OUT.mkdir(exist_ok=True)
    np.savez_compressed(OUT / "value_tables.npz", **arrays)
    manifest = {
        "source": {"repository": REPOSITORY, "commit": commit, "tables": TABLES,
                   "made_by": "tests/golden/make_p3109_golden.py"},
        "encoding": "value_tables.npz[name]: uint64 differences of the float64 bit patterns "
                    "of codes 0..2**K-1 (np.cumsum restores them); [name.subnormal]: "
                    "np.packbits of the CSV's subnormal column",
        "formats": formats,
    }
    lines = [f" {json.dumps(n)}: {json.dumps(f)}" for n, f in formats.items()]
    head = json.dumps({k: v for k, v in manifest.items() if k != "formats"}, indent=1)[:-2]
    (OUT / "manifest.json").write_text(head + ',\n "formats": {\n' + ",\n".join(lines)
                                       + "\n }\n}\n")
    print(f"{len(formats)} tables, {sum(f['float64'] for f in formats.values())} in float64",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
