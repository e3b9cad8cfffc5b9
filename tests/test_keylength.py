"""Finite-key length (Tomamichel et al. 2012) and the labelled asymptotic rates."""

from __future__ import annotations

import math

import pytest

from qkd.keylength import (
    binary_entropy,
    chsh_lower_bound,
    device_independent_eve_information,
    e91_key_length,
    finite_key_length,
    seed_paper_rate,
    serfling_mu,
    shor_preskill_rate,
)

EPS = {"eps_sec": 1e-10, "eps_cor": 1e-15}


def _length(n: int, qber: float, f: float = 1.1) -> int:
    k = n // 9
    return finite_key_length(n, k, qber, math.ceil(f * n * binary_entropy(qber)), **EPS).length


def test_binary_entropy_values() -> None:
    assert binary_entropy(0.0) == 0.0 and binary_entropy(1.0) == 0.0
    assert binary_entropy(0.5) == pytest.approx(1.0)
    assert binary_entropy(0.11) == pytest.approx(0.4999, abs=1e-3)


def test_length_grows_with_n() -> None:
    lengths = [_length(n, 0.02) for n in (10_000, 30_000, 100_000, 300_000, 1_000_000)]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    fractions = [_length(n, 0.02) / n for n in (30_000, 100_000, 1_000_000)]
    assert fractions == sorted(fractions)  # the finite-size penalty shrinks


def test_length_falls_with_qber() -> None:
    lengths = [_length(1_000_000, q) for q in (0.005, 0.01, 0.02, 0.04, 0.06, 0.08)]
    assert lengths == sorted(lengths, reverse=True) and lengths[-1] < lengths[0]
    assert _length(1_000_000, 0.11) == 0  # past the BB84 limit nothing is left


def test_length_formula_by_hand() -> None:
    n, k, q, leak = 400_000, 50_000, 0.02, 60_000
    mu = math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(2 / 1e-10))
    expected = n * (1 - binary_entropy(q + mu)) - leak - math.log2(2 / (1e-20 * 1e-15))
    result = finite_key_length(n, k, q, leak, **EPS)
    assert result.mu == pytest.approx(mu)
    assert result.length == math.floor(expected)
    assert serfling_mu(n, k, 1e-10) == pytest.approx(mu)


def test_no_sample_means_no_key() -> None:
    assert finite_key_length(1000, 0, 0.0, 0, **EPS).length == 0


def test_bad_epsilons_are_refused() -> None:
    with pytest.raises(ValueError, match="eps_sec"):
        finite_key_length(1000, 100, 0.01, 10, eps_sec=0.0, eps_cor=1e-15)
    with pytest.raises(ValueError, match="eps_cor"):
        finite_key_length(1000, 100, 0.01, 10, eps_sec=1e-10, eps_cor=1.0)


def test_asymptotic_rates_are_labelled_bounds() -> None:
    assert shor_preskill_rate(0.0) == 1.0
    assert shor_preskill_rate(0.11) == pytest.approx(0.0, abs=2e-3)
    assert shor_preskill_rate(0.2) == 0.0
    assert seed_paper_rate(0.5, 0.02) == pytest.approx(0.5 * (1 - binary_entropy(0.02)))
    # The seed's R ignores Eve: it is above the Shor-Preskill fraction at the same QBER.
    assert seed_paper_rate(1.0, 0.05) > shor_preskill_rate(0.05)


def test_device_independent_bound() -> None:
    assert device_independent_eve_information(2.0) == 1.0
    assert device_independent_eve_information(2 * math.sqrt(2)) == pytest.approx(0.0, abs=1e-9)
    assert 0 < device_independent_eve_information(2.6) < 1
    assert e91_key_length(100_000, 2.0, 0, **EPS) == 0
    assert e91_key_length(100_000, 2.8, 5_000, **EPS) > 50_000


def test_chsh_lower_bound_shrinks_with_fewer_rounds() -> None:
    many = chsh_lower_bound(2.8, [10_000] * 4, 1e-10)
    few = chsh_lower_bound(2.8, [1_000] * 4, 1e-10)
    assert few < many < 2.8
