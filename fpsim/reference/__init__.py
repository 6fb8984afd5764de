"""Readable, exact, pure-Python scalar encode/decode: the oracle for the kernels.

Everything here follows ``docs/numerics.md`` step by step, on Python ints and
:class:`fractions.Fraction` only (``Fraction(float)`` is exact), one scalar at
a time.  It is slow on purpose: the Numba kernels in ``fpsim._kernels`` are
tested against it, and it is tested against ml_dtypes and gfloat.

How a float format is rounded: the non-negative finite magnitudes of the
format, decoded exactly from the fields of the magnitude codes
``0 .. max_code``, form a sorted *grid*, extended by one virtual value
``max + ulp(max)`` with code ``max_code + 1``.  :func:`bisect.bisect_right`
finds the neighbours ``lo <= |x| < hi`` and the rounding mode picks one;
the chosen magnitude code then meets the sign, zero, overflow and NaN rules.

Choices the spec leaves open, made here:

- ``-Inf`` into an unsigned format (``float8_e8m0fnu``, ``float8_e5m3fnu``,
  P3109 ``u``) follows the negative-input rule: NaN, or code 0 with
  ``saturate=True``.  A negative input whose magnitude rounds to zero gives
  0 (P3109 ``u``), or NaN in formats with ``negatives="nan"``
  (``float8_e5m3fnu``, as ml_dtypes).
- User-defined formats with zero but no subnormals (none is registered): at
  the tie between 0 (code 0) and the smallest normal (code ``2**m``, also
  even when m > 0) ``nearest_even`` picks 0; ``odd`` picks the smallest
  normal when neither neighbour has an odd code.
- A format with neither NaN nor zero turns NaN into code 0.
"""

from __future__ import annotations

import bisect
import math
from fractions import Fraction
from functools import lru_cache
from numbers import Integral

import numpy as np

from ..formats import FloatFormat, IntFormat, get_format
from ..rounding import ROUNDINGS, check_saturate, rounding_mode

__all__ = [
    "ROUNDINGS",
    "decode",
    "encode",
    "is_negative_zero",
    "round_value",
    "splitmix64",
    "stochastic_bits",
]

_MASK64 = (1 << 64) - 1
_GOLDEN_GAMMA = 0x9E3779B97F4A7C15


# ---- random bits for stochastic rounding -----------------------------------
def splitmix64(z: int) -> int:
    """The splitmix64 finaliser (mixing function), all arithmetic mod 2**64.

    Parameters
    ----------
    z : int
        Any integer; only its value mod 2**64 matters.

    Returns
    -------
    int
        The mixed 64-bit value, in ``[0, 2**64)``.

    Examples
    --------
    >>> hex(splitmix64(0x9E3779B97F4A7C15))  # first output of splitmix64 seeded with 0
    '0xe220a8397b1dcdaf'
    """
    z &= _MASK64
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & _MASK64
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return z


def stochastic_bits(seed: int, index: int) -> int:
    """The 32-bit random integer ``r`` that element ``index`` uses with ``rng=seed``.

    Elements ``2k`` and ``2k + 1`` share one draw
    ``z = splitmix64(seed + (k + 1) * 0x9E3779B97F4A7C15)``: the even element
    takes its low 32 bits, the odd one its high 32 bits.  ``index`` is the
    element's position in the C-order flattening of the input.

    Parameters
    ----------
    seed : int
        The 64-bit seed, ``0 <= seed < 2**64``.
    index : int
        Flat index of the element, ``>= 0``.

    Returns
    -------
    int
        ``r`` in ``[0, 2**32)``.

    Raises
    ------
    ValueError
        If ``seed`` or ``index`` is out of range.

    Examples
    --------
    >>> hex(stochastic_bits(0, 0)), hex(stochastic_bits(0, 1))
    ('0x7b1dcdaf', '0xe220a839')
    """
    if not isinstance(seed, Integral) or not 0 <= seed <= _MASK64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    if not isinstance(index, Integral) or index < 0:
        raise ValueError(f"index must be an int >= 0, got {index!r}")
    k, high = divmod(int(index), 2)
    z = splitmix64(int(seed) + (k + 1) * _GOLDEN_GAMMA)
    return z >> 32 if high else z & 0xFFFFFFFF


# ---- decoding ---------------------------------------------------------------
def _pow2(n: int, k: int) -> Fraction:
    """n * 2**k, exactly."""
    return Fraction(n << k) if k >= 0 else Fraction(n, 1 << -k)


def _field_value(fmt: FloatFormat, mag: int) -> Fraction:
    """Value of magnitude code ``mag`` from its fields, ignoring specials.

    Codes above the magnitude mask continue the exponent range (used for the
    virtual value ``max + ulp(max)``).
    """
    m = fmt.mantissa_bits
    e, f = mag >> m, mag & ((1 << m) - 1)
    if e == 0 and fmt.has_zero:
        return _pow2(f, 1 - fmt.bias - m) if fmt.subnormals else Fraction(0)
    return _pow2((1 << m) + f, e - fmt.bias - m)


def _check_code(code, fmt) -> int:
    if isinstance(fmt, IntFormat) and not fmt.bit_patterns:
        lo = -(1 << (fmt.bits - 1)) if fmt.signed else 0
        hi = lo + (1 << fmt.bits) - 1
        what = "an integer value"
    else:
        lo, hi = 0, (1 << fmt.bits) - 1
        what = "a code"
    if not isinstance(code, Integral) or isinstance(code, bool) or not lo <= code <= hi:
        raise ValueError(f"code must be {what} in [{lo}, {hi}] for {fmt.name}, got {code!r}")
    return int(code)


def decode(code: int, fmt) -> Fraction | float:
    """The exact value of a code.

    Parameters
    ----------
    code : int
        A code of ``fmt``: ``0 <= code < 2**bits`` for float formats and
        ``bit_patterns`` integer formats (``ocp_int8``); the integer value
        itself for plain integer formats (``int8``: -128..127).
    fmt : str, FloatFormat or IntFormat
        Anything :func:`fpsim.formats.get_format` accepts.

    Returns
    -------
    Fraction or float
        A :class:`~fractions.Fraction` for every finite value, or
        ``float('nan')``, ``float('inf')``, ``float('-inf')`` for specials.
        A Fraction has no sign of zero: the -0 code decodes to
        ``Fraction(0)``; ask :func:`is_negative_zero` to tell it apart
        (:func:`round_value` gives ``-0.0``).

    Raises
    ------
    ValueError
        If ``code`` is not a code of ``fmt``.

    Examples
    --------
    >>> decode(0x7E, "float8_e4m3fn"), decode(0x01, "float8_e4m3fn")
    (Fraction(448, 1), Fraction(1, 512))
    >>> decode(0x7F, "float8_e4m3fn"), decode(0xFC, "float8_e5m2")
    (nan, -inf)
    >>> decode(0xC0, "ocp_int8"), decode(-3, "int8")
    (Fraction(-1, 1), Fraction(-3, 1))
    """
    fmt = get_format(fmt)
    code = _check_code(code, fmt)
    if isinstance(fmt, IntFormat):
        n = code
        if fmt.bit_patterns and fmt.signed and code >> (fmt.bits - 1):
            n = code - (1 << fmt.bits)  # two's complement
        return _pow2(n, fmt.scale_exp)
    negative = bool(code & fmt.sign_bit)
    mag = code & fmt.magnitude_mask
    if fmt.has_nan and code in (fmt.nan_code(False), fmt.nan_code(True)):
        return math.nan
    if fmt.has_inf and code == fmt.inf_code(negative):
        return -math.inf if negative else math.inf
    if mag > fmt.max_code:  # the other NaN codes of IEEE-style formats
        return math.nan
    v = _field_value(fmt, mag)
    return -v if negative else v


def is_negative_zero(code: int, fmt) -> bool:
    """Whether ``code`` is a -0 code of ``fmt`` (only ieee, fn and none formats have one).

    Formats with zero but no subnormals have several: the sign bit with any
    fraction in the zero exponent field.

    Examples
    --------
    >>> is_negative_zero(0x80, "float8_e4m3fn"), is_negative_zero(0x80, "float8_e4m3fnuz")
    (True, False)
    """
    fmt = get_format(fmt)
    code = _check_code(code, fmt)
    if not (isinstance(fmt, FloatFormat) and fmt.has_negative_zero and code & fmt.sign_bit):
        return False
    mag = code & fmt.magnitude_mask
    return mag <= fmt.max_code and _field_value(fmt, mag) == 0


# ---- the rounding grid and the choice between neighbours --------------------
@lru_cache(maxsize=None)
def _grid(fmt: FloatFormat) -> tuple[tuple[Fraction, ...], tuple[int, ...]]:
    """Sorted distinct magnitudes of codes 0..max_code, plus the virtual max + ulp(max).

    Returns (values, codes).  Zero codes with a nonzero fraction (formats with
    zero but no subnormals) are left out: ``encode`` only produces code 0.
    """
    values: list[Fraction] = []
    codes: list[int] = []
    for c in range(fmt.max_code + 2):  # max_code + 1: the virtual value
        v = _field_value(fmt, c)
        if values and v == values[-1]:
            continue
        values.append(v)
        codes.append(c)
    return tuple(values), tuple(codes)


def _pick_hi(a, lo, hi, lo_code, hi_code, negative, rounding, random_bits, ties_away) -> bool:
    """For lo < a < hi (magnitudes) with codes lo_code, hi_code: whether to pick hi."""
    if rounding == "toward_zero":
        return False
    if rounding == "toward_positive":
        return not negative
    if rounding == "toward_negative":
        return negative
    if rounding == "odd":
        return lo_code % 2 == 0  # hi when neither is odd (see the module docstring)
    if rounding == "stochastic":
        return math.floor((a - lo) / (hi - lo) * 2**32) > random_bits
    # nearest_even / nearest_away
    below, above = a - lo, hi - a
    if below != above:
        return above < below
    if rounding == "nearest_away" or ties_away:
        return True
    return lo_code % 2 == 1  # ties to the even magnitude code (lo if both are even)


def _round_magnitude(fmt: FloatFormat, a: Fraction, negative: bool, rounding: str,
                     random_bits) -> int:
    """Magnitude code chosen for a > 0 (``max_code + 1`` or more means overflow)."""
    values, codes = _grid(fmt)
    if a > values[-1]:
        return fmt.max_code + 2  # beyond the virtual value: overflow whatever the mode
    i = bisect.bisect_right(values, a) - 1
    if i < 0:
        return codes[0]  # below the smallest value of a format without zero
    if values[i] == a:
        return codes[i]  # exact (the virtual value itself overflows)
    hi = _pick_hi(a, values[i], values[i + 1], codes[i], codes[i + 1], negative,
                  rounding, random_bits, fmt.ties == "away")
    return codes[i + 1] if hi else codes[i]


# ---- encoding -----------------------------------------------------------------
def _check_rounding(rounding: str, random_bits) -> None:
    rounding_mode(rounding)  # ValueError naming the allowed modes
    if random_bits is not None:
        if (not isinstance(random_bits, Integral) or isinstance(random_bits, bool)
                or not 0 <= random_bits < 2**32):
            raise ValueError(f"random_bits must be an int in [0, 2**32), got {random_bits!r}")
    elif rounding == "stochastic":
        raise ValueError("rounding='stochastic' needs random_bits, an int in [0, 2**32)")


def _exact(x) -> tuple[str, bool, Fraction | None]:
    """(kind, negative, exact value) of an input; kind is 'nan', 'inf' or 'finite'."""
    if isinstance(x, Fraction):
        return "finite", x < 0, x
    if isinstance(x, Integral) and not isinstance(x, bool):
        return "finite", x < 0, Fraction(int(x))
    if isinstance(x, (str, bytes)):
        raise TypeError(f"x must be a real number, got {type(x).__name__}")
    if isinstance(x, np.floating) and np.dtype(type(x)).itemsize > 8:
        raise TypeError(f"x must fit in a float64 exactly, got {type(x).__name__}")
    try:
        f = float(x)  # exact for float16/32/64 and ml_dtypes scalars
    except (TypeError, ValueError):
        raise TypeError(f"x must be a real number, got {type(x).__name__}") from None
    negative = math.copysign(1.0, f) < 0
    if math.isnan(f):
        return "nan", negative, None
    if math.isinf(f):
        return "inf", negative, None
    return "finite", negative, Fraction(f)


def _encode_int(fmt: IntFormat, kind: str, negative: bool, value, rounding, random_bits) -> int:
    if kind == "nan":
        n = 0
    elif kind == "inf":
        n = fmt.min_int if negative else fmt.max_int
    else:
        a = abs(value) / _pow2(1, fmt.scale_exp)  # magnitude in units of the grid step
        lo = math.floor(a)
        if a != lo and _pick_hi(a, lo, lo + 1, lo, lo + 1, negative, rounding, random_bits,
                                False):
            lo += 1
        n = -lo if negative else lo
        n = min(max(n, fmt.min_int), fmt.max_int)  # integers always saturate
    return n & ((1 << fmt.bits) - 1) if fmt.bit_patterns else n


def _nan_or(fmt: FloatFormat, negative: bool, fallback: int) -> int:
    return fmt.nan_code(negative) if fmt.has_nan else fallback


def encode(x, fmt, *, rounding: str = "nearest_even", saturate: bool = False,
           random_bits: int | None = None) -> int:
    """The code of ``fmt`` that ``x`` rounds to, following docs/numerics.md exactly.

    Parameters
    ----------
    x : float, int, Fraction or numpy float scalar (up to float64)
        The input, taken at its exact value (float64 is rounded once, directly).
    fmt : str, FloatFormat or IntFormat
        Anything :func:`fpsim.formats.get_format` accepts.
    rounding : str
        One of :data:`fpsim.rounding.ROUNDINGS`.
    saturate : bool
        Send finite overflow and +-Inf to +-max (integers always saturate).
    random_bits : int, optional
        The 32-bit random integer ``r`` of ``rounding='stochastic'`` (required
        there, ignored by the other modes): pick ``hi`` iff
        ``floor((|x| - lo) / (hi - lo) * 2**32) > r``.

    Returns
    -------
    int
        The code (unsigned bit pattern) for float formats and ``bit_patterns``
        integer formats such as ``ocp_int8``; the integer value for plain
        integer formats (``int8``, ``uint8``, ``int4``, ``uint4``).

    Raises
    ------
    ValueError
        For an unknown rounding name or missing/out-of-range ``random_bits``.
    TypeError
        If ``x`` is not a real number, ``rounding`` not a string or
        ``saturate`` not a bool.

    Examples
    --------
    >>> hex(encode(464.0, "e4m3fn")), hex(encode(465.0, "e4m3fn"))
    ('0x7e', '0x7f')
    >>> encode(2.5, "int8"), encode(-2.5, "int8", rounding="nearest_away")
    (2, -3)
    >>> hex(encode(1.0 + 2**-5, "e4m3fn", rounding="stochastic", random_bits=2**30))
    '0x38'
    """
    fmt = get_format(fmt)
    _check_rounding(rounding, random_bits)
    saturate = check_saturate(saturate)
    kind, negative, value = _exact(x)
    if isinstance(fmt, IntFormat):
        return _encode_int(fmt, kind, negative, value, rounding, random_bits)

    sign = fmt.sign_bit if negative else 0
    max_code = fmt.max_code
    if kind == "nan":
        # Formats without NaN: a zero whose sign bit is the inverse of the NaN's (as ml_dtypes);
        # code 0 (the smallest value) if there is no zero either.
        inverse_zero = 0 if negative or not fmt.has_zero else fmt.sign_bit
        return _nan_or(fmt, negative, inverse_zero)
    if negative and not fmt.signed and (kind == "inf" or value != 0):
        # Negative input, unsigned format: 0 if the magnitude rounds to zero, else NaN;
        # formats with negatives="nan" (float8_e5m3fnu, as ml_dtypes): NaN always.
        if kind == "finite" and fmt.has_zero and fmt.negatives == "round":
            mag = _round_magnitude(fmt, -value, True, rounding, random_bits)
            if mag <= max_code and _field_value(fmt, mag) == 0:
                return 0
        return 0 if saturate else _nan_or(fmt, False, 0)
    if kind == "inf":
        if saturate:
            return sign | max_code
        if fmt.has_inf:
            return fmt.inf_code(negative)
        return _nan_or(fmt, negative, sign | max_code)
    if value == 0:
        if not fmt.has_zero:
            return 0 if saturate else _nan_or(fmt, negative, 0)
        return fmt.sign_bit if negative and fmt.has_negative_zero else 0

    mag = _round_magnitude(fmt, abs(value), negative, rounding, random_bits)
    if mag > max_code:  # overflow
        toward_max = (rounding == "toward_zero"
                      or (rounding == "toward_positive" and negative)
                      or (rounding == "toward_negative" and not negative))
        if saturate or toward_max:
            return sign | max_code
        if fmt.has_inf:
            return fmt.inf_code(negative)
        return _nan_or(fmt, negative, sign | max_code)
    if fmt.has_zero and _field_value(fmt, mag) == 0:
        return fmt.sign_bit if negative and fmt.has_negative_zero else 0
    return sign | mag


def round_value(x, fmt, *, rounding: str = "nearest_even", saturate: bool = False,
                random_bits: int | None = None) -> float:
    """``decode(encode(x, ...))`` as a Python float (-0 as ``-0.0``, NaN as ``nan``).

    Parameters and exceptions are those of :func:`encode`.

    Examples
    --------
    >>> round_value(0.3, "e2m1fn"), round_value(-1e-9, "e4m3fn"), round_value(1e6, "e5m2")
    (0.5, -0.0, inf)
    """
    fmt = get_format(fmt)
    code = encode(x, fmt, rounding=rounding, saturate=saturate, random_bits=random_bits)
    if is_negative_zero(code, fmt):
        return -0.0
    return float(decode(code, fmt))
