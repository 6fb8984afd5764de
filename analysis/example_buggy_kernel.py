"""Hypothesis finds the bug in a hand-written FP8 encoder (docs/strategies.md).

``my_encode_e4m3fn`` is what a user might write in plain NumPy to cast float32
to float8_e4m3fn codes.  It is right almost everywhere, but rounds ties away
from zero (``floor(a / step + 0.5)``) where the format rounds them to even.
Random floats almost never land on a tie; ``fpsim.strategies.inputs_for``
draws the ties on purpose, so Hypothesis finds the bug and shrinks it to the
smallest one.

Run: ``python analysis/example_buggy_kernel.py`` (prints the counterexample).
"""

import numpy as np
from hypothesis import find, given, settings

import fpsim
import fpsim.strategies as fst


def my_encode_e4m3fn(x):  # float32 [...] -> uint8 [...]
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.abs(x).astype(np.float64)
        e = np.clip(np.floor(np.log2(a)), -6, 8)  # subnormals share the exponent of 2**-6
        step = 2.0 ** (e - 3)  # grid spacing: 3 mantissa bits
        q = np.floor(a / step + 0.5) * step  # BUG: ties go away from zero, not to even
        eq = np.clip(np.floor(np.log2(q)), -6, 8)  # q may have moved up a binade
        mag = np.where(q < 2.0**-6, q * 2.0**9, (eq + 7) * 8 + (q / 2.0**eq - 1) * 8)
    mag = np.where((q > 448) | np.isnan(x), 0x7F, mag)  # overflow, Inf and NaN -> NaN
    return (mag.astype(np.uint8) | (np.signbit(x).astype(np.uint8) << 7)).astype(np.uint8)


@settings(max_examples=1000, deadline=None, database=None)
@given(fst.inputs_for("e4m3fn"))
def test_my_encoder_matches_fpsim(x):
    assert my_encode_e4m3fn(x) == fpsim.encode(x, "e4m3fn")


def counterexample():
    """The smallest input (as Hypothesis shrinks) where the encoder is wrong."""
    return find(
        fst.inputs_for("e4m3fn"),
        lambda x: my_encode_e4m3fn(x) != fpsim.encode(x, "e4m3fn"),
        settings=settings(max_examples=1000, deadline=None, database=None),
    )


if __name__ == "__main__":
    x = counterexample()
    mine, ref = int(my_encode_e4m3fn(x)), int(fpsim.encode(x, "e4m3fn"))
    print(f"counterexample: x = np.float32({float(x)!r})")
    print(f"my_encode_e4m3fn(x) = {mine:#04x} ({fpsim.decode(mine, 'e4m3fn')})")
    print(f"fpsim.encode(x)     = {ref:#04x} ({fpsim.decode(ref, 'e4m3fn')})")
