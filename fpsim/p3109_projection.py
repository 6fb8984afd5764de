"""IEEE P3109 projection specifications, by their P3109 names, on fpsim's casts.

A P3109 projection specification is a pair (rounding mode, saturation mode) (P3109 interim
report, section 4.2).  ``wProject`` (section 4.7.3) rounds a value to the format's precision
with an unbounded exponent range above (``wRoundToPrecision``, 4.7.4), then decides what an
out-of-range result becomes (``wSaturate``, 4.7.5), then encodes it.

- The six deterministic rounding modes are fpsim's own (:data:`ROUNDING`): they round exactly
  as :func:`fpsim.encode` does, which also goes past the largest finite value to one virtual
  code; ``saturate=True`` gives the clamped code and ``saturate=False`` tells whether the
  result left the range.
- The saturation mode then picks, per element, that clamped code, +-Inf or NaN, line by line
  as the report's table of ``wSaturate``.  ``SatFinite`` is fpsim's ``saturate=True``
  exactly; ``SatPropagate`` and ``SatNone`` have no fpsim equivalent (:data:`SATURATION`).
- ``StochasticA``, ``StochasticB`` and ``StochasticC`` round away from zero when the fraction
  ``nu`` (in ulps) of the input beyond its lower neighbour, and ``N`` random bits ``R``
  (``0 <= R < 2**N``), satisfy::

      A: floor(nu * 2**N) + R >= 2**N                     (nu truncated to N bits)
      B: floor(nu * 2**(N+1)) + (2*R + 1) >= 2**(N+1)     (nu rounded to N bits, ties up)
      C: RNITE(nu * 2**N) + R >= 2**N                     (nu rounded to N bits, ties even)

  so a value on the grid never moves and, for an ``nu`` with at most ``N`` bits, each is
  unbiased.  fpsim's ``stochastic`` mode is ``StochasticA`` with ``N = 32`` (it picks hi iff
  ``floor(nu * 2**32) > r``, that is ``R = 2**32 - 1 - r``), so that case runs on fpsim's
  kernel and random stream; every other case is the NumPy code below, with ``N`` bits drawn
  from ``rng`` or given as ``random_ints``.

``OvfInf`` (the name the P3109 exemplar files of version 3.2.0 use) is accepted for
``SatNone``.  Formats: any P3109 binary format fpsim can hold, by fpsim name
(``p3109_k8p4se``), P3109 name (``Binary8p4se``) or object (:func:`fpsim.formats.p3109`).
"""

from __future__ import annotations

import difflib
import numbers
import re
from types import MappingProxyType

import numpy as np

from . import codec
from .formats import FloatFormat, get_format, p3109
from .rounding import as_generator

__all__ = ["ROUNDING", "SATURATION", "STOCHASTIC", "project", "encode"]

#: P3109 rounding mode -> the fpsim ``rounding=`` that is the same map (None: the stochastic
#: modes, implemented here; StochasticA with 32 bits from ``rng`` uses fpsim's 'stochastic').
ROUNDING = MappingProxyType({
    "NearestTiesToEven": "nearest_even",
    "NearestTiesToAway": "nearest_away",
    "TowardPositive": "toward_positive",
    "TowardNegative": "toward_negative",
    "TowardZero": "toward_zero",
    "ToOdd": "odd",
    "StochasticA": None,
    "StochasticB": None,
    "StochasticC": None,
})

#: P3109 saturation mode -> the fpsim ``saturate=`` that gives the same codes for every
#: P3109 format, rounding mode and input (None: no such value; the mode is applied here).
SATURATION = MappingProxyType({
    "SatFinite": True,
    "SatPropagate": None,
    "SatNone": None,
})

#: The stochastic rounding modes, which need ``random_bits``.
STOCHASTIC = ("StochasticA", "StochasticB", "StochasticC")

_SATURATION_ALIASES = {"OvfInf": "SatNone"}
#: the most random bits: nu of a float64 input has at most 52 bits after the point, so more
#: bits give the same P(away); 52 keeps every integer of the tests on nu within int64
_MAX_RANDOM_BITS = 52
#: float64 holds every value of a P3109 format with at most 11 exponent bits (2**1023 at most)
_MAX_EXPONENT_BITS = 11
_NAME = re.compile(r"(?:binary|p3109_k)(\d+)p(\d+)([su])([ef])")


# ---- argument checks -------------------------------------------------------
def _check_name(value, allowed, argument: str, aliases=()) -> str:
    """``value`` if it is one of ``allowed`` (or an alias), else a ValueError that lists them."""
    if isinstance(value, str) and value in allowed:
        return value
    if isinstance(value, str) and value in dict(aliases):
        return dict(aliases)[value]
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str, one of {', '.join(allowed)}; "
                        f"got {type(value).__name__}")
    hint = ""
    fpsim_names = {v: k for k, v in ROUNDING.items() if v is not None}
    if value in fpsim_names:
        hint = f" (fpsim's {value!r} is P3109's {fpsim_names[value]!r})"
    elif value == "stochastic" and argument == "rounding":
        hint = " (fpsim's 'stochastic' is P3109's 'StochasticA' with random_bits=32)"
    else:
        by_lower = {a.lower(): a for a in list(allowed) + list(dict(aliases))}
        close = difflib.get_close_matches(value.lower(), list(by_lower), n=1, cutoff=0.5)
        if close:
            hint = f" (did you mean {by_lower[close[0]]!r}?)"
    raise ValueError(f"unknown {argument} {value!r}{hint}; allowed: {', '.join(allowed)}")


def _p3109_format(fmt) -> FloatFormat:
    """The P3109 format named or given by ``fmt`` (``Binary8p4se`` spellings included)."""
    if isinstance(fmt, str):
        m = _NAME.fullmatch(fmt.strip().lower())
        if m:
            k, p, signed, extended = int(m[1]), int(m[2]), m[3] == "s", m[4] == "e"
            _check_parameters(fmt, k, p, signed)
            return p3109(k, p, signed=signed, domain="extended" if extended else "finite")
        if fmt.strip().lower().startswith(("binary", "p3109_k")):
            raise ValueError(f"fmt {fmt!r} is not a P3109 format name: write "
                             "Binary{K}p{P}{s|u}{e|f} (e.g. 'Binary8p4se') or "
                             "p3109_k{K}p{P}{s|u}{e|f} (e.g. 'p3109_k8p4se')")
    elif not isinstance(fmt, FloatFormat):
        raise TypeError(f"fmt must be a P3109 format name ('Binary8p4se', 'p3109_k8p4se') or "
                        f"a FloatFormat from fpsim.p3109(); got {type(fmt).__name__}")
    f = get_format(fmt)
    if not (isinstance(f, FloatFormat) and f.specials in ("p3109_extended", "p3109_finite")):
        hint = ""
        if (isinstance(f, FloatFormat) and f.specials == "fnuz" and f.signed
                and f.bias == 2 ** (f.exponent_bits - 1)):
            hint = (f" ({f.name} is bit for bit 'Binary{f.bits}p{f.mantissa_bits + 1}sf': "
                    "pass that)")
        raise ValueError(f"fmt must be an IEEE P3109 format (e.g. 'p3109_k8p4se' or "
                         f"'Binary8p4se'), got {f.name}{hint}")
    _check_parameters(fmt if isinstance(fmt, str) else f.name, f.bits,
                      f.mantissa_bits + 1, f.signed)
    return f


def _check_parameters(name: str, k: int, p: int, signed: bool) -> None:
    """ValueError unless P3109 defines Binary{k}p{p} and float64 holds all its values."""
    top = k - 1 if signed else k
    if not 3 <= k <= 16:
        raise ValueError(f"fmt {name!r} has K = {k} bits: P3109 formats have K >= 3 and "
                         "fpsim's have at most 16; allowed: K from 3 to 16")
    if not 1 <= p <= top:
        raise ValueError(f"fmt {name!r} has precision P = {p}: {'a ' if signed else 'an un'}"
                         f"signed P3109 format of K = {k} bits has 1 <= P <= {top}")
    ebits = k - p + (not signed)
    if ebits > _MAX_EXPONENT_BITS:
        raise ValueError(
            f"fmt {name!r} has {ebits} exponent bits: its values reach 2**{2 ** (ebits - 1) - 1}, "
            f"beyond float64, which fpsim computes in; allowed: at most {_MAX_EXPONENT_BITS} "
            f"exponent bits, that is P >= {k - _MAX_EXPONENT_BITS + (not signed)} for "
            f"{'' if signed else 'un'}signed formats of K = {k} bits")


def _check_random(rounding, random_bits, rng, random_ints, shape):
    """The random integers R of a stochastic mode (None for a deterministic one)."""
    if rounding not in STOCHASTIC:
        for name, v in (("random_bits", random_bits), ("rng", rng), ("random_ints", random_ints)):
            if v is not None:
                raise ValueError(f"{name} is only for the stochastic modes "
                                 f"({', '.join(STOCHASTIC)}); rounding={rounding!r} is "
                                 "deterministic")
        return None
    if random_bits is None:
        raise ValueError(f"rounding={rounding!r} needs random_bits=N, the number of random "
                         f"bits per element (an int from 1 to {_MAX_RANDOM_BITS})")
    if isinstance(random_bits, (bool, np.bool_)) or not isinstance(random_bits, numbers.Integral):
        raise TypeError(f"random_bits must be an int from 1 to {_MAX_RANDOM_BITS}, got "
                        f"{random_bits!r} of type {type(random_bits).__name__}")
    n = int(random_bits)
    if not 1 <= n <= _MAX_RANDOM_BITS:
        raise ValueError(f"random_bits must be an int from 1 to {_MAX_RANDOM_BITS}, got {n}")
    if (rng is None) == (random_ints is None):
        raise ValueError(f"rounding={rounding!r} needs exactly one of rng= (an int seed or a "
                         "numpy.random.Generator, to draw the random bits) and random_ints= "
                         f"(the integers R themselves, 0 <= R < 2**{n}); got "
                         + ("neither" if rng is None else "both"))
    if random_ints is None:
        return n, rng
    r = np.asarray(random_ints)
    if r.dtype.kind not in "iu":
        raise TypeError(f"random_ints must be an integer array, got dtype {r.dtype}")
    if r.size and (r.min() < 0 or r.max() >= 2**n):
        raise ValueError(f"random_ints must satisfy 0 <= R < 2**random_bits = {2**n}; got "
                         f"values in [{r.min()}, {r.max()}]")
    try:
        return n, np.broadcast_to(r.astype(np.int64), shape)
    except ValueError:
        raise ValueError(f"random_ints of shape {r.shape} does not broadcast to x's shape "
                         f"{shape}") from None


# ---- rounding -----------------------------------------------------------------
def _round_stochastic(a, fmt: FloatFormat, variant: str, n: int, r):
    """Magnitude codes of |x| = ``a`` (finite, >= 0) rounded by StochasticA/B/C with ``n``
    bits ``r``, and whether the result is past the largest finite value (float64 arrays)."""
    top = fmt.max_code
    lo = codec.encode(a, fmt, rounding="toward_zero", saturate=True).astype(np.int64)
    ulp_top = np.ldexp(1.0, fmt.emax - fmt.mantissa_bits)  # from max to code top + 1
    beyond = a - fmt.max >= ulp_top  # |R| > max whatever the rounding
    lo_val = codec.decode(lo, fmt, dtype=np.float64)
    step = np.where(lo >= top, ulp_top,  # 2**Q, exact: neighbouring values of one binade
                    codec.decode(np.minimum(lo + 1, top), fmt, dtype=np.float64) - lo_val)
    nu = np.divide(a - lo_val, step, out=np.zeros_like(a), where=~beyond)  # exact, in [0, 1)
    if variant == "StochasticA":
        away = np.floor(np.ldexp(nu, n)).astype(np.int64) + r >= 2**n
    elif variant == "StochasticB":
        away = np.floor(np.ldexp(nu, n + 1)).astype(np.int64) + (2 * r + 1) >= 2 ** (n + 1)
    else:  # StochasticC; np.rint rounds half to even (RNITE)
        away = np.rint(np.ldexp(nu, n)).astype(np.int64) + r >= 2**n
    mag = lo + away
    return mag, beyond | (mag > top)


def _round_fpsim_stochastic(a, fmt: FloatFormat, rng):
    """StochasticA with 32 bits on fpsim's kernel: magnitude codes and overflow of ``a``."""
    c = codec.encode(a, fmt, rounding="stochastic", saturate=False, rng=rng).astype(np.int64)
    over = (c == fmt.nan_code()) | (c == fmt.inf_code())
    return np.where(over, fmt.max_code, c), over


def _codes_from_magnitudes(x, fmt: FloatFormat, mag, over):
    """(clamped code, left-the-range flag) of finite x from its rounded magnitude code."""
    neg = x < 0
    clamped = np.minimum(mag, fmt.max_code)
    if fmt.signed:
        code = np.where(neg & (mag > 0), fmt.sign_bit | clamped, clamped)
        escaped = over
    else:  # a negative non-zero result is below M_lo = 0
        code = np.where(neg, 0, clamped)
        escaped = over | (neg & (mag > 0))
    return code, escaped


# ---- saturation ---------------------------------------------------------------------
def _saturate(x, fmt: FloatFormat, clamped, escaped, rounding: str, saturation: str):
    """wSaturate then wEncode: ``clamped`` is the code when the result is clamped to
    [M_lo, M_hi] (fpsim's saturate=True), ``escaped`` marks finite x whose rounded value left
    that range.  Only the cases that give +-Inf or NaN differ from ``clamped``."""
    extended = fmt.specials == "p3109_extended"
    out = clamped.astype(np.int64)
    if saturation == "SatFinite":
        return out
    pos_inf, neg_inf = np.isposinf(x), np.isneginf(x)
    if extended:  # SatPropagate and SatNone: +Inf stays +Inf
        out[pos_inf] = fmt.inf_code(False)
    if extended and fmt.signed:  # -Inf stays -Inf in a signed extended format
        out[neg_inf] = fmt.inf_code(True)
    if saturation == "SatPropagate":
        return out
    # SatNone
    if not fmt.signed:
        out[neg_inf] = fmt.nan_code()
    above = escaped & (x > 0)
    to_max = rounding in ("TowardZero", "TowardNegative") or (
        rounding == "ToOdd" and not fmt.signed and extended)
    if extended and not to_max:
        out[above] = fmt.inf_code(False)
    below = escaped & (x < 0)
    if rounding not in ("TowardZero", "TowardPositive"):
        if not fmt.signed:
            out[below] = fmt.nan_code()
        elif extended:
            out[below] = fmt.inf_code(True)
    return out


# ---- public API -----------------------------------------------------------------------
def encode(x, fmt, *, rounding="NearestTiesToEven", saturation="SatFinite", random_bits=None,
           rng=None, random_ints=None):
    """Codes of the P3109 projection of ``x`` onto ``fmt`` (``wProject``, then its code).

    Parameters
    ----------
    x : array_like of float16, float32 or float64
        Values to project, taken exactly (float64 inputs are rounded once).
    fmt : str or FloatFormat
        A P3109 format: ``"p3109_k8p4se"``, ``"Binary8p4se"`` or :func:`fpsim.formats.p3109`.
    rounding : str
        A P3109 rounding mode, a key of :data:`ROUNDING`.
    saturation : str
        ``"SatFinite"`` (default), ``"SatPropagate"`` or ``"SatNone"`` (alias ``"OvfInf"``).
    random_bits : int, optional
        N, the number of random bits per element: required by the stochastic modes (1 to 52),
        refused by the others.
    rng : int or numpy.random.Generator, optional
        Source of the random bits of a stochastic mode (draws ``R`` uniform in
        ``[0, 2**N)``; StochasticA with N = 32 uses fpsim's own stream).
    random_ints : array_like of int, optional
        The integers ``R`` themselves, broadcast to x's shape: instead of ``rng``.

    Returns
    -------
    ndarray
        Codes with x's shape, uint8 for K <= 8 bits, else uint16.

    Raises
    ------
    ValueError
        An unknown rounding or saturation name, a format that is not P3109, a stochastic mode
        without ``random_bits`` or without (or with both) ``rng`` and ``random_ints``,
        random options given to a deterministic mode, ``R`` out of range.
    TypeError
        ``x`` not floating point, ``random_bits`` not an int, ``random_ints`` not integers.

    Examples
    --------
    >>> from fpsim.p3109_projection import encode
    >>> encode([300.0, -1e9, float("inf")], "Binary8p4se", saturation="SatNone").tolist()
    [127, 255, 127]
    >>> encode([300.0, -1e9, float("inf")], "Binary8p4se", saturation="SatPropagate").tolist()
    [126, 254, 127]
    """
    rounding = _check_name(rounding, tuple(ROUNDING), "rounding")
    saturation = _check_name(saturation, tuple(SATURATION), "saturation",
                             aliases=tuple(_SATURATION_ALIASES.items()))
    f = _p3109_format(fmt)
    # validates x as fpsim.encode does; NaN, +-Inf and zeros do not depend on the rounding
    base = codec.encode(x, f, rounding=ROUNDING[rounding] or "nearest_even", saturate=True)
    xf = np.asarray(x).astype(np.float64)
    rand = _check_random(rounding, random_bits, rng, random_ints, xf.shape)
    if rand is None:
        free = codec.encode(xf, f, rounding=ROUNDING[rounding], saturate=False)
        escaped = np.isfinite(xf) & ((free == f.nan_code()) | (free == f.inf_code(False))
                                     | (free == f.inf_code(True)))
        clamped = base
    else:
        n, r = rand
        finite = np.isfinite(xf)
        a = np.where(finite, np.abs(xf), 0.0)
        if isinstance(r, np.ndarray):
            mag, over = _round_stochastic(a, f, rounding, n, r)
        elif rounding == "StochasticA" and n == 32:
            mag, over = _round_fpsim_stochastic(a, f, r)
        else:
            draws = as_generator(r).integers(0, 2**n, size=xf.shape, dtype=np.int64)
            mag, over = _round_stochastic(a, f, rounding, n, draws)
        code, escaped = _codes_from_magnitudes(xf, f, mag, over)
        clamped = np.where(finite, code, base)
        escaped &= finite
    out = _saturate(xf, f, np.asarray(clamped), np.asarray(escaped), rounding, saturation)
    return out.astype(f.code_dtype)[()] if out.ndim == 0 else out.astype(f.code_dtype)


def project(x, fmt, *, rounding="NearestTiesToEven", saturation="SatFinite", random_bits=None,
            rng=None, random_ints=None):
    """The P3109 projection of ``x`` onto ``fmt``, as float64 values (``wProject``).

    Parameters
    ----------
    x, fmt, rounding, saturation, random_bits, rng, random_ints
        As for :func:`encode`.

    Returns
    -------
    ndarray
        float64 values with x's shape (NaN for the NaN code, +-Inf for the infinities).

    Raises
    ------
    ValueError, TypeError
        As for :func:`encode`.

    Examples
    --------
    >>> from fpsim.p3109_projection import project
    >>> project([1.0625, 1.1875, 300.0], "p3109_k8p4se", rounding="NearestTiesToEven").tolist()
    [1.0, 1.25, 224.0]
    >>> project([1.0625] * 4, "p3109_k8p4se", rounding="StochasticC", random_bits=2,
    ...         random_ints=[0, 1, 2, 3]).tolist()
    [1.0, 1.0, 1.125, 1.125]
    """
    codes = encode(x, fmt, rounding=rounding, saturation=saturation, random_bits=random_bits,
                   rng=rng, random_ints=random_ints)
    return codec.decode(codes, _p3109_format(fmt), dtype=np.float64)
