"""Message protection with QKD keys: key pools, one-time pad, AES-256-GCM, replay protection.

Two ciphers share one sealed-message format (``Sealed``: a ``Header``, the ciphertext and a
16-byte tag) and one receiver (``Decryptor``):

- ``OtpCipher`` - the one-time pad. Every payload bit is XORed with a pool bit that is
  handed out exactly once (``KeyPool.take_bits``). A pad alone gives no integrity, so each
  message also takes 254 fresh pool bits for a one-time Wegman-Carter MAC: a polynomial
  hash over GF(p), p = 2^127 - 1, keyed by r (127 bits), masked by s (127 bits):
  ``tag = (sum_i c_i r^(L-i+1) + s) mod p``, c_i the 15-byte blocks of (header, ciphertext)
  with a marker byte as in Poly1305. A forgery succeeds with probability at most L/p
  (about 2^-122 for a 300-byte payload) whatever the attacker's computing power, so the
  pair stays information-theoretic like the pad itself; HMAC keyed by pool bits would
  only be computationally secure. The MAC bits are counted as consumed.
- ``AesGcmCipher`` - AES-256-GCM. A message key is derived with HKDF-SHA-256 from the
  whole QKD key (salt: the key id; info: the sender and an epoch counter); the 96-bit
  nonce is the sender's sequence number, so a (message key, nonce) pair never repeats;
  the sender moves to the next epoch after ``rekey_messages`` messages or
  ``rekey_seconds`` seconds; the header is the associated data.

Receivers check a sliding 64-message window per sender, as IPsec does (RFC 4303), so a
replay is refused while reordering inside the window is not. Ledger reasons (revoked,
expired, unrecorded) are the caller's: it validates ``header.key_ids`` against its ledger
view before calling ``Decryptor.open``.

Key material never appears in a repr: pools, slices and ciphers print ids and counts only.
"""

from __future__ import annotations

import functools
import hmac
import math
import struct
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# ---------------------------------------------------------------------------- constants

MAC_PRIME = (1 << 127) - 1
MAC_KEY_PART_BITS = 127
MAC_KEY_BITS = 2 * MAC_KEY_PART_BITS  # r and s of the one-time MAC, fresh per message
MAC_BLOCK_BYTES = 15
_MAC_MARK = 1 << (8 * MAC_BLOCK_BYTES)
TAG_BYTES = 16
NONCE_BYTES = 12
AES_KEY_BYTES = 32
AES_MIN_KEY_BITS = 256  # a QKD key shorter than the AES key would cap its strength
REPLAY_WINDOW = 64
MAX_SEQ = (1 << 64) - 1
MAX_PAYLOAD_BYTES = 0xFFFF  # the wire format carries a 16-bit length

MODE_OTP = "otp"
MODE_AES_GCM = "aes-gcm"
_MODE_CODES = {MODE_OTP: 1, MODE_AES_GCM: 2}
_MODE_NAMES = {code: name for name, code in _MODE_CODES.items()}
HEADER_VERSION = 1

HKDF_INFO_MESSAGE_KEY = b"qkd-iov/aes-256-gcm/message-key/v1"
HKDF_INFO_HYBRID = b"qkd-iov/hybrid-qkd-mlkem768/v1"
MLKEM768_SHARED_BYTES = 32

# Processing energy per payload byte on a microcontroller. AES: the spec's 0.14 uJ/byte.
# OTP: an assumption. Software AES costs about 150 cycles/byte on a Cortex-M class core, so
# 0.14 uJ/byte is about 0.9 nJ/cycle; XOR with its loads and stores is about 4 cycles/byte
# (0.004 uJ) and the GF(2^127 - 1) polynomial MAC about 6-8 cycles/byte (0.006 uJ): 0.01 uJ/byte.
AES_GCM_J_PER_BYTE = 0.14e-6
OTP_J_PER_BYTE = 0.01e-6

REJECT_REASONS = ("tampered", "replay", "unknown-key", "malformed")


# ---------------------------------------------------------------------------- errors


class PoolExhausted(Exception):
    """The pool holds too few unexpired bits (or no usable AES key); the sender waits or drops."""

    def __init__(self, needed_bits: int, available_bits: int, what: str = "pad bits"):
        super().__init__(f"key pool exhausted: {what} needs {needed_bits} bits, {available_bits} available")
        self.needed_bits = needed_bits
        self.available_bits = available_bits


class Rejected(Exception):
    """A receiver refused a message; ``reason`` is one of ``REJECT_REASONS``."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# ---------------------------------------------------------------------------- bits


def as_bits(key: bytes | bytearray | np.ndarray) -> np.ndarray:
    """Key material as a read-only uint8 array of 0/1 (bytes unpack big-endian, as qkd packs)."""
    if isinstance(key, bytes | bytearray):
        bits = np.unpackbits(np.frombuffer(bytes(key), dtype=np.uint8))
    elif isinstance(key, np.ndarray):
        if key.ndim != 1:
            raise ValueError("a bit array must be one-dimensional")
        if key.size and (key.min() < 0 or key.max() > 1):
            raise ValueError("a bit array holds only 0 and 1")
        bits = key.astype(np.uint8, copy=True)
    else:
        raise TypeError(f"key material must be bytes or a bit array, not {type(key).__name__}")
    bits.flags.writeable = False
    return bits


def bits_to_bytes(bits: np.ndarray) -> bytes:
    """Packed big-endian; the last byte is zero-padded (the same packing as qkd's key_bytes)."""
    return np.packbits(bits).tobytes()


def _bits_to_int(bits: np.ndarray) -> int:
    return int.from_bytes(np.packbits(bits).tobytes(), "big") >> ((-bits.size) % 8)


def _xor(data: bytes, pad: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(len(data), "big")


# ---------------------------------------------------------------------------- key pool


@dataclass(frozen=True)
class PadSlice:
    """``bits`` are pool bits ``offset .. offset + len(bits)`` of key ``key_id``, handed out once."""

    key_id: str
    offset: int
    bits: np.ndarray = field(repr=False, compare=False)

    @property
    def length(self) -> int:
        return int(self.bits.size)


@dataclass(frozen=True)
class PoolKey:
    """A whole QKD key claimed for AES-GCM."""

    key_id: str
    expires_at: float
    bits: np.ndarray = field(repr=False, compare=False)

    @property
    def material(self) -> bytes:
        return bits_to_bytes(self.bits)


@dataclass(repr=False)
class _PoolEntry:
    key_id: str
    bits: np.ndarray
    expires_at: float
    serial: int
    next_offset: int = 0  # bits before it were handed out as pad
    claimed: bool = False  # taken whole for AES

    @property
    def remaining(self) -> int:
        return int(self.bits.size) - self.next_offset


class KeyPool:
    """One link's key material from QKD sessions, in the order it arrived.

    The one-time pad takes bits from the oldest key first (``take_bits``); a bit handed out
    is never handed out again, including across keys, and a request that cannot be met in
    full takes nothing. AES-GCM claims a whole untouched key (``current_key``): its bits
    leave the pad supply at once. Expired keys are dropped before either. Invariant:
    ``bits_added == bits_consumed + bits_discarded + available_bits``.

    The receiving side of a link fills its own pool with the same keys and passes
    ``lookup`` to ``Decryptor.open``.
    """

    def __init__(self, link: str = ""):
        self.link = link
        self._unused: deque[_PoolEntry] = deque()  # keys with pad bits left, oldest first
        self._by_id: dict[str, _PoolEntry] = {}
        self._claimed: _PoolEntry | None = None
        self._serial = 0
        self._available = 0
        self._earliest_expiry = math.inf
        self.keys_added = 0
        self.bits_added = 0
        self.bits_consumed = 0
        self.bits_discarded = 0  # pad bits lost unused: expired or forgotten

    def __repr__(self) -> str:
        return (
            f"KeyPool(link={self.link!r}, keys={len(self._unused)}, available_bits={self._available}, "
            f"bits_added={self.bits_added}, bits_consumed={self.bits_consumed})"
        )

    @property
    def available_bits(self) -> int:
        """Pad bits not yet handed out, claimed or expired (expiry is applied on take/discard)."""
        return self._available

    def add(self, key_id: str, key: bytes | bytearray | np.ndarray, expires_at: float) -> None:
        if key_id in self._by_id:
            raise ValueError(f"key {key_id} is already in the pool")
        bits = as_bits(key)
        if bits.size == 0:
            raise ValueError("an empty key adds nothing")
        entry = _PoolEntry(key_id, bits, float(expires_at), self._serial)
        self._serial += 1
        self._unused.append(entry)
        self._by_id[key_id] = entry
        self._available += int(bits.size)
        self._earliest_expiry = min(self._earliest_expiry, entry.expires_at)
        self.keys_added += 1
        self.bits_added += int(bits.size)

    def lookup(self, key_id: str) -> np.ndarray | None:
        """The whole key as bits (receivers decrypt with it); None once unknown or forgotten."""
        entry = self._by_id.get(key_id)
        return None if entry is None else entry.bits

    def forget(self, key_id: str) -> None:
        """Drop a key's material (e.g. once revoked); pad bits it still had are discarded."""
        entry = self._by_id.pop(key_id, None)
        if entry is None:
            return
        if not entry.claimed and entry.remaining:
            self._unused.remove(entry)
            self._retire(entry)
        if self._claimed is entry:
            self._claimed = None

    def discard_expired(self, now: float) -> int:
        """Drop keys with ``now >= expires_at`` (material too); returns the pad bits lost with them."""
        if now < self._earliest_expiry:
            return 0
        lost = 0
        for key_id, entry in list(self._by_id.items()):
            if now >= entry.expires_at:
                del self._by_id[key_id]
                if not entry.claimed:
                    lost += self._retire(entry)
                if entry is self._claimed:
                    self._claimed = None
        self._unused = deque(e for e in self._unused if e.key_id in self._by_id)
        self._earliest_expiry = min((e.expires_at for e in self._by_id.values()), default=math.inf)
        return lost

    def _retire(self, entry: _PoolEntry) -> int:
        lost = entry.remaining
        self._available -= lost
        self.bits_discarded += lost
        entry.next_offset = int(entry.bits.size)
        return lost

    def take_bits(self, n: int, now: float | None = None) -> list[PadSlice]:
        """Hand out the next ``n`` pad bits, oldest key first, or raise ``PoolExhausted``."""
        if n < 0:
            raise ValueError("cannot take a negative number of bits")
        if now is not None:
            self.discard_expired(now)
        if n > self._available:
            raise PoolExhausted(n, self._available)
        slices: list[PadSlice] = []
        still_needed = n
        while still_needed:
            entry = self._unused[0]
            count = min(still_needed, entry.remaining)
            start = entry.next_offset
            slices.append(PadSlice(entry.key_id, start, entry.bits[start : start + count]))
            entry.next_offset += count
            still_needed -= count
            if entry.remaining == 0:
                self._unused.popleft()
        self._available -= n
        self.bits_consumed += n
        return slices

    def current_key(self, now: float, min_bits: int = AES_MIN_KEY_BITS) -> PoolKey:
        """The key AES-GCM should use now: the newest untouched key, else the one already claimed.

        A newer untouched key of at least ``min_bits`` replaces the claimed one (a fresh QKD
        session refreshes the key); its bits stop being pad bits from then on.
        """
        self.discard_expired(now)
        claimed = self._claimed
        fresh = None
        for entry in reversed(self._unused):
            if claimed is not None and entry.serial < claimed.serial:
                break
            if entry.next_offset == 0 and entry.bits.size >= min_bits:
                fresh = entry
                break
        if fresh is not None:
            self._unused.remove(fresh)
            self._available -= int(fresh.bits.size)
            self.bits_consumed += int(fresh.bits.size)
            fresh.claimed = True
            fresh.next_offset = int(fresh.bits.size)
            self._claimed = claimed = fresh
        if claimed is None:
            raise PoolExhausted(min_bits, self._available, "an AES key")
        return PoolKey(claimed.key_id, claimed.expires_at, claimed.bits)


# ---------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class PadSegment:
    """Where a run of pad bits came from: key ``key_id``, bits ``offset .. offset + length``."""

    key_id: str
    offset: int
    length: int


_FIXED = struct.Struct(">BB")  # version, mode
_SEQ_TIME = struct.Struct(">Qd")
_EPOCH = struct.Struct(">IH")  # epoch, number of pad segments
_SEGMENT = struct.Struct(">QI")


@functools.lru_cache(maxsize=1 << 14)
def _text_field(text: str) -> bytes:
    """An identifier on the wire: one length byte, then its UTF-8 bytes.

    Cached: a run encodes the same few hundred sender names and key ids in every header
    it seals and parses (2-3 us each time otherwise)."""
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"identifier longer than 255 bytes: {text[:40]!r}...")
    return bytes((len(raw),)) + raw


def _put_text(out: list[bytes], text: str) -> None:
    out.append(_text_field(text))


def _text_at(data: bytes, pos: int) -> tuple[str, int]:
    """The identifier at ``pos`` and the position after it (``_Reader.text`` in one step)."""
    if pos >= len(data):
        raise Rejected("malformed", "message cut short")
    end = pos + 1 + data[pos]
    if end > len(data):
        raise Rejected("malformed", "message cut short")
    try:
        return data[pos + 1 : end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise Rejected("malformed", "identifier is not UTF-8") from None


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Rejected("malformed", "message cut short")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[int | float, ...]:
        return fmt.unpack(self.take(fmt.size))

    def text(self) -> str:
        try:
            return self.take(self.take(1)[0]).decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected("malformed", "identifier is not UTF-8") from None


@dataclass(frozen=True)
class Header:
    """Sent in clear and authenticated: the MAC input (OTP) or the associated data (AES-GCM)."""

    mode: str
    sender: str
    seq: int
    timestamp: float  # the application's send time, for end-to-end latency
    key_id: str = ""  # AES-GCM: the QKD key the message key comes from
    epoch: int = 0  # AES-GCM: rekey counter under that key
    segments: tuple[PadSegment, ...] = ()  # OTP: the pad bits, MAC key first
    encoded: bytes = field(init=False, repr=False, compare=False)

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every QKD key the message depends on: what a receiver validates on its ledger view."""
        if self.mode == MODE_OTP:
            return tuple(dict.fromkeys(s.key_id for s in self.segments))
        return (self.key_id,)

    def __post_init__(self) -> None:
        # encoded once, eagerly: it is the MAC input or associated data and the wire header
        out = [
            _FIXED.pack(HEADER_VERSION, _MODE_CODES[self.mode]),
            _text_field(self.sender),
            _SEQ_TIME.pack(self.seq, self.timestamp),
            _text_field(self.key_id),
            _EPOCH.pack(self.epoch, len(self.segments)),
        ]
        for segment in self.segments:
            out.append(_text_field(segment.key_id))
            out.append(_SEGMENT.pack(segment.offset, segment.length))
        object.__setattr__(self, "encoded", b"".join(out))

    @classmethod
    def decode(cls, reader: _Reader) -> Header:
        version, mode_code = reader.unpack(_FIXED)
        if version != HEADER_VERSION or mode_code not in _MODE_NAMES:
            raise Rejected("malformed", f"version {version}, mode {mode_code}")
        sender = reader.text()
        seq, timestamp = reader.unpack(_SEQ_TIME)
        key_id = reader.text()
        epoch, count = reader.unpack(_EPOCH)
        segments = []
        for _ in range(int(count)):
            seg_key = reader.text()
            offset, length = reader.unpack(_SEGMENT)
            segments.append(PadSegment(seg_key, int(offset), int(length)))
        mode = _MODE_NAMES[int(mode_code)]
        return cls(mode, sender, int(seq), float(timestamp), key_id, int(epoch), tuple(segments))

    @classmethod
    def _from_wire(cls, data: bytes) -> tuple[Header, int]:
        """:meth:`decode` straight from the bytes: the header and where it ends."""
        try:
            version, mode_code = _FIXED.unpack_from(data, 0)
            if version != HEADER_VERSION or mode_code not in _MODE_NAMES:
                raise Rejected("malformed", f"version {version}, mode {mode_code}")
            sender, pos = _text_at(data, 2)
            seq, timestamp = _SEQ_TIME.unpack_from(data, pos)
            key_id, pos = _text_at(data, pos + _SEQ_TIME.size)
            epoch, count = _EPOCH.unpack_from(data, pos)
            pos += _EPOCH.size
            segments = []
            for _ in range(count):
                seg_key, pos = _text_at(data, pos)
                offset, length = _SEGMENT.unpack_from(data, pos)
                pos += _SEGMENT.size
                segments.append(PadSegment(seg_key, offset, length))
        except struct.error:
            raise Rejected("malformed", "message cut short") from None
        return cls(_MODE_NAMES[mode_code], sender, seq, timestamp, key_id, epoch, tuple(segments)), pos


@dataclass(frozen=True)
class Sealed:
    header: Header
    ciphertext: bytes
    tag: bytes

    @property
    def wire_bytes(self) -> int:
        """Size on the air: header, length field, ciphertext and tag."""
        return len(self.header.encoded) + 2 + len(self.ciphertext) + len(self.tag)

    @property
    def overhead_bytes(self) -> int:
        return self.wire_bytes - len(self.ciphertext)

    def to_bytes(self) -> bytes:
        return self.header.encoded + len(self.ciphertext).to_bytes(2, "big") + self.ciphertext + self.tag

    @classmethod
    def from_bytes(cls, data: bytes) -> Sealed:
        """Parse a received message; anything that does not re-encode identically is malformed."""
        data = bytes(data)
        try:
            header, header_end = Header._from_wire(data)
        except ValueError as exc:
            raise Rejected("malformed", str(exc)) from None
        body = header_end + 2
        if body > len(data):
            raise Rejected("malformed", "message cut short")
        tag_at = body + int.from_bytes(data[header_end:body], "big")
        if tag_at + TAG_BYTES > len(data):
            raise Rejected("malformed", "message cut short")
        if tag_at + TAG_BYTES != len(data) or header.encoded != data[:header_end]:
            raise Rejected("malformed", "trailing or non-canonical bytes")
        return cls(header, data[body:tag_at], data[tag_at:])


# ---------------------------------------------------------------------------- one-time MAC


def _one_time_mac(r: int, s: int, header: bytes, ciphertext: bytes) -> bytes:
    """Polynomial Wegman-Carter tag over GF(2^127 - 1); r and s must never be reused.

    Blocks are 15 bytes read little-endian plus a marker 1 just above their last byte (as
    in Poly1305), so messages of different lengths give different polynomials.
    """
    message = len(header).to_bytes(2, "big") + header + ciphertext
    whole = len(message) - len(message) % MAC_BLOCK_BYTES
    from_bytes = int.from_bytes
    acc = 0
    for start in range(0, whole, MAC_BLOCK_BYTES):
        block = from_bytes(message[start : start + MAC_BLOCK_BYTES], "little") + _MAC_MARK
        acc = (acc + block) * r % MAC_PRIME
    if whole < len(message):
        tail = message[whole:]
        acc = (acc + from_bytes(tail, "little") + (1 << (8 * len(tail)))) * r % MAC_PRIME
    return ((acc + s) % MAC_PRIME).to_bytes(TAG_BYTES, "big")


def _split_mac_key(bits: np.ndarray) -> tuple[int, int]:
    r = _bits_to_int(bits[:MAC_KEY_PART_BITS]) % MAC_PRIME
    s = _bits_to_int(bits[MAC_KEY_PART_BITS:MAC_KEY_BITS]) % MAC_PRIME
    return r, s


# ---------------------------------------------------------------------------- ciphers


def _check_payload(payload: bytes) -> None:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")


class _Sequencer:
    """Per-sender sequence numbers: strictly increasing, so nonces and replay checks hold."""

    def __init__(self, sender: str, first_seq: int):
        if not 0 <= first_seq <= MAX_SEQ:
            raise ValueError("first_seq must fit 64 bits")
        self.sender = sender
        self.next_seq = first_seq

    def allocate(self) -> int:
        if self.next_seq > MAX_SEQ:
            raise OverflowError(f"sender {self.sender} ran out of sequence numbers")
        seq = self.next_seq
        self.next_seq += 1
        return seq


class OtpCipher:
    """One-time pad with a one-time polynomial MAC, both from pool bits used once.

    Costs ``8 * len(payload) + MAC_KEY_BITS`` pool bits per message. One cipher per sender
    id: its sequence numbers feed the receiver's replay window.
    """

    mode = MODE_OTP

    def __init__(self, sender: str, *, first_seq: int = 1):
        self._seq = _Sequencer(sender, first_seq)
        self.sender = sender
        self.messages = 0
        self.exhausted = 0

    def __repr__(self) -> str:
        return f"OtpCipher(sender={self.sender!r}, messages={self.messages}, exhausted={self.exhausted})"

    @staticmethod
    def bits_needed(payload_bytes: int) -> int:
        return 8 * payload_bytes + MAC_KEY_BITS

    def encrypt(self, payload: bytes, pool: KeyPool, now: float) -> Sealed:
        _check_payload(payload)
        try:
            slices = pool.take_bits(self.bits_needed(len(payload)), now)
        except PoolExhausted:
            self.exhausted += 1
            raise
        pad = slices[0].bits if len(slices) == 1 else np.concatenate([s.bits for s in slices])
        header = Header(
            MODE_OTP,
            self.sender,
            self._seq.allocate(),
            float(now),
            segments=tuple(PadSegment(s.key_id, s.offset, s.length) for s in slices),
        )
        ciphertext = _xor(payload, bits_to_bytes(pad[MAC_KEY_BITS:]))
        tag = _one_time_mac(*_split_mac_key(pad), header.encoded, ciphertext)
        self.messages += 1
        return Sealed(header, ciphertext, tag)


def derive_message_key(qkd_key: bytes, key_id: str, sender: str, epoch: int) -> bytes:
    """HKDF-SHA-256: one AES-256 key per (QKD key, sender, epoch).

    The sender is bound so both directions of a link can share a QKD key without ever
    sharing a (key, nonce) pair; epochs are derived side by side from the QKD key (not
    ratcheted) so a receiver reaches any epoch in one step.
    """
    info = [HKDF_INFO_MESSAGE_KEY]
    _put_text(info, sender)
    info.append(epoch.to_bytes(4, "big"))
    return HKDF(
        algorithm=hashes.SHA256(), length=AES_KEY_BYTES, salt=key_id.encode("utf-8"), info=b"".join(info)
    ).derive(qkd_key)


def _nonce(seq: int) -> bytes:
    return seq.to_bytes(NONCE_BYTES, "big")


class AesGcmCipher:
    """AES-256-GCM under keys derived from the pool's current QKD key, rekeyed by epochs.

    The epoch moves on after ``rekey_messages`` messages or ``rekey_seconds`` seconds under
    one message key; a new QKD key in the pool restarts at epoch 0. One cipher per sender id.
    """

    mode = MODE_AES_GCM

    def __init__(
        self,
        sender: str,
        *,
        rekey_messages: int = 10_000,
        rekey_seconds: float = 60.0,
        min_key_bits: int = AES_MIN_KEY_BITS,
        first_seq: int = 1,
    ):
        if rekey_messages < 1 or rekey_seconds <= 0:
            raise ValueError("rekey_messages must be >= 1 and rekey_seconds > 0")
        self._seq = _Sequencer(sender, first_seq)
        self.sender = sender
        self.rekey_messages = rekey_messages
        self.rekey_seconds = rekey_seconds
        self.min_key_bits = min_key_bits
        self.messages = 0
        self.rekeys = 0
        self.key_changes = 0
        self.exhausted = 0
        self._key_id: str | None = None
        self._qkd_key = b""
        self._epoch = 0
        self._epoch_started = 0.0
        self._epoch_messages = 0
        self._aead: AESGCM | None = None

    def __repr__(self) -> str:
        return (
            f"AesGcmCipher(sender={self.sender!r}, key_id={self._key_id!r}, epoch={self._epoch}, "
            f"messages={self.messages}, rekeys={self.rekeys}, key_changes={self.key_changes})"
        )

    @property
    def epoch(self) -> int:
        return self._epoch

    def _enter_epoch(self, epoch: int, now: float) -> None:
        assert self._key_id is not None
        self._epoch = epoch
        self._epoch_started = now
        self._epoch_messages = 0
        self._aead = AESGCM(derive_message_key(self._qkd_key, self._key_id, self.sender, epoch))

    def encrypt(self, payload: bytes, pool: KeyPool, now: float) -> Sealed:
        _check_payload(payload)
        try:
            key = pool.current_key(now, self.min_key_bits)
        except PoolExhausted:
            self.exhausted += 1
            raise
        if key.key_id != self._key_id:
            if self._key_id is not None:
                self.key_changes += 1
            self._key_id = key.key_id
            self._qkd_key = key.material
            self._enter_epoch(0, now)
        elif self._epoch_messages >= self.rekey_messages or now - self._epoch_started >= self.rekey_seconds:
            if self._epoch >= 0xFFFFFFFF:
                raise OverflowError("epoch counter exhausted: add a fresh QKD key")
            self.rekeys += 1
            self._enter_epoch(self._epoch + 1, now)
        assert self._aead is not None
        header = Header(MODE_AES_GCM, self.sender, self._seq.allocate(), float(now), key.key_id, self._epoch)
        sealed = self._aead.encrypt(_nonce(header.seq), payload, header.encoded)
        self._epoch_messages += 1
        self.messages += 1
        return Sealed(header, sealed[:-TAG_BYTES], sealed[-TAG_BYTES:])


# ---------------------------------------------------------------------------- receiver


class ReplayWindow:
    """Sliding anti-replay window (RFC 4303 section 3.4.3): bit i marks seq ``top - i`` as seen."""

    def __init__(self, size: int = REPLAY_WINDOW):
        if size < 1:
            raise ValueError("the window holds at least one sequence number")
        self.size = size
        self.top = -1
        self._seen = 0
        self._full = (1 << size) - 1

    def fresh(self, seq: int) -> bool:
        """True when ``seq`` is new: above the window's top, or inside it and not yet seen."""
        if seq > self.top:
            return True
        behind = self.top - seq
        return behind < self.size and not (self._seen >> behind) & 1

    def mark(self, seq: int) -> None:
        """Record an authenticated ``seq`` (call only after ``fresh`` and the tag check)."""
        if seq > self.top:
            self._seen = ((self._seen << (seq - self.top)) | 1) & self._full
            self.top = seq
        else:
            self._seen |= 1 << (self.top - seq)


KeyLookup = Callable[[str], bytes | np.ndarray | None]


def _same_material(known: bytes | np.ndarray, looked_up: bytes | np.ndarray) -> bool:
    """Cheap when the lookup hands back the same object each time (KeyPool.lookup does)."""
    if known is looked_up:
        return True
    if isinstance(known, np.ndarray) or isinstance(looked_up, np.ndarray):
        return False
    return hmac.compare_digest(known, looked_up)


class _HasMode(Protocol):
    mode: str


class Decryptor:
    """The receiving side: key lookup, tag check, then the per-sender replay window.

    Refusals raise ``Rejected`` and are counted in ``rejected``. The window moves only
    for authenticated messages, so forged traffic cannot push it forward.
    """

    def __init__(self, *, window: int = REPLAY_WINDOW, cached_message_keys: int = 4096):
        self.window_size = window
        self._windows: dict[str, ReplayWindow] = {}
        # (key id, sender, epoch) -> (the looked-up material, its AEAD): HKDF once per epoch
        self._aeads: dict[tuple[str, str, int], tuple[bytes | np.ndarray, AESGCM]] = {}
        self._cache_limit = cached_message_keys
        self.accepted = 0
        self.rejected: Counter[str] = Counter()

    def __repr__(self) -> str:
        rejected = dict(self.rejected)
        return f"Decryptor(senders={len(self._windows)}, accepted={self.accepted}, rejected={rejected})"

    def open(self, sealed: Sealed, key_lookup: KeyLookup) -> bytes:
        """Plaintext of an authentic, fresh message, or ``Rejected(reason)``."""
        try:
            header = sealed.header
            window = self._windows.get(header.sender)
            if window is not None and not window.fresh(header.seq):
                raise Rejected("replay", f"seq {header.seq} from {header.sender}")
            if header.mode == MODE_OTP:
                plaintext = self._open_otp(sealed, key_lookup)
            elif header.mode == MODE_AES_GCM:
                plaintext = self._open_aes(sealed, key_lookup)
            else:
                raise Rejected("malformed", f"mode {header.mode!r}")
        except Rejected as exc:
            self.rejected[exc.reason] += 1
            raise
        if window is None:
            window = self._windows[header.sender] = ReplayWindow(self.window_size)
        window.mark(header.seq)
        self.accepted += 1
        return plaintext

    @staticmethod
    def _key_bits(key_lookup: KeyLookup, key_id: str) -> np.ndarray:
        material = key_lookup(key_id)
        if material is None:
            raise Rejected("unknown-key", key_id)
        return material if isinstance(material, np.ndarray) else as_bits(material)

    def _open_otp(self, sealed: Sealed, key_lookup: KeyLookup) -> bytes:
        header = sealed.header
        if not header.segments or len(sealed.tag) != TAG_BYTES:
            raise Rejected("malformed", "OTP message without pad segments or tag")
        if sum(s.length for s in header.segments) != OtpCipher.bits_needed(len(sealed.ciphertext)):
            raise Rejected("tampered", "pad length does not match the ciphertext")
        runs = []
        for segment in header.segments:
            bits = self._key_bits(key_lookup, segment.key_id)
            if segment.offset + segment.length > bits.size:
                raise Rejected("unknown-key", f"bits beyond the end of key {segment.key_id}")
            runs.append(bits[segment.offset : segment.offset + segment.length])
        pad = runs[0] if len(runs) == 1 else np.concatenate(runs)
        expected = _one_time_mac(*_split_mac_key(pad), header.encoded, sealed.ciphertext)
        if not hmac.compare_digest(expected, sealed.tag):
            raise Rejected("tampered", "one-time MAC mismatch")
        return _xor(sealed.ciphertext, bits_to_bytes(pad[MAC_KEY_BITS:]))

    def _open_aes(self, sealed: Sealed, key_lookup: KeyLookup) -> bytes:
        header = sealed.header
        material = key_lookup(header.key_id)
        if material is None:
            raise Rejected("unknown-key", header.key_id)
        slot = (header.key_id, header.sender, header.epoch)
        cached = self._aeads.get(slot)
        if cached is None or not _same_material(cached[0], material):
            # a key id looked up to other material than before gets a fresh derivation
            qkd_key = bits_to_bytes(material) if isinstance(material, np.ndarray) else bytes(material)
            if cached is None and len(self._aeads) >= self._cache_limit:
                self._aeads.pop(next(iter(self._aeads)))
            cached = (material, AESGCM(derive_message_key(qkd_key, *slot)))
            self._aeads[slot] = cached
        try:
            return cached[1].decrypt(_nonce(header.seq), sealed.ciphertext + sealed.tag, header.encoded)
        except InvalidTag:
            raise Rejected("tampered", "AES-GCM tag mismatch") from None


# ---------------------------------------------------------------------------- hybrid PQ


def hybrid_secret(qkd_key: bytes, mlkem_shared: bytes) -> bytes:
    """HKDF-SHA-256 over (QKD key || ML-KEM-768 shared secret): safe while either part is.

    The ML-KEM part has a fixed 32 bytes, so the concatenation is unambiguous. The result
    can be added to a pool in place of the QKD key, under the same key id.
    """
    if len(mlkem_shared) != MLKEM768_SHARED_BYTES:
        raise ValueError(f"an ML-KEM-768 shared secret has {MLKEM768_SHARED_BYTES} bytes")
    if not qkd_key:
        raise ValueError("the QKD key is empty")
    return HKDF(algorithm=hashes.SHA256(), length=AES_KEY_BYTES, salt=None, info=HKDF_INFO_HYBRID).derive(
        bytes(qkd_key) + bytes(mlkem_shared)
    )


def mlkem_available() -> bool:
    """Whether this cryptography build (OpenSSL) offers ML-KEM-768."""
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        return bool(backend.mlkem_supported())
    except (ImportError, AttributeError):
        return False


def mlkem_keypair() -> tuple[MLKEM768PrivateKey, bytes]:
    """(private key, raw public key bytes) of ML-KEM-768."""
    private = MLKEM768PrivateKey.generate()
    return private, private.public_key().public_bytes_raw()


def mlkem_encapsulate(public_key: bytes) -> tuple[bytes, bytes]:
    """(shared secret, ciphertext) for the holder of ``public_key`` (1,184 raw bytes)."""
    return MLKEM768PublicKey.from_public_bytes(public_key).encapsulate()


def mlkem_decapsulate(private_key: MLKEM768PrivateKey, ciphertext: bytes) -> bytes:
    """The shared secret from a ciphertext of ``mlkem_encapsulate`` (1,088 bytes)."""
    return private_key.decapsulate(ciphertext)


# ---------------------------------------------------------------------------- energy


def crypto_energy_j(payload_bytes: int, cipher: str | _HasMode) -> float:
    """Processing energy of protecting ``payload_bytes`` on a microcontroller (see constants)."""
    mode = cipher if isinstance(cipher, str) else cipher.mode
    if payload_bytes < 0:
        raise ValueError("payload size is negative")
    if mode == MODE_AES_GCM:
        return payload_bytes * AES_GCM_J_PER_BYTE
    if mode == MODE_OTP:
        return payload_bytes * OTP_J_PER_BYTE
    raise ValueError(f"unknown cipher mode {mode!r}: choose {MODE_OTP} or {MODE_AES_GCM}")
