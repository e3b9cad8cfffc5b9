"""The classical channel's bookkeeping."""

from __future__ import annotations

import pytest

from qkd.classical import ClassicalChannel, index_bits


def test_exchange_counts_what_two_sends_count() -> None:
    one, two = ClassicalChannel(), ClassicalChannel()
    one.exchange("stage", 13, 9, disclosed_bits=9)
    two.send("stage", 13)
    two.send("stage", 9, disclosed_bits=9)
    assert one.stages["stage"].messages == two.stages["stage"].messages == 2
    assert one.stages["stage"].bytes == two.stages["stage"].bytes == 2 + 2
    assert one.disclosed("stage") == two.disclosed("stage") == 9
    assert one.channel_uses("stage") == 1 and two.channel_uses("stage") == 0
    with pytest.raises(ValueError, match="negative"):
        one.exchange("stage", -1, 0)


def test_recorded_traffic_adds_to_the_stage() -> None:
    channel = ClassicalChannel()
    channel.exchange("stage", 13, 9, disclosed_bits=9)
    channel.record("stage", messages=4, bytes=7, channel_uses=2, disclosed_bits=5)
    assert vars(channel.stages["stage"]) == {
        "messages": 6,
        "bytes": 11,
        "channel_uses": 3,
        "disclosed_bits": 14,
    }
    with pytest.raises(ValueError, match="negative"):
        channel.record("stage", messages=0, bytes=-1, channel_uses=0, disclosed_bits=0)


@pytest.mark.parametrize(
    ("universe", "bits"),
    [(0, 1), (2, 1), (3, 2), (5, 3), (1024, 10), (1025, 11), (2**40 + 1, 41), (2**60 + 1, 61)],
)
def test_index_bits_is_ceil_log2(universe: int, bits: int) -> None:
    """Exact integer arithmetic: float log2 rounds 2^60 + 1 down to exactly 60."""
    assert index_bits(3, universe) == 3 * bits
