"""The physical quantum channel between Alice and Bob, and the presets users recognize.

A :class:`Channel` answers two questions for the quantum stage:

* which signals make Bob's detector click (:meth:`Channel.detect`): the signal photon
  arrives and is detected with probability ``transmittance`` (link loss times detector
  efficiency), or a dark count fires;
* how a detected signal photon is disturbed (:meth:`Channel.noise_model`): one Qiskit
  noise model on the channel ``id`` gate that combines the intrinsic misalignment error
  ``e_d`` with the explicit noise the user asked for.

Presets: :func:`ideal`, :func:`fiber` (GYS experiment or modern detectors) and
:func:`free_space` (a short vehicle-to-roadside optical link); :func:`build` is the
command-line entry that maps a name and options onto them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from qiskit_aer.noise import NoiseModel, QuantumError, depolarizing_error, pauli_error

NOISE_KINDS = ("depolarizing", "bitflip")
CHANNEL_GATE = "id"  # the gate that stands for the channel in every circuit
# Gates the quantum stage uses; the noise model lists them so Aer accepts the circuits as built.
BASIS_GATES = ["id", "x", "h", "ry", "cx", "measure"]


@dataclass(frozen=True)
class Detection:
    """Which signals made Bob's detector click, and which of those clicks were the signal photon."""

    detected: np.ndarray  # bool, a click (signal photon or dark count)
    signal_detected: np.ndarray  # bool, the signal photon itself was detected

    @property
    def dark_only(self) -> np.ndarray:
        """Clicks from a dark count alone: Bob records a uniformly random bit there."""
        return self.detected & ~self.signal_detected


@dataclass(frozen=True)
class Channel:
    """End-to-end channel parameters as the quantum stage needs them.

    ``transmittance`` already includes Bob's detector efficiency. ``misalignment`` is the
    error probability ``e_d`` of a detected signal photon (polarization or phase drift);
    ``noise``/``noise_p`` is an extra, explicit noise the user adds on top. ``details``
    keeps the physical inputs (attenuation, apertures ...) for reports.
    """

    name: str
    transmittance: float
    dark_count_prob: float
    misalignment: float
    noise: str = "depolarizing"
    noise_p: float = 0.0
    distance_km: float = 0.0
    details: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("channel name must not be empty")
        _check_probability("transmittance", self.transmittance)
        _check_probability("dark_count_prob", self.dark_count_prob)
        _check_range("misalignment", self.misalignment, 0.0, 0.5)
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {', '.join(NOISE_KINDS)}, got {self.noise!r}")
        _check_probability(f"{self.noise} p", self.noise_p)
        _check_distance(self.distance_km)

    @property
    def loss_db(self) -> float:
        """End-to-end loss including detector efficiency; ``inf`` for a channel that never delivers."""
        return math.inf if self.transmittance == 0 else max(0.0, -10.0 * math.log10(self.transmittance))

    def describe(self) -> dict[str, Any]:
        """All fields (details flattened) plus ``loss_db`` and the noise text, JSON-friendly."""
        fields = asdict(self)
        details = dict(fields.pop("details"))
        loss = self.loss_db
        return {
            **fields,
            "loss_db": None if math.isinf(loss) else loss,
            **details,
            "noise_description": self.noise_description(),
        }

    def detect(self, n: int, rng: np.random.Generator) -> Detection:
        """Decide, for ``n`` signals at once, which ones click and which clicks are the photon.

        Signal detections are independent Bernoulli(transmittance). Dark counts are rare, so
        their number is drawn as Binomial(n, p_dark) and their positions as a uniform subset,
        which is the same distribution as n Bernoulli draws but costs O(number of dark counts).
        When the photon and a dark count coincide, the photon's outcome is kept (at p_dark of
        about 1e-6 the double clicks that a squashing model would randomize are negligible).
        """
        if n < 0:
            raise ValueError(f"number of signals must be >= 0, got {n}")
        if self.transmittance >= 1.0:
            signal = np.ones(n, dtype=bool)
        elif self.transmittance <= 0.0:
            signal = np.zeros(n, dtype=bool)
        else:
            signal = rng.random(n) < self.transmittance
        detected = signal.copy()
        if self.dark_count_prob > 0.0 and n > 0:
            dark_count = int(rng.binomial(n, self.dark_count_prob))
            detected[rng.choice(n, size=dark_count, replace=False)] = True
        return Detection(detected=detected, signal_detected=signal)

    @property
    def misalignment_depolarizing(self) -> float:
        """Misalignment as a depolarizing parameter: depolarizing p gives error p/2 in every basis."""
        return 2.0 * self.misalignment

    def total_depolarizing(self) -> float:
        """The single depolarizing parameter of misalignment and explicit depolarizing noise together.

        Two independent depolarizing channels compose to one with 1 - p = (1 - p1)(1 - p2).
        """
        explicit = self.noise_p if self.noise == "depolarizing" else 0.0
        return 1.0 - (1.0 - self.misalignment_depolarizing) * (1.0 - explicit)

    def _noise_parameters(self) -> tuple[float, float]:
        return self.total_depolarizing(), (self.noise_p if self.noise == "bitflip" else 0.0)

    def quantum_error(self) -> QuantumError | None:
        """The one-qubit error of the channel gate, or ``None`` for a noiseless channel."""
        return _quantum_error(*self._noise_parameters())

    def noise_model(self) -> NoiseModel | None:
        """A Qiskit noise model with the channel error on every ``id`` gate (``None`` when noiseless).

        Built once per distinct noise (about 2.5 ms each time otherwise): sessions at many
        distances over one channel preset share it, since loss is not part of it. Callers
        must not modify the model they get.
        """
        return _noise_model(*self._noise_parameters())

    def noise_description(self) -> str:
        """Which noise a run used, in words, so that reports say it."""
        pieces = []
        total = self.total_depolarizing()
        if total > 0:
            sources = []
            if self.misalignment > 0:
                sources.append(
                    f"misalignment e_d={self.misalignment:g} as p={self.misalignment_depolarizing:g}"
                )
            if self.noise == "depolarizing" and self.noise_p > 0:
                sources.append(f"explicit p={self.noise_p:g}")
            pieces.append(f"depolarizing p={total:.6g} ({', '.join(sources)})")
        if self.noise == "bitflip" and self.noise_p > 0:
            pieces.append(f"bit-flip (Pauli X) p={self.noise_p:g} (flips Z-basis signals only)")
        if not pieces:
            return f"none (noiseless channel {CHANNEL_GATE} gate)"
        return f"{' then '.join(pieces)} on the channel {CHANNEL_GATE} gate"


@functools.lru_cache(maxsize=64)
def _quantum_error(depolarizing: float, bitflip: float) -> QuantumError | None:
    error: QuantumError | None = None
    if depolarizing > 0.0:
        error = depolarizing_error(depolarizing, 1)
    if bitflip > 0.0:
        flip = pauli_error([("X", bitflip), ("I", 1.0 - bitflip)])
        error = flip if error is None else error.compose(flip)
    return error


@functools.lru_cache(maxsize=64)
def _noise_model(depolarizing: float, bitflip: float) -> NoiseModel | None:
    error = _quantum_error(depolarizing, bitflip)
    if error is None:
        return None
    model = NoiseModel(basis_gates=BASIS_GATES)
    model.add_all_qubit_quantum_error(error, [CHANNEL_GATE])
    return model


def _check_range(label: str, value: float, low: float, high: float) -> None:
    if not isinstance(value, int | float | np.floating | np.integer) or isinstance(value, bool):
        raise ValueError(f"{label} must be a number, got {value!r}")
    if not (low <= float(value) <= high):  # also rejects NaN
        raise ValueError(f"{label} must be in [{low:g}, {high:g}], got {value!r}")


def _check_probability(label: str, value: float) -> None:
    _check_range(label, value, 0.0, 1.0)


def _check_distance(distance_km: float) -> None:
    _check_range("distance_km", distance_km, 0.0, math.inf)
    if math.isinf(distance_km):
        raise ValueError("distance_km must be finite")


def _check_positive(label: str, value: float) -> None:
    _check_range(label, value, 0.0, math.inf)
    if value == 0 or math.isinf(value):
        raise ValueError(f"{label} must be positive and finite, got {value!r}")


def db_to_transmittance(loss_db: float) -> float:
    return 10.0 ** (-loss_db / 10.0)


def ideal() -> Channel:
    """Lossless, noiseless, no dark counts: the reference against which the others are judged."""
    return Channel(name="ideal", transmittance=1.0, dark_count_prob=0.0, misalignment=0.0)


# Fibre presets. GYS: Gobby, Yuan, Shields, Appl. Phys. Lett. 84, 3762 (2004), the parameter
# set of Lo-Ma-Chen's decoy-state curves (PRL 94, 230504, 2005): 0.21 dB/km, eta_Bob 4.5%,
# Y0 = 1.7e-6, e_detector = 3.3%. "modern" is a present-day 1550 nm link: standard SMF-28
# at 0.2 dB/km, a superconducting-nanowire detector taken at a conservative eta = 0.6
# (commercial SNSPDs reach 0.6-0.9; gated InGaAs APDs 0.1-0.3), a dark-count probability
# of 1e-6 per gate (SNSPDs are lower, InGaAs similar) and 1% misalignment (0.5-1% reported).
FIBER_PRESETS: dict[str, dict[str, float]] = {
    "gys": {
        "attenuation_db_per_km": 0.21,
        "detector_efficiency": 0.045,
        "dark_count_prob": 1.7e-6,
        "misalignment": 0.033,
    },
    "modern": {
        "attenuation_db_per_km": 0.2,
        "detector_efficiency": 0.6,
        "dark_count_prob": 1e-6,
        "misalignment": 0.01,
    },
}


def fiber(
    distance_km: float,
    *,
    preset: str = "gys",
    attenuation_db_per_km: float | None = None,
    detector_efficiency: float | None = None,
    dark_count_prob: float | None = None,
    misalignment: float | None = None,
) -> Channel:
    """Optical fibre: transmittance = 10^(-alpha L / 10) * eta_Bob; any preset value can be overridden."""
    if preset not in FIBER_PRESETS:
        raise ValueError(f"unknown fiber preset {preset!r}; choose one of {', '.join(FIBER_PRESETS)}")
    _check_distance(distance_km)
    chosen = dict(FIBER_PRESETS[preset])
    for key, value in (
        ("attenuation_db_per_km", attenuation_db_per_km),
        ("detector_efficiency", detector_efficiency),
        ("dark_count_prob", dark_count_prob),
        ("misalignment", misalignment),
    ):
        if value is not None:
            chosen[key] = value
    _check_range("attenuation_db_per_km", chosen["attenuation_db_per_km"], 0.0, math.inf)
    _check_probability("detector_efficiency", chosen["detector_efficiency"])
    link_loss_db = chosen["attenuation_db_per_km"] * distance_km
    return Channel(
        name="fiber",
        transmittance=db_to_transmittance(link_loss_db) * chosen["detector_efficiency"],
        dark_count_prob=chosen["dark_count_prob"],
        misalignment=chosen["misalignment"],
        distance_km=float(distance_km),
        details=(
            ("preset", preset),
            ("attenuation_db_per_km", chosen["attenuation_db_per_km"]),
            ("detector_efficiency", chosen["detector_efficiency"]),
            ("link_loss_db", link_loss_db),
        ),
    )


def geometric_transmittance(
    distance_km: float, tx_aperture_m: float, rx_aperture_m: float, divergence_rad: float
) -> float:
    """Share of the beam the receiver aperture collects: min(1, (D_rx / (D_tx + L * theta))^2)."""
    beam_diameter_m = tx_aperture_m + distance_km * 1000.0 * divergence_rad
    return min(1.0, (rx_aperture_m / beam_diameter_m) ** 2)


def free_space(
    distance_km: float,
    *,
    tx_aperture_m: float = 0.02,
    rx_aperture_m: float = 0.10,
    divergence_rad: float = 1e-3,
    atmospheric_db_per_km: float = 0.4,
    detector_efficiency: float = 0.5,
    dark_count_prob: float = 1e-6,
    misalignment: float = 0.02,
) -> Channel:
    """A line-of-sight optical link from a vehicle to a roadside unit, tens to hundreds of metres.

    Defaults and why: a compact 2 cm transmitter on the vehicle and a 10 cm receiver telescope
    on the roadside unit; a full-angle divergence of 1 mrad, deliberately wide so that coarse
    pointing from a moving car keeps the spot on the receiver (static links use 10-100 urad);
    0.4 dB/km clear-air attenuation at 850 nm (Kim-model extinction at 23 km visibility;
    haze and fog are 1-100+ dB/km); a silicon SPAD at 850 nm with eta = 0.5; a dark-count
    probability of 1e-6 per gate (night; filtered daylight background is 1e-5-1e-4, set it
    higher for daytime); 2% misalignment for polarization encoding on a moving platform.
    With these values the geometric loss is about 1.6 dB at 100 m and 14 dB at 500 m.
    """
    _check_distance(distance_km)
    _check_positive("tx_aperture_m", tx_aperture_m)
    _check_positive("rx_aperture_m", rx_aperture_m)
    _check_range("divergence_rad", divergence_rad, 0.0, math.pi)
    _check_range("atmospheric_db_per_km", atmospheric_db_per_km, 0.0, math.inf)
    _check_probability("detector_efficiency", detector_efficiency)
    geometric = geometric_transmittance(distance_km, tx_aperture_m, rx_aperture_m, divergence_rad)
    atmospheric_loss_db = atmospheric_db_per_km * distance_km
    return Channel(
        name="free-space",
        transmittance=geometric * db_to_transmittance(atmospheric_loss_db) * detector_efficiency,
        dark_count_prob=dark_count_prob,
        misalignment=misalignment,
        distance_km=float(distance_km),
        details=(
            ("tx_aperture_m", tx_aperture_m),
            ("rx_aperture_m", rx_aperture_m),
            ("divergence_rad", divergence_rad),
            ("atmospheric_db_per_km", atmospheric_db_per_km),
            ("detector_efficiency", detector_efficiency),
            ("geometric_transmittance", geometric),
            ("atmospheric_loss_db", atmospheric_loss_db),
        ),
    )


_ALIASES = {
    "ideal": "ideal",
    "fiber": "fiber",
    "fibre": "fiber",
    "free-space": "free-space",
    "free_space": "free-space",
    "freespace": "free-space",
}
_OPTIONS = {
    "ideal": frozenset(),
    "fiber": frozenset(
        {"preset", "attenuation_db_per_km", "detector_efficiency", "dark_count_prob", "misalignment"}
    ),
    "free-space": frozenset(
        {
            "tx_aperture_m",
            "rx_aperture_m",
            "divergence_rad",
            "atmospheric_db_per_km",
            "detector_efficiency",
            "dark_count_prob",
            "misalignment",
        }
    ),
}
DEFAULT_DISTANCE_KM = {"ideal": 0.0, "fiber": 10.0, "free-space": 0.1}


def build(
    name: str,
    *,
    distance_km: float | None = None,
    depolarizing: float = 0.0,
    bitflip: float = 0.0,
    **overrides: Any,
) -> Channel:
    """The CLI entry: a channel by name with optional explicit noise and parameter overrides.

    ``distance_km`` defaults to 10 km for fibre and 100 m for free space; the ideal channel
    records the distance but has no loss. At most one of ``depolarizing``/``bitflip`` may be
    non-zero, since a run reports one explicit noise kind. ``None`` overrides are ignored so
    that unset CLI options pass through. Every problem is a one-line ``ValueError``.
    """
    key = _ALIASES.get(str(name).strip().lower())
    if key is None:
        raise ValueError(f"unknown channel {name!r}; choose one of ideal, fiber, free-space")
    given = {option: value for option, value in overrides.items() if value is not None}
    unknown = sorted(set(given) - _OPTIONS[key])
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS[key])) or "none"
        raise ValueError(f"{key} channel has no option {', '.join(unknown)} (options: {allowed})")
    _check_probability("depolarizing", depolarizing)
    _check_probability("bitflip", bitflip)
    if depolarizing > 0 and bitflip > 0:
        raise ValueError("choose one explicit noise: depolarizing or bitflip, not both")
    distance = DEFAULT_DISTANCE_KM[key] if distance_km is None else distance_km
    _check_distance(distance)
    if key == "ideal":
        channel = replace(ideal(), distance_km=float(distance))
    elif key == "fiber":
        channel = fiber(distance, **given)
    else:
        channel = free_space(distance, **given)
    if bitflip > 0:
        return replace(channel, noise="bitflip", noise_p=float(bitflip))
    return replace(channel, noise="depolarizing", noise_p=float(depolarizing))
