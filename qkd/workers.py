"""Worker processes that answer pickled requests in order: the plumbing, kept light.

A worker is ``python -m <module>`` speaking length-prefixed pickles over its stdin and
stdout (:func:`serve` or :func:`serve_batches` on its side, :class:`WorkerProcess` on the
parent's). ``serve_batches`` hands every request that has already arrived to one call
(a QKD worker reconciles their sessions in one NumPy pass) and still replies to each. Not
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
import select
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, BinaryIO, Self

try:
    import fcntl
except ImportError:  # not a POSIX system: pipes keep their size
    fcntl = None  # type: ignore[assignment]


class WorkerError(RuntimeError):
    """A worker process failed a request or died; what it held is lost."""


_LENGTH = struct.Struct(">Q")
# Pipe capacity asked for (Linux's default is 64 KiB, its unprivileged maximum 1 MiB). A
# request larger than the pipe (a simulation step's received frames: about 150 KB at 500
# vehicles) blocked the sender until the worker had finished the request before and read
# this one: the parent waited for its worker, which is what the worker is there to avoid.
PIPE_BYTES = 1 << 20


def _widen(fd: int) -> None:
    """Give the pipe at ``fd`` up to :data:`PIPE_BYTES` of buffer; keep what it has where
    the system refuses (another OS, or a user over the kernel's pipe quota)."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no F_SETPIPE_SZ (not Linux)
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[union-attr]


def _frame(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


def _send(stream: BinaryIO, frame: bytes) -> None:
    stream.write(frame)
    stream.flush()


class _FrameReader:
    """The messages arriving on a file descriptor, each as its pickle (unpickled by the
    caller, so a bad one can be answered).

    Reads with ``os.read`` into a buffer of its own: a ``BufferedReader`` would hide the
    bytes it holds from ``select``, and :meth:`arrived` must know what has come.
    """

    _CHUNK = PIPE_BYTES  # the most a widened pipe holds

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._closed = False  # the other side closed the pipe

    def next(self) -> bytes:
        """The next message, waiting for it; EOFError once the other side has closed."""
        while (message := self._take()) is None:
            if self._closed:
                raise EOFError(f"the other side closed the pipe{' mid-message' if self._buffer else ''}")
            self._read()
        return message

    def arrived(self) -> bytes | None:
        """The next message if all of it has arrived already, without waiting; else None."""
        while (message := self._take()) is None:
            if self._closed or not select.select([self._fd], [], [], 0)[0]:
                return None
            self._read()
        return message

    def _read(self) -> None:
        chunk = os.read(self._fd, self._CHUNK)
        self._closed = not chunk
        self._buffer += chunk

    def _take(self) -> bytes | None:
        if len(self._buffer) < _LENGTH.size:
            return None
        end = _LENGTH.size + _LENGTH.unpack_from(self._buffer)[0]
        if len(self._buffer) < end:
            return None
        with memoryview(self._buffer) as view:
            message = bytes(view[_LENGTH.size : end])
        del self._buffer[:end]
        return message


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
        assert self.process.stdin is not None and self.process.stdout is not None
        _widen(self.process.stdin.fileno())
        _widen(self.process.stdout.fileno())
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
        replies = _FrameReader(self.process.stdout.fileno())
        while True:
            try:
                ok, value = pickle.loads(replies.next())
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
    serve_batches(lambda requests: [_answer(handle, request) for request in requests], warm_up, max_batch=1)


def serve_batches(
    handle_batch: Callable[[list[Any]], Sequence[Any]],
    warm_up: Callable[[], Any] | None = None,
    *,
    max_batch: int = 16,
) -> None:
    """:func:`serve` for a handler that answers several requests at once for less than
    one at a time: every request that has already arrived, up to ``max_batch``, goes to
    one ``handle_batch`` call, without waiting for more.

    ``handle_batch`` returns one outcome per request, in order: its answer, or the
    Exception it raised, which fails that request alone. Each request gets its own reply,
    as from ``serve``; if ``handle_batch`` itself raises, every request of the batch fails.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    # Ctrl-C reaches the whole process group; the parent decides, and closes our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = _FrameReader(sys.stdin.fileno())
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    if warm_up is not None:
        warm_up()
    _send(replies, _frame((True, None)))  # ready
    while True:
        try:
            messages = [requests.next()]
        except EOFError:
            return
        while len(messages) < max_batch and (message := requests.arrived()) is not None:
            messages.append(message)
        for outcome in _outcomes(handle_batch, messages):
            replies.write(_reply(outcome))
        replies.flush()


def _answer(handle: Callable[[Any], Any], request: Any) -> Any:
    try:
        return handle(request)
    except Exception as exc:
        return exc


def _outcomes(handle_batch: Callable[[list[Any]], Sequence[Any]], messages: list[bytes]) -> list[Any]:
    """Each message's answer or exception: one that cannot be unpickled fails alone."""
    outcomes: list[Any] = []
    requests: list[Any] = []
    positions: list[int] = []  # of the unpickled requests among the messages
    for message in messages:
        try:
            requests.append(pickle.loads(message))
        except Exception as exc:
            outcomes.append(exc)
        else:
            positions.append(len(outcomes))
            outcomes.append(None)
    if requests:
        try:
            answers = list(handle_batch(requests))
            if len(answers) != len(requests):
                raise RuntimeError(f"the batch handler answered {len(answers)} of {len(requests)} requests")
        except Exception as exc:
            answers = [exc] * len(requests)
        for position, answer in zip(positions, answers, strict=True):
            outcomes[position] = answer
    return outcomes


def _reply(outcome: Any) -> bytes:
    if not isinstance(outcome, Exception):
        try:
            return _frame((True, outcome))
        except Exception as exc:  # an answer that cannot be pickled
            outcome = exc
    return _frame((False, f"{type(outcome).__name__}: {outcome}"))
