"""Number formats: one frozen spec per format, every constant derived from it.

A :class:`FloatFormat` is defined by its exponent and mantissa widths, its bias,
its signedness, its convention for special values and whether it has
subnormals.  Everything else (max, eps, the code of NaN, ...) is a derived
property, so a user-defined format works everywhere a registered one does.

Special-value conventions (``specials=``):

``"ieee"``
    The all-ones exponent field holds Inf (mantissa 0) and NaN (otherwise).
``"fn"``
    Finite: no Inf; NaN only at the all-ones magnitude (``float8_e4m3fn``,
    and the unsigned ``float8_e8m0fnu`` whose NaN is 0xFF).
``"fnuz"``
    Finite, unsigned zero: no Inf, no -0; the -0 code is the only NaN.
``"p3109_extended"``
    IEEE P3109 extended domain: one NaN (the -0 code when signed, the top
    code when unsigned) and +-Inf at the top magnitude.
``"p3109_finite"``
    IEEE P3109 finite domain: one NaN as above, no Inf.
``"none"``
    Every code is a finite number (fp6, fp4).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Union

import numpy as np

__all__ = [
    "FloatFormat",
    "IntFormat",
    "FInfo",
    "IInfo",
    "Format",
    "get_format",
    "list_formats",
    "finfo",
    "iinfo",
    "p3109",
    "SPECIALS",
]

SPECIALS = ("ieee", "fn", "fnuz", "p3109_extended", "p3109_finite", "none")


def _check_fields(obj, ints=(), optional_ints=(), bools=(), strs=()) -> None:
    """Check the types of a format's fields; store numpy ints / bools as Python ones.

    Raises TypeError naming the field, the value received and the type expected: int
    fields take an int or numpy integer (not a bool or a float), bool fields a real
    bool (``True``/``False`` or ``numpy.bool_``, not ``0``/``1`` or ``"False"``).
    """
    cls = type(obj).__name__
    for name in ints + optional_ints:
        v = getattr(obj, name)
        if v is None and name in optional_ints:
            continue
        if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)):
            none = " or None" if name in optional_ints else ""
            raise TypeError(f"{cls} field {name} must be an int (or numpy integer){none}, "
                            f"got {v!r} of type {type(v).__name__}")
        object.__setattr__(obj, name, int(v))
    for name in bools:
        v = getattr(obj, name)
        if not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{cls} field {name} must be a bool (True or False), "
                            f"got {v!r} of type {type(v).__name__}")
        object.__setattr__(obj, name, bool(v))
    for name in strs:
        v = getattr(obj, name)
        if not isinstance(v, str):
            raise TypeError(f"{cls} field {name} must be a str, "
                            f"got {v!r} of type {type(v).__name__}")


@dataclass(frozen=True, kw_only=True)
class FloatFormat:
    """A binary floating-point format of 2 to 16 bits.

    Parameters
    ----------
    exponent_bits, mantissa_bits : int
        Widths of the exponent and (stored) mantissa fields.
    bias : int, optional
        Exponent bias; default ``2**(exponent_bits - 1) - 1`` (IEEE).
    signed : bool
        Whether the format has a sign bit.
    specials : str
        Convention for Inf/NaN, one of :data:`SPECIALS`.
    subnormals : bool
        Whether the zero exponent field holds subnormals.  Without them,
        results below the smallest normal round to 0 or the smallest normal.
    has_zero : bool
        False for formats such as ``float8_e8m0fnu`` where the zero exponent
        field holds normal numbers and zero is not representable.
    ties : str
        ``"even"``, or ``"away"`` for formats whose round-to-nearest breaks
        ties upward (``float8_e8m0fnu``, following ml_dtypes).
    negatives : str
        What an unsigned format makes of a negative input (not -0):
        ``"round"`` (default; P3109) rounds its magnitude and gives 0 if that
        is zero, else NaN; ``"nan"`` (``float8_e5m3fnu``, following ml_dtypes)
        gives NaN for every negative input, however small.  Either way
        ``saturate=True`` gives code 0 instead of NaN.  Signed formats take
        ``"round"`` only.
    name : str, optional
        Defaults to ``custom_e{E}m{M}``.

    Examples
    --------
    >>> fmt = FloatFormat(exponent_bits=4, mantissa_bits=3, specials="fn")
    >>> float(fmt.max), fmt.bits
    (448.0, 8)
    """

    exponent_bits: int
    mantissa_bits: int
    bias: int | None = None
    signed: bool = True
    specials: str = "ieee"
    subnormals: bool = True
    has_zero: bool = True
    ties: str = "even"
    negatives: str = "round"
    name: str = ""
    aliases: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self):
        _check_fields(self, ints=("exponent_bits", "mantissa_bits"), optional_ints=("bias",),
                      bools=("signed", "subnormals", "has_zero"),
                      strs=("specials", "ties", "negatives", "name"))
        if self.exponent_bits < 1:
            raise ValueError(f"exponent_bits must be >= 1, got {self.exponent_bits}")
        if self.mantissa_bits < 0:
            raise ValueError(f"mantissa_bits must be >= 0, got {self.mantissa_bits}")
        if self.specials not in SPECIALS:
            raise ValueError(f"specials must be one of {SPECIALS}, got {self.specials!r}")
        if self.ties not in ("even", "away"):
            raise ValueError(f"ties must be 'even' or 'away', got {self.ties!r}")
        if self.negatives not in ("round", "nan"):
            raise ValueError(f"negatives must be 'round' or 'nan', got {self.negatives!r}")
        if self.signed and self.negatives != "round":
            raise ValueError(f"negatives={self.negatives!r} is for unsigned formats; a signed "
                             "format takes negatives='round'")
        bits = int(self.signed) + self.exponent_bits + self.mantissa_bits
        if not 2 <= bits <= 16:
            raise ValueError(
                f"a FloatFormat must have 2 to 16 bits in all; exponent_bits="
                f"{self.exponent_bits}, mantissa_bits={self.mantissa_bits}, "
                f"signed={self.signed} gives {bits}"
            )
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (self.exponent_bits - 1) - 1)
        if not self.signed and self.specials == "fnuz":
            raise ValueError("specials='fnuz' needs a signed format (its NaN is the -0 code)")
        if self.specials == "ieee" and self.exponent_bits < 2:
            raise ValueError("specials='ieee' needs at least 2 exponent bits")
        if not self.name:
            object.__setattr__(
                self, "name", f"custom_e{self.exponent_bits}m{self.mantissa_bits}"
            )
        if self.max_code < 0 or not math.isfinite(self.max) or self.max <= 0:
            raise ValueError(f"format {self.name} has no positive finite value")

    # ---- layout -----------------------------------------------------------
    @property
    def bits(self) -> int:
        """Total width in bits."""
        return int(self.signed) + self.exponent_bits + self.mantissa_bits

    @property
    def code_dtype(self) -> np.dtype:
        """uint8 for formats of 8 bits or fewer, else uint16."""
        return np.dtype(np.uint8) if self.bits <= 8 else np.dtype(np.uint16)

    @property
    def sign_bit(self) -> int:
        """The sign bit as a code mask (0 for unsigned formats)."""
        return (1 << (self.bits - 1)) if self.signed else 0

    @property
    def magnitude_mask(self) -> int:
        return (1 << (self.exponent_bits + self.mantissa_bits)) - 1

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal number."""
        return (1 if self.has_zero else 0) - self.bias

    # ---- special codes ----------------------------------------------------
    @property
    def has_inf(self) -> bool:
        return self.specials in ("ieee", "p3109_extended")

    @property
    def has_nan(self) -> bool:
        if self.specials == "ieee":
            return self.mantissa_bits > 0
        return self.specials != "none"

    @property
    def has_negative_zero(self) -> bool:
        return self.signed and self.has_zero and self.specials in ("ieee", "fn", "none")

    @property
    def max_code(self) -> int:
        """Magnitude code (no sign bit) of the largest finite value."""
        top = self.magnitude_mask
        s = self.specials
        if s == "ieee":
            return top - (1 << self.mantissa_bits)
        if s == "fn":
            return top - 1
        if s == "fnuz" or s == "none":
            return top
        if s == "p3109_extended":
            return top - 1 if self.signed else top - 2
        # p3109_finite
        return top if self.signed else top - 1

    def nan_code(self, negative: bool = False) -> int:
        """Code of the NaN produced for a NaN input of the given sign (-1 if none)."""
        if not self.has_nan:
            return -1
        s = self.specials
        sign = self.sign_bit if negative else 0
        if s == "ieee":
            quiet = 1 << (self.mantissa_bits - 1)
            return sign | (((1 << self.exponent_bits) - 1) << self.mantissa_bits) | quiet
        if s == "fn":
            return sign | self.magnitude_mask
        # fnuz and P3109: a single NaN
        return self.sign_bit if self.signed else self.magnitude_mask

    def inf_code(self, negative: bool = False) -> int:
        """Code of +-Inf (-1 if the format has none)."""
        if not self.has_inf:
            return -1
        sign = self.sign_bit if negative else 0
        if self.specials == "ieee":
            return sign | (((1 << self.exponent_bits) - 1) << self.mantissa_bits)
        if not self.signed:
            return self.magnitude_mask - 1
        return sign | self.magnitude_mask

    # ---- values -----------------------------------------------------------
    def _magnitude_value(self, mag: np.ndarray) -> np.ndarray:
        """Finite value of magnitude codes, ignoring specials (float64)."""
        mag = np.asarray(mag, dtype=np.int64)
        e = mag >> self.mantissa_bits
        f = (mag & ((1 << self.mantissa_bits) - 1)).astype(np.float64)
        scale = float(2**self.mantissa_bits)
        if self.has_zero:
            sub = np.ldexp(f / scale, 1 - self.bias) if self.subnormals else np.zeros_like(f)
            norm = np.ldexp(1.0 + f / scale, (e - self.bias).astype(np.int32))
            return np.where(e == 0, sub, norm)
        return np.ldexp(1.0 + f / scale, (e - self.bias).astype(np.int32))

    @property
    def max(self) -> float:
        """Largest finite value."""
        return float(self._magnitude_value(np.array([self.max_code]))[0])

    @property
    def smallest_normal(self) -> float:
        return math.ldexp(1.0, self.emin)

    @property
    def smallest_subnormal(self) -> float:
        if self.subnormals and self.has_zero and self.mantissa_bits > 0:
            return math.ldexp(1.0, self.emin - self.mantissa_bits)
        return self.smallest_normal

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite value."""
        return (self.max_code >> self.mantissa_bits) - self.bias

    def values(self) -> np.ndarray:
        """The value of every code, as float64 (NaN codes give NaN).

        Examples
        --------
        >>> get_format("e2m1fn").values()[:8].tolist()
        [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
        """
        codes = np.arange(1 << self.bits, dtype=np.int64)
        mag = codes & self.magnitude_mask
        neg = (codes & self.sign_bit) != 0 if self.signed else np.zeros(codes.shape, bool)
        v = self._magnitude_value(mag)
        v = np.where(mag > self.max_code, np.nan, v)
        v = np.where(neg, -v, v)
        if self.has_inf:
            v[self.inf_code(False)] = np.inf
            if self.signed:
                v[self.inf_code(True)] = -np.inf
        if self.has_nan:
            v[self.nan_code(False)] = np.nan
            v[self.nan_code(True)] = np.nan
        return v

    def classify(self) -> np.ndarray:
        """Class of every code: 'zero', 'subnormal', 'normal', 'inf' or 'nan'."""
        v = self.values()
        codes = np.arange(1 << self.bits)
        mag = codes & self.magnitude_mask
        out = np.full(v.shape, "normal", dtype=object)
        if self.has_zero:
            e = mag >> self.mantissa_bits
            out[(e == 0) & (v != 0)] = "subnormal"
            out[v == 0] = "zero"
        out[np.isinf(v)] = "inf"
        out[np.isnan(v)] = "nan"
        return out

    @property
    def kind(self) -> str:
        return "float"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, kw_only=True)
class IntFormat:
    """A two's-complement or unsigned integer format, optionally scaled.

    Parameters
    ----------
    bits : int
        Width, 1 to 16 (``int1`` holds -1 and 0, ``uint1`` 0 and 1).
    signed : bool
    scale_exp : int
        Each integer ``n`` stands for ``n * 2**scale_exp`` (-6 for the OCP MX
        INT8 element).
    symmetric : bool
        Clip signed values to ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``
        (needs ``bits >= 2``).
    bit_patterns : bool
        If True, ``encode`` returns unsigned bit patterns (two's complement)
        and ``decode`` takes them, like the float element formats; otherwise
        the integer values themselves.

    Examples
    --------
    >>> fmt = get_format("ocp_int8")
    >>> fmt.max
    1.984375
    """

    bits: int
    signed: bool = True
    scale_exp: int = 0
    symmetric: bool = False
    bit_patterns: bool = False
    name: str = ""
    aliases: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self):
        _check_fields(self, ints=("bits", "scale_exp"),
                      bools=("signed", "symmetric", "bit_patterns"), strs=("name",))
        if not 1 <= self.bits <= 16:
            raise ValueError(f"bits must be an int from 1 to 16, got {self.bits!r}")
        if self.symmetric and self.signed and self.bits < 2:
            raise ValueError(f"symmetric=True needs bits >= 2 (a symmetric int1 holds only 0), "
                             f"got bits={self.bits}")
        if not self.name:
            object.__setattr__(self, "name", f"{'' if self.signed else 'u'}int{self.bits}")

    @property
    def min_int(self) -> int:
        if not self.signed:
            return 0
        return -(1 << (self.bits - 1)) + int(self.symmetric)

    @property
    def max_int(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def max(self) -> float:
        return math.ldexp(self.max_int, self.scale_exp)

    @property
    def min(self) -> float:
        return math.ldexp(self.min_int, self.scale_exp)

    @property
    def code_dtype(self) -> np.dtype:
        if self.bit_patterns:
            return np.dtype(np.uint8) if self.bits <= 8 else np.dtype(np.uint16)
        if self.bits <= 8:
            return np.dtype(np.int8 if self.signed else np.uint8)
        return np.dtype(np.int16 if self.signed else np.uint16)

    def values(self) -> np.ndarray:
        """Value of every code (bit pattern order if ``bit_patterns``, else min..max)."""
        if self.bit_patterns:
            codes = np.arange(1 << self.bits, dtype=np.int64)
            if self.signed:
                codes = np.where(codes >= (1 << (self.bits - 1)), codes - (1 << self.bits), codes)
        else:
            lo = -(1 << (self.bits - 1)) if self.signed else 0
            codes = np.arange(lo, lo + (1 << self.bits), dtype=np.int64)
        return np.ldexp(codes.astype(np.float64), self.scale_exp)

    @property
    def kind(self) -> str:
        return "int"

    def __str__(self) -> str:
        return self.name


Format = Union[FloatFormat, IntFormat]


# ---- finfo / iinfo -------------------------------------------------------
@dataclass(frozen=True)
class FInfo:
    """Machine limits of a float format, with numpy's ``finfo`` field names.

    Examples
    --------
    >>> fi = finfo("e5m2")
    >>> fi.dtype, fi.bits, fi.nexp, fi.nmant, fi.max, fi.eps
    ('float8_e5m2', 8, 5, 2, 57344.0, 0.25)
    """

    dtype: str
    bits: int
    nexp: int
    nmant: int
    max: float
    min: float
    eps: float
    epsneg: float
    smallest_normal: float
    smallest_subnormal: float
    tiny: float
    maxexp: int
    minexp: int
    machep: int
    negep: int
    iexp: int
    precision: int
    resolution: float


@dataclass(frozen=True)
class IInfo:
    """Limits of an integer format, with numpy's ``iinfo`` field names.

    Examples
    --------
    >>> iinfo("int8")
    IInfo(dtype='int8', bits=8, min=-128.0, max=127.0)
    """

    dtype: str
    bits: int
    min: float
    max: float


def _round_to_format_nearest(fmt: FloatFormat, x: float) -> float:
    """Value of fmt nearest to positive x (ties to the smaller); used for resolution."""
    vals = fmt.values()
    vals = vals[np.isfinite(vals) & (vals > 0)]
    return float(vals[np.argmin(np.abs(vals - x))])


def _precision(fmt: FloatFormat, eps: float) -> int:
    """Decimal digits, numpy's ``int(-log10(eps))``, with ml_dtypes' convention for the
    small formats: every 8-bit float format has precision 1 and narrower ones 0 (ml_dtypes
    sets these by hand; the rule here reproduces all of its values)."""
    if fmt.bits == 8:
        return 1
    if fmt.bits < 8:
        return 0
    return int(-math.log10(eps)) if eps < 1 else 0


def finfo(fmt) -> FInfo:
    """Machine limits of a float format, with numpy's field names.

    ``precision`` is numpy's ``int(-log10(eps))`` for 16-bit formats and
    ml_dtypes' convention below (1 for 8-bit formats, 0 for narrower ones);
    ``resolution`` is ``10**-precision`` rounded to the format.

    Examples
    --------
    >>> fi = finfo("float8_e4m3fn")
    >>> fi.max, fi.eps, fi.smallest_subnormal
    (448.0, 0.125, 0.001953125)
    """
    fmt = get_format(fmt)
    if not isinstance(fmt, FloatFormat):
        raise TypeError(f"finfo needs a float format, got {fmt.name}; use iinfo")
    vals = fmt.values()
    finite = vals[np.isfinite(vals)]
    below_one = finite[finite < 1.0]
    eps = math.ldexp(1.0, -fmt.mantissa_bits)
    epsneg = 1.0 - float(below_one.max()) if below_one.size else float("nan")
    precision = _precision(fmt, eps)
    return FInfo(
        dtype=fmt.name,
        bits=fmt.bits,
        nexp=fmt.exponent_bits,
        nmant=fmt.mantissa_bits,
        max=fmt.max,
        min=-fmt.max if fmt.signed else float(finite[finite >= 0].min()),
        eps=eps,
        epsneg=epsneg,
        smallest_normal=fmt.smallest_normal,
        smallest_subnormal=fmt.smallest_subnormal,
        tiny=fmt.smallest_normal,
        maxexp=fmt.emax + 1,
        minexp=fmt.emin,
        machep=-fmt.mantissa_bits,
        negep=int(round(math.log2(epsneg))) if epsneg == epsneg else 0,
        iexp=fmt.exponent_bits,
        precision=precision,
        resolution=_round_to_format_nearest(fmt, 10.0**-precision),
    )


def iinfo(fmt) -> IInfo:
    """Limits of an integer format (``min``/``max`` include ``scale_exp``).

    Examples
    --------
    >>> iinfo("int4").min, iinfo("int4").max
    (-8.0, 7.0)
    """
    fmt = get_format(fmt)
    if not isinstance(fmt, IntFormat):
        raise TypeError(f"iinfo needs an integer format, got {fmt.name}; use finfo")
    return IInfo(dtype=fmt.name, bits=fmt.bits, min=fmt.min, max=fmt.max)


# ---- the registry --------------------------------------------------------
_REGISTRY: dict[str, Format] = {}
_ALIASES: dict[str, str] = {}


def _register(fmt: Format, *aliases: str) -> Format:
    _REGISTRY[fmt.name] = fmt
    for a in aliases:
        _ALIASES[a] = fmt.name
    object.__setattr__(fmt, "aliases", tuple(aliases))
    return fmt


def _ml(name, e, m, **kw):
    short = name.split("_", 1)[1]
    return _register(FloatFormat(name=name, exponent_bits=e, mantissa_bits=m, **kw), short)


_ml("float8_e4m3fn", 4, 3, specials="fn")
_ml("float8_e5m2", 5, 2, specials="ieee")
_ml("float8_e4m3fnuz", 4, 3, bias=8, specials="fnuz")
_ml("float8_e5m2fnuz", 5, 2, bias=16, specials="fnuz")
_ml("float8_e4m3b11fnuz", 4, 3, bias=11, specials="fnuz")
_ml("float8_e3m4", 3, 4, specials="ieee")
_ml("float8_e4m3", 4, 3, specials="ieee")
_ml("float8_e8m0fnu", 8, 0, signed=False, specials="fn", subnormals=False,
    has_zero=False, ties="away")
_ml("float8_e5m3fnu", 5, 3, signed=False, specials="fn", negatives="nan")
_ml("float6_e2m3fn", 2, 3, specials="none")
_ml("float6_e3m2fn", 3, 2, specials="none")
_ml("float4_e2m1fn", 2, 1, specials="none")
_register(FloatFormat(name="float16", exponent_bits=5, mantissa_bits=10), "f16", "half")
_register(FloatFormat(name="bfloat16", exponent_bits=8, mantissa_bits=7), "bf16")


def p3109(k: int, p: int, *, signed: bool = True, domain: str = "extended") -> FloatFormat:
    """The IEEE P3109 format of width ``k`` and precision ``p``.

    Named ``p3109_k{k}p{p}{s|u}{e|f}``; bias is ``2**(k-p-1)`` when signed,
    ``2**(k-p)`` when unsigned.

    Examples
    --------
    >>> p3109(8, 4).name, p3109(8, 4).max
    ('p3109_k8p4se', 224.0)
    """
    if domain not in ("extended", "finite"):
        raise ValueError(f"domain must be 'extended' or 'finite', got {domain!r}")
    ebits = k - p if signed else k - p + 1
    if p < 1 or ebits < 1:
        raise ValueError(f"P3109 needs 1 <= p and at least one exponent bit; got k={k}, p={p}")
    name = f"p3109_k{k}p{p}{'s' if signed else 'u'}{domain[0]}"
    if name in _REGISTRY:
        return _REGISTRY[name]  # type: ignore[return-value]
    return FloatFormat(
        name=name,
        exponent_bits=ebits,
        mantissa_bits=p - 1,
        bias=2 ** (ebits - 1),
        signed=signed,
        specials=f"p3109_{domain}",
    )


for _p in range(1, 8):
    for _signed in (True, False):
        for _domain in ("extended", "finite"):
            _f = p3109(8, _p, signed=_signed, domain=_domain)
            _al = (f"p3109_p{_p}",) if (_signed and _domain == "extended") else ()
            _register(_f, *_al)

_register(IntFormat(name="int8", bits=8, signed=True))
_register(IntFormat(name="uint8", bits=8, signed=False))
_register(IntFormat(name="int4", bits=4, signed=True))
_register(IntFormat(name="uint4", bits=4, signed=False))
_register(IntFormat(name="int2", bits=2, signed=True))
_register(IntFormat(name="uint2", bits=2, signed=False))
_register(IntFormat(name="int1", bits=1, signed=True))
_register(IntFormat(name="uint1", bits=1, signed=False))
# llama.cpp's (GGML) block formats' elements: Q3_K, Q5_0/Q5_1/Q5_K, Q6_K, and the trits of
# TQ1_0 (-1, 0, 1; fpsim.quant.ggml)
_register(IntFormat(name="int3", bits=3, signed=True))
_register(IntFormat(name="int5", bits=5, signed=True))
_register(IntFormat(name="uint5", bits=5, signed=False))
_register(IntFormat(name="int6", bits=6, signed=True))
_register(IntFormat(name="int2_symmetric", bits=2, signed=True, symmetric=True), "ternary")
# The OCP MX v1.0 INT8 element (section 5.3.4): two's complement, value n * 2**-6, so
# [-2, 127/64] and every code round-trips (as gfloat); microxcaling clips symmetrically.
_register(IntFormat(name="ocp_int8", bits=8, signed=True, scale_exp=-6, bit_patterns=True),
          "mxint8_element")
_register(IntFormat(name="ocp_int8_symmetric", bits=8, signed=True, scale_exp=-6,
                    symmetric=True, bit_patterns=True), "ocp_int8_sym")


def list_formats(kind: str | None = None) -> list[str]:
    """Names of the registered formats (``kind`` = 'float' or 'int' to filter).

    Examples
    --------
    >>> "float8_e4m3fn" in list_formats()
    True
    """
    if kind not in (None, "float", "int"):
        raise ValueError(f"kind must be None, 'float' or 'int', got {kind!r}")
    return [n for n, f in _REGISTRY.items() if kind is None or f.kind == kind]


def _all_names() -> list[str]:
    return list(_REGISTRY) + list(_ALIASES)


#: Short aliases that name a less-known format than the one most readers mean by them:
#: alias -> what the user probably wanted.  Using one warns once per process.
AMBIGUOUS_ALIASES = {
    "e4m3": "'e4m3' is float8_e4m3, the IEEE-like E4M3 (max 240, with infinities); OCP FP8 "
            "E4M3 (max 448, what PTX, Transformer Engine and H100 call e4m3) is "
            "'float8_e4m3fn' / 'e4m3fn'",
}
_warned_aliases: set = set()


def get_format(fmt) -> Format:
    """Look a format up by name, alias, ml_dtypes/numpy dtype, or pass one through.

    Names are ml_dtypes' (``float8_e4m3fn``), aliases their short forms (``e4m3fn``).
    ``"e4m3"`` is ml_dtypes' ``float8_e4m3`` (IEEE-like, max 240), not OCP's E4M3FN (max
    448): the first use of such an ambiguous alias warns (:data:`AMBIGUOUS_ALIASES`).

    Examples
    --------
    >>> get_format("e4m3fn") is get_format("float8_e4m3fn")
    True
    """
    if isinstance(fmt, (FloatFormat, IntFormat)):
        return fmt
    if isinstance(fmt, str):
        key = fmt.strip().lower()
        if key in _REGISTRY:
            return _REGISTRY[key]
        if key in _ALIASES:
            if key in AMBIGUOUS_ALIASES and key not in _warned_aliases:
                _warned_aliases.add(key)
                import warnings

                warnings.warn(AMBIGUOUS_ALIASES[key], UserWarning, stacklevel=2)
            return _REGISTRY[_ALIASES[key]]
        if key.startswith("p3109_k"):
            parsed = _parse_p3109(key)
            if parsed is not None:
                return parsed
        close = difflib.get_close_matches(key, _all_names(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        note = ("; note: OCP FP8 E4M3, max 448, is 'float8_e4m3fn' ('e4m3fn'), while 'e4m3' is "
                "the IEEE-like max-240 float8_e4m3") if "e4m3" in key else ""
        raise ValueError(
            f"unknown format {fmt!r}{hint} Known formats: {', '.join(list_formats())} "
            "(or p3109_k{K}p{P}{s|u}{e|f})" + note
        )
    try:
        dt = np.dtype(fmt)
    except TypeError:
        dt = None
    if dt is not None and dt.kind != "O":
        name = dt.name
        if name in _REGISTRY:
            return _REGISTRY[name]
        raise ValueError(f"dtype {name!r} is not a format fpsim simulates; known: {', '.join(list_formats())}")
    raise TypeError(
        f"fmt must be a format name, a FloatFormat/IntFormat or an ml_dtypes dtype, "
        f"got {type(fmt).__name__}"
    )


def _parse_p3109(key: str):
    import re

    m = re.fullmatch(r"p3109_k(\d+)p(\d+)([su])([ef])", key)
    if not m:
        return None
    k, p, s, d = int(m[1]), int(m[2]), m[3], m[4]
    return p3109(k, p, signed=(s == "s"), domain="extended" if d == "e" else "finite")
