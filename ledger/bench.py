"""``qkdiov bench ledger``: mined key records per second, batched against one per transaction.

Only mined records count: the clock runs from the first record handed to the batcher
to the receipt of the transaction that anchored the last one. The baseline sends one
``recordSession`` per transaction to the same node in the same run. Validation is
timed per call: the local view (a dict lookup) and ``keyStatus`` over one raw ``eth_call``
(``KeyLedgerClient.key_status_fast``, which skips web3's middleware).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from .batcher import KeyBatcher, KeyRecord
from .chain import connect
from .deployment import deploy
from .view import LedgerView


def _percentiles_ms(samples_s: list[float]) -> dict[str, float]:
    array = np.asarray(samples_s) * 1000.0
    return {
        "p50": round(float(np.percentile(array, 50)), 4),
        "p99": round(float(np.percentile(array, 99)), 4),
    }


def _records(count: int, vehicle: str, now: int) -> list[KeyRecord]:
    return [
        KeyRecord(
            key_id=str(uuid.uuid4()),
            commitment=hashlib.sha256(os.urandom(32)).digest(),
            vehicle=vehicle,
            qber=0.02,
            final_key_bits=4096,
            created_at=now,
            expires_at=now + 3600,
        )
        for _ in range(count)
    ]


def run_ledger_bench(
    *,
    chain: str = "anvil",
    records: int = 50_000,
    batch_size: int = 2048,
    baseline_records: int = 300,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    say = progress or (lambda message: None)
    if quick:
        records, batch_size, baseline_records = 600, 128, 20
    say(f"starting {chain}")
    with connect(chain, persist=False) as node:
        client, _ = deploy(node, save=False)
        client.register_vehicle("bench-car")
        now = node.latest_timestamp()

        say(f"{records:,} records in Merkle batches of {batch_size}")
        batch = _records(records, "bench-car", now)
        batcher = KeyBatcher(client, max_batch=batch_size, max_age_s=3600)
        submitted: dict[str, float] = {}
        commit_latency: list[float] = []
        started = time.perf_counter()
        for record in batch:
            submitted[record.key_id] = time.perf_counter()
            for item in batcher.add(record):
                commit_latency.append(time.perf_counter() - submitted[item.key_id])
        for item in batcher.flush():
            commit_latency.append(time.perf_counter() - submitted[item.key_id])
        batched_s = time.perf_counter() - started

        say(f"baseline: {baseline_records} records, one per transaction")
        singles = _records(baseline_records, "bench-car", now)
        started = time.perf_counter()
        for record in singles:
            client.record_session(
                record.key_id,
                record.commitment,
                record.vehicle,
                qber=record.qber,
                final_key_bits=record.final_key_bits,
                created_at=record.created_at,
                expires_at=record.expires_at,
            )
        baseline_s = time.perf_counter() - started

        say("validation latency")
        view = LedgerView(client)
        view.sync()
        local: list[float] = []
        for _ in range(20):
            for record in singles:
                t0 = time.perf_counter_ns()
                view.validate(record.key_id, record.commitment, now + 1)
                local.append((time.perf_counter_ns() - t0) / 1e9)
        onchain: list[float] = []
        for record in singles[: min(len(singles), 200)]:
            t0 = time.perf_counter()
            client.key_status_fast(record.key_id)
            onchain.append(time.perf_counter() - t0)
        anchored = batcher.anchored(batch[0].key_id)
        assert anchored is not None and view.verify_inclusion(anchored.root, anchored.proof, anchored.leaf)

    records_per_s = records / batched_s
    baseline_tx_per_s = baseline_records / baseline_s
    return {
        "chain": chain,
        "quick": quick,
        "records": records,
        "records_per_s": round(records_per_s),
        "tx_per_s": round(batcher.batches / batched_s, 2),
        "baseline_records": baseline_records,
        "baseline_tx_per_s": round(baseline_tx_per_s, 1),
        "speedup": round(records_per_s / baseline_tx_per_s, 1),
        "batch_size": batch_size,
        "batches": batcher.batches,
        "gas_per_record": round(batcher.gas_used / records, 1),
        "commit_latency_ms": _percentiles_ms(commit_latency),
        "validation_latency_ms": _percentiles_ms(local),
        "onchain_validation_latency_ms": _percentiles_ms(onchain),
    }
