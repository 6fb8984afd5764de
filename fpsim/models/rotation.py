"""Hadamard rotations: QuaRot's, folded into a Llama's weights, and online ones at every
quantized linear of any model.

``QuantConfig(rotation="hadamard")``, QuaRot folded into the weights (Llama only):

QuaRot (Ashkboos et al. 2024, arXiv:2404.00456) multiplies the residual stream by an
orthogonal matrix ``Q``, which changes no output in exact arithmetic but spreads outliers over
all channels, so that weights and activations quantize better.  With RMSNorm's scales folded
into the linears that read its output (RMSNorm without a scale commutes with ``Q``:
``norm(x Q) = norm(x) Q``):

* embedding ``E -> E Q``; every linear that reads the residual stream (``q k v gate up`` and
  the LM head) ``W -> Q^T diag(g) W`` with ``g`` the scale of the RMSNorm before it (then
  set to ones); every linear that writes it (``o down``) ``W -> W Q``;
* the "online" Hadamard before ``down``: its input ``h -> h Hf`` (in float32, at run time)
  and ``W_down -> Hf^T W_down Q``.

``Q`` and ``Hf`` are random Hadamard matrices ``diag(signs) H / sqrt(n)``: Sylvester's
construction for powers of two, times Paley's order-12 matrix for ``n = 12 * 2**k`` or
``144 * 2**k`` (SmolLM2: d = 576 = 144 * 4, d_ff = 1536 = 12 * 128).  The signs are seeded.
The weights are folded in float64 and stored as float32.

``QuantConfig(rotation="online_hadamard")``, any model (post-LayerNorm BERT too, where no
rotation folds into the weights: the LayerNorm output is both the next linear's input and
the residual): every quantized linear (its weight or its input quantized) computes
``Q(x R) @ Q(R^T W) + b`` instead of ``Q(x) @ Q(W) + b``, with ``R = online_rotation(n)``
for its input width ``n`` (QuaRot's "online" Hadamard, at every linear).  ``x R`` is
computed at run time (:func:`rotate_online`, through the Kronecker factors of the Hadamard
matrix), ``R^T W`` once per weight.  In exact arithmetic ``(x R)(R^T W) = x W``; what
changes is what is quantized: an outlier channel of ``x`` (or a large row of ``W``) is
spread over all ``n`` channels, so it no longer sets the scale of the others.  ``R``
depends on ``n`` alone (a fixed seed, not the model's ``rng=``), so weights trained under
it (QAT) keep their meaning.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..rounding import child_seed

__all__ = ["ROTATIONS", "hadamard_matrix", "online_rotation", "rotate_online",
           "rotate_weights"]

#: QuantConfig(rotation=...) values
ROTATIONS = (None, "hadamard", "online_hadamard")


def _sylvester(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def _paley12() -> np.ndarray:
    """A Hadamard matrix of order 12 (Paley's first construction, q = 11)."""
    q = 11
    residues = {(i * i) % q for i in range(1, q)}
    chi = np.array([0] + [1 if i in residues else -1 for i in range(1, q)])
    jac = np.array([[chi[(j - i) % q] for j in range(q)] for i in range(q)])
    s = np.zeros((q + 1, q + 1))
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = jac
    return np.eye(q + 1) + s


def _factors(n: int) -> list[np.ndarray]:
    """Hadamard matrices whose Kronecker product (in order) is the Hadamard matrix of
    order ``n`` built here: Sylvester's ``H_m`` after zero, one or two Paley matrices."""
    for base, paley in ((1, 0), (12, 1), (144, 2)):
        m = n // base
        if n % base == 0 and m >= 1 and m & (m - 1) == 0:
            return [_paley12()] * paley + [_sylvester(m)]
    raise ValueError(f"no Hadamard matrix of order {n} here: orders 2**k, 12 * 2**k and "
                     "144 * 2**k are built")


def _hadamard(n: int) -> np.ndarray:
    for base in (1, 12, 144):
        m = n // base
        if n % base == 0 and m >= 1 and m & (m - 1) == 0:
            h = _sylvester(m)
            if base >= 12:
                h = np.kron(_paley12(), h)
            if base == 144:
                h = np.kron(_paley12(), h)
            return h
    raise ValueError(f"no Hadamard matrix of order {n} here: orders 2**k, 12 * 2**k and "
                     "144 * 2**k are built")


def hadamard_matrix(n: int, *, seed: int = 0) -> np.ndarray:
    """An orthogonal random Hadamard matrix ``diag(signs) H_n / sqrt(n)`` (float64).

    Examples
    --------
    >>> q = hadamard_matrix(576, seed=1)
    >>> bool(np.allclose(q @ q.T, np.eye(576))), np.unique(np.abs(q * 24).round(12)).tolist()
    (True, [1.0])
    """
    h = _hadamard(int(n))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], n)
    return signs[:, None] * h / np.sqrt(n)


_ONLINE: dict = {}


def _online_signs(n: int) -> np.ndarray:
    return np.random.default_rng(child_seed(0, "rotation", "online", n)).choice([-1.0, 1.0], n)


def online_rotation(n: int) -> np.ndarray:
    """The float32 random Hadamard matrix ``R`` (``[n, n]``, orthogonal) of
    ``rotation="online_hadamard"`` for a linear of input width ``n``; the same for every
    linear, call and seed (cached).

    Raises
    ------
    ValueError
        No Hadamard matrix of order ``n`` is built here (orders ``2**k``, ``12 * 2**k``,
        ``144 * 2**k``).

    Examples
    --------
    >>> r = online_rotation(384)
    >>> r.dtype, bool(np.allclose(r @ r.T, np.eye(384), atol=1e-6))
    (dtype('float32'), True)
    """
    n = int(n)
    if n not in _ONLINE:
        r = (_online_signs(n)[:, None] * _hadamard(n) / np.sqrt(n)).astype(np.float32)
        r.flags.writeable = False
        _ONLINE[n] = r
    return _ONLINE[n]


_FACTORS: dict = {}


def rotate_online(x: np.ndarray, *, inverse: bool = False) -> np.ndarray:
    """``x @ R`` (or ``x @ R^T`` with ``inverse=True``) along the last axis for ``R =
    online_rotation(n)``, through the Kronecker factors of ``R``'s Hadamard matrix:
    ``n * (12 + m)`` multiply-adds a row for ``n = 12 m`` instead of ``n**2``, in ``x``'s
    float dtype (float32 for anything else).  The rounding differs from a dense ``x @ R``
    by float32 noise; :class:`~fpsim.models.QuantContext` and :mod:`fpsim.qat` both call
    this function, so the model and its training agree.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((3, 384)).astype(np.float32)
    >>> y = rotate_online(x)
    >>> bool(np.allclose(y, x @ online_rotation(384), atol=1e-5))
    True
    >>> bool(np.allclose(rotate_online(y, inverse=True), x, atol=1e-5))
    True
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    n = x.shape[-1]
    if n not in _FACTORS:
        online_rotation(n)  # the error for a width without a Hadamard matrix
        _FACTORS[n] = (_online_signs(n), _factors(n))
    signs, factors = _FACTORS[n]
    signs = signs.astype(x.dtype)
    scale = x.dtype.type(1 / np.sqrt(n))
    lead = x.shape[:-1]
    dims = [f.shape[0] for f in factors]
    if not inverse:  # x @ diag(s) @ kron(F1, F2, ...) / sqrt(n)
        y = (x * signs).reshape(-1, *dims)
    else:  # x @ kron(F1, ...)^T @ diag(s) / sqrt(n)
        y = x.reshape(-1, *dims)
    for axis, f in enumerate(factors, start=1):
        f = (f.T if inverse else f).astype(x.dtype)
        y = np.moveaxis(np.moveaxis(y, axis, -1) @ f, -1, axis)
    y = np.ascontiguousarray(y).reshape(*lead, n) * scale
    return y * signs if inverse else y


def rotate_weights(weights, *, seed: int = 0):
    """The :class:`~fpsim.models.llama.LlamaWeights` of the rotated model (RMSNorm scales
    folded in, ones in their place, ``down_rotation`` set on every block)."""
    d = weights.embedding.shape[1]
    d_ff = weights.blocks[0].w_down.shape[0]
    q = hadamard_matrix(d, seed=child_seed(seed, "rotation", "residual"))
    hf = hadamard_matrix(d_ff, seed=child_seed(seed, "rotation", "down"))
    f32 = np.float32

    def reads(w, g):  # a linear reading the residual stream, (in, out)
        return (q.T @ (g.astype(np.float64)[:, None] * w.astype(np.float64))).astype(f32)

    def writes(w):
        return (w.astype(np.float64) @ q).astype(f32)

    blocks = []
    for b in weights.blocks:
        ones = np.ones_like(b.attn_norm)
        blocks.append(dataclasses.replace(
            b, attn_norm=ones, wq=reads(b.wq, b.attn_norm), wk=reads(b.wk, b.attn_norm),
            wv=reads(b.wv, b.attn_norm), wo=writes(b.wo), ffn_norm=np.ones_like(b.ffn_norm),
            w_gate=reads(b.w_gate, b.ffn_norm), w_up=reads(b.w_up, b.ffn_norm),
            w_down=(hf.T @ b.w_down.astype(np.float64) @ q).astype(f32),
            down_rotation=hf.astype(f32)))
    return dataclasses.replace(
        weights, embedding=np.ascontiguousarray((weights.embedding.astype(np.float64) @ q)
                                                .astype(f32)),
        blocks=blocks, norm=np.ones_like(weights.norm),
        lm_head=np.ascontiguousarray(reads(weights.lm_head, weights.norm)))
