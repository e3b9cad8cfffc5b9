"""IDM mobility: free driving, stopping behind an obstacle, no collisions, entries and exits, repeats."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vehicles.mobility import Highway, IdmParameters, ManhattanGrid, ballistic_update, build_road

IDM = IdmParameters()


def _run(road: Highway | ManhattanGrid, seconds: float, dt: float) -> tuple[int, int, float]:
    """Step ``road``; return (entered, exited, smallest same-lane gap seen)."""
    entered = exited = 0
    smallest = math.inf
    for _ in range(round(seconds / dt)):
        events = road.step(dt)
        entered += events.entered.size
        exited += events.exited.size
        gaps = road.gaps()
        if gaps.size:
            smallest = min(smallest, float(gaps.min()))
    return entered, exited, smallest


def test_idm_parameters_are_the_spec_values() -> None:
    assert (IDM.desired_speed_mps, IDM.time_headway_s, IDM.minimum_gap_m, IDM.vehicle_length_m) == (
        30,
        1.5,
        2,
        5,
    )
    assert IDM.max_acceleration_mps2 == 0.73 and IDM.comfortable_deceleration_mps2 == 1.67
    assert IDM.acceleration_exponent == 4


def test_a_free_vehicle_approaches_the_desired_speed() -> None:
    road = Highway(20_000.0, 1, entry_rate_per_s=0.0, rng=np.random.default_rng(0), initial_vehicles=0)
    road.add_vehicle(0, 0.0, 0.0)
    _run(road, 120.0, 0.1)
    assert 0.97 * IDM.desired_speed_mps < road.traffic.speed[0] <= IDM.desired_speed_mps


def test_a_follower_stops_about_s0_behind_a_stopped_leader_without_touching_it() -> None:
    road = Highway(1000.0, 1, entry_rate_per_s=0.0, rng=np.random.default_rng(0), initial_vehicles=0)
    road.add_vehicle(0, 600.0, 0.0, halted=True)
    follower = road.add_vehicle(0, 0.0, 25.0)
    _, _, smallest = _run(road, 100.0, 0.1)
    gap = road.gaps()[road.traffic.index_of(follower)][0]
    assert np.all(road.traffic.speed == 0.0)
    assert smallest >= 0.0
    assert 0.8 * IDM.minimum_gap_m <= gap <= 1.05 * IDM.minimum_gap_m


def test_a_halted_vehicle_brakes_comfortably_to_a_standstill() -> None:
    road = Highway(2000.0, 1, entry_rate_per_s=0.0, rng=np.random.default_rng(0), initial_vehicles=0)
    vehicle = road.add_vehicle(0, 0.0, 20.0)
    road.set_halted(vehicle)
    road.step(1.0)
    assert road.traffic.speed[0] == pytest.approx(20.0 - IDM.comfortable_deceleration_mps2)
    _run(road, 20.0, 0.5)
    assert road.traffic.speed[0] == 0.0
    assert road.traffic.s[0] == pytest.approx(20.0**2 / (2 * IDM.comfortable_deceleration_mps2))


@pytest.mark.parametrize("dt", [0.1, 1.0])
def test_highway_traffic_flows_in_and_out_and_never_collides(dt: float) -> None:
    road = Highway(1000.0, 2, entry_rate_per_s=2.0, rng=np.random.default_rng(7), initial_vehicles=40)
    entered, exited, smallest = _run(road, 150.0, dt)
    assert entered > 50 and exited > 50
    assert smallest >= 0.0
    assert np.all(road.traffic.speed >= 0.0) and np.all(road.traffic.speed <= IDM.desired_speed_mps + 1e-9)
    assert np.all(np.diff(road.traffic.ids) > 0)  # ascending, so index_of can bisect


def test_two_way_highway_drives_both_ways() -> None:
    road = Highway(
        500.0,
        1,
        entry_rate_per_s=0.5,
        rng=np.random.default_rng(3),
        initial_vehicles=10,
        both_directions=True,
    )
    _, exited, smallest = _run(road, 60.0, 0.2)
    assert exited > 0 and smallest >= 0.0
    assert set(np.round(road.traffic.heading, 6)) == {0.0, round(math.pi, 6)}
    min_x, min_y, max_x, max_y = road.bounds()
    assert np.all((road.traffic.x >= min_x) & (road.traffic.x <= max_x))
    assert np.all((road.traffic.y >= min_y) & (road.traffic.y <= max_y))


def test_a_busy_entry_turns_arrivals_away_instead_of_overlapping() -> None:
    road = Highway(300.0, 1, entry_rate_per_s=50.0, rng=np.random.default_rng(1), initial_vehicles=0)
    blocked = sum(road.step(0.1).blocked_entries for _ in range(100))
    assert blocked > 0
    assert road.gaps().min() >= 0.0


def test_the_same_seed_gives_the_same_trajectory() -> None:
    def trajectory(seed: int) -> list[np.ndarray]:
        road = ManhattanGrid(
            3, 150.0, entry_rate_per_s=1.0, rng=np.random.default_rng(seed), initial_vehicles=30
        )
        for _ in range(200):
            road.step(0.2)
        return [road.traffic.ids, road.traffic.x, road.traffic.y, road.traffic.speed]

    first, again, other = trajectory(11), trajectory(11), trajectory(12)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_grid_vehicles_stay_on_the_streets_turn_and_never_collide() -> None:
    road = ManhattanGrid(4, 200.0, entry_rate_per_s=2.0, rng=np.random.default_rng(5), initial_vehicles=120)
    half_width = road.lane_width_m / 2
    extent = road.blocks * road.block_m
    entered = exited = 0
    headings_seen: set[float] = set()
    for _ in range(600):
        events = road.step(0.25)
        entered += events.entered.size
        exited += events.exited.size
        traffic = road.traffic
        along_x = np.isclose(np.cos(traffic.heading) ** 2, 1.0)
        axis = np.where(along_x, traffic.y, traffic.x)  # the coordinate across the street
        offset = np.abs(axis - np.round(axis / road.block_m) * road.block_m)
        assert np.allclose(offset, half_width)
        assert np.all((traffic.x >= -half_width) & (traffic.x <= extent + half_width))
        assert np.all((traffic.y >= -half_width) & (traffic.y <= extent + half_width))
        assert road.gaps().min(initial=np.inf) >= 0.0
        headings_seen |= set(np.round(traffic.heading, 6))
    assert entered > 50 and exited > 50
    assert len(headings_seen) == 4


def test_grid_merges_keep_order_at_large_steps() -> None:
    """Dense traffic, 1 s steps: vehicles from three approaches zipper into each street without overlap."""
    road = ManhattanGrid(2, 60.0, entry_rate_per_s=5.0, rng=np.random.default_rng(9), initial_vehicles=60)
    _, exited, smallest = _run(road, 120.0, 1.0)
    assert exited > 0 and smallest >= 0.0


def test_ids_are_stable_and_never_reused() -> None:
    road = Highway(400.0, 1, entry_rate_per_s=1.0, rng=np.random.default_rng(2), initial_vehicles=5)
    seen: set[int] = set(road.traffic.ids.tolist())
    for _ in range(300):
        events = road.step(0.2)
        assert not seen & set(events.entered.tolist())
        seen |= set(events.entered.tolist())
        assert not set(events.exited.tolist()) & set(road.traffic.ids.tolist())
    rows = road.traffic.index_of(road.traffic.ids[::-1])
    assert np.array_equal(rows, np.arange(len(road.traffic))[::-1])
    with pytest.raises(ValueError, match="not on the road"):
        road.traffic.index_of(10**9)


def test_ballistic_update_stops_within_the_step() -> None:
    speed, driven = ballistic_update(np.array([10.0, 10.0]), np.array([-100.0, 1.0]), 1.0)
    assert speed.tolist() == [0.0, 11.0]
    assert driven.tolist() == pytest.approx([0.5, 10.5])


def test_build_road_makes_both_kinds() -> None:
    rng = np.random.default_rng(0)
    assert isinstance(build_road("highway", entry_rate_per_s=0.1, rng=rng, initial_vehicles=3), Highway)
    grid = build_road("urban-grid", blocks=2, entry_rate_per_s=0.1, rng=rng, initial_vehicles=3)
    assert isinstance(grid, ManhattanGrid) and len(grid.traffic) == 3
    assert grid.traffic.positions().shape == (3, 2)


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("motorway", {}, "unknown road kind 'motorway'"),
        ("highway", {"lanes": 0}, "lanes must be an integer >= 1"),
        ("highway", {"length_m": -5.0}, "length_m must be a positive number"),
        ("highway", {"entry_rate_per_s": -1.0}, "entry_rate_per_s must be >= 0"),
        ("highway", {"initial_vehicles": 10_000}, "do not fit"),
        ("highway", {"speed_limit": 3}, "highway: got an unexpected keyword argument 'speed_limit'"),
        ("urban-grid", {"blocks": 0}, "blocks must be an integer >= 1"),
        ("urban-grid", {"turn_probabilities": (0.5, 0.5, 0.5)}, "turn_probabilities"),
        ("urban-grid", {"block_m": 3.0}, "shorter than one vehicle"),
        ("urban-grid", {"rng": 42}, "numpy.random.Generator"),
    ],
)
def test_bad_road_parameters_are_readable_errors(kind: str, params: dict, message: str) -> None:
    full = {"entry_rate_per_s": 0.5, "rng": np.random.default_rng(0), "initial_vehicles": 0} | params
    with pytest.raises(ValueError, match=message) as caught:
        build_road(kind, **full)
    assert "\n" not in str(caught.value)


def test_bad_idm_and_step_parameters() -> None:
    with pytest.raises(ValueError, match="time_headway_s must be a positive number"):
        IdmParameters(time_headway_s=-1.0)
    road = Highway(entry_rate_per_s=0.0, rng=np.random.default_rng(0), initial_vehicles=1)
    with pytest.raises(ValueError, match="dt must be a positive number"):
        road.step(0.0)
    with pytest.raises(ValueError, match="would overlap"):
        road.add_vehicle(int(road.traffic.lane[0]), float(road.traffic.s[0]) + 1.0)
