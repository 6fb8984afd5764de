"""GPTQ: the Cholesky algorithm against a readable OBS reference, RTN as its special case, the
output error it promises, the QuantizedTensor it returns, and bad arguments."""

import numpy as np
import pytest

import fpsim
from fpsim.quant.gptq import gptq, hessian
from fpsim.quant.spec import resolve_spec

# every kind of scale group GPTQ takes: tensor, channel, blocks (int, affine int, MX, NVFP4),
# DeepSeek's 2-D tiles
SPECS = [
    ("int8", {}),
    ("int8_channel", dict(axis=0)),
    ("int4_block32", dict(axis=0, block_size=64)),
    ("int4_block32", dict(axis=0, format="uint4", symmetric=False)),
    ("mxfp4_e2m1", dict(axis=0)),
    ("mxfp8_e4m3", dict(axis=0)),
    ("nvfp4", dict(axis=0)),
    ("fp8_deepseek_weight", dict(block_size=(64, 64))),
    ("e4m3fn", {}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in SPECS]


def _problem(seed=0, K=128, N=96, T=512):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, K)) @ rng.standard_normal((K, K)) / np.sqrt(K)  # correlated
    x[:, 3] *= 20  # an outlier input channel, as in LLMs
    w = rng.standard_normal((K, N)).astype(np.float32)
    return x, w


def _obs_reference(w, h, spec, damp=0.01):
    """The paper's sequential Optimal Brain Surgeon form, readable and slow: quantize row q
    with its group's scales, move the error onto the remaining rows with H^-1, then remove
    row q from H^-1 by one step of Gaussian elimination."""
    K = w.shape[0]
    W = w.astype(np.float64)
    H = h.copy()
    H[np.diag_indices(K)] += damp * np.mean(np.diag(H))
    Hinv = np.linalg.inv(H)
    r = spec.block_size[0] if isinstance(spec.block_size, tuple) else (
        spec.block_size if spec.granularity == "block" else K)
    fixed = resolve_spec(spec, amax=float(np.abs(w).max())) if spec.tensor_scale else spec
    out = np.empty_like(W)
    qt = None
    for q in range(K):
        if q % r == 0:
            qt = fpsim.quantize_tensor(W[q:q + r].astype(np.float32), fixed)
            s, z = qt.element_scale(), qt.element_zero_point()
        i = q % r
        y = W[q] / s[i].astype(np.float32) if z is None else W[q] / s[i] + z[i]
        c = fpsim.encode(y.astype(np.float32), spec.format, saturate=True)
        v = fpsim.decode(c, spec.format, dtype=np.float64)
        v = v * s[i] if z is None else (v - z[i]) * s[i]
        out[q] = v
        e = (W[q] - v) / Hinv[q, q]
        W[q + 1:] -= np.outer(Hinv[q + 1:, q], e)
        Hinv = Hinv - np.outer(Hinv[:, q], Hinv[q, :]) / Hinv[q, q]
    return out


@pytest.mark.parametrize("name, kw", SPECS, ids=IDS)
def test_gptq_equals_the_obs_reference(name, kw):
    x, w = _problem()
    spec = resolve_spec(name, **kw)
    got = gptq(w, hessian(x), spec).dequantize(np.float64)
    ref = _obs_reference(w, hessian(x), spec)
    # the same rounding decisions (a rare tie may flip under different float sums)
    assert np.mean(got == ref) > 0.995
    err = lambda v: np.sum((x @ (v - w)) ** 2)  # noqa: E731
    assert err(got) == pytest.approx(err(ref), rel=2e-3)


@pytest.mark.parametrize("name, kw", SPECS, ids=IDS)
def test_identity_hessian_is_round_to_nearest(name, kw):
    """With uncorrelated inputs there is nothing to compensate: GPTQ gives the recipe's own
    round-to-nearest weight, bit for bit (the codes and scales are the recipe's)."""
    _, w = _problem()
    spec = resolve_spec(name, **kw)
    qt = gptq(w, np.eye(w.shape[0]), spec)
    assert np.array_equal(qt.dequantize(), fpsim.fake_quantize(w, spec))
    ref = fpsim.quantize_tensor(w, spec)
    assert np.array_equal(qt.codes, ref.codes)
    assert np.array_equal(qt.scales, ref.scales)


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("name, kw", SPECS, ids=IDS)
def test_gptq_beats_round_to_nearest_on_the_output(name, kw, act_order):
    x, w = _problem(seed=1)
    spec = resolve_spec(name, **kw)
    q = gptq(w, hessian(x), spec, act_order=act_order).dequantize()
    rtn = fpsim.fake_quantize(w, spec)
    err = lambda v: np.sum((x @ (v.astype(np.float64) - w)) ** 2)  # noqa: E731
    assert err(q) < 0.8 * err(rtn)


@pytest.mark.parametrize("name, kw", SPECS, ids=IDS)
def test_the_result_is_a_valid_quantized_tensor(name, kw):
    """Every GPTQ value is a code of the format times its block's scale: quantizing the GPTQ
    weight again with its own scales changes nothing, and the storage is the recipe's."""
    x, w = _problem(seed=2)
    spec = resolve_spec(name, **kw)
    qt = gptq(w, hessian(x), spec, act_order=True)
    v = qt.dequantize(np.float64)
    e = qt.element_values()
    s, z = qt.element_scale(), qt.element_zero_point()
    assert np.array_equal(v, e * s if z is None else (e - z) * s)
    fmt = spec.format
    lo, hi = (fmt.min_int, fmt.max_int) if hasattr(fmt, "min_int") else (-fmt.max, fmt.max)
    assert np.all((lo <= e) & (e <= hi))
    assert qt.nbytes == fpsim.quantize_tensor(w, spec).nbytes


GGML = ["ggml_q8_0", "ggml_q4_0", "ggml_q4_1", "ggml_q5_1", "ggml_mxfp4", "ggml_q4_k",
        "ggml_q6_k"]


@pytest.mark.parametrize("name", GGML)
def test_gptq_in_llama_cpp_formats(name):
    """llama.cpp's blocks run along the (out, in) rows: GPTQ returns that tensor, packed by
    to_ggml() and read back by from_ggml(); with an identity Hessian it is ggml's own
    round-to-nearest up to the codes where ggml's reciprocal-then-float16 scale decides a
    near tie differently (well under 1%)."""
    from fpsim.quant.ggml import from_ggml

    x, w = _problem(seed=5, K=256, N=48)
    spec = resolve_spec(name)
    qt = gptq(w, hessian(x), spec, act_order=True)
    assert qt.shape == (48, 256)
    back = from_ggml(qt.to_ggml(), spec, qt.shape)
    assert np.array_equal(back.dequantize(), qt.dequantize())
    rtn = fpsim.fake_quantize(np.ascontiguousarray(w.T), spec)
    err = lambda v: np.sum((x @ (v.T.astype(np.float64) - w)) ** 2)  # noqa: E731
    assert err(qt.dequantize()) < 0.8 * err(rtn)
    same = gptq(w, np.eye(256), spec).dequantize() == rtn
    assert np.mean(same) > 0.99


def test_lazy_batches_do_not_change_the_result():
    """Batches aligned with the scale blocks see the same compensated rows."""
    x, w = _problem(seed=3)
    spec = resolve_spec("int4_block32", axis=0)
    a = gptq(w, hessian(x), spec, block=128).dequantize(np.float64)
    b = gptq(w, hessian(x), spec, block=32).dequantize(np.float64)
    assert np.mean(a == b) > 0.995


def test_dead_inputs_are_zeroed():
    x, w = _problem(seed=4)
    x[:, 5] = 0.0
    q = gptq(w, hessian(x), resolve_spec("int8_channel", axis=0)).dequantize()
    assert np.all(q[5] == 0)
    assert np.isfinite(q).all()


def test_hessian_accumulates():
    x = np.arange(12.0).reshape(2, 3, 2)
    h = hessian(x[0])
    assert np.array_equal(hessian(x[1], h), hessian(x))


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(w=np.zeros(4, np.float32)), TypeError, "2-D float"),
    (dict(w=np.zeros((4, 3), np.int32)), TypeError, "2-D float"),
    (dict(hessian=np.eye(3)), ValueError, r"hessian must be \(8, 8\)"),
    (dict(hessian=np.full((8, 8), np.nan)), ValueError, "finite"),
    (dict(damp=-0.1), ValueError, "damp"),
    (dict(damp=True), ValueError, "damp"),
    (dict(block=0), ValueError, "block"),
    (dict(spec="nvfp4_te"), ValueError, "stack"),
    (dict(spec="ggml_tq2_0"), ValueError, "ternary"),
    (dict(spec="ggml_q4_0", w=np.ones((40, 4), np.float32), hessian=np.eye(40)), ValueError,
     "multiple of the ggml block size 32"),
    (dict(spec=resolve_spec("int4_block32")), ValueError, "axis=0"),
    (dict(spec=resolve_spec("int8_channel", axis=0, rounding="stochastic")), ValueError,
     "stochastic"),
    (dict(spec=resolve_spec("int8", calibration="mse")), ValueError, "calibration"),
    (dict(hessian=-np.eye(8), damp=0.0), ValueError, "positive definite"),
])
def test_bad_arguments(kwargs, err, match):
    args = dict(w=np.ones((8, 4), np.float32), hessian=np.eye(8),
                spec=resolve_spec("int8_channel", axis=0))
    args.update(kwargs)
    w, h, spec = args.pop("w"), args.pop("hessian"), args.pop("spec")
    with pytest.raises(err, match=match):
        gptq(w, h, spec, **args)
