"""Cascade information reconciliation, vectorized with NumPy.

Three parameter sets from Martinez-Mateo, Pacher, Peev, Ciurana, Martin, "Demystifying
the information reconciliation protocol Cascade", arXiv:1407.3257 (2015):

* ``original`` - Brassard and Salvail (1993): 4 passes, k1 = ceil(0.73/Q), k_i = 2 k_{i-1}.
* ``biconf`` - the paper's "mod. (1)": 2 Cascade passes with k1 = ceil(0.92/Q), k2 = 3 k1,
  then BICONF rounds (Sugimoto-Yamazaki) until 10 consecutive rounds show equal parity.
* ``yanetal`` - the paper's "opt. (2)" (Yan et al.): 10 passes, k1 = ceil(0.80/Q),
  k2 = 5 k1, k_i = ceil(n/2) from pass 3 on.

How the protocol is run here, and why:

* Alice's side is :class:`_AliceParityOracle`. It is the only code that reads her key, it
  only ever answers parity questions, and every parity it answers goes through the
  :class:`~qkd.classical.ClassicalChannel` as disclosed bits. ``leaked_bits`` is read back
  from the channel, so the accounting cannot drift from what was actually sent.
* A pass reveals the parities of all its top-level blocks in one message (one channel use).
* Every block whose parity differs (in any pass opened so far, including blocks that became
  odd because a bit was flipped: the cascade effect) is bisected in lock-step with all the
  others: one channel use per bisection level, in which Alice sends the parity of the left
  half of every active range. The right half's parity is inferred from its parent's, as in
  BINARY. After the last level Bob flips every bit found (each found bit is a real error in
  the key he searched, so duplicates are merged and no error is ever introduced), updates
  the parity relation of every block of every pass containing a flipped bit, and searches
  the blocks that are now odd in the next round, until none is left.
* Alice's parities of sub-blocks are remembered (the bisection tree of a block is
  deterministic), so when a block is searched again after a cascade flip, levels whose
  parity Bob already knows cost nothing and are not counted as disclosed. This is what
  Rijsman's cascade-python does by keeping its sub-block objects, the implementation used
  to reproduce the paper's figures.
* BICONF round: a random subset (each bit independently with probability 1/2; its seed is
  the request), Alice sends the subset's parity (1 disclosed bit). If it differs, the
  subset is bisected (in natural order) to find an error, the bit is flipped and the flip
  cascades back through the Cascade passes and the earlier BICONF subsets (their parities
  are known, so they take part in the cascade like any block). The complement's parity is
  not asked for. Rounds stop after 10 consecutive rounds with equal parity; a round whose
  parity differed resets the count.

Passes after the first use a fresh permutation drawn from ``rng``; in a deployment Bob would
send its seed with his request (counted as 64 request bits, no disclosure). The final block
of a pass may be shorter than the others.

Measured at n = 10^4 (1000 frames) the mean efficiencies match the paper's: original
1.13/1.14/1.17/1.20 at 1/2/5/10% QBER, biconf 1.07-1.09, yanetal 1.07-1.09. yanetal's
frame error rate is a few 1e-3: its passes 3-10 each add one independent parity check (two
halves of the key), so error pairs that survive pass 2 escape all eight with probability
2^-8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .classical import ClassicalChannel, index_bits
from .keylength import binary_entropy
from .randomness import random_mask

METHODS = ("original", "biconf", "yanetal")

MIN_QBER_FOR_BLOCK_SIZE = 1e-4
"""Estimated QBERs below this are raised to it when choosing block sizes (k1 = 7300 for
``original``), so an estimate of 0 still gives finite blocks; blocks are also capped at n."""

SEED_BITS = 64
"""Request size of a message that carries a permutation or subset seed."""


@dataclass(frozen=True)
class CascadeParameters:
    """One Cascade variant, named as in Martinez-Mateo et al. (arXiv:1407.3257)."""

    name: str
    paper_name: str
    cascade_passes: int
    first_block_factor: float  # k1 = ceil(first_block_factor / Q)
    growth: int  # k_i = growth * k_{i-1}
    half_key_from_pass: int | None = None  # from this 1-based pass on, k_i = ceil(n / 2)
    biconf_clean_rounds: int = 0  # 0: no BICONF; else stop after this many equal-parity rounds

    def block_sizes(self, n: int, qber: float) -> list[int]:
        """Top-level block size of each Cascade pass for an ``n``-bit key at estimated ``qber``.

        Each size is clamped to [1, n]; QBER estimates below ``MIN_QBER_FOR_BLOCK_SIZE`` are
        raised to it so a zero estimate does not give an infinite block.
        """
        if n < 1:
            raise ValueError(f"key length must be positive, got {n}")
        if not 0.0 <= qber <= 0.5:
            raise ValueError(f"estimated QBER must be in [0, 0.5], got {qber}")
        q = max(qber, MIN_QBER_FOR_BLOCK_SIZE)
        # The tiny tolerance keeps ceil(0.73 / 0.01) at 73 despite float rounding.
        size = max(1, math.ceil(self.first_block_factor / q - 1e-9))
        sizes = []
        for pass_number in range(1, self.cascade_passes + 1):
            if pass_number > 1:
                size *= self.growth
            if self.half_key_from_pass is not None and pass_number >= self.half_key_from_pass:
                size = (n + 1) // 2
            sizes.append(min(max(size, 1), n))
        return sizes


_PARAMETERS = {
    "original": CascadeParameters(
        name="original",
        paper_name="original (Brassard-Salvail)",
        cascade_passes=4,
        first_block_factor=0.73,
        growth=2,
    ),
    "biconf": CascadeParameters(
        name="biconf",
        paper_name="mod. (1): 2 passes + BICONF",
        cascade_passes=2,
        first_block_factor=0.92,
        growth=3,
        biconf_clean_rounds=10,
    ),
    "yanetal": CascadeParameters(
        name="yanetal",
        paper_name="opt. (2) (Yan et al.)",
        cascade_passes=10,
        first_block_factor=0.80,
        growth=5,
        half_key_from_pass=3,
    ),
}


def parameters(method: str) -> CascadeParameters:
    """The parameter set of a Cascade variant by name (one of ``METHODS``)."""
    try:
        return _PARAMETERS[method]
    except (KeyError, TypeError):
        raise ValueError(f"unknown Cascade method {method!r}; choose one of {', '.join(METHODS)}") from None


@dataclass(frozen=True, eq=False)
class ReconciliationResult:
    """Bob's reconciled key and what reconciling it cost."""

    corrected: np.ndarray  # Bob's key after reconciliation, uint8 0/1
    leaked_bits: int  # parity bits Alice disclosed, exactly as counted by the channel
    channel_uses: int  # round trips: one request and its reply = 1
    passes: int  # Cascade passes plus BICONF rounds actually run
    method: str
    flipped_bits: int = 0  # bits Bob corrected

    def efficiency(self, qber: float) -> float:
        """f = leaked_bits / (n h(qber)): 1 is the Shannon limit. Undefined for qber 0."""
        entropy = binary_entropy(qber)
        if entropy == 0:
            raise ValueError(f"efficiency is undefined at QBER {qber}: h(QBER) = 0")
        return self.leaked_bits / (self.corrected.size * entropy)


class _AliceParityOracle:
    """Alice's side: holds her key and answers parity requests, counting what she reveals.

    She learns each pass's order (in reality from the seed Bob sends) and keeps a prefix
    XOR of her key in that order, so any range parity is two lookups. Her key never changes.

    A BICONF pass is learnt as its subset, and its prefix is built only before the next
    range request: most subsets are only ever asked for their parity (the last 10 rounds
    always are), and building a prefix costs more than all the rest of such a round.
    """

    def __init__(self, key: np.ndarray, channel: ClassicalChannel, stage: str, capacity: int = 4) -> None:
        self._key = key
        self._channel = channel
        self._stage = stage
        self._prefix = np.zeros((max(capacity, 1), key.size + 1), dtype=np.uint8)
        self._flat_prefix = self._prefix.reshape(-1)
        self._subsets: dict[int, np.ndarray] = {}  # BICONF pass -> its subset (a boolean mask)
        self._unbuilt: list[int] = []  # BICONF passes whose prefix is not built yet
        self._passes = 0
        self._position_bits = index_bits(1, key.size + 1)
        self._pass_bits = 1

    def learn_order(self, order: np.ndarray) -> int:
        """Register a pass's permutation; returns the pass id used in later requests."""
        pass_id = self._new_pass()
        np.bitwise_xor.accumulate(self._key[order], out=self._prefix[pass_id, 1:])
        return pass_id

    def learn_subset(self, subset: np.ndarray) -> int:
        """Register a BICONF pass, whose order is the subset's members, then the other positions."""
        pass_id = self._new_pass()
        self._subsets[pass_id] = subset
        self._unbuilt.append(pass_id)
        return pass_id

    def _new_pass(self) -> int:
        if self._passes == self._prefix.shape[0]:
            self._prefix = _doubled(self._prefix)
            self._flat_prefix = self._prefix.reshape(-1)
        self._passes += 1
        self._pass_bits = index_bits(1, self._passes)
        return self._passes - 1

    def block_parities(
        self, pass_id: int, starts: np.ndarray, ends: np.ndarray, *, request_bits: int
    ) -> np.ndarray:
        """Parities of the given blocks of one pass, in one reply."""
        self._build_prefixes()
        prefix = self._prefix[pass_id]
        parities = prefix[ends] ^ prefix[starts]
        self._channel.exchange(self._stage, request_bits, parities.size, disclosed_bits=int(parities.size))
        return parities

    def subset_parity(self, pass_id: int, *, request_bits: int) -> np.ndarray:
        """Parity of a BICONF pass's subset, in one reply (a one-element array, as a block's)."""
        # uint8 0/1 viewed as bool: the AND is the key restricted to the subset
        ones = np.count_nonzero(np.logical_and(self._key.view(bool), self._subsets[pass_id]))
        self._channel.exchange(self._stage, request_bits, 1, disclosed_bits=1)
        return np.array([ones & 1], dtype=np.uint8)

    def pass_coordinates(self, pass_ids: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Names index ``i`` of pass ``p``'s order as ``p * (n + 1) + i``, one integer per
        range end, so a request for ranges of many passes is two integer arrays."""
        return pass_ids * self._prefix.shape[1] + indices

    def range_parities(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Parities of ranges [start, end) given in pass coordinates, in one reply (one
        bisection level over all searches)."""
        self._build_prefixes()
        parities = self._flat_prefix[ends] ^ self._flat_prefix[starts]
        count = parities.size
        # Each range is named by its pass, start and end.
        request_bits = count * (2 * self._position_bits + self._pass_bits)
        self._channel.exchange(self._stage, request_bits, count, disclosed_bits=count)
        return parities

    def _build_prefixes(self) -> None:
        """The prefixes of all BICONF passes learnt since the last request that needed one."""
        for pass_id in self._unbuilt:
            order = _subset_order(self._subsets[pass_id])
            np.bitwise_xor.accumulate(self._key[order], out=self._prefix[pass_id, 1:])
        self._unbuilt.clear()


class _CascadeBob:
    """Bob's side: owns the noisy key, opens passes, bisects odd blocks, flips bits.

    Blocks of all passes live in flat arrays (global block ids; the first ``_blocks`` entries
    are used, the rest is spare room that stays not known and not odd), and
    ``_block_of[p, x]`` is the global id of the block of pass ``p`` containing key position
    ``x``, so the cascade effect of a set of flips is one scatter over all passes at once.

    Alice's left-half parities are remembered in ``_left_parity[p, mid]``: every range the
    bisection splits (length >= 2) has its own split point ``mid`` within a pass (the split
    points of one block's bisection tree form a binary search tree), so (pass, mid) names
    the range, and a block searched again after a cascade flip reuses what was disclosed.

    Like Alice, Bob fills a BICONF pass's rows of ``_orders`` and ``_block_of`` only when
    the next search starts (``_unbuilt``): a round whose parity agrees never searches.
    """

    def __init__(self, key: np.ndarray, alice: _AliceParityOracle, capacity: int, blocks: int) -> None:
        n = key.size
        self.key = key
        self._n = n
        self._alice = alice
        self._orders = np.empty((capacity, n), dtype=np.int32)
        self._block_of = np.empty((capacity, n), dtype=np.int32)
        self._left_known = np.zeros((capacity, n + 1), dtype=bool)
        self._left_parity = np.zeros((capacity, n + 1), dtype=np.uint8)
        self._passes = 0
        self._unbuilt: list[tuple[int, np.ndarray, int]] = []  # BICONF (pass, subset, first block)
        self._blocks = 0
        self._block_pass = np.zeros(blocks, dtype=np.int64)
        self._block_start = np.zeros(blocks, dtype=np.int64)
        self._block_end = np.zeros(blocks, dtype=np.int64)
        self._block_known = np.zeros(blocks, dtype=bool)  # False: Alice never disclosed its parity
        self._block_odd = np.zeros(blocks, dtype=bool)  # Bob's parity differs from Alice's
        self.flipped = 0

    @property
    def passes(self) -> int:
        return self._passes

    def run_cascade_pass(self, order: np.ndarray, block_size: int) -> None:
        """Reveal all top-level parities of a pass, then correct until every block is even."""
        starts = np.arange(0, self._n, block_size, dtype=np.int64)
        ends = np.minimum(starts + block_size, self._n)
        pass_id = self._open_pass(self._alice.learn_order(order))
        self._orders[pass_id] = order
        block_of = self._block_of[pass_id]  # a row, then a 1-D scatter: faster than [pass_id, order]
        block_of[order] = np.arange(self._n, dtype=np.int32) // block_size + self._blocks
        # uint8 sums wrap modulo 256, which keeps their parity.
        bob_parities = np.add.reduceat(self.key[order], starts) & 1
        alice_parities = self._alice.block_parities(pass_id, starts, ends, request_bits=SEED_BITS)
        known = np.ones(starts.size, dtype=bool)
        self._add_blocks(pass_id, starts, ends, known, bob_parities != alice_parities)
        self._correct_until_consistent()

    def run_biconf_round(self, subset: np.ndarray) -> bool:
        """Compare the parity of the subset (a boolean mask); fix and cascade if it differs.

        The subset is bisected in natural order; returns whether the parities differed.
        Its pass has two blocks, the subset and the rest, whose parity is never asked for.
        """
        pass_id = self._open_pass(self._alice.learn_subset(subset))
        self._unbuilt.append((pass_id, subset, self._blocks))
        alice_parity = self._alice.subset_parity(pass_id, request_bits=SEED_BITS)
        bob_parity = np.count_nonzero(np.logical_and(self.key.view(bool), subset)) & 1
        differed = bool(alice_parity[0] != bob_parity)
        members = int(np.count_nonzero(subset))
        self._add_blocks(
            pass_id,
            np.array([0, members], dtype=np.int64),
            np.array([members, self._n], dtype=np.int64),
            np.array([True, False]),
            np.array([differed, False]),
        )
        if differed:
            self._correct_until_consistent()
        return differed

    def _open_pass(self, pass_id: int) -> int:
        """Make room for the pass Alice just registered; returns its id."""
        assert pass_id == self._passes, "Alice and Bob must agree on pass numbering"
        if self._passes == self._orders.shape[0]:
            self._orders = _doubled(self._orders)
            self._block_of = _doubled(self._block_of)
            self._left_known = _doubled(self._left_known)
            self._left_parity = _doubled(self._left_parity)
        self._passes += 1
        return pass_id

    def _add_blocks(
        self, pass_id: int, starts: np.ndarray, ends: np.ndarray, known: np.ndarray, odd: np.ndarray
    ) -> None:
        """Append a pass's blocks (their global ids continue from ``_blocks``)."""
        first, stop = self._blocks, self._blocks + starts.size
        if stop > self._block_pass.size:
            size = max(stop, 2 * self._block_pass.size)
            self._block_pass = _grown(self._block_pass, size)
            self._block_start = _grown(self._block_start, size)
            self._block_end = _grown(self._block_end, size)
            self._block_known = _grown(self._block_known, size)
            self._block_odd = _grown(self._block_odd, size)
        self._block_pass[first:stop] = pass_id
        self._block_start[first:stop] = starts
        self._block_end[first:stop] = ends
        self._block_known[first:stop] = known
        self._block_odd[first:stop] = odd & known
        self._blocks = stop

    def _build_biconf_rows(self) -> None:
        """Bob's rows of the BICONF passes opened since the last search (see the class doc)."""
        for pass_id, subset, first_block in self._unbuilt:
            self._orders[pass_id] = _subset_order(subset)
            # members are in the pass's first block, the other positions in the second
            np.add(~subset, first_block, out=self._block_of[pass_id], dtype=np.int32)
        self._unbuilt.clear()

    def _correct_until_consistent(self) -> None:
        """Bisect all odd blocks in lock-step, flip what is found, repeat until none is odd."""
        self._build_biconf_rows()  # searches read _orders, flips read every pass's _block_of
        while True:
            odd_blocks = np.flatnonzero(self._block_odd)
            if odd_blocks.size == 0:
                return
            self._flip(self._bisect(odd_blocks))

    def _bisect(self, blocks: np.ndarray) -> np.ndarray:
        """Find one error in each given odd block, all searches in lock-step.

        Invariant: each range still searched has Bob's parity differing from Alice's. Ranges
        of one bit are errors and leave the search. Returns the distinct key positions found
        (blocks of different passes can lead to the same error).
        """
        pass_ids = self._block_pass[blocks]
        starts = self._block_start[blocks]
        lengths = self._block_end[blocks] - starts

        # Bob's key is fixed during the searches: his bits of all searched blocks, each in
        # its pass's order, laid end to end ("laid" coordinates), and their prefix XOR.
        laid_at = np.cumsum(lengths) - lengths
        laid_order_slot = np.repeat(pass_ids * self._n + starts - laid_at, lengths) + np.arange(
            laid_at[-1] + lengths[-1]
        )
        laid_positions = self._orders.reshape(-1)[laid_order_slot]
        bob_prefix = np.zeros(laid_positions.size + 1, dtype=np.uint8)
        np.bitwise_xor.accumulate(self.key[laid_positions], out=bob_prefix[1:])

        # Each search carries the start of its range twice: in laid coordinates (for Bob's
        # prefix) and in pass coordinates (for Alice and the cache of her parities).
        laid_start = laid_at
        pass_start = self._alice.pass_coordinates(pass_ids, starts)
        left_known = self._left_known.reshape(-1)
        left_parity = self._left_parity.reshape(-1)

        # The loop runs once per bisection level. It avoids np.where and .any(), whose
        # per-call overhead dominates for the few hundred ranges of a level.
        found = []
        while True:
            single = lengths == 1
            if np.count_nonzero(single):
                found.append(laid_positions[laid_start[single]])
                searching = ~single
                laid_start, pass_start, lengths = (
                    laid_start[searching],
                    pass_start[searching],
                    lengths[searching],
                )
                if lengths.size == 0:
                    break
            left_lengths = (lengths + 1) >> 1
            pass_mid = pass_start + left_lengths
            laid_mid = laid_start + left_lengths
            already_known = left_known[pass_mid]
            known_count = np.count_nonzero(already_known)
            if known_count == 0:  # the usual case: the first search through these ranges
                left_alice = self._alice.range_parities(pass_start, pass_mid)
                left_parity[pass_mid] = left_alice
                left_known[pass_mid] = True
            else:
                left_alice = left_parity[pass_mid]
                if known_count < pass_mid.size:
                    ask = (~already_known).nonzero()[0]
                    asked_mid = pass_mid[ask]
                    replies = self._alice.range_parities(pass_start[ask], asked_mid)
                    left_alice[ask] = replies
                    left_parity[asked_mid] = replies
                    left_known[asked_mid] = True
            error_on_right = left_alice == (bob_prefix[laid_mid] ^ bob_prefix[laid_start])
            step = error_on_right * left_lengths
            laid_start += step
            pass_start += step
            # The right half has lengths - left_lengths = left_lengths - (lengths odd) bits.
            lengths = left_lengths - (error_on_right & (lengths & 1))
        positions = np.sort(np.concatenate(found))
        # np.unique without its overhead: keep the first of each run of equal positions.
        return positions[np.concatenate(([True], positions[1:] != positions[:-1]))]

    def _flip(self, positions: np.ndarray) -> None:
        """Correct the bits and toggle the parity relation of every block containing them."""
        self.key[positions] ^= 1
        self.flipped += positions.size
        touched = self._block_of[: self._passes, positions].ravel()
        np.logical_xor.at(self._block_odd, touched, True)
        self._block_odd &= self._block_known


def _subset_order(subset: np.ndarray) -> np.ndarray:
    """A BICONF pass's order: the subset's positions, then the others, each ascending."""
    return np.concatenate([np.flatnonzero(subset), np.flatnonzero(~subset)])


def _doubled(table: np.ndarray) -> np.ndarray:
    """The table with as many new zero rows appended as it had (room for more passes)."""
    return np.concatenate([table, np.zeros_like(table)])


def _grown(array: np.ndarray, size: int) -> np.ndarray:
    """The array with zeros appended up to ``size`` entries (room for more blocks)."""
    return np.concatenate([array, np.zeros(size - array.size, dtype=array.dtype)])


def _as_key(bits: np.ndarray, who: str) -> np.ndarray:
    array = np.asarray(bits)
    if array.ndim != 1:
        raise ValueError(f"{who}'s key must be a 1-D array of bits, got shape {array.shape}")
    if array.dtype.kind not in "biu":
        raise ValueError(f"{who}'s key must hold integers 0/1, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(f"{who}'s key must hold only 0 and 1")
    return array.astype(np.uint8)  # always a copy


def reconcile(
    alice: np.ndarray,
    bob: np.ndarray,
    qber: float,
    *,
    method: str = "original",
    rng: np.random.Generator,
    channel: ClassicalChannel | None = None,
    stage: str = "reconciliation",
) -> ReconciliationResult:
    """Reconcile Bob's key with Alice's by Cascade; ``qber`` is the estimate that sets block sizes.

    Alice's key is read only by the parity oracle, whose every answer is counted in
    ``channel`` under ``stage`` (a private channel if none is given). ``rng`` draws the
    shared permutations and BICONF subsets.
    """
    params = parameters(method)
    alice_key = _as_key(alice, "Alice")
    bob_key = _as_key(bob, "Bob")  # a copy: the input is not modified
    if alice_key.size != bob_key.size:
        raise ValueError(f"keys differ in length: Alice {alice_key.size}, Bob {bob_key.size}")
    if alice_key.size == 0:
        raise ValueError("keys are empty: nothing to reconcile")
    qber = float(qber)
    if not 0.0 <= qber <= 0.5:
        raise ValueError(f"estimated QBER must be in [0, 0.5], got {qber}")
    n = alice_key.size
    channel = channel if channel is not None else ClassicalChannel()
    disclosed_before = channel.disclosed(stage)
    uses_before = channel.channel_uses(stage)

    # BICONF usually runs a few rounds more than its clean ones (13 passes at n = 16,000, 2%
    # QBER): room for twice as many, so the tables seldom need to grow
    capacity = params.cascade_passes + 2 * params.biconf_clean_rounds
    block_sizes = params.block_sizes(n, qber)
    blocks = sum(-(-n // size) for size in block_sizes) + 2 * 2 * params.biconf_clean_rounds
    oracle = _AliceParityOracle(alice_key, channel, stage, capacity)
    bob_side = _CascadeBob(bob_key, oracle, capacity, blocks)
    for pass_index, block_size in enumerate(block_sizes):
        order = np.arange(n) if pass_index == 0 else rng.permutation(n)
        bob_side.run_cascade_pass(order, block_size)

    clean_rounds = 0
    while clean_rounds < params.biconf_clean_rounds:
        subset = random_mask(n, rng)  # each bit with probability 1/2
        clean_rounds = 0 if bob_side.run_biconf_round(subset) else clean_rounds + 1

    return ReconciliationResult(
        corrected=bob_side.key,
        leaked_bits=channel.disclosed(stage) - disclosed_before,
        channel_uses=channel.channel_uses(stage) - uses_before,
        passes=bob_side.passes,
        method=params.name,
        flipped_bits=bob_side.flipped,
    )
