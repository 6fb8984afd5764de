"""Make tests/golden/te_nvfp4.npz: Transformer Engine's NVFP4 reference quantizer, the oracle
for fpsim's ``nvfp4_te*`` and ``nvfp4_4over6*`` recipes.

Run BY HAND, never in CI, and never imported by fpsim (it needs torch)::

    python -m venv /tmp/mma-venv && /tmp/mma-venv/bin/pip install torch==2.13.0 numpy
    git clone https://github.com/NVIDIA/TransformerEngine /tmp/te
    git -C /tmp/te checkout d0067d0da6cb01811b8072a7d304f0e00344ce2b
    TE_DIR=/tmp/te /tmp/mma-venv/bin/python tests/golden/make_te_golden.py

TE's pure-PyTorch reference, ``transformer_engine/pytorch/custom_recipes/reference_nvfp4.py``
(``NVFP4QuantizerRef``, which TE's own tests use as the oracle of its CUDA kernels), needs no
GPU build: the script loads that file and ``reference_utils.py`` from ``$TE_DIR`` with small
stand-ins for the two TE modules they import for typing and GEMMs (``Quantizer`` and
``QuantizedTensorStorage`` base classes, ``gemm``), which play no part in quantizing.
Dequantized values follow TE's CUDA dequantization kernel
(``common/cast/nvfp4/dequantize_nvfp4.cuh``): ``fp4 * (float(scale) * amax * (1 / (6 * E4M3_MAX)))``
in float32, left to right.

Cases, each on every input below (float32, shape (32, 64)):

* ``1d``: 1x16 blocks, one global amax (the default NVFP4 recipe);
* ``1d_row``: ``row_scaled_nvfp4=True`` (one amax per row);
* ``2d``: 16x16 tiles (TE's weight recipe);
* ``rht``: the columnwise path with the 16-point random Hadamard transform (TE's fixed sign
  vector): the quantized RHT of ``x.T`` (stored in the transposed layout);
* ``4over6_{mae,mse}_{448,256}`` and ``4over6_2d_...``: 4-over-6 (exact error path).

Inputs: ``gauss``, ``laplace``, ``student_t3``, ``outliers`` (columns times 1000),
``zero_blocks``, ``small`` (rows scaled by 2**-20 .. 2**-60), and ``grid`` (multiples of
2**-6 below 2**10 in magnitude: the RHT's float32 sums are exact there, whatever order
torch's matmul adds in; the ``rht`` case is stored for ``grid`` only, see the test).

Stored per ``{dist}/{case}``: ``codes`` (uint8, FP4 codes unpacked), ``scale`` (uint8, E4M3
bits), ``amax`` (float32, one or one per row), ``deq`` (float32); ``x/{dist}``; ``meta``.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import types

import numpy as np
import torch

OUT = pathlib.Path(__file__).resolve().parent / "te_nvfp4.npz"
SHAPE = (32, 64)
TE_COMMIT = "d0067d0da6cb01811b8072a7d304f0e00344ce2b"


def load_reference():
    te = pathlib.Path(os.environ["TE_DIR"])
    root = te / "transformer_engine" / "pytorch" / "custom_recipes"

    class Quantizer:  # stand-ins: typing and usage flags only
        def __init__(self, *, rowwise=True, columnwise=True):
            self.rowwise_usage, self.columnwise_usage = rowwise, columnwise

    class QuantizedTensorStorage:
        pass

    pkgs = ["transformer_engine", "transformer_engine.pytorch",
            "transformer_engine.pytorch.custom_recipes"]
    for name in pkgs:
        sys.modules[name] = types.ModuleType(name)
    qt = types.ModuleType("transformer_engine.pytorch.quantized_tensor")
    qt.Quantizer, qt.QuantizedTensorStorage = Quantizer, QuantizedTensorStorage
    sys.modules[qt.__name__] = qt
    gemm = types.ModuleType("transformer_engine.pytorch.custom_recipes.gemm")
    gemm.GEMMType = types.SimpleNamespace(FPROP="fprop")  # a default argument of qgemm only
    sys.modules[gemm.__name__] = gemm
    sys.modules["transformer_engine.pytorch.custom_recipes"].gemm = gemm
    for name in ("reference_utils", "reference_nvfp4"):
        mod = types.ModuleType(f"transformer_engine.pytorch.custom_recipes.{name}")
        sys.modules[mod.__name__] = mod
        exec(compile((root / f"{name}.py").read_text(), str(root / f"{name}.py"), "exec"),
             mod.__dict__)
        setattr(sys.modules["transformer_engine.pytorch.custom_recipes"], name, mod)
    return sys.modules["transformer_engine.pytorch.custom_recipes.reference_nvfp4"]


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261204)
    out = {"gauss": rng.standard_normal(SHAPE), "laplace": rng.laplace(size=SHAPE),
           "student_t3": rng.standard_t(3, size=SHAPE)}
    o = rng.standard_normal(SHAPE)
    o[:, [5, 21, 50]] *= 1000.0
    out["outliers"] = o
    z = rng.standard_normal(SHAPE)
    z[:, 16:32] = 0.0
    z[16:32, 48:64] = 0.0
    out["zero_blocks"] = z
    out["small"] = rng.standard_normal(SHAPE) * 2.0 ** -np.linspace(20, 60, SHAPE[0])[:, None]
    out["grid"] = np.round(rng.standard_normal(SHAPE) * 64 * 16) / 64
    return {k: v.astype(np.float32) for k, v in out.items()}


def unpack(q: torch.Tensor) -> np.ndarray:
    q = q.numpy()
    out = np.empty((q.shape[0], q.shape[1] * 2), np.uint8)
    out[:, ::2], out[:, 1::2] = q & 0xF, q >> 4
    return out


FP4 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float32)


def dequant(codes, scale_bits, amax, tile, e4m3_max, row_scaled):
    """TE's CUDA dequantization: fp4 * (float(scale) * amax * (1 / (6 * E4M3_MAX)))."""
    s = torch.from_numpy(scale_bits.copy()).view(torch.float8_e4m3fn).to(torch.float32)
    s = s.repeat_interleave(16, dim=1)
    if tile == (16, 16) and s.shape[0] * 16 == codes.shape[0]:
        s = s.repeat_interleave(16, dim=0)
    s = s[:codes.shape[0], :codes.shape[1]]
    a = torch.from_numpy(np.asarray(amax, np.float32).reshape(-1, 1) if row_scaled
                         else np.asarray(amax, np.float32).reshape(1, 1))
    factor_inv = torch.tensor(1.0 / (6.0 * e4m3_max), dtype=torch.float32)
    final = (s * a) * factor_inv
    return (torch.from_numpy(FP4[codes]) * final).numpy()


def main():
    ref = load_reference()
    E2M1 = sys.modules["transformer_engine.pytorch.custom_recipes.reference_utils"].Fp4Formats.E2M1
    cases = {"1d": dict(), "1d_row": dict(row_scaled_nvfp4=True),
             "2d": dict(quant_tile_shape=(16, 16))}
    for err in ("MAE", "MSE"):
        for mx in (448, 256):
            kw = dict(nvfp4_use_4over6=True, nvfp4_4over6_err_mode=err, nvfp4_e4m3_max=mx)
            cases[f"4over6_{err.lower()}_{mx}"] = kw
            cases[f"4over6_2d_{err.lower()}_{mx}"] = dict(kw, quant_tile_shape=(16, 16))
    store = {}
    for dist, x in inputs().items():
        store[f"x/{dist}"] = x
        xt = torch.from_numpy(x.copy())
        for name, kw in cases.items():
            q = ref.NVFP4QuantizerRef(dtype=E2M1, rowwise=True, columnwise=False, **kw)
            qx, sx, _, _, amax, _ = q._quantize(xt)
            codes = unpack(qx)
            scale = sx.view(torch.uint8).numpy() if sx.dtype != torch.uint8 else sx.numpy()
            tile = kw.get("quant_tile_shape", (1, 16))
            key = f"{dist}/{name}"
            store[f"{key}/codes"] = codes
            store[f"{key}/scale"] = scale.copy()
            store[f"{key}/amax"] = amax.numpy().astype(np.float32)
            store[f"{key}/deq"] = dequant(codes, store[f"{key}/scale"], amax.numpy(), tile,
                                          kw.get("nvfp4_e4m3_max", 448),
                                          kw.get("row_scaled_nvfp4", False))
        if dist == "grid":
            q = ref.NVFP4QuantizerRef(dtype=E2M1, rowwise=False, columnwise=True, with_rht=True)
            _, _, qx_t, sx_t, _, amax_t = q._quantize(xt)
            codes = unpack(qx_t)
            key = f"{dist}/rht"
            store[f"{key}/codes"] = codes
            store[f"{key}/scale"] = sx_t.view(torch.uint8).numpy().copy()
            store[f"{key}/amax"] = amax_t.numpy().astype(np.float32)
            store[f"{key}/deq"] = dequant(codes, store[f"{key}/scale"], amax_t.numpy(), (1, 16),
                                          448, False)
    store["meta"] = np.array(json.dumps({"torch": torch.__version__, "te_commit": TE_COMMIT,
                                         "numpy": np.__version__}))
    np.savez_compressed(OUT, **store)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(store)} arrays)")


if __name__ == "__main__":
    main()
