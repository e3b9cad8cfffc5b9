"""Conversions between what users type and what the contract stores (bytes32).

- Key ids are UUIDs; on chain the 16 UUID bytes sit left-aligned in a bytes32, as
  Solidity's ``bytes32(bytes16(x))`` would put them, so the UUID can be read back.
- Vehicle ids are short labels (``car-42``, up to 31 UTF-8 bytes, right-padded with
  zeros, readable on chain) or raw ``0x`` + 64 hex digits (e.g. a certificate hash).
- Roles are named on the command line: admin, key-manager, verifier.
"""

from __future__ import annotations

import re
import uuid

from .errors import BadInput

_HEX64 = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_ZERO16 = b"\x00" * 16

# keccak256 of the role names, as the contract defines them; written out so that importing
# this module (and so starting the CLI) does not load eth_utils. tests/test_chain.py checks them.
ROLE_NAMES = {
    "admin": b"\x00" * 32,  # OpenZeppelin's DEFAULT_ADMIN_ROLE
    "key-manager": bytes.fromhex("1b1ee864c53639d7462b773f7c8b4cea14a6ae3615743b9373a3a5879770711c"),
    "verifier": bytes.fromhex("0ce23c3e399818cfee81a7ab0880f714e53d7672b08df0fa62f2843416e1ea09"),
}

PROTOCOLS = {"bb84": 1, "e91": 2}

# Reason codes of recordVerification: why a verifier accepted or refused a key.
VERIFY_REASONS = {"ok": 0, "unknown": 1, "revoked": 2, "expired": 3, "commitment-mismatch": 4}


def parse_key_id(value: str | uuid.UUID) -> tuple[str, bytes]:
    """(canonical UUID string, its 16 bytes) from any spelling ``uuid.UUID`` accepts.

    A canonical string, what key ids nearly always are, is taken apart directly: about a
    fifth of the cost of building a ``uuid.UUID``, which a batcher hashing tens of
    thousands of records a second notices.
    """
    if type(value) is str and len(value) == 36 and value[8] == value[13] == value[18] == value[23] == "-":
        try:
            raw = bytes.fromhex(value[:8] + value[9:13] + value[14:18] + value[19:23] + value[24:])
        except ValueError:
            raw = b""
        if len(raw) == 16:  # fromhex skips spaces, so a short result was not 32 hex digits
            return value.lower(), raw
    if isinstance(value, uuid.UUID):
        parsed = value
    else:
        try:
            parsed = uuid.UUID(str(value).strip())
        except ValueError:
            raise BadInput(f"not a UUID: {value!r}") from None
    return str(parsed), parsed.bytes


def key_id(value: str | uuid.UUID) -> bytes:
    """bytes32 key id from a UUID (string or object)."""
    return parse_key_id(value)[1] + _ZERO16


def key_uuid(raw: bytes) -> uuid.UUID:
    """The UUID back from a bytes32 key id."""
    return uuid.UUID(bytes=bytes(raw[:16]))


def hex32(value: str, what: str = "value") -> bytes:
    """32 bytes from 64 hex digits (``0x`` optional)."""
    text = value.strip()
    if not _HEX64.match(text):
        raise BadInput(f"{what} must be 64 hex digits (32 bytes), got {value!r}")
    return bytes.fromhex(text.removeprefix("0x"))


def commitment(value: str) -> bytes:
    """A key commitment: 64 hex digits, not all zero.

    The contract stores a recorded key's commitment and reads zero as "no such key", so
    it refuses zero in ``recordSession``; a Merkle-batched record never reaches that check
    (only its batch's root goes on chain), so ``ledger record`` and ``ledger anchor`` both
    check here, before anything is sent.
    """
    raw = hex32(value, "commitment")
    if raw == bytes(32):
        raise BadInput("the key commitment is zero: give the SHA-256 digest of the key")
    return raw


def vehicle_id(value: str) -> bytes:
    """bytes32 vehicle id from a label (<= 31 bytes) or 0x + 64 hex digits.

    ``0x`` always means hex: ``0xzz`` or a short hex string is a typo, not a label."""
    text = value.strip()
    if text.startswith("0x"):
        if len(text) != 66:
            raise BadInput(
                f"vehicle id {value!r}: 0x must be followed by 64 hex digits (labels do not start with 0x)"
            )
        return hex32(text, "vehicle id")
    encoded = text.encode("utf-8")
    if not encoded:
        raise BadInput("vehicle id is empty")
    if len(encoded) > 31:
        raise BadInput(f"vehicle id {value!r} is longer than 31 bytes: use a shorter label or 0x + 64 hex")
    return encoded + b"\x00" * (32 - len(encoded))


def vehicle_label(raw: bytes) -> str:
    """Readable form of a bytes32 vehicle id: the label if it is one, else 0x-hex."""
    raw = bytes(raw)
    stripped = raw.rstrip(b"\x00")
    if stripped and b"\x00" not in stripped:
        try:
            text = stripped.decode("utf-8")
            if text.isprintable():
                return text
        except UnicodeDecodeError:
            pass
    return "0x" + raw.hex()


def role(name: str) -> bytes:
    try:
        return ROLE_NAMES[name.strip().lower()]
    except KeyError:
        raise BadInput(f"unknown role {name!r}: choose one of {', '.join(ROLE_NAMES)}") from None


def role_name(raw: bytes) -> str:
    for name, value in ROLE_NAMES.items():
        if bytes(value) == bytes(raw):
            return name
    return "0x" + bytes(raw).hex()


def protocol(name: str) -> int:
    try:
        return PROTOCOLS[name.strip().lower()]
    except KeyError:
        raise BadInput(f"unknown protocol {name!r}: choose bb84 or e91") from None


def protocol_name(code: int) -> str:
    for name, value in PROTOCOLS.items():
        if value == code:
            return name
    return f"protocol-{code}"
