"""Local transaction signing without eth_account's per-call validation.

eth_account validates and re-serializes the whole transaction dict on every signature
(about 1.5 ms); a contract call needs only a few fields, so the RLP is built here and
libsecp256k1 (coincurve) signs. Used by ``KeyLedgerClient.transact`` and ``TxPipeline``.
"""

from __future__ import annotations

from typing import Any

import coincurve
from eth_account.signers.local import LocalAccount

from .merkle import keccak


def _rlp_length(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(size)]) + size


def _rlp(item: int | bytes | list[Any]) -> bytes:
    """RLP of ints, byte strings and lists of them: all a transaction needs. The ``rlp``
    package infers a sedes for every item, which costs about 0.2 ms per transaction."""
    if isinstance(item, list):
        payload = b"".join(_rlp(x) for x in item)
        return _rlp_length(len(payload), 0xC0) + payload
    if isinstance(item, int):
        if item < 0:
            raise ValueError("RLP integers are unsigned")
        item = item.to_bytes((item.bit_length() + 7) // 8, "big")
    if len(item) == 1 and item[0] < 0x80:
        return item
    return _rlp_length(len(item), 0x80) + item


class FastSigner:
    """Signs EIP-1559 and legacy (EIP-155) transactions with coincurve directly.

    eth_account spends most of a signature validating and re-serializing the dict; here
    the RLP is built from the few fields a contract call needs (value is always zero and
    the access list empty). libsecp256k1 signs deterministically (RFC 6979) with low s,
    so the bytes equal eth_account's for the same transaction.
    """

    def __init__(self, account: LocalAccount) -> None:
        self.address = account.address
        self._key = coincurve.PrivateKey(bytes(account.key))

    def _sign(self, digest: bytes) -> tuple[int, int, int]:
        signature = self._key.sign_recoverable(digest, hasher=None)
        return signature[64], int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")

    def sign(
        self, *, chain_id: int, nonce: int, gas: int, to: bytes, data: bytes, fees: dict[str, int]
    ) -> tuple[bytes, bytes]:
        """(raw transaction, transaction hash)."""
        if "gasPrice" in fees:
            fields: list[Any] = [nonce, fees["gasPrice"], gas, to, 0, data]
            recovery, r, s = self._sign(keccak(_rlp([*fields, chain_id, 0, 0])))
            raw = _rlp([*fields, recovery + 35 + 2 * chain_id, r, s])
        else:
            fields = [
                chain_id,
                nonce,
                fees["maxPriorityFeePerGas"],
                fees["maxFeePerGas"],
                gas,
                to,
                0,
                data,
                [],
            ]
            recovery, r, s = self._sign(keccak(b"\x02" + _rlp(fields)))
            raw = b"\x02" + _rlp([*fields, recovery, r, s])
        return raw, keccak(raw)
