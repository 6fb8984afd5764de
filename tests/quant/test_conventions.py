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


# ---- wrong types raise TypeError, wrong values ValueError ----------------------------------
Y = np.ones((4, 64), np.float32)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: fpsim.decode(np.array([True, False]), "e4m3fn"), TypeError, "codes must be an integer"),
    (lambda: fpsim.decode(np.zeros(3, np.float32), "e4m3fn"), TypeError, "codes must be an integer"),
    (lambda: fpsim.fake_quantize(Y, "int8", granularity=1), TypeError, "granularity must be a str"),
    (lambda: fpsim.fake_quantize(Y, "mxfp8_e4m3", scale_rule=1), TypeError, "scale_rule must be a str"),
    (lambda: fpsim.fake_quantize(Y, "int8", calibration=None), TypeError, "calibration must be a str"),
    (lambda: fpsim.quant.DelayedScaling("e4m3fn", algo=1), TypeError, "algo must be a str"),
    (lambda: fpsim.fake_quantize(Y, "int8", granularity="tensr"), ValueError, "did you mean"),
    (lambda: fpsim.fake_quantize(Y, "int8_token", axis=1.0), TypeError, "axis must be an int"),
    (lambda: fpsim.fake_quantize(Y, "mxfp8_e4m3", block_size=32.0), TypeError, "block_size"),
    (lambda: fpsim.fake_quantize(Y, "int8", rounding="stochastic", rng="1"), TypeError, "rng"),
    (lambda: fpsim.fake_quantize(Y, 5), TypeError, "spec must be"),
    (lambda: fpsim.fake_quantize(Y, "int8", bogus=1), TypeError, "bogus"),
])
def test_wrong_types_raise_type_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_spec_taking_functions_have_explicit_keywords():
    """No hidden **options: every override is a named keyword-only parameter."""
    import inspect

    from fpsim.quant import calibrate, fake_quantize, quantize_tensor, recipe, resolve_spec

    for fn in (fake_quantize, quantize_tensor, calibrate, recipe, resolve_spec,
               accumulate.qdot, accumulate.qmatmul):
        params = inspect.signature(fn).parameters.values()
        assert not any(p.kind is p.VAR_KEYWORD for p in params), fn.__name__
    assert {"axis", "block_size", "scale_rule", "calibration"} <= set(
        inspect.signature(fake_quantize).parameters)
    from fpsim.quant import OVERRIDABLE, QuantSpec
    import dataclasses

    fields = {f.name for f in dataclasses.fields(QuantSpec)}
    assert set(OVERRIDABLE) == fields  # every field, no more
    for fn in (fake_quantize, quantize_tensor, calibrate, resolve_spec):
        assert fields <= set(inspect.signature(fn).parameters), fn.__name__
