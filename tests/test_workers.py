"""Worker-process plumbing (qkd.workers): ordered answers, and no deadlock on full pipes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from qkd.workers import WorkerError, WorkerProcess

ECHO = """
from qkd.workers import serve

def answer(request):
    size, padding = request
    if size < 0:
        raise ValueError("negative size")
    return b"r" * size

serve(answer)
"""


@pytest.fixture
def echo_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WorkerProcess:
    (tmp_path / "echo_worker.py").write_text(ECHO)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    worker = WorkerProcess("echo_worker", what="the echo worker")
    worker.ready.result(timeout=30)
    return worker


def test_many_large_requests_and_answers_queued_at_once_do_not_deadlock(echo_worker: WorkerProcess) -> None:
    """More requests than the worker's stdin pipe holds, each answered with more than its
    stdout pipe holds: the submitting thread blocks on a full pipe while the reader thread
    must go on taking answers (it once waited for a lock the blocked writer held)."""
    futures: list = []

    def submit_all() -> None:
        for index in range(200):
            futures.append(echo_worker.submit((70_000 + index, b"p" * 4_096)))

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


def test_a_failed_request_is_reported_and_the_worker_goes_on(echo_worker: WorkerProcess) -> None:
    failed = echo_worker.submit((-1, b""))
    answered = echo_worker.submit((3, b""))
    with pytest.raises(WorkerError, match="negative size"):
        failed.result(timeout=30)
    assert answered.result(timeout=30) == b"rrr"
    echo_worker.close()
