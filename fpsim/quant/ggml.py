"""llama.cpp's (GGML) block formats, bit for bit: the recipes ``ggml_q8_0`` ... ``ggml_q6_k``.

Blocks run along the last axis (a ggml row); its length must be a multiple of the block
(32, or 256 for TQ1_0, TQ2_0 and the K-quants).  All arithmetic is float32, step by step as
ggml's reference quantizers (``ggml-quants.c``, ``quantize_row_*_ref``) and the ``gguf``
package's NumPy port (``gguf.quants``) perform it; the tests compare codes, packed bytes and
values with ``gguf.quants`` bit for bit.  Per block, ``amax`` = largest magnitude:

* Q8_0: ``d = amax / 127``, ``q = round_half_away(x * (1/d))`` (int8).
* Q4_0 / Q5_0: ``m`` = the element of largest magnitude (the first of equals, with its
  sign), ``d = m / -8`` (``/ -16``), ``q = min(15, trunc(x * (1/d) + 8.5)) - 8``
  (``min(31, trunc(x * (1/d) + 16.5)) - 16``): ties go up in ``x / d``.
* Q4_1 / Q5_1: ``d = (max - min) / 15`` (``/ 31``), ``q = min(15, trunc((x - min) * (1/d)
  + 0.5))`` (``31``), values ``d * q + min``.
* TQ1_0 / TQ2_0: ``d = amax``, ``q = round_half_away(x * (1/d))`` in {-1, 0, 1}; TQ1_0 packs
  five trits to a byte (base 3, scaled by 256/243), TQ2_0 four 2-bit fields.
* MXFP4: ``e = floor(log2f(amax)) + 125`` (ggml's float32 ``log2``, which can round up to
  the next integer just below a power of two), ``d = 2**(e - 128)`` (ggml's
  ``e8m0_to_fp32_half``), and each element the first of the nearest values of
  ``d * (0, 1, 2, 3, 4, 6, 8, 12, -0, -1, ..., -12)`` (E2M1 doubled): ties go toward zero.
  A block with ``amax < 2**-125`` gets ``e`` modulo 256, as ggml's ``(uint8_t)`` cast gives
  it, and dequantizes to zeros.
* Scales ``d`` (and Q4_1/Q5_1's ``min``) are stored as float16 (rounded to nearest even
  from the float32 value, which is the one the elements were computed with); a scale beyond
  float16's range is Inf, as in ggml.  A block so small that ``1/d`` overflows float32
  (amax below about 1e-36) is undefined in ggml (a cast of Inf or NaN to an integer): fpsim
  saturates its codes (code 0 for a zero element); its values are zeros either way.
* Dequantization: ``d * q`` (``+ min``) in float32, with the float16 values.

K-quants (super-blocks of 256, float16 ``d`` and ``dmin`` above 4- to 8-bit sub-block
scales): decoding is ggml's (``dequantize_row_q2_K`` ... ``_q6_K``, equal to
``gguf.quants.dequantize`` bit for bit); encoding follows llama.cpp's published reference
quantizers (``quantize_row_q2_K_ref`` ... ``quantize_row_q6_K_ref`` with ``make_qkx2_quants``,
``make_q3_quants`` and ``make_qx_quants``), which ``gguf`` does not port, so it is tested by
its properties and against a readable scalar transcription in the tests.

Documented choices: NaN or Inf in x (after the cast to float32, so also float64 beyond
float32's range) raise a ValueError: ggml turns a block holding them into NaNs (Q8_0, Q4_0,
...) or silently into other numbers (MXFP4).  float64 and float16 input is cast to float32
first, as ggml quantizes float32.

:class:`~fpsim.quant.QuantizedTensor` of a ggml recipe: ``codes`` the elements' integer
values (``float4_e2m1fn`` codes for MXFP4), ``scales`` the float32 multiplier of every group
(block, or K-quant sub-block: ``d * sc``), ``scale_codes`` the ggml blocks' scale bytes
(everything but the element bits, in ggml's order), and :meth:`to_ggml` /
:func:`from_ggml` convert to and from ggml's packed bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GGML_TYPES", "GGMLType", "ggml_type", "quantize", "dequantize", "to_ggml",
           "from_ggml", "fake_quantize"]

_F32 = np.float32
_CHUNK = 8192  # blocks per step of the MXFP4 search (bounds the temporaries)


@dataclass(frozen=True)
class GGMLType:
    """One ggml block type: its block, byte layout and the QuantSpec fields that name it.

    ``layout`` lists the block's byte segments in order: ``("h", n)`` scale bytes,
    ``("e", n)`` element bytes.  ``group`` is the number of elements per scale.
    """

    name: str
    block: int
    type_size: int
    group: int
    format: str
    symmetric: bool
    scale_format: str | None
    scale_rule: str
    rounding: str
    layout: tuple
    k_quant: bool = False

    @property
    def header_size(self) -> int:
        return sum(n for k, n in self.layout if k == "h")

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.type_size / self.block

    def spec_fields(self) -> dict:
        """The QuantSpec fields of the recipe ``ggml_<name>``."""
        return dict(format=self.format, granularity="block", block_size=self.block,
                    scale_format=self.scale_format, scale_rule=self.scale_rule,
                    symmetric=self.symmetric, rounding=self.rounding, stack="ggml")


def _t(name, block, size, group, fmt, sym, layout, *, sf="float16", rule="amax",
       rounding="nearest_away", k=False):
    return GGMLType(name, block, size, group, fmt, sym, sf, rule, rounding, layout, k)


#: The ggml types fpsim reproduces, by ggml's lower-case names.
GGML_TYPES: dict[str, GGMLType] = {t.name: t for t in (
    _t("q8_0", 32, 34, 32, "int8", True, (("h", 2), ("e", 32))),
    _t("q4_0", 32, 18, 32, "int4", True, (("h", 2), ("e", 16))),
    _t("q4_1", 32, 20, 32, "uint4", False, (("h", 4), ("e", 16))),
    _t("q5_0", 32, 22, 32, "int5", True, (("h", 2), ("e", 20))),
    _t("q5_1", 32, 24, 32, "uint5", False, (("h", 4), ("e", 20))),
    _t("mxfp4", 32, 17, 32, "float4_e2m1fn", True, (("h", 1), ("e", 16)),
       sf="float8_e8m0fnu", rule="floor", rounding="nearest_even"),
    _t("tq1_0", 256, 54, 256, "int2_symmetric", True, (("e", 52), ("h", 2))),
    _t("tq2_0", 256, 66, 256, "int2", True, (("e", 64), ("h", 2))),
    _t("q2_k", 256, 84, 16, "uint2", False, (("h", 16), ("e", 64), ("h", 4)),
       rounding="nearest_even", k=True),
    _t("q3_k", 256, 110, 16, "int3", True, (("e", 96), ("h", 14)),
       rounding="nearest_even", k=True),
    _t("q4_k", 256, 144, 32, "uint4", False, (("h", 16), ("e", 128)),
       rounding="nearest_even", k=True),
    _t("q5_k", 256, 176, 32, "uint5", False, (("h", 16), ("e", 160)),
       rounding="nearest_even", k=True),
    _t("q6_k", 256, 210, 16, "int6", True, (("e", 192), ("h", 18)),
       rounding="nearest_even", k=True),
)}


def _key(fmt, block, symmetric, scale_format, scale_rule):
    return (fmt, block, bool(symmetric), scale_format, scale_rule)


_BY_KEY = {_key(t.format, t.block, t.symmetric, t.scale_format, t.scale_rule): t
           for t in GGML_TYPES.values()}


def _spec_key(spec):
    sf = spec.scale_format.name if spec.scale_format is not None else None
    return _key(spec.format.name, spec.block_size, spec.symmetric, sf, spec.scale_rule)


def ggml_type(spec) -> GGMLType:
    """The ggml type a ``stack="ggml"`` QuantSpec describes (from its format, block size,
    symmetry and scale format, never from its name).

    Raises
    ------
    ValueError
        The spec's fields are no ggml type's.

    Examples
    --------
    >>> from fpsim.quant import recipe
    >>> ggml_type(recipe("ggml_q4_0")).name, ggml_type(recipe("ggml_q4_0")).bits_per_weight
    ('q4_0', 4.5)
    """
    t = _BY_KEY.get(_spec_key(spec)) if spec.granularity == "block" else None
    if t is None:
        allowed = "; ".join(
            f"{t.name}: {t.format}, block_size={t.block}, "
            f"{'symmetric' if t.symmetric else 'symmetric=False'}, "
            f"scale_format={t.scale_format}" for t in GGML_TYPES.values())
        raise ValueError(f"stack='ggml' needs the fields of a ggml block type (granularity="
                         f"'block' and one of: {allowed}); got {spec.describe()}")
    return t


def check_spec(spec) -> None:
    """Refuse a ``stack="ggml"`` spec that ggml does not have (called by QuantSpec)."""
    t = ggml_type(spec)
    problems = []
    if spec.rounding != t.rounding or not spec.saturate:
        problems.append(f"rounding={t.rounding!r} (ggml's own, see fpsim.quant.ggml) with "
                        "saturate=True")
    if spec.calibration != "max" or spec.amax is not None or spec.amin is not None:
        problems.append("dynamic max scaling (calibration='max', no static amax or amin)")
    if spec.tensor_scale:
        problems.append("no tensor_scale")
    if spec.axis != -1:
        problems.append("axis=-1 (ggml blocks run along a row, the last axis)")
    if problems:
        raise ValueError(f"stack='ggml' reproduces ggml's {t.name.upper()} quantizer; it "
                         f"needs " + "; ".join(problems) + f" (got {spec.describe()})")


# ---- helpers ---------------------------------------------------------------------------
def _inv(d):
    """1 / d in float32, 0 where d == 0 (ggml's ``d ? 1/d : 0``)."""
    with np.errstate(divide="ignore", over="ignore"):
        return np.where(d == 0, _F32(0), _F32(1) / d).astype(_F32)


def _round_half_away(t):
    """float32 t rounded to the nearest integer, ties away from zero (C's ``roundf``)."""
    a = np.abs(t)
    f = np.floor(a)
    return np.copysign(f + (a - f >= _F32(0.5)), t)


def _f16_bytes(a) -> np.ndarray:
    """float32 (n, 1) -> their float16 (nearest even) as little-endian bytes (n, 2)."""
    with np.errstate(over="ignore"):  # beyond float16's range: Inf, as ggml stores it
        return np.ascontiguousarray(a.astype("<f2")).view(np.uint8).reshape(-1, 2)


def _f16_value(b) -> np.ndarray:
    """Little-endian float16 bytes (n, 2) -> float32 (n, 1)."""
    return np.ascontiguousarray(b).view("<f2").astype(_F32).reshape(-1, 1)


def _nibbles(q) -> np.ndarray:
    """(n, 32k) values < 16 -> (n, 16k) bytes: per 32, byte j = q[j] | q[j + 16] << 4."""
    n = q.shape[0]
    q = q.astype(np.uint8).reshape(n, -1, 2, 16)
    return ((q[:, :, 0] & 15) | (q[:, :, 1] << 4)).reshape(n, -1)


def _unnibbles(b, width=16) -> np.ndarray:
    """Inverse of :func:`_nibbles` (``width`` = bytes per group: 16, or 32 for K-quants)."""
    n = b.shape[0]
    b = b.reshape(n, -1, 1, width)
    return np.concatenate([b & 15, b >> 4], axis=2).reshape(n, -1)


def _bit_planes(bits, k) -> np.ndarray:
    """k-bit values (n, m) -> (n, m * k / 8) bytes: in each group of ``32 * 8 / k`` elements,
    byte j holds element ``i * 32 + j`` at bit ``k * i`` (ggml's 2-bit and 1-bit planes)."""
    n = bits.shape[0]
    per = 8 // k
    q = bits.astype(np.uint8).reshape(n, -1, per, 32)
    out = np.zeros((n, q.shape[1], 32), np.uint8)
    for i in range(per):
        out |= q[:, :, i] << np.uint8(k * i)
    return out.reshape(n, -1)


def _unbit_planes(b, k) -> np.ndarray:
    n = b.shape[0]
    per = 8 // k
    b = b.reshape(n, -1, 1, 32)
    shifts = (np.arange(per, dtype=np.uint8) * k).reshape(1, 1, per, 1)
    return ((b >> shifts) & np.uint8((1 << k) - 1)).reshape(n, -1)


def _qh32(q) -> np.ndarray:
    """Q5_0/Q5_1's high bits: bit j of a little-endian uint32 is bit 4 of element j."""
    return np.packbits((q.astype(np.uint8) >> 4) & 1, axis=-1, bitorder="little")


def _unqh32(b) -> np.ndarray:
    return np.unpackbits(b, axis=-1, bitorder="little")


_POW3 = np.array([81, 27, 9, 3, 1], np.uint16)


def _trits(q) -> np.ndarray:
    """TQ1_0's element bytes: trits t (n, 256) in {0, 1, 2} -> (n, 52)."""
    n = q.shape[0]
    q = q.astype(np.uint16)

    def pack(part, width, digits):
        v = (part.reshape(n, digits, width) * _POW3[:digits, None]).sum(axis=1)
        return ((v * 256 + 242) // 243).astype(np.uint8)  # ceil(v * 256 / 243)

    return np.concatenate([pack(q[:, :160], 32, 5), pack(q[:, 160:240], 16, 5),
                           pack(q[:, 240:], 4, 4)], axis=1)


def _untrits(b) -> np.ndarray:
    n = b.shape[0]

    def unpack(part, digits):
        m = np.array([1, 3, 9, 27, 81][:digits], np.uint16).reshape(1, digits, 1)
        v = (part.astype(np.uint16)[:, None, :] * m) & 255  # the byte's product, wrapped
        return ((v * 3) >> 8).reshape(n, -1)

    return np.concatenate([unpack(b[:, :32], 5), unpack(b[:, 32:48], 5),
                           unpack(b[:, 48:52], 4)], axis=1)


# ---- element bytes <-> codes -------------------------------------------------------------
def _pack_elements(t: GGMLType, c) -> np.ndarray:
    """Element codes (blocks, block) -> the blocks' element bytes."""
    n = t.name
    if n == "q8_0":
        return c.astype(np.int8).view(np.uint8)
    if n in ("q4_0", "q4_1", "mxfp4"):
        return _nibbles(c + 8 if n == "q4_0" else c)
    if n in ("q5_0", "q5_1"):
        q = (c + 16 if n == "q5_0" else c).astype(np.uint8)
        return np.concatenate([_qh32(q), _nibbles(q)], axis=1)
    if n == "tq1_0":
        return _trits(c + 1)
    if n in ("tq2_0", "q2_k"):
        return _bit_planes(c + 1 if n == "tq2_0" else c, 2)
    if n == "q3_k":
        q = (c + 4).astype(np.uint8)
        return np.concatenate([_bit_planes(q >> 2, 1), _bit_planes(q & 3, 2)], axis=1)
    if n == "q4_k":
        return _nibbles_k(c)
    if n == "q5_k":
        q = c.astype(np.uint8)
        return np.concatenate([_bit_planes(q >> 4, 1), _nibbles_k(q & 15)], axis=1)
    if n == "q6_k":
        q = (c + 32).astype(np.uint8)
        nb = q.shape[0]
        lo = (q & 15).reshape(nb, 2, 2, 64)
        ql = (lo[:, :, 0] | (lo[:, :, 1] << 4)).reshape(nb, 128)
        return np.concatenate([ql, _bit_planes(q >> 4, 2)], axis=1)
    raise AssertionError(n)


def _nibbles_k(q) -> np.ndarray:
    """K-quants' nibbles: per 64 elements, byte j = q[j] | q[j + 32] << 4."""
    n = q.shape[0]
    q = q.astype(np.uint8).reshape(n, -1, 2, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, -1)


def _unpack_elements(t: GGMLType, e) -> np.ndarray:
    """The blocks' element bytes -> element codes (blocks, block) in the format's dtype."""
    n = t.name
    if n == "q8_0":
        c = e.view(np.int8)
    elif n in ("q4_0", "q4_1", "mxfp4"):
        c = _unnibbles(e).astype(np.int16) - (8 if n == "q4_0" else 0)
    elif n in ("q5_0", "q5_1"):
        q = _unnibbles(e[:, 4:]) | (_unqh32(e[:, :4]) << 4)
        c = q.astype(np.int16) - (16 if n == "q5_0" else 0)
    elif n == "tq1_0":
        c = _untrits(e).astype(np.int16) - 1
    elif n in ("tq2_0", "q2_k"):
        c = _unbit_planes(e, 2).astype(np.int16) - (1 if n == "tq2_0" else 0)
    elif n == "q3_k":
        c = (_unbit_planes(e[:, 32:], 2) | (_unbit_planes(e[:, :32], 1) << 2)).astype(
            np.int16) - 4
    elif n == "q4_k":
        c = _unnibbles(e, 32)
    elif n == "q5_k":
        c = _unnibbles(e[:, 32:], 32) | (_unbit_planes(e[:, :32], 1) << 4)
    elif n == "q6_k":
        nb = e.shape[0]
        ql = e[:, :128].reshape(nb, 2, 1, 64)
        lo = np.concatenate([ql & 15, ql >> 4], axis=2).reshape(nb, 256)
        c = (lo | (_unbit_planes(e[:, 128:], 2) << 4)).astype(np.int16) - 32
    else:
        raise AssertionError(n)
    from ..formats import get_format

    return np.ascontiguousarray(c).astype(get_format(t.format).code_dtype)


# ---- scale bytes -> per-group scale and offset -------------------------------------------
def _k_scale_min(s) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K's 12 bytes -> 8 six-bit scales and 8 six-bit mins."""
    d, m, md = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([d & 63, (md & 15) | ((d >> 2) & 0x30)], axis=1)
    mn = np.concatenate([m & 63, (md >> 4) | ((m >> 2) & 0x30)], axis=1)
    return sc, mn


def _q3_scales(s) -> np.ndarray:
    """Q3_K's 12 bytes -> 16 signed six-bit scales."""
    lo = np.concatenate([s[:, :8] & 15, s[:, :8] >> 4], axis=1)
    hi = np.concatenate([(s[:, 8:12] >> (2 * i)) & 3 for i in range(4)], axis=1)
    return (lo | (hi << 4)).astype(np.int16) - 32


def _group_params(t: GGMLType, h) -> tuple[np.ndarray, np.ndarray | None]:
    """Scale bytes (blocks, header) -> (multiplier, offset or None), each (blocks, groups)
    float32: an element's value is ``float32(multiplier * m) + offset`` with ``m`` its
    integer (MXFP4: the doubled E2M1 value, the multiplier ggml's half-scale)."""
    n = t.name
    if n == "mxfp4":
        e = h[:, :1].astype(np.uint32)
        bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - 1) << np.uint32(23))
        return bits.astype(np.uint32).view(_F32), None
    if n in ("q4_1", "q5_1"):
        return _f16_value(h[:, :2]), _f16_value(h[:, 2:4])
    if not t.k_quant:  # q8_0, q4_0, q5_0, tq1_0, tq2_0
        return _f16_value(h[:, :2]), None
    if n == "q2_k":
        sc, d, dmin = h[:, :16], _f16_value(h[:, 16:18]), _f16_value(h[:, 18:20])
        return d * (sc & 15).astype(_F32), -(dmin * (sc >> 4).astype(_F32))
    if n == "q3_k":
        return _f16_value(h[:, 12:14]) * _q3_scales(h[:, :12]).astype(_F32), None
    if n in ("q4_k", "q5_k"):
        sc, mn = _k_scale_min(h[:, 4:16])
        return (_f16_value(h[:, :2]) * sc.astype(_F32),
                -(_f16_value(h[:, 2:4]) * mn.astype(_F32)))
    if n == "q6_k":
        return _f16_value(h[:, 16:18]) * h[:, :16].view(np.int8).astype(_F32), None
    raise AssertionError(n)


_E2M1_DOUBLED = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int8)


def _multipliers(t: GGMLType, c) -> np.ndarray:
    if t.name == "mxfp4":
        return _E2M1_DOUBLED[c].astype(_F32)
    return c.astype(_F32)


def _values(t: GGMLType, c, h) -> np.ndarray:
    """float32 values (blocks, block) of codes and scale bytes, as ggml dequantizes."""
    with np.errstate(invalid="ignore", over="ignore"):
        mult, off = _group_params(t, h)
    nb = c.shape[0]
    g = t.block // t.group
    with np.errstate(invalid="ignore", over="ignore"):  # Inf * 0 from arbitrary bytes
        v = mult.reshape(nb, g, 1) * _multipliers(t, c).reshape(nb, g, t.group)
        if off is not None:
            v = v + off.reshape(nb, g, 1)
    return v.reshape(nb, t.block)


# ---- encoders (float32 blocks -> codes, scale bytes) --------------------------------------
def _to_int(q, lo, hi, nan, dtype):
    """Codes from float32: clipped to [lo, hi], NaN -> ``nan``.  Only a block whose 1/d
    overflows (ggml: undefined, a cast of Inf or NaN to an integer) needs it."""
    return np.where(np.isnan(q), _F32(nan), np.clip(q, _F32(lo), _F32(hi))).astype(dtype)


def _enc_q8_0(b):
    d = (np.abs(b).max(axis=1, keepdims=True) / _F32(127)).astype(_F32)
    with np.errstate(invalid="ignore"):
        q = _round_half_away(b * _inv(d))
    return _to_int(q, -127, 127, 0, np.int8), _f16_bytes(d)


def _enc_signed_max(b, half):
    """Q4_0 (half=8) and Q5_0 (half=16)."""
    i = np.abs(b).argmax(axis=1)[:, None]
    d = (np.take_along_axis(b, i, axis=1) / _F32(-half)).astype(_F32)
    with np.errstate(invalid="ignore"):
        q = np.trunc((b * _inv(d)) + _F32(half + 0.5))
    return _to_int(q, 0, 2 * half - 1, half, np.int16) - half, _f16_bytes(d)


def _enc_min_max(b, top):
    """Q4_1 (top=15) and Q5_1 (top=31)."""
    lo = b.min(axis=1, keepdims=True)
    d = ((b.max(axis=1, keepdims=True) - lo) / _F32(top)).astype(_F32)
    with np.errstate(invalid="ignore"):
        q = np.trunc(((b - lo) * _inv(d)) + _F32(0.5))
    return _to_int(q, 0, top, 0, np.uint8), np.concatenate([_f16_bytes(d), _f16_bytes(lo)],
                                                            axis=1)


def _enc_ternary(b):
    d = np.abs(b).max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        q = _round_half_away(b * _inv(d))
    return _to_int(q, -1, 1, 0, np.int8), _f16_bytes(d)


def _enc_mxfp4(b):
    amax = np.abs(b).max(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        lg = np.floor(np.log2(np.where(amax > 0, amax, _F32(1)))).astype(np.int64)
    e = np.where(amax > 0, (lg + 125) % 256, 0).astype(np.uint8)  # ggml's (uint8_t) cast
    dh = _group_params(GGML_TYPES["mxfp4"], e)[0]  # (blocks, 1)
    codes = np.empty(b.shape, np.uint8)
    cand = _E2M1_DOUBLED.astype(_F32)
    for s in range(0, b.shape[0], _CHUNK):
        sl = slice(s, s + _CHUNK)
        with np.errstate(over="ignore"):
            err = np.abs((dh[sl, :, None] * cand) - b[sl, :, None])  # (blocks, 32, 16)
        codes[sl] = np.argmin(err, axis=-1)  # the first of equals, as ggml's strict <
    return codes, e


_ENCODERS = {
    "q8_0": _enc_q8_0,
    "q4_0": lambda b: _enc_signed_max(b, 8),
    "q5_0": lambda b: _enc_signed_max(b, 16),
    "q4_1": lambda b: _enc_min_max(b, 15),
    "q5_1": lambda b: _enc_min_max(b, 31),
    "tq1_0": _enc_ternary,
    "tq2_0": _enc_ternary,
    "mxfp4": _enc_mxfp4,
}


# ---- K-quant encoders: llama.cpp's quantize_row_q*_K_ref, float32 in C's order -----------
_EPS = _F32(1e-15)  # ggml's GROUP_MAX_EPS


def _nearest(v) -> np.ndarray:
    """ggml's ``nearest_int``: float32 rounded to nearest, ties to even."""
    with np.errstate(invalid="ignore"):
        return np.rint(v).astype(np.int64)


def _seq(terms) -> np.ndarray:
    """Row sums (m, n) -> (m,) added one term at a time from 0, as C's loops do (float32)."""
    acc = np.zeros(terms.shape[0], _F32)
    for i in range(terms.shape[1]):
        acc = acc + terms[:, i]
    return acc


def _signed_max(x) -> np.ndarray:
    """The element of largest magnitude of every row (the first of equals), with its sign."""
    return np.take_along_axis(x, np.abs(x).argmax(axis=1)[:, None], axis=1)[:, 0]


def _make_qkx2(x, w, nmax, rmin, rdelta, nstep, mad):
    """llama.cpp's ``make_qkx2_quants`` on every row of x: (L, scale, the_min)."""
    n = x.shape[1]
    mn, mx = x.min(axis=1), x.max(axis=1)
    sum_w, sum_x = w[:, 0].copy(), w[:, 0] * x[:, 0]
    for i in range(1, n):
        sum_w = sum_w + w[:, i]
        sum_x = sum_x + w[:, i] * x[:, i]
    mn = np.where(mn > 0, _F32(0), mn)
    flat = mx == mn

    def err(d):
        return np.abs(d) if mad else d * d

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = _F32(nmax) / (mx - mn)
        scale = _F32(1) / iscale
        L = np.clip(_nearest(iscale[:, None] * (x - mn[:, None])), 0, nmax)
        best = _seq(w * err((scale[:, None] * L.astype(_F32) + mn[:, None]) - x))
        for step in range(nstep + 1):
            isc = (_F32(rmin) + _F32(rdelta) * _F32(step) + _F32(nmax)) / (mx - mn)
            la = np.clip(_nearest(isc[:, None] * (x - mn[:, None])), 0, nmax)
            lf = la.astype(_F32)
            sum_l, sum_l2, sum_xl = _seq(w * lf), _seq(w * lf * lf), _seq(w * lf * x)
            D = sum_w * sum_l2 - sum_l * sum_l
            ts = (sum_w * sum_xl - sum_x * sum_l) / D
            tm = (sum_l2 * sum_x - sum_l * sum_xl) / D
            pos = tm > 0
            tm = np.where(pos, _F32(0), tm)
            ts = np.where(pos, sum_xl / sum_l2, ts)
            cur = _seq(w * err((ts[:, None] * lf + tm[:, None]) - x))
            better = (D > 0) & (cur < best) & ~flat
            L = np.where(better[:, None], la, L)
            best = np.where(better, cur, best)
            scale = np.where(better, ts, scale)
            mn = np.where(better, tm, mn)
    L = np.where(flat[:, None], 0, L)
    scale = np.where(flat, _F32(0), scale).astype(_F32)
    return L, scale, (-mn).astype(_F32)


def _make_qx(x, nmax):
    """llama.cpp's ``make_qx_quants`` (rmse_type 1, no importance weights): (L, scale)."""
    mx = _signed_max(x)
    zero = np.abs(mx) < _EPS
    w = x * x
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):

        def fit(iscale):
            lv = np.clip(_nearest(iscale[:, None] * x), -nmax, nmax - 1)
            lf = lv.astype(_F32)
            return lv + nmax, _seq(w * x * lf), _seq(w * lf * lf)

        L, sumlx, suml2 = fit(_F32(-nmax) / mx)
        scale = np.where(suml2 != 0, sumlx / suml2, _F32(0)).astype(_F32)
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            la, slx, sl2 = fit(-(_F32(nmax) + _F32(0.1) * _F32(step)) / mx)
            upd = (sl2 > 0) & (slx * slx > best * sl2)
            L = np.where(upd[:, None], la, L)
            scale = np.where(upd, slx / sl2, scale)
            best = np.where(upd, scale * slx, best)
    return np.where(zero[:, None], 0, L), np.where(zero, _F32(0), scale).astype(_F32)


def _make_q3(x, nmax):
    """llama.cpp's ``make_q3_quants`` with ``do_rmse``: (L, scale)."""
    mx = _signed_max(x)
    zero = np.abs(mx) < _EPS
    w = x * x
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        L = np.clip(_nearest((_F32(-nmax) / mx)[:, None] * x), -nmax, nmax - 1)
        lf = L.astype(_F32)
        sumlx, suml2 = _seq(w * x * lf), _seq(w * lf * lf)
        for _ in range(5):  # a pass that changes nothing leaves the state as it was
            for i in range(x.shape[1]):
                wi, xi, li = w[:, i], x[:, i], L[:, i].astype(_F32)
                slx = sumlx - wi * xi * li
                sl2 = suml2 - wi * li * li
                new = np.clip(_nearest(xi * sl2 / slx), -nmax, nmax - 1)
                nf = new.astype(_F32)
                slx2 = slx + wi * xi * nf
                sl22 = sl2 + wi * nf * nf
                take = ((slx > 0) & (new != L[:, i]) & (sl22 > 0)
                        & (slx2 * slx2 * suml2 > sumlx * sumlx * sl22))
                L[:, i] = np.where(take, new, L[:, i])
                sumlx = np.where(take, slx2, sumlx)
                suml2 = np.where(take, sl22, suml2)
        scale = np.where(suml2 > 0, sumlx / suml2, _F32(0)).astype(_F32)
    return np.where(zero[:, None], 0, L + nmax), np.where(zero, _F32(0), scale)


def _f16(v) -> np.ndarray:
    """float32 -> the float32 value of its float16 (ggml's FP32_TO_FP16 then back)."""
    with np.errstate(over="ignore"):
        return np.asarray(v, _F32).astype(np.float16).astype(_F32)


def _requantize(x, d, dm, L, lo, hi):
    """ggml's last pass: ``l = nearest_int((x + dm) / d)`` clipped, where ``d != 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        new = np.clip(_nearest((x + dm[:, None]) / d[:, None]), lo, hi)
    return np.where((d != 0)[:, None], new, L)


def _enc_q2_k(b):
    nb = b.shape[0]
    x = b.reshape(-1, 16)
    L, sc, mins = _make_qkx2(x, np.abs(x), 3, -0.5, 0.1, 15, True)
    sc, mins = sc.reshape(nb, 16), mins.reshape(nb, 16)
    max_scale = np.maximum(sc.max(axis=1), _F32(0))
    max_min = np.maximum(mins.max(axis=1), _F32(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ls = np.where(max_scale[:, None] > 0,
                      _nearest((_F32(15) / max_scale)[:, None] * sc), 0) & 255
        lm = np.where(max_min[:, None] > 0,
                      _nearest((_F32(15) / max_min)[:, None] * mins), 0)
    scales = (ls | (lm << 4)).astype(np.uint8)
    d = np.where(max_scale > 0, max_scale / _F32(15), _F32(0)).astype(_F32)
    dmin = np.where(max_min > 0, max_min / _F32(15), _F32(0)).astype(_F32)
    dl = (_f16(d)[:, None] * (scales & 15).astype(_F32)).reshape(-1)
    ml = (_f16(dmin)[:, None] * (scales >> 4).astype(_F32)).reshape(-1)
    L = _requantize(x, dl, ml, L, 0, 3).reshape(nb, 256)
    h = np.concatenate([scales, _f16_bytes(d[:, None]), _f16_bytes(dmin[:, None])], axis=1)
    return L, h


def _pack_q3_scales(l) -> np.ndarray:
    """16 six-bit values (0..63) -> Q3_K's 12 bytes."""
    out = np.zeros((l.shape[0], 12), np.uint8)
    out[:, :8] = (l[:, :8] & 15) | ((l[:, 8:] & 15) << 4)
    for j in range(16):
        out[:, 8 + j % 4] |= ((l[:, j] >> 4) << (2 * (j // 4))).astype(np.uint8)
    return out


def _enc_q3_k(b):
    nb = b.shape[0]
    x = b.reshape(-1, 16)
    L, sc = _make_q3(x, 4)
    sc = sc.reshape(nb, 16)
    max_scale = _signed_max(sc)
    has = max_scale != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = _F32(-32) / max_scale
        l = np.clip(_nearest(iscale[:, None] * sc), -32, 31) + 32
        d = np.where(has, _F32(1) / iscale, _F32(0)).astype(_F32)
    packed = np.where(has[:, None], _pack_q3_scales(l), np.uint8(0)).astype(np.uint8)
    dl = (_f16(d)[:, None] * _q3_scales(packed).astype(_F32)).reshape(-1)
    L = _requantize(x, dl, np.zeros_like(dl), L - 4, -4, 3)  # L holds l + 4
    return L.reshape(nb, 256), np.concatenate([packed, _f16_bytes(d[:, None])], axis=1)


def _pack_k_scales(ls, lm) -> np.ndarray:
    """8 six-bit scales and 8 six-bit mins -> Q4_K/Q5_K's 12 bytes."""
    out = np.zeros((ls.shape[0], 12), np.uint8)
    out[:, 0:4], out[:, 4:8] = ls[:, :4], lm[:, :4]
    out[:, 8:12] = (ls[:, 4:] & 15) | ((lm[:, 4:] & 15) << 4)
    out[:, 0:4] |= (ls[:, 4:] >> 4) << 6
    out[:, 4:8] |= (lm[:, 4:] >> 4) << 6
    return out


def _enc_q45_k(b, nmax, rmin, nstep):
    nb = b.shape[0]
    x = b.reshape(-1, 32)
    av = np.sqrt(_seq(x * x) / _F32(32))
    L, sc, mins = _make_qkx2(x, av[:, None] + np.abs(x), nmax, rmin, 0.1, nstep, False)
    sc, mins = sc.reshape(nb, 8), mins.reshape(nb, 8)
    max_scale = np.maximum(sc.max(axis=1), _F32(0))
    max_min = np.maximum(mins.max(axis=1), _F32(0))
    with np.errstate(divide="ignore"):
        inv_s = np.where(max_scale > 0, _F32(63) / max_scale, _F32(0)).astype(_F32)
        inv_m = np.where(max_min > 0, _F32(63) / max_min, _F32(0)).astype(_F32)
    ls = np.minimum(_nearest(inv_s[:, None] * sc) & 255, 63).astype(np.uint8)  # (uint8_t)
    lm = np.minimum(_nearest(inv_m[:, None] * mins) & 255, 63).astype(np.uint8)
    d, dmin = (max_scale / _F32(63)).astype(_F32), (max_min / _F32(63)).astype(_F32)
    dl = (_f16(d)[:, None] * ls.astype(_F32)).reshape(-1)
    ml = (_f16(dmin)[:, None] * lm.astype(_F32)).reshape(-1)
    L = _requantize(x, dl, ml, L, 0, nmax).reshape(nb, 256)
    h = np.concatenate([_f16_bytes(d[:, None]), _f16_bytes(dmin[:, None]),
                        _pack_k_scales(ls, lm)], axis=1)
    return L, h


def _enc_q6_k(b):
    nb = b.shape[0]
    x = b.reshape(-1, 16)
    L, sc = _make_qx(x, 32)
    sc = sc.reshape(nb, 16)
    max_scale = _signed_max(sc)
    zero = np.abs(max_scale) < _EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = _F32(-128) / max_scale
        d = np.where(zero, _F32(0), _F32(1) / iscale).astype(_F32)
        s8 = np.where(zero[:, None], 0, np.minimum(127, _nearest(iscale[:, None] * sc)))
    dl = (_f16(d)[:, None] * s8.astype(_F32)).reshape(-1)
    L = _requantize(x, dl, np.zeros_like(dl), L - 32, -32, 31)  # L holds l + 32
    L = np.where(zero[:, None], -32, L.reshape(nb, 256))  # ggml zeroes the whole block
    h = np.concatenate([s8.astype(np.int8).view(np.uint8), _f16_bytes(d[:, None])], axis=1)
    return L, h


_ENCODERS.update({
    "q2_k": _enc_q2_k,
    "q3_k": _enc_q3_k,
    "q4_k": lambda b: _enc_q45_k(b, 15, -1.0, 20),
    "q5_k": lambda b: _enc_q45_k(b, 31, -0.5, 15),
    "q6_k": _enc_q6_k,
})


# ---- public functions --------------------------------------------------------------------
def _resolve_type(t) -> GGMLType:
    if isinstance(t, GGMLType):
        return t
    if isinstance(t, str):
        key = t.strip().lower().removeprefix("ggml_")
        if key in GGML_TYPES:
            return GGML_TYPES[key]
        raise ValueError(f"ggml type must be one of {', '.join(GGML_TYPES)} (or the recipe "
                         f"names ggml_<type>), got {t!r}")
    from .spec import QuantSpec

    if isinstance(t, QuantSpec):
        if t.stack != "ggml":
            raise ValueError(f"spec must be a stack='ggml' recipe (ggml_q4_0, ...), got "
                             f"stack={t.stack!r}")
        return ggml_type(t)
    raise TypeError(f"ggml type must be a name ('q4_0', 'ggml_q4_0'), a GGMLType or a "
                    f"stack='ggml' QuantSpec, got {type(t).__name__}")


def _rows(x, t: GGMLType, axis: int = -1) -> tuple[np.ndarray, tuple]:
    """x as float32 blocks (n_blocks, block), checked; and x's shape."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"x must be a float array, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"ggml_{t.name} quantizes rows: x must have at least one dimension, "
                         "got a 0-d array")
    from . import blocks as _blocks

    if _blocks.check_axis(axis, x.ndim) != x.ndim - 1:
        raise ValueError(f"ggml_{t.name}: blocks run along the last axis (a ggml row); got "
                         f"axis={axis} for an array of {x.ndim} dimensions")
    if x.shape[-1] % t.block:
        raise ValueError(f"ggml_{t.name}: the last axis' length {x.shape[-1]} must be a "
                         f"multiple of the block size {t.block} (x.shape={x.shape})")
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = x.astype(_F32, copy=False)
    if not np.isfinite(x32).all():
        raise ValueError(f"ggml_{t.name}: x holds NaN or Inf (after the cast to float32, as "
                         "ggml quantizes float32); ggml turns such blocks into NaN or other "
                         "numbers, so fpsim refuses them: remove or clip them first")
    return np.ascontiguousarray(x32).reshape(-1, t.block), x.shape


def quantize(x, ggml_type, *, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """ggml's codes and scale bytes of x: ``(codes, scale_codes)``.

    Parameters
    ----------
    x : array_like of float
        Any shape whose last axis is a multiple of the block size; cast to float32.
    ggml_type : str, GGMLType or QuantSpec
        ``"q4_0"``, ``"ggml_q4_0"``, ... (see :data:`GGML_TYPES`).
    axis : int
        Must name the last axis (ggml's blocks run along rows).

    Returns
    -------
    codes : ndarray
        The element codes, x's shape, in the element format's code dtype.
    scale_codes : ndarray of uint8
        ``(*x.shape[:-1], n_blocks, header_size)``: every block's scale bytes in ggml order.

    Raises
    ------
    ValueError
        NaN or Inf, another axis, a length that is not a multiple of the block.

    Examples
    --------
    >>> import numpy as np
    >>> c, h = quantize(np.linspace(-1, 1, 32, dtype=np.float32), "q4_0")
    >>> c[:4].tolist(), h.shape
    ([-8, -7, -7, -6], (1, 2))
    """
    t = _resolve_type(ggml_type)
    b, shape = _rows(x, t, axis)
    if b.shape[0]:
        codes, h = _ENCODERS[t.name](b)
    else:  # no blocks
        codes, h = np.zeros(b.shape, np.int8), np.zeros((0, t.header_size), np.uint8)
    from ..formats import get_format

    codes = codes.astype(get_format(t.format).code_dtype).reshape(shape)
    return codes, h.reshape(*shape[:-1], shape[-1] // t.block, t.header_size)


def _values_of(t: GGMLType, codes, scale_codes, shape) -> np.ndarray:
    c = np.asarray(codes).reshape(-1, t.block)
    if not c.size:
        return np.zeros(shape, _F32)
    h = np.asarray(scale_codes, np.uint8).reshape(-1, t.header_size)
    return _values(t, c, h).reshape(shape)


def fake_quantize(x, ggml_type, *, axis: int = -1) -> np.ndarray:
    """x quantized to a ggml type and dequantized again, float32 (ggml's values).

    Examples
    --------
    >>> import numpy as np
    >>> fake_quantize(np.arange(32, dtype=np.float32), "q8_0")[-3:].tolist()
    [29.052734375, 30.029296875, 31.005859375]
    """
    t = _resolve_type(ggml_type)
    codes, h = quantize(x, t, axis=axis)
    return _values_of(t, codes, h, codes.shape)


def _assemble(t: GGMLType, e, h) -> np.ndarray:
    """Element bytes (blocks, E) and scale bytes (blocks, H) -> ggml blocks (blocks, size)."""
    parts, ie, ih = [], 0, 0
    for kind, n in t.layout:
        if kind == "e":
            parts.append(e[:, ie:ie + n])
            ie += n
        else:
            parts.append(h[:, ih:ih + n])
            ih += n
    return np.concatenate(parts, axis=1)


def _split(t: GGMLType, blocks) -> tuple[np.ndarray, np.ndarray]:
    es, hs, pos = [], [], 0
    for kind, n in t.layout:
        (es if kind == "e" else hs).append(blocks[:, pos:pos + n])
        pos += n
    return np.concatenate(es, axis=1), np.concatenate(hs, axis=1)


def to_ggml(qt) -> np.ndarray:
    """The packed ggml bytes of a QuantizedTensor of a ggml recipe.

    Returns
    -------
    ndarray of uint8
        Shape ``(*shape[:-1], n_blocks * type_size)``, exactly ``gguf.quants.quantize``'s
        array (``.tobytes()`` gives the tensor data of a GGUF file).

    Examples
    --------
    >>> import numpy as np, fpsim
    >>> qt = fpsim.quantize_tensor(np.ones((2, 32), np.float32), "ggml_q8_0")
    >>> qt.to_ggml().shape, qt.nbytes
    ((2, 34), 68)
    """
    t = _resolve_type(qt.spec)
    shape = tuple(qt.shape)
    c = np.asarray(qt.codes).reshape(-1, t.block)
    h = np.asarray(qt.scale_codes, np.uint8).reshape(-1, t.header_size)
    if not c.size:
        return np.zeros((*shape[:-1], shape[-1] // t.block * t.type_size), np.uint8)
    e = _pack_elements(t, c.astype(np.int16) if t.name != "mxfp4" else c)
    return _assemble(t, e, h).reshape(*shape[:-1], shape[-1] // t.block * t.type_size)


def _group_arrays(t: GGMLType, scale_codes, shape):
    """(scales, offsets or None) per group, float32, the last axis counted in groups."""
    h = np.asarray(scale_codes, np.uint8).reshape(-1, t.header_size)
    gshape = (*shape[:-1], shape[-1] // t.group)
    if not h.size:
        z = np.zeros(gshape, _F32)
        return z, (None if t.symmetric else z)
    with np.errstate(invalid="ignore", over="ignore"):
        mult, off = _group_params(t, h)
    if t.name == "mxfp4":  # ggml's half-scale times the doubled E2M1 value
        with np.errstate(over="ignore"):
            mult = mult * _F32(2)
    return mult.reshape(gshape), None if off is None else off.reshape(gshape)


def group_params(qt) -> tuple[np.ndarray, np.ndarray | None]:
    """(scales, offsets or None) of a ggml QuantizedTensor, each float32 with the last axis
    counted in groups (blocks, or K-quant sub-blocks): ``x_hat = element * scale + offset``
    (MXFP4: the E2M1 value times ``2**(e - 127)``; Q4_1/Q5_1: offset = the block's min;
    K-quants: scale ``d * sc``, offset ``-dmin * m``).

    Examples
    --------
    >>> import numpy as np, fpsim
    >>> qt = fpsim.quantize_tensor(np.arange(32, dtype=np.float32), "ggml_q4_1")
    >>> s, o = group_params(qt)
    >>> s.tolist(), o.tolist()
    ([2.06640625], [0.0])
    """
    t = _resolve_type(qt.spec)
    return _group_arrays(t, qt.scale_codes, tuple(qt.shape))


def tensor(codes, scale_codes, spec, shape):
    """A QuantizedTensor from ggml codes and scale bytes (internal)."""
    from .recipes import QuantizedTensor

    t = _resolve_type(spec)
    scales = _group_arrays(t, scale_codes, tuple(shape))[0]
    return QuantizedTensor(codes=codes, scales=scales, zero_points=None, spec=spec,
                           shape=tuple(shape), scale_codes=scale_codes, nan_mask=None)


def dequantize(qt) -> np.ndarray:
    """The float32 values of a ggml QuantizedTensor, as ggml (and gguf) dequantize them."""
    t = _resolve_type(qt.spec)
    return _values_of(t, qt.codes, qt.scale_codes, tuple(qt.shape))


def nbytes(spec, shape) -> int:
    """ggml's size in bytes of a tensor of ``shape``: blocks times the type's block size."""
    t = _resolve_type(spec)
    n = int(np.prod(shape, dtype=np.int64))
    return n // t.block * t.type_size


def from_ggml(data, spec, shape):
    """A QuantizedTensor from ggml's packed bytes (a GGUF tensor's data).

    Parameters
    ----------
    data : bytes, bytearray, memoryview or ndarray of uint8
        ``n_blocks * type_size`` bytes, rows after rows.
    spec : str or QuantSpec
        A ggml recipe (``"ggml_q4_0"``...) or a stack='ggml' QuantSpec.
    shape : tuple of int
        The tensor's shape (ggml's ``ne`` reversed: rows last).

    Raises
    ------
    ValueError
        A size that does not match, a last axis that is no multiple of the block.

    Examples
    --------
    >>> import numpy as np, fpsim
    >>> x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
    >>> qt = fpsim.quantize_tensor(x, "ggml_q4_1")
    >>> back = from_ggml(qt.to_ggml().tobytes(), "ggml_q4_1", (2, 32))
    >>> bool((back.dequantize() == qt.dequantize()).all())
    True
    """
    from ..formats import get_format
    from .spec import resolve_spec

    spec = resolve_spec(spec)
    t = _resolve_type(spec)
    shape = tuple(int(n) for n in shape) if np.ndim(shape) else (int(shape),)
    if not shape or shape[-1] % t.block:
        raise ValueError(f"shape: the last axis must be a multiple of {t.block} for "
                         f"ggml_{t.name}, got {shape}")
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise TypeError(f"data must be bytes or a uint8 array, got dtype {data.dtype}")
        raw = np.ascontiguousarray(data).reshape(-1)
    else:
        raw = np.frombuffer(bytes(data), np.uint8)
    need = nbytes(t.name, shape)
    if raw.size != need:
        raise ValueError(f"data: ggml_{t.name} of shape {shape} takes {need} bytes, got "
                         f"{raw.size}")
    blocks = raw.reshape(-1, t.type_size)
    e, h = _split(t, blocks)
    codes = _unpack_elements(t, e).reshape(shape) if blocks.size else \
        np.zeros(shape, get_format(t.format).code_dtype)
    h = np.ascontiguousarray(h).reshape(*shape[:-1], shape[-1] // t.block, t.header_size)
    return tensor(codes, h, spec, shape)
