"""vehicles.crypto: key pools, one-time pad + one-time MAC, AES-256-GCM, replay window, hybrid keys.

All randomness is seeded; Hypothesis runs derandomized without a database.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vehicles import crypto
from vehicles.crypto import (
    MAC_KEY_BITS,
    AesGcmCipher,
    Decryptor,
    Header,
    KeyPool,
    OtpCipher,
    PoolExhausted,
    Rejected,
    ReplayWindow,
    Sealed,
)

SEEDED = settings(derandomize=True, database=None, deadline=None)
FAR_FUTURE = 1e12


def random_key(rng: np.random.Generator, n_bytes: int = 512) -> bytes:
    return rng.bytes(n_bytes)


def linked_pools(*keys: tuple[str, bytes, float]) -> tuple[KeyPool, KeyPool]:
    """The two ends of a link holding the same QKD keys: the sender takes, the receiver looks up."""
    sender, receiver = KeyPool("car-1>rsu-1"), KeyPool("rsu-1<car-1")
    for key_id, key, expires_at in keys:
        sender.add(key_id, key, expires_at)
        receiver.add(key_id, key, expires_at)
    return sender, receiver


def rejection(decryptor: Decryptor, sealed: Sealed, pool: KeyPool) -> str:
    with pytest.raises(Rejected) as excinfo:
        decryptor.open(sealed, pool.lookup)
    return excinfo.value.reason


# ---------------------------------------------------------------------------- key pool


def test_pool_takes_oldest_bits_first_and_counts() -> None:
    pool = KeyPool()
    pool.add("a", np.array([1, 0, 1], dtype=np.uint8), FAR_FUTURE)
    pool.add("b", b"\xf0", FAR_FUTURE)
    slices = pool.take_bits(5)
    assert [(s.key_id, s.offset, s.length) for s in slices] == [("a", 0, 3), ("b", 0, 2)]
    assert np.concatenate([s.bits for s in slices]).tolist() == [1, 0, 1, 1, 1]
    assert pool.take_bits(6)[0].bits.tolist() == [1, 1, 0, 0, 0, 0]
    assert (pool.bits_added, pool.bits_consumed, pool.available_bits) == (11, 11, 0)
    with pytest.raises(PoolExhausted):
        pool.take_bits(1)


def test_pool_refuses_bad_keys() -> None:
    pool = KeyPool()
    pool.add("a", b"\x01", FAR_FUTURE)
    with pytest.raises(ValueError, match="already"):
        pool.add("a", b"\x02", FAR_FUTURE)
    with pytest.raises(ValueError, match="empty"):
        pool.add("b", b"", FAR_FUTURE)
    with pytest.raises(ValueError, match="0 and 1"):
        pool.add("c", np.array([0, 2]), FAR_FUTURE)


pool_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 600), st.floats(1, 200)),
        st.tuples(st.just("add"), st.integers(1, 600), st.floats(1, 200)),
        st.tuples(st.just("take"), st.integers(0, 300), st.floats(0, 2)),
        st.tuples(st.just("aes"), st.integers(1, 200), st.floats(0, 2)),
        st.tuples(st.just("forget"), st.integers(0, 30), st.just(0.0)),
    ),
    max_size=60,
)


@settings(SEEDED, max_examples=300)
@given(pool_ops)
def test_pool_never_hands_out_a_bit_twice(ops: list[tuple[str, int, float]]) -> None:
    """Over any add / take / AES-claim / forget sequence, each (key id, bit offset) goes out once."""
    rng = np.random.default_rng(7)
    pool = KeyPool()
    material: dict[str, np.ndarray] = {}
    handed_out: set[tuple[str, int]] = set()
    taken_bits = 0
    now = 0.0
    for op, size, amount in ops:
        if op == "add":
            key_id = f"k{len(material)}"
            material[key_id] = rng.integers(0, 2, size, dtype=np.uint8)
            pool.add(key_id, material[key_id], now + amount)
            continue
        now += amount
        if op == "take":
            try:
                slices = pool.take_bits(size, now)
            except PoolExhausted as exc:
                assert exc.needed_bits == size > exc.available_bits == pool.available_bits
                continue
            assert sum(s.length for s in slices) == size
            for s in slices:
                assert np.array_equal(s.bits, material[s.key_id][s.offset : s.offset + s.length])
                for offset in range(s.offset, s.offset + s.length):
                    assert (s.key_id, offset) not in handed_out
                    handed_out.add((s.key_id, offset))
            taken_bits += size
        elif op == "aes":
            before = pool.bits_consumed
            try:
                key = pool.current_key(now, min_bits=size)
            except PoolExhausted:
                continue
            assert now < key.expires_at
            if pool.bits_consumed != before:  # a fresh key was claimed whole
                claimed = {(key.key_id, i) for i in range(key.bits.size)}
                assert not claimed & handed_out
                handed_out |= claimed
                taken_bits += key.bits.size
        elif material:
            pool.forget(f"k{size % len(material)}")
        assert pool.bits_consumed == taken_bits == len(handed_out)
        assert pool.bits_added == pool.bits_consumed + pool.bits_discarded + pool.available_bits


def test_expired_keys_are_skipped_and_counted() -> None:
    pool = KeyPool()
    pool.add("old", b"\xff" * 4, expires_at=10)
    pool.add("new", b"\x00" * 4, expires_at=100)
    pool.take_bits(8, now=1)
    slices = pool.take_bits(8, now=10)  # "old" expired with 24 bits unused
    assert [(s.key_id, s.offset) for s in slices] == [("new", 0)]
    assert pool.bits_discarded == 24
    assert pool.lookup("old") is None
    with pytest.raises(PoolExhausted):
        pool.current_key(now=100)


# ---------------------------------------------------------------------------- one-time pad


def test_otp_round_trip_over_the_wire() -> None:
    rng = np.random.default_rng(1)
    sender, receiver = linked_pools(("k1", random_key(rng), FAR_FUTURE))
    cipher, decryptor = OtpCipher("car-1"), Decryptor()
    payload = rng.bytes(300)
    sealed = cipher.encrypt(payload, sender, now=5.0)
    assert sealed.ciphertext != payload and len(sealed.ciphertext) == 300
    assert sealed.header.segments == (crypto.PadSegment("k1", 0, 8 * 300 + MAC_KEY_BITS),)
    assert sender.bits_consumed == 8 * 300 + MAC_KEY_BITS
    received = Sealed.from_bytes(sealed.to_bytes())
    assert received == sealed and len(sealed.to_bytes()) == sealed.wire_bytes
    assert decryptor.open(received, receiver.lookup) == payload
    assert decryptor.accepted == 1


def test_otp_pad_spans_keys_and_empty_payload() -> None:
    rng = np.random.default_rng(2)
    sender, receiver = linked_pools(
        ("k1", random_key(rng, 40), FAR_FUTURE), ("k2", random_key(rng), FAR_FUTURE)
    )
    cipher, decryptor = OtpCipher("car-1"), Decryptor()
    first = cipher.encrypt(b"", sender, now=0)
    second = cipher.encrypt(b"x" * 50, sender, now=0)
    assert second.header.key_ids == ("k1", "k2")
    left_in_k1 = 320 - MAC_KEY_BITS
    assert [(s.offset, s.length) for s in second.header.segments] == [
        (MAC_KEY_BITS, left_in_k1),
        (0, 400 + MAC_KEY_BITS - left_in_k1),
    ]
    assert decryptor.open(first, receiver.lookup) == b""
    assert decryptor.open(second, receiver.lookup) == b"x" * 50


def test_otp_exhaustion_takes_nothing() -> None:
    sender, _ = linked_pools(("k1", b"\x00" * 100, FAR_FUTURE))
    cipher = OtpCipher("car-1")
    with pytest.raises(PoolExhausted) as excinfo:
        cipher.encrypt(b"y" * 100, sender, now=0)
    assert excinfo.value.needed_bits == 800 + MAC_KEY_BITS and excinfo.value.available_bits == 800
    assert (sender.available_bits, sender.bits_consumed, cipher.exhausted, cipher.messages) == (800, 0, 1, 0)
    assert cipher.encrypt(b"y" * 60, sender, now=0).header.seq == 1  # a refused message spends no seq


def test_otp_tampering_is_detected() -> None:
    rng = np.random.default_rng(3)
    sender, receiver = linked_pools(("k1", random_key(rng, 4096), FAR_FUTURE))
    cipher, decryptor = OtpCipher("car-1"), Decryptor()
    sealed = cipher.encrypt(b"brake now" * 30, sender, now=1)
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    assert rejection(decryptor, dataclasses.replace(sealed, ciphertext=flipped), receiver) == "tampered"
    moved = dataclasses.replace(sealed.header.segments[0], offset=1)
    forged = dataclasses.replace(sealed, header=dataclasses.replace(sealed.header, segments=(moved,)))
    assert rejection(decryptor, forged, receiver) == "tampered"
    late = dataclasses.replace(sealed, header=dataclasses.replace(sealed.header, timestamp=2.0))
    assert rejection(decryptor, late, receiver) == "tampered"
    truncated = dataclasses.replace(sealed, ciphertext=sealed.ciphertext[:-1])
    assert rejection(decryptor, truncated, receiver) == "tampered"
    assert decryptor.open(sealed, receiver.lookup) == b"brake now" * 30


@pytest.mark.parametrize("make_cipher", [OtpCipher, AesGcmCipher])
def test_every_single_byte_flip_on_the_wire_is_refused(make_cipher: type) -> None:
    rng = np.random.default_rng(4)
    sender, receiver = linked_pools(("k1", random_key(rng), FAR_FUTURE), ("k2", random_key(rng), FAR_FUTURE))
    cipher, decryptor = make_cipher("car-1"), Decryptor()
    wire = cipher.encrypt(rng.bytes(120), sender, now=3.0).to_bytes()
    reasons = set()
    for position in range(len(wire)):
        for mask in (0x01, 0x80):
            damaged = bytearray(wire)
            damaged[position] ^= mask
            with pytest.raises(Rejected) as excinfo:
                decryptor.open(Sealed.from_bytes(bytes(damaged)), receiver.lookup)
            reasons.add(excinfo.value.reason)
    assert reasons <= {"tampered", "malformed", "unknown-key"} and "tampered" in reasons
    assert decryptor.accepted == 0


def test_unknown_key_is_refused() -> None:
    rng = np.random.default_rng(5)
    sender, _ = linked_pools(("k1", random_key(rng), FAR_FUTURE), ("k2", random_key(rng), FAR_FUTURE))
    decryptor = Decryptor()
    for cipher in (OtpCipher("car-1"), AesGcmCipher("car-2")):
        sealed = cipher.encrypt(b"hello", sender, now=0)
        assert rejection(decryptor, sealed, KeyPool()) == "unknown-key"
    assert decryptor.rejected["unknown-key"] == 2


# ---------------------------------------------------------------------------- AES-GCM


def test_aes_gcm_round_trip_and_claimed_key() -> None:
    rng = np.random.default_rng(6)
    sender, receiver = linked_pools(("k1", random_key(rng, 32), FAR_FUTURE))
    cipher, decryptor = AesGcmCipher("car-1"), Decryptor()
    payloads = [rng.bytes(300) for _ in range(3)]
    sealed = [cipher.encrypt(p, sender, now=1.0) for p in payloads]
    assert [s.header.seq for s in sealed] == [1, 2, 3]
    assert {(s.header.key_id, s.header.epoch) for s in sealed} == {("k1", 0)}
    assert sender.bits_consumed == 256 and sender.available_bits == 0  # claimed whole, not pad
    assert sealed[0].overhead_bytes == sealed[0].wire_bytes - 300
    assert [decryptor.open(Sealed.from_bytes(s.to_bytes()), receiver.lookup) for s in sealed] == payloads


def test_aes_gcm_tampered_ciphertext_and_header_are_refused() -> None:
    rng = np.random.default_rng(7)
    sender, receiver = linked_pools(("k1", random_key(rng), FAR_FUTURE), ("k2", random_key(rng), FAR_FUTURE))
    sender.current_key(now=0)  # claims k2, the newest
    cipher, decryptor = AesGcmCipher("car-1", first_seq=10), Decryptor()
    sealed = cipher.encrypt(b"platoon gap 12 m", sender, now=0)
    header = sealed.header
    variants = [
        dataclasses.replace(sealed, ciphertext=b"Q" + sealed.ciphertext[1:]),
        dataclasses.replace(sealed, tag=bytes(16)),
        dataclasses.replace(sealed, header=dataclasses.replace(header, seq=11)),
        dataclasses.replace(sealed, header=dataclasses.replace(header, timestamp=0.5)),
        dataclasses.replace(sealed, header=dataclasses.replace(header, epoch=1)),
        dataclasses.replace(sealed, header=dataclasses.replace(header, sender="car-2")),
        dataclasses.replace(sealed, header=dataclasses.replace(header, key_id="k1")),
    ]
    assert [rejection(decryptor, v, receiver) for v in variants] == ["tampered"] * len(variants)
    assert decryptor.open(sealed, receiver.lookup) == b"platoon gap 12 m"


def test_rekey_after_messages_and_seconds_both_sides_decrypt() -> None:
    rng = np.random.default_rng(8)
    sender, receiver = linked_pools(("k1", random_key(rng), FAR_FUTURE))
    cipher, decryptor = AesGcmCipher("car-1", rekey_messages=5, rekey_seconds=10.0), Decryptor()
    payloads = [bytes([i]) * 20 for i in range(23)]
    sealed = [cipher.encrypt(p, sender, now=0.01 * i) for i, p in enumerate(payloads)]
    assert [s.header.epoch for s in sealed] == [i // 5 for i in range(23)]
    assert cipher.rekeys == 4
    payloads.append(b"late")
    sealed.append(cipher.encrypt(b"late", sender, now=20.0))  # 10 s after its epoch began
    assert sealed[-1].header.epoch == 5 and cipher.rekeys == 5
    order = [23, *range(22, -1, -1)]  # out of order, across epochs, within the window
    assert [decryptor.open(sealed[i], receiver.lookup) for i in order] == [payloads[i] for i in order]


def test_new_qkd_key_restarts_the_epochs() -> None:
    rng = np.random.default_rng(9)
    sender, receiver = linked_pools(("k1", random_key(rng), FAR_FUTURE))
    cipher, decryptor = AesGcmCipher("car-1", rekey_messages=2), Decryptor()
    before = [cipher.encrypt(b"a", sender, now=0) for _ in range(3)]
    fresh = random_key(rng)
    sender.add("k2", fresh, FAR_FUTURE)
    receiver.add("k2", fresh, FAR_FUTURE)
    after = cipher.encrypt(b"b", sender, now=1)
    assert [s.header.epoch for s in before] == [0, 0, 1]
    assert (after.header.key_id, after.header.epoch, cipher.key_changes) == ("k2", 0, 1)
    assert [decryptor.open(s, receiver.lookup) for s in [*before, after]] == [b"a", b"a", b"a", b"b"]


def test_expired_aes_key_is_not_used() -> None:
    sender, _ = linked_pools(("k1", bytes(32), 10.0))
    cipher = AesGcmCipher("car-1")
    cipher.encrypt(b"ok", sender, now=9.9)
    with pytest.raises(PoolExhausted):
        cipher.encrypt(b"too late", sender, now=10.0)
    assert cipher.exhausted == 1


def test_nonces_never_repeat_under_a_message_key() -> None:
    rng = np.random.default_rng(10)
    sender, receiver = linked_pools(("k1", random_key(rng), FAR_FUTURE))
    other_end = KeyPool()
    other_end.add("k1", receiver.lookup("k1"), FAR_FUTURE)  # both directions share the QKD key
    ciphers = [
        (AesGcmCipher("car-1", rekey_messages=97), sender),
        (AesGcmCipher("rsu-1", rekey_messages=89), other_end),
    ]
    qkd_keys = {"k1": crypto.bits_to_bytes(receiver.lookup("k1"))}
    seen: set[tuple[bytes, bytes]] = set()
    message_keys: dict[tuple[str, str, int], bytes] = {}
    for i in range(3000):
        cipher, pool = ciphers[i % 2]
        if i == 1500:
            qkd_keys["k2"] = random_key(rng)
            sender.add("k2", qkd_keys["k2"], FAR_FUTURE)
            other_end.add("k2", qkd_keys["k2"], FAR_FUTURE)
        h = cipher.encrypt(b"m", pool, now=i * 1e-3).header
        slot = (h.key_id, h.sender, h.epoch)
        if slot not in message_keys:
            message_keys[slot] = crypto.derive_message_key(qkd_keys[h.key_id], *slot)
        pair = (message_keys[slot], crypto._nonce(h.seq))
        assert pair not in seen
        seen.add(pair)
    assert len(set(message_keys.values())) == len(message_keys)  # senders and epochs never share a key
    assert ciphers[0][0].rekeys > 10 and ciphers[0][0].key_changes == 1


# ---------------------------------------------------------------------------- replay


def test_replay_refused_reordering_within_window_accepted() -> None:
    rng = np.random.default_rng(11)
    sender, receiver = linked_pools(("k1", random_key(rng), FAR_FUTURE))
    cipher, decryptor = AesGcmCipher("car-1"), Decryptor()
    sealed = [cipher.encrypt(bytes([i]), sender, now=0) for i in range(100)]
    assert decryptor.open(sealed[99], receiver.lookup) == bytes([99])  # seq 100 arrives first
    assert decryptor.open(sealed[40], receiver.lookup) == bytes([40])  # 59 behind: inside the window
    assert rejection(decryptor, sealed[40], receiver) == "replay"
    assert rejection(decryptor, sealed[99], receiver) == "replay"
    assert rejection(decryptor, sealed[30], receiver) == "replay"  # 69 behind: outside
    assert decryptor.open(sealed[36], receiver.lookup) == bytes([36])  # 63 behind: the last slot
    assert rejection(decryptor, sealed[35], receiver) == "replay"  # 64 behind: just outside
    assert decryptor.open(sealed[98], receiver.lookup) == bytes([98])
    assert decryptor.rejected == {"replay": 4} and decryptor.accepted == 4


def test_forged_messages_do_not_move_the_window() -> None:
    rng = np.random.default_rng(12)
    sender, receiver = linked_pools(("k1", random_key(rng), FAR_FUTURE))
    cipher, decryptor = OtpCipher("car-1"), Decryptor()
    first, second = cipher.encrypt(b"1", sender, now=0), cipher.encrypt(b"2", sender, now=0)
    far_ahead = dataclasses.replace(first, header=dataclasses.replace(first.header, seq=10**6))
    assert rejection(decryptor, far_ahead, receiver) == "tampered"
    assert decryptor.open(second, receiver.lookup) == b"2"
    assert decryptor.open(first, receiver.lookup) == b"1"


@SEEDED
@given(st.lists(st.integers(0, 300), max_size=200))
@example([100, 37, 36, 37, 165, 101, 102])
def test_replay_window_matches_a_reference_model(seqs: list[int]) -> None:
    window, seen = ReplayWindow(64), set()
    for seq in seqs:
        top = max(seen, default=-1)
        expected = seq not in seen and seq > top - 64
        assert window.fresh(seq) == expected
        if expected:
            window.mark(seq)
            seen.add(seq)


# ---------------------------------------------------------------------------- hygiene, hybrid, energy


def test_reprs_hide_key_material() -> None:
    key = bytes(range(32))
    sender, receiver = linked_pools(("k1", key * 40, FAR_FUTURE), ("k2", key, FAR_FUTURE))
    aes, otp = AesGcmCipher("car-1"), OtpCipher("car-2")
    aes.encrypt(b"x", sender, now=0)
    otp.encrypt(b"x", sender, now=0)
    objects = [sender, receiver, aes, otp, Decryptor(), *sender.take_bits(40), sender.current_key(now=0)]
    for obj in objects:
        text = repr(obj)
        assert key.hex() not in text and key.hex()[:16] not in text
        assert repr(key)[2:20] not in text and "array(" not in text, text


def test_hybrid_secret_and_mlkem() -> None:
    qkd_key, other = bytes(32), b"\x01" * 32
    if not crypto.mlkem_available():
        pytest.skip("this OpenSSL build has no ML-KEM-768")
    private, public = crypto.mlkem_keypair()
    shared, ciphertext = crypto.mlkem_encapsulate(public)
    assert (len(public), len(ciphertext), len(shared)) == (1184, 1088, 32)
    assert crypto.mlkem_decapsulate(private, ciphertext) == shared
    hybrid = crypto.hybrid_secret(qkd_key, shared)
    assert len(hybrid) == 32 and hybrid == crypto.hybrid_secret(qkd_key, shared)
    assert hybrid != crypto.hybrid_secret(other, shared) != crypto.hybrid_secret(qkd_key, other)
    with pytest.raises(ValueError):
        crypto.hybrid_secret(qkd_key, shared[:16])
    sender, receiver = linked_pools(("k1", hybrid, FAR_FUTURE))
    sealed = AesGcmCipher("car-1").encrypt(b"pq", sender, now=0)
    assert Decryptor().open(sealed, receiver.lookup) == b"pq"


def test_crypto_energy() -> None:
    assert crypto.crypto_energy_j(300, "aes-gcm") == pytest.approx(42e-6)
    assert crypto.crypto_energy_j(300, OtpCipher("x")) == pytest.approx(3e-6)
    with pytest.raises(ValueError):
        crypto.crypto_energy_j(1, "rot13")


def test_header_round_trip_and_malformed_input() -> None:
    header = Header("otp", "car-ü", 7, 1.5, segments=(crypto.PadSegment("k", 3, 300),))
    sealed = Sealed(header, b"abc", bytes(16))
    assert Sealed.from_bytes(sealed.to_bytes()) == sealed
    for bad in (b"", sealed.to_bytes()[:-1], sealed.to_bytes() + b"\x00", b"\x09" + sealed.to_bytes()[1:]):
        with pytest.raises(Rejected) as excinfo:
            Sealed.from_bytes(bad)
        assert excinfo.value.reason == "malformed"


@SEEDED
@given(
    st.binary(max_size=80),
    st.binary(max_size=200),
    st.integers(0, crypto.MAC_PRIME - 1),
    st.integers(0, 2**127),
)
def test_one_time_mac_is_the_documented_polynomial(header: bytes, body: bytes, r: int, s: int) -> None:
    """tag = (sum_i c_i r^(L-i+1) + s) mod p over 15-byte blocks with a trailing 0x01 marker."""
    message = len(header).to_bytes(2, "big") + header + body
    blocks = [message[i : i + 15] + b"\x01" for i in range(0, len(message), 15)]
    expected = sum(
        int.from_bytes(block, "little") * pow(r, len(blocks) - i, crypto.MAC_PRIME)
        for i, block in enumerate(blocks)
    )
    tag = crypto._one_time_mac(r, s % crypto.MAC_PRIME, header, body)
    assert tag == ((expected + s) % crypto.MAC_PRIME).to_bytes(16, "big")


@settings(max_examples=300, deadline=None)
@given(
    otp=st.booleans(),
    sender=st.text(min_size=1, max_size=40),
    seq=st.integers(0, 2**64 - 1),
    timestamp=st.floats(allow_nan=True, allow_infinity=True),
    key_id=st.text(max_size=40),
    epoch=st.integers(0, 2**32 - 1),
    segments=st.lists(
        st.tuples(st.text(min_size=1, max_size=20), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)),
        min_size=1,
        max_size=4,
    ),
)
def test_every_header_round_trips_through_its_wire_bytes(
    otp: bool, sender: str, seq: int, timestamp: float, key_id: str, epoch: int, segments: list
) -> None:
    """Any header (odd Unicode, NaN times, full-range counters) parses back to fields whose
    encoding is exactly the bytes received; trailing bytes are refused."""
    if otp:
        header = crypto.Header(
            crypto.MODE_OTP, sender, seq, timestamp, segments=tuple(crypto.PadSegment(*s) for s in segments)
        )
    else:
        header = crypto.Header(crypto.MODE_AES_GCM, sender, seq, timestamp, key_id, epoch)
    wire = crypto.Sealed(header, b"abc", b"\x00" * crypto.TAG_BYTES).to_bytes()
    parsed = crypto.Sealed.from_bytes(wire).header
    fields = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed) if f.name != "encoded"}
    assert parsed.encoded == crypto.Header(**fields).encoded == header.encoded
    with pytest.raises(crypto.Rejected, match="trailing"):
        crypto.Sealed.from_bytes(wire + b"\x00")
