"""``qkdiov bench ledger``: mined key records per second, batched against one per transaction.

Only mined records count. Both modes go through one ``TxPipeline`` (pre-signed raw
transactions from several key-manager accounts, JSON-RPC batches, receipts collected in
the background): the batched mode hands records to a ``KeyBatcher``, which anchors one
Merkle root per ``batch_size`` records; the baseline sends one ``recordSession`` per
transaction to the same node in the same run. Each clock runs from the first record
handed over to the receipt of the last transaction, so hashing, signing, sending and
mining are all inside it. On anvil the node is started with interval mining
(``block_time``, 1 s by default) and a large block gas limit, as the spec's measurements
did; automine (``block_time=0``) mines one block per transaction.

Validation is timed per call: the local view (dictionary lookups) and ``keyStatus`` over
one raw ``eth_call`` (``KeyLedgerClient.key_status_fast``, which skips web3's middleware).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from . import ids
from .batcher import Anchored, KeyBatcher, KeyRecord
from .chain import connect
from .deployment import deploy
from .errors import BadInput, LedgerError
from .pipeline import TxPipeline
from .view import LedgerView

BENCH_GAS_LIMIT = 1_000_000_000  # per block on the bench's own anvil: room for ~7,000 recordSession


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
    records: int | None = None,
    batch_size: int | None = None,
    baseline_records: int | None = None,
    accounts: int | None = None,
    block_time: float | None = None,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``None`` takes the default: 200,000 records in batches of 4,096, a baseline of
    5,000 single records, 4 key-manager accounts; ``quick`` makes those 600, 128, 20 and
    2 (values given still win)."""
    say = progress or (lambda message: None)
    records = records if records is not None else 600 if quick else 200_000
    batch_size = batch_size if batch_size is not None else 128 if quick else 4096
    baseline_records = baseline_records if baseline_records is not None else 20 if quick else 5_000
    accounts = accounts if accounts is not None else 2 if quick else 4
    managed = chain == "anvil"
    if block_time is None:
        block_time = 1.0 if managed else 0.0
    if block_time and not managed:
        raise BadInput("--block-time applies to the anvil node the benchmark starts (--chain anvil)")
    say(f"starting {chain}")
    node_options = {"block_time": block_time, "gas_limit": BENCH_GAS_LIMIT} if block_time else {}
    with connect(chain, persist=False, **node_options) as node:
        client, _ = deploy(node, save=False)
        managers = node.accounts[1 : 1 + accounts]
        if len(managers) < accounts:
            raise BadInput(f"{accounts} key-manager accounts asked for, {len(managers)} available")
        client.register_vehicle("bench-car")
        for account in managers:
            client.grant_role("key-manager", account.address)
        now = node.latest_timestamp()

        say(f"{records:,} records in Merkle batches of {batch_size}")
        batch = _records(records, "bench-car", now)
        anchored_at: dict[str, float] = {}

        def heard(items: list[Anchored]) -> None:
            seen = time.perf_counter()
            for item in items:
                anchored_at[item.key_id] = seen

        with TxPipeline(client, managers) as pipeline:
            batcher = KeyBatcher(
                client, max_batch=batch_size, max_age_s=3600, pipeline=pipeline, on_anchored=heard
            )
            submitted: list[float] = []
            started = time.perf_counter()
            for record in batch:
                submitted.append(time.perf_counter())
                batcher.add(record)
            batcher.flush()
            handover_s = time.perf_counter() - started  # hashing, trees and sending, on this thread
            batcher.drain()
            batched_s = pipeline.last_mined_at - started
            _check_mined(pipeline, batcher.batches, "anchorBatch")
        commit_latency = [anchored_at[str(r.key_id)] - t for r, t in zip(batch, submitted, strict=True)]

        say(f"baseline: {baseline_records:,} records, one per transaction")
        singles = _records(baseline_records, "bench-car", now)
        calls = [
            (
                "recordSession",
                (
                    ids.key_id(r.key_id),
                    r.commitment,
                    ids.vehicle_id(r.vehicle),
                    round(r.qber * 1_000_000),
                    r.final_key_bits,
                    ids.protocol(r.protocol),
                    r.created_at,
                    r.expires_at,
                ),
            )
            for r in singles
        ]
        with TxPipeline(client, managers) as pipeline:
            started = time.perf_counter()
            pipeline.submit_many(calls)
            pipeline.wait()
            baseline_s = pipeline.last_mined_at - started
            _check_mined(pipeline, baseline_records, "recordSession")
            baseline_gas = pipeline.gas_used / baseline_records

        say("validation latency")
        view = LedgerView(client)
        view.sync()
        if len(view) != baseline_records or any(view.anchor(a.root) is None for a in _sample(batcher, batch)):
            raise LedgerError("the ledger view does not hold every mined record and anchored root")
        sample = singles[:1000]
        local: list[float] = []
        for _ in range(20):
            for record in sample:
                t0 = time.perf_counter_ns()
                view.validate(record.key_id, record.commitment, now + 1)
                local.append((time.perf_counter_ns() - t0) / 1e9)
        onchain: list[float] = []
        for record in sample[:200]:
            t0 = time.perf_counter()
            client.key_status_fast(record.key_id)
            onchain.append(time.perf_counter() - t0)
        for item in _sample(batcher, batch):
            if not view.verify_inclusion(item.root, item.proof, item.leaf):
                raise LedgerError("an anchored record's proof does not verify against the view")

    records_per_s = records / batched_s
    baseline_tx_per_s = baseline_records / baseline_s
    return {
        "chain": chain,
        "quick": quick,
        "block_time_s": block_time or None,
        "key_manager_accounts": accounts,
        "records": records,
        "records_per_s": round(records_per_s),
        "tx_per_s": round(batcher.batches / batched_s, 2),
        "baseline_records": baseline_records,
        "baseline_tx_per_s": round(baseline_tx_per_s, 1),
        "speedup": round(records_per_s / baseline_tx_per_s, 1),
        "batch_size": batch_size,
        "batches": batcher.batches,
        "gas_per_record": round(batcher.gas_used / records, 1),
        "batcher_us_per_record": round(handover_s / records * 1e6, 2),
        "baseline_gas_per_record": round(baseline_gas),
        "commit_latency_ms": _percentiles_ms(commit_latency),
        "validation_latency_ms": _percentiles_ms(local),
        "onchain_validation_latency_ms": _percentiles_ms(onchain),
    }


def _check_mined(pipeline: TxPipeline, expected: int, function: str) -> None:
    """Every transaction mined and none reverted, or the figure would count failures."""
    if pipeline.failed or pipeline.mined != expected:
        raise LedgerError(
            f"{function}: {pipeline.mined} of {expected} transactions mined, {len(pipeline.failed)} reverted"
        )


def _sample(batcher: KeyBatcher, batch: list[KeyRecord]) -> list[Anchored]:
    """The first record of each batch: one proof checked per anchored root."""
    picked = [batcher.anchored(r.key_id) for r in batch[:: batcher.max_batch]]
    return [item for item in picked if item is not None]
