"""GPU matrix units, bit for bit: ``D = A @ B + C`` as a tensor core or matrix core computes it.

The instructions and their numerics are those of MMA-Sim (microsoft/MMA-Sim, arXiv
2511.10909), the bit-accurate reference of record, made fast (Numba kernels vectorised over
outputs) and usable on any matrix shape.  Names are spelled as MMA-Sim and PTX spell them::

    >>> import numpy as np
    >>> from fpsim import mma
    >>> inst = mma.instruction("Hopper", "wgmma", "m64n8k32.f32.e4m3.e4m3")
    >>> inst.n_frac, inst.output          # 13 kept bits, truncated into an E8M13 accumulator
    (13, 'f32_e8m13')
    >>> A = np.zeros((64, 32)); B = np.zeros((32, 8)); C = np.zeros((64, 8), np.float32)
    >>> A[0, :2] = [448.0, 2.0 ** -9]; B[:2, 0] = 1.0
    >>> float(inst(A, B, C)[0, 0])        # 2**-9 is 17 binades below 448: truncated away
    448.0
    >>> float(mma.matmul(A, B, instruction=mma.instruction("Hopper", "mma",
    ...       "m16n8k16.f32.f16.f16.f32"))[0, 0]) == 448.0 + 2.0 ** -9
    True

Operands are *values* (any float dtype) that must be representable in the instruction's
input types (FP4 unpacked, one value per element); a value that is not raises ValueError
unless ``round_inputs=True`` (round to nearest-even into the type).  tf32/xf32 operands are
float32 values whose low 13 significand bits the unit ignores (truncated, as the hardware
reads them).  Block scales are values too (powers of two for ``ue8m0``).

What each family computes (``docs/numerics.md``, "Matrix units", states it in full):

``nv_fused``
    NVIDIA ``mma``/``wgmma``/``tcgen05.mma``: all products of a k-slice and C aligned to the
    largest exponent, each truncated to ``n_frac`` fractional bits, summed exactly, then
    normalised: float32 truncated (RZ) to 23 bits, or to 13 (``f32_e8m13``: Hopper
    ``wgmma`` and Ada ``mma`` with FP8 inputs), or float16 rounded to nearest-even.
    ``chunks=2``: Ampere/Ada split the k of some shapes into two chained halves.
``nv_block_fp4``
    Blackwell ``mxf4nvf4``: FP4 products summed exactly in groups of 16, each group times its
    two block scales, aligned and truncated to 35 bits with C, truncated into float32.
``fma``
    f64 (and AMD f32): one correctly rounded FMA per product, in order.
``amd_pairwise`` / ``amd_fused``
    AMD CDNA1/2 f16/bf16 float32 FMA trees (CDNA2 flushes subnormals); CDNA3 fused
    dot-adds over groups, truncated to 24 bits and rounded down to 31/24, then to float32.

NaN and infinities follow MMA-Sim: any NaN, inf - inf or 0 * inf gives NaN (NVIDIA's
canonical ``0x7FFFFFFF``/``0x7FFF``), an infinite operand gives that infinity, a finite sum
beyond the output range gives an infinity; zero results are +0.  Choices where MMA-Sim has
none (documented in ``docs/numerics.md``): an infinite C in Blackwell ``mxf4nvf4`` gives C;
``e2m1`` operands of k=32 kinds are decomposed as float32 (as MMA-Sim decodes FP4); for AMD
and FMA paths, whose NaN encoding MMA-Sim takes from the host CPU, fpsim returns numpy's
quiet NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._kernels import mma as _k
from .._kernels import use_parallel

#: type name -> (numpy dtype of values, fpsim format name or None, fraction bits, emin)
TYPES = {
    "f64": (np.float64, None, 52, -1022),
    "f32": (np.float32, None, 23, -126),
    "tf32": (np.float32, None, 23, -126),
    "xf32": (np.float32, None, 23, -126),
    "f16": (np.float16, None, 10, -14),
    "bf16": (np.float32, "bfloat16", 7, -126),
    "e4m3": (np.float32, "float8_e4m3fn", 3, -6),
    "e5m2": (np.float32, "float8_e5m2", 2, -14),
    "e2m1": (np.float32, "float4_e2m1fn", 23, -126),  # decomposed as float32, like MMA-Sim
    "fp8": (np.float32, "float8_e4m3fnuz", 3, -7),
    "bf8": (np.float32, "float8_e5m2fnuz", 2, -15),
    "ue8m0": (np.float32, "float8_e8m0fnu", 0, -127),
    "ue4m3": (np.float32, "float8_e4m3fn", 3, -6),
}

# ---------------------------------------------------------------------------- the ISA lists
_VOLTA = ["m8n8k4.f32.f16.f16.f32", "m8n8k4.f32.f16.f16.f16", "m8n8k4.f16.f16.f16.f16"]
_TURING = ["m16n8k8.f32.f16.f16.f32", "m16n8k8.f16.f16.f16.f16"]
_AMPERE = ["m8n8k4.f64.f64.f64.f64", "m16n8k8.f32.tf32.tf32.f32", "m16n8k4.f32.tf32.tf32.f32",
           "m16n8k16.f32.f16.f16.f32", "m16n8k16.f16.f16.f16.f16",
           "m16n8k16.f32.bf16.bf16.f32", "m16n8k8.f32.bf16.bf16.f32"]
_FP8 = [f"{a}.{b}" for a in ("e5m2", "e4m3") for b in ("e5m2", "e4m3")]
_ADA = ([f"m16n8k{k}.f32.{ab}.f32" for k in (32, 16) for ab in _FP8]
        + [f"m16n8k{k}.f16.{ab}.f16" for k in (32, 16) for ab in _FP8])
_HOPPER = ["m16n8k16.f64.f64.f64.f64", "m16n8k8.f64.f64.f64.f64", "m16n8k4.f64.f64.f64.f64"]
_F8F6F4 = [f"{a}.{b}" for a in ("e5m2", "e4m3", "e2m1") for b in ("e5m2", "e4m3", "e2m1")]
_RTX = ([f"m16n8k32.f32.{ab}.f32" for ab in _F8F6F4]
        + [f"m16n8k32.f16.{ab}.f16" for ab in _F8F6F4])
_RTX_BLOCK = ([f"m16n8k32.block32.f32.{ab}.f32.ue8m0" for ab in _F8F6F4]
              + ["m16n8k64.block32.f32.e2m1.e2m1.f32.ue8m0",
                 "m16n8k64.block16.f32.e2m1.e2m1.f32.ue8m0",
                 "m16n8k64.block32.f32.e2m1.e2m1.f32.ue4m3",
                 "m16n8k64.block16.f32.e2m1.e2m1.f32.ue4m3"])
MMA = {
    "Volta": _VOLTA, "Turing": _TURING + _VOLTA, "Ampere": _AMPERE + _TURING,
    "Ada Lovelace": _ADA + _AMPERE + _TURING, "Hopper": _HOPPER + _AMPERE + _TURING,
    "Blackwell": _AMPERE + _TURING, "RTX Blackwell": _RTX + _ADA + _AMPERE + _TURING,
}
MMA_BLOCK_SCALE = {"RTX Blackwell": _RTX_BLOCK}
#: bits kept by the NVIDIA ``mma`` fused adder, per architecture (MMA-Sim)
MMA_N_FRAC = {"Volta": 23, "Turing": 24, "Ampere": 24, "Ada Lovelace": 24, "Hopper": 25,
              "Blackwell": 25, "RTX Blackwell": 25}
_NS = range(8, 257, 8)
_WGMMA_TYPES = (["f32.tf32.tf32"] + ["f32.f16.f16", "f16.f16.f16", "f32.bf16.bf16"]
                + [f"{d}.{ab}" for d in ("f32", "f16") for ab in _FP8])
_TC05_TYPES = (["f32.tf32.tf32"] + [f"f32.{a}.{b}" for a in ("f16", "bf16")
                                    for b in ("f16", "bf16")] + ["f16.f16.f16"]
               + [f"{d}.{ab}" for d in ("f32", "f16") for ab in _F8F6F4])
_TC05_BLOCK_TYPES = ([f"m128n{{n}}k32.block32.f32.{ab}.ue8m0" for ab in _F8F6F4]
                     + [f"m128n{{n}}k64.{bs}.f32.e2m1.e2m1.{s}" for bs, s in
                        (("block32", "ue8m0"), ("block16", "ue8m0"), ("block16", "ue4m3"))])
_CDNA1 = ["f32_32x32x2f32", "f32_32x32x1f32", "f32_16x16x4f32", "f32_16x16x1f32", "f32_4x4x1f32",
          "f32_32x32x8f16", "f32_32x32x4f16", "f32_16x16x16f16", "f32_16x16x4f16", "f32_4x4x4f16",
          "f32_32x32x4bf16", "f32_32x32x2bf16", "f32_16x16x8bf16", "f32_16x16x2bf16",
          "f32_4x4x2bf16"]
_CDNA2 = ["f64_16x16x4f64", "f64_4x4x4f64", "f32_32x32x8bf16_1k", "f32_32x32x4bf16_1k",
          "f32_16x16x16bf16_1k", "f32_16x16x4bf16_1k", "f32_4x4x4bf16_1k"]
_CDNA3 = (["f64_16x16x4_f64", "f64_4x4x4_4b_f64", "f32_32x32x1_2b_f32", "f32_16x16x1_4b_f32",
           "f32_4x4x1_16b_f32", "f32_32x32x2_f32", "f32_16x16x4_f32", "f32_16x16x8_xf32",
           "f32_32x32x4_xf32"]
          + [f"f32_{s}_{t}" for t in ("f16", "bf16")
             for s in ("32x32x4_2b", "16x16x4_4b", "4x4x4_16b", "32x32x8", "16x16x16")]
          + [f"f32_{s}_{a}_{b}" for s in ("16x16x32", "32x32x16")
             for a in ("bf8", "fp8") for b in ("bf8", "fp8")])
MFMA = {"CDNA1": _CDNA1, "CDNA2": _CDNA2 + _CDNA1, "CDNA3": _CDNA3}

OPS = ("mma", "mma.block_scale", "wgmma", "tcgen05.mma", "tcgen05.mma.block_scale", "mfma")


def instructions() -> list[tuple[str, str, str]]:
    """Every supported ``(arch, op, qualifier)``, in MMA-Sim's order.

    >>> ("Hopper", "wgmma", "m64n256k32.f32.e4m3.e4m3") in instructions()
    True
    """
    out = [(arch, "mma", q) for arch, qs in MMA.items() for q in qs]
    out += [(arch, "mma.block_scale", q) for arch, qs in MMA_BLOCK_SCALE.items() for q in qs]
    out += [("Hopper", "wgmma", f"m64n{n}k{_wgmma_k(t)}.{t}") for t in _WGMMA_TYPES for n in _NS]
    out += [("Blackwell", "tcgen05.mma", f"m{m}n{n}k{_tc05_k(t)}.{t}")
            for t in _TC05_TYPES for m in (64, 128) for n in _NS]
    out += [("Blackwell", "tcgen05.mma.block_scale", q.format(n=n))
            for q in _TC05_BLOCK_TYPES for n in _NS]
    out += [(arch, "mfma", q) for arch, qs in MFMA.items() for q in qs]
    return list(dict.fromkeys(out))  # MMA-Sim's lists repeat a few (RTX Blackwell FP8)


def _wgmma_k(types: str) -> int:
    a = types.split(".")[1]
    return 8 if a == "tf32" else 16 if a in ("f16", "bf16") else 32


def _tc05_k(types: str) -> int:
    return _wgmma_k(types)


def _mnk(shape: str) -> tuple[int, int, int]:
    m, rest = shape[1:].split("n")
    n, k = rest.split("k")
    return int(m), int(n), int(k)


@dataclass(frozen=True)
class Instruction:
    """One matrix instruction and the parameters of its arithmetic (see the module doc).

    Build it with :func:`instruction`; call it on one tile, ``D = inst(A, B, C)`` with A
    ``(m, k)``, B ``(k, n)``, C ``(m, n)`` (``scale_a=`` ``(m, k // block)`` and ``scale_b=``
    ``(k // block, n)`` for block-scaled ops); D has the d type's numpy dtype (float32,
    float16 or float64).  :func:`matmul` runs it on any shape.
    """

    arch: str
    op: str
    qualifier: str
    m: int
    n: int
    k: int
    a_type: str
    b_type: str
    c_type: str
    d_type: str
    family: str
    n_frac: int = 0
    output: str = "f32"
    chunks: int = 1
    group: int = 1
    flush_subnormals: bool = False
    truncate_tf32: bool = False
    fp8: bool = False
    scale_type: str | None = None
    block: int | None = None

    @property
    def d_dtype(self) -> np.dtype:
        """The numpy dtype of D."""
        return np.dtype(TYPES[self.d_type][0])

    @property
    def step(self) -> int:
        """Products per fused dot-add (or per AMD group): the slice chained along K."""
        if self.family in ("amd_pairwise", "amd_fused"):
            return self.group
        if self.family == "fma":
            return 1
        return self.k // self.chunks

    def params(self) -> dict:
        """The algorithm's keywords for :func:`fpsim.reference.mma.element`."""
        return dict(family=self.family, a_type=self.a_type, b_type=self.b_type,
                    c_type=self.c_type, d_type=self.d_type, n_frac=self.n_frac,
                    output=self.output, chunks=self.chunks, group=self.group,
                    flush_subnormals=self.flush_subnormals,
                    truncate_tf32=self.truncate_tf32, fp8=self.fp8,
                    scale_type=self.scale_type or "ue8m0", block=self.block or self.k,
                    depth=self.k)

    def __call__(self, A, B, C, *, scale_a=None, scale_b=None, round_inputs=False):
        A = _operand(A, "A", (self.m, self.k))
        B = _operand(B, "B", (self.k, self.n))
        C = _operand(C, "C", (self.m, self.n))
        return _compute(self, A, B, C, scale_a, scale_b, round_inputs)

    def __repr__(self):
        return f"mma.instruction({self.arch!r}, {self.op!r}, {self.qualifier!r})"


def _nv(arch, op, q) -> Instruction:
    parts = q.split(".")
    m, n, k = _mnk(parts[0])
    if op in ("mma.block_scale", "tcgen05.mma.block_scale"):
        block = int(parts[1][len("block"):])
        d, a, b = parts[2], parts[3], parts[4]
        s = parts[-1]
        base = dict(arch=arch, op=op, qualifier=q, m=m, n=n, k=k, a_type=a, b_type=b,
                    c_type=d, d_type=d, scale_type=s, block=block)
        if k == 64:
            return Instruction(**base, family="nv_block_fp4", n_frac=35, output="f32")
        return Instruction(**base, family="nv_fused", n_frac=25, output="f32")
    if op == "mma":
        d, a, b, c = parts[1:5]
    else:
        d, a, b = parts[1:4]
        c = d
    base = dict(arch=arch, op=op, qualifier=q, m=m, n=n, k=k, a_type=a, b_type=b, c_type=c,
                d_type=d, truncate_tf32=a == "tf32")
    if a == "f64":
        return Instruction(**base, family="fma")
    fp8 = a in ("e4m3", "e5m2")
    output = "f32" if d == "f32" else "f16"
    n_frac, chunks = 25, 1
    if op == "mma":
        n_frac = MMA_N_FRAC[arch]
        if arch == "Ada Lovelace" and fp8:
            n_frac = 13
            output = "f32_e8m13" if d == "f32" else output
        if arch in ("Ampere", "Ada Lovelace") and (
                (k == 8 and a == "tf32") or (k == 16 and a in ("f16", "bf16"))
                or (k == 32 and fp8)):
            chunks = 2
    elif op == "wgmma" and fp8:
        n_frac = 13
        output = "f32_e8m13" if d == "f32" else output
    return Instruction(**base, family="nv_fused", n_frac=n_frac, output=output, chunks=chunks)


def _amd(arch, q) -> Instruction:
    parts = q.split("_")
    if len(parts) == 2:  # CDNA1 spelling: f32_32x32x8f16
        d, st = parts
        t = "bf16" if st.endswith("bf16") else st[-3:]
        shape = st[: -len(t)]
        a = b = t
    elif len(parts) == 3 and parts[-1] == "1k":  # CDNA2: f32_32x32x8bf16_1k
        d, st, _ = parts
        a = b = "bf16"
        shape = st[:-4]
    elif len(parts) == 3:  # CDNA3: f32_32x32x8_f16
        d, shape, a = parts
        b = a
    elif parts[-1] in ("fp8", "bf8"):  # CDNA3 fp8: f32_16x16x32_fp8_bf8
        d, shape, a, b = parts
    else:  # CDNA3 blocks: f32_32x32x4_2b_f16
        d, shape, _, a = parts
        b = a
    if q.endswith("xf32"):
        a = b = "xf32"
    m, n, k = (int(x) for x in shape.split("x"))
    base = dict(arch=arch, op="mfma", qualifier=q, m=m, n=n, k=k, a_type=a, b_type=b,
                c_type=d, d_type=d)
    if a in ("f64", "f32"):
        return Instruction(**base, family="fma")
    if a == "xf32":
        return Instruction(**base, family="amd_fused", group=4, truncate_tf32=True)
    if a in ("f16", "bf16"):
        if arch == "CDNA3":
            return Instruction(**base, family="amd_fused", group=min(8, k))
        group = 4 if a == "f16" or q.endswith("_1k") else 2
        return Instruction(**base, family="amd_pairwise", group=group,
                           flush_subnormals=arch == "CDNA2")
    return Instruction(**base, family="amd_fused", group=16, fp8=True)


_TABLE: dict | None = None


def _table() -> dict:
    global _TABLE
    if _TABLE is None:
        _TABLE = {key: None for key in instructions()}
    return _TABLE


def instruction(arch: str, op: str, qualifier: str) -> Instruction:
    """The instruction ``op`` with ``qualifier`` on architecture ``arch``.

    Parameters
    ----------
    arch : str
        ``"Volta"``, ``"Turing"``, ``"Ampere"``, ``"Ada Lovelace"``, ``"Hopper"``,
        ``"Blackwell"``, ``"RTX Blackwell"``, ``"CDNA1"``, ``"CDNA2"`` or ``"CDNA3"``.
    op : str
        ``"mma"``, ``"mma.block_scale"``, ``"wgmma"``, ``"tcgen05.mma"``,
        ``"tcgen05.mma.block_scale"`` or ``"mfma"``.
    qualifier : str
        Shape and types as PTX (``"m16n8k32.f32.e4m3.e4m3.f32"``: shape, d, a, b, c) or the
        AMD mnemonic (``"f32_32x32x8_f16"``) spells them; :func:`instructions` lists all.

    Examples
    --------
    >>> instruction("Ada Lovelace", "mma", "m16n8k32.f32.e4m3.e4m3.f32").chunks
    2
    """
    for name, value in (("arch", arch), ("op", op), ("qualifier", qualifier)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    table = _table()
    key = (arch, op, qualifier)
    if key not in table:
        archs = sorted({a for a, o, _ in table if o == op})
        if op not in OPS:
            raise ValueError(f"op={op!r} is not a matrix instruction; allowed: {', '.join(OPS)}")
        if arch not in archs:
            raise ValueError(f"arch={arch!r} has no {op!r}; architectures with it: "
                             f"{', '.join(archs)}")
        some = [q for a, o, q in table if a == arch and o == op]
        import difflib

        near = difflib.get_close_matches(qualifier, some, n=3)
        raise ValueError(f"qualifier={qualifier!r} is not a {arch} {op} instruction"
                         + (f"; did you mean {', '.join(map(repr, near))}?" if near else "")
                         + " (mma.instructions() lists all)")
    if table[key] is None:
        table[key] = _amd(arch, qualifier) if op == "mfma" else _nv(arch, op, qualifier)
    return table[key]


# ---------------------------------------------------------------------------- computing
def _operand(x, name, shape=None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise TypeError(f"{name} must hold real numbers (a float array), got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}; this instruction needs {shape}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    return arr


def _representable(x: np.ndarray, t: str, name: str, round_inputs: bool) -> np.ndarray:
    """x as values of type t: checked (ValueError naming the first offender) or rounded."""
    dtype, fmt, _, _ = TYPES[t]
    if t == "f64":
        return x
    if fmt is None:  # a numpy type
        with np.errstate(over="ignore"):
            y = x.astype(dtype).astype(np.float64)
    else:
        from ..codec import quantize

        y = quantize(x, fmt).astype(np.float64)
    if t == "ue4m3":
        y = np.abs(y) if round_inputs else y
    if not round_inputs:
        bad = ~((y == x) | (np.isnan(x) & np.isnan(y)))
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name}{list(idx)} = {float(x[idx])!r} is not a {t} value ({int(bad.sum())} such "
                f"element(s)); pass values of the instruction's input type, or "
                "round_inputs=True to round them to nearest-even")
    return y


def _tf32(x: np.ndarray) -> np.ndarray:
    b = x.astype(np.float32).view(np.uint32) & np.uint32(0xFFFFE000)
    return b.view(np.float32).astype(np.float64)


def _split(x: np.ndarray, t: str):
    _, _, frac, emin = TYPES[t]
    flat = np.ascontiguousarray(x).reshape(-1)
    sig = np.empty(flat.size, np.int64)
    exp = np.empty(flat.size, np.int32)
    _k.split(flat, frac, emin, sig, exp)
    return sig.reshape(x.shape), exp.reshape(x.shape)


def _scales(inst, s, name, shape, round_inputs):
    if s is None:
        raise ValueError(f"{inst!r} is block-scaled: pass {name}= of shape {shape}")
    s = _operand(s, name, shape)
    s = _representable(s, inst.scale_type, name, round_inputs)
    return np.abs(s) if inst.scale_type == "ue4m3" else s


def _compute(inst: Instruction, A, B, C, scale_a, scale_b, round_inputs, *, step=None):
    """D for operands already shaped: A (M, K), B (K, N), C (M, N) float64 arrays."""
    M, K = A.shape
    N = B.shape[1]
    A = _representable(A, inst.a_type, "A", round_inputs)
    B = _representable(B, inst.b_type, "B", round_inputs)
    C = _representable(C, inst.c_type, "C", round_inputs)
    if inst.block is None and (scale_a is not None or scale_b is not None):
        raise ValueError(f"{inst!r} takes no block scales (scale_a/scale_b must be None)")
    if inst.truncate_tf32:
        A, B = _tf32(A), _tf32(B)
    C = C.astype(inst.d_dtype).astype(np.float64) if inst.family != "amd_pairwise" else C
    out = np.empty((M, N), np.float64)
    b_t = np.ascontiguousarray(B.T) if inst.family != "nv_fused" else None  # (N, K) layout
    fam = inst.family
    if fam == "fma":
        if inst.d_type == "f64":
            _k.fma_chain64(A, b_t, C, out)
        else:
            f = np.empty((M, N), np.float32)
            _k.fma_chain32(A.astype(np.float32), b_t.astype(np.float32), C.astype(np.float32), f)
            out = f.astype(np.float64)
    elif fam == "amd_pairwise":
        a32, b32, c32 = A.astype(np.float32), b_t.astype(np.float32), C.astype(np.float32)
        if inst.flush_subnormals:
            for arr, t in ((a32, inst.a_type), (b32, inst.b_type), (c32, "f32")):
                arr[np.abs(arr) < 2.0 ** TYPES[t][3]] = 0.0
        f = np.empty((M, N), np.float32)
        _k.amd_pairwise(a32, b32, c32, inst.group, inst.flush_subnormals, f)
        out = f.astype(np.float64)
    elif fam == "amd_fused":
        ma, ea = _split(A, inst.a_type)
        mb, eb = _split(b_t, inst.b_type)
        fab = TYPES[inst.a_type][2] + TYPES[inst.b_type][2]
        _k.amd_fused(A, b_t, ma, ea, mb, eb, fab, C, inst.group, inst.fp8, out)
    elif fam == "nv_block_fp4":
        nb = K // inst.block
        sa = _scales(inst, scale_a, "scale_a", (M, nb), round_inputs)
        sb_t = np.ascontiguousarray(_scales(inst, scale_b, "scale_b", (nb, N), round_inputs).T)
        msa, esa = _split(np.nan_to_num(sa), inst.scale_type)
        msb, esb = _split(np.nan_to_num(sb_t), inst.scale_type)
        qa = np.rint(A * 2).astype(np.int64)
        qb = np.rint(b_t * 2).astype(np.int64)
        _k.nv_block_fp4(qa, qb, C, sa, sb_t, msa, esa, msb, esb, TYPES[inst.scale_type][2],
                        inst.block, inst.k, inst.n_frac, out)
    else:  # nv_fused
        step = inst.step if step is None else step
        if inst.block is not None:
            nb = K // inst.block
            ssa = _scales(inst, scale_a, "scale_a", (M, nb), round_inputs)
            ssb = np.ascontiguousarray(_scales(inst, scale_b, "scale_b", (nb, N), round_inputs))
            esa = _split(np.nan_to_num(ssa, nan=1.0), inst.scale_type)[1].astype(np.float64)
            esb = _split(np.nan_to_num(ssb, nan=1.0), inst.scale_type)[1].astype(np.float64)
            block = inst.block
        else:
            ssa, ssb = np.ones((M, 1)), np.ones((1, N))
            esa, esb = np.zeros((M, 1)), np.zeros((1, N))
            block = K
        ea = _split(A, inst.a_type)[1].astype(np.float64)
        eb = _split(B, inst.b_type)[1].astype(np.float64)
        ns = K // step
        blk = np.arange(ns) * step // block  # the scale block of each K slice
        bad_a = ~np.isfinite(A).reshape(M, ns, step).all(axis=2) | ~np.isfinite(ssa[:, blk])
        bad_b = ~np.isfinite(B).reshape(ns, step, N).all(axis=1) | ~np.isfinite(ssb[blk, :])
        _, _, c_frac, c_emin = TYPES[inst.d_type]
        out_kind = {"f32": _k.OUT_F32, "f32_e8m13": _k.OUT_E8M13, "f16": _k.OUT_F16}[inst.output]
        tiles = -(-M // _k.ROWS) * -(-N // _k.COLS)
        kern = (_k.nv_fused_parallel if use_parallel(M * N * K) and tiles > 1
                else _k.nv_fused_serial)
        kern(A, np.ascontiguousarray(B), ea, eb, C, c_emin, ssa, ssb, esa, esb, bad_a, bad_b,
             step, block, inst.n_frac, out_kind, out)
    with np.errstate(over="ignore", invalid="ignore"):
        d = out.astype(inst.d_dtype)
    if inst.family in ("nv_fused", "nv_block_fp4"):
        nan = np.isnan(d)
        if nan.any():
            bits = d.view(np.uint16 if d.dtype == np.float16 else np.uint32)
            bits[nan] = 0x7FFF if d.dtype == np.float16 else 0x7FFFFFFF
    return d


def matmul(a, b, *, instruction: Instruction, c=None, scale_a=None, scale_b=None,
           promote_every: int | None = None, round_inputs: bool = False) -> np.ndarray:
    """``a @ b (+ c)`` of any shape on a matrix instruction, as a GEMM kernel runs it.

    Every output element is the instruction's chain along K: the first ``k`` products
    with C, the next ``k`` with that result, and so on (MMA-Sim's arithmetic, per element;
    the M and N tiling does not change any value).  K that is not a multiple of the
    instruction's ``k`` is padded with zeros, as a kernel's out-of-bounds loads are.

    Parameters
    ----------
    a, b : array_like
        ``(M, K)`` and ``(K, N)`` values of the instruction's input types.
    instruction : Instruction
        From :func:`instruction`.
    c : array_like, optional
        ``(M, N)`` accumulator input (zeros by default).
    scale_a, scale_b : array_like, optional
        Block scales ``(M, K // block)`` and ``(K // block, N)`` for block-scaled ops.
    promote_every : int, optional
        Promote to float32 every this many products (a multiple of ``k``): each span of K
        is accumulated on the instruction from zero and added to a float32 total with
        round-to-nearest, as DeepSeek-V3 and FlashAttention-3 do.  Returns float32.
    round_inputs : bool
        Round values that are not of the input types (nearest-even) instead of raising.

    Examples
    --------
    >>> import numpy as np
    >>> inst = instruction("Hopper", "wgmma", "m64n8k32.f32.e4m3.e4m3")
    >>> a = np.ones((2, 4096)); b = np.full((4096, 3), 0.5)
    >>> float(matmul(a, b, instruction=inst)[0, 0])
    2048.0
    """
    if not isinstance(instruction, Instruction):
        raise TypeError("instruction must be an mma.Instruction (from mma.instruction(...)), "
                        f"got {type(instruction).__name__}")
    a = _operand(a, "a")
    b = _operand(b, "b")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"a {a.shape} and b {b.shape}: inner dimensions differ")
    M, K = a.shape
    N = b.shape[1]
    c = np.zeros((M, N)) if c is None else _operand(c, "c", (M, N))
    k = instruction.k
    pad = (-K) % k
    if pad:
        a = np.pad(a, ((0, 0), (0, pad)))
        b = np.pad(b, ((0, pad), (0, 0)))
        if scale_a is not None:
            raise ValueError(f"K={K} must be a multiple of k={k} for block-scaled matmul")
    if promote_every is None:
        return _compute(instruction, a, b, c, scale_a, scale_b, round_inputs)
    if isinstance(promote_every, bool) or not isinstance(promote_every, (int, np.integer)):
        raise TypeError(f"promote_every must be an int, got {type(promote_every).__name__}")
    if promote_every <= 0 or promote_every % k:
        raise ValueError(f"promote_every={promote_every} must be a positive multiple of the "
                         f"instruction's k={k}")
    Kp = a.shape[1]
    total = _representable(c, instruction.c_type, "c", round_inputs).astype(np.float32)
    zeros = np.zeros((M, N))
    for lo in range(0, Kp, promote_every):
        hi = min(lo + promote_every, Kp)
        sa = None if scale_a is None else np.asarray(scale_a)[:, lo // instruction.block:
                                                            hi // instruction.block]
        sb = None if scale_b is None else np.asarray(scale_b)[lo // instruction.block:
                                                            hi // instruction.block]
        part = _compute(instruction, a[:, lo:hi], b[lo:hi], zeros, sa, sb, round_inputs)
        total = (total + part.astype(np.float32)).astype(np.float32)
    return total


__all__ = ["Instruction", "instruction", "instructions", "matmul", "TYPES", "OPS"]
