"""fpsim.strategies: what each strategy draws (checked against the codec), its argument
checks, its docstring examples, and the documented example of docs/strategies.md: Hypothesis
finding the bug in a user's FP8 encoder."""

import doctest
import importlib.util
import math
import os
import pathlib

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import fpsim
import fpsim.strategies as fst
from fpsim import FloatFormat, IntFormat

JIT_DISABLED = os.environ.get("NUMBA_DISABLE_JIT", "0") == "1"
ROOT = pathlib.Path(__file__).resolve().parents[1]
# custom formats of up to 12 bits keep the per-format tables cheap
any_format = fst.formats(include_custom=True, max_bits=12) | fst.formats()
# float16/float32 inputs go through tables that take ~1 s each to build as plain Python
input_dtypes = [np.float64] if JIT_DISABLED else [np.float16, np.float32, np.float64]


def same_float(a, b) -> bool:
    """Equal as floats, NaN to NaN, and with the same sign bit (-0.0, -NaN)."""
    a, b = float(a), float(b)
    return (a == b or (math.isnan(a) and math.isnan(b))) and (
        math.copysign(1, a) == math.copysign(1, b))


def ulp_above_max(fmt) -> float:
    """Spacing between max and the virtual next value (docs/numerics.md)."""
    if isinstance(fmt, IntFormat):
        return math.ldexp(1.0, fmt.scale_exp)
    return math.ldexp(1.0, max(fmt.emax, fmt.emin) - fmt.mantissa_bits)


def lowest(fmt) -> float:
    return fmt.min if isinstance(fmt, IntFormat) else (-fmt.max if fmt.signed else 0.0)


def finite_values(fmt) -> np.ndarray:
    v = fmt.values()
    v = v[np.isfinite(v)]
    return v[(v >= lowest(fmt)) & (v <= fmt.max)]


def all_midpoints(fmt) -> set:
    """Every tie, computed here from the format's values and the virtual value(s)."""
    u = ulp_above_max(fmt)
    grid = np.unique(np.concatenate([finite_values(fmt), [fmt.max + u]]
                                    + ([[lowest(fmt) - u]] if fmt.signed else [])))
    return set(((grid[:-1] + grid[1:]) / 2).tolist())


# ---- what the strategies draw ------------------------------------------------------
@given(st.data())
def test_values_round_trip_through_encode_and_decode(data):
    fmt = data.draw(any_format, label="fmt")
    x = data.draw(fst.values(fmt, allow_nan=None, allow_infinity=None,
                             allow_negative_zero=None), label="x")
    assert type(x) is float
    code = fpsim.encode(x, fmt)
    assert same_float(fpsim.decode(code, fmt, dtype=np.float64), x)
    dtype = data.draw(st.sampled_from(input_dtypes), label="dtype")
    with np.errstate(over="ignore", under="ignore"):
        xd = np.dtype(dtype).type(x)
    if same_float(xd, x):  # exact in the narrower dtype too: the same code
        assert fpsim.encode(xd, fmt) == code


@given(st.data())
def test_values_flags_are_respected(data):
    fmt = data.draw(any_format, label="fmt")
    flags = {}
    for name, has in [("allow_nan", isinstance(fmt, FloatFormat) and fmt.has_nan),
                      ("allow_infinity", isinstance(fmt, FloatFormat) and fmt.has_inf),
                      ("allow_subnormal", isinstance(fmt, FloatFormat)
                       and fmt.smallest_subnormal < fmt.smallest_normal),
                      ("allow_negative_zero", isinstance(fmt, FloatFormat)
                       and fmt.has_negative_zero)]:
        flags[name] = data.draw(st.sampled_from([None, False] + [True] * has), label=name)
    x = data.draw(fst.values(fmt, **flags), label="x")
    if flags["allow_nan"] is False:
        assert not math.isnan(x)
    if flags["allow_infinity"] is False:
        assert not math.isinf(x)
    if (flags["allow_subnormal"] is False and isinstance(fmt, FloatFormat)
            and x != 0 and math.isfinite(x)):
        assert abs(x) >= fmt.smallest_normal
    if flags["allow_negative_zero"] is False and x == 0:
        assert math.copysign(1, x) == 1


@given(st.data())
def test_codes_decode_to_the_format_values(data):
    fmt = data.draw(any_format, label="fmt")
    allow_nan = data.draw(st.sampled_from([None, False]), label="allow_nan")
    allow_infinity = data.draw(st.sampled_from([None, False]), label="allow_infinity")
    code = data.draw(fst.codes(fmt, allow_nan=allow_nan, allow_infinity=allow_infinity),
                     label="code")
    assert type(code) is int
    v = float(fpsim.decode(code, fmt, dtype=np.float64))
    if isinstance(fmt, IntFormat) and not fmt.bit_patterns:
        assert v == math.ldexp(code, fmt.scale_exp)
    else:
        assert same_float(abs(v), abs(fmt.values()[code]))
    if allow_nan is False:
        assert not math.isnan(v)
    if allow_infinity is False:
        assert not math.isinf(v)


@given(st.data())
def test_midpoints_are_ties_and_round_to_the_even_code(data):
    fmt = data.draw(any_format, label="fmt")
    m = data.draw(fst.midpoints(fmt), label="m")
    grid = finite_values(fmt)
    lo = float(grid[grid < m].max()) if (grid < m).any() else None
    hi = float(grid[grid > m].min()) if (grid > m).any() else None
    # exactly halfway between two neighbours, one of which may be the value beyond max
    if hi is None or lo is None:
        assert abs(m) == abs(lo if hi is None else hi) + ulp_above_max(fmt) / 2
        edge = lo if hi is None else hi
        lo, hi = sorted([edge, 2 * m - edge])
    assert m - lo == hi - m and not ((grid > lo) & (grid < hi)).any()
    near, far = sorted([lo, hi], key=abs)

    def code(v):  # the code of a grid value; the virtual one beyond max is max's + 1
        return int(fpsim.encode(v, fmt)) if lowest(fmt) <= v <= fmt.max else code(near) + 1

    q = float(fpsim.quantize(m, fmt, rounding="nearest_even", saturate=True))
    if isinstance(fmt, FloatFormat) and fmt.ties == "away":
        expect = far
    elif code(lo) % 2 == code(hi) % 2:  # 0 and the smallest normal without subnormals:
        expect = near  # both codes even, 0 wins (see fpsim/reference.py)
    else:
        expect = lo if code(lo) % 2 == 0 else hi
    assert q == min(max(expect, lowest(fmt)), fmt.max)
    q = float(fpsim.quantize(m, fmt, rounding="nearest_away", saturate=True))
    assert q == min(max(far, lowest(fmt)), fmt.max)
    if isinstance(fmt, FloatFormat) and abs(expect) > fmt.max:  # a tie that overflows
        q = float(fpsim.quantize(m, fmt, rounding="nearest_even"))
        assert not math.isfinite(q) if (fmt.has_inf or fmt.has_nan) else abs(q) == fmt.max


@given(st.data())
def test_near_overflow_is_near_max_or_the_overflow_threshold(data):
    fmt = data.draw(fst.formats(), label="fmt")
    dtype = np.dtype(data.draw(st.sampled_from([np.float32, np.float64]), label="dtype"))
    k = data.draw(st.integers(0, 6), label="max_ulps")
    x = data.draw(fst.near_overflow(fmt, dtype=dtype, max_ulps=k), label="x")
    assert type(x) is dtype.type and np.isfinite(x)
    u = ulp_above_max(fmt)
    anchors = [fmt.max, fmt.max + u / 2, fmt.max + u]
    if fmt.signed:
        anchors += [lowest(fmt), lowest(fmt) - u / 2, lowest(fmt) - u]
    top = float(np.finfo(dtype).max)  # anchors beyond dtype's range are skipped
    assert any(abs(float(x) - a) <= k * float(np.spacing(dtype.type(abs(a))))
               for a in anchors if abs(a) <= top)


@given(st.data())
def test_inputs_for_gives_scalars_of_the_dtype_that_encode_accepts(data):
    fmt = data.draw(fst.formats(), label="fmt")
    dtype = np.dtype(data.draw(st.sampled_from(input_dtypes), label="dtype"))
    x = data.draw(fst.inputs_for(fmt, dtype=dtype), label="x")
    assert type(x) is dtype.type
    fpsim.decode(fpsim.encode(x, fmt), fmt)


@pytest.mark.parametrize("fmt", ["e4m3fn", "e8m0fnu", "int8"])
def test_inputs_for_reaches_every_kind_of_boundary(fmt):
    fmt = fpsim.get_format(fmt)
    s = settings(max_examples=2000, database=None)
    mids = all_midpoints(fmt)
    pred = {
        "a tie": lambda x: float(x) in mids,
        "beside a tie": lambda x: any(float(np.nextafter(x, d)) in mids for d in (-1e9, 1e9))
        and float(x) not in mids,
        "beyond max": lambda x: np.isfinite(x) and abs(float(x)) > fmt.max,
        "NaN": np.isnan,
    }
    for p in pred.values():
        find(fst.inputs_for(fmt), p, settings=s)  # raises NoSuchExample if never drawn


@given(fmt=fst.formats(), shape=st.one_of(st.integers(0, 4), st.tuples(st.integers(0, 3),
                                                                        st.integers(0, 3))),
       dtype=st.sampled_from([np.float16, np.float32, np.float64]), data=st.data())
def test_arrays_have_the_requested_shape_and_dtype(fmt, shape, dtype, data):
    a = data.draw(fst.arrays(fmt, shape, dtype=dtype), label="a")
    assert a.dtype == dtype
    assert a.shape == ((shape,) if isinstance(shape, int) else shape)
    b = data.draw(fst.arrays(fmt, st.just(shape), elements=fst.values(fmt)), label="b")
    assert b.dtype == np.float32 and np.isin(b, finite_values(fmt)).all()


@given(st.data())
def test_formats_respect_kind_and_max_bits(data):
    kind = data.draw(st.sampled_from([None, "float", "int"]), label="kind")
    max_bits = data.draw(st.integers(4, 16), label="max_bits")
    custom = data.draw(st.booleans(), label="include_custom")
    fmt = data.draw(fst.formats(kind=kind, max_bits=max_bits, include_custom=custom))
    assert isinstance(fmt, (FloatFormat, IntFormat)) and fmt.bits <= max_bits
    assert kind in (None, fmt.kind)
    if not custom:
        assert fpsim.get_format(fmt.name) is fmt


@given(r=fst.roundings(deterministic_only=True), any_r=fst.roundings())
def test_roundings(r, any_r):
    assert r in fpsim.ROUNDINGS and r != "stochastic" and any_r in fpsim.ROUNDINGS


# ---- argument checks ---------------------------------------------------------------
BAD_ARGUMENTS = [  # (strategy, kwargs, text the message must contain)
    (fst.formats, {"kind": "floats"}, "kind='floats'"),
    (fst.formats, {"max_bits": 0}, "max_bits=0"),
    (fst.formats, {"kind": "float", "max_bits": 1, "include_custom": True}, "at least 2 bits"),
    (fst.formats, {"max_bits": 17}, "max_bits=17"),
    (fst.formats, {"max_bits": 8.0}, "max_bits=8.0"),
    (fst.formats, {"max_bits": True}, "max_bits=True"),
    (fst.formats, {"include_custom": "yes"}, "include_custom='yes'"),
    (fst.formats, {"kind": "float", "max_bits": 3}, "include_custom=True"),
    (fst.codes, {"fmt": "e4m3fm"}, "did you mean 'e4m3fn'"),
    (fst.codes, {"fmt": 3}, "fmt=3"),
    (fst.codes, {"fmt": "e2m1fn", "allow_nan": True}, "allow_nan=False"),
    (fst.codes, {"fmt": "e4m3fn", "allow_infinity": True}, "allow_infinity=True"),
    (fst.codes, {"fmt": "e4m3fn", "allow_nan": "no"}, "allow_nan='no'"),
    (fst.values, {"fmt": "e2m1fn", "allow_nan": True}, "float4_e2m1fn has no NaN"),
    (fst.values, {"fmt": "e4m3fn", "allow_infinity": True}, "has no Inf"),
    (fst.values, {"fmt": "e8m0fnu", "allow_subnormal": True}, "has no subnormals"),
    (fst.values, {"fmt": "e4m3fnuz", "allow_negative_zero": True}, "has no -0"),
    (fst.values, {"fmt": "int8", "allow_nan": True}, "int8 has no NaN"),
    (fst.values, {"fmt": "e4m3fn", "allow_subnormal": 1}, "allow_subnormal=1"),
    (fst.midpoints, {"fmt": "float8"}, "unknown format"),
    (fst.near_overflow, {"fmt": "e4m3fn", "dtype": np.int32}, "dtype="),
    (fst.near_overflow, {"fmt": "e4m3fn", "max_ulps": -1}, "max_ulps=-1"),
    (fst.near_overflow, {"fmt": "bfloat16", "dtype": np.float16}, "use dtype=float32"),
    (fst.inputs_for, {"fmt": "e4m3fn", "dtype": np.complex64}, "float16, float32 or float64"),
    (fst.inputs_for, {"fmt": None}, "fmt=None"),
    (fst.arrays, {"fmt": "e4m3fn", "shape": -1}, "shape=-1"),
    (fst.arrays, {"fmt": "e4m3fn", "shape": (2.0,)}, "shape=(2.0,)"),
    (fst.arrays, {"fmt": "e4m3fn", "shape": 3, "elements": [1.0]}, "elements=[1.0]"),
    (fst.arrays, {"fmt": "e4m3fn", "shape": 3, "dtype": "int8"}, "dtype='int8'"),
    (fst.roundings, {"deterministic_only": None}, "deterministic_only=None"),
]


@pytest.mark.parametrize("strategy, kwargs, message", BAD_ARGUMENTS,
                         ids=[f"{s.__name__}-{k}" for s, k, _ in BAD_ARGUMENTS])
def test_bad_arguments_raise_at_once(strategy, kwargs, message):
    with pytest.raises(InvalidArgument) as e:
        strategy(**kwargs)  # eagerly: no draw needed
    assert message in str(e.value)


def test_docstring_examples():
    result = doctest.testmod(fst, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ---- the documented example (docs/strategies.md) -----------------------------------
def load_example():
    path = ROOT / "analysis" / "example_buggy_kernel.py"
    spec = importlib.util.spec_from_file_location("example_buggy_kernel", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hypothesis_finds_the_bug_in_the_documented_fp8_encoder():
    ex = load_example()
    x = ex.counterexample()  # shrunk: in practice 2**-10, half the smallest subnormal
    assert type(x) is np.float32
    assert ex.my_encode_e4m3fn(x) != fpsim.encode(x, "e4m3fn")
    assert abs(float(x)) in all_midpoints(fpsim.get_format("e4m3fn"))  # a tie
    with pytest.raises(AssertionError):
        ex.test_my_encoder_matches_fpsim()
    # away from ties the encoder is right: it is the tie-breaking Hypothesis caught
    mids = np.array(sorted(all_midpoints(fpsim.get_format("e4m3fn"))), np.float32)
    x = np.concatenate([mids, np.nextafter(mids, np.float32(np.inf)),
                        np.nextafter(mids, np.float32(-np.inf))])
    wrong = ex.my_encode_e4m3fn(x) != fpsim.encode(x, "e4m3fn")
    assert wrong[: mids.size].sum() == 128 and not wrong[mids.size:].any()  # 128 of 254 ties


@given(spec=fst.quant_specs(), seed=st.integers(0, 2**16))
@settings(max_examples=40)
def test_quant_specs_quantize_within_range(spec, seed):
    x = np.random.default_rng(seed).standard_normal((4, 40)).astype(np.float32)
    qt = fpsim.quantize_tensor(x, spec)
    elems = fpsim.decode(qt.codes, spec.format, dtype=np.float64)
    assert np.abs(elems).max() <= max(abs(spec.format.max), abs(getattr(spec.format, "min", 0)))
    np.testing.assert_array_equal(qt.dequantize(), fpsim.fake_quantize(x, spec))


def test_quant_specs_validation():
    with pytest.raises(InvalidArgument, match="granularities"):
        fst.quant_specs(granularities=("row",))
    with pytest.raises(InvalidArgument, match="block_sizes"):
        fst.quant_specs(block_sizes=(0,))


# ---- the narrowest formats (issue 9: int1, uint1, int2, uint2, float8_e5m3fnu) ---------
def test_formats_draw_one_bit_integers():
    """max_bits=1 draws int1 / uint1 and one-bit custom integers."""
    for include_custom in (False, True):
        drawn = find(fst.formats(max_bits=1, include_custom=include_custom),
                     lambda f: f.signed)
        assert isinstance(drawn, IntFormat) and drawn.bits == 1
    assert find(fst.formats(kind="int", max_bits=1), lambda f: not f.signed).name == "uint1"


@pytest.mark.parametrize("name", ["int1", "uint1", "int2", "uint2", "float8_e5m3fnu",
                                  "ocp_int8", "ocp_int8_symmetric"])
def test_new_formats_strategies_agree_with_the_codec(name):
    """Every value a strategy draws for the new formats is a value of the format, and
    encodes to a code that decodes back to it."""
    fmt = fpsim.get_format(name)
    values = []

    @settings(max_examples=60, deadline=None, database=None)
    @given(fst.values(name))
    def check(v):
        values.append(v)
        assert fpsim.quantize(np.float64(v), fmt) == v
    check()
    assert min(values) >= lowest(fmt) and max(values) <= fmt.max
    codes = []

    @settings(max_examples=60, deadline=None, database=None)
    @given(fst.codes(name))
    def check_codes(c):
        codes.append(c)
        fpsim.decode(np.array([c]), fmt)  # accepted
    check_codes()
    if name == "float8_e5m3fnu":
        assert all(0 <= c <= 0xFF for c in codes)
