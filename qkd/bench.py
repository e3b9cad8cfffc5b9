"""Throughput benchmarks of the QKD engine, reported as plain dicts (the CLI prints them).

Every figure comes from a run in the same process and the same call, so ratios
such as ``speedup`` compare like with like. Timings use ``perf_counter`` around
the library calls users make; nothing is extrapolated except where a field's
name says ``per_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from . import cascade, quantum
from .channel import build as build_channel
from .channel import fiber
from .keylength import binary_entropy, tomamichel_table_rate
from .session import SessionConfig, run_session
from .toeplitz import seed_length, toeplitz_hash

Progress = Callable[[str, float], None]

# Tomamichel et al. 2012, Table II (Q = 1%, eps/l = 1e-14, leak = 1.1 n h(Q)), as quoted in the spec.
TOMAMICHEL_TABLE_II = {10_000: 0.117, 100_000: 0.304, 1_000_000: 0.478}


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def run_qkd_bench(
    *, quick: bool = False, seed: int = 1, progress: Progress | None = None
) -> dict[str, object]:
    """``qkdiov bench qkd``: the quantum stage at 10^6 signals against one circuit per qubit,
    Cascade and Toeplitz throughput, and a full 10^6-signal BB84 session at 2% QBER."""
    say = progress or (lambda stage, fraction: None)
    signals = 20_000 if quick else 1_000_000
    naive_signals = 20 if quick else 300
    noisy = build_channel("ideal", depolarizing=0.04)  # QBER 2%

    say("quantum stage", 0.0)
    quantum.prepare_and_measure(1_000, noisy, seed=seed)  # warm-up: Aer's first job loads the simulator
    _, quantum_s = _timed(lambda: quantum.prepare_and_measure(signals, noisy, seed=seed))
    _, sifted_only_s = _timed(
        lambda: quantum.prepare_and_measure(signals, noisy, seed=seed, simulate_discarded=False)
    )
    say("naive circuits", 0.2)
    _, naive_s = _timed(lambda: quantum.naive_prepare_and_measure(naive_signals, noisy, seed=seed))

    say("cascade", 0.35)
    rng = np.random.default_rng(seed)
    n = signals // 2
    alice = rng.integers(0, 2, n, dtype=np.uint8)
    bob = alice ^ (rng.random(n) < 0.02).astype(np.uint8)
    # The first call of a process pays for fresh memory (page faults on ~10 bytes per bit per
    # pass); later calls reuse it. Report both: sessions in a long-running simulator are warm.
    _, cascade_cold_s = _timed(lambda: cascade.reconcile(alice, bob, 0.02, method="biconf", rng=rng))
    reconciled, cascade_s = _timed(lambda: cascade.reconcile(alice, bob, 0.02, method="biconf", rng=rng))
    assert isinstance(reconciled, cascade.ReconciliationResult)

    say("amplification", 0.5)
    out_bits = n // 2
    seed_bits = rng.integers(0, 2, seed_length(n, out_bits), dtype=np.uint8)
    _, amplification_s = _timed(lambda: toeplitz_hash(alice, seed_bits, out_bits))

    say("full session", 0.6)
    session = run_session(SessionConfig(channel=noisy, signals=signals, seed=seed, reconciliation="biconf"))
    session_s = session.timings_s["total"]
    say("finite-key table", 0.9)
    table = []
    for size, published in TOMAMICHEL_TABLE_II.items():
        rate, best_px = tomamichel_table_rate(size, 0.01)
        table.append(
            {
                "signals": size,
                "rate": round(rate, 4),
                "best_px": round(best_px, 3),
                "published_rate": published,
                "relative_difference": round(rate / published - 1, 4),
            }
        )
    return {
        "quick": quick,
        "signals": signals,
        "quantum_s": round(quantum_s, 4),
        "signals_per_s": round(signals / quantum_s),
        "sifted_only_signals_per_s": round(signals / sifted_only_s),  # outcomes sifting discards skipped
        "naive_signals": naive_signals,
        "naive_s": round(naive_s, 4),
        "naive_signals_per_s": round(naive_signals / naive_s, 1),
        "speedup": round((signals / quantum_s) / (naive_signals / naive_s), 1),
        "cascade_method": "biconf",
        "cascade_bits": n,
        "cascade_efficiency": round(reconciled.efficiency(float(np.mean(alice != bob))), 4),
        "cascade_bits_per_s": round(n / cascade_s),
        "cascade_first_call_bits_per_s": round(n / cascade_cold_s),
        "amplification_input_bits": n,
        "amplification_output_bits": out_bits,
        "amplification_bits_per_s": round(n / amplification_s),
        "session_signals": signals,
        "session_qber": session.qber,
        "session_s": round(session_s, 3),
        "session_timings_s": session.timings_s,
        "keys_match": session.keys_match,
        "final_key_bits": session.final_key_bits,
        "final_key_bits_per_s": round(session.final_key_bits / session_s),
        "tomamichel_table_ii": table,
        "fiber_rate_vs_distance": fiber_rate_vs_distance(quick=quick, seed=seed, progress=say),
    }


FIBER_DISTANCES_KM = (0, 25, 50, 75, 100, 125, 150, 175, 200)


def asymptotic_fiber_rate(distance_km: float, preset: str, leak_factor: float = 1.1) -> float:
    """Key bits per signal of single-photon BB84 in the asymptotic limit over a fibre preset.

    Y = 1 - (1 - eta)(1 - p_dark) detections per signal, error rate
    e = (e_d eta + p_dark / 2) / Y, rate = 1/2 Y [1 - f h(e) - h(e)] (half the
    detections survive sifting). No decoy states and no multi-photon pulses:
    this is the ideal-source curve the simulated sessions should approach.
    """
    link = fiber(distance_km, preset=preset)
    eta, dark = link.transmittance, link.dark_count_prob
    detections = 1 - (1 - eta) * (1 - dark)
    error = (link.misalignment * eta + dark / 2) / detections
    h = float(binary_entropy(min(error, 0.5)))
    return max(0.0, 0.5 * detections * (1 - leak_factor * h - h))


def fiber_rate_vs_distance(*, quick: bool, seed: int, progress: Progress) -> list[dict[str, object]]:
    """The key rate against fibre length: the asymptotic curve and simulated finite-key sessions."""
    signals = 100_000 if quick else 10_000_000
    rows: list[dict[str, object]] = []
    for preset in ("gys", "modern"):
        for distance in FIBER_DISTANCES_KM:
            progress(f"fiber {preset} {distance} km", 0.95)
            asymptotic = asymptotic_fiber_rate(distance, preset)
            link = fiber(distance, preset=preset)
            simulated = None
            if asymptotic > 0 and link.transmittance * signals / 2 >= 10_000:
                session = run_session(
                    SessionConfig(channel=link, signals=signals, seed=seed, reconciliation="biconf")
                )
                simulated = session.final_key_bits / signals
            rows.append(
                {
                    "preset": preset,
                    "distance_km": distance,
                    "transmittance": link.transmittance,
                    "asymptotic_bits_per_signal": asymptotic,
                    "simulated_signals": signals if simulated is not None else 0,
                    "finite_key_bits_per_signal": simulated,
                }
            )
    return rows


CASCADE_QBERS = (0.01, 0.02, 0.05, 0.08, 0.10)
CASCADE_SIZES = (10_000, 100_000)


def run_cascade_bench(
    *, quick: bool = False, frames: int | None = None, seed: int = 1, progress: Progress | None = None
) -> dict[str, object]:
    """``qkdiov bench cascade``: each method over QBER 1-10% and n = 10^4, 10^5.

    Bob's frame is Alice's with each bit flipped with probability Q (a binary
    symmetric channel, as in Martinez-Mateo et al.); efficiency uses the frame's
    actual error rate, and a frame "fails" if any error survives.
    """
    say = progress or (lambda stage, fraction: None)
    sizes = (2_000,) if quick else CASCADE_SIZES
    qbers = (0.02, 0.05) if quick else CASCADE_QBERS
    rng = np.random.default_rng(seed)
    rows = []
    cells = [(m, q, n) for m in cascade.METHODS for n in sizes for q in qbers]
    for index, (method, qber, n) in enumerate(cells):
        say(f"{method} {qber:.0%} n={n}", index / len(cells))
        count = frames or (5 if quick else (1000 if n <= 10_000 else 100))
        efficiencies, uses, failures, elapsed = [], [], 0, 0.0
        for _ in range(count):
            alice = rng.integers(0, 2, n, dtype=np.uint8)
            flips = (rng.random(n) < qber).astype(np.uint8)
            bob = alice ^ flips
            actual = flips.mean()
            result, seconds = _timed(
                lambda a=alice, b=bob, q=qber, m=method: cascade.reconcile(a, b, q, method=m, rng=rng)
            )
            assert isinstance(result, cascade.ReconciliationResult)
            elapsed += seconds
            if actual > 0:
                efficiencies.append(result.leaked_bits / (n * float(binary_entropy(actual))))
            uses.append(result.channel_uses)
            failures += int(not np.array_equal(result.corrected, alice))
        rows.append(
            {
                "method": method,
                "qber": qber,
                "n": n,
                "frames": count,
                "efficiency_mean": round(float(np.mean(efficiencies)), 4),
                "efficiency_std": round(float(np.std(efficiencies)), 4),
                "frame_error_rate": failures / count,
                "channel_uses_mean": round(float(np.mean(uses)), 1),
                "bits_per_s": round(n * count / elapsed),
            }
        )
    say("side by side", 0.99)
    return {"quick": quick, "seed": seed, "rows": rows, "side_by_side": _side_by_side(quick, seed)}


SIDE_BY_SIDE_GROUPS = (1, 4, 16)


def _side_by_side(quick: bool, seed: int) -> list[dict[str, object]]:
    """Frames of short sessions (BICONF, 2%) reconciled alone and in groups through
    :func:`cascade.reconcile_together`, which a worker does with the sessions it has queued.
    Every group size must give the same results (checked here too)."""
    n, count = (2_000, 16) if quick else (10_000, 160)
    rng = np.random.default_rng([seed, n])
    frames = []
    for index in range(count):
        alice = rng.integers(0, 2, n, dtype=np.uint8)
        frames.append((alice, alice ^ (rng.random(n) < 0.02).astype(np.uint8), index))
    rows, reference = [], None
    for group in SIDE_BY_SIDE_GROUPS:
        results, elapsed = [], 0.0
        for first in range(0, count, group):
            jobs = [
                cascade.ReconcileJob(a, b, 0.02, "biconf", np.random.default_rng([seed, i]))
                for a, b, i in frames[first : first + group]
            ]
            batch, seconds = _timed(lambda jobs=jobs: cascade.reconcile_together(jobs))
            assert isinstance(batch, list)
            results += [(r.corrected.tobytes(), r.leaked_bits, r.channel_uses) for r in batch]
            elapsed += seconds
        reference = reference or results
        if results != reference:
            raise AssertionError(f"reconciling {group} frames together changed their results")
        per_frame_ms = elapsed / count * 1e3
        rows.append(
            {
                "together": group,
                "n": n,
                "frames": count,
                "ms_per_frame": round(per_frame_ms, 3),
                "speedup": round(rows[0]["ms_per_frame"] / per_frame_ms, 2) if rows else 1.0,
            }
        )
    return rows
