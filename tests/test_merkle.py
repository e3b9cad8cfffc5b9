"""ledger.merkle against the KeyLedger contract (OpenZeppelin MerkleProof) on the embedded chain.

The property tests use the ``ledger`` fixture from conftest.py: one embedded chain with the
contract deployed per test *function*, shared by all Hypothesis examples of that test (deploying
per example would cost ~0.25 s each). Sharing is safe because every example only adds an
anchored batch and reads; the one state clash, an example whose root was already anchored by an
earlier example (Hypothesis can replay a leaf set), is handled by ``anchor`` below. Hence the
suppressed ``function_scoped_fixture`` health check.
"""

from __future__ import annotations

import random

import pytest
from eth_utils import keccak
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from web3 import Web3

from ledger import merkle
from ledger.client import KeyLedgerClient
from ledger.merkle import MerkleTree

ON_CHAIN = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

leaf32 = st.binary(min_size=32, max_size=32)


def numbered_leaves(n: int, salt: bytes = b"") -> list[bytes]:
    """n distinct 32-byte leaves, deterministic."""
    return [keccak(salt + i.to_bytes(4, "big")) for i in range(n)]


def anchor(ledger: KeyLedgerClient, tree: MerkleTree) -> None:
    """Anchor the tree's root once (an earlier example may have anchored the same root)."""
    if ledger.batch(tree.root)["anchored_at"] == 0:
        ledger.anchor_batch(tree.root, len(tree))
    assert ledger.batch(tree.root)["count"] == len(tree)


def flip_bit(proof: list[bytes], position: int) -> list[bytes]:
    """The proof with one bit flipped (``position`` taken modulo the proof's bit length)."""
    position %= 256 * len(proof)
    item, bit = divmod(position, 256)
    tampered = bytearray(proof[item])
    tampered[bit // 8] ^= 1 << (bit % 8)
    return [*proof[:item], bytes(tampered), *proof[item + 1 :]]


def check_tree(
    ledger: KeyLedgerClient, leaves: list[bytes], picks: list[int], wrong: bytes, flip: int
) -> None:
    """Anchor a tree over ``leaves``; sampled proofs verify locally and on chain, forgeries fail."""
    tree = MerkleTree.from_leaves(leaves)
    n = len(leaves)
    assert len(tree) == n
    assert MerkleTree.from_leaves(list(reversed(leaves))).root == tree.root  # input order is irrelevant
    anchor(ledger, tree)
    root = tree.root
    max_depth = (2 * n - 1).bit_length() - 1
    for index in sorted({0, n // 2, n - 1, *(p % n for p in picks)}):
        leaf = leaves[index]
        proof = tree.proof(leaf)
        assert len(proof) <= max_depth
        assert merkle.verify(root, proof, leaf)
        assert ledger.verify_inclusion(root, proof, leaf)
        # a leaf that is not in the tree, with this leaf's proof
        assert not merkle.verify(root, proof, wrong)
        assert not ledger.verify_inclusion(root, proof, wrong)
        # a tampered proof: one bit flipped, or (single leaf: empty proof) an extra sibling
        tampered = flip_bit(proof, flip) if proof else [wrong]
        assert not merkle.verify(root, tampered, leaf)
        assert not ledger.verify_inclusion(root, tampered, leaf)
        if proof:  # a truncated proof stops at an inner node, not at the root
            assert not merkle.verify(root, proof[:-1], leaf)
            assert not ledger.verify_inclusion(root, proof[:-1], leaf)


# ---------------------------------------------------------------------------- property tests


def _sized(n: int):
    return example(leaves=numbered_leaves(n, b"sized"), picks=[1, 7, 100], wrong=b"\xee" * 32, flip=5)


@_sized(1)
@_sized(2)
@_sized(3)
@_sized(4)
@_sized(5)
@_sized(7)
@_sized(8)
@_sized(9)
@_sized(33)
@given(
    leaves=st.lists(leaf32, min_size=1, max_size=70, unique=True),
    picks=st.lists(st.integers(min_value=0, max_value=2**16), max_size=4),
    wrong=leaf32,
    flip=st.integers(min_value=0, max_value=2**16),
)
@settings(ON_CHAIN, max_examples=40)
def test_random_trees_verify_locally_and_on_chain(ledger, leaves, picks, wrong, flip):
    assume(wrong not in leaves)
    check_tree(ledger, leaves, picks, wrong, flip)


@given(
    n=st.integers(min_value=1000, max_value=4000),
    salt=st.binary(min_size=8, max_size=8),
    picks=st.lists(st.integers(min_value=0, max_value=2**16), min_size=5, max_size=10),
    flip=st.integers(min_value=0, max_value=2**16),
)
@settings(ON_CHAIN, max_examples=3)
def test_random_large_trees_verify_locally_and_on_chain(ledger, n, salt, picks, flip):
    check_tree(ledger, numbered_leaves(n, salt), picks, keccak(b"not a leaf" + salt), flip)


def test_three_thousand_leaves(ledger):
    leaves = numbered_leaves(3001, b"big")  # odd, and far from a power of two
    random.Random(3001).shuffle(leaves)
    tree = MerkleTree.from_leaves(leaves)
    anchor(ledger, tree)
    assert ledger.batch(tree.root)["count"] == 3001
    assert ledger.stats()["batched_records"] == 3001
    proofs = {leaf: tree.proof(leaf) for leaf in leaves}
    assert all(merkle.verify(tree.root, proofs[leaf], leaf) for leaf in leaves)
    assert max(len(p) for p in proofs.values()) == 12  # 2 * 3001 - 1 nodes: depth 12
    sample = random.Random(50).sample(leaves, 50)
    for i, leaf in enumerate(sample):
        assert ledger.verify_inclusion(tree.root, proofs[leaf], leaf)
        assert not ledger.verify_inclusion(tree.root, flip_bit(proofs[leaf], 97 * i), leaf)
    other = sample[0]
    assert not ledger.verify_inclusion(tree.root, proofs[sample[1]], other)
    assert not merkle.verify(tree.root, proofs[sample[1]], other)


def test_unanchored_root_is_refused_on_chain(ledger):
    leaves = numbered_leaves(6, b"unanchored")
    tree = MerkleTree.from_leaves(leaves)
    proof = tree.proof(leaves[2])
    assert merkle.verify(tree.root, proof, leaves[2])  # mathematically fine ...
    assert not ledger.verify_inclusion(tree.root, proof, leaves[2])  # ... but never anchored
    anchor(ledger, tree)
    assert ledger.verify_inclusion(tree.root, proof, leaves[2])


@given(
    key_id=leaf32,
    commitment=leaf32,
    vehicle_id=leaf32,
    qber_ppm=st.integers(min_value=0, max_value=2**32 - 1),
    final_key_bits=st.integers(min_value=0, max_value=2**32 - 1),
    protocol=st.integers(min_value=0, max_value=2**8 - 1),
    created_at=st.integers(min_value=0, max_value=2**64 - 1),
    expires_at=st.integers(min_value=0, max_value=2**64 - 1),
)
@settings(ON_CHAIN, max_examples=100)
def test_key_leaf_equals_contract(
    ledger, key_id, commitment, vehicle_id, qber_ppm, final_key_bits, protocol, created_at, expires_at
):
    fields = (key_id, commitment, vehicle_id, qber_ppm, final_key_bits, protocol, created_at, expires_at)
    on_chain = ledger.contract.functions.keyLeaf(*fields).call()
    assert merkle.key_leaf(*fields) == bytes(on_chain)


# ---------------------------------------------------------------------------- edge cases


def test_empty_leaves_rejected():
    with pytest.raises(ValueError):
        MerkleTree.from_leaves([])


def test_duplicate_leaves_rejected():
    a, b, c = numbered_leaves(3)
    with pytest.raises(ValueError, match="duplicate"):
        MerkleTree.from_leaves([a, b, a])
    with pytest.raises(ValueError, match="duplicate"):
        MerkleTree.from_leaves([c, c])


def test_leaves_must_be_32_bytes():
    with pytest.raises(ValueError):
        MerkleTree.from_leaves([b"\x01" * 31])
    with pytest.raises(ValueError):
        MerkleTree.from_leaves([b"\x01" * 32, b"\x02" * 33])


def test_single_leaf_tree():
    (leaf,) = numbered_leaves(1)
    tree = MerkleTree.from_leaves([leaf])
    assert tree.root == leaf
    assert tree.proof(leaf) == []
    assert len(tree) == 1
    assert merkle.verify(tree.root, [], leaf)


def test_proof_of_absent_leaf_raises_key_error():
    leaves = numbered_leaves(5)
    tree = MerkleTree.from_leaves(leaves[:4])
    with pytest.raises(KeyError):
        tree.proof(leaves[4])
    with pytest.raises(KeyError):
        tree.proof(tree.root)  # inner nodes are not leaves


# ---------------------------------------------------------------------------- OpenZeppelin layout


def hp(a: bytes, b: bytes) -> bytes:
    """OpenZeppelin's commutative pair hash, written out independently of merkle.hash_pair."""
    lo, hi = (a, b) if int.from_bytes(a, "big") < int.from_bytes(b, "big") else (b, a)
    return keccak(lo + hi)


def test_four_leaf_layout_matches_standard_merkle_tree():
    leaves = [merkle.leaf_hash(["uint256"], [i]) for i in range(4)]
    s0, s1, s2, s3 = sorted(leaves)
    tree = MerkleTree.from_leaves(leaves)
    # flat array, root at 0, sorted leaves from the end: [root, n1, n2, s3, s2, s1, s0]
    n1, n2 = hp(s3, s2), hp(s1, s0)
    assert tree.root == hp(n1, n2) == hp(hp(s0, s1), hp(s2, s3))
    assert tree.nodes == [tree.root, n1, n2, s3, s2, s1, s0]
    assert tree.proof(s0) == [s1, n1]
    assert tree.proof(s1) == [s0, n1]
    assert tree.proof(s2) == [s3, n2]
    assert tree.proof(s3) == [s2, n2]


def test_three_leaf_layout_matches_standard_merkle_tree():
    leaves = [merkle.leaf_hash(["string"], [name]) for name in ("a", "b", "c")]
    s0, s1, s2 = sorted(leaves)
    tree = MerkleTree.from_leaves(leaves)
    # [root, n1, s2, s1, s0]: the largest leaf pairs with the inner node, not with a copy of itself
    n1 = hp(s1, s0)
    assert tree.nodes == [hp(n1, s2), n1, s2, s1, s0]
    assert tree.proof(s2) == [n1]
    assert tree.proof(s0) == [s1, s2]


# A StandardMerkleTree.of(values, ["address"]).dump() ("standard-v1") made by @openzeppelin/merkle-tree,
# as published in a public repository: (address, treeIndex) pairs and the full flat tree.
OZ_VALUES = [
    ("0x5B38Da6a701c568545dCfcB03FcB875f56beddC4", 14),
    ("0x000000000000d34c44564053af35e4fe271d0caa", 12),
    ("0x0000000000078c65a676f9a1f2ae66db0cbdff48", 8),
    ("0x00000000000a29a0800f6f557ddbbe8249397de7", 9),
    ("0x00000000000a40322164e8b9e1b909c388bf8317", 13),
    ("0x00000000000b69ec332f49b7c4d2b101f93c3bed", 11),
    ("0x00000000000be4d9faacf7f669f25118b1736666", 10),
    ("0xA8CC44274A9b35D1b55fBe7cfCa528b7a78Fb940", 7),
]
OZ_TREE = """
7b304f9d916a40cd36caa8f6c157d088804dd56b4b5f1597167414f1e57c6699
8816bb1dbc65ec25bbd355d256d30ca638864e0e2132ec0fe4e3cecb7f2a8f6b
e8756a510133c2430507f4921ed4ddc3a389eb28269d011d5c8286082acab211
6fb1f0d156bd8cc28787d40bd6d35c06b47d10adc13510215a67a5273dda0ae5
9bcdb31f56f5a037e7b89237b30d15147fc6026b2256d1a16faeac4d4f162456
05eee84e9db5a5444c9fa9ab18b0d3f6577dc2ae3c4fefeb18ef89eb04b1b43d
13d1d05947f1b3507720ca4d648c8f959dd392b78dbc9cec728c7d7d1d88b959
db2646dcee3f27203fec40586329b3d4befee299588ecec9173728cf3ca039ee
d7a4494e5a354126bee1138ea44229292a8f053cad6e36cbe10c965e1fe45deb
950fc0ef2d798666f278fcbf2979c05f630da5f025d8b5771e993311152ac4d9
699e3753ca9fc5bee9317d00d92b91c085e23e5fdce0369ae076b8dc87c216dd
669d1ade132a34e3992a8458273dc079e8bfe48303219a65e64ab53898b71286
5860fd69c609f022d5dd7f0bf23c165eb666840223ff2c337e3246576ef820d4
4cecb2ba7f09c4b25b7122927d5c88f2a88f51139b085cde905831c73786e6c0
24da68c5697e2b39240db86159eb0aea630eef50919653bc16409e95a183b6c6
"""


def test_matches_openzeppelin_merkle_tree_dump():
    leaves = [merkle.leaf_hash(["address"], [Web3.to_checksum_address(a)]) for a, _ in OZ_VALUES]
    tree = MerkleTree.from_leaves(leaves)
    assert tree.nodes == [bytes.fromhex(h) for h in OZ_TREE.split()]
    for leaf, (_, tree_index) in zip(leaves, OZ_VALUES, strict=True):
        assert tree.nodes[tree_index] == leaf


def test_fast_key_leaf_equals_the_abi_encoded_leaf() -> None:
    import os

    from ledger.merkle import KEY_LEAF_TYPES, key_leaf, leaf_hash

    for n in range(50):
        values = (os.urandom(32), os.urandom(32), os.urandom(32), n * 7919 % 2**32, 2**32 - 1 - n, n % 256,
                  2**64 - 1 - n, n)  # fmt: skip
        assert key_leaf(*values) == leaf_hash(KEY_LEAF_TYPES, values)
    with pytest.raises(ValueError, match="out of range"):
        key_leaf(bytes(32), bytes(32), bytes(32), 2**32, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="32 bytes"):
        key_leaf(bytes(31), bytes(32), bytes(32), 0, 0, 0, 0, 0)
