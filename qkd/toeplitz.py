"""Toeplitz hashing over GF(2): privacy amplification and error verification.

A random binary Toeplitz matrix T (m x n) is defined by n + m - 1 seed bits,
T[i, j] = seed[i - j + n - 1]. The family is 2^-m-almost universal, which is what
both the leftover-hash lemma (privacy amplification) and the error-verification
step need. One implementation serves both.

``T @ x`` is a slice of the linear convolution ``seed * x``; a circular FFT of
length n + m - 1 suffices because wrapped-around terms only land on indices
below n - 1, which are discarded. Float64 FFTs of 0/1 vectors are exact after
rounding for the sizes used here (sums below 2^30).
"""

from __future__ import annotations

import numpy as np
import scipy.fft

_DIRECT_LIMIT = 64  # below this many output bits a packed dot product is cheaper than three FFTs


def seed_length(input_bits: int, output_bits: int) -> int:
    return input_bits + output_bits - 1


def toeplitz_hash(bits: np.ndarray, seed: np.ndarray, output_bits: int) -> np.ndarray:
    """Return ``T(seed) @ bits mod 2`` as a uint8 array of ``output_bits`` bits."""
    n = int(bits.size)
    if output_bits <= 0 or n == 0:
        return np.zeros(0, dtype=np.uint8)
    if seed.size != seed_length(n, output_bits):
        raise ValueError(
            f"a Toeplitz seed for {n} -> {output_bits} bits needs {seed_length(n, output_bits)} bits"
        )
    if output_bits <= _DIRECT_LIMIT:
        return _hash_by_rows(bits, seed, output_bits)
    size = scipy.fft.next_fast_len(seed.size, real=True)
    spectrum = scipy.fft.rfft(bits.astype(np.float64), size, workers=-1)
    spectrum *= scipy.fft.rfft(seed.astype(np.float64), size, workers=-1)
    conv = scipy.fft.irfft(spectrum, size, workers=-1)[n - 1 : n - 1 + output_bits]
    return (np.rint(conv).astype(np.int64) & 1).astype(np.uint8)


def _hash_by_rows(bits: np.ndarray, seed: np.ndarray, output_bits: int) -> np.ndarray:
    """Few output bits (verification hashes): one float32 dot product per row, exact below 2^24."""
    n = bits.size
    if n >= 1 << 24:
        raise ValueError("inputs of 2^24 bits or more need the FFT path")
    x = bits.astype(np.float32)
    reversed_seed = seed[::-1].astype(np.float32)
    # Row i is reversed_seed[m-1-i : m-1-i+n] (T[i, j] = seed[i - j + n - 1]).
    sums = [
        float(reversed_seed[output_bits - 1 - i : output_bits - 1 - i + n] @ x) for i in range(output_bits)
    ]
    return (np.rint(sums).astype(np.int64) & 1).astype(np.uint8)


def toeplitz_matrix(seed: np.ndarray, input_bits: int, output_bits: int) -> np.ndarray:
    """The explicit matrix, for tests and for readers who want to see the definition."""
    i = np.arange(output_bits)[:, None]
    j = np.arange(input_bits)[None, :]
    return seed[i - j + input_bits - 1].astype(np.uint8)
