"""How many secret bits a session may keep: finite-key and asymptotic bounds.

The length actually used is the finite-key bound of Tomamichel, Lim, Gisin and
Renner, "Tight finite-key analysis for quantum cryptography", Nat. Commun. 3:634
(2012), eq. (2) with q = 1 (ideal BB84 preparation):

    l <= n (1 - h(Q + mu)) - leak_EC - log2(2 / (eps_sec^2 eps_cor))
    mu = sqrt((n + k) / (n k) * (k + 1) / k * ln(2 / eps_sec))

n key bits, k bits disclosed to estimate the QBER Q, leak_EC the bits disclosed
by reconciliation. The log2(1/eps_cor) part of the last term pays for the
error-verification hash, so that hash is not subtracted again. mu is the
Serfling bound on how far the key's error rate can sit above the sample's.

For E91 the phase-error term is replaced by the device-independent bound of
Acin et al., PRL 98, 230501 (2007): Eve's information per bit is at most
h((1 + sqrt((S/2)^2 - 1)) / 2), evaluated at a Hoeffding lower bound on S.

The asymptotic Shor-Preskill rate 1 - 2h(e) and the seed paper's R = Q[1 - H(e)]
are reported beside it, labelled for what they are: neither is used to size keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def binary_entropy(p: float | np.ndarray) -> float | np.ndarray:
    """h(p) = -p log2 p - (1-p) log2 (1-p) in bits, with h(0) = h(1) = 0."""
    probabilities = np.asarray(p, dtype=float)
    if np.any(np.isnan(probabilities)) or np.any((probabilities < 0) | (probabilities > 1)):
        raise ValueError(f"binary entropy needs probabilities in [0, 1], got {p}")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = -probabilities * np.log2(probabilities) - (1 - probabilities) * np.log2(1 - probabilities)
    entropy = np.where((probabilities == 0) | (probabilities == 1), 0.0, terms)
    return float(entropy) if entropy.ndim == 0 else entropy


def _entropy_of_bound(error_rate: float) -> float:
    """h() of an error-rate upper bound: past 1/2 nothing is secret (h saturates at 1)."""
    return 1.0 if error_rate >= 0.5 else float(binary_entropy(error_rate))


@dataclass(frozen=True)
class FiniteKeyLength:
    """The finite-key length and the terms it is made of, for reports."""

    length: int  # final key bits; 0 when nothing can be kept
    key_bits: int  # n
    sample_bits: int  # k
    qber: float  # Q measured on the sample
    mu: float  # statistical allowance
    qber_upper_bound: float  # Q + mu
    leak_ec: int
    security_bits: float  # log2(2 / (eps_sec^2 eps_cor))

    @property
    def raw_length(self) -> float:
        """The bound before rounding down and clamping at zero (negative means no key)."""
        return (
            self.key_bits * (1 - _entropy_of_bound(self.qber_upper_bound)) - self.leak_ec - self.security_bits
        )


def serfling_mu(key_bits: int, sample_bits: int, eps_sec: float) -> float:
    n, k = key_bits, sample_bits
    if n <= 0 or k <= 0:
        return math.inf
    return math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(2 / eps_sec))


def security_cost_bits(eps_sec: float, eps_cor: float) -> float:
    return math.log2(2 / (eps_sec**2 * eps_cor))


def finite_key_length(
    key_bits: int, sample_bits: int, qber: float, leak_ec: int, *, eps_sec: float, eps_cor: float
) -> FiniteKeyLength:
    """Tomamichel et al. 2012, eq. (2), for BB84 with ideal sources (q = 1)."""
    _check_epsilons(eps_sec, eps_cor)
    mu = serfling_mu(key_bits, sample_bits, eps_sec)
    result = FiniteKeyLength(
        length=0,
        key_bits=key_bits,
        sample_bits=sample_bits,
        qber=qber,
        mu=mu,
        qber_upper_bound=qber + mu,
        leak_ec=leak_ec,
        security_bits=security_cost_bits(eps_sec, eps_cor),
    )
    raw = result.raw_length
    return result if raw < 1 else _with_length(result, math.floor(raw))


def chsh_lower_bound(s_value: float, rounds_per_correlator: list[int], eps: float) -> float:
    """Hoeffding: each correlator in [-1, 1] estimated from m rounds is off by at most sqrt(2 ln(8/eps)/m)."""
    if any(m <= 0 for m in rounds_per_correlator):
        return -math.inf
    return s_value - sum(math.sqrt(2 * math.log(8 / eps) / m) for m in rounds_per_correlator)


def device_independent_eve_information(s_value: float) -> float:
    """Acin et al. 2007: Eve's Holevo information per bit given a CHSH value S (1 when S <= 2)."""
    if s_value <= 2.0:
        return 1.0
    s = min(s_value, 2 * math.sqrt(2))
    return float(binary_entropy((1 + math.sqrt((s / 2) ** 2 - 1)) / 2))


def e91_key_length(key_bits: int, s_lower: float, leak_ec: int, *, eps_sec: float, eps_cor: float) -> int:
    """Key bits from E91 rounds: n (1 - chi(S_low)) - leak_EC - log2(2/(eps_sec^2 eps_cor))."""
    _check_epsilons(eps_sec, eps_cor)
    raw = key_bits * (1 - device_independent_eve_information(s_lower)) - leak_ec
    raw -= security_cost_bits(eps_sec, eps_cor)
    return max(0, math.floor(raw))


def shor_preskill_rate(error_rate: float) -> float:
    """Asymptotic BB84 secret fraction of the sifted key, 1 - 2h(e) (zero at e = 11.0%)."""
    return max(0.0, 1 - 2 * float(binary_entropy(error_rate)))


def seed_paper_rate(sifted_bits_per_signal: float, error_rate: float) -> float:
    """Seed 000, eq. (1): R = Q [1 - H(e)] per signal. Ignores Eve's information: an upper bound."""
    return sifted_bits_per_signal * (1 - float(binary_entropy(error_rate)))


def tomamichel_table_rate(
    signals: float, qber: float, *, eps_per_bit: float = 1e-14, leak_factor: float = 1.1
) -> tuple[float, float]:
    """Key bits per signal sent, optimised over the basis bias p_x, as in Tomamichel et al. Table II.

    Both parties pick the key basis with probability p_x, so n = N p_x^2 key bits
    and k = N (1 - p_x)^2 test bits; eps_sec = eps_cor = eps_per_bit * l (their
    "eps / l"), solved by fixed-point iteration. Returns (rate, best p_x).
    """
    best_rate, best_px = 0.0, 0.5
    for px in np.linspace(0.5, 0.99999, 4000):
        n, k = signals * px**2, signals * (1 - px) ** 2
        if k < 2:
            continue
        length = n
        for _ in range(20):
            eps = max(length, 1.0) * eps_per_bit
            mu = serfling_mu(n, k, eps)  # type: ignore[arg-type]
            length = n * (1 - _entropy_of_bound(qber + mu)) - leak_factor * n * float(binary_entropy(qber))
            length -= security_cost_bits(eps, eps)
            if length <= 0:
                break
        if length > 0 and length / signals > best_rate:
            best_rate, best_px = length / signals, float(px)
    return best_rate, best_px


def _with_length(result: FiniteKeyLength, length: int) -> FiniteKeyLength:
    return FiniteKeyLength(**{**result.__dict__, "length": length})


def _check_epsilons(eps_sec: float, eps_cor: float) -> None:
    for name, eps in (("eps_sec", eps_sec), ("eps_cor", eps_cor)):
        if not 0 < eps < 1:
            raise ValueError(f"{name} must lie strictly between 0 and 1, got {eps}")
