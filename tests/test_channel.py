"""Channel model: presets reproduce their formulas, detection statistics, validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from qkd import channel as ch
from qkd.classical import ClassicalChannel
from qkd.quantum import prepare_and_measure, sift


def within(observed: float, expected: float, trials: int, sigmas: float = 5.0) -> bool:
    """Binomial tolerance: |observed - expected| within ``sigmas`` standard errors."""
    spread = math.sqrt(max(expected * (1 - expected), 1e-12) / trials)
    return abs(observed - expected) <= sigmas * spread


@pytest.mark.parametrize("distance_km", [0.0, 50.0, 100.0])
@pytest.mark.parametrize(
    ("preset", "alpha", "eta"),
    [("gys", 0.21, 0.045), ("modern", 0.2, 0.6)],
)
def test_fiber_transmittance_follows_attenuation_and_efficiency(distance_km, preset, alpha, eta):
    channel = ch.fiber(distance_km, preset=preset)
    assert channel.transmittance == pytest.approx(10 ** (-alpha * distance_km / 10) * eta, rel=1e-12)
    assert channel.distance_km == distance_km
    assert channel.loss_db == pytest.approx(alpha * distance_km - 10 * math.log10(eta))


def test_fiber_gys_preset_values_and_overrides():
    gys = ch.fiber(10)
    assert (gys.dark_count_prob, gys.misalignment) == (1.7e-6, 0.033)
    custom = ch.fiber(10, attenuation_db_per_km=0.3, detector_efficiency=0.2, misalignment=0.01)
    assert custom.transmittance == pytest.approx(10 ** (-0.3) * 0.2)
    assert custom.misalignment == 0.01
    assert custom.dark_count_prob == 1.7e-6


def test_free_space_geometric_formula():
    # beam 0.02 m + 100 m * 1 mrad = 0.12 m wide at a 0.1 m receiver
    assert ch.geometric_transmittance(0.1, 0.02, 0.1, 1e-3) == pytest.approx((0.1 / 0.12) ** 2)
    # a receiver wider than the beam collects everything
    assert ch.geometric_transmittance(0.0, 0.02, 0.1, 1e-3) == 1.0
    link = ch.free_space(0.5)
    expected = (0.1 / (0.02 + 500 * 1e-3)) ** 2 * 10 ** (-0.4 * 0.5 / 10) * 0.5
    assert link.transmittance == pytest.approx(expected)
    assert link.describe()["geometric_transmittance"] == pytest.approx((0.1 / 0.52) ** 2)


def test_ideal_and_describe():
    ideal = ch.ideal()
    assert (ideal.transmittance, ideal.dark_count_prob, ideal.misalignment) == (1.0, 0.0, 0.0)
    assert ideal.noise_model() is None
    assert "none" in ideal.noise_description()
    report = ch.fiber(25).describe()
    assert {"name", "transmittance", "dark_count_prob", "misalignment", "noise", "noise_p"} <= set(report)
    assert report["loss_db"] == pytest.approx(-10 * math.log10(report["transmittance"]))
    json.dumps(report)  # reports are JSON
    dead = ch.Channel(name="cut", transmittance=0.0, dark_count_prob=0.0, misalignment=0.0)
    assert dead.describe()["loss_db"] is None


def test_detect_statistics():
    rng = np.random.default_rng(11)
    n = 200_000
    channel = ch.Channel(name="test", transmittance=0.3, dark_count_prob=0.01, misalignment=0.0)
    detection = channel.detect(n, rng)
    assert within(detection.signal_detected.mean(), 0.3, n)
    assert within(detection.detected.mean(), 1 - 0.7 * 0.99, n)
    assert np.all(detection.detected >= detection.signal_detected)
    assert within(detection.dark_only.mean(), 0.7 * 0.01, n)
    assert ch.ideal().detect(10, rng).detected.all()


def test_dark_count_only_detections_carry_random_bits():
    blind = ch.Channel(name="dark", transmittance=0.0, dark_count_prob=0.3, misalignment=0.0)
    signals = prepare_and_measure(40_000, blind, seed=5)
    assert not signals.signal_detected.any()
    alice, bob, _ = sift(signals, ClassicalChannel())
    assert within(float(np.mean(alice != bob)), 0.5, alice.size)


def test_misalignment_and_depolarizing_compose():
    channel = ch.build("fiber", distance_km=0, misalignment=0.02, depolarizing=0.05)
    assert channel.total_depolarizing() == pytest.approx(1 - (1 - 0.04) * (1 - 0.05))
    assert "depolarizing" in channel.noise_description()
    lossless = ch.Channel(name="t", transmittance=1.0, dark_count_prob=0.0, misalignment=0.05)
    alice, bob, _ = sift(prepare_and_measure(40_000, lossless, seed=2), ClassicalChannel())
    assert within(float(np.mean(alice != bob)), 0.05, alice.size)


def test_build_names_defaults_and_noise():
    assert ch.build("fibre").distance_km == 10.0
    assert ch.build("free_space").name == "free-space"
    assert ch.build("ideal", distance_km=3).transmittance == 1.0
    flip = ch.build("free-space", distance_km=0.2, bitflip=0.1, detector_efficiency=0.7, misalignment=None)
    assert (flip.noise, flip.noise_p) == ("bitflip", 0.1)
    assert "bit-flip" in flip.noise_description()
    assert ch.build("fiber", preset="modern", depolarizing=0.04).noise_p == 0.04


@pytest.mark.parametrize(
    "arguments",
    [
        {"name": "copper"},
        {"name": "fiber", "distance_km": -1},
        {"name": "fiber", "distance_km": math.inf},
        {"name": "fiber", "preset": "lab"},
        {"name": "fiber", "misalignment": 0.6},
        {"name": "fiber", "dark_count_prob": 1.5},
        {"name": "fiber", "detector_efficiency": -0.1},
        {"name": "fiber", "attenuation_db_per_km": -0.2},
        {"name": "fiber", "depolarizing": 1.2},
        {"name": "fiber", "bitflip": math.nan},
        {"name": "fiber", "depolarizing": 0.1, "bitflip": 0.1},
        {"name": "ideal", "preset": "gys"},
        {"name": "free-space", "rx_aperture_m": 0},
        {"name": "free-space", "divergence_rad": -1e-3},
        {"name": "free-space", "wavelength_nm": 850},
    ],
)
def test_build_rejects_bad_input_with_one_line(arguments):
    with pytest.raises(ValueError) as error:
        ch.build(**arguments)
    assert "\n" not in str(error.value)


def test_channel_validates_directly():
    with pytest.raises(ValueError):
        ch.Channel(name="x", transmittance=1.1, dark_count_prob=0, misalignment=0)
    with pytest.raises(ValueError):
        ch.Channel(name="x", transmittance=1, dark_count_prob=0, misalignment=0, noise="phase")
    with pytest.raises(ValueError):
        ch.Channel(name="", transmittance=1, dark_count_prob=0, misalignment=0)
    with pytest.raises(ValueError):
        ch.ideal().detect(-1, np.random.default_rng())
