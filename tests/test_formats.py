"""Format specs, the registry and finfo, against ml_dtypes and numpy's own identities."""

import math

import ml_dtypes
import numpy as np
import pytest

import fpsim
from fpsim.formats import FloatFormat, IntFormat

FLOAT_FORMATS = fpsim.list_formats("float")
ML_FORMATS = [n for n in FLOAT_FORMATS if hasattr(ml_dtypes, n)]
FINFO_FIELDS = (
    "bits nexp nmant max min eps epsneg smallest_normal smallest_subnormal tiny maxexp "
    "minexp machep negep iexp precision resolution"
).split()


def test_registry_holds_every_numerics_format():
    names = set(fpsim.list_formats())
    ml = {
        "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
        "float8_e4m3b11fnuz", "float8_e3m4", "float8_e4m3", "float8_e8m0fnu",
        "float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn", "float8_e5m3fnu",
    }
    assert ml <= names
    assert {"float16", "bfloat16", "int8", "uint8", "int4", "uint4", "int2", "uint2", "int1",
            "uint1", "ocp_int8", "ocp_int8_symmetric"} <= names
    for p in range(1, 8):
        for s in "su":
            for d in "ef":
                assert f"p3109_k8p{p}{s}{d}" in names
    # the small ones plus bfloat16 (float16 is numpy's); ml_dtypes 0.7 added float8_e5m3fnu
    assert len(ML_FORMATS) == (13 if hasattr(ml_dtypes, "float8_e5m3fnu") else 12)


def test_every_ml_dtypes_type_is_registered():
    """Each float and integer type of the installed ml_dtypes is a registered format."""
    types = [n for n in dir(ml_dtypes) if n.startswith(("float", "bfloat", "int", "uint"))
             and isinstance(getattr(ml_dtypes, n), type)]
    assert "float8_e4m3fn" in types and "int4" in types
    missing = [n for n in types if n not in fpsim.list_formats()]
    assert not missing, missing


@pytest.mark.parametrize("name", ML_FORMATS)
def test_values_match_ml_dtypes(name):
    fmt = fpsim.get_format(name)
    codes = np.arange(1 << fmt.bits, dtype=fmt.code_dtype)
    ref = codes.view(getattr(ml_dtypes, name) if fmt.bits in (8, 16) else np.uint8)
    if fmt.bits < 8:  # ml_dtypes stores sub-byte formats one per byte
        ref = codes.astype(np.uint8).view(getattr(ml_dtypes, name))
    np.testing.assert_array_equal(fmt.values(), ref.astype(np.float64))


@pytest.mark.parametrize("name", ML_FORMATS)
def test_finfo_matches_ml_dtypes(name):
    ours = fpsim.finfo(name)
    theirs = ml_dtypes.finfo(getattr(ml_dtypes, name))
    for field in FINFO_FIELDS:
        assert float(getattr(ours, field)) == float(getattr(theirs, field)), field


@pytest.mark.parametrize("name", FLOAT_FORMATS)
def test_finfo_identities(name):
    """numpy's documented finfo identities, derived from one spec for every format."""
    fi = fpsim.finfo(name)
    fmt = fpsim.get_format(name)
    vals = fmt.values()
    finite = vals[np.isfinite(vals)]
    assert fi.eps == 2.0**fi.machep
    assert fi.epsneg == 2.0**fi.negep
    assert fi.tiny == fi.smallest_normal
    assert fi.max == finite.max()
    assert fi.smallest_subnormal == finite[finite > 0].min()
    assert fi.maxexp == math.floor(math.log2(fi.max)) + 1
    assert fi.bits == fmt.bits and fi.nmant == fmt.mantissa_bits and fi.nexp == fmt.exponent_bits
    if fmt.bits > 8:  # numpy's definition; 8 bits and fewer follow ml_dtypes (1 and 0)
        assert fi.precision == (int(-math.log10(fi.eps)) if fi.eps < 1 else 0)
    else:
        assert fi.precision == (1 if fmt.bits == 8 else 0)
    if fmt.signed:
        assert fi.min == -fi.max


def test_finfo_float16_matches_numpy():
    ours, theirs = fpsim.finfo("float16"), np.finfo(np.float16)
    for field in FINFO_FIELDS:
        assert float(getattr(ours, field)) == float(getattr(theirs, field)), field


@pytest.mark.parametrize(
    "name, maxval, smallest_subnormal",
    [
        # NUMERICS.md format table
        ("float8_e4m3fn", 448, 2**-9),
        ("float8_e5m2", 57344, 2**-16),
        ("float8_e4m3fnuz", 240, 2**-10),
        ("float8_e5m2fnuz", 57344, 2**-17),
        ("float8_e4m3b11fnuz", 30, 2**-13),
        ("float8_e3m4", 15.5, 2**-6),
        ("float8_e4m3", 240, 2**-9),
        ("float8_e8m0fnu", 2.0**127, 2**-127),
        ("float8_e5m3fnu", 114688, 2**-17),
        ("float6_e2m3fn", 7.5, 0.125),
        ("float6_e3m2fn", 28, 0.0625),
        ("float4_e2m1fn", 6, 0.5),
        ("p3109_p4", 224, 2**-10),
        ("p3109_p3", 49152, 2**-17),
    ],
)
def test_numerics_table(name, maxval, smallest_subnormal):
    fi = fpsim.finfo(name)
    assert fi.max == maxval
    assert fi.smallest_subnormal == smallest_subnormal


@pytest.mark.parametrize(
    "fnuz, p3109", [("float8_e4m3fnuz", "p3109_k8p4sf"), ("float8_e5m2fnuz", "p3109_k8p3sf")]
)
def test_fnuz_equals_p3109_finite(fnuz, p3109):
    np.testing.assert_array_equal(
        fpsim.get_format(fnuz).values(), fpsim.get_format(p3109).values()
    )


def test_p3109_special_codes():
    for p in range(1, 8):
        se = fpsim.get_format(f"p3109_k8p{p}se").values()
        assert np.isnan(se[0x80]) and np.isnan(se).sum() == 1
        assert se[0x7F] == np.inf and se[0xFF] == -np.inf and se[0] == 0
        ue = fpsim.get_format(f"p3109_k8p{p}ue").values()
        assert np.isnan(ue[0xFF]) and ue[0xFE] == np.inf and (ue[:0xFE] >= 0).all()
        sf = fpsim.get_format(f"p3109_k8p{p}sf").values()
        assert np.isfinite(np.delete(sf, 0x80)).all()


def test_get_format_accepts_names_aliases_dtypes_and_instances():
    f = fpsim.get_format("float8_e4m3fn")
    assert fpsim.get_format("e4m3fn") is f
    assert fpsim.get_format("E4M3FN") is f
    assert fpsim.get_format(ml_dtypes.float8_e4m3fn) is f
    assert fpsim.get_format(np.dtype(ml_dtypes.float8_e4m3fn)) is f
    assert fpsim.get_format(f) is f
    assert fpsim.get_format(np.float16).name == "float16"
    assert fpsim.get_format("p3109_p4").name == "p3109_k8p4se"
    assert fpsim.get_format("p3109_k6p3sf").bits == 6  # parsed on demand


@pytest.mark.parametrize(
    "bad, exc, fragment",
    [
        ("e4m3", None, None),  # valid: IEEE-like e4m3 exists
        ("e4m3fm", ValueError, "e4m3fn"),
        ("float8_e4m3_fn", ValueError, "float8_e4m3fn"),
        ("nope", ValueError, "Known formats"),
        (3.5, TypeError, "fmt must be"),
        (np.float32, ValueError, "not a format"),
        ("p3109_k8p9se", ValueError, "P3109"),
    ],
)
def test_get_format_errors(bad, exc, fragment):
    if exc is None:
        fpsim.get_format(bad)
        return
    with pytest.raises(exc, match=fragment):
        fpsim.get_format(bad)


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        (dict(exponent_bits=0, mantissa_bits=3), ValueError),
        (dict(exponent_bits=4, mantissa_bits=-1), ValueError),
        (dict(exponent_bits=9, mantissa_bits=9), ValueError),  # 19 bits
        (dict(exponent_bits=4, mantissa_bits=3, specials="weird"), ValueError),
        (dict(exponent_bits=4, mantissa_bits=3, signed=False, specials="fnuz"), ValueError),
        (dict(exponent_bits=4.0, mantissa_bits=3), TypeError),
        (dict(exponent_bits=4, mantissa_bits=3, ties="odd"), ValueError),
    ],
)
def test_float_format_validation(kwargs, exc):
    with pytest.raises(exc):
        FloatFormat(**kwargs)


def test_user_defined_format_is_frozen_and_derived():
    f = FloatFormat(exponent_bits=3, mantissa_bits=2)
    assert f.name == "custom_e3m2" and f.bits == 6 and f.bias == 3
    assert f.max == 14.0  # IEEE-like: top exponent reserved, max = 1.75 * 2**3
    with pytest.raises(Exception):
        f.bias = 4  # type: ignore[misc]


def test_int_formats():
    assert fpsim.iinfo("int8").min == -128 and fpsim.iinfo("int8").max == 127
    assert fpsim.iinfo("uint4").max == 15
    ocp = fpsim.get_format("ocp_int8")
    assert isinstance(ocp, IntFormat) and ocp.max == 127 / 64 and ocp.min == -2.0
    assert fpsim.iinfo("ocp_int8_symmetric").min == -127 / 64
    v = ocp.values()
    assert v[0x40] == 1.0 and v[0xC0] == -1.0 and v[0x80] == -2.0
    with pytest.raises(TypeError):
        fpsim.finfo("int8")
    with pytest.raises(TypeError):
        fpsim.iinfo("e4m3fn")


def test_classify():
    cls = fpsim.get_format("e4m3fn").classify()
    assert cls[0] == "zero" and cls[0x80] == "zero"
    assert cls[1] == "subnormal" and cls[8] == "normal"
    assert cls[0x7F] == "nan" and cls[0xFF] == "nan"
    assert fpsim.get_format("e5m2").classify()[0x7C] == "inf"


def test_float16_values_match_numpy():
    codes = np.arange(1 << 16, dtype=np.uint16)
    np.testing.assert_array_equal(
        fpsim.get_format("float16").values(), codes.view(np.float16).astype(np.float64)
    )


# ---- field types are checked at construction ------------------------------------
@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        (IntFormat, dict(bits=8, scale_exp=1.5), "scale_exp"),
        (IntFormat, dict(bits=8, scale_exp=True), "scale_exp"),
        (IntFormat, dict(bits=8, scale_exp="-6"), "scale_exp"),
        (IntFormat, dict(bits=8.0), "bits"),
        (IntFormat, dict(bits=True), "bits"),
        (IntFormat, dict(bits=8, symmetric="False"), "symmetric"),
        (IntFormat, dict(bits=8, symmetric=0), "symmetric"),
        (IntFormat, dict(bits=8, signed=1), "signed"),
        (IntFormat, dict(bits=8, signed="yes"), "signed"),
        (IntFormat, dict(bits=8, bit_patterns=None), "bit_patterns"),
        (IntFormat, dict(bits=8, name=3), "name"),
        (FloatFormat, dict(exponent_bits=4, mantissa_bits=3, bias=7.0), "bias"),
        (FloatFormat, dict(exponent_bits=4, mantissa_bits=3, bias=False), "bias"),
        (FloatFormat, dict(exponent_bits=4, mantissa_bits=3.0), "mantissa_bits"),
        (FloatFormat, dict(exponent_bits=np.float64(4), mantissa_bits=3), "exponent_bits"),
        (FloatFormat, dict(exponent_bits=4, mantissa_bits=3, signed="False"), "signed"),
        (FloatFormat, dict(exponent_bits=4, mantissa_bits=3, signed=1), "signed"),
        (FloatFormat, dict(exponent_bits=4, mantissa_bits=3, subnormals="no"), "subnormals"),
        (FloatFormat, dict(exponent_bits=4, mantissa_bits=3, has_zero=1), "has_zero"),
        (FloatFormat, dict(exponent_bits=4, mantissa_bits=3, specials=None), "specials"),
        (FloatFormat, dict(exponent_bits=4, mantissa_bits=3, ties=0), "ties"),
        (FloatFormat, dict(exponent_bits=4, mantissa_bits=3, name=b"x"), "name"),
    ],
)
def test_format_field_types_are_checked(cls, kwargs, field):
    """A field of the wrong type raises TypeError naming the field, the value and the type
    expected (bool fields take a real bool, int fields an int or numpy integer)."""
    value = kwargs[field]
    with pytest.raises(TypeError) as err:
        cls(**kwargs)
    msg = str(err.value)
    assert field in msg and repr(value) in msg
    assert ("bool" in msg) if field in ("signed", "symmetric", "bit_patterns", "subnormals",
                                        "has_zero") else True
    assert ("int" in msg) if field in ("bits", "scale_exp", "bias", "exponent_bits",
                                       "mantissa_bits") else True


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (IntFormat, dict(bits=np.int64(8), scale_exp=np.int32(-6))),
        (IntFormat, dict(bits=8, signed=np.bool_(False), symmetric=False)),
        (FloatFormat, dict(exponent_bits=np.uint8(4), mantissa_bits=np.int16(3),
                           bias=np.int64(7), signed=np.bool_(True))),
    ],
)
def test_format_fields_accept_numpy_scalars(cls, kwargs):
    """numpy integers and numpy bools are accepted and stored as Python int / bool."""
    fmt = cls(**kwargs)
    for k, v in kwargs.items():
        got = getattr(fmt, k)
        assert type(got) is (bool if isinstance(v, (bool, np.bool_)) else int) and got == v
    plain = {k: v.item() if isinstance(v, np.generic) else v for k, v in kwargs.items()}
    assert fmt == cls(**plain) and hash(fmt) == hash(cls(**plain))


# ---- integer formats against ml_dtypes.iinfo / numpy.iinfo ---------------------------
INT_FORMATS = fpsim.list_formats("int")
ML_INTS = [n for n in INT_FORMATS if hasattr(ml_dtypes, n) or hasattr(np, n)]


@pytest.mark.parametrize("name", ML_INTS)
def test_iinfo_matches_ml_dtypes(name):
    ours = fpsim.iinfo(name)
    theirs = ml_dtypes.iinfo(getattr(ml_dtypes, name, None) or getattr(np, name))
    assert ours.dtype == name == str(theirs.dtype)
    assert (ours.bits, ours.min, ours.max) == (theirs.bits, theirs.min, theirs.max)
    fmt = fpsim.get_format(name)
    assert fmt.values().tolist() == list(range(theirs.min, theirs.max + 1))


@pytest.mark.skipif(not hasattr(ml_dtypes, "int1"), reason="int1, int2 need ml_dtypes >= 0.7")
def test_ml_dtypes_integer_types_are_all_checked():
    assert {"int1", "uint1", "int2", "uint2", "int4", "uint4", "int8", "uint8"} <= set(ML_INTS)


@pytest.mark.skipif(not hasattr(ml_dtypes, "float8_e5m3fnu"), reason="needs ml_dtypes >= 0.7")
def test_e5m3fnu_is_unsigned_e5m3_with_one_nan():
    fmt = fpsim.get_format("e5m3fnu")
    assert fmt is fpsim.get_format("float8_e5m3fnu") is fpsim.get_format(ml_dtypes.float8_e5m3fnu)
    v = fmt.values()
    assert not fmt.signed and fmt.bits == 8 and (fmt.exponent_bits, fmt.mantissa_bits) == (5, 3)
    assert np.isnan(v[0xFF]) and np.isnan(v).sum() == 1 and v[0xFE] == 114688 and v[0] == 0
    assert (v[:0xFF] >= 0).all() and not fmt.has_inf and not fmt.has_negative_zero


def test_ambiguous_short_alias_warns_once(monkeypatch):
    """'e4m3' silently meant the IEEE-like max-240 format (issue 10): it now says so, once."""
    from fpsim import formats

    monkeypatch.setattr(formats, "_warned_aliases", set())
    with pytest.warns(UserWarning, match="float8_e4m3fn"):
        assert fpsim.get_format("e4m3").name == "float8_e4m3"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fpsim.get_format("e4m3")  # second use: silent
        fpsim.get_format("e4m3fn")  # unambiguous aliases never warn
    with pytest.raises(ValueError, match="OCP FP8 E4M3, max 448, is 'float8_e4m3fn'"):
        fpsim.get_format("e4m3_ocp")
