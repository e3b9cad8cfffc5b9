"""QKD sessions on worker processes: same results as in process, and failures surface."""

from __future__ import annotations

import pytest

from qkd.channel import build
from qkd.service import SessionService, SessionServiceError
from qkd.session import SessionConfig

NOISY = build("ideal", depolarizing=0.04)


def _configs() -> list[tuple[int, SessionConfig]]:
    """Sessions of five streams, interleaved as a simulator submits them."""
    return [(stream, SessionConfig(channel=NOISY, signals=20_000, seed=100 * round_ + stream))
            for round_ in range(2) for stream in range(5)]  # fmt: skip


def _digest(results) -> list[tuple]:
    return [(r.key_id, r.key_sha256, r.qber, r.final_key_bits) for r in results]


def test_results_do_not_depend_on_the_number_of_workers() -> None:
    outcomes = []
    for workers in (0, 1, 2):
        with SessionService(seed=7, workers=workers) as service:
            service.wait_ready()
            futures = [service.submit(stream, config) for stream, config in _configs()]
            outcomes.append(_digest(f.result() for f in futures))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert all(sha is not None for _, sha, _, _ in outcomes[0])  # real keys came out
    with SessionService(seed=8) as other:
        changed = _digest(other.submit(s, c).result() for s, c in _configs())
    assert changed != outcomes[0]  # the service seed feeds the shot banks


def test_a_session_error_in_a_worker_is_reported_and_the_worker_goes_on() -> None:
    good = SessionConfig(channel=NOISY, signals=20_000, seed=1)
    with SessionService(seed=1, workers=1) as service:
        # the worker cannot import this test module, so it cannot read the request
        broken = service.submit(0, _DefinedHere())  # type: ignore[arg-type]
        with pytest.raises(SessionServiceError, match="failed in a QKD worker"):
            broken.result()
        assert service.submit(0, good).result().keys_match
        with pytest.raises(SessionServiceError, match="cannot be sent"):
            service.submit(0, _Unpicklable())  # type: ignore[arg-type]
        assert service.submit(1, good).result().keys_match  # nothing left half-sent


def test_a_dead_worker_fails_its_sessions_instead_of_hanging() -> None:
    service = SessionService(seed=1, workers=1)
    try:
        service.wait_ready()
        worker = service._workers[0]
        worker.process.kill()
        worker.process.wait()
        with pytest.raises(SessionServiceError, match="died"):
            service.submit(0, SessionConfig(channel=NOISY, signals=20_000, seed=1)).result()
    finally:
        service.close()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        SessionService(seed=1, workers=-1)
    with pytest.raises(ValueError):
        SessionService(seed=1, banks=0)
    with SessionService(seed=1) as service, pytest.raises(ValueError):
        service.submit(-1, SessionConfig(channel=NOISY, signals=20_000, seed=1))


class _DefinedHere:
    pass


class _Unpicklable:
    def __reduce__(self):
        raise TypeError("cannot be pickled")
