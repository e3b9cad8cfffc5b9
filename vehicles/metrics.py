"""What a run measures, with the definitions users expect (../shared/spec/vehicles.md).

- PDR = received / expected, where *expected* counts every receiver within
  ``pdr_range_m`` of the sender when the packet went on air; PDR against
  distance uses the same pairs binned by distance.
- End-to-end latency = reception time - the application timestamp in the packet.
- Throughput = delivered payload bits per simulated second, summed over receivers.
- MAC/PHY overhead = (air bytes - payload bytes) / air bytes.
- Energy = first-order radio model for every transmission and reception, plus
  crypto processing energy.

Simulated-time figures are exact functions of the seed. Wall-clock figures
(validation latency, ledger rates, wall time) are measured and vary run to run;
:meth:`Metrics.summary` keeps them in separately named fields.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DISTANCE_BIN_M = 50.0
OUT_OF_RANGE = -1  # a distance bin that is not counted
_FLUSH_ENTRIES = 1 << 16


class _BinCounts:
    """A histogram of small non-negative ints, fed with arrays: buffered, counted by one bincount."""

    __slots__ = ("_counts", "_pending", "_pending_entries")

    def __init__(self) -> None:
        self._counts = np.zeros(0, dtype=np.int64)
        self._pending: list[np.ndarray] = []
        self._pending_entries = 0

    def add(self, bins: np.ndarray) -> None:
        self._pending.append(bins)
        self._pending_entries += bins.size
        if self._pending_entries >= _FLUSH_ENTRIES:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        bins = np.concatenate(self._pending)
        self._pending.clear()
        self._pending_entries = 0
        counts = np.bincount(bins[bins >= 0])
        if counts.size > self._counts.size:
            counts[: self._counts.size] += self._counts
            self._counts = counts
        else:
            self._counts[: counts.size] += counts

    def counter(self) -> Counter[int]:
        self._flush()
        return Counter({int(i): int(self._counts[i]) for i in np.flatnonzero(self._counts)})


@dataclass
class MessageRecord:
    message_id: int
    kind: str  # "cam", "denm", "v2i"
    sender: int
    sent_at: float
    payload_bytes: int
    air_bytes: int
    key_id: str | None
    expected: int  # receivers in range when it went on air
    delivered: int = 0  # receivers that decrypted it
    rejected: int = 0


@dataclass
class Metrics:
    pdr_range_m: float
    messages: list[MessageRecord] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)  # one entry per frame ...
    latency_weights: list[int] = field(default_factory=list)  # ... delivered to this many receivers
    validation_ns: list[int] = field(default_factory=list)
    rejections: Counter[str] = field(default_factory=Counter)
    drops: Counter[str] = field(default_factory=Counter)  # sender-side: no key, pool empty
    energy_radio_j: float = 0.0
    energy_crypto_j: float = 0.0  # senders' protection, summed frame by frame
    energy_opening_j: float = 0.0  # receivers' opening, from one sum of bytes (set at the end)
    delivered_payload_bits: int = 0
    air_bytes: int = 0
    payload_bytes: int = 0
    key_rows: list[dict[str, Any]] = field(default_factory=list)
    pool_samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, vehicle, bits)
    ledger_samples: list[tuple[float, int]] = field(default_factory=list)  # (t, records so far)
    ledger_transactions: int = 0
    ledger_records: int = 0
    ledger_wall_s: float = 0.0
    # wall seconds from sending each transaction that carried key records to its mined receipt
    confirmation_s: list[float] = field(default_factory=list)
    sessions: int = 0
    sessions_aborted: int = 0
    bits_generated: int = 0
    bits_consumed: int = 0
    # Receptions per distance bin: bin-index arrays are buffered and counted in bulk.
    _histograms: dict[str, _BinCounts] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._histograms = {"expected": _BinCounts(), "received": _BinCounts()}

    @property
    def distance_expected(self) -> Counter[int]:
        """Expected receptions per distance bin (bin i: i * DISTANCE_BIN_M up to the next bin)."""
        return self._histograms["expected"].counter()

    @property
    def distance_received(self) -> Counter[int]:
        """Receptions within ``pdr_range_m`` per distance bin."""
        return self._histograms["received"].counter()

    def distance_bins(self, distances_m: np.ndarray) -> np.ndarray:
        """Each distance's bin, or OUT_OF_RANGE beyond ``pdr_range_m`` (for :meth:`delivered_binned`)."""
        bins = (distances_m // DISTANCE_BIN_M).astype(np.int64)
        bins[distances_m > self.pdr_range_m] = OUT_OF_RANGE
        return bins

    def on_air(self, record: MessageRecord, distances_in_range: np.ndarray) -> None:
        self.on_air_binned(record, (np.asarray(distances_in_range) // DISTANCE_BIN_M).astype(np.int64))

    def on_air_binned(self, record: MessageRecord, bins: np.ndarray) -> None:
        """:meth:`on_air` with the receivers' distance bins given; OUT_OF_RANGE entries are skipped."""
        self.messages.append(record)
        self.air_bytes += record.air_bytes
        self.payload_bytes += record.payload_bytes
        self._histograms["expected"].add(bins)

    def delivered(self, record: MessageRecord, distances_m: np.ndarray, latency_s: float) -> None:
        """One frame decrypted by ``len(distances_m)`` receivers (all with the same latency)."""
        distances_m = np.asarray(distances_m, dtype=float)
        self.delivered_binned(record, self.distance_bins(distances_m), latency_s)

    def delivered_binned(self, record: MessageRecord, bins: np.ndarray, latency_s: float) -> None:
        """:meth:`delivered` with the receivers' :meth:`distance_bins` given."""
        if bins.size:
            self.delivered_many([(record, int(bins.size), latency_s)], bins)

    def delivered_many(self, deliveries: list[tuple[MessageRecord, int, float]], bins: np.ndarray) -> None:
        """Several frames at once: (record, receivers that decrypted it, their latency) for
        each, and every one of those receivers' :meth:`distance_bins`, concatenated."""
        latencies, weights = self.latencies_s, self.latency_weights
        payload_bits = 0
        for record, count, latency_s in deliveries:
            record.delivered += count
            latencies.append(latency_s)
            weights.append(count)
            payload_bits += record.payload_bytes * count
        self.delivered_payload_bits += 8 * payload_bits
        self._histograms["received"].add(bins)

    def rejected(self, record: MessageRecord, reason: str, count: int = 1) -> None:
        record.rejected += count
        self.rejections[reason] += count

    def pdr_by_distance(self) -> list[dict[str, float]]:
        rows = []
        for bin_index in sorted(self.distance_expected):
            expected = self.distance_expected[bin_index]
            rows.append(
                {
                    "distance_m": (bin_index + 0.5) * DISTANCE_BIN_M,
                    "expected": expected,
                    "received": self.distance_received.get(bin_index, 0),
                    "pdr": self.distance_received.get(bin_index, 0) / expected,
                }
            )
        return rows

    def summary(self, *, duration_s: float) -> dict[str, Any]:
        expected = sum(m.expected for m in self.messages)
        received = sum(self.distance_received.values())
        return {
            "messages_sent": len(self.messages),
            "messages_delivered": int(sum(m.delivered for m in self.messages)),
            "receptions_expected": int(expected),
            "receptions_in_range": int(received),
            "pdr": received / expected if expected else None,
            "latency_ms": percentiles_ms(self.latencies_s, self.latency_weights),
            "throughput_kbps": self.delivered_payload_bits / duration_s / 1000,
            "mac_phy_overhead": (self.air_bytes - self.payload_bytes) / self.air_bytes
            if self.air_bytes
            else None,
            "energy_j": {
                "radio": self.energy_radio_j,
                "crypto": self.energy_crypto_j + self.energy_opening_j,
                "total": self.energy_radio_j + self.energy_crypto_j + self.energy_opening_j,
            },
            "keys": {
                "sessions": self.sessions,
                "aborted": self.sessions_aborted,
                "bits_generated": self.bits_generated,
                "bits_consumed": self.bits_consumed,
                # simulated time from a session's end to its key reaching the pool (its record
                # on the ledger: the wait for its Merkle batch, when batched)
                "delivery_ms": percentiles_ms([row["usable_at"] - row["t"] for row in self.key_rows]),
            },
            "rejected": dict(sorted(self.rejections.items())),
            "dropped": dict(sorted(self.drops.items())),
        }

    def wall_clock_summary(self) -> dict[str, Any]:
        return {
            "validation_latency_ms": percentiles_ms([ns / 1e9 for ns in self.validation_ns]),
            "ledger": {
                "transactions": self.ledger_transactions,
                "records": self.ledger_records,
                "tps": self.ledger_transactions / self.ledger_wall_s if self.ledger_wall_s else None,
                "records_per_s": self.ledger_records / self.ledger_wall_s if self.ledger_wall_s else None,
                "wall_s": self.ledger_wall_s,
                "confirmation_ms": percentiles_ms(self.confirmation_s),
            },
        }


def percentiles_ms(values_s: list[float], weights: list[int] | None = None) -> dict[str, float | None]:
    """p50/p95/p99 and mean in ms; ``weights`` counts how many observations each value stands for."""
    if not values_s:
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    values = np.asarray(values_s, dtype=float) * 1000.0
    counts = np.ones(values.size) if weights is None else np.asarray(weights, dtype=float)
    order = np.argsort(values, kind="stable")
    values, counts = values[order], counts[order]
    cumulative = np.cumsum(counts)
    total = cumulative[-1]

    def quantile(q: float) -> float:
        return float(values[min(np.searchsorted(cumulative, q * total, side="left"), values.size - 1)])

    return {
        "p50": quantile(0.50),
        "p95": quantile(0.95),
        "p99": quantile(0.99),
        "mean": float((values * counts).sum() / total),
    }
