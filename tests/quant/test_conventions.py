"""One convention per name (issue 10): ``fmt``, ``return_details``, old spellings deprecated."""

import warnings

import numpy as np
import pytest

import fpsim
from fpsim.quant import accumulate, blocks, outliers

X = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
W = np.random.default_rng(1).standard_normal((64, 3)).astype(np.float32)


@pytest.mark.parametrize("old, new", [
    (lambda: blocks.mx_fake_quantize(X, element="e4m3fn", return_details=False),
     lambda: blocks.mx_fake_quantize(X, fmt="e4m3fn", return_details=False)),
    (lambda: blocks.mx_encode(X, element="e2m1fn")[1],
     lambda: blocks.mx_encode(X, fmt="e2m1fn")[1]),
    (lambda: blocks.scale_exponent([3.0, 500.0], element="e4m3fn"),
     lambda: blocks.scale_exponent([3.0, 500.0], fmt="e4m3fn")),
    (lambda: outliers.llm_int8_matmul(X * 9, W, outlier_dtype="bfloat16"),
     lambda: outliers.llm_int8_matmul(X * 9, W, outlier_fmt="bfloat16")),
    (lambda: outliers.llm_int8_fake_quantize(X * 9, outlier_dtype=np.float32,
                                             return_details=False),
     lambda: outliers.llm_int8_fake_quantize(X * 9, outlier_fmt=np.float32,
                                             return_details=False)),
    (lambda: accumulate.qmatmul(X, W, accumulator="fp16", return_report=True)[0],
     lambda: accumulate.qmatmul(X, W, accumulator="fp16", return_details=True)[0]),
    (lambda: accumulate.qdot(X[0], W[:, 0], accumulator="fp16", return_report=True)[0],
     lambda: accumulate.qdot(X[0], W[:, 0], accumulator="fp16", return_details=True)[0]),
])
def test_old_keywords_still_work_with_a_deprecation_warning(old, new):
    with pytest.warns(DeprecationWarning, match="is deprecated; use"):
        a = old()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = new()
    np.testing.assert_array_equal(a, b)


def test_both_spellings_is_an_error():
    with pytest.raises(TypeError, match="got both element= and fmt="):
        blocks.mx_encode(X, element="e4m3fn", fmt="e4m3fn")


@pytest.mark.parametrize("fn, tuple_len", [
    (lambda **kw: blocks.mx_fake_quantize(X, "e4m3fn", **kw), 2),
    (lambda **kw: outliers.llm_int8_fake_quantize(X * 9, **kw), 2),
])
def test_return_details_convention(fn, tuple_len):
    plain = fn(return_details=False)
    assert isinstance(plain, np.ndarray) and plain.shape == X.shape
    detailed = fn(return_details=True)
    assert isinstance(detailed, tuple) and len(detailed) == tuple_len
    np.testing.assert_array_equal(detailed[0], plain)
    with pytest.warns(FutureWarning, match="default will become False"):
        legacy = fn()
    assert isinstance(legacy, tuple)
    with pytest.raises(TypeError, match="return_details must be True or False"):
        fn(return_details="yes")
    # the same convention as fake_quantize: an array by default
    assert isinstance(fpsim.fake_quantize(X, "mxfp8_e4m3"), np.ndarray)
