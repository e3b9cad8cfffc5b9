"""802.11p radio: air time, link budget, spatial grid against brute force, channel collisions, energy."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vehicles import radio
from vehicles.crypto import Header, PadSegment, Rejected, Sealed, _Reader
from vehicles.metrics import MessageRecord, Metrics
from vehicles.radio import (
    CCA_TIME_S,
    Channel,
    LinkTable,
    NeighbourList,
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
    rx_power_dbm,
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
    for d in (0.0, 87.69, 87.7, 900.0):  # one frame's floats and the array formula agree
        assert tx_energy_j(bits, d) == pytest.approx(tx_energy_j(np.array([bits]), np.array([d]))[0])
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


# ---- the per-frame fast path: each part against the straightforward formulation --------------


def _straightforward_faded_dbm(distance: np.ndarray, params: RadioParameters, rng: np.random.Generator):
    mean = mean_rx_power_dbm(distance, params)
    near = distance < params.nakagami_switch_m
    gain = np.empty(mean.shape)
    gain[near] = rng.gamma(params.nakagami_m_near, 1.0 / params.nakagami_m_near, size=int(near.sum()))
    gain[~near] = rng.gamma(params.nakagami_m_far, 1.0 / params.nakagami_m_far, size=int((~near).sum()))
    return mean + 10.0 * np.log10(gain)


@pytest.mark.parametrize("seed", range(6))
def test_fading_draws_equal_the_masked_formulation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for distance in (rng.uniform(0, 900, 60), rng.uniform(0, 70, 8), rng.uniform(90, 900, 8), np.zeros(0)):
        expected = _straightforward_faded_dbm(distance, DEFAULT, np.random.default_rng(seed + 100))
        got = rx_power_dbm(distance, DEFAULT, np.random.default_rng(seed + 100))
        assert np.array_equal(got, expected)


@settings(max_examples=60, deadline=None)
@given(points=st.lists(point, max_size=50), reach=st.sampled_from([0.0, 25.0, 60.0, 200.0]))
def test_link_table_rows_equal_grid_queries(points: list[tuple[float, float]], reach: float) -> None:
    positions = np.array(points, dtype=float).reshape(-1, 2)
    grid = SpatialGrid(positions, max(reach, 1.0))
    table = LinkTable(grid, reach, DEFAULT)
    assert len(table) == 2 * grid.pairs_within(reach)[0].size
    for index in range(len(positions)):
        links = table.of(index)
        expected = grid.neighbours_of(index, reach)
        assert np.array_equal(table.target[links], expected)
        where = positions[expected]
        distance = np.hypot(*(where - positions[index]).T) if expected.size else np.zeros(0)
        assert np.array_equal(table.distance_m[links], distance)
        assert np.array_equal(table.mean_rx_dbm[links], mean_rx_power_dbm(distance, DEFAULT))


@pytest.mark.parametrize("seed", range(6))
def test_neighbour_list_tables_equal_fresh_link_tables(seed: int) -> None:
    """Points drift (some steps far, so the list must rebuild), and now and then one is
    swapped for another id; every step's table is exactly a fresh LinkTable's."""
    rng = np.random.default_rng(seed)
    count, reach = 60, 150.0
    positions = rng.uniform(0.0, 800.0, (count, 2))
    ids = np.arange(count)
    neighbours = NeighbourList(reach, skin_m=20.0)
    for step in range(40):
        jump = 30.0 if rng.random() < 0.1 else 3.0
        positions = positions + rng.uniform(-jump, jump, positions.shape)
        if rng.random() < 0.1:
            ids = ids.copy()
            ids[int(rng.integers(count))] = 1000 + step
        table = neighbours.table(positions, ids, DEFAULT)
        fresh = LinkTable(SpatialGrid(positions, reach), reach, DEFAULT)
        for name in ("source", "target", "bounds", "distance_m", "mean_rx_dbm"):
            assert np.array_equal(getattr(table, name), getattr(fresh, name)), (step, name)
        assert np.array_equal(table.pair_distance_m[table.pair], fresh.distance_m)
    assert 1 < neighbours.rebuilds < 40  # reused between rebuilds, rebuilt when it had to be


def _pairwise_outcome(frames: list, finish_order: list[int]) -> dict[int, tuple[set[int], set[int]]]:
    """The definition: a receiver loses a frame to any other overlapping frame it can decode
    or that it sends itself (no capture)."""
    outcome = {}
    for serial in finish_order:
        frame = frames[serial]
        lost = set()
        for other in frames:
            if other is frame or not (other.start < frame.end and frame.start < other.end):
                continue
            lost |= set(other.receivers[other.decodable].tolist()) | {other.sender}
        heard = set(frame.receivers[frame.decodable].tolist())
        outcome[serial] = (heard - lost, heard & lost)
    return outcome


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(
    ("mode", "pairwise_up_to", "hear_one_by_one_up_to"),
    [
        ("transmit", radio.PAIRWISE_UP_TO, radio.HEAR_ONE_BY_ONE_UP_TO),
        ("links", 0, 0),
        ("batched", radio.PAIRWISE_UP_TO, radio.HEAR_ONE_BY_ONE_UP_TO),
        ("batched", radio.PAIRWISE_UP_TO, 0),
        ("batched", 10**9, 10**9),
    ],
)
def test_channel_bookkeeping_equals_the_pairwise_definition(
    seed: int, mode: str, pairwise_up_to: int, hear_one_by_one_up_to: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random senders and start times on a 1.2 km line (hidden terminals, shared start slots,
    frames starting exactly at another's end); finished at their end or later, one by one
    or (``batched``) ended one by one and resolved in batches at random moments. Both ways
    to resolve (pair by pair, and the sweep) and both ways to find a frame's decodable
    receivers (one frame at a time, many at once) are used alone and mixed."""
    monkeypatch.setattr(radio, "PAIRWISE_UP_TO", pairwise_up_to)
    monkeypatch.setattr(radio, "HEAR_ONE_BY_ONE_UP_TO", hear_one_by_one_up_to)
    rng = np.random.default_rng(seed)
    nodes = 14
    where = np.column_stack([rng.uniform(0.0, 1200.0, nodes), np.zeros(nodes)])
    channel = Channel(DEFAULT)
    channel.reserve_slots(nodes)
    frames, pending, finished, now = [], [], {}, 0.0
    busy_until = np.full(nodes, -np.inf)
    for _ in range(120):
        step = rng.choice([0.0, 13e-6, 1e-4, 4e-4, 1e-3])
        now += step
        if pending and rng.random() < 0.5:  # finish what has ended (sometimes later than its end)
            for frame in [f for f in pending if f.end <= now]:
                pending.remove(frame)
                if mode == "batched":
                    channel.end(frame)
                else:
                    finished[frame.serial] = channel.finish(frame)
        if mode == "batched" and rng.random() < 0.3:
            finished.update((frame.serial, outcome) for frame, outcome in channel.resolve())
        free = np.flatnonzero(busy_until <= now)
        if free.size == 0:
            continue
        sender = int(rng.choice(free))
        if frames and rng.random() < 0.2:  # start exactly when an earlier frame ends
            ends = [f.end for f in frames if f.end >= now and busy_until[sender] <= f.end]
            now = min(ends) if ends else now
        others = np.array([i for i in range(nodes) if i != sender])
        payload = int(rng.choice([100, 300]))
        frame_rng = np.random.default_rng(int(rng.integers(1 << 32)))
        if mode != "transmit":
            distance = np.hypot(*(where[others] - where[sender]).T)
            frame = channel.transmit_links(
                sender,
                sender,
                where[sender],
                now,
                payload,
                others,
                others,
                distance,
                mean_rx_power_dbm(distance, DEFAULT),
                frame_rng,
            )
        else:
            frame = channel.transmit(sender, where[sender], now, payload, others, where[others], frame_rng)
        busy_until[sender] = frame.end
        frames.append(frame)
        pending.append(frame)
    for frame in pending:
        finished[frame.serial] = channel.finish(frame)
    finished.update((frame.serial, outcome) for frame, outcome in channel.resolve())
    assert len(finished) == len(frames)
    expected = _pairwise_outcome(frames, list(finished))
    collisions = 0
    for serial, outcome in finished.items():
        delivered, collided = expected[serial]
        assert set(outcome.delivered.tolist()) == delivered
        assert set(outcome.collided.tolist()) == collided
        assert np.array_equal(frames[serial].receivers[outcome.delivered_index], outcome.delivered)
        collisions += len(collided)
    assert collisions > 0
    # kept: only frames that a frame starting now could still overlap
    assert channel.tracked_transmissions == sum(f.end > frames[-1].start for f in frames)


def test_transmit_links_draws_and_delivers_as_transmit_does() -> None:
    rng = np.random.default_rng(3)
    where = rng.uniform(0.0, 900.0, (30, 2))
    ids = np.arange(1, 30)
    by_ids, by_links = Channel(DEFAULT), Channel(DEFAULT)
    by_links.reserve_slots(30)
    first = by_ids.transmit(0, where[0], 0.0, 300, ids, where[1:], np.random.default_rng(9))
    distance = np.hypot(*(where[1:] - where[0]).T)
    second = by_links.transmit_links(
        0,
        0,
        where[0],
        0.0,
        300,
        ids,
        ids,
        distance,
        mean_rx_power_dbm(distance, DEFAULT),
        np.random.default_rng(9),
    )
    assert np.array_equal(first.rx_power_dbm, second.rx_power_dbm) and first.end == second.end
    assert np.array_equal(by_ids.finish(first).delivered, by_links.finish(second).delivered)
    with pytest.raises(ValueError, match="not both"):
        by_links.transmit(1, where[1], 1.0, 300, ids[1:], where[2:], np.random.default_rng(0))


def test_powers_drawn_ahead_are_the_frames_powers() -> None:
    """``faded_dbm`` for many links at once, then ``transmit_links(rx_power_dbm=)``: the frame
    keeps exactly those powers (decodable where >= sensitivity) and draws nothing more."""
    rng = np.random.default_rng(4)
    where = rng.uniform(0.0, 900.0, (30, 2))
    ids = np.arange(1, 30)
    channel = Channel(DEFAULT)
    channel.reserve_slots(30)
    distance = np.hypot(*(where[1:] - where[0]).T)
    mean = mean_rx_power_dbm(distance, DEFAULT)
    draws = np.random.default_rng(9)
    ahead = channel.faded_dbm(mean, distance, draws)
    assert not np.array_equal(ahead, mean)  # faded
    state = draws.bit_generator.state
    frame = channel.transmit_links(
        0, 0, where[0], 0.0, 300, ids, ids, distance, mean, draws, rx_power_dbm=ahead
    )
    assert frame.rx_power_dbm is ahead and draws.bit_generator.state == state
    assert np.array_equal(frame.decodable, ahead >= DEFAULT.sensitivity_dbm)
    assert np.array_equal(channel.finish(frame).delivered, ids[ahead >= DEFAULT.sensitivity_dbm])
    still = Channel(dataclasses.replace(DEFAULT, nakagami=False))
    assert still.faded_dbm(mean, distance, draws) is mean


@settings(max_examples=200, deadline=None)
@given(
    distance=st.one_of(
        st.floats(0.0, 3000.0),
        st.floats(-1e-6, 1e-6).map(lambda e: nominal_range_m(DEFAULT) * (1 + e)),
    ),
    two_ray=st.booleans(),
)
def test_carrier_sense_equals_the_mean_power_check(distance: float, two_ray: bool) -> None:
    params = RadioParameters(path_loss="two-ray") if two_ray else DEFAULT
    channel = Channel(params)
    frame = channel.transmit(
        1, np.zeros(2), 0.0, 300, np.array([2]), np.array([[10.0, 0.0]]), np.random.default_rng(0)
    )
    sensed = float(mean_rx_power_dbm(distance, params)) >= params.carrier_sense_dbm
    assert channel.busy_until((distance, 0.0), CCA_TIME_S) == (frame.end if sensed else CCA_TIME_S)


def test_binned_metrics_equal_the_distance_formulation() -> None:
    """Metrics buffers distance bins and counts them in bulk; the counts are the per-frame ones."""
    rng = np.random.default_rng(5)
    fast, plain = Metrics(pdr_range_m=540.0), Metrics(pdr_range_m=540.0)
    expected_bins: Counter[int] = Counter()
    received_bins: Counter[int] = Counter()
    for message in range(3000):
        distance = rng.uniform(0.0, 1000.0, int(rng.integers(0, 60)))
        in_range = distance[distance <= 540.0]
        for metrics in (fast, plain):
            record = MessageRecord(message, "cam", 1, 0.0, 300, 350, None, expected=in_range.size)
            if metrics is fast:
                metrics.on_air_binned(record, metrics.distance_bins(distance))
                metrics.delivered_binned(record, metrics.distance_bins(distance[::2]), 1e-3)
            else:
                metrics.on_air(record, in_range)
                metrics.delivered(record, distance[::2], 1e-3)
        expected_bins.update((in_range // 50.0).astype(int).tolist())
        received = distance[::2]
        received_bins.update((received[received <= 540.0] // 50.0).astype(int).tolist())
    for metrics in (fast, plain):
        assert metrics.distance_expected == expected_bins
        assert metrics.distance_received == received_bins
    assert fast.summary(duration_s=1.0) == plain.summary(duration_s=1.0)


def test_wire_parser_agrees_with_the_reader_on_good_and_damaged_messages() -> None:
    header = Header(
        "otp", "veh-1-7", 42, 1.25, segments=(PadSegment("k1", 0, 2654), PadSegment("k2", 9, 300))
    )
    wire = Sealed(header, b"x" * 300, b"t" * 16).to_bytes()
    assert Sealed.from_bytes(wire) == Sealed(header, b"x" * 300, b"t" * 16)
    assert Header._from_wire(wire)[0] == Header.decode(_Reader(wire))
    rng = np.random.default_rng(1)
    for cut in range(len(wire)):
        with pytest.raises(Rejected, match="malformed"):
            Sealed.from_bytes(wire[:cut])
    for _ in range(300):
        damaged = bytearray(wire[: len(header.encoded) + 2])
        damaged[int(rng.integers(len(damaged)))] = int(rng.integers(256))
        damaged = bytes(damaged) + wire[len(header.encoded) + 2 :]
        try:
            reference = Header.decode(_Reader(damaged))
        except Exception:  # the reader refuses it one way or another
            reference = None
        try:
            parsed = Sealed.from_bytes(damaged)
        except Rejected as exc:
            assert exc.reason == "malformed"
            continue
        assert reference is not None and parsed.header.encoded == reference.encoded  # (NaN != NaN)


@pytest.mark.parametrize("block", [7, 1 << 14])
def test_block_draws_fade_and_back_off_with_the_model_distributions(block: int) -> None:
    """The channel's block-drawn gains give the Gamma tail per distance, across block ends."""
    from vehicles.radio import BlockDraws, reception_probability

    draws = BlockDraws(np.random.default_rng(11), DEFAULT, block=block)
    distance = np.array([30.0, 79.0, 81.0, 300.0, 520.0])  # both sides of the m switch at 80 m
    mean = mean_rx_power_dbm(distance, DEFAULT)
    frames = 4000
    decoded = np.zeros(distance.size)
    for _ in range(frames):
        power = draws.faded_dbm(mean, distance)
        decoded += power >= DEFAULT.sensitivity_dbm
    expected = reception_probability(distance, DEFAULT)
    for observed, p in zip(decoded / frames, expected, strict=True):
        assert abs(observed - p) <= 5 * math.sqrt(max(p * (1 - p), 1e-9) / frames)
    slots = np.array([draws.backoff_slots() for _ in range(20_000)])
    counts = np.bincount(slots, minlength=DEFAULT.cw_min + 1)
    assert slots.min() == 0 and slots.max() == DEFAULT.cw_min
    cells = DEFAULT.cw_min + 1
    chi2 = float(((counts - 20_000 / cells) ** 2 / (20_000 / cells)).sum())
    assert chi2 < cells + 6 * math.sqrt(2 * cells)  # far beyond chance for a non-uniform draw
