"""AWQ: activation-aware weight quantization (Lin et al., 2023), for any fpsim weight recipe.

A linear ``y = x @ w`` (``w`` of shape ``(K, N)``, inputs first) is rewritten exactly as
``y = (x / s) @ (s * w)`` with one positive factor ``s[k]`` per input channel, and ``s * w``
is quantized: input channels with large activations get larger weights and so a smaller
relative rounding error.  Following the paper (and its reference code's ``auto_scale`` and
``auto_clip``):

1. ``s = mean|x|^alpha`` over the calibration tokens, normalised by
   ``sqrt(max(s) * min(s))``, for ``alpha`` in ``0, 1/n_grid, ..., (n_grid - 1)/n_grid``;
   the ``alpha`` with the smallest output error ``mean((x @ w - (x / s) @ Q(s * w))^2)``
   wins (``alpha = 0`` is plain round-to-nearest);
2. clipping: for each scale group (a block of inputs, or the whole input axis) and output
   channel, the weight is clipped to ``c * max|s * w|`` for ``c`` in ``1, 0.95, ..., 0.55``,
   choosing the ``c`` with the smallest error of that group's partial output (a two-level
   recipe, NVFP4, keeps the tensor scale of the unclipped ``s * w``).

In a real model ``1 / s`` is folded into the operation before the linear (a norm's gain, the
previous linear's output channels); fpsim applies it to the linear's input, which is the same
in exact arithmetic, so each linear gets its own ``s`` (AWQ shares one across linears that
read the same input, as q/k/v do).  With an activation recipe, ``x / s`` is what is
quantized.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .recipes import QuantizedTensor, fake_quantize, quantize_tensor
from .spec import resolve_spec

__all__ = ["awq", "AWQResult"]


@dataclass(frozen=True)
class AWQResult:
    """What :func:`awq` found.

    Attributes
    ----------
    scales : ndarray (K,) float32
        The input-channel factors ``s``: the linear computes ``(x / s) @ dequantize(qt)``.
    quantized : QuantizedTensor
        ``s * w`` (clipped) quantized with the recipe.
    alpha : float
        The exponent of the activation magnitudes that won.
    losses : ndarray (n_grid,)
        The output error of every ``alpha`` tried.
    clip : ndarray or None
        The clip ratio chosen per (scale group, output channel), or None without clipping.
    """

    scales: np.ndarray
    quantized: QuantizedTensor
    alpha: float
    losses: np.ndarray
    clip: np.ndarray | None

    def weight(self, dtype=np.float32) -> np.ndarray:
        """The effective weight ``dequantize(qt) / s[:, None]`` (for ``x @ weight``)."""
        return (self.quantized.dequantize(np.float64)
                / self.scales.astype(np.float64)[:, None]).astype(dtype)


def _check(w, x, spec, n_grid):
    w = np.asarray(w)
    if w.ndim != 2 or w.dtype.kind != "f":
        raise TypeError(f"w must be a 2-D float array (in, out), got shape {w.shape} "
                        f"dtype {w.dtype}")
    x = np.asarray(x)
    if x.dtype.kind != "f" or x.shape[-1:] != w.shape[:1] or x.size == 0:
        raise ValueError(f"x must be float calibration inputs (..., {w.shape[0]}) for w of "
                         f"shape {w.shape}, got shape {x.shape} dtype {x.dtype}")
    if not (np.isfinite(w).all() and np.isfinite(x).all()):
        raise ValueError("w and x must be finite")
    if isinstance(n_grid, bool) or not isinstance(n_grid, (int, np.integer)) or n_grid < 1:
        raise ValueError(f"n_grid must be a positive int, got {n_grid!r}")
    if spec.stack is not None or spec.hadamard is not None:
        raise ValueError(f"awq takes fpsim's own recipes (stack=None, no hadamard); got "
                         f"stack={spec.stack!r}, hadamard={spec.hadamard!r}")
    if spec.granularity not in ("tensor",) and not isinstance(spec.block_size, tuple) \
            and spec.axis not in (0, -2):
        raise ValueError(f"awq quantizes w (in, out) with scale groups along the input axis: "
                         f"the spec needs axis=0, got axis={spec.axis}")
    return w, x.reshape(-1, x.shape[-1]).astype(np.float64)


def _group_rows(spec, K: int) -> int | None:
    if spec.granularity == "block":
        b = spec.block_size
        return int(b[0]) if isinstance(b, tuple) else int(b)
    if spec.granularity == "channel":
        return K
    return None  # one scale per tensor: no per-channel clip


def _clip_search(ws, xs, spec, rng, n_grid, max_shrink=0.5):
    """The clipped ``ws`` and the ratio chosen per (group, output channel).  A group's
    partial output error ``mean((xs_g @ d_g)^2)`` over the tokens is
    ``diag(d_g^T H_gg d_g) / T`` with ``H = xs^T xs``."""
    K, N = ws.shape
    r = _group_rows(spec, K)
    if r is None:
        return ws, None
    n_groups = -(-K // r)
    h = xs.T @ xs  # [K, K]
    amax = np.stack([np.abs(ws[g * r:(g + 1) * r]).max(axis=0) for g in range(n_groups)])
    best = np.full((n_groups, N), np.inf)
    ratio = np.ones((n_groups, N))
    for i in range(int(max_shrink * n_grid)):
        c = 1.0 - i / n_grid
        lim = np.repeat(amax * c, r, axis=0)[:K]
        wc = np.clip(ws, -lim, lim)
        d = fake_quantize(wc.astype(np.float32), spec, rng=rng).astype(np.float64) - ws
        for g in range(n_groups):
            rows = slice(g * r, (g + 1) * r)
            err = np.einsum("kn,kn->n", d[rows], h[rows, rows] @ d[rows])  # [N]
            better = err < best[g]
            best[g][better] = err[better]
            ratio[g][better] = c
    lim = np.repeat(amax * ratio, r, axis=0)[:K]
    return np.clip(ws, -lim, lim), ratio


def awq(w, x, spec, *, n_grid: int = 20, clip: bool = True, act_spec=None,
        max_tokens: int = 1024, rng=None) -> AWQResult:
    """AWQ's per-input-channel scale search (and clip search) for a weight ``w`` ``(in, out)``.

    Parameters
    ----------
    w : ndarray (K, N) of float
    x : ndarray (..., K) of float
        Calibration inputs of the linear.
    spec : QuantSpec or str
        The weight recipe, scale groups along axis 0.
    n_grid : int
        Points of the ``alpha`` grid (20, as AWQ).
    clip : bool
        Also search the clip ratio per (group, output channel) (AWQ's ``auto_clip``).
    act_spec : QuantSpec, str or None
        The recipe of the linear's input (``x / s`` is quantized with it while searching).
    max_tokens : int
        The search uses at most this many calibration tokens (evenly spaced).
    rng : seed or Generator
        For stochastic rounding recipes.

    Returns
    -------
    AWQResult

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((512, 64)) * np.exp(rng.standard_normal(64))  # uneven channels
    >>> w = rng.standard_normal((64, 32)).astype(np.float32)
    >>> spec = resolve_spec("int4_block32", axis=0)
    >>> res = awq(w, x, spec)
    >>> rtn = fake_quantize(w, spec)
    >>> bool(np.sum((x @ (res.weight() - w)) ** 2) < np.sum((x @ (rtn - w)) ** 2))
    True
    """
    spec = resolve_spec(spec)
    act = None if act_spec is None else resolve_spec(act_spec)
    w, x = _check(w, x, spec, n_grid)
    if x.shape[0] > max_tokens:
        x = x[np.linspace(0, x.shape[0] - 1, max_tokens).astype(np.int64)]
    w64 = w.astype(np.float64)
    x32 = x.astype(np.float32)
    y = x32 @ w.astype(np.float32)  # the search compares alphas in float32 products
    mean_abs = np.abs(x).mean(axis=0)

    def run(s):
        ws = (w64 * s[:, None]).astype(np.float32)
        xs = (x / s).astype(np.float32)
        if act is not None:
            xs = fake_quantize(xs, act, rng=rng)
        return ws, xs

    losses = np.empty(n_grid)
    best, best_s = np.inf, None
    for i in range(n_grid):
        alpha = i / n_grid
        s = np.maximum(mean_abs ** alpha, 1e-4)
        s = (s / np.sqrt(s.max() * s.min())).astype(np.float32).astype(np.float64)
        ws, xs = run(s)
        q = fake_quantize(ws, spec, rng=rng)
        losses[i] = np.mean(np.square(y - xs @ q, dtype=np.float64))
        if losses[i] < best:
            best, best_s, best_alpha = losses[i], s, alpha
    ws, xs = run(best_s)
    ratio = None
    if spec.tensor_scale:  # NVFP4: the tensor scale stays that of the unclipped s * w
        spec = dataclasses.replace(spec, amax=float(np.max(np.abs(ws), initial=0.0)))
    if clip:
        wc, ratio = _clip_search(ws.astype(np.float64), xs.astype(np.float64), spec, rng,
                                 n_grid)
        ws = wc.astype(np.float32)
    qt = quantize_tensor(ws, spec, rng=rng)
    return AWQResult(scales=best_s.astype(np.float32), quantized=qt, alpha=best_alpha,
                     losses=losses, clip=ratio)

