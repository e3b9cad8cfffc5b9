"""The public classical channel between Alice and Bob.

Every classical message of a session (basis announcement, QBER sample, Cascade
parities, verification hash, privacy-amplification seed) goes through one
:class:`ClassicalChannel`, so that what is disclosed is counted in one place and
message authentication can be added here later without touching the protocols.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StageTraffic:
    """Traffic of one post-processing stage."""

    messages: int = 0
    bytes: int = 0
    channel_uses: int = 0  # one request and its reply count as one use
    disclosed_bits: int = 0  # bits about the raw key an eavesdropper learns (parities, sampled bits)


@dataclass
class ClassicalChannel:
    """Counts messages, bytes, round trips and disclosed key bits per stage.

    Payloads are NumPy arrays or byte strings; their wire size is what a packed
    encoding would take (bits rounded up to bytes), not Python object size.
    """

    stages: dict[str, StageTraffic] = field(default_factory=dict)

    def _stage(self, stage: str) -> StageTraffic:
        # get first: Cascade exchanges ~100 times a session, and setdefault would build a
        # StageTraffic on every call
        traffic = self.stages.get(stage)
        if traffic is None:
            traffic = self.stages[stage] = StageTraffic()
        return traffic

    def send(self, stage: str, payload_bits: int, *, disclosed_bits: int = 0) -> None:
        """One one-way message of ``payload_bits`` bits, of which ``disclosed_bits`` are about the key."""
        if payload_bits < 0 or disclosed_bits < 0:
            raise ValueError("message sizes cannot be negative")
        traffic = self._stage(stage)
        traffic.messages += 1
        traffic.bytes += (payload_bits + 7) // 8
        traffic.disclosed_bits += disclosed_bits

    def exchange(self, stage: str, request_bits: int, reply_bits: int, *, disclosed_bits: int = 0) -> None:
        """A request and its reply: two messages and one channel use.

        Counts exactly what two :meth:`send` calls would, in one stage lookup (it is on
        Cascade's per-level path).
        """
        if request_bits < 0 or reply_bits < 0 or disclosed_bits < 0:
            raise ValueError("message sizes cannot be negative")
        traffic = self._stage(stage)
        traffic.messages += 2
        traffic.bytes += (request_bits + 7) // 8 + (reply_bits + 7) // 8
        traffic.disclosed_bits += disclosed_bits
        traffic.channel_uses += 1

    def record(
        self, stage: str, *, messages: int, bytes: int, channel_uses: int, disclosed_bits: int
    ) -> None:
        """Traffic counted elsewhere, message by message as :meth:`exchange` counts it (a
        joint Cascade run tallies each session's exchanges in arrays and posts them here)."""
        if min(messages, bytes, channel_uses, disclosed_bits) < 0:
            raise ValueError("traffic counts cannot be negative")
        traffic = self._stage(stage)
        traffic.messages += messages
        traffic.bytes += bytes
        traffic.channel_uses += channel_uses
        traffic.disclosed_bits += disclosed_bits

    def disclosed(self, stage: str) -> int:
        return self.stages[stage].disclosed_bits if stage in self.stages else 0

    def channel_uses(self, stage: str) -> int:
        return self.stages[stage].channel_uses if stage in self.stages else 0

    @property
    def total_messages(self) -> int:
        return sum(t.messages for t in self.stages.values())

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes for t in self.stages.values())

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {name: vars(t).copy() for name, t in self.stages.items()}


def index_bits(count: int, universe: int) -> int:
    """Wire size of ``count`` indices into ``range(universe)``, for counting request sizes.

    ceil(log2(u)) is ``(u - 1).bit_length()`` in exact integer arithmetic (no float
    rounding for huge universes, and no NumPy scalar overhead on Cascade's hot path).
    """
    return int(count) * max(1, (max(int(universe), 2) - 1).bit_length())
