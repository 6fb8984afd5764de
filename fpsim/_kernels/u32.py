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


def _binary(emit):
    """An intrinsic ``uint32 f(uint32 a, uint32 b)`` whose body ``emit(builder, a, b)`` builds."""
    def factory(typingctx, a, b):
        if _check(a, b):
            def codegen(context, builder, signature, args):
                return emit(builder, args[0], args[1])
            return types.uint32(types.uint32, types.uint32), codegen
        return None
    return factory


def _method(name):
    return lambda builder, a, b: getattr(builder, name)(a, b)


def _compare(icmp, op):
    """1 where ``a op b`` else 0 (``icmp``: ``"icmp_unsigned"`` or ``"icmp_signed"``)."""
    return lambda builder, a, b: builder.zext(getattr(builder, icmp)(op, a, b), a.type)


def _pick(op):
    """a where ``a op b`` (unsigned) else b: min for ``<``, max for ``>``."""
    return lambda builder, a, b: builder.select(builder.icmp_unsigned(op, a, b), a, b)


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
    add = intrinsic(_binary(_method("add")))
    sub = intrinsic(_binary(_method("sub")))
    band = intrinsic(_binary(_method("and_")))
    bor = intrinsic(_binary(_method("or_")))
    shl = intrinsic(_binary(_method("shl")))
    shr = intrinsic(_binary(_method("lshr")))
    gt = intrinsic(_binary(_compare("icmp_unsigned", ">")))
    # signed: one AVX2 instruction, where an unsigned compare takes three (a, b < 2**31 only)
    sgt = intrinsic(_binary(_compare("icmp_signed", ">")))
    umin = intrinsic(_binary(_pick("<")))
    umax = intrinsic(_binary(_pick(">")))
    select = intrinsic(_select)
