"""Parameter estimation: disclose a random sample of the sifted key, measure its QBER.

The sample is public once compared, so it is removed from the key; what is left
(n bits) goes on to reconciliation. The statistical upper bound on the key's
error rate is the Serfling allowance mu of the finite-key analysis, so the
abort decision and the key length use the same number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .classical import ClassicalChannel, index_bits
from .keylength import serfling_mu


@dataclass(frozen=True)
class QberEstimate:
    sample_bits: int
    errors: int
    qber: float
    mu: float

    @property
    def upper_bound(self) -> float:
        return min(1.0, self.qber + self.mu)


def sample_size(sifted_bits: int, sample_fraction: float, minimum: int = 64) -> int:
    """Bits to disclose: a fraction of the sifted key, never fewer than a useful minimum."""
    wanted = max(minimum, round(sifted_bits * sample_fraction))
    return min(wanted, sifted_bits // 2)


def estimate_qber(
    alice: np.ndarray,
    bob: np.ndarray,
    sample_fraction: float,
    rng: np.random.Generator,
    classical: ClassicalChannel,
    *,
    eps_sec: float,
    stage: str = "estimation",
) -> tuple[QberEstimate, np.ndarray, np.ndarray]:
    """Compare a random sample; return the estimate and both keys without the sample."""
    k = sample_size(alice.size, sample_fraction)
    positions = rng.choice(alice.size, size=k, replace=False) if k else np.zeros(0, dtype=np.int64)
    # Bob names the positions and his bits there; Alice answers with hers. The k sampled
    # positions are public now (counted once) and leave the key.
    classical.exchange(stage, index_bits(k, alice.size) + k, k, disclosed_bits=k)
    errors = int(np.count_nonzero(alice[positions] != bob[positions]))
    keep = np.ones(alice.size, dtype=bool)
    keep[positions] = False
    n = int(keep.sum())
    estimate = QberEstimate(
        sample_bits=k, errors=errors, qber=errors / k if k else 1.0, mu=serfling_mu(n, k, eps_sec)
    )
    return estimate, alice[keep], bob[keep]
