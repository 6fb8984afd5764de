"""The runtime quantization context a forward pass calls: :class:`QuantContext`.

It resolves the spec of each site and layer from a QuantConfig, fake-quantizes the
weights once, quantizes activations and matmul operands, and records :class:`SiteStats`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .._kernels import stats as _stats
from .._kernels import use_parallel
from ..quant import fake_quantize
from ..rounding import child_seed, seed_of
from .config import ACT_SITES, SITES, instruction_of
from .numerics import torch_dynamic_int8_linear
from .presets import preset

__all__ = ["QuantContext", "SiteStats"]

#: Elements per row of the traced statistics of a tensor without blocks (the unit of work
#: of a thread; a row's sums come out the same on any number of threads).
_STATS_CHUNK = 1 << 16


def _error_stats(x, q, limit, n: int, k: int, st: "SiteStats", *,
                 any_order: bool = False) -> None:
    """Add the signal, noise, largest magnitude, saturated and underflowed counts of ``x``
    (quantized: ``q``) to ``st``, in one pass (:mod:`fpsim._kernels.stats`): rows of ``n``
    elements, blocks of ``k`` with one ``limit`` each (``any_order``: one limit for all,
    so the elements may be taken in their memory order)."""
    if any_order and x.ndim > 1 and x.flags.f_contiguous and not x.flags.c_contiguous:
        x, q = x.T, q.T  # no blocks: any element order will do, take x's memory order
    x = np.ascontiguousarray(x).reshape(-1)
    q = np.ascontiguousarray(q, dtype=x.dtype).reshape(-1)
    rows = -(-x.size // n) if x.size else 0
    if rows == 0:
        return
    fsum = np.zeros((rows, 3))
    isum = np.zeros((rows, 2), np.int64)
    kernel = _stats.error_stats_parallel if use_parallel(x.size) else _stats.error_stats_serial
    kernel(x, q, np.ascontiguousarray(limit, dtype=np.float64).reshape(-1), int(n), int(k),
           -(-int(n) // int(k)), fsum, isum)
    st.signal += float(fsum[:, 0].sum())
    st.noise += float(fsum[:, 1].sum())
    st.amax = max(st.amax, float(fsum[:, 2].max()))
    st.saturated += int(isum[:, 0].sum())
    st.underflow += int(isum[:, 1].sum())


@dataclass
class SiteStats:
    """What happened at one site in one layer (accumulated over calls).

    Examples
    --------
    >>> s = SiteStats(calls=1, elements=4, amax=2.0, signal=100.0, noise=1.0)
    >>> s.sqnr_db, SiteStats().sqnr_db
    (20.0, inf)
    """

    calls: int = 0
    elements: int = 0
    amax: float = 0.0
    saturated: int = 0
    underflow: int = 0
    signal: float = 0.0
    noise: float = 0.0

    @property
    def sqnr_db(self) -> float:
        if self.noise == 0:
            return float("inf")
        return float(10 * np.log10(self.signal / self.noise)) if self.signal > 0 else float("-inf")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sqnr_db"] = self.sqnr_db
        return d


def _compact(a: np.ndarray) -> np.ndarray:
    """``a`` (float64) as float32 when that holds every value exactly (half the memory of a
    model's cached weight operands), else ``a`` itself."""
    a32 = a.astype(np.float32)
    return a32 if np.array_equal(a32, a, equal_nan=True) else a


def _in_order_of(w: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """``wq`` (w's quantized values) laid out in memory as ``w`` is: Fortran order for a
    transposed view of an ``(out, in)`` checkpoint tensor, else C order.  BLAS may sum in
    another order for another layout (OpenBLAS's AVX-512 small-matrix kernels do), so a
    linear left in FP32 and one whose weights already lie on the grid (a GGUF of quantized
    weights, loaded back) give the same bits only with the same layout."""
    if w.flags.f_contiguous and not w.flags.c_contiguous:
        return np.asfortranarray(wq)
    return np.ascontiguousarray(wq)


class QuantContext:
    """The runtime a forward pass calls at every site (FP32 when ``config`` is None).

    Parameters
    ----------
    config : QuantConfig, preset name or None
    n_layers : int, optional
        The model's layers: negative layer indices count from the end, and indices
        outside ``[-n_layers, n_layers)`` are refused.
    sites : iterable of str, optional
        The sites the model has; a config that is not ``portable`` may quantize only these.
    trace : bool
        Record :class:`SiteStats` per (site, layer).
    rng : int seed, numpy.random.Generator or None
        The root seed of stochastic rounding (None: :data:`fpsim.rounding.DEFAULT_SEED`, 0;
        a Generator gives one draw).  Every quantization draws from its own stream,
        ``child_seed(seed, site, layer, operand, call)`` (:func:`fpsim.rounding.child_seed`,
        numpy's SeedSequence keyed by a stable hash of the site): sites, layers, operands
        and successive calls never share random bits, and the same seed gives the same
        draws whatever order the sites run in.  The call counter counts calls per (site,
        layer, operand), so with stochastic rounding the outputs depend on how the inputs
        are batched (the n-th call of a site draws the n-th stream); weights are quantized
        once (call 0).

    Examples
    --------
    >>> ctx = QuantContext("int8")
    >>> ctx.is_fp32, QuantContext().is_fp32, ctx.spec("q", 0).name
    (False, True, 'int8_weight_channel')
    """

    def __init__(self, config=None, *, n_layers: int | None = None, trace: bool = False,
                 rng=None, sites=None):
        self.config = None if config is None else preset(config)
        if self.config is not None and (sites is not None or n_layers is not None):
            self.config.check_model(sites=tuple(SITES if sites is None else sites),
                                    n_layers=n_layers)
        self.n_layers = n_layers
        self.tracing = trace
        #: record the weights' statistics when they are first quantized even while
        #: ``tracing`` is off (an evaluation traces activations on a probe batch only,
        #: and the weights, quantized once, need not be quantized again for their stats)
        self.trace_weights = False
        self.trace: dict[tuple[str, int | None], SiteStats] = {}
        self.rng = rng
        self.seed = seed_of(rng)
        self._calls: dict = {}
        #: (site, layer) -> the QuantSpec each weight was quantized with (what storage counts)
        self.weight_specs: dict = {}
        self._weights: dict[tuple[str, int | None, int], np.ndarray] = {}
        self._delayed: dict = {}
        #: (site, layer, id(w)) -> (w, R^T w) under rotation="online_hadamard"
        self._rotated_weights: dict = {}
        #: (site, layer) -> (QuantizedTensor, input factors or None, dequantized weight) of
        #: the weights a weight algorithm (GPTQ, AWQ) computed; they outlive :meth:`reseed`
        self.installed: dict = {}
        #: True while :func:`fpsim.models.ptq.calibrate` runs the calibration pass
        self.calibrating = False
        #: called once per linear calibrated (for progress bars)
        self.on_calibrated = None

    @property
    def is_fp32(self) -> bool:
        return self.config is None or (not self.config.sites and self.config.accumulator is None
                                       and not self.config.accumulators
                                       and not self.config.layers)

    def spec(self, site: str, layer: int | None):
        if self.config is None:
            return None
        return self.config.spec_for(site, layer, self.n_layers)

    def reseed(self, rng) -> None:
        """Restart every random stream from the root seed ``rng`` (see the class doc)."""
        self.rng = rng
        self.seed = seed_of(rng)
        self._calls = {}
        self._weights = {}
        self._delayed = {}
        self.weight_specs = {}

    def draw(self, site: str, layer: int | None, operand: str = "act") -> int:
        """The seed of the next stochastic quantization at (site, layer, operand)."""
        key = (site, -1 if layer is None else int(layer), operand)
        n = self._calls.get(key, 0)
        self._calls[key] = n + 1
        return child_seed(self.seed, *key, n)

    def _traced(self, site, layer, x, spec, operand="act"):
        """Quantize x and record its statistics.

        ``saturated`` counts elements clipped to the format's range: for MX specs those
        beyond their block's range (``|x| > X * max_elem``), otherwise those beyond the
        largest magnitude of the quantized tensor (plus infinities).
        """
        from ..quant.blocks import mx_fake_quantize

        if spec.is_mx:
            xq, scale_codes = mx_fake_quantize(
                x, spec.format, axis=spec.axis, block_size=spec.block_size,
                scale_rule=spec.scale_rule, rounding=spec.rounding,
                rng=self.draw(site, layer, operand), return_details=True)
            xq = xq.astype(x.dtype, copy=False)
            # rows along the block axis, and each block's largest magnitude beside them
            k, n = spec.block_size, x.shape[spec.axis]
            rows = np.moveaxis(x, spec.axis, -1).reshape(-1, n)
            rows_q = np.moveaxis(xq, spec.axis, -1).reshape(-1, n)
            limit = np.moveaxis(np.ldexp(spec.format.max, scale_codes.astype(np.int64) - 127),
                                spec.axis, -1).reshape(rows.shape[0], -1)
            top = None
        else:
            xq = fake_quantize(x, spec, rng=self.draw(site, layer, operand))
            top = max(float(xq.max()), -float(xq.min())) if xq.size else 0.0
            if not np.isfinite(top):  # Inf or NaN in the quantized tensor: the finite top
                fq = np.isfinite(xq)
                top = float(np.max(np.abs(xq[fq]))) if fq.any() else 0.0
            rows, rows_q = x, xq
            limit = None
        st = self.trace.setdefault((site, layer), SiteStats())
        st.calls += 1
        st.elements += x.size
        if limit is None:  # rows of _STATS_CHUNK elements, one limit (the top) each
            n = k = _STATS_CHUNK
            limit = np.full(-(-x.size // n), top)
        else:
            n = rows.shape[1]
        _error_stats(rows, rows_q, limit, n, k, st, any_order=top is not None)
        return xq

    def quantize(self, site: str, layer: int | None, x: np.ndarray) -> np.ndarray:
        """Fake-quantize ``x`` at ``site`` (the identity where the config says FP32)."""
        spec = self.spec(site, layer)
        if spec is None:
            return x
        if self.config.delayed is not None and site in ACT_SITES:
            from ..quant import DelayedScaling

            ds = self._delayed.get((site, layer))
            if ds is None:
                ds = self._delayed[(site, layer)] = DelayedScaling(
                    spec, **self.config.delayed,
                    rng=child_seed(self.seed, site, -1 if layer is None else layer, "delayed"))
            before = ds.overflows
            xq = ds(x)
            if self.tracing:
                st = self.trace.setdefault((site, layer), SiteStats())
                x64 = x.astype(np.float64)
                st.calls += 1
                st.elements += x.size
                st.amax = max(st.amax, float(np.nanmax(np.abs(x64))) if x.size else 0.0)
                st.signal += float(np.sum(x64**2))
                st.noise += float(np.sum((xq - x64) ** 2))
                st.saturated += ds.overflows - before
                st.underflow += int(np.count_nonzero((x64 != 0) & (xq == 0)))
            return xq
        if self.tracing:
            return self._traced(site, layer, x, spec)
        return fake_quantize(x, spec, rng=self.draw(site, layer))

    act = quantize

    def weight(self, site: str, layer: int | None, w: np.ndarray) -> np.ndarray:
        """The fake-quantized weight at ``site`` (cached per weight array)."""
        spec = self.spec(site, layer)
        if spec is None:
            return w
        key = (site, layer, id(w))
        self.weight_specs[(site, layer)] = spec
        if key not in self._weights:
            tracing, self.tracing = self.tracing, self.tracing or self.trace_weights
            try:
                self._weights[key] = self.quantize(site, layer, w)
            finally:
                self.tracing = tracing
        return self._weights[key]

    def matmul(self, site: str, layer: int | None, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a @ b`` in the accumulator the config names for ``site`` (BLAS for FP32)."""
        acc = None if self.config is None else self.config.accumulator_for(site)
        if acc is None or acc == "fp32" or instruction_of(acc) is not None:
            # a matrix instruction takes quantized operands (linear() routes those to
            # _mma_linear); a layer the config leaves unquantized runs in FP32
            return a @ b
        from ..quant.accumulate import qmatmul

        lead = a.shape[:-1]
        kw = {}
        for opt in ("promote_every", "accumulator_bits"):  # checked by QuantConfig
            if self.config.options.get(opt) is not None:
                kw[opt] = self.config.options[opt]
        out = qmatmul(a.reshape(-1, a.shape[-1]), b, accumulator=acc, **kw)
        return np.asarray(out, dtype=np.float32).reshape(*lead, b.shape[-1])

    def linear(self, site: str, layer: int | None, x: np.ndarray, w: np.ndarray,
               b: np.ndarray | None = None) -> np.ndarray:
        """``x @ w + b`` with w in (in, out) layout, quantized as the config says.

        The weight is quantized with scale groups along its input axis (``axis=0``
        for per-channel / block specs), the activation along its last axis.
        """
        mode = "fake_quant" if self.config is None else self.config.linear_mode
        if (self.config is not None and self.config.rotation == "online_hadamard"
                and (self.spec(site, layer) is not None
                     or self.spec(f"{site}.input", layer) is not None)):
            x, w = self._rotated(site, layer, x, w)
        if (self.config is not None and self.config.weight_algorithm is not None
                and self.spec(site, layer) is not None):
            if (site, layer) not in self.installed:
                if not self.calibrating:
                    raise RuntimeError(
                        f"weight_algorithm={self.config.weight_algorithm!r}: the weights of "
                        f"{site!r} (layer {layer}) were not calibrated; build the model with "
                        f"fpsim.models.load(..., quant=config), or run "
                        f"fpsim.models.ptq.calibrate(model)")
                self._calibrate_linear(site, layer, x, w)
            s_in = self.installed[(site, layer)][1]
            if s_in is not None:  # AWQ: the factor folded into the operation before
                x = (x / s_in).astype(np.float32)
        if mode == "fake_quant" and self.config is not None and self.spec(site, layer) is not None:
            inst = instruction_of(self.config.accumulator_for(site))
            if inst is not None:
                return self._mma_linear(inst, site, layer, x, w, b)
        if mode == "torch_dynamic_int8" and self.spec(site, layer) is not None:
            return self._special_linear(mode, site, layer, x, w, b)  # b inside torch's FMA
        if mode != "fake_quant" and self.spec(site, layer) is not None:
            y = self._special_linear(mode, site, layer, x, w)
            return y if b is None else y + b
        xq = self.act(f"{site}.input", layer, x)
        wspec = self.weight_spec(self.spec(site, layer))
        wq = w if wspec is None else self._weight_with(site, layer, w, wspec)
        y = self.matmul(site, layer, xq, wq)
        if b is not None:
            y = y + b
        return y

    def _rotated(self, site, layer, x, w):
        """``(x R, R^T w)`` for ``rotation="online_hadamard"`` (``R^T w`` cached per weight
        array, so that the quantized weight is cached too)."""
        from .rotation import rotate_online

        n = np.shape(x)[-1]
        try:
            xr = rotate_online(np.asarray(x, np.float32))
        except ValueError as e:
            raise ValueError(f"rotation='online_hadamard': linear {site!r} (layer {layer}) "
                             f"has input width {n}: {e}") from None
        key = (site, layer, id(w))
        if key not in self._rotated_weights or self._rotated_weights[key][0] is not w:
            wr = rotate_online(np.asarray(w, np.float32).T).T  # R^T w = (w^T R)^T
            self._rotated_weights[key] = (w, _in_order_of(w, wr))
        return xr, self._rotated_weights[key][1]

    @staticmethod
    def weight_spec(spec):
        """The spec a linear's (in, out) weight is quantized with: scale groups along its
        input (reduction) axis, so per-channel means one scale per output column."""
        if spec is not None and spec.stack == "ggml":
            return spec  # llama.cpp's blocks run along a row of the (out, in) weight
        if spec is not None and spec.granularity != "tensor" and spec.axis == -1 \
                and not isinstance(spec.block_size, tuple):
            return dataclasses.replace(spec, axis=0)
        return spec

    def _calibrate_linear(self, site, layer, x, w) -> None:
        """Run the config's weight algorithm on this linear, with its input x."""
        from ..quant.awq import awq
        from ..quant.gptq import gptq, hessian

        wspec = self.weight_spec(self.spec(site, layer))
        opts = self.config.options
        x2 = np.asarray(x).reshape(-1, np.shape(x)[-1])
        if self.config.weight_algorithm == "gptq":
            qt = gptq(w, hessian(x2), wspec, act_order=bool(opts.get("act_order", False)),
                      damp=float(opts.get("damp", 0.01)))
            s_in = None
        else:
            res = awq(w, x2, wspec, n_grid=int(opts.get("n_grid", 20)),
                      clip=bool(opts.get("clip", True)),
                      act_spec=self.spec(f"{site}.input", layer),
                      rng=self.draw(site, layer, "awq"))
            qt, s_in = res.quantized, res.scales
        wq = qt.dequantize().T if wspec.stack == "ggml" else qt.dequantize()  # (in, out)
        self.installed[(site, layer)] = (qt, s_in, _in_order_of(w, wq))
        if self.on_calibrated is not None:
            self.on_calibrated(site, layer)

    def _weight_with(self, site, layer, w, spec):
        if (site, layer) in self.installed:
            self.weight_specs[(site, layer)] = spec
            return self.installed[(site, layer)][2]
        key = (site, layer, id(w))
        self.weight_specs[(site, layer)] = spec
        if key not in self._weights:
            wt = w.T if spec.stack == "ggml" else w  # ggml: quantize the (out, in) rows
            wq = (self._traced(site, layer, wt, spec, "weight")
                  if self.tracing or self.trace_weights else fake_quantize(wt, spec, rng=self.draw(site, layer, "weight")))
            wq = wq.T if spec.stack == "ggml" else wq
            self._weights[key] = _in_order_of(w, wq)
        return self._weights[key]

    def instruction(self, site: str, layer: int | None):
        """The :class:`fpsim.mma.Instruction` that runs matmul ``site`` in ``layer``, or None
        (no instruction named, or a layer the config leaves in FP32)."""
        if self.config is None:
            return None
        inst = instruction_of(self.config.accumulator_for(site))
        if inst is None:
            return None
        first = {"attn.qk": "attn.q", "attn.pv": "attn.probs"}.get(site, site)
        return inst if self.spec(first, layer) is not None else None

    def mma_operand(self, inst, matmul: str, site: str, layer: int | None, x: np.ndarray,
                    role: str):
        """``x`` quantized at ``site`` for operand ``role`` ("A" or "B") of ``inst``: its
        element values (float64) and the scale of every element (float64, same shape)."""
        from .. import mma
        from ..quant import quantize_tensor

        spec = self.spec(site, layer)
        t = inst.a_type if role == "A" else inst.b_type
        if spec is None:
            raise ValueError(f"site {matmul!r}: a matrix-instruction accumulator needs its "
                             f"operand {site!r} quantized too, as the instruction takes {t} "
                             "operands")
        want = mma.TYPES[t][1]
        if want is not None and spec.format.name != want:
            raise ValueError(f"site {matmul!r}: the operand {site!r} has format "
                             f"{spec.format.name}, not the instruction's {t} ({want})")
        qt = quantize_tensor(x, spec, rng=self.draw(site, layer))
        return qt.element_values(), qt.element_scale()

    def mma_product(self, inst, site: str, va, sa, vb, sb) -> np.ndarray:
        """``(va * sa) @ (vb * sb)`` as a GPU kernel runs it: the instruction multiplies the
        element values va (M, K) and vb (K, N), chained along K; their scales sa, sb (the
        shapes of va, vb) multiply its float32 results.  With ``promote_every=N`` each span
        of N products is accumulated from zero on the instruction, then scaled and added to
        the total in float32 (CUDA cores), as DeepSeek-V3 and FlashAttention-3 do; scales
        must be constant along K within a span."""
        from .. import mma

        K = va.shape[1]
        span = self.config.options.get("promote_every") or max(K, 1)
        total = np.zeros((va.shape[0], vb.shape[1]), np.float32)
        for lo in range(0, K, span):
            hi = min(lo + span, K)
            a_s, b_s = sa[:, lo:hi], sb[lo:hi, :]
            if not (np.all(a_s == a_s[:, :1]) and np.all(b_s == b_s[:1, :])):
                raise ValueError(f"site {site!r}: the operands' scales change within a span of "
                                 f"{hi - lo} products along K; set options promote_every to "
                                 "their block size (scales apply when partial sums are promoted)")
            part = mma.matmul(va[:, lo:hi], vb[lo:hi, :], instruction=inst).astype(np.float32)
            scale = (a_s[:, :1].astype(np.float32) * b_s[:1, :].astype(np.float32))
            total = (total + part * scale).astype(np.float32)
        return total

    def _mma_linear(self, inst, site, layer, x, w, b=None):
        """``x @ w + b`` on a GPU matrix instruction, as an FP8 GEMM kernel runs it: the
        input (``site.input``) and weight quantized to codes and scales
        (``quantize_tensor``), multiplied by :meth:`mma_product`."""
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        wspec = self.weight_spec(self.spec(site, layer))
        key = (site, layer, id(w), "mma")
        self.weight_specs[(site, layer)] = wspec
        va, sa = self.mma_operand(inst, site, f"{site}.input", layer, x2, "A")
        if key not in self._weights:
            from .. import mma
            from ..quant import quantize_tensor

            want = mma.TYPES[inst.b_type][1]
            if want is not None and wspec.format.name != want:
                raise ValueError(f"site {site!r}: the weight format {wspec.format.name} is not "
                                 f"the instruction's {inst.b_type} ({want})")
            qw = self.installed[(site, layer)][0] if (site, layer) in self.installed else \
                quantize_tensor(w, wspec, rng=self.draw(site, layer, "weight"))
            self._weights[key] = (_compact(qw.element_values()), _compact(qw.element_scale()))
        vb, sb = self._weights[key]
        total = self.mma_product(inst, site, va, sa, vb, sb)
        y = total if b is None else (total + b).astype(np.float32)
        self._trace_output(site, layer, x2, w, b, y)
        return y.reshape(*lead, w.shape[1])

    def _trace_output(self, site, layer, x, w, b, y) -> None:
        """Record a whole linear's output error against float64 (tracing only)."""
        if not self.tracing:
            return
        ref = x.astype(np.float64) @ w.astype(np.float64)
        if b is not None:
            ref = ref + b
        st = self.trace.setdefault((f"{site}.output", layer), SiteStats())
        st.calls += 1
        st.elements += y.size
        st.signal += float(np.sum(ref**2))
        st.noise += float(np.sum((y - ref) ** 2))

    def _special_linear(self, mode, site, layer, x, w, b=None):
        from ..quant import outliers

        opts = self.config.options
        self.weight_specs[(site, layer)] = self.weight_spec(self.spec(site, layer))
        if mode == "llm_int8":
            y = outliers.llm_int8_matmul(x, w, threshold=opts.get("threshold", 6.0))
        elif mode == "smoothquant":
            y = outliers.smoothquant_matmul(x, w, alpha=opts.get("alpha", 0.5),
                                            rng=self.draw(site, layer, "smoothquant"))
        else:
            y = torch_dynamic_int8_linear(x, w, b)
        self._trace_output(site, layer, x, w, b, y)
        return np.asarray(y, dtype=np.float32)
