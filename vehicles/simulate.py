"""Run a scenario end to end: a fresh chain and contract, the SimPy world, the outputs.

``run`` is what ``qkdiov simulate`` and ``scripts/simulate.py`` call; ``replicate``
runs several seeds in parallel processes and adds 95% confidence intervals. Both check
the output directory before they start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from ledger.chain import connect
from ledger.deployment import deploy

from .report import prepare_out_dir, write_json, write_outputs
from .scenario import Scenario
from .world import World


def run(
    scenario: Scenario,
    *,
    out_dir: Path | None = None,
    progress: Callable[[float], None] | None = None,
    session_workers: int | None = None,
    reception_worker: bool | None = None,
    fading_worker: bool | None = None,
    late_results: bool = True,
) -> tuple[dict[str, Any], World]:
    """One run on a throw-away chain; returns the summary and the world (for tests).

    ``session_workers``, ``reception_worker``, ``fading_worker``: processes for the QKD
    sessions, for opening received frames and for drawing fading gains; ``late_results``:
    read session results only when needed (see :class:`World`). The results are the same
    either way.

    Ctrl-C (SIGINT, in the main thread) ends the run at the next mobility step: the
    summary and the outputs cover the time simulated until then (``interrupted`` true,
    ``duration_s`` that time). A second Ctrl-C stops at once, with nothing written."""
    if out_dir is not None:
        prepare_out_dir(out_dir)
    started = time.perf_counter()
    chain = connect(scenario.chain, persist=False)
    try:
        client, _ = deploy(chain, save=False)
        world = World(
            scenario,
            client,
            progress=progress,
            session_workers=session_workers,
            reception_worker=reception_worker,
            fading_worker=fading_worker,
            late_results=late_results,
        )
        with _interrupt_ends_the_run(world):
            world.run()
        summary = world.summary(wall_s=time.perf_counter() - started)
    finally:
        chain.close()
    if out_dir is not None:
        config = {"scenario": scenario.as_dict(), "seed": scenario.seed}
        summary["outputs"] = [str(p) for p in write_outputs(out_dir, config, summary, world.metrics)]
    return summary, world


@contextlib.contextmanager
def _interrupt_ends_the_run(world: World) -> Iterator[None]:
    """While the world runs, a first SIGINT asks it to stop (World.request_stop) and gives
    Ctrl-C back its usual meaning, so a second one interrupts at once. Only where SIGINT
    raises KeyboardInterrupt as usual: not in threads, nor where a caller set its own handler."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def first_interrupt(signum: int, frame: object) -> None:
        world.request_stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, first_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _run_for_replication(scenario: Scenario, out_dir: Path | None) -> dict[str, Any] | None:
    """One replication in a pool process; None if Ctrl-C came before it simulated anything
    (so a KeyboardInterrupt in the parent is always the parent's own)."""
    try:  # replications fill the cores: no workers of their own
        summary, _ = run(
            scenario, out_dir=out_dir, session_workers=0, reception_worker=False, fading_worker=False
        )
    except KeyboardInterrupt:
        return None
    return summary


# Fields worth a confidence interval: path into the summary -> name in the report.
REPLICATED = {
    ("pdr",): "pdr",
    ("latency_ms", "p50"): "latency_ms_p50",
    ("latency_ms", "p99"): "latency_ms_p99",
    ("throughput_kbps",): "throughput_kbps",
    ("energy_j",): "energy_j",
    ("keys", "bits_generated"): "key_bits_generated",
    ("messages_delivered",): "messages_delivered",
}

# Two-sided 95% Student t quantiles for n - 1 degrees of freedom (n = 2..30).
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045]  # fmt: skip


def confidence_interval(values: list[float]) -> dict[str, float | None]:
    array = np.asarray([v for v in values if v is not None], dtype=float)
    if array.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    if array.size == 1:
        return {"mean": float(array[0]), "ci95": None, "n": 1}
    t = _T95[min(array.size - 2, len(_T95) - 1)] if array.size <= 30 else 1.96
    half = t * float(array.std(ddof=1)) / math.sqrt(array.size)
    return {"mean": float(array.mean()), "ci95": half, "n": int(array.size)}


def replicate(
    scenario: Scenario,
    replications: int,
    *,
    workers: int = 2,
    out_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Seeds seed, seed+1, ... in parallel processes; each metric as mean +- 95% CI.

    On Ctrl-C the report covers the runs that had started, each up to where it stopped
    (``interrupted`` true), and is written like any other.

    With ``out_dir``: every run writes its outputs to ``seed-<seed>/`` there, and the
    report goes to ``replications.json`` beside them. ``progress(done)`` is called as
    each run ends."""
    scenarios = [dataclasses.replace(scenario, seed=scenario.seed + i) for i in range(replications)]
    run_dirs: list[Path | None] = [None] * replications
    if out_dir is not None:
        prepare_out_dir(out_dir)
        run_dirs = [out_dir / f"seed-{s.seed}" for s in scenarios]
    interrupted = False
    results: dict[int, dict[str, Any] | None] = {}  # by seed
    waiting = list(zip(scenarios, run_dirs, strict=True))
    width = max(1, min(workers, replications))
    with ProcessPoolExecutor(max_workers=width) as pool:
        running: dict[Future[dict[str, Any] | None], int] = {}
        try:
            # no more submitted than run at once: a queued seed could not be cancelled on Ctrl-C
            while waiting or running:
                while waiting and len(running) < width:
                    chosen, run_dir = waiting.pop(0)
                    running[pool.submit(_run_for_replication, chosen, run_dir)] = chosen.seed
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    results[running.pop(future)] = future.result()
                    if progress:
                        progress(len(results))
        except KeyboardInterrupt:
            # Ctrl-C reached the running replications too: each ends at its next step and
            # writes what it simulated. Seeds not started are dropped; a second Ctrl-C stops
            # at once.
            interrupted = True
            for future, seed in running.items():
                results[seed] = future.result()
    summaries = [summary for s in scenarios if (summary := results.get(s.seed)) is not None]
    intervals = {}
    for path, name in REPLICATED.items():
        values = []
        for summary in summaries:
            value: Any = summary
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            values.append(value)
        intervals[name] = confidence_interval(values)
    interrupted = interrupted or len(summaries) < replications or any(s["interrupted"] for s in summaries)
    report = {"replications": len(summaries), "seeds": [s["seed"] for s in summaries], "metrics": intervals,
              "runs": summaries, "interrupted": interrupted}  # fmt: skip
    if out_dir is not None:
        write_json(out_dir / "replications.json", {"scenario": scenario.as_dict(), **report})
    return report
