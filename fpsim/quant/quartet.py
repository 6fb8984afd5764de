"""Quartet II's unbiased NVFP4 gradient quantizers (Panferov et al. 2026, arXiv 2601.22813).

The recipes ``nvfp4_quartet2_sr`` and ``nvfp4_ms_eden`` run :func:`quartet_quantize`.  The
rules are those of the authors' code (github.com/IST-DASLab/Quartet-II, commit 8776a90):
``src/models/quantization/quantizers/nvfp4_triton.py`` (``get_scales``, ``sr_fp4``,
``sr_1x16s_fp4_kernel``, ``eden_1x16s_fp4_kernel``), ``.../quantizers/eden.py``
(``EdenSRQuantizer``) and ``kernels/csrc/round_eden_fp4.cu``; the constants are those of
``src/models/quantization/schemes/quartet_2.py`` and ``kernels/python/quartet2/linear.py``.
fpsim reimplements them in float32 in their order of operations; it has no golden data from
their GPU kernels, so agreement is to the rule, not claimed bit for bit.

Blocks of 16 along the last axis (leading axes are rows), one E4M3 scale per block and one
float32 scale ``s_dec`` per tensor; ``A`` is the tensor's amax, ``v_max = 6 / o`` where ``o``
is their ``scale_override``:

* ``s_dec = (A / m) / v_max`` (1 when that is 0: A = 0, or so small it underflows);
* block scale ``s = e4m3_rn((amax_block / v_max) / s_dec)`` (1 where that rounds to 0);
* scaled elements ``x_s = x / (s * s_dec)``.

``method="sr"`` (``nvfp4_quartet2_sr``, ``o = 17/16``, ``m = 448``): ``v_max = 6 * 16/17``.
Rounding to nearest E4M3 moves a normal scale by at most the factor 16/17 (the worst case is
``s_ideal = (1 + 1/16) 2^e``, rounded down to ``2^e``), so ``|x_s| <= v_max * 17/16 = 6``:
no element is ever clipped, and stochastic rounding of every ``x_s`` to one of its two E2M1
neighbours ``lo <= |x_s| <= hi`` (up with probability ``(|x_s| - lo) / (hi - lo)``) is
unbiased: ``E[q * s * s_dec] = x_s * s * s_dec``, which is x up to one float32 rounding.
The block scale codes are TE's (``e4m3(amax_block * 448 / A)``); the tensor scale is 17/16
of TE's.  TE's stochastic rounding maps the block max to 6 and clips ``x * enc`` to +-6, so a
block whose scale rounded down loses up to 1/17 of its largest values (biased).
Exception: blocks whose scale is E4M3-subnormal (``amax_block < 2^-6 A / 448``) can round
down by more than 16/17; elements beyond 6 are clipped there, as in their kernel.

``method="ms_eden"`` (``nvfp4_ms_eden``, MS-EDEN, Quartet II's backward quantizer, ``o =
(17/16) * 0.93``, ``m = 255.99``, leaving the E4M3 scales room to grow by the correction):

* a random Hadamard transform: each group of ``h`` (128 in their kernels) is multiplied by
  ``diag(signs) @ H_h / sqrt(h)``, the signs drawn afresh per call (their ``rerotate``),
  computed exactly and rounded once to float32;
* elements rounded to nearest-even E2M1 (saturating at +-6): ``q = rn(x_s)``;
* per rotation group, EDEN's correction ``c = sum(x_s^2) / sum(x_s * q)`` (1 where the
  denominator is 0), taken over the scaled values as their code does;
* the block scales become ``sr_e4m3(s * c)``: stochastic rounding of the corrected scale to
  one of its two E4M3 neighbours (saturating at 448), the only randomness besides the signs;
* the values ``q * s' * s_dec`` are rotated back (fpsim returns the estimate of x; their
  GEMM keeps both operands rotated).

Given the rotation, ``E[s'] = s * c`` exactly, so ``E[x_hat_rot] = c * q * s * s_dec``, and per
rotation group ``sum(E[x_hat_rot] / (s s_dec) * x_s) = sum(x_s^2)``: EDEN's unbiased
projection.  That the estimate is unbiased for x itself rests on the random rotation (exact
for a uniformly random rotation with one scale per group, approximate for a random Hadamard
transform with 16-element scales): tests/quant/test_quartet.py states what it checks.

Random bits are fpsim's (splitmix64 per element, :doc:`numerics`), not their Philox or
Triton ``tl.rand`` streams: the same distributions, other draws.  ``rng=None`` uses seed 0
(:data:`fpsim.rounding.DEFAULT_SEED`), so a call is reproducible; pass a
``numpy.random.Generator`` for independent draws per call (a training loop must).
NaN and Inf are refused; rows are padded with zeros to whole blocks.
"""

from __future__ import annotations

import numpy as np

from ..rounding import DEFAULT_SEED, as_generator
from ._cast import E2M1, E4M3, decode, encode

__all__ = ["quartet_quantize", "rotate", "METHODS", "SR_VAL_MAX", "EDEN_VAL_MAX"]

_F32 = np.float32
_FMAX = np.finfo(np.float32).max
METHODS = ("sr", "ms_eden")
#: 6 / (17/16): the block max of ``method="sr"`` maps here (their scale_override 17/16)
SR_VAL_MAX = _F32(6.0 / (17 / 16))
#: 6 / ((17/16) * 0.93): MS-EDEN's block max (their backward_scale_override)
EDEN_VAL_MAX = _F32(6.0 / ((17 / 16) * 0.93))
_SCALES_MAX = {"sr": _F32(448.0), "ms_eden": _F32(255.99)}
_ONE_E4M3 = 0x38  # the E4M3 code of 1.0


def _sylvester(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def rotate(x, signs, *, inverse=False) -> np.ndarray:
    """``x`` (float64, last axis a multiple of ``h = len(signs)``) times ``diag(signs) @ H_h /
    sqrt(h)`` per group of ``h`` (``inverse=True``: times its transpose), in float64.

    Examples
    --------
    >>> s = np.ones(4)
    >>> rotate(np.array([1.0, 0, 0, 0]), s).tolist()
    [0.5, 0.5, 0.5, 0.5]
    >>> rotate(rotate(np.array([1.0, 2, 3, 4]), s), s, inverse=True).tolist()
    [1.0, 2.0, 3.0, 4.0]
    """
    signs = np.asarray(signs, np.float64)
    h = signs.size
    t = signs[:, None] * _sylvester(h) / np.sqrt(h)
    x = np.asarray(x, np.float64)
    y = x.reshape(*x.shape[:-1], -1, h) @ (t.T if inverse else t)
    return y.reshape(x.shape)


def _scales(xb, val_max, scales_max):
    """(s_dec, E4M3 codes, scales, scaled elements) as their get_scales computes them."""
    amax = np.abs(xb).max() if xb.size else _F32(0)
    s_dec = _F32(_F32(amax / scales_max) / val_max)
    if s_dec == 0 or not np.isfinite(s_dec):
        s_dec = _F32(1)
    bmax = np.abs(xb).max(axis=-1, keepdims=True)
    ideal = ((bmax / val_max).astype(_F32) / s_dec).astype(_F32)
    sc = np.asarray(encode(np.minimum(ideal, _FMAX), E4M3, saturate=True), np.uint8)
    sc = np.where(sc == 0, np.uint8(_ONE_E4M3), sc)
    s = decode(sc, E4M3, dtype=np.float32)
    xs = (xb / (s * s_dec).astype(_F32)).astype(_F32)
    return s_dec, sc, s, xs


def quartet_quantize(x, *, method="sr", hadamard=128, rng=None, signs=None):
    """Quartet II's NVFP4 quantizer for gradients on ``x`` (blocks of 16 along the last axis).

    Parameters
    ----------
    x : array_like of float
        Finite values, at least 1-D (leading axes are rows).
    method : {"sr", "ms_eden"}
        Stochastic rounding with the 16/17 scale, or MS-EDEN (module docstring).
    hadamard : int
        MS-EDEN's rotation size, a power of two >= 16 dividing the last axis.
    rng : seed, numpy.random.Generator or None
        The random bits (None: seed 0).
    signs : array_like of +-1, optional
        MS-EDEN's rotation signs (``hadamard`` of them); drawn from ``rng`` when None.

    Returns
    -------
    scale_codes : uint8 ndarray (rows, blocks)
    codes : uint8 ndarray, x's shape (MS-EDEN: of the rotated x)
    values : float32 ndarray, x's shape (MS-EDEN: rotated back to x's domain)
    s_dec : float32, the tensor scale (values = e2m1 * fl32(e4m3 * s_dec), then rotated back)
    signs : float64 ndarray or None

    Examples
    --------
    >>> x = np.linspace(-3, 3, 16, dtype=np.float32)
    >>> sc, c, v, s_dec, _ = quartet_quantize(x, rng=0)
    >>> float(np.abs(decode(c, E2M1, dtype=np.float32)).max()) <= 6.0
    True
    >>> round(float(np.abs(v - x).max()), 3) < 0.5
    True
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = np.asarray(x)
    if x.ndim == 0:
        x = x.reshape(1)
    if not np.isfinite(x).all():
        raise ValueError(f"nvfp4_{'quartet2_sr' if method == 'sr' else 'ms_eden'}: x holds "
                         "NaN or Inf; Quartet II's quantizers do not define them, so fpsim "
                         "refuses them (use 'nvfp4' for fpsim's element-wise NaN rule)")
    if x.dtype != np.float32:
        x = np.clip(x, -_FMAX, _FMAX).astype(np.float32)
    gen = as_generator(DEFAULT_SEED if rng is None else rng)
    shape = x.shape
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    n = shape[-1]
    x2 = x.reshape(rows, n)
    nb = -(-n // 16)
    if x2.size == 0:
        return (np.zeros((rows, nb), np.uint8), np.zeros(shape, np.uint8),
                np.zeros(shape, np.float32), _F32(1), None)
    if method == "ms_eden":
        if (isinstance(hadamard, bool) or not isinstance(hadamard, (int, np.integer))
                or hadamard < 16 or hadamard & (hadamard - 1)):
            raise ValueError(f"hadamard must be a power of two >= 16, got {hadamard!r}")
        if n % hadamard:
            raise ValueError(f"ms_eden: the last axis ({n}) must be a multiple of the rotation "
                             f"size hadamard={hadamard}")
        if signs is None:
            signs = gen.choice(np.array([-1.0, 1.0]), hadamard)
        signs = np.asarray(signs, np.float64)
        if signs.shape != (hadamard,) or not np.all(np.abs(signs) == 1):
            raise ValueError(f"signs must be {hadamard} values of +-1")
        with np.errstate(over="ignore"):
            x2 = np.clip(rotate(x2, signs), -_FMAX, _FMAX).astype(np.float32)
    else:
        signs = None
    xb = np.pad(x2, ((0, 0), (0, -n % 16))).reshape(rows, nb, 16)
    val_max = SR_VAL_MAX if method == "sr" else EDEN_VAL_MAX
    with np.errstate(over="ignore", under="ignore"):
        s_dec, sc, s, xs = _scales(xb, val_max, _SCALES_MAX[method])
        if method == "sr":
            codes = encode(np.clip(xs, -6, 6), E2M1, saturate=True, rounding="stochastic",
                           rng=gen)
        else:
            codes = encode(xs, E2M1, saturate=True)
        codes = np.where(xs == 0, np.uint8(0), np.asarray(codes, np.uint8))
        if method == "ms_eden":
            q = decode(codes, E2M1, dtype=np.float64).reshape(rows, -1, hadamard)
            xg = xs.astype(np.float64).reshape(rows, -1, hadamard)
            num = (xg * xg).sum(axis=-1, keepdims=True)
            den = (xg * q).sum(axis=-1, keepdims=True)
            c = np.where(den == 0, 1.0, num / np.where(den == 0, 1.0, den)).astype(_F32)
            c = np.repeat(c, hadamard // 16, axis=1)  # (rows, blocks, 1)
            corrected = (s * c).astype(_F32)
            sc = np.asarray(encode(corrected, E4M3, saturate=True, rounding="stochastic",
                                   rng=gen), np.uint8)
            s = decode(sc, E4M3, dtype=np.float32)
        factor = (s * s_dec).astype(_F32)
        vals = (decode(codes, E2M1, dtype=np.float32) * factor).astype(np.float32)
    codes = codes.reshape(rows, -1)[:, :n].reshape(shape)
    vals = vals.reshape(rows, -1)[:, :n]
    if signs is not None:
        with np.errstate(over="ignore"):
            vals = rotate(vals, signs, inverse=True).astype(np.float32)
    return sc[..., 0], codes.astype(np.uint8), vals.reshape(shape), s_dec, signs
