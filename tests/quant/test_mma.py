"""fpsim.mma: every instruction against MMA-Sim's own outputs, the kernels against the twin.

``tests/golden/mma.npz`` is written by ``tests/golden/make_mma_golden.py`` (MMA-Sim at commit
c785138 under torch 2.13.0): six cases per instruction (random, wide exponents,
cancellation, near overflow, subnormals, NaN/Inf).  Comparisons are bitwise; for the paths
whose NaN encoding MMA-Sim takes from the host CPU (FMA chains and AMD) a NaN matches a NaN.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fpsim
from fpsim import mma
from fpsim.reference import mma as ref

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden" / "mma.npz"
_Z = np.load(GOLDEN)
INDEX = json.loads(str(_Z["index"]))
SKIPPED = json.loads(str(_Z["skipped"]))
HOST_NAN = ("fma", "amd_pairwise", "amd_fused")
_BITS = {np.uint16: np.float16, np.uint32: np.float32, np.uint64: np.float64}


def _vector(i):
    g = {name: _Z[f"v{i}_{name}"] for name in ("a", "b", "c", "d")}
    if f"v{i}_sa" in _Z:
        g["sa"], g["sb"] = _Z[f"v{i}_sa"], _Z[f"v{i}_sb"]
    return g


def _same(got: np.ndarray, bits: np.ndarray, host_nan: bool) -> np.ndarray:
    want = bits.view(_BITS[bits.dtype.type])
    ok = got.view(bits.dtype) == bits
    if host_nan:
        ok |= np.isnan(got) & np.isnan(want)
    return ok


def _by_instruction():
    groups: dict = {}
    for i, (arch, op, q, case) in enumerate(INDEX):
        groups.setdefault((arch, op, q), []).append(i)
    return groups


GROUPS = _by_instruction()


@pytest.mark.parametrize("key", list(GROUPS), ids=[" ".join(k) for k in GROUPS])
def test_kernels_match_mmasim_bitwise(key):
    inst = mma.instruction(*key)
    for i in GROUPS[key]:
        g = _vector(i)
        kw = {"scale_a": g["sa"], "scale_b": g["sb"]} if "sa" in g else {}
        d = mma.matmul(g["a"], g["b"], instruction=inst, c=g["c"], **kw)
        ok = _same(d, g["d"], inst.family in HOST_NAN)
        assert ok.all(), (INDEX[i], np.argwhere(~ok)[0], d[~ok][0], g["d"][~ok][0])


@pytest.mark.parametrize("key", list(GROUPS)[::7], ids=[" ".join(k) for k in list(GROUPS)[::7]])
def test_full_tile_call_matches_mmasim(key):
    """inst(A, B, C) on the instruction's own (m, k) x (k, n) tile, golden rows embedded."""
    inst = mma.instruction(*key)
    i = GROUPS[key][0]
    g = _vector(i)
    r, c = g["c"].shape
    A = np.zeros((inst.m, inst.k)); A[:r] = g["a"]
    B = np.zeros((inst.k, inst.n)); B[:, :c] = g["b"]
    C = np.zeros((inst.m, inst.n)); C[:r, :c] = g["c"]
    kw = {}
    if "sa" in g:
        sa = np.ones((inst.m, inst.k // inst.block)); sa[:r] = g["sa"]
        sb = np.ones((inst.k // inst.block, inst.n)); sb[:, :c] = g["sb"]
        kw = {"scale_a": sa, "scale_b": sb}
    D = inst(A, B, C, **kw)
    assert D.shape == (inst.m, inst.n) and D.dtype == inst.d_dtype
    assert _same(D[:r, :c], g["d"], inst.family in HOST_NAN).all()


@pytest.mark.parametrize("key", list(GROUPS), ids=[" ".join(k) for k in GROUPS])
def test_reference_twin_matches_mmasim(key):
    inst = mma.instruction(*key)
    for i in GROUPS[key]:
        g = _vector(i)
        for r in range(g["c"].shape[0]):
            for c in range(g["c"].shape[1]):
                kw = {}
                if "sa" in g:
                    kw = {"scale_a": g["sa"][r], "scale_b": g["sb"][:, c]}
                v = ref.element(g["a"][r], g["b"][:, c], g["c"][r, c], **inst.params(), **kw)
                got = np.array([v]).astype(inst.d_dtype)
                if inst.family in ("nv_fused", "nv_block_fp4") and np.isnan(got[0]):
                    got.view(np.uint16 if got.dtype == np.float16 else np.uint32)[0] = (
                        0x7FFF if got.dtype == np.float16 else 0x7FFFFFFF)
                assert _same(got, g["d"][r:r + 1, c], inst.family in HOST_NAN).all(), (
                    INDEX[i], r, c, v)


def test_golden_covers_every_instruction_family():
    """Each (arch, op, types) of instructions() has golden vectors at some n (numerics do
    not depend on n); MMA-Sim failed only where the golden script documents it."""
    def types(op, q):
        return q.split(".", 1)[1] if op != "mfma" else q
    covered = {(a, o, types(o, q)) for a, o, q, _ in INDEX}
    missing = {(a, o, types(o, q)) for a, o, q in mma.instructions()} - covered
    assert missing == set()
    assert all("OverflowError" in s[4] and "k64" in s[2] for s in SKIPPED)


def test_instructions_parse_and_are_unique():
    keys = mma.instructions()
    assert len(keys) == len(set(keys))
    for key in keys[::13]:
        inst = mma.instruction(*key)
        assert (inst.arch, inst.op, inst.qualifier) == key
        assert inst.k % inst.step == 0


# ---------------------------------------------------------------------------- the published widths
@pytest.mark.parametrize("key, kept", [
    # MMA-Sim (arXiv 2511.10909): Hopper FP8 wgmma keeps 13 fractional bits (E8M13)
    (("Hopper", "wgmma", "m64n8k32.f32.e4m3.e4m3"), 13),
    # FP16 paths: 23 (Volta), 24 (Turing..Ada), 25 (Hopper, Blackwell)
    (("Volta", "mma", "m8n8k4.f32.f16.f16.f32"), 23),
    (("Ampere", "mma", "m16n8k16.f32.f16.f16.f32"), 24),
    (("Hopper", "mma", "m16n8k16.f32.f16.f16.f32"), 25),
    (("Blackwell", "tcgen05.mma", "m64n8k16.f32.f16.f16"), 25),
])
def test_kept_bits_of_the_fused_adder(key, kept):
    """(1 - 1) + 2**-j in one fused sum, the 1s aligning the adder at 2**0: the small
    product survives iff j <= kept fractional bits."""
    inst = mma.instruction(*key)
    a = np.zeros((1, inst.k)); b = np.zeros((inst.k, 1))
    a[0, 0] = b[0, 0] = 1.0
    c = np.full((1, 1), -1.0)
    got = []
    for j in (kept, kept + 1):
        a[0, 1], b[1, 0] = 2.0 ** -(j // 2), 2.0 ** -(j - j // 2)
        got.append(float(mma.matmul(a, b, instruction=inst, c=c)[0, 0]))
    assert got == [2.0 ** -kept, 0.0]


def test_blackwell_mxf4nvf4_keeps_35_bits():
    """Same measurement through block scales: group 1 scaled by 2**-j next to 1 - 1."""
    inst = mma.instruction("Blackwell", "tcgen05.mma.block_scale",
                           "m128n8k64.block16.f32.e2m1.e2m1.ue8m0")
    a = np.zeros((1, 64)); b = np.zeros((64, 1))
    a[0, 0] = b[0, 0] = 1.0      # group 0: 1
    a[0, 16] = b[16, 0] = 1.0    # group 1: 1 * 2**-j
    got = []
    for j in (35, 36):
        sa = np.ones((1, 4)); sa[0, 1] = 2.0 ** -j
        d = mma.matmul(a, b, instruction=inst, c=np.full((1, 1), -1.0), scale_a=sa,
                       scale_b=np.ones((4, 1)))
        got.append(float(d[0, 0]))
    assert got == [2.0 ** -35, 0.0]


def test_ada_fp8_splits_k_into_halves():
    """Ada's m16n8k32 FP8 mma is two chained 16-deep dot-adds (MMA-Sim's split-k): 256 -
    256 in the first half no longer sets the alignment of the second half's 2**-6."""
    inst = mma.instruction("Ada Lovelace", "mma", "m16n8k32.f32.e4m3.e4m3.f32")
    a = np.zeros((1, 32)); b = np.zeros((32, 1))
    a[0, 0], a[0, 1], a[0, 16] = 256.0, -256.0, 2.0 ** -6
    b[[0, 1, 16], 0] = 1.0
    assert float(mma.matmul(a, b, instruction=inst)[0, 0]) == 2.0 ** -6
    hopper = mma.instruction("Hopper", "wgmma", "m64n8k32.f32.e4m3.e4m3")
    assert float(mma.matmul(a, b, instruction=hopper)[0, 0]) == 0.0  # one 32-deep sum


# ---------------------------------------------------------------------------- matmul
@settings(max_examples=20, deadline=None)
@given(st.integers(1, 5), st.integers(1, 4), st.integers(1, 6), st.integers(0, 2 ** 32 - 1))
def test_matmul_is_the_instruction_chained_along_k(m, n, kt, seed):
    rng = np.random.default_rng(seed)
    inst = mma.instruction("Hopper", "wgmma", "m64n8k32.f32.e4m3.e4m3")
    a = fpsim.quantize(rng.standard_normal((m, 32 * kt)) * 4, "e4m3fn").astype(np.float64)
    b = fpsim.quantize(rng.standard_normal((32 * kt, n)), "e4m3fn").astype(np.float64)
    c = rng.standard_normal((m, n)).astype(np.float32)
    d = mma.matmul(a, b, instruction=inst, c=c)
    run = c.astype(np.float32)
    for lo in range(0, 32 * kt, 32):
        A = np.zeros((64, 32)); A[:m] = a[:, lo:lo + 32]
        B = np.zeros((32, 8)); B[:, :n] = b[lo:lo + 32]
        C = np.zeros((64, 8), np.float32); C[:m, :n] = run
        run = inst(A, B, C)[:m, :n]
    assert np.array_equal(d.view(np.uint32), run.view(np.uint32))


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2 ** 32 - 1))
def test_promotion_adds_float32_partials(m, parts, seed):
    rng = np.random.default_rng(seed)
    inst = mma.instruction("Hopper", "wgmma", "m64n8k32.f32.e4m3.e4m3")
    K = 128 * parts
    a = fpsim.quantize(rng.standard_normal((m, K)), "e4m3fn").astype(np.float64)
    b = fpsim.quantize(rng.standard_normal((K, 3)), "e4m3fn").astype(np.float64)
    d = mma.matmul(a, b, instruction=inst, promote_every=128)
    total = np.zeros((m, 3), np.float32)
    for lo in range(0, K, 128):
        total = total + mma.matmul(a[:, lo:lo + 128], b[lo:lo + 128], instruction=inst)
    assert d.dtype == np.float32
    assert np.array_equal(d, total)


def test_matmul_pads_k_with_zeros():
    inst = mma.instruction("Ampere", "mma", "m16n8k16.f32.f16.f16.f32")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 20)).astype(np.float16)
    b = rng.standard_normal((20, 2)).astype(np.float16)
    padded = mma.matmul(np.pad(a, ((0, 0), (0, 12))), np.pad(b, ((0, 12), (0, 0))),
                        instruction=inst)
    assert np.array_equal(mma.matmul(a, b, instruction=inst), padded)


# ---------------------------------------------------------------------------- twin on random data
@pytest.mark.parametrize("key", [
    ("Hopper", "wgmma", "m64n8k32.f16.e5m2.e4m3"),
    ("Ampere", "mma", "m16n8k8.f32.tf32.tf32.f32"),
    ("RTX Blackwell", "mma.block_scale", "m16n8k32.block32.f32.e2m1.e4m3.f32.ue8m0"),
    ("RTX Blackwell", "mma.block_scale", "m16n8k64.block16.f32.e2m1.e2m1.f32.ue4m3"),
    ("CDNA2", "mfma", "f32_16x16x8bf16"),
    ("CDNA3", "mfma", "f32_16x16x32_fp8_bf8"),
    ("CDNA3", "mfma", "f32_16x16x8_xf32"),
    ("CDNA3", "mfma", "f32_32x32x2_f32"),
])
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), spread=st.integers(0, 40))
def test_kernels_match_twin_on_random_values(key, seed, spread):
    inst = mma.instruction(*key)
    rng = np.random.default_rng(seed)
    k = inst.k * 2

    def vals(t, shape):
        x = rng.standard_normal(shape) * 2.0 ** rng.integers(-spread, spread + 1, shape)
        return mma.matmul.__globals__["_representable"](x, t, "x", True)

    a, b = vals(inst.a_type, (2, k)), vals(inst.b_type, (k, 2))
    c = vals(inst.c_type, (2, 2))
    kw = {}
    if inst.block:
        kw = {"scale_a": 2.0 ** rng.integers(-5, 5, (2, k // inst.block)),
              "scale_b": 2.0 ** rng.integers(-5, 5, (k // inst.block, 2))}
    d = mma.matmul(a, b, instruction=inst, c=c, **kw)
    for r in range(2):
        for s in range(2):
            rk = {}
            if kw:
                rk = {"scale_a": kw["scale_a"][r], "scale_b": kw["scale_b"][:, s]}
            v = ref.element(a[r], b[:, s], c[r, s], **inst.params(), **rk)
            want = np.array([v]).astype(inst.d_dtype)[0]
            assert (np.isnan(want) and np.isnan(d[r, s])) or want.tobytes() == d[r, s].tobytes()


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, exc, words", [
    (("Hopper", "wgmma", "m64n8k32.f32.e4m3.e4m2"), ValueError, ["qualifier=", "did you mean"]),
    (("Hoper", "wgmma", "m64n8k32.f32.e4m3.e4m3"), ValueError, ["arch='Hoper'", "Hopper"]),
    (("Hopper", "gemm", "m64n8k32.f32.e4m3.e4m3"), ValueError, ["op='gemm'", "wgmma"]),
    (("Hopper", "wgmma", 32), TypeError, ["qualifier must be a str"]),
])
def test_instruction_rejects_unknown_names(args, exc, words):
    with pytest.raises(exc) as e:
        mma.instruction(*args)
    for w in words:
        assert w in str(e.value)


def test_call_rejects_bad_operands():
    inst = mma.instruction("Hopper", "wgmma", "m64n8k32.f32.e4m3.e4m3")
    A, B, C = np.zeros((64, 32)), np.zeros((32, 8)), np.zeros((64, 8))
    with pytest.raises(ValueError, match=r"A has shape \(64, 31\).*\(64, 32\)"):
        inst(A[:, :31], B, C)
    bad = A.copy(); bad[3, 4] = 0.3
    with pytest.raises(ValueError, match=r"A\[3, 4\] = 0.3 is not a e4m3 value"):
        inst(bad, B, C)
    d = inst(bad, B, C, round_inputs=True)  # rounded to 0.3125 first
    assert d.dtype == np.float32
    with pytest.raises(TypeError, match="A must hold real numbers"):
        inst(A.astype(bool), B, C)
    with pytest.raises(ValueError, match="takes no block scales"):
        inst(A, B, C, scale_a=np.ones((64, 1)))
    blk = mma.instruction("Blackwell", "tcgen05.mma.block_scale",
                          "m128n8k32.block32.f32.e4m3.e4m3.ue8m0")
    with pytest.raises(ValueError, match="block-scaled: pass scale_a="):
        blk(np.zeros((128, 32)), B, np.zeros((128, 8)))
    with pytest.raises(ValueError, match=r"scale_a\[0, 0\] = 3.0 is not a ue8m0 value"):
        blk(np.zeros((128, 32)), B, np.zeros((128, 8)), scale_a=np.full((128, 1), 3.0),
            scale_b=np.ones((1, 8)))
    with pytest.raises(ValueError, match="promote_every=100 must be a positive multiple"):
        mma.matmul(A, B, instruction=inst, promote_every=100)
    with pytest.raises(TypeError, match="instruction must be an mma.Instruction"):
        mma.matmul(A, B, instruction="Hopper")


def test_empty_and_infinite_c_in_block_fp4():
    """Documented choice: an infinite C in mxf4nvf4 gives C (MMA-Sim raises there)."""
    inst = mma.instruction("Blackwell", "tcgen05.mma.block_scale",
                           "m128n8k64.block32.f32.e2m1.e2m1.ue8m0")
    a = np.ones((1, 64)); b = np.ones((64, 1)) * 6.0
    d = mma.matmul(a, b, instruction=inst, c=np.full((1, 1), -np.inf),
                   scale_a=np.ones((1, 2)), scale_b=np.ones((2, 1)))
    assert d[0, 0] == -np.inf
    e = mma.matmul(np.zeros((0, 64)), b, instruction=inst, scale_a=np.ones((0, 2)),
                   scale_b=np.ones((2, 1)))
    assert e.shape == (0, 1)


def test_parallel_kernel_equals_serial(monkeypatch):
    from fpsim._kernels import _util

    inst = mma.instruction("Hopper", "wgmma", "m64n8k32.f32.e5m2.e4m3")
    rng = np.random.default_rng(3)
    a = fpsim.quantize(rng.standard_normal((40, 96)) * 8, "e5m2").astype(np.float64)
    b = fpsim.quantize(rng.standard_normal((96, 5)), "e4m3fn").astype(np.float64)
    a[3, 7] = np.inf
    serial = mma.matmul(a, b, instruction=inst)
    monkeypatch.setattr(_util, "PARALLEL_THRESHOLD", 1)
    parallel = mma.matmul(a, b, instruction=inst)
    assert np.array_equal(serial.view(np.uint32), parallel.view(np.uint32))
    assert np.isinf(serial[3]).all() or np.isnan(serial[3]).any()
