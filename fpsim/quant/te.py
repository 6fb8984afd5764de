"""Transformer Engine's NVFP4 quantizers, bit for bit (TE's reference ``NVFP4QuantizerRef``).

The recipes ``nvfp4_te``, ``nvfp4_te_2d``, ``nvfp4_te_rht``, ``nvfp4_4over6`` and
``nvfp4_4over6_2d`` run :func:`nvfp4_quantize`.  Each step is the float32 operation of TE's
pure-PyTorch reference (``transformer_engine/pytorch/custom_recipes/reference_nvfp4.py``,
commit d0067d0, the oracle TE tests its CUDA kernels against); dequantization is TE's CUDA
kernel's (``dequantize_nvfp4.cuh``).  Tests compare codes, scales and values with data TE's
code made (``tests/golden/make_te_golden.py``).

Blocks of 16 along the last axis (leading axes are rows), or 16x16 tiles of the last two
axes (TE's weight recipe).  ``A`` is the tensor's amax (one per row with ``row_scaled``),
``m`` the E4M3 bound of the global scale (448; 4-over-6 offers 256), all float32:

* ``g = (m * 6) / A`` (FLT_MAX when A is 0), ``g_dec = 1 / g``;
* block scale ``s = e4m3(clip(amax_block * (g * (1/6)), -448, 448))``, ``e = min(1 / (s *
  g_dec), FLT_MAX)``, elements ``fp4(clip(x * e, -6, 6))`` rounded to nearest-even (a zero
  of either sign is code 0);
* 4-over-6: with ``b = (amax_block / 6) * g`` two candidates, ``s4 = e4m3(clip(1.5 b))``
  (the block's max maps to 4) and ``s6 = e4m3(clip(b))`` (to 6), each quantized as above;
  the error of each, ``sum |fp4 * s * A / (6 m) - x|`` (``error="mae"``) or of the squares
  (``"mse"``), summed element by element in float32 (16x16 tiles: the 16 row sums added as
  TE's warp reduction does), picks map-to-4 when strictly smaller;
* random Hadamard transform (``nvfp4_te_rht``): each block of 16 is multiplied by
  ``diag(signs) @ H16 / 4`` (Sylvester's H16, TE's fixed signs) before quantizing, and the
  result stays in the rotated domain.  fpsim computes the transform exactly and rounds it
  once to float32; TE's reference sums in float32 in torch's matmul order, so the two agree
  bit for bit where those sums are exact (tested on such data) and may differ in the last
  bit elsewhere;
* dequantized: ``fp4 * ((s * A) * (1 / (6 m)))``.

``rounding="stochastic"`` is TE's stochastic rounding of the elements (for gradients; the
scales as above), with fpsim's random bits: the same distribution, not TE's Philox stream.
NaN and Inf are refused (TE's reference maps NaN to code 0); lengths that are not multiples
of the block (rows, for 16x16 tiles) are padded with zeros, as TE's reference does.
"""

from __future__ import annotations

import numpy as np

from ._cast import E2M1, E4M3, decode, encode

__all__ = ["TE_SIGNS", "nvfp4_quantize", "rht16"]

_F32 = np.float32
_FMAX = np.finfo(np.float32).max

#: TE's fixed sign vector of its 16-point random Hadamard transform (``get_wgrad_sign_vector``)
TE_SIGNS = np.array([1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1], np.float64)


def _sylvester(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def rht16(x: np.ndarray) -> np.ndarray:
    """TE's 16-point random Hadamard transform of every block of 16 along the last axis:
    ``block @ (diag(TE_SIGNS) @ H16 / 4)``, computed exactly and rounded once to float32.

    Examples
    --------
    >>> y = rht16(np.eye(16, dtype=np.float32)[:1])
    >>> y.tolist()[0][:4]
    [0.25, 0.25, 0.25, 0.25]
    """
    x = np.asarray(x, np.float32)
    t = (TE_SIGNS[:, None] * _sylvester(16)) / 4.0
    xb = x.astype(np.float64).reshape(*x.shape[:-1], -1, 16)
    return (xb @ t).astype(np.float32).reshape(x.shape)


def _fp4(v: np.ndarray, rounding: str = "nearest_even", rng=None) -> np.ndarray:
    """TE's cast_to_fp4x2 (unpacked): nearest-even E2M1 codes, a zero of either sign is 0;
    with ``rounding="stochastic"``, TE's stochastic rounding (``cvt.rs``) with fpsim's random
    bits (:doc:`numerics`, 32 per element)."""
    codes = np.asarray(encode(v.astype(np.float32), E2M1, saturate=True, rounding=rounding,
                              rng=rng), np.uint8)
    codes[v == 0] = 0
    return codes


def _tree16(err: np.ndarray) -> np.ndarray:
    """Sum 16 consecutive rows as TE's 2-D warp reduction adds them (float32)."""
    r = err.reshape(err.shape[0] // 16, 16, *err.shape[1:])
    r = r[:, 0:8] + r[:, 8:16]
    r = r[:, 0:4] + r[:, 4:8]
    r = r[:, 0:2] + r[:, 2:4]
    return np.repeat(r[:, 0] + r[:, 1], 16, axis=0)


def nvfp4_quantize(x, *, tile=(1, 16), row_scaled=False, error=None, e4m3_max=448,
                   rht=False, rounding="nearest_even", rng=None):
    """TE's NVFP4 quantizer on ``x`` (blocks of 16 along the last axis).

    Parameters
    ----------
    x : array_like of float
        Finite values; at least 1-D (leading axes are flattened into rows).
    tile : (1, 16) or (16, 16)
    row_scaled : bool
        One global amax per row (TE's ``row_scaled_nvfp4``, 1x16 only).
    error : None, "mae" or "mse"
        4-over-6 with this error (None: plain NVFP4).
    e4m3_max : {448, 256}
        The global scale's E4M3 bound (256 only with 4-over-6).
    rht : bool
        TE's 16-point random Hadamard transform first (the output stays rotated).
    rounding : {"nearest_even", "stochastic"}
        The elements' rounding: TE's default, or its stochastic rounding for gradients
        (the scales stay as computed; plain NVFP4 only).
    rng : seed or numpy.random.Generator
        For ``rounding="stochastic"``.

    Returns
    -------
    scale_codes : uint8 ndarray (rows, blocks)
        E4M3 bits of every 16-element block (a 16x16 tile's scale repeated on its rows).
    codes : uint8 ndarray, x's shape
    values : float32 ndarray, x's shape
    amax : float32 ndarray, one value (or one per row)

    Examples
    --------
    >>> s, c, v, a = nvfp4_quantize(np.linspace(-3, 3, 16, dtype=np.float32))
    >>> float(a[0]), round(float(np.abs(v - np.linspace(-3, 3, 16)).max()), 3)
    (3.0, 0.4)
    """
    if rounding not in ("nearest_even", "stochastic"):
        raise ValueError(f"rounding must be 'nearest_even' or 'stochastic', got {rounding!r}")
    if rounding == "stochastic" and error is not None:
        raise ValueError("stochastic rounding is TE's plain NVFP4 option, not 4-over-6's")
    x = np.asarray(x)
    if x.ndim == 0:
        x = x.reshape(1)
    if not np.isfinite(x).all():
        raise ValueError("nvfp4_te: x holds NaN or Inf; TE's reference quantizer maps NaN to "
                         "code 0, so fpsim refuses them here (use 'nvfp4' for fpsim's "
                         "element-wise NaN rule)")
    if x.dtype != np.float32:
        x = np.clip(x, -_FMAX, _FMAX).astype(np.float32)
    shape = x.shape
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    x2 = x.reshape(rows, shape[-1])
    if x2.size == 0:  # empty in, empty out
        nb = -(-shape[-1] // 16)
        amax = np.zeros(rows if row_scaled else 1, np.float32)
        return (np.zeros((rows, nb), np.uint8), np.zeros(shape, np.uint8),
                np.zeros(shape, np.float32), amax)
    if rht:
        x2 = rht16(np.pad(x2, ((0, 0), (0, -x2.shape[1] % 16))))[:, :shape[-1]]
    m, n = x2.shape
    ty = tile[0]
    xp = np.pad(x2, ((0, -m % ty), (0, -n % 16)))  # zeros: TE's _pad_tensor
    M, N = xp.shape
    xb = xp.reshape(M, N // 16, 16)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        if row_scaled:
            amax = np.abs(x2).max(axis=1).astype(np.float32) if n else np.zeros(m, _F32)
            A = np.concatenate([amax, np.zeros(M - m, _F32)])[:, None, None]
        else:
            amax = np.array([np.abs(x2).max() if x2.size else 0.0], np.float32)
            A = amax.reshape(1, 1, 1)
        bmax = np.abs(xb).max(axis=-1, keepdims=True)
        if ty == 16:
            t = bmax.reshape(M // 16, 16, N // 16, 1).max(axis=1, keepdims=True)
            bmax = np.broadcast_to(t, (M // 16, 16, N // 16, 1)).reshape(M, N // 16, 1)
        bound = _F32(e4m3_max if error is not None else 448)
        g = np.minimum((bound * _F32(6)) / A, _FMAX).astype(np.float32)
        g = np.where(g == 0, _F32(1), g)
        g_dec = _F32(1) / g

        def candidate(decode_scale):
            sc = encode(np.clip(decode_scale, _F32(-448), _F32(448)).astype(np.float32), E4M3,
                        saturate=True)
            s = decode(sc, E4M3, dtype=np.float32)
            enc = np.minimum(_F32(1) / (s * g_dec), _FMAX).astype(np.float32)
            codes = _fp4(np.clip(xb * enc, _F32(-6), _F32(6)), rounding, rng)
            return np.asarray(sc, np.uint8), s, codes

        if error is None:
            mult = g * (_F32(1) / _F32(6))
            ds = np.minimum(bmax * mult, _FMAX).astype(np.float32)
            sc, s, codes = candidate(ds)
        else:
            base = (bmax / _F32(6)) * g
            sc4, s4, c4 = candidate(base * _F32(1.5))
            sc6, s6, c6 = candidate(base)
            denom = _F32(6) * bound
            errs = []
            for s_, c_ in ((s4, c4), (s6, c6)):
                v = decode(c_, E2M1, dtype=np.float32)
                e = np.zeros(bmax.shape[:-1], np.float32)
                for i in range(16):
                    val = ((v[..., i] * s_[..., 0]) * A[..., 0]) / denom
                    d = val - xb[..., i]
                    e = e + (d * d if error == "mse" else np.abs(d))
                errs.append(e)
            e4, e6 = errs
            if ty == 16:
                e4, e6 = _tree16(e4), _tree16(e6)
            pick4 = (e4 < e6)[..., None]
            sc = np.where(pick4, sc4, sc6)
            s = np.where(pick4, s4, s6)
            codes = np.where(pick4, c4, c6)
        final = (s * A) * _F32(1.0 / (6.0 * float(bound)))
        values = (decode(codes, E2M1, dtype=np.float32) * final).astype(np.float32)
    codes = codes.reshape(M, N)[:m, :n].reshape(shape)
    values = values.reshape(M, N)[:m, :n].reshape(shape)
    return sc[..., 0][:m], codes.astype(np.uint8), values, amax
