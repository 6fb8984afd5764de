"""Rounding modes (IEEE 754 names), and the validation of ``saturate=`` and ``rng=``."""

from __future__ import annotations

import difflib
import numbers

import numpy as np

__all__ = ["ROUNDINGS", "as_generator", "check_saturate", "resolve_seed", "rounding_mode"]

#: Rounding modes, in the order of their kernel numbers.
ROUNDINGS = (
    "nearest_even",
    "nearest_away",
    "toward_zero",
    "toward_positive",
    "toward_negative",
    "odd",
    "stochastic",
)


def rounding_mode(rounding) -> int:
    """Kernel number of a rounding-mode name.

    Examples
    --------
    >>> rounding_mode("toward_zero")
    2
    """
    if not isinstance(rounding, str):
        raise TypeError(
            f"rounding must be a string, one of {', '.join(ROUNDINGS)}; "
            f"got {type(rounding).__name__}"
        )
    try:
        return ROUNDINGS.index(rounding)
    except ValueError:
        close = difflib.get_close_matches(rounding, ROUNDINGS, n=1, cutoff=0.4)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        extra = ""
        if rounding in ("nearest", "floor", "ceil", "round", "trunc"):
            extra = " fpsim uses IEEE 754 names: 'nearest' is ambiguous, 'floor' is toward_negative."
        raise ValueError(
            f"unknown rounding {rounding!r}{hint}; allowed: {', '.join(ROUNDINGS)}.{extra}"
        ) from None


def check_saturate(saturate) -> bool:
    """``saturate`` must be a real bool (numpy bools accepted).

    Examples
    --------
    >>> import numpy as np
    >>> check_saturate(np.True_), check_saturate(False)
    (True, False)
    >>> check_saturate(1)
    Traceback (most recent call last):
    ...
    TypeError: saturate must be True or False, got 1
    """
    if not isinstance(saturate, (bool, np.bool_)):
        raise TypeError(f"saturate must be True or False, got {saturate!r}")
    return bool(saturate)


def resolve_seed(rng) -> np.uint64:
    """A 64-bit seed from ``rng``: an int seed, a ``numpy.random.Generator`` or None.

    A Generator gives one draw (so it advances); None takes fresh OS entropy.

    Examples
    --------
    >>> int(resolve_seed(42))
    42
    """
    if rng is None:
        return np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0]
    if isinstance(rng, np.random.Generator):
        return rng.integers(0, 2**64, dtype=np.uint64, endpoint=False)
    if isinstance(rng, (bool, np.bool_)):
        raise TypeError("rng must be an int seed, a numpy.random.Generator or None, got a bool")
    if isinstance(rng, numbers.Integral):
        seed = int(rng)
        if not 0 <= seed < 2**64:
            raise ValueError(f"rng: an int seed must satisfy 0 <= seed < 2**64, got {seed}; "
                             "pass a non-negative int, a numpy.random.Generator or None")
        return np.uint64(seed)
    raise TypeError(
        "rng must be an int seed, a numpy.random.Generator or None, "
        f"got {type(rng).__name__}"
    )


def as_generator(rng, *, name: str = "rng") -> np.random.Generator:
    """A ``numpy.random.Generator`` from ``rng``: an int seed, a Generator (used as is) or None.

    Examples
    --------
    >>> int(as_generator(7).integers(0, 10)) == int(as_generator(7).integers(0, 10))
    True
    >>> as_generator(-1)
    Traceback (most recent call last):
    ...
    ValueError: rng: an int seed must satisfy 0 <= seed < 2**64, got -1; pass a non-negative int, a numpy.random.Generator or None
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, numbers.Integral):
        raise TypeError(f"{name} must be an int seed, a numpy.random.Generator or None, "
                        f"got {type(rng).__name__}")
    seed = int(rng)
    if not 0 <= seed < 2**64:
        raise ValueError(f"{name}: an int seed must satisfy 0 <= seed < 2**64, got {seed}; "
                         "pass a non-negative int, a numpy.random.Generator or None")
    return np.random.default_rng(seed)
