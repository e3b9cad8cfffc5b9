"""A local, event-fed view of one KeyLedger: key validation in microseconds, off the chain.

Block finality (1-5 s on BFT chains) is far above a 100 ms V2X safety budget, so receivers
never ask the chain per message. ``LedgerView`` replays the contract's events (records,
revocations, vehicle epochs, anchored Merkle roots) into dictionaries; ``status`` and
``validate`` are then a few dictionary lookups, and ``sync`` keeps the view current. The
chain stays the source of truth: the view mirrors ``KeyLedger.keyStatus`` exactly
(revoked before expired; a key is revoked when its vehicle's epoch has moved on), and a
key revoked in any block the view has processed is never reported valid.

``save`` / ``load`` keep the state and the position of the last applied log, so a restart
replays only newer events. A view must start at or before the contract's deployment to
know every key; one started later still learns vehicle epochs from the chain (see
``_vehicle_epoch_before``) but misses older keys, revocations and roots.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from web3 import Web3

from . import ids, merkle
from .batcher import KeyRecord
from .chain import raw_log
from .client import KeyLedgerClient
from .errors import BadInput, LedgerError

VIEW_FORMAT = "qkd-iov/ledger-view/v1"
DEFAULT_BLOCK_RANGE = 2_000  # blocks per eth_getLogs: public nodes cap ranges and answer sizes
STATUSES = ("valid", "revoked", "expired", "unknown")
_ZERO16 = b"\x00" * 16


def key_label(raw_key_id: bytes) -> str:
    """The view's name for an on-chain key id: the UUID string, or 0x-hex when not a UUID."""
    raw = bytes(raw_key_id)
    if raw[16:] == _ZERO16:
        return str(uuid.UUID(bytes=raw[:16]))
    return "0x" + raw.hex()


def canonical_key_id(key_id: str | uuid.UUID | bytes) -> str | None:
    """Any accepted spelling of a key id (UUID string/object, 16 or 32 bytes, 0x-hex) or None."""
    if isinstance(key_id, uuid.UUID):
        return str(key_id)
    if isinstance(key_id, bytes | bytearray):
        if len(key_id) == 16:
            return str(uuid.UUID(bytes=bytes(key_id)))
        return key_label(bytes(key_id)) if len(key_id) == 32 else None
    text = str(key_id).strip()
    if text.startswith("0x") and len(text) == 66:
        try:
            return key_label(bytes.fromhex(text[2:]))
        except ValueError:
            return None
    try:
        return ids.parse_key_id(text)[0]
    except BadInput:
        return None


def _looks_canonical(text: str) -> bool:
    """The spelling ``str(uuid.UUID(...))`` gives (lowercase 8-4-4-4-12), checked cheaply."""
    return len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-" and text == text.lower()


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ViewKey:
    """One recorded session key as the view knows it (``vehicle_epoch`` at record time)."""

    key_id: str
    commitment: bytes
    vehicle_id: bytes
    key_manager: str
    qber_ppm: int
    final_key_bits: int
    protocol: int
    created_at: int
    expires_at: int
    vehicle_epoch: int
    block: int

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "commitment": self.commitment.hex(), "vehicle_id": self.vehicle_id.hex()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ViewKey:
        return cls(
            **{
                **data,
                "commitment": bytes.fromhex(data["commitment"]),
                "vehicle_id": bytes.fromhex(data["vehicle_id"]),
            }
        )


@dataclass(frozen=True, slots=True)
class Anchor:
    """An anchored Merkle batch root: how many records, who anchored it, when."""

    count: int
    key_manager: str
    block: int
    anchored_at: int  # the block's timestamp
    log_index: int = 0


@dataclass(frozen=True)
class ViewEvent:
    """A decoded contract event with its position in the chain."""

    name: str
    args: dict[str, Any]
    block: int
    log_index: int


EventListener = Callable[[ViewEvent], None]


# ---------------------------------------------------------------------------- the view


class LedgerView:
    """Read-side cache of a deployed KeyLedger, kept current by ``sync``."""

    def __init__(
        self,
        client: KeyLedgerClient,
        *,
        from_block: int = 0,
        max_block_range: int = DEFAULT_BLOCK_RANGE,
        confirmations: int = 0,
    ):
        if from_block < 0 or max_block_range < 1 or confirmations < 0:
            raise ValueError("from_block and confirmations must be >= 0, max_block_range >= 1")
        self.client = client
        self.from_block = from_block
        self.max_block_range = max_block_range
        self.confirmations = confirmations  # stay this many blocks behind the head (reorg-prone chains)
        self.next_block = from_block  # first block not fully processed
        self._cursor: tuple[int, int] = (-1, -1)  # (block, log index) of the last applied log
        self.events_applied = 0
        self._listeners: list[tuple[EventListener, frozenset[str] | None]] = []
        self._block_times: dict[int, int] = {}
        self._reset_state()

    def _reset_state(self) -> None:
        self._keys: dict[str, ViewKey] = {}
        self._revoked: dict[str, str] = {}  # key id -> reason
        self._vehicle_epoch: dict[bytes, int] = {}
        self._registered: dict[bytes, bool] = {}
        self._vehicle_revocations: dict[bytes, list[str]] = {}
        self._anchors: dict[bytes, Anchor] = {}
        # vehicle -> [(block, log index, new epoch)]: what a batched key's epoch was at its anchor
        self._epoch_history: dict[bytes, list[tuple[int, int, int]]] = {}
        self._batched: dict[str, ViewKey] = {}  # admitted with an inclusion proof (``admit``)
        self._verifications: dict[str, list[int]] = {}  # key id -> [passed, failed]
        self._roles: dict[bytes, set[str]] = {}
        self.paused = False

    def __repr__(self) -> str:
        return (
            f"LedgerView(address={self.client.address}, next_block={self.next_block}, "
            f"keys={len(self._keys)}, revoked={len(self._revoked)}, vehicles={len(self._vehicle_epoch)}, "
            f"anchors={len(self._anchors)})"
        )

    def __len__(self) -> int:
        return len(self._keys) + len(self._batched)

    # ------------------------------------------------------------------ queries (hot path)
    def _lookup(self, key_id: str | uuid.UUID | bytes) -> ViewKey | None:
        if type(key_id) is str:
            record = self._keys.get(key_id) or self._batched.get(key_id)
            if record is not None or _looks_canonical(key_id):
                return record  # a canonical UUID string that missed is unknown: skip parsing
        canonical = canonical_key_id(key_id)
        if canonical is None:
            return None
        return self._keys.get(canonical) or self._batched.get(canonical)

    def _revoked_now(self, record: ViewKey) -> bool:
        return record.key_id in self._revoked or (
            record.vehicle_epoch != self._vehicle_epoch.get(record.vehicle_id, 0)
        )

    def status(self, key_id: str | uuid.UUID | bytes, now: float) -> str:
        """valid / revoked / expired / unknown, exactly as ``keyStatus`` at block time ``now``."""
        record = self._lookup(key_id)
        if record is None:
            return "unknown"
        if self._revoked_now(record):
            return "revoked"
        if now >= record.expires_at:
            return "expired"
        return "valid"

    def validate(
        self, key_id: str | uuid.UUID | bytes, commitment: bytes | None, now: float
    ) -> tuple[bool, str]:
        """(ok, reason): reason is valid, unrecorded, revoked, expired or commitment-mismatch."""
        record = self._lookup(key_id)
        if record is None:
            return False, "unrecorded"
        if self._revoked_now(record):
            return False, "revoked"
        if now >= record.expires_at:
            return False, "expired"
        if commitment is not None and not hmac.compare_digest(record.commitment, bytes(commitment)):
            return False, "commitment-mismatch"
        return True, "valid"

    def record(self, key_id: str | uuid.UUID | bytes) -> ViewKey | None:
        return self._lookup(key_id)

    def revocation_reason(self, key_id: str | uuid.UUID | bytes) -> str | None:
        """Why a key was revoked individually (vehicle-wide revocations: ``vehicle_revocations``)."""
        record = self._lookup(key_id)
        return None if record is None else self._revoked.get(record.key_id)

    def vehicle_epoch(self, vehicle: str) -> int:
        return self._vehicle_epoch.get(ids.vehicle_id(vehicle), 0)

    def is_registered(self, vehicle: str) -> bool:
        return self._registered.get(ids.vehicle_id(vehicle), False)

    def vehicle_revocations(self, vehicle: str) -> list[str]:
        return list(self._vehicle_revocations.get(ids.vehicle_id(vehicle), []))

    def verifications(self, key_id: str | uuid.UUID | bytes) -> tuple[int, int]:
        """(passed, failed) verification results recorded on chain for a key."""
        canonical = canonical_key_id(key_id)
        passed, failed = self._verifications.get(canonical or "", (0, 0))
        return passed, failed

    def has_role(self, role: str, account: str) -> bool:
        return Web3.to_checksum_address(account) in self._roles.get(bytes(ids.role(role)), set())

    def anchor(self, root: bytes) -> Anchor | None:
        return self._anchors.get(bytes(root))

    def verify_inclusion(self, root: bytes, proof: Sequence[bytes], leaf: bytes) -> bool:
        """The contract's ``verifyInclusion``, locally: only for roots this view saw anchored."""
        if bytes(root) not in self._anchors:
            return False
        return merkle.verify(bytes(root), [bytes(p) for p in proof], bytes(leaf))

    def key_ids(self) -> list[str]:
        """Every key the view knows: recorded one by one, or admitted from an anchored batch."""
        return [*self._keys, *self._batched]

    def admit(self, record: KeyRecord, root: bytes, proof: Sequence[bytes]) -> str:
        """Learn a Merkle-batched key from its record and inclusion proof.

        A batch anchors only its root on chain, so no event names its keys: whoever
        hands out the key (the key relay) hands over the record and proof with it. The
        view accepts it only under a root it has seen anchored and only if the proof
        verifies, exactly what ``verifyInclusion`` checks on chain. The key then belongs to
        the vehicle epoch current at the anchor, so revoking the vehicle afterwards
        revokes it. Returns "admitted", or why not: "root-not-anchored" (sync first),
        "bad-proof", "unregistered" or "conflict" (a different record under that id).
        """
        anchor = self._anchors.get(bytes(root))
        if anchor is None:
            return "root-not-anchored"
        leaf = record.leaf()
        if not merkle.verify(bytes(root), [bytes(p) for p in proof], leaf):
            return "bad-proof"
        vehicle = ids.vehicle_id(record.vehicle)
        if not self._registered.get(vehicle, False):
            return "unregistered"
        key_id = str(canonical_key_id(record.key_id))
        known = self._lookup(key_id)
        if known is not None:
            same = hmac.compare_digest(known.commitment, bytes(record.commitment))
            return "admitted" if same else "conflict"
        self._batched[key_id] = ViewKey(
            key_id=key_id,
            commitment=bytes(record.commitment),
            vehicle_id=vehicle,
            key_manager=anchor.key_manager,
            qber_ppm=round(record.qber * 1_000_000),
            final_key_bits=int(record.final_key_bits),
            protocol=ids.protocol(record.protocol),
            created_at=int(record.created_at),
            expires_at=int(record.expires_at),
            vehicle_epoch=self._epoch_at(vehicle, (anchor.block, anchor.log_index)),
            block=anchor.block,
        )
        return "admitted"

    def _epoch_at(self, vehicle: bytes, position: tuple[int, int]) -> int:
        """The vehicle's epoch just after the log at ``position`` (from the history kept)."""
        epoch = None
        for block, log_index, new_epoch in self._epoch_history.get(vehicle, ()):
            if (block, log_index) > position:
                break
            epoch = new_epoch
        if epoch is None:  # no change seen before the anchor: the view started after it
            return self._vehicle_epoch_before(vehicle, position[0])
        return epoch

    # ------------------------------------------------------------------ listeners
    def on_event(self, listener: EventListener, names: Iterable[str] | None = None) -> None:
        """Call ``listener`` after each applied event (only those in ``names`` if given).

        A listener that raises stops ``sync`` there; the event stays applied and the next
        ``sync`` resumes after it.
        """
        self._listeners.append((listener, frozenset(names) if names is not None else None))

    # ------------------------------------------------------------------ syncing
    def sync(self, to_block: int | None = None) -> int:
        """Apply every new event up to the head (less ``confirmations``); returns how many.

        On an HTTP node a short gap takes one JSON-RPC batch (head and logs together);
        otherwise one ``eth_getLogs`` per ``max_block_range`` blocks after the head.
        """
        if to_block is None:
            batched = self._head_and_logs()
            if batched is not None:
                head, logs = batched
                applied = self._apply_logs(logs)
                self.next_block = max(self.next_block, head + 1)
                self._block_times.clear()
                return applied
        w3 = self.client.w3
        head = int(w3.eth.block_number) - self.confirmations
        if to_block is not None:
            head = min(head, to_block)
        applied = 0
        while self.next_block <= head:
            end = min(head, self.next_block + self.max_block_range - 1)
            logs = w3.eth.get_logs(
                {"address": self.client.address, "fromBlock": self.next_block, "toBlock": end}
            )
            applied += self._apply_logs(logs)
            self.next_block = end + 1
            self._block_times.clear()
        return applied

    def _head_and_logs(self) -> tuple[int, list[dict[str, Any]]] | None:
        """The head (less ``confirmations``) and the logs after ``next_block`` up to it, in
        one JSON-RPC batch: a sync is then one round trip to a node instead of two.

        The logs are asked up to "latest" in the same batch, so any from a block mined
        after the head was read are left for the next sync. None where the node cannot
        batch, the gap is longer than ``max_block_range`` or the answer is unexpected;
        ``sync`` then goes block range by block range.
        """
        rpc = self.client.rpc()
        if not rpc.batches:
            return None
        try:
            number, found = rpc.batch(
                [
                    ("eth_blockNumber", []),
                    (
                        "eth_getLogs",
                        [
                            {
                                "address": self.client.address,
                                "fromBlock": hex(self.next_block),
                                "toBlock": "latest",
                            }
                        ],
                    ),
                ]
            )
            head = int(number["result"], 16) - self.confirmations
            if head < self.next_block:
                return head, []  # nothing new (a node may refuse logs from beyond its head)
            if head - self.next_block + 1 > self.max_block_range:
                return None
            logs = [raw_log(log) for log in found["result"]]
        except (LedgerError, KeyError, TypeError, ValueError):
            return None
        return head, [log for log in logs if log["blockNumber"] <= head]

    def _apply_logs(self, logs: Iterable[Any]) -> int:
        """Apply logs in chain order, skipping removed ones and any applied before."""
        applied = 0
        for log in sorted(logs, key=lambda entry: (int(entry["blockNumber"]), int(entry["logIndex"]))):
            if log.get("removed"):
                continue
            position = (int(log["blockNumber"]), int(log["logIndex"]))
            if position <= self._cursor:
                continue  # applied before a listener interrupted the previous sync
            decoded = self.client.log_decoder.decode(log)
            stamp = log.get("blockTimestamp")  # the node sent the time: no block request for it
            if stamp is not None:
                seconds = int(stamp, 16) if isinstance(stamp, str) else int(stamp)  # raw or via web3
                self._block_times.setdefault(position[0], seconds)
            if decoded is None:
                self._cursor = position  # not one of ours: nothing to apply
                continue
            self.apply(ViewEvent(decoded[0], decoded[1], *position))
            applied += 1
        return applied

    def apply(self, event: ViewEvent) -> None:
        """Apply one decoded event, then tell the listeners (public for replays and benchmarks)."""
        handler = self._HANDLERS.get(event.name)
        if handler is not None:
            handler(self, event)
        # a handler that raised leaves the cursor behind, so the next sync retries the event
        self._cursor = max(self._cursor, (event.block, event.log_index))
        self.events_applied += 1
        for listener, names in self._listeners:
            if names is None or event.name in names:
                listener(event)

    # ------------------------------------------------------------------ event handlers
    def _set_epoch(self, vehicle: bytes, epoch: int, event: ViewEvent) -> None:
        self._vehicle_epoch[vehicle] = epoch
        self._epoch_history.setdefault(vehicle, []).append((event.block, event.log_index, epoch))

    def _on_vehicle_registered(self, event: ViewEvent) -> None:
        vehicle = bytes(event.args["vehicleId"])
        self._registered[vehicle] = True
        self._set_epoch(vehicle, int(event.args["epoch"]), event)

    def _on_vehicle_deregistered(self, event: ViewEvent) -> None:
        vehicle = bytes(event.args["vehicleId"])
        self._registered[vehicle] = False
        self._set_epoch(vehicle, int(event.args["newEpoch"]), event)

    def _on_vehicle_keys_revoked(self, event: ViewEvent) -> None:
        vehicle = bytes(event.args["vehicleId"])
        self._registered.setdefault(vehicle, True)  # the contract revokes registered vehicles only
        self._set_epoch(vehicle, int(event.args["newEpoch"]), event)
        self._vehicle_revocations.setdefault(vehicle, []).append(str(event.args["reason"]))

    def _on_session_recorded(self, event: ViewEvent) -> None:
        args = event.args
        vehicle = bytes(args["vehicleId"])
        epoch = self._vehicle_epoch.get(vehicle)
        if epoch is None:
            epoch = self._vehicle_epoch[vehicle] = self._vehicle_epoch_before(vehicle, event.block)
            self._registered[vehicle] = True
        key_id = key_label(bytes(args["keyId"]))
        self._keys[key_id] = ViewKey(
            key_id=key_id,
            commitment=bytes(args["commitment"]),
            vehicle_id=vehicle,
            key_manager=str(args["keyManager"]),
            qber_ppm=int(args["qberPpm"]),
            final_key_bits=int(args["finalKeyBits"]),
            protocol=int(args["protocol"]),
            created_at=int(args["createdAt"]),
            expires_at=int(args["expiresAt"]),
            vehicle_epoch=epoch,
            block=event.block,
        )

    def _vehicle_epoch_before(self, vehicle: bytes, block: int) -> int:
        """Epoch of a vehicle first seen in a record (the view started after it registered).

        No epoch change of this vehicle was applied, so none happened between the view's
        start and this record: the state at the end of the previous block is exact.
        """
        _, epoch, _ = self.client.contract.functions.vehicle(vehicle).call(block_identifier=max(block - 1, 0))
        return int(epoch)

    def _on_key_revoked(self, event: ViewEvent) -> None:
        self._revoked[key_label(bytes(event.args["keyId"]))] = str(event.args["reason"])

    def _on_key_verified(self, event: ViewEvent) -> None:
        counts = self._verifications.setdefault(key_label(bytes(event.args["keyId"])), [0, 0])
        counts[0 if event.args["ok"] else 1] += 1

    def _on_batch_anchored(self, event: ViewEvent) -> None:
        self._anchors[bytes(event.args["root"])] = Anchor(
            count=int(event.args["count"]),
            key_manager=str(event.args["keyManager"]),
            block=event.block,
            anchored_at=self._block_time(event.block),
            log_index=event.log_index,
        )

    def _block_time(self, block: int) -> int:
        if block not in self._block_times:
            self._block_times[block] = int(self.client.w3.eth.get_block(block)["timestamp"])
        return self._block_times[block]

    def _on_paused(self, event: ViewEvent) -> None:
        self.paused = True

    def _on_unpaused(self, event: ViewEvent) -> None:
        self.paused = False

    def _on_role_granted(self, event: ViewEvent) -> None:
        self._roles.setdefault(bytes(event.args["role"]), set()).add(str(event.args["account"]))

    def _on_role_revoked(self, event: ViewEvent) -> None:
        self._roles.setdefault(bytes(event.args["role"]), set()).discard(str(event.args["account"]))

    _HANDLERS: ClassVar[dict[str, Callable[[LedgerView, ViewEvent], None]]] = {
        "VehicleRegistered": _on_vehicle_registered,
        "VehicleDeregistered": _on_vehicle_deregistered,
        "VehicleKeysRevoked": _on_vehicle_keys_revoked,
        "SessionRecorded": _on_session_recorded,
        "KeyRevoked": _on_key_revoked,
        "KeyVerified": _on_key_verified,
        "BatchAnchored": _on_batch_anchored,
        "Paused": _on_paused,
        "Unpaused": _on_unpaused,
        "RoleGranted": _on_role_granted,
        "RoleRevoked": _on_role_revoked,
    }

    # ------------------------------------------------------------------ snapshot and persistence
    def snapshot(self) -> dict[str, Any]:
        """Everything the view knows, JSON-ready; two views are equal when their snapshots are."""
        return {
            "next_block": self.next_block,
            "cursor": list(self._cursor),
            "events_applied": self.events_applied,
            "paused": self.paused,
            "keys": {k: r.as_json() for k, r in self._keys.items()},
            "revoked": dict(self._revoked),
            "vehicles": {
                v.hex(): {
                    "registered": self._registered.get(v, False),
                    "epoch": epoch,
                    "revocations": list(self._vehicle_revocations.get(v, [])),
                }
                for v, epoch in self._vehicle_epoch.items()
            },
            "anchors": {root.hex(): asdict(a) for root, a in self._anchors.items()},
            "epoch_history": {v.hex(): [list(h) for h in hist] for v, hist in self._epoch_history.items()},
            "batched": {k: r.as_json() for k, r in self._batched.items()},
            "verifications": {k: list(v) for k, v in self._verifications.items()},
            "roles": {role.hex(): sorted(accounts) for role, accounts in self._roles.items()},
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LedgerView):
            return NotImplemented
        return self.client.address == other.client.address and self.snapshot() == other.snapshot()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def save(self, path: str | Path) -> Path:
        """Write the state atomically (temp file, fsync, rename): a crash leaves the old file."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "format": VIEW_FORMAT,
            "chain_id": self.client.chain.chain_id,
            "address": self.client.address,
            "from_block": self.from_block,
            "state": self.snapshot(),
        }
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("w") as fh:
                json.dump(document, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return target

    @classmethod
    def load(cls, path: str | Path, client: KeyLedgerClient, **options: Any) -> LedgerView:
        """A view restored from ``save``; the next ``sync`` applies only later events."""
        source = Path(path)
        try:
            document = json.loads(source.read_text())
            if document.get("format") != VIEW_FORMAT:
                raise LedgerError(f"{source} is not a saved ledger view ({document.get('format')!r})")
            if int(document["chain_id"]) != client.chain.chain_id or (
                Web3.to_checksum_address(document["address"]) != client.address
            ):
                raise LedgerError(
                    f"{source} is a view of {document['address']} on chain {document['chain_id']}, "
                    f"not of {client.address} on chain {client.chain.chain_id}"
                )
            view = cls(client, from_block=int(document["from_block"]), **options)
            view._restore(document["state"])
        except OSError as exc:
            raise LedgerError(f"cannot read the ledger view {source}: {exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise LedgerError(f"{source} is corrupt ({exc}): delete it to rebuild from the chain") from None
        return view

    def _restore(self, state: dict[str, Any]) -> None:
        self._reset_state()
        self.next_block = int(state["next_block"])
        block, index = state["cursor"]
        self._cursor = (int(block), int(index))
        self.events_applied = int(state["events_applied"])
        self.paused = bool(state["paused"])
        self._keys = {k: ViewKey.from_json(r) for k, r in state["keys"].items()}
        self._revoked = {str(k): str(v) for k, v in state["revoked"].items()}
        for vehicle_hex, info in state["vehicles"].items():
            vehicle = bytes.fromhex(vehicle_hex)
            self._vehicle_epoch[vehicle] = int(info["epoch"])
            self._registered[vehicle] = bool(info["registered"])
            if info["revocations"]:
                self._vehicle_revocations[vehicle] = [str(r) for r in info["revocations"]]
        self._anchors = {bytes.fromhex(root): Anchor(**a) for root, a in state["anchors"].items()}
        self._epoch_history = {
            bytes.fromhex(v): [(int(b), int(i), int(e)) for b, i, e in hist]
            for v, hist in state.get("epoch_history", {}).items()
        }
        self._batched = {k: ViewKey.from_json(r) for k, r in state.get("batched", {}).items()}
        self._verifications = {k: [int(v[0]), int(v[1])] for k, v in state["verifications"].items()}
        self._roles = {bytes.fromhex(role): set(accounts) for role, accounts in state["roles"].items()}
