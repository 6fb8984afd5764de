"""Block formats: OCP MX (power-of-two E8M0 scale per block of 32) and NVFP4.

MX (OCP Microscaling Formats v1.0): a block of ``k`` elements along an axis
shares one E8M0 scale ``X = 2**es``; the elements are rounded (nearest-even by
default) and **saturated** to the element format.  ``scale_rule`` picks
``es`` from the block's amax (see :data:`SCALE_RULES`); the OCP rule is
``floor``.  Elements are encoded exactly as ``x / X`` rounded once.  The
``mxint8`` element is ``ocp_int8``: two's complement ``n * 2**-6`` clipped to
``[-2, 127/64]`` as OCP MX v1.0 (section 5.3.4) and gfloat define it; pass
``fmt="ocp_int8_symmetric"`` for microxcaling's symmetric clamp to
``+-127/64``.

NVFP4: blocks of 16 E2M1 elements with an E4M3 scale each, under one FP32
scale per tensor (``amax / (448 * 6)``).

NaN and Inf never set a scale (amaxes are over the finite values); NaN stays
NaN element by element and +-Inf saturates to the block's largest value.

Blocks compute on float32 values (float64 input is first rounded to float32,
as hardware does, saturating at +-FLT_MAX); lengths that are not a multiple of ``k`` are padded with
zeros, which never change a block's amax.
"""

from __future__ import annotations

import numpy as np

from .._kernels import use_parallel
from .._kernels import blocks as kb
from .. import dispatch
from ._cast import E2M1, E4M3, E8M0, decode, encode, quantize
from ..formats import FloatFormat, IntFormat, get_format
from ..rounding import resolve_seed
from ._args import details_flag, renamed

__all__ = ["SCALE_RULES", "MX_ELEMENTS", "mx_encode", "mx_fake_quantize", "nvfp4_encode",
           "scale_exponent"]

#: Scale rules for power-of-two block scales, in kernel order.
SCALE_RULES = ("floor", "ceil", "even", "rceil")

#: OCP MX block formats and their element formats.
MX_ELEMENTS = {
    "mxfp8_e4m3": "float8_e4m3fn",
    "mxfp8_e5m2": "float8_e5m2",
    "mxfp6_e2m3": "float6_e2m3fn",
    "mxfp6_e3m2": "float6_e3m2fn",
    "mxfp4_e2m1": "float4_e2m1fn",
    "mxint8": "ocp_int8",  # [-2, 127/64] (OCP); microxcaling: "ocp_int8_symmetric"
}


def _rule_number(scale_rule: str) -> int:
    if scale_rule not in SCALE_RULES:
        raise ValueError(f"scale_rule must be one of {', '.join(SCALE_RULES)}, got {scale_rule!r}")
    return SCALE_RULES.index(scale_rule)


def _element_constants(fmt) -> tuple[int, int]:
    """(emax_elem, 23-bit mantissa field of max_elem as a float32)."""
    mx = np.float32(fmt.max)
    bits = int(mx.view(np.uint32))
    return (bits >> 23) - 127, bits & 0x7FFFFF


@renamed(element="fmt")
def scale_exponent(amax, fmt, *, scale_rule="floor") -> np.ndarray:
    """The block-scale exponent ``es`` (scale ``2**es``) for given amax values.

    Examples
    --------
    >>> scale_exponent([448.0, 449.0, 0.0], "e4m3fn").tolist()
    [0, 0, 0]
    >>> scale_exponent([449.0], "e4m3fn", scale_rule="rceil").tolist()
    [1]
    """
    fmt = get_format(fmt)
    rule = _rule_number(scale_rule)
    a = np.ascontiguousarray(np.abs(np.asarray(amax, dtype=np.float32))).reshape(-1)
    emax_elem, mant = _element_constants(fmt)
    out = np.empty(a.size, dtype=np.int64)
    xb = a.view(np.int32)
    for i in range(a.size):
        out[i] = kb.block_exponent(xb, i, 1, rule, emax_elem, mant)
    return out


#: Elements per chunk of the chunked (memory-bounded) loops.
CHUNK = 1 << 18
_F32_MAX = float(np.finfo(np.float32).max)


def check_int(value, name: str, *, minimum=None) -> int:
    """``value`` as a Python int: ints and numpy integers only (no bools, no floats)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_axis(axis, ndim: int) -> int:
    """``axis`` normalised to ``0 <= axis < ndim`` (numpy's AxisError rule, as a ValueError)."""
    axis = check_int(axis, "axis")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for an array with ndim={ndim}; "
                         f"allowed: {-ndim} <= axis < {ndim}")
    return axis % ndim


def check_array(x, name: str = "x") -> np.ndarray:
    """x as a float ndarray; masked arrays are refused (the mask would be silently lost)."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name} must not be a masked array (numpy.ma): fpsim would ignore its "
                        "mask; pass x.filled(np.nan) to quantize masked values as NaN, or "
                        "x.compressed() to drop them")
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array, got dtype {arr.dtype}")
    return arr


def to_float32(a: np.ndarray) -> np.ndarray:
    """a as float32, saturating: finite values beyond float32's range become +-FLT_MAX
    (never Inf); NaN and +-Inf pass through."""
    if a.dtype == np.float32:
        return a
    if a.dtype.itemsize > 4:
        a = np.clip(a, -_F32_MAX, _F32_MAX)  # Inf and NaN are unchanged by clip
    return a.astype(np.float32)


def row_chunks(rows: int, cols: int):
    """Slices of rows so that each chunk holds about CHUNK elements."""
    step = max(1, CHUNK // max(cols, 1))
    for r0 in range(0, rows, step):
        yield slice(r0, min(rows, r0 + step))


def _blocked(x, axis, k):
    """float32 (rows, nblocks * k) array of x with ``axis`` last, zero padded (a view
    of x when x is float32 and already laid out that way)."""
    x = check_array(x)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension for block scaling")
    axis = check_axis(axis, x.ndim)
    k = check_int(k, "block_size", minimum=1)
    moved = np.moveaxis(x, axis, -1)
    length = moved.shape[-1]
    nb = -(-length // k) if length else 0
    rows = int(np.prod(moved.shape[:-1], dtype=np.int64))
    if (x.dtype == np.float32 and length == nb * k and axis == x.ndim - 1
            and x.flags.c_contiguous):
        return x.reshape(rows, length), moved.shape, nb
    buf = np.zeros((rows, nb * k), dtype=np.float32)
    if buf.size:
        src = moved.reshape(rows, length) if moved.flags.c_contiguous else moved
        if src.ndim == 2:
            for rs in row_chunks(rows, length):
                buf[rs, :length] = to_float32(src[rs])
        else:
            buf[:, :length] = to_float32(moved).reshape(rows, length)
    return buf, moved.shape, nb


def _unblock(arr2d, moved_shape, axis):
    length = moved_shape[-1]
    out = arr2d[:, :length].reshape(moved_shape)
    return np.moveaxis(out, -1, axis)


#: The value table an integer element does not use: read-only like the float formats' tables,
#: so that both kinds share one compiled MX kernel (Numba specialises on writability).
_NO_LUT = np.zeros(1)
_NO_LUT.setflags(write=False)


def _run_mx(x, fmt, *, axis, block_size, scale_rule, rounding, rng, want_values):
    fmt = get_format(fmt)
    rule = _rule_number(scale_rule)
    mode = dispatch.mode_for(fmt, rounding)
    seed = resolve_seed(rng) if rng is not None or rounding == "stochastic" else np.uint64(0)
    buf, moved_shape, nb = _blocked(x, axis, block_size)
    rows = buf.shape[0]
    codes = np.empty(buf.shape, dtype=fmt.code_dtype if isinstance(fmt, FloatFormat)
                     else np.uint16 if fmt.bits > 8 else np.uint8)
    values = np.empty(buf.shape if want_values else (1, 1), dtype=np.float32)
    scale_codes = np.empty(rows * nb, dtype=np.uint8)
    emax_elem, max_mant = _element_constants(fmt)
    if isinstance(fmt, FloatFormat):
        fp, ip, is_int = dispatch.float_params(fmt), (0, 0, 0, 8, 0), False
        lut = dispatch.lut(fmt, np.dtype(np.float64))
    else:
        fp, is_int = dispatch.float_params(E4M3), True
        ip = dispatch.int_params(fmt)[:4] + (0,)
        lut = _NO_LUT
    if buf.size:
        k = kb.mx_parallel if use_parallel(buf.size) else kb.mx_serial
        with np.errstate(over="ignore"):
            k(buf.reshape(-1).view(np.int32), codes.reshape(-1), values.reshape(-1),
              scale_codes, block_size, fp, ip, is_int, rule, emax_elem, max_mant, mode, seed,
              lut, want_values)
    if isinstance(fmt, IntFormat) and not fmt.bit_patterns:
        # the kernel stores two's-complement bits; plain integer formats hold values
        c = codes.astype(np.int32)
        if fmt.signed:
            half = 1 << (fmt.bits - 1)
            c = ((c + half) & ((1 << fmt.bits) - 1)) - half
        codes = c.astype(fmt.code_dtype)
    scales_shape = moved_shape[:-1] + (nb,)
    scale_codes = np.moveaxis(scale_codes.reshape(scales_shape), -1, axis)
    if want_values:
        return _unblock(values, moved_shape, axis), scale_codes
    return _unblock(codes, moved_shape, axis), scale_codes


@renamed(element="fmt")
def mx_encode(x, fmt, *, axis=-1, block_size=32, scale_rule="floor",
              rounding="nearest_even", rng=None):
    """Element codes and E8M0 scale codes of x in an MX block format.

    Parameters
    ----------
    x : array_like of float
    fmt : str or format
        Element format (``"float8_e4m3fn"``, ..., ``"ocp_int8"``); ``element=`` is the
        deprecated spelling.
    axis : int
        Axis along which blocks of ``block_size`` are formed.
    block_size : int
        32 in OCP MX v1.0.
    scale_rule : {"floor", "ceil", "even", "rceil"}
    rounding : str
        Element rounding (elements always saturate).
    rng : seed or Generator, for ``rounding="stochastic"``.

    Returns
    -------
    codes : ndarray
        Element codes, same shape as x.
    scale_codes : ndarray of uint8
        E8M0 codes (``es + 127``), shape of x with ``axis`` of length
        ``ceil(n / block_size)``.

    Examples
    --------
    >>> codes, scales = mx_encode([1.0, 2.0, 300.0, 0.5], "e4m3fn", block_size=4)
    >>> scales.tolist(), codes.tolist()
    ([127], [56, 64, 121, 48])
    """
    return _run_mx(x, fmt, axis=axis, block_size=block_size, scale_rule=scale_rule,
                   rounding=rounding, rng=rng, want_values=False)


@renamed(element="fmt")
def mx_fake_quantize(x, fmt, *, axis=-1, block_size=32, scale_rule="floor",
                     rounding="nearest_even", rng=None, return_details=None):
    """x after MX block quantization and dequantization (float32).

    With ``return_details=True``: ``(values, scale_codes)``, the E8M0 scale codes as
    :func:`mx_encode` gives them.  Not giving ``return_details`` returns that tuple too, with
    a FutureWarning: the default becomes False (the array alone, as ``fake_quantize``).

    Examples
    --------
    >>> mx_fake_quantize([1.0, 2.0, 300.0, 1000.0], "e4m3fn", block_size=4,
    ...                  return_details=False).tolist()  # floor rule: scale 2; 1000/2 saturates
    [1.0, 2.0, 288.0, 896.0]
    >>> v, s = mx_fake_quantize([1.0, 2.0, 300.0, 1000.0], "e4m3fn", block_size=4,
    ...                         return_details=True)
    >>> s.tolist()
    [128]
    """
    details = details_flag(return_details, "mx_fake_quantize", "(values, scale_codes)")
    values, scale_codes = _run_mx(x, fmt, axis=axis, block_size=block_size,
                                  scale_rule=scale_rule, rounding=rounding, rng=rng,
                                  want_values=True)
    return (values, scale_codes) if details else values


def nvfp4_encode(x, *, axis=-1, block_size=16, rounding="nearest_even", rng=None,
                 tensor_amax=None, want_codes=True):
    """NVFP4: E2M1 elements, an E4M3 scale per block of 16, an FP32 scale per tensor.

    The tensor scale is ``s_t = amax / (448 * 6)`` (1 when amax is 0); each block
    scale is ``amax_block / 6 / s_t`` rounded to E4M3 (nearest-even, saturating);
    elements are ``x / (s_b * s_t)`` computed in float32 and rounded to E2M1
    (saturating).  NaN and Inf never set a scale (both amaxes come from the
    finite values); NaN stays NaN in the values (E2M1 has no NaN: its code is
    the one the cast gives NaN), +-Inf saturates to ``+-6 * s_b * s_t``.
    The work is done in chunks of rows, so memory stays near the output's size.

    Parameters
    ----------
    x : array_like of float
    axis : int
        Axis along which the blocks are formed.
    block_size : int
    rounding : str
        Element rounding.
    rng : seed or Generator, for ``rounding="stochastic"``.
    tensor_amax : float, optional
        A static tensor amax (finite, >= 0); None measures it.
    want_codes : bool
        False skips the element codes (returned as None).

    Returns
    -------
    values : ndarray of float32
        Dequantized values (same shape as x).
    codes : ndarray of uint8
        E2M1 element codes.
    block_scales : ndarray of uint8
        E4M3 codes of the block scales.
    tensor_scale : float
        The FP32 per-tensor scale.

    Raises
    ------
    TypeError
        Non-float or masked x, non-integer axis or block_size.
    ValueError
        axis out of range, block_size < 1, bad tensor_amax.

    Examples
    --------
    >>> v, c, s, t = nvfp4_encode(np.linspace(-3, 3, 16, dtype=np.float32))
    >>> t == np.float32(3 / 2688), v.dtype
    (np.True_, dtype('float32'))
    """
    if tensor_amax is not None:
        if isinstance(tensor_amax, (bool, np.bool_)) or not isinstance(
                tensor_amax, (int, float, np.integer, np.floating)):
            raise TypeError(f"tensor_amax must be a real number or None, got {tensor_amax!r}")
        if not (np.isfinite(tensor_amax) and tensor_amax >= 0):
            raise ValueError(f"tensor_amax must be finite and >= 0, got {tensor_amax!r}")
    buf, moved_shape, nb = _blocked(x, axis, block_size)
    k = int(block_size)
    rows, length = buf.shape[0], moved_shape[-1]
    if tensor_amax is None:
        amax_t = 0.0
        for rs in row_chunks(rows, buf.shape[1]):
            a = np.abs(buf[rs])
            a[~(a < np.inf)] = 0  # NaN and Inf never set a scale
            if a.size:
                amax_t = max(amax_t, float(a.max()))
    else:
        amax_t = float(min(tensor_amax, _F32_MAX))
    s_t = np.float32(amax_t / (448.0 * 6.0)) if amax_t > 0 else np.float32(1.0)
    if s_t == 0:  # amax below 2688 * 2**-150: the smallest positive float32
        s_t = np.float32(np.finfo(np.float32).smallest_subnormal)
    stochastic = rounding == "stochastic"
    if stochastic:  # one encode call: the random bits follow the element index
        chunks = [slice(0, rows)]
    else:
        chunks = list(row_chunks(rows, buf.shape[1]))
    vals = np.empty((rows, length), dtype=np.float32)
    codes = np.empty((rows, length), dtype=np.uint8) if want_codes else None
    s_all = np.empty((rows, nb), dtype=np.float32)
    for rs in chunks:
        blocks = buf[rs].reshape(-1, k)
        a = np.abs(blocks)
        a[~(a < np.inf)] = 0
        amax_b = a.max(axis=1) if a.shape[1] else np.zeros(a.shape[0], np.float32)
        del a
        with np.errstate(over="ignore"):
            s_b_exact = ((amax_b / np.float32(6.0)) / s_t).astype(np.float32)
        s_b = quantize(s_b_exact, E4M3, saturate=True)
        s_b = np.where(s_b == 0, np.float32(1.0), s_b).astype(np.float32)  # a valid scale
        scale = (s_b * s_t).astype(np.float32)
        scale = np.where(scale > 0, scale, np.float32(np.finfo(np.float32).smallest_subnormal))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            y = (blocks / scale[:, None]).astype(np.float32)
        c = np.asarray(encode(y, E2M1, rounding=rounding, saturate=True, rng=rng))
        v = (np.asarray(decode(c, E2M1)) * scale[:, None]).astype(np.float32)
        v[np.isnan(blocks)] = np.nan  # NaN stays NaN
        n_r = rs.stop - rs.start
        vals[rs] = v.reshape(n_r, -1)[:, :length]
        if want_codes:
            codes[rs] = c.reshape(n_r, -1)[:, :length]
        s_all[rs] = s_b.reshape(n_r, nb)
    block_codes = np.asarray(encode(s_all, E4M3, saturate=True))
    block_codes = np.moveaxis(block_codes.reshape(moved_shape[:-1] + (nb,)), -1, axis)
    out_codes = None if codes is None else np.moveaxis(codes.reshape(moved_shape), -1, axis)
    return (np.moveaxis(vals.reshape(moved_shape), -1, axis), out_codes, block_codes, s_t)
