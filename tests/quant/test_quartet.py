"""Quartet II's unbiased NVFP4 quantizers (fpsim.quant.quartet): nvfp4_quartet2_sr, nvfp4_ms_eden.

Unbiasedness is tested exactly where it is computable (each random choice is between two
neighbours with a probability the test derives itself, so E[x_hat] is a formula) and by
binomial / normal confidence bounds over many draws where it is not."""

import numpy as np
import pytest

import fpsim
from fpsim.quant import quartet, te
from fpsim.quant.spec import resolve_spec

E2M1_GRID = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6])
E4M3_POS = fpsim.decode(np.arange(0x7F, dtype=np.uint8), "float8_e4m3fn", dtype=np.float64)
F32 = np.float32


def neighbours(mag, grid):
    """(lo, hi, p_up) of each magnitude between consecutive grid points (p = 0 on the grid)."""
    i = np.searchsorted(grid, mag, side="right").clip(1, len(grid) - 1)
    lo, hi = grid[i - 1], grid[i]
    return lo, hi, (mag - lo) / (hi - lo)


def sr_data(seed=3, rows=64):
    """Blocks over 10 binades, and blocks whose ideal E4M3 scale sits just below a rounding
    midpoint (1 + 1/16) 2^e, where rounding to nearest moves it down by the full 16/17."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 64)) * 2.0 ** rng.integers(-5, 5, (rows, 4)).repeat(16, 1)
    a = 4 * np.abs(x).max()
    x[0, 63] = a  # the tensor's amax A
    for r in range(0, rows, 4):  # block 0 of every 4th row: ideal scale (1 + 1/16) 2^e - tiny
        e = (r // 4) % 8
        b = x[r, :16] / np.abs(x[r, :16]).max()
        x[r, :16] = b * (a / 448 * (1 + 1 / 16) * 2.0 ** e * (1 - 1e-6))
    return x.astype(F32)


def sr_parts(x):
    """(scaled values x_s, per-element factor fl32(s * s_dec)) of nvfp4_quartet2_sr, from the
    returned scale codes and the documented tensor scale."""
    sc, _, _, s_dec, _ = quartet.quartet_quantize(x, rng=0)
    a = np.abs(x).max()
    assert s_dec == F32(F32(a / F32(448)) / quartet.SR_VAL_MAX)
    s = fpsim.decode(sc, "float8_e4m3fn", dtype=F32)
    factor = np.repeat((s * s_dec).astype(F32), 16, axis=1)
    return (x / factor).astype(F32), factor, s


def test_sr_never_clips_and_its_expectation_is_x():
    """E[x_hat] = sign (lo + p (hi - lo)) * factor = x_s * factor, which is x up to the one
    float32 rounding of x / factor; that needs |x_s| <= 6, which the 16/17 guarantees for
    normal E4M3 scales (the data hit the worst case 16/17 exactly)."""
    x = sr_data()
    xs, factor, s = sr_parts(x)
    assert (s >= 2.0 ** -6).all()
    assert np.abs(xs).max() <= 6
    ratio = np.abs(xs).max(axis=1)  # rows whose block 0 hit the worst rounding
    assert ratio.max() > 5.999  # the bound is reached, not just respected
    lo, hi, p = neighbours(np.abs(xs).astype(np.float64), E2M1_GRID)
    expect = np.sign(xs) * (lo + p * (hi - lo)) * factor
    np.testing.assert_allclose(expect, x, rtol=2.0 ** -23, atol=0)
    # TE's stochastic rounding on the same data: the block max maps to 6, x * enc is clipped
    # to +-6 where the scale rounded down, so its exact expectation misses x by up to 1/17
    sc, _, _, amax = te.nvfp4_quantize(x)
    g = F32(2688) / amax[0]
    enc = F32(1) / (np.repeat(fpsim.decode(sc, "float8_e4m3fn", dtype=F32), 16, 1) / g)
    v = x * enc
    assert np.abs(v).max() > 6.3
    te_expect = np.clip(v, -6, 6) / enc
    assert np.abs(te_expect - x).max() > 0.05 * np.abs(x).max() * 2.0 ** -6


def test_sr_up_frequencies_within_binomial_bound():
    """4000 independent draws (4000 copies of the rows in one call: same scales, fresh bits per
    element): each element's count of ups lies within 5 binomial standard deviations of N p
    (a false failure: < 1e-4 over all elements), only the two neighbours occur, and the mean
    of x_hat lies within 5 exact standard deviations of x."""
    x = sr_data(rows=4)[:, :32]
    xs, factor, _ = sr_parts(x)
    lo, hi, p = neighbours(np.abs(xs).astype(np.float64), E2M1_GRID)
    n = 4000
    sc, codes, vals, _, _ = quartet.quartet_quantize(np.tile(x, (n, 1)), rng=7)
    assert (sc == sc[:4][np.arange(4 * n) % 4]).all()  # the scales do not depend on the draw
    q = np.abs(fpsim.decode(codes, "float4_e2m1fn", dtype=np.float64)).reshape(n, *x.shape)
    assert np.all((q == lo) | (q == hi))
    ups = (q == hi).sum(axis=0) - (lo == hi) * n
    sigma = np.sqrt(p * (1 - p) * n)
    assert np.all(np.abs(ups - n * p) <= 5 * sigma + 1e-9)
    assert (p > 0.05).sum() > 40
    mean = vals.reshape(n, *x.shape).astype(np.float64).mean(axis=0)
    sd = (hi - lo) * factor * np.sqrt(p * (1 - p))
    assert np.all(np.abs(mean - x) <= 5 * sd / np.sqrt(n) + 2.0 ** -23 * np.abs(x))


def eden_parts(x, signs):
    """MS-EDEN's deterministic parts for given signs: rotated y, s_dec, scales s, scaled x_s,
    nearest codes q and the corrected scales v = fl32(s * c)."""
    y = quartet.rotate(x, signs).astype(F32)
    a = np.abs(y).max()
    s_dec = F32(F32(a / F32(255.99)) / quartet.EDEN_VAL_MAX)
    yb = y.reshape(y.shape[0], -1, 16)
    ideal = (F32(1) * (np.abs(yb).max(-1) / quartet.EDEN_VAL_MAX).astype(F32) / s_dec).astype(F32)
    s = fpsim.quantize(ideal, "float8_e4m3fn", saturate=True)
    xs = (yb / (s * s_dec).astype(F32)[..., None]).astype(F32)
    q = fpsim.quantize(xs, "float4_e2m1fn", saturate=True).astype(np.float64)
    h = len(signs)
    xg, qg = xs.reshape(len(x), -1, h).astype(np.float64), q.reshape(len(x), -1, h)
    c = ((xg * xg).sum(-1) / (xg * qg).sum(-1)).astype(F32)
    v = (s * np.repeat(c, h // 16, axis=1)).astype(F32)
    return xs, q, s_dec, v


def test_ms_eden_scale_expectation_is_exact_given_the_rotation():
    """Given the rotation the only randomness is the E4M3 stochastic rounding of the
    corrected scale v = s * c: E[s'] = lo + p (hi - lo) = v exactly, the up counts over 4000
    draws lie within 5 binomial standard deviations, and EDEN's identity holds per rotation
    group: sum(x_s * c q) = sum(x_s^2) (the expectation's projection on x_s is exact)."""
    rng = np.random.default_rng(21)
    x = (rng.standard_normal((2, 128)) * np.exp(rng.standard_normal((2, 128)))).astype(F32)
    signs = rng.choice([-1.0, 1.0], 128)
    xs, q, s_dec, v = eden_parts(x, signs)
    lo, hi, p = neighbours(v.astype(np.float64), E4M3_POS)
    np.testing.assert_allclose(lo + p * (hi - lo), v, rtol=1e-15)
    assert (p > 0.05).sum() >= 4  # real probabilities, not scales on the grid
    xg = xs.reshape(2, -1).astype(np.float64)
    cfac = (xg * xg).sum(-1) / (xg * q.reshape(2, -1)).sum(-1)
    np.testing.assert_allclose((xg * cfac[:, None] * q.reshape(2, -1)).sum(-1),
                               (xg * xg).sum(-1), rtol=1e-12)
    n = 4000
    sc, codes, _, s_dec_got, _ = quartet.quartet_quantize(np.tile(x, (n, 1)), method="ms_eden",
                                                          rng=3, signs=signs)
    assert s_dec_got == s_dec
    got_q = fpsim.decode(codes, "float4_e2m1fn", dtype=np.float64).reshape(n, 2, 8, 16)
    assert (got_q == q[None]).all()  # the elements are deterministic (nearest)
    s_got = fpsim.decode(sc, "float8_e4m3fn", dtype=np.float64).reshape(n, 2, 8)
    assert np.all((s_got == lo) | (s_got == hi))
    ups = (s_got == hi).sum(axis=0)
    assert np.all(np.abs(ups - n * p) <= 5 * np.sqrt(n * p * (1 - p)) + 1e-9)


def test_ms_eden_mean_over_rotations_within_confidence_bound():
    """With fresh random signs per call (their re-rotation) and stochastic scales, the mean of
    1500 estimates lies within 5 sample standard errors of x for every element, and the mean
    squared z-score is within 5 of its standard deviations (sqrt(2/128)) of 1.  This is a
    bound, not exactness: MS-EDEN with a random Hadamard transform (not a uniformly random
    rotation) and 16-element scales inside a 128 group is unbiased only approximately; a
    residual bias of about 0.1% of |x| shows at ~20000 draws (mean z^2 ~ 1.8 there), which
    this test, at 1500 draws, is not built to see."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((1, 128)) * np.exp(rng.standard_normal((1, 128)))).astype(F32)
    g = np.random.default_rng(1)
    n = 1500
    est = np.stack([quartet.quartet_quantize(x, method="ms_eden", rng=g)[2][0]
                    for _ in range(n)]).astype(np.float64)
    z = (est.mean(0) - x[0]) / (est.std(0, ddof=1) / np.sqrt(n))
    assert np.abs(z).max() < 5
    assert abs((z ** 2).mean() - 1) < 5 * np.sqrt(2 / 128)


def test_recipes_run_and_are_seeded():
    x = np.random.default_rng(12).standard_normal((4, 256)).astype(F32)
    for name in ("nvfp4_quartet2_sr", "nvfp4_ms_eden"):
        a = fpsim.fake_quantize(x, name, rng=1)
        np.testing.assert_array_equal(a, fpsim.fake_quantize(x, name, rng=1))
        assert not np.array_equal(a, fpsim.fake_quantize(x, name, rng=2))
        np.testing.assert_array_equal(fpsim.fake_quantize(x, name),
                                      fpsim.fake_quantize(x, name, rng=0))  # None: seed 0
        np.testing.assert_array_equal(fpsim.quantize_tensor(x, name, rng=4).dequantize(),
                                      fpsim.fake_quantize(x, name, rng=4))
        # along axis 0 = the transpose's last axis
        np.testing.assert_array_equal(fpsim.fake_quantize(x.T, name, rng=3, axis=0),
                                      fpsim.fake_quantize(x, name, rng=3).T)
    sr = np.mean([(fpsim.fake_quantize(x, "nvfp4_quartet2_sr", rng=i) - x) ** 2
                  for i in range(20)])
    eden = np.mean([(fpsim.fake_quantize(x, "nvfp4_ms_eden", rng=i) - x) ** 2
                    for i in range(20)])
    assert eden < 0.6 * sr  # the paper: MS-EDEN's error is more than 2x lower than SR's


def test_ms_eden_rotation_size_follows_the_axis():
    x = np.random.default_rng(2).standard_normal((3, 96)).astype(F32)
    qt = fpsim.quantize_tensor(x, "nvfp4_ms_eden", rng=5)
    assert qt.signs.shape == (32,)  # 96 = 3 * 32
    with pytest.raises(ValueError, match="multiple of 16"):
        fpsim.fake_quantize(np.ones((2, 24), F32), "nvfp4_ms_eden")


@pytest.mark.parametrize("name, field, value, match", [
    ("nvfp4_quartet2_sr", "rounding", "nearest_even", "stochastic"),
    ("nvfp4_ms_eden", "hadamard", 8, ">= 16"),
    ("nvfp4_quartet2_sr", "block_size", 32, "blocks of 16"),
    ("nvfp4_quartet2_sr", "calibration", "percentile", "dynamic max"),
    ("nvfp4_quartet2_sr", "hadamard", "te", "stack='te'"),
])
def test_invalid_specs(name, field, value, match):
    with pytest.raises(ValueError, match=match):
        resolve_spec(name, **{field: value})


def test_nan_refused_and_empty():
    with pytest.raises(ValueError, match="NaN or Inf"):
        fpsim.fake_quantize(np.array([1.0, np.nan] * 8, F32), "nvfp4_quartet2_sr")
    assert fpsim.fake_quantize(np.zeros((0, 16), F32), "nvfp4_ms_eden").shape == (0, 16)
