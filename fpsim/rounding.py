"""Rounding modes (IEEE 754 names), and the validation of ``saturate=`` and ``rng=``."""

from __future__ import annotations

import difflib
import hashlib
import numbers

import numpy as np

__all__ = ["DEFAULT_SEED", "ROUNDINGS", "as_generator", "check_saturate", "child_seed",
           "resolve_seed", "rounding_mode", "seed_of"]

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


#: The seed a model run uses when none is given (``models.load``, ``evaluate``, the CLI): runs
#: are reproducible unless the caller asks for fresh entropy with a Generator of their own.
DEFAULT_SEED = 0


def seed_of(rng) -> int:
    """The root seed of a run: an int seed as is, one draw from a Generator, None ->
    :data:`DEFAULT_SEED` (0).

    Examples
    --------
    >>> seed_of(None), seed_of(42)
    (0, 42)
    """
    return DEFAULT_SEED if rng is None else int(resolve_seed(rng))


def _key_int(k) -> int:
    if isinstance(k, str):
        return int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little")
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
        raise TypeError(f"a seed key must be a str or an int, got {type(k).__name__}")
    return int(k) % 2**64


def child_seed(seed: int, *key) -> int:
    """The 64-bit seed of the random stream named ``key`` under the root ``seed``.

    The one seeding scheme of fpsim: ``numpy.random.SeedSequence(seed, spawn_key=key)``, as
    ``SeedSequence.spawn`` derives children, with each string of the key (a site name) turned
    into an int by a stable hash (BLAKE2b, not Python's salted ``hash``).  A model run keys
    every stochastic draw by (site, layer, operand, call), so two sites, layers, operands or
    calls never share random bits, and the same seed gives the same draws in any order.

    Examples
    --------
    >>> child_seed(0, "q.input", 3, 0, 0) == child_seed(0, "q.input", 3, 0, 0)
    True
    >>> child_seed(0, "q.input", 3, 0, 0) == child_seed(0, "k.input", 3, 0, 0)
    False
    """
    ss = np.random.SeedSequence(int(seed), spawn_key=tuple(_key_int(k) for k in key))
    return int(ss.generate_state(1, np.uint64)[0])
