"""Fading gains from their own streams: the same blocks in process and on a worker, the
Nakagami distribution, and the channel's draws taking every gain once, across blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vehicles.fading import FadingError, FadingGains
from vehicles.radio import BlockDraws, RadioParameters, mean_rx_power_dbm

PARAMS = RadioParameters()
SHAPES = (PARAMS.nakagami_m_far, PARAMS.nakagami_m_near)


def test_a_worker_draws_the_same_blocks_as_this_process() -> None:
    """Block k of shape m depends on the seed, m and k only: not on the interleaving of
    shapes, nor on where it was drawn."""
    local = FadingGains(5, SHAPES, block=1000)
    with FadingGains(5, SHAPES, block=1000, worker=True) as ahead:
        ahead.wait_ready()
        assert ahead.worker and not local.worker
        far_first = [local.next_block(SHAPES[0]) for _ in range(3)] + [local.next_block(SHAPES[1])]
        near_first = [ahead.next_block(SHAPES[1])] + [ahead.next_block(SHAPES[0]) for _ in range(3)]
    assert all(b.shape == (1000,) for b in far_first)
    assert np.array_equal(far_first[3], near_first[0])
    for mine, theirs in zip(far_first[:3], near_first[1:], strict=True):
        assert np.array_equal(mine, theirs)
    assert not np.array_equal(far_first[0], far_first[1])  # a stream, not one block again
    other_seed = FadingGains(6, SHAPES, block=1000).next_block(SHAPES[0])
    assert not np.array_equal(other_seed, far_first[0])


@pytest.mark.parametrize("m", SHAPES)
def test_gains_are_unit_mean_gamma_powers(m: float) -> None:
    gains = FadingGains(1, SHAPES, block=50_000).next_block(m)
    linear = 10.0 ** (gains / 10.0)
    size = linear.size
    # Gamma(m, 1/m): mean 1, variance 1/m
    assert abs(linear.mean() - 1.0) < 5 * math.sqrt(1.0 / m / size)
    assert linear.var() == pytest.approx(1.0 / m, rel=0.1)


def test_the_channel_takes_each_gain_of_the_stream_once_across_blocks() -> None:
    fading = FadingGains(3, SHAPES, block=7)
    draws = BlockDraws(np.random.default_rng(0), PARAMS, fading=fading)
    far = np.full(5, 300.0)  # beyond the switch: far-field gains only
    mean = mean_rx_power_dbm(far, PARAMS)
    taken = np.concatenate([draws.faded_dbm(mean, far) - mean for _ in range(4)])  # 20 gains
    reference = FadingGains(3, SHAPES, block=7)
    stream = np.concatenate([reference.next_block(SHAPES[0]) for _ in range(3)])  # 21 gains
    assert np.allclose(taken, stream[:20], atol=1e-9)
    # a request longer than a block takes as many whole blocks as it needs
    long = np.full(30, 300.0)
    gains = draws.faded_dbm(mean_rx_power_dbm(long, PARAMS), long) - mean_rx_power_dbm(long, PARAMS)
    rest = np.concatenate([stream[20:], *(reference.next_block(SHAPES[0]) for _ in range(5))])
    assert np.allclose(gains, rest[:30], atol=1e-9)


def test_bad_streams_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        FadingGains(1, (0.75, 0.0))
    with pytest.raises(ValueError, match="positive"):
        FadingGains(1, ())
    with pytest.raises(ValueError, match="block"):
        FadingGains(1, SHAPES, block=0)
    with pytest.raises(ValueError, match=r"no fading stream of shape 2\.0"):
        FadingGains(1, SHAPES).next_block(2.0)
    closed = FadingGains(1, SHAPES, worker=True)
    closed.close()
    with pytest.raises(FadingError, match="closed"):
        closed.next_block(SHAPES[0])
