"""Hypothesis strategies for property-based tests of low-precision kernels.

Each strategy takes a format (a name such as ``"e4m3fn"``, or a format object)
and draws the inputs where casts break: the format's exact values, the exact
ties between neighbouring values, the edges of overflow and underflow, and the
specials.  A user's own kernel is tested against fpsim like this::

    from hypothesis import given
    import fpsim, fpsim.strategies as fst

    @given(fst.inputs_for("e4m3fn"))
    def test_my_encoder(x):
        assert my_encode(x) == fpsim.encode(x, "e4m3fn")

Arguments are checked when a strategy is created, not when it is drawn from:
a bad one raises :class:`hypothesis.errors.InvalidArgument`, as
``hypothesis.extra.numpy`` does, with a message naming the argument, the value
received and what to pass instead.  The ``allow_*`` flags follow
``st.floats``: ``None`` means "if the format has them", and ``True`` for a
format that has none is an error.

This is the only fpsim module that imports Hypothesis (a test dependency:
``pip install fpsim[test]``); import it as ``fpsim.strategies``.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
from hypothesis import reject
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from .formats import SPECIALS, FloatFormat, IntFormat, get_format, list_formats
from .rounding import ROUNDINGS

__all__ = [
    "quant_specs",
    "formats",
    "codes",
    "values",
    "midpoints",
    "near_overflow",
    "inputs_for",
    "arrays",
    "roundings",
]

_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


# ---- argument checks -----------------------------------------------------
def _check_format(fmt, name="fmt"):
    try:
        return get_format(fmt)
    except (ValueError, TypeError) as e:
        raise InvalidArgument(f"{name}={fmt!r}: {e}") from None


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgument(f"{name}={value!r}, but it must be True or False")
    return bool(value)


def _check_int(value, name, lo, hi):
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise InvalidArgument(f"{name}={value!r}, but it must be an int from {lo} to {hi}")
    if not lo <= value <= hi:
        raise InvalidArgument(f"{name}={value!r}, but it must be from {lo} to {hi}")
    return int(value)


def _check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in _DTYPES:
        raise InvalidArgument(
            f"dtype={dtype!r}, but it must be float16, float32 or float64 "
            "(the input dtypes fpsim.encode takes)"
        )
    return dt


_FEATURES = {  # allow_* argument -> (what, does the format have it?)
    "allow_nan": ("NaN", lambda f: isinstance(f, FloatFormat) and f.has_nan),
    "allow_infinity": ("Inf", lambda f: isinstance(f, FloatFormat) and f.has_inf),
    "allow_subnormal": ("subnormals", lambda f: isinstance(f, FloatFormat)
                        and f.smallest_subnormal < f.smallest_normal),
    "allow_negative_zero": ("-0", lambda f: isinstance(f, FloatFormat) and f.has_negative_zero),
}


def _check_allow(value, name, fmt):
    """An ``allow_*`` flag: None means "if fmt has it"; True needs fmt to have it."""
    what, has = _FEATURES[name]
    if value is None:
        return has(fmt)
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgument(f"{name}={value!r}, but it must be True, False or None")
    if value and not has(fmt):
        lacking = [n for n in list_formats() if not has(get_format(n))]
        raise InvalidArgument(
            f"{name}=True, but {fmt.name} has no {what}. Pass {name}=False, or "
            f"{name}=None to allow {what} only in formats that have them. Registered "
            f"formats without {what}: {', '.join(lacking)}"
        )
    return bool(value)


# ---- tables --------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _code_table(fmt):
    """Every code of fmt with its value (float64) and class, as numpy arrays.

    Plain integer formats list their integer values as codes.  Codes with the
    sign bit and a NaN value give -NaN, as :func:`fpsim.decode` does.
    """
    if isinstance(fmt, IntFormat):
        if fmt.bit_patterns:
            code, value = np.arange(1 << fmt.bits, dtype=np.int64), fmt.values()
        else:
            code = np.arange(fmt.min_int, fmt.max_int + 1, dtype=np.int64)
            value = np.ldexp(code.astype(np.float64), fmt.scale_exp)
        return code, value, np.where(value == 0, "zero", "normal").astype(object)
    code = np.arange(1 << fmt.bits, dtype=np.int64)
    value = fmt.values()
    if fmt.signed:
        value = np.where(np.isnan(value) & ((code & fmt.sign_bit) != 0), -np.nan, value)
    return code, value, fmt.classify()


def _unique(xs, dtype=np.float64):
    """Distinct values of xs in dtype, first occurrences in order, as an array.

    Compared by bit pattern: -0.0 and 0.0 (and NaNs of either sign) stay apart.
    """
    with np.errstate(over="ignore"):  # beyond dtype's range: +-Inf
        xs = np.asarray(xs, dtype=np.float64).astype(dtype)
    _, first = np.unique(xs.view(f"u{xs.itemsize}"), return_index=True)
    return xs[np.sort(first)]


def _scalars(xs, dtype):
    """Distinct dtype scalars of xs, in order (Hypothesis shows them as np.float32(...))."""
    return list(_unique(xs, dtype))


@functools.lru_cache(maxsize=256)
def _grid(fmt):
    """Sorted finite values of fmt, extended by the virtual value(s) beyond max."""
    if isinstance(fmt, IntFormat):
        ints = list(range(fmt.min_int, fmt.max_int + 1))
        virtual = [fmt.max_int + 1] + ([fmt.min_int - 1] if fmt.signed else [])
        return tuple(sorted(math.ldexp(n, fmt.scale_exp) for n in ints + virtual))
    _, value, _ = _code_table(fmt)
    pos = np.unique(np.abs(value[np.isfinite(value)]))
    # the value of magnitude code max_code + 1 (max may be subnormal in tiny formats)
    top = fmt.max + math.ldexp(1.0, max(fmt.emax, fmt.emin) - fmt.mantissa_bits)
    pos = [float(v) for v in pos] + [top]
    neg = [-v for v in pos if v != 0] if fmt.signed else []
    return tuple(sorted(neg + pos))


def _by_magnitude(xs):
    """Order for shrinking: small magnitudes first, positive before negative."""
    return sorted(xs, key=lambda x: (abs(x), x < 0))


def _around(anchors, dtype, max_ulps):
    """The finite non-zero dtype scalars within max_ulps ulps of each anchor."""
    out = []
    with np.errstate(over="ignore"):
        for a in anchors:
            a = dtype.type(a)  # rounded into dtype
            if not np.isfinite(a) or a == 0:
                continue
            out.append(a)
            inward = outward = a
            for _ in range(max_ulps):
                inward = np.nextafter(inward, dtype.type(0))
                outward = np.nextafter(outward, dtype.type(math.copysign(math.inf, a)))
                out += [x for x in (inward, outward) if np.isfinite(x) and x != 0]
    return out


def _signed(xs, fmt):
    return xs + [-x for x in xs] if fmt.signed else xs


def _overflow_anchors(fmt):
    """max, the overflow threshold and the virtual next value, per sign."""
    grid = _grid(fmt)
    pos = [grid[-2], (grid[-2] + grid[-1]) / 2, grid[-1]]
    if not fmt.signed:
        return pos
    if isinstance(fmt, IntFormat):
        return pos + [grid[1], (grid[0] + grid[1]) / 2, grid[0]]
    return pos + [-a for a in pos]


# ---- strategies ----------------------------------------------------------
def formats(*, kind=None, max_bits=16, include_custom=False):
    """Formats: the registered ones, and optionally random user-defined ones.

    Parameters
    ----------
    kind : {None, "float", "int"}
        Only float or only integer formats (default both).
    max_bits : int
        Largest width drawn, 1 to 16 (``int1`` and ``uint1`` have one bit; float
        formats at least two).
    include_custom : bool
        Also draw :class:`~fpsim.FloatFormat` / :class:`~fpsim.IntFormat`
        objects built from random fields (exponent widths up to 8, every
        ``specials`` convention, with and without subnormals, shifted biases,
        scaled and symmetric integers).

    Returns
    -------
    SearchStrategy of FloatFormat or IntFormat
        Shrinks towards ``float8_e4m3fn``, the first registered format.

    Raises
    ------
    InvalidArgument
        A bad argument, or no registered format fits and ``include_custom``
        is False.

    Examples
    --------
    >>> from hypothesis import find
    >>> find(formats(kind="float"), lambda f: not f.has_nan).name
    'float6_e2m3fn'
    >>> formats(kind="float", max_bits=3)
    Traceback (most recent call last):
    ...
    hypothesis.errors.InvalidArgument: no registered float format has at most max_bits=3 bits (the narrowest has 4); raise max_bits or pass include_custom=True
    """
    if kind not in (None, "float", "int"):
        raise InvalidArgument(f"kind={kind!r}, but it must be None, 'float' or 'int'")
    max_bits = _check_int(max_bits, "max_bits", 1, 16)
    include_custom = _check_bool(include_custom, "include_custom")
    if kind == "float" and max_bits < 2:
        raise InvalidArgument(f"max_bits={max_bits}, but a float format has at least 2 bits; "
                              "pass max_bits >= 2, or kind='int' or None for int1/uint1")
    registered = [get_format(n) for n in list_formats(kind)]
    fits = [f for f in registered if f.bits <= max_bits]
    parts = [st.sampled_from(fits)] if fits else []
    if include_custom:
        if kind in (None, "float") and max_bits >= 2:  # a float format has 2 bits or more
            parts.append(_custom_float_formats(max_bits))
        if kind in (None, "int"):
            parts.append(_custom_int_formats(max_bits))
    if not parts:
        narrowest = min(f.bits for f in registered)
        raise InvalidArgument(
            f"no registered {kind or ''}{' ' if kind else ''}format has at most "
            f"max_bits={max_bits} bits (the narrowest has {narrowest}); raise max_bits "
            "or pass include_custom=True"
        )
    return st.one_of(parts)


@st.composite
def _custom_float_formats(draw, max_bits):
    specials = draw(st.sampled_from(SPECIALS))
    signed = True if specials == "fnuz" else draw(st.booleans())
    width = max_bits - int(signed)  # exponent + mantissa bits
    if width < 1:
        reject()
    e = draw(st.integers(1, min(8, width)))
    m = draw(st.integers(0, min(10, width - e)))
    bias = 2 ** (e - 1) - 1 + draw(st.integers(-2, 2))
    try:
        return FloatFormat(exponent_bits=e, mantissa_bits=m, bias=bias, signed=signed,
                           specials=specials, subnormals=draw(st.booleans()))
    except ValueError:  # e.g. "ieee" with one exponent bit, or no finite value
        reject()


@st.composite
def _custom_int_formats(draw, max_bits):
    signed = draw(st.booleans())
    bits = draw(st.integers(1, max_bits))
    return IntFormat(bits=bits, signed=signed,
                     scale_exp=draw(st.integers(-8, 8)),
                     symmetric=signed and bits >= 2 and draw(st.booleans()),
                     bit_patterns=draw(st.booleans()))


def codes(fmt, *, allow_nan=None, allow_infinity=None):
    """Codes of ``fmt``, as Python ints: every input :func:`fpsim.decode` accepts.

    For float formats and ``ocp_int8`` these are bit patterns
    (``0 .. 2**bits - 1``), including every NaN payload and, for symmetric
    integers, the pattern that :func:`fpsim.encode` never produces; for the
    plain integer formats (``int8``, ``uint4``, ...) the integer values.

    Parameters
    ----------
    fmt : str or format
    allow_nan, allow_infinity : bool or None
        Draw NaN / Inf codes.  None (default): if the format has them.

    Returns
    -------
    SearchStrategy of int
        Shrinks towards code 0.

    Raises
    ------
    InvalidArgument
        Unknown format, or ``allow_nan=True`` / ``allow_infinity=True`` for a
        format without NaN / Inf.

    Examples
    --------
    >>> from hypothesis import find
    >>> hex(find(codes("e4m3fn"), lambda c: c > 0x7E))
    '0x7f'
    >>> hex(find(codes("e4m3fn", allow_nan=False), lambda c: c > 0x7E))
    '0x80'
    """
    fmt = _check_format(fmt)
    allow_nan = _check_allow(allow_nan, "allow_nan", fmt)
    allow_infinity = _check_allow(allow_infinity, "allow_infinity", fmt)
    code, _, kind = _code_table(fmt)
    keep = np.ones(code.shape, bool)
    if not allow_nan:
        keep &= kind != "nan"
    if not allow_infinity:
        keep &= kind != "inf"
    if keep.all():
        return st.integers(int(code[0]), int(code[-1]))
    return st.sampled_from(code[keep].tolist())


def values(fmt, *, allow_nan=False, allow_infinity=False, allow_subnormal=None,
           allow_negative_zero=False):
    """Python floats exactly representable in ``fmt`` (decoded from its codes).

    Keyword arguments mirror ``st.floats``.  Each value is drawn once however
    many codes hold it (``-0.0`` and ``0.0`` count as two values).

    Parameters
    ----------
    fmt : str or format
    allow_nan, allow_infinity, allow_negative_zero : bool or None
        Draw NaN (both signs where the format's NaN codes have them), +-Inf,
        ``-0.0``.  Default False; None: if the format has them.
    allow_subnormal : bool or None
        Draw subnormals.  Default None: if the format has them.

    Returns
    -------
    SearchStrategy of float
        Shrinks towards the value of code 0 (zero, or ``2**-127`` for
        ``float8_e8m0fnu``) and small magnitudes.

    Raises
    ------
    InvalidArgument
        Unknown format, or an ``allow_*=True`` for a feature the format lacks.

    Examples
    --------
    >>> from hypothesis import find
    >>> find(values("e4m3fn"), lambda x: x > 400)
    416.0
    >>> values("e2m1fn", allow_nan=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hypothesis.errors.InvalidArgument: allow_nan=True, but float4_e2m1fn has no NaN. Pass allow_nan=False, or allow_nan=None to allow NaN only in formats that have them. Registered formats without NaN: float6_e2m3fn, ...
    """
    fmt = _check_format(fmt)
    allow = {name: _check_allow(v, name, fmt) for name, v in [
        ("allow_nan", allow_nan), ("allow_infinity", allow_infinity),
        ("allow_subnormal", allow_subnormal), ("allow_negative_zero", allow_negative_zero)]}
    return st.sampled_from(_value_list(fmt, *allow.values()))


@functools.lru_cache(maxsize=256)
def _value_list(fmt, nan, inf, subnormal, negative_zero):
    _, value, kind = _code_table(fmt)
    keep = np.ones(value.shape, bool)
    if not nan:
        keep &= kind != "nan"
    if not inf:
        keep &= kind != "inf"
    if not subnormal:
        keep &= kind != "subnormal"
    if not negative_zero:
        keep &= ~((value == 0) & np.signbit(value))
    if isinstance(fmt, IntFormat):  # the -2**(bits-1) pattern of a symmetric format
        keep &= (value >= fmt.min) & (value <= fmt.max)
    return [float(x) for x in _unique(value[keep])]


def midpoints(fmt):
    """The exact midpoints between adjacent finite values of ``fmt`` (Python floats).

    These are the ties of round-to-nearest.  Above ``max`` the grid is extended
    by the virtual value ``max + ulp(max)`` (``docs/numerics.md``), so the
    midpoint between them, the overflow threshold, is included: e.g. 464 for
    ``float8_e4m3fn``.  Signed formats give both signs; the midpoint between
    0 and the smallest subnormal (the underflow threshold) is included.
    Every midpoint is exact in float64 (formats have at most 16 bits), but
    not always in float32 or float16.

    Parameters
    ----------
    fmt : str or format

    Returns
    -------
    SearchStrategy of float
        Shrinks towards small magnitudes.

    Raises
    ------
    InvalidArgument
        Unknown format.

    Examples
    --------
    >>> from hypothesis import find
    >>> find(midpoints("e4m3fn"), lambda x: x > 0)
    0.0009765625
    >>> find(midpoints("e4m3fn"), lambda x: x > 448)
    464.0
    """
    fmt = _check_format(fmt)
    return st.sampled_from(_midpoint_list(fmt))


@functools.lru_cache(maxsize=256)
def _midpoint_list(fmt):
    g = _grid(fmt)
    return _by_magnitude([(a + b) / 2 for a, b in itertools.pairwise(g)])


def near_overflow(fmt, *, dtype=np.float32, max_ulps=4):
    """Scalars of ``dtype`` within ``max_ulps`` ulps (of dtype) of where fmt overflows.

    The anchors are ``max``, the overflow threshold (the midpoint between
    ``max`` and the virtual next value ``max + ulp(max)``) and that virtual
    value, with both signs for signed formats (for integer formats the
    negative ones are ``min``, ``min - ulp/2``, ``min - ulp``).  Anchors that
    ``dtype`` cannot hold are skipped.

    Parameters
    ----------
    fmt : str or format
    dtype : float16, float32 (default) or float64
    max_ulps : int
        How many steps of ``np.nextafter`` on each side of each anchor, 0 to 64.

    Returns
    -------
    SearchStrategy of numpy scalars of ``dtype``

    Raises
    ------
    InvalidArgument
        A bad argument, or ``dtype`` cannot hold any anchor (e.g. float16 for
        ``bfloat16``, whose max is about 3.4e38).

    Examples
    --------
    >>> from hypothesis import find
    >>> float(find(near_overflow("e4m3fn"), lambda x: x > 464))
    464.0000305175781
    >>> near_overflow("bfloat16", dtype="float16")
    Traceback (most recent call last):
    ...
    hypothesis.errors.InvalidArgument: dtype=float16 cannot hold the values near the overflow of bfloat16 (max = 3.3895313892515355e+38); use dtype=float32 or float64
    """
    fmt = _check_format(fmt)
    dtype = _check_dtype(dtype)
    max_ulps = _check_int(max_ulps, "max_ulps", 0, 64)
    xs = _around(_overflow_anchors(fmt), dtype, max_ulps)
    if not xs:
        raise InvalidArgument(
            f"dtype={dtype} cannot hold the values near the overflow of {fmt.name} "
            f"(max = {fmt.max!r}); use dtype=float32 or float64"
        )
    return st.sampled_from(_scalars(_by_magnitude(xs), dtype))


def inputs_for(fmt, *, dtype=np.float32):
    """Scalars of ``dtype`` concentrated at the boundaries of ``fmt``, where kernels break.

    A mix (``st.one_of``, in this order, which is also the order Hypothesis
    shrinks towards) of: the format's values (with its specials); the exact
    midpoints between them; the float of ``dtype`` just below and just above
    each midpoint (``np.nextafter``); the values near overflow
    (:func:`near_overflow`); the values around the smallest subnormal, the
    underflow threshold and the smallest normal; +-0; +-Inf and NaN of both
    signs; floats within twice the format's range; and any float of
    ``dtype``'s width.  Values that ``dtype`` cannot hold exactly are rounded
    into it (e.g. the midpoints of ``float16`` in float16 inputs).

    Parameters
    ----------
    fmt : str or format
    dtype : float16, float32 (default) or float64

    Returns
    -------
    SearchStrategy of numpy scalars of ``dtype``

    Raises
    ------
    InvalidArgument
        Unknown format or bad dtype.

    Examples
    --------
    >>> import fpsim, numpy as np
    >>> from hypothesis import find
    >>> # a failing example is shrunk to the simplest tie: 2**-10 rounds to 0
    >>> find(inputs_for("e4m3fn"), lambda x: fpsim.encode(x, "e4m3fn")
    ...      != fpsim.encode(x, "e4m3fn", rounding="nearest_away"))
    np.float32(0.0009765625)
    """
    fmt = _check_format(fmt)
    dtype = _check_dtype(dtype)
    return st.one_of(_input_parts(fmt, dtype))


@functools.lru_cache(maxsize=256)
def _input_parts(fmt, dtype):
    has = [_FEATURES[name][1](fmt) for name in _FEATURES]
    mids = _unique(_midpoint_list(fmt), dtype)  # rounded into dtype if not exact
    with np.errstate(over="ignore"):
        beside = np.stack([np.nextafter(mids, dtype.type(-np.inf)),
                           np.nextafter(mids, dtype.type(np.inf))], axis=1).ravel()
    if isinstance(fmt, IntFormat):
        tiny = [math.ldexp(1.0, fmt.scale_exp), math.ldexp(0.5, fmt.scale_exp)]
    else:
        tiny = [fmt.smallest_subnormal, fmt.smallest_subnormal / 2, fmt.smallest_normal]
    near = _around(_overflow_anchors(fmt), dtype, 4)
    tiny = _around(_signed(tiny, fmt), dtype, 2)
    finfo = np.finfo(dtype)
    wide = min(2 * fmt.max, float(finfo.max))
    wide = float(dtype.type(wide)) if wide < float(finfo.max) else wide
    parts = [
        st.sampled_from(_scalars(_value_list(fmt, *has), dtype)),
        st.sampled_from(list(mids)),
        st.sampled_from(_scalars(beside[np.isfinite(beside)], dtype)),
    ]
    parts += [st.sampled_from(_scalars(_by_magnitude(xs), dtype)) for xs in (near, tiny) if xs]
    parts += [
        st.sampled_from(_scalars([0.0, -0.0], dtype)),
        st.sampled_from(_scalars([np.inf, -np.inf, np.nan, -np.nan], dtype)),
        st.floats(-wide, wide, width=finfo.bits).map(dtype.type),
        st.floats(width=finfo.bits).map(dtype.type),
    ]
    return tuple(parts)


def arrays(fmt, shape, *, dtype=np.float32, elements=None):
    """Arrays of ``dtype`` whose elements are drawn from :func:`inputs_for`.

    A thin wrapper over ``hypothesis.extra.numpy.arrays``.

    Parameters
    ----------
    fmt : str or format
    shape : int, tuple of int, or a strategy of them
        As for ``hypothesis.extra.numpy.arrays``.
    dtype : float16, float32 (default) or float64
    elements : SearchStrategy, optional
        Replaces ``inputs_for(fmt, dtype=dtype)``, e.g. ``values(fmt)``.

    Returns
    -------
    SearchStrategy of ndarray

    Raises
    ------
    InvalidArgument
        Unknown format, bad dtype or shape, or ``elements`` not a strategy.

    Examples
    --------
    >>> from hypothesis import find
    >>> find(arrays("e4m3fn", (2, 3)), lambda a: True)
    array([[0., 0., 0.],
           [0., 0., 0.]], dtype=float32)
    >>> arrays("e4m3fn", 3, dtype="int8")
    Traceback (most recent call last):
    ...
    hypothesis.errors.InvalidArgument: dtype='int8', but it must be float16, float32 or float64 (the input dtypes fpsim.encode takes)
    """
    fmt = _check_format(fmt)
    dtype = _check_dtype(dtype)
    if not isinstance(shape, st.SearchStrategy):
        dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
        if not (isinstance(dims, tuple) and all(
                isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0
                for d in dims)):
            raise InvalidArgument(
                f"shape={shape!r}, but it must be an int >= 0, a tuple of them, "
                "or a strategy for them"
            )
    if elements is None:
        elements = inputs_for(fmt, dtype=dtype)
    elif not isinstance(elements, st.SearchStrategy):
        raise InvalidArgument(
            f"elements={elements!r}, but it must be a Hypothesis strategy "
            f"(e.g. fpsim.strategies.values({fmt.name!r})) or None"
        )
    return hnp.arrays(dtype, shape, elements=elements)


def roundings(*, deterministic_only=False):
    """Rounding-mode names (:data:`fpsim.ROUNDINGS`).

    Parameters
    ----------
    deterministic_only : bool
        Leave out ``"stochastic"``.

    Returns
    -------
    SearchStrategy of str
        Shrinks towards ``"nearest_even"``.

    Raises
    ------
    InvalidArgument
        ``deterministic_only`` is not a bool.

    Examples
    --------
    >>> from hypothesis import find
    >>> find(roundings(), lambda r: r.startswith("toward"))
    'toward_zero'
    """
    deterministic_only = _check_bool(deterministic_only, "deterministic_only")
    return st.sampled_from([r for r in ROUNDINGS
                            if not (deterministic_only and r == "stochastic")])


def quant_specs(*, granularities=("tensor", "channel", "token", "block"), block_sizes=(16, 32),
                deterministic_only=True, element_formats=None):
    """QuantSpecs for scaled quantization (:class:`fpsim.QuantSpec`): element format,
    rounding, scale groups, block size and scale rule.

    Power-of-two rules (``floor``, ``ceil``, ``even``, ``rceil``) come with E8M0 scales and
    ``"amax"`` with float32 scales; calibration is ``"max"`` (others need data to be
    meaningful).

    Parameters
    ----------
    granularities : sequence of str
        Subset of ``("tensor", "channel", "token", "block")``.
    block_sizes : sequence of int
        Block lengths drawn for ``"block"``.
    deterministic_only : bool
        Leave out stochastic rounding.
    element_formats : sequence of formats or names, optional
        Default: the FP8/FP6/FP4 element formats and int8/int4.

    Returns
    -------
    SearchStrategy of QuantSpec

    Raises
    ------
    InvalidArgument
        An unknown granularity, a non-positive block size, a bad format name.

    Examples
    --------
    >>> from hypothesis import find
    >>> find(quant_specs(), lambda s: s.granularity == "block").block_size
    16
    """
    from .quant import GRANULARITIES, QuantSpec

    deterministic_only = _check_bool(deterministic_only, "deterministic_only")
    granularities = tuple(granularities)
    bad = [g for g in granularities if g not in GRANULARITIES]
    if bad or not granularities:
        raise InvalidArgument(f"granularities={granularities!r}: each must be one of "
                              f"{GRANULARITIES}, and at least one is needed")
    block_sizes = tuple(block_sizes)
    if not block_sizes or any(not isinstance(b, int) or isinstance(b, bool) or b < 1
                              for b in block_sizes):
        raise InvalidArgument(f"block_sizes={block_sizes!r}: pass positive ints, e.g. (16, 32)")
    if element_formats is None:
        element_formats = ("float8_e4m3fn", "float8_e5m2", "float6_e2m3fn", "float6_e3m2fn",
                           "float4_e2m1fn", "int8", "int4")
    fmts = [_check_format(f, "element_formats") for f in element_formats]
    if not fmts:
        raise InvalidArgument("element_formats must not be empty")

    @st.composite
    def build(draw):
        fmt = draw(st.sampled_from(fmts))
        g = draw(st.sampled_from(granularities))
        rule = draw(st.sampled_from(("amax", "floor", "ceil", "even", "rceil")))
        rounding = draw(roundings(deterministic_only=deterministic_only))
        kw = dict(format=fmt, granularity=g, rounding=rounding, scale_rule=rule,
                  axis=-1, saturate=True)
        if g == "block":
            kw["block_size"] = draw(st.sampled_from(block_sizes))
        return QuantSpec(**kw)

    return build()
