"""Backward passes of the transformer layers, in plain NumPy, beside their forward passes.

Every function here is the vector-Jacobian product of one forward function of
:mod:`fpsim.models.layers` or :mod:`fpsim.models.llama`: given the gradient ``dy`` of a
loss with respect to the layer's output and the layer's forward inputs (and, where it
saves work, its output), it returns the gradients with respect to the inputs and
parameters.  They keep the dtype of their inputs (training runs in float32; the tests
check them against central finite differences in float64 and against torch autograd).

Shapes follow the forward functions: ``B`` batch, ``T`` tokens (``Tq`` queries, ``Tk``
keys), ``D`` width, ``H``/``Hkv`` query/key-value heads, ``G = H // Hkv``, ``d`` head width.

The losses used by distillation (:func:`cosine_loss`, :func:`kl_logits_loss`) return the
loss and its gradient together.
"""

from __future__ import annotations

import math

import numpy as np

from ..models.layers import gelu
from ..models.llama import rotate_half

__all__ = [
    "attention_backward",
    "cosine_loss",
    "embedding_backward",
    "gelu_backward",
    "kl_logits_loss",
    "l2_normalize_backward",
    "layer_norm_backward",
    "linear_backward",
    "mean_pool_backward",
    "mix_backward",
    "rms_norm_backward",
    "rope_backward",
    "scores_backward",
    "silu_backward",
    "softmax_backward",
    "swiglu_backward",
]


def linear_backward(dy, x, w):  # [..., O], [..., I], [I, O] -> [..., I], [I, O], [O]
    """Gradients of ``y = x @ w + b`` (``w`` in (in, out) layout).

    Returns
    -------
    dx : ndarray, shape (..., I)
    dw : ndarray, shape (I, O)
    db : ndarray, shape (O,)

    Examples
    --------
    >>> x, w = np.ones((2, 3)), np.ones((3, 4))
    >>> dx, dw, db = linear_backward(np.ones((2, 4)), x, w)
    >>> dx.tolist(), dw.shape, db.tolist()
    ([[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]], (3, 4), [2.0, 2.0, 2.0, 2.0])
    """
    dy2 = dy.reshape(-1, dy.shape[-1])  # [N, O]
    dx = dy @ w.T  # [..., I]
    dw = x.reshape(-1, x.shape[-1]).T @ dy2  # [I, O]
    return dx, dw, dy2.sum(axis=0)  # [..., I], [I, O], [O]


def embedding_backward(dy, ids, n_vocab):  # [..., D], [...] int, int -> [V, D]
    """Gradient of the table of ``y = table[ids]``: rows of ``dy`` summed per id.

    Examples
    --------
    >>> embedding_backward(np.ones((3, 2)), np.array([1, 1, 0]), 4).tolist()
    [[1.0, 1.0], [2.0, 2.0], [0.0, 0.0], [0.0, 0.0]]
    """
    dy2 = dy.reshape(-1, dy.shape[-1])  # [N, D]
    out = np.zeros((n_vocab, dy2.shape[1]), dtype=dy.dtype)  # [V, D]
    np.add.at(out, np.asarray(ids).reshape(-1), dy2)
    return out


def layer_norm_backward(dy, x, g, eps):  # [..., D], [..., D], [D], float -> [..., D], [D], [D]
    """Gradients of :func:`fpsim.models.layers.layer_norm` (biased variance).

    Returns
    -------
    dx : ndarray, shape (..., D)
    dg, db : ndarray, shape (D,)

    Examples
    --------
    >>> x = np.array([[1.0, 2.0, 4.0]])
    >>> dx, dg, db = layer_norm_backward(np.ones((1, 3)), x, np.ones(3), 1e-12)
    >>> bool(np.allclose(dx, 0)), db.tolist()               # a constant dy is normalised away
    (True, [1.0, 1.0, 1.0])
    """
    xc = x - x.mean(axis=-1, keepdims=True)  # [..., D]
    rstd = 1 / np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True) + eps)  # [..., 1]
    xhat = xc * rstd  # [..., D]
    lead = tuple(range(x.ndim - 1))
    dg = np.sum(dy * xhat, axis=lead)  # [D]
    db = np.sum(dy, axis=lead)  # [D]
    dxhat = dy * g  # [..., D]
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                 - xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True))  # [..., D]
    return dx.astype(x.dtype, copy=False), dg, db


def rms_norm_backward(dy, x, g, eps):  # [..., D], [..., D], [D], float -> [..., D], [D]
    """Gradients of :func:`fpsim.models.llama.rms_norm`, ``y = x / rms(x) * g``.

    Examples
    --------
    >>> x = np.array([[3.0, 4.0]])
    >>> dx, dg = rms_norm_backward(np.array([[1.0, 0.0]]), x, np.ones(2), 0.0)
    >>> np.round(dx, 4).tolist(), np.round(dg, 4).tolist()
    ([[0.181, -0.1358]], [0.8485, 0.0])
    """
    r = 1 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)  # [..., 1]
    lead = tuple(range(x.ndim - 1))
    dg = np.sum(dy * x * r, axis=lead)  # [D]
    dxn = dy * g  # [..., D]
    dx = r * dxn - (r * r * r) * x * np.mean(dxn * x, axis=-1, keepdims=True)  # [..., D]
    return dx.astype(x.dtype, copy=False), dg


def gelu_backward(dy, x):  # [...], [...] -> [...]
    """Gradient of the exact (erf) GELU: ``dy * (Phi(x) + x * phi(x))``.

    ``Phi(x)`` is read off the forward kernel, ``gelu(x) / x`` in float64 (0.5 at 0), so
    it is exact to float64 rounding without a NumPy erf.

    Examples
    --------
    >>> np.round(gelu_backward(np.ones(3), np.array([-1.0, 0.0, 1.0])), 6).tolist()
    [-0.083315, 0.5, 1.083315]
    """
    x64 = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cdf = np.where(x64 == 0, 0.5, gelu(x64) / x64)  # [...] Phi(x)
    cdf[np.isneginf(x64)] = 0.0
    cdf[np.isposinf(x64)] = 1.0
    with np.errstate(invalid="ignore", over="ignore"):
        pdf = np.exp(-0.5 * x64 * x64) / math.sqrt(2 * math.pi)  # [...] phi(x)
        grad = cdf + np.where(np.isfinite(x64), x64 * pdf, 0.0)  # [...]
    return (dy * grad).astype(np.result_type(dy, x), copy=False)


def silu_backward(dy, x):  # [...], [...] -> [...]
    """Gradient of ``silu(x) = x * sigmoid(x)``: ``dy * s * (1 + x * (1 - s))``.

    Examples
    --------
    >>> np.round(silu_backward(np.ones(3), np.array([-1.0, 0.0, 1.0])), 4).tolist()
    [0.0723, 0.5, 0.9277]
    """
    with np.errstate(over="ignore"):
        s = 1 / (1 + np.exp(-x))  # [...]
    return dy * s * (1 + x * (1 - s))  # [...]


def swiglu_backward(dh, gate, up):  # [..., F], [..., F], [..., F] -> [..., F], [..., F]
    """Gradients of the SwiGLU product ``h = silu(gate) * up`` w.r.t. ``gate`` and ``up``
    (the linears around it go through :func:`linear_backward`).

    Examples
    --------
    >>> dg, du = swiglu_backward(np.ones(2), np.array([0.0, 1.0]), np.array([2.0, 3.0]))
    >>> np.round(dg, 4).tolist(), np.round(du, 4).tolist()
    ([1.0, 2.783], [0.0, 0.7311])
    """
    from ..models.llama import silu

    return silu_backward(dh * up, gate), dh * silu(gate)  # [..., F] x2


def softmax_backward(dp, p, axis=-1):  # [...], [...] -> [...]
    """Gradient of ``p = softmax(s)`` w.r.t. ``s``: ``p * (dp - sum(dp * p))``.

    Masked entries (``p == 0``, from ``-inf`` scores) get zero gradient; a row that is
    masked everywhere (all zeros) too.

    Examples
    --------
    >>> p = np.array([[0.5, 0.5, 0.0]])
    >>> softmax_backward(np.array([[1.0, 0.0, 5.0]]), p).tolist()
    [[0.25, -0.25, 0.0]]
    """
    return p * (dp - np.sum(dp * p, axis=axis, keepdims=True))  # [...]


def _grouped(q, n_kv):  # [B, H, T, d] -> [B, Hkv, G, T, d]
    b, h, t, d = q.shape
    return q.reshape(b, n_kv, h // n_kv, t, d)


def scores_backward(ds, q, k):
    # [B, H, Tq, Tk], [B, H, Tq, d], [B, Hkv, Tk, d] -> [B, H, Tq, d], [B, Hkv, Tk, d]
    """Gradients of the attention scores ``s = q k^T / sqrt(d)`` (query head ``h`` reads
    key head ``h // G``; ``Hkv == H`` is plain multi-head attention).

    Examples
    --------
    >>> q, k = np.ones((1, 2, 3, 4)), np.ones((1, 1, 5, 4))    # H=2 query heads, 1 key head
    >>> dq, dk = scores_backward(np.ones((1, 2, 3, 5)), q, k)
    >>> dq.shape, dk.shape, float(dk[0, 0, 0, 0])          # 2 heads x 3 queries / sqrt(4)
    ((1, 2, 3, 4), (1, 1, 5, 4), 3.0)
    """
    n_kv = k.shape[1]
    ds = _grouped(ds, n_kv) * ds.dtype.type(1 / math.sqrt(q.shape[-1]))  # [B, Hkv, G, Tq, Tk]
    dq = (ds @ k[:, :, None]).reshape(q.shape)  # [B, H, Tq, d]
    dk = np.sum(ds.swapaxes(-1, -2) @ _grouped(q, n_kv), axis=2)  # [B, Hkv, Tk, d]
    return dq, dk


def mix_backward(dout, p, v):
    # [B, H, Tq, d], [B, H, Tq, Tk], [B, Hkv, Tk, d] -> [B, H, Tq, Tk], [B, Hkv, Tk, d]
    """Gradients of the attention output ``out = p @ v`` w.r.t. the probabilities and values.

    Examples
    --------
    >>> dp, dv = mix_backward(np.ones((1, 2, 3, 4)), np.ones((1, 2, 3, 5)), np.ones((1, 1, 5, 4)))
    >>> dp.shape, dv.shape, float(dv[0, 0, 0, 0])
    ((1, 2, 3, 5), (1, 1, 5, 4), 6.0)
    """
    n_kv = v.shape[1]
    do = _grouped(dout, n_kv)  # [B, Hkv, G, Tq, d]
    dp = (do @ v[:, :, None].swapaxes(-1, -2)).reshape(p.shape)  # [B, H, Tq, Tk]
    dv = np.sum(_grouped(p, n_kv).swapaxes(-1, -2) @ do, axis=2)  # [B, Hkv, Tk, d]
    return dp, dv


def attention_backward(dout, q, k, v, p):
    # [B, H, Tq, d], [B, H, Tq, d], [B, Hkv, Tk, d] x2, [B, H, Tq, Tk] -> dq, dk, dv
    """Gradients of ``out = softmax(q k^T / sqrt(d) + mask) @ v`` given the probabilities
    ``p`` of the forward pass (the mask, additive and constant, has none).

    Works for a padding mask (BERT), a causal mask (Llama) and grouped-query attention
    (``k``, ``v`` with ``Hkv`` heads dividing ``H``).

    Returns
    -------
    dq : ndarray, shape (B, H, Tq, d)
    dk, dv : ndarray, shape (B, Hkv, Tk, d)

    Examples
    --------
    >>> from fpsim.models.layers import attention_weights
    >>> rng = np.random.default_rng(0)
    >>> q, k, v = rng.standard_normal((3, 1, 2, 4, 8))
    >>> p = attention_weights(q, k, None)
    >>> dq, dk, dv = attention_backward(np.ones((1, 2, 4, 8)), q, k, v, p)
    >>> dq.shape, bool(np.allclose(dv.sum(axis=2), 4.0))   # each query's probs sum to 1
    ((1, 2, 4, 8), True)
    """
    dp, dv = mix_backward(dout, p, v)  # [B, H, Tq, Tk], [B, Hkv, Tk, d]
    dq, dk = scores_backward(softmax_backward(dp, p), q, k)  # [B, H, Tq, d], [B, Hkv, Tk, d]
    return dq, dk, dv


def rope_backward(dy, cos, sin):  # [..., T, hd], [T, hd], [T, hd] -> [..., T, hd]
    """Gradient of :func:`fpsim.models.llama.rope` (a rotation: its transpose rotates
    back), ``dx = dy * cos - rotate_half(dy * sin)``.

    Examples
    --------
    >>> from fpsim.models.llama import rope, rope_angles
    >>> cos, sin = rope_angles(np.arange(3), 4, 1e4)
    >>> dy = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    >>> bool(np.allclose(rope(rope_backward(dy, cos, sin), cos, sin), dy, atol=1e-6))
    True
    """
    return dy * cos - rotate_half(dy * sin)  # [..., T, hd]


def mean_pool_backward(dpooled, mask):  # [B, D], [B, T] -> [B, T, D]
    """Gradient of :func:`fpsim.models.layers.mean_pool` w.r.t. the hidden states.

    Examples
    --------
    >>> mean_pool_backward(np.array([[2.0, 4.0]]), np.array([[1, 1, 0]]))[0].tolist()
    [[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]]
    """
    w = np.asarray(mask).astype(dpooled.dtype)  # [B, T]
    count = np.maximum(w.sum(axis=1, keepdims=True), dpooled.dtype.type(1e-9))  # [B, 1]
    return (w / count)[:, :, None] * dpooled[:, None, :]  # [B, T, D]


def l2_normalize_backward(dy, x, eps=1e-12):  # [..., D], [..., D] -> [..., D]
    """Gradient of :func:`fpsim.models.layers.l2_normalize` (``||x|| > eps``):
    ``(dy - y (y . dy)) / ||x||``.

    Examples
    --------
    >>> l2_normalize_backward(np.array([1.0, 0.0]), np.array([2.0, 0.0])).tolist()
    [0.0, 0.0]
    """
    norm = np.maximum(np.sqrt(np.sum(x * x, axis=-1, keepdims=True)), eps)  # [..., 1]
    y = x / norm  # [..., D]
    return (dy - y * np.sum(y * dy, axis=-1, keepdims=True)) / norm  # [..., D]


def cosine_loss(s, t):  # [B, D], [B, D] -> float, [B, D]
    """Mean cosine distance ``mean(1 - cos(s_b, t_b))`` and its gradient w.r.t. ``s``.

    Examples
    --------
    >>> loss, ds = cosine_loss(np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]]))
    >>> loss, ds.tolist()
    (1.0, [[0.0, -1.0]])
    """
    t_hat = t / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-12)  # [B, D]
    s_norm = np.maximum(np.linalg.norm(s, axis=-1, keepdims=True), 1e-12)  # [B, 1]
    s_hat = s / s_norm  # [B, D]
    cos = np.sum(s_hat * t_hat, axis=-1)  # [B]
    n = s.shape[0]
    ds = (s_hat * cos[:, None] - t_hat) / s_norm / n  # [B, D]
    return float(np.mean(1 - cos)), ds.astype(s.dtype, copy=False)


def _log_softmax(z):  # [..., V] -> [..., V] log-probabilities, probabilities (z's dtype)
    z = z - z.max(axis=-1, keepdims=True)  # [..., V]
    p = np.exp(z)  # [..., V]
    total = np.sum(p, axis=-1, keepdims=True, dtype=np.float64)  # [..., 1]
    p /= total.astype(z.dtype)
    z -= np.log(total).astype(z.dtype)
    return z, p


def kl_logits_loss(student, teacher, *, temperature=1.0):  # [N, V], [N, V] -> float, [N, V]
    """Mean over positions of ``KL(softmax(teacher / T) || softmax(student / T)) * T**2``
    and its gradient w.r.t. the student logits (in the student's dtype, sums in float64).

    Examples
    --------
    >>> z = np.array([[0.0, 1.0, 2.0]])
    >>> loss, dz = kl_logits_loss(z, z)
    >>> loss, bool(np.allclose(dz, 0))
    (0.0, True)
    """
    tau = float(temperature)
    lp_s, p_s = _log_softmax(student / student.dtype.type(tau))  # [N, V] x2
    lp_t, p_t = _log_softmax(teacher.astype(student.dtype) / student.dtype.type(tau))
    n = student.shape[0]
    lp_t -= lp_s  # [N, V] log(p_t / p_s)
    loss = float(np.sum(p_t * lp_t, dtype=np.float64) / n * tau * tau)
    p_s -= p_t
    p_s *= student.dtype.type(tau / n)
    dz = p_s  # [N, V]
    return max(loss, 0.0), dz.astype(student.dtype, copy=False)
