"""Shared test settings.

Under ``NUMBA_DISABLE_JIT=1`` the kernels run as plain Python (for coverage of
kernel lines), so the Hypothesis profile and the array sizes shrink.
"""

import os

import hypothesis
import pytest

JIT_DISABLED = os.environ.get("NUMBA_DISABLE_JIT", "0") == "1"

hypothesis.settings.register_profile(
    "default", deadline=None, max_examples=100, print_blob=True
)
hypothesis.settings.register_profile("nojit", deadline=None, max_examples=15, print_blob=True)
hypothesis.settings.register_profile("ci", deadline=None, max_examples=200, print_blob=True)
hypothesis.settings.load_profile(
    "nojit" if JIT_DISABLED else os.environ.get("HYPOTHESIS_PROFILE", "default")
)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (skipped under NUMBA_DISABLE_JIT)")


def pytest_collection_modifyitems(config, items):
    if not JIT_DISABLED:
        return
    skip = pytest.mark.skip(reason="too slow as plain Python (NUMBA_DISABLE_JIT=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ml_quirks():
    """What the installed ml_dtypes does where its versions differ, probed once.

    Tests compare fpsim with the correct answer and use this only to know which
    ml_dtypes results to expect; an oracle's bug is never asserted as a constant.
    """
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from fpsim.app.verify import ml_dtypes_quirks

    return ml_dtypes_quirks(ml_dtypes)


@pytest.fixture(scope="session")
def model_files():
    """``model_files(name)`` fetches a model's files into the cache once per session.

    Every test that loads a real model asks for it here, so each passes alone, from an
    empty cache, in any order (``python -m fpsim fetch`` is the same call).
    """
    from fpsim.models import weights

    done = {}

    def need(name: str):
        if name not in done:
            done[name] = weights.fetch(name, quiet=True)
        return done[name]

    return need
