"""Random bits from 32-bit words: the same values and generator state as rng.integers."""

from __future__ import annotations

import numpy as np
import pytest

from qkd.randomness import random_bits, random_mask

SIZES = [0, 1, 2, 3, 4, 5, 31, 32, 33, 63, 64, 65, 1001, 100_000]


@pytest.mark.parametrize("buffered", [False, True])
@pytest.mark.parametrize("n", SIZES)
def test_same_stream_as_rng_integers(n: int, buffered: bool) -> None:
    """Seeded sessions keep their results: the helpers draw what rng.integers would draw,
    including when the generator holds half of a 64-bit word from an earlier 32-bit draw."""
    ours, numpy_way = np.random.default_rng(n), np.random.default_rng(n)
    if buffered:
        ours.integers(0, 2**31 - 1)
        numpy_way.integers(0, 2**31 - 1)
    np.testing.assert_array_equal(random_bits(n, ours), numpy_way.integers(0, 2, n, dtype=np.uint8))
    np.testing.assert_array_equal(random_mask(n, ours), numpy_way.integers(0, 2, n, dtype=bool))
    assert ours.integers(0, 2**32, dtype=np.uint32) == numpy_way.integers(0, 2**32, dtype=np.uint32)
    assert ours.random() == numpy_way.random()


def test_dtypes_and_fairness() -> None:
    rng = np.random.default_rng(7)
    bits, mask = random_bits(200_000, rng), random_mask(200_000, rng)
    assert bits.dtype == np.uint8 and set(np.unique(bits).tolist()) == {0, 1}
    assert mask.dtype == bool and mask.shape == (200_000,)
    # 200,000 fair bits: the mean is within 5 standard deviations (0.0011) of 1/2
    assert abs(bits.mean() - 0.5) < 0.0056 and abs(mask.mean() - 0.5) < 0.0056
