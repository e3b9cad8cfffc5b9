"""E91: entanglement-based key distribution with a CHSH test, grouped by class on Qiskit Aer.

Geometry: the pair source sits at Alice's end. Alice measures her half locally (no loss,
no noise); Bob's half travels the :class:`~qkd.channel.Channel`, so its loss, dark counts
and noise (the noise model on Bob's channel ``id`` gate) apply to Bob's qubit only.

The source emits |Phi+> = (|00> + |11>)/sqrt(2). Measurement settings are angles in the
x-z plane of the Bloch sphere (measurement along (sin t, 0, cos t), i.e. ``Ry(-t)`` then a
Z measurement), for which |Phi+> gives the correlation E(a, b) = cos(a - b):

* Alice: 0, pi/4, pi/2; Bob: pi/4, pi/2, 3pi/4 (each chosen uniformly);
* key rounds: (pi/4, pi/4) and (pi/2, pi/2), where E = 1 and the bits agree;
* CHSH rounds: a in {0, pi/2}, b in {pi/4, 3pi/4}:
  S = |E(0, pi/4) - E(0, 3pi/4) + E(pi/2, pi/4) + E(pi/2, 3pi/4)| = 2 sqrt(2) honestly.

Intercept-resend Eve (a fraction of pairs) measures Bob's qubit in Z or X on its way out of
the source and resends her outcome in her basis; then E = cos(a - b) / 2, S = sqrt(2) at
fraction 1, and key rounds carry 25% errors.

Simulation follows :mod:`qkd.quantum`: one circuit per class, counts, a seeded scatter.
Honest pairs are grouped by (Alice's setting, Bob's setting), 9 two-qubit circuits with
``PAIR_LANES`` pairs each. Eve's interception is two grouped stages, because a
mid-circuit measurement would make Aer simulate shot by shot: the pair with Alice's and
Eve's measurements (6 classes: Alice's setting x Eve's basis), then Eve's resent qubit
through Bob's channel (12 classes: Eve's bit and basis x Bob's setting).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from qiskit import QuantumCircuit
from qiskit_aer.noise import NoiseModel

from qkd.channel import Channel
from qkd.classical import ClassicalChannel
from qkd.quantum import (
    LANES,
    X_BASIS,
    ClassCircuits,
    Progress,
    ShotBank,
    detection_announcement_bits,
    intercept_mask,
    prepare,
    run_in_chunks,
    sample_by_class,
)
from qkd.randomness import random_bits

ALICE_ANGLES = (0.0, math.pi / 4, math.pi / 2)
BOB_ANGLES = (math.pi / 4, math.pi / 2, 3 * math.pi / 4)
ANGLE_LABELS = {0.0: "0", math.pi / 4: "pi/4", math.pi / 2: "pi/2", 3 * math.pi / 4: "3pi/4"}
KEY_SETTINGS = ((1, 0), (2, 1))  # (Alice's, Bob's) setting indices with equal angles
CHSH_ALICE = (0, 2)  # a1 = 0, a3 = pi/2
CHSH_BOB = (0, 2)  # b1 = pi/4, b3 = 3pi/4
CHSH_SIGNS = {(0, 0): 1, (0, 2): -1, (2, 0): 1, (2, 2): 1}
SETTING_BITS = 2  # wire size of one setting out of three
PAIR_LANES = 3  # pairs per Aer circuit (6 qubits, density matrix)


@dataclass
class E91Signals:
    """Both parties' records per pair; ``bob_bits`` is meaningful where ``detected``.

    Alice always measures (her half never leaves the source); where Bob's photon was lost
    her outcome is a uniformly random bit, which is its exact marginal for |Phi+>.
    """

    alice_settings: np.ndarray  # uint8 index into ALICE_ANGLES
    bob_settings: np.ndarray  # uint8 index into BOB_ANGLES
    alice_bits: np.ndarray  # uint8
    bob_bits: np.ndarray  # uint8
    detected: np.ndarray  # bool, Bob's detector clicked
    eve_intercepted: np.ndarray  # bool
    signals: int
    noise_description: str
    signal_detected: np.ndarray | None = None  # bool, the click was the photon
    eve_bases: np.ndarray | None = None  # uint8, 0 = Z, 1 = X, where eve_intercepted
    eve_bits: np.ndarray | None = None  # uint8, where eve_intercepted & signal_detected


@dataclass
class CHSHResult:
    s_value: float  # |S|; 2 sqrt(2) for ideal pairs, <= 2 for any local (eavesdropped) model
    s_std_error: float  # from the binomial spread of each correlation, (1 - E^2) / N
    rounds: int  # detected rounds used for the test
    correlations: dict[str, float]  # "E(a=...,b=...)" -> estimate
    pair_rounds: dict[str, int] = field(default_factory=dict)  # rounds behind each correlation

    @property
    def rounds_per_correlator(self) -> tuple[int, ...]:
        """Rounds behind the four correlators, in the order of ``correlations`` (for finite-size bounds)."""
        return tuple(self.pair_rounds[label] for label in self.correlations)


def measure_at(qc: QuantumCircuit, qubit: int, clbit: int, angle: float) -> None:
    """Measure along (sin t, 0, cos t): rotate that axis onto Z, then measure."""
    if angle:
        qc.ry(-angle, qubit)
    qc.measure(qubit, clbit)


def _bell_pair(qc: QuantumCircuit, alice: int, bob: int) -> None:
    qc.h(alice)
    qc.cx(alice, bob)


@functools.cache
def _pair_circuit(class_id: int, lanes: int) -> QuantumCircuit:
    """Honest pairs; class = Alice's setting * 3 + Bob's setting. Lane outcome: alice | bob << 1."""
    alice_setting, bob_setting = divmod(class_id, 3)
    qc = QuantumCircuit(2 * lanes, 2 * lanes, name=f"e91-class{class_id}")
    for lane in range(lanes):
        alice, bob = 2 * lane, 2 * lane + 1
        _bell_pair(qc, alice, bob)
        qc.id(bob)  # Bob's channel
        measure_at(qc, alice, alice, ALICE_ANGLES[alice_setting])
        measure_at(qc, bob, bob, BOB_ANGLES[bob_setting])
    return qc


@functools.cache
def _interception_circuit(class_id: int, lanes: int) -> QuantumCircuit:
    """Eve measures Bob's half at the source; class = Alice's setting * 2 + Eve's basis.

    Lane outcome: alice | eve << 1.
    """
    alice_setting, eve_basis = divmod(class_id, 2)
    qc = QuantumCircuit(2 * lanes, 2 * lanes, name=f"e91-eve-class{class_id}")
    for lane in range(lanes):
        alice, bob = 2 * lane, 2 * lane + 1
        _bell_pair(qc, alice, bob)
        measure_at(qc, alice, alice, ALICE_ANGLES[alice_setting])
        measure_at(qc, bob, bob, math.pi / 2 if eve_basis == X_BASIS else 0.0)
    return qc


@functools.cache
def _resend_circuit(class_id: int, lanes: int) -> QuantumCircuit:
    """Eve's resent qubit through Bob's channel; class = eve bit | eve basis << 1 | Bob's setting << 2."""
    eve_bit, eve_basis, bob_setting = class_id & 1, (class_id >> 1) & 1, class_id >> 2
    qc = QuantumCircuit(lanes, lanes, name=f"e91-resend-class{class_id}")
    for lane in range(lanes):
        prepare(qc, lane, eve_bit, eve_basis)
        qc.id(lane)
        measure_at(qc, lane, lane, BOB_ANGLES[bob_setting])
    return qc


E91_PAIRS = ClassCircuits("e91-pairs", _pair_circuit, classes=9, lanes=PAIR_LANES, bits_per_lane=2)
E91_INTERCEPTION = ClassCircuits(
    "e91-interception", _interception_circuit, classes=6, lanes=PAIR_LANES, bits_per_lane=2
)
E91_RESEND = ClassCircuits("e91-resend", _resend_circuit, classes=12, lanes=LANES, bits_per_lane=1)


def _simulate_chunk(
    n: int,
    channel: Channel,
    noise_model: NoiseModel | None,
    eve_fraction: float,
    rng: np.random.Generator,
    bank: ShotBank | None,
) -> dict[str, np.ndarray]:
    """All per-pair arrays of one chunk, named as the fields of :class:`E91Signals`."""
    alice_settings = rng.integers(0, 3, n, dtype=np.uint8)
    bob_settings = rng.integers(0, 3, n, dtype=np.uint8)
    detection = channel.detect(n, rng)
    eve = intercept_mask(n, eve_fraction, rng)
    eve_bases = np.zeros(n, dtype=np.uint8)
    eve_bases[eve] = random_bits(int(eve.sum()), rng)

    alice_bits = random_bits(n, rng)  # exact marginal wherever Bob's photon is not simulated
    bob_bits = np.zeros(n, dtype=np.uint8)
    eve_bits = np.zeros(n, dtype=np.uint8)

    honest = np.flatnonzero(detection.signal_detected & ~eve)
    if honest.size:
        outcome = sample_by_class(
            alice_settings[honest] * 3 + bob_settings[honest],
            E91_PAIRS,
            noise_model=noise_model,
            rng=rng,
            bank=bank,
        )
        alice_bits[honest] = outcome & 1
        bob_bits[honest] = outcome >> 1

    intercepted = np.flatnonzero(detection.signal_detected & eve)
    if intercepted.size:
        outcome = sample_by_class(
            alice_settings[intercepted] * 2 + eve_bases[intercepted],
            E91_INTERCEPTION,
            noise_model=None,
            rng=rng,
            bank=bank,
        )
        alice_bits[intercepted] = outcome & 1
        eve_bits[intercepted] = outcome >> 1
        bob_bits[intercepted] = sample_by_class(
            eve_bits[intercepted] | (eve_bases[intercepted] << 1) | (bob_settings[intercepted] << 2),
            E91_RESEND,
            noise_model=noise_model,
            rng=rng,
            bank=bank,
        )

    dark_only = detection.dark_only
    bob_bits[dark_only] = random_bits(int(dark_only.sum()), rng)
    return {
        "alice_settings": alice_settings,
        "bob_settings": bob_settings,
        "alice_bits": alice_bits,
        "bob_bits": bob_bits,
        "detected": detection.detected,
        "eve_intercepted": eve,
        "signal_detected": detection.signal_detected,
        "eve_bases": eve_bases,
        "eve_bits": eve_bits,
    }


def distribute(
    n_pairs: int,
    channel: Channel,
    *,
    eve_fraction: float = 0.0,
    seed: int | None = None,
    progress: Progress | None = None,
    bank: ShotBank | None = None,
) -> E91Signals:
    """Distribute ``n_pairs`` entangled pairs and record both parties' settings and outcomes.

    A ``bank`` serves Aer outcomes simulated ahead for many sessions (see :class:`ShotBank`).
    """
    if int(n_pairs) != n_pairs or n_pairs < 0:
        raise ValueError(f"number of pairs must be a non-negative integer, got {n_pairs!r}")
    if not 0.0 <= eve_fraction <= 1.0:
        raise ValueError(f"eve_fraction must be in [0, 1], got {eve_fraction!r}")
    n_pairs = int(n_pairs)
    rng = np.random.default_rng(seed)
    noise_model = channel.noise_model()
    arrays = run_in_chunks(
        n_pairs, lambda size: _simulate_chunk(size, channel, noise_model, eve_fraction, rng, bank), progress
    )
    return E91Signals(signals=n_pairs, noise_description=channel.noise_description(), **arrays)


def _pair_label(alice_setting: int, bob_setting: int) -> str:
    return f"E(a={ANGLE_LABELS[ALICE_ANGLES[alice_setting]]},b={ANGLE_LABELS[BOB_ANGLES[bob_setting]]})"


def chsh(signals: E91Signals, classical: ClassicalChannel, stage: str = "chsh") -> CHSHResult:
    """Estimate S from the detected test rounds; both parties announce those outcomes.

    The settings are already public after :func:`sift`; here Bob and Alice exchange their
    outcomes of the test rounds. Those bits are counted as disclosed in this stage; they
    are not key bits (test and key rounds are disjoint). A setting pair without detected
    rounds makes S undefined (NaN).
    """
    detected = signals.detected
    correlations: dict[str, float] = {}
    pair_rounds: dict[str, int] = {}
    s_value = 0.0
    variance = 0.0
    rounds = 0
    for (alice_setting, bob_setting), sign in CHSH_SIGNS.items():
        chosen = detected & (signals.alice_settings == alice_setting) & (signals.bob_settings == bob_setting)
        count = int(chosen.sum())
        label = _pair_label(alice_setting, bob_setting)
        if count:
            disagree = float(np.mean(signals.alice_bits[chosen] != signals.bob_bits[chosen]))
            correlation = 1.0 - 2.0 * disagree
            variance += (1.0 - correlation**2) / count
        else:
            correlation = math.nan
            variance = math.nan
        correlations[label] = correlation
        pair_rounds[label] = count
        s_value += sign * correlation
        rounds += count
    classical.exchange(stage, request_bits=rounds, reply_bits=rounds, disclosed_bits=2 * rounds)
    return CHSHResult(
        s_value=abs(s_value),
        s_std_error=math.sqrt(variance),
        rounds=rounds,
        correlations=correlations,
        pair_rounds=pair_rounds,
    )


def key_rounds(signals: E91Signals) -> np.ndarray:
    """Detected rounds with matching angles: (pi/4, pi/4) or (pi/2, pi/2)."""
    matching = np.zeros(signals.signals, dtype=bool)
    for alice_setting, bob_setting in KEY_SETTINGS:
        matching |= (signals.alice_settings == alice_setting) & (signals.bob_settings == bob_setting)
    return np.flatnonzero(signals.detected & matching)


def sift(
    signals: E91Signals, classical: ClassicalChannel, stage: str = "sifting"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Key-setting rounds: (alice_key, bob_key, positions); for |Phi+> the bits are equal.

    Bob announces his detections and his setting for each; Alice replies with her settings
    for those rounds, so both know the key and the test rounds. Settings only: no key bit
    disclosed.
    """
    detected = int(np.count_nonzero(signals.detected))
    request_bits = detection_announcement_bits(signals.signals, detected) + SETTING_BITS * detected
    classical.exchange(stage, request_bits=request_bits, reply_bits=SETTING_BITS * detected, disclosed_bits=0)
    positions = key_rounds(signals)
    return signals.alice_bits[positions], signals.bob_bits[positions], positions
