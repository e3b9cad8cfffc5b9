"""Authenticated decryption of received frames, in this process or on a worker process.

Why: parsing a frame and opening it (AES-GCM or the one-time pad with its MAC) is about
a sixth of the simulator's time at 500 vehicles, while the second core idles once every
vehicle holds its first key. Nothing in the simulated world waits for a verdict: the
MAC, the keys and the ledger go on whatever it is; only the receivers' bookkeeping
(replay state, delivery counts, latency) needs it. So with a worker, the frames of one
mobility step go to it as one batch while the simulation runs the next step, and their
verdicts come back in the order the frames were received. Every ``then`` runs in that
order, in both modes, so a run's results do not depend on which mode it used.

Key material reaches the worker in the same stream as the frames, so a key is always
there before the first frame that uses it. Ledger validation stays with the caller: it
reads the ledger view as it is at reception.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from qkd.workers import OneWorker, WorkerError, WorkerProcess, serve

from . import crypto

Then = Callable[[str], None]


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
    """``open(wire, then)``: ``then(verdict)`` runs at once (no worker) or after a later
    :meth:`flush` (worker), in the order of the ``open`` calls either way.

    With a worker, call :meth:`flush` once per step (it sends what this step received
    and applies the verdicts of the step before) and :meth:`settle` before reading
    results. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, worker: bool = False) -> None:
        self._local = _Opener()
        self.worker = worker
        self._worker = (
            WorkerProcess("vehicles.reception", error=ReceptionError, what="the reception worker")
            if worker
            else None
        )
        self._keys: list[tuple[str, np.ndarray]] = []
        self._wires: list[bytes] = []
        self._thens: list[Then] = []
        self._in_flight: deque[tuple[Future[list[str]], list[Then]]] = deque()

    def add_key(self, key_id: str, material: np.ndarray) -> None:
        """Key material the key relay hands out from now on."""
        if self._worker is None:
            self._local.keys[key_id] = material
        else:
            self._keys.append((key_id, material))

    def open(self, wire: bytes, then: Then) -> None:
        if self._worker is None:
            then(verdict(self._local.decryptor, wire, self._local.keys))
            return
        self._wires.append(wire)
        self._thens.append(then)

    def flush(self) -> None:
        """Send what was received since the last flush; apply all verdicts but the newest batch's."""
        if self._worker is None:
            return
        if self._wires or self._keys:
            future = self._worker.submit((self._keys, self._wires))
            self._in_flight.append((future, self._thens))
            self._keys, self._wires, self._thens = [], [], []
        while len(self._in_flight) > 1:
            self._apply_oldest()

    def settle(self) -> None:
        """Every frame opened so far has its verdict applied."""
        self.flush()
        while self._in_flight:
            self._apply_oldest()

    def _apply_oldest(self) -> None:
        future, thens = self._in_flight.popleft()
        for then, result in zip(thens, future.result(), strict=True):
            then(result)


if __name__ == "__main__":
    serve(_Opener().handle)
