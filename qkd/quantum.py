"""The BB84 quantum stage on Qiskit Aer, simulated by class rather than by qubit.

Signals are independent and the state of a signal depends only on its *class*: (the bit
and basis of the photon that enters the channel, Bob's basis). So the stage builds one
small circuit per class (8 of them), runs them all in one Aer job with as many shots as
the class has signals, and scatters the outcome counts back to the signals' positions
with a seeded permutation inside each class. That is exact in distribution and costs
O(classes) circuits instead of O(signals) (spec: "group by class and sample").

Two measured facts shape the details (qiskit 2.6, aer 0.18, this machine):

* Aer samples shots cheaply only when every measurement is terminal (measure sampling);
  a mid-circuit measurement makes it simulate shot by shot at about 40-70 us per shot.
  So intercept-resend is simulated the way it happens physically: Eve's measurement is
  its own grouped stage (Alice's photon measured in Eve's basis), and the photon she
  resends is a fresh preparation of her outcome in her basis, which then goes through
  the same 8 channel circuits as Alice's photons. Eve sits at Alice's output, so the
  channel (loss and noise) acts on the resent photon.
* Even with measure sampling Aer spends about 1 us per shot on counts bookkeeping, so a
  class circuit carries ``LANES`` identical, independent copies of the one-qubit
  circuit (density-matrix method, 6 qubits): one shot yields 6 i.i.d. outcomes. To get
  exactly k outcomes from ceil(k / 6) * 6 the stage keeps a uniformly random subset
  (hypergeometric draw), which is again exact.
* An Aer job costs 5-15 ms however few shots it has. Callers that run many short
  sessions pass a :class:`ShotBank`, which simulates outcomes ahead in large jobs and
  hands each session a random subset of what is left (exact by the same argument).

The textbook version, one Aer circuit per qubit with Eve's measurement mid-circuit, is
kept as :func:`naive_prepare_and_measure` for the benchmark and as a cross-check.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel

from qkd.channel import Channel
from qkd.classical import ClassicalChannel, index_bits
from qkd.randomness import random_bits

Z_BASIS, X_BASIS = 0, 1
LANES = 6  # copies of a one-qubit class circuit per Aer circuit (best of 1-10 measured: 5-7)
CHUNK_SIGNALS = 1 << 20  # signals drawn and simulated at a time: bounds memory, paces progress
AER_THREADS = 1  # the class circuits are tiny; extra threads only added overhead when measured
BANK_AER_THREADS = 2  # a ShotBank refill (65,536 outcomes per class) took 158 ms on 1 thread, 83 ms on 2

Progress = Callable[[int, int], None]


@dataclass
class BB84Signals:
    """What Alice and Bob hold after the quantum stage, one entry per signal.

    ``bob_bits`` is meaningful where ``detected``; at clicks from a dark count alone it is a
    uniformly random bit. ``eve_bases``/``eve_bits`` are Eve's records where she intercepted
    (her bit is simulated only where Bob detected the resent photon, the only place it
    matters for the key); they are for analysis and never enter the protocol.

    Without ``discarded_simulated``, the photons Bob detected in the other basis than
    Alice's (sifting discards them unread) were not simulated: their ``bob_bits`` and
    ``eve_bits`` read 0.
    """

    alice_bits: np.ndarray  # uint8
    alice_bases: np.ndarray  # uint8, 0 = Z, 1 = X
    bob_bases: np.ndarray  # uint8
    bob_bits: np.ndarray  # uint8
    detected: np.ndarray  # bool
    eve_intercepted: np.ndarray  # bool
    signals: int
    noise_description: str
    signal_detected: np.ndarray | None = None  # bool, the click was the photon, not a dark count
    eve_bases: np.ndarray | None = None  # uint8, meaningful where eve_intercepted
    eve_bits: np.ndarray | None = None  # uint8, meaningful where eve_intercepted & signal_detected
    discarded_simulated: bool = True  # False: outcomes that sifting discards were not simulated


# --- circuits -------------------------------------------------------------------------------


def prepare(qc: QuantumCircuit, qubit: int, bit: int, basis: int) -> None:
    """BB84 state: |0>,|1> in Z; |+>,|-> in X."""
    if bit:
        qc.x(qubit)
    if basis == X_BASIS:
        qc.h(qubit)


def measure_in(qc: QuantumCircuit, qubit: int, clbit: int, basis: int) -> None:
    if basis == X_BASIS:
        qc.h(qubit)
    qc.measure(qubit, clbit)


def append_bb84_signal(
    qc: QuantumCircuit,
    qubit: int,
    clbit: int,
    bit: int,
    basis: int,
    bob_basis: int,
    *,
    eve_basis: int | None = None,
    eve_clbit: int | None = None,
) -> None:
    """One signal as the textbook writes it: prepare, (Eve), channel ``id`` gate, Bob measures.

    With ``eve_basis`` Eve measures mid-circuit into ``eve_clbit`` and the collapsed qubit,
    rotated back into her basis, is what she resends.
    """
    prepare(qc, qubit, bit, basis)
    if eve_basis is not None:
        if eve_clbit is None:
            raise ValueError("an intercepting Eve needs a classical bit for her outcome")
        measure_in(qc, qubit, eve_clbit, eve_basis)
        if eve_basis == X_BASIS:
            qc.h(qubit)
    qc.id(qubit)
    measure_in(qc, qubit, clbit, bob_basis)


@functools.cache
def _channel_circuit(class_id: int, lanes: int) -> QuantumCircuit:
    """Class = sent bit | sent basis << 1 | Bob's basis << 2, ``lanes`` independent copies."""
    bit, basis, bob_basis = class_id & 1, (class_id >> 1) & 1, (class_id >> 2) & 1
    qc = QuantumCircuit(lanes, lanes, name=f"bb84-class{class_id}")
    for lane in range(lanes):
        append_bb84_signal(qc, lane, lane, bit, basis, bob_basis)
    return qc


@functools.cache
def _eve_circuit(class_id: int, lanes: int) -> QuantumCircuit:
    """Eve's measurement of Alice's photon; class = Alice's bit | her basis << 1 | Eve's basis << 2."""
    bit, basis, eve_basis = class_id & 1, (class_id >> 1) & 1, (class_id >> 2) & 1
    qc = QuantumCircuit(lanes, lanes, name=f"eve-class{class_id}")
    for lane in range(lanes):
        prepare(qc, lane, bit, basis)
        measure_in(qc, lane, lane, eve_basis)
    return qc


# --- grouped sampling (shared with E91) ---------------------------------------------------------


@functools.cache
def simulator(threads: int = AER_THREADS) -> AerSimulator:
    """Density matrix: with noise on the channel gate it still allows measure sampling."""
    return AerSimulator(method="density_matrix", max_parallel_threads=threads)


@dataclass(frozen=True)
class ClassCircuits:
    """One family of class circuits: ``build(class_id, lanes)`` for ``classes`` classes.

    Each circuit holds ``lanes`` independent copies of its class; lane j writes clbits
    ``j * bits_per_lane ...``, so one shot gives ``lanes`` i.i.d. outcomes.
    """

    name: str
    build: Callable[[int, int], QuantumCircuit]
    classes: int
    lanes: int
    bits_per_lane: int

    @property
    def categories(self) -> int:
        return 1 << self.bits_per_lane

    def simulate(
        self,
        class_list: list[int],
        shots: int,
        noise_model: NoiseModel | None,
        seed: int,
        threads: int = AER_THREADS,
    ) -> np.ndarray:
        """One Aer job: the outcome counts of ``shots * lanes`` signals of each listed class,
        one row per class (Aer gives every circuit of a job its own seed)."""
        circuits = [self.build(c, self.lanes) for c in class_list]
        job = simulator(threads).run(circuits, shots=shots, noise_model=noise_model, seed_simulator=seed)
        result = job.result()
        mask = self.categories - 1
        totals = np.zeros((len(class_list), self.categories), dtype=np.int64)
        for experiment in range(len(class_list)):
            counts = result.data(experiment)["counts"]
            patterns = np.array([int(key, 16) for key in counts], dtype=np.int64)
            weights = np.array(list(counts.values()), dtype=np.int64)
            for lane in range(self.lanes):
                lane_outcome = (patterns >> (lane * self.bits_per_lane)) & mask
                totals[experiment] += np.bincount(
                    lane_outcome, weights=weights, minlength=self.categories
                ).astype(np.int64)
        return totals


class ShotBank:
    """Aer outcomes simulated ahead in bulk and handed out to many short sessions.

    Why: an Aer job costs 5-15 ms however few shots it has, and a simulator that runs
    hundreds of sessions of a few thousand detected signals each pays that per session.
    The bank runs one job for the classes of a family asked for under one noise model, with
    at least ``refill_outcomes`` outcomes per class, keeps only the outcome counts, and gives each
    request a uniformly random subset of what is left (a multivariate hypergeometric draw).
    The pooled outcomes are i.i.d., so a subset is distributed exactly as a fresh job's
    outcomes and successive requests are independent: every outcome is still an Aer shot,
    and none is handed out twice. Results depend on the order of requests, which a seeded
    caller keeps deterministic.
    """

    def __init__(
        self,
        seed: int | Sequence[int] | None = None,
        refill_outcomes: int = 1 << 16,
        threads: int = BANK_AER_THREADS,
    ) -> None:
        """``threads``: Aer threads per refill; the outcomes do not depend on it (checked)."""
        if refill_outcomes < 1:
            raise ValueError(f"refill_outcomes must be >= 1, got {refill_outcomes}")
        self.refill_outcomes = int(refill_outcomes)
        self.threads = int(threads)
        self._rng = np.random.default_rng(seed)
        # (family, id(noise model)) -> (the noise model, kept alive so its id stays unique;
        # counts per class and category; which classes any request has asked for)
        self._pools: dict[tuple[ClassCircuits, int], tuple[NoiseModel | None, np.ndarray, np.ndarray]] = {}
        self.jobs = 0  # Aer jobs run
        self.outcomes_simulated = 0  # outcomes those jobs produced (all classes)
        self.outcomes_served = 0

    def take(
        self,
        family: ClassCircuits,
        noise_model: NoiseModel | None,
        sizes: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Counts per category of ``sizes[c]`` fresh outcomes of every class c (rows: classes).

        A refill simulates the classes that requests have asked for so far: callers that
        never ask for some classes (a stage that skips the outcomes sifting discards) do not
        pay for them.
        """
        key = (family, id(noise_model))
        if key not in self._pools:
            self._pools[key] = (
                noise_model,
                np.zeros((family.classes, family.categories), dtype=np.int64),
                np.zeros(family.classes, dtype=bool),
            )
        _, pool, asked = self._pools[key]
        asked |= sizes > 0
        kept = np.zeros((family.classes, family.categories), dtype=np.int64)
        for class_id in np.flatnonzero(sizes).tolist():
            need = int(sizes[class_id])
            while pool[class_id].sum() < need:  # all that is left, then a refill
                kept[class_id] += pool[class_id]
                need -= int(pool[class_id].sum())
                pool[class_id] = 0
                self._refill(family, noise_model, pool, np.flatnonzero(asked).tolist(), need)
            drawn = rng.multivariate_hypergeometric(pool[class_id], need)
            pool[class_id] -= drawn
            kept[class_id] += drawn
        self.outcomes_served += int(sizes.sum())
        return kept

    def _refill(
        self,
        family: ClassCircuits,
        noise_model: NoiseModel | None,
        pool: np.ndarray,
        classes: list[int],
        need: int,
    ) -> None:
        shots = -(-max(self.refill_outcomes, need) // family.lanes)
        seed = int(self._rng.integers(0, 2**31 - 1))
        pool[classes] += family.simulate(classes, shots, noise_model, seed, self.threads)
        self.jobs += 1
        self.outcomes_simulated += shots * family.lanes * len(classes)


def sample_by_class(
    class_ids: np.ndarray,
    family: ClassCircuits,
    *,
    noise_model: NoiseModel | None,
    rng: np.random.Generator,
    bank: ShotBank | None = None,
) -> np.ndarray:
    """Outcome of every signal, simulating one circuit per class present in ``class_ids``.

    Without a ``bank`` all circuits run in one Aer job with enough shots for the largest
    class, and each class keeps a uniformly random subset of exactly its size of the i.i.d.
    lane outcomes; with one, the bank hands out outcomes it simulated earlier. Either way a
    class's outcomes go to its signals in a random order. Returns the per-signal outcome
    (the lane's clbits as an integer), aligned with ``class_ids``.
    """
    outcomes = np.zeros(class_ids.size, dtype=np.uint8)
    if class_ids.size == 0:
        return outcomes
    sizes = np.bincount(class_ids, minlength=family.classes)
    present = np.flatnonzero(sizes)
    if bank is not None:
        available = bank.take(family, noise_model, sizes, rng)[present]  # exactly the sizes
    else:
        shots = int(-(-sizes.max() // family.lanes))
        available = family.simulate(present.tolist(), shots, noise_model, int(rng.integers(0, 2**31 - 1)))
    order = np.argsort(class_ids, kind="stable")
    ends = np.cumsum(sizes)
    # intp, not uint8: NumPy shuffles pointer-sized items with a specialised swap (measured
    # 1.7x faster than its generic byte copy) and draws the same permutation for any dtype
    categories = np.arange(family.categories, dtype=np.intp)
    for row, class_id in enumerate(present.tolist()):
        size = int(sizes[class_id])
        totals = available[row]
        kept = totals if totals.sum() == size else rng.multivariate_hypergeometric(totals, size)
        values = np.repeat(categories, kept)
        rng.shuffle(values)
        outcomes[order[ends[class_id] - size : ends[class_id]]] = values
    return outcomes


# --- the BB84 stage ---------------------------------------------------------------------------------

BB84_CHANNEL = ClassCircuits("bb84-channel", _channel_circuit, classes=8, lanes=LANES, bits_per_lane=1)
BB84_EVE = ClassCircuits("bb84-eve", _eve_circuit, classes=8, lanes=LANES, bits_per_lane=1)


@dataclass
class _Draws:
    alice_bits: np.ndarray
    alice_bases: np.ndarray
    bob_bases: np.ndarray
    detected: np.ndarray
    signal_detected: np.ndarray
    eve_intercepted: np.ndarray
    eve_bases: np.ndarray


def _check_arguments(n_signals: int, eve_fraction: float) -> None:
    if int(n_signals) != n_signals or n_signals < 0:
        raise ValueError(f"number of signals must be a non-negative integer, got {n_signals!r}")
    if not 0.0 <= eve_fraction <= 1.0:
        raise ValueError(f"eve_fraction must be in [0, 1], got {eve_fraction!r}")


def intercept_mask(n: int, eve_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Which signals Eve intercepts: each independently with probability ``eve_fraction``."""
    if eve_fraction <= 0.0:
        return np.zeros(n, dtype=bool)
    if eve_fraction >= 1.0:
        return np.ones(n, dtype=bool)
    return rng.random(n) < eve_fraction


def _draw(n: int, channel: Channel, eve_fraction: float, rng: np.random.Generator) -> _Draws:
    """Everything classical about the signals, shared by the grouped and the naive stage."""
    alice_bits = random_bits(n, rng)
    alice_bases = random_bits(n, rng)
    bob_bases = random_bits(n, rng)
    detection = channel.detect(n, rng)
    eve = intercept_mask(n, eve_fraction, rng)
    eve_bases = np.zeros(n, dtype=np.uint8)
    eve_bases[eve] = random_bits(int(eve.sum()), rng)
    return _Draws(
        alice_bits=alice_bits,
        alice_bases=alice_bases,
        bob_bases=bob_bases,
        detected=detection.detected,
        signal_detected=detection.signal_detected,
        eve_intercepted=eve,
        eve_bases=eve_bases,
    )


def run_in_chunks(
    n: int, simulate_chunk: Callable[[int], dict[str, np.ndarray]], progress: Progress | None
) -> dict[str, np.ndarray]:
    """Simulate ``n`` signals in chunks of :data:`CHUNK_SIGNALS` and join the per-signal arrays."""
    parts = []
    for start in range(0, n, CHUNK_SIGNALS):
        size = min(CHUNK_SIGNALS, n - start)
        parts.append(simulate_chunk(size))
        if progress is not None:
            progress(start + size, n)
    if not parts:
        return simulate_chunk(0)
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _simulate_chunk(
    n: int,
    channel: Channel,
    noise_model: NoiseModel | None,
    eve_fraction: float,
    rng: np.random.Generator,
    bank: ShotBank | None,
    simulate_discarded: bool = True,
) -> dict[str, np.ndarray]:
    """All per-signal arrays of one chunk, named as the fields of :class:`BB84Signals`."""
    draws = _draw(n, channel, eve_fraction, rng)
    sent_bits = draws.alice_bits.copy()
    sent_bases = draws.alice_bases.copy()
    eve_bits = np.zeros(n, dtype=np.uint8)

    arrived_mask = draws.signal_detected  # the photons whose outcome is simulated
    if not simulate_discarded:
        arrived_mask = arrived_mask & (draws.alice_bases == draws.bob_bases)
    intercepted = np.flatnonzero(draws.eve_intercepted & arrived_mask)
    if intercepted.size:
        eve_classes = (
            draws.alice_bits[intercepted]
            | (draws.alice_bases[intercepted] << 1)
            | (draws.eve_bases[intercepted] << 2)
        )
        eve_bits[intercepted] = sample_by_class(eve_classes, BB84_EVE, noise_model=None, rng=rng, bank=bank)
        sent_bits[intercepted] = eve_bits[intercepted]
        sent_bases[intercepted] = draws.eve_bases[intercepted]

    bob_bits = np.zeros(n, dtype=np.uint8)
    arrived = np.flatnonzero(arrived_mask)
    classes = (sent_bits | (sent_bases << 1) | (draws.bob_bases << 2))[arrived]  # one gather, not three
    bob_bits[arrived] = sample_by_class(classes, BB84_CHANNEL, noise_model=noise_model, rng=rng, bank=bank)
    dark_only = draws.detected & ~draws.signal_detected
    bob_bits[dark_only] = random_bits(int(dark_only.sum()), rng)
    return {**vars(draws), "bob_bits": bob_bits, "eve_bits": eve_bits}


def prepare_and_measure(
    n_signals: int,
    channel: Channel,
    *,
    eve_fraction: float = 0.0,
    seed: int | None = None,
    progress: Progress | None = None,
    bank: ShotBank | None = None,
    simulate_discarded: bool = True,
) -> BB84Signals:
    """Run the BB84 quantum stage for ``n_signals`` signals over ``channel``.

    Eve intercepts and resends each signal with probability ``eve_fraction`` in a random
    basis. The same ``seed`` gives identical arrays (with a ``bank``: the same seed and the
    same bank state); ``progress(done, total)`` is called after every chunk of
    :data:`CHUNK_SIGNALS` signals.

    ``simulate_discarded=False`` skips the Aer outcomes of detected photons that Bob
    measured in the other basis than Alice's. Sifting discards them before anyone reads
    them, so the sifted keys, every statistic and every abort of a session are distributed
    exactly as with them, and the classical draws (bits, bases, detections) are the same
    for a seed; about half of the Aer work goes. Callers that only want keys (the vehicle
    simulator) use it; analyses of the raw record keep the default.
    """
    _check_arguments(n_signals, eve_fraction)
    n_signals = int(n_signals)
    rng = np.random.default_rng(seed)
    noise_model = channel.noise_model()
    arrays = run_in_chunks(
        n_signals,
        lambda size: _simulate_chunk(size, channel, noise_model, eve_fraction, rng, bank, simulate_discarded),
        progress,
    )
    return BB84Signals(
        signals=n_signals,
        noise_description=channel.noise_description(),
        discarded_simulated=simulate_discarded,
        **arrays,
    )


def naive_prepare_and_measure(
    n_signals: int, channel: Channel, *, eve_fraction: float = 0.0, seed: int | None = None
) -> BB84Signals:
    """The textbook stage: one Aer circuit and one job per detected qubit. Benchmark use only.

    Draws the same classical randomness as :func:`prepare_and_measure` for the same seed (so
    bits, bases and detections coincide); only the quantum outcomes come from another
    simulation. Eve measures mid-circuit, as textbooks write it.
    """
    _check_arguments(n_signals, eve_fraction)
    n = int(n_signals)
    rng = np.random.default_rng(seed)
    draws = _draw(n, channel, eve_fraction, rng)
    noise_model = channel.noise_model()
    backend = AerSimulator(max_parallel_threads=AER_THREADS)
    bob_bits = np.zeros(n, dtype=np.uint8)
    eve_bits = np.zeros(n, dtype=np.uint8)
    for position in np.flatnonzero(draws.signal_detected):
        eve = bool(draws.eve_intercepted[position])
        qc = QuantumCircuit(1, 2 if eve else 1)
        append_bb84_signal(
            qc,
            0,
            0,
            int(draws.alice_bits[position]),
            int(draws.alice_bases[position]),
            int(draws.bob_bases[position]),
            eve_basis=int(draws.eve_bases[position]) if eve else None,
            eve_clbit=1 if eve else None,
        )
        result = backend.run(
            qc, shots=1, memory=True, noise_model=noise_model, seed_simulator=int(rng.integers(0, 2**31 - 1))
        ).result()
        outcome = result.get_memory(0)[0]  # clbits written right to left: "eve bob"
        bob_bits[position] = int(outcome[-1])
        if eve:
            eve_bits[position] = int(outcome[0])
    dark_only = draws.detected & ~draws.signal_detected
    bob_bits[dark_only] = random_bits(int(dark_only.sum()), rng)
    return BB84Signals(
        signals=n,
        noise_description=channel.noise_description(),
        bob_bits=bob_bits,
        eve_bits=eve_bits,
        **vars(draws),
    )


# --- sifting -------------------------------------------------------------------------------------


def detection_announcement_bits(signals: int, detected: int) -> int:
    """Wire size of Bob's detection announcement: a bit mask or an index list, whichever is shorter."""
    return min(signals, index_bits(detected, signals))


def sift(
    signals: BB84Signals, classical: ClassicalChannel, stage: str = "sifting"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the detected positions where the bases agree: (alice_sifted, bob_sifted, positions).

    Bob announces which signals he detected and his basis for each (1 bit each); Alice
    replies with the mask of matching bases. One exchange, bases only: no key bit disclosed.
    """
    detected = int(np.count_nonzero(signals.detected))
    request_bits = detection_announcement_bits(signals.signals, detected) + detected
    classical.exchange(stage, request_bits=request_bits, reply_bits=detected, disclosed_bits=0)
    # Whole-array comparisons, then one index list: 4x faster than gathering the detected
    # positions' bases first.
    sifted = np.flatnonzero(signals.detected & (signals.alice_bases == signals.bob_bases))
    return signals.alice_bits[sifted], signals.bob_bits[sifted], sifted
