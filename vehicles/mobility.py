"""Vehicle mobility: the Intelligent Driver Model on a highway or a Manhattan grid.

Both roads are networks of one-way *lanes* (a highway lane, or one directed street
segment of the grid). Every vehicle sits on a lane at a front-bumper position ``s``
(metres from the lane's start) and drives by IDM behind the vehicle ahead of it.
All state is struct-of-arrays in :class:`Traffic`; one :meth:`step` costs a few sorts,
O(N log N), with no per-vehicle Python loop.

Who follows whom. On its own lane a vehicle follows the next vehicle ahead. The
front vehicle of a lane looks one lane ahead, into the lane it will take next: it is
projected there (a "ghost" at ``s - lane_length``, a negative position) and sorted
together with that lane's vehicles and the ghosts of the other fronts heading the
same way. So vehicles from several approaches zipper-merge into a street instead of
meeting in it, and a vehicle about to cross sees the tail of the queue it joins.

No collisions, by construction. After the ballistic update a vehicle is held back so
that its gap to its leader (measured in the frame used for that leader) stays
>= 0, but never behind where it already was; only the front of a lane may cross the
lane's end in one step. Gaps within a lane are therefore never negative and nobody
passes the vehicle ahead. Where two approaches reach a street at once, the one
projected behind may already overlap the other's ghost: it stops and waits until
the other has gone. The hold-back is the only braking that is not IDM braking; it
is rare (the zipper order lets IDM brake in time) and more frequent at large ``dt``.

Simplifications (documented, not hidden): no lane changes (each vehicle keeps its
highway lane; the grid has one lane per direction); no traffic lights and no
crossing conflicts inside intersections (crossing flows pass through each other;
merging flows are ordered as above); the highway is one-way unless
``both_directions`` is set; vehicles are points on the lane centre line for
positions (x, y) and 5 m long for gaps.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, fields

import numpy as np

# Held-back vehicles stop this far short of a zero gap, so float rounding never shows a gap below 0.
_CLEARANCE_M = 1e-6
_EMPTY_IDS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class IdmParameters:
    """IDM driver and vehicle: the spec's values (Treiber, Hennecke and Helbing 2000)."""

    desired_speed_mps: float = 30.0
    time_headway_s: float = 1.5
    max_acceleration_mps2: float = 0.73
    comfortable_deceleration_mps2: float = 1.67
    acceleration_exponent: float = 4.0
    minimum_gap_m: float = 2.0
    vehicle_length_m: float = 5.0

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"IDM parameter {spec.name} must be a positive number, got {value!r}")

    def acceleration(self, speed: np.ndarray, gap_m: np.ndarray, approach_rate_mps: np.ndarray) -> np.ndarray:
        """IDM: a [1 - (v/v0)^delta - (s*/s)^2], s* = s0 + max(0, vT + v dv / (2 sqrt(ab))).

        ``gap_m`` = inf means a free road. A zero gap is read as 1 cm: the braking
        term is then huge, and the ballistic update stops the vehicle within the step.
        """
        free = 1.0 - (speed / self.desired_speed_mps) ** self.acceleration_exponent
        brake_scale = 2.0 * math.sqrt(self.max_acceleration_mps2 * self.comfortable_deceleration_mps2)
        desired_gap = self.minimum_gap_m + np.maximum(
            0.0, speed * self.time_headway_s + speed * approach_rate_mps / brake_scale
        )
        interaction = (desired_gap / np.maximum(gap_m, 0.01)) ** 2
        return self.max_acceleration_mps2 * (free - interaction)


def ballistic_update(speed: np.ndarray, acceleration: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Return (new speed, distance driven) for constant acceleration over ``dt``, stopping at v = 0.

    A vehicle that would reach a negative speed stops within the step after v^2 / (2|a|)
    metres (Treiber and Kanagaraj 2015, the standard ballistic IDM update).
    """
    unclamped = speed + acceleration * dt
    stops = unclamped < 0.0
    distance = np.where(
        stops,
        -(speed**2) / (2.0 * np.where(stops, acceleration, -1.0)),
        speed * dt + 0.5 * acceleration * dt * dt,
    )
    return np.maximum(unclamped, 0.0), np.maximum(distance, 0.0)


@dataclass
class Traffic:
    """All vehicles on the road, one row each (struct of arrays).

    ``ids`` are stable, never reused and always ascending (new vehicles get larger ids,
    removal keeps order), so :meth:`index_of` is a binary search. Rows change when
    vehicles enter or exit: keep ids, not row numbers, across steps.
    """

    ids: np.ndarray = field(default_factory=lambda: _EMPTY_IDS.copy())
    lane: np.ndarray = field(default_factory=lambda: _EMPTY_IDS.copy())  # index into the road's lane table
    s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # front bumper, metres from the lane start
    speed: np.ndarray = field(default_factory=lambda: np.zeros(0))  # m/s, >= 0
    next_lane: np.ndarray = field(default_factory=lambda: _EMPTY_IDS.copy())  # -1: leaves at the lane end
    halted: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # brakes to a standstill
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))  # metres
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    heading: np.ndarray = field(default_factory=lambda: np.zeros(0))  # radians, 0 = +x, counter-clockwise

    def __len__(self) -> int:
        return int(self.ids.size)

    def positions(self) -> np.ndarray:
        """(N, 2) array of x, y in metres."""
        return np.column_stack((self.x, self.y))

    def velocities(self) -> np.ndarray:
        """(N, 2) velocity vectors in m/s."""
        return np.column_stack((self.speed * np.cos(self.heading), self.speed * np.sin(self.heading)))

    def index_of(self, vehicle_ids: np.ndarray | int) -> np.ndarray:
        """Row numbers of the given ids; ValueError names the first id not on the road."""
        wanted = np.atleast_1d(np.asarray(vehicle_ids, dtype=np.int64))
        rows = np.searchsorted(self.ids, wanted)
        found = np.zeros(wanted.size, dtype=bool)
        inside = rows < self.ids.size
        found[inside] = self.ids[rows[inside]] == wanted[inside]
        missing = ~found
        if missing.any():
            raise ValueError(f"vehicle {int(wanted[missing][0])} is not on the road")
        return rows

    def _keep(self, mask: np.ndarray) -> None:
        for name in _ROW_FIELDS:
            setattr(self, name, getattr(self, name)[mask])

    def _append(self, rows: dict[str, np.ndarray]) -> None:
        for name in _ROW_FIELDS:
            setattr(self, name, np.concatenate((getattr(self, name), rows[name])))


_ROW_FIELDS = tuple(spec.name for spec in fields(Traffic))


@dataclass(frozen=True, eq=False)
class StepEvents:
    """What changed in the population during one step (ids, ascending)."""

    entered: np.ndarray
    exited: np.ndarray
    blocked_entries: int  # Poisson arrivals turned away because the entry gap was not safe


class _LaneNetwork:
    """Shared IDM machinery over a table of one-way lanes; the subclasses only build geometry.

    Lane table: start point, unit direction, length, and up to three successor lanes
    (straight, left, right; -1 = leave the network) chosen with ``turn_probabilities``.
    """

    lane_width_m = 3.5

    def __init__(
        self,
        *,
        idm: IdmParameters,
        entry_rate_per_s: float,
        rng: np.random.Generator,
        initial_vehicles: int,
        lane_start: np.ndarray,
        lane_direction: np.ndarray,
        lane_length: np.ndarray,
        successors: np.ndarray,
        turn_probabilities: np.ndarray,
        entry_lanes: np.ndarray,
    ) -> None:
        if not isinstance(idm, IdmParameters):
            raise ValueError("idm must be an IdmParameters")
        if not isinstance(rng, np.random.Generator):
            raise ValueError("rng must be a numpy.random.Generator (np.random.default_rng(seed))")
        if not (isinstance(entry_rate_per_s, int | float) and math.isfinite(entry_rate_per_s)):
            raise ValueError(f"entry_rate_per_s must be a number >= 0, got {entry_rate_per_s!r}")
        if entry_rate_per_s < 0:
            raise ValueError(f"entry_rate_per_s must be >= 0, got {entry_rate_per_s}")
        if isinstance(initial_vehicles, bool) or not isinstance(initial_vehicles, int | np.integer):
            raise ValueError(f"initial_vehicles must be an integer >= 0, got {initial_vehicles!r}")
        if initial_vehicles < 0:
            raise ValueError(f"initial_vehicles must be >= 0, got {initial_vehicles}")
        self.idm = idm
        self.entry_rate_per_s = float(entry_rate_per_s)
        self.rng = rng
        self.lane_start = lane_start
        self.lane_direction = lane_direction
        self.lane_length = lane_length
        self.lane_heading = np.arctan2(lane_direction[:, 1], lane_direction[:, 0])
        self.successors = successors
        self.turn_probabilities = turn_probabilities
        self.entry_lanes = entry_lanes
        self._may_turn = bool((successors >= 0).any())
        self._next_id = 0
        self.traffic = Traffic()
        self._place_initial(int(initial_vehicles))

    # ---- public API -------------------------------------------------------------------

    def add_vehicle(
        self, lane: int, position_m: float, speed_mps: float = 0.0, *, halted: bool = False
    ) -> int:
        """Place one vehicle (scenarios and tests); ValueError if it would overlap a neighbour."""
        if not 0 <= lane < self.lane_length.size:
            raise ValueError(f"lane {lane} does not exist (0..{self.lane_length.size - 1})")
        length = self.idm.vehicle_length_m
        if not 0.0 <= position_m <= self.lane_length[lane]:
            raise ValueError(f"position {position_m} m is off lane {lane} (0..{self.lane_length[lane]:g} m)")
        if not (math.isfinite(speed_mps) and speed_mps >= 0):
            raise ValueError(f"speed must be >= 0 m/s, got {speed_mps}")
        on_lane = self.traffic.s[self.traffic.lane == lane]
        if np.any(np.abs(on_lane - position_m) < length):
            raise ValueError(f"a vehicle at {position_m} m on lane {lane} would overlap another")
        vehicle = self._spawn(np.array([lane]), np.array([float(position_m)]), np.array([speed_mps]), halted)
        self._update_geometry()
        return int(vehicle[0])

    def set_halted(self, vehicle_id: int, halted: bool = True) -> None:
        """A halted vehicle (breakdown, accident) brakes at b to a standstill and stays there."""
        self.traffic.halted[self.traffic.index_of(vehicle_id)] = halted

    def step(self, dt: float) -> StepEvents:
        """Advance every vehicle by ``dt`` seconds, then let vehicles leave and enter."""
        if not (isinstance(dt, int | float) and math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
        exited = self._drive(float(dt)) if len(self.traffic) else _EMPTY_IDS
        entered, blocked = self._enter(float(dt))
        self._update_geometry()
        return StepEvents(entered=entered, exited=exited, blocked_entries=blocked)

    def gaps(self) -> np.ndarray:
        """Bumper-to-bumper gap of each vehicle to its leader in the same lane (inf for the front)."""
        traffic = self.traffic
        gaps = np.full(len(traffic), np.inf)
        order = np.lexsort((traffic.ids, traffic.s, traffic.lane))
        same = traffic.lane[order[1:]] == traffic.lane[order[:-1]]
        followers, leaders = order[:-1][same], order[1:][same]
        gaps[followers] = traffic.s[leaders] - traffic.s[followers] - self.idm.vehicle_length_m
        return gaps

    # ---- one step ---------------------------------------------------------------------

    def _leaders(self) -> tuple[np.ndarray, np.ndarray]:
        """Leader row of every vehicle (-1 = free road) and the offset that puts the leader in its frame.

        The gap to the leader is ``s[leader] + offset - s - length``: offset 0 on the same
        lane, this lane's length for a vehicle on the next lane, and the difference of
        lane lengths for another approach's ghost.
        """
        traffic = self.traffic
        count = len(traffic)
        leader = np.full(count, -1, dtype=np.int64)
        offset = np.zeros(count)
        order = np.lexsort((traffic.ids, traffic.s, traffic.lane))
        same = traffic.lane[order[1:]] == traffic.lane[order[:-1]]
        leader[order[:-1][same]] = order[1:][same]
        fronts = np.flatnonzero((leader < 0) & (traffic.next_lane >= 0))
        if fronts.size == 0:
            return leader, offset
        own_length = self.lane_length[traffic.lane[fronts]]
        lanes = np.concatenate((traffic.lane, traffic.next_lane[fronts]))
        positions = np.concatenate((traffic.s, traffic.s[fronts] - own_length))
        owners = np.concatenate((np.arange(count), fronts))
        ghost_length = np.concatenate((np.zeros(count), own_length))  # 0 marks a real entry
        merged = np.lexsort((traffic.ids[owners], positions, lanes))
        rank = np.empty_like(merged)
        rank[merged] = np.arange(merged.size)
        after = rank[count:] + 1  # the entry just ahead of each ghost
        valid = after < merged.size
        ahead = merged[np.minimum(after, merged.size - 1)]
        valid &= lanes[ahead] == lanes[count:]
        leader[fronts[valid]] = owners[ahead[valid]]
        offset[fronts[valid]] = own_length[valid] - ghost_length[ahead[valid]]
        return leader, offset

    def _drive(self, dt: float) -> np.ndarray:
        traffic, idm = self.traffic, self.idm
        length = idm.vehicle_length_m
        leader, offset = self._leaders()
        has_leader = leader >= 0
        safe_leader = np.where(has_leader, leader, 0)
        gap = np.where(has_leader, traffic.s[safe_leader] + offset - traffic.s - length, np.inf)
        approach = np.where(has_leader, traffic.speed - traffic.speed[safe_leader], 0.0)
        acceleration = idm.acceleration(traffic.speed, gap, approach)
        halted_braking = np.where(traffic.speed > 0, -idm.comfortable_deceleration_mps2, 0.0)
        acceleration = np.where(traffic.halted, halted_braking, acceleration)
        speed, driven = ballistic_update(traffic.speed, acceleration, dt)
        lane_end = self.lane_length[traffic.lane]
        s = traffic.s + driven
        same_lane = has_leader & (traffic.lane[safe_leader] == traffic.lane)
        s = np.where(same_lane, np.minimum(s, lane_end), s)  # only a lane's front may cross its end
        self._hold_back(s, speed, traffic.s, leader, offset)

        crossing = s > lane_end
        leaving = crossing & (traffic.next_lane < 0)
        turning = np.flatnonzero(crossing & (traffic.next_lane >= 0))
        s[turning] -= lane_end[turning]
        traffic.lane[turning] = traffic.next_lane[turning]
        traffic.next_lane[turning] = self._choose_next(traffic.lane[turning])
        traffic.s, traffic.speed = s, speed
        exited = traffic.ids[leaving]
        if exited.size:
            traffic._keep(~leaving)
        return exited

    def _hold_back(
        self, s: np.ndarray, speed: np.ndarray, old_s: np.ndarray, leader: np.ndarray, offset: np.ndarray
    ) -> None:
        """Keep every gap to the leader >= 0 (in place), never moving anyone backwards.

        Jacobi passes over all followers at once; a pass changes anything only where a
        leader was itself held back, so this ends after the longest such chain (usually
        zero or one pass). Leader relations form chains (no vehicle is its own leader's
        leader), so len(s) passes always suffice.
        """
        followers = np.flatnonzero(leader >= 0)
        leaders = leader[followers]
        reach = offset[followers] - self.idm.vehicle_length_m - _CLEARANCE_M
        for _ in range(len(s) + 1):
            bound = s[leaders] + reach
            target = np.maximum(bound, old_s[followers])
            violating = s[followers] > target
            if not violating.any():
                return
            rows = followers[violating]
            s[rows] = target[violating]
            stuck = bound[violating] < old_s[rows]  # an approach that already overlapped: wait
            speed[rows] = np.where(stuck, 0.0, np.minimum(speed[rows], speed[leaders[violating]]))

    def _choose_next(self, lanes: np.ndarray) -> np.ndarray:
        if lanes.size == 0 or not self._may_turn:
            return np.full(lanes.size, -1, dtype=np.int64)
        turns = self.rng.choice(self.successors.shape[1], size=lanes.size, p=self.turn_probabilities)
        return self.successors[lanes, turns]

    def _enter(self, dt: float) -> tuple[np.ndarray, int]:
        """Poisson arrivals; each picks an entry lane at random and enters only if it is safe."""
        arrivals = int(self.rng.poisson(self.entry_rate_per_s * dt)) if self.entry_rate_per_s else 0
        if arrivals == 0:
            return _EMPTY_IDS, 0
        lanes: list[int] = []
        speeds: list[float] = []
        for lane in self.entry_lanes[self.rng.integers(self.entry_lanes.size, size=arrivals)].tolist():
            speed = None if lane in lanes else self._safe_entry_speed(lane)  # one entrant per lane and step
            if speed is not None:
                lanes.append(lane)
                speeds.append(speed)
        if not lanes:
            return _EMPTY_IDS, arrivals
        entered = self._spawn(np.array(lanes), np.zeros(len(lanes)), np.array(speeds), False)
        return entered, arrivals - len(lanes)

    def _safe_entry_speed(self, lane: int) -> float | None:
        """Enter at the speed of the vehicle ahead (v0 on an empty lane) if the gap is safe: s >= s0 + vT.

        Vehicles about to turn into the lane must also keep s0 + vT to the newcomer.
        """
        traffic, idm = self.traffic, self.idm
        length = idm.vehicle_length_m
        speed = idm.desired_speed_mps
        on_lane = np.flatnonzero(traffic.lane == lane)
        if on_lane.size:
            rear = on_lane[np.argmin(traffic.s[on_lane])]
            speed = min(speed, float(traffic.speed[rear]))
            if traffic.s[rear] - length < idm.minimum_gap_m + speed * idm.time_headway_s:
                return None
        approaching = np.flatnonzero(traffic.next_lane == lane)
        if approaching.size:
            distance = self.lane_length[traffic.lane[approaching]] - traffic.s[approaching]
            needed = idm.minimum_gap_m + traffic.speed[approaching] * idm.time_headway_s
            if np.any(distance - length < needed):
                return None
        return speed

    def _spawn(
        self, lanes: np.ndarray, positions: np.ndarray, speeds: np.ndarray, halted: bool
    ) -> np.ndarray:
        count = lanes.size
        ids = np.arange(self._next_id, self._next_id + count, dtype=np.int64)
        self._next_id += count
        lanes = lanes.astype(np.int64)
        self.traffic._append(
            {
                "ids": ids,
                "lane": lanes,
                "s": positions.astype(float),
                "speed": speeds.astype(float),
                "next_lane": self._choose_next(lanes),
                "halted": np.full(count, halted),
                "x": np.zeros(count),
                "y": np.zeros(count),
                "heading": np.zeros(count),
            }
        )
        return ids

    def _place_initial(self, count: int) -> None:
        """Spread ``count`` vehicles over all lanes with gaps >= s0 and speeds that suit the gaps."""
        if count == 0:
            return
        idm = self.idm
        length, min_gap = idm.vehicle_length_m, idm.minimum_gap_m
        lane_count = self.lane_length.size
        per_lane = np.full(lane_count, count // lane_count)
        per_lane[self.rng.choice(lane_count, size=count % lane_count, replace=False)] += 1
        capacity = np.floor(self.lane_length / (length + min_gap)).astype(int)
        if np.any(per_lane > capacity):
            raise ValueError(
                f"{count} vehicles do not fit on the road: at most {int(capacity.sum())} with gaps of "
                f"{min_gap:g} m (start fewer vehicles or make the road longer)"
            )
        lanes, positions, speeds = [], [], []
        for lane in np.flatnonzero(per_lane):
            k = int(per_lane[lane])
            spacing = self.lane_length[lane] / k
            jitter = self.rng.uniform(0.0, spacing - length - min_gap, size=k)
            s = length + np.arange(k) * spacing + jitter
            gap = np.append(s[1:] - s[:-1] - length, np.inf)
            lanes.append(np.full(k, lane))
            positions.append(s)
            speeds.append(np.clip((gap - min_gap) / idm.time_headway_s, 0.0, idm.desired_speed_mps))
        self._spawn(np.concatenate(lanes), np.concatenate(positions), np.concatenate(speeds), False)
        self._update_geometry()

    def _update_geometry(self) -> None:
        """x, y, heading from lane and s: lane start + s along the lane direction."""
        traffic = self.traffic
        direction = self.lane_direction[traffic.lane]
        start = self.lane_start[traffic.lane]
        traffic.x = start[:, 0] + direction[:, 0] * traffic.s
        traffic.y = start[:, 1] + direction[:, 1] * traffic.s
        traffic.heading = self.lane_heading[traffic.lane]


class Highway(_LaneNetwork):
    """A straight road along +x with ``lanes`` lanes (and as many along -x if ``both_directions``).

    Lane i (0-based, +x direction) has its centre line at y = (i + 0.5) * 3.5 m; the
    opposite carriageway sits above it. Vehicles enter at the start of a random lane
    and leave at its end. No lane changes.
    """

    def __init__(
        self,
        length_m: float = 2000.0,
        lanes: int = 3,
        *,
        idm: IdmParameters = IdmParameters(),
        entry_rate_per_s: float,
        rng: np.random.Generator,
        initial_vehicles: int,
        both_directions: bool = False,
    ) -> None:
        if not (isinstance(length_m, int | float) and math.isfinite(length_m) and length_m > 0):
            raise ValueError(f"highway length_m must be a positive number, got {length_m!r}")
        if isinstance(lanes, bool) or not isinstance(lanes, int | np.integer) or lanes < 1:
            raise ValueError(f"highway lanes must be an integer >= 1, got {lanes!r}")
        if length_m < idm.vehicle_length_m + idm.minimum_gap_m:
            raise ValueError(f"highway length_m={length_m} is shorter than one vehicle plus its gap")
        self.length_m = float(length_m)
        self.lanes = int(lanes)
        self.both_directions = bool(both_directions)
        width = self.lane_width_m
        centre = (np.arange(self.lanes) + 0.5) * width
        starts = [np.column_stack((np.zeros(self.lanes), centre))]
        directions = [np.tile([1.0, 0.0], (self.lanes, 1))]
        if self.both_directions:
            starts.append(np.column_stack((np.full(self.lanes, self.length_m), centre + self.lanes * width)))
            directions.append(np.tile([-1.0, 0.0], (self.lanes, 1)))
        lane_count = self.lanes * (2 if self.both_directions else 1)
        super().__init__(
            idm=idm,
            entry_rate_per_s=entry_rate_per_s,
            rng=rng,
            initial_vehicles=initial_vehicles,
            lane_start=np.concatenate(starts),
            lane_direction=np.concatenate(directions),
            lane_length=np.full(lane_count, self.length_m),
            successors=np.full((lane_count, 1), -1, dtype=np.int64),
            turn_probabilities=np.ones(1),
            entry_lanes=np.arange(lane_count),
        )

    def bounds(self) -> tuple[float, float, float, float]:
        """(min_x, min_y, max_x, max_y) of the road surface in metres."""
        carriageways = 2 if self.both_directions else 1
        return 0.0, 0.0, self.length_m, carriageways * self.lanes * self.lane_width_m


_GRID_DIRECTIONS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])  # east, north, west, south: +1 = left turn


class ManhattanGrid(_LaneNetwork):
    """``blocks`` x ``blocks`` city blocks: (blocks + 1)^2 intersections ``block_m`` apart, two-way streets.

    Every street segment between adjacent intersections is one lane per direction,
    driven on the right (centre line 1.75 m right of the street axis). At an
    intersection a vehicle goes straight, left or right with ``turn_probabilities``
    (decided when it enters the segment); a turn that would leave the grid makes it
    exit. Vehicles enter at the boundary on the segments pointing inward. No traffic
    lights (see the module docstring).
    """

    def __init__(
        self,
        blocks: int = 4,
        block_m: float = 200.0,
        *,
        idm: IdmParameters = IdmParameters(),
        entry_rate_per_s: float,
        rng: np.random.Generator,
        initial_vehicles: int,
        turn_probabilities: tuple[float, float, float] = (0.5, 0.25, 0.25),
    ) -> None:
        if isinstance(blocks, bool) or not isinstance(blocks, int | np.integer) or blocks < 1:
            raise ValueError(f"grid blocks must be an integer >= 1, got {blocks!r}")
        if not (isinstance(block_m, int | float) and math.isfinite(block_m)):
            raise ValueError(f"grid block_m must be a number, got {block_m!r}")
        if block_m < idm.vehicle_length_m + idm.minimum_gap_m:
            raise ValueError(f"grid block_m={block_m} is shorter than one vehicle plus its gap")
        probabilities = np.asarray(turn_probabilities, dtype=float)
        if (
            probabilities.shape != (3,)
            or np.any(probabilities < 0)
            or not math.isclose(probabilities.sum(), 1.0, abs_tol=1e-9)
        ):
            raise ValueError(
                f"turn_probabilities must be three numbers >= 0 (straight, left, right) summing to 1, "
                f"got {turn_probabilities!r}"
            )
        self.blocks = int(blocks)
        self.block_m = float(block_m)
        nodes = self.blocks + 1
        segment_of: dict[tuple[int, int, int], int] = {}
        starts, directions = [], []
        for i in range(nodes):
            for j in range(nodes):
                for d, (dx, dy) in enumerate(_GRID_DIRECTIONS):
                    if 0 <= i + dx < nodes and 0 <= j + dy < nodes:
                        segment_of[(i, j, d)] = len(starts)
                        right = np.array([dy, -dx]) * self.lane_width_m / 2
                        starts.append(np.array([i, j]) * self.block_m + right)
                        directions.append([dx, dy])
        successors = np.full((len(starts), 3), -1, dtype=np.int64)
        entry_lanes = []
        for (i, j, d), segment in segment_of.items():
            dx, dy = _GRID_DIRECTIONS[d]
            end = (i + dx, j + dy)
            for column, turn in enumerate((0, 1, 3)):  # straight, left, right
                successors[segment, column] = segment_of.get((*end, (d + turn) % 4), -1)
            reverse_start = (i - dx, j - dy)
            if not (0 <= reverse_start[0] < nodes and 0 <= reverse_start[1] < nodes):
                entry_lanes.append(segment)  # starts on the boundary, points inward
        super().__init__(
            idm=idm,
            entry_rate_per_s=entry_rate_per_s,
            rng=rng,
            initial_vehicles=initial_vehicles,
            lane_start=np.array(starts, dtype=float),
            lane_direction=np.array(directions, dtype=float),
            lane_length=np.full(len(starts), self.block_m),
            successors=successors,
            turn_probabilities=probabilities,
            entry_lanes=np.array(sorted(entry_lanes), dtype=np.int64),
        )

    def bounds(self) -> tuple[float, float, float, float]:
        """(min_x, min_y, max_x, max_y) of the road surface in metres."""
        half = self.lane_width_m / 2
        extent = self.blocks * self.block_m
        return -half, -half, extent + half, extent + half


def build_road(kind: str, **params: object) -> Highway | ManhattanGrid:
    """The road for a scenario: ``"highway"`` or ``"urban-grid"``; bad input is a one-line ValueError."""
    roads: dict[str, type[Highway] | type[ManhattanGrid]] = {"highway": Highway, "urban-grid": ManhattanGrid}
    if kind not in roads:
        raise ValueError(f"unknown road kind {kind!r}: choose one of {', '.join(roads)}")
    road = roads[kind]
    try:
        inspect.signature(road).bind(**params)
    except TypeError as error:
        accepted = ", ".join(inspect.signature(road).parameters)
        raise ValueError(f"{kind}: {error} (parameters: {accepted})") from None
    return road(**params)  # type: ignore[arg-type]
