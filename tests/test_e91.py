"""E91: CHSH value honest and under intercept-resend, key-round QBER, accounting, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkd import channel as ch
from qkd import e91
from qkd.classical import ClassicalChannel

PAIRS = 20_000


def sigma_bound(expected: float, trials: int, sigmas: float = 5.0) -> float:
    return sigmas * math.sqrt(max(expected * (1 - expected), 1e-12) / trials)


def run(channel: ch.Channel, eve_fraction: float = 0.0, seed: int = 1, pairs: int = PAIRS):
    signals = e91.distribute(pairs, channel, eve_fraction=eve_fraction, seed=seed)
    classical = ClassicalChannel()
    alice_key, bob_key, positions = e91.sift(signals, classical)
    result = e91.chsh(signals, classical)
    return signals, classical, (alice_key, bob_key, positions), result


def test_honest_ideal_pairs_violate_chsh_and_give_equal_keys():
    _, _, (alice_key, bob_key, _), result = run(ch.ideal())
    assert 2.7 <= result.s_value <= 2.95
    assert result.s_std_error < 0.05
    assert alice_key.size > PAIRS * 2 / 9 * 0.9
    assert np.array_equal(alice_key, bob_key)
    for label, correlation in result.correlations.items():
        a_text, b_text = label[len("E(a=") : -1].split(",b=")
        angles = {"0": 0.0, "pi/4": math.pi / 4, "pi/2": math.pi / 2, "3pi/4": 3 * math.pi / 4}
        expected = math.cos(angles[a_text] - angles[b_text])
        rounds = result.pair_rounds[label]
        # E = 1 - 2 * disagreement; bound the disagreement binomially
        assert abs((1 - correlation) / 2 - (1 - expected) / 2) <= sigma_bound((1 - expected) / 2, rounds)


def test_full_intercept_resend_breaks_the_bell_violation():
    _, _, (alice_key, bob_key, _), result = run(ch.ideal(), eve_fraction=1.0)
    assert result.s_value <= 2.1
    assert abs(result.s_value - math.sqrt(2)) <= 5 * result.s_std_error
    qber = float(np.mean(alice_key != bob_key))
    assert abs(qber - 0.25) <= sigma_bound(0.25, alice_key.size)


def test_partial_eavesdropping_and_depolarizing_scale_s():
    _, _, (alice_key, bob_key, _), result = run(ch.ideal(), eve_fraction=0.5, seed=3)
    assert abs(result.s_value - 2 * math.sqrt(2) * 0.75) <= 5 * result.s_std_error
    assert abs(float(np.mean(alice_key != bob_key)) - 0.125) <= sigma_bound(0.125, alice_key.size)
    _, _, (alice_key, bob_key, _), result = run(ch.build("ideal", depolarizing=0.1), seed=4)
    assert abs(result.s_value - 2 * math.sqrt(2) * 0.9) <= 5 * result.s_std_error
    assert abs(float(np.mean(alice_key != bob_key)) - 0.05) <= sigma_bound(0.05, alice_key.size)


def test_lossy_channel_uses_detected_rounds_only():
    channel = ch.fiber(5, preset="modern")
    signals, _, (alice_key, bob_key, positions), result = run(channel, seed=5)
    assert signals.detected[positions].all()
    assert abs(signals.detected.mean() - channel.transmittance) <= sigma_bound(channel.transmittance, PAIRS)
    assert not signals.bob_bits[~signals.detected].any()
    qber = float(np.mean(alice_key != bob_key))
    assert abs(qber - channel.misalignment) <= sigma_bound(channel.misalignment, alice_key.size)
    assert result.rounds == sum(result.pair_rounds.values()) == sum(result.rounds_per_correlator)
    assert len(result.rounds_per_correlator) == 4
    assert result.s_value > 2.0


def test_sifting_and_chsh_accounting():
    signals, classical, (_, _, positions), result = run(ch.fiber(2), seed=6)
    sifting = classical.stages["sifting"]
    assert (sifting.messages, sifting.channel_uses, sifting.disclosed_bits) == (2, 1, 0)
    test = classical.stages["chsh"]
    assert (test.messages, test.channel_uses, test.disclosed_bits) == (2, 1, 2 * result.rounds)
    key_settings = {(1, 0), (2, 1)}
    pairs = set(
        zip(signals.alice_settings[positions].tolist(), signals.bob_settings[positions].tolist(), strict=True)
    )
    assert pairs <= key_settings


def test_same_seed_same_arrays():
    channel = ch.build("fiber", distance_km=1, depolarizing=0.02)
    first = e91.distribute(5000, channel, eve_fraction=0.3, seed=42)
    second = e91.distribute(5000, channel, eve_fraction=0.3, seed=42)
    other = e91.distribute(5000, channel, eve_fraction=0.3, seed=43)
    for name in [
        "alice_settings",
        "bob_settings",
        "alice_bits",
        "bob_bits",
        "detected",
        "eve_intercepted",
        "eve_bits",
    ]:
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert not np.array_equal(first.alice_bits, other.alice_bits)
    assert first.noise_description == channel.noise_description()


def test_invalid_arguments_and_empty_run():
    with pytest.raises(ValueError):
        e91.distribute(-5, ch.ideal(), seed=0)
    with pytest.raises(ValueError):
        e91.distribute(10, ch.ideal(), eve_fraction=2.0, seed=0)
    empty = e91.distribute(0, ch.ideal(), seed=0)
    result = e91.chsh(empty, ClassicalChannel())
    assert result.rounds == 0 and math.isnan(result.s_value)
