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
  only ever answers parity questions, and every answer is tallied as a message with its
  disclosed bits where it is given (:class:`_Tally`, posted to the session's
  :class:`~qkd.classical.ClassicalChannel` at the end). ``leaked_bits`` is that tally, so
  the accounting cannot drift from what was actually sent.
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

Several sessions can be reconciled side by side (:func:`reconcile_together`): their keys
lie end to end and every step serves all of them, each with its own parameters, draws and
accounting, so each gets exactly its lone result for a fraction of the NumPy calls.

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

import dataclasses
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


class _Layout:
    """Where each session's key lies in the combined key of a joint reconciliation.

    Session i owns slots ``[start[i], start[i] + n[i])`` and one spare slot after them
    (0 in both keys, in no block, never searched). The spare slot gives every session a
    prefix slice of its own in every pass, so a pass's rows can be built for some sessions
    only (the lazy BICONF rows) without knowing the others'.
    """

    def __init__(self, sizes: list[int]) -> None:
        self.sessions = len(sizes)
        self.n = np.array(sizes, dtype=np.int64)
        self.start = np.concatenate(([0], np.cumsum(self.n + 1)[:-1])).astype(np.int64)
        self.slots = int((self.n + 1).sum())
        self.session_of_slot = np.repeat(np.arange(self.sessions), self.n + 1)
        self.position_bits = np.array([index_bits(1, size + 1) for size in sizes], dtype=np.int64)
        self.block_sessions = np.repeat(np.arange(self.sessions), 2)  # of a BICONF pass's blocks
        self.start_list, self.n_list = self.start.tolist(), self.n.tolist()
        # One buffer for the key-and-subset masks of BICONF rounds: a fresh array each time
        # cost more than the AND itself (about 10 us against 2 at 11k bits, measured).
        self._scratch = np.empty(self.slots, dtype=bool)

    def combine(self, parts: list[np.ndarray], dtype: type) -> np.ndarray:
        """Per-session arrays laid out in slots (spare slots 0)."""
        combined = np.zeros(self.slots, dtype=dtype)
        for start, part in zip(self.start_list, parts, strict=True):
            combined[start : start + part.size] = part
        return combined

    def counts(self, sessions: np.ndarray | None, size: int) -> np.ndarray | int:
        """How many of a request's items belong to each session (``sessions`` None: one session)."""
        if sessions is None:
            return size
        return np.bincount(sessions, minlength=self.sessions)

    def subset_parities(self, key: np.ndarray, subset: np.ndarray) -> list[int]:
        """Parity of each session's key bits within a subset (a boolean mask over the slots)."""
        members = np.logical_and(key.view(bool), subset, out=self._scratch)
        if self.sessions == 1:
            return [np.count_nonzero(members) & 1]
        return np.bitwise_xor.reduceat(members.view(np.uint8), self.start).tolist()


_NO_SUBSET = np.zeros(0, dtype=bool)


class _Tally:
    """What each session's reconciliation sent, counted exactly as
    :meth:`ClassicalChannel.exchange` would (bytes rounded per message) and posted to the
    sessions' channels at the end. Exchanges are noted as rows and counted once at the
    end: arithmetic on every level's small arrays cost more than the level itself."""

    def __init__(self, layout: _Layout) -> None:
        self._layout = layout
        self._replies: list[np.ndarray | int] = []  # per exchange: parity bits sent to each session
        self._bits_per_reply: list[int] = []  # request bits per reply, beyond the position bits
        self._fixed_bits: list[int] = []  # request bits of the message itself
        self.uses = np.zeros(layout.sessions, dtype=np.int64)
        self.bytes = np.zeros(layout.sessions, dtype=np.int64)
        self.disclosed = np.zeros(layout.sessions, dtype=np.int64)

    def exchange(self, replies: np.ndarray | int, *, fixed_bits: int = 0, bits_per_reply: int = -1) -> None:
        """One round trip for every session with replies > 0: a request of ``fixed_bits``
        plus, per reply, ``bits_per_reply`` and two positions (``bits_per_reply`` -1: no
        positions), then that many disclosed parity bits."""
        self._replies.append(replies)
        self._fixed_bits.append(fixed_bits)
        self._bits_per_reply.append(bits_per_reply)

    def count(self) -> None:
        """Count the exchanges noted since the last call into ``uses``, ``bytes``, ``disclosed``."""
        if not self._replies:
            return
        # one row per exchange, one column per session
        replies = np.array(self._replies, dtype=np.int64).reshape(len(self._replies), -1)
        per_reply = np.array(self._bits_per_reply)[:, None]
        per_item = np.where(per_reply >= 0, per_reply + 2 * self._layout.position_bits[None, :], 0)
        asked = replies > 0
        request = (np.array(self._fixed_bits)[:, None] + replies * per_item) * asked
        self.uses += asked.sum(axis=0)
        self.bytes += ((request + 7) // 8 + (replies + 7) // 8).sum(axis=0)
        self.disclosed += replies.sum(axis=0)
        self._replies, self._fixed_bits, self._bits_per_reply = [], [], []

    def post(self, session: int, channel: ClassicalChannel, stage: str) -> None:
        uses = int(self.uses[session])
        channel.record(
            stage,
            messages=2 * uses,
            bytes=int(self.bytes[session]),
            channel_uses=uses,
            disclosed_bits=int(self.disclosed[session]),
        )


class _AliceParityOracle:
    """Alice's side: holds her keys and answers parity requests, counting what she reveals.

    She learns each pass's order (in reality from the seed Bob sends) and keeps a prefix
    XOR of her key in that order, so any range parity is two lookups. Her key never changes.

    A BICONF pass is learnt as its subset, and a session's slice of its prefix is built
    only when Bob is about to search that session: most subsets are only ever asked for
    their parity (the last 10 rounds always are), and building a prefix costs more than
    all the rest of such a round.
    """

    def __init__(self, key: np.ndarray, layout: _Layout, tally: _Tally, capacity: int) -> None:
        self._key = key
        self._layout = layout
        self._tally = tally
        self._prefix = np.zeros((max(capacity, 1), layout.slots + 1), dtype=np.uint8)
        self._flat_prefix = self._prefix.reshape(-1)
        self._subsets: dict[int, np.ndarray] = {}  # BICONF pass -> its subset (a boolean mask)
        self._unbuilt: list[list[int]] = [[] for _ in range(layout.sessions)]  # per session
        self._passes = 0
        self._pass_bits = 1

    def learn_order(self, order: np.ndarray) -> int:
        """Register a pass's permutation; returns the pass id used in later requests."""
        pass_id = self._new_pass()
        np.bitwise_xor.accumulate(self._key[order], out=self._prefix[pass_id, 1:])
        return pass_id

    def learn_subset(self, subset: np.ndarray, sessions: list[int]) -> int:
        """Register a BICONF pass of the given sessions; its order is, per session, the
        subset's members, then the other positions."""
        pass_id = self._new_pass()
        self._subsets[pass_id] = subset
        for session in sessions:
            self._unbuilt[session].append(pass_id)
        return pass_id

    def _new_pass(self) -> int:
        if self._passes == self._prefix.shape[0]:
            self._prefix = _doubled(self._prefix)
            self._flat_prefix = self._prefix.reshape(-1)
        self._passes += 1
        self._pass_bits = index_bits(1, self._passes)
        return self._passes - 1

    def block_parities(
        self, pass_id: int, starts: np.ndarray, ends: np.ndarray, sessions: np.ndarray | None
    ) -> np.ndarray:
        """Parities of the given blocks of one pass, one reply per session."""
        prefix = self._prefix[pass_id]
        parities = prefix[ends] ^ prefix[starts]
        self._tally.exchange(self._layout.counts(sessions, parities.size), fixed_bits=SEED_BITS)
        return parities

    def subset_parities(self, pass_id: int, sessions: list[int]) -> list[int]:
        """Parity of each session's part of a BICONF subset, one reply to each of ``sessions``."""
        parities = self._layout.subset_parities(self._key, self._subsets[pass_id])
        if self._layout.sessions == 1:
            replies: np.ndarray | int = len(sessions)
        else:
            replies = np.zeros(self._layout.sessions, dtype=np.int64)
            replies[sessions] = 1
        self._tally.exchange(replies, fixed_bits=SEED_BITS)
        return parities

    def pass_coordinates(self, pass_ids: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Names index ``i`` of pass ``p``'s order as ``p * (slots + 1) + i``, one integer per
        range end, so a request for ranges of many passes is two integer arrays."""
        return pass_ids * self._prefix.shape[1] + indices

    def prepare_search(self, sessions: list[int]) -> None:
        """Bob is about to search these sessions: build their slices of the BICONF prefixes."""
        layout = self._layout
        for session in sessions:
            start, n = layout.start_list[session], layout.n_list[session]
            for pass_id in self._unbuilt[session]:
                order = _subset_order(self._subsets[pass_id][start : start + n]) + start
                # the slice starts at 0 in the session's first slot: its own prefix
                np.bitwise_xor.accumulate(
                    self._key[order], out=self._prefix[pass_id, start + 1 : start + n + 1]
                )
                self._prefix[pass_id, start] = 0
            self._unbuilt[session].clear()

    def range_parities(self, starts: np.ndarray, ends: np.ndarray, sessions: np.ndarray | None) -> np.ndarray:
        """Parities of ranges [start, end) given in pass coordinates, one reply per session
        (one bisection level over all searches)."""
        parities = self._flat_prefix[ends] ^ self._flat_prefix[starts]
        # Each range is named by its pass, start and end.
        self._tally.exchange(self._layout.counts(sessions, parities.size), bits_per_reply=self._pass_bits)
        return parities


class _CascadeBob:
    """Bob's side: owns the noisy keys, opens passes, bisects odd blocks, flips bits.

    Blocks of all passes and sessions live in flat arrays (global block ids; the first
    ``_blocks`` entries are used, the rest is spare room that stays not known and not odd),
    and ``_block_of[p, x]`` is the global id of the block of pass ``p`` containing key slot
    ``x``, so the cascade effect of a set of flips is one scatter over all passes at once.
    A block never spans two sessions, so sessions never affect each other.

    Alice's left-half parities are remembered in ``_left_parity[p, mid]``: every range the
    bisection splits (length >= 2) has its own split point ``mid`` within a pass (the split
    points of one block's bisection tree form a binary search tree), so (pass, mid) names
    the range, and a block searched again after a cascade flip reuses what was disclosed.

    Like Alice, Bob fills a session's part of a BICONF pass's rows of ``_orders`` and
    ``_block_of`` only when he next searches that session: a round whose parity agrees
    never searches.
    """

    def __init__(
        self, key: np.ndarray, alice: _AliceParityOracle, layout: _Layout, capacity: int, blocks: int
    ) -> None:
        slots = layout.slots
        self.key = key
        self._layout = layout
        self._alice = alice
        self._orders = np.empty((capacity, slots), dtype=np.int32)
        self._block_of = np.empty((capacity, slots), dtype=np.int32)
        self._left_known = np.zeros((capacity, slots + 1), dtype=bool)
        self._left_parity = np.zeros((capacity, slots + 1), dtype=np.uint8)
        self._passes = 0
        # per session: its BICONF passes (pass, subset, first block) whose rows are not built
        self._unbuilt: list[list[tuple[int, np.ndarray, int]]] = [[] for _ in range(layout.sessions)]
        self._blocks = 0
        self._block_pass = np.zeros(blocks, dtype=np.int64)
        self._block_start = np.zeros(blocks, dtype=np.int64)
        self._block_end = np.zeros(blocks, dtype=np.int64)
        self._block_session = np.zeros(blocks, dtype=np.int64)
        self._block_known = np.zeros(blocks, dtype=bool)  # False: Alice never disclosed its parity
        self._block_odd = np.zeros(blocks, dtype=bool)  # Bob's parity differs from Alice's
        self.flipped = np.zeros(layout.sessions, dtype=np.int64)

    @property
    def passes(self) -> int:
        return self._passes

    def run_cascade_pass(self, orders: list[np.ndarray], block_sizes: list[int]) -> None:
        """Reveal all top-level parities of a pass (each session's order and block size),
        then correct until every block is even."""
        layout = self._layout
        order_slots = np.empty(layout.slots, dtype=np.int64)
        starts, ends = [], []
        for session, (order, size) in enumerate(zip(orders, block_sizes, strict=True)):
            start, n = layout.start_list[session], layout.n_list[session]
            np.add(order, start, out=order_slots[start : start + n])
            order_slots[start + n] = start + n  # the spare slot stays in place
            starts.append(np.arange(start, start + n, size, dtype=np.int64))
            ends.append(np.minimum(starts[-1] + size, start + n))
        pass_id = self._open_pass(self._alice.learn_order(order_slots))
        self._orders[pass_id] = order_slots
        block_of = self._block_of[pass_id]  # a row, then 1-D scatters: faster than [pass_id, order]
        first = self._blocks
        for session, size in enumerate(block_sizes):
            start, n = layout.start_list[session], layout.n_list[session]
            # key slot order[j] is in block j // size of this pass (the spare slot: the last)
            block_of[order_slots[start : start + n]] = np.arange(n, dtype=np.int32) // size + first
            first += starts[session].size
            block_of[start + n] = first - 1
        if layout.sessions == 1:
            block_starts, block_ends, block_sessions = starts[0], ends[0], None
            sessions = np.zeros(block_starts.size, dtype=np.int64)
        else:
            block_starts, block_ends = np.concatenate(starts), np.concatenate(ends)
            sessions = block_sessions = np.repeat(np.arange(layout.sessions), [part.size for part in starts])
        # XOR, not a sum: measured 1.5-25x faster (spare slots are 0)
        bob_parities = np.bitwise_xor.reduceat(self.key[order_slots], block_starts)
        alice_parities = self._alice.block_parities(pass_id, block_starts, block_ends, block_sessions)
        known = np.ones(block_starts.size, dtype=bool)
        self._add_blocks(pass_id, block_starts, block_ends, sessions, known, bob_parities != alice_parities)
        self._correct_until_consistent()

    def run_biconf_round(self, subsets: dict[int, np.ndarray]) -> list[bool]:
        """Compare the parity of each given session's subset (a boolean mask); fix and
        cascade where it differs. Returns, per given session, whether the parities differed.

        A subset is bisected in natural order. Its pass has two blocks per session, the
        subset and the rest, whose parity is never asked for (sessions not in ``subsets``:
        an empty subset, not asked). Small Python lists, not arrays: a round is mostly
        per-call overhead.
        """
        layout = self._layout
        sessions = list(subsets)
        subset = layout.combine([subsets.get(s, _NO_SUBSET) for s in range(layout.sessions)], bool)
        pass_id = self._open_pass(self._alice.learn_subset(subset, sessions))
        first = self._blocks
        for session in sessions:
            self._unbuilt[session].append((pass_id, subset, first + 2 * session))
        alice_parities = self._alice.subset_parities(pass_id, sessions)
        bob_parities = layout.subset_parities(self.key, subset)
        differed = [alice_parities[s] != bob_parities[s] for s in sessions]
        # two blocks per session: the subset (known where asked), the rest (never known)
        starts, ends, known, odd = [], [], [], []
        asked = dict(zip(sessions, differed, strict=True))  # session -> its parity differed
        for session, (start, n) in enumerate(zip(layout.start_list, layout.n_list, strict=True)):
            members = subsets.get(session)
            middle = start + (0 if members is None else int(np.count_nonzero(members)))
            starts += (start, middle)
            ends += (middle, start + n)
            known += (session in asked, False)
            odd += (asked.get(session, False), False)
        self._add_blocks(
            pass_id, np.array(starts), np.array(ends), layout.block_sessions, np.array(known), np.array(odd)
        )
        if any(differed):
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
        self,
        pass_id: int,
        starts: np.ndarray,
        ends: np.ndarray,
        sessions: np.ndarray,
        known: np.ndarray,
        odd: np.ndarray,
    ) -> None:
        """Append a pass's blocks (their global ids continue from ``_blocks``)."""
        first, stop = self._blocks, self._blocks + starts.size
        if stop > self._block_pass.size:
            size = max(stop, 2 * self._block_pass.size)
            self._block_pass = _grown(self._block_pass, size)
            self._block_start = _grown(self._block_start, size)
            self._block_end = _grown(self._block_end, size)
            self._block_session = _grown(self._block_session, size)
            self._block_known = _grown(self._block_known, size)
            self._block_odd = _grown(self._block_odd, size)
        self._block_pass[first:stop] = pass_id
        self._block_start[first:stop] = starts
        self._block_end[first:stop] = ends
        self._block_session[first:stop] = sessions
        self._block_known[first:stop] = known
        self._block_odd[first:stop] = odd & known
        self._blocks = stop

    def _build_biconf_rows(self, sessions: list[int]) -> None:
        """Bob's rows of the BICONF passes of these sessions not built yet (see the class doc)."""
        layout = self._layout
        for session in sessions:
            start, n = layout.start_list[session], layout.n_list[session]
            for pass_id, subset, first_block in self._unbuilt[session]:
                members = subset[start : start + n]
                self._orders[pass_id, start : start + n] = _subset_order(members) + start
                # members are in the session's first block of the pass, the others in its second
                np.add(~members, first_block, out=self._block_of[pass_id, start : start + n], dtype=np.int32)
            self._unbuilt[session].clear()

    def _correct_until_consistent(self) -> None:
        """Bisect all odd blocks in lock-step, flip what is found, repeat until none is odd."""
        odd_blocks = np.flatnonzero(self._block_odd)
        if odd_blocks.size == 0:
            return
        # Flips stay within the sessions searched now: their lazy rows are all it needs.
        searched = [0] if self._layout.sessions == 1 else np.unique(self._block_session[odd_blocks]).tolist()
        self._build_biconf_rows(searched)  # searches read _orders, flips read every pass's _block_of
        self._alice.prepare_search(searched)
        while odd_blocks.size:
            self._flip(self._bisect(odd_blocks))
            odd_blocks = np.flatnonzero(self._block_odd)

    def _bisect(self, blocks: np.ndarray) -> np.ndarray:
        """Find one error in each given odd block, all searches in lock-step.

        Invariant: each range still searched has Bob's parity differing from Alice's. Ranges
        of one bit are errors and leave the search. Returns the distinct key slots found
        (blocks of different passes can lead to the same error).
        """
        pass_ids = self._block_pass[blocks]
        starts = self._block_start[blocks]
        lengths = self._block_end[blocks] - starts
        sessions = self._block_session[blocks] if self._layout.sessions > 1 else None
        slots = self._layout.slots

        # Bob's key is fixed during the searches: his bits of all searched blocks, each in
        # its pass's order, laid end to end ("laid" coordinates), and their prefix XOR.
        laid_at = np.cumsum(lengths) - lengths
        laid_order_slot = np.repeat(pass_ids * slots + starts - laid_at, lengths) + np.arange(
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
                if sessions is not None:
                    sessions = sessions[searching]
                if lengths.size == 0:
                    break
            left_lengths = (lengths + 1) >> 1
            pass_mid = pass_start + left_lengths
            laid_mid = laid_start + left_lengths
            already_known = left_known[pass_mid]
            known_count = np.count_nonzero(already_known)
            if known_count == 0:  # the usual case: the first search through these ranges
                left_alice = self._alice.range_parities(pass_start, pass_mid, sessions)
                left_parity[pass_mid] = left_alice
                left_known[pass_mid] = True
            else:
                left_alice = left_parity[pass_mid]
                if known_count < pass_mid.size:
                    ask = (~already_known).nonzero()[0]
                    asked_mid = pass_mid[ask]
                    replies = self._alice.range_parities(
                        pass_start[ask], asked_mid, None if sessions is None else sessions[ask]
                    )
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
        if self._layout.sessions == 1:
            self.flipped[0] += positions.size
        else:
            self.flipped += np.bincount(
                self._layout.session_of_slot[positions], minlength=self._layout.sessions
            )
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


@dataclass
class ReconcileJob:
    """One session's reconciliation, as :func:`reconcile` takes it, for :func:`reconcile_together`."""

    alice: np.ndarray
    bob: np.ndarray
    qber: float
    method: str
    rng: np.random.Generator
    channel: ClassicalChannel | None = None
    stage: str = "reconciliation"


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
    return reconcile_together([ReconcileJob(alice, bob, qber, method, rng, channel, stage)])[0]


def reconcile_together(jobs: list[ReconcileJob]) -> list[ReconciliationResult]:
    """Each job's :func:`reconcile` result, exactly, from one joint run per Cascade method.

    Why: a session's Cascade is a few hundred small NumPy steps whose per-call overhead
    dominates at the key lengths of short sessions. Run side by side, the sessions' keys
    lie end to end in one combined key and every step (a pass, a bisection level, a
    BICONF round) serves all of them: pass p of every session together, each with its own
    permutation, block size and channel. Blocks never cross sessions, each session draws
    from its own ``rng`` in the order :func:`reconcile` would, and each session's messages
    are counted as if it ran alone (a level in which it has no range costs it nothing), so
    the results are the same as reconciling the jobs one by one. Jobs that share an
    ``rng`` are reconciled one after the other instead (their draws would interleave).
    Every job is checked before anything is drawn or counted: a ValueError leaves all
    generators and channels as they were.
    """
    prepared = [_prepare(job) for job in jobs]
    results: list[ReconciliationResult | None] = [None] * len(jobs)
    groups: dict[str, list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault(parameters(job.method).name, []).append(index)
    shared_rng = len({id(job.rng) for job in jobs}) < len(jobs)
    for method, indices in groups.items():
        batches = [[i] for i in indices] if shared_rng else [indices]
        for batch in batches:
            for index, result in zip(
                batch, _reconcile_jointly(method, [prepared[i] for i in batch]), strict=True
            ):
                results[index] = result
    done = [result for result in results if result is not None]
    assert len(done) == len(jobs), "every job belongs to one batch"
    return done


def _prepare(job: ReconcileJob) -> ReconcileJob:
    """One job's inputs checked, as :func:`reconcile` documents them: its keys as copies of
    uint8 bits, its QBER a float, and a private channel if it has none."""
    parameters(job.method)
    alice_key = _as_key(job.alice, "Alice")
    bob_key = _as_key(job.bob, "Bob")  # a copy: the input is not modified
    if alice_key.size != bob_key.size:
        raise ValueError(f"keys differ in length: Alice {alice_key.size}, Bob {bob_key.size}")
    if alice_key.size == 0:
        raise ValueError("keys are empty: nothing to reconcile")
    qber = float(job.qber)
    if not 0.0 <= qber <= 0.5:
        raise ValueError(f"estimated QBER must be in [0, 0.5], got {qber}")
    channel = job.channel if job.channel is not None else ClassicalChannel()
    return dataclasses.replace(job, alice=alice_key, bob=bob_key, qber=qber, channel=channel)


def _reconcile_jointly(method: str, jobs: list[ReconcileJob]) -> list[ReconciliationResult]:
    """Checked jobs (:func:`_prepare`) of one method, side by side."""
    params = parameters(method)
    sizes = [job.alice.size for job in jobs]
    layout = _Layout(sizes)
    tally = _Tally(layout)
    block_sizes = [params.block_sizes(n, job.qber) for n, job in zip(sizes, jobs, strict=True)]
    # BICONF usually runs a few rounds more than its clean ones (13 passes at n = 16,000, 2%
    # QBER): room for twice as many, so the tables seldom need to grow
    capacity = params.cascade_passes + 2 * params.biconf_clean_rounds
    blocks = sum(-(-n // size) for n, sizes_ in zip(sizes, block_sizes, strict=True) for size in sizes_)
    blocks += 2 * 2 * params.biconf_clean_rounds * layout.sessions
    oracle = _AliceParityOracle(layout.combine([j.alice for j in jobs], np.uint8), layout, tally, capacity)
    bob_side = _CascadeBob(layout.combine([j.bob for j in jobs], np.uint8), oracle, layout, capacity, blocks)
    for pass_index in range(params.cascade_passes):
        orders = [
            np.arange(n) if pass_index == 0 else job.rng.permutation(n)
            for n, job in zip(sizes, jobs, strict=True)
        ]
        bob_side.run_cascade_pass(orders, [sizes_[pass_index] for sizes_ in block_sizes])

    rounds = [0] * layout.sessions
    clean_rounds = [0] * layout.sessions
    while running := [s for s in range(layout.sessions) if clean_rounds[s] < params.biconf_clean_rounds]:
        # each bit with probability 1/2, drawn session by session in order
        subsets = {s: random_mask(sizes[s], jobs[s].rng) for s in running}
        for session, differed in zip(running, bob_side.run_biconf_round(subsets), strict=True):
            rounds[session] += 1
            clean_rounds[session] = 0 if differed else clean_rounds[session] + 1

    tally.count()
    results = []
    for session, job in enumerate(jobs):
        assert job.channel is not None, "jobs come through _prepare"
        tally.post(session, job.channel, job.stage)
        start = layout.start_list[session]
        results.append(
            ReconciliationResult(
                corrected=bob_side.key[start : start + sizes[session]].copy(),
                leaked_bits=int(tally.disclosed[session]),
                channel_uses=int(tally.uses[session]),
                passes=params.cascade_passes + int(rounds[session]),
                method=params.name,
                flipped_bits=int(bob_side.flipped[session]),
            )
        )
    return results
