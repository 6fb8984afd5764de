"""fpsim.rounding: rounding-mode names, saturate and rng validation, the seeding scheme."""

import numpy as np
import pytest

from fpsim.rounding import child_seed, seed_of


def test_child_seeds_are_stable_distinct_and_keyed_like_seedsequence():
    a = child_seed(7, "q.input", 3, 0, 5)
    assert a == child_seed(7, "q.input", 3, 0, 5)  # same key, same seed (no hash() salt)
    others = {child_seed(7, "q.input", 3, 0, 6), child_seed(7, "k.input", 3, 0, 5),
              child_seed(7, "q.input", 2, 0, 5), child_seed(7, "q.input", 3, 1, 5),
              child_seed(8, "q.input", 3, 0, 5)}
    assert a not in others and len(others) == 5
    # the derivation is numpy's SeedSequence with the key as spawn_key
    ss = np.random.SeedSequence(7, spawn_key=(5,))
    assert child_seed(7, 5) == int(ss.generate_state(1, np.uint64)[0])
    assert 0 <= a < 2**64


def test_seed_of_default_and_generator():
    assert seed_of(None) == 0  # the documented default: runs are reproducible unless asked
    assert seed_of(12) == 12
    g = np.random.default_rng(1)
    assert seed_of(g) == seed_of(np.random.default_rng(1))
    with pytest.raises(TypeError, match="rng"):
        seed_of("7")
    with pytest.raises(ValueError, match="rng"):
        seed_of(-1)


def test_child_seed_rejects_bad_keys():
    with pytest.raises(TypeError, match="key"):
        child_seed(1, 1.5)
