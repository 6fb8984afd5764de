"""Outlier-aware INT8 matmuls: LLM.int8() decomposition and SmoothQuant smoothing.

Both methods deal with the few input features (columns of the activations)
whose magnitudes are 10-100x the rest in large transformers.

* **LLM.int8()** (Dettmers et al. 2022, arXiv:2208.07339) keeps those feature
  columns in 16-bit float and quantizes everything else *vector-wise*: a scale
  per row (token) of the activations and per column (output channel) of the
  weights, with an exact integer matmul.  :func:`llm_int8_matmul`,
  :func:`llm_int8_fake_quantize`.
* **SmoothQuant** (Xiao et al. 2023, arXiv:2211.10438) divides each input
  channel of the activations by a factor ``s_j`` and multiplies the matching
  row of the weights by it, which leaves ``x @ w`` unchanged but moves the
  outliers' range into the weights.  :func:`smoothing_factors`,
  :func:`smooth`, :func:`smoothquant_matmul`.

Layout
------
All functions use the ``y = x @ w`` layout: ``x`` is (tokens, in_features)
(any leading dimensions are tokens), ``w`` is (in_features, out_features).
``w_layout="out_in"`` accepts a PyTorch ``nn.Linear`` weight (out, in)
instead.  Scales follow :mod:`fpsim.quant`: dequantization multipliers,
``absmax / 127`` rounded to float32, elements ``x / scale`` rounded
(nearest-even) into int8.

Pure NumPy on top of :mod:`fpsim.quant`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ._cast import quantize
from .accumulate import int_matmul
from ..formats import FloatFormat, get_format
from ..rounding import child_seed, seed_of
from .recipes import fake_quantize, quantize_tensor
from ._args import details_flag, renamed
from .spec import QuantSpec, resolve_spec

__all__ = [
    "LLMInt8Details",
    "llm_int8_fake_quantize",
    "llm_int8_matmul",
    "smooth",
    "smoothing_factors",
    "smoothquant_matmul",
]

W_LAYOUTS = ("in_out", "out_in")


# ---- argument checks -----------------------------------------------------------
def _float_array(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind != "f":
        if arr.dtype.kind in "iub" and not isinstance(a, np.ndarray):
            return arr.astype(np.float64)
        raise TypeError(f"{name} must be a float array, got dtype {arr.dtype} "
                        f"(cast it with {name}.astype(np.float32))")
    return arr


def _operands(x, w, w_layout) -> tuple[np.ndarray, np.ndarray]:
    """x as given (>= 1-D), w as (in, out)."""
    if w_layout not in W_LAYOUTS:
        raise ValueError(f"w_layout must be one of {', '.join(W_LAYOUTS)}, got {w_layout!r}")
    x = _float_array(x, "x")
    w = _float_array(w, "w")
    if x.ndim < 1:
        raise ValueError(f"x must have at least one dimension (..., in_features), got shape "
                         f"{x.shape}")
    if w.ndim != 2:
        raise ValueError(f"w must be 2-D, got shape {w.shape}")
    if w_layout == "out_in":
        w = w.T
    if x.shape[-1] != w.shape[0]:
        want = "w.shape[1]" if w_layout == "out_in" else "w.shape[0]"
        raise ValueError(f"x has {x.shape[-1]} input features but w ({w_layout}) has "
                         f"{w.shape[0]}: x.shape[-1] must equal {want}")
    return x, w


def _number(value, name: str, allowed: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number ({allowed}), got {value!r}")
    return float(value)


def _check_threshold(threshold) -> float:
    t = _number(threshold, "threshold", "> 0")
    if not t > 0:  # also rejects NaN
        raise ValueError(f"threshold must be > 0 (np.inf disables the decomposition), "
                         f"got {threshold!r}")
    return t


def _check_alpha(alpha) -> float:
    a = _number(alpha, "alpha", "in [0, 1]")
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha (migration strength) must be in [0, 1], got {alpha!r}")
    return a


def _outlier_rounder(outlier_fmt):
    """A function rounding the outlier operands, and the dtype they accumulate in."""
    if isinstance(outlier_fmt, FloatFormat):
        fmt = outlier_fmt
    else:
        try:
            dt = np.dtype(outlier_fmt)
        except (TypeError, ValueError):
            dt = None
        if dt is not None and dt.kind == "f" and dt.itemsize in (2, 4, 8):
            acc = np.float64 if dt == np.float64 else np.float32
            return (lambda a: a.astype(dt).astype(acc)), acc
        try:
            fmt = get_format(outlier_fmt)
        except (ValueError, TypeError):
            fmt = None
        fmt = fmt if isinstance(fmt, FloatFormat) else None  # int formats too
        if fmt is None:
            raise ValueError(f"outlier_fmt must be a float dtype (np.float16, np.float32, "
                             f"np.float64) or an fpsim float format name such as 'bfloat16', "
                             f"got {outlier_fmt!r}")
    return (lambda a: quantize(a.astype(np.float32), fmt)), np.float32


def _outlier_columns(x2: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of the feature columns with any |x| >= threshold (or a non-finite value)."""
    with np.errstate(invalid="ignore"):
        big = ~(np.abs(x2) < threshold)  # NaN counts as an outlier
    return big.any(axis=0) if x2.shape[0] else np.zeros(x2.shape[1], dtype=bool)


def _vectorwise_int8(x2: np.ndarray, w: np.ndarray):
    """int8 codes and float32 scales: per row of x2, per column of w."""
    t, k = x2.shape
    n = w.shape[1]
    if k == 0:  # nothing to quantize (every column is an outlier)
        return (np.zeros((t, 0), np.int8), np.ones(t, np.float32),
                np.zeros((0, n), np.int8), np.ones(n, np.float32))
    qx = quantize_tensor(x2, "int8_token", axis=-1)
    qw = quantize_tensor(w, "int8_channel", axis=0)
    return qx.codes, qx.scales.reshape(t), qw.codes, qw.scales.reshape(n)


# ---- LLM.int8() -------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LLMInt8Details:
    """The parts of an :func:`llm_int8_matmul`.

    ``y == (int8_part + outlier_part).astype(float32)`` (reshaped to the
    output's shape).

    Attributes
    ----------
    outlier_columns : ndarray of int64
        Indices of the input features computed in float.
    outlier_fraction : float
        ``len(outlier_columns) / in_features`` (0 when there are none).
    x_scales : ndarray of float32, shape (tokens,)
        Per-row dequantization scales of the non-outlier activations.
    w_scales : ndarray of float32, shape (out_features,)
        Per-output-column scales of the non-outlier weight rows.
    int_accumulator : ndarray of int64, shape (tokens, out_features)
        The exact integer matmul of the int8 codes.
    int8_part : ndarray of float64, shape (tokens, out_features)
        ``int_accumulator * x_scales[:, None] * w_scales[None, :]``.
    outlier_part : ndarray of float64, shape (tokens, out_features)
        The float matmul over the outlier columns.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0, 7.0, -2.0], [0.5, 1.0, 2.0]], np.float32)
    >>> y, d = llm_int8_matmul(x, np.eye(3, 2, dtype=np.float32), return_details=True)
    >>> d.outlier_columns.tolist(), d.int_accumulator.tolist()
    ([1], [[8128, 0], [4064, 0]])
    >>> bool(np.array_equal(y, (d.int8_part + d.outlier_part).astype(np.float32)))
    True
    """

    outlier_columns: np.ndarray
    outlier_fraction: float
    x_scales: np.ndarray
    w_scales: np.ndarray
    int_accumulator: np.ndarray
    int8_part: np.ndarray
    outlier_part: np.ndarray


@renamed(outlier_dtype="outlier_fmt")
def llm_int8_matmul(x, w, *, threshold=6.0, outlier_fmt=np.float16, w_layout="in_out",
                    return_details=False):
    """``x @ w`` with LLM.int8(): vector-wise int8 plus a float outlier part.

    Following Dettmers et al. (2022), the input features ``j`` where any
    ``|x[..., j]| >= threshold`` are *outlier columns*: those columns of x and
    the matching rows of w are multiplied in 16-bit float.  The rest is
    quantized vector-wise to int8 (absmax, symmetric, round-to-nearest-even):
    a scale per row of x (``rowmax / 127``, the row max taken over the
    non-outlier columns) and per output column of w (``colmax / 127`` over
    the non-outlier rows), multiplied exactly in integers and rescaled by the
    outer product of the scales::

        y = (X8 @ W8) * outer(sx, sw) + X[:, O] @ W[O, :]

    Parameters
    ----------
    x : array_like of float, shape (..., in_features)
        Activations; leading dimensions are tokens.  The outlier columns are
        found over all tokens of the call.
    w : array_like of float, shape (in_features, out_features)
        Weights (or (out_features, in_features) with ``w_layout="out_in"``).
    threshold : float
        Outlier magnitude (6.0 in the paper); ``np.inf`` gives plain
        vector-wise int8.  NaN and +-Inf entries also mark their column as an
        outlier column, so they propagate through the float part.
    outlier_fmt : dtype or str
        Float type of the outlier operands: ``np.float16`` (default, the
        paper's fp16), ``np.float32``, ``np.float64`` or an fpsim float
        format name (``"bfloat16"``, ``"float8_e4m3fn"``, rounded with
        ``fpsim.quantize``).  Products are accumulated in float32 (float64 for
        ``np.float64``), as a tensor core's fp16 x fp16 + fp32 does.  Values
        beyond its range overflow (float16: ``|x| > 65504`` becomes Inf).
    w_layout : {"in_out", "out_in"}
        Layout of ``w``.
    return_details : bool
        Also return an :class:`LLMInt8Details`.

    Returns
    -------
    y : ndarray of float32, shape (..., out_features)
        The int8 part is rescaled in float64, added to the outlier part and
        rounded once to float32.  (Hardware accumulates the int8 matmul in
        int32, which is exact for ``in_features <= 133143``.)
    details : LLMInt8Details
        Only with ``return_details=True``.

    Raises
    ------
    ValueError
        Mismatched shapes, ``threshold <= 0``, unknown ``w_layout`` or
        ``outlier_fmt``.
    TypeError
        Non-float arrays.

    Notes
    -----
    The weight's int8 scales here come from the non-outlier rows only, as in
    the paper's decomposition; bitsandbytes quantizes the whole weight once
    at load time and dequantizes the outlier rows from those int8 values.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0, 7.0, -2.0], [0.5, 1.0, 2.0]], np.float32)
    >>> w = np.eye(3, 2, dtype=np.float32)
    >>> y, d = llm_int8_matmul(x, w, return_details=True)
    >>> d.outlier_columns.tolist(), round(d.outlier_fraction, 3)
    ([1], 0.333)
    >>> y.tolist()  # column 1 exact (float); 1.0 -> 64 * (2 / 127), 0.5 -> 32 * (2 / 127)
    [[1.0078740119934082, 7.0], [0.5039370059967041, 1.0]]
    """
    x, w = _operands(x, w, w_layout)
    threshold = _check_threshold(threshold)
    rounder, acc = _outlier_rounder(outlier_fmt)
    lead = x.shape[:-1]
    k, n = w.shape
    x2 = x.reshape(int(np.prod(lead)), k)  # [t, k]
    t = x2.shape[0]

    mask = _outlier_columns(x2, threshold)  # [k]
    keep = ~mask
    cx, sx, cw, sw = _vectorwise_int8(x2[:, keep], w[keep, :])  # [t, r], [t], [r, n], [n]
    acc_int = int_matmul(cx, cw)  # [t, n], exact integers in float64
    int8_part = acc_int * (sx.astype(np.float64)[:, None] * sw.astype(np.float64)[None, :])
    if mask.any():
        with np.errstate(over="ignore", invalid="ignore"):  # fp16 overflow gives +-Inf
            xo = rounder(x2[:, mask]).astype(acc)  # [t, o]
            wo = rounder(w[mask, :]).astype(acc)  # [o, n]
            outlier_part = (xo @ wo).astype(np.float64)  # [t, n]
    else:
        outlier_part = np.zeros((t, n))
    with np.errstate(over="ignore", invalid="ignore"):
        y = (int8_part + outlier_part).astype(np.float32).reshape(*lead, n)
    if not return_details:
        return y
    cols = np.flatnonzero(mask)
    details = LLMInt8Details(
        outlier_columns=cols,
        outlier_fraction=cols.size / k if k else 0.0,
        x_scales=sx.reshape(lead), w_scales=sw,
        int_accumulator=acc_int.astype(np.int64).reshape(*lead, n),
        int8_part=int8_part.reshape(*lead, n),
        outlier_part=outlier_part.reshape(*lead, n),
    )
    return y, details


@renamed(outlier_dtype="outlier_fmt")
def llm_int8_fake_quantize(x, *, threshold=6.0, outlier_fmt=np.float16, return_details=None):
    """Activations as LLM.int8() sees them: outlier columns in float, the rest int8.

    The activation-site half of :func:`llm_int8_matmul`: the feature columns
    (last axis) with any ``|x| >= threshold`` are rounded to ``outlier_fmt``;
    every token's other features are fake-quantized to int8 with one absmax
    scale per token (taken over the non-outlier features).

    Parameters
    ----------
    x : array_like of float, shape (..., features)
    threshold : float
        Outlier magnitude; ``np.inf`` gives plain per-token int8.
    outlier_fmt : dtype or str
        As in :func:`llm_int8_matmul`; ``np.float64`` keeps the outliers exact.
    return_details : bool
        True: also return the outlier mask.  Not given: the pair, with a FutureWarning (the
        default becomes False, the array alone, as :func:`fpsim.fake_quantize`).

    Returns
    -------
    x_hat : ndarray, shape and dtype of x
    outlier_mask : ndarray of bool, shape (features,)
        Only with ``return_details=True``: True for the outlier feature columns.

    Raises
    ------
    ValueError, TypeError
        As :func:`llm_int8_matmul`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.5, 10.0, -1.0], [0.25, 0.1, 1.0]], np.float32)
    >>> x_hat, mask = llm_int8_fake_quantize(x, return_details=True)
    >>> mask.tolist()
    [False, True, False]
    >>> x_hat[:, 1].tolist() == np.float16([10.0, 0.1]).astype(np.float32).tolist()
    True
    """
    x = _float_array(x, "x")
    if x.ndim < 1:
        raise ValueError(f"x must have at least one dimension (..., features), got shape "
                         f"{x.shape}")
    threshold = _check_threshold(threshold)
    details = details_flag(return_details, "llm_int8_fake_quantize", "(x_hat, outlier_mask)")
    rounder, _ = _outlier_rounder(outlier_fmt)
    x2 = x.reshape(int(np.prod(x.shape[:-1])), x.shape[-1])  # [t, k]
    mask = _outlier_columns(x2, threshold)  # [k]
    out = np.empty(x2.shape, dtype=x.dtype)
    if (~mask).any():
        out[:, ~mask] = fake_quantize(x2[:, ~mask], "int8_token", axis=-1)
    if mask.any():
        with np.errstate(over="ignore"):
            out[:, mask] = rounder(x2[:, mask])
    return (out.reshape(x.shape), mask) if details else out.reshape(x.shape)


# ---- SmoothQuant ------------------------------------------------------------------
def _absmax_vector(a, name: str) -> np.ndarray:
    arr = np.asarray(_float_array(a, name), dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per input channel), got shape "
                         f"{arr.shape}")
    if not (np.isfinite(arr).all() and (arr >= 0).all()):
        raise ValueError(f"{name} must be finite and >= 0 (per-channel max |values|)")
    return arr


def smoothing_factors(x_absmax, w_absmax, *, alpha=0.5, eps=1e-5):
    """SmoothQuant's per-input-channel factors ``s_j = max|X_j|**alpha / max|W_j|**(1-alpha)``.

    Parameters
    ----------
    x_absmax : array_like, shape (in_features,)
        ``max |X[:, j]|`` per input channel, usually measured on calibration data.
    w_absmax : array_like, shape (in_features,)
        ``max |W[j, :]|`` per input channel (over every weight sharing that
        input, e.g. the concatenated q, k, v projections).
    alpha : float in [0, 1]
        Migration strength: 0 leaves the activations as they are relative to
        the weights' ranges (``s = 1 / max|W_j|``: every weight row gets max 1);
        1 moves all of it into the weights (``s = max|X_j|``: every activation
        channel gets max 1); 0.5 (the paper's default) equalises the two maxima.
    eps : float > 0
        Lower bound on ``s`` (the reference implementation's
        ``clamp(min=1e-5)``), keeping ``1 / s`` finite.

    Returns
    -------
    s : ndarray of float32, shape (in_features,)
        ``s_j = 1`` where either maximum is 0 (a dead channel has nothing to
        migrate, and dividing by 0 would give Inf or NaN).

    Raises
    ------
    ValueError
        Shapes differ, negative or non-finite maxima, alpha outside [0, 1],
        ``eps <= 0``.

    Examples
    --------
    >>> smoothing_factors([4.0, 0.0, 9.0], [1.0, 2.0, 0.0]).tolist()
    [2.0, 1.0, 1.0]
    >>> smoothing_factors([16.0], [4.0], alpha=1.0).tolist()
    [16.0]
    """
    xa = _absmax_vector(x_absmax, "x_absmax")
    wa = _absmax_vector(w_absmax, "w_absmax")
    if xa.shape != wa.shape:
        raise ValueError(f"x_absmax has shape {xa.shape} but w_absmax has {wa.shape}: "
                         "pass one value per input channel for both")
    a = _check_alpha(alpha)
    e = _number(eps, "eps", "> 0")
    if not e > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    live = (xa > 0) & (wa > 0)
    with np.errstate(divide="ignore", over="ignore"):
        s = np.where(live, xa ** a / np.where(live, wa, 1.0) ** (1.0 - a), 1.0)
    return np.maximum(s, e).astype(np.float32)


def smooth(x, w, *, alpha=0.5, x_absmax=None, w_layout="in_out"):
    """SmoothQuant's equivalent transformation: ``(x / s, w * s)``.

    ``s = smoothing_factors(max|X_j|, max|W_j|, alpha=alpha)``; the smoothed
    pair has ``x_s @ w_s == x @ w`` up to rounding.

    Parameters
    ----------
    x : array_like of float, shape (..., in_features)
    w : array_like of float, shape (in_features, out_features)
        (or (out, in) with ``w_layout="out_in"``).
    alpha : float in [0, 1]
        Migration strength (see :func:`smoothing_factors`).
    x_absmax : array_like, shape (in_features,), optional
        Per-channel activation maxima from calibration; default: those of x
        (over its finite values).
    w_layout : {"in_out", "out_in"}

    Returns
    -------
    x_s : ndarray, dtype of x
        ``x / s`` (s broadcast along the last axis).
    w_s : ndarray, dtype and layout of w
        ``w * s[:, None]`` for (in, out), ``w * s[None, :]`` for (out, in).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[8.0, 0.5], [-2.0, 0.25]], np.float32)
    >>> w = np.array([[0.5, 2.0], [1.0, -1.0]], np.float32)
    >>> xs, ws = smooth(x, w)        # s = [sqrt(8 / 2), sqrt(0.5 / 1)]
    >>> np.abs(xs).max(axis=0).tolist(), np.abs(ws).max(axis=1).tolist()
    ([4.0, 0.7071067690849304], [4.0, 0.7071067690849304])
    >>> np.allclose(xs @ ws, x @ w)
    True
    """
    s = _smoothing_for(x, w, alpha, x_absmax, w_layout)
    x = _float_array(x, "x")
    w = _float_array(w, "w")
    x_s = (x / s).astype(x.dtype, copy=False)
    w_s = w * (s[:, None] if w_layout == "in_out" else s[None, :])
    return x_s, w_s.astype(w.dtype, copy=False)


def _smoothing_for(x, w, alpha, x_absmax, w_layout) -> np.ndarray:
    xa, wa = _operands(x, w, w_layout)  # wa: [in, out]
    k = wa.shape[0]
    if x_absmax is None:
        x2 = xa.reshape(int(np.prod(xa.shape[:-1])), k)
        ax = np.abs(x2.astype(np.float64))  # non-finite values never set a factor
        x_absmax = np.where(np.isfinite(ax), ax, 0.0).max(axis=0) if x2.shape[0] else np.zeros(k)
    else:
        x_absmax = _absmax_vector(x_absmax, "x_absmax")
        if x_absmax.shape != (k,):
            raise ValueError(f"x_absmax has shape {x_absmax.shape}, expected ({k},): one "
                             "value per input feature")
    w_absmax = np.abs(wa).max(axis=1) if wa.shape[1] else np.zeros(k)
    return smoothing_factors(x_absmax, w_absmax, alpha=alpha)


def _spec_along(spec, axis: int) -> QuantSpec:
    """A recipe name applies along the reduction axis; a QuantSpec is used as given."""
    if isinstance(spec, QuantSpec):
        return spec
    return resolve_spec(spec, axis=axis)


def smoothquant_matmul(x, w, *, alpha=0.5, x_spec="int8_token", w_spec="int8_channel",
                       x_absmax=None, w_layout="in_out", rng=None):
    """``x @ w`` with SmoothQuant: smooth, fake-quantize both operands, multiply.

    ``y = Q_x(x / s) @ Q_w(s * w)`` with ``s`` from :func:`smoothing_factors`
    and ``Q`` = :func:`fpsim.fake_quantize`.

    Parameters
    ----------
    x : array_like of float, shape (..., in_features)
    w : array_like of float, shape (in_features, out_features)
        (or (out, in) with ``w_layout="out_in"``).
    alpha : float in [0, 1]
        Migration strength (0.5 in the paper; 0.75-0.85 for some models).
    x_spec, w_spec : str or QuantSpec
        How the smoothed operands are quantized.  Recipe names are applied
        along the reduction (in_features) axis: ``axis=-1`` for x (so
        ``"int8_token"`` is a scale per token) and ``axis=0`` for w in
        (in, out) layout (so ``"int8_channel"`` is a scale per output
        channel); a QuantSpec is used as given, with w in (in, out) layout.
        The paper's efficiency levels all use a per-tensor weight scale:
        O1 ``x_spec="int8_token", w_spec="int8"`` (per-token dynamic),
        O2 ``x_spec="int8", w_spec="int8"`` (per-tensor dynamic),
        O3 a static per-tensor ``x_spec`` from :func:`fpsim.calibrate` on
        smoothed calibration activations, ``w_spec="int8"``.
        The default (per-token x, per-channel w) is finer than O1.
    x_absmax : array_like, shape (in_features,), optional
        Per-channel activation maxima from calibration (as SmoothQuant does
        offline); default: those of x itself.
    w_layout : {"in_out", "out_in"}
    rng : seed or numpy.random.Generator
        For stochastic rounding in the specs.  An int seed gives the two operands the child
        seeds ``child_seed(seed, "x")`` and ``child_seed(seed, "w")`` (fpsim's seeding
        scheme, :func:`fpsim.rounding.child_seed`); a Generator is drawn from for each.

    Returns
    -------
    y : ndarray of float32, shape (..., out_features)
        The dequantized operands multiplied in float32 (BLAS), as every fake-quantized
        linear of :mod:`fpsim.models` is.

    Raises
    ------
    ValueError, TypeError
        Mismatched shapes, alpha outside [0, 1], unknown recipe or layout.

    Examples
    --------
    >>> import numpy as np, fpsim
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(8, 16)).astype(np.float32); x[:, 3] *= 50   # an outlier channel
    >>> w = rng.normal(size=(16, 4)).astype(np.float32)
    >>> ref = x @ w
    >>> def err(y): return float(np.abs(y - ref).max())
    >>> plain = fpsim.fake_quantize(x, "int8") @ fpsim.fake_quantize(w, "int8")
    >>> smoothed = smoothquant_matmul(x, w, alpha=0.5, x_spec="int8", w_spec="int8")
    >>> err(smoothed) < err(plain)
    True
    """
    x_s, w_s = smooth(x, w, alpha=alpha, x_absmax=x_absmax, w_layout=w_layout)
    if w_layout == "out_in":
        w_s = w_s.T  # [in, out]
    # the two operands draw from different streams (one int seed would give both the same bits)
    rx, rw = (rng, rng) if rng is None else (
        (rng, rng) if isinstance(rng, np.random.Generator)  # a Generator advances between them
        else (child_seed(seed_of(rng), "x"), child_seed(seed_of(rng), "w")))
    qx = fake_quantize(x_s, _spec_along(x_spec, -1), rng=rx)
    qw = fake_quantize(w_s, _spec_along(w_spec, 0), rng=rw)
    with np.errstate(over="ignore", invalid="ignore"):
        return qx.astype(np.float32, copy=False) @ qw.astype(np.float32, copy=False)
