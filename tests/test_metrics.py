"""Error metrics: hand-derived values, properties, the NUMERICS SQNR ceilings, range counts,
the error report, and a table of invalid arguments."""

import contextlib
import dataclasses
import json
import math
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fpsim
from fpsim import metrics
from fpsim.measure import ErrorReport, error_report
from fpsim.metrics import (
    Counts,
    cosine_similarity,
    counts,
    kl_divergence,
    max_abs_error,
    mse,
    neg_log_mse_db,
    relative_error,
    rmse,
    sqnr_db,
    ulp,
    ulp_error,
)

JIT_DISABLED = os.environ.get("NUMBA_DISABLE_JIT", "0") == "1"
FLOAT_FORMATS = fpsim.list_formats("float")
# The pure-Python kernels (NUMBA_DISABLE_JIT=1) are slow: quantize at most 1e4 elements there.
MAX_QUANTIZED = 10**4 if JIT_DISABLED else 10**6


# ---- hand-derived values --------------------------------------------------
X = np.array([1.0, 2.0, 3.0, 4.0])
XH = np.array([1.0, 2.5, 2.0, 4.0])  # errors 0, 0.5, -1, 0


def test_hand_derived_error_magnitudes():
    assert mse(X, XH) == 1.25 / 4  # (0 + 0.25 + 1 + 0) / 4
    assert rmse(X, XH) == math.sqrt(1.25 / 4)
    assert max_abs_error(X, XH) == 1.0
    # signal 1 + 4 + 9 + 16 = 30, noise 1.25: 10 log10(24)
    assert sqnr_db(X, XH) == pytest.approx(10 * math.log10(24), rel=1e-15)
    # -10 log10(0.3125) = 5.0515 dB: the unnormalised variant differs from sqnr_db by
    # 10 log10(mean x^2) = 10 log10(7.5)
    assert neg_log_mse_db(X, XH) == pytest.approx(-10 * math.log10(0.3125), rel=1e-15)
    assert sqnr_db(X, XH) - neg_log_mse_db(X, XH) == pytest.approx(10 * math.log10(7.5))


def test_hand_derived_relative_error():
    # |err| / |x| over x != 0: 0, 0.25, 1/3, 0 (x = 0 with x_hat = 9 is left out)
    r = relative_error([1.0, 2.0, 3.0, 4.0, 0.0], [1.0, 2.5, 2.0, 4.0, 9.0])
    assert r.mean == pytest.approx((0.25 + 1 / 3) / 4)
    assert r.median == 0.125  # mean of the middle two, 0 and 0.25
    assert r.max == pytest.approx(1 / 3)
    none_used = relative_error([0.0, 0.0], [1.0, 2.0])
    assert all(math.isnan(v) for v in none_used)


def test_hand_derived_ulp():
    # e4m3fn: m = 3, emin = -6, emax = 8. ulp(1) = 2^-3; ulp(300) = 2^(8-3) = 32 (binade 256);
    # ulp(1e6) stays 32 (clamped to emax); below 2^-6 the subnormal spacing 2^-9;
    # ulp(2^-6) = 2^(-6-3) = 2^-9 too.
    got = ulp([1.0, -1.5, 300.0, 1e6, 0.0, 2.0**-6, 1e-5, np.inf, np.nan], "e4m3fn")
    want = [2**-3, 2**-3, 32.0, 32.0, 2**-9, 2**-9, 2**-9, 32.0, np.nan]
    np.testing.assert_array_equal(got, want)
    assert ulp(3.0, "float8_e8m0fnu") == 2.0  # m = 0: the ulp is the binade 2^1
    assert ulp(1e-40, "float8_e8m0fnu") == 2.0**-127  # no zero: clamp to the smallest
    assert ulp(100.0, "ocp_int8") == 2.0**-6  # integers: 2^scale_exp everywhere
    assert isinstance(ulp(1.0, "e5m2"), float)
    # 1 -> 1.0625 is half of ulp(1) = 0.125; 100 -> 98: ulp(100) = 2^(6-3) = 8, 2/8 = 0.25
    np.testing.assert_array_equal(
        ulp_error([1.0, 100.0, 5.0], [1.0625, 98.0, 5.0], "e4m3fn"), [0.5, 0.25, 0.0]
    )


@pytest.mark.parametrize("name", FLOAT_FORMATS)
def test_ulp_is_the_spacing_of_the_grid(name):
    """ulp(v) is the distance from each non-negative grid value v to the next one."""
    vals = fpsim.get_format(name).values()
    grid = np.unique(vals[np.isfinite(vals) & (vals >= 0)])
    np.testing.assert_array_equal(ulp(grid[:-1], name), np.diff(grid))


@pytest.mark.parametrize("name", FLOAT_FORMATS)
def test_ulp_error_bound_of_correct_rounding(name):
    """nearest_even is within 0.5 ulp inside the range, toward_zero within 1 ulp."""
    fmt = fpsim.get_format(name)
    rng = np.random.default_rng(7)
    n = 500 if JIT_DISABLED else 20_000
    lo = math.log2(fmt.smallest_normal) - 3 if fmt.has_zero else math.log2(fmt.smallest_normal)
    x = np.exp2(rng.uniform(lo, math.log2(fmt.max), n))
    if fmt.signed:
        x *= rng.choice([-1.0, 1.0], n)
    assert ulp_error(x, fpsim.quantize(x, fmt), fmt).max() <= 0.5
    assert ulp_error(x, fpsim.quantize(x, fmt, rounding="toward_zero"), fmt).max() < 1.0


def test_hand_derived_cosine_similarity():
    assert cosine_similarity([1.0, 0.0], [1.0, 1.0]) == pytest.approx(1 / math.sqrt(2))
    assert cosine_similarity([1.0, 2.0], [-2.0, -4.0]) == -1.0
    assert cosine_similarity([1.0, 0.0], [0.0, 3.0]) == 0.0
    # zero vectors: both zero -> 1 (identical), one zero -> 0 (e.g. all underflowed)
    assert cosine_similarity([0.0, 0.0], [0.0, 0.0]) == 1.0
    assert cosine_similarity([1.0, 2.0], [0.0, 0.0]) == 0.0
    # huge and tiny values: the power-of-two scaling keeps the sums finite
    assert cosine_similarity([1e300, 1e300], [1e-300, 1e-300]) == pytest.approx(1.0)


def test_hand_derived_kl_divergence():
    # KL([1/2, 1/2] || [1/4, 3/4]) = 1/2 ln(2) + 1/2 ln(2/3)
    want = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert kl_divergence([0.5, 0.5], [0.25, 0.75]) == pytest.approx(want, rel=1e-15)
    assert kl_divergence([2.0, 2.0], [1.0, 3.0]) == pytest.approx(want, rel=1e-15)  # weights
    # logits: log-probabilities shifted by any constant give the same distributions
    lp, lq = np.log([0.5, 0.5]) + 3.0, np.log([0.25, 0.75]) - 7.0
    assert kl_divergence(lp, lq, from_logits=True) == pytest.approx(want, rel=1e-12)
    # p = 0 terms contribute 0; q = 0 where p > 0 gives inf
    assert kl_divergence([0.0, 1.0], [0.5, 0.5]) == pytest.approx(math.log(2))
    assert kl_divergence([0.5, 0.5], [0.0, 1.0]) == math.inf
    assert kl_divergence([0.0, 0.0], [-np.inf, 0.0], from_logits=True) == math.inf
    assert kl_divergence([-np.inf, 0.0], [0.0, 0.0], from_logits=True) == pytest.approx(
        math.log(2)
    )


def test_axis_reduces_per_slice():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5))
    xh = x + 0.1 * rng.standard_normal((3, 5))
    for f in (mse, rmse, sqnr_db, neg_log_mse_db, max_abs_error, cosine_similarity):
        got = f(x, xh, axis=-1)
        assert isinstance(got, np.ndarray) and got.shape == (3,)
        np.testing.assert_allclose(got, [f(a, b) for a, b in zip(x, xh)], rtol=1e-12)
        np.testing.assert_allclose(f(x, xh, axis=0), [f(a, b) for a, b in zip(x.T, xh.T)],
                                   rtol=1e-12)
        assert isinstance(f(x, xh), float)
        assert f(x, xh, axis=(0, 1)) == pytest.approx(f(x, xh))
    r = relative_error(x, xh, axis=1)
    np.testing.assert_allclose(r.median, [relative_error(a, b).median for a, b in zip(x, xh)])
    p, q = np.abs(x), np.abs(xh)
    np.testing.assert_allclose(kl_divergence(p, q), [kl_divergence(a, b) for a, b in zip(p, q)])
    assert kl_divergence(p, q, axis=None) == pytest.approx(kl_divergence(p.ravel(), q.ravel()))


def test_nan_propagates_and_inf_conventions():
    x = np.array([1.0, 2.0, 3.0])
    bad = np.array([1.0, np.nan, 3.0])
    for f in (mse, rmse, sqnr_db, neg_log_mse_db, max_abs_error, cosine_similarity):
        assert math.isnan(f(x, bad)), f.__name__
        assert math.isnan(f(bad, x)), f.__name__
    assert all(math.isnan(v) for v in relative_error(x, bad))
    assert math.isnan(kl_divergence(x, bad))
    # per slice: only the slice with the NaN is NaN
    np.testing.assert_array_equal(np.isnan(sqnr_db(np.stack([x, x]), np.stack([x, bad]), axis=1)),
                                  [False, True])
    # equal infinities are no error; an overflow to Inf is an infinite error
    assert mse([np.inf, 1.0], [np.inf, 1.0]) == 0.0
    assert sqnr_db([1.0, 2.0], [np.inf, 2.0]) == -math.inf
    assert sqnr_db([0.0, 0.0], [0.0, 1.0]) == -math.inf  # no signal, some noise
    assert sqnr_db([0.0, 0.0], [0.0, 0.0]) == math.inf  # no noise at all


# ---- properties ------------------------------------------------------------
def _pairs(max_side=12):
    """Pairs of same-shaped arrays of multiples of 1/64 (exact under powers of two)."""
    shapes = hnp.array_shapes(min_dims=1, max_dims=2, max_side=max_side)
    ints = st.integers(-10_000, 10_000)
    return shapes.flatmap(lambda s: st.tuples(
        hnp.arrays(np.int64, s, elements=ints), hnp.arrays(np.int64, s, elements=ints),
    )).map(lambda t: (t[0] / 64.0, t[1] / 64.0))


@given(_pairs())
def test_properties_of_the_error_metrics(pair):
    x, xh = pair
    assert sqnr_db(x, x) == math.inf
    assert mse(x, x) == 0.0 and max_abs_error(x, x) == 0.0
    assert mse(x, xh) >= 0.0
    assert rmse(x, xh) <= max_abs_error(x, xh) * (1 + 1e-15)
    c = cosine_similarity(x, xh)
    assert -1.0 <= c <= 1.0
    assert cosine_similarity(x, x) == pytest.approx(1.0, abs=1e-14)
    assert cosine_similarity(x, 3.0 * x) == pytest.approx(1.0, abs=1e-14)


@given(_pairs(), st.integers(-900, 900))
def test_sqnr_is_scale_invariant(pair, k):
    x, xh = pair
    c = 2.0**k  # exact: the result must not change at all, even near over/underflow
    assert sqnr_db(c * x, c * xh) == sqnr_db(x, xh)
    assert cosine_similarity(c * x, xh) == cosine_similarity(x, xh)
    s = sqnr_db(x, xh)
    if math.isfinite(s):  # a general constant: equal up to rounding
        assert sqnr_db(-0.3 * x, -0.3 * xh) == pytest.approx(s, rel=1e-9, abs=1e-9)


@given(st.integers(1, 8).flatmap(lambda n: st.tuples(
    hnp.arrays(np.float64, n, elements=st.floats(0, 1e3)),
    hnp.arrays(np.float64, n, elements=st.floats(1e-3, 1e3)),
)))
def test_kl_divergence_properties(pq):
    p, q = pq
    if p.sum() == 0:
        assert math.isnan(kl_divergence(p, q))  # no distribution
        return
    assert kl_divergence(p, p) == 0.0
    assert kl_divergence(p, q) >= 0.0
    with np.errstate(divide="ignore"):  # p = 0: a -inf logit
        lp, lq = np.log(p), np.log(q)
    assert kl_divergence(lp, lp, from_logits=True) == 0.0
    assert kl_divergence(lp, lq, from_logits=True) == pytest.approx(
        kl_divergence(p, q), rel=1e-9, abs=1e-12
    )


# ---- the NUMERICS "useful ceilings" ---------------------------------------
def _gaussian_model_sqnr_db(m):
    """Uniform-error model: rounding to m mantissa bits leaves an error uniform over
    +-ulp/2 with ulp = 2^(floor(log2|x|) - m), so E[err^2] = 4^-m E[4^floor(log2|Z|)] / 12
    and, for Z ~ N(0, 1) (E[Z^2] = 1), SQNR = 10 log10(12 4^m / E[4^floor(log2|Z|)])."""
    p = lambda t: math.erf(t / math.sqrt(2))  # P(|Z| < t)
    e4 = sum(4.0**e * (p(2.0 ** (e + 1)) - p(2.0**e)) for e in range(-80, 10))
    return 10 * math.log10(12 * 4.0**m / e4)


@pytest.mark.parametrize("name, m, k", [("float8_e4m3fn", 3, 4), ("float8_e5m2", 2, 0)])
def test_sqnr_of_gaussian_meets_the_numerics_ceiling(name, m, k):
    """NUMERICS: SQNR of about 6.02 m + 13.5 dB (E4M3 31.5, E5M2 25.5) without over/underflow.

    Tolerance, derived: (a) the rule of thumb vs the uniform-error model above is 6.0206 m +
    13.445 dB, 0.06 dB apart; (b) the uniform-error model itself is good to a few hundredths
    of a dB for m >= 2 (measured 0.02 / 0.05 dB at 10^6 samples); (c) the sampling error of
    the estimate, by the delta method on the two mean squares, is
    (10 / ln 10) sqrt((var(e^2) / mean(e^2)^2 + var(x^2) / mean(x^2)^2) / N), about 0.01 dB
    at N = 10^6 and 0.1 dB at 10^4; take 5 of those. (a) + (b) < 0.15 dB.
    Scaling by 2^k changes nothing but keeps the data off the subnormals (|x| < 2^-6 for
    e4m3fn: 2^4 |Z| < 2^-6 has probability 8e-4) and well below max.
    """
    n = MAX_QUANTIZED
    x = np.random.default_rng(20240617).standard_normal(n) * 2.0**k
    xq = fpsim.quantize(x, name)
    c = counts(x, xq, name)
    assert c.overflow == c.nan == c.inf == c.saturated == 0
    e2, x2 = (xq - x) ** 2, x * x
    sd = 10 / math.log(10) * math.sqrt(
        (np.var(e2) / np.mean(e2) ** 2 + np.var(x2) / np.mean(x2) ** 2) / n
    )
    rule = 6.02 * m + 13.5
    model = _gaussian_model_sqnr_db(m)
    assert abs(model - rule) < 0.1
    tol = 0.15 + 5 * sd
    assert tol < 1.5
    assert sqnr_db(x, xq) == pytest.approx(rule, abs=tol)
    # the unnormalised variant agrees up to 10 log10(mean x^2) = 10 log10(4^k) (+ sampling)
    assert neg_log_mse_db(x, xq) == pytest.approx(sqnr_db(x, xq) - 20 * k * math.log10(2),
                                                  abs=10 * math.log10(1 + 5 * math.sqrt(2 / n)))


# ---- range counts --------------------------------------------------------------
# e4m3fn: max 448 (464 is the rounding threshold to NaN), smallest normal 2^-6, smallest
# subnormal 2^-9. 1000 and -1e4: beyond 464; 460: rounds to 448; Inf: no Inf in e4m3fn;
# 1e-4 < 2^-10: underflows to 0; 2^-8: subnormal, exact; 3e-3 = 1.54 * 2^-9 -> 2^-8 subnormal;
# 0 -> 0 is no underflow; NaN in x is not a NaN result.
CRAFTED = np.array([1000.0, 460.0, -1e4, np.inf, 1e-4, 2.0**-8, 3e-3, 0.0, np.nan, 1.0])


@pytest.mark.parametrize("saturate, want", [
    # overflow: 1000, 460, -1e4 (finite, |x| > 448). saturate=False: 460 -> 448 is the only
    # saturated one; 1000, -1e4 and Inf become NaN.
    (False, {"overflow": 3, "saturated": 1, "underflow": 1, "subnormal": 2, "nan": 3, "inf": 0}),
    # saturate=True: all three and Inf go to +-448.
    (True, {"overflow": 3, "saturated": 4, "underflow": 1, "subnormal": 2, "nan": 0, "inf": 0}),
])
def test_counts_on_a_crafted_array(saturate, want):
    c = counts(CRAFTED, fpsim.quantize(CRAFTED, "e4m3fn", saturate=saturate), "e4m3fn",
               saturate=saturate)
    assert {k: getattr(c, k) for k in want} == want
    assert c.n == 10 and c.saturate is saturate
    assert c.rate("overflow") == 0.3
    d = c.to_dict()
    assert d["underflow_rate"] == 0.1 and d["saturate"] is saturate
    json.dumps(d)


def test_counts_in_other_formats():
    # e5m2: max 57344, rounding threshold 61440. 1e5 -> Inf, 6e4 -> 57344, -1e6 -> -Inf;
    # an Inf input staying Inf is not an overflow to Inf.
    x = np.array([1e5, 6e4, -1e6, np.inf, 1.0])
    c = counts(x, fpsim.quantize(x, "e5m2"), "e5m2")
    assert (c.overflow, c.saturated, c.inf, c.nan) == (3, 1, 2, 0)
    # int8 clips to [-128, 127]: 200, -300, 127.4, -128.4 are all out of range and clipped;
    # 0.3 -> 0 underflows; integers have no subnormals.
    x = np.array([200.0, -300.0, 127.4, -128.4, 0.3, -128.0])
    c = counts(x, fpsim.quantize(x, "int8"), "int8")
    assert (c.overflow, c.saturated, c.underflow, c.subnormal, c.nan) == (4, 4, 1, 0, 0)
    # e2m1fn (max 6, no NaN, no Inf): 7 -> 6; NaN -> 0 (not counted: x is NaN); 0.2 -> 0;
    # 0.5 is its smallest subnormal.
    x = np.array([7.0, np.nan, 0.2, 0.5, -100.0])
    c = counts(x, fpsim.quantize(x, "float4_e2m1fn"), "float4_e2m1fn")
    assert (c.overflow, c.saturated, c.underflow, c.subnormal, c.nan) == (2, 2, 1, 1, 0)
    # e8m0 (unsigned, max 2^127): a negative input is no overflow but a NaN result;
    # 2^128 overflows to NaN.
    x = np.array([-1.0, 2.0**128, 4.0])
    c = counts(x, fpsim.quantize(x, "float8_e8m0fnu"), "float8_e8m0fnu")
    assert (c.overflow, c.nan, c.underflow, c.subnormal) == (1, 2, 0, 0)


# ---- the error report ------------------------------------------------------
def _data(n=1000, seed=3):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 8


# ---- invalid arguments ------------------------------------------------------
X2 = np.ones(3)
INVALID = [
    (mse, (X2, np.ones(4)), {}, ValueError, "same shape"),
    (sqnr_db, (np.ones((2, 3)), np.ones((3, 2))), {}, ValueError, "same shape"),
    (mse, ("abc", X2), {}, TypeError, "real numbers"),
    (mse, (X2, ["a", "b", "c"]), {}, TypeError, "x_hat must be"),
    (mse, (X2, X2 + 1j), {}, TypeError, "complex"),
    (mse, ([True, False], [True, True]), {}, TypeError, "bool"),
    (mse, ([], []), {}, ValueError, "empty"),
    (mse, (X2, X2), {"axis": 1.5}, TypeError, "axis"),
    (mse, (X2, X2), {"axis": 2}, ValueError, "axis"),
    (ulp, (X2, "fp8"), {}, ValueError, "unknown format"),
    (ulp_error, (X2, X2, 8), {}, TypeError, "fmt"),
    (counts, (X2, X2, "e4m3fnn"), {}, ValueError, "did you mean"),
    (counts, (X2, X2, "e4m3fn"), {"saturate": 1}, TypeError, "saturate"),
    (kl_divergence, ([-0.1, 1.1], [0.5, 0.5]), {}, ValueError, "non-negative"),
    (kl_divergence, (X2, X2), {"from_logits": "yes"}, TypeError, "from_logits"),
    (Counts(1, 0, 0, 0, 0, 0, 0).rate, ("bogus",), {}, ValueError, "event"),
    (ulp, (np.array([1.0, None]), "e4m3fn"), {}, TypeError, "x must be .* got dtype object"),
    (ulp, (np.ones(2, [("a", "f4")]), "e4m3fn"), {}, TypeError, "x must be"),
]


# Every function of (x, x_hat) rejects the same bad pairs, naming the argument and the value.
_PAIR_FUNCS = [
    (mse, {}), (rmse, {}), (sqnr_db, {}), (neg_log_mse_db, {}), (max_abs_error, {}),
    (relative_error, {}), (cosine_similarity, {}), (kl_divergence, {}),
    (kl_divergence, {"axis": None, "from_logits": True}), (ulp_error, {"fmt": "e4m3fn"}),
    (counts, {"fmt": "e4m3fn"}), (error_report, {}), (error_report, {"fmt": "e4m3fn"}),
]
_BAD_PAIRS = [
    # (x, x_hat, exception, message); {0} and {1} become the argument names
    (np.ones(3), np.ones(4), ValueError,
     r"{0} and {1} must have the same shape; got \(3,\) and \(4,\)"),
    (np.ones((2, 3)), np.ones((3, 2)), ValueError, r"got \(2, 3\) and \(3, 2\)"),
    (np.ones((2, 3)), np.ones(6), ValueError, r"got \(2, 3\) and \(6,\)"),
    (np.array([]), np.array([]), ValueError, "{0} and {1} are empty"),
    (np.ones((0, 4), np.float32), np.ones((0, 4), np.float32), ValueError, "empty"),
    (np.array([1.0, 2.0], dtype=object), np.ones(2), TypeError, "{0} must be .* got dtype object"),
    (np.ones(2), np.array([1.0, 2.0], dtype=object), TypeError, "{1} must be .* got dtype object"),
    (np.ones(2), np.array(["1", "2"]), TypeError, "{1} must be .* got dtype <U1"),
    (np.array([b"a"]), np.ones(1), TypeError, "{0} must be .* got dtype |S1"),
    (np.ones(2), np.ones(2, complex), TypeError, "{1} must be .* got dtype complex128"),
    (np.ones(2, bool), np.ones(2), TypeError, "{0} must be .* got dtype bool"),
    (None, np.ones(1), TypeError, "{0} must be .* got dtype object"),
]


@pytest.mark.parametrize("func, kwargs", _PAIR_FUNCS,
                         ids=[f"{f.__name__}-{i}" for i, (f, _) in enumerate(_PAIR_FUNCS)])
@pytest.mark.parametrize("x, x_hat, exc, match", _BAD_PAIRS, ids=[
    f"{type(c[0]).__name__}{np.shape(c[0])}-{getattr(c[1], 'dtype', '')}-{i}"
    for i, c in enumerate(_BAD_PAIRS)])
def test_invalid_pairs(func, kwargs, x, x_hat, exc, match):
    names = ("p", "q") if func is kl_divergence else ("x", "x_hat")
    with pytest.raises(exc, match=match.format(*names)):
        func(x, x_hat, **kwargs)


@pytest.mark.parametrize("func, args, kwargs, exc, match", INVALID,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(INVALID)])
def test_invalid_arguments(func, args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        func(*args, **kwargs)


def test_public_names():
    for name in metrics.__all__:
        assert getattr(metrics, name).__doc__


# ---- memory: whole-array metrics stream over the flattened arrays ------------
# Issue 9: error_report(x, "e4m3fn") peaked at 17 times a float32 input, sqnr_db at 10 times
# (float64 copies of both arrays plus whole-array temporaries). With axis=None the metrics
# now walk the flattened arrays in blocks of metrics._CHUNK elements, so the peak is the
# result (x_hat, or the float64 output of the element-wise ulp functions) plus a few blocks.
BIG = 16 * 2**20  # float32 elements: a 64 MiB input, so that a block is small beside it
PEAK_LIMIT = 3.0  # peak traced memory / x.nbytes


@pytest.fixture(scope="module")
def big():
    """A 64 MiB float32 tensor, an approximation of it (through float16, plain NumPy: this
    must not depend on the kernels) and their absolute values as weights for kl_divergence."""
    x = np.random.default_rng(11).standard_normal(BIG).astype(np.float32)
    xh = x.astype(np.float16).astype(np.float32)
    return x, xh, np.abs(x), np.abs(xh)


def _peak_ratio(func, nbytes):
    import tracemalloc

    tracemalloc.start()
    try:
        func()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak / nbytes


WHOLE_ARRAY_CALLS = {
    "mse": lambda x, xh, p, q: mse(x, xh),
    "rmse": lambda x, xh, p, q: rmse(x, xh),
    "sqnr_db": lambda x, xh, p, q: sqnr_db(x, xh),
    "neg_log_mse_db": lambda x, xh, p, q: neg_log_mse_db(x, xh),
    "max_abs_error": lambda x, xh, p, q: max_abs_error(x, xh),
    "relative_error": lambda x, xh, p, q: relative_error(x, xh),
    "cosine_similarity": lambda x, xh, p, q: cosine_similarity(x, xh),
    "kl_divergence": lambda x, xh, p, q: kl_divergence(p, q),
    "kl_divergence_axis_none": lambda x, xh, p, q: kl_divergence(p, q, axis=None),
    "kl_divergence_logits": lambda x, xh, p, q: kl_divergence(x, xh, from_logits=True),
    "counts": lambda x, xh, p, q: counts(x, xh, "e4m3fn"),
    "ulp": lambda x, xh, p, q: ulp(x, "e4m3fn"),
    "ulp_error": lambda x, xh, p, q: ulp_error(x, xh, "e4m3fn"),
    "error_report_x_hat": lambda x, xh, p, q: error_report(x, xh, fmt="e4m3fn"),
}


@pytest.mark.parametrize("name", list(WHOLE_ARRAY_CALLS))
def test_whole_array_metrics_peak_at_most_3x_the_input(big, name):
    x = big[0]
    ratio = _peak_ratio(lambda: WHOLE_ARRAY_CALLS[name](*big), x.nbytes)
    assert ratio <= PEAK_LIMIT, f"{name} peaked at {ratio:.2f} x the input"


@pytest.mark.slow  # quantizes 16 Mi elements
def test_error_report_of_a_format_peaks_at_most_3x_the_input(big):
    x = big[0]
    fpsim.quantize(x[:8], "e4m3fn")  # compile outside the measurement
    ratio = _peak_ratio(lambda: error_report(x, fpsim.get_format("e4m3fn")), x.nbytes)
    assert ratio <= PEAK_LIMIT, f"error_report peaked at {ratio:.2f} x the input"


# ---- chunked and unchunked results agree ---------------------------------------
@contextlib.contextmanager
def _chunk(n):
    """Force the block size of the streamed metrics."""
    old = metrics._CHUNK
    metrics._CHUNK = n
    try:
        yield
    finally:
        metrics._CHUNK = old


_SPECIAL = st.sampled_from([0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, 2.0**-30])


def _values(specials):
    finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
    return st.one_of(finite, _SPECIAL) if specials else finite


@st.composite
def _stream_cases(draw):
    """(x, x_hat, chunk): same-shaped 1-D or 2-D arrays (transposed: not C-contiguous, some
    of the time), with repeated values, zeros and, some of the time, NaN and Inf."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=12))
    elems = _values(draw(st.booleans()))
    x = draw(hnp.arrays(np.float64, shape, elements=elems))
    noise = draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 0.0, 1e-3, -0.5])))
    with np.errstate(invalid="ignore", over="ignore"):
        xh = np.where(draw(hnp.arrays(bool, shape)), x * (1 + noise), x + noise)
    if draw(st.booleans()):
        x, xh = x.T, xh.T
    if draw(st.booleans()):
        x, xh = x.astype(np.float32), xh.astype(np.float32)
    return x, xh, draw(st.integers(1, 9))


def _same(a, b, *, exact=False, rel=1e-12, abs_=1e-12):
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if exact or math.isinf(a) or math.isinf(b):
        return a == b
    return a == pytest.approx(b, rel=rel, abs=abs_)


def _all_metrics(x, xh):
    p, q = np.abs(x), np.abs(xh)
    with np.errstate(all="ignore"):
        return {
            "mse": mse(x, xh), "rmse": rmse(x, xh), "sqnr_db": sqnr_db(x, xh),
            "neg_log_mse_db": neg_log_mse_db(x, xh), "max_abs_error": max_abs_error(x, xh),
            "relative_error": relative_error(x, xh),
            "cosine_similarity": cosine_similarity(x, xh),
            "kl": kl_divergence(p, q, axis=None),
            "kl_logits": kl_divergence(x, xh, axis=None, from_logits=True),
            "counts": counts(x, xh, "e4m3fn"), "ulp": ulp(x, "e4m3fn"),
            "ulp_error": ulp_error(x, xh, "e4m3fn"),
            "report": error_report(x, xh, fmt="e4m3fn"),
        }


@given(_stream_cases())
def test_chunked_metrics_equal_the_unchunked_ones(case):
    """Counts, maxima, medians and element-wise results are exact whatever the block size;
    sums agree to float64 rounding (only their order of summation changes)."""
    x, xh, chunk = case
    with _chunk(chunk):
        small = _all_metrics(x, xh)
    with _chunk(10**9):
        whole = _all_metrics(x, xh)
    assert small["counts"] == whole["counts"]
    assert small["report"].counts == whole["report"].counts
    np.testing.assert_array_equal(small["ulp"], whole["ulp"])
    np.testing.assert_array_equal(small["ulp_error"], whole["ulp_error"])
    assert _same(small["max_abs_error"], whole["max_abs_error"], exact=True)
    for field in ("median", "max"):
        assert _same(getattr(small["relative_error"], field),
                     getattr(whole["relative_error"], field), exact=True), field
    assert _same(small["relative_error"].mean, whole["relative_error"].mean)
    for name in ("mse", "rmse", "cosine_similarity"):
        assert _same(small[name], whole[name]), name
    for name in ("sqnr_db", "neg_log_mse_db"):  # dB of ratios of sums: absolute tolerance
        assert _same(small[name], whole[name], rel=0, abs_=1e-9), name
    for name in ("kl", "kl_logits"):  # sums of terms of both signs
        assert _same(small[name], whole[name], rel=1e-9, abs_=1e-9), name
    rs, rw = small["report"], whole["report"]
    for field in ("max_abs_error", "rel_error_median", "rel_error_max", "ulp_error_max"):
        assert _same(getattr(rs, field), getattr(rw, field), exact=True), field
    for field in ("mse", "rmse", "rel_error_mean", "ulp_error_mean", "cosine_similarity"):
        assert _same(getattr(rs, field), getattr(rw, field)), field
    for field in ("sqnr_db", "neg_log_mse_db"):
        assert _same(getattr(rs, field), getattr(rw, field), rel=0, abs_=1e-9), field


def _ties(n, rng):
    """Errors 0 for most elements, a few distinct sizes for the rest; 10% of x zero."""
    x = rng.standard_normal(n)
    xh = np.where(rng.random(n) < 0.6, x, x + rng.choice([1e-3, 2e-3, 0.5], n))
    x[rng.random(n) < 0.1] = 0.0  # left out
    return x, xh


def _last_bits(n, rng):
    """Relative errors 0.5 + j 2^-52 for small j (repeated): they share their top 48 bits,
    so the selection runs down to the last 16."""
    return np.ones(n), 1.5 + rng.integers(0, 40, n) * 2.0**-52


def _distinct(n, rng):
    """Distinct relative errors: the selection ends by gathering a few candidates."""
    x = rng.standard_normal(n)
    return x, x * (1 + rng.uniform(-0.01, 0.01, n))


def _all_equal(n, rng):
    return np.full(n, 3.0), np.full(n, 4.0)


@pytest.mark.parametrize("data", [_ties, _distinct, _last_bits, _all_equal])
@pytest.mark.parametrize("n, chunk", [(1001, 7), (1000, 7), (4096, 64), (999, 1), (2, 1)])
def test_streamed_median_is_numpys_median(data, n, chunk):
    """The median of the relative errors, found in passes over blocks (radix selection on
    the float64 bits), is numpy's median exactly, for odd and even counts, with many ties."""
    x, xh = data(n, np.random.default_rng(n))
    with _chunk(chunk):
        got = relative_error(x, xh).median
    used = x != 0
    assert got == np.median(np.abs(xh[used] - x[used]) / np.abs(x[used]))


@pytest.mark.parametrize("where", [0, 5, 9])  # first block, a middle one, the last
@pytest.mark.parametrize("bad", ["nan_x", "nan_x_hat", "inf_x_hat"])
def test_nan_and_inf_cross_blocks(where, bad):
    """The documented NaN/Inf conventions hold in whichever block the special value lands:
    NaN makes every metric it enters NaN, an overflow to Inf makes the error infinite."""
    x = np.linspace(1.0, 2.0, 10)
    xh = x + 1e-3
    if bad == "nan_x":
        x[where] = np.nan
    elif bad == "nan_x_hat":
        xh[where] = np.nan
    else:
        xh[where] = np.inf
    with _chunk(2):
        r = error_report(x, xh, fmt="e4m3fn")
        ulps = ulp_error(x, xh, "e4m3fn")
    if bad == "inf_x_hat":
        assert r.mse == r.max_abs_error == r.rel_error_max == r.ulp_error_max == math.inf
        assert r.sqnr_db == -math.inf and r.counts.inf == 1 and r.counts.nan == 0
        assert r.rel_error_median == np.median(np.abs(xh - x) / x)  # Inf is the largest
        assert math.isnan(r.cosine_similarity)  # inf / inf
        return
    for field in ("mse", "rmse", "sqnr_db", "neg_log_mse_db", "max_abs_error",
                  "rel_error_mean", "rel_error_median", "rel_error_max", "cosine_similarity",
                  "ulp_error_mean", "ulp_error_max"):
        assert math.isnan(getattr(r, field)), field
    assert r.counts.nan == (bad == "nan_x_hat")  # only NaN results of non-NaN inputs
    assert np.isnan(ulps[where]) and np.count_nonzero(np.isnan(ulps)) == 1
