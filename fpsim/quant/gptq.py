"""GPTQ: weight quantization with second-order error compensation (Frantar et al., 2022).

A linear ``y = x @ w`` with ``w`` of shape ``(K, N)`` (fpsim's models keep weights in
``(in, out)`` layout: the reduction axis first) is quantized one input row ``k`` at a time;
the error of row ``k`` is spread over the rows not yet quantized so that the layer's output
error on calibration inputs ``X`` (tokens, K) stays small.  The Hessian of that error is
``H = X^T X`` (GPTQ's ``2 X X^T`` up to a factor, which cancels).

The algorithm (the paper's Algorithm 1, with its "lazy batch" updates of 128 rows):

1. dead inputs (``H[k, k] == 0``) get ``H[k, k] = 1`` and ``w[k] = 0``;
2. ``act_order``: rows are processed in order of decreasing ``H[k, k]``;
3. damping: ``H += damp * mean(diag(H)) * I``;
4. ``U``: the upper Cholesky factor of ``H^-1`` (``H^-1 = U^T U``);
5. for each row ``k``: ``q = Q(w[k])``; ``e = (w[k] - q) / U[k, k]``;
   ``w[j] -= U[k, j] * e`` for the rows ``j`` after ``k``.

``Q`` is any fpsim weight recipe whose scale groups run along the input axis (``axis=0``):
per tensor, per output channel, blocks of ``block_size`` inputs (INT4 g128, MXFP4, NVFP4,
DeepSeek's 128x128 tiles), or one of llama.cpp's block formats (``ggml_q4_0``, the
K-quants...; a block's scales and minima are then ggml's for the rows compensated so far,
its elements are rounded as ``w / s`` with the block's stored scale ``s``, where ggml's
own encoder multiplies by the reciprocal of the scale before rounding it to float16: with
an identity Hessian about 0.5% of the codes differ from ggml's round-to-nearest; the
ternary formats are not supported).  A block's scales are computed when its first row is reached,
from the rows as compensated so far (the paper's ``groupsize`` behaviour); with
``act_order`` they are computed beforehand from the original weight (AutoGPTQ's
``static_groups``), since fpsim's blocks are contiguous runs of inputs.  NVFP4's tensor
scale comes from the original weight's amax.  Each row is then rounded with its block's
fixed scales: ``code = round(w / s)`` (``+ zero point`` for affine integers), saturating.

The result is a :class:`~fpsim.quant.recipes.QuantizedTensor` of ``spec``: codes and the
scales used, whose ``dequantize()`` gives the GPTQ weight.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..codec import decode, encode
from .recipes import QuantizedTensor, quantize_tensor
from .spec import resolve_spec

__all__ = ["gptq", "hessian"]


def hessian(x, h=None) -> np.ndarray:
    """Accumulate ``X^T X`` (float64, ``(K, K)``) of calibration inputs ``x`` ``(..., K)``.

    Examples
    --------
    >>> hessian(np.array([[1.0, 2.0], [3.0, 4.0]])).tolist()
    [[10.0, 14.0], [14.0, 20.0]]
    """
    x = np.asarray(x, np.float64)
    x = x.reshape(-1, x.shape[-1])
    xt = x.T @ x
    return xt if h is None else h + xt


def _check(w, h, spec, damp, block):
    w = np.asarray(w)
    if w.ndim != 2 or w.dtype.kind != "f":
        raise TypeError(f"w must be a 2-D float array (in, out), got shape {w.shape} "
                        f"dtype {w.dtype}")
    h = np.asarray(h, np.float64)
    if h.shape != (w.shape[0], w.shape[0]):
        raise ValueError(f"hessian must be ({w.shape[0]}, {w.shape[0]}) for w of shape "
                         f"{w.shape} (in, out), got {h.shape}")
    if not (np.isfinite(w).all() and np.isfinite(h).all()):
        raise ValueError("w and hessian must be finite (GPTQ spreads every row's error over "
                         "the others)")
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not 0 <= damp < 1:
        raise ValueError(f"damp must be a number in [0, 1), got {damp!r}")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be a positive int, got {block!r}")
    if spec.stack not in (None, "ggml") or spec.hadamard is not None:
        raise ValueError(f"gptq takes fpsim's own recipes and llama.cpp's (stack=None or "
                         f"'ggml', no hadamard); got stack={spec.stack!r}, "
                         f"hadamard={spec.hadamard!r}")
    if spec.stack == "ggml":  # blocks along a row of the (out, in) weight: w's axis 0
        if spec.format.name in ("int2", "int2_symmetric"):
            raise ValueError(f"gptq does not take llama.cpp's ternary formats (tq1_0, tq2_0); "
                             f"got {spec.name}")
        if w.shape[0] % spec.block_size:
            raise ValueError(f"{spec.name}: w's input axis ({w.shape[0]}) must be a multiple "
                             f"of the ggml block size {spec.block_size}")
        return w, h
    if spec.rounding == "stochastic":
        raise ValueError("gptq rounds to nearest: rounding='stochastic' is not supported")
    if spec.granularity != "tensor":
        if isinstance(spec.block_size, tuple):
            if spec.axis not in (-1, 1):
                raise ValueError("2-D tiles of a weight run along axis=-1 (tiles of the last "
                                 f"two axes); got axis={spec.axis}")
        elif spec.axis not in (0, -2):
            raise ValueError(f"gptq quantizes w (in, out) with scale groups along the input "
                             f"axis: the spec needs axis=0, got axis={spec.axis} (fpsim's "
                             f"models convert a recipe's axis=-1 to 0 for weights)")
    if spec.calibration not in ("max",):
        raise ValueError(f"gptq computes scales from the block max (calibration='max'), got "
                         f"calibration={spec.calibration!r}")
    return w, h


def _rows_per_group(spec, k: int) -> int:
    """How many consecutive input rows share their scales (K for tensor/channel groups)."""
    if spec.granularity == "block":
        b = spec.block_size
        return int(b[0]) if isinstance(b, tuple) else int(b)
    return k


def _round_rows(w, qt_scale, qt_zp, spec):
    """(codes, values) of rows ``w`` (r, N) with fixed per-element scales and zero points."""
    fmt = spec.format
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if qt_zp is None:
            y = (w / qt_scale.astype(np.float32)).astype(np.float32)
            codes = encode(y, fmt, rounding=spec.rounding, saturate=True)
            v = decode(codes, fmt, dtype=np.float64) * qt_scale
        else:
            y = (w / qt_scale + qt_zp).astype(np.float32)
            codes = encode(y, fmt, rounding=spec.rounding, saturate=True)
            v = (decode(codes, fmt, dtype=np.float64) - qt_zp) * qt_scale
    return codes, v


def gptq(w, hessian, spec, *, act_order: bool = False, damp: float = 0.01,
         block: int = 128) -> QuantizedTensor:
    """Quantize a weight ``w`` ``(in, out)`` with GPTQ, given its inputs' ``X^T X``.

    Parameters
    ----------
    w : ndarray (K, N) of float
        The weight, inputs first (``y = x @ w``).
    hessian : ndarray (K, K)
        ``X^T X`` of calibration inputs (:func:`hessian`).
    spec : QuantSpec or str
        The weight recipe, its scale groups along axis 0 (per tensor, per output channel,
        blocks of inputs): ``recipe("int4_block32", block_size=128, axis=0)``...
    act_order : bool
        Quantize rows in order of decreasing ``hessian[k, k]`` (scales then come from the
        original weight, see the module doc).
    damp : float
        Damping, a fraction of the mean diagonal added to it (GPTQ's ``percdamp``, 0.01).
    block : int
        Rows per lazy batch update (GPTQ's 128).  A block's scales see the updates of the
        batches before it, as in GPTQ's code.

    Returns
    -------
    QuantizedTensor
        Codes and scales of ``spec``; ``.dequantize()`` is the GPTQ weight.  For llama.cpp's
        formats (``ggml_q4_0``...: blocks along the input axis) it is the ``(out, in)``
        tensor a GGUF file stores (``.to_ggml()`` packs it), ``.dequantize().T`` the weight.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((256, 64)) @ rng.standard_normal((64, 64))  # correlated inputs
    >>> w = rng.standard_normal((64, 32)).astype(np.float32)
    >>> spec = resolve_spec("int4_block32", axis=0)
    >>> q = gptq(w, hessian(x), spec).dequantize()
    >>> from fpsim import fake_quantize
    >>> rtn = fake_quantize(w, spec)
    >>> bool(np.sum((x @ (q - w)) ** 2) < np.sum((x @ (rtn - w)) ** 2))
    True
    """
    spec = resolve_spec(spec)
    w, h = _check(w, hessian, spec, damp, block)
    K, N = w.shape
    W = w.astype(np.float64)  # the rows as compensated so far
    H = h.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[dead] = 0.0
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(K)
    H = H[np.ix_(perm, perm)]
    H[np.diag_indices(K)] += damp * np.mean(np.diag(H))
    try:
        L = np.linalg.cholesky(H)
        Linv = np.linalg.solve(L, np.eye(K))  # L^-1
        U = np.linalg.cholesky(Linv.T @ Linv).T  # H^-1 = U^T U, U upper
    except np.linalg.LinAlgError:
        raise ValueError("the damped hessian is not positive definite: raise damp (or check "
                         "the calibration inputs)") from None

    # scale groups: rows [g*r, (g+1)*r) share the scales of one quantize_tensor call
    r = _rows_per_group(spec, K)
    fixed = spec
    if spec.tensor_scale:  # NVFP4's tensor scale from the whole original weight
        amax = float(np.max(np.abs(w), initial=0.0))
        fixed = dataclasses.replace(spec, amax=amax)
    groups: dict[int, QuantizedTensor] = {}
    scale = np.empty((K, N))
    zp = None

    ggml = spec.stack == "ggml"  # a ggml tensor is (out, in): its blocks run along a row

    def group(g: int, src: np.ndarray) -> None:
        nonlocal zp
        rows = src[g * r:(g + 1) * r].astype(np.float32)
        qt = quantize_tensor(np.ascontiguousarray(rows.T) if ggml else rows, fixed)
        groups[g] = qt
        t = (lambda a: a.T) if ggml else (lambda a: a)  # noqa: E731
        scale[g * r:(g + 1) * r] = t(qt.element_scale())
        z = qt.element_zero_point()
        if z is not None:
            if zp is None:
                zp = np.zeros((K, N))
            zp[g * r:(g + 1) * r] = t(z)

    if act_order or r == K:
        for g in range(-(-K // r)):
            group(g, W)
    Wp = W[perm]
    codes = np.empty((K, N), dtype=spec.format.code_dtype)
    for i1 in range(0, K, block):
        i2 = min(i1 + block, K)
        err = np.empty((i2 - i1, N))
        for i in range(i1, i2):
            k = perm[i]  # the original row
            if (k // r) not in groups:  # first row of its block (natural order: Wp is W)
                group(k // r, Wp)
            row = Wp[i]
            c, v = _round_rows(row[None], scale[k][None], None if zp is None else zp[k][None],
                               spec)
            codes[k] = c[0]
            e = (row - v[0]) / U[i, i]
            Wp[i + 1:i2] -= np.outer(U[i, i + 1:i2], e)
            err[i - i1] = e
        Wp[i2:] -= U[i1:i2, i2:].T @ err
    if ggml:
        return _assemble(groups, np.ascontiguousarray(codes.T), spec, w.shape[::-1], axis=1)
    return _assemble(groups, codes, spec, w.shape)


def _assemble(groups, codes, spec, shape, axis=0) -> QuantizedTensor:
    """One QuantizedTensor of the whole weight from the per-block quantizations (their
    scales joined along ``axis``: the input axis, 1 for ggml's (out, in) tensors)."""
    parts = [groups[g] for g in sorted(groups)]
    first = parts[0]
    if len(parts) == 1:
        return dataclasses.replace(first, codes=codes, spec=spec, shape=shape, nan_mask=None)

    def cat(name):
        arrs = [getattr(p, name) for p in parts]
        if arrs[0] is None:
            return None
        return np.concatenate([np.atleast_2d(a) for a in arrs], axis=axis)

    return QuantizedTensor(codes=codes, scales=cat("scales"), zero_points=cat("zero_points"),
                           spec=spec, shape=shape, tensor_scale=first.tensor_scale,
                           scale_codes=cat("scale_codes"), nan_mask=None)
