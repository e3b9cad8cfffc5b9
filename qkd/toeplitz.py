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

from collections.abc import Sequence

import numpy as np
import scipy.fft

_DIRECT_LIMIT = 64  # below this many output bits a packed dot product is cheaper than three FFTs
_ROW_CHUNK_BYTES = 1 << 16  # columns of the packed rows built at a time (a multiple of 8)


def seed_length(input_bits: int, output_bits: int) -> int:
    return input_bits + output_bits - 1


def toeplitz_hash(bits: np.ndarray, seed: np.ndarray, output_bits: int) -> np.ndarray:
    """Return ``T(seed) @ bits mod 2`` as a uint8 array of ``output_bits`` bits."""
    return toeplitz_hashes([bits], seed, output_bits)[0]


def toeplitz_hashes(keys: Sequence[np.ndarray], seed: np.ndarray, output_bits: int) -> list[np.ndarray]:
    """:func:`toeplitz_hash` of several equally long keys under one seed.

    Alice and Bob hash their keys with the same public seed (verification, privacy
    amplification); the seed's FFT, or its packed shifts for the row path, is computed
    once for both. Each result is exactly what :func:`toeplitz_hash` gives for that key.
    """
    n = int(keys[0].size)
    if any(key.size != n for key in keys):
        raise ValueError("keys hashed under one seed must have the same length")
    if output_bits <= 0 or n == 0:
        return [np.zeros(0, dtype=np.uint8) for _ in keys]
    if seed.size != seed_length(n, output_bits):
        raise ValueError(
            f"a Toeplitz seed for {n} -> {output_bits} bits needs {seed_length(n, output_bits)} bits"
        )
    if output_bits <= _DIRECT_LIMIT:
        return _hash_by_rows(keys, seed, output_bits)
    size = scipy.fft.next_fast_len(seed.size, real=True)
    seed_spectrum = scipy.fft.rfft(seed.astype(np.float64), size, workers=-1)
    hashes: list[np.ndarray] = []
    for index, bits in enumerate(keys):
        # Bob's corrected key nearly always equals Alice's: the same input, the same hash
        # (one FFT pair of three saved, exactly)
        same = next((j for j in range(index) if np.array_equal(keys[j], bits)), None)
        if same is not None:
            hashes.append(hashes[same].copy())
            continue
        spectrum = scipy.fft.rfft(bits.astype(np.float64), size, workers=-1)
        spectrum *= seed_spectrum
        conv = scipy.fft.irfft(spectrum, size, workers=-1)[n - 1 : n - 1 + output_bits]
        hashes.append((np.rint(conv).astype(np.int64) & 1).astype(np.uint8))
    return hashes


def _hash_by_rows(keys: Sequence[np.ndarray], seed: np.ndarray, output_bits: int) -> list[np.ndarray]:
    """Few output bits (verification hashes): bit i is the parity of row i AND the key,
    computed on packed 64-bit words for all keys at once (exact for any length).

    Row i of T is reversed_seed[m-1-i : m-1-i+n] (T[i, j] = seed[i - j + n - 1]). Rows start
    at every bit offset, so the reversed seed is packed once per shift 0-7 and each row is
    a byte slice of one of those; bits past n meet the keys' zero padding. The rows are
    copied out ``_ROW_CHUNK_BYTES`` columns at a time, which bounds memory for long keys.
    """
    n, m = keys[0].size, output_bits
    row_bytes = 8 * -(-n // 64)
    reversed_seed = np.ascontiguousarray(seed[::-1])  # packbits is 20x slower on a reversed view
    shifted = np.zeros((8, (m - 1) // 8 + row_bytes), dtype=np.uint8)
    for shift in range(min(8, m)):
        packed = np.packbits(reversed_seed[shift:])[: shifted.shape[1]]
        shifted[shift, : packed.size] = packed
    packed_keys = np.zeros((len(keys), row_bytes), dtype=np.uint8)
    packed_keys[:, : -(-n // 8)] = np.packbits(np.stack(keys).astype(np.uint8, copy=False), axis=1)
    folded = np.zeros((len(keys), m), dtype=np.uint64)
    for chunk in range(0, row_bytes, _ROW_CHUNK_BYTES):
        width = min(_ROW_CHUNK_BYTES, row_bytes - chunk)
        rows = np.empty((m, width), dtype=np.uint8)
        for i in range(m):  # one contiguous copy per row: faster than any strided view of them all
            start = (m - 1 - i) // 8 + chunk  # row i starts at bit m-1-i of the reversed seed
            rows[i] = shifted[(m - 1 - i) % 8, start : start + width]
        words = np.ascontiguousarray(packed_keys[:, chunk : chunk + width]).view(np.uint64)
        # Byte order inside a word does not matter: only the parity of all the bits is kept.
        folded ^= np.bitwise_xor.reduce(rows.view(np.uint64)[np.newaxis] & words[:, np.newaxis], axis=2)
    for width in (32, 16, 8, 4, 2, 1):
        folded ^= folded >> np.uint64(width)
    return list((folded & np.uint64(1)).astype(np.uint8))


def toeplitz_matrix(seed: np.ndarray, input_bits: int, output_bits: int) -> np.ndarray:
    """The explicit matrix, for tests and for readers who want to see the definition."""
    i = np.arange(output_bits)[:, None]
    j = np.arange(input_bits)[None, :]
    return seed[i - j + input_bits - 1].astype(np.uint8)
