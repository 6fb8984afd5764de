"""LLM.int8() decomposition and SmoothQuant: hand-derived cases, equivalences, bad input."""

import os

import numpy as np
import pytest

import fpsim
from fpsim.quant.outliers import (
    llm_int8_fake_quantize,
    llm_int8_matmul,
    smooth,
    smoothing_factors,
    smoothquant_matmul,
)

JIT_DISABLED = os.environ.get("NUMBA_DISABLE_JIT", "0") == "1"
T, K, N = (8, 16, 4) if JIT_DISABLED else (64, 128, 32)  # tokens, in, out


def planted(seed=0, t=T, k=K, n=N, cols=(3, 11), gain=40.0):
    """Gaussian x with a few feature columns scaled into outliers, Gaussian w (in, out)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(t, k)).astype(np.float32)
    x[:, list(cols)] *= gain
    w = (rng.normal(size=(k, n)) * 0.1).astype(np.float32)
    return x, w


def rel_err(y, ref):
    return float(np.linalg.norm(y.astype(np.float64) - ref) / np.linalg.norm(ref))


# ---- LLM.int8(): a hand-derived case -------------------------------------------------
def test_hand_derived_decomposition():
    # Column 1 holds 7.0 >= 6: it is the outlier column, computed in float16.
    x = np.array([[1.01, 7.0, -3.96875],
                  [0.5, 1.0, 1.984375]], np.float32)
    w = np.array([[1.984375, -0.5],
                  [0.25, -0.5],        # outlier row: float part
                  [0.5, 0.9921875]], np.float32)
    y, d = llm_int8_matmul(x, w, return_details=True)
    assert d.outlier_columns.tolist() == [1]
    assert d.outlier_fraction == pytest.approx(1 / 3)
    # Row scales over columns {0, 2}: 3.96875 / 127 = 1/32, 1.984375 / 127 = 1/64.
    # Column scales over rows {0, 2}: 1.984375 / 127 = 1/64, 0.9921875 / 127 = 1/128.
    assert d.x_scales.tolist() == [1 / 32, 1 / 64]
    assert d.w_scales.tolist() == [1 / 64, 1 / 128]
    # X8 = [[round(32.32)=32, -127], [32, 127]];  W8 = [[127, -64], [32, 127]]
    # X8 @ W8 = [[32*127 - 127*32, -32*64 - 127*127], [32*127 + 127*32, -32*64 + 127*127]]
    #         = [[0, -18177], [8128, 14081]]
    assert d.int_accumulator.tolist() == [[0, -18177], [8128, 14081]]
    # times outer(sx, sw) = [[1/2048, 1/4096], [1/4096, 1/8192]]
    np.testing.assert_array_equal(d.int8_part, [[0.0, -18177 / 4096], [8128 / 4096, 14081 / 8192]])
    # float part: outer(x[:, 1], w[1]) = [[7 * 0.25, 7 * -0.5], [1 * 0.25, 1 * -0.5]]
    np.testing.assert_array_equal(d.outlier_part, [[1.75, -3.5], [0.25, -0.5]])
    np.testing.assert_array_equal(y, np.float32([[1.75, -7.937744140625],
                                                 [2.234375, 1.2188720703125]]))
    assert y.dtype == np.float32
    # the only int8 error is x[0, 0] = 1.01 -> 32/32 = 1.0
    exact = x.astype(np.float64) @ w
    np.testing.assert_allclose(y - exact, [[-0.01 * 1.984375, 0.01 * 0.5], [0, 0]], atol=1e-6)


def test_outlier_part_is_rounded_to_outlier_dtype():
    x = np.array([[0.5, 7.001]], np.float32)
    w = np.array([[1.0], [0.1]], np.float32)
    _, d16 = llm_int8_matmul(x, w, return_details=True)
    assert d16.outlier_part[0, 0] == np.float32(np.float16(7.001)) * np.float32(np.float16(0.1))
    _, d64 = llm_int8_matmul(x, w, outlier_fmt=np.float64, return_details=True)
    assert d64.outlier_part[0, 0] == np.float64(np.float32(7.001)) * np.float64(np.float32(0.1))
    _, dbf = llm_int8_matmul(x, w, outlier_fmt="bfloat16", return_details=True)
    xb = fpsim.quantize(np.float32([7.001, 0.1]), "bfloat16")
    assert dbf.outlier_part[0, 0] == np.float32(xb[0] * xb[1])


def test_threshold_is_inclusive_and_two_sided():
    x = np.array([[6.0, -6.0, 5.999, 0.0, -7.5]], np.float32)
    _, d = llm_int8_matmul(x, np.ones((5, 1), np.float32), return_details=True)
    assert d.outlier_columns.tolist() == [0, 1, 4]
    _, mask = llm_int8_fake_quantize(x, return_details=True)
    assert mask.tolist() == [True, True, False, False, True]


def test_non_finite_values_go_through_the_float_part():
    x = np.array([[1.0, np.nan, 0.5], [2.0, 0.0, np.inf]], np.float32)
    w = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], np.float32)
    with np.errstate(invalid="ignore"):
        y, d = llm_int8_matmul(x, w, return_details=True)
    assert d.outlier_columns.tolist() == [1, 2]
    # inf * 0 and nan * 0 are NaN: they propagate instead of being clipped to +-127
    assert np.isnan(y[:, 1]).all() and np.isnan(y[:, 0]).all()
    np.testing.assert_allclose(d.int8_part[:, 0], [1.0, 2.0], rtol=1e-7)


def test_threshold_inf_is_plain_vectorwise_int8():
    x, w = planted()
    y, d = llm_int8_matmul(x, w, threshold=np.inf, return_details=True)
    assert d.outlier_columns.size == 0 and d.outlier_fraction == 0.0
    assert not d.outlier_part.any()
    xq = fpsim.quantize_tensor(x, "int8_token")
    wq = fpsim.quantize_tensor(w, "int8_channel", axis=0)
    acc = xq.codes.astype(np.int64) @ wq.codes.astype(np.int64)
    np.testing.assert_array_equal(d.int_accumulator, acc)
    np.testing.assert_array_equal(d.x_scales, xq.scales.ravel())
    np.testing.assert_array_equal(d.w_scales, wq.scales.ravel())
    ref = fpsim.fake_quantize(x, "int8_token").astype(np.float64) @ \
        fpsim.fake_quantize(w, "int8_channel", axis=0).astype(np.float64)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


def test_all_columns_outliers_is_a_float16_matmul():
    x, w = planted()
    y, d = llm_int8_matmul(x, w, threshold=1e-30, return_details=True)
    assert d.outlier_fraction == 1.0 and not d.int_accumulator.any()
    assert (d.x_scales == 1).all() and (d.w_scales == 1).all()
    ref = x.astype(np.float16).astype(np.float32) @ w.astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_planted_outliers_error_far_below_per_tensor_int8():
    x, w = planted()
    ref = x.astype(np.float64) @ w
    per_tensor = fpsim.fake_quantize(x, "int8").astype(np.float64) @ \
        fpsim.fake_quantize(w, "int8").astype(np.float64)
    vectorwise = llm_int8_matmul(x, w, threshold=np.inf)
    y, d = llm_int8_matmul(x, w, return_details=True)
    assert d.outlier_columns.tolist() == [3, 11]
    e = rel_err(y, ref)
    assert e < rel_err(per_tensor, ref) / 10
    assert e < rel_err(vectorwise, ref) / 5
    assert e < 0.01


def test_w_layout_and_batch_dims():
    x, w = planted()
    y = llm_int8_matmul(x, w)
    np.testing.assert_array_equal(llm_int8_matmul(x, np.ascontiguousarray(w.T), w_layout="out_in"), y)
    x3 = x.reshape(2, -1, x.shape[-1])
    y3, d3 = llm_int8_matmul(x3, w, return_details=True)
    assert y3.shape == (2, x.shape[0] // 2, w.shape[1]) and d3.x_scales.shape == x3.shape[:-1]
    np.testing.assert_array_equal(y3.reshape(y.shape), y)
    y1 = llm_int8_matmul(x[0], w)  # one token, 1-D
    assert y1.shape == (w.shape[1],)


@pytest.mark.parametrize("t, k, n", [(0, 3, 2), (2, 0, 2), (2, 3, 0)])
def test_empty_shapes(t, k, n):
    y, d = llm_int8_matmul(np.ones((t, k), np.float32), np.ones((k, n), np.float32),
                           return_details=True)
    assert y.shape == (t, n) and not y.any() and d.outlier_fraction == 0.0
    assert llm_int8_fake_quantize(np.ones((t, k), np.float32), return_details=False).shape == (t, k)
    assert smoothquant_matmul(np.ones((t, k), np.float32), np.ones((k, n), np.float32)).shape \
        == (t, n)


def test_float16_outliers_overflow_like_hardware():
    x = np.array([[1e5, 1.0]], np.float32)
    assert llm_int8_matmul(x, np.ones((2, 1), np.float32)).tolist() == [[np.inf]]
    assert llm_int8_matmul(x, np.ones((2, 1), np.float32), outlier_fmt=np.float32)[0, 0] \
        == pytest.approx(1e5 + 1, rel=1e-6)


def test_llm_int8_fake_quantize():
    x, _ = planted()
    x_hat, mask = llm_int8_fake_quantize(x, return_details=True)
    assert np.flatnonzero(mask).tolist() == [3, 11]
    assert x_hat.dtype == x.dtype and x_hat.shape == x.shape
    np.testing.assert_array_equal(x_hat[:, mask], x[:, mask].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(x_hat[:, ~mask], fpsim.fake_quantize(x[:, ~mask], "int8_token"))
    # at the activation site it is the matmul's x side: with float64 weights they agree
    x_hat64, _ = llm_int8_fake_quantize(x, outlier_fmt=np.float64, return_details=True)
    np.testing.assert_array_equal(x_hat64[:, mask], x[:, mask])
    plain, m0 = llm_int8_fake_quantize(x.astype(np.float64), threshold=np.inf, return_details=True)
    assert not m0.any() and plain.dtype == np.float64
    np.testing.assert_array_equal(plain, fpsim.fake_quantize(x.astype(np.float64), "int8_token"))


# ---- SmoothQuant ----------------------------------------------------------------------
@pytest.mark.parametrize("xa, wa, alpha, expected", [
    ([4.0, 9.0], [1.0, 4.0], 0.5, [2.0, 1.5]),
    ([16.0], [4.0], 0.75, [16.0 ** 0.75 / 4.0 ** 0.25]),
    ([16.0, 3.0], [4.0, 0.5], 1.0, [16.0, 3.0]),       # s = max|X|
    ([16.0, 3.0], [4.0, 0.5], 0.0, [0.25, 2.0]),       # s = 1 / max|W|
    ([0.0, 5.0, 0.0], [2.0, 0.0, 0.0], 0.5, [1.0, 1.0, 1.0]),  # dead channels: s = 1
    ([1e-12], [1.0], 0.5, [1e-5]),                      # clamped at eps
])
def test_smoothing_factors_hand_values(xa, wa, alpha, expected):
    s = smoothing_factors(xa, wa, alpha=alpha)
    assert s.dtype == np.float32
    np.testing.assert_allclose(s, np.float32(expected), rtol=1e-7)


@pytest.mark.parametrize("w_layout", ["in_out", "out_in"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.85, 1.0])
def test_smooth_preserves_the_product(alpha, w_layout):
    x, w = planted(seed=1)
    wl = w if w_layout == "in_out" else np.ascontiguousarray(w.T)
    xs, ws = smooth(x, wl, alpha=alpha, w_layout=w_layout)
    assert xs.dtype == np.float32 and ws.shape == wl.shape
    ws_io = ws if w_layout == "in_out" else ws.T
    ref = x.astype(np.float64) @ w
    got = xs.astype(np.float64) @ ws_io
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_alpha_edges_and_balance():
    x, w = planted(seed=2)
    x, w = x.astype(np.float64), w.astype(np.float64)
    xs, ws = smooth(x, w, alpha=1.0)  # all difficulty moved into the weights
    np.testing.assert_allclose(np.abs(xs).max(axis=0), 1.0, rtol=1e-6)
    xs, ws = smooth(x, w, alpha=0.0)  # weight rows normalised, activations absorb it
    np.testing.assert_allclose(np.abs(ws).max(axis=1), 1.0, rtol=1e-6)
    xs, ws = smooth(x, w, alpha=0.5)  # the two maxima meet at sqrt(max|X| max|W|)
    np.testing.assert_allclose(np.abs(xs).max(axis=0), np.abs(ws).max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(np.abs(xs).max(axis=0),
                               np.sqrt(np.abs(x).max(axis=0) * np.abs(w).max(axis=1)), rtol=1e-6)


def test_smoothquant_with_unit_factors_is_plain_fake_quant():
    x, w = planted(seed=3)
    # make max|X_j| == max|W_j| per channel: s = 1 at alpha = 0.5
    x = x / np.abs(x).max(axis=0)
    w = w / np.abs(w).max(axis=1, keepdims=True)
    assert (smoothing_factors(np.abs(x).max(axis=0), np.abs(w).max(axis=1)) == 1).all()
    y = smoothquant_matmul(x, w)
    ref = fpsim.fake_quantize(x, "int8_token") @ fpsim.fake_quantize(w, "int8_channel", axis=0)
    assert y.dtype == ref.dtype == np.float32
    np.testing.assert_array_equal(y, ref)


def test_smoothquant_matches_its_definition_and_reduces_error():
    x, w = planted(seed=4)
    s = smoothing_factors(np.abs(x).max(axis=0), np.abs(w).max(axis=1), alpha=0.5)
    xs, ws = x / s, w * s[:, None]
    for x_spec, w_spec in [("int8_token", "int8_channel"), ("int8", "int8")]:
        y = smoothquant_matmul(x, w, x_spec=x_spec, w_spec=w_spec)
        ref = fpsim.fake_quantize(xs, x_spec) @ fpsim.fake_quantize(ws, w_spec, axis=0)
        np.testing.assert_array_equal(y, ref)
    # x_absmax from "calibration" equal to x's own gives the same result
    np.testing.assert_array_equal(smoothquant_matmul(x, w, x_absmax=np.abs(x).max(axis=0)),
                                  smoothquant_matmul(x, w))
    # O2 (per-tensor both): smoothing beats plain per-tensor W8A8 on outlier channels
    exact = x.astype(np.float64) @ w
    plain = fpsim.fake_quantize(x, "int8").astype(np.float64) @ \
        fpsim.fake_quantize(w, "int8").astype(np.float64)
    o2 = smoothquant_matmul(x, w, x_spec="int8", w_spec="int8")
    assert rel_err(o2, exact) < rel_err(plain, exact) / 3


def test_smoothquant_static_o3_and_out_in_layout():
    x, w = planted(seed=5)
    s = smoothing_factors(np.abs(x).max(axis=0), np.abs(w).max(axis=1))
    static = fpsim.calibrate(x / s, "int8")
    y = smoothquant_matmul(x, w, x_spec=static, w_spec="int8")
    np.testing.assert_allclose(y, smoothquant_matmul(x, w, x_spec="int8", w_spec="int8"),
                               rtol=1e-6)
    np.testing.assert_array_equal(
        smoothquant_matmul(x, np.ascontiguousarray(w.T), w_layout="out_in"),
        smoothquant_matmul(x, w))


# ---- invalid arguments ------------------------------------------------------------------
X2 = np.ones((2, 3), np.float32)
W32 = np.ones((3, 2), np.float32)


@pytest.mark.parametrize("fn, args, kwargs, exc, match", [
    (llm_int8_matmul, (X2, np.ones((4, 2), np.float32)), {}, ValueError, "x.shape"),
    (llm_int8_matmul, (X2, W32), {"w_layout": "out_in"}, ValueError, r"w\.shape\[1\]"),
    (llm_int8_matmul, (X2, np.ones(3, np.float32)), {}, ValueError, "w must be 2-D"),
    (llm_int8_matmul, (np.float32(1.0), W32), {}, ValueError, "at least one dimension"),
    (llm_int8_matmul, (X2, W32), {"threshold": 0.0}, ValueError, "threshold"),
    (llm_int8_matmul, (X2, W32), {"threshold": -1}, ValueError, "threshold"),
    (llm_int8_matmul, (X2, W32), {"threshold": np.nan}, ValueError, "threshold"),
    (llm_int8_matmul, (X2, W32), {"threshold": "6"}, TypeError, "threshold"),
    (llm_int8_matmul, (X2, W32), {"threshold": None}, TypeError, "threshold"),
    (llm_int8_matmul, (X2, W32), {"w_layout": "oi"}, ValueError, "w_layout"),
    (llm_int8_matmul, (X2, W32), {"outlier_fmt": np.int16}, ValueError, "outlier_fmt"),
    (llm_int8_matmul, (X2, W32), {"outlier_fmt": "int8"}, ValueError, "outlier_fmt"),
    (llm_int8_matmul, (X2.astype(np.int32), W32), {}, TypeError, "x must be a float"),
    (llm_int8_matmul, (X2, W32.astype(np.int8)), {}, TypeError, "w must be a float"),
    (llm_int8_fake_quantize, (X2,), {"threshold": 0}, ValueError, "threshold"),
    (llm_int8_fake_quantize, (np.float32(1.0),), {}, ValueError, "at least one dimension"),
    (smoothing_factors, ([1.0], [1.0, 2.0]), {}, ValueError, "w_absmax"),
    (smoothing_factors, ([-1.0], [1.0]), {}, ValueError, "x_absmax"),
    (smoothing_factors, ([1.0], [np.inf]), {}, ValueError, "w_absmax"),
    (smoothing_factors, ([[1.0]], [[1.0]]), {}, ValueError, "1-D"),
    (smoothing_factors, ([1.0], [1.0]), {"alpha": 1.5}, ValueError, "alpha"),
    (smoothing_factors, ([1.0], [1.0]), {"alpha": -0.1}, ValueError, "alpha"),
    (smoothing_factors, ([1.0], [1.0]), {"alpha": np.nan}, ValueError, "alpha"),
    (smoothing_factors, ([1.0], [1.0]), {"alpha": None}, TypeError, "alpha"),
    (smoothing_factors, ([1.0], [1.0]), {"eps": 0.0}, ValueError, "eps"),
    (smoothing_factors, ([1.0], [1.0]), {"alpha": True}, TypeError, "alpha"),
    (smooth, (X2, W32), {"x_absmax": [1.0, 2.0]}, ValueError, "x_absmax"),
    (smooth, (X2, W32), {"alpha": 2}, ValueError, "alpha"),
    (smooth, (X2, np.ones((4, 2), np.float32)), {}, ValueError, "x.shape"),
    (smoothquant_matmul, (X2, W32), {"x_spec": "int9"}, ValueError, "recipe"),
    (smoothquant_matmul, (X2, W32), {"w_layout": "io"}, ValueError, "w_layout"),
])
def test_invalid_arguments(fn, args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


def test_smoothquant_gives_its_two_operands_different_random_streams():
    """With one int rng, x and w must not share stochastic-rounding bits (issue 10)."""
    from fpsim.quant import outliers

    seen = []
    real = outliers.fake_quantize

    def spy(x, spec, rng=None, **kw):
        seen.append(rng)
        return real(x, spec, rng=rng, **kw)

    import pytest as _pt

    mp = _pt.MonkeyPatch()
    mp.setattr(outliers, "fake_quantize", spy)
    try:
        x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
        w = np.random.default_rng(1).standard_normal((8, 3)).astype(np.float32)
        outliers.smoothquant_matmul(x, w, x_spec="int8", w_spec="int8", rng=5)
    finally:
        mp.undo()
    assert len(seen) == 2 and seen[0] != seen[1]
