"""Delayed scaling (Transformer Engine): the scale of step t from the amax history."""

from __future__ import annotations

import numpy as np

from ._cast import quantize
from ..formats import FloatFormat
from . import blocks as _blocks
from ._groups import F32_MAX, F32_TINY, as_float
from ..rounding import child_seed, seed_of
from .spec import check_choice, resolve_spec

__all__ = ["DelayedScaling"]


class DelayedScaling:
    """Transformer Engine style delayed scaling over a sequence of tensors.

    The scale used at step t comes from the amax history of the steps before
    it (initially 1, as in TE); each call then records the tensor's amax.

    Parameters
    ----------
    spec : QuantSpec or str
        Per-tensor spec (default ``"float8_e4m3fn"``).
    history_len : int
        Length of the amax history.
    algo : {"max", "most_recent"}
    margin : int
        The scale leaves ``2**margin`` headroom: ``scale = amax * 2**margin / max``
        (an int in [-127, 127]; the scale is kept within float32's range).
    rng : int seed, numpy.random.Generator or None
        For a stochastic-rounding spec: an int seed gives step t the stream
        ``child_seed(seed, t)`` (:func:`fpsim.rounding.child_seed`), so a replay gives the
        same codes; a Generator is drawn from; None takes fresh entropy at every step.

    Raises
    ------
    TypeError
        A non-integer history_len or margin.
    ValueError
        history_len < 1, margin outside [-127, 127], unknown algo, a spec that is
        not per tensor.

    Examples
    --------
    >>> import numpy as np
    >>> ds = DelayedScaling("e4m3fn", history_len=4)
    >>> _ = ds(np.array([1.0, 896.0], np.float32))  # scale 1 at step 0: 896 saturates
    >>> float(ds.scale)  # next step: 896 / 448
    2.0
    """

    def __init__(self, spec="float8_e4m3fn", *, history_len: int = 1024, algo: str = "max",
                 margin: int = 0, rng=None):
        self.spec = resolve_spec(spec)
        if rng is None or isinstance(rng, np.random.Generator):
            self._rng, self._seed = rng, None
        else:
            self._rng, self._seed = None, seed_of(rng)
        self._step = 0
        if self.spec.granularity != "tensor":
            raise ValueError("DelayedScaling needs a per-tensor spec")
        history_len = _blocks.check_int(history_len, "history_len", minimum=1)
        check_choice("algo", algo, ("max", "most_recent"))
        margin = _blocks.check_int(margin, "margin")
        if not -127 <= margin <= 127:
            raise ValueError(f"margin must be an int in [-127, 127] (a power-of-two headroom "
                             f"2**margin within float32's range), got {margin!r}")
        self.history_len, self.algo, self.margin = history_len, algo, margin
        self.amax_history: list[float] = []
        self.scale = np.float32(1.0)
        self.overflows = 0

    def __call__(self, x) -> np.ndarray:
        x = as_float(x)
        fmt = self.spec.format
        a = np.abs(x)
        a = a[a < np.inf]  # NaN and Inf never set a scale
        amax = min(float(a.max()), F32_MAX) if a.size else 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            y = (_blocks.to_float32(x) / self.scale).astype(np.float32)
            self.overflows += int(np.count_nonzero(np.abs(y) > fmt.max))
            rng = self._rng if self._seed is None else child_seed(self._seed, self._step)
            q = quantize(y, fmt, rounding=self.spec.rounding, saturate=self.spec.saturate,
                         rng=rng)
        self._step += 1
        with np.errstate(over="ignore", invalid="ignore"):
            out = (q * self.scale).astype(x.dtype, copy=False)
        if not (isinstance(fmt, FloatFormat) and fmt.has_nan):
            out[np.isnan(x)] = np.nan  # NaN stays NaN
        self.amax_history = (self.amax_history + [amax])[-self.history_len:]
        ref = max(self.amax_history) if self.algo == "max" else self.amax_history[-1]
        if ref > 0:
            s = ref * 2.0**self.margin / fmt.max
            self.scale = np.float32(min(max(s, F32_TINY), F32_MAX / fmt.max))
        return out
