"""The SimPy world: vehicles and roadside units, radio, QKD key pools, the ledger, messages.

Processes read like the story they simulate:

- ``traffic``: every 100 ms the road moves (IDM); entering vehicles get a key pool, a
  cipher and a beacon process; leaving ones stop.
- ``beacons``: a vehicle checks the ETSI CAM triggers at ``beacon_hz`` and broadcasts.
- ``events``: DENM-style event messages arrive as a Poisson process per vehicle.
- ``uplink``: V2I unicast to the nearest RSU, acknowledged, retried with a doubled window.
- ``key_service``: each RSU runs real QKD sessions (``qkd.session``) with vehicles in
  optical range whose pool runs low, one at a time; a session takes signals / source
  rate of simulated time; the key's SHA-256 commitment is recorded on the ledger from the
  RSU's key-manager account, and the key enters the vehicle's pool once recorded.
- ``ledger_watch``: the local ledger view syncs from chain events.
- ``revocation``: at ``revocation.at_s`` the authority revokes every key of a vehicle.

Receivers validate the key id of every frame against the ledger view before they
decrypt. A frame reaching many receivers is validated and decrypted once on their behalf
(the inputs, and so the outcome, are identical for all of them); replay protection is
kept per (receiver, sender). The RSU network acts as a trusted key relay: a receiver
obtains the material of a validated key id from it, as ETSI GS QKD 014 ``dec_keys`` does.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from ledger.batcher import Anchored, KeyBatcher, KeyRecord
from ledger.client import KeyLedgerClient
from ledger.errors import LedgerError
from ledger.view import LedgerView
from qkd.channel import build as build_qkd_channel
from qkd.service import SessionService
from qkd.session import SessionConfig, SessionResult

from . import crypto, radio
from .fading import FadingGains
from .metrics import OUT_OF_RANGE, MessageRecord, Metrics
from .mobility import build_road
from .reception import Reception
from .scenario import Scenario, ScenarioError

STEP_S = 0.1
RSU_ID_BASE = 1_000_000_000
LEDGER_SYNC_S = 0.25
POOL_SAMPLE_S = 1.0
KEY_CHECK_S = 0.5
KEY_RETRY_S = 1.0  # after a session that gave no key, the link gets this long to improve
AUTO_WORKERS_FROM_VEHICLES = 100  # smaller fleets run few sessions: not worth starting workers
# ...except with the one-time pad, whose pools need sessions all run long. Measured with
# `qkdiov simulate --cipher otp --qkd-workers 0|2`: 10 vehicles x 10 s, 4.3 s in process
# against 4.7 s with workers; 20 x 10 s, even; 40 x 30 s (the highway scenario), 17.1 s against 13.1 s.
AUTO_OTP_WORKERS_FROM_VEHICLE_SECONDS = 400.0
AUTO_SESSION_WORKERS = 2
ANCHOR_POLL_S = 0.05  # how often key managers check their batch's age
NEIGHBOUR_SKIN_M = 60.0  # links are found again once a node has moved 30 m (about 10 steps)
CANDIDATE_MARGIN_DB = 6.0  # query radius: a fade beyond +6 dB reaches a receiver 3% of the time
UNICAST_RETRIES = 3
GC_THRESHOLDS = (50_000, 20, 50)  # see _fewer_collections
ACK_BYTES = 14
PROCESSING_S_PER_BYTE = {"aes-gcm": 0.2e-6, "otp": 0.05e-6}  # modelled, so runs stay deterministic


def _large_fleet(scenario: Scenario, cpus: int) -> bool:
    """Whether the worker processes (QKD, reception, fading) start by default."""
    return scenario.vehicles >= AUTO_WORKERS_FROM_VEHICLES and cpus >= 2


def auto_session_workers(scenario: Scenario, cpus: int) -> int:
    """QKD worker processes when the caller does not choose: two for a large fleet or a
    pad-hungry one-time-pad run on a machine with two cores or more, else none."""
    pad_hungry = (
        scenario.keys.cipher == "otp"
        and scenario.vehicles * scenario.duration_s >= AUTO_OTP_WORKERS_FROM_VEHICLE_SECONDS
        and cpus >= 2
    )
    return AUTO_SESSION_WORKERS if _large_fleet(scenario, cpus) or pad_hungry else 0


@dataclass
class VehicleState:
    vehicle_id: int
    label: str
    pool: crypto.KeyPool
    cipher: crypto.OtpCipher | crypto.AesGcmCipher
    active: bool = True
    banned: bool = False  # revoked: roadside units serve it no more keys
    last_cam: tuple[float, float, float, float, float] | None = None  # t, x, y, heading, speed
    session_pending: bool = False  # a session runs, or its key waits for its batch to be anchored
    retry_at: float = 0.0  # no session before this (the last one gave no key)
    key_expires_at: float = -1.0  # expiry of the newest key in its pool (AES uses the newest)
    unsettled: _Unsettled | None = None  # its last session ended; the world has not read the result yet


@dataclass(eq=False, slots=True)
class _Heard:
    """A frame that has ended, waiting for :meth:`World._catch_up` (``outcome``: already
    resolved, for a unicast whose sender needed it at once)."""

    frame: radio.Transmission
    record: MessageRecord
    sealed: crypto.Sealed
    wire: bytes
    bins: np.ndarray  # the PDR distance bins of the frame's receivers
    outcome: radio.Delivery | None = None


# A frame handed to reception: its record, the sealed frame, its receivers' node slots,
# their PDR distance bins (None: the replay attacker's frame) and the time it was received.
_Opening = tuple[MessageRecord, crypto.Sealed, np.ndarray, np.ndarray | None, float | None]


@dataclass
class _Unsettled:
    """A QKD session that has ended in simulated time whose result the world reads later."""

    rsu: int
    state: VehicleState
    distance_m: float
    ended_at: float
    result: Future[SessionResult]


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it processes (for events/s figures)."""

    def __init__(self) -> None:
        super().__init__()
        self.events_processed = 0

    def step(self) -> None:
        self.events_processed += 1
        super().step()


class World:
    """One simulation run. Build it, call :meth:`run`, read :attr:`metrics`."""

    def __init__(
        self,
        scenario: Scenario,
        ledger: KeyLedgerClient,
        *,
        progress: Callable[[float], None] | None = None,
        session_workers: int | None = None,
        reception_worker: bool | None = None,
        fading_worker: bool | None = None,
        late_results: bool = True,
    ) -> None:
        """``session_workers``: processes for QKD sessions (0: in this process; None: two
        from 100 vehicles up on a machine with two cores or more, and for one-time-pad runs
        from 400 vehicle-seconds, whose pools need sessions all run long). ``reception_worker``:
        open received frames on a worker process (None: on the same terms).
        ``fading_worker``: draw the fading gains ahead on a worker process (None: on the
        same terms, when fading is on). ``late_results``: read a session's result only
        when something depends on it (see :meth:`_settle`), so the world runs on while
        workers compute. Results depend on none of the four."""
        self.scenario = scenario
        self.ledger = ledger
        self.progress = progress
        self.env = CountingEnvironment()
        self.rng = np.random.default_rng(scenario.seed)
        road = scenario.road
        if road.kind == "sumo":
            from .sumo import SumoRoad

            self.road: Any = SumoRoad(road.sumo_config, seed=scenario.seed, step_s=STEP_S)
        else:
            if road.kind == "highway":
                params = {"length_m": road.length_m, "lanes": road.lanes}
            else:
                params = {"blocks": road.blocks, "block_m": road.block_m}
            try:
                self.road = build_road(
                    road.kind,
                    **params,
                    entry_rate_per_s=road.entry_rate_per_s,
                    rng=np.random.default_rng(scenario.seed + 1),
                    initial_vehicles=scenario.vehicles,
                )
            except ValueError as exc:  # a fleet the road cannot hold: the scenario's doing
                raise ScenarioError(str(exc)) from None
        r = scenario.radio
        self.radio_params = radio.RadioParameters(
            tx_power_dbm=r.tx_power_dbm,
            sensitivity_dbm=r.sensitivity_dbm,
            carrier_sense_dbm=r.sensitivity_dbm,
            data_rate_bps=r.data_rate_mbps * 1e6,
            path_loss=r.path_loss,
            nakagami=r.nakagami,
        )
        large = _large_fleet(scenario, os.cpu_count() or 1)
        # Fading gains come from their own streams, drawn ahead on a worker for large fleets
        # (vehicles.fading): the same gains either way.
        self.fading = FadingGains(
            scenario.seed + 4,
            (self.radio_params.nakagami_m_far, self.radio_params.nakagami_m_near),
            worker=large and r.nakagami if fading_worker is None else fading_worker,
        )
        self.channel = radio.Channel(self.radio_params, fading=self.fading)
        self.nominal_range_m = radio.nominal_range_m(self.radio_params)
        self.query_radius_m = radio.nominal_range_m(self.radio_params, CANDIDATE_MARGIN_DB)
        self.metrics = Metrics(pdr_range_m=self.nominal_range_m)
        self.rsu_positions = self._place_rsus(scenario.rsus)
        self.rsu_ids = RSU_ID_BASE + np.arange(scenario.rsus)
        self.rsu_accounts = [ledger.as_sender(a) for a in self._key_manager_accounts(scenario.rsus)]
        self.view = LedgerView(ledger)
        keys = scenario.keys
        # Each RSU's key manager batches its keys' commitments into Merkle roots; the age
        # clock is simulated time, so when a key becomes usable is a function of the seed.
        self.batchers = (
            [
                KeyBatcher(client, max_batch=keys.anchor_batch, max_age_s=keys.anchor_age_s, clock=self._now)
                for client in self.rsu_accounts
            ]
            if keys.anchoring == "batch"
            else []
        )
        self._awaiting_anchor: dict[str, tuple[VehicleState, Any, KeyRecord, dict[str, Any]]] = {}
        self._awaiting_vehicles: set[int] = set()
        self.vehicles: dict[int, VehicleState] = {}
        self.key_store: dict[str, np.ndarray] = {}  # the RSU network's key relay (KME)
        self.keys_used: set[str] = set()
        self.pad_segments: list[crypto.PadSegment] = []
        # Replay state: the newest seq each receiver slot (column) accepted from each
        # sender (row; senders numbered as first heard), one table so a step's frames are
        # checked together.
        self._newest_seq = np.zeros((0, 0), dtype=np.int64)
        self._sender_rows: dict[str, int] = {}
        self.chain_epoch = float(ledger.chain.latest_timestamp())  # chain time at simulated t = 0
        self.revoked_vehicle: int | None = None
        self.setup_s = 0.0
        self.run_s = 0.0
        self._last_tx_s = 0.0  # wall time of the latest _ledger_tx call
        self.simulated_s = 0.0  # the simulated time the run covered: the scenario's, or less if stopped
        self._stop_at: float | None = None  # once stop is requested: the step the run ends at
        self._stop_requested = False
        self.run_cpu_s = 0.0  # CPU time of the simulating thread during run_s (not its waits)
        self.qkd_wall_s = 0.0  # wall time spent running or waiting for QKD sessions (not simulated)
        # RSUs' sessions share Aer jobs through two shot banks (a job's fixed cost was most of
        # a session's quantum stage), on worker processes for large fleets (qkd.service).
        # Sessions are dealt to the banks in turn, by their number, not by RSU: RSUs serve
        # different numbers of vehicles, and a bank (with its worker) per RSU parity left
        # one worker computing while the other idled at the end of the first-key burst.
        self._sessions_submitted = 0
        if session_workers is None:
            session_workers = auto_session_workers(scenario, os.cpu_count() or 1)
        self.sessions = SessionService(seed=scenario.seed + 2, workers=session_workers)
        # Frames are validated on the ledger view at reception, then parsed and opened by
        # ``reception`` (on a worker, a step behind, for large fleets: see vehicles.reception).
        self.reception = Reception(
            self._apply_verdicts, worker=large if reception_worker is None else reception_worker
        )
        self._payload_block = b""
        self._payload_at = 0
        self.ledger_setup_s = 0.0
        # (simulated s, wall s into the run) at every progress step
        self.wall_clock: list[tuple[float, float]] = []
        self.revoked_at: float | None = None
        self._message_ids = 0
        self._step = 0  # counts mobility steps: links are built once per step
        # Pairs within reach, kept across steps while nobody has moved half the skin.
        self._neighbours = radio.NeighbourList(self.query_radius_m, skin_m=NEIGHBOUR_SKIN_M)
        self._grid_ids = np.zeros(0, dtype=np.int64)
        self._grid_positions = np.zeros((0, 2))
        self._rsu_busy = [simpy.Resource(self.env, capacity=1) for _ in range(scenario.rsus)]
        self.late_results = late_results
        self._unsettled: list[deque[_Unsettled]] = [deque() for _ in range(scenario.rsus)]
        self._settling_at: float | None = None  # the simulated time a late result is read "at"
        self.replays_injected = 0
        self.bytes_opened = 0  # ciphertext bytes opened, times the receivers that kept them
        self._captured: list[tuple[crypto.Sealed, int]] = []  # (frame, a receiver's node slot)
        # The attacker's own draws: which frames it keeps does not shift the world's stream.
        self._attacker_rng = np.random.default_rng(scenario.seed + 3)
        # Frame path (see _build_links, _row): per-step links and rows, cached energies.
        self._links_step = -1
        self._nearest_step = -1  # the step _nearest_rsus was computed for
        self._nearest_rsus: list[int] = []
        self._rows_of: np.ndarray | None = None
        self._rows: dict[int, int] = {}
        self._energy_cache: dict[tuple[str, int], float] = {}
        self._radio_queues: dict[int, deque[simpy.Event]] = {}  # busy radios: frames waiting their turn
        self._heard: list[_Heard] = []  # frames ended since the last _catch_up, in the order they ended

    # ------------------------------------------------------------------ set-up
    def _place_rsus(self, count: int) -> np.ndarray:
        x0, y0, x1, y1 = self.road.bounds()
        if self.scenario.road.kind == "highway":
            xs = x0 + (np.arange(count) + 0.5) * (x1 - x0) / count
            return np.column_stack([xs, np.full(count, y0 - 5.0)])
        side = int(np.ceil(np.sqrt(count)))
        cells = [(i, j) for i in range(side) for j in range(side)][:count]
        return np.array(
            [[x0 + (i + 0.5) * (x1 - x0) / side, y0 + (j + 0.5) * (y1 - y0) / side] for i, j in cells]
        )

    def _key_manager_accounts(self, count: int) -> list[Any]:
        """One key-manager account per RSU (dev accounts 1..), granted the role on chain."""
        accounts = self.ledger.chain.accounts
        chosen = (
            [accounts[1 + i % max(1, len(accounts) - 1)] for i in range(count)] if len(accounts) > 1 else []
        )
        chosen = chosen or [self.ledger.sender] * count
        for account in {a.address: a for a in chosen}.values():
            if not self.ledger.has_role("key-manager", account.address):
                self._ledger_tx(lambda a=account: self.ledger.grant_role("key-manager", a.address), records=0)
        return chosen

    def _ledger_tx(self, send: Callable[[], Any], *, records: int, count: bool = True) -> Any:
        """Send, wait until mined, and count it; ``send`` may return a list of transactions.
        ``count=False``: time it only (the caller counts what was really sent)."""
        t0 = time.perf_counter()
        try:
            result = send()
        finally:
            self._last_tx_s = time.perf_counter() - t0
            self.metrics.ledger_wall_s += self._last_tx_s
        if count:
            self.metrics.ledger_transactions += len(result) if isinstance(result, list) else 1
            self.metrics.ledger_records += records
            if records:
                self.metrics.confirmation_s.append(self._last_tx_s)
        return result

    def _vehicle_label(self, vehicle_id: int) -> str:
        return f"veh-{self.scenario.seed}-{vehicle_id}"

    def _add_vehicle(self, vehicle_id: int, *, register: bool = True) -> None:
        label = self._vehicle_label(vehicle_id)
        if self.scenario.keys.cipher == "otp":
            cipher: crypto.OtpCipher | crypto.AesGcmCipher = crypto.OtpCipher(label)
        else:
            k = self.scenario.keys
            cipher = crypto.AesGcmCipher(
                label, rekey_messages=k.rekey_messages, rekey_seconds=k.rekey_seconds
            )
        state = VehicleState(vehicle_id, label, crypto.KeyPool(label), cipher)
        self.vehicles[vehicle_id] = state
        if register:
            self._ledger_tx(lambda: self.ledger.register_vehicle(label), records=0)
        self.env.process(self.beacons(state))
        if self.scenario.traffic.denm_rate_per_s > 0:
            self.env.process(self.events(state))
        if self.scenario.traffic.v2i_hz > 0:
            self.env.process(self.uplink(state))

    # ------------------------------------------------------------------ processes
    def request_stop(self) -> None:
        """End the run at the next mobility step (what Ctrl-C does): the time simulated until
        then is settled and summarised as a run of that duration would be. Safe to call from
        a signal handler: it only sets a flag, which the traffic process reads."""
        self._stop_requested = True

    @property
    def interrupted(self) -> bool:
        """Whether the run ended before the scenario's duration (:meth:`request_stop`)."""
        return self._stop_at is not None and self.simulated_s < self.scenario.duration_s

    def run(self) -> None:
        """Register the starting fleet on the ledger (``setup_s``), then simulate (``run_s``)."""
        try:
            self._run()
        finally:
            self.sessions.close()
            self.reception.close()
            self.fading.close()
            if hasattr(self.road, "close"):
                self.road.close()

    def _run(self) -> None:
        started = time.perf_counter()
        starting = [int(v) for v in self.road.traffic.ids.tolist()]
        for vehicle_id in starting:
            self._add_vehicle(vehicle_id, register=False)
        if starting:  # the starting fleet: up to 100 registrations per multicall transaction
            self._ledger_tx(
                lambda: self.ledger.register_vehicles([self._vehicle_label(v) for v in starting]), records=0
            )
        self._refresh_grid()
        self.view.sync()
        self.sessions.wait_ready()
        self.reception.wait_ready()
        self.fading.wait_ready()
        self.setup_s = time.perf_counter() - started
        self.ledger_setup_s = self.metrics.ledger_wall_s  # the starting fleet's registrations
        started, cpu_started = time.perf_counter(), time.thread_time()
        self.env.process(self.traffic())
        self.env.process(self.ledger_watch())
        if self.batchers:
            self.env.process(self.anchoring())
        self.env.process(self.pool_sampler())
        for index in range(self.scenario.rsus):
            self.env.process(self.key_service(index))
        if self.scenario.revocation.vehicle is not None:
            self.env.process(self.revocation())
        self.env.process(self.replay_attacker())
        duration = self.scenario.duration_s
        step = max(duration / 100, STEP_S)
        t = 0.0
        self.wall_clock = [(0.0, 0.0)]
        with _fewer_collections():
            while t < duration:
                t = min(duration, t + step)
                self.env.run(until=t)  # returns early at _stop_at (request_stop: see traffic)
                stopped = self._stop_at is not None and self.env.now >= self._stop_at
                if stopped:
                    t = self.env.now
                self.wall_clock.append((t, time.perf_counter() - started))
                if self.progress:
                    self.progress(t / duration)
                if stopped:
                    break
            self.simulated_s = t
            for index in range(self.scenario.rsus):  # sessions that ended before the end count
                self._settle(index)  # any ledger-view change catches up first (_sync_view)
            self._catch_up()
            self.reception.settle()  # the last frames' verdicts
        self.run_s = time.perf_counter() - started
        self.run_cpu_s = time.thread_time() - cpu_started

    def traffic(self) -> Any:
        while True:
            if self._stop_requested and self._stop_at is None:
                self._halt_after(STEP_S)  # with this step's end: the run a shorter scenario gives
            yield self.env.timeout(STEP_S)
            self._catch_up()
            self.reception.flush()  # this step's frames to the worker, the step before's verdicts in
            events = self.road.step(STEP_S)
            for vehicle_id in events.exited.tolist():
                state = self.vehicles.get(int(vehicle_id))
                if state:
                    state.active = False
            for vehicle_id in events.entered.tolist():
                self._add_vehicle(int(vehicle_id))
            self._refresh_grid()

    def _halt_after(self, delay: float) -> None:
        """Stop ``env.run`` ``delay`` from now, before anything else due then, as
        ``run(until=...)`` does (an urgent event), so the run is the one a scenario of that
        duration gives. Scheduled by delay, as a timeout is: the same float as the step's."""
        self._stop_at = self.env.now + delay
        halt = simpy.Event(self.env)
        halt._ok, halt._value = True, None  # triggered, like SimPy's own ``until`` event
        halt.callbacks.append(simpy.core.StopSimulation.callback)
        self.env.schedule(halt, simpy.core.URGENT, delay)

    def _refresh_grid(self) -> None:
        traffic = self.road.traffic
        self._grid_ids = np.concatenate([traffic.ids, self.rsu_ids])
        self._grid_positions = np.vstack([traffic.positions(), self.rsu_positions])
        self._step += 1

    def _build_links(self) -> None:
        """This step's radio links, for every sender at once (nodes hold still until the next step).

        Per link: the receiver's id and node slot (as the replay table numbers them), distance,
        mean received power and PDR distance bin; ``_link_in_range`` counts the links within
        the nominal range before each entry. ``_on_air`` reads a sender's row as slices.
        """
        table = self._neighbours.table(self._grid_positions, self._grid_ids, self.radio_params)
        ids = self._grid_ids
        slots = np.where(ids >= RSU_ID_BASE, ids - RSU_ID_BASE, ids + self.scenario.rsus)
        self._grid_slots = slots.tolist()
        self.channel.reserve_slots(int(slots.max(initial=-1)) + 1)
        self._link_table = table
        self._link_bounds = table.bounds.tolist()
        self._link_ids = ids[table.target]
        self._link_slots = slots[table.target]
        self._link_bins = self.metrics.distance_bins(table.pair_distance_m)[table.pair]
        self._link_in_range = np.zeros(len(table) + 1, dtype=np.int64)
        np.cumsum(table.distance_m <= self.nominal_range_m, out=self._link_in_range[1:])
        # Every link's fade for one frame, drawn at once: a sender's first broadcast of the
        # step takes its row (one NumPy draw per step instead of one per frame); later
        # frames of the step draw their own.
        self._link_power = self.channel.faded_dbm(table.mean_rx_dbm, table.distance_m, self.rng)
        self._link_power_unused = bytearray(b"\x01") * len(ids)
        self._links_step = self._step

    def _row(self, vehicle_id: int) -> int | None:
        """The vehicle's row in the road's arrays, or None once it has left (a dict per population)."""
        ids = self.road.traffic.ids
        if self._rows_of is not ids:
            self._rows_of = ids
            self._rows = {vehicle: row for row, vehicle in enumerate(ids.tolist())}
        return self._rows.get(vehicle_id)

    def beacons(self, state: VehicleState) -> Any:
        """ETSI CAM generation: check every 1/beacon_hz; send on heading > 4 deg, position > 4 m,
        speed > 0.5 m/s change, or 1 s since the last CAM."""
        interval = 1.0 / self.scenario.traffic.beacon_hz
        tick = float(self.rng.uniform(0, interval))
        yield self.env.timeout(tick)
        while state.active:
            row = self._row(state.vehicle_id)
            if row is None:
                return
            traffic = self.road.traffic
            now = self.env.now
            current = (now, traffic.x[row], traffic.y[row], traffic.heading[row], traffic.speed[row])
            last = state.last_cam
            fixed_rate = not self.scenario.traffic.etsi_triggers
            if last is None or fixed_rate or _cam_triggered(last, current):
                state.last_cam = current
                yield from self.broadcast(state, "cam")
            # checks keep their own clock: a frame's contention and air time do not delay the next
            tick += interval
            while tick < self.env.now:  # a frame held past a whole interval: skip the missed checks
                tick += interval
            yield self.env.timeout(tick - self.env.now)

    def events(self, state: VehicleState) -> Any:
        rate = self.scenario.traffic.denm_rate_per_s
        while state.active:
            yield self.env.timeout(float(self.rng.exponential(1.0 / rate)))
            if state.active:
                yield from self.broadcast(state, "denm")

    def uplink(self, state: VehicleState) -> Any:
        interval = 1.0 / self.scenario.traffic.v2i_hz
        yield self.env.timeout(float(self.rng.uniform(0, interval)))
        while state.active:
            yield from self.unicast_to_rsu(state)
            yield self.env.timeout(interval)

    # ------------------------------------------------------------------ sending
    def _payload(self) -> bytes:
        """Random application bytes, cut from a 64 KiB block (one ``rng.bytes`` call per
        frame cost more than the AES-GCM encryption of the frame)."""
        size = self.scenario.traffic.payload_bytes
        at = self._payload_at
        if at + size > len(self._payload_block):
            self._payload_block = self.rng.bytes(max(1 << 16, size))
            at = 0
        self._payload_at = at + size
        return self._payload_block[at : at + size]

    def _seal(self, state: VehicleState) -> crypto.Sealed | None:
        payload = self._payload()
        try:
            sealed = state.cipher.encrypt(payload, state.pool, self.env.now)
        except crypto.PoolExhausted:
            self.metrics.drops["no-key-material"] += 1
            return None
        mode = self.scenario.keys.cipher
        self.metrics.energy_crypto_j += crypto.crypto_energy_j(len(payload), mode)
        self.keys_used.update(sealed.header.key_ids)
        self.pad_segments.extend(sealed.header.segments)  # OTP only: which pool bits each message spent
        return sealed

    def _contend(self, position: tuple[float, float], cw_multiplier: int = 1) -> Any:
        backoff = self.channel.backoff_s(self.rng) * cw_multiplier
        yield self.env.timeout(backoff)
        while (idle_at := self.channel.busy_until(position, self.env.now)) > self.env.now:
            yield self.env.timeout(idle_at - self.env.now + self.channel.backoff_s(self.rng))

    def _xy(self, row: int) -> tuple[float, float]:
        traffic = self.road.traffic
        return float(traffic.x[row]), float(traffic.y[row])

    def broadcast(self, state: VehicleState, kind: str) -> Any:
        sealed = self._seal(state)
        if sealed is None:
            return
        created = self.env.now
        turn = self._radio_turn(state)  # one frame at a time per node: its MAC queue
        try:
            if turn is not None:
                yield turn
            row = self._row(state.vehicle_id)
            if row is None:
                return
            yield from self._contend(self._xy(row))
            row = self._row(state.vehicle_id)
            if row is None:
                return
            yield from self._on_air(state, sealed, kind, created, row, destination=None)
        finally:
            self._radio_done(state, turn)

    def _radio_turn(self, state: VehicleState) -> simpy.Event | None:
        """Queue for the node's radio: None when it is free (taken at once, no event), else an
        event that fires when the frames queued before have gone (first come, first served)."""
        waiting = self._radio_queues.get(state.vehicle_id)
        if waiting is None:
            self._radio_queues[state.vehicle_id] = deque()
            return None
        turn = self.env.event()
        waiting.append(turn)
        return turn

    def _radio_done(self, state: VehicleState, turn: simpy.Event | None) -> None:
        """Hand the radio to the next frame in the queue (or leave the queue if never served)."""
        waiting = self._radio_queues[state.vehicle_id]
        if turn is not None and not turn.triggered:
            waiting.remove(turn)
        elif waiting:
            waiting.popleft().succeed()
        else:
            del self._radio_queues[state.vehicle_id]

    def unicast_to_rsu(self, state: VehicleState) -> Any:
        sealed = self._seal(state)
        if sealed is None:
            return
        created = self.env.now
        turn = self._radio_turn(state)
        try:
            if turn is not None:
                yield turn
            for attempt in range(UNICAST_RETRIES + 1):
                row = self._row(state.vehicle_id)
                if row is None:
                    return
                position = self._xy(row)
                nearest = self._nearest_rsu(row)
                yield from self._contend(position, cw_multiplier=2**attempt)
                row = self._row(state.vehicle_id)
                if row is None:
                    return
                delivered = yield from self._on_air(
                    state, sealed, "v2i", created, row, destination=int(self.rsu_ids[nearest])
                )
                if delivered:
                    yield self.env.timeout(self.radio_params.sifs_s + self.channel.airtime_s(ACK_BYTES))
                    return
        finally:
            self._radio_done(state, turn)

    def _nearest_rsu(self, row: int) -> int:
        """The roadside unit nearest to the vehicle at ``row`` this step: one NumPy pass per
        step for every vehicle (a pass per frame cost about 5 us)."""
        if self._nearest_step != self._step:
            traffic = self.road.traffic
            distance = np.hypot(
                traffic.x[:, None] - self.rsu_positions[:, 0], traffic.y[:, None] - self.rsu_positions[:, 1]
            )
            self._nearest_rsus = np.argmin(distance, axis=1).tolist() if distance.size else []
            self._nearest_step = self._step
        return self._nearest_rsus[row]

    def _on_air(
        self,
        state: VehicleState,
        sealed: crypto.Sealed,
        kind: str,
        created: float,
        row: int,
        destination: int | None,
    ) -> Any:
        """Transmit one frame from the sender's grid ``row``; at its end, validate, decrypt and
        count it at every receiver. Candidates are the sender's links of this step."""
        if self._links_step != self._step:
            self._build_links()
        lo, hi = self._link_bounds[row], self._link_bounds[row + 1]
        table = self._link_table
        ids, slots = self._link_ids[lo:hi], self._link_slots[lo:hi]
        distances, mean_dbm = table.distance_m[lo:hi], table.mean_rx_dbm[lo:hi]
        bins = self._link_bins[lo:hi]  # OUT_OF_RANGE beyond the nominal range
        expected = int(self._link_in_range[hi] - self._link_in_range[lo])
        power = None
        if destination is None and self._link_power_unused[row]:
            self._link_power_unused[row] = 0
            power = self._link_power[lo:hi]
        if destination is not None:
            keep = ids == destination
            ids, slots, bins = ids[keep], slots[keep], bins[keep]
            distances, mean_dbm = distances[keep], mean_dbm[keep]
            expected = int(np.count_nonzero(bins != OUT_OF_RANGE))
        wire = sealed.to_bytes()
        air_bytes = len(wire) + 24 + 8 + 4  # MAC header, LLC/SNAP, FCS
        self._message_ids += 1
        key_ids = sealed.header.key_ids
        record = MessageRecord(
            message_id=self._message_ids,
            kind=kind,
            sender=state.vehicle_id,
            sent_at=created,
            payload_bytes=self.scenario.traffic.payload_bytes,
            air_bytes=air_bytes,
            key_id=key_ids[0] if key_ids else None,
            expected=expected,
        )
        self.metrics.on_air_binned(record, bins)
        frame = self.channel.transmit_links(
            state.vehicle_id,
            self._grid_slots[row],
            self._grid_positions[row],
            self.env.now,
            len(wire),
            ids,
            slots,
            distances,
            mean_dbm,
            self.rng,
            rx_power_dbm=power,
        )
        bits = 8 * air_bytes
        if destination is None:
            self.metrics.energy_radio_j += self._radio_energy("tx", bits)
        else:
            self.metrics.energy_radio_j += float(radio.tx_energy_j(bits, float(distances.max(initial=1.0))))
        yield self.env.timeout(frame.end - self.env.now)
        heard = _Heard(frame, record, sealed, wire, bins)
        if destination is None:  # broadcast: no acknowledgement waits for the outcome
            self.channel.end(frame)
            self._heard.append(heard)
            return False
        heard.outcome = self.channel.finish(frame)  # the sender's ACK depends on it
        self._heard.append(heard)
        return heard.outcome.delivered_index.size > 0

    def _catch_up(self) -> None:
        """Receive every frame that has ended, in the order they ended, as of its end.

        Why deferred: the channel resolves a step's broadcasts in one batch (see
        radio.Channel). Nothing a frame's receivers do feeds back into the world before the
        next catch-up, which comes before anything that reads or changes what reception
        depends on: each mobility step, every ledger-view change, the replay attacker's turn
        and the end of the run. Validation reads the view as of the frame's end.
        """
        if not self._heard:
            return
        outcomes = {frame.serial: outcome for frame, outcome in self.channel.resolve()}
        heard_list, self._heard = self._heard, []
        for heard in heard_list:
            frame = heard.frame
            outcome = heard.outcome or outcomes[frame.serial]
            index = outcome.delivered_index
            bits = 8 * heard.record.air_bytes
            self.metrics.energy_radio_j += self._radio_energy("rx", bits) * int(index.size)
            if index.size == 0:
                continue
            # The replay attacker keeps the first frame it hears whenever its store is empty,
            # and 1% of the others (up to 64), so there is something to replay every second.
            if not self._captured or (len(self._captured) < 64 and self._attacker_rng.random() < 0.01):
                self._captured.append((heard.sealed, int(frame.slots[index[0]])))
            self._receive(
                heard.record,
                heard.sealed,
                heard.wire,
                frame.slots[index],
                heard.bins[index],
                frame.end,
            )

    def _radio_energy(self, way: str, bits: int) -> float:
        """Broadcast transmit energy (over the nominal range) or receive energy, cached per size."""
        key = (way, bits)
        energy = self._energy_cache.get(key)
        if energy is None:
            if way == "tx":
                energy = float(radio.tx_energy_j(bits, self.nominal_range_m))
            else:
                energy = float(radio.rx_energy_j(bits))
            self._energy_cache[key] = energy
        return energy

    def _receive(
        self,
        record: MessageRecord,
        sealed: crypto.Sealed,
        wire: bytes,
        slots: np.ndarray,
        bins: np.ndarray,
        now: float,
    ) -> None:
        """The receivers (node ``slots``, PDR distance ``bins``) that
        decoded the frame at ``now``: ledger validation, then the frame is opened once for all."""
        reason = self._validate(sealed, now)
        if reason != "ok":
            self.metrics.rejected(record, reason, int(slots.size))
            return
        self.reception.open(wire, (record, sealed, slots, bins, now))

    def _apply_verdicts(self, items: list[_Opening], verdicts: list[str]) -> None:
        """A batch of opened frames, in reception order: refusals, the per-receiver replay
        check for the whole batch (:meth:`_fresh_batch`), then delivery counts."""
        opened: list[_Opening] = []
        for item, verdict in zip(items, verdicts, strict=True):
            if verdict == "ok":
                opened.append(item)
            else:
                self.metrics.rejected(item[0], verdict, int(item[2].size))
        if not opened:
            return
        fresh = self._fresh_batch([(item[1].header, item[2]) for item in opened])
        processing_per_byte = PROCESSING_S_PER_BYTE[self.scenario.keys.cipher]
        deliveries: list[tuple[MessageRecord, int, float]] = []
        kept: list[np.ndarray] = []
        at = 0
        for record, sealed, slots, bins, received_at in opened:
            count = int(slots.size)
            mine = fresh[at : at + count]
            at += count
            fresh_count = int(np.count_nonzero(mine))
            if bins is None:  # the replay attacker's frame, heard by one receiver
                self.metrics.rejected(record, "replay-accepted" if fresh_count else "replay")
                continue
            if fresh_count < count:
                self.metrics.rejected(record, "replay", count - fresh_count)
                bins = bins[mine]
            if fresh_count:
                ciphertext = len(sealed.ciphertext)
                self.bytes_opened += ciphertext * fresh_count
                latency = received_at + ciphertext * processing_per_byte - sealed.header.timestamp
                deliveries.append((record, fresh_count, latency))
                kept.append(bins)
        if deliveries:
            self.metrics.delivered_many(deliveries, np.concatenate(kept))

    def _fresh_batch(self, frames: list[tuple[crypto.Header, np.ndarray]]) -> np.ndarray:
        """Per (receiver, sender) replay check of frames given in reception order, each
        with its receivers' node slots: one flag per receiver, concatenated.

        Frames of one sender arrive in order here, so "newer than the newest accepted"
        is the 64-message window's verdict too. A frame's receivers are distinct, so the
        k-th frames of all senders in the batch form a round with no (sender, receiver)
        pair twice, checked and marked in one gather and one scatter; rounds go in order.
        """
        rows, seqs, counts, rounds = [], [], [], []
        seen: dict[int, int] = {}
        for header, slots in frames:
            row = self._sender_rows.get(header.sender)
            if row is None:
                row = self._sender_rows[header.sender] = len(self._sender_rows)
            rows.append(row)
            seqs.append(header.seq)
            counts.append(slots.size)
            rounds.append(seen.get(row, 0))
            seen[row] = rounds[-1] + 1
        slots = np.concatenate([slots for _, slots in frames])
        self._grow_replay_table(len(self._sender_rows), int(slots.max()) + 1)
        width = self._newest_seq.shape[1]
        pairs = np.repeat(np.asarray(rows, dtype=np.int64) * width, counts) + slots
        seq_of = np.repeat(np.asarray(seqs, dtype=np.int64), counts)
        newest = self._newest_seq.reshape(-1)  # a view: marks land in the table
        if len(seen) == len(frames):  # one frame per sender: a single round, the whole batch
            groups: list[slice] | Iterator[np.ndarray] = [slice(None)]
        else:
            round_of = np.repeat(np.asarray(rounds), counts)
            groups = (np.flatnonzero(round_of == k) for k in range(max(seen.values())))
        fresh = np.empty(slots.size, dtype=bool)
        for where in groups:
            these, seq = pairs[where], seq_of[where]
            ok = seq > newest[these]
            newest[these[ok]] = seq[ok]
            fresh[where] = ok
        return fresh

    def _grow_replay_table(self, senders: int, slots: int) -> None:
        table = self._newest_seq
        if table.shape[0] >= senders and table.shape[1] >= slots:
            return
        grown = np.zeros(
            (max(senders, 2 * table.shape[0], 64), max(slots, 2 * table.shape[1], 64)), dtype=np.int64
        )
        grown[: table.shape[0], : table.shape[1]] = table
        self._newest_seq = grown

    def _validate(self, sealed: crypto.Sealed, at: float | None = None) -> str:
        """Ledger validation, as of simulated time ``at`` (default: now), of every key id the
        frame depends on: "ok" or the reason not."""
        now = self._chain_now(self.env.now if at is None else at)
        for key_id in sealed.header.key_ids:
            t0 = time.perf_counter_ns()
            ok, reason = self.view.validate(key_id, None, now)
            self.metrics.validation_ns.append(time.perf_counter_ns() - t0)
            if not ok:
                return reason
        return "ok"

    def _chain_now(self, sim_now: float) -> float:
        return self.chain_epoch + sim_now

    # ------------------------------------------------------------------ keys and ledger
    def key_service(self, index: int) -> Any:
        """An RSU keeps topping up the pools of vehicles in optical range, one session at a time."""
        rsu_position = self.rsu_positions[index]
        keys = self.scenario.keys
        while True:
            traffic = self.road.traffic
            distances = np.hypot(*(traffic.positions() - rsu_position).T) if len(traffic) else np.zeros(0)
            order = np.argsort(distances)
            served = False
            for row in order.tolist():
                if distances[row] > keys.qkd_range_m:
                    break
                state = self.vehicles.get(int(traffic.ids[row]))
                if state is None:
                    continue
                unsettled = state.unsettled
                if unsettled is not None and self.env.now >= unsettled.ended_at + KEY_RETRY_S:
                    self._settle(unsettled.rsu)  # had it failed, it could have a new session now
                if state.banned or state.session_pending or not state.active:
                    continue
                if self.env.now < state.retry_at:
                    continue
                if not self._needs_key(state):
                    continue
                state.session_pending = True
                with self._rsu_busy[index].request() as turn:
                    yield turn
                    yield from self._qkd_session(index, state, float(distances[row]))
                served = True
                break
            if not served:
                yield self.env.timeout(_next_tick(self.env.now, KEY_CHECK_S) - self.env.now)

    def _needs_key(self, state: VehicleState) -> bool:
        """OTP spends bits: top up below the threshold. AES-GCM rekeys from one key by HKDF
        epochs: a new QKD key only when the newest one nears the end of its lifetime."""
        keys = self.scenario.keys
        if keys.cipher == "otp":  # and always when the pool cannot pay for the next message
            message_bits = crypto.OtpCipher.bits_needed(self.scenario.traffic.payload_bytes)
            return state.pool.available_bits < max(keys.refill_below_bits, message_bits)
        return state.key_expires_at - self.env.now < 0.1 * keys.key_ttl_s

    def _qkd_session(self, index: int, state: VehicleState, distance_m: float) -> Any:
        keys = self.scenario.keys
        link = build_qkd_channel("free-space", distance_km=max(distance_m, 1.0) / 1000.0)
        seed = int(self.rng.integers(0, 2**62))
        # The simulator only wants the key: Bob's outcomes that sifting discards are not
        # simulated (the same distribution of keys and aborts, about half the Aer work).
        config = SessionConfig(
            channel=link,
            signals=keys.qkd_signals,
            seed=seed,
            reconciliation=keys.reconciliation,
            simulate_discarded=False,
        )
        started = time.perf_counter()
        # runs while this process goes on, with workers
        pending = self.sessions.submit(self._sessions_submitted, config)
        self._sessions_submitted += 1
        self.qkd_wall_s += time.perf_counter() - started
        yield self.env.timeout(keys.qkd_signals / keys.source_rate_hz)
        waiting = self._unsettled[index]
        state.unsettled = _Unsettled(index, state, distance_m, self.env.now, pending)
        waiting.append(state.unsettled)
        batcher = self.batchers[index] if self.batchers else None
        if batcher is None or not self.late_results or batcher.pending + len(waiting) >= batcher.max_batch:
            self._settle(index)  # this key may be the one that fills the batch: read it now

    def _settle(self, index: int) -> None:
        """Read the results of the RSU's ended sessions, each as of the time it ended.

        Why late: the simulation cannot pass a point that depends on a result before the
        result exists, and a session ends (signals / source rate, about 1 ms) long before
        a worker has computed it (about 20 ms). Nothing depends on it that early. Until it
        is read the vehicle stays "pending", which bars it from a new session as a
        success (its key awaits the batch) or a failure (it retries after KEY_RETRY_S)
        would; and the record only matters to the key manager's batch. So a result is
        read when its batch could fill (:meth:`_qkd_session`), when the batch could be
        due by age (:meth:`anchoring`), when a failure would let the vehicle try again
        (:meth:`key_service`) and at the end: the outcome is the same as reading every
        result the moment its session ends.
        """
        waiting = self._unsettled[index]
        while waiting:
            item = waiting.popleft()
            started = time.perf_counter()
            result = item.result.result()  # waits if a worker still runs it
            self.qkd_wall_s += time.perf_counter() - started
            state = item.state
            state.unsettled = None
            self._settling_at = item.ended_at
            try:
                self._session_done(index, state, item.distance_m, result, item.ended_at)
            finally:
                self._settling_at = None
            state.session_pending = state.vehicle_id in self._awaiting_vehicles

    def _session_done(
        self, index: int, state: VehicleState, distance_m: float, result: SessionResult, ended_at: float
    ) -> None:
        """A session's outcome, as of ``ended_at``: its key's record to the ledger, or a retry."""
        keys = self.scenario.keys
        self.metrics.sessions += 1
        if result.aborted or not result.keys_match:
            self.metrics.sessions_aborted += 1
            state.retry_at = ended_at + KEY_RETRY_S
            return
        commitment = bytes.fromhex(result.key_sha256 or "")
        now_chain = int(self._chain_now(ended_at))
        record = KeyRecord(
            key_id=result.key_id,
            commitment=commitment,
            vehicle=state.label,
            qber=float(result.qber or 0.0),
            final_key_bits=result.final_key_bits,
            created_at=now_chain,
            expires_at=now_chain + int(keys.key_ttl_s),
        )
        row = {
            "key_id": result.key_id,
            "vehicle": state.label,
            "rsu": index,
            "t": ended_at,
            "distance_m": round(distance_m, 2),
            "qber": result.qber,
            "bits": result.final_key_bits,
            "sha256": result.key_sha256,
        }
        if self.batchers:
            # The key is usable once its batch is anchored; until then the vehicle waits for it.
            self._awaiting_vehicles.add(state.vehicle_id)
            self._awaiting_anchor[str(result.key_id)] = (state, result, record, row)
            self._anchor(lambda: self.batchers[index].add(record))  # as of ended_at: see _now
            return
        try:
            self._ledger_tx(
                lambda: self.rsu_accounts[index].record_session(
                    record.key_id,
                    commitment,
                    state.label,
                    qber=record.qber,
                    final_key_bits=record.final_key_bits,
                    created_at=record.created_at,
                    expires_at=record.expires_at,
                ),
                records=1,
            )
        except LedgerError as exc:
            self.metrics.drops[f"ledger-refused:{type(exc).__name__}"] += 1
            return
        self._sync_view()
        self._deliver(state, result, record, row)

    def _deliver(
        self, state: VehicleState, result: SessionResult, record: KeyRecord, row: dict[str, Any]
    ) -> None:
        """The key is on the ledger: into the key relay and the vehicle's pool, which retires
        it when the ledger's record expires (receivers would refuse it from then on)."""
        expires_at = record.expires_at - self.chain_epoch  # in simulated time
        self.key_store[result.key_id] = result.alice_key
        self.reception.add_key(result.key_id, result.alice_key)
        state.pool.add(result.key_id, result.alice_key, expires_at=expires_at)
        state.key_expires_at = expires_at
        self.metrics.bits_generated += result.final_key_bits
        self.metrics.key_rows.append({**row, "usable_at": self.env.now})

    def _now(self) -> float:
        """The key managers' batch clock: simulated time, or a late result's end time."""
        return self.env.now if self._settling_at is None else self._settling_at

    def _anchor(self, step: Callable[[], list[Anchored]]) -> None:
        """Run a batcher step (add or poll); if it anchored a batch, hand its keys out.

        The view learns the new root from the chain's event, then admits each key by its
        inclusion proof, exactly as a receiver given the record and proof by the key relay
        would; only admitted keys reach a pool.
        """
        try:
            anchored = self._ledger_tx(step, records=0, count=False)
        except LedgerError as exc:
            self.metrics.drops[f"ledger-refused:{type(exc).__name__}"] += 1
            return
        if not anchored:
            return
        self.metrics.ledger_transactions += 1
        self.metrics.ledger_records += len(anchored)
        self.metrics.confirmation_s.append(self._last_tx_s)  # the batch's one transaction
        self._sync_view()
        for item in anchored:
            state, result, record, row = self._awaiting_anchor.pop(item.key_id)
            self._awaiting_vehicles.discard(state.vehicle_id)
            state.session_pending = False  # the next session may top the pool up again
            verdict = self.view.admit(record, item.root, item.proof)
            if verdict != "admitted":
                self.metrics.drops[f"ledger-refused:{verdict}"] += 1
                continue
            self._deliver(state, result, record, row)

    def _sync_view(self) -> None:
        """Bring the ledger view up to date with the chain, once every frame that ended
        before now has been validated against the view as it was."""
        self._catch_up()
        self.view.sync()

    def anchoring(self) -> Any:
        """Key managers anchor a batch once its oldest record has waited ``anchor_age_s``."""
        while True:
            yield self.env.timeout(ANCHOR_POLL_S)
            for index, batcher in enumerate(self.batchers):
                waiting = self._unsettled[index]
                if waiting and (batcher.due() or self.env.now - waiting[0].ended_at >= batcher.max_age_s):
                    self._settle(index)  # records that would be in the batch by now go in first
                if batcher.due():
                    self._anchor(batcher.poll)

    def ledger_watch(self) -> Any:
        while True:
            yield self.env.timeout(LEDGER_SYNC_S)
            self._sync_view()
            self.metrics.ledger_samples.append((self.env.now, self.metrics.ledger_records))

    def pool_sampler(self) -> Any:
        """Key material each vehicle holds: unspent pad bits, or for AES-GCM its keys in use."""
        otp = self.scenario.keys.cipher == "otp"
        while True:
            for state in self.vehicles.values():
                if state.active:
                    pool = state.pool
                    held = pool.bits_added - pool.bits_discarded - (pool.bits_consumed if otp else 0)
                    self.metrics.pool_samples.append((self.env.now, state.vehicle_id, held))
            yield self.env.timeout(POOL_SAMPLE_S)

    def revocation(self) -> Any:
        rev = self.scenario.revocation
        assert rev.at_s is not None and rev.vehicle is not None
        yield self.env.timeout(rev.at_s)
        ids = sorted(self.vehicles)
        state = self.vehicles[ids[min(rev.vehicle, len(ids) - 1)]]
        state.banned = True
        self.revoked_vehicle = state.vehicle_id
        self.revoked_at = self.env.now
        self._ledger_tx(
            lambda: self.ledger.revoke_vehicle_keys(state.label, "revoked during the run"), records=0
        )

    def replay_attacker(self) -> Any:
        """An attacker re-broadcasts frames it captured earlier: receivers must refuse them."""
        while True:
            yield self.env.timeout(1.0)
            self._catch_up()  # what it has heard by now
            if not self._captured:
                continue
            sealed, slot = self._captured.pop(0)
            self.replays_injected += 1
            record = MessageRecord(
                message_id=-self.replays_injected,
                kind="replay",
                sender=-1,
                sent_at=self.env.now,
                payload_bytes=0,
                air_bytes=0,
                key_id=None,
                expected=0,
            )
            reason = self._validate(sealed)
            if reason != "ok":
                self.metrics.rejected(record, reason)
                continue
            # bins None marks the replay: refused, or counted "replay-accepted" (a bug the
            # tests look for) in _apply_verdicts
            self.reception.open(sealed.to_bytes(), (record, sealed, np.array([slot]), None, None))

    # ------------------------------------------------------------------ results
    def key_commitment_of(self, key_id: str) -> str:
        return hashlib.sha256(np.packbits(self.key_store[key_id]).tobytes()).hexdigest()

    def summary(self, wall_s: float) -> dict[str, Any]:
        """The ``qkdiov simulate --json`` object (../shared/spec/architecture.md field names)."""
        s = self.scenario
        self.metrics.bits_consumed = sum(v.pool.bits_consumed for v in self.vehicles.values())
        # receivers' processing energy: one sum of bytes, the same in whatever order frames were opened
        self.metrics.energy_opening_j = crypto.crypto_energy_j(self.bytes_opened, s.keys.cipher)
        simulated = self.metrics.summary(duration_s=self.simulated_s)
        measured = self.metrics.wall_clock_summary()
        energy = simulated.pop("energy_j")
        # keys whose batch was not yet anchored when the run ended never reached a pool
        simulated["keys"]["awaiting_anchor"] = len(self._awaiting_anchor)
        simulated["keys"]["anchoring"] = s.keys.anchoring
        return {
            "vehicles": len(self.vehicles),
            "vehicles_initial": s.vehicles,
            "rsus": s.rsus,
            "duration_s": self.simulated_s,  # the scenario's, unless the run was stopped
            "interrupted": self.interrupted,
            "cipher": s.keys.cipher,
            "chain": s.chain,
            "seed": s.seed,
            **simulated,
            "energy_j": energy["total"],
            "energy_breakdown_j": energy,
            "validation_latency_ms": measured["validation_latency_ms"],
            "ledger": measured["ledger"],
            "replays_injected": self.replays_injected,
            "revocation": {"vehicle": self.revoked_vehicle, "at_s": self.revoked_at},
            "radio_range_m": self.nominal_range_m,
            "wall_s": wall_s,
        }


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often while the simulation runs.

    Why: a run allocates millions of short-lived objects that reference counting frees,
    and keeps many live ones (message records, frames waiting for their verdicts), which
    CPython's default thresholds (700, 10, 10) have the collector traverse again and again.
    At (50,000, 20, 50) a 500-vehicle run took about a quarter less time per simulated
    second once keys were out (docs/BENCHMARKS.md); the few cycles a run makes still go.
    """
    before = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLDS[0], GC_THRESHOLDS[1], GC_THRESHOLDS[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _next_tick(now: float, period: float) -> float:
    """The next multiple of ``period`` after ``now``. Every RSU checks its vehicles on this
    shared clock, so the sessions of vehicles that came into range at different RSUs start
    together and run side by side on the QKD workers instead of one after the other."""
    tick = (math.floor(now / period) + 1) * period
    return tick if tick - now > 1e-9 else tick + period


def _cam_triggered(last: tuple[float, ...], now: tuple[float, ...]) -> bool:
    t0, x0, y0, h0, v0 = last
    t1, x1, y1, h1, v1 = now
    turned = abs((h1 - h0 + np.pi) % (2 * np.pi) - np.pi) > np.radians(4.0)
    return bool(t1 - t0 >= 1.0 - 1e-9 or np.hypot(x1 - x0, y1 - y0) > 4.0 or abs(v1 - v0) > 0.5 or turned)
