"""Merkle trees whose proofs OpenZeppelin's ``MerkleProof`` accepts.

Same construction as OpenZeppelin's StandardMerkleTree (@openzeppelin/merkle-tree):
leaves are ``keccak256(keccak256(abi.encode(values)))`` (double hashing keeps a leaf from
ever equalling an inner node), leaves are sorted, the tree is stored as a flat array with
the root at index 0, and each inner node hashes its two children in sorted order, so a
proof is just the list of siblings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import encode as abi_encode

try:  # safe-pysha3: keccak-256 in C, about 1.8 us a call against eth_utils' 11 us (pycryptodome)
    from sha3 import keccak_256 as _keccak_256

    def keccak(data: bytes) -> bytes:
        return _keccak_256(data).digest()

    def _double_keccak(data: bytes) -> bytes:
        return _keccak_256(_keccak_256(data).digest()).digest()

except ImportError:  # pragma: no cover - the fallback is correct, only slower
    from eth_utils import keccak

    def _double_keccak(data: bytes) -> bytes:
        return keccak(keccak(data))


KEY_LEAF_TYPES = ("bytes32", "bytes32", "bytes32", "uint32", "uint32", "uint8", "uint64", "uint64")


def leaf_hash(types: Sequence[str], values: Sequence[Any]) -> bytes:
    return keccak(keccak(abi_encode(list(types), list(values))))


def key_leaf(
    key_id: bytes,
    commitment: bytes,
    vehicle_id: bytes,
    qber_ppm: int,
    final_key_bits: int,
    protocol: int,
    created_at: int,
    expires_at: int,
) -> bytes:
    """The leaf of one key record, equal to the contract's ``keyLeaf``.

    Every field is a static ABI type, so ``abi.encode`` is just eight 32-byte words;
    packing them directly is many times faster than eth_abi, which matters when a
    batcher hashes tens of thousands of records a second. ``tests/test_merkle.py``
    checks it against ``leaf_hash(KEY_LEAF_TYPES, ...)`` and the contract.
    """
    if not len(key_id) == len(commitment) == len(vehicle_id) == 32:
        raise ValueError("the bytes32 fields (key id, commitment, vehicle id) must be 32 bytes each")
    if not (
        0 <= qber_ppm < 1 << 32
        and 0 <= final_key_bits < 1 << 32
        and 0 <= protocol < 1 << 8
        and 0 <= created_at < 1 << 64
        and 0 <= expires_at < 1 << 64
    ):
        raise ValueError(
            "field out of range: qberPpm and finalKeyBits are uint32, protocol uint8, times uint64"
        )
    packed = b"".join(
        (
            key_id,
            commitment,
            vehicle_id,
            qber_ppm.to_bytes(32, "big"),
            final_key_bits.to_bytes(32, "big"),
            protocol.to_bytes(32, "big"),
            created_at.to_bytes(32, "big"),
            expires_at.to_bytes(32, "big"),
        )
    )
    return _double_keccak(packed)


def hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


@dataclass
class MerkleTree:
    """A tree over leaf hashes; ``proof(leaf)`` gives the siblings from leaf to root."""

    nodes: list[bytes]
    _position: dict[bytes, int]

    @classmethod
    def from_leaves(cls, leaves: Sequence[bytes]) -> MerkleTree:
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        if any(len(leaf) != 32 for leaf in leaves):
            raise ValueError("leaves must be 32-byte hashes")
        ordered = sorted(leaves)
        n = len(ordered)
        nodes: list[bytes] = [b""] * (2 * n - 1)
        for i, leaf in enumerate(ordered):
            nodes[len(nodes) - 1 - i] = leaf
        for i in range(len(nodes) - 1 - n, -1, -1):
            nodes[i] = hash_pair(nodes[2 * i + 1], nodes[2 * i + 2])
        position = {nodes[j]: j for j in range(n - 1, len(nodes))}
        if len(position) != n:
            raise ValueError("duplicate leaves: every record must be distinct")
        return cls(nodes, position)

    @property
    def root(self) -> bytes:
        return self.nodes[0]

    def __len__(self) -> int:
        return (len(self.nodes) + 1) // 2

    def proof(self, leaf: bytes) -> list[bytes]:
        try:
            index = self._position[leaf]
        except KeyError:
            raise KeyError("leaf is not in this tree") from None
        siblings = []
        while index > 0:
            siblings.append(self.nodes[index - 1 if index % 2 == 0 else index + 1])
            index = (index - 1) // 2
        return siblings


def verify(root: bytes, proof: Sequence[bytes], leaf: bytes) -> bool:
    """Local check of an inclusion proof, the same computation as ``MerkleProof.verify``."""
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node == root
