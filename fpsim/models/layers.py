"""Transformer layer functions in NumPy (GELU through one Numba kernel), shared by the models.

Each function is one equation of a paper, written for a batch: shapes are in the comment
on every line (``B`` batch, ``T`` tokens, ``D`` model width, ``H`` heads, ``d`` head
width).  They keep the dtype of their input (the models run in float32) and know nothing
of checkpoints or quantization: the model files map names and call the
:class:`~fpsim.models.QuantContext` around them.

Masks are *additive*: 0 where a query may attend to a key and ``-inf`` where it may
not, so a masked score contributes exactly ``exp(-inf) = 0`` whatever the scores are
(no magic ``-1e10``).  :func:`softmax` gives a row that is masked everywhere all zeros
(instead of NaN), so such a query's attention output is 0.
"""

from __future__ import annotations

import math

import numpy as np

from .._kernels import use_parallel
from .._kernels import nn as _nn

__all__ = ["attention", "attention_weights", "gelu", "l2_normalize", "layer_norm", "mean_pool",
           "merge_heads", "padding_mask", "softmax", "split_heads"]


def layer_norm(x, g, b, eps):  # [..., D], [D], [D], float -> [..., D]
    """Layer normalisation (Ba et al. 2016) over the last axis, biased variance.

    Parameters
    ----------
    x : ndarray, shape (..., D)
    g, b : ndarray, shape (D,)
        Gain and bias.
    eps : float
        Added to the variance (1e-12 in BERT checkpoints, 1e-5 in PyTorch's default).

    Examples
    --------
    >>> y = layer_norm(np.array([[1.0, 2.0, 3.0]]), np.ones(3), np.zeros(3), 1e-12)
    >>> np.round(y, 4)
    array([[-1.2247,  0.    ,  1.2247]])
    """
    mean = x.mean(axis=-1, keepdims=True)  # [..., 1]
    xc = x - mean  # [..., D]
    var = np.mean(xc * xc, axis=-1, keepdims=True)  # [..., 1]
    xc /= np.sqrt(var + var.dtype.type(eps))  # [..., D]
    xc *= g  # [..., D]
    xc += b  # [..., D]
    return xc


def gelu(x):  # [...] -> [...]
    """Exact GELU, ``x * Phi(x) = x / 2 * (1 + erf(x / sqrt(2)))`` (Hendrycks & Gimpel 2016).

    Computed per element in float64 with ``math.erf`` by a Numba kernel
    (:mod:`fpsim._kernels.nn`) and rounded once to the input's dtype; not the tanh
    approximation (off by up to 4.7e-4).  ``gelu(-inf) = -0.0``, ``gelu(nan) = nan``.
    The one layer that is not plain NumPy (NumPy has no erf): large arrays use all
    Numba threads.

    Parameters
    ----------
    x : ndarray of float32 or float64

    Returns
    -------
    ndarray, same shape and dtype as ``x``.

    Raises
    ------
    TypeError
        ``x`` is not a float32 or float64 array.

    Examples
    --------
    >>> gelu(np.array([-1.0, 0.0, 1.0]))
    array([-0.15865525,  0.        ,  0.84134475])
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"gelu: x must be a float32 or float64 array, got dtype {x.dtype}; "
                        "cast it with x.astype(np.float32)")
    flat = np.ascontiguousarray(x).reshape(-1)  # [N]
    out = np.empty_like(flat)  # [N]
    kernel = _nn.gelu_parallel if use_parallel(flat.size) else _nn.gelu_serial
    kernel(flat, out)
    return out.reshape(x.shape)  # [...]


def softmax(x, axis=-1):  # [...] -> [...]
    """Numerically stable softmax along ``axis``; a slice that is all ``-inf`` gives zeros.

    Examples
    --------
    >>> softmax(np.array([[0.0, 0.0], [-np.inf, -np.inf]]))
    array([[0.5, 0.5],
           [0. , 0. ]])
    """
    m = np.max(x, axis=axis, keepdims=True)  # [..., 1, ...]
    m[np.isneginf(m)] = 0  # a fully masked slice: exp(-inf - 0) = 0, no NaN from -inf - -inf
    e = np.exp(x - m)  # [...]
    s = np.sum(e, axis=axis, keepdims=True)  # [..., 1, ...]
    s[s == 0] = 1  # fully masked: 0 / 1 = 0
    e /= s  # [...]
    return e


def split_heads(x, n_heads):  # [B, T, D] -> [B, H, T, D/H]
    """View the model width as ``n_heads`` heads (no copy).

    Examples
    --------
    >>> x = np.arange(12.0).reshape(1, 2, 6)                # B=1, T=2, D=6
    >>> h = split_heads(x, 3)
    >>> h.shape
    (1, 3, 2, 2)
    >>> h[0, 1]                                             # head 1: columns 2:4 of each token
    array([[2., 3.],
           [8., 9.]])
    """
    B, T, D = x.shape
    return x.reshape(B, T, n_heads, D // n_heads).transpose(0, 2, 1, 3)  # [B, H, T, d]


def merge_heads(x):  # [B, H, T, d] -> [B, T, H*d]
    """Concatenate the heads back into the model width.

    Examples
    --------
    >>> x = np.arange(12.0).reshape(1, 2, 6)
    >>> merge_heads(split_heads(x, 3)).shape
    (1, 2, 6)
    >>> bool(np.array_equal(merge_heads(split_heads(x, 3)), x))
    True
    """
    B, H, T, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * d)  # [B, T, D]


def attention_weights(q, k, mask):  # [B, H, Tq, d], [B, H, Tk, d], [B, 1|H, 1|Tq, Tk] -> [B, H, Tq, Tk]
    """Scaled dot-product attention probabilities ``softmax(q k^T / sqrt(d) + mask)``.

    ``mask`` is additive (0 or ``-inf``, see :func:`padding_mask`) and broadcasts
    against the scores; None means no mask.

    Examples
    --------
    >>> q = k = np.eye(2)[None, None]                       # one batch, one head, two tokens
    >>> np.round(attention_weights(q, k, None)[0, 0], 4)
    array([[0.6698, 0.3302],
           [0.3302, 0.6698]])
    >>> attention_weights(q, k, padding_mask(np.array([1]), 2))[0, 0]
    array([[1., 0.],
           [1., 0.]])
    """
    scores = q @ k.swapaxes(-1, -2)  # [B, H, Tq, Tk]
    scores /= q.dtype.type(math.sqrt(q.shape[-1]))  # [B, H, Tq, Tk]
    if mask is not None:
        scores += mask  # [B, H, Tq, Tk]
    return softmax(scores, axis=-1)  # [B, H, Tq, Tk]


def attention(q, k, v, mask):  # [B, H, Tq, d], [B, H, Tk, d], [B, H, Tk, d], mask -> [B, H, Tq, d]
    """Scaled dot-product attention (Vaswani et al. 2017) for a batch of heads.

    Examples
    --------
    >>> q = k = v = np.eye(2)[None, None]  # one batch, one head, two tokens
    >>> attention(q, k, v, padding_mask(np.array([1]), 2))[0, 0]
    array([[1., 0.],
           [1., 0.]])
    """
    return attention_weights(q, k, mask) @ v  # [B, H, Tq, d]


def padding_mask(lengths, T, *, dtype=np.float32):  # [B], int -> [B, 1, 1, T]
    """Additive key mask of right-padded sequences: 0 for the first ``lengths[b]`` keys, else -inf.

    Parameters
    ----------
    lengths : array of int, shape (B,)
        Tokens in each sequence, ``0 <= lengths[b] <= T``.
    T : int
        Padded length.
    dtype : float dtype of the mask.

    Raises
    ------
    ValueError
        A length is negative or longer than ``T``.

    Examples
    --------
    >>> padding_mask([2, 3], 3)[:, 0, 0]
    array([[  0.,   0., -inf],
           [  0.,   0.,   0.]], dtype=float32)
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or np.any(lengths < 0) or np.any(lengths > T):
        raise ValueError(f"padding_mask: lengths must be a 1-D array of ints in [0, T={T}], "
                         f"got {lengths!r}")
    keep = np.arange(T) < lengths[:, None]  # [B, T]
    mask = np.where(keep, dtype(0), dtype(-np.inf))  # [B, T]
    return mask[:, None, None, :]  # [B, 1, 1, T]


def mean_pool(h, mask):  # [B, T, D], [B, T] -> [B, D]
    """Mean of each sequence's vectors over its real tokens (``mask`` true / 1).

    A sequence with no real token gives a zero vector (its count is clamped to 1e-9,
    as sentence-transformers does).

    Examples
    --------
    >>> h = np.arange(6.0).reshape(1, 3, 2)
    >>> mean_pool(h, np.array([[1, 1, 0]]))
    array([[1., 2.]])
    """
    w = np.asarray(mask).astype(h.dtype)  # [B, T]
    total = np.matmul(w[:, None, :], h)[:, 0, :]  # [B, D]
    count = np.maximum(w.sum(axis=1, keepdims=True), h.dtype.type(1e-9))  # [B, 1]
    return total / count  # [B, D]


def l2_normalize(x, axis=-1, eps=1e-12):  # [..., D] -> [..., D]
    """``x / max(||x||_2, eps)`` along ``axis`` (a zero vector stays zero).

    Examples
    --------
    >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    array([[0.6, 0.8],
           [0. , 0. ]])
    """
    norm = np.sqrt(np.sum(x * x, axis=axis, keepdims=True))  # [..., 1]
    return x / np.maximum(norm, x.dtype.type(eps))  # [..., D]
