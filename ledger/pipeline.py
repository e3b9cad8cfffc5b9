"""Pipelined submission: many pre-signed transactions in flight from several accounts.

``KeyLedgerClient.transact`` is the careful one-at-a-time path: estimate, sign, send, wait,
about eight JSON-RPC round trips through web3's middleware for every transaction. A node
mines far more than that allows, so bulk work goes through a ``TxPipeline``, which:

- signs raw transactions locally with coincurve and builds their RLP here, so neither
  web3's middleware nor eth_account's validation is on the hot path (``FastSigner``;
  a test checks its bytes against eth_account's);
- keeps each account's nonce locally and spreads work over several key-manager accounts
  (Besu, for one, limits how many pooled transactions a single sender may have);
- sends JSON-RPC batches kept under common node limits on item count and body size;
- collects receipts in a background thread: one ``eth_getBlockReceipts`` per new block
  where the node has it, otherwise batches of ``eth_getTransactionReceipt``.

Only receipts count. A transaction is done when it is mined; a mined revert is reported
as a failure with its hash, never as a success. A transaction the node refuses is retried
with the same nonce; if it is still refused the pipeline stops rather than leave a nonce
gap that a later transaction would have to fill by replacing another.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount

from .chain import MAX_BATCH_ITEMS, JsonRpc
from .client import KeyLedgerClient, _is_revert, _revert_data
from .errors import BadInput, LedgerError
from .signing import FastSigner

SEND_RETRIES = 3
MAX_POLL_S = 0.1  # receipt polling backs off to this while no block comes
GAS_MARGIN = 1.25  # on top of one estimate per function: same-shaped calls cost alike


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _field(receipt: dict[str, Any], name: str) -> Any:
    """A receipt field by its JSON-RPC name, or eth-tester's snake_case spelling of it."""
    if name in receipt:
        return receipt[name]
    return receipt["".join("_" + c.lower() if c.isupper() else c for c in name)]


def _hex(value: Any) -> str:
    return value.lower() if isinstance(value, str) else "0x" + bytes(value).hex()


# ---------------------------------------------------------------------------- the pipeline


@dataclass(frozen=True)
class MinedTx:
    """A receipt seen for one pipelined transaction."""

    tx_hash: str
    function: str
    sender: str
    nonce: int
    ok: bool
    block_number: int
    gas_used: int
    sent_at: float  # time.perf_counter() when the batch carrying it was answered
    mined_at: float  # time.perf_counter() when its receipt was seen


@dataclass
class _InFlight:
    function: str
    sender: str
    nonce: int
    sent_at: float
    on_mined: Callable[[MinedTx], None] | None


class TxPipeline:
    """Many contract calls in flight at once; use as a context manager.

    ``submit_many`` signs and sends without waiting; receipts arrive in a background
    thread, which calls each transaction's ``on_mined`` and counts it. ``wait`` blocks
    until everything sent is mined. Leaving the ``with`` block waits too, so nothing
    submitted is abandoned.
    """

    def __init__(
        self,
        client: KeyLedgerClient,
        accounts: Sequence[LocalAccount] | None = None,
        *,
        max_in_flight: int = 20_000,
        poll_s: float = 0.02,
        chunk: int = 500,
        timeout_s: float = 120.0,
    ) -> None:
        if max_in_flight < 1 or chunk < 1 or poll_s <= 0:
            raise BadInput("max_in_flight and chunk must be at least 1, poll_s positive")
        self.client = client
        self.chain = client.chain
        self._signers = [FastSigner(a) for a in (accounts or [client.sender])]
        if len({s.address for s in self._signers}) != len(self._signers):
            raise BadInput("each pipeline account must be distinct")
        self._next_signer = itertools.cycle(range(len(self._signers)))
        self._nonces: dict[str, int] = {}
        self._gas: dict[str, int] = {}
        self._rpc = JsonRpc(client.w3)
        self._to = bytes.fromhex(client.address[2:])
        self.max_in_flight = max_in_flight
        self.poll_s = poll_s
        self.chunk = chunk
        self.timeout_s = timeout_s
        self._in_flight: dict[str, _InFlight] = {}
        self._settling = 0  # receipts taken whose callbacks have not finished
        self._cond = threading.Condition()
        self._submit_lock = threading.Lock()  # one signer of nonces at a time; threads may share a pipeline
        self._stop = threading.Event()
        self._collector: threading.Thread | None = None
        self._collector_error: BaseException | None = None
        self._broken: str | None = None
        self.sent = 0
        self.mined = 0
        self.failed: list[MinedTx] = []
        self.gas_used = 0
        self.last_mined_at = 0.0

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> TxPipeline:
        self.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None:
                self.wait()
        finally:
            self.close()

    def start(self) -> None:
        # The embedded chain mines on send and ``_send`` takes each receipt there, so it
        # needs no collector (polling it would only contend for the interpreter).
        if self._collector is None and self.chain.name != "embedded":
            self._collector = threading.Thread(target=self._collect, name="receipts", daemon=True)
            self._collector.start()

    def close(self) -> None:
        self._stop.set()
        if self._collector is not None:
            self._collector.join()
            self._collector = None
        self._rpc.close()

    @property
    def accounts(self) -> list[str]:
        return [s.address for s in self._signers]

    @property
    def in_flight(self) -> int:
        with self._cond:
            return len(self._in_flight)

    # ------------------------------------------------------------------ sending
    def _gas_for(self, function: str, data: bytes, sender: str) -> int:
        """One estimate per function, with a margin; a revert is raised before anything is sent."""
        if function not in self._gas:
            call = {"from": sender, "to": self.client.address, "data": "0x" + data.hex()}
            try:
                self._gas[function] = int(self.client._gas_limit(call) * GAS_MARGIN)
            except Exception as exc:
                if _is_revert(exc):
                    raise self.client.errors.refusal(function, _revert_data(exc)) from None
                raise LedgerError(f"{function}: gas estimation failed: {exc}") from exc
        return self._gas[function]

    def _nonce(self, address: str) -> int:
        if address not in self._nonces:
            self._nonces[address] = _int(self._rpc.call("eth_getTransactionCount", [address, "pending"]))
        nonce = self._nonces[address]
        self._nonces[address] = nonce + 1
        return nonce

    def submit(self, function: str, *args: Any, on_mined: Callable[[MinedTx], None] | None = None) -> str:
        return self.submit_many([(function, args)], on_mined=on_mined)[0]

    def submit_many(
        self,
        calls: Sequence[tuple[str, Sequence[Any]]],
        *,
        on_mined: Callable[[MinedTx], None] | None = None,
    ) -> list[str]:
        """Sign and send every call (round robin over the accounts); returns the hashes."""
        if self._broken:
            raise LedgerError(f"the pipeline stopped: {self._broken}")
        if self._collector is None and self.chain.name != "embedded":
            raise LedgerError("start the pipeline first (use it in a `with` block)")
        hashes: list[str] = []
        for start in range(0, len(calls), self.chunk):
            with self._submit_lock:
                hashes += self._submit_chunk(calls[start : start + self.chunk], on_mined)
        return hashes

    def _submit_chunk(
        self, part: Sequence[tuple[str, Sequence[Any]]], on_mined: Callable[[MinedTx], None] | None
    ) -> list[str]:
        self._throttle(len(part))
        fees = self.client._fees()
        signed: list[tuple[str, str, int, str, bytes]] = []  # (function, sender, nonce, hash, raw)
        for function, args in part:
            signer = self._signers[next(self._next_signer)]
            data = self.client.encode_call(function, args)
            gas = self._gas_for(function, data, signer.address)
            nonce = self._nonce(signer.address)
            raw, tx_hash = signer.sign(
                chain_id=self.chain.chain_id, nonce=nonce, gas=gas, to=self._to, data=data, fees=fees
            )
            signed.append((function, signer.address, nonce, "0x" + tx_hash.hex(), raw))
        with self._cond:  # registered before sending: a fast node may mine before we return
            for function, sender, nonce, tx_hash, _ in signed:
                self._in_flight[tx_hash] = _InFlight(function, sender, nonce, 0.0, on_mined)
        self._send(signed)
        return [tx_hash for _, _, _, tx_hash, _ in signed]

    def _throttle(self, incoming: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while self._in_flight and len(self._in_flight) + incoming > self.max_in_flight:
                if self._collector_error is not None:
                    raise LedgerError(f"receipt collection failed: {self._collector_error}")
                if not self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                    stuck = len(self._in_flight)
                    raise LedgerError(f"{stuck} transactions not mined in {self.timeout_s:.0f} s")

    def _send(self, signed: list[tuple[str, str, int, str, bytes]]) -> None:
        waiting = signed
        for attempt in range(SEND_RETRIES + 1):
            mined: list[dict[str, Any]] = []
            if self.chain.name == "embedded":  # journaled, one at a time (automine)
                replies = []
                for *_, raw in waiting:
                    try:
                        tx_hash = self.chain.send_raw_transaction(raw)
                        replies.append({"result": True})
                    except Exception as exc:
                        replies.append({"error": {"message": str(exc)}})
                        continue
                    # mined on send: take the receipt now rather than have the collector poll
                    mined.append(self._rpc.call("eth_getTransactionReceipt", ["0x" + tx_hash.hex()]))
            else:
                sends = [("eth_sendRawTransaction", ["0x" + raw.hex()]) for *_, raw in waiting]
                replies = self._rpc.batch(sends)
            answered = time.perf_counter()
            refused = []
            with self._cond:
                for item, reply in zip(waiting, replies, strict=True):
                    error = reply.get("error")
                    message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
                    if error is not None and "already known" not in message.lower():
                        refused.append((item, message))
                        continue
                    pending = self._in_flight.get(item[3])
                    if pending is not None:
                        pending.sent_at = answered
                self.sent += len(waiting) - len(refused)
            self._complete(mined)
            if not refused:
                return
            waiting = [item for item, _ in refused]
            if attempt < SEND_RETRIES:
                time.sleep(0.2 * (attempt + 1))
        with self._cond:
            for item in waiting:
                self._in_flight.pop(item[3], None)
            self._cond.notify_all()
        self._broken = f"the node refused {len(waiting)} transaction(s): {refused[0][1]}"
        raise LedgerError(self._broken)

    # ------------------------------------------------------------------ receipts
    def wait(self, timeout_s: float | None = None) -> None:
        """Block until every transaction sent so far is mined (or raise)."""
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.timeout_s)
        with self._cond:
            while self._in_flight or self._settling:
                if self._collector_error is not None:
                    raise LedgerError(f"receipt collection failed: {self._collector_error}")
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._collector is None and self.chain.name != "embedded"):
                    raise LedgerError(f"{len(self._in_flight)} transactions not mined in time")
                self._cond.wait(timeout=min(remaining, 0.5))

    def _collect(self) -> None:
        """Poll for receipts: every ``poll_s`` while blocks keep coming, backing off to
        ``MAX_POLL_S`` while they do not (an interval-mining node makes one a second, and
        each idle poll takes the interpreter from the thread that is signing)."""
        rpc = JsonRpc(self.client.w3)  # its own HTTP session: requests' sessions are per thread
        try:
            by_block = rpc.batches and self._block_receipts_supported(rpc)
            seen_block = _int(rpc.call("eth_blockNumber", [])) - 1
            wait = self.poll_s
            while not self._stop.is_set():  # ``wait`` drains; ``close`` stops at once
                if not self._in_flight:
                    self._stop.wait(self.poll_s)
                    continue
                found = 0
                if by_block:
                    head = _int(rpc.call("eth_blockNumber", []))
                    if head > seen_block:
                        blocks = list(range(seen_block + 1, head + 1))
                        replies = rpc.batch([("eth_getBlockReceipts", [hex(b)]) for b in blocks])
                        receipts = [r for reply in replies for r in (reply.get("result") or [])]
                        if any("error" in reply for reply in replies):
                            raise LedgerError(f"eth_getBlockReceipts failed: {replies[0].get('error')}")
                        self._complete(receipts)
                        seen_block = head
                        found = len(blocks)
                else:
                    with self._cond:
                        oldest = list(itertools.islice(self._in_flight, MAX_BATCH_ITEMS))
                    replies = rpc.batch([("eth_getTransactionReceipt", [h]) for h in oldest])
                    receipts = [r["result"] for r in replies if r.get("result")]
                    self._complete(receipts)
                    found = len(receipts)
                wait = self.poll_s if found else min(2 * wait, max(MAX_POLL_S, self.poll_s))
                self._stop.wait(wait)
        except BaseException as exc:  # surfaced by wait()/submit
            with self._cond:
                self._collector_error = exc
                self._cond.notify_all()
        finally:
            rpc.close()

    @staticmethod
    def _block_receipts_supported(rpc: JsonRpc) -> bool:
        reply = rpc.batch([("eth_getBlockReceipts", ["latest"])])[0]
        return "error" not in reply and isinstance(reply.get("result"), list)

    def _complete(self, receipts: list[dict[str, Any]]) -> None:
        now = time.perf_counter()
        done: list[tuple[MinedTx, Callable[[MinedTx], None] | None]] = []
        with self._cond:
            for receipt in receipts:
                tx_hash = _hex(_field(receipt, "transactionHash"))
                pending = self._in_flight.pop(tx_hash, None)
                if pending is None:
                    continue
                mined = MinedTx(
                    tx_hash=tx_hash,
                    function=pending.function,
                    sender=pending.sender,
                    nonce=pending.nonce,
                    ok=_int(receipt["status"]) == 1,
                    block_number=_int(_field(receipt, "blockNumber")),
                    gas_used=_int(_field(receipt, "gasUsed")),
                    sent_at=pending.sent_at,
                    mined_at=now,
                )
                self.mined += 1
                self.gas_used += mined.gas_used
                self.last_mined_at = now
                if not mined.ok:
                    self.failed.append(mined)
                done.append((mined, pending.on_mined))
            self._settling += len(done)
        # Callbacks run outside the lock (they take their owners' locks, which may be held
        # by a thread that is submitting); ``wait`` returns only once they have all run.
        try:
            for mined, callback in done:
                if callback is not None:
                    callback(mined)
        finally:
            with self._cond:
                self._settling -= len(done)
                self._cond.notify_all()
