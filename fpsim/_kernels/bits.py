"""Bit casts between floats and integers of the same width, for the kernels.

Jitted, each is one LLVM ``bitcast``; with ``NUMBA_DISABLE_JIT=1`` (the no-JIT test
pass) a NumPy scalar view of the same bits.
"""

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

if numba.config.DISABLE_JIT:  # plain Python: numpy scalar views

    def f64_bits(x):
        """The bit pattern of float64 ``x`` as a signed int."""
        return int(np.float64(x).view(np.int64))

    def bits_f64(b):
        """The float64 whose bit pattern is the signed int ``b``."""
        return float(np.int64(b).view(np.float64))

    def f32_bits(x):
        """The bit pattern of float32 ``x`` as a signed 32-bit int."""
        return np.float32(x).view(np.int32)

    def bits_f32(b):
        """The float32 whose bit pattern is the 32-bit int ``b``."""
        return np.int32(b).view(np.float32)

else:

    def _bitcast(name, value, to, doc):
        """An intrinsic named ``name``: the bits of a ``value`` read as a ``to``."""

        def typer(typingctx, x):
            def codegen(context, builder, signature, args):
                return builder.bitcast(args[0], context.get_value_type(to))

            return to(value), codegen

        typer.__name__ = typer.__qualname__ = name
        typer.__doc__ = doc
        return intrinsic(typer)

    f64_bits = _bitcast("f64_bits", types.float64, types.int64,
                        "The bit pattern of float64 ``x`` as an int64 (an LLVM bitcast).")
    bits_f64 = _bitcast("bits_f64", types.int64, types.float64,
                        "The float64 whose bit pattern is the int64 ``b`` (an LLVM bitcast).")
    f32_bits = _bitcast("f32_bits", types.float32, types.int32,
                        "The bit pattern of float32 ``x`` as an int32 (an LLVM bitcast).")
    bits_f32 = _bitcast("bits_f32", types.int32, types.float32,
                        "The float32 whose bit pattern is the int32 ``b`` (an LLVM bitcast).")
