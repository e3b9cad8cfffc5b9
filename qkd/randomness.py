"""Uniform random bits drawn from whole 32-bit words.

Why: a session draws about 400,000 fair bits (bases, bits, BICONF subsets, hash seeds),
and ``rng.integers(0, 2, n, dtype=...)`` spends most of its time per output element.
These helpers ask the generator for ``uint32`` words, whose full range has a fast path,
and read the bits out of them with one vectorized operation.

The values and the generator's state afterwards are the same as those of
``rng.integers(0, 2, n, dtype=np.uint8)`` and ``rng.integers(0, 2, n, dtype=bool)``:
NumPy draws those from 32-bit words as well, one byte per ``uint8`` output (its top bit,
by Lemire's method with range 2) and one bit per ``bool`` output (least significant
first). So seeded results did not change when the quantum stage and Cascade moved to
these helpers (``tests/test_randomness.py`` checks it against the installed NumPy). Were
NumPy to change its scheme, the bits here would still be independent and uniform; only
the equality with ``rng.integers`` would go.
"""

from __future__ import annotations

import numpy as np

_WORD = 1 << 32  # exclusive upper bound of a full-range uint32 draw


def random_bits(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` independent fair bits as uint8 0/1, four per 32-bit word (a byte's top bit)."""
    return _words(-(-n // 4), rng).view(np.uint8)[:n] >> 7


def random_mask(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` independent fair booleans, 32 per 32-bit word (least significant bit first)."""
    return np.unpackbits(_words(-(-n // 32), rng).view(np.uint8), count=n, bitorder="little").view(bool)


def _words(count: int, rng: np.random.Generator) -> np.ndarray:
    """Full-range uint32 words, little-endian so that bytes come in NumPy's order everywhere."""
    return rng.integers(0, _WORD, size=count, dtype=np.uint32).astype("<u4", copy=False)
