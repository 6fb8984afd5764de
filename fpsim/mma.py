"""``from fpsim import mma``: GPU matrix units bit for bit (the code lives in :mod:`fpsim.quant.mma`)."""

from .quant.mma import OPS, TYPES, Instruction, instruction, instructions, matmul

__all__ = ["Instruction", "instruction", "instructions", "matmul", "TYPES", "OPS"]
