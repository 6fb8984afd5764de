"""Make tests/golden/torchao_blocks.npz: torchao's own MX and NVFP4 quantizers, the oracle
for fpsim's ``*_torchao`` recipes.

Run BY HAND, never in CI, and never imported by fpsim (it needs torch and torchao)::

    python -m venv /tmp/mma-venv && /tmp/mma-venv/bin/pip install torch==2.13.0 numpy
    /tmp/mma-venv/bin/pip install --no-deps torchao==0.18.0
    /tmp/mma-venv/bin/python tests/golden/make_torchao_golden.py

It calls torchao 0.18.0's reference code on the CPU, in eager mode:

* ``torchao.prototype.mx_formats.mx_tensor.to_mx`` for every element type (E4M3, E5M2,
  FP6 E2M3 / E3M2, FP4 E2M1) and every ``ScaleCalculationMode`` (FLOOR, CEIL, EVEN, RCEIL),
  blocks of 32 along the last axis, then ``to_dtype(..., torch.float32)`` to dequantize;
* ``torchao.prototype.mx_formats.nvfp4_tensor.nvfp4_quantize`` (blocks of 16, E4M3 scales)
  with the per-tensor scale ``per_tensor_amax_to_scale(amax)`` and without one (single
  level), and ``NVFP4Tensor.dequantize(torch.float32)``.

Inputs (float32, shape (16, 128)): ``gauss`` N(0, 1); ``laplace``; ``student_t3``;
``outliers`` (Gaussian with four columns times 1000); ``zero_blocks`` (Gaussian, every third
block of 32 zero); ``tiny`` (rows scaled by 2**-100 .. 2**-145: float32 subnormal block
maxima); ``wide`` (log-uniform magnitudes 2**-40 .. 2**40, random signs); ``edges`` (block
maxima at and one ulp around powers of two and the element maxima times powers of two, where
floor, ceil and rceil differ).

Stored per case ``{dist}/{kind}``: ``scale`` (uint8: E8M0 or E4M3 bits), ``codes`` (uint8:
element bits, FP4/FP6 unpacked), ``deq`` (float32), and for NVFP4 two-level ``tensor_scale``
(float32); ``x/{dist}`` the inputs; ``meta`` the versions (JSON).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import torch
import torchao
from torchao.prototype.mx_formats.constants import DTYPE_FP6_E2M3, DTYPE_FP6_E3M2
from torchao.prototype.mx_formats.kernels import unpack_uint4
from torchao.prototype.mx_formats.mx_tensor import ScaleCalculationMode, to_dtype, to_mx
from torchao.prototype.mx_formats.nvfp4_tensor import (
    NVFP4Tensor,
    nvfp4_quantize,
    per_tensor_amax_to_scale,
)

OUT = pathlib.Path(__file__).resolve().parent / "torchao_blocks.npz"
SHAPE = (16, 128)
ELEMENTS = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2, "e2m3": DTYPE_FP6_E2M3,
            "e3m2": DTYPE_FP6_E3M2, "e2m1": torch.float4_e2m1fn_x2}
MODES = {"floor": ScaleCalculationMode.FLOOR, "ceil": ScaleCalculationMode.CEIL,
         "even": ScaleCalculationMode.EVEN, "rceil": ScaleCalculationMode.RCEIL}
ELEM_MAX = {"e4m3": 448.0, "e5m2": 57344.0, "e2m3": 7.5, "e3m2": 28.0, "e2m1": 6.0}


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261204)
    g = rng.standard_normal(SHAPE)
    out = {"gauss": g, "laplace": rng.laplace(size=SHAPE),
           "student_t3": rng.standard_t(3, size=SHAPE)}
    o = rng.standard_normal(SHAPE)
    o[:, [3, 40, 77, 100]] *= 1000.0
    out["outliers"] = o
    z = rng.standard_normal(SHAPE)
    for b in range(0, SHAPE[1] // 32):
        if b % 3 == 0:
            z[:, 32 * b:32 * b + 32] = 0.0
    z[0, :] = 0.0
    out["zero_blocks"] = z
    t = rng.standard_normal(SHAPE) * 2.0 ** -np.linspace(100, 145, SHAPE[0])[:, None]
    out["tiny"] = t
    out["wide"] = (rng.choice([-1.0, 1.0], SHAPE)
                   * 2.0 ** rng.uniform(-40, 40, SHAPE))
    e = rng.standard_normal(SHAPE) * 0.1
    anchors = [1.0, 448.0, 57344.0, 7.5, 28.0, 6.0, 2.0 ** -126, 2.0 ** 100]
    nb = SHAPE[1] // 16
    for r in range(SHAPE[0]):
        for b in range(nb):
            a = np.float32(anchors[(r + b) % len(anchors)] * 2.0 ** ((r * 7 + b * 3) % 17 - 8))
            step = (r + b) % 3 - 1  # one float32 ulp below, at, or above
            a = np.nextafter(a, np.float32(np.inf if step > 0 else -np.inf)) if step else a
            e[r, 16 * b + (r % 16)] = a * (1 if (r + b) % 2 else -1)
    out["edges"] = e
    return {k: v.astype(np.float32) for k, v in out.items()}


def elem_codes(data_lp, name) -> np.ndarray:
    if name == "e2m1":
        return unpack_uint4(data_lp.view(torch.uint8)).numpy().astype(np.uint8)
    if name in ("e2m3", "e3m2"):
        return data_lp.view(torch.uint8).numpy().astype(np.uint8)
    return data_lp.view(torch.uint8).numpy()


def main():
    store: dict[str, np.ndarray] = {}
    for dist, x in inputs().items():
        store[f"x/{dist}"] = x
        xt = torch.from_numpy(x.copy())
        for en, dt in ELEMENTS.items():
            for mn, mode in MODES.items():
                scale, data_lp = to_mx(xt, dt, 32, scaling_mode=mode)
                deq = to_dtype(data_lp, scale, dt, 32, torch.float32)
                key = f"{dist}/mx_{en}_{mn}"
                store[f"{key}/scale"] = scale.view(torch.uint8).numpy().reshape(SHAPE[0], -1)
                store[f"{key}/codes"] = elem_codes(data_lp, en).reshape(SHAPE)
                store[f"{key}/deq"] = deq.numpy().reshape(SHAPE)
        for two_level in (False, True):
            pts = per_tensor_amax_to_scale(torch.max(torch.abs(xt))) if two_level else None
            scales, data_lp = nvfp4_quantize(xt, 16, pts)
            t = NVFP4Tensor(data_lp, scales, 16, torch.float32, pts)
            deq = t.dequantize(torch.float32)
            key = f"{dist}/nvfp4_{'2level' if two_level else '1level'}"
            store[f"{key}/scale"] = scales.view(torch.uint8).numpy().reshape(SHAPE[0], -1)
            store[f"{key}/codes"] = unpack_uint4(data_lp).numpy().astype(np.uint8).reshape(SHAPE)
            store[f"{key}/deq"] = deq.numpy().reshape(SHAPE)
            if two_level:
                store[f"{key}/tensor_scale"] = np.float32(pts.item())
    store["meta"] = np.array(json.dumps({"torch": torch.__version__,
                                         "torchao": torchao.__version__,
                                         "numpy": np.__version__}))
    np.savez_compressed(OUT, **store)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(store)} arrays)")


if __name__ == "__main__":
    main()
