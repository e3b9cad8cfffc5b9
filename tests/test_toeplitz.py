"""Toeplitz hashing: the FFT and row paths equal the explicit matrix product over GF(2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkd import toeplitz
from qkd.toeplitz import seed_length, toeplitz_hash, toeplitz_hashes, toeplitz_matrix


def _direct(bits: np.ndarray, seed: np.ndarray, m: int) -> np.ndarray:
    return (toeplitz_matrix(seed, bits.size, m).astype(np.int64) @ bits.astype(np.int64)) % 2


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), m=st.integers(1, 400), seed=st.integers(0, 2**32 - 1))
def test_hash_equals_the_matrix_product(n: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, n, dtype=np.uint8)
    key_seed = rng.integers(0, 2, seed_length(n, m), dtype=np.uint8)
    assert np.array_equal(toeplitz_hash(bits, key_seed, m), _direct(bits, key_seed, m))


@pytest.mark.parametrize("m", [50, 64, 65, 5000])
def test_both_paths_agree_on_a_large_input(m: int) -> None:
    """Rounding of the float FFT stays exact at 2*10^5 input bits (sums well above 2^16)."""
    rng = np.random.default_rng(m)
    n = 200_000
    bits = np.ones(n, dtype=np.uint8)  # all ones: the largest possible sums
    key_seed = rng.integers(0, 2, seed_length(n, m), dtype=np.uint8)
    hashed = toeplitz_hash(bits, key_seed, m)
    rows = [int(key_seed[i : i + n].sum()) & 1 for i in range(min(m, 70))]  # row i sums seed[i..i+n-1]
    assert hashed[: len(rows)].tolist() == rows


def test_matrix_definition_is_toeplitz() -> None:
    seed = np.arange(7) % 2
    t = toeplitz_matrix(seed, 4, 4)
    assert all(t[i, j] == t[i + 1, j + 1] for i in range(3) for j in range(3))
    assert t[0, 3] == seed[0] and t[3, 0] == seed[6]


def test_wrong_seed_length_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 14 bits"):
        toeplitz_hash(np.zeros(10, dtype=np.uint8), np.zeros(10, dtype=np.uint8), 5)


def test_empty_output() -> None:
    assert toeplitz_hash(np.ones(8, dtype=np.uint8), np.ones(8, dtype=np.uint8), 0).size == 0


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 700),
    m=st.sampled_from([1, 7, 8, 9, 50, 63, 64, 65, 300]),
    keys=st.integers(1, 3),
    chunk=st.sampled_from([8, 16, 1 << 16]),
    seed=st.integers(0, 2**32 - 1),
)
def test_several_keys_under_one_seed_hash_as_each_alone(
    n: int, m: int, keys: int, chunk: int, seed: int
) -> None:
    """Both paths, and the row path built a few columns at a time, against the matrix."""
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(0, 2, n, dtype=np.uint8) for _ in range(keys)]
    key_seed = rng.integers(0, 2, seed_length(n, m), dtype=np.uint8)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(toeplitz, "_ROW_CHUNK_BYTES", chunk)
        hashed = toeplitz_hashes(inputs, key_seed, m)
    assert len(hashed) == keys
    for bits, digest in zip(inputs, hashed, strict=True):
        assert digest.dtype == np.uint8
        assert np.array_equal(digest, _direct(bits, key_seed, m))


def test_equal_keys_hash_alike_and_apart() -> None:
    """The FFT path hashes a repeated key once: the result is still each key's own hash,
    and a separate array (a caller may change one party's final key)."""
    rng = np.random.default_rng(5)
    n, m = 300, 120
    alice = rng.integers(0, 2, n, dtype=np.uint8)
    other = alice.copy()
    other[7] ^= 1
    key_seed = rng.integers(0, 2, seed_length(n, m), dtype=np.uint8)
    first, second, third = toeplitz_hashes([alice, alice.copy(), other], key_seed, m)
    assert np.array_equal(first, _direct(alice, key_seed, m))
    assert np.array_equal(second, first) and second is not first
    assert np.array_equal(third, _direct(other, key_seed, m))
    second[0] ^= 1
    assert np.array_equal(first, _direct(alice, key_seed, m))


def test_keys_hashed_together_must_have_one_length() -> None:
    with pytest.raises(ValueError, match="same length"):
        toeplitz_hashes(
            [np.zeros(10, dtype=np.uint8), np.zeros(9, dtype=np.uint8)], np.zeros(14, np.uint8), 5
        )
