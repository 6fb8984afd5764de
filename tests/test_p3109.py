"""IEEE P3109: fpsim's P3109 formats against the working group's value tables, and
``fpsim.p3109_projection`` against a pure-Python oracle written from the interim report.

Sources (P3109/Public at the commit in ``tests/golden/p3109/manifest.json``):

- ``Value Tables/Hexadecimal/K*/P*/*/Binary{K}p{P}{s|u}{e|f}.csv``: every code's value of every
  binary format of K = 3..16 bits, extracted by ``tests/golden/make_p3109_golden.py``.
- ``IEEE P3109 WG Interim Report.pdf``: section 4.7.2 (wDecode), 4.7.3 (wProject), 4.7.4
  (wRoundToPrecision, with RoundAway of every rounding mode), 4.7.5 (wSaturate), 4.7.6
  (wEncode).  The oracle below transcribes them over exact rationals (``Fraction``).

The repository ships no projection test vectors, so projections are checked against the oracle
on every value, midpoint, neighbour and out-of-range input of each format tried.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import pathlib
import warnings
from fractions import Fraction

import numpy as np
import pytest

import fpsim
from fpsim import p3109_projection as pp
from fpsim.rounding import ROUNDINGS

GOLDEN = pathlib.Path(__file__).parent / "golden" / "p3109"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
FORMATS = MANIFEST["formats"]
DETERMINISTIC = [r for r in pp.ROUNDING if r not in pp.STOCHASTIC]
SATURATIONS = list(pp.SATURATION)


@functools.lru_cache(maxsize=1)
def tables():
    return dict(np.load(GOLDEN / "value_tables.npz"))


def fmt_of(name: str):
    e = FORMATS[name]
    return fpsim.p3109(e["k"], e["p"], signed=e["signed"], domain=e["domain"])


# ---- the value tables ------------------------------------------------------------------
def test_the_golden_data_covers_every_table():
    """K = 3..16, every precision: 4K - 2 tables per K (P < K signed, P <= K unsigned)."""
    assert MANIFEST["source"]["commit"] == "26df0d048ac240046a821a8116b36618ccfeb79b"
    for k in range(3, 17):
        names = {n for n, e in FORMATS.items() if e["k"] == k}
        want = {f"Binary{k}p{p}{s}{d}" for p in range(1, k + 1) for s in "su" for d in "ef"
                if s == "u" or p < k}
        assert names == want, k
    assert len(FORMATS) == 504


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.slow] if e["k"] > 10 else [])
    for n, e in FORMATS.items() if e["float64"]])
def test_every_code_decodes_to_the_p3109_table(name):
    """fpsim's decode (float64) is bit for bit the table's value, NaN where it says NaN."""
    e, fmt = FORMATS[name], fmt_of(name)
    want = np.cumsum(tables()[name]).view(np.float64)
    got = fpsim.decode(np.arange(2 ** e["k"]), fmt, dtype=np.float64)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    bad = np.flatnonzero(got[~nan].view(np.uint64) != want[~nan].view(np.uint64))
    assert bad.size == 0, [(hex(int(c)), got[~nan][c], want[~nan][c]) for c in bad[:5]]
    # the specials and the classes, as fpsim's format spec states them
    assert e["nan_codes"] == [fmt.nan_code()]
    assert e["inf_codes"] == ([fmt.inf_code(False)] if fmt.has_inf else [])
    assert e["neg_inf_codes"] == ([fmt.inf_code(True)] if fmt.has_inf and fmt.signed else [])
    assert float.fromhex(e["max_finite_hex"]) == fmt.max
    sub = np.unpackbits(tables()[f"{name}.subnormal"])[: 2 ** e["k"]].astype(bool)
    np.testing.assert_array_equal(fmt.classify() == "subnormal", sub)


@pytest.mark.parametrize("name", [n for n, e in FORMATS.items() if not e["float64"]])
def test_formats_beyond_float64_are_refused(name):
    """The tables of 12 or more exponent bits reach 2**2047: float64 cannot hold them, and
    fpsim (whose values are float64) refuses the format instead of returning wrong values,
    with a message that names the argument, the cause and the precisions allowed (both
    spellings of the name, and no overflow warning on the way)."""
    e = FORMATS[name]
    ebits = e["k"] - e["p"] + (not e["signed"])
    assert e["max_finite_exponent"] >= 1024 and ebits >= 12
    fpsim_name = f"p3109_k{e['k']}p{e['p']}{name[-2:]}"
    for spelling in (name, fpsim_name):
        with pytest.raises(ValueError, match=rf"fmt '{spelling}' has {ebits} exponent bits: its "
                           rf"values reach 2\*\*{2 ** (ebits - 1) - 1}, beyond float64.*at most "
                           rf"11 exponent bits, that is P >= {e['k'] - 11 + (not e['signed'])}"):
            pp.project(1.0, spelling)


# ---- the oracle: the interim report's definitions over exact rationals ---------------------
INF, NAN = "inf", "nan"  # the closed extended reals' non-finite points (and NaN)


def bias_of(k, p, signed):
    return 2 ** (k - p - 1) if signed else 2 ** (k - p)


def floor_log2(x: Fraction) -> int:
    """floor(log2(x)) for x > 0, exactly."""
    e = x.numerator.bit_length() - x.denominator.bit_length()
    return e if Fraction(2) ** e <= x else e - 1


def decode_ref(code, k, p, signed, domain):
    """wDecodeAux (4.7.2)."""
    b = bias_of(k, p, signed)
    if (signed and code == 2 ** (k - 1)) or (not signed and code == 2**k - 1):
        return NAN
    if signed and domain == "extended" and code == 2 ** (k - 1) - 1:
        return INF
    if signed and domain == "extended" and code == 2**k - 1:
        return "-inf"
    if not signed and domain == "extended" and code == 2**k - 2:
        return INF
    if signed and 2 ** (k - 1) < code < 2**k:
        return -decode_ref(code - 2 ** (k - 1), k, p, signed, domain)
    t, e = code % 2 ** (p - 1), code // 2 ** (p - 1)
    if e == 0:
        return Fraction(t, 2 ** (p - 1)) * Fraction(2) ** (1 - b)
    return (1 + Fraction(t, 2 ** (p - 1))) * Fraction(2) ** (e - b)


def round_ref(x, p, b, mode, n=None, r=None):
    """wRoundToPrecision (4.7.4): x a Fraction; the rounded Fraction (unbounded above)."""
    if x == 0:
        return x
    q = max(floor_log2(abs(x)), 1 - b) - p + 1
    s_real = abs(x) / Fraction(2) ** q
    s_floor = math.floor(s_real)
    nu = s_real - s_floor
    code_is_even = (s_floor % 2 == 0) if p > 1 else (s_floor == 0 or (q + b) % 2 == 0)
    away = {
        "TowardZero": lambda: False,
        "TowardPositive": lambda: nu > 0 and x > 0,
        "TowardNegative": lambda: nu > 0 and x < 0,
        "NearestTiesToAway": lambda: nu >= Fraction(1, 2),
        "NearestTiesToEven": lambda: nu > Fraction(1, 2) or (nu == Fraction(1, 2)
                                                               and not code_is_even),
        "ToOdd": lambda: nu > 0 and code_is_even,
        "StochasticA": lambda: math.floor(nu * 2**n) + r >= 2**n,
        "StochasticB": lambda: math.floor(nu * 2 ** (n + 1)) + (2 * r + 1) >= 2 ** (n + 1),
        "StochasticC": lambda: rnite(nu * 2**n) + r >= 2**n,
    }[mode]()
    s = s_floor + 1 if away else s_floor
    return (1 if x > 0 else -1) * s * Fraction(2) ** q


def rnite(x: Fraction) -> int:
    f = math.floor(x)
    return f if (x < f + Fraction(1, 2) or (x == f + Fraction(1, 2) and f % 2 == 0)) else f + 1


def saturate_ref(sat, rnd, x, signed, domain, m_lo, m_hi):
    """wSaturate (4.7.5): its lines in order, the first that applies wins."""
    ext, uns = domain == "extended", not signed
    if x == NAN:
        return NAN
    if x not in (INF, "-inf") and m_lo <= x <= m_hi:
        return x
    pinf, ninf = x == INF, x == "-inf"
    lo_side = ninf or (not pinf and x < m_lo)  # X < M_lo or -inf
    if sat == "SatFinite":
        return m_hi if (pinf or not lo_side) else m_lo
    if sat == "SatPropagate":
        if pinf:
            return INF if ext else m_hi
        if ninf:
            return "-inf" if (signed and ext) else m_lo
        return m_lo if lo_side else m_hi
    # SatNone
    if pinf:
        return INF if ext else m_hi
    if ninf:
        return "-inf" if (signed and ext) else (NAN if uns else m_lo)
    if not lo_side:  # X > M_hi
        if rnd == "ToOdd" and uns and ext:
            return m_hi
        if rnd in ("TowardZero", "TowardNegative"):
            return m_hi
        return INF if ext else m_hi
    if rnd in ("TowardZero", "TowardPositive"):
        return m_lo
    if signed and ext:
        return "-inf"
    if uns:
        return NAN
    return m_lo


def encode_ref(x, k, p, signed):
    """wEncode (4.7.6)."""
    b = bias_of(k, p, signed)
    if x == NAN:
        return 2 ** (k - 1) if signed else 2**k - 1
    if x == INF:
        return 2 ** (k - 1) - 1 if signed else 2**k - 2
    if x == "-inf":
        return encode_ref(INF, k, p, signed) + 2 ** (k - 1)
    if x < 0:
        return encode_ref(-x, k, p, signed) + 2 ** (k - 1)
    if x == 0:
        return 0
    e = max(floor_log2(x), 1 - b)
    s = x / Fraction(2) ** e * 2 ** (p - 1)
    assert s.denominator == 1, "not in the datum set"
    t = int(s) % 2 ** (p - 1)
    return t if s < 2 ** (p - 1) else t + (e + b) * 2 ** (p - 1)


def project_ref(x: float, k, p, signed, domain, rnd, sats, n=None, r=None) -> list[int]:
    """wProject (4.7.3) of the float x, as codes, one per saturation mode in ``sats``."""
    b = bias_of(k, p, signed)
    top = (2 ** (k - 1) - 1 if signed else 2**k - 2) - (domain == "extended")
    m_hi = decode_ref(top, k, p, signed, domain)  # MaxFiniteOf(f): the largest finite code
    m_lo = -m_hi if signed else Fraction(0)
    if math.isnan(x):
        rounded = NAN
    elif math.isinf(x):
        rounded = INF if x > 0 else "-inf"
    else:
        rounded = round_ref(Fraction(x), p, b, rnd, n, r)
    return [encode_ref(saturate_ref(sat, rnd, rounded, signed, domain, m_lo, m_hi), k, p, signed)
            for sat in sats]


def test_the_oracle_decodes_like_the_tables():
    """The oracle's wDecode against the P3109 tables (so the oracle's reading of the format
    is checked by the working group's data, not by fpsim)."""
    for name, e in FORMATS.items():
        if e["k"] > 8:
            continue
        want = np.cumsum(tables()[name]).view(np.float64)
        for code, w in enumerate(want):
            v = decode_ref(code, e["k"], e["p"], e["signed"], e["domain"])
            got = math.nan if v == NAN else math.inf if v == INF else -math.inf \
                if v == "-inf" else float(v)
            assert (math.isnan(got) and math.isnan(w)) or got == w, (name, code)


# ---- projections against the tables: every format ---------------------------------------------
TABLE_ROUNDINGS = DETERMINISTIC + list(pp.STOCHASTIC)


def table_projections(name: str):
    """Inputs for one format and, per (rounding, saturation), the codes they must project to,
    read off the P3109 table alone: every finite value (it never moves), the points 1/4, 1/2
    and 3/4 of the way to the next value (the last one past the largest finite value M_hi,
    to the value the exponent range would give next), with both signs, beyond the range,
    +-Inf, NaN and -0.  Which of the two neighbours a mode picks is its RoundAway in 4.7.4
    (stochastic modes with N = 2 and R cycling 0..3); out-of-range results go through
    ``saturate_ref`` (4.7.5) and the table's codes of M_hi, M_lo, +-Inf and NaN."""
    e = FORMATS[name]
    k, p, signed = e["k"], e["p"], e["signed"]
    vals = np.cumsum(tables()[name]).view(np.float64)
    half = 2 ** (k - 1) if signed else 2**k  # magnitude codes 0 .. half - 1
    mag = np.flatnonzero(np.isfinite(vals[:half]))
    grid = vals[mag]
    assert grid[0] == 0 and (np.diff(grid) > 0).all()  # the table is monotone in the code
    m_hi, top = grid[-1], int(mag[-1])
    ulp_top = math.ldexp(1.0, math.frexp(m_hi)[1] - 1 - (p - 1))  # 2**Q at M_hi (4.7.4)
    step = np.append(np.diff(grid), ulp_top)  # to the next value (M_hi + 2**Q may be 2**1024)
    c_lo, c_hi = mag, np.append(mag[1:], -1)  # -1: beyond M_hi
    t = np.repeat([0.0, 0.25, 0.5, 0.75], grid.size)
    a = np.tile(grid, 4) + t * np.tile(step, 4)  # exact: 2 more bits than the format's
    assert ((a - np.tile(grid, 4)) / np.tile(step, 4) == t).all()
    with np.errstate(over="ignore"):
        far = [v for v in (2 * (m_hi + ulp_top), np.finfo(np.float64).max)
               if m_hi + ulp_top <= v < np.inf]  # rounded beyond M_hi by every mode
    c_lo, c_hi = np.tile(c_lo, 4), np.tile(c_hi, 4)
    r = np.arange(a.size) % 4
    odd = (c_lo % 2 == 1)  # CodeIsEven of 4.7.4 is the parity of the lower code, P = 1 too
    xs = np.concatenate([a, -a, far, np.negative(far), [np.inf, -np.inf, np.nan, -0.0]])
    r = np.concatenate([r, r, np.zeros(2 * len(far) + 4, dtype=np.int64)])
    m_lo = -m_hi if signed else 0.0
    code_of = {NAN: e["nan_codes"][0], m_hi: top, m_lo: (top + half if signed else 0)}
    code_of.update({INF: e["inf_codes"][0]} if e["inf_codes"] else {})
    code_of.update({"-inf": e["neg_inf_codes"][0]} if e["neg_inf_codes"] else {})
    want = {}
    for rnd in TABLE_ROUNDINGS:
        pos, neg = [{
            "TowardZero": t < 0,
            "TowardPositive": (t > 0) & (s > 0),
            "TowardNegative": (t > 0) & (s < 0),
            "NearestTiesToAway": t >= 0.5,
            "NearestTiesToEven": (t > 0.5) | ((t == 0.5) & odd),
            "ToOdd": (t > 0) & ~odd,
            "StochasticA": np.floor(t * 4) + r[: t.size] >= 4,
            "StochasticB": np.floor(t * 8) + 2 * r[: t.size] + 1 >= 8,
            "StochasticC": t * 4 + r[: t.size] >= 4,  # RNITE(4 t) = 4 t
        }[rnd] for s in (1, -1)]
        m = [np.where(away, c_hi, c_lo) for away in (pos, neg)]  # rounded magnitude codes
        for sat in SATURATIONS:
            above, below, *specials = [
                code_of[saturate_ref(sat, rnd, v, signed, e["domain"], m_lo, m_hi)]
                for v in (np.nextafter(m_hi, np.inf), np.nextafter(m_lo, -np.inf), INF, "-inf")]
            out_pos = np.where(m[0] < 0, above, m[0])
            if signed:
                out_neg = np.where(m[1] < 0, below, np.where(m[1] == 0, 0, m[1] + half))
            else:
                out_neg = np.where(m[1] == 0, 0, below)
            want[rnd, sat] = np.concatenate([
                out_pos, out_neg, [above] * len(far), [below] * len(far),
                [*specials, e["nan_codes"][0], 0]])
    return xs, r, want


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.slow] if e["k"] > 5 else [])
    for n, e in FORMATS.items() if e["float64"]])
def test_projections_match_the_p3109_tables(name):
    """Every format the repository ships that float64 holds, every rounding and saturation
    mode: ``encode`` gives the codes read off the P3109 table (see ``table_projections``)."""
    xs, r, want = table_projections(name)
    for (rnd, sat), codes in want.items():
        kwargs = {"random_bits": 2, "random_ints": r} if rnd in pp.STOCHASTIC else {}
        got = pp.encode(xs, name, rounding=rnd, saturation=sat, **kwargs)
        bad = np.flatnonzero(got != codes)
        assert bad.size == 0, (rnd, sat, [(float(xs[j]).hex(), int(got[j]), int(codes[j]))
                                          for j in bad[:5]])


# ---- inputs: every value, midpoint, neighbour, and beyond the range ------------------------
@functools.lru_cache(maxsize=None)
def probes(name: str) -> np.ndarray:
    fmt = fmt_of(name)
    v = fpsim.decode(np.arange(2**fmt.bits), fmt, dtype=np.float64)
    fin = np.unique(np.abs(v[np.isfinite(v)]))
    ulp_top = math.ldexp(1.0, fmt.emax - fmt.mantissa_bits)
    virtual = fmt.max + ulp_top  # the next value if the exponent range went on
    grid = np.append(fin, virtual)
    lo, hi = grid[:-1], grid[1:]
    step = hi - lo
    pts = [grid, lo + step / 2, lo + step / 4, lo + 3 * step / 4, lo + step / 8,
           [virtual + ulp_top / 2, virtual + ulp_top, virtual * 2, fin[1] / 2, fin[1] / 4,
            5e-324, 1e-300, 1e300, np.finfo(np.float64).max]]
    pts = np.concatenate([np.asarray(p, dtype=np.float64) for p in pts])
    pts = pts[np.isfinite(pts)]
    with np.errstate(over="ignore"):
        pts = np.concatenate([pts, np.nextafter(pts, np.inf), np.nextafter(pts, 0)])
    pts = np.unique(pts[np.isfinite(pts)])
    return np.concatenate([pts, -pts, [np.inf, -np.inf, np.nan, -0.0]])


# every format of 6 bits or fewer; of 8 bits a spread of precisions; wider: a few
SMALL = [n for n, e in FORMATS.items() if e["k"] <= 6]
SOME = ["Binary8p1se", "Binary8p1ue", "Binary8p3sf", "Binary8p4se", "Binary8p4uf", "Binary8p7ue",
        "Binary8p8uf", "Binary10p1sf", "Binary12p6ue", "Binary16p5se", "Binary16p11sf",
        "Binary16p16ue"]


def check_against_oracle(name, rnd, xs, n=None, r=None):
    """pp.encode against the oracle under every saturation mode (the rounding done once)."""
    e = FORMATS[name]
    rs = np.broadcast_to(r if r is not None else 0, xs.shape)
    want = np.array([project_ref(float(x), e["k"], e["p"], e["signed"], e["domain"], rnd,
                                 SATURATIONS, n, None if r is None else int(ri))
                     for x, ri in zip(xs, rs)]).reshape(xs.size, len(SATURATIONS))
    for i, sat in enumerate(SATURATIONS):
        got = pp.encode(xs, name, rounding=rnd, saturation=sat, random_bits=n,
                        **({} if r is None else {"random_ints": r}))
        bad = np.flatnonzero(got != want[:, i])
        assert bad.size == 0, (sat, [(float(xs[j]).hex(), int(got[j]), int(want[j, i]))
                                     for j in bad[:5]])


@pytest.mark.parametrize("rnd", DETERMINISTIC)
@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if FORMATS[n]["k"] > 4
                                               else []) for n in SMALL + SOME])
def test_deterministic_projections_match_the_oracle(name, rnd):
    """Every value, midpoint, quarter point, float64 neighbour, out-of-range value, +-Inf,
    NaN and -0 (a sample of them beyond 8 bits), under the three saturation modes."""
    xs = probes(name)
    if FORMATS[name]["k"] > 8:
        xs = np.random.default_rng(FORMATS[name]["k"]).choice(xs, 3000, replace=False)
        xs = np.concatenate([xs, [np.inf, -np.inf, np.nan, fmt_of(name).max * 1.0001]])
    check_against_oracle(name, rnd, xs)


@pytest.mark.parametrize("rnd", pp.STOCHASTIC)
@pytest.mark.parametrize("name", ["Binary3p1ue", "Binary4p2se", "Binary5p3sf", "Binary6p6uf",
                                  "Binary6p1se", *[pytest.param(n, marks=pytest.mark.slow)
                                                   for n in ("Binary8p4se", "Binary8p3ue")]])
@pytest.mark.parametrize("n", [1, 3])
def test_stochastic_projections_match_the_oracle_for_every_r(name, rnd, n):
    """Every probe under every one of the 2**N random integers R, bit for bit (a sample of
    the probes for 8 bits)."""
    xs = probes(name)
    if FORMATS[name]["k"] == 8:
        xs = np.random.default_rng(n).choice(xs, 400, replace=False)
    r = np.arange(2**n)
    check_against_oracle(name, rnd, np.repeat(xs, r.size), n, np.tile(r, xs.size))


# ---- the stochastic modes: exact expectations over all 2**N random integers ---------------
def expected_fraction(variant, nu: Fraction, n: int) -> Fraction:
    """P(round away) = #{R : RoundAway} / 2**N, counted from the definitions in 4.7.4."""
    if variant == "StochasticA":
        t = math.floor(nu * 2**n)  # R >= 2**N - t: t of the 2**N values
    elif variant == "StochasticB":
        t = (math.floor(nu * 2 ** (n + 1)) + 1) // 2  # 2R + 1 >= 2**(N+1) - u
    else:
        t = rnite(nu * 2**n)
    return Fraction(t, 2**n)


@pytest.mark.parametrize("variant", pp.STOCHASTIC)
@pytest.mark.parametrize("name", ["Binary8p4se", "Binary6p1se", "Binary7p3uf", "Binary5p2sf"])
@pytest.mark.parametrize("n", [1, 3, pytest.param(5, marks=pytest.mark.slow)])
def test_stochastic_expectation_is_exact(variant, name, n):
    """Over all 2**N values of R, every result is lo or hi, and hi comes up exactly
    2**N * P(away) times, P(away) counted from the definition; so E[project(x)] is exactly
    lo + (hi - lo) * P(away).  When x's fraction nu has at most N bits, E[project(x)] == x
    exactly (all three are unbiased there); StochasticA (nu truncated) never exceeds |x|."""
    fmt = fmt_of(name)
    v = fpsim.decode(np.arange(2**fmt.bits), fmt, dtype=np.float64)
    fin = np.unique(v[np.isfinite(v) & (v >= 0)])
    lo, hi = fin[:-1], fin[1:]  # neighbours, both within [0, max]
    nus = [Fraction(j, 2 ** (n + 2)) for j in range(2 ** (n + 2))]  # 4x finer than N bits
    x = lo[:, None] + np.array([float(nu) for nu in nus])[None, :] * (hi - lo)[:, None]
    r = np.arange(2**n)
    for sign in ((1, -1) if fmt.signed else (1,)):
        got = pp.project(np.repeat(sign * x.ravel(), r.size), fmt, rounding=variant,
                         saturation="SatNone", random_bits=n, random_ints=np.tile(r, x.size))
        got = sign * got.reshape(lo.size, len(nus), r.size)
        assert ((got == lo[:, None, None]) | (got == hi[:, None, None])).all()
        ups = (got == hi[:, None, None]).sum(axis=2)  # [pair, nu]
        for j, nu in enumerate(nus):
            p_away = expected_fraction(variant, nu, n)
            np.testing.assert_array_equal(ups[:, j], int(p_away * 2**n), err_msg=str(nu))
            # E = lo + (hi - lo) * P(away), and x = lo + (hi - lo) * nu
            if (nu * 2**n).denominator == 1:
                assert p_away == nu  # E[project(x)] == x
            if variant == "StochasticA":
                assert p_away <= nu  # E[project(x)] <= |x|
    # the exact mean itself, for one value (Fractions, as a cross-check of the reading above)
    xs = np.full(r.size, float(Fraction(lo[-1]) + Fraction(1, 2**n) * (Fraction(hi[-1])
                                                                        - Fraction(lo[-1]))))
    got = pp.project(xs, fmt, rounding=variant, random_bits=n, random_ints=r)
    assert sum(Fraction(g) for g in got) / r.size == Fraction(xs[0])


def test_stochastic_a_32_bits_is_fpsims_stochastic_stream():
    """StochasticA with N = 32 drawn from ``rng`` runs on fpsim's kernel: bit for bit the
    NumPy implementation fed R = 2**32 - 1 - r, r being fpsim's 32 random bits per element."""
    from fpsim._kernels.scalar import stochastic_bits

    seed = 12345
    fmt = fmt_of("Binary8p4se")
    xs = probes("Binary8p4se")
    xs = np.tile(xs[np.isfinite(xs)], 4)
    r = np.array([2**32 - 1 - stochastic_bits(np.uint64(seed), i) for i in range(xs.size)])
    for sat in SATURATIONS:
        a = pp.encode(xs, fmt, rounding="StochasticA", saturation=sat, random_bits=32, rng=seed)
        b = pp.encode(xs, fmt, rounding="StochasticA", saturation=sat, random_bits=32,
                      random_ints=r)
        np.testing.assert_array_equal(a, b)
    # and with the oracle, on a sample
    for i in range(0, xs.size, 17):
        [want] = project_ref(float(xs[i]), 8, 4, True, "extended", "StochasticA", ["SatNone"],
                             32, int(r[i]))
        assert int(b[i]) == want, (float(xs[i]).hex(), int(r[i]))


def test_rng_draws_are_reproducible():
    x = np.linspace(-3, 3, 1001)
    for variant, n in itertools.product(pp.STOCHASTIC, (4, 32)):
        a = pp.project(x, "p3109_k8p4se", rounding=variant, random_bits=n, rng=7)
        b = pp.project(x, "p3109_k8p4se", rounding=variant, random_bits=n,
                       rng=np.random.default_rng(7))
        c = pp.project(x, "p3109_k8p4se", rounding=variant, random_bits=n, rng=8)
        np.testing.assert_array_equal(a, pp.project(x, "p3109_k8p4se", rounding=variant,
                                                    random_bits=n, rng=7))
        if not (variant == "StochasticA" and n == 32):  # a Generator gives one seed draw there
            np.testing.assert_array_equal(a, b)
        assert (a != c).any()
        lo = pp.project(x, "p3109_k8p4se", rounding="TowardNegative")
        hi = pp.project(x, "p3109_k8p4se", rounding="TowardPositive")
        assert ((a == lo) | (a == hi)).all()


# ---- the mapping onto fpsim ---------------------------------------------------------------
def test_every_fpsim_rounding_has_a_p3109_name():
    assert set(ROUNDINGS) - {v for v in pp.ROUNDING.values() if v} == {"stochastic"}
    assert set(pp.ROUNDING) == set(DETERMINISTIC) | set(pp.STOCHASTIC)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if FORMATS[n]["k"] > 8 else n for n in SOME])
def test_mapped_names_are_fpsims_casts(name):
    """ROUNDING and SATURATION say which fpsim call gives the same codes: check that."""
    xs = probes(name)
    for rnd, sat in itertools.product(DETERMINISTIC, SATURATIONS):
        saturate = pp.SATURATION[sat]
        ours = pp.encode(xs, name, rounding=rnd, saturation=sat)
        theirs = [fpsim.encode(xs, fmt_of(name), rounding=pp.ROUNDING[rnd], saturate=s)
                  for s in (True, False)]
        if sat == "SatNone" and name.endswith("se"):  # docs/numerics.md: like saturate=False
            np.testing.assert_array_equal(ours, theirs[1])
        if saturate is None:
            continue
        np.testing.assert_array_equal(ours, theirs[0 if saturate else 1])


def test_sat_propagate_and_sat_none_are_not_a_saturate_flag():
    """SATURATION maps them to None: some input differs from both saturate=True and False."""
    for sat in ("SatPropagate", "SatNone"):
        differs = False
        for name in ("Binary8p4se", "Binary8p4sf", "Binary8p4ue", "Binary8p4uf"):
            xs = probes(name)
            for rnd in DETERMINISTIC:
                ours = pp.encode(xs, name, rounding=rnd, saturation=sat)
                both = [fpsim.encode(xs, fmt_of(name), rounding=pp.ROUNDING[rnd], saturate=s)
                        for s in (True, False)]
                differs |= all((ours != t).any() for t in both)
        assert differs, sat


def test_names_and_shapes():
    assert pp.encode(1.0, "Binary8p4se").shape == ()
    assert pp.project([[1.0, 2.0]], "p3109_k8p4se").shape == (1, 2)
    assert pp.encode(np.float32(1.0), fpsim.p3109(16, 8)).dtype == np.uint16
    np.testing.assert_array_equal(  # OvfInf, the 3.2.0 exemplars' name, is SatNone
        pp.encode([1e9, -np.inf], "Binary8p4ue", saturation="OvfInf"),
        pp.encode([1e9, -np.inf], "Binary8p4ue", saturation="SatNone"))


# ---- bad arguments --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    ({"rounding": "NearestTiesToEvn"}, ValueError, "did you mean 'NearestTiesToEven'"),
    ({"rounding": "nearest_even"}, ValueError, "fpsim's 'nearest_even' is P3109's "
                                               "'NearestTiesToEven'"),
    ({"rounding": "stochastic"}, ValueError, "fpsim's 'stochastic' is P3109's 'StochasticA' "
                                             "with random_bits=32"),
    ({"rounding": 3}, TypeError, "rounding must be a str"),
    ({"saturation": "SatFinit"}, ValueError, "unknown saturation 'SatFinit'.*did you mean "
                                             "'SatFinite'"),
    ({"saturation": "satnone"}, ValueError, "did you mean 'SatNone'"),
    ({"rounding": "StochasticB"}, ValueError, "needs random_bits=N"),
    ({"rounding": "StochasticB", "random_bits": 4}, ValueError, "needs exactly one of rng="),
    ({"rounding": "StochasticB", "random_bits": 4, "rng": 1, "random_ints": [0]}, ValueError,
     "got both"),
    ({"rounding": "StochasticA", "random_bits": 0, "rng": 1}, ValueError, "from 1 to 52"),
    ({"rounding": "StochasticA", "random_bits": 53, "rng": 1}, ValueError, "from 1 to 52"),
    ({"rounding": "StochasticA", "random_bits": True, "rng": 1}, TypeError, "random_bits"),
    ({"rounding": "StochasticA", "random_bits": 4.0, "rng": 1}, TypeError, "random_bits"),
    ({"rounding": "StochasticC", "random_bits": 2, "random_ints": [4]}, ValueError,
     r"0 <= R < 2\*\*random_bits = 4"),
    ({"rounding": "StochasticC", "random_bits": 2, "random_ints": [-1]}, ValueError, "0 <= R"),
    ({"rounding": "StochasticC", "random_bits": 2, "random_ints": [0.5]}, TypeError,
     "integer array"),
    ({"rounding": "StochasticC", "random_bits": 2, "random_ints": [0, 1]}, ValueError,
     "does not broadcast"),
    ({"rounding": "StochasticC", "random_bits": 2, "rng": -1}, ValueError, "rng"),
    ({"random_bits": 4}, ValueError, "random_bits is only for the stochastic modes"),
    ({"rng": 0}, ValueError, "rng is only for the stochastic modes"),
    ({"random_ints": [0]}, ValueError, "random_ints is only for the stochastic modes"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        pp.project(np.ones(3), "Binary8p4se", **kwargs)


@pytest.mark.parametrize("fmt, error, match", [
    ("float8_e4m3fn", ValueError, "must be an IEEE P3109 format"),
    ("float8_e4m3fnuz", ValueError, "float8_e4m3fnuz is bit for bit 'Binary8p4sf'"),
    ("float8_e5m2fnuz", ValueError, "float8_e5m2fnuz is bit for bit 'Binary8p3sf'"),
    ("int8", ValueError, "must be an IEEE P3109 format"),
    ("Binary8p9se", ValueError, r"fmt 'Binary8p9se' has precision P = 9: a signed P3109 "
                                r"format of K = 8 bits has 1 <= P <= 7"),
    ("Binary8p0ue", ValueError, r"1 <= P <= 8"),
    ("Binary2p1uf", ValueError, r"fmt 'Binary2p1uf' has K = 2 bits.*allowed: K from 3 to 16"),
    ("Binary17p8se", ValueError, r"fmt 'Binary17p8se' has K = 17 bits.*K from 3 to 16"),
    ("Binary16p2se", ValueError, r"fmt 'Binary16p2se' has 14 exponent bits.*P >= 5"),
    ("p3109_k8p4sx", ValueError, r"fmt 'p3109_k8p4sx' is not a P3109 format name: write "
                                 r"Binary\{K\}p\{P\}\{s\|u\}\{e\|f\}"),
    ("binary8p4", ValueError, "fmt 'binary8p4' is not a P3109 format name"),
    (None, TypeError, "fmt must be a P3109 format name.*got NoneType"),
    (8, TypeError, "fmt must be a P3109 format name.*got int"),
])
def test_bad_formats(fmt, error, match):
    """Clear errors, and no overflow warning before them."""
    with pytest.raises(error, match=match), warnings.catch_warnings():
        warnings.simplefilter("error")
        pp.project(1.0, fmt)


def test_both_spellings_and_objects_name_one_format():
    x = np.linspace(-300, 300, 2001)
    want = pp.encode(x, "Binary8p4se")
    for fmt in ("p3109_k8p4se", "binary8p4SE", "p3109_p4", fpsim.p3109(8, 4)):
        np.testing.assert_array_equal(pp.encode(x, fmt), want)


@pytest.mark.parametrize("rnd", pp.STOCHASTIC)
@pytest.mark.parametrize("n", [4, 32])
def test_huge_inputs_raise_no_warning(rnd, n):
    """|x| up to the largest float64, into a format whose ulp at max is below 1 (the ratio
    x / ulp overflowed float64 and warned): SatNone gives +-Inf, no RuntimeWarning."""
    big = np.finfo(np.float64).max
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = pp.encode([big, -big, 1e308], "Binary8p7se", rounding=rnd, saturation="SatNone",
                        random_bits=n, rng=0)
    np.testing.assert_array_equal(got, [0x7F, 0xFF, 0x7F])


def test_bad_x():
    with pytest.raises(TypeError, match="x must be"):
        pp.project(np.array([1, 2], dtype=np.int8), "Binary8p4se")
    with pytest.raises(TypeError, match="bool"):
        pp.project(True, "Binary8p4se")
