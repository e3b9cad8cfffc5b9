"""``qkdiov bench sim``: how fast the simulator runs, and how its cost grows with vehicles.

Density is held constant (the highway grows with the fleet: 20 m of road per vehicle
over three lanes, one RSU per 25 vehicles), so each frame reaches about as many
receivers at every size and linear scaling is the expectation. CAMs go out at a fixed
10 Hz (ETSI triggers off) so the offered load is exactly vehicles x 10 frames/s.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from .scenario import Scenario, load, validate
from .simulate import run

SCALING_VEHICLES = (100, 200, 500, 1000)


def bench_scenario(vehicles: int, duration_s: float, chain: str) -> Scenario:
    base = load("highway")
    return validate(
        dataclasses.replace(
            base,
            vehicles=vehicles,
            rsus=max(1, vehicles // 25),
            duration_s=duration_s,
            chain=chain,
            road=dataclasses.replace(base.road, length_m=max(500.0, 20.0 * vehicles), entry_rate_per_s=0.0),
            traffic=dataclasses.replace(
                base.traffic, beacon_hz=10.0, etsi_triggers=False, denm_rate_per_s=0.0
            ),
            keys=dataclasses.replace(base.keys, qkd_signals=100_000),
            revocation=dataclasses.replace(base.revocation, vehicle=None, at_s=None),
        ),
        origin="bench",
    )


def _second_half(wall_clock: list[tuple[float, float]]) -> tuple[float, float]:
    """Simulated and wall seconds from the progress step nearest half-way to the end."""
    end_sim, end_wall = wall_clock[-1]
    mid_sim, mid_wall = min(wall_clock, key=lambda point: abs(point[0] - end_sim / 2))
    return end_sim - mid_sim, end_wall - mid_wall


def run_sim_bench(
    *,
    chain: str = "embedded",
    quick: bool = False,
    duration_s: float | None = None,
    sizes: Sequence[int] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``sizes`` replaces the scaling list (one size for an A/B comparison, say); the
    headline row is the 500-vehicle one when run, else the largest. ``quick`` only
    changes what is not given: 20 and 40 vehicles, 2 s (else 100-1000, 10 s)."""
    say = progress or (lambda message: None)
    if sizes is None:
        sizes = (20, 40) if quick else SCALING_VEHICLES
    duration = float(duration_s) if duration_s is not None else 2.0 if quick else 10.0
    rows = []
    for vehicles in sizes:
        say(f"{vehicles} vehicles")
        scenario = bench_scenario(vehicles, duration, chain)
        started = time.perf_counter()
        summary, world = run(scenario)
        if world.interrupted:  # Ctrl-C: a part of a run is not a figure
            raise KeyboardInterrupt
        wall = time.perf_counter() - started
        ledger_s = world.metrics.ledger_wall_s - world.ledger_setup_s
        half_sim, half_wall = _second_half(world.wall_clock)
        rows.append(
            {
                "vehicles": vehicles,
                "simulated_s": duration,
                "wall_s": round(wall, 3),
                "setup_s": round(world.setup_s, 3),
                "run_s": round(world.run_s, 3),
                "realtime_factor": round(duration / world.run_s, 3),
                # the second half alone: after the start-up burst in which every vehicle
                # gets its first QKD key, the rate a longer run keeps up
                "second_half_realtime_factor": round(half_sim / half_wall, 3),
                # where the wall time of the run went: running or waiting for QKD sessions,
                # ledger calls, the rest
                # (radio, traffic, validation, decryption, SimPy)
                "qkd_s": round(world.qkd_wall_s, 3),
                "ledger_s": round(ledger_s, 3),
                "radio_and_rest_s": round(world.run_s - world.qkd_wall_s - ledger_s, 3),
                # CPU seconds the simulating thread used: its work without the waits (for
                # workers, for the chain) and less sensitive to what else the machine runs
                "main_cpu_s": round(world.run_cpu_s, 3),
                "events": world.env.events_processed,
                "events_per_s": round(world.env.events_processed / world.run_s),
                "frames": summary["messages_sent"],
                "receptions": summary["messages_delivered"],
                "qkd_sessions": summary["keys"]["sessions"],
                "ledger_transactions": summary["ledger"]["transactions"],
                "pdr": summary["pdr"],
            }
        )
    headline = next((r for r in rows if r["vehicles"] == 500), max(rows, key=lambda r: r["vehicles"]))
    return {
        "chain": chain,
        "quick": quick,
        "vehicles": headline["vehicles"],
        "simulated_s": headline["simulated_s"],
        "wall_s": headline["run_s"],
        "realtime_factor": headline["realtime_factor"],
        "second_half_realtime_factor": headline["second_half_realtime_factor"],
        "events_per_s": headline["events_per_s"],
        "scaling": rows,
    }
