"""QKD sessions for several independent streams, in this process or on worker processes.

Why: a simulator runs hundreds of sessions (every vehicle needs a first key at once) on
one core while the others idle. Streams (roadside units, say) are dealt to ``banks``
groups, ``stream % banks``; every group owns a :class:`~qkd.quantum.ShotBank` seeded
from ``(seed, group)``, and runs its sessions in the order they were submitted, on worker
``group % workers``. A session's result then depends only on its configuration and on
the earlier sessions of its group, so the results are the same with any number of
workers, including none (everything in this process). ``banks`` is part of the result's
definition; ``workers`` is not. Few groups keep the banks' refills few (each refill
simulates 65,536 outcomes per class whether or not they are all used).

A worker is ``python -m qkd.service`` speaking length-prefixed pickles over its stdin and
stdout. Not ``multiprocessing``: its ``spawn`` start re-runs the caller's main script in
every worker (a script without an ``if __name__ == "__main__"`` guard would start its
simulation again), and ``fork`` copies a process whose other threads (a node's log reader,
Aer's pools) may hold locks.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, BinaryIO

from .quantum import BANK_AER_THREADS, ShotBank
from .session import SessionConfig, SessionResult, run_session

_LENGTH = struct.Struct(">Q")


class SessionServiceError(RuntimeError):
    """A worker process failed or died; the sessions it held are lost."""


def _frame(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


def _send(stream: BinaryIO, frame: bytes) -> None:
    stream.write(frame)
    stream.flush()


def _receive(stream: BinaryIO) -> bytes:
    """One message's pickle (unpickled by the caller, so a bad one can be answered)."""
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        raise EOFError("the other side closed the pipe")
    size = _LENGTH.unpack(header)[0]
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError("the other side closed the pipe mid-message")
    return payload


class _Banks:
    """One shot bank per group, created on a group's first session."""

    def __init__(self, seed: Sequence[int], threads: int) -> None:
        self.seed = tuple(seed)
        self.threads = threads
        self._banks: dict[int, ShotBank] = {}

    def run(self, group: int, config: SessionConfig) -> SessionResult:
        bank = self._banks.get(group)
        if bank is None:
            bank = self._banks[group] = ShotBank(seed=[*self.seed, group], threads=self.threads)
        return run_session(config, bank=bank)


class WorkerProcess:
    """The parent's end of one ``python -m <module>`` worker (see :func:`serve`).

    Requests are pickled and answered in order; a reader thread resolves their futures.
    A request the worker cannot handle comes back as ``error``; a dead worker fails every
    pending request with ``error`` instead of leaving it hanging. ``ready`` is done once
    the worker has set itself up.
    """

    def __init__(
        self,
        module: str,
        args: Sequence[str] = (),
        *,
        error: type[Exception] = SessionServiceError,
        what: str = "a QKD worker process",
    ) -> None:
        # the package's parent directory first, so a source checkout works uninstalled too
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )
        self._error = error
        self._what = what
        self._pending: list[Future[Any]] = []  # submitted, answer not read yet (FIFO)
        self._lock = threading.Lock()
        self._failure: str | None = None
        self.ready: Future[Any] = Future()
        self._pending.append(self.ready)
        self._reader = threading.Thread(target=self._read, name=module, daemon=True)
        self._reader.start()

    def submit(self, request: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            frame = _frame(request)
        except Exception as exc:
            raise self._error(f"a request cannot be sent to {self._what}: {exc}") from None
        with self._lock:
            if self._failure is not None:
                raise self._error(self._failure)
            self._pending.append(future)
            try:
                assert self.process.stdin is not None
                _send(self.process.stdin, frame)
            except (BrokenPipeError, OSError) as exc:
                self._pending.remove(future)
                raise self._error(f"{self._what} died: {exc}") from None
        return future

    def _read(self) -> None:
        assert self.process.stdout is not None
        while True:
            try:
                ok, value = pickle.loads(_receive(self.process.stdout))
            except (EOFError, OSError, pickle.UnpicklingError) as exc:
                self._fail(f"{self._what} died (exit status {self.process.poll()}): {exc}")
                return
            with self._lock:
                future = self._pending.pop(0)
            if ok:
                future.set_result(value)
            else:
                future.set_exception(self._error(f"a request failed in {self._what}: {value}"))

    def _fail(self, reason: str) -> None:
        with self._lock:
            self._failure = reason
            pending, self._pending = self._pending, []
        for future in pending:
            future.set_exception(self._error(reason))

    def close(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # end of input: the worker exits
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)


def serve(handle: Callable[[Any], Any], warm_up: Callable[[], Any] | None = None) -> None:
    """The worker's side of :class:`WorkerProcess`: answer requests until stdin closes.

    ``warm_up`` runs before the worker reports ready; an exception from ``handle`` is
    reported to the caller as a failed request, and the worker goes on.
    """
    # Ctrl-C reaches the whole process group; the parent decides, and closes our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    if warm_up is not None:
        warm_up()
    _send(replies, _frame((True, None)))  # ready
    while True:
        try:
            message = _receive(requests)
        except EOFError:
            return
        try:
            reply = _frame((True, handle(pickle.loads(message))))
        except Exception as exc:
            reply = _frame((False, f"{type(exc).__name__}: {exc}"))
        _send(replies, reply)


class SessionService:
    """``submit(stream, config)`` returns a future of the session's result.

    ``workers = 0`` runs each session at once in this process (the future is already
    done); otherwise sessions run on ``workers`` processes and the caller collects each
    result when it needs it. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, seed: int | Sequence[int], workers: int = 0, banks: int = 2) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if banks < 1:
            raise ValueError(f"banks must be >= 1, got {banks}")
        self.seed = (int(seed),) if isinstance(seed, int) else tuple(int(s) for s in seed)
        self.workers = int(workers)
        self.banks = int(banks)
        self._local = _Banks(self.seed, threads=BANK_AER_THREADS)
        self._workers = [
            WorkerProcess("qkd.service", [str(s) for s in self.seed]) for _ in range(self.workers)
        ]

    def __enter__(self) -> SessionService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self) -> None:
        """Block until every worker has imported the engine and warmed up Aer."""
        for worker in self._workers:
            worker.ready.result()

    def submit(self, stream: int, config: SessionConfig) -> Future[SessionResult]:
        if stream < 0:
            raise ValueError(f"stream must be >= 0, got {stream}")
        group = stream % self.banks
        if not self._workers:
            future: Future[SessionResult] = Future()
            future.set_result(self._local.run(group, config))
            return future
        return self._workers[group % self.workers].submit((group, config))

    def close(self) -> None:
        for worker in self._workers:
            worker.close()
        self._workers = []


def _serve(seed: Sequence[int]) -> None:
    """The worker: answer (group, config) requests until stdin closes."""
    from .quantum import simulator

    banks = _Banks(seed, threads=1)  # workers already fill the cores
    # Aer's first use costs a few hundred ms: paid before the first session
    serve(lambda request: banks.run(*request), warm_up=simulator)


if __name__ == "__main__":
    _serve([int(arg) for arg in sys.argv[1:]])
