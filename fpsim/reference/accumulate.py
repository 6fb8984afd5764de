"""Readable pure-Python twins of the accumulation kernels: the test oracle.

One output at a time, on Python floats, ints and :class:`fractions.Fraction`
(exact): every sum is formed exactly and rounded once, by
:func:`fpsim.reference.round_value` for fpsim formats and by
:func:`round_ieee` below for the wide :class:`~fpsim.quant.accumulate.AccumulatorFormat`.
Slow on purpose; ``fpsim._kernels.accumulate`` must agree bit for bit
(``-0.0`` included).

Zero signs follow IEEE 754 (section 6.3, round to nearest): an exact sum of
zero is ``-0.0`` only when both addends are ``-0.0``; a non-zero sum that
rounds to zero keeps its sign where the format has -0.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .. import reference
from ..quant.accumulate import TENSORCORE_GROUP, AccumulatorFormat
from ..formats import FloatFormat

__all__ = ["FP32", "add", "dot_float", "dot_int", "dot_tensorcore", "matmul", "round_ieee",
           "round_to"]

#: float32 as an accumulator format.
FP32 = AccumulatorFormat(8, 23)


def _is_negative_zero(x: float) -> bool:
    return x == 0 and math.copysign(1.0, x) < 0


def floor_log2(q: Fraction) -> int:
    """The exponent E with 2**E <= |q| < 2**(E + 1), for q != 0."""
    q = abs(q)
    e = q.numerator.bit_length() - q.denominator.bit_length()
    return e if Fraction(2) ** e <= q else e - 1


def round_ieee(q: Fraction, fmt: AccumulatorFormat) -> float:
    """Exact ``q`` rounded to nearest-even in an IEEE-style format (overflow to Inf).

    Examples
    --------
    >>> round_ieee(Fraction(1) + Fraction(1, 2**24), FP32), round_ieee(Fraction(3, 2**150), FP32)
    (1.0, 2.802596928649634e-45)
    """
    if q == 0:
        return 0.0
    m = fmt.mantissa_bits
    e = max(floor_log2(q), fmt.emin)  # subnormals share the quantum of the smallest binade
    quantum = Fraction(2) ** (e - m)
    n = abs(q) / quantum
    lo = math.floor(n)
    frac = n - lo
    k = lo + 1 if frac > Fraction(1, 2) or (frac == Fraction(1, 2) and lo % 2 == 1) else lo
    mag = k * quantum
    if mag > fmt.max:
        mag = math.inf
    return math.copysign(float(mag), q)


def round_to(q: Fraction, fmt) -> float:
    """Exact ``q`` (non-zero or +0) rounded into the accumulator format ``fmt``."""
    if isinstance(fmt, FloatFormat):
        return reference.round_value(q, fmt)
    return round_ieee(q, fmt)


def add(x: float, y: float, fmt) -> float:
    """``x + y`` rounded once into ``fmt`` (inputs are Python floats)."""
    if not (math.isfinite(x) and math.isfinite(y)):
        s = x + y  # Inf or NaN, exactly as IEEE adds them
        return reference.round_value(s, fmt) if isinstance(fmt, FloatFormat) else s
    exact = Fraction(x) + Fraction(y)
    if exact == 0:
        zero = -0.0 if (_is_negative_zero(x) and _is_negative_zero(y)) else 0.0
        return reference.round_value(zero, fmt) if isinstance(fmt, FloatFormat) else zero
    return round_to(exact, fmt)


def product(x, y) -> float:
    """The exact product of two float32 values, as a float (it fits in float64)."""
    return float(x) * float(y)


def dot_float(a_row, b_col, fmt, promote: int = 0) -> float:
    """Sequential sum over k in ``fmt``; with ``promote``, the accumulator is added to a
    float32 total and restarted every ``promote`` products."""
    acc, total = 0.0, 0.0
    for k, (x, y) in enumerate(zip(a_row, b_col)):
        acc = add(acc, product(x, y), fmt)
        if promote and (k + 1) % promote == 0:
            total = add(total, acc, FP32)
            acc = 0.0
    return add(total, acc, FP32) if promote else acc


def dot_tensorcore(a_row, b_col, bits: int, promote: int = 0,
                   group: int = TENSORCORE_GROUP) -> float:
    """The tensor-core model of :mod:`fpsim.quant.accumulate`, one group at a time (finite inputs)."""
    acc, total = 0.0, 0.0
    K = len(a_row)
    for g0 in range(0, K, group):
        g1 = min(g0 + group, K)
        products = [Fraction(product(a_row[k], b_col[k])) for k in range(g0, g1)]
        terms = [p for p in products + [Fraction(acc)] if p != 0]
        group_sum = Fraction(0)
        if terms:
            E = max(floor_log2(t) for t in terms)  # the largest exponent
            quantum = Fraction(2) ** (E - bits)
            # each product truncated toward zero to a multiple of the quantum
            group_sum = sum((math.trunc(p / quantum) * quantum for p in products), Fraction(0))
        acc = add(acc, float(group_sum), FP32)
        if promote and g1 % promote == 0:
            total = add(total, acc, FP32)
            acc = 0.0
    return add(total, acc, FP32) if promote else acc


def dot_int(a_row, b_col) -> tuple[int, bool]:
    """Exact integer sum and whether a running sum left the int32 range."""
    acc, overflow = 0, False
    for x, y in zip(a_row, b_col):
        acc += int(x) * int(y)
        overflow = overflow or not (-(2**31) <= acc <= 2**31 - 1)
    return acc, overflow


def matmul(a, b, kind: str, *, fmt=None, bits: int = 14, promote: int = 0) -> np.ndarray:
    """Every output by the twin of ``kind`` ("float", "tensorcore", "int"); float64 array
    (int64 sums and an overflow mask for "int")."""
    a = np.asarray(a)
    b = np.asarray(b)
    M, N = a.shape[0], b.shape[1]
    out = np.empty((M, N), dtype=np.int64 if kind == "int" else np.float64)
    overflow = np.zeros((M, N), dtype=bool)
    for i in range(M):
        for j in range(N):
            if kind == "float":
                out[i, j] = dot_float(a[i], b[:, j], fmt, promote)
            elif kind == "tensorcore":
                out[i, j] = dot_tensorcore(a[i], b[:, j], bits, promote)
            else:
                out[i, j], overflow[i, j] = dot_int(a[i], b[:, j])
    return (out, overflow) if kind == "int" else out
