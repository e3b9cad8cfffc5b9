"""BB84 quantum stage: QBER under each noise and eavesdropper, determinism, exactness of grouping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit_aer import AerSimulator

from qkd import channel as ch
from qkd import quantum
from qkd.classical import ClassicalChannel, index_bits
from qkd.quantum import BB84Signals, naive_prepare_and_measure, prepare_and_measure, sift

N = 40_000  # about 20,000 sifted bits: 5 sigma is about 0.015 at 25% QBER


def sigma_bound(expected: float, trials: int, sigmas: float = 5.0) -> float:
    return sigmas * math.sqrt(max(expected * (1 - expected), 1e-12) / trials)


def sifted_errors(signals: BB84Signals) -> dict[str, tuple[float, int]]:
    """QBER and number of sifted bits: overall, Z basis, X basis."""
    alice, bob, positions = sift(signals, ClassicalChannel())
    z = signals.alice_bases[positions] == quantum.Z_BASIS
    errors = alice != bob
    return {
        "all": (float(errors.mean()), errors.size),
        "z": (float(errors[z].mean()), int(z.sum())),
        "x": (float(errors[~z].mean()), int((~z).sum())),
    }


@pytest.mark.parametrize(
    ("channel", "eve_fraction", "expected"),
    [
        (ch.ideal(), 0.0, {"all": 0.0, "z": 0.0, "x": 0.0}),
        (ch.build("ideal", depolarizing=0.08), 0.0, {"all": 0.04, "z": 0.04, "x": 0.04}),
        (ch.build("ideal", bitflip=0.1), 0.0, {"all": 0.05, "z": 0.1, "x": 0.0}),
        (ch.ideal(), 1.0, {"all": 0.25, "z": 0.25, "x": 0.25}),
        (ch.ideal(), 0.4, {"all": 0.10, "z": 0.10, "x": 0.10}),
        # Eve (25%) and depolarizing noise (5%) in series: 0.25 * 0.95 + 0.75 * 0.05
        (ch.build("ideal", depolarizing=0.1), 1.0, {"all": 0.275, "z": 0.275, "x": 0.275}),
    ],
    ids=["noiseless", "depolarizing", "bitflip", "eve-full", "eve-0.4", "eve-and-noise"],
)
def test_sifted_qber(channel, eve_fraction, expected):
    observed = sifted_errors(prepare_and_measure(N, channel, eve_fraction=eve_fraction, seed=1234))
    for basis, (qber, bits) in observed.items():
        assert bits > 0.2 * N
        assert abs(qber - expected[basis]) <= sigma_bound(expected[basis], bits), (basis, qber)
    if expected["x"] == 0.0:
        assert observed["x"][0] == 0.0  # a bit flip never touches X-basis signals


def test_unsifted_and_eve_records_are_consistent():
    signals = prepare_and_measure(N, ch.build("ideal", depolarizing=0.1), eve_fraction=0.5, seed=8)
    mismatched = signals.alice_bases != signals.bob_bases
    assert abs(signals.bob_bits[mismatched].mean() - 0.5) <= sigma_bound(0.5, int(mismatched.sum()))
    eve = signals.eve_intercepted
    assert abs(eve.mean() - 0.5) <= sigma_bound(0.5, N)
    same_basis = eve & (signals.eve_bases == signals.alice_bases)
    assert np.array_equal(signals.eve_bits[same_basis], signals.alice_bits[same_basis])
    other_basis = eve & ~same_basis
    agree = float(np.mean(signals.eve_bits[other_basis] == signals.alice_bits[other_basis]))
    assert abs(agree - 0.5) <= sigma_bound(0.5, int(other_basis.sum()))


def test_skipping_discarded_outcomes_keeps_what_sifting_keeps():
    """Without the outcomes sifting discards, the classical draws and the sifted positions
    are those of the full stage for a seed, the sifted QBER is still the channel's and
    Eve's, and Aer serves only the photons sifting keeps."""
    channel = ch.build("fiber", distance_km=5, depolarizing=0.1)
    full_bank, lean_bank = quantum.ShotBank(seed=2), quantum.ShotBank(seed=2)
    full = prepare_and_measure(N, channel, eve_fraction=0.5, seed=8, bank=full_bank)
    lean = prepare_and_measure(N, channel, eve_fraction=0.5, seed=8, bank=lean_bank, simulate_discarded=False)
    assert full.discarded_simulated and not lean.discarded_simulated
    for name in ("alice_bits", "alice_bases", "bob_bases", "detected", "signal_detected", "eve_intercepted"):
        assert np.array_equal(getattr(full, name), getattr(lean, name)), name
    full_alice, _, full_positions = sift(full, ClassicalChannel())
    lean_alice, _, lean_positions = sift(lean, ClassicalChannel())
    assert np.array_equal(full_positions, lean_positions) and np.array_equal(full_alice, lean_alice)
    # Eve on half the signals over depolarizing 0.1: 0.5 * (0.25 * 0.95 + 0.75 * 0.05) + 0.5 * 0.05
    for basis, (qber, bits) in sifted_errors(lean).items():
        assert abs(qber - 0.1625) <= sigma_bound(0.1625, bits), basis
    kept = lean.signal_detected & (lean.alice_bases == lean.bob_bases)
    discarded = lean.signal_detected & ~kept
    assert not lean.bob_bits[discarded].any() and not lean.eve_bits[discarded].any()
    assert lean_bank.outcomes_served == int(kept.sum() + (kept & lean.eve_intercepted).sum())
    arrived = full.signal_detected
    assert full_bank.outcomes_served == int(arrived.sum() + (arrived & full.eve_intercepted).sum())
    assert lean_bank.outcomes_served < 0.6 * full_bank.outcomes_served


def test_lossy_channel_simulates_only_detected_signals():
    channel = ch.fiber(20)
    signals = prepare_and_measure(N, channel, seed=3)
    assert abs(signals.detected.mean() - channel.transmittance) <= sigma_bound(channel.transmittance, N)
    assert not signals.bob_bits[~signals.detected].any()
    observed = sifted_errors(signals)["all"]
    assert abs(observed[0] - channel.misalignment) <= sigma_bound(channel.misalignment, observed[1])
    assert "depolarizing" in signals.noise_description


def test_same_seed_same_arrays_and_different_seed_differs():
    channel = ch.build("fiber", distance_km=5, depolarizing=0.05)
    first = prepare_and_measure(20_000, channel, eve_fraction=0.3, seed=99)
    second = prepare_and_measure(20_000, channel, eve_fraction=0.3, seed=99)
    other = prepare_and_measure(20_000, channel, eve_fraction=0.3, seed=100)
    fields = [
        "alice_bits",
        "alice_bases",
        "bob_bases",
        "bob_bits",
        "detected",
        "eve_intercepted",
        "signal_detected",
        "eve_bases",
        "eve_bits",
    ]
    for name in fields:
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert not np.array_equal(first.alice_bits, other.alice_bits)
    assert not np.array_equal(first.bob_bits[first.detected], other.bob_bits[first.detected])


def test_dtypes_and_shapes():
    signals = prepare_and_measure(1000, ch.ideal(), eve_fraction=0.5, seed=0)
    for name in ["alice_bits", "alice_bases", "bob_bases", "bob_bits", "eve_bases", "eve_bits"]:
        assert getattr(signals, name).dtype == np.uint8
        assert getattr(signals, name).shape == (1000,)
    assert signals.detected.dtype == bool and signals.eve_intercepted.dtype == bool
    empty = prepare_and_measure(0, ch.ideal(), seed=0)
    assert empty.signals == 0 and empty.bob_bits.size == 0


def test_chunks_and_progress(monkeypatch):
    monkeypatch.setattr(quantum, "CHUNK_SIGNALS", 1000)
    calls: list[tuple[int, int]] = []
    signals = prepare_and_measure(
        3500, ch.build("ideal", depolarizing=0.2), seed=4, progress=lambda *a: calls.append(a)
    )
    assert calls == [(1000, 3500), (2000, 3500), (3000, 3500), (3500, 3500)]
    assert signals.bob_bits.shape == (3500,)
    observed = sifted_errors(signals)["all"]
    assert abs(observed[0] - 0.1) <= sigma_bound(0.1, observed[1])


@pytest.mark.parametrize(("n_signals", "eve_fraction"), [(-1, 0.0), (1.5, 0.0), (10, 1.2), (10, -0.1)])
def test_invalid_arguments(n_signals, eve_fraction):
    with pytest.raises(ValueError):
        prepare_and_measure(n_signals, ch.ideal(), eve_fraction=eve_fraction, seed=0)


def test_grouping_matches_naive_reference():
    """Class grouping is exact in distribution: the textbook one-circuit-per-qubit run agrees."""
    channel = ch.build("ideal", depolarizing=0.2)
    expected = 0.5 * 0.1 + 0.5 * (0.25 * 0.9 + 0.75 * 0.1)  # half intercepted: 0.2
    naive = naive_prepare_and_measure(300, channel, eve_fraction=0.5, seed=21)
    grouped_small = prepare_and_measure(300, channel, eve_fraction=0.5, seed=21)
    for name in ["alice_bits", "alice_bases", "bob_bases", "detected", "eve_intercepted", "eve_bases"]:
        assert np.array_equal(getattr(naive, name), getattr(grouped_small, name)), name
    naive_qber, naive_bits = sifted_errors(naive)["all"]
    grouped_qber, grouped_bits = sifted_errors(prepare_and_measure(N, channel, eve_fraction=0.5, seed=21))[
        "all"
    ]
    assert abs(naive_qber - expected) <= sigma_bound(expected, naive_bits)
    assert abs(grouped_qber - expected) <= sigma_bound(expected, grouped_bits)
    spread = math.sqrt(expected * (1 - expected) * (1 / naive_bits + 1 / grouped_bits))
    assert abs(naive_qber - grouped_qber) <= 5 * spread


def test_naive_reference_without_noise_agrees_exactly_on_sifted_bits():
    naive = naive_prepare_and_measure(120, ch.ideal(), seed=2)
    alice, bob, _ = sift(naive, ClassicalChannel())
    assert np.array_equal(alice, bob)


def test_more_than_64_qubits_per_circuit_stays_correct():
    """Regression: an old Aer bug made stabilizer results wrong above 64 qubits per circuit.

    80 independent BB84 lanes in one stabilizer circuit, every second one intercepted
    mid-circuit; the QBER must be right on every lane, including those past qubit 64.
    """
    lanes, shots, p = 80, 400, 0.1
    rng = np.random.default_rng(64)
    bits, bases, bob_bases, eve_bases = (rng.integers(0, 2, lanes) for _ in range(4))
    eve = np.arange(lanes) % 2 == 1
    circuit = QuantumCircuit(lanes, 2 * lanes)
    for lane in range(lanes):
        quantum.append_bb84_signal(
            circuit,
            lane,
            lane,
            int(bits[lane]),
            int(bases[lane]),
            int(bob_bases[lane]),
            eve_basis=int(eve_bases[lane]) if eve[lane] else None,
            eve_clbit=lanes + lane if eve[lane] else None,
        )
    result = (
        AerSimulator(method="stabilizer", max_parallel_threads=1)
        .run(
            circuit,
            shots=shots,
            noise_model=ch.build("ideal", depolarizing=p).noise_model(),
            seed_simulator=7,
        )
        .result()
    )
    assert result.results[0].metadata["method"] == "stabilizer"
    counts = result.data(0)["counts"]
    outcomes = np.array([[(int(key, 16) >> lane) & 1 for lane in range(lanes)] for key in counts])
    weights = np.array(list(counts.values()))
    error_rate = ((outcomes != bits) * weights[:, None]).sum(axis=0) / shots
    # per lane: noise alone flips p/2; Eve in the wrong basis makes the outcome a coin toss
    expected = np.where(eve & (eve_bases != bases), 0.5, p / 2)
    sifted = bases == bob_bases
    for part in (sifted & ~eve, sifted & eve, sifted & (np.arange(lanes) >= 64)):
        assert part.sum() >= 5
        mean = float(expected[part].mean())
        assert abs(float(error_rate[part].mean()) - mean) <= sigma_bound(mean, int(part.sum()) * shots)


def test_sift_keeps_matching_bases_and_counts_messages():
    signals = prepare_and_measure(10_000, ch.fiber(5), seed=6)
    classical = ClassicalChannel()
    alice, bob, positions = sift(signals, classical)
    assert signals.detected[positions].all()
    assert np.array_equal(signals.alice_bases[positions], signals.bob_bases[positions])
    detected = int(signals.detected.sum())
    matching = signals.detected & (signals.alice_bases == signals.bob_bases)
    assert positions.size == matching.sum() and alice.size == bob.size == positions.size
    traffic = classical.stages["sifting"]
    assert (traffic.messages, traffic.channel_uses, traffic.disclosed_bits) == (2, 1, 0)
    request = min(10_000, index_bits(detected, 10_000)) + detected
    assert traffic.bytes == (request + 7) // 8 + (detected + 7) // 8
    assert classical.disclosed("sifting") == 0


# --- the shot bank: Aer outcomes simulated ahead for many sessions -------------------------------


@pytest.mark.parametrize(
    ("channel", "eve_fraction", "expected"),
    [
        (ch.build("ideal", depolarizing=0.08), 0.0, {"all": 0.04, "z": 0.04, "x": 0.04}),
        (ch.build("ideal", bitflip=0.1), 0.0, {"all": 0.05, "z": 0.1, "x": 0.0}),
        (ch.build("ideal", depolarizing=0.1), 1.0, {"all": 0.275, "z": 0.275, "x": 0.275}),
    ],
    ids=["depolarizing", "bitflip", "eve-and-noise"],
)
def test_bank_served_sessions_have_the_right_qber(channel, eve_fraction, expected):
    """Many small sessions from one bank whose refills are smaller than some requests:
    the pooled QBER per basis is what the channel gives."""
    bank = quantum.ShotBank(seed=5, refill_outcomes=1500)
    runs = [
        prepare_and_measure(4_000, channel, eve_fraction=eve_fraction, seed=s, bank=bank) for s in range(10)
    ]
    for basis in ("all", "z", "x"):
        errors = sum(sifted_errors(r)[basis][0] * sifted_errors(r)[basis][1] for r in runs)
        bits = sum(sifted_errors(r)[basis][1] for r in runs)
        assert abs(errors / bits - expected[basis]) <= sigma_bound(expected[basis], bits), basis
    assert 1 < bank.jobs < 10 * (2 if eve_fraction else 1)  # refills, but fewer than one job per session


def test_bank_hands_out_each_outcome_once():
    """Served plus left in the pools equals what Aer simulated, class by class; a class
    nobody asks for is never simulated."""
    bank = quantum.ShotBank(seed=1, refill_outcomes=1000)
    channel = ch.build("ideal", depolarizing=0.1)
    rng = np.random.default_rng(0)
    served = np.zeros((8, 2), dtype=np.int64)
    for size in (10, 999, 1, 2500, 0, 700):
        sizes = np.full(8, size)
        sizes[3] = 0
        kept = bank.take(quantum.BB84_CHANNEL, channel.noise_model(), sizes, rng)
        assert np.array_equal(kept.sum(axis=1), sizes)
        served += kept
    ((_, pool, asked),) = bank._pools.values()
    assert (pool >= 0).all()
    assert bank.outcomes_simulated == int((served + pool).sum())
    assert bank.outcomes_served == int(served.sum())
    assert asked.tolist() == [c != 3 for c in range(8)]
    assert not pool[3].any() and not served[3].any()
    made = (served + pool).sum(axis=1)[asked]
    assert made[0] > 0 and np.ptp(made) == 0  # every class asked for got the same refills
    # depolarizing 0.1 flips a Z-basis |0> (class 0) with probability 0.05
    assert abs(served[0, 1] / served[0].sum() - 0.05) <= sigma_bound(0.05, int(served[0].sum()))


def test_bank_is_deterministic_and_keeps_noise_models_apart():
    def run(bank):
        return [
            prepare_and_measure(3_000, ch.build("ideal", depolarizing=p), seed=s, bank=bank).bob_bits
            for s, p in enumerate((0.0, 0.3, 0.0, 0.3))
        ]

    first, second = run(quantum.ShotBank(seed=9)), run(quantum.ShotBank(seed=9))
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    bank = quantum.ShotBank(seed=9)
    noiseless = prepare_and_measure(3_000, ch.ideal(), seed=3, bank=bank)
    prepare_and_measure(3_000, ch.build("ideal", depolarizing=0.3), seed=4, bank=bank)
    alice, bob, _ = sift(noiseless, ClassicalChannel())
    assert np.array_equal(alice, bob)  # the noisy pool never leaks into the noiseless one
    assert len(bank._pools) == 2
    with pytest.raises(ValueError):
        quantum.ShotBank(refill_outcomes=0)
