"""Dot products and matmul with an emulated accumulator.

``qmatmul(a, b, a_spec=..., b_spec=..., accumulator=...)`` quantizes the
operands (optionally), forms every product exactly and sums the products of
each output in a chosen accumulator.  It answers "what would this GEMM give
with an FP16 / BF16 / FP22 / tensor-core / int32 accumulator?" bit for bit.

Accumulators (``accumulator=``)
-------------------------------
``"exact"``
    float64 (BLAS).  Products of float32 operands are exact in float64, so
    the only error is float64 summation, at most about ``K * 2**-53`` of
    ``sum |products|``: the reference the others are measured against.
``"fp32"``, ``"fp16"``, ``"bf16"``, a FloatFormat or format name, an :class:`AccumulatorFormat` or ``"eXmY"``
    Sequential summation over k (k = 0, 1, ..., K-1) in that format:
    ``acc = round(acc + a[i, k] * b[k, j])`` with one correct rounding
    (nearest-even, ``saturate=False``: overflow gives Inf, or NaN in formats
    without Inf) of the exact sum at every step.  ``"fp32"`` is one fused
    multiply-add per product.  Formats wider than 16 bits, such as E8M13
    ("FP22"), are :class:`AccumulatorFormat` s or ``"e8m13"`` strings.
``"aligned_truncation"`` (older name ``"tensorcore"``)
    A one-knob *approximation* of a tensor core: groups of products aligned to the largest
    exponent and truncated to ``accumulator_bits`` bits, then rounded into FP32 (see below);
    for research on hypothetical hardware.  It is not the Hopper model: what real GPUs do,
    bit for bit, is :mod:`fpsim.mma` (QuantConfig accumulator ``"Hopper:wgmma:..."``).
``"int32"``
    Integer codes of integer-quantized operands (``"int8"``...) multiplied
    and summed exactly; partial sums that leave the int32 range are
    detected, and the result wraps as a two's-complement int32 register
    does (see *Integer accumulation*).

With ``promote_every=N`` (any accumulator but ``"exact"`` and ``"int32"``)
the accumulator restarts at 0 after every N products, and its value is added
to a float32 total (round to nearest even): DeepSeek-V3's promotion of the
tensor cores' partial sums to FP32 registers on CUDA cores every
N_C = 128 elements (DeepSeek-AI, "DeepSeek-V3 Technical Report",
arXiv:2412.19437, section 3.3.2).  The result is then float32.

The tensor-core model
---------------------
For each output the products are taken in groups of
:data:`TENSORCORE_GROUP` = 32 consecutive k (the K extent of one Hopper FP8
``wgmma`` instruction; DeepSeek-V3 notes that 128 elements are 4 WGMMAs).
In each group:

1. E = the largest exponent (``floor(log2 |x|)``) among the group's
   products and the running accumulator;
2. every product is truncated toward zero to a multiple of
   ``2**(E - accumulator_bits)``, i.e. it keeps ``accumulator_bits``
   bits after the position of the leading bit of the largest term
   (alignment to the largest exponent with truncation of the shifted-out
   bits, as Fasi, Higham, Mikaitis and Pranesh measured on V100/T4/A100
   tensor cores, "Numerical behavior of NVIDIA tensor cores", PeerJ
   Comput. Sci. 7:e330, 2021);
3. the truncated products are summed exactly and the group sum is added
   to the float32 accumulator, rounded to nearest even.

``accumulator_bits=14`` (default) follows DeepSeek-V3's measurement that
the FP8 GEMM accumulation on H800 GPUs "is limited to retaining around 14
bits".  The measurement does not pin down every detail (whether the 14
bits include the leading bit, the rounding of the final addition), so take
this as a model with one knob, not a bit-exact H100.  SageAttention2
(Zhang et al., arXiv:2411.10958) reports the ``mma.f32.f8.f8.f32``
accumulator as FP22 (1 sign, 8 exponent, 13 mantissa bits): compare with
``accumulator="e8m13"``.

Operands and quantization
-------------------------
``a`` is (..., M, K) and ``b`` (..., K, N), batch dimensions broadcasting as
in :func:`numpy.matmul`; a 1-D ``a`` is a row (1, K) and a 1-D ``b`` a
column (K, 1), their unit dimension dropped from the result.  Operands are
converted to float32 (float64 rounds to nearest), then fake-quantized with
:func:`fpsim.fake_quantize` if a spec is given.  Products of float32 values
are exact in float64.

**Scale groups run along the contraction axis K.**  A spec given as a
*recipe name* (``"mxfp8_e4m3"``, ``"int8_channel"``, ``"e4m3fn"``...) gets
``axis=-1`` for ``a`` and ``axis=-2`` for ``b``: MX blocks lie along K in
both operands, ``"int8_channel"`` gives ``a`` one scale per row and ``b``
one per column (per output channel).  A :class:`fpsim.QuantSpec` is used as
given, on the (at least 2-D) operand: for ``b`` pass ``axis=0`` (or -2)
to group along K.

Integer accumulation
--------------------
With ``accumulator="int32"`` both specs must have integer element formats
with per-tensor scales or per-vector scales along K (``a``: one per row,
``b``: one per column), so that the scales factor out of the sum.  The
integer codes are multiplied exactly and summed in k order; an output whose
running sum leaves [-2**31, 2**31 - 1] at any step is flagged.  The result
is what an int32 register holds, the exact sum wrapped modulo 2**32 (equal
to the exact sum when nothing overflowed), times ``scale_a * scale_b``
(computed in float64, rounded once to float32).  Overflow issues an
:class:`AccumulatorOverflowWarning`, or is returned in the
:class:`AccumulationReport` with ``return_details=True``.
"""

from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from .._kernels import use_parallel
from .._kernels import accumulate as kern
from .._kernels import scalar as cast
from .. import dispatch
from ..formats import FloatFormat, IntFormat, get_format
from .recipes import fake_quantize, quantize_tensor
from ._args import renamed
from .spec import QuantSpec, resolve_spec
from ..rounding import as_generator

__all__ = [
    "ACCUMULATORS",
    "TENSORCORE_GROUP",
    "AccumulationReport",
    "AccumulatorFormat",
    "AccumulatorOverflowWarning",
    "int_matmul",
    "qdot",
    "qmatmul",
]

#: Accumulator names; any float format name, FloatFormat, AccumulatorFormat
#: or ``"eXmY"`` string is accepted too.
ACCUMULATORS = ("exact", "fp32", "fp16", "bf16", "aligned_truncation", "tensorcore", "int32")

#: Products per group in the tensor-core model (the K of one FP8 wgmma).
TENSORCORE_GROUP = 32

_NO_LUT = np.zeros(1)
_NO_LUT.setflags(write=False)  # read-only, as the codec's LUTs: one kernel signature
_MAX_TENSORCORE_BITS = 47  # 32 truncated products of bits + 1 bits must sum exactly in 53 bits
_INT32 = 1 << 32


@dataclass(frozen=True)
class AccumulatorFormat:
    """An IEEE-style binary accumulator format of any width up to 53 bits of precision.

    fpsim's :class:`~fpsim.FloatFormat` stops at 16 bits; accumulators are
    often wider (E8M13 "FP22", E8M23 = float32).  This format has a sign,
    bias ``2**(exponent_bits - 1) - 1``, subnormals, -0, and Inf at the top
    exponent (overflow under nearest-even gives Inf, as IEEE 754).

    Parameters
    ----------
    exponent_bits : int
        2 to 11.
    mantissa_bits : int
        Stored fraction bits, 1 to 50 (float64 carries the sums; rounding it
        to odd and then to 51 bits or fewer is exact).

    Examples
    --------
    >>> fp22 = AccumulatorFormat(8, 13)
    >>> fp22.name, fp22.emin, fp22.max == (2 - 2**-13) * 2.0**127
    ('e8m13', -126, True)
    """

    exponent_bits: int
    mantissa_bits: int

    def __post_init__(self):
        for arg, lo, hi in (("exponent_bits", 2, 11), ("mantissa_bits", 1, 50)):
            v = getattr(self, arg)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise TypeError(f"{arg} must be an int, got {type(v).__name__}")
            if not lo <= v <= hi:
                raise ValueError(f"{arg} must be in [{lo}, {hi}], got {v}")

    @property
    def name(self) -> str:
        return f"e{self.exponent_bits}m{self.mantissa_bits}"

    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        return self.bias

    @property
    def max(self) -> float:
        return (2.0 - 2.0**-self.mantissa_bits) * 2.0**self.emax

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class AccumulationReport:
    """What happened in the accumulators of a :func:`qmatmul`.

    Attributes
    ----------
    accumulator : str
        The accumulator, e.g. ``"fp16"`` or ``"tensorcore(14 bits, promote 128)"``.
    overflow : ndarray of bool
        Shape of the result.  ``int32``: a running sum left the int32 range
        (the result wrapped, unless the sum came back into range); float
        accumulators: the result is Inf or NaN.

    Examples
    --------
    >>> import numpy as np, fpsim.quant.accumulate as fa
    >>> a = np.full((1, 8), 1e4, np.float32)
    >>> y, rep = fa.qmatmul(a, a.T, accumulator="fp16", return_details=True)
    >>> rep.accumulator, rep.n_overflow, rep.overflow.tolist()
    ('fp16', 1, [[True]])
    """

    accumulator: str
    overflow: np.ndarray

    @property
    def n_overflow(self) -> int:
        """How many outputs overflowed."""
        return int(np.count_nonzero(self.overflow))


class AccumulatorOverflowWarning(RuntimeWarning):
    """An int32 accumulator overflowed (its result wrapped around).

    Examples
    --------
    >>> import warnings, numpy as np, fpsim.quant.accumulate as fa
    >>> x = np.ones((1, 140000), np.float32)  # 140000 * 127**2 > 2**31 - 1
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = fa.qmatmul(x, x.T, a_spec="int8", b_spec="int8", accumulator="int32")
    >>> [w.category.__name__ for w in caught]
    ['AccumulatorOverflowWarning']
    """


# ---- accumulator resolution ----------------------------------------------------
@dataclass(frozen=True)
class _Acc:
    """A resolved accumulator: how to run it and what it returns."""

    label: str
    kind: str  # "exact", "float", "tensorcore", "int32"
    kernel_kind: int = kern.FLOAT32
    rp: tuple = (0, 0.0, 0.0, 0.0, 0.0, 0)
    fp: tuple = (0,) * cast.FP_SIZE
    lut: np.ndarray = field(default_factory=lambda: _NO_LUT)
    mode: int = cast.NEAREST_EVEN
    dtype: type = np.float32


_EXMY = re.compile(r"^e(\d+)m(\d+)$")


def _rounder(emin, m, fmax, overflow, negzero) -> tuple:
    """The ``rp`` tuple of a FAST accumulator (see fpsim._kernels.accumulate)."""
    return (52 - m, 2.0**emin, 1.5 * 2.0 ** (emin - m + 52), float(fmax), float(overflow),
            int(negzero))


def _fits_float32(emin, m, fmax) -> bool:
    return m <= 23 and emin - m >= -149 and fmax <= float(np.finfo(np.float32).max)


def _from_accumulator_format(fmt: AccumulatorFormat) -> _Acc:
    if (fmt.exponent_bits, fmt.mantissa_bits) == (8, 23):
        return _Acc(label="fp32", kind="float", kernel_kind=kern.FLOAT32)
    rp = _rounder(fmt.emin, fmt.mantissa_bits, fmt.max, np.inf, True)
    dtype = np.float32 if _fits_float32(fmt.emin, fmt.mantissa_bits, fmt.max) else np.float64
    return _Acc(label=fmt.name, kind="float", kernel_kind=kern.FAST, rp=rp, dtype=dtype)


def _from_float_format(fmt: FloatFormat, label: str) -> _Acc:
    if fmt.emax > 1023 or fmt.emin - fmt.mantissa_bits < -1074:
        raise ValueError(f"accumulator {fmt.name} has a wider exponent range than float64, "
                         "which carries the sums; use at most 11 exponent bits")
    fits = _fits_float32(fmt.emin, fmt.mantissa_bits, fmt.max)
    dtype = np.float32 if fits else np.float64
    regular = (fmt.signed and fmt.has_zero and fmt.subnormals and fmt.ties == "even"
               and fmt.mantissa_bits >= 1)
    if regular:
        overflow = np.inf if fmt.has_inf else (np.nan if fmt.has_nan else fmt.max)
        rp = _rounder(fmt.emin, fmt.mantissa_bits, fmt.max, overflow, fmt.has_negative_zero)
        return _Acc(label=label, kind="float", kernel_kind=kern.FAST, rp=rp, dtype=dtype)
    mode = cast.NEAREST_AWAY if fmt.ties == "away" else cast.NEAREST_EVEN
    return _Acc(label=label, kind="float", kernel_kind=kern.CODEC, fp=dispatch.float_params(fmt),
                lut=dispatch.lut(fmt, np.dtype(np.float64)), mode=mode, dtype=dtype)


def _resolve_accumulator(acc) -> _Acc:
    if isinstance(acc, AccumulatorFormat):
        return _from_accumulator_format(acc)
    if isinstance(acc, FloatFormat):
        return _from_float_format(acc, acc.name)
    if isinstance(acc, IntFormat):
        raise ValueError(f"accumulator {acc.name!r} is an integer format; integer operands "
                         "are summed with accumulator='int32'")
    if not isinstance(acc, str):
        raise TypeError(f"accumulator must be a string, FloatFormat or AccumulatorFormat, "
                        f"got {type(acc).__name__}")
    key = acc.strip().lower()
    if key == "exact":
        return _Acc(label="exact", kind="exact", dtype=np.float64)
    if key == "fp32":
        return _Acc(label="fp32", kind="float", kernel_kind=kern.FLOAT32)
    if key in ("fp16", "bf16"):
        return _from_float_format(get_format("float16" if key == "fp16" else "bfloat16"), key)
    if key in ("tensorcore", "aligned_truncation"):  # one model, two names
        return _Acc(label="tensorcore", kind="tensorcore")
    if key == "int32":
        return _Acc(label="int32", kind="int32")
    try:
        fmt = get_format(key)
    except (ValueError, TypeError):
        fmt = None
    if isinstance(fmt, FloatFormat):
        return _from_float_format(fmt, fmt.name)
    if isinstance(fmt, IntFormat):
        return _resolve_accumulator(fmt)
    m = _EXMY.match(key)
    if m:
        return _from_accumulator_format(AccumulatorFormat(int(m.group(1)), int(m.group(2))))
    close = difflib.get_close_matches(key, ACCUMULATORS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"unknown accumulator {acc!r}{hint}; use one of {', '.join(ACCUMULATORS)}, a float "
        "format name ('float16', 'e5m2'...), 'eXmY' (e.g. 'e8m13') or an AccumulatorFormat"
    )


def _check_options(acc: _Acc, accumulator_bits, promote_every):
    if accumulator_bits is not None and acc.kind != "tensorcore":
        raise ValueError(f"accumulator_bits applies to accumulator='tensorcore' only, "
                         f"got accumulator={acc.label!r}")
    bits = 14 if accumulator_bits is None else accumulator_bits
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool):
        raise TypeError(f"accumulator_bits must be an int, got {type(bits).__name__}")
    if not 1 <= bits <= _MAX_TENSORCORE_BITS:
        raise ValueError(f"accumulator_bits must be in [1, {_MAX_TENSORCORE_BITS}], got {bits}")
    if promote_every is None:
        return int(bits), 0
    if not isinstance(promote_every, (int, np.integer)) or isinstance(promote_every, bool):
        raise TypeError(f"promote_every must be None or an int, got {promote_every!r}")
    if acc.kind in ("exact", "int32"):
        raise ValueError(f"promote_every does not apply to accumulator={acc.label!r}")
    if promote_every < 1:
        raise ValueError(f"promote_every must be a positive int, got {promote_every}")
    if acc.kind == "tensorcore" and promote_every % TENSORCORE_GROUP:
        raise ValueError(f"promote_every must be a multiple of {TENSORCORE_GROUP} (the "
                         f"tensor-core group) for accumulator='tensorcore', got {promote_every}")
    return int(bits), int(promote_every)


def _label(acc: _Acc, bits: int, promote: int) -> str:
    label = f"tensorcore({bits} bits" if acc.kind == "tensorcore" else acc.label
    if promote:
        label += f", promote {promote}" if acc.kind == "tensorcore" else f" (promote {promote})"
    return label + (")" if acc.kind == "tensorcore" else "")


# ---- operands ----------------------------------------------------------------------
def _operand(x, name) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        if arr.dtype.kind in "iu" and not isinstance(x, np.ndarray):  # Python numbers
            arr = arr.astype(np.float64)
        else:
            raise TypeError(f"{name} must be a float array (float16, float32 or float64), got "
                            f"dtype {arr.dtype}; integer operands are quantized from floats "
                            "with a_spec/b_spec='int8'")
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a scalar")
    with np.errstate(over="ignore"):
        return arr.astype(np.float32)


def _spec(spec, axis, name):
    if spec is None:
        return None
    if isinstance(spec, QuantSpec):
        return spec
    if isinstance(spec, str):
        return resolve_spec(spec, axis=axis)
    raise TypeError(f"{name} must be None, a QuantSpec or a recipe name, "
                    f"got {type(spec).__name__}")


def _seeds(rng):
    """One seed per operand, so that both may use stochastic rounding."""
    if rng is None:
        return None, None
    gen = as_generator(rng)
    s = gen.integers(0, 2**63, size=2)
    return int(s[0]), int(s[1])


def _int_operand(x, spec: QuantSpec, k_axis: int, name: str, rng):
    """Integer values (int64) and the scales (float64, broadcastable) of an int operand."""
    fmt = spec.format
    if not isinstance(fmt, IntFormat):
        raise ValueError(f"accumulator='int32' needs integer element formats; {name} has "
                         f"{fmt.name} (use an int spec such as 'int8' or a float accumulator)")
    if not spec.symmetric:
        raise ValueError(f"accumulator='int32' needs symmetric (zero-point free) specs; "
                         f"{name} is asymmetric")
    ok = spec.granularity == "tensor" or (
        spec.granularity in ("channel", "token") and spec.axis % x.ndim == k_axis % x.ndim)
    if not ok:
        raise ValueError(
            f"accumulator='int32' needs {name}'s scales to factor out of the sum: per tensor, "
            f"or granularity='channel' along K (axis={k_axis}); got {spec.describe()}")
    qt = quantize_tensor(x, spec, rng=rng)
    n = qt.codes.astype(np.int64)
    if fmt.bit_patterns and fmt.signed:
        n = np.where(n >= 1 << (fmt.bits - 1), n - (1 << fmt.bits), n)
    scale = np.asarray(qt.scales, dtype=np.float64) * 2.0**fmt.scale_exp
    return n, scale


# ---- kernels over the batch ------------------------------------------------------------
def _parallel(m, n, k) -> bool:
    return m > kern.ROWS and use_parallel(m * n * k // 16)


def _batched(a, b, out_dtype, run):
    """Apply run(a2d, b2d) over the broadcast batch dimensions."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    M, N = a.shape[-2], b.shape[-1]
    a = np.broadcast_to(a, batch + a.shape[-2:])
    b = np.broadcast_to(b, batch + b.shape[-2:])
    results = [np.empty(batch + (M, N), dtype=d) for d in out_dtype]
    for idx in np.ndindex(*batch):
        parts = run(np.ascontiguousarray(a[idx]), np.ascontiguousarray(b[idx]))
        for res, part in zip(results, parts):
            res[idx] = part
    return results


def _run_float(acc: _Acc, bits: int, promote: int):
    def run(a, b):
        M, K = a.shape
        N = b.shape[1]
        out = np.empty((M, N), dtype=np.float64)
        if M == 0 or N == 0:
            return (out,)
        par = _parallel(M, N, K)
        with np.errstate(all="ignore"):
            if acc.kind == "tensorcore":
                k = kern.matmul_tensorcore_parallel if par else kern.matmul_tensorcore_serial
                k(a, b, out, bits, TENSORCORE_GROUP, promote)
            else:
                k = kern.matmul_float_parallel if par else kern.matmul_float_serial
                k(a, b, out, acc.kernel_kind, acc.rp, acc.fp, acc.lut, acc.mode, promote)
        return (out,)

    return run


def _run_int(a, b):
    M, K = a.shape
    N = b.shape[1]
    out = np.empty((M, N), dtype=np.int64)
    overflow = np.zeros((M, N), dtype=np.bool_)
    if M and N:
        k = kern.matmul_int_parallel if _parallel(M, N, K) else kern.matmul_int_serial
        k(a, b, out, overflow)
    return out, overflow


#: float32 represents every integer up to 2**24: a float32 GEMM of integers whose partial
#: sums stay below it is exact, whatever order BLAS sums in
_F32_EXACT = 2 ** 24


def _int_bound(x: np.ndarray) -> int:
    if x.dtype == np.int8:
        return 128
    if x.dtype == np.uint8:
        return 255
    return int(max(abs(x.min()), abs(x.max()))) if x.size else 0


def int_matmul(a, b) -> np.ndarray:
    """The exact matrix product of two integer-valued 2-D arrays, as float64.

    Int8 codes (or integer-valued floats) multiplied as an int32 GEMM does, without its
    wrap-around: ``a @ b`` computed by float32 BLAS over spans of the reduction axis short
    enough that every partial sum is an integer below 2**24 in magnitude (so each span's
    GEMM is exact in any summation order: 1024 terms for int8 x int8), the spans' results
    added in float64 (exact below 2**53); operands whose products reach 2**24 take one
    float64 GEMM.  Twice as fast as a float64 GEMM for int8 codes, and the same numbers.

    Parameters
    ----------
    a : array_like, shape (M, K)
    b : array_like, shape (K, N)
        Integer-valued (integer dtypes, or floats holding integers) with magnitudes below
        2**24 and ``K * max|a| * max|b| < 2**53``.

    Returns
    -------
    ndarray of float64, shape (M, N)

    Raises
    ------
    ValueError
        Operands that are not 2-D with matching K, or magnitudes beyond those bounds.

    Examples
    --------
    >>> a = np.full((1, 3000), 127, np.int8)
    >>> b = np.full((3000, 1), -128, np.int8)
    >>> int_matmul(a, b).tolist()                    # beyond float32's 2**24, still exact
    [[-48768000.0]]
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"int_matmul takes (M, K) and (K, N) arrays, got shapes {a.shape} "
                         f"and {b.shape}")
    m, k = a.shape
    n = b.shape[1]
    am, bm = _int_bound(a), _int_bound(b)
    if am == 0 or bm == 0 or k == 0:
        return np.zeros((m, n))
    if am >= _F32_EXACT or bm >= _F32_EXACT or k * am * bm >= 2 ** 53:
        raise ValueError(f"int_matmul: operands up to {am} and {bm} over K = {k} can leave "
                         "float64's exact integers (2**53)")
    if am * bm >= _F32_EXACT:  # a single product can leave float32's integers
        return a.astype(np.float64) @ b.astype(np.float64)
    span = _F32_EXACT // (am * bm)
    out = None
    for k0 in range(0, k, span):
        part = a[:, k0:k0 + span].astype(np.float32) @ b[k0:k0 + span].astype(np.float32)
        if out is None:
            out = part.astype(np.float64)
        else:
            out += part
    return out


# ---- public API ------------------------------------------------------------------
@renamed(return_report="return_details")
def qmatmul(a, b, *, a_spec=None, b_spec=None, accumulator="fp32", accumulator_bits=None,
            promote_every=None, rng=None, return_details=False):
    """Matrix product of (optionally quantized) operands with an emulated accumulator.

    Parameters
    ----------
    a : array_like of float, shape (..., M, K) or (K,)
    b : array_like of float, shape (..., K, N) or (K,)
    a_spec, b_spec : QuantSpec, str or None
        How to quantize each operand (:func:`fpsim.fake_quantize`); None
        leaves it as float32.  Recipe names group their scales along K
        (``axis=-1`` for a, ``axis=-2`` for b); see the module docstring.
    accumulator : str, FloatFormat or AccumulatorFormat
        ``"exact"``, ``"fp32"`` (default), ``"fp16"``, ``"bf16"``,
        ``"tensorcore"``, ``"int32"``, a float format (``"e5m2"``,
        ``FloatFormat(...)``) or a wide one (``"e8m13"``,
        ``AccumulatorFormat(8, 13)``).
    accumulator_bits : int, optional
        Tensor-core model only: bits kept after the leading bit of the
        largest term of a group, 1 to 47 (default 14).
    promote_every : int, optional
        Add the accumulator to a float32 total and restart it every this many
        products (a multiple of 32 for ``"tensorcore"``; DeepSeek-V3 uses 128).
    rng : int or numpy.random.Generator, optional
        Seeds the stochastic rounding of the specs (one seed per operand).
    return_details : bool
        Also return an :class:`AccumulationReport`.

    Returns
    -------
    ndarray
        Shape (..., M, N) (1-D operands drop their unit dimension; two 1-D
        operands give a 0-d array).  float64 for ``"exact"`` and for
        accumulators whose values float32 cannot hold, else float32.
    report : AccumulationReport
        Only with ``return_details=True``.

    Raises
    ------
    ValueError
        Unknown accumulator, shapes that do not match, a bad option, or
        specs that ``"int32"`` cannot use.
    TypeError
        Non-float operands or options of the wrong type.

    Warns
    -----
    AccumulatorOverflowWarning
        An int32 accumulator overflowed (without ``return_details``).

    Examples
    --------
    >>> import numpy as np, fpsim.quant.accumulate as fa
    >>> a = np.full((1, 4096), 1.0, np.float32)
    >>> b = np.full((4096, 1), 1.0, np.float32)
    >>> fa.qmatmul(a, b, accumulator="fp16").item()  # 2048 + 1 rounds back to 2048
    2048.0
    >>> fa.qmatmul(a, b, accumulator="fp16", promote_every=512).item()
    4096.0
    >>> x = np.array([0.3, -1.7, 2.2], np.float32)
    >>> float(fa.qdot(x, x, a_spec="e4m3fn", b_spec="e4m3fn", accumulator="exact"))
    7.914774176788587
    """
    acc = _resolve_accumulator(accumulator)
    bits, promote = _check_options(acc, accumulator_bits, promote_every)
    if not isinstance(return_details, (bool, np.bool_)):
        raise TypeError(f"return_details must be True or False, got {return_details!r}")
    a = _operand(a, "a")
    b = _operand(b, "b")
    a_1d, b_1d = a.ndim == 1, b.ndim == 1
    a2 = a[None, :] if a_1d else a
    b2 = b[:, None] if b_1d else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"a and b do not match along K: a has shape {a.shape} (K = "
                         f"{a2.shape[-1]}), b has shape {b.shape} (K = {b2.shape[-2]})")
    try:
        np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        raise ValueError(f"the batch dimensions of a {a.shape} and b {b.shape} do not "
                         "broadcast") from None
    sa = _spec(a_spec, -1, "a_spec")
    sb = _spec(b_spec, -2, "b_spec")
    ra, rb = _seeds(rng)

    if acc.kind == "int32":
        if sa is None or sb is None:
            raise ValueError("accumulator='int32' needs integer specs for both operands, "
                             "e.g. a_spec='int8', b_spec='int8'")
        ia, scale_a = _int_operand(a2, sa, -1, "a", ra)
        ib, scale_b = _int_operand(b2, sb, -2, "b", rb)
        total, overflow = _batched(ia, ib, (np.int64, np.bool_), _run_int)
        wrapped = (total + (_INT32 >> 1)) % _INT32 - (_INT32 >> 1)
        out = (wrapped.astype(np.float64) * scale_a * scale_b).astype(np.float32)
        if overflow.any() and not return_details:
            warnings.warn(
                f"int32 accumulator overflow in {int(overflow.sum())} of {overflow.size} "
                "outputs: their results wrapped around (pass return_details=True to get "
                "the mask)", AccumulatorOverflowWarning, stacklevel=2)
    else:
        aq = a2 if sa is None else fake_quantize(a2, sa, rng=ra)
        bq = b2 if sb is None else fake_quantize(b2, sb, rng=rb)
        if acc.kind == "exact":
            out = np.matmul(aq.astype(np.float64), bq.astype(np.float64))
        else:
            (out,) = _batched(aq, bq, (np.float64,), _run_float(acc, bits, promote))
            dtype = np.float32 if (promote or acc.kind == "tensorcore") else acc.dtype
            out = out.astype(dtype)
        overflow = ~np.isfinite(out)
    # drop the unit dimensions of 1-D operands, as numpy.matmul does
    index = (Ellipsis,) + ((0,) if a_1d else (slice(None),)) + ((0,) if b_1d else (slice(None),))
    out, overflow = out[index], overflow[index]
    if return_details:
        return out, AccumulationReport(accumulator=_label(acc, bits, promote), overflow=overflow)
    return out


@renamed(return_report="return_details")
def qdot(a, b, *, a_spec=None, b_spec=None, accumulator="fp32", accumulator_bits=None,
         promote_every=None, rng=None, return_details=False):
    """Dot product of two 1-D arrays with an emulated accumulator.

    ``qmatmul`` for vectors: same keyword options, returns a numpy scalar
    (float32, or float64 for ``"exact"`` and wide accumulators).

    Raises
    ------
    ValueError
        If a or b is not 1-D, or their lengths differ; as :func:`qmatmul`.

    Examples
    --------
    >>> import numpy as np, fpsim.quant.accumulate as fa
    >>> x = np.ones(300, np.float32)
    >>> float(fa.qdot(x, x, accumulator="e4m3fn"))  # 16 + 1 rounds to 16 in E4M3
    16.0
    """
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.ndim != 1 or b_arr.ndim != 1:
        raise ValueError(f"qdot needs two 1-D arrays, got shapes {a_arr.shape} and "
                         f"{b_arr.shape}; use qmatmul")
    res = qmatmul(a, b, a_spec=a_spec, b_spec=b_spec, accumulator=accumulator,
                  accumulator_bits=accumulator_bits, promote_every=promote_every, rng=rng,
                  return_details=return_details)
    if return_details:
        out, report = res
        return out[()], report
    return res[()]
