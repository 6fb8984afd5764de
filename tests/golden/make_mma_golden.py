"""Make tests/golden/mma.npz: MMA-Sim's bit-accurate matrix-unit outputs, the oracle for fpsim.mma.

Run BY HAND, never in CI, and never imported by fpsim (it needs torch and MMA-Sim)::

    # a checkout of microsoft/MMA-Sim at the pinned commit (no install needed):
    git clone https://github.com/microsoft/MMA-Sim /tmp/mmasim && git -C /tmp/mmasim checkout c785138
    MMASIM_DIR=/tmp/mmasim python tests/golden/make_mma_golden.py   # re-runs itself in the venv

The venv (``$MMA_GOLDEN_VENV``, default ``/tmp/mma-venv``) is built on first use with
``torch==2.13.0`` (CPU) and numpy; MMA-Sim is put on ``sys.path`` from ``$MMASIM_DIR``.

For every instruction MMA-Sim models (NVIDIA ``mma``, ``mma.block_scale``, ``wgmma``,
``tcgen05.mma``, ``tcgen05.mma.block_scale``; AMD ``mfma``; every qualifier it lists, and for
``wgmma``/``tcgen05`` every type combination at ``n=8``) it writes six cases of ``R x C`` output
elements (``R = C = 4``): ``random`` (Gaussian values cast to the input types), ``wide``
(uniformly random finite codes: the whole exponent range), ``cancel`` (large opposite
products plus small ones), ``overflow`` (codes near the largest finite value and C near the
output's max), ``subnormal`` (subnormal inputs and a tiny C) and ``special`` (NaN, Inf, signed
zeros where the types have them).  MMA-Sim computes every element of its ``m x n`` tile in
Python; the script shrinks ``inst.m``/``inst.n`` to ``R``/``C`` after construction (each output
element is computed independently of the others, which is how MMA-Sim's loops are written).

Stored per vector ``v{i}``: ``v{i}_a`` (R, k) and ``v{i}_b`` (k, C) float64 values (FP4
unpacked), ``v{i}_c`` (R, C) float64, ``v{i}_d`` (R, C) the output's raw bits (uint16 for
f16, uint32 for f32, uint64 for f64), for block-scaled ops ``v{i}_sa`` (R, k/block) and
``v{i}_sb`` (k/block, C) float64 scale values; ``index`` is JSON: one record per vector
(arch, op, qualifier, case).  ``skipped`` lists (arch, op, qualifier, case, error) where
MMA-Sim itself fails (see below), ``meta`` the versions.

Patches to MMA-Sim's known snags (each needed to run the listed instructions at all; none
changes a number MMA-Sim computes elsewhere):

* CDNA1/CDNA2 f16/bf16 ``mfma`` pass f16/bf16 tensors to ``pairwise_dot``, which asserts
  float32: the inputs are widened to float32 first (exact).
* ``e2m1`` operands at ``k=32`` (``mma`` on RTX Blackwell, ``tcgen05.mma`` and the
  ``mxf8f6f4`` block-scale kind) are declared ``torch.uint8`` and then rejected by
  ``extract_significand_exponent``: they are passed as float32 values instead, decoded the
  way MMA-Sim decodes FP4 in its own ``mxf4nvf4`` path (``unpack_fp4_tensor`` to float32).
* Block-scaled FP4 with an infinite C raises OverflowError inside MMA-Sim: such vectors are
  recorded in ``skipped`` (fpsim documents its own answer, tested separately).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "mma.npz"
VENV = pathlib.Path(os.environ.get("MMA_GOLDEN_VENV", "/tmp/mma-venv"))
TORCH_PIN = "torch==2.13.0"
MMASIM_COMMIT = "c785138"
R = C = 4
CASES = ("random", "wide", "cancel", "overflow", "subnormal", "special")


def ensure_venv_and_reexec():
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if subprocess.run([str(py), "-c", "import torch, numpy"], capture_output=True).returncode:
        pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check"]
        subprocess.run(pip + [TORCH_PIN, "numpy"], check=True)
    env = dict(os.environ, MMA_GOLDEN_IN_VENV="1")
    os.execve(str(py), [str(py), str(pathlib.Path(__file__).resolve())], env)


def main():  # noqa: C901  (one flat script)
    import numpy as np
    import torch

    src = os.environ.get("MMASIM_DIR")
    if not src or not (pathlib.Path(src) / "mmasim").is_dir():
        sys.exit("set MMASIM_DIR to a checkout of microsoft/MMA-Sim at commit " + MMASIM_COMMIT)
    sys.path.insert(0, src)
    import mmasim.simulator.amd as sim_amd
    import mmasim.simulator.arithmetic as arith
    import mmasim.simulator.nv_ptx as sim_nv
    from mmasim.isa.amd import arch_mfma_qualifiers
    from mmasim.isa.nv_ptx.nv_mma import arch_mma_block_scale_qualifiers, arch_mma_qualifiers

    # --- patch: CDNA1/2 pairwise_dot asserts float32 inputs (widen exactly)
    _pairwise = arith.pairwise_dot

    def pairwise_widened(a, b, flush_denormal=False):
        return _pairwise(a.float(), b.float(), flush_denormal)

    arith.pairwise_dot = pairwise_widened
    sim_amd.pairwise_dot = pairwise_widened

    # --- patch: e2m1 passed as float32 values next to an FP8 operand would reach
    # truncate_to_tf32 (taken for float32 A) with the FP8 operand, which it asserts against;
    # truncation leaves FP4 values unchanged, so only float32 operands are truncated
    _truncate = arith.truncate_to_tf32

    def truncate_float32_only(x):
        return _truncate(x) if x.dtype == torch.float32 else x

    sim_nv.truncate_to_tf32 = truncate_float32_only

    rng = np.random.default_rng(20261203)
    E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]

    # ---------------------------------------------------------------- value generators
    def finite_codes(dtype, n, which):
        """n values of a torch dtype, as float64 numpy, by the case's rule."""
        if dtype == "e2m1":
            mags = np.array(E2M1)
            if which == "overflow":
                v = rng.choice(mags[-3:], n)
            elif which == "subnormal":
                v = rng.choice(mags[:2], n)
            else:
                v = rng.choice(mags, n)
            return v * rng.choice([-1.0, 1.0], n)
        bits = {torch.float64: 64, torch.float32: 32, torch.float16: 16, torch.bfloat16: 16}.get(
            dtype, 8)
        itype = {64: torch.int64, 32: torch.int32, 16: torch.int16, 8: torch.uint8}[bits]
        nexp = {torch.float64: 11, torch.float32: 8, torch.float16: 5, torch.bfloat16: 8,
                torch.float8_e4m3fn: 4, torch.float8_e5m2: 5, torch.float8_e4m3fnuz: 4,
                torch.float8_e5m2fnuz: 5}[dtype]
        man = bits - 1 - nexp
        if which == "random":
            scale = {64: 1.0, 32: 1.0, 16: 1.0, 8: 1.0}[bits]
            x = torch.from_numpy(rng.standard_normal(n) * scale).to(dtype)
            return x.double().numpy()
        out = []
        while len(out) < n:
            if which == "wide":
                e = int(rng.integers(0, 2 ** nexp))
            elif which == "overflow":
                e = 2 ** nexp - 1 - int(rng.integers(0, 3))
            else:  # subnormal
                e = 0 if rng.random() < 0.7 else 1
            m = int(rng.integers(0, 2 ** man)) if man <= 62 else int(rng.integers(0, 2 ** 52))
            s = int(rng.integers(0, 2))
            code = (s << (bits - 1)) | (e << man) | m
            if bits == 64:
                val = np.array([code], dtype=np.uint64).view(np.float64)[0]
            else:
                code = code - (1 << bits) if (bits > 8 and code >= 1 << (bits - 1)) else code
                val = torch.tensor([code], dtype=itype).view(dtype).double().item()
            if np.isfinite(val):
                out.append(val)
        return np.array(out)

    def values(dtype, shape, which):
        n = int(np.prod(shape))
        if which in ("random", "wide", "overflow", "subnormal"):
            v = finite_codes(dtype, n, which)
        elif which == "cancel":
            v = finite_codes(dtype, n, "random")
        else:  # special
            v = finite_codes(dtype, n, "random")
            specials = [0.0, -0.0]
            if dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16,
                         torch.float8_e5m2):
                specials += [np.inf, -np.inf, np.nan]
            elif dtype in (torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz):
                specials += [np.nan]
            pick = rng.random(n) < 0.25
            v[pick] = rng.choice(specials, int(pick.sum()))
        return v.reshape(shape)

    def cancel_fix(a, b):
        # row i of A and column j of B: the first two products are +P and -P, large
        if a.shape[1] >= 2:
            a[:, 1] = -a[:, 0]
            b[1, :] = b[0, :]
        return a, b

    def to_torch(v, dtype):
        if dtype == "e2m1":
            return torch.from_numpy(v).float()
        return torch.from_numpy(np.ascontiguousarray(v)).to(dtype)

    def raw_bits(t):
        if t.dtype == torch.float16:
            return t.view(torch.int16).numpy().view(np.uint16)
        if t.dtype == torch.float32:
            return t.view(torch.int32).numpy().view(np.uint32)
        return t.view(torch.int64).numpy().view(np.uint64)

    def c_values(dtype, which):
        if which == "overflow":
            mx = torch.finfo(dtype).max
            return (rng.uniform(0.5, 1.0, (R, C)) * mx * rng.choice([-1, 1], (R, C)))
        if which == "subnormal":
            tiny = torch.finfo(dtype).tiny
            return rng.uniform(-2, 2, (R, C)) * tiny
        return values(dtype, (R, C), which)

    def scale_values(s_type, shape, which):
        if s_type == torch.float8_e8m0fnu:
            lo, hi = ((-127, 128) if which == "wide" else (110, 128) if which == "overflow"
                      else (-127, -110) if which == "subnormal" else (-8, 8))
            v = 2.0 ** rng.integers(lo, hi, shape).astype(float)
            if which == "special":
                v[rng.random(shape) < 0.1] = np.nan
            return v
        # ue4m3: non-negative e4m3fn values
        codes = rng.integers(0, 0x7F, shape) if which != "random" else rng.integers(0x30, 0x48, shape)
        if which == "subnormal":
            codes = rng.integers(0, 8, shape)
        v = torch.from_numpy(codes.astype(np.uint8)).view(torch.float8_e4m3fn).double().numpy()
        if which == "special":
            v[rng.random(shape) < 0.1] = np.nan
        return v

    def pack_fp4(v, axis):
        """Pack e2m1 values along axis (element 2i in the low nibble) into uint8."""
        code = {x: i for i, x in enumerate(E2M1)}
        c = np.vectorize(lambda x: code[abs(x)] | (8 if np.signbit(x) else 0))(v).astype(np.uint8)
        if axis == 1:
            return torch.from_numpy(c[:, 0::2] | (c[:, 1::2] << 4))
        return torch.from_numpy(c[0::2, :] | (c[1::2, :] << 4))

    # ---------------------------------------------------------------- the instruction list
    nv = []  # (arch, op, qualifier)
    for arch, qs in arch_mma_qualifiers.items():
        nv += [(arch, "mma", q) for q in qs]
    for arch, qs in arch_mma_block_scale_qualifiers.items():
        nv += [(arch, "mma.block_scale", q) for q in qs]
    for a in ("tf32",):
        nv.append(("Hopper", "wgmma", f"m64n8k8.f32.{a}.{a}"))
    nv += [("Hopper", "wgmma", "m64n8k16.f32.f16.f16"), ("Hopper", "wgmma", "m64n8k16.f16.f16.f16"),
           ("Hopper", "wgmma", "m64n8k16.f32.bf16.bf16")]
    for d in ("f32", "f16"):
        for a in ("e5m2", "e4m3"):
            for b in ("e5m2", "e4m3"):
                nv.append(("Hopper", "wgmma", f"m64n8k32.{d}.{a}.{b}"))
    nv.append(("Blackwell", "tcgen05.mma", "m64n8k8.f32.tf32.tf32"))
    for a in ("f16", "bf16"):
        for b in ("f16", "bf16"):
            nv.append(("Blackwell", "tcgen05.mma", f"m64n8k16.f32.{a}.{b}"))
    nv.append(("Blackwell", "tcgen05.mma", "m64n8k16.f16.f16.f16"))
    for d in ("f32", "f16"):
        for a in ("e5m2", "e4m3", "e2m1"):
            for b in ("e5m2", "e4m3", "e2m1"):
                nv.append(("Blackwell", "tcgen05.mma", f"m128n8k32.{d}.{a}.{b}"))
    for a in ("e5m2", "e4m3", "e2m1"):
        for b in ("e5m2", "e4m3", "e2m1"):
            nv.append(("Blackwell", "tcgen05.mma.block_scale", f"m128n8k32.block32.f32.{a}.{b}.ue8m0"))
    for bs, st in (("block32", "ue8m0"), ("block16", "ue8m0"), ("block16", "ue4m3")):
        nv.append(("Blackwell", "tcgen05.mma.block_scale", f"m128n8k64.{bs}.f32.e2m1.e2m1.{st}"))
    amd = [(arch, "mfma", q) for arch, qs in arch_mfma_qualifiers.items() for q in qs]

    classes = {"mma": sim_nv.mma, "mma.block_scale": sim_nv.mma_block_scale,
               "wgmma": sim_nv.wgmma, "tcgen05.mma": sim_nv.tcgen05mma,
               "tcgen05.mma.block_scale": sim_nv.tcgen05mma_block_scale, "mfma": sim_amd.mfma}

    def operand_types(op, q):
        """The names of A's and B's types in the qualifier (None for AMD)."""
        if op == "mfma":
            return None
        parts = q.split(".")
        return (parts[3], parts[4]) if "block_scale" in op else (parts[2], parts[3])

    records, arrays, skipped = [], {}, []
    for arch, op, q in nv + amd:
        inst = classes[op](arch, q)
        k = inst.k
        block = getattr(inst, "block_size", None)
        names = operand_types(op, q)
        a_t = "e2m1" if names and names[0] == "e2m1" else inst.a_type
        b_t = "e2m1" if names and names[1] == "e2m1" else inst.b_type
        packed = block is not None and k == 64
        # patch: e2m1 at k=32 is passed as float32 values
        if not packed:
            if a_t == "e2m1":
                inst.a_type = torch.float32
            if b_t == "e2m1":
                inst.b_type = torch.float32
        inst.m, inst.n = R, C
        for case in CASES:
            a = values(a_t, (R, k), case)
            b = values(b_t, (k, C), case)
            if case == "cancel":
                a, b = cancel_fix(a, b)
            c = c_values(inst.c_type, case)
            ct = torch.from_numpy(c).to(inst.c_type)
            c = ct.double().numpy().copy()
            args = []
            if packed:
                A, B = pack_fp4(a, 1), pack_fp4(b, 0)
            else:
                A, B = to_torch(a, a_t if a_t == "e2m1" else inst.a_type), to_torch(
                    b, b_t if b_t == "e2m1" else inst.b_type)
            if block is not None:
                sa = scale_values(inst.s_type, (R, k // block), case)
                sb = scale_values(inst.s_type, (k // block, C), case)
                SA = torch.from_numpy(sa).to(inst.s_type)
                SB = torch.from_numpy(sb).to(inst.s_type)
                sa, sb = SA.double().numpy(), SB.double().numpy()
                args = [SA, SB]
            a = A.double().numpy().copy() if not packed else a
            b = B.double().numpy().copy() if not packed else b
            try:
                D = inst(A, B, ct, *args)
            except Exception as e:  # MMA-Sim's own failure: recorded, not stored
                skipped.append([arch, op, q, case, f"{type(e).__name__}: {e}"])
                continue
            i = len(records)
            records.append([arch, op, q, case])
            arrays[f"v{i}_a"], arrays[f"v{i}_b"], arrays[f"v{i}_c"] = a, b, c
            arrays[f"v{i}_d"] = raw_bits(D)
            if block is not None:
                arrays[f"v{i}_sa"], arrays[f"v{i}_sb"] = sa, sb
        print(f"{arch:14s} {op:24s} {q}", flush=True)

    meta = {"torch": torch.__version__, "numpy": np.__version__,
            "mmasim_commit": MMASIM_COMMIT, "R": R, "C": C}
    np.savez_compressed(OUT, index=np.array(json.dumps(records)),
                        skipped=np.array(json.dumps(skipped)), meta=np.array(json.dumps(meta)),
                        **arrays)
    print(f"wrote {OUT}: {len(records)} vectors, {len(skipped)} skipped")


if __name__ == "__main__":
    if os.environ.get("MMA_GOLDEN_IN_VENV") != "1":
        ensure_venv_and_reexec()
    main()
