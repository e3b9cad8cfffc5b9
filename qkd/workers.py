"""Worker processes that answer pickled requests in order: the plumbing, kept light.

A worker is ``python -m <module>`` speaking length-prefixed pickles over its stdin and
stdout (:func:`serve` on its side, :class:`WorkerProcess` on the parent's). Not
``multiprocessing``: its ``spawn`` start re-runs the caller's main script in every
worker (a script without an ``if __name__ == "__main__"`` guard would start its work
again), and ``fork`` copies a process whose other threads (a node's log reader, Aer's
pools) may hold locks. This module imports nothing heavy, so a worker that does not
need Qiskit does not load it.
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
from typing import Any, BinaryIO, Self


class WorkerError(RuntimeError):
    """A worker process failed a request or died; what it held is lost."""


_LENGTH = struct.Struct(">Q")


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
        error: type[WorkerError] = WorkerError,
        what: str = "a worker process",
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
        self._lock = threading.Lock()  # guards _pending and _failure; never held while writing
        self._write_lock = threading.Lock()  # one request on the pipe at a time, in _pending's order
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
        # A full pipe blocks the write until the worker reads, and the worker reads only
        # after its replies are taken: the reader thread must be able to pop futures
        # meanwhile, so the write happens outside ``_lock`` (holding it deadlocked 300
        # queued QKD sessions).
        with self._write_lock:
            with self._lock:
                if self._failure is not None:
                    raise self._error(self._failure)
                self._pending.append(future)
            try:
                assert self.process.stdin is not None
                _send(self.process.stdin, frame)
            except (BrokenPipeError, OSError) as exc:
                with self._lock:
                    if future in self._pending:
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


class OneWorker:
    """Base of a service that works in this process or on one :class:`WorkerProcess`
    (``_worker``, None for in process): its context manager, readiness and closing."""

    _worker: WorkerProcess | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self) -> None:
        """Block until the worker, if any, has set itself up."""
        if self._worker is not None:
            self._worker.ready.result()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


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
