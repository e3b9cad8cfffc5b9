"""Key-manager-side batching: many key records, one Merkle root, one transaction.

A roadside unit adds each session's record; the batcher builds the Merkle tree
(OpenZeppelin's layout, ``ledger.merkle``), anchors the root with ``anchorBatch`` and
keeps every record's inclusion proof. It flushes when ``max_batch`` records wait or
the oldest has waited ``max_age_s``, whichever comes first; ``background()`` keeps
flushing on age even when no new record arrives. A record is "pending" until its
batch is mined, then "anchored". Single-record ``recordSession`` transactions remain
available in the client for users who want them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from . import ids, merkle
from .client import KeyLedgerClient
from .errors import BadInput


@dataclass(frozen=True)
class KeyRecord:
    """What a batch commits to for one key: the fields of the contract's ``keyLeaf``."""

    key_id: str
    commitment: bytes
    vehicle: str
    qber: float
    final_key_bits: int
    created_at: int
    expires_at: int
    protocol: str = "bb84"

    def leaf(self) -> bytes:
        if len(self.commitment) != 32:
            raise BadInput("a key commitment is 32 bytes (a SHA-256 digest)")
        if not 0.0 <= self.qber <= 1.0:
            raise BadInput(f"QBER must lie in [0, 1], got {self.qber}")
        return merkle.key_leaf(
            ids.key_id(self.key_id),
            self.commitment,
            ids.vehicle_id(self.vehicle),
            round(self.qber * 1_000_000),
            int(self.final_key_bits),
            ids.protocol(self.protocol),
            int(self.created_at),
            int(self.expires_at),
        )


@dataclass(frozen=True)
class Anchored:
    """A record's place in an anchored batch: enough to prove it locally or on chain."""

    key_id: str
    leaf: bytes
    root: bytes
    proof: tuple[bytes, ...]
    batch_size: int
    block_number: int
    tx_hash: str


class KeyBatcher:
    """Collects records and anchors them by size or age. Thread-safe: ``add`` may be called
    from one thread while ``background()`` flushes from another."""

    def __init__(
        self,
        client: KeyLedgerClient,
        *,
        max_batch: int = 256,
        max_age_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch < 1:
            raise BadInput(f"max_batch must be at least 1, got {max_batch}")
        if max_age_s <= 0:
            raise BadInput(f"max_age_s must be positive, got {max_age_s}")
        self.client = client
        self.max_batch = max_batch
        self.max_age_s = max_age_s
        self.clock = clock
        self._lock = threading.RLock()
        self._pending: list[tuple[KeyRecord, bytes]] = []
        self._pending_ids: set[str] = set()
        self._oldest: float | None = None
        self._anchored: dict[str, Anchored] = {}
        self.batches = 0
        self.records = 0
        self.gas_used = 0

    # ------------------------------------------------------------------ writing
    def add(self, record: KeyRecord) -> list[Anchored]:
        """Queue one record; returns what a size-triggered flush anchored (usually nothing)."""
        key = _canonical(record.key_id)
        leaf = record.leaf()
        with self._lock:
            if key in self._pending_ids or key in self._anchored:
                raise BadInput(f"key {key} is already batched")
            self._pending.append((record, leaf))
            self._pending_ids.add(key)
            if self._oldest is None:
                self._oldest = self.clock()
            if len(self._pending) >= self.max_batch:
                return self.flush()
        return []

    def due(self) -> bool:
        with self._lock:
            return self._oldest is not None and self.clock() - self._oldest >= self.max_age_s

    def poll(self) -> list[Anchored]:
        """Flush if the oldest pending record has waited ``max_age_s``."""
        with self._lock:
            return self.flush() if self.due() else []

    def flush(self) -> list[Anchored]:
        """Anchor everything pending now, in one transaction."""
        with self._lock:
            if not self._pending:
                return []
            batch, self._pending = self._pending, []
            self._pending_ids = set()
            self._oldest = None
            tree = merkle.MerkleTree.from_leaves([leaf for _, leaf in batch])
            try:
                result = self.client.anchor_batch(tree.root, len(batch))
            except Exception:
                # Nothing was anchored: put the records back so they are not lost.
                self._pending = batch + self._pending
                self._pending_ids = {_canonical(r.key_id) for r, _ in self._pending}
                self._oldest = self.clock()
                raise
            anchored = [
                Anchored(
                    key_id=_canonical(record.key_id),
                    leaf=leaf,
                    root=tree.root,
                    proof=tuple(tree.proof(leaf)),
                    batch_size=len(batch),
                    block_number=result.block_number,
                    tx_hash=result.tx_hash,
                )
                for record, leaf in batch
            ]
            for item in anchored:
                self._anchored[item.key_id] = item
            self.batches += 1
            self.records += len(batch)
            self.gas_used += result.gas_used
            return anchored

    @contextmanager
    def background(self, interval_s: float | None = None) -> Iterator[KeyBatcher]:
        """Flush on age from a daemon thread while the block runs; flush the rest on exit."""
        stop = threading.Event()
        period = interval_s if interval_s is not None else self.max_age_s / 4
        errors: list[BaseException] = []

        def loop() -> None:
            while not stop.wait(period):
                try:
                    self.poll()
                except Exception as exc:  # surfaced to the caller on exit
                    errors.append(exc)
                    return

        worker = threading.Thread(target=loop, name="key-batcher", daemon=True)
        worker.start()
        try:
            yield self
        finally:
            stop.set()
            worker.join()
            self.flush()
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ reading
    def status(self, key_id: str) -> str:
        """ "pending" until the batch is mined, then "anchored"; "unknown" otherwise."""
        key = _canonical(key_id)
        with self._lock:
            if key in self._anchored:
                return "anchored"
            return "pending" if key in self._pending_ids else "unknown"

    def anchored(self, key_id: str) -> Anchored | None:
        with self._lock:
            return self._anchored.get(_canonical(key_id))

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)


def _canonical(key_id: str) -> str:
    try:
        return str(uuid.UUID(str(key_id).strip()))
    except ValueError:
        raise BadInput(f"not a UUID key id: {key_id!r}") from None
