"""fpsim.quant.ggml: llama.cpp's block formats against gguf.quants bit for bit, the K-quant
encoders against a readable scalar transcription of llama.cpp's reference code."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fpsim
from fpsim.quant import ggml, recipe

gguf = pytest.importorskip("gguf")
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType  # noqa: E402

NON_K = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "mxfp4", "tq1_0", "tq2_0"]
K = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]
F = np.float32


def qtype(name):
    return GGMLQuantizationType[name.upper()]


def gguf_quantize(x, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gguf.quants.quantize(x, qtype(name))


def gguf_values(b, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gguf.quants.dequantize(b, qtype(name))


def bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


def same_bits(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and bool(((bits(a) == bits(b)) | (np.isnan(a) & np.isnan(b))).all())


def sample(dist, shape, seed=0):
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    if dist == "gaussian":
        x = rng.standard_normal(n)
    elif dist == "laplace":
        x = rng.laplace(size=n)
    elif dist == "student_t3":
        x = rng.standard_t(3, size=n)
    elif dist == "outlier_columns":
        x = rng.standard_normal(shape)
        x[..., ::37] *= 100.0
        x = x.ravel()
    elif dist == "zero_blocks":
        x = rng.standard_normal(n)
        x[: n // 2] = 0.0
    elif dist == "tiny":  # float16 scales of 0 (or subnormal) but finite 1 / d
        x = rng.standard_normal(n) * np.float32(1e-30) * rng.choice([1, 1e5, 1e9], n)
    elif dist == "ties":  # values on coarse grids: ties of every rounding step
        x = rng.integers(-16, 17, n) * 0.25
    elif dist == "positive":
        x = np.abs(rng.standard_normal(n)) + 1.0
    elif dist == "large":
        x = rng.standard_normal(n) * 1e4
    else:
        raise AssertionError(dist)
    return x.reshape(shape).astype(np.float32)


DISTS = ["gaussian", "laplace", "student_t3", "outlier_columns", "zero_blocks", "tiny", "ties",
         "positive", "large"]


# ---- the eight fixed types: bit for bit with gguf.quants ---------------------------------
@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("name", NON_K)
def test_bytes_and_values_equal_gguf(name, dist):
    x = sample(dist, (4, 512), seed=len(dist))
    qt = fpsim.quantize_tensor(x, f"ggml_{name}")
    ref = gguf_quantize(x, name)
    data = qt.to_ggml()
    assert data.dtype == np.uint8 and data.shape == ref.shape and (data == ref).all()
    v = qt.dequantize()
    assert same_bits(v, gguf_values(ref, name))
    assert same_bits(fpsim.fake_quantize(x, f"ggml_{name}"), v)
    assert qt.nbytes == ref.nbytes == ggml.nbytes(f"ggml_{name}", x.shape)


@pytest.mark.parametrize("name", NON_K + K)
@pytest.mark.parametrize("shape", [(256,), (3, 2, 512), (1, 1, 256)])
def test_shapes_and_round_trip_through_bytes(name, shape):
    x = sample("gaussian", shape, seed=3)
    qt = fpsim.quantize_tensor(x, f"ggml_{name}")
    data = qt.to_ggml()
    block, size = GGML_QUANT_SIZES[qtype(name)]
    assert data.shape == (*shape[:-1], shape[-1] // block * size) and qt.codes.shape == shape
    back = ggml.from_ggml(data.tobytes(), f"ggml_{name}", shape)
    assert (back.codes == qt.codes).all() and (back.scale_codes == qt.scale_codes).all()
    assert (back.to_ggml() == data).all()
    assert same_bits(back.dequantize(), qt.dequantize())
    assert same_bits(qt.dequantize(), gguf_values(data, name))
    assert same_bits(fpsim.fake_quantize(x, f"ggml_{name}"), qt.dequantize())
    if name in NON_K:
        assert (data == gguf_quantize(x, name)).all()


@pytest.mark.parametrize("name", NON_K + K)
def test_other_dtypes_are_cast_to_float32(name):
    x = sample("laplace", (2, 256), seed=5)
    v32 = fpsim.fake_quantize(x, f"ggml_{name}")
    v64 = fpsim.fake_quantize(x.astype(np.float64), f"ggml_{name}")
    assert v64.dtype == np.float64 and same_bits(v64.astype(np.float32), v32)
    h = x.astype(np.float16)
    qt = fpsim.quantize_tensor(h, f"ggml_{name}")
    assert (qt.to_ggml() == fpsim.quantize_tensor(h.astype(np.float32), f"ggml_{name}")
            .to_ggml()).all()
    if name in NON_K:
        assert (qt.to_ggml() == gguf_quantize(h, name)).all()


@pytest.mark.parametrize("name", NON_K + K)
def test_element_views_rebuild_the_values(name):
    x = sample("student_t3", (2, 256), seed=7)
    qt = fpsim.quantize_tensor(x, f"ggml_{name}")
    s, o = ggml.group_params(qt)
    t = ggml.GGML_TYPES[name]
    assert s.shape == (2, 256 // t.group) == (qt.scales.shape) and qt.n_groups == s.size
    e, es = qt.element_values(), qt.element_scale()
    z = qt.element_zero_point()
    approx = (e - (0 if z is None else z)) * es
    np.testing.assert_allclose(approx, qt.dequantize(), rtol=1e-5, atol=1e-6 * np.abs(x).max())
    assert (o is None) == (z is None) == t.symmetric


def test_mxfp4_rounds_ties_toward_zero_and_scale_is_floor():
    x = np.zeros(32, np.float32)
    x[:5] = [4.0, 2.5, -2.5, 0.25, -0.75]  # amax 4: e = 2 + 125, elements x / 1
    qt = fpsim.quantize_tensor(x, "ggml_mxfp4")
    assert qt.scale_codes.ravel().tolist() == [127]
    assert qt.dequantize()[:5].tolist() == [4.0, 2.0, -2.0, 0.0, -0.5]
    assert (qt.to_ggml() == gguf_quantize(x, "mxfp4")).all()


@pytest.mark.parametrize("name", NON_K)
def test_blocks_whose_inverse_scale_overflows(name):
    """1/d = Inf: ggml casts Inf/NaN to integers (undefined); fpsim saturates the codes, and
    the values are gguf's zeros (up to the sign of zero, which its casts decide)."""
    x = sample("gaussian", (2, 256), seed=4) * np.float32(1e-38)
    with np.errstate(all="ignore"):
        v = fpsim.fake_quantize(x, f"ggml_{name}")
    ref = gguf_values(gguf_quantize(x, name), name)
    assert (v == ref).all()
    qt = fpsim.quantize_tensor(x, f"ggml_{name}")
    back = ggml.from_ggml(qt.to_ggml(), f"ggml_{name}", x.shape)
    assert (back.codes == qt.codes).all()


def test_q8_0_scale_overflowing_float16_is_inf_as_in_ggml():
    x = np.full(32, 1e7, np.float32)  # d = 1e7 / 127 > 65504
    v = fpsim.fake_quantize(x, "ggml_q8_0")
    assert np.isinf(v).all() and same_bits(v, gguf_values(gguf_quantize(x, "q8_0"), "q8_0"))


# ---- Hypothesis ---------------------------------------------------------------------------
finite32 = st.floats(-1e4, 1e4, width=32, allow_nan=False, allow_subnormal=True)


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float32, st.sampled_from([(1, 256), (2, 256)]), elements=finite32),
       name=st.sampled_from(NON_K))
def test_hypothesis_non_k_equal_gguf(x, name):
    qt = fpsim.quantize_tensor(x, f"ggml_{name}")
    ref = gguf_quantize(x, name)
    amax = np.abs(x.reshape(-1, 32)).max(axis=1)
    if ((amax == 0) | (amax > 1e-35)).all():
        assert (qt.to_ggml() == ref).all()
        assert same_bits(qt.dequantize(), gguf_values(ref, name))
    else:  # 1/d overflows: undefined in ggml (test_blocks_whose_inverse_scale_overflows)
        assert (qt.dequantize() == gguf_values(ref, name)).all()


@settings(max_examples=25, deadline=None)
@given(x=hnp.arrays(np.float32, (1, 256), elements=finite32), name=st.sampled_from(K))
def test_hypothesis_k_quants_round_trip_and_decode_like_gguf(x, name):
    qt = fpsim.quantize_tensor(x, f"ggml_{name}")
    data = qt.to_ggml()
    back = ggml.from_ggml(data, f"ggml_{name}", x.shape)
    assert (back.codes == qt.codes).all() and (back.to_ggml() == data).all()
    v = qt.dequantize()
    assert same_bits(v, gguf_values(data, name))
    amax = float(np.abs(x).max())
    assert np.isfinite(v).all() and np.abs(v).max() <= 1.5 * amax + 1e-30


@pytest.mark.parametrize("name", K)
def test_k_decode_of_any_bytes_equals_gguf(name):
    size = GGML_QUANT_SIZES[qtype(name)][1]
    raw = np.random.default_rng(11).integers(0, 256, (3, 2 * size), dtype=np.uint8)
    qt = ggml.from_ggml(raw, f"ggml_{name}", (3, 512))
    assert same_bits(qt.dequantize(), gguf_values(raw, name))
    assert (qt.to_ggml() == raw).all()


# ---- K-quant encoders: error bounds and a scalar transcription of llama.cpp ---------------
REL_RMSE = {"q2_k": 0.45, "q3_k": 0.22, "q4_k": 0.11, "q5_k": 0.055, "q6_k": 0.028}


@pytest.mark.parametrize("dist", ["gaussian", "laplace", "student_t3", "outlier_columns"])
@pytest.mark.parametrize("name", K)
def test_k_quant_error_is_bounded(name, dist):
    x = sample(dist, (8, 512), seed=2)
    v = fpsim.fake_quantize(x, f"ggml_{name}")
    xb = x.reshape(-1, 256)
    err = (v.reshape(-1, 256) - xb).astype(np.float64)
    rel = np.sqrt((err ** 2).mean(axis=1)) / np.sqrt((xb.astype(np.float64) ** 2).mean(axis=1))
    assert rel.max() < REL_RMSE[name] * {"outlier_columns": 3, "student_t3": 1.5}.get(dist, 1)


@pytest.mark.parametrize("name", K)
def test_k_quant_zero_and_tiny_blocks(name):
    x = sample("zero_blocks", (2, 512), seed=1)
    x[1, :256] = 1e-30
    v = fpsim.fake_quantize(x, f"ggml_{name}")
    assert (v[0, :256] == 0).all() and np.isfinite(v).all()
    assert np.abs(v[1, :256]).max() <= 1e-29


def nearest(v):
    return int(np.rint(F(v)))


def ref_qkx2(x, w, nmax, rmin, rdelta, nstep, mad):
    n = len(x)
    mn, mx, sum_w = x[0], x[0], w[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        mn, mx = min(mn, x[i]), max(mx, x[i])
        sum_w += w[i]
        sum_x += w[i] * x[i]
    if mn > 0:
        mn = F(0)
    if mx == mn:
        return [0] * n, F(0), -mn
    iscale = F(nmax) / (mx - mn)
    scale = F(1) / iscale
    L, best = [], F(0)
    for i in range(n):
        L.append(min(max(nearest(iscale * (x[i] - mn)), 0), nmax))
        diff = scale * F(L[i]) + mn - x[i]
        best += w[i] * (abs(diff) if mad else diff * diff)
    for step in range(nstep + 1):
        iscale = (F(rmin) + F(rdelta) * F(step) + F(nmax)) / (mx - mn)
        la = [min(max(nearest(iscale * (x[i] - mn)), 0), nmax) for i in range(n)]
        sl = sl2 = sxl = F(0)
        for i in range(n):
            sl += w[i] * F(la[i])
            sl2 += w[i] * F(la[i]) * F(la[i])
            sxl += w[i] * F(la[i]) * x[i]
        D = sum_w * sl2 - sl * sl
        if D > 0:
            ts = (sum_w * sxl - sum_x * sl) / D
            tm = (sl2 * sum_x - sl * sxl) / D
            if tm > 0:
                tm, ts = F(0), sxl / sl2
            cur = F(0)
            for i in range(n):
                diff = ts * F(la[i]) + tm - x[i]
                cur += w[i] * (abs(diff) if mad else diff * diff)
            if cur < best:
                L, best, scale, mn = la, cur, ts, tm
    return L, scale, -mn


def f16(v):
    return F(np.float16(v))


def f16_bytes(v):
    return list(np.array([v], "<f2").view(np.uint8))


def ref_q45_k(x, nmax, rmin, nstep):
    """quantize_row_q4_K_ref / q5_K_ref on one block of 256, as bytes."""
    L, scales, mins = [], [], []
    for j in range(8):
        xs = x[32 * j:32 * j + 32]
        sx2 = F(0)
        for v in xs:
            sx2 += v * v
        av = np.sqrt(sx2 / F(32))
        lj, s, m = ref_qkx2(xs, [av + abs(v) for v in xs], nmax, rmin, 0.1, nstep, False)
        L += lj
        scales.append(s)
        mins.append(m)
    max_scale = max([F(0)] + scales)
    max_min = max([F(0)] + mins)
    inv_s = F(63) / max_scale if max_scale > 0 else F(0)
    inv_m = F(63) / max_min if max_min > 0 else F(0)
    ls = [min(63, nearest(inv_s * s) & 255) for s in scales]
    lm = [min(63, nearest(inv_m * m) & 255) for m in mins]
    sc = [0] * 12
    for j in range(8):
        if j < 4:
            sc[j], sc[j + 4] = ls[j], lm[j]
        else:
            sc[j + 4] = (ls[j] & 15) | ((lm[j] & 15) << 4)
            sc[j - 4] |= (ls[j] >> 4) << 6
            sc[j] |= (lm[j] >> 4) << 6
    d, dmin = max_scale / F(63), max_min / F(63)
    for j in range(8):
        dd = f16(d) * F(ls[j])
        if dd == 0:
            continue
        dm = f16(dmin) * F(lm[j])
        for i in range(32):
            L[32 * j + i] = min(max(nearest((x[32 * j + i] + dm) / dd), 0), nmax)
    qs, qh = [], [0] * 32
    for g in range(4):
        for i in range(32):
            lo, hi = L[64 * g + i], L[64 * g + 32 + i]
            qh[i] |= ((lo >> 4) << (2 * g)) | ((hi >> 4) << (2 * g + 1))
            qs.append((lo & 15) | ((hi & 15) << 4))
    return f16_bytes(d) + f16_bytes(dmin) + sc + (qh if nmax == 31 else []) + qs


def ref_make_qx(x, nmax):
    amax, mx = F(0), F(0)
    for v in x:
        if abs(v) > amax:
            amax, mx = abs(v), v
    if amax < F(1e-15):
        return [0] * len(x), F(0)

    def fit(iscale):
        ls = [max(-nmax, min(nmax - 1, nearest(iscale * v))) for v in x]
        slx = sl2 = F(0)
        for v, l in zip(x, ls):
            w = v * v
            slx += w * v * F(l)
            sl2 += w * F(l) * F(l)
        return [l + nmax for l in ls], slx, sl2

    L, sumlx, suml2 = fit(F(-nmax) / mx)
    scale = sumlx / suml2 if suml2 else F(0)
    best = scale * sumlx
    for step in [s for s in range(-9, 10) if s]:
        la, slx, sl2 = fit(-(F(nmax) + F(0.1) * F(step)) / mx)
        if sl2 > 0 and slx * slx > best * sl2:
            L, scale = la, slx / sl2
            best = scale * slx
    return L, scale


def ref_q6_k(x):
    L, scales = [], []
    for j in range(16):
        lj, s = ref_make_qx(x[16 * j:16 * j + 16], 32)
        L += lj
        scales.append(s)
    amax, max_scale = F(0), F(0)
    for s in scales:
        if abs(s) > amax:
            amax, max_scale = abs(s), s
    if amax < F(1e-15):
        return [0] * 210
    iscale = F(-128) / max_scale
    d = F(1) / iscale
    s8 = [min(127, nearest(iscale * s)) for s in scales]
    for j in range(16):
        dd = f16(d) * F(s8[j])
        if dd == 0:
            continue
        for i in range(16):
            L[16 * j + i] = max(-32, min(31, nearest(x[16 * j + i] / dd))) + 32
    ql, qh = [0] * 128, [0] * 64
    for h in range(2):
        for i in range(32):
            q = [L[128 * h + 32 * k + i] for k in range(4)]
            ql[64 * h + i] = (q[0] & 15) | ((q[2] & 15) << 4)
            ql[64 * h + 32 + i] = (q[1] & 15) | ((q[3] & 15) << 4)
            qh[32 * h + i] = sum((q[k] >> 4) << (2 * k) for k in range(4))
    return ql + qh + [s & 255 for s in s8] + f16_bytes(d)


def ref_block_bytes(name, x):
    x = [F(v) for v in x]
    if name == "q4_k":
        return ref_q45_k(x, 15, -1.0, 20)
    if name == "q5_k":
        return ref_q45_k(x, 31, -0.5, 15)
    return ref_q6_k(x)


@pytest.mark.parametrize("dist", ["gaussian", "student_t3", "ties", "zero_blocks"])
@pytest.mark.parametrize("name", ["q4_k", "q5_k", "q6_k"])
def test_k_encoder_equals_scalar_transcription(name, dist):
    x = sample(dist, (2, 256), seed=9)
    data = fpsim.quantize_tensor(x, f"ggml_{name}").to_ggml()
    for r in range(2):
        assert data[r].tolist() == ref_block_bytes(name, x[r])


# ---- specs and errors ----------------------------------------------------------------------
@pytest.mark.parametrize("name", NON_K + K)
def test_type_comes_from_the_fields_not_the_name(name):
    spec = recipe(f"ggml_{name}")
    assert ggml.ggml_type(spec).name == name and spec.stack == "ggml"
    renamed = fpsim.quant.resolve_spec(spec, name="mine")
    assert ggml.ggml_type(renamed).name == name
    assert ggml.GGML_TYPES[name].type_size == GGML_QUANT_SIZES[qtype(name)][1]


BAD_SPECS = [
    (dict(rounding="nearest_even"), "rounding"),
    (dict(axis=0), "axis=-1"),
    (dict(calibration="mse"), "calibration"),
    (dict(amax=1.0), "static amax"),
    (dict(block_size=64), "ggml block type"),
    (dict(format="int8", block_size=16), "ggml block type"),
    (dict(saturate=False), "saturate"),
    (dict(hadamard=16), "hadamard"),
    (dict(granularity="channel"), "ggml block type"),
]


@pytest.mark.parametrize("over,match", BAD_SPECS)
def test_specs_ggml_does_not_have_are_refused(over, match):
    with pytest.raises(ValueError, match=match):
        recipe("ggml_q4_0", **over)


BAD_INPUTS = [
    (np.array([np.nan] + [1.0] * 31, np.float32), ValueError, "NaN or Inf"),
    (np.array([np.inf] + [1.0] * 31, np.float32), ValueError, "NaN or Inf"),
    (np.full(32, 1e300), ValueError, "NaN or Inf"),
    (np.ones(48, np.float32), ValueError, "multiple of the block size 32"),
    (np.float32(1.0), ValueError, "at least one dimension"),
    (np.ones(32, np.int32), TypeError, "float"),
]


@pytest.mark.parametrize("x,exc,match", BAD_INPUTS)
def test_bad_inputs_raise(x, exc, match):
    with pytest.raises(exc, match=match):
        fpsim.quantize_tensor(x, "ggml_q4_0")
    with pytest.raises(exc, match=match):
        fpsim.fake_quantize(x, "ggml_q4_0")


def test_other_axes_and_bad_bytes_are_refused():
    x = np.ones((32, 32), np.float32)
    with pytest.raises(ValueError, match="axis"):
        fpsim.fake_quantize(x, "ggml_q8_0", axis=0)
    assert fpsim.fake_quantize(x, "ggml_q8_0", axis=-1).shape == (32, 32)
    with pytest.raises(ValueError, match="takes 68 bytes, got 67"):
        ggml.from_ggml(b"\0" * 67, "ggml_q8_0", (2, 32))
    with pytest.raises(ValueError, match="multiple of 32"):
        ggml.from_ggml(b"\0" * 34, "ggml_q8_0", (31,))
    with pytest.raises(ValueError, match="ggml type must be one of"):
        ggml.quantize(x, "q7_0")
    with pytest.raises(ValueError, match="to_ggml"):
        fpsim.quantize_tensor(x, "int8").to_ggml()
