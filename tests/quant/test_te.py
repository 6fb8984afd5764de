"""fpsim.quant.te and the ``nvfp4_te*`` / ``nvfp4_4over6*`` recipes: Transformer Engine's
NVFP4 bits.

The oracle is tests/golden/te_nvfp4.npz, written by TE's own reference quantizer
(``NVFP4QuantizerRef``, tests/golden/make_te_golden.py, hand-run with torch 2.13 on the CPU)
and TE's CUDA dequantization formula.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import fpsim
from fpsim.quant import QuantSpec, resolve_spec
from fpsim.quant import te

GOLDEN = np.load(pathlib.Path(__file__).parents[1] / "golden" / "te_nvfp4.npz")
DISTS = sorted({k.split("/")[1] for k in GOLDEN.files if k.startswith("x/")})
CASES = {"1d": ("nvfp4_te", {}), "1d_row": ("nvfp4_te", {"row_scaled": True}),
         "2d": ("nvfp4_te_2d", {})}
for _err in ("mae", "mse"):
    for _mx in (448, 256):
        CASES[f"4over6_{_err}_{_mx}"] = ("nvfp4_4over6", {"error": _err, "e4m3_max": _mx})
        CASES[f"4over6_2d_{_err}_{_mx}"] = ("nvfp4_4over6_2d", {"error": _err, "e4m3_max": _mx})


def _bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


def test_golden_data_is_te_reference():
    meta = json.loads(str(GOLDEN["meta"]))
    assert meta["te_commit"].startswith("d0067d0") and meta["torch"].startswith("2.13")
    assert len(DISTS) == 7


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dist", DISTS)
def test_recipes_are_te_bit_for_bit(dist, case):
    recipe, kw = CASES[case]
    x = GOLDEN[f"x/{dist}"]
    key = f"{dist}/{case}"
    qt = fpsim.quantize_tensor(x, recipe, **kw)
    np.testing.assert_array_equal(np.asarray(qt.codes, np.uint8), GOLDEN[f"{key}/codes"])
    want_scales = GOLDEN[f"{key}/scale"]
    if "2d" in case:
        want_scales = want_scales[::16]  # one per 16x16 tile
    np.testing.assert_array_equal(qt.scale_codes, want_scales)
    np.testing.assert_array_equal(_bits(qt.dequantize()), _bits(GOLDEN[f"{key}/deq"]))
    np.testing.assert_array_equal(_bits(fpsim.fake_quantize(x, recipe, **kw)),
                                  _bits(GOLDEN[f"{key}/deq"]))
    s, c, v, amax = te.nvfp4_quantize(x, tile=(16, 16) if "2d" in case else (1, 16),
                                      row_scaled=kw.get("row_scaled", False),
                                      error=kw.get("error"), e4m3_max=kw.get("e4m3_max", 448))
    np.testing.assert_array_equal(amax, GOLDEN[f"{key}/amax"].ravel())


def test_rht_recipe_is_te_on_exactly_summed_data():
    """TE's columnwise RHT path on x is the rht recipe on x.T.  The data's RHT sums are
    exact in float32 (multiples of 2**-6 below 2**10), so summation order cannot matter."""
    x = GOLDEN["x/grid"]
    exact = x.T.astype(np.float64).reshape(64, 2, 16) @ (te.TE_SIGNS[:, None]
                                                         * _sylvester16() / 4)
    assert np.array_equal(exact.astype(np.float32), exact)  # exact in float32: any order
    np.testing.assert_array_equal(te.rht16(x.T.copy()), exact.reshape(64, 32))
    qt = fpsim.quantize_tensor(x.T.copy(), "nvfp4_te_rht")
    np.testing.assert_array_equal(np.asarray(qt.codes, np.uint8), GOLDEN["grid/rht/codes"])
    np.testing.assert_array_equal(qt.scale_codes, GOLDEN["grid/rht/scale"])
    np.testing.assert_array_equal(_bits(qt.dequantize()), _bits(GOLDEN["grid/rht/deq"]))


def _sylvester16():
    h = np.ones((1, 1))
    while h.shape[0] < 16:
        h = np.block([[h, h], [h, -h]])
    return h


def test_rht_is_orthogonal_and_te_signed():
    """The transform matrix diag(signs) @ H16 / 4 is orthogonal: norms are kept and the
    transform of a basis vector is the signed first row of H16 / 4."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 32)).astype(np.float32)
    y = te.rht16(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-6)
    e0 = np.zeros((1, 16), np.float32)
    e0[0, 3] = 1.0
    np.testing.assert_array_equal(te.rht16(e0)[0], (te.TE_SIGNS[3] * _sylvester16()[3] / 4))


def test_2d_tiles_quantize_a_weight_and_its_transpose_alike():
    """TE's reason for 16x16 weight tiles: the transpose quantizes to the transpose."""
    w = np.random.default_rng(4).standard_normal((48, 64)).astype(np.float32)
    for recipe in ("nvfp4_te_2d", "nvfp4_4over6_2d"):
        a = fpsim.fake_quantize(w, recipe)
        np.testing.assert_array_equal(fpsim.fake_quantize(w.T.copy(), recipe), a.T)
    one_d = fpsim.fake_quantize(w, "nvfp4_te")
    assert not np.array_equal(fpsim.fake_quantize(w.T.copy(), "nvfp4_te"), one_d.T)


def test_4over6_never_loses_to_plain_nvfp4_on_its_own_error():
    """Per block, 4-over-6 keeps the candidate with the smaller error (ties: map-to-6, which
    is plain NVFP4 under the same global scale), so its total MAE is at most plain NVFP4's."""
    x = np.random.default_rng(5).standard_t(3, (64, 256)).astype(np.float32)
    plain = fpsim.fake_quantize(x, "nvfp4_te")
    four = fpsim.fake_quantize(x, "nvfp4_4over6")
    assert np.abs(four - x).sum() <= np.abs(plain - x).sum()
    assert not np.array_equal(four, plain)


def test_a_partial_block_is_padded_with_zeros():
    x = np.random.default_rng(6).standard_normal((3, 40)).astype(np.float32)
    padded = np.concatenate([x, np.zeros((3, 8), np.float32)], axis=1)
    for recipe in ("nvfp4_te", "nvfp4_4over6"):
        np.testing.assert_array_equal(fpsim.fake_quantize(x, recipe),
                                      fpsim.fake_quantize(padded, recipe)[:, :40])


def test_axis_moves_the_blocks():
    x = np.random.default_rng(7).standard_normal((32, 5)).astype(np.float32)
    np.testing.assert_array_equal(fpsim.fake_quantize(x, "nvfp4_te", axis=0),
                                  fpsim.fake_quantize(x.T.copy(), "nvfp4_te").T)


def test_bad_input_and_options_give_clear_errors():
    x = np.ones((16, 16), np.float32)
    x[1, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        fpsim.fake_quantize(x, "nvfp4_te")
    with pytest.raises(ValueError, match="2-D array"):
        fpsim.fake_quantize(np.ones((2, 16, 16), np.float32), "nvfp4_te_2d")
    with pytest.raises(ValueError, match="e4m3_max=256 is 4-over-6's option"):
        resolve_spec("nvfp4_te", e4m3_max=256)
    with pytest.raises(ValueError, match="e4m3_max must be 448 or 256"):
        resolve_spec("nvfp4_4over6", e4m3_max=300)
    with pytest.raises(ValueError, match="error must be one of"):
        resolve_spec("nvfp4_4over6", error="max")
    with pytest.raises(ValueError, match="apply only to Transformer Engine"):
        resolve_spec("nvfp4", row_scaled=True)
    with pytest.raises(ValueError, match="1x16 blocks for row_scaled"):
        resolve_spec("nvfp4_te_2d", row_scaled=True)
    with pytest.raises(ValueError, match="stack='te'"):
        QuantSpec(format="int8", granularity="block", stack="te")


def test_huge_and_tiny_tensors_follow_te():
    """Documented: TE's dequantization multiplies the block scale by the amax first, so an
    amax above FLT_MAX / 448 overflows it to inf (TE's own result); a tensor whose amax is
    below E4M3's reach gets block scales 0 and values 0."""
    big = np.array([3e38, 1.0] * 8, np.float32)
    assert np.isinf(fpsim.fake_quantize(big, "nvfp4_te")[0])
    assert np.isfinite(fpsim.fake_quantize(big / 1e3, "nvfp4_te")).all()
    tiny = np.full(16, 1e-45, np.float32)
    qt = fpsim.quantize_tensor(tiny, "nvfp4_te")
    assert qt.scale_codes.tolist() == [0]
    np.testing.assert_array_equal(qt.dequantize(), 0.0)


# ---- the NVFP4 window (issue reproduction 2): properties of TE's arithmetic ----------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(ratio=st.floats(1.0, 28672.0 * (1 - 2 ** -4)), seed=st.integers(0, 2 ** 32 - 1))
def test_block_scales_stay_normal_while_the_ratio_is_below_28672(ratio, seed):
    """With the tensor amax A mapped to 448 * 6, a block whose max is b gets the E4M3 scale
    448 * b / A, a normal E4M3 number (>= 2**-6) as long as A / b <= 448 / 2**-6 = 28672
    (less a rounding margin): the window in which NVFP4's two-level scale keeps every
    block's scale precision."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 16)).astype(np.float32)
    x[0] *= np.float32(1.0) / np.abs(x[0]).max()  # block max 1
    x[1] *= np.float32(ratio) / np.abs(x[1]).max()  # block max ratio: the tensor amax
    qt = fpsim.quantize_tensor(x, "nvfp4_te")
    assert (qt.scale_codes[0, 0] >> 3) != 0  # a normal E4M3 exponent field


def test_block_scales_go_subnormal_beyond_28672():
    x = np.ones((2, 16), np.float32)
    x[1] *= np.float32(28672 * 4)
    qt = fpsim.quantize_tensor(x, "nvfp4_te")
    assert (qt.scale_codes[0, 0] >> 3) == 0 and qt.scale_codes[0, 0] != 0


@settings(max_examples=200, deadline=None)
@given(frac=st.floats(0.0, 1.0), seed=st.integers(0, 2 ** 32 - 1))
def test_elements_below_a_24th_of_the_block_max_flush_to_zero(frac, seed):
    """The block max maps to 6 (within the E4M3 scale's rounding, 2**-4), the smallest
    non-zero E2M1 value is 0.5, so |x| below about max / 24 rounds to zero and above it
    does not."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, 16).astype(np.float32)
    x[0] = 1.0  # the block max
    x[1] = np.float32(frac / 12)  # 0 .. max / 12
    x = np.concatenate([x, np.full(16, 0.5, np.float32)])  # a second block: amax stays 1
    v = fpsim.fake_quantize(x, "nvfp4_te")
    if x[1] < (1 - 2 ** -4) / 24:
        assert v[1] == 0
    elif x[1] > (1 + 2 ** -4) / 24:
        assert v[1] != 0


# ---- stochastic rounding (TE's option for gradients) ----------------------------------------
def test_stochastic_rounding_is_unbiased_binomial_bound():
    """Each element rounds up with probability (v - lo) / (hi - lo) of its scaled value v
    between its two E2M1 neighbours: over 4000 draws every element's count of ups lies within
    5 standard deviations of that binomial mean (a false failure: < 1e-4), and the scales do
    not depend on the draw."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 32)).astype(np.float32)
    s_rn, _, _, amax = te.nvfp4_quantize(x)
    g = np.float32(2688) / amax[0]
    g_dec = np.float32(1) / g
    s = fpsim.decode(s_rn, "float8_e4m3fn", dtype=np.float32)
    enc = np.float32(1) / (np.repeat(s, 16, axis=1) * g_dec)
    v = np.clip(x * enc, -6, 6).astype(np.float64)  # TE's scaled values
    grid = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6])
    mag = np.abs(v)
    hi_i = np.searchsorted(grid, mag, side="left").clip(1, 7)
    lo, hi = grid[hi_i - 1], grid[hi_i]
    p = (mag - lo) / (hi - lo)
    n = 4000
    ups = np.zeros(x.shape)
    for seed in range(n):
        sc, codes, _, _ = te.nvfp4_quantize(x, rounding="stochastic", rng=seed)
        assert np.array_equal(sc, s_rn)
        q = np.abs(fpsim.decode(codes, "float4_e2m1fn", dtype=np.float64))
        ups += q == hi
        assert np.all((q == hi) | (q == lo))
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(ups / n - p) <= 5 * sigma + 1e-12)
    assert (p > 0.05).sum() > 20  # the test sees real probabilities


def test_stochastic_rounding_options():
    x = np.random.default_rng(12).standard_normal((2, 32)).astype(np.float32)
    a = fpsim.fake_quantize(x, "nvfp4_te", rounding="stochastic", rng=1)
    np.testing.assert_array_equal(a, fpsim.fake_quantize(x, "nvfp4_te", rounding="stochastic",
                                                         rng=1))
    assert not np.array_equal(a, fpsim.fake_quantize(x, "nvfp4_te", rounding="stochastic",
                                                     rng=2))
    with pytest.raises(ValueError, match="4-over-6"):
        resolve_spec("nvfp4_4over6", rounding="stochastic")
    with pytest.raises(ValueError, match="nearest_even"):
        resolve_spec("nvfp4_te", rounding="toward_zero")
