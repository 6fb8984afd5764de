"""Emulated accumulation: kernels vs their pure-Python twins, convergence, tensor cores, int32."""

import os

import numpy as np
import pytest

import fpsim
from fpsim.reference import accumulate as ref
from fpsim._kernels import accumulate as kern
from fpsim.quant.accumulate import (
    ACCUMULATORS,
    AccumulationReport,
    AccumulatorFormat,
    AccumulatorOverflowWarning,
    _resolve_accumulator,
    int_matmul,
    qdot,
    qmatmul,
)

JIT_DISABLED = os.environ.get("NUMBA_DISABLE_JIT", "0") == "1"

# accumulator spelling -> the format the twin rounds to
FLOAT_ACCUMULATORS = {
    "fp32": ref.FP32,
    "fp16": fpsim.get_format("float16"),
    "bf16": fpsim.get_format("bfloat16"),
    "e8m13": AccumulatorFormat(8, 13),  # "FP22"
    "e3m9": AccumulatorFormat(3, 9),  # narrow range: overflow to Inf and subnormals
    "e4m3fn": fpsim.get_format("e4m3fn"),  # overflow to NaN
    "e5m2": fpsim.get_format("e5m2"),
    "e4m3fnuz": fpsim.get_format("e4m3fnuz"),  # no -0
    "e2m1fn": fpsim.get_format("e2m1fn"),  # saturating specials ("none")
    "float8_e8m0fnu": fpsim.get_format("float8_e8m0fnu"),  # the codec path (unsigned, no 0)
    "p3109_p3": fpsim.get_format("p3109_p3"),
}


def operands(m, k, n, seed=0, spread=3.0):
    """Float32 operands with a wide dynamic range, zeros and negative zeros."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)) * np.exp2(np.round(rng.standard_normal((m, k)) * spread))
    b = rng.standard_normal((k, n))
    a[:, ::7] = 0.0
    b[::5, :] = -0.0
    return a.astype(np.float32), b.astype(np.float32)


def assert_same_bits(x, y):
    """Equal as float64 bit patterns (so -0.0 != 0.0), NaNs of any payload equal."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    assert x.shape == y.shape
    nan = np.isnan(x)
    np.testing.assert_array_equal(nan, np.isnan(y))
    np.testing.assert_array_equal(x[~nan].view(np.int64), y[~nan].view(np.int64))


SMALL = (2, 24, 3) if JIT_DISABLED else (5, 70, 6)


# ---- kernels vs twins, bit for bit -----------------------------------------------
@pytest.mark.parametrize("promote", [None, 16])
@pytest.mark.parametrize("name", sorted(FLOAT_ACCUMULATORS))
def test_float_accumulators_match_twin(name, promote):
    for seed in range(1 if JIT_DISABLED else 3):
        a, b = operands(*SMALL, seed=seed)
        if seed == 1:  # few-bit products: exact sums, many exact ties
            a, b = (fpsim.quantize(x * 4, "e2m1fn") for x in (a, b))
        if seed == 2:  # 24-bit operands near 1: ties broken by the low bits of products
            a = (1 + np.round(a * 2**21) * 2**-23).astype(np.float32)
        got = qmatmul(a, b, accumulator=name, promote_every=promote)
        want = ref.matmul(a, b, "float", fmt=FLOAT_ACCUMULATORS[name], promote=promote or 0)
        assert_same_bits(got, want)


@pytest.mark.parametrize("promote", [None, 32])
@pytest.mark.parametrize("bits", [3, 14, 47])
def test_tensorcore_matches_twin(bits, promote):
    m, k, n = (2, 70, 2) if JIT_DISABLED else (4, 100, 5)
    for seed in range(1 if JIT_DISABLED else 2):
        a, b = operands(m, k, n, seed=seed)
        got = qmatmul(a, b, accumulator="tensorcore", accumulator_bits=bits,
                      promote_every=promote)
        assert_same_bits(got, ref.matmul(a, b, "tensorcore", bits=bits, promote=promote or 0))


def test_column_tiles_match_twin():
    # more columns than one tile of the kernels (kern.COLS)
    a, b = operands(2, 6, kern.COLS + 5, seed=4)
    for name in ("fp16", "fp32"):
        got = qmatmul(a, b, accumulator=name)
        assert_same_bits(got, ref.matmul(a, b, "float", fmt=FLOAT_ACCUMULATORS[name]))
    got = qmatmul(a, b, accumulator="tensorcore", accumulator_bits=5)
    assert_same_bits(got, ref.matmul(a, b, "tensorcore", bits=5))


@np.errstate(over="ignore")  # numpy scalar shifts wrap as int64 do under NUMBA_DISABLE_JIT
def test_parallel_kernels_equal_serial():
    m, k, n = (6, 5, 3) if JIT_DISABLED else (19, 80, 300)
    a, b = operands(m, k, n, seed=5)
    for name in ("fp32", "bf16", "float8_e8m0fnu"):
        acc = _resolve_accumulator(name)
        outs = []
        for f in (kern.matmul_float_serial, kern.matmul_float_parallel):
            out = np.empty((m, n))
            f(a, b, out, acc.kernel_kind, acc.rp, acc.fp, acc.lut, acc.mode, 32)
            outs.append(out)
        assert_same_bits(*outs)
    outs = []
    for f in (kern.matmul_tensorcore_serial, kern.matmul_tensorcore_parallel):
        out = np.empty((m, n))
        f(a, b, out, 14, 32, 64)
        outs.append(out)
    assert_same_bits(*outs)
    ia, ib = (np.round(x * 50).astype(np.int64) for x in (a, b))
    outs = []
    for f in (kern.matmul_int_serial, kern.matmul_int_parallel):
        out, ovf = np.empty((m, n), np.int64), np.empty((m, n), bool)
        f(ia, ib, out, ovf)
        outs.append(out)
    np.testing.assert_array_equal(*outs)
    np.testing.assert_array_equal(outs[0], ia @ ib)


# ---- golden cases ---------------------------------------------------------------------
def test_double_rounding_is_avoided():
    # fp16: acc = 1 + 2**-10, p = -(1 + 2**-23)(1 - 2**-23) 2**-11 = -2**-11 + 2**-57.
    # The exact sum 1 + 2**-11 + 2**-57 lies just above the midpoint 1 + 2**-11: it rounds up
    # to 1 + 2**-10.  Rounding it first to float64 gives the midpoint, which ties to 1.0.
    a = np.array([1 + 2**-10, 1 + 2**-23], np.float32)
    b = np.array([1.0, -(2**-11) * (1 - 2**-23)], np.float32)
    assert qdot(a, b, accumulator="fp16") == np.float32(1 + 2**-10)
    # the same trap one level up, for the float32 accumulator (one FMA per product)
    a = np.array([1 + 2**-23, 1 + 2**-23], np.float32)
    b = np.array([1.0, -(2**-24) * (1 - 2**-23)], np.float32)
    assert qdot(a, b, accumulator="fp32") == np.float32(1 + 2**-23)
    assert qdot(a, b, accumulator="e8m23") == np.float32(1 + 2**-23)
    # exact midpoints tie to even
    one = np.ones(2, np.float32)
    assert qdot(np.array([1, 2**-11], np.float32), one, accumulator="fp16") == 1.0
    assert qdot(np.array([1 + 2**-10, 2**-11], np.float32), one, accumulator="fp16") == 1 + 2**-9
    # and the other side: the exact sum just below a midpoint rounds down
    a = np.array([1.0, 1 + 2**-23], np.float32)
    b = np.array([1.0, 2**-11 * (1 - 2**-23)], np.float32)  # 1 + 2**-11 - 2**-57
    assert qdot(a, b, accumulator="fp16") == 1.0
    assert qdot(-a, b, accumulator="fp16") == -1.0


def test_swamping_and_promotion_golden():
    ones = np.ones(4096, np.float32)
    assert qdot(ones, ones, accumulator="fp16") == 2048.0  # 2048 + 1 ties back to 2048
    assert qdot(ones, ones, accumulator="bf16") == 256.0
    assert qdot(ones, ones, accumulator="fp16", promote_every=1024) == 4096.0
    assert qdot(ones, ones, accumulator="fp32") == 4096.0
    assert qdot(ones, ones, accumulator="exact") == 4096.0


def test_tensorcore_alignment_golden():
    # group 1: 1.0 and 31 products 2**-15; group 2: 32 products 2**-15.  With 14 bits kept
    # after the leading bit of the largest term (2**0, the accumulator's in group 2), every
    # 2**-15 is truncated to 0.  Promotion restarts the accumulator, so group 2's terms
    # are aligned among themselves and survive: 1 + 32 * 2**-15.
    a = np.full(64, 2.0**-15, np.float32)
    a[0] = 1.0
    b = np.ones(64, np.float32)
    assert qdot(a, b, accumulator="tensorcore") == 1.0
    assert qdot(a, b, accumulator="tensorcore", promote_every=32) == 1 + 32 * 2.0**-15
    assert qdot(a, b, accumulator="tensorcore", accumulator_bits=15) == 1 + 63 * 2.0**-15
    # truncation is toward zero: negative products lose magnitude too
    assert qdot(-a, b, accumulator="tensorcore") == -1.0


def test_zero_signs():
    z = np.array([-0.0, -0.0], np.float32)
    one = np.array([1.0, 1.0], np.float32)
    # -0 * 1 = -0, but the accumulator starts at +0 and +0 + -0 = +0
    for name in ("fp32", "fp16", "e8m13", "e4m3fn"):
        assert np.signbit(qdot(z, one, accumulator=name)) == np.False_
    # a negative sum that rounds to zero keeps its sign where the format has -0
    tiny = np.array([-(2.0**-30)], np.float32)
    assert np.signbit(qdot(tiny, np.ones(1, np.float32), accumulator="fp16"))
    assert not np.signbit(qdot(tiny, np.ones(1, np.float32), accumulator="e4m3fnuz"))


def test_overflow_and_special_values():
    big = np.full(3, 40000.0, np.float32)
    one = np.ones(3, np.float32)
    out, report = qdot(big, one, accumulator="fp16", return_details=True)
    assert out == np.inf and report.n_overflow == 1
    assert np.isnan(qdot(np.full(3, 300.0, np.float32), one, accumulator="e4m3fn"))
    assert qdot(np.full(3, 5.0, np.float32), one, accumulator="e2m1fn") == 6.0  # saturates
    x = np.array([1.0, np.inf, -np.inf], np.float32)
    assert np.isnan(qdot(x, one, accumulator="bf16"))
    assert qdot(x[:2], one[:2], accumulator="tensorcore") == np.inf


# ---- properties ------------------------------------------------------------------------
def test_exact_equals_float64_matmul_of_fake_quantized():
    a, b = operands(4, 96, 5, seed=1, spread=1.0)
    for spec in ("e4m3fn", "mxfp8_e4m3", "int8_channel", "nvfp4"):
        got = qmatmul(a, b, a_spec=spec, b_spec=spec, accumulator="exact")
        aq = fpsim.fake_quantize(a, spec, axis=-1).astype(np.float64)
        bq = fpsim.fake_quantize(b, spec, axis=-2).astype(np.float64)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, aq @ bq)
    # a QuantSpec is used as given: axis=0 groups b along K
    spec = fpsim.recipe("mxfp8_e4m3", axis=0)
    got = qmatmul(a, b, b_spec=spec, accumulator="exact")
    np.testing.assert_array_equal(
        got, a.astype(np.float64) @ fpsim.fake_quantize(b, "mxfp8_e4m3", axis=0))


def positive_products(k, seed=0, m=4, n=4):
    """|N(0,1)| operands quantized to E4M3: every product exact, sums that grow with K."""
    rng = np.random.default_rng(seed)
    a = fpsim.quantize(np.abs(rng.standard_normal((m, k))).astype(np.float32), "e4m3fn")
    b = fpsim.quantize(np.abs(rng.standard_normal((k, n))).astype(np.float32), "e4m3fn")
    return a, b


def rel_error(got, a, b):
    exact = a.astype(np.float64) @ b.astype(np.float64)
    return float(np.mean(np.abs(got.astype(np.float64) - exact) / np.abs(exact)))


def test_error_shrinks_as_precision_grows():
    a, b = positive_products(256 if JIT_DISABLED else 2048)
    errors = [rel_error(qmatmul(a, b, accumulator=AccumulatorFormat(8, m)), a, b)
              for m in (2, 4, 7, 10, 13, 16, 23, 30, 40, 50)]
    assert all(e1 <= e0 for e0, e1 in zip(errors, errors[1:])), errors
    assert errors[0] > 0.1 and errors[-1] < 1e-14
    # the named ones in order of precision
    named = [rel_error(qmatmul(a, b, accumulator=n), a, b)
             for n in ("e5m2", "bf16", "fp16", "e8m13", "fp32", "exact")]
    assert all(e1 <= e0 for e0, e1 in zip(named, named[1:])), named
    assert named[-1] < 1e-15


def test_fp32_is_the_float32_sequential_sum():
    a, b = positive_products(128 if JIT_DISABLED else 1024, seed=3)
    b[::3] *= -1
    acc = np.zeros((a.shape[0], b.shape[1]), np.float32)
    for k in range(a.shape[1]):  # e4m3 products are exact in float32
        acc = acc + np.outer(a[:, k], b[k]).astype(np.float32)
    np.testing.assert_array_equal(qmatmul(a, b, accumulator="fp32"), acc)


def test_tensorcore_with_wide_alignment_is_fp32_of_group_sums():
    a, b = positive_products(200 if JIT_DISABLED else 2000, seed=4)
    got = qmatmul(a, b, accumulator="tensorcore", accumulator_bits=47)
    acc = np.zeros((a.shape[0], b.shape[1]), np.float32)
    for g0 in range(0, a.shape[1], 32):  # group sums are exact in float64 here
        group = a[:, g0:g0 + 32].astype(np.float64) @ b[g0:g0 + 32].astype(np.float64)
        acc = (acc.astype(np.float64) + group).astype(np.float32)
    np.testing.assert_array_equal(got, acc)
    assert rel_error(got, a, b) < 1e-6


@pytest.mark.parametrize("name", ["tensorcore", "fp16", "bf16", "e8m13"])
def test_promotion_reduces_error_for_large_k(name):
    a, b = positive_products(1024 if JIT_DISABLED else 8192, seed=5, m=2, n=3)
    plain = rel_error(qmatmul(a, b, accumulator=name), a, b)
    promoted = rel_error(qmatmul(a, b, accumulator=name, promote_every=128), a, b)
    assert promoted < plain / 4, (plain, promoted)


def test_tensorcore_error_is_near_deepseek_measurement():
    # DeepSeek-V3 (sec. 3.3.2): ~2% maximum relative error at K = 4096 without promotion
    a, b = positive_products(4096, seed=6, m=1 if JIT_DISABLED else 4, n=2)
    err = rel_error(qmatmul(a, b, accumulator="tensorcore"), a, b)
    assert 2e-3 < err < 5e-2


# ---- integer accumulation -------------------------------------------------------------
def int_codes(x, spec, axis):
    qt = fpsim.quantize_tensor(x, spec, axis=axis)
    return qt.codes.astype(np.int64), np.asarray(qt.scales, np.float64)


@pytest.mark.parametrize("spec", ["int8", "int8_channel", "int4"])
def test_int32_is_exact_integer_matmul(spec):
    a, b = operands(3, 50, 4, seed=7, spread=1.0)
    out, report = qmatmul(a, b, a_spec=spec, b_spec=spec, accumulator="int32",
                          return_details=True)
    ia, sa = int_codes(a, spec, -1)
    ib, sb = int_codes(b, spec, -2)
    np.testing.assert_array_equal(out, ((ia @ ib) * sa * sb).astype(np.float32))
    assert report.n_overflow == 0 and report.accumulator == "int32"
    twin, overflow = ref.matmul(ia, ib, "int")
    np.testing.assert_array_equal(twin, ia @ ib)
    assert not overflow.any()
    # the float path on the same quantized values agrees to float32 rounding
    exact = qmatmul(a, b, a_spec=spec, b_spec=spec, accumulator="exact")
    np.testing.assert_allclose(out, exact, rtol=1e-5, atol=1e-6)


def test_ocp_int8_bit_patterns_are_signed():
    a, b = operands(2, 40, 3, seed=8, spread=1.0)
    spec = fpsim.QuantSpec(format="ocp_int8")
    out = qmatmul(a, b, a_spec=spec, b_spec=spec, accumulator="int32")
    exact = qmatmul(a, b, a_spec=spec, b_spec=spec, accumulator="exact")
    np.testing.assert_allclose(out, exact, rtol=1e-6, atol=1e-6)


def test_int32_overflow_is_detected():
    # codes 127 * 127 * 135000 = 2.18e9 > 2**31 - 1 halfway through; the second half cancels
    k = 270000
    a = np.ones((1, k), np.float32)
    b = np.ones((k, 2), np.float32)
    b[k // 2:, 1] = -1.0
    with pytest.warns(AccumulatorOverflowWarning, match="2 outputs|2 of"):
        out = qmatmul(a, b, a_spec="int8", b_spec="int8", accumulator="int32")
    exact = 127 * 127 * k
    wrapped = (exact + 2**31) % 2**32 - 2**31
    scale = float(np.float32(1 / 127)) ** 2
    assert out[0, 0] == np.float32(wrapped * scale) and wrapped != exact
    assert out[0, 1] == 0.0  # came back into range: the wrapped sum is exact
    out, report = qmatmul(a, b, a_spec="int8", b_spec="int8", accumulator="int32",
                          return_details=True)
    assert report.overflow.tolist() == [[True, True]] and report.n_overflow == 2


# ---- shapes and the API ------------------------------------------------------------------
def test_shapes_follow_matmul():
    a, b = operands(3, 20, 4, seed=9)
    full = qmatmul(a, b, accumulator="bf16")
    assert qmatmul(a[0], b, accumulator="bf16").shape == (4,)
    assert_same_bits(qmatmul(a[0], b, accumulator="bf16"), full[0])
    assert_same_bits(qmatmul(a, b[:, 1], accumulator="bf16"), full[:, 1])
    assert qmatmul(a[0], b[:, 1], accumulator="bf16").shape == ()
    assert_same_bits(qdot(a[0], b[:, 1], accumulator="bf16"), full[0, 1])
    batched = qmatmul(np.stack([a, 2 * a]), b, accumulator="bf16")
    assert batched.shape == (2, 3, 4)
    assert_same_bits(batched[0], full)
    assert_same_bits(batched[1], qmatmul(2 * a, b, accumulator="bf16"))
    assert qmatmul(a, np.stack([b, b, b]), accumulator="tensorcore").shape == (3, 3, 4)
    assert qmatmul(a[:0], b).shape == (0, 4)


def test_result_dtypes_and_names():
    a, b = operands(2, 8, 2)
    assert qmatmul(a, b, accumulator="exact").dtype == np.float64
    assert qmatmul(a, b, accumulator="e11m40").dtype == np.float64
    for name in ("fp32", "fp16", "bf16", "e8m13", "tensorcore", "e5m2"):
        assert qmatmul(a, b, accumulator=name).dtype == np.float32
    assert qmatmul(a, b, accumulator="e11m40", promote_every=4).dtype == np.float32
    _, report = qmatmul(a, b, accumulator="tensorcore", promote_every=128, return_details=True)
    assert isinstance(report, AccumulationReport)
    assert report.accumulator == "tensorcore(14 bits, promote 128)"
    assert set(ACCUMULATORS) >= {"exact", "fp32", "fp16", "bf16", "tensorcore"}
    assert AccumulatorFormat(8, 13).name == "e8m13"


def test_stochastic_specs_are_reproducible():
    a, b = operands(3, 40, 3, seed=10, spread=1.0)
    spec = fpsim.recipe("e4m3fn", rounding="stochastic")
    r1 = qmatmul(a, b, a_spec=spec, b_spec=spec, accumulator="exact", rng=7)
    r2 = qmatmul(a, b, a_spec=spec, b_spec=spec, accumulator="exact", rng=7)
    np.testing.assert_array_equal(r1, r2)


A, B = np.ones((2, 64), np.float32), np.ones((64, 3), np.float32)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(accumulator="fp64"), ValueError, "unknown accumulator"),
    (dict(accumulator="tensrcore"), ValueError, "did you mean 'tensorcore'"),
    (dict(accumulator=3), TypeError, "accumulator must be"),
    (dict(accumulator="int8"), ValueError, "integer format"),
    (dict(accumulator="e12m3"), ValueError, "exponent_bits"),
    (dict(accumulator="e8m51"), ValueError, "mantissa_bits"),
    (dict(accumulator="tensorcore", promote_every=100), ValueError, "multiple of 32"),
    (dict(accumulator="fp16", promote_every=0), ValueError, "positive"),
    (dict(accumulator="fp16", promote_every=2.0), TypeError, "promote_every"),
    (dict(accumulator="exact", promote_every=128), ValueError, "does not apply"),
    (dict(accumulator="fp16", accumulator_bits=14), ValueError, "tensorcore"),
    (dict(accumulator="tensorcore", accumulator_bits=0), ValueError, r"\[1, 47\]"),
    (dict(accumulator="tensorcore", accumulator_bits=53), ValueError, r"\[1, 47\]"),
    (dict(accumulator="tensorcore", accumulator_bits=14.0), TypeError, "accumulator_bits"),
    (dict(accumulator="int32"), ValueError, "integer specs"),
    (dict(accumulator="int32", a_spec="e4m3fn", b_spec="int8"), ValueError, "integer element"),
    (dict(accumulator="int32", a_spec="int8", b_spec="int4_block32"), ValueError, "factor out"),
    (dict(accumulator="int32", a_spec="int8_asym", b_spec="int8"), ValueError, "symmetric"),
    (dict(a_spec="e9m9"), ValueError, "unknown recipe"),
    (dict(a_spec=8), TypeError, "a_spec"),
    (dict(rng="seed"), TypeError, "rng"),
    (dict(rng=-1), ValueError, r"rng: an int seed must satisfy 0 <= seed < 2\*\*64, got -1"),
    (dict(return_details=1), TypeError, "return_details"),
])
def test_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        qmatmul(A, B, **kwargs)


@pytest.mark.parametrize("a, b, error, match", [
    (A, B[:10], ValueError, "do not match along K"),
    (A.astype(np.int32), B, TypeError, "float array"),
    (A, B.astype(bool), TypeError, "float array"),
    (np.float32(1.0), B, ValueError, "at least one dimension"),
    (np.ones((2, 2, 64), np.float32), np.ones((3, 64, 3), np.float32), ValueError, "broadcast"),
])
def test_invalid_operands(a, b, error, match):
    with pytest.raises(error, match=match):
        qmatmul(a, b)


def test_qdot_needs_vectors():
    with pytest.raises(ValueError, match="1-D"):
        qdot(A, B)


def test_aligned_truncation_is_the_tensorcore_approximation_by_its_name():
    """Issue 11: the one-knob model keeps working under a name that says what it is."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 256)).astype(np.float32)
    b = rng.standard_normal((256, 2)).astype(np.float32)
    for bits, promote in ((14, None), (10, 128)):
        np.testing.assert_array_equal(
            qmatmul(a, b, accumulator="aligned_truncation", accumulator_bits=bits,
                    promote_every=promote),
            qmatmul(a, b, accumulator="tensorcore", accumulator_bits=bits,
                    promote_every=promote))


# ---- int_matmul: exact integer GEMM on float32 BLAS ------------------------------
@pytest.mark.parametrize("k", [1, 7, 1024, 1025, 3000])
@pytest.mark.parametrize("dtype", [np.int8, np.float32])
def test_int_matmul_equals_int64_matmul(k, dtype):
    rng = np.random.default_rng(k)
    a = rng.integers(-128, 128, size=(5, k))
    b = rng.integers(-128, 128, size=(k, 3))
    a[0] = -128  # the extreme partial sums: k * 2**14 passes 2**24 beyond 1024 terms
    b[:, 0] = -128
    got = int_matmul(a.astype(dtype), b.astype(dtype))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, (a @ b).astype(np.float64))  # numpy int64: exact


def test_int_matmul_wider_integers_and_edges():
    rng = np.random.default_rng(1)
    a = rng.integers(-70000, 70000, size=(4, 300))  # partial sums far beyond 2**24
    b = rng.integers(-300, 300, size=(300, 2))
    np.testing.assert_array_equal(int_matmul(a, b), (a @ b).astype(np.float64))
    assert int_matmul(np.zeros((2, 0)), np.zeros((0, 3))).tolist() == [[0.0] * 3] * 2
    assert int_matmul(np.zeros((0, 4), np.int8), np.ones((4, 2), np.int8)).shape == (0, 2)
    with pytest.raises(ValueError, match=r"\(M, K\) and \(K, N\)"):
        int_matmul(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="2\\*\\*53"):
        int_matmul(np.full((1, 2), 2.0 ** 25), np.ones((2, 1)))
