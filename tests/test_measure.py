"""fpsim.measure: error_report (one meaning per argument kind) and the range counts of recipes."""

import dataclasses
import json
import math

import numpy as np
import pytest

import fpsim
from fpsim.measure import ErrorReport, error_report, recipe_counts
from fpsim.metrics import cosine_similarity, counts, mse, relative_error, sqnr_db, ulp_error

E4M3 = fpsim.get_format("e4m3fn")
X2 = np.ones((2, 3))


def _data(n=1000, seed=3):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 8


# ---- one meaning per name (issue 10) ------------------------------------------------------
@pytest.mark.parametrize("name", ["int8", "e4m3fn", "int8_token", "mxfp4_e2m1", "nvfp4",
                                  "int8_asym", "fp8_deepseek_activation", "bfloat16"])
def test_a_string_means_what_it_means_to_fake_quantize(name):
    x = np.random.default_rng(1).standard_normal((8, 256)).astype(np.float32)
    r = error_report(x, name)
    assert r.sqnr_db == sqnr_db(x, fpsim.fake_quantize(x, name))
    assert r.counts is not None and r.counts.groups >= 1 and r.recipe == name


def test_int8_string_is_scaled_and_the_format_object_a_plain_cast():
    """The issue's example: "int8" cast unscaled (5.8 dB) while fake_quantize scaled it."""
    x = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
    scaled = error_report(x, "int8")
    cast = error_report(x, fpsim.get_format("int8"))
    assert scaled.sqnr_db == sqnr_db(x, fpsim.fake_quantize(x, "int8")) > 30
    assert cast.sqnr_db == sqnr_db(x, fpsim.quantize(x, "int8")) < 15


def test_error_report_quantizes_and_matches_the_metrics():
    x = _data()
    r = error_report(x, E4M3, saturate=True)
    xq = fpsim.quantize(x, "e4m3fn", saturate=True)
    assert isinstance(r, ErrorReport) and r.n == x.size
    assert (r.format, r.rounding, r.saturate, r.recipe) == ("float8_e4m3fn", "nearest_even",
                                                            True, None)
    assert r.mse == mse(x, xq) and r.sqnr_db == sqnr_db(x, xq)
    assert r.cosine_similarity == cosine_similarity(x, xq)
    assert r.rel_error_max == relative_error(x, xq).max
    assert r.ulp_error_max == ulp_error(x, xq, "e4m3fn").max() <= 0.5
    assert r.counts == counts(x, xq, "e4m3fn", saturate=True)
    # the same metrics from x_hat; then rounding and saturate are unknown
    given_ = error_report(x, xq, fmt="float8_e4m3fn")
    assert (given_.rounding, given_.saturate, given_.counts.saturate) == (None, None, None)
    assert dataclasses.replace(given_, rounding="nearest_even", saturate=True,
                               counts=r.counts) == r
    # numpy/ml_dtypes types are format objects too; a stochastic rounding with a seed repeats
    fmt = fpsim.get_format("e5m2")
    assert error_report(x, fmt, rounding="stochastic", rng=1) == error_report(
        x, fmt, rounding="stochastic", rng=1)
    assert error_report(x, np.float16).format == "float16"


def test_error_report_without_a_format():
    r = error_report([1.0, 2.0, 4.0], [1.0, 2.0, 3.0])
    assert r.format is None and r.counts is None and r.ulp_error_max is None
    assert r.mse == 1 / 3
    assert "ulp_error" not in str(r) and "overflow" not in str(r)
    # integer inputs cast to integer formats
    r = error_report(np.array([1, 2, 300, -300]), fpsim.get_format("int8"))
    assert r.counts.saturated == 2 and r.max_abs_error == 300 - 127


def test_error_report_prints_an_aligned_table():
    r = error_report(_data(), E4M3, saturate=True)
    lines = str(r).splitlines()
    assert lines[0] == "ErrorReport: float8_e4m3fn (rounding=nearest_even, saturate=True)"
    rows = [line.split() for line in lines[1:]]
    names = [row[0] for row in rows]
    assert names[:5] == ["elements", "mse", "rmse", "sqnr_db", "neg_log_mse_db"]
    assert {"ulp_error_max", "overflow", "saturated", "underflow", "subnormal", "nan"} <= set(
        names)
    starts = {len(line) - len(line.lstrip()[len(line.split()[0]):].lstrip())
              for line in lines[1:]}
    assert len(starts) == 1
    assert float(rows[3][1]) == pytest.approx(r.sqnr_db, rel=1e-5)
    scaled = str(error_report(_data(), "mxfp4_e2m1"))
    assert "groups_saturated" in scaled


def test_to_dict_is_standard_json():
    r = error_report(_data(), E4M3, saturate=True)
    d = r.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["counts"]["n"] == 1000 and d["format"] == "float8_e4m3fn"
    # non-finite metrics become strings: still standard JSON
    x = np.array([1.0, 1000.0])
    d = error_report(x, E4M3).to_dict()  # 1000 -> NaN in a plain cast
    back = json.loads(json.dumps(d, allow_nan=False))
    assert back["mse"] == "nan" and back["counts"]["nan"] == 1
    assert json.loads(json.dumps(error_report(x, x).to_dict(), allow_nan=False))[
        "sqnr_db"] == "inf"


def test_error_report_is_frozen():
    r = error_report([1.0], [1.0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.mse = 0.0  # type: ignore[misc]


def test_quant_specs_are_recipes():
    x = np.random.default_rng(0).standard_normal(2048).astype(np.float32)
    spec = fpsim.QuantSpec(format="int8", granularity="channel")
    r = fpsim.error_report(x.reshape(32, 64), spec)
    assert r.sqnr_db == sqnr_db(x.reshape(32, 64), fpsim.fake_quantize(x.reshape(32, 64), spec))
    assert r.counts.groups == 32


# ---- counts for every recipe, on inputs whose counts are known by construction -------------
def test_counts_mx_one_outlier_block():
    x = np.ones((2, 64), np.float32)
    x[1, 40] = 15000.0  # block (1, 1): floor scale 2**11, 15000 / 2048 = 7.3 > 6 saturates
    x[0, 5] = 1e-9      # flushed: far below its block's smallest FP4 step
    c = error_report(x, "mxfp4_e2m1").counts
    assert (c.groups, c.groups_saturated, c.saturated, c.overflow) == (4, 1, 1, 1)
    # flushed: the tiny one, and the 31 ones sharing the outlier's block (1 / 2**11 < 0.25)
    assert c.underflow == 1 + 31 and c.nan == 0


def test_counts_nvfp4_and_per_channel_and_per_tensor():
    x = np.ones((4, 32), np.float32)
    x[2, 3] = -1e-12  # flushed to zero everywhere
    for name, groups in (("nvfp4", 8), ("int8_token", 4), ("int8", 1)):
        c = error_report(x, name).counts
        # amax scaling never saturates: the largest element maps to the largest code
        assert (c.groups, c.groups_saturated, c.saturated, c.underflow) == (groups, 0, 0, 1)
    # a static clip below the data saturates: int8 per tensor with amax 0.5
    spec = fpsim.quant.recipe("int8", amax=0.5)
    c = error_report(x, spec).counts
    assert c.saturated == x.size - 1 and c.groups_saturated == 1


def test_recipe_counts_on_nan_and_inf():
    x = np.array([[1.0, np.nan, np.inf, -2.0]], np.float32)
    c = error_report(x, "int8_token").counts
    assert c.saturated == 1  # +Inf clips to the row's largest value
    assert c.nan == 0 and c.groups == 1 and c.groups_saturated == 1
    qt = fpsim.quantize_tensor(x, "int8_token")
    assert recipe_counts(x, qt) == c


def test_stochastic_recipe_counts_match_its_codes():
    x = np.random.default_rng(4).standard_normal((4, 32)).astype(np.float32) * 1e-3
    a = error_report(x, "mxfp4_e2m1", rounding="stochastic", rng=9)
    b = error_report(x, "mxfp4_e2m1", rounding="stochastic", rng=9)
    assert a == b
    assert a.sqnr_db == sqnr_db(x, fpsim.fake_quantize(x, "mxfp4_e2m1", rounding="stochastic",
                                                       rng=9))


# ---- invalid arguments ---------------------------------------------------------------------
@pytest.mark.parametrize("args, kwargs, exc, match", [
    ((X2, "fp8"), {}, ValueError, "unknown recipe 'fp8'"),
    ((X2, [1.0]), {}, ValueError, "same shape"),
    ((X2, E4M3), {"fmt": "e5m2"}, ValueError, "disagrees"),
    ((X2, E4M3), {"rounding": "nearest"}, ValueError, "rounding"),
    ((X2, "e4m3fn"), {"rounding": "nearest"}, ValueError, "rounding"),
    ((X2, E4M3), {"saturate": "no"}, TypeError, "saturate"),
    ((["a"], E4M3), {}, TypeError, "x must be"),
    ((np.ones(3), E4M3), {"fmt": 3}, TypeError, "fmt"),
])
def test_invalid_arguments(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        error_report(*args, **kwargs)


def test_nan_rate_is_finite_json():
    assert math.isfinite(error_report(_data(), "int8").to_dict()["counts"]["nan_rate"])


# ---- the sweeps plotting draws ---------------------------------------------------------------
def test_cast_relative_error_is_the_cast():
    x = np.geomspace(1e-4, 1e4, 301)
    q, rel = fpsim.measure.cast_relative_error(x, "e5m2")
    np.testing.assert_array_equal(q, fpsim.quantize(x, "e5m2").astype(np.float64))
    fin = np.isfinite(q)
    np.testing.assert_array_equal(rel[fin], np.abs(q[fin] - x[fin]) / x[fin])
    assert np.isnan(rel[~fin]).all()


def test_recipe_errors_match_fake_quantize():
    x = _data()
    r = fpsim.measure.recipe_errors(x, "mxfp4_e2m1", error="relative")
    xq = fpsim.fake_quantize(x, "mxfp4_e2m1").astype(np.float64)
    nz = x != 0
    np.testing.assert_array_equal(np.sort(r.errors), np.sort(np.abs(xq - x)[nz] / np.abs(x[nz])))
    assert r.sqnr_db == pytest.approx(sqnr_db(x, xq)) and r.non_finite == 0


def test_scale_sweep_properties():
    x = _data()
    scales = np.geomspace(2.0**-10, 2.0**10, 41)
    sw = fpsim.measure.scale_sweep(x, "e4m3fn", scales)
    assert np.all(np.diff(sw.overflow_pct) >= 0)  # more scale, more overflow
    assert np.all(np.diff(sw.underflow_pct) <= 0)  # ... and less underflow
    j = 20  # scale 1: the plain cast
    assert sw.sqnr_db[j] == pytest.approx(sqnr_db(x, fpsim.quantize(x, "e4m3fn")))
    assert sw.amax_scale == 448.0 / np.abs(x).max()


def test_mx_scale_stats_match_the_encoder():
    x = np.random.default_rng(5).standard_normal((8, 64)).astype(np.float32)
    st = fpsim.measure.mx_scale_stats(x, "mxfp4_e2m1", "floor")
    _, sc = fpsim.quant.blocks.mx_encode(x, "e2m1fn")
    np.testing.assert_array_equal(np.sort(st.exponents), np.sort(sc.astype(np.int64).ravel() - 127))
    assert st.elements == x.size
    c = error_report(x, "mxfp4_e2m1").counts
    assert st.clipped == c.saturated  # the same events, counted two ways
