"""Whole QKD sessions: keys match, attacks abort, results are seeded and keep keys private."""

from __future__ import annotations

import hashlib
import uuid

import numpy as np
import pytest

from qkd import cascade
from qkd.channel import build
from qkd.quantum import ShotBank
from qkd.session import SessionConfig, SessionResult, run_session, run_sessions

NOISY = build("ideal", depolarizing=0.04)  # QBER 2%


def _run(**kwargs):
    return run_session(SessionConfig(**{"channel": NOISY, "signals": 60_000, "seed": 7, **kwargs}))


def test_honest_bb84_session_gives_matching_keys() -> None:
    result = _run()
    assert not result.aborted, result.abort_reason
    assert result.keys_match and result.final_key_bits > 0
    assert abs(result.qber - 0.02) < 0.01
    assert result.qber <= result.qber_upper_bound
    assert result.key_sha256 == hashlib.sha256(np.packbits(result.alice_key).tobytes()).hexdigest()
    assert uuid.UUID(result.key_id).version == 4
    rec = result.reconciliation
    assert rec is not None and rec.errors_before > 0 and rec.errors_after == 0
    assert rec.leaked_bits == result.classical["reconciliation"]["disclosed_bits"]
    assert result.final_key_bits < result.sifted_bits - result.sample_bits - rec.leaked_bits


def test_same_seed_same_session_and_other_seed_other_key() -> None:
    first, again, other = _run(), _run(), _run(seed=8)
    strip = lambda r: {k: v for k, v in r.as_dict().items() if k != "timings_s"}  # noqa: E731
    assert strip(first) == strip(again)
    assert np.array_equal(first.alice_key, again.alice_key)
    assert other.key_sha256 != first.key_sha256 and other.key_id != first.key_id


def test_full_intercept_resend_aborts() -> None:
    result = _run(eve_fraction=1.0)
    assert result.aborted and "QBER" in result.abort_reason
    assert result.qber > 0.2
    assert not result.keys_match and result.final_key_bits == 0 and result.key_sha256 is None


def test_partial_eavesdropping_raises_the_qber_by_a_quarter_of_the_fraction() -> None:
    result = run_session(SessionConfig(channel=build("ideal"), signals=60_000, seed=3, eve_fraction=0.2))
    assert abs(result.actual_qber - 0.05) < 0.01  # f/4
    assert result.keys_match  # 5% is below the 11% threshold: the key is shorter but still secret


def test_session_without_the_discarded_outcomes() -> None:
    """The vehicle simulator's setting: keys still match and the QBER is the channel's."""
    result = _run(simulate_discarded=False)
    assert not result.aborted, result.abort_reason
    assert result.keys_match and abs(result.actual_qber - 0.02) < 0.01
    assert result.sifted_bits == _run().sifted_bits  # the same bases and detections for a seed


def test_higher_qber_gives_a_shorter_key() -> None:
    low = _run(channel=build("ideal", depolarizing=0.02))
    high = _run(channel=build("ideal", depolarizing=0.08))
    assert low.final_key_bits > high.final_key_bits > 0


def test_e91_honest_session_and_attack() -> None:
    honest = _run(protocol="e91", channel=build("ideal"))
    assert not honest.aborted, honest.abort_reason
    assert honest.keys_match and honest.chsh["s"] > 2.6
    attacked = _run(protocol="e91", channel=build("ideal"), eve_fraction=1.0)
    assert attacked.aborted and attacked.chsh["s"] <= 2.1


def test_too_few_signals_abort_with_a_reason() -> None:
    result = _run(signals=200)
    assert result.aborted and "too few" in result.abort_reason


def test_finite_key_bound_can_leave_nothing() -> None:
    result = _run(signals=3_000, eps_sec=1e-20)
    assert result.aborted and "finite-key" in result.abort_reason
    assert result.verification_passed


def test_result_never_shows_key_material() -> None:
    result = _run()
    key_hex = np.packbits(result.alice_key).tobytes().hex()
    assert "alice_key" not in repr(result) and "bob_key" not in repr(result)
    assert key_hex[:32] not in repr(result) and key_hex[:32] not in str(result.as_dict())


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("signals", 0, "signals"),
        ("protocol", "b92", "unknown protocol"),
        ("eve_fraction", 1.5, "eve fraction"),
        ("reconciliation", "ldpc", "unknown reconciliation"),
        ("eps_sec", 0.0, "eps-sec"),
        ("eps_cor", 2.0, "eps-cor"),
        ("sample_fraction", 1.0, "sample fraction"),
        ("seed", -1, "seed"),
    ],
)
def test_bad_configuration_is_refused(field: str, value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        SessionConfig(channel=NOISY, **{field: value})


def test_skipping_the_discarded_outcomes_is_refused_for_e91() -> None:
    with pytest.raises(ValueError, match="BB84 only"):
        SessionConfig(channel=NOISY, protocol="e91", simulate_discarded=False)


def test_sessions_sharing_a_shot_bank() -> None:
    """A bank serves many sessions from few Aer jobs: keys still match, QBER and CHSH still
    come out right, and the same bank seed replays the same sessions."""

    def sessions(bank: ShotBank) -> list:
        return [
            run_session(SessionConfig(channel=NOISY, signals=60_000, seed=s, protocol=protocol), bank=bank)
            for s in range(3)
            for protocol in ("bb84", "e91")
        ]

    bank = ShotBank(seed=1)
    first = sessions(bank)
    for result in first:
        assert not result.aborted, result.abort_reason
        assert result.keys_match and abs(result.actual_qber - 0.02) < 0.012
    assert all(r.chsh["s"] > 2.5 for r in first if r.protocol == "e91")
    assert bank.jobs <= 2  # one refill per family (BB84 channel, E91 pairs) served all six
    again = sessions(ShotBank(seed=1))
    assert [r.key_sha256 for r in again] == [r.key_sha256 for r in first]


def _batch_mix() -> list[tuple[SessionConfig, str | None]]:
    """Sessions of every kind, each with the name of its bank: two shared banks and none."""

    def small(seed: int, **kwargs: object) -> SessionConfig:
        return SessionConfig(**{"channel": NOISY, "signals": 20_000, "seed": seed, **kwargs})

    return [
        (small(1), "a"),
        (small(2, channel=build("ideal", depolarizing=0.06)), "b"),
        (small(3, eve_fraction=1.0), "a"),  # aborts on its QBER
        (small(4, reconciliation="original"), "a"),
        (small(5, signals=200), "b"),  # too few signals
        (small(6, protocol="e91"), "b"),  # aborts after Cascade: too short for a finite key
        (small(7, simulate_discarded=False), None),
        (small(8, channel=build("free-space", distance_km=0.05), simulate_discarded=False), "a"),
        (small(1), "a"),  # seed 1 again: bank a has moved on
        (small(9, reconciliation="original"), "b"),
    ]


def _with_banks(mix: list[tuple[SessionConfig, str | None]]) -> list[tuple[SessionConfig, ShotBank | None]]:
    banks = {"a": ShotBank(seed=1), "b": ShotBank(seed=2)}
    return [(config, None if name is None else banks[name]) for config, name in mix]


def _one_by_one(mix: list[tuple[SessionConfig, str | None]]) -> list[SessionResult]:
    return [run_session(config, bank=bank) for config, bank in _with_banks(mix)]


def _same_sessions(together: list, alone: list[SessionResult]) -> None:
    assert len(together) == len(alone)
    for joint, single in zip(together, alone, strict=True):
        assert isinstance(joint, SessionResult), joint
        strip = lambda r: {k: v for k, v in r.as_dict().items() if k != "timings_s"}  # noqa: E731
        assert strip(joint) == strip(single)
        assert np.array_equal(joint.alice_key, single.alice_key)
        assert np.array_equal(joint.bob_key, single.bob_key)


def test_sessions_run_together_give_the_results_of_sessions_run_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """run_sessions reconciles the sessions that reach Cascade in one call per method; keys,
    statistics, aborts and classical traffic are still those of run_session in the same order."""
    mix = _batch_mix()
    alone = _one_by_one(mix)
    aborts = [r.abort_reason for r in alone if r.aborted]
    assert [reason.split()[0] for reason in aborts] == ["QBER", "only", "the"]  # the last: after Cascade
    assert sum(r.keys_match for r in alone) == 7

    joint_calls: list[list[str]] = []
    reconcile_together = cascade.reconcile_together

    def counted(jobs: list[cascade.ReconcileJob]) -> list[cascade.ReconciliationResult]:
        joint_calls.append([job.method for job in jobs])
        return reconcile_together(jobs)

    monkeypatch.setattr(cascade, "reconcile_together", counted)
    together = run_sessions(_with_banks(mix))
    assert joint_calls == [["biconf"] * 6, ["original"] * 2]
    _same_sessions(together, alone)
    for result in together:
        stages = sum(t for stage, t in result.timings_s.items() if stage != "total")
        assert result.timings_s["total"] == pytest.approx(stages, abs=1e-5)


def test_a_job_that_cascade_refuses_fails_only_its_own_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """reconcile_together checks every job before it draws or counts anything; when it
    refuses one, the jobs are reconciled one by one and only that session fails."""
    mix = _batch_mix()
    alone = _one_by_one(mix)
    prepare = cascade._prepare
    refused: list[int] = []  # id of the second job's key, once seen

    def refuse_the_second_job(job: cascade.ReconcileJob) -> object:
        if not refused and len(prepared) == 1:
            refused.append(id(job.alice))
        prepared.append(job)
        if id(job.alice) in refused:
            raise ValueError("bad keys")
        return prepare(job)

    prepared: list[cascade.ReconcileJob] = []
    monkeypatch.setattr(cascade, "_prepare", refuse_the_second_job)
    together = run_sessions(_with_banks(mix))
    failed = 1  # the second session reaches Cascade second
    assert isinstance(together[failed], ValueError) and str(together[failed]) == "bad keys"
    _same_sessions(together[:failed] + together[failed + 1 :], alone[:failed] + alone[failed + 1 :])
