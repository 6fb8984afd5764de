"""QuaRot-style rotations of a Llama model: orthogonal Hadamard matrices folded into the weights.

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
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..rounding import child_seed

__all__ = ["ROTATIONS", "hadamard_matrix", "rotate_weights"]

#: QuantConfig(rotation=...) values
ROTATIONS = (None, "hadamard")


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
