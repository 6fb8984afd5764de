"""OCP MX and NVFP4 block formats: scale rules, gfloat agreement, properties, specials."""

import os

import gfloat
import numpy as np
import pytest
from gfloat.formats import (
    format_info_mxfp4_e2m1,
    format_info_mxfp6_e2m3,
    format_info_mxfp6_e3m2,
    format_info_mxfp8_e4m3,
    format_info_mxfp8_e5m2,
    format_info_mxint8,
)

import fpsim
from fpsim.quant import blocks

JIT_DISABLED = os.environ.get("NUMBA_DISABLE_JIT", "0") == "1"
MX = list(blocks.MX_ELEMENTS)
GFLOAT_MX = {
    "mxfp8_e4m3": format_info_mxfp8_e4m3,
    "mxfp8_e5m2": format_info_mxfp8_e5m2,
    "mxfp6_e2m3": format_info_mxfp6_e2m3,
    "mxfp6_e3m2": format_info_mxfp6_e3m2,
    "mxfp4_e2m1": format_info_mxfp4_e2m1,
    "mxint8": format_info_mxint8,
}


def _test_blocks(n_blocks, k=32, seed=0):
    rng = np.random.default_rng(seed)
    scales = 2.0 ** rng.integers(-30, 30, (n_blocks, 1))
    x = rng.standard_normal((n_blocks, k)) * scales
    x[0] = 0.0  # an all-zero block
    x[1, :] = 2.0**-140  # float32 subnormals
    x[2, 5] = 7.0  # one big element
    return x.astype(np.float32)


@pytest.mark.parametrize("name", MX)
def test_floor_rule_matches_gfloat(name):
    """The OCP rule (floor) against gfloat's quantize_block with compute_scale_amax."""
    x = _test_blocks(8 if JIT_DISABLED else 60)
    got, _ = blocks.mx_fake_quantize(x, blocks.MX_ELEMENTS[name], return_details=True)
    fi = GFLOAT_MX[name]
    for row, g in zip(x, got):
        want = gfloat.quantize_block(fi, row.astype(np.float64), gfloat.compute_scale_amax)
        np.testing.assert_array_equal(g.astype(np.float64), want)


def test_mxint8_element_reaches_minus_two():
    """mxint8's element is ocp_int8 (OCP MX v1.0: min -2, as gfloat); microxcaling's
    symmetric clamp is the element ocp_int8_symmetric."""
    row = np.array([-1.999, 1.0, 0.5, -0.25], np.float32)  # X = 1; -1.999 rounds to -2
    v, _ = blocks.mx_fake_quantize(row, blocks.MX_ELEMENTS["mxint8"], block_size=4, return_details=True)
    want = gfloat.quantize_block(format_info_mxint8, row.astype(np.float64),
                                 gfloat.compute_scale_amax)
    np.testing.assert_array_equal(v.astype(np.float64), want)
    assert v[0] == -2.0
    codes, _ = blocks.mx_encode(row, "ocp_int8", block_size=4)
    assert codes[0] == 0x80
    v, _ = blocks.mx_fake_quantize(row, "ocp_int8_symmetric", block_size=4, return_details=True)
    assert v[0] == -127 / 64


@pytest.mark.parametrize(
    "amax, rule, es",
    [
        # e4m3fn: emax_elem = 8 (448 = 1.75 * 2**8)
        (448.0, "floor", 0), (448.0, "ceil", 1), (448.0, "even", 1), (448.0, "rceil", 0),
        (449.0, "rceil", 1),  # 449 / 448 > 1 -> ceil(log2) = 1
        (384.0, "floor", 0), (384.0, "ceil", 1),  # 384 = 1.5 * 2**8
        (384.0, "even", 0),  # tie between 2**8 and 2**9: even exponent 8
        (768.0, "even", 2),  # 1.5 * 2**9: tie, odd exponent 9 -> 10
        (256.0, "ceil", 0),  # exact power of two: ceil(log2) = 8
        (2.0**-140, "floor", -127),  # clamped to the E8M0 range
        (3e38, "floor", 119),
        (0.0, "floor", 0),  # an all-zero block gets scale 1
    ],
)
def test_scale_rules_hand_derived(amax, rule, es):
    assert blocks.scale_exponent([amax], "e4m3fn", scale_rule=rule).tolist() == [es]


@pytest.mark.parametrize("rule", blocks.SCALE_RULES)
@pytest.mark.parametrize("name", MX)
def test_scale_rule_definitions(name, rule):
    """es matches each rule's formula on random amax values."""
    elem = fpsim.get_format(blocks.MX_ELEMENTS[name])
    amax = np.abs(np.random.default_rng(1).standard_normal(500) * 100).astype(np.float32) + 1e-3
    es = blocks.scale_exponent(amax, elem, scale_rule=rule)
    a = amax.astype(np.float64)
    emax = int(np.floor(np.log2(elem.max)))
    if rule == "floor":
        want = np.floor(np.log2(a)) - emax
    elif rule == "ceil":
        want = np.ceil(np.log2(a)) - emax
    elif rule == "rceil":
        want = np.ceil(np.log2(a / elem.max))
    else:
        e = np.floor(np.log2(a))
        m = a / 2.0**e
        want = e + ((m > 1.5) | ((m == 1.5) & (e % 2 == 1))) - emax
    np.testing.assert_array_equal(es, want.astype(np.int64))


@pytest.mark.parametrize("rule", blocks.SCALE_RULES)
@pytest.mark.parametrize("name", MX)
def test_elements_saturate_and_errors_bounded(name, rule):
    x = _test_blocks(8 if JIT_DISABLED else 40, seed=2)
    elem = fpsim.get_format(blocks.MX_ELEMENTS[name])
    codes, sc = blocks.mx_encode(x, elem, scale_rule=rule)
    vals = fpsim.decode(codes, elem, dtype=np.float64)
    assert (np.abs(vals) <= elem.max).all()
    scale = np.ldexp(1.0, sc.astype(np.int64) - 127)
    fq, _ = blocks.mx_fake_quantize(x, elem, scale_rule=rule, return_details=True)
    np.testing.assert_array_equal(fq, (vals * scale).astype(np.float32))
    # within range, the error is at most half a step of the element grid at x / X
    y = x / scale
    inrange = np.abs(y) <= elem.max
    grid = np.unique(np.abs(elem.values()[np.isfinite(elem.values())]))
    i = np.clip(np.searchsorted(grid, np.abs(y)), 1, grid.size - 1)
    step = grid[i] - grid[i - 1]
    err = np.abs(fq / scale - y)
    assert (err[inrange] <= step[inrange] / 2 + 1e-30).all()
    if rule == "rceil":
        assert inrange.all()  # rceil never clips


def test_axis_and_ragged_lengths():
    x = np.random.default_rng(3).standard_normal((37, 5)).astype(np.float32)
    a, sa = blocks.mx_fake_quantize(x, "e4m3fn", axis=0, block_size=8, return_details=True)
    b, sb = blocks.mx_fake_quantize(x.T, "e4m3fn", axis=-1, block_size=8, return_details=True)
    np.testing.assert_array_equal(a, b.T)
    np.testing.assert_array_equal(sa, sb.T)
    assert sa.shape == (5, 5)  # ceil(37 / 8) blocks along axis 0
    # padding never changes a block: the last (short) block equals a direct call
    c, _ = blocks.mx_fake_quantize(x[32:, 0], "e4m3fn", block_size=8, return_details=True)
    np.testing.assert_array_equal(a[32:, 0], c)


def test_special_blocks():
    x = np.ones((3, 32), np.float32)
    x[0, 3] = np.nan
    x[1, 7] = np.inf
    x[2] = 0.0
    codes, sc = blocks.mx_encode(x, "e4m3fn")
    # NaN and Inf never set a scale: amax 1 -> 2**(0 - 8) (floor rule), no NaN scale
    assert sc.ravel().tolist() == [127 - 8, 127 - 8, 127]
    v, _ = blocks.mx_fake_quantize(x, "e4m3fn", return_details=True)
    assert np.isnan(v[0, 3]) and np.isnan(v).sum() == 1  # NaN stays NaN, element-wise
    assert v[1, 7] == 448 * 2.0**-8  # Inf saturates to max_elem * X
    assert (np.delete(v[:2].ravel(), [3, 32 + 7]) == 1).all() and (v[2] == 0).all()
    assert fpsim.decode(codes[0, 3:4], "e4m3fn").tolist() != [1.0]


def test_stochastic_blocks_reproducible():
    x = np.random.default_rng(4).standard_normal((4, 64)).astype(np.float32)
    a, _ = blocks.mx_fake_quantize(x, "e2m1fn", rounding="stochastic", rng=3, return_details=True)
    b, _ = blocks.mx_fake_quantize(x, "e2m1fn", rounding="stochastic", rng=3, return_details=True)
    c, _ = blocks.mx_fake_quantize(x, "e2m1fn", rounding="stochastic", rng=4, return_details=True)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_nvfp4_hand_case():
    # amax 6 -> tensor scale s_t = 6 / 2688; block scale 6 / 6 / s_t = 448 (exact in
    # E4M3), elements x / (448 * s_t) = x: E2M1 values round trip exactly.
    x = np.array([0.5, -1.0, 1.5, 2.0, 3.0, -4.0, 6.0, 0.0] * 2, np.float32)
    v, codes, bcodes, s_t = blocks.nvfp4_encode(x)
    assert s_t == np.float32(6 / 2688)
    assert fpsim.decode(bcodes, "e4m3fn").tolist() == [448.0]
    np.testing.assert_allclose(v, x, rtol=1e-6)


def test_nvfp4_zero_and_nan():
    v, _, b, s_t = blocks.nvfp4_encode(np.zeros(32, np.float32))
    assert (v == 0).all() and s_t == 1.0 and np.isfinite(fpsim.decode(b, "e4m3fn")).all()
    x = np.ones(48, np.float32)
    x[2] = np.nan
    x[20] = np.inf
    v, _, b, s_t = blocks.nvfp4_encode(x)
    # NaN and Inf never set a scale; NaN stays NaN, Inf saturates to 6 * s_b * s_t
    assert np.isnan(v[2]) and np.isnan(v).sum() == 1
    assert v[20] == np.float32(6 * np.float32(448 * s_t))
    assert (np.delete(v, [2, 20]) == 1).all()
    assert b.tolist() == [0x7E, 0x7E, 0x7E] and s_t == np.float32(1 / 2688)


@pytest.mark.parametrize(
    "call, exc",
    [
        (lambda: blocks.mx_encode(np.ones(4), "e4m3fn", scale_rule="round"), ValueError),
        (lambda: blocks.mx_encode(np.ones(4), "e4m3fn", axis=1), ValueError),
        (lambda: blocks.mx_encode(np.ones(4), "e4m3fn", block_size=0), ValueError),
        (lambda: blocks.mx_encode(np.ones(4), "e4m3fn", block_size=2.5), TypeError),
        (lambda: blocks.mx_encode(np.arange(4), "e4m3fn"), TypeError),
        (lambda: blocks.mx_encode(np.float32(1), "e4m3fn"), ValueError),
        (lambda: blocks.mx_encode(np.ones(4), "e4m3fnx"), ValueError),
    ],
)
def test_invalid_arguments(call, exc):
    with pytest.raises(exc):
        call()


@pytest.mark.parametrize("name", ["int8", "int4", "uint4", "ocp_int8"])
def test_int_elements_with_power_of_two_scales(name):
    """Plain integer elements hold their values, bit-pattern formats their bits."""
    x = np.random.default_rng(6).standard_normal((3, 64)).astype(np.float32)
    fmt = fpsim.get_format(name)
    codes, sc = blocks.mx_encode(x, fmt, scale_rule="rceil")
    assert codes.dtype == fmt.code_dtype
    v, _ = blocks.mx_fake_quantize(x, fmt, scale_rule="rceil", return_details=True)
    scale = np.repeat(np.ldexp(1.0, sc.astype(np.int64) - 127), 32, axis=-1)
    np.testing.assert_array_equal(v, (fpsim.decode(codes, fmt, dtype=np.float64) * scale)
                                  .astype(np.float32))
