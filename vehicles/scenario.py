"""Scenario files: TOML in ``scenarios/``, overridden by command-line flags.

A scenario is plain data (:class:`Scenario`); loading validates every field and
turns mistakes into :class:`ScenarioError` with one readable line naming the
file and the key, so the CLI can exit 2 without a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qkd.cascade import METHODS as RECONCILIATIONS

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
CIPHERS = ("otp", "aes-gcm")
ANCHORING = ("batch", "single")
ROADS = ("highway", "urban-grid", "sumo")


class ScenarioError(ValueError):
    """A scenario file or flag the simulator cannot run."""


@dataclass(frozen=True)
class RoadConfig:
    kind: str = "highway"
    length_m: float = 2000.0  # highway
    lanes: int = 3  # highway
    blocks: int = 4  # urban grid
    block_m: float = 200.0  # urban grid
    entry_rate_per_s: float = 0.5
    sumo_config: str = ""  # kind = "sumo": a .sumocfg file (relative to the scenario file)


@dataclass(frozen=True)
class RadioConfig:
    tx_power_dbm: float = 23.0
    sensitivity_dbm: float = -85.0
    data_rate_mbps: float = 6.0
    path_loss: str = "log-distance"
    nakagami: bool = True


@dataclass(frozen=True)
class TrafficConfig:
    beacon_hz: float = 10.0
    payload_bytes: int = 300
    denm_rate_per_s: float = 0.05  # event messages per vehicle per second
    v2i_hz: float = 1.0  # unicast to the nearest RSU
    etsi_triggers: bool = True  # False: a CAM at every check (a fixed beacon_hz, as benchmarks use)


@dataclass(frozen=True)
class KeyConfig:
    cipher: str = "aes-gcm"
    qkd_signals: int = 100_000
    source_rate_hz: float = 1e8  # signals per second: session time = signals / rate
    qkd_range_m: float = 150.0  # optical line of sight: RSUs run sessions with vehicles this close
    reconciliation: str = "biconf"
    key_ttl_s: float = 600.0
    rekey_messages: int = 1000
    rekey_seconds: float = 30.0
    refill_below_bits: int = 65_536  # an RSU starts a new session with a vehicle below this
    # How each RSU's key manager puts key commitments on the ledger: "batch" anchors a Merkle
    # root per anchor_batch records or anchor_age_s simulated seconds, whichever comes first;
    # "single" sends one recordSession transaction per key.
    anchoring: str = "batch"
    anchor_batch: int = 64
    anchor_age_s: float = 0.5


@dataclass(frozen=True)
class RevocationConfig:
    vehicle: int | None = None  # the vehicle index to revoke during the run
    at_s: float | None = None


@dataclass(frozen=True)
class Scenario:
    name: str = "highway"
    duration_s: float = 30.0
    vehicles: int = 50
    rsus: int = 4
    seed: int = 1
    chain: str = "embedded"
    road: RoadConfig = field(default_factory=RoadConfig)
    radio: RadioConfig = field(default_factory=RadioConfig)
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    keys: KeyConfig = field(default_factory=KeyConfig)
    revocation: RevocationConfig = field(default_factory=RevocationConfig)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, **flags: Any) -> Scenario:
        """Apply command-line flags (None means "not given"); nested keys use ``section.key``."""
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in flags.items():
            if value is None:
                continue
            if "." in key:
                section, name = key.split(".", 1)
                nested.setdefault(section, {})[name] = value
            else:
                top[key] = value
        for section, values in nested.items():
            top[section] = dataclasses.replace(getattr(self, section), **values)
        return validate(dataclasses.replace(self, **top), origin="flags")


_SECTIONS = {
    "road": RoadConfig,
    "radio": RadioConfig,
    "traffic": TrafficConfig,
    "keys": KeyConfig,
    "revocation": RevocationConfig,
}


def load(path: str | Path | None) -> Scenario:
    """Read a scenario file, or a bundled scenario by name (``highway``, ``urban-grid``)."""
    if path is None:
        return validate(Scenario(), origin="defaults")
    candidate = Path(path)
    if not candidate.exists() and not candidate.suffix:
        candidate = SCENARIO_DIR / f"{path}.toml"
    if not candidate.is_file():
        bundled = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.toml")))
        raise ScenarioError(f"no scenario file {path!s} (bundled scenarios: {bundled})")
    try:
        data = tomllib.loads(candidate.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{candidate}: not valid TOML: {exc}") from None
    scenario = from_mapping(data, origin=str(candidate))
    if scenario.road.sumo_config and not Path(scenario.road.sumo_config).is_absolute():
        resolved = str((candidate.parent / scenario.road.sumo_config).resolve())
        scenario = dataclasses.replace(
            scenario, road=dataclasses.replace(scenario.road, sumo_config=resolved)
        )
    if scenario.road.kind == "sumo" and not Path(scenario.road.sumo_config).is_file():
        raise ScenarioError(
            f"{candidate}: road.sumo_config: no SUMO configuration file {scenario.road.sumo_config}"
        )
    return scenario


def from_mapping(data: dict[str, Any], *, origin: str) -> Scenario:
    top = data.get("scenario", {})
    if not isinstance(top, dict):
        raise ScenarioError(f"{origin}: [scenario] must be a table")
    unknown = sorted(set(data) - {"scenario", *_SECTIONS})
    if unknown:
        name = unknown[0]
        sections = ", ".join(f"[{section}]" for section in ("scenario", *_SECTIONS))
        if isinstance(data[name], dict):
            raise ScenarioError(f"{origin}: unknown section [{name}] (sections: {sections})")
        homes = _homes_of(name)
        if homes:
            raise ScenarioError(f"{origin}: {name} must sit in a section: put it under {' or '.join(homes)}")
        raise ScenarioError(f"{origin}: unknown setting {name} outside any section (sections: {sections})")
    kwargs: dict[str, Any] = {**_typed(Scenario, top, origin, "scenario", skip=set(_SECTIONS))}
    for section, cls in _SECTIONS.items():
        values = data.get(section, {})
        if not isinstance(values, dict):
            raise ScenarioError(f"{origin}: [{section}] must be a table")
        kwargs[section] = cls(**_typed(cls, values, origin, section))
    return validate(Scenario(**kwargs), origin=origin)


def _homes_of(key: str) -> list[str]:
    """The sections that have a setting named ``key`` (for a key written outside them)."""
    return [
        f"[{section}]"
        for section, cls in (("scenario", Scenario), *_SECTIONS.items())
        if key not in _SECTIONS and key in {f.name for f in dataclasses.fields(cls)}
    ]


def _typed(
    cls: type, values: dict[str, Any], origin: str, section: str, skip: set[str] = frozenset()
) -> dict:  # type: ignore[assignment]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            guess = f"did you mean {section}.{close[0]}? " if close else ""
            raise ScenarioError(
                f"{origin}: unknown key {section}.{key} ({guess}[{section}] has {', '.join(fields)})"
            )
        expected = fields[key].type
        out[key] = _coerce(value, str(expected), f"{origin}: {section}.{key}")
    return out


def _coerce(value: Any, type_name: str, where: str) -> Any:
    """TOML gives int/float/bool/str; accept ints for floats, nothing else silently."""
    if type_name.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(f"{where} must be a number, got {value!r}")
        return float(value)
    if type_name.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"{where} must be an integer, got {value!r}")
        return value
    if type_name == "bool":
        if not isinstance(value, bool):
            raise ScenarioError(f"{where} must be true or false, got {value!r}")
        return value
    if type_name == "str":
        if not isinstance(value, str):
            raise ScenarioError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _not_finite(s: Scenario) -> str | None:
    """The first setting that holds inf or nan (TOML can write both), as ``section.key``."""
    for section, values in (("scenario", s), *((name, getattr(s, name)) for name in _SECTIONS)):
        for spec in dataclasses.fields(values):
            value = getattr(values, spec.name)
            if isinstance(value, float) and not math.isfinite(value):
                return f"{section}.{spec.name} must be a finite number, got {value}"
    return None


def validate(s: Scenario, *, origin: str) -> Scenario:
    """Every value in the range the simulator can run, else one line naming the setting."""

    def check(ok: bool, message: str) -> None:
        if not ok:
            raise ScenarioError(f"{origin}: {message}")

    not_finite = _not_finite(s)
    check(not_finite is None, str(not_finite))

    check(0 < s.duration_s <= 86_400, f"duration must be in (0, 86400] s, got {s.duration_s}")
    check(0 <= s.vehicles <= 5_000, f"vehicles must be between 0 and 5000, got {s.vehicles}")
    check(1 <= s.rsus <= 200, f"rsus must be between 1 and 200, got {s.rsus}")
    check(s.seed >= 0, f"seed must be non-negative, got {s.seed}")
    check(s.road.kind in ROADS, f"road.kind must be one of {', '.join(ROADS)}, got {s.road.kind!r}")
    if s.road.kind == "sumo":
        check(bool(s.road.sumo_config), "road.kind = 'sumo' needs road.sumo_config, a .sumocfg file")
    check(
        100 <= s.road.length_m <= 100_000,
        f"road.length_m must be between 100 and 100000, got {s.road.length_m}",
    )
    check(1 <= s.road.lanes <= 8, f"road.lanes must be between 1 and 8, got {s.road.lanes}")
    check(1 <= s.road.blocks <= 20, f"road.blocks must be between 1 and 20, got {s.road.blocks}")
    check(50 <= s.road.block_m <= 2_000, f"road.block_m must be between 50 and 2000, got {s.road.block_m}")
    check(
        0 <= s.road.entry_rate_per_s <= 20,
        f"road.entry_rate_per_s must be in [0, 20] vehicles/s, got {s.road.entry_rate_per_s}",
    )
    check(s.radio.path_loss in ("log-distance", "two-ray"), f"radio.path_loss {s.radio.path_loss!r} unknown")
    check(
        -30 <= s.radio.tx_power_dbm <= 50,
        f"radio.tx_power_dbm must be in [-30, 50], got {s.radio.tx_power_dbm}",
    )
    check(
        -130 <= s.radio.sensitivity_dbm <= -30,
        f"radio.sensitivity_dbm must be in [-130, -30], got {s.radio.sensitivity_dbm}",
    )
    check(
        0 < s.radio.data_rate_mbps <= 27,
        f"radio.data_rate_mbps must be in (0, 27], got {s.radio.data_rate_mbps}",
    )
    check(0 < s.traffic.beacon_hz <= 10, f"traffic.beacon_hz must be in (0, 10], got {s.traffic.beacon_hz}")
    check(
        20 <= s.traffic.payload_bytes <= 1500,
        f"traffic.payload_bytes must be 20-1500, got {s.traffic.payload_bytes}",
    )
    check(
        0 <= s.traffic.denm_rate_per_s <= 10,
        f"traffic.denm_rate_per_s must be in [0, 10] per vehicle, got {s.traffic.denm_rate_per_s}",
    )
    check(0 <= s.traffic.v2i_hz <= 10, f"traffic.v2i_hz must be in [0, 10], got {s.traffic.v2i_hz}")
    check(s.keys.cipher in CIPHERS, f"keys.cipher must be one of {', '.join(CIPHERS)}, got {s.keys.cipher!r}")
    check(
        1_000 <= s.keys.qkd_signals <= 10_000_000,
        f"keys.qkd_signals must be 1e3-1e7, got {s.keys.qkd_signals}",
    )
    check(
        s.keys.reconciliation in RECONCILIATIONS,
        f"keys.reconciliation must be one of {', '.join(RECONCILIATIONS)}, got {s.keys.reconciliation!r}",
    )
    check(
        0 < s.keys.source_rate_hz <= 1e11,
        f"keys.source_rate_hz must be in (0, 1e11] signals/s, got {s.keys.source_rate_hz}",
    )
    check(0 < s.keys.qkd_range_m <= 2_000, f"keys.qkd_range_m must be in (0, 2000], got {s.keys.qkd_range_m}")
    check(
        0 < s.keys.key_ttl_s <= 31_536_000,
        f"keys.key_ttl_s must be in (0, 31536000] (a year), got {s.keys.key_ttl_s}",
    )
    check(s.keys.rekey_messages >= 1, "keys.rekey_messages must be at least 1")
    check(
        0 < s.keys.rekey_seconds <= 86_400,
        f"keys.rekey_seconds must be in (0, 86400], got {s.keys.rekey_seconds}",
    )
    check(s.keys.refill_below_bits >= 0, "keys.refill_below_bits must be >= 0")
    check(
        s.keys.anchoring in ANCHORING,
        f"keys.anchoring must be one of {', '.join(ANCHORING)}, got {s.keys.anchoring!r}",
    )
    check(1 <= s.keys.anchor_batch <= 65_536, f"keys.anchor_batch must be 1-65536, got {s.keys.anchor_batch}")
    check(
        0 < s.keys.anchor_age_s <= 3_600, f"keys.anchor_age_s must be in (0, 3600], got {s.keys.anchor_age_s}"
    )
    rev = s.revocation
    check((rev.vehicle is None) == (rev.at_s is None), "revocation needs both vehicle and at_s, or neither")
    if rev.vehicle is not None and rev.at_s is not None:
        check(
            0 <= rev.vehicle < max(s.vehicles, 1),
            f"revocation.vehicle {rev.vehicle} is not one of the starting vehicles "
            + (f"(0-{s.vehicles - 1})" if s.vehicles else "(there are none)")
            + ": start more vehicles, set [revocation] vehicle lower, or run with --no-revocation",
        )
        check(
            rev.at_s >= 0, f"revocation.at_s must be >= 0 (a time after the end never comes), got {rev.at_s}"
        )
    return s
