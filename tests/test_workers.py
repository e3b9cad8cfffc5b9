"""Worker-process plumbing (qkd.workers): ordered answers, batches of queued requests, and no
deadlock on full pipes."""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path

import pytest

from qkd.workers import PIPE_BYTES, WorkerError, WorkerProcess

ECHO = """
from qkd.workers import serve

def answer(request):
    size, padding = request
    if size < 0:
        raise ValueError("negative size")
    return b"r" * size

serve(answer)
"""

# The same answers in batches of up to 4; "batches" asks for the sizes of the batches so far.
# Its warm-up gives the test time to queue requests before the first batch is read.
BATCH_ECHO = """
import time
from qkd.workers import serve_batches

batches = []

def answer(request):
    if request == "batches":
        return batches
    size, padding = request
    return ValueError("negative size") if size < 0 else b"r" * size

def answer_all(requests):
    batches.append(len(requests))
    return [answer(request) for request in requests]

serve_batches(answer_all, warm_up=lambda: time.sleep(0.5), max_batch=4)
"""


def _start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> WorkerProcess:
    (tmp_path / "echo_worker.py").write_text(script)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return WorkerProcess("echo_worker", what="the echo worker")


@pytest.fixture(params=["one at a time", "in batches"])
def echo_worker(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> WorkerProcess:
    worker = _start(tmp_path, monkeypatch, ECHO if request.param == "one at a time" else BATCH_ECHO)
    worker.ready.result(timeout=30)
    return worker


def test_many_large_requests_and_answers_queued_at_once_do_not_deadlock(echo_worker: WorkerProcess) -> None:
    """More requests than the worker's stdin pipe holds (3.2 MB against 1 MiB), each
    answered with more than a default pipe holds: the submitting thread blocks on a full
    pipe while the reader thread must go on taking answers (it once waited for a lock the
    blocked writer held)."""
    futures: list = []

    def submit_all() -> None:
        for index in range(200):
            futures.append(echo_worker.submit((70_000 + index, b"p" * 16_384)))

    submitter = threading.Thread(target=submit_all, daemon=True)
    submitter.start()
    submitter.join(timeout=60)
    try:
        assert not submitter.is_alive(), "submitting to the worker deadlocked"
        assert [len(f.result(timeout=60)) for f in futures] == [70_000 + i for i in range(200)]
    finally:
        if submitter.is_alive():
            echo_worker.process.kill()
        echo_worker.close()


def test_worker_pipes_are_widened_so_a_large_request_does_not_wait(echo_worker: WorkerProcess) -> None:
    """A simulation step's frames (about 150 KB at 500 vehicles) fit in the pipe: with
    Linux's default 64 KiB the sender waited for the worker to finish its request before."""
    limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    expected = min(PIPE_BYTES, limit)
    assert echo_worker.process.stdin is not None and echo_worker.process.stdout is not None
    for pipe in (echo_worker.process.stdin, echo_worker.process.stdout):
        assert fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) >= expected
    echo_worker.close()


def test_a_failed_request_is_reported_and_the_worker_goes_on(echo_worker: WorkerProcess) -> None:
    failed = echo_worker.submit((-1, b""))
    answered = echo_worker.submit((3, b""))
    with pytest.raises(WorkerError, match="negative size"):
        failed.result(timeout=30)
    assert answered.result(timeout=30) == b"rrr"
    echo_worker.close()


def test_a_batch_worker_answers_each_queued_request_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests queued while the worker warms up are handled four at a time (the cap), each
    answered on its own: a failing one, and one the worker cannot unpickle, fail alone."""
    worker = _start(tmp_path, monkeypatch, BATCH_ECHO)
    requests: list = [(size, b"") for size in range(1, 11)]
    requests[4] = (-1, b"")
    requests[6] = _NotInTheWorker()
    try:
        futures = [worker.submit(request) for request in [*requests, "batches"]]
        for index, future in enumerate(futures[:-1]):
            if index == 4:
                with pytest.raises(WorkerError, match="ValueError: negative size"):
                    future.result(timeout=30)
            elif index == 6:
                with pytest.raises(WorkerError, match="ModuleNotFoundError"):
                    future.result(timeout=30)
            else:
                assert future.result(timeout=30) == b"r" * (index + 1)
        # 0-3; 4-7 but 6, which never reached the handler; 8, 9 and "batches"
        assert futures[-1].result(timeout=30) == [4, 3, 3]
    finally:
        worker.close()


class _NotInTheWorker:
    """The worker cannot import this test module, so it cannot unpickle this."""
