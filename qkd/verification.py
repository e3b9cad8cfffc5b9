"""Error verification: did reconciliation leave the two keys identical?

Alice sends a fresh Toeplitz seed and the hash of her key; Bob hashes his key
with the same seed and compares in constant time. Two different keys collide
with probability 2^-m for m = ceil(log2(1/eps_cor)) hash bits, so a passing
check makes the keys eps_cor-correct. The hash's m disclosed bits are paid for
by the log2(1/eps_cor) term of the finite-key length, not counted again.
"""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass

import numpy as np

from .classical import ClassicalChannel
from .randomness import random_bits
from .toeplitz import seed_length, toeplitz_hashes


@dataclass(frozen=True)
class VerificationResult:
    hash_bits: int
    passed: bool


def hash_bits_for(eps_cor: float) -> int:
    return max(1, math.ceil(math.log2(1 / eps_cor)))


def verify_keys(
    alice: np.ndarray,
    bob: np.ndarray,
    eps_cor: float,
    rng: np.random.Generator,
    classical: ClassicalChannel,
    *,
    stage: str = "verification",
) -> VerificationResult:
    m = hash_bits_for(eps_cor)
    seed = random_bits(seed_length(alice.size, m), rng)
    alice_hash, bob_hash = toeplitz_hashes([alice, bob], seed, m)
    alice_tag = np.packbits(alice_hash).tobytes()
    bob_tag = np.packbits(bob_hash).tobytes()
    passed = hmac.compare_digest(alice_tag, bob_tag)
    # Alice sends the seed and her tag (its bits are paid for by the eps_cor term); Bob answers pass/fail.
    classical.exchange(stage, seed.size + m, 1)
    return VerificationResult(hash_bits=m, passed=passed)
