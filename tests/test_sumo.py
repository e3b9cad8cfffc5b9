"""The optional SUMO extra: the simulator driven by a SUMO scenario through libsumo."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from vehicles import scenario as scenarios

needs_sumo = pytest.mark.skipif(
    importlib.util.find_spec("libsumo") is None or importlib.util.find_spec("sumo") is None,
    reason="the optional SUMO extra is not installed (pip install 'qkd-iov[sumo]')",
)


@needs_sumo
def test_sumo_road_moves_vehicles_in_and_out(tmp_path: Path) -> None:
    from vehicles.sumo import SumoRoad, write_grid_scenario

    road = SumoRoad(write_grid_scenario(tmp_path), seed=1, step_s=0.1)
    try:
        entered, exited = 0, 0
        for _ in range(1200):  # two simulated minutes
            events = road.step(0.1)
            entered += events.entered.size
            exited += events.exited.size
        x0, y0, x1, y1 = road.bounds()
        traffic = road.traffic
        assert entered > 20 and exited > 0
        assert list(traffic.ids) == sorted(traffic.ids)
        lane = 5.0  # lanes lie up to half a lane width outside the junction boundary
        inside = (traffic.x >= x0 - lane) & (traffic.x <= x1 + lane) & (traffic.y >= y0 - lane)
        assert (inside & (traffic.y <= y1 + lane)).all()
        assert (traffic.speed >= 0).all()
    finally:
        road.close()


@needs_sumo
def test_simulation_runs_on_a_sumo_scenario(tmp_path: Path) -> None:
    from vehicles.simulate import run
    from vehicles.sumo import write_grid_scenario

    config = write_grid_scenario(tmp_path, period_s=1.0)
    base = scenarios.load("urban-grid")
    chosen = dataclasses.replace(
        base,
        duration_s=20.0,
        rsus=4,
        road=dataclasses.replace(base.road, kind="sumo", sumo_config=str(config)),
        keys=dataclasses.replace(base.keys, cipher="aes-gcm", qkd_signals=100_000),
        revocation=scenarios.RevocationConfig(),
    )
    summary, _ = run(scenarios.validate(chosen, origin="test"))
    assert summary["vehicles"] > 5
    assert summary["messages_sent"] > 0 and summary["messages_delivered"] > 0
    assert summary["keys"]["sessions"] > 0


def test_a_sumo_scenario_without_a_config_is_refused() -> None:
    with pytest.raises(scenarios.ScenarioError, match="sumo_config"):
        scenarios.from_mapping({"road": {"kind": "sumo"}}, origin="test")
