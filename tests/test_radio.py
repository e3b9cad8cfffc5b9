"""802.11p radio: air time, link budget, spatial grid against brute force, channel collisions, energy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vehicles.radio import (
    CCA_TIME_S,
    Channel,
    RadioParameters,
    SpatialGrid,
    airtime_s,
    mean_rx_power_dbm,
    nominal_range_m,
    path_loss_db,
    radio_energy_j,
    received,
    reception_probability,
    rx_energy_j,
    two_ray_crossover_m,
    tx_energy_j,
)

DEFAULT = RadioParameters()
STILL = RadioParameters(nakagami=False)  # no fading: outcomes decided by geometry and timing alone


# ---- PHY --------------------------------------------------------------------------------------


def test_airtime_of_300_bytes_at_6_mbps_is_496_us() -> None:
    # 16 service + 8 * (24 MAC + 8 LLC + 300 + 4 FCS) + 6 tail = 2710 bits -> 57 symbols of 48 bits.
    assert airtime_s(300) == pytest.approx(32e-6 + 8e-6 + 57 * 8e-6, abs=1e-12)
    assert airtime_s(300) == pytest.approx(0.5e-3, rel=0.01)
    assert airtime_s(0) == pytest.approx(40e-6 + math.ceil((16 + 8 * 36 + 6) / 48) * 8e-6)
    assert airtime_s(300, RadioParameters(data_rate_bps=12e6)) == pytest.approx(40e-6 + 29 * 8e-6)


def test_nominal_ranges_fall_in_the_spec_band_for_both_path_loss_models() -> None:
    for params in (DEFAULT, RadioParameters(path_loss="two-ray")):
        reach = nominal_range_m(params)
        assert 300.0 <= reach <= 1000.0
        assert float(mean_rx_power_dbm(reach, params)) == pytest.approx(params.sensitivity_dbm, abs=1e-9)
    assert nominal_range_m(DEFAULT, margin_db=6.0) > nominal_range_m(DEFAULT)


def test_two_ray_is_friis_up_to_the_crossover_and_continuous_there() -> None:
    params = RadioParameters(path_loss="two-ray")
    crossover = two_ray_crossover_m(params)
    assert crossover == pytest.approx(4 * math.pi * 1.5 * 1.5 / (299_792_458.0 / 5.9e9))
    friis = 20 * math.log10(4 * math.pi * 100.0 / params.wavelength_m)
    assert float(path_loss_db(100.0, params)) == pytest.approx(friis)
    below, above = path_loss_db(np.array([crossover * (1 - 1e-9), crossover * (1 + 1e-9)]), params)
    assert below == pytest.approx(above, abs=1e-6)
    assert float(path_loss_db(2 * crossover, params) - path_loss_db(crossover, params)) == pytest.approx(
        40 * math.log10(2)
    )


def test_reception_probability_falls_with_distance() -> None:
    distances = np.array([20.0, 60.0, 100.0, 200.0, 300.0, 450.0, 600.0, 800.0, 1000.0])
    for params in (DEFAULT, RadioParameters(path_loss="two-ray")):
        fine = reception_probability(np.linspace(1.0, 2000.0, 4000), params)
        assert np.all(np.diff(fine) <= 1e-12)
        rng = np.random.default_rng(4)
        samples = received(np.broadcast_to(distances, (4000, distances.size)), params, rng).mean(axis=0)
        expected = reception_probability(distances, params)
        assert np.all(np.abs(samples - expected) <= 4 * np.sqrt(expected * (1 - expected) / 4000) + 1e-3)
        assert np.all(np.diff(samples) <= 0.03)
        assert samples[0] > 0.99 and samples[-1] < 0.3


def test_without_fading_reception_is_a_step_at_the_nominal_range() -> None:
    reach = nominal_range_m(STILL)
    outcome = received(np.array([reach * 0.999, reach * 1.001]), STILL, np.random.default_rng(0))
    assert outcome.tolist() == [True, False]


# ---- spatial grid -----------------------------------------------------------------------------

coordinate = st.one_of(
    st.floats(-400.0, 400.0, allow_nan=False),
    st.integers(-16, 16).map(lambda k: k * 25.0),  # exactly on cell boundaries
)
point = st.tuples(coordinate, coordinate)
radius = st.one_of(st.floats(0.0, 300.0), st.sampled_from([0.0, 25.0, 50.0, 100.0]))


def _brute_force(points: np.ndarray, centre: np.ndarray, reach: float) -> np.ndarray:
    dx = points[:, 0] - centre[0]
    dy = points[:, 1] - centre[1]
    return np.flatnonzero(dx * dx + dy * dy <= reach * reach)


@settings(max_examples=150, deadline=None)
@given(
    points=st.lists(point, max_size=60),
    query=point,
    reach=radius,
    cell=st.sampled_from([10.0, 25.0, 50.0, 170.0]),
)
def test_grid_neighbours_equal_brute_force(
    points: list[tuple[float, float]], query: tuple[float, float], reach: float, cell: float
) -> None:
    positions = np.array(points, dtype=float).reshape(-1, 2)
    grid = SpatialGrid(positions, cell)
    assert np.array_equal(
        grid.neighbours(np.array(query), reach), _brute_force(positions, np.array(query), reach)
    )
    for index in range(len(positions)):
        expected = _brute_force(positions, positions[index], reach)
        assert np.array_equal(grid.neighbours_of(index, reach), expected[expected != index])


@settings(max_examples=150, deadline=None)
@given(points=st.lists(point, max_size=60), reach=radius, cell=st.sampled_from([10.0, 25.0, 50.0, 170.0]))
def test_grid_pairs_equal_brute_force(points: list[tuple[float, float]], reach: float, cell: float) -> None:
    positions = np.array(points, dtype=float).reshape(-1, 2)
    first, second = SpatialGrid(positions, cell).pairs_within(reach)
    expected = [
        (i, j)
        for i in range(len(positions))
        for j in _brute_force(positions, positions[i], reach).tolist()
        if i < j
    ]
    assert list(zip(first.tolist(), second.tolist(), strict=True)) == expected


def test_grid_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        SpatialGrid(np.zeros((3, 3)), 10.0)
    with pytest.raises(ValueError, match="cell_m must be > 0"):
        SpatialGrid(np.zeros((3, 2)), 0.0)
    with pytest.raises(ValueError, match="radius must be a number >= 0"):
        SpatialGrid(np.zeros((3, 2)), 10.0).neighbours(np.zeros(2), -1.0)


# ---- channel ----------------------------------------------------------------------------------

# Two senders 400 m apart and a receiver half-way, all within the ~541 m nominal range of each other: with
# fading off, only the timing of the frames decides the outcome.
SENDER_A, SENDER_B, RECEIVER = 1, 2, 3
POSITIONS = {SENDER_A: (0.0, 0.0), SENDER_B: (400.0, 0.0), RECEIVER: (200.0, 0.0)}


def _send(channel: Channel, sender: int, start: float, payload: int = 300):
    others = [node for node in POSITIONS if node != sender]
    return channel.transmit(
        sender,
        np.array(POSITIONS[sender]),
        start,
        payload,
        np.array(others),
        np.array([POSITIONS[node] for node in others]),
        np.random.default_rng(0),
    )


def test_overlapping_frames_collide_at_a_receiver_in_range_of_both() -> None:
    channel = Channel(STILL)
    first = _send(channel, SENDER_A, 0.0)
    second = _send(channel, SENDER_B, first.end - 1e-6)
    one, two = channel.finish(first), channel.finish(second)
    assert RECEIVER in one.collided and RECEIVER in two.collided
    assert RECEIVER not in one.delivered and RECEIVER not in two.delivered
    # Each sender was on the air while the other's frame arrived: half duplex loses it too.
    assert SENDER_B in one.collided and SENDER_A in two.collided


def test_back_to_back_frames_do_not_collide() -> None:
    channel = Channel(STILL)
    first = _send(channel, SENDER_A, 0.0)
    outcome_first = channel.finish(first)
    second = _send(channel, SENDER_B, first.end)
    outcome_second = channel.finish(second)
    assert set(outcome_first.delivered.tolist()) == {SENDER_B, RECEIVER}
    assert set(outcome_second.delivered.tolist()) == {SENDER_A, RECEIVER}
    assert outcome_first.collided.size == outcome_second.collided.size == 0


def test_a_receiver_out_of_range_of_the_interferer_keeps_its_frame() -> None:
    channel = Channel(STILL)
    near = channel.transmit(
        10, np.zeros(2), 0.0, 300, np.array([11]), np.array([[50.0, 0.0]]), np.random.default_rng(0)
    )
    far = channel.transmit(
        20,
        np.array([1700.0, 0.0]),
        0.0,
        300,
        np.array([11]),
        np.array([[50.0, 0.0]]),
        np.random.default_rng(0),
    )
    assert not far.decodable.any()
    assert channel.finish(near).delivered.tolist() == [11]
    assert channel.finish(far).delivered.size == 0


def test_capture_keeps_the_much_stronger_frame() -> None:
    channel = Channel(RadioParameters(nakagami=False, capture_threshold_db=10.0))
    receiver = np.array([[20.0, 0.0]])
    strong = channel.transmit(1, np.zeros(2), 0.0, 300, np.array([9]), receiver, np.random.default_rng(0))
    weak = channel.transmit(
        2, np.array([420.0, 0.0]), 1e-4, 300, np.array([9]), receiver, np.random.default_rng(0)
    )
    assert channel.finish(strong).delivered.tolist() == [9]
    assert channel.finish(weak).collided.tolist() == [9]


def test_carrier_sense_sees_a_frame_after_cca_time_and_only_within_sensing_range() -> None:
    channel = Channel(STILL)
    frame = _send(channel, SENDER_A, 1.0)
    near, far = np.array([100.0, 0.0]), np.array([5000.0, 0.0])
    assert channel.busy_until(near, 1.0) == 1.0  # a frame that just started is not sensed yet
    assert channel.busy_until(near, 1.0 + CCA_TIME_S) == frame.end
    assert channel.busy_until(far, 1.0 + CCA_TIME_S) == 1.0 + CCA_TIME_S
    assert channel.busy_until(near, frame.end) == frame.end
    channel.finish(frame)


def test_backoff_is_aifs_plus_whole_slots_up_to_cw_min() -> None:
    channel = Channel(DEFAULT)
    rng = np.random.default_rng(0)
    slots = {round((channel.backoff_s(rng) - DEFAULT.aifs_s) / DEFAULT.slot_s, 9) for _ in range(2000)}
    assert slots == set(range(DEFAULT.cw_min + 1))
    assert DEFAULT.aifs_s == pytest.approx(32e-6 + 6 * 13e-6)


def test_channel_forgets_finished_frames() -> None:
    channel = Channel(STILL)
    now = 0.0
    for _ in range(500):
        first = _send(channel, SENDER_A, now)
        second = _send(channel, SENDER_B, now + 2e-4)
        channel.finish(first)
        channel.finish(second)
        now = second.end + 1e-3
    assert channel.tracked_transmissions <= 2


def test_channel_refuses_misuse() -> None:
    channel = Channel(STILL)
    frame = _send(channel, SENDER_A, 1.0)
    with pytest.raises(ValueError, match="already transmitting"):
        _send(channel, SENDER_A, 1.0001)
    with pytest.raises(ValueError, match="time order"):
        _send(channel, SENDER_B, 0.5)
    channel.finish(frame)
    with pytest.raises(ValueError, match="finished twice"):
        channel.finish(frame)
    with pytest.raises(ValueError, match=r"payload_bytes must be 0\.\.2304"):
        _send(channel, SENDER_B, 2.0, payload=5000)
    with pytest.raises(ValueError, match="distinct"):
        channel.transmit(
            5, np.zeros(2), 3.0, 100, np.array([1, 1]), np.zeros((2, 2)), np.random.default_rng(0)
        )


# ---- energy and parameters --------------------------------------------------------------------


def test_energy_by_hand_on_both_sides_of_d0() -> None:
    bits = 1000
    assert tx_energy_j(bits, 50.0) == pytest.approx(bits * (50e-9 + 10e-12 * 50.0**2))  # 75 uJ
    assert tx_energy_j(bits, 50.0) == pytest.approx(75e-6)
    assert tx_energy_j(bits, 100.0) == pytest.approx(bits * (50e-9 + 0.0013e-12 * 100.0**4))  # 180 uJ
    assert tx_energy_j(bits, 100.0) == pytest.approx(180e-6)
    assert rx_energy_j(bits) == pytest.approx(50e-6)
    assert radio_energy_j(bits, 100.0) == pytest.approx((180e-6, 50e-6))
    assert np.allclose(tx_energy_j(bits, np.array([50.0, 100.0])), [75e-6, 180e-6])
    with pytest.raises(ValueError, match=">= 0"):
        tx_energy_j(-1, 10.0)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"path_loss": "free-space"}, "path_loss must be one of log-distance, two-ray"),
        ({"data_rate_bps": 5e6}, r"data_rate_bps must be an 802.11p rate \(3, 4.5, 6"),
        ({"cw_min": 31, "cw_max": 15}, r"cw_max \(15\) must be >= cw_min \(31\)"),
        ({"path_loss_exponent": 0.0}, "path_loss_exponent must be > 0"),
        ({"tx_power_dbm": float("nan")}, "tx_power_dbm must be a finite number"),
        ({"nakagami": "yes"}, "nakagami must be True or False"),
        ({"aifs_slots": 2.5}, "aifs_slots must be an integer"),
    ],
)
def test_bad_radio_parameters_are_readable_errors(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RadioParameters(**params)
