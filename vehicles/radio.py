"""802.11p / ITS-G5 radio: air time, link budget with fading, a spatial grid, and the shared channel.

Pure models on NumPy arrays; the SimPy world drives them. Times are seconds of
simulated time, distances metres, powers dBm.

Link budget: received power = tx power - path loss (+ Nakagami-m fading, one draw per
frame and receiver: block fading). A frame is *decodable* at a receiver when that
power reaches the sensitivity. Range therefore falls out of the link budget; see
:func:`nominal_range_m`.

Channel (see :class:`Channel`): broadcast CSMA/CA without acknowledgements or
retries. A decodable frame is lost when another frame decodable at the same
receiver overlaps it in time (no capture by default), or when the receiver itself
transmits during it (half duplex). Propagation delay (1 us per 300 m) is ignored.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import scipy.special

from .fading import FadingGains, gains_db

SPEED_OF_LIGHT_MPS = 299_792_458.0
PREAMBLE_S = 32e-6  # 10 MHz OFDM: 4 x the 20 MHz timings
SIGNAL_FIELD_S = 8e-6
OFDM_SYMBOL_S = 8e-6
SERVICE_BITS = 16
TAIL_BITS = 6
MAC_HEADER_BYTES = 24
LLC_SNAP_BYTES = 8
FCS_BYTES = 4
MAX_MSDU_BYTES = 2304
CCA_TIME_S = 8e-6  # aCCATime at 10 MHz: a frame is sensed this long after it starts (802.11-2012 Table 18-17)
PAIRWISE_UP_TO = 4  # resolve this few frames pair by pair in Python; more in one vectorized sweep
HEAR_ONE_BY_ONE_UP_TO = 16  # decodable receivers: 3 NumPy calls a frame, or about 20 for a bulk
PRUNE_SLACK = 16  # finished frames kept beyond twice the unfinished ones before a prune: prunes in bulk
OFDM_RATES_10MHZ_BPS = (3e6, 4.5e6, 6e6, 9e6, 12e6, 18e6, 24e6, 27e6)

# First-order radio energy model (Heinzelman, Chandrakasan and Balakrishnan 2000), the spec's constants.
E_ELEC_J_PER_BIT = 50e-9
EPS_FREE_SPACE_J_PER_BIT_M2 = 10e-12
EPS_MULTIPATH_J_PER_BIT_M4 = 0.0013e-12
ENERGY_CROSSOVER_M = 87.7  # sqrt(eps_fs / eps_mp)

PATH_LOSS_MODELS = ("log-distance", "two-ray")


@dataclass(frozen=True)
class RadioParameters:
    """One radio (all nodes share it). Defaults: ITS-G5 control channel (10 MHz), EDCA best-effort class.

    ``path_loss_exponent`` 2.2 with free-space loss at 1 m gives a 541 m nominal range
    at 23 dBm / -85 dBm, inside the spec's 300-1000 m (line-of-sight V2V measurements,
    e.g. Karedal et al., IEEE TVT 2011, find exponents near or below 2). An exponent
    of 2.75 gives 154 m: an obstructed, urban figure. Two-ray ground with 1.5 m
    antennas crosses over at 556 m and reaches 751 m.
    ``aifs_slots`` 6 and CW 15..1023 are AC_BE (ETSI EN 302 663); broadcast only uses
    cw_min, ``cw_max`` is there for a unicast retry model. Carrier sense uses
    the mean power (no fading) against ``carrier_sense_dbm``. ``capture_threshold_db``
    None: any overlap loses both frames; a number: a frame survives overlaps when its
    power over noise plus the sum of decodable interferers reaches it.
    """

    tx_power_dbm: float = 23.0
    sensitivity_dbm: float = -85.0
    carrier_sense_dbm: float = -85.0
    noise_floor_dbm: float = -99.0  # -174 dBm/Hz + 70 dB (10 MHz) + 5 dB noise figure
    frequency_hz: float = 5.9e9
    data_rate_bps: float = 6e6
    path_loss: str = "log-distance"
    path_loss_exponent: float = 2.2
    reference_distance_m: float = 1.0
    antenna_height_m: float = 1.5
    nakagami: bool = True
    nakagami_m_near: float = 1.5
    nakagami_m_far: float = 0.75
    nakagami_switch_m: float = 80.0
    slot_s: float = 13e-6
    sifs_s: float = 32e-6
    aifs_slots: int = 6
    cw_min: int = 15
    cw_max: int = 1023
    capture_threshold_db: float | None = None

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            optional = spec.name == "capture_threshold_db" and value is None
            if spec.name in ("path_loss", "nakagami") or optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"radio parameter {spec.name} must be a finite number, got {value!r}")
        positive = (
            "frequency_hz",
            "data_rate_bps",
            "path_loss_exponent",
            "reference_distance_m",
            "antenna_height_m",
            "nakagami_m_near",
            "nakagami_m_far",
            "slot_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"radio parameter {name} must be > 0, got {getattr(self, name)!r}")
        for name in ("nakagami_switch_m", "sifs_s", "aifs_slots", "cw_min"):
            if getattr(self, name) < 0:
                raise ValueError(f"radio parameter {name} must be >= 0, got {getattr(self, name)!r}")
        if self.path_loss not in PATH_LOSS_MODELS:
            raise ValueError(
                f"path_loss must be one of {', '.join(PATH_LOSS_MODELS)}, got {self.path_loss!r}"
            )
        if self.data_rate_bps not in OFDM_RATES_10MHZ_BPS:
            rates = ", ".join(f"{rate / 1e6:g}" for rate in OFDM_RATES_10MHZ_BPS)
            raise ValueError(
                f"data_rate_bps must be an 802.11p rate ({rates} Mb/s), got {self.data_rate_bps!r}"
            )
        if not isinstance(self.nakagami, bool):
            raise ValueError(f"nakagami must be True or False, got {self.nakagami!r}")
        for name in ("aifs_slots", "cw_min", "cw_max"):
            if int(getattr(self, name)) != getattr(self, name):
                raise ValueError(f"radio parameter {name} must be an integer, got {getattr(self, name)!r}")
        if self.cw_max < self.cw_min:
            raise ValueError(f"cw_max ({self.cw_max}) must be >= cw_min ({self.cw_min})")

    @property
    def wavelength_m(self) -> float:
        return SPEED_OF_LIGHT_MPS / self.frequency_hz

    @property
    def aifs_s(self) -> float:
        return self.sifs_s + self.aifs_slots * self.slot_s


# ---- PHY ----------------------------------------------------------------------------------


def airtime_s(payload_bytes: int, params: RadioParameters = RadioParameters()) -> float:
    """Frame duration: preamble + SIGNAL + OFDM symbols for SERVICE, MAC header, LLC, payload, FCS, tail."""
    if isinstance(payload_bytes, bool) or not isinstance(payload_bytes, int | np.integer):
        raise ValueError(f"payload_bytes must be an integer, got {payload_bytes!r}")
    if not 0 <= payload_bytes <= MAX_MSDU_BYTES:
        raise ValueError(
            f"payload_bytes must be 0..{MAX_MSDU_BYTES} (fragment larger messages), got {payload_bytes}"
        )
    bits_per_symbol = round(params.data_rate_bps * OFDM_SYMBOL_S)
    frame_bytes = MAC_HEADER_BYTES + LLC_SNAP_BYTES + int(payload_bytes) + FCS_BYTES
    symbols = math.ceil((SERVICE_BITS + 8 * frame_bytes + TAIL_BITS) / bits_per_symbol)
    return PREAMBLE_S + SIGNAL_FIELD_S + symbols * OFDM_SYMBOL_S


def path_loss_db(distance_m: np.ndarray | float, params: RadioParameters = RadioParameters()) -> np.ndarray:
    """Mean path loss; distances below the reference distance count as the reference distance.

    log-distance: free-space loss at d0, then 10 n log10(d / d0). two-ray ground:
    free space (Friis) up to the crossover 4 pi ht hr / lambda, then
    40 log10(d) - 20 log10(ht hr) (continuous at the crossover).
    """
    distance = np.maximum(np.asarray(distance_m, dtype=float), params.reference_distance_m)
    if params.path_loss == "log-distance":
        d0 = params.reference_distance_m
        reference = 20.0 * math.log10(4.0 * math.pi * d0 / params.wavelength_m)
        return reference + 10.0 * params.path_loss_exponent * np.log10(distance / d0)
    free_space = 20.0 * np.log10(4.0 * math.pi * distance / params.wavelength_m)
    ground = 40.0 * np.log10(distance) - 20.0 * math.log10(params.antenna_height_m**2)
    return np.where(distance <= two_ray_crossover_m(params), free_space, ground)


def two_ray_crossover_m(params: RadioParameters = RadioParameters()) -> float:
    return 4.0 * math.pi * params.antenna_height_m**2 / params.wavelength_m


def mean_rx_power_dbm(
    distance_m: np.ndarray | float, params: RadioParameters = RadioParameters()
) -> np.ndarray:
    return params.tx_power_dbm - path_loss_db(distance_m, params)


def nakagami_m(distance_m: np.ndarray, params: RadioParameters) -> np.ndarray:
    return np.where(
        np.asarray(distance_m) < params.nakagami_switch_m, params.nakagami_m_near, params.nakagami_m_far
    )


def rx_power_dbm(
    distance_m: np.ndarray | float, params: RadioParameters, rng: np.random.Generator
) -> np.ndarray:
    """One received-power sample per distance: mean power times a unit-mean Gamma(m, 1/m) power gain."""
    mean = mean_rx_power_dbm(distance_m, params)
    if not params.nakagami:
        return mean
    distance = np.broadcast_to(np.asarray(distance_m, dtype=float), mean.shape)
    near = distance < params.nakagami_switch_m
    gain = np.empty(mean.shape)  # near elements' gains drawn first, then the far ones'
    gain[near] = gains_db(rng, params.nakagami_m_near, int(np.count_nonzero(near)))
    gain[~near] = gains_db(rng, params.nakagami_m_far, int(np.count_nonzero(~near)))
    gain += mean
    return gain if gain.ndim else gain[()]  # a scalar distance gives a scalar


class BlockDraws:
    """The channel's random draws (backoff slots, fading gains) taken from ``rng`` in blocks.

    Why: a frame needs a backoff and a fading gain per candidate receiver, and every NumPy
    draw costs microseconds of call overhead whatever its size (a Gamma draw with m < 1,
    the log10 and its error state: about 20 us for 60 receivers). Drawn ``block`` at a
    time, a frame's share is a slice. Same distributions as :func:`rx_power_dbm` and
    uniform slots; only the order in which ``rng``'s numbers are used differs. With
    ``fading``, the gains come from its streams instead (blocks drawn ahead, perhaps on a
    worker: see vehicles.fading) and ``rng`` gives only the slots.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        params: RadioParameters,
        block: int = 1 << 14,
        fading: FadingGains | None = None,
    ) -> None:
        self.rng = rng
        self._params = params
        self._block = block
        self._fading = fading
        self._slots: list[int] = []
        self._gains: dict[float, list[Any]] = {}  # Nakagami m -> [gains in dB, next unused]

    def backoff_slots(self) -> int:
        """Uniform 0 .. cw_min."""
        if not self._slots:
            self._slots = self.rng.integers(0, self._params.cw_min + 1, self._block).tolist()
        return self._slots.pop()

    def faded_dbm(self, mean_dbm: np.ndarray, distance_m: np.ndarray) -> np.ndarray:
        """``mean_dbm`` plus a Nakagami gain in dB per element (m by distance, as ``nakagami_m``).

        Every element takes a far-field gain, then the near ones (a few of a hundred
        candidates) take near-field gains instead; each variate is used at most once.
        """
        size = mean_dbm.size
        gain = self._take(self._params.nakagami_m_far, size).copy()
        near = distance_m < self._params.nakagami_switch_m
        near_count = int(np.count_nonzero(near))
        if near_count:
            gain[near] = self._take(self._params.nakagami_m_near, near_count)
        gain += mean_dbm
        return gain

    def _take(self, m: float, size: int) -> np.ndarray:
        """The next ``size`` gains in dB of Nakagami shape ``m`` (a fresh block when short)."""
        buffer = self._gains.get(m)
        if buffer is None or buffer[1] + size > buffer[0].size:
            parts = [buffer[0][buffer[1] :]] if buffer is not None else []
            if self._fading is None:
                parts.append(gains_db(self.rng, m, max(self._block, size)))
            else:  # whole blocks of the stream, as many as it takes
                have = sum(part.size for part in parts)
                while have < max(size, 1):
                    parts.append(self._fading.next_block(m))
                    have += parts[-1].size
            buffer = self._gains[m] = [np.concatenate(parts), 0]
        at = buffer[1]
        buffer[1] = at + size
        return buffer[0][at : at + size]


def received(distance_m: np.ndarray | float, params: RadioParameters, rng: np.random.Generator) -> np.ndarray:
    """Whether each frame is decodable (no interference): a faded power sample >= sensitivity."""
    return rx_power_dbm(distance_m, params, rng) >= params.sensitivity_dbm


def reception_probability(
    distance_m: np.ndarray | float, params: RadioParameters = RadioParameters()
) -> np.ndarray:
    """P(decodable) without interference: the Gamma tail Q(m, m threshold / mean); a step without fading."""
    mean = mean_rx_power_dbm(distance_m, params)
    if not params.nakagami:
        return (mean >= params.sensitivity_dbm).astype(float)
    m = nakagami_m(np.broadcast_to(np.asarray(distance_m, dtype=float), mean.shape), params)
    needed_gain = 10.0 ** ((params.sensitivity_dbm - mean) / 10.0)
    return scipy.special.gammaincc(m, m * needed_gain)


def nominal_range_m(params: RadioParameters = RadioParameters(), margin_db: float = 0.0) -> float:
    """Distance where the mean received power falls to sensitivity - ``margin_db`` (no fading).

    With ``margin_db`` = 0 this is the radio's nominal range. As a spatial-grid query
    radius, a margin of M dB misses only receivers that a fade of more than +M dB
    would have reached; ``reception_probability(radius)`` says how often that is.
    """
    budget = params.tx_power_dbm - params.sensitivity_dbm + margin_db
    d0 = params.reference_distance_m
    if budget < float(path_loss_db(d0, params)):
        return 0.0
    if params.path_loss == "log-distance":
        reference = 20.0 * math.log10(4.0 * math.pi * d0 / params.wavelength_m)
        return d0 * 10.0 ** ((budget - reference) / (10.0 * params.path_loss_exponent))
    friis = params.wavelength_m / (4.0 * math.pi) * 10.0 ** (budget / 20.0)
    if friis <= two_ray_crossover_m(params):
        return friis
    return params.antenna_height_m * 10.0 ** (budget / 40.0)


# ---- energy -------------------------------------------------------------------------------


def tx_energy_j(bits: int | np.ndarray, distance_m: float | np.ndarray) -> np.ndarray | float:
    """E_tx(k, d) = E_elec k + eps_fs k d^2 below d0 = 87.7 m, E_elec k + eps_mp k d^4 from d0 on."""
    if type(bits) is int and type(distance_m) is float and bits >= 0 and distance_m >= 0:
        # one frame, one distance (unicast): plain floats, no arrays (about 20x faster)
        if distance_m < ENERGY_CROSSOVER_M:
            return bits * (E_ELEC_J_PER_BIT + EPS_FREE_SPACE_J_PER_BIT_M2 * distance_m**2)
        return bits * (E_ELEC_J_PER_BIT + EPS_MULTIPATH_J_PER_BIT_M4 * distance_m**4)
    bits = np.asarray(bits, dtype=float)
    distance = np.asarray(distance_m, dtype=float)
    if np.any(bits < 0) or np.any(distance < 0):
        raise ValueError("bits and distance_m must be >= 0")
    amplifier = np.where(
        distance < ENERGY_CROSSOVER_M,
        EPS_FREE_SPACE_J_PER_BIT_M2 * distance**2,
        EPS_MULTIPATH_J_PER_BIT_M4 * distance**4,
    )
    energy = bits * (E_ELEC_J_PER_BIT + amplifier)
    return float(energy) if energy.ndim == 0 else energy


def rx_energy_j(bits: int | np.ndarray) -> np.ndarray | float:
    """E_rx(k) = E_elec k."""
    bits = np.asarray(bits, dtype=float)
    if np.any(bits < 0):
        raise ValueError("bits must be >= 0")
    energy = bits * E_ELEC_J_PER_BIT
    return float(energy) if energy.ndim == 0 else energy


def radio_energy_j(bits: int, distance_m: float) -> tuple[float, float]:
    """(transmit, receive) energy in joules for ``bits`` sent over ``distance_m``."""
    return float(tx_energy_j(bits, distance_m)), float(rx_energy_j(bits))


# ---- spatial grid -------------------------------------------------------------------------


class SpatialGrid:
    """Uniform grid hash of (N, 2) positions, rebuilt per mobility step: one argsort, O(N log N).

    Points are sorted by cell key ``column * rows + row``, so the cells of one column
    between two rows are one contiguous slice of the sorted points. A query within
    ``radius`` reads 2k + 1 such slices, k = ceil(radius / cell), then filters by exact
    distance; cost grows with the points nearby, not with N. Choose ``cell_m`` >= the
    usual query radius (k = 1). Indices refer to rows of ``positions``.
    """

    def __init__(self, positions: np.ndarray, cell_m: float) -> None:
        points = np.asarray(positions, dtype=float)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"positions must be an (N, 2) array, got shape {points.shape}")
        if not np.all(np.isfinite(points)):
            raise ValueError("positions must be finite")
        if not (isinstance(cell_m, int | float) and math.isfinite(cell_m) and cell_m > 0):
            raise ValueError(f"cell_m must be > 0, got {cell_m!r}")
        self.positions = points
        # A hair larger than asked, so a radius equal to cell_m never needs a second ring of cells.
        self.cell_m = float(cell_m) * (1.0 + 1e-8)
        self._origin = points.min(axis=0) if points.size else np.zeros(2)
        cells = np.floor((points - self._origin) / self.cell_m).astype(np.int64)
        self._columns = int(cells[:, 0].max()) + 1 if points.size else 0
        self._rows = int(cells[:, 1].max()) + 1 if points.size else 0
        keys = cells[:, 0] * self._rows + cells[:, 1]
        self._order = np.argsort(keys, kind="stable")
        self._sorted_keys = keys[self._order]
        self._sorted_cells = cells[self._order]

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def _reach(self, radius: float) -> int:
        if not (isinstance(radius, int | float) and math.isfinite(radius) and radius >= 0):
            raise ValueError(f"radius must be a number >= 0, got {radius!r}")
        return math.ceil(radius / self.cell_m + 1e-9)

    def _column_slices(
        self, columns: np.ndarray, low_rows: np.ndarray, high_rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sorted-order [start, end) of the points in cells (column, low_row..high_row), rows clipped."""
        low = np.maximum(low_rows, 0)
        high = np.minimum(high_rows, self._rows - 1)
        empty = (columns < 0) | (columns >= self._columns) | (low > high)
        starts = np.searchsorted(self._sorted_keys, columns * self._rows + low, side="left")
        ends = np.searchsorted(self._sorted_keys, columns * self._rows + high, side="right")
        return starts, np.where(empty, starts, ends)

    def neighbours(self, point: np.ndarray, radius: float) -> np.ndarray:
        """Indices of all points within ``radius`` of ``point`` (inclusive), ascending."""
        reach = self._reach(radius)
        px, py = (float(value) for value in np.asarray(point, dtype=float).reshape(2))
        if len(self) == 0:
            return np.zeros(0, dtype=np.int64)
        column = math.floor((px - self._origin[0]) / self.cell_m)
        row = math.floor((py - self._origin[1]) / self.cell_m)
        columns = np.arange(column - reach, column + reach + 1)
        starts, ends = self._column_slices(columns, row - reach, row + reach)
        candidates = self._order[_concatenated_ranges(starts, ends)]
        dx = self.positions[candidates, 0] - px
        dy = self.positions[candidates, 1] - py
        return np.sort(candidates[dx * dx + dy * dy <= radius * radius])

    def neighbours_of(self, index: int, radius: float) -> np.ndarray:
        """Indices of the other points within ``radius`` of point ``index``, ascending."""
        if not 0 <= index < len(self):
            raise ValueError(f"index {index} is out of range (0..{len(self) - 1})")
        found = self.neighbours(self.positions[index], radius)
        return found[found != index]

    def pairs_within(self, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """All pairs (i, j), i < j, at distance <= ``radius``: two index arrays sorted by (i, j)."""
        low, high = self._close_pairs(radius)
        order = np.lexsort((high, low))
        return low[order], high[order]

    def _close_pairs(self, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`pairs_within` in no particular order."""
        reach = self._reach(radius)
        if len(self) < 2:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        rank = np.arange(len(self))
        column, row = self._sorted_cells[:, 0], self._sorted_cells[:, 1]
        # Own column: later points of the own cell, then the cells above; columns to the right: all rows.
        _, own_ends = self._column_slices(column, row, row + reach)
        slices = [(rank + 1, np.maximum(own_ends, rank + 1))]
        slices += [
            self._column_slices(column + step, row - reach, row + reach) for step in range(1, reach + 1)
        ]
        firsts = [np.repeat(rank, ends - starts) for starts, ends in slices]
        seconds = [_concatenated_ranges(starts, ends) for starts, ends in slices]
        first = self._order[np.concatenate(firsts)]
        second = self._order[np.concatenate(seconds)]
        dx = self.positions[first, 0] - self.positions[second, 0]
        dy = self.positions[first, 1] - self.positions[second, 1]
        close = dx * dx + dy * dy <= radius * radius
        return np.minimum(first[close], second[close]), np.maximum(first[close], second[close])


def _concatenated_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]) without the Python loop."""
    lengths = np.maximum(ends - starts, 0)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    boundaries = np.cumsum(lengths) - lengths
    return np.repeat(starts - boundaries, lengths) + np.arange(total)


# ---- links within reach ------------------------------------------------------------------


class LinkTable:
    """Every ordered pair (i, j), i != j, of grid points within ``radius``, grouped by i (CSR).

    Positions stay fixed between mobility steps, so one :meth:`SpatialGrid.pairs_within`
    query per step replaces a grid query per frame. The links of point i are entries
    ``bounds[i]`` to ``bounds[i + 1]``: ``target`` holds the other points in ascending
    order (the order :meth:`SpatialGrid.neighbours` returns them in), ``distance_m`` the
    distances (``np.hypot`` of target minus source coordinates) and ``mean_rx_dbm`` the
    mean received power at the target of a frame sent by i. ``pair`` maps each link to
    its unordered pair, whose distance is ``pair_distance_m``: per-pair work (distance
    bins, say) can be done once for both directions.
    """

    def __init__(self, grid: SpatialGrid, radius: float, params: RadioParameters = RadioParameters()) -> None:
        low, high = grid._close_pairs(radius)
        points = grid.positions
        # Per unordered pair first (both directions share distance and mean power exactly:
        # hypot of negated differences is the same number), then spread to ordered links.
        distance = np.hypot(points[high, 0] - points[low, 0], points[high, 1] - points[low, 1])
        source, target, pair = _ordered_links(low, high, len(grid))
        self._fill(len(grid), source, target, pair, distance, params)

    def _fill(
        self,
        count: int,
        source: np.ndarray,
        target: np.ndarray,
        pair: np.ndarray,
        pair_distance_m: np.ndarray,
        params: RadioParameters,
    ) -> None:
        self.source, self.target, self.pair = source, target, pair
        self.pair_distance_m = pair_distance_m
        self.bounds = np.zeros(count + 1, dtype=np.int64)
        np.cumsum(np.bincount(source, minlength=count), out=self.bounds[1:])
        self.distance_m = pair_distance_m[pair]
        self.mean_rx_dbm = mean_rx_power_dbm(pair_distance_m, params)[pair]

    def __len__(self) -> int:
        return int(self.target.size)

    def of(self, index: int) -> slice:
        """The entries of point ``index``'s links."""
        return slice(int(self.bounds[index]), int(self.bounds[index + 1]))


def _ordered_links(
    low: np.ndarray, high: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both directions of every unordered pair (low, high), sorted by (source, target):
    source, target, and each link's pair (its index in ``low``)."""
    stride = max(count, 1)
    key = np.concatenate([low * stride + high, high * stride + low])
    order = np.argsort(key)  # the keys are distinct: every sort gives the (source, target) order
    key = key[order]
    source = key // stride
    return source, key - source * stride, order if low.size == 0 else order % low.size


class NeighbourList:
    """:class:`LinkTable` for points that move a little between calls: a Verlet list.

    Why: vehicles move a few metres a mobility step, and finding the pairs within reach
    (grid query, sort) costs more than measuring again the distances of pairs already
    known. At a rebuild it keeps every pair within ``radius + skin_m``, with their links
    in table order; :meth:`table` then filters them by the current distance, with the
    test ``SpatialGrid`` uses. No pair outside the list can be within ``radius`` while no
    point has moved more than ``skin_m / 2`` since the rebuild, so the table is exactly
    ``LinkTable(SpatialGrid(positions, ...), radius)``; it rebuilds once one has, or when
    the points are not the same ones (``ids``).
    """

    def __init__(self, radius: float, skin_m: float) -> None:
        if not (math.isfinite(radius) and radius >= 0 and math.isfinite(skin_m) and skin_m >= 0):
            raise ValueError(f"radius and skin_m must be >= 0, got {radius!r} and {skin_m!r}")
        self.radius = float(radius)
        self.skin_m = float(skin_m)
        self.rebuilds = 0
        self._ids: np.ndarray | None = None
        self._reference = np.zeros((0, 2))
        self._low = self._high = self._source = self._target = self._pair = np.zeros(0, dtype=np.int64)

    def table(self, positions: np.ndarray, ids: np.ndarray, params: RadioParameters) -> LinkTable:
        points = np.asarray(positions, dtype=float)
        if not self._still_valid(points, ids):
            self._rebuild(points, ids)
        low, high = self._low, self._high
        dx = points[high, 0] - points[low, 0]
        dy = points[high, 1] - points[low, 1]
        close = dx * dx + dy * dy <= self.radius * self.radius
        kept = np.cumsum(close) - 1  # a kept pair's index among the kept ones
        links = close[self._pair]
        table = LinkTable.__new__(LinkTable)  # the links are known: no grid query
        table._fill(
            len(points),
            self._source[links],
            self._target[links],
            kept[self._pair[links]],
            np.hypot(dx[close], dy[close]),
            params,
        )
        return table

    def _still_valid(self, points: np.ndarray, ids: np.ndarray) -> bool:
        if self._ids is None or ids.shape != self._ids.shape or not np.array_equal(ids, self._ids):
            return False
        moved = points - self._reference
        limit = self.skin_m / 2.0 * (1.0 - 1e-9)  # a hair inside, for rounding in the distances
        return bool(np.max(moved[:, 0] ** 2 + moved[:, 1] ** 2, initial=0.0) <= limit * limit)

    def _rebuild(self, points: np.ndarray, ids: np.ndarray) -> None:
        reach = self.radius + self.skin_m
        grid = SpatialGrid(points, reach if reach > 0 else 1.0)
        self._low, self._high = grid._close_pairs(reach)
        self._source, self._target, self._pair = _ordered_links(self._low, self._high, len(points))
        self._ids = np.array(ids, copy=True)
        self._reference = points.copy()
        self.rebuilds += 1


# ---- the shared channel -------------------------------------------------------------------


@dataclass(eq=False, slots=True)  # not frozen: a frozen dataclass costs 2.5 us more to build
class Transmission:
    """One frame on the air. ``receivers`` are node ids (``slots`` their node slots), with
    their distance and faded power.

    ``decodable`` is the link budget alone; :meth:`Channel.finish` removes the receivers
    that lost the frame to a collision or were transmitting themselves. The channel works
    out which receivers can decode (``index``, ``heard``) only when a collision check needs
    it, for many frames at once (see :meth:`Channel._hear`).
    """

    serial: int
    sender: int
    sender_slot: int
    sender_position: np.ndarray
    x: float
    y: float
    start: float
    end: float
    payload_bytes: int
    receivers: np.ndarray
    slots: np.ndarray
    distance_m: np.ndarray
    rx_power_dbm: np.ndarray
    sensitivity_dbm: float
    index: np.ndarray | None = None  # positions of the decodable receivers in ``receivers``
    heard: np.ndarray | None = None  # their node slots

    @property
    def decodable(self) -> np.ndarray:
        return self.rx_power_dbm >= self.sensitivity_dbm


@dataclass(eq=False, slots=True)
class Delivery:
    """Outcome of one frame: ids that decoded it, and ids that could have but lost it to a collision.

    ``delivered_index``: where the ``delivered`` ids sit in the frame's ``receivers`` (and so
    in its ``distance_m``).
    """

    receivers: np.ndarray  # the frame's candidate receivers
    delivered_index: np.ndarray
    _decodable_index: np.ndarray
    _lost: np.ndarray  # per decodable receiver: lost to a collision

    @property
    def delivered(self) -> np.ndarray:
        return self.receivers[self.delivered_index]

    @property
    def collided(self) -> np.ndarray:
        """Computed on demand: the simulator's hot path reads only ``delivered_index``."""
        return self.receivers[self._decodable_index[self._lost]]


class Channel:
    """The shared medium: ongoing and recently ended frames, pruned so work stays O(active).

    Intended SimPy use, per frame (``params.aifs_s`` + random slots, then defer while busy)::

        yield env.timeout(channel.backoff_s(rng))
        while (idle_at := channel.busy_until(position, env.now)) > env.now:
            yield env.timeout(idle_at - env.now + channel.backoff_s(rng))
        frame = channel.transmit(sender_id, position, env.now, payload, receiver_ids, receiver_positions, rng)
        yield env.timeout(frame.end - env.now)
        outcome = channel.finish(frame)   # outcome.delivered: ids to hand the message to

    or, when nothing waits for the outcome (broadcast: no acknowledgement), ``channel.end(frame)``
    at its end and, later, one :meth:`resolve` for every frame ended since the last one.

    Frames must be registered in non-decreasing start time (as SimPy time is), and
    :meth:`finish` or :meth:`end` called at or after the frame's end, so every frame
    overlapping it is known. Two senders whose backoffs end in the same slot (or less than
    ``CCA_TIME_S`` apart) do not sense each other and collide, as in 802.11. Hidden
    terminals arise by themselves: carrier sense is judged at the sender, collisions at
    each receiver.

    A frame F is lost at a receiver r exactly when another frame heard (decodable) or
    sent by r overlaps it in time. Resolved for many frames at once, not frame against
    frame: every tracked frame near the resolved ones in time contributes one entry per
    node that heard it or sent it; sorted by (node, start), an entry overlaps another of
    its node exactly when an earlier one there ends after it starts (a running maximum of
    ends) or the next one starts before it ends. Why batches: a frame's share of one sort
    costs a few microseconds, its own dozens of NumPy calls about fifty. With
    ``capture_threshold_db`` set, overlapping frames are compared pairwise to sum the
    interference.
    """

    def __init__(
        self, params: RadioParameters = RadioParameters(), fading: FadingGains | None = None
    ) -> None:
        """``fading``: where the Nakagami gains come from (default: the caller's ``rng``)."""
        self.params = params
        self._fading = fading
        self._frames: list[Transmission] = []  # unresolved, and resolved ones an unresolved one may overlap
        self._starts: list[float] = []  # their start times (in order: frames register in start order)
        self._unfinished: dict[int, Transmission] = {}  # on the air: what carrier sense looks at
        self._unresolved: dict[int, Transmission] = {}  # outcome not computed yet (on the air or ended)
        self._ended: list[Transmission] = []  # ended, for the next resolve(), in the order they ended
        self._max_airtime = 0.0  # of every frame registered: how far back an overlapping frame can start
        self._next_serial = 0
        self._latest_start = -math.inf
        self._aifs_s = params.aifs_s
        self._sensitivity_dbm = float(params.sensitivity_dbm)
        self._airtime: dict[int, float] = {}
        # Carrier sense: mean power >= carrier_sense_dbm; clearly inside or outside this
        # distance needs no power computation (mean power only falls with distance).
        self._sense_m = nominal_range_m(params, params.sensitivity_dbm - params.carrier_sense_dbm)
        self._slot_of: dict[int, int] = {}  # node id -> slot, for transmit()
        self._slots_given: bool | None = None  # transmit_links (caller's slots) or transmit (ours)
        self._sending_until = np.full(0, -math.inf)  # per slot: end of its latest own frame
        self._draws: BlockDraws | None = None

    @property
    def tracked_transmissions(self) -> int:
        """Frames still kept for collision checks (bounded by the frames on the air, not by history)."""
        self._prune()
        return len(self._frames)

    def backoff_s(self, rng: np.random.Generator) -> float:
        """AIFS + uniform 0..cw_min slots: broadcast never doubles its window (no ACK, no retry)."""
        return self._aifs_s + self._draws_from(rng).backoff_slots() * self.params.slot_s

    def _draws_from(self, rng: np.random.Generator) -> BlockDraws:
        """The block draws of ``rng`` (a new block source when a caller switches generators)."""
        draws = self._draws
        if draws is None or draws.rng is not rng:
            draws = self._draws = BlockDraws(rng, self.params, fading=self._fading)
        return draws

    def faded_dbm(self, mean_dbm: np.ndarray, distance_m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Received power per link for one frame: the mean plus a Nakagami fade (when on).

        A caller may draw many links' fades in one call, for instance every link of a
        mobility step, and hand each frame its share (``transmit_links(rx_power_dbm=)``):
        one draw instead of one per frame.
        """
        if not self.params.nakagami:
            return mean_dbm
        return self._draws_from(rng).faded_dbm(mean_dbm, distance_m)

    def airtime_s(self, payload_bytes: int) -> float:
        """:func:`airtime_s` with this channel's parameters, cached per size."""
        cached = self._airtime.get(payload_bytes)
        if cached is None:
            cached = self._airtime[payload_bytes] = airtime_s(payload_bytes, self.params)
        return cached

    def _sensed(self, distance_m: float) -> bool:
        if distance_m < self._sense_m * (1.0 - 1e-9):
            return True
        if distance_m > self._sense_m * (1.0 + 1e-9):
            return False
        return bool(mean_rx_power_dbm(distance_m, self.params) >= self.params.carrier_sense_dbm)

    def busy_until(self, position: np.ndarray | tuple[float, float], now: float) -> float:
        """When the medium looks idle at ``position``: ``now`` if idle, else the end of the last sensed frame.

        A frame is sensed from CCA_TIME_S after its start if its mean power here reaches
        ``carrier_sense_dbm``. Call again on waking: another frame may have started.
        """
        x, y = float(position[0]), float(position[1])
        idle_at = now
        for frame in self._unfinished.values():  # a finished frame ended by now: never sensed
            if (
                frame.start + CCA_TIME_S <= now < frame.end
                and frame.end > idle_at
                and self._sensed(math.hypot(frame.x - x, frame.y - y))
            ):
                idle_at = frame.end
        return idle_at

    def reserve_slots(self, count: int) -> None:
        """Make room for node slots 0 .. count - 1 (see :meth:`transmit_links`)."""
        size = self._sending_until.size
        if count <= size:
            return
        grown = max(count, 2 * size, 64)
        self._sending_until = np.concatenate([self._sending_until, np.full(grown - size, -math.inf)])

    def _slots(self, ids: list[int]) -> np.ndarray:
        slot_of = self._slot_of
        slots = np.fromiter((slot_of.setdefault(i, len(slot_of)) for i in ids), np.int64, len(ids))
        self.reserve_slots(len(slot_of))
        return slots

    def _slot_source(self, given: bool) -> None:
        if self._slots_given is None:
            self._slots_given = given
        elif self._slots_given != given:
            raise ValueError("one channel takes either transmit() or transmit_links() frames, not both")

    def transmit(
        self,
        sender: int,
        sender_position: np.ndarray,
        start: float,
        payload_bytes: int,
        receivers: np.ndarray,
        receiver_positions: np.ndarray,
        rng: np.random.Generator,
    ) -> Transmission:
        """Put a frame on the air from ``start`` for its air time; draw fading for each candidate receiver.

        ``receivers`` are node ids (vehicles and roadside units alike; the sender is
        dropped if listed), typically a :class:`SpatialGrid` query with a radius of
        ``nominal_range_m(params, margin_db)``.
        """
        self._slot_source(False)
        self._check_start(start)
        sender_slot = int(self._slots([int(sender)])[0])
        self._check_sender(sender, sender_slot, start)
        ids = np.asarray(receivers, dtype=np.int64).reshape(-1)
        where = np.asarray(receiver_positions, dtype=float).reshape(-1, 2)
        if where.shape[0] != ids.size:
            raise ValueError(f"{ids.size} receivers but {where.shape[0]} receiver positions")
        if np.unique(ids).size != ids.size:
            raise ValueError("receivers must be distinct node ids")
        others = ids != sender
        ids, where = ids[others], where[others]
        origin = np.asarray(sender_position, dtype=float).reshape(2).copy()
        distance = np.hypot(where[:, 0] - origin[0], where[:, 1] - origin[1])
        slots = self._slots(ids.tolist())
        power = self.faded_dbm(mean_rx_power_dbm(distance, self.params), distance, rng)
        return self._register(sender, sender_slot, origin, start, payload_bytes, ids, slots, distance, power)

    def transmit_links(
        self,
        sender: int,
        sender_slot: int,
        sender_position: np.ndarray,
        start: float,
        payload_bytes: int,
        receivers: np.ndarray,
        slots: np.ndarray,
        distance_m: np.ndarray,
        mean_rx_dbm: np.ndarray,
        rng: np.random.Generator,
        rx_power_dbm: np.ndarray | None = None,
    ) -> Transmission:
        """:meth:`transmit` for a caller that knows the links already (a :class:`LinkTable` row).

        ``receivers`` are distinct node ids other than the sender, ``distance_m`` and
        ``mean_rx_dbm`` their link's distance and mean received power. The caller numbers
        its nodes: ``slots`` and ``sender_slot`` are each node's fixed index, below the
        count given to :meth:`reserve_slots`. Draws fading exactly as :meth:`transmit`,
        unless ``rx_power_dbm`` brings this frame's faded powers, drawn ahead by
        :meth:`faded_dbm` (each draw serves one frame only).
        """
        self._slot_source(True)
        self._check_start(start)
        if sender_slot >= self._sending_until.size:
            self.reserve_slots(sender_slot + 1)
        self._check_sender(sender, sender_slot, start)
        origin = np.array(sender_position, dtype=float).reshape(2)
        if rx_power_dbm is None:
            rx_power_dbm = self.faded_dbm(mean_rx_dbm, distance_m, rng)
        return self._register(
            sender, sender_slot, origin, start, payload_bytes, receivers, slots, distance_m, rx_power_dbm
        )

    def _check_start(self, start: float) -> None:
        if start < self._latest_start:
            raise ValueError(f"transmissions must start in time order: {start} < {self._latest_start}")

    def _check_sender(self, sender: int, slot: int, start: float) -> None:
        if self._sending_until[slot] > start:
            raise ValueError(f"node {sender} is already transmitting until {self._sending_until[slot]}")

    def _register(
        self,
        sender: int,
        sender_slot: int,
        origin: np.ndarray,
        start: float,
        payload_bytes: int,
        ids: np.ndarray,
        slots: np.ndarray,
        distance: np.ndarray,
        power: np.ndarray,
    ) -> Transmission:
        start = float(start)
        end = start + self.airtime_s(payload_bytes)
        frame = Transmission(
            self._next_serial,
            int(sender),
            sender_slot,
            origin,
            float(origin[0]),
            float(origin[1]),
            start,
            end,
            int(payload_bytes),
            ids,
            slots,
            distance,
            power,
            self._sensitivity_dbm,
        )
        self._sending_until[sender_slot] = end
        self._next_serial += 1
        self._latest_start = start
        if end - start > self._max_airtime:
            self._max_airtime = end - start
        self._frames.append(frame)
        self._starts.append(start)
        self._unfinished[frame.serial] = frame
        self._unresolved[frame.serial] = frame
        return frame

    def _leave_air(self, frame: Transmission) -> None:
        if self._unfinished.pop(frame.serial, None) is None:
            raise ValueError(f"transmission {frame.serial} is not on the air (finished twice?)")

    def finish(self, frame: Transmission) -> Delivery:
        """The frame has ended: its outcome now (frames given to :meth:`end` wait for :meth:`resolve`)."""
        self._leave_air(frame)
        return self._resolve([frame])[0]

    def end(self, frame: Transmission) -> None:
        """The frame has ended; its outcome comes with the next :meth:`resolve`."""
        self._leave_air(frame)
        self._ended.append(frame)

    def resolve(self) -> list[tuple[Transmission, Delivery]]:
        """The outcome of every frame given to :meth:`end` since the last call, in that order."""
        ended, self._ended = self._ended, []
        return list(zip(ended, self._resolve(ended), strict=True))

    def _resolve(self, frames: list[Transmission]) -> list[Delivery]:
        """Outcomes of ended ``frames``; then forget what no unresolved or future frame can overlap."""
        if not frames:
            return []
        for frame in frames:
            del self._unresolved[frame.serial]
        nearby = self._nearby(frames)
        if self.params.capture_threshold_db is not None:
            losses = [self._lost_with_capture(frame, nearby) for frame in frames]
        elif len(frames) <= PAIRWISE_UP_TO:  # a unicast awaiting its ACK: the sweep costs ~25 NumPy calls
            losses = [self._lost_pairwise(frame, nearby) for frame in frames]
        else:
            losses = self._lost_to_overlaps(frames, nearby)
        outcomes = []
        for frame, lost in zip(frames, losses, strict=True):
            index = frame.index
            assert index is not None
            outcomes.append(Delivery(frame.receivers, index[~lost], index, lost))
        if len(self._frames) > 2 * len(self._unresolved) + PRUNE_SLACK:
            self._prune()
        return outcomes

    def _nearby(self, frames: list[Transmission]) -> list[Transmission]:
        """Tracked frames that start between the earliest start an overlapping frame can have
        (no frame lasts longer than ``_max_airtime``) and the latest end of ``frames``."""
        earliest = min(frame.start for frame in frames) - 2.0 * self._max_airtime  # 2x: rounding margin
        latest = max(frame.end for frame in frames)
        return self._frames[bisect_left(self._starts, earliest) : bisect_left(self._starts, latest)]

    def _hear(self, frames: list[Transmission]) -> None:
        """Set ``index`` and ``heard`` (the decodable receivers) of the frames that lack them.

        Why here and in bulk: a frame's decodable receivers matter only to collision checks,
        and the fixed cost of a NumPy call, not the elements, dominates at a hundred links
        a frame: a few calls over many frames' powers cost what a few frames' own would.
        """
        todo = [frame for frame in frames if frame.index is None]
        if not todo:
            return
        if len(todo) <= HEAR_ONE_BY_ONE_UP_TO:
            for frame in todo:
                frame.index = index = (frame.rx_power_dbm >= self._sensitivity_dbm).nonzero()[0]
                frame.heard = frame.slots[index]
            return
        sizes = np.fromiter((frame.rx_power_dbm.size for frame in todo), np.int64, len(todo))
        bounds = np.zeros(len(todo) + 1, dtype=np.int64)
        np.cumsum(sizes, out=bounds[1:])
        power = np.concatenate([frame.rx_power_dbm for frame in todo])
        at = (power >= self._sensitivity_dbm).nonzero()[0]
        cuts = np.searchsorted(at, bounds).tolist()
        local = at - np.repeat(bounds[:-1], np.diff(cuts))
        heard = np.concatenate([frame.slots for frame in todo])[at]
        for i, frame in enumerate(todo):
            frame.index = local[cuts[i] : cuts[i + 1]]
            frame.heard = heard[cuts[i] : cuts[i + 1]]

    def _lost_pairwise(self, frame: Transmission, nearby: list[Transmission]) -> np.ndarray:
        """:meth:`_lost_to_overlaps` for one frame: the nodes that heard or sent an overlapping frame."""
        self._hear([frame])
        heard = frame.heard
        assert heard is not None
        overlapping = [other for other in nearby if _overlap(other, frame)]
        if heard.size == 0 or not overlapping:
            return np.zeros(heard.size, dtype=bool)
        self._hear(overlapping)
        if heard.size == 1:  # one decodable receiver (a unicast's destination): one set test
            slot = int(heard[0])
            lost = any(other.sender_slot == slot or slot in other.heard for other in overlapping)  # type: ignore[operator]
            return np.array([lost])
        busy: set[int] = set()
        for other in overlapping:
            assert other.heard is not None
            busy.update(other.heard.tolist())
            busy.add(other.sender_slot)
        return np.fromiter((slot in busy for slot in heard.tolist()), bool, heard.size)

    def _lost_to_overlaps(self, frames: list[Transmission], nearby: list[Transmission]) -> list[np.ndarray]:
        """Per frame, per decodable receiver: lost to another frame that receiver heard or sent.

        One entry per (frame, node that heard it) and per (frame, its sender), sorted by
        (node, start): an entry overlaps an earlier one of its node when the running maximum
        of the ends before it exceeds its start, a later one when the next entry of its node
        starts before it ends (entries with equal starts overlap either way, so their order
        does not matter). Times compare as ranks among the nearby frames' starts and ends,
        exactly; the sort key and the running maximum are node * ranks + rank, so the
        maximum restarts at every node.
        """
        self._hear(nearby)
        heard: list[np.ndarray] = [other.heard for other in nearby]  # type: ignore[misc]
        count = len(nearby)
        counts = np.fromiter((h.size for h in heard), np.int64, count)
        starts = np.fromiter((other.start for other in nearby), float, count)
        ends = np.fromiter((other.end for other in nearby), float, count)
        heard.append(np.fromiter((other.sender_slot for other in nearby), np.int64, count))
        times = np.sort(np.concatenate([starts, ends]))
        start_rank = np.searchsorted(times, starts)
        end_rank = np.searchsorted(times, ends)
        ranks = 2 * count + 1
        entry_start = np.concatenate([np.repeat(start_rank, counts), start_rank])
        entry_end = np.concatenate([np.repeat(end_rank, counts), end_rank])
        key = np.concatenate(heard) * ranks
        key += entry_start
        order = np.argsort(key)
        sorted_start = entry_start[order]
        node_base = key[order] - sorted_start
        sorted_end = entry_end[order]
        running = np.maximum.accumulate(node_base + sorted_end)
        lost_sorted = np.zeros(key.size, dtype=bool)
        # an earlier entry of the node ends after this one starts; the next one starts before it ends
        np.greater(running[:-1] - node_base[1:], sorted_start[1:], out=lost_sorted[1:])
        lost_sorted[:-1] |= (node_base[1:] == node_base[:-1]) & (sorted_start[1:] < sorted_end[:-1])
        lost = np.empty(key.size, dtype=bool)
        lost[order] = lost_sorted
        bounds = np.zeros(count + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        at = {other.serial: i for i, other in enumerate(nearby)}
        return [lost[bounds[at[frame.serial]] : bounds[at[frame.serial] + 1]] for frame in frames]

    def _lost_with_capture(self, frame: Transmission, nearby: list[Transmission]) -> np.ndarray:
        """Pairwise: interference power summed over overlapping frames decodable at each receiver."""
        self._hear([frame])
        index = frame.index
        assert index is not None
        ids = frame.receivers[index]
        overlapping = [other for other in nearby if _overlap(other, frame)]
        self._hear(overlapping)
        sending = np.isin(ids, [other.sender for other in overlapping])  # half duplex
        interfered = np.zeros(ids.size, dtype=bool)
        interference_mw = np.zeros(ids.size)
        for other in overlapping:
            decodable = other.index
            assert decodable is not None
            heard = other.receivers[decodable]
            _, at_frame, at_other = np.intersect1d(ids, heard, assume_unique=True, return_indices=True)
            interfered[at_frame] = True
            interference_mw[at_frame] += 10.0 ** (other.rx_power_dbm[decodable][at_other] / 10.0)
        if interfered.any():
            threshold = self.params.capture_threshold_db
            power_mw = 10.0 ** (frame.rx_power_dbm[index] / 10.0)
            noise_mw = 10.0 ** (self.params.noise_floor_dbm / 10.0)
            interfered &= 10.0 * np.log10(power_mw / (noise_mw + interference_mw)) < threshold
        return sending | interfered

    def _prune(self) -> None:
        unresolved = self._unresolved
        # frames are registered in start order and dicts keep insertion order: the first
        # unresolved frame is the earliest
        first = next(iter(unresolved.values()), None)
        horizon = self._latest_start if first is None else min(first.start, self._latest_start)
        kept = [frame for frame in self._frames if frame.end > horizon or frame.serial in unresolved]
        self._frames = kept
        self._starts = [frame.start for frame in kept]


def _overlap(first: Transmission, second: Transmission) -> bool:
    return first.serial != second.serial and first.start < second.end and second.start < first.end
