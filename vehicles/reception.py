"""Authenticated decryption of received frames, in this process or on a worker process.

Why: parsing a frame and opening it (AES-GCM or the one-time pad with its MAC) is about
a sixth of the simulator's time at 500 vehicles, while the second core idles once every
vehicle holds its first key. Nothing in the simulated world waits for a verdict: the
MAC, the keys and the ledger go on whatever it is; only the receivers' bookkeeping
(replay state, delivery counts, latency) needs it. So with a worker, the frames of one
mobility step go to it as one batch while the simulation runs the next step, and their
verdicts come back in the order the frames were received. In both modes the caller's
``apply`` gets each step's frames back as one batch, in that order, so a run's results do
not depend on which mode it used, and the caller can count a batch in a few NumPy passes
instead of a call per frame.

Key material reaches the worker in the same stream as the frames, so a key is always
there before the first frame that uses it. Ledger validation stays with the caller: it
reads the ledger view as it is at reception.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from qkd.workers import OneWorker, WorkerError, WorkerProcess, serve

from . import crypto

Apply = Callable[[list[Any], list[str]], None]  # (items, their verdicts), in open order


class ReceptionError(WorkerError):
    """The reception worker failed or died: verdicts are lost, so the run cannot go on."""


def verdict(decryptor: crypto.Decryptor, wire: bytes, keys: dict[str, np.ndarray]) -> str:
    """Parse and open one received frame: "ok", or the reason it was refused."""
    try:
        decryptor.open(crypto.Sealed.from_bytes(wire), keys.get)
    except crypto.Rejected as exc:
        return exc.reason
    return "ok"


class _Opener:
    """A receiver's decryptor and the key relay's material: what the worker keeps."""

    def __init__(self) -> None:
        self.decryptor = crypto.Decryptor()
        self.keys: dict[str, np.ndarray] = {}

    def handle(self, request: tuple[list[tuple[str, np.ndarray]], list[bytes]]) -> list[str]:
        new_keys, wires = request
        self.keys.update(new_keys)
        return [verdict(self.decryptor, wire, self.keys) for wire in wires]


class Reception(OneWorker):
    """``open(wire, item)`` queues a received frame; ``apply(items, verdicts)`` gets the
    queued items back with their verdicts, a batch at a time and in the order of the
    ``open`` calls, from :meth:`flush` (in process: the frames opened since the last
    flush; worker: the batch of the flush before, while the worker opens the newest).

    Call :meth:`flush` once per step and :meth:`settle` before reading results. Use as a
    context manager, or call :meth:`close`.
    """

    def __init__(self, apply: Apply, worker: bool = False) -> None:
        self._apply = apply
        self._local = _Opener()
        self.worker = worker
        self._worker = (
            WorkerProcess("vehicles.reception", error=ReceptionError, what="the reception worker")
            if worker
            else None
        )
        self._keys: list[tuple[str, np.ndarray]] = []
        self._wires: list[bytes] = []
        self._items: list[Any] = []
        self._in_flight: deque[tuple[Future[list[str]], list[Any]]] = deque()

    def add_key(self, key_id: str, material: np.ndarray) -> None:
        """Key material the key relay hands out from now on (never taken back, so a frame
        opened at the next flush sees every key it could have seen at once)."""
        if self._worker is None:
            self._local.keys[key_id] = material
        else:
            self._keys.append((key_id, material))

    def open(self, wire: bytes, item: Any) -> None:
        self._wires.append(wire)
        self._items.append(item)

    def flush(self) -> None:
        """Open (or send) what was received since the last flush; apply every batch but,
        with a worker, the newest."""
        wires, items = self._wires, self._items
        if self._worker is None:
            if wires:
                self._wires, self._items = [], []
                self._apply(items, self._local.handle(([], wires)))
            return
        if wires or self._keys:
            future = self._worker.submit((self._keys, wires))
            self._in_flight.append((future, items))
            self._keys, self._wires, self._items = [], [], []
        while len(self._in_flight) > 1:
            self._apply_oldest()

    def settle(self) -> None:
        """Every frame opened so far has its verdict applied."""
        self.flush()
        while self._in_flight:
            self._apply_oldest()

    def _apply_oldest(self) -> None:
        future, items = self._in_flight.popleft()
        verdicts = future.result()
        if len(verdicts) != len(items):
            raise ReceptionError(f"the reception worker answered {len(verdicts)} frames of {len(items)}")
        self._apply(items, verdicts)


if __name__ == "__main__":
    serve(_Opener().handle)
