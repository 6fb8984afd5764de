"""fpsim._kernels.stats (the traced sites' one-pass statistics) against its pure-Python twin."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fpsim._kernels import stats

VALUES = st.one_of(st.floats(width=32, allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, -0.0, 1e-30, 448.0]))


def _run(kernel, x, q, limit, n, k):
    rows = -(-x.size // n)
    fsum, isum = np.zeros((rows, 3)), np.zeros((rows, 2), np.int64)
    kernel(x, q, limit, n, k, -(-n // k), fsum, isum)
    return fsum, isum


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
def test_kernels_equal_the_twin(data, dtype):
    x = data.draw(hnp.arrays(dtype, st.integers(0, 90), elements=VALUES))
    q = data.draw(hnp.arrays(dtype, x.shape, elements=VALUES))
    n = data.draw(st.integers(1, 40))
    k = data.draw(st.integers(1, n))
    nlim = -(-x.size // n) * -(-n // k)
    limit = data.draw(hnp.arrays(np.float64, nlim, elements=st.one_of(
        st.floats(0, 1e39), st.just(np.inf))))
    want = stats.error_stats_reference(x, q, limit, n, k)
    for kernel in (stats.error_stats_serial, stats.error_stats_parallel):
        fsum, isum = _run(kernel, x, q, limit, n, k)
        assert isum.tolist() == [[r[3], r[4]] for r in want]
        assert fsum[:, 2].tolist() == [r[2] for r in want]  # the largest magnitude: exact
        # sums in float64: the same terms, perhaps fused multiply-adds
        np.testing.assert_allclose(fsum[:, :2], np.array([r[:2] for r in want]).reshape(-1, 2),
                                   rtol=1e-12)


def test_values_are_widened_before_squaring():
    # float32 0.1 squared in float32 is 0.010000000707805157, in float64 0.010000000298...
    x = np.full(3, 0.1, np.float32)
    fsum, isum = _run(stats.error_stats_serial, x, np.zeros(3, np.float32), np.array([1.0]), 3, 3)
    assert fsum[0, 0] == pytest.approx(3 * float(x[0]) ** 2, rel=1e-15)
    assert isum.tolist() == [[0, 3]]  # three nonzero values quantized to zero


def test_reference_counts_by_hand():
    # rows of 3, blocks of 2: limits [1, 5] for row 0, [0.5, 0.5] for row 1
    x = [2.0, -1.0, 4.0, np.inf, np.nan, 0.25]
    q = [2.0, 0.0, 4.0, 1.0, np.nan, 0.5]
    rows = stats.error_stats_reference(x, q, [1.0, 5.0, 0.5, 0.5], n=3, k=2)
    assert rows == [(21.0, 1.0, 4.0, 1, 1), (0.0625, 0.0625, 0.25, 1, 0)]
