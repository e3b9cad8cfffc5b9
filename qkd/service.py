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

A worker is ``python -m qkd.service`` (see :mod:`qkd.workers` for the plumbing and why
it is not ``multiprocessing``). It runs the sessions queued on it as one batch
(:func:`~qkd.session.run_sessions`: their Cascade reconciliations in one NumPy pass,
whose per-call overhead is most of Cascade's cost), with the results of one at a time;
in process (``workers = 0``) each session runs when it is submitted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from concurrent.futures import Future

from .quantum import BANK_AER_THREADS, ShotBank
from .session import SessionConfig, SessionResult, run_session, run_sessions
from .workers import WorkerError, WorkerProcess, serve_batches

# A worker's batch at most: enough to amortize Cascade's per-call overhead, few enough that
# the first result of a burst does not wait for many sessions.
SESSIONS_PER_BATCH = 16


class SessionServiceError(WorkerError):
    """A worker process failed or died; the sessions it held are lost."""


class _Banks:
    """One shot bank per group, created on a group's first session."""

    def __init__(self, seed: Sequence[int], threads: int) -> None:
        self.seed = tuple(seed)
        self.threads = threads
        self._banks: dict[int, ShotBank] = {}

    def bank(self, group: int) -> ShotBank:
        bank = self._banks.get(group)
        if bank is None:
            bank = self._banks[group] = ShotBank(seed=[*self.seed, group], threads=self.threads)
        return bank

    def run(self, group: int, config: SessionConfig) -> SessionResult:
        return run_session(config, bank=self.bank(group))

    def run_batch(self, requests: Sequence[tuple[int, SessionConfig]]) -> list[SessionResult | Exception]:
        """(group, config) requests in order, as :meth:`run` one after the other would; a
        session that raises gives its exception in its place."""
        return run_sessions([(config, self.bank(group)) for group, config in requests])


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
            WorkerProcess(
                "qkd.service",
                [str(s) for s in self.seed],
                error=SessionServiceError,
                what="a QKD worker process",
            )
            for _ in range(self.workers)
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
    """The worker: answer (group, config) requests, in batches of those queued, until stdin closes."""
    from .quantum import simulator

    banks = _Banks(seed, threads=1)  # workers already fill the cores
    # Aer's first use costs a few hundred ms: paid before the first session
    serve_batches(banks.run_batch, warm_up=simulator, max_batch=SESSIONS_PER_BATCH)


if __name__ == "__main__":
    _serve([int(arg) for arg in sys.argv[1:]])
