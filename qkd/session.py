"""One QKD session, end to end: quantum stage, sifting, estimation, Cascade,
verification, privacy amplification. Returns both parties' final keys and the
statistics users ask for.

The stages read in the order the protocol runs them (``_session_steps``); every
classical message goes through one :class:`ClassicalChannel`. Only the final
keys are secret: :class:`SessionResult` keeps them out of ``repr`` and of
``as_dict`` so they are never printed or logged by accident.

The protocol is a generator that hands its Cascade reconciliation to its caller:
:func:`run_session` runs it at once, :func:`run_sessions` reconciles several sessions
in one vectorized pass (most of Cascade's cost is NumPy's per-call overhead, which a
joint pass pays once).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from . import cascade, e91, quantum
from .channel import Channel
from .classical import ClassicalChannel
from .estimation import estimate_qber
from .keylength import (
    chsh_lower_bound,
    e91_key_length,
    finite_key_length,
    seed_paper_rate,
    shor_preskill_rate,
)
from .randomness import random_bits
from .toeplitz import seed_length, toeplitz_hashes
from .verification import verify_keys

PROTOCOLS = ("bb84", "e91")
Progress = Callable[[str, float], None]  # (stage, fraction of the whole session done)


@dataclass(frozen=True)
class SessionConfig:
    """What a user chooses for one session. Defaults follow ../shared/spec/qkd.md."""

    channel: Channel
    signals: int = 100_000
    protocol: str = "bb84"
    eve_fraction: float = 0.0
    reconciliation: str = "biconf"
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    sample_fraction: float = 0.1
    qber_threshold: float = 0.11
    seed: int | None = None
    # BB84 only. False: the outcomes that sifting discards are not simulated (see
    # qkd.quantum.prepare_and_measure): the same distribution of keys for half the Aer work.
    simulate_discarded: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}: choose {' or '.join(PROTOCOLS)}")
        if not 1 <= self.signals <= 100_000_000:
            raise ValueError(f"signals must be between 1 and 100,000,000, got {self.signals}")
        if not 0.0 <= self.eve_fraction <= 1.0:
            raise ValueError(f"eve fraction must lie in [0, 1], got {self.eve_fraction}")
        if self.reconciliation not in cascade.METHODS:
            raise ValueError(
                f"unknown reconciliation {self.reconciliation!r}: choose one of {', '.join(cascade.METHODS)}"
            )
        for name in ("eps_sec", "eps_cor"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name.replace('_', '-')} must lie strictly between 0 and 1, got {value}")
        if not 0.0 < self.sample_fraction < 1.0:
            raise ValueError(f"sample fraction must lie strictly between 0 and 1, got {self.sample_fraction}")
        if not 0.0 < self.qber_threshold <= 0.5:
            raise ValueError(f"QBER threshold must lie in (0, 0.5], got {self.qber_threshold}")
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        if not self.simulate_discarded and self.protocol != "bb84":
            raise ValueError(
                "skipping the outcomes sifting discards (--skip-discarded) is for BB84 only: "
                f"{self.protocol} tests Bell correlations on the rounds its key discards"
            )


@dataclass(frozen=True)
class ReconciliationStats:
    method: str
    efficiency: float | None  # leaked / (n h(e)) with e the key's actual error rate; None if e = 0
    leaked_bits: int
    channel_uses: int
    errors_before: int
    errors_after: int


@dataclass
class SessionResult:
    protocol: str
    signals: int
    detected: int
    sifted_bits: int
    sample_bits: int
    qber: float | None  # measured on the disclosed sample
    qber_upper_bound: float | None
    actual_qber: float | None  # over the whole sifted key: known only because this is a simulation
    aborted: bool
    abort_reason: str | None
    reconciliation: ReconciliationStats | None
    verification_passed: bool | None
    final_key_bits: int
    key_id: str
    channel: dict[str, Any]
    noise: str
    eve_fraction: float
    eps_sec: float
    eps_cor: float
    seed: int | None
    rates: dict[str, float]
    chsh: dict[str, float] | None
    classical: dict[str, dict[str, int]]
    timings_s: dict[str, float]
    alice_key: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=np.uint8))
    bob_key: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=np.uint8))

    @property
    def keys_match(self) -> bool:
        """Alice's and Bob's final keys, bit for bit (False when there is no key)."""
        return self.final_key_bits > 0 and np.array_equal(self.alice_key, self.bob_key)

    @property
    def secret_fraction(self) -> float:
        """Final key bits per signal sent."""
        return self.final_key_bits / self.signals

    @property
    def key_bytes(self) -> bytes:
        """Alice's final key, packed big-endian; the last byte is zero-padded."""
        return np.packbits(self.alice_key).tobytes()

    @property
    def key_sha256(self) -> str | None:
        """The commitment recorded on a ledger: SHA-256 of the packed final key."""
        return hashlib.sha256(self.key_bytes).hexdigest() if self.final_key_bits else None

    def as_dict(self) -> dict[str, Any]:
        """Everything but key material, with the field names of the CLI's JSON contract."""
        rec = self.reconciliation
        return {
            "protocol": self.protocol,
            "signals": self.signals,
            "detected": self.detected,
            "sifted_bits": self.sifted_bits,
            "sample_bits": self.sample_bits,
            "qber": self.qber,
            "qber_upper_bound": self.qber_upper_bound,
            "actual_qber": self.actual_qber,
            "aborted": self.aborted,
            "abort_reason": self.abort_reason,
            "reconciliation": None if rec is None else rec.__dict__.copy(),
            "verification_passed": self.verification_passed,
            "keys_match": self.keys_match,
            "final_key_bits": self.final_key_bits,
            "secret_fraction": self.secret_fraction,
            "key_id": self.key_id,
            "key_sha256": self.key_sha256,
            "rates": self.rates,
            "chsh": self.chsh,
            "channel": self.channel,
            "noise": self.noise,
            "eve_fraction": self.eve_fraction,
            "eps_sec": self.eps_sec,
            "eps_cor": self.eps_cor,
            "seed": self.seed,
            "classical": self.classical,
            "timings_s": self.timings_s,
        }


class _Stopwatch:
    """Per-stage wall time, plus the progress callback: one place, so every stage reports both."""

    # Rough shares of a session's time, to turn stages into a progress fraction.
    SHARES: ClassVar[dict[str, float]] = {
        "quantum": 0.45,
        "sifting": 0.05,
        "chsh": 0.03,
        "estimation": 0.02,
        "reconciliation": 0.3,
        "verification": 0.03,
        "amplification": 0.12,
    }

    def __init__(self, progress: Progress | None) -> None:
        self.timings: dict[str, float] = {}
        self.progress = progress
        self.done = 0.0
        self.started = time.perf_counter()

    def run(self, stage: str, fn: Callable[[], Any]) -> Any:
        self.begin(stage)
        t0 = time.perf_counter()
        value = fn()
        self.book(stage, time.perf_counter() - t0)
        return value

    def begin(self, stage: str) -> None:
        if self.progress:
            self.progress(stage, self.done)

    def book(self, stage: str, seconds: float) -> None:
        """A stage's time, measured here (``run``) or by whoever ran the stage for us."""
        self.timings[stage] = seconds
        self.done = min(1.0, self.done + self.SHARES.get(stage, 0.0))

    def finish(self) -> dict[str, float]:
        self.timings["total"] = time.perf_counter() - self.started
        if self.progress:
            self.progress("done", 1.0)
        return {k: round(v, 6) for k, v in self.timings.items()}


# A running _session_steps: it yields its reconciliation, is sent the result and the seconds
# to book for it, and returns the session's result.
_SessionSteps = Generator[cascade.ReconcileJob, tuple[cascade.ReconciliationResult, float], SessionResult]


def run_session(
    config: SessionConfig, *, progress: Progress | None = None, bank: quantum.ShotBank | None = None
) -> SessionResult:
    """Run one session. Aborts are results (``aborted``, ``abort_reason``), not exceptions.

    Callers that run many sessions pass one ``bank`` to share Aer jobs between them
    (:class:`qkd.quantum.ShotBank`); a session's result then depends on its seed and on
    the sessions served before it.
    """
    steps = _session_steps(config, progress, bank)
    try:
        job = next(steps)
    except StopIteration as aborted:
        return aborted.value
    t0 = time.perf_counter()
    reconciled = _reconcile_alone(job)
    return _finish(steps, reconciled, time.perf_counter() - t0)


def run_sessions(
    sessions: Sequence[tuple[SessionConfig, quantum.ShotBank | None]],
) -> list[SessionResult | Exception]:
    """Run sessions, each with its shot bank (or None), reconciling them together: one
    :func:`qkd.cascade.reconcile_together` call per Cascade method, which costs less than
    one :func:`~qkd.cascade.reconcile` per session (mostly NumPy's per-call overhead).

    Every result is what ``run_session(config, bank=bank)`` calls in the given order would
    return: sessions are started in that order, and only their quantum stage, which runs
    before reconciliation, draws from a bank. A session that raises gives its exception
    in its place and the others go on (a server answers each session); a job that a joint
    reconciliation refuses makes its jobs run one by one, so that only its session fails.

    ``timings_s``: a batched session books the joint reconciliation's time divided by the
    number of its jobs, and its ``total`` is the sum of its own stages (wall time from its
    start would include the other sessions'). No progress callbacks.
    """
    outcomes: dict[int, SessionResult | Exception] = {}  # by the session's index
    waiting: dict[str, list[tuple[int, _SessionSteps, cascade.ReconcileJob]]] = {}  # by Cascade method
    for index, (config, bank) in enumerate(sessions):
        steps = _session_steps(config, None, bank)
        try:
            job = next(steps)
        except StopIteration as aborted:
            outcomes[index] = aborted.value
        except Exception as exc:
            outcomes[index] = exc
        else:
            waiting.setdefault(job.method, []).append((index, steps, job))

    for batch in waiting.values():
        reconciled = _reconcile_batch([job for _, _, job in batch])
        for (index, steps, _), (result, seconds) in zip(batch, reconciled, strict=True):
            if isinstance(result, Exception):
                outcomes[index] = result
                continue
            try:
                outcomes[index] = _finish(steps, result, seconds)
            except Exception as exc:
                outcomes[index] = exc

    for outcome in outcomes.values():
        if isinstance(outcome, SessionResult):
            own = sum(seconds for stage, seconds in outcome.timings_s.items() if stage != "total")
            outcome.timings_s["total"] = round(own, 6)
    return [outcomes[index] for index in range(len(sessions))]


def _reconcile_alone(job: cascade.ReconcileJob) -> cascade.ReconciliationResult:
    return cascade.reconcile(
        job.alice, job.bob, job.qber, method=job.method, rng=job.rng, channel=job.channel, stage=job.stage
    )


def _reconcile_batch(
    jobs: list[cascade.ReconcileJob],
) -> list[tuple[cascade.ReconciliationResult | Exception, float]]:
    """Each job's reconciliation, or the exception it raised, and the seconds to book it:
    all in one joint call, or one by one if that raises (it checks every job before it
    draws or counts anything, so only the faulty job raises again)."""
    t0 = time.perf_counter()
    try:
        together = cascade.reconcile_together(jobs)
    except ValueError:
        pass
    else:
        seconds = (time.perf_counter() - t0) / len(jobs)
        return [(result, seconds) for result in together]
    alone: list[tuple[cascade.ReconciliationResult | Exception, float]] = []
    for job in jobs:
        t0 = time.perf_counter()
        try:
            alone.append((_reconcile_alone(job), time.perf_counter() - t0))
        except ValueError as exc:
            alone.append((exc, time.perf_counter() - t0))
    return alone


def _finish(steps: _SessionSteps, reconciled: cascade.ReconciliationResult, seconds: float) -> SessionResult:
    """Hands a session its reconciliation; runs it to its result."""
    try:
        steps.send((reconciled, seconds))
    except StopIteration as done:
        return done.value
    raise RuntimeError("a session asked for a second reconciliation")


def _session_steps(
    config: SessionConfig, progress: Progress | None, bank: quantum.ShotBank | None
) -> _SessionSteps:
    """The protocol, stage by stage; it yields its reconciliation for the caller to run."""
    rng = np.random.default_rng(config.seed)
    quantum_seed = int(rng.integers(0, 2**63 - 1))
    key_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
    classical = ClassicalChannel()
    clock = _Stopwatch(progress)
    chsh_report: dict[str, float] | None = None

    if config.protocol == "bb84":
        signals = clock.run(
            "quantum",
            lambda: quantum.prepare_and_measure(
                config.signals,
                config.channel,
                eve_fraction=config.eve_fraction,
                seed=quantum_seed,
                bank=bank,
                simulate_discarded=config.simulate_discarded,
            ),
        )
        alice, bob, _ = clock.run("sifting", lambda: quantum.sift(signals, classical))
        s_lower = None
    else:
        signals = clock.run(
            "quantum",
            lambda: e91.distribute(
                config.signals, config.channel, eve_fraction=config.eve_fraction, seed=quantum_seed, bank=bank
            ),
        )
        test = clock.run("chsh", lambda: e91.chsh(signals, classical))
        alice, bob, _ = clock.run("sifting", lambda: e91.sift(signals, classical))
        s_lower = chsh_lower_bound(test.s_value, list(test.rounds_per_correlator), config.eps_sec)
        chsh_report = {
            "s": test.s_value,
            "s_std_error": test.s_std_error,
            "s_lower_bound": s_lower,
            "rounds": test.rounds,
        }

    detected = int(np.count_nonzero(signals.detected))
    sifted = int(alice.size)
    actual_errors = int(np.count_nonzero(alice != bob))
    base: dict[str, Any] = {
        "protocol": config.protocol,
        "signals": config.signals,
        "detected": detected,
        "sifted_bits": sifted,
        "actual_qber": actual_errors / sifted if sifted else None,
        "key_id": key_id,
        "channel": config.channel.describe(),
        "noise": signals.noise_description,
        "eve_fraction": config.eve_fraction,
        "eps_sec": config.eps_sec,
        "eps_cor": config.eps_cor,
        "seed": config.seed,
        "chsh": chsh_report,
    }

    def stop(reason: str, **fields: Any) -> SessionResult:
        values = {
            "sample_bits": 0,
            "qber": None,
            "qber_upper_bound": None,
            "reconciliation": None,
            "verification_passed": None,
            "rates": {},
            **fields,
        }
        return SessionResult(
            **base,
            **values,
            aborted=True,
            abort_reason=reason,
            final_key_bits=0,
            classical=classical.as_dict(),
            timings_s=clock.finish(),
        )

    if sifted < 256:
        return stop(f"only {sifted} sifted bits: too few to estimate the QBER and keep a key")
    if s_lower is not None and chsh_report is not None and chsh_report["s"] <= 2.0:
        return stop(f"CHSH S = {chsh_report['s']:.3f} <= 2: no Bell violation (eavesdropper or noise)")

    estimate, alice, bob = clock.run(
        "estimation",
        lambda: estimate_qber(alice, bob, config.sample_fraction, rng, classical, eps_sec=config.eps_sec),
    )
    estimated = {
        "sample_bits": estimate.sample_bits,
        "qber": estimate.qber,
        "qber_upper_bound": estimate.upper_bound,
    }
    if estimate.qber > config.qber_threshold:
        return stop(
            f"QBER {estimate.qber:.2%} on {estimate.sample_bits} sampled bits exceeds the "
            f"{config.qber_threshold:.0%} threshold: eavesdropper or too much noise",
            **estimated,
        )

    errors_before = int(np.count_nonzero(alice != bob))
    clock.begin("reconciliation")
    reconciled, seconds = yield cascade.ReconcileJob(
        alice, bob, estimate.qber, method=config.reconciliation, rng=rng, channel=classical
    )
    clock.book("reconciliation", seconds)
    bob = reconciled.corrected
    key_error_rate = errors_before / alice.size
    rec_stats = ReconciliationStats(
        method=config.reconciliation,
        efficiency=reconciled.efficiency(key_error_rate) if errors_before else None,
        leaked_bits=reconciled.leaked_bits,
        channel_uses=reconciled.channel_uses,
        errors_before=errors_before,
        errors_after=int(np.count_nonzero(alice != bob)),
    )
    verified = clock.run("verification", lambda: verify_keys(alice, bob, config.eps_cor, rng, classical))
    if not verified.passed:
        return stop(
            f"error verification failed: Cascade left errors ({verified.hash_bits}-bit hash differs)",
            **estimated,
            reconciliation=rec_stats,
            verification_passed=False,
        )

    n = int(alice.size)
    if config.protocol == "bb84":
        bound = finite_key_length(
            n,
            estimate.sample_bits,
            estimate.qber,
            reconciled.leaked_bits,
            eps_sec=config.eps_sec,
            eps_cor=config.eps_cor,
        )
        length = bound.length
    else:
        length = e91_key_length(
            n, s_lower, reconciled.leaked_bits, eps_sec=config.eps_sec, eps_cor=config.eps_cor
        )
    rates = {
        "finite_key_bits_per_signal": length / config.signals,
        "shor_preskill_asymptotic_fraction_of_sifted": shor_preskill_rate(estimate.qber),
        "seed_eq1_upper_bound_bits_per_signal": seed_paper_rate(sifted / config.signals, estimate.qber),
    }
    if length <= 0:
        return stop(
            f"the finite-key bound leaves no secret bits from {n} key bits at QBER {estimate.qber:.2%} "
            f"(leak {reconciled.leaked_bits} bits): send more signals",
            **estimated,
            reconciliation=rec_stats,
            verification_passed=True,
            rates=rates,
        )

    def amplify() -> tuple[np.ndarray, np.ndarray]:
        seed = random_bits(seed_length(n, length), rng)
        classical.send("amplification", seed.size)  # the public seed; discloses nothing about the key
        alice_final, bob_final = toeplitz_hashes([alice, bob], seed, length)
        return alice_final, bob_final

    alice_final, bob_final = clock.run("amplification", amplify)
    return SessionResult(
        **base,
        **estimated,
        aborted=False,
        abort_reason=None,
        reconciliation=rec_stats,
        verification_passed=True,
        final_key_bits=length,
        rates=rates,
        classical=classical.as_dict(),
        timings_s=clock.finish(),
        alice_key=alice_final,
        bob_key=bob_final,
    )
