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

import functools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import ids, merkle
from .client import KeyLedgerClient
from .errors import BadInput
from .pipeline import MinedTx, TxPipeline


@dataclass(frozen=True)
class KeyRecord:
    """What a batch commits to for one key: the fields of the contract's ``keyLeaf``."""

    key_id: str | uuid.UUID
    commitment: bytes
    vehicle: str
    qber: float
    final_key_bits: int
    created_at: int
    expires_at: int
    protocol: str = "bb84"

    def leaf(self, raw_id: bytes | None = None) -> bytes:
        """The Merkle leaf (``keyLeaf``); ``raw_id`` (the UUID's 16 bytes) saves parsing it twice."""
        if len(self.commitment) != 32:
            raise BadInput("a key commitment is 32 bytes (a SHA-256 digest)")
        if not 0.0 <= self.qber <= 1.0:
            raise BadInput(f"QBER must lie in [0, 1], got {self.qber}")
        try:
            return merkle.key_leaf(
                (raw_id or ids.parse_key_id(self.key_id)[1]) + _ZERO16,
                bytes(self.commitment),
                _vehicle_id(self.vehicle),
                round(self.qber * 1_000_000),
                int(self.final_key_bits),
                ids.protocol(self.protocol),
                int(self.created_at),
                int(self.expires_at),
            )
        except ValueError as exc:
            raise BadInput(f"key record {self.key_id}: {exc}") from None


@dataclass(frozen=True)
class AnchoredBatch:
    """One mined ``anchorBatch``: the tree is kept so proofs are built only when asked for."""

    tree: merkle.MerkleTree
    block_number: int
    tx_hash: str

    @property
    def root(self) -> bytes:
        return self.tree.root


@dataclass(frozen=True)
class Anchored:
    """A record's place in an anchored batch: enough to prove it locally or on chain."""

    key_id: str
    leaf: bytes
    batch: AnchoredBatch

    @property
    def root(self) -> bytes:
        return self.batch.root

    @property
    def proof(self) -> tuple[bytes, ...]:
        return tuple(self.batch.tree.proof(self.leaf))

    @property
    def batch_size(self) -> int:
        return len(self.batch.tree)

    @property
    def block_number(self) -> int:
        return self.batch.block_number

    @property
    def tx_hash(self) -> str:
        return self.batch.tx_hash


_Queued = tuple[str, bytes]  # (canonical key id, leaf)


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
        pipeline: TxPipeline | None = None,
        on_anchored: Callable[[list[Anchored]], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise BadInput(f"max_batch must be at least 1, got {max_batch}")
        if max_age_s <= 0:
            raise BadInput(f"max_age_s must be positive, got {max_age_s}")
        self.client = client
        self.max_batch = max_batch
        self.max_age_s = max_age_s
        self.clock = clock
        self.pipeline = pipeline
        self.on_anchored = on_anchored
        self._lock = threading.RLock()
        self._pending: list[_Queued] = []
        self._pending_ids: set[str] = set()
        self._oldest: float | None = None
        self._anchored: dict[str, Anchored] = {}
        self._in_flight_ids: set[str] = set()  # submitted through the pipeline, not yet mined
        self.batches = 0
        self.failed_batches = 0
        self.records = 0
        self.gas_used = 0

    # ------------------------------------------------------------------ writing
    def add(self, record: KeyRecord) -> list[Anchored]:
        """Queue one record; returns what a size-triggered flush anchored (usually nothing)."""
        key, raw = ids.parse_key_id(record.key_id)
        check_record(record, raw)
        leaf = record.leaf(raw)
        with self._lock:
            if key in self._pending_ids or key in self._anchored or key in self._in_flight_ids:
                raise BadInput(f"key {key} is already batched")
            self._pending.append((key, leaf))
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
        """Anchor everything pending now, in one transaction.

        Without a pipeline this waits for the receipt and returns the anchored records.
        With one it returns at once (an empty list): the records stay "pending" until the
        receipt arrives, then ``on_anchored`` hears of them. A refused or reverted anchor
        puts its records back, so nothing is lost.
        """
        with self._lock:
            if not self._pending:
                return []
            batch, self._pending = self._pending, []
            self._pending_ids = set()
            self._oldest = None
            tree = merkle.MerkleTree.from_leaves([leaf for _, leaf in batch])
            if self.pipeline is not None:
                self._in_flight_ids.update(key for key, _ in batch)
                try:
                    self.pipeline.submit(
                        "anchorBatch",
                        tree.root,
                        len(batch),
                        on_mined=lambda mined: self._settle(batch, tree, mined),
                    )
                except Exception:
                    self._put_back(batch)
                    raise
                return []
            try:
                result = self.client.anchor_batch(tree.root, len(batch))
            except Exception:
                self._put_back(batch)
                raise
            return self._anchor(
                batch, AnchoredBatch(tree, result.block_number, result.tx_hash), result.gas_used
            )

    def _put_back(self, batch: list[_Queued]) -> None:
        """Nothing was anchored: the records wait again, ahead of newer ones."""
        with self._lock:
            self._in_flight_ids.difference_update(key for key, _ in batch)
            self._pending = batch + self._pending
            self._pending_ids = {key for key, _ in self._pending}
            self._oldest = self.clock()

    def _anchor(self, batch: list[_Queued], anchored_batch: AnchoredBatch, gas: int) -> list[Anchored]:
        with self._lock:
            anchored = [Anchored(key, leaf, anchored_batch) for key, leaf in batch]
            for item in anchored:
                self._anchored[item.key_id] = item
                self._in_flight_ids.discard(item.key_id)
            self.batches += 1
            self.records += len(batch)
            self.gas_used += gas
        if self.on_anchored is not None:
            self.on_anchored(anchored)
        return anchored

    def _settle(self, batch: list[_Queued], tree: merkle.MerkleTree, mined: MinedTx) -> None:
        """A pipelined anchor's receipt (called from the pipeline's receipt thread)."""
        if not mined.ok:
            self.failed_batches += 1
            self._put_back(batch)
            return
        self._anchor(batch, AnchoredBatch(tree, mined.block_number, mined.tx_hash), mined.gas_used)

    def drain(self) -> None:
        """Flush what is pending and, with a pipeline, wait until every batch is mined."""
        self.flush()
        if self.pipeline is not None:
            self.pipeline.wait()

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
            self.drain()
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ reading
    def status(self, key_id: str) -> str:
        """ "pending" until the batch is mined, then "anchored"; "unknown" otherwise."""
        key = _canonical(key_id)
        with self._lock:
            if key in self._anchored:
                return "anchored"
            pending = key in self._pending_ids or key in self._in_flight_ids
            return "pending" if pending else "unknown"

    def anchored(self, key_id: str) -> Anchored | None:
        with self._lock:
            return self._anchored.get(_canonical(key_id))

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)


_ZERO16 = b"\x00" * 16


def _canonical(key_id: str | uuid.UUID) -> str:
    return ids.parse_key_id(key_id)[0]


@functools.lru_cache(maxsize=4096)
def _vehicle_id(label: str) -> bytes:
    """Vehicles repeat across records: their bytes32 ids are cached."""
    return ids.vehicle_id(label)


# ---------------------------------------------------------------------------- files


def _json_lines(path: str | Path) -> Iterator[tuple[int, str, object]]:
    """Each non-blank line of a JSON-lines file as (line number, "file:line", value).

    Records and proofs files share this reading; each caller checks its own objects.
    """
    source = Path(path)
    try:
        lines = source.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {source}: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise BadInput(f"{where}: not JSON: {exc}") from None
        yield number, where, item


def check_record(record: KeyRecord, raw_id: bytes | None = None) -> None:
    """What a record needs to be worth anchoring, beyond what its leaf's encoding checks:
    a key id that can be revoked (revokeBatchedKey refuses the zero id: ZeroKeyId), and
    what recordSession asks of a key recorded alone (a commitment, a creation time, an
    expiry after it, some key bits). ``raw_id``: the key id's 16 bytes, if already parsed."""
    if (raw_id or ids.parse_key_id(record.key_id)[1]) == bytes(16):
        raise BadInput("key_id is all zeros: such a key could be anchored but never revoked")
    if not any(record.commitment):
        raise BadInput("the key commitment is zero: give the SHA-256 digest of the key")
    if record.created_at == 0:
        raise BadInput("created_at is zero: give the key's creation time (Unix seconds)")
    if record.expires_at <= record.created_at:
        raise BadInput(f"expiry {record.expires_at} is not after creation {record.created_at}")
    if not 0 < record.final_key_bits < 2**32:
        raise BadInput(f"bits must be a positive 32-bit number, got {record.final_key_bits}")


def read_records(path: str | Path, *, now: int, default_ttl: int) -> list[KeyRecord]:
    """Key records from a JSON-lines file, one object per line.

    Fields: ``key_id`` (UUID), ``commitment`` (64 hex digits), ``vehicle``; optional
    ``qber`` (0-1, default 0), ``bits`` (default 256), ``protocol`` (bb84/e91),
    ``created_at`` (default ``now``), and ``expires_at`` or ``ttl`` seconds
    (default ``default_ttl``). A mistake is reported with its line number.
    """
    records: list[KeyRecord] = []
    seen: set[str] = set()
    for _number, where, item in _json_lines(path):
        if not isinstance(item, dict):
            raise BadInput(f"{where}: each line must be a JSON object")
        unknown = set(item) - _RECORD_FIELDS
        if unknown:
            raise BadInput(f"{where}: unknown field {sorted(unknown)[0]!r}")
        try:
            created = int(item.get("created_at", now))
            expires = (
                int(item["expires_at"])
                if "expires_at" in item
                else created + int(item.get("ttl", default_ttl))
            )
            record = KeyRecord(
                key_id=_canonical(item["key_id"]),
                commitment=ids.commitment(str(item["commitment"])),
                vehicle=str(item["vehicle"]),
                qber=float(item.get("qber", 0.0)),
                final_key_bits=int(item.get("bits", 256)),
                created_at=created,
                expires_at=expires,
                protocol=str(item.get("protocol", "bb84")),
            )
            ids.vehicle_id(record.vehicle)
            check_record(record)
            if expires <= now:
                raise BadInput(f"expiry {expires} is not after the chain's time {now}: already expired")
            record.leaf()  # every remaining range check
        except KeyError as exc:
            raise BadInput(f"{where}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise BadInput(f"{where}: {exc}") from None
        except BadInput as exc:
            raise BadInput(f"{where}: {exc}") from None
        key = str(record.key_id)
        if key in seen:
            raise BadInput(f"{where}: key {key} appears twice")
        seen.add(key)
        records.append(record)
    if not records:
        raise BadInput(f"{Path(path)} holds no records")
    return records


_RECORD_FIELDS = {
    "key_id",
    "commitment",
    "vehicle",
    "qber",
    "bits",
    "protocol",
    "created_at",
    "expires_at",
    "ttl",
}


def proof_document(record: KeyRecord, anchored: Anchored) -> dict[str, Any]:
    """What a receiver needs to admit a batched key: the record, its leaf, root and proof."""
    return {
        "key_id": str(record.key_id),
        "commitment": record.commitment.hex(),
        "vehicle": record.vehicle,
        "qber": record.qber,
        "bits": record.final_key_bits,
        "protocol": record.protocol,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "leaf": anchored.leaf.hex(),
        "root": anchored.root.hex(),
        "proof": [p.hex() for p in anchored.proof],
        "block": anchored.block_number,
        "tx_hash": anchored.tx_hash,
    }


def record_from_proof(document: dict[str, Any]) -> tuple[KeyRecord, bytes, list[bytes]]:
    """The record, root and proof back from :func:`proof_document`'s output.

    Root and proof elements must be bytes32 values and the record must make a leaf:
    anything else is no proof the contract can check.
    """
    try:
        record = KeyRecord(
            key_id=_canonical(document["key_id"]),
            commitment=bytes.fromhex(document["commitment"]),
            vehicle=str(document["vehicle"]),
            qber=float(document["qber"]),
            final_key_bits=int(document["bits"]),
            created_at=int(document["created_at"]),
            expires_at=int(document["expires_at"]),
            protocol=str(document["protocol"]),
        )
        root = bytes.fromhex(document["root"])
        if not isinstance(document["proof"], list):
            raise BadInput("proof must be a list of 64-hex-digit hashes")
        proof = [bytes.fromhex(p) for p in document["proof"]]
        if len(root) != 32:
            raise BadInput(f"root is {len(root)} bytes, not 32")
        for index, node in enumerate(proof):
            if len(node) != 32:
                raise BadInput(f"proof element {index} is {len(node)} bytes, not 32")
        record.leaf()  # every remaining range check
    except (KeyError, TypeError, ValueError, BadInput) as exc:
        raise BadInput(f"not a key proof document ({exc})") from None
    return record, root, proof


def read_proofs(path: str | Path) -> dict[str, tuple[KeyRecord, bytes, list[bytes]]]:
    """Every key's record, root and proof from a file written by ``ledger anchor``, by key id.

    The whole file is read and checked, not only up to the key wanted: a damaged line or a
    key written twice means the file is not what ``anchor`` wrote (it writes each key once,
    to a new file), and of two proofs for one key the first is not known to be the right
    one. A mistake is reported with its line number.
    """
    proofs: dict[str, tuple[KeyRecord, bytes, list[bytes]]] = {}
    first_line: dict[str, int] = {}
    for number, where, item in _json_lines(path):
        if not isinstance(item, dict):
            raise BadInput(f"not a key proof document ({where} is not a JSON object)")
        try:
            record, root, proof = record_from_proof(item)
        except BadInput as exc:
            raise BadInput(f"{where}: {exc}") from None
        key = str(record.key_id)
        if key in first_line:
            raise BadInput(f"{where}: key {key} appears twice (first on line {first_line[key]})")
        first_line[key] = number
        proofs[key] = (record, root, proof)
    return proofs
