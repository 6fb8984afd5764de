"""32-bit unsigned arithmetic that stays 32 bits wide.

Numba types ``uint32 + uint32`` as uint64, so a loop over float32 bit patterns
runs in 64-bit lanes: four per AVX2 register instead of eight.  These
intrinsics take and return ``uint32`` and emit one LLVM i32 instruction each,
so the loop vectoriser packs eight elements per register.  Semantics are
those of C's ``uint32_t`` (wrap-around); shift amounts must be below 32.

Under ``NUMBA_DISABLE_JIT=1`` each falls back to its pure-Python twin
(:data:`PY_TWINS`), which the tests compare against the compiled ones.
"""

import numpy as np
from numba import types
from numba.core import config
from numba.extending import intrinsic

_MASK = 0xFFFFFFFF


def _check(*args):
    return all(a == types.uint32 for a in args)


def _binary(method):
    def factory(typingctx, a, b):
        if _check(a, b):
            def codegen(context, builder, signature, args):
                return getattr(builder, method)(args[0], args[1])
            return types.uint32(types.uint32, types.uint32), codegen
        return None
    return factory


def _gt(typingctx, a, b):
    """1 where a > b else 0."""
    if _check(a, b):
        def codegen(context, builder, signature, args):
            c = builder.icmp_unsigned(">", args[0], args[1])
            return builder.zext(c, args[0].type)
        return types.uint32(types.uint32, types.uint32), codegen
    return None


def _sgt(typingctx, a, b):
    """1 where a > b else 0, for a, b < 2**31 (a signed compare: one AVX2 instruction)."""
    if _check(a, b):
        def codegen(context, builder, signature, args):
            c = builder.icmp_signed(">", args[0], args[1])
            return builder.zext(c, args[0].type)
        return types.uint32(types.uint32, types.uint32), codegen
    return None


def _minmax(op):
    def factory(typingctx, a, b):
        if _check(a, b):
            def codegen(context, builder, signature, args):
                c = builder.icmp_unsigned(op, args[0], args[1])
                return builder.select(c, args[0], args[1])
            return types.uint32(types.uint32, types.uint32), codegen
        return None
    return factory


def _select(typingctx, c, a, b):
    """a where c != 0 else b."""
    if _check(c, a, b):
        def codegen(context, builder, signature, args):
            cond = builder.icmp_unsigned("!=", args[0], args[0].type(0))
            return builder.select(cond, args[1], args[2])
        return types.uint32(types.uint32, types.uint32, types.uint32), codegen
    return None


# pure-Python twins (uint32 in, uint32 out)
def _py(fn):
    return lambda *a: np.uint32(fn(*(int(v) for v in a)) & _MASK)


PY_TWINS = {
    "add": _py(lambda a, b: a + b),
    "sub": _py(lambda a, b: a - b),
    "band": _py(lambda a, b: a & b),
    "bor": _py(lambda a, b: a | b),
    "shl": _py(lambda a, b: a << b),
    "shr": _py(lambda a, b: a >> b),
    "gt": _py(lambda a, b: int(a > b)),
    "sgt": _py(lambda a, b: int(a > b)),  # defined for a, b < 2**31 only
    "umin": _py(min),
    "umax": _py(max),
    "select": _py(lambda c, a, b: a if c else b),
}

if config.DISABLE_JIT:
    add, sub, band, bor, shl, shr, gt, sgt, umin, umax, select = (
        PY_TWINS[k] for k in PY_TWINS)
else:
    add = intrinsic(_binary("add"))
    sub = intrinsic(_binary("sub"))
    band = intrinsic(_binary("and_"))
    bor = intrinsic(_binary("or_"))
    shl = intrinsic(_binary("shl"))
    shr = intrinsic(_binary("lshr"))
    gt = intrinsic(_gt)
    sgt = intrinsic(_sgt)
    umin = intrinsic(_minmax("<"))
    umax = intrinsic(_minmax(">"))
    select = intrinsic(_select)
