"""A QuantConfig's sites as differentiable fake quantizers: :class:`QATQuantizer`.

The training forward passes (:mod:`fpsim.qat.bert_grad`, :mod:`fpsim.qat.llama_grad`) call
``qz.weight(site, layer, w)`` and ``qz.act(site, layer, x)`` where the models call
``ctx.linear`` / ``ctx.act``; each returns the fake-quantized array, exactly what
:class:`~fpsim.models.QuantContext` computes (the same specs, the weight's scale groups
along its input axis), and a function mapping the gradient w.r.t. that output to the
gradient w.r.t. the input (the straight-through estimator, or LSQ for weights).
"""

from __future__ import annotations

import numpy as np

from ..models.context import QuantContext
from .fakequant import (STE_MODES, fake_quantize_ste, lsq_backward, lsq_fake_quantize,
                        lsq_init_scale, ste_backward)

__all__ = ["QATQuantizer"]


def _identity(dy):
    return dy


class QATQuantizer:
    """Fake quantizers with gradients for every site a QuantConfig quantizes.

    Parameters
    ----------
    config : QuantConfig, preset name or None
        Only ``linear_mode="fake_quant"`` configs without accumulators, weight algorithms
        (GPTQ/AWQ), delayed scaling or QuaRot's folded rotation (their numerics are not
        differentiable fake quantizers); ``rotation="online_hadamard"`` is differentiated
        (:meth:`linear`).
    n_layers : int
    sites : tuple of str
        The model's sites (``fpsim.models.bert.SITES``, ``fpsim.models.llama.SITES``).
    ste : {"plain", "clipped"}
        How gradients pass the quantizers (see :mod:`fpsim.qat.fakequant`).
    lsq : bool
        Learn a scale per output column of every quantized linear weight (LSQ; see
        :mod:`fpsim.qat.fakequant` for what it means per recipe).  The scales are in
        :attr:`scales` (named ``"lsq.<site>.<layer>"``), their gradients in :attr:`grads`.
    rng : seed or numpy.random.Generator, optional
        Root seed of stochastic rounding (as :class:`~fpsim.models.QuantContext`).

    Raises
    ------
    ValueError
        A config feature QAT does not differentiate, or an unknown ``ste``.

    Examples
    --------
    >>> from fpsim.models.bert import SITES
    >>> qz = QATQuantizer("int8", n_layers=1, sites=SITES)
    >>> x = np.array([[0.5, -1.0, 2.0]], np.float32)
    >>> xq, back = qz.act("q.input", 0, x)
    >>> xq.tolist(), back(np.ones_like(x)).tolist()
    ([[0.5039370059967041, -1.0078740119934082, 2.0]], [[1.0, 1.0, 1.0]])
    """

    def __init__(self, config, *, n_layers: int, sites, ste: str = "clipped", lsq: bool = False,
                 rng=None):
        if ste not in STE_MODES:
            raise ValueError(f"ste must be one of {STE_MODES}, got {ste!r}")
        self.ctx = QuantContext(config, n_layers=n_layers, sites=sites, rng=rng)
        cfg = self.ctx.config
        if cfg is not None:
            bad = []
            if cfg.linear_mode != "fake_quant":
                bad.append(f"linear_mode={cfg.linear_mode!r}")
            if cfg.accumulator is not None or cfg.accumulators:
                bad.append("accumulators")
            if cfg.weight_algorithm is not None:
                bad.append(f"weight_algorithm={cfg.weight_algorithm!r}")
            if cfg.delayed is not None:
                bad.append("delayed scaling")
            if cfg.rotation == "hadamard":
                bad.append("rotation='hadamard' (QuaRot folded into the weights)")
            if bad:
                raise ValueError(f"QAT differentiates fake-quantized linears only; config "
                                 f"{cfg.name or ''!r} has {', '.join(bad)}")
        self.ste = ste
        self.lsq = bool(lsq)
        #: LSQ's learned scales, "lsq.<site>.<layer>" -> array (updated in place by training)
        self.scales: dict[str, np.ndarray] = {}
        #: their gradients from the last backward pass (accumulated; reset with zero_grad)
        self.grads: dict[str, np.ndarray] = {}

    @property
    def is_fp32(self) -> bool:
        return self.ctx.is_fp32

    def spec(self, site: str, layer):
        return self.ctx.spec(site, layer)

    def weight_spec(self, site: str, layer):
        """The spec of a linear's (in, out) weight: scale groups along the input axis."""
        return QuantContext.weight_spec(self.spec(site, layer))

    def zero_grad(self) -> None:
        for k, v in self.scales.items():
            self.grads[k] = np.zeros_like(v)

    def _draw(self, site, layer, operand):
        return self.ctx.draw(site, layer, operand)

    def act(self, site: str, layer, x):
        """``(xq, back)``: ``x`` fake-quantized at activation ``site`` and the STE."""
        spec = self.spec(site, layer)
        if spec is None:
            return x, _identity
        xq, inside = fake_quantize_ste(x, spec, rng=self._draw(site, layer, "act"))
        xq = xq.astype(x.dtype, copy=False)
        ste = self.ste
        return xq, lambda dy: ste_backward(dy, inside, ste=ste)

    def linear(self, site: str, layer, x, w):
        """``(xq, wq, x_back, w_back)``: the operands of linear ``site`` as the model
        multiplies them (``xq @ wq``), and the maps from their gradients to those of ``x``
        and ``w``.  Under ``rotation="online_hadamard"`` they are ``Q(x R)`` and
        ``Q(R^T w)`` (:func:`~fpsim.models.rotation.rotate_online`, as the QuantContext does)
        and the maps rotate the gradients back: ``dx = back(dxq) R^T``, ``dw = R back(dwq)``.

        Examples
        --------
        >>> from fpsim.models import QuantConfig
        >>> from fpsim.models.bert import SITES
        >>> qz = QATQuantizer(QuantConfig(sites={"q": "int8_channel"},
        ...                   rotation="online_hadamard"), n_layers=1, sites=SITES)
        >>> x, w = np.ones((2, 8), np.float32), np.eye(8, dtype=np.float32)
        >>> xq, wq, x_back, w_back = qz.linear("q", 0, x, w)
        >>> bool(np.allclose(xq @ wq, x @ w, atol=0.05)), x_back(np.ones((2, 8))).shape
        (True, (2, 8))
        """
        cfg = self.ctx.config
        rotate = cfg is not None and cfg.rotation == "online_hadamard" and (
            self.spec(site, layer) is not None or self.spec(f"{site}.input", layer) is not None)
        if rotate:
            from ..models.rotation import rotate_online

            x = rotate_online(x)
            w = rotate_online(w.T).T
        xq, x_back = self.act(f"{site}.input", layer, x)
        wq, w_back = self.weight(site, layer, w)
        if not rotate:
            return xq, wq, x_back, w_back
        return (xq, wq, lambda dy: rotate_online(x_back(dy), inverse=True),
                lambda dy: rotate_online(w_back(dy).T, inverse=True).T)

    def weight(self, site: str, layer, w, *, linear: bool = True):
        """``(wq, back)``: the linear weight ``w`` (in, out) fake-quantized at ``site``, and
        the map from ``d loss / d wq`` to ``d loss / d w`` (LSQ also accumulates the scale's
        gradient in :attr:`grads`).  ``linear=False`` quantizes a table (``"embed"``) with
        the site's spec as it is, as ``QuantContext.weight`` does."""
        spec = self.weight_spec(site, layer) if linear else self.spec(site, layer)
        if spec is None:
            return w, _identity
        rng = self._draw(site, layer, "weight" if linear else "act")
        if not self.lsq:
            wq, inside = fake_quantize_ste(w, spec, rng=rng)
            ste = self.ste
            return wq.astype(w.dtype, copy=False), lambda dy: ste_backward(dy, inside, ste=ste)
        key = f"lsq.{site}.{layer}"
        if key not in self.scales:
            axis = None if spec.granularity == "tensor" and not spec.tensor_scale else w.ndim - 1
            self.scales[key] = lsq_init_scale(w, spec, axis=axis).astype(w.dtype)
            self.grads[key] = np.zeros_like(self.scales[key])
        s = self.scales[key]
        wq = lsq_fake_quantize(w, s, spec, rng=rng)

        def back(dy):
            dw, ds = lsq_backward(dy, w, s, spec, rng=rng)
            self.grads[key] += ds
            return dw

        return wq, back
