"""Contract tests of KeyLedger on the embedded eth-tester chain, through the typed client.

Every refusal is checked by its exact custom error name (``TransactionRefused.error``) and,
where the error carries arguments, by those too. Each test gets a fresh chain (conftest).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from conftest import record_key
from web3 import Web3

from ledger import ids, merkle
from ledger.chain import Chain
from ledger.client import KeyLedgerClient
from ledger.deployment import deploy
from ledger.errors import BadInput, TransactionRefused
from ledger.ids import VERIFY_REASONS

CAR = "car-1"
OTHER_CAR = "car-2"
COMMIT = b"\x42" * 32
OTHER_COMMIT = b"\x43" * 32
ZERO32 = b"\x00" * 32
ADMIN_ROLE = ids.role("admin")
KEY_MANAGER_ROLE = ids.role("key-manager")
VERIFIER_ROLE = ids.role("verifier")


# ---------------------------------------------------------------------------- helpers


@contextmanager
def refused(error: str, **expected_args: Any) -> Iterator[pytest.ExceptionInfo[TransactionRefused]]:
    """Expect a TransactionRefused carrying exactly this custom error (and these arguments)."""
    with pytest.raises(TransactionRefused) as excinfo:
        yield excinfo
    assert excinfo.value.error == error, str(excinfo.value)
    for name, value in expected_args.items():
        assert excinfo.value.args_by_name[name] == value, (name, excinfo.value.args_by_name)


@contextmanager
def unauthorized(account: Any, role: bytes) -> Iterator[pytest.ExceptionInfo[TransactionRefused]]:
    """Expect AccessControlUnauthorizedAccount for ``account`` lacking ``role``."""
    with refused("AccessControlUnauthorizedAccount") as excinfo:
        yield excinfo
    args = excinfo.value.args_by_name
    assert Web3.to_checksum_address(args["account"]) == account.address
    assert bytes(args["neededRole"]) == bytes(role)


def session_args(chain: Chain, **overrides: Any) -> list[Any]:
    """recordSession's arguments for a valid key of CAR, with some fields replaced."""
    now = chain.latest_timestamp()
    fields: dict[str, Any] = {
        "keyId": ids.key_id(uuid.uuid4()),
        "commitment": COMMIT,
        "vehicleId": ids.vehicle_id(CAR),
        "qberPpm": 20_000,
        "finalKeyBits": 256,
        "protocol": 1,
        "createdAt": now,
        "expiresAt": now + 3600,
    }
    unknown = set(overrides) - set(fields)
    assert not unknown, unknown
    fields.update(overrides)
    return list(fields.values())


def block_time(chain: Chain, block_number: int) -> int:
    return int(chain.w3.eth.get_block(block_number)["timestamp"])


def status(ledger: KeyLedgerClient, key: uuid.UUID) -> str:
    return ledger.key_status(key).status


@pytest.fixture
def car(ledger: KeyLedgerClient) -> str:
    """CAR, registered."""
    ledger.register_vehicle(CAR)
    return CAR


@pytest.fixture
def stranger(ledger: KeyLedgerClient, outsider) -> KeyLedgerClient:
    """The ledger as seen by an account with no role."""
    return ledger.as_sender(outsider)


# ---------------------------------------------------------------------------- deployment


def test_dev_deployment_gives_the_deployer_every_role(ledger: KeyLedgerClient, admin, outsider) -> None:
    for role in ("admin", "key-manager", "verifier"):
        assert ledger.has_role(role, admin.address)
        assert not ledger.has_role(role, outsider.address)
    assert not ledger.paused()
    assert ledger.stats() == dict.fromkeys(
        (
            "vehicles",
            "sessions",
            "verifications",
            "key_revocations",
            "vehicle_revocations",
            "batches",
            "batched_records",
        ),
        0,
    )


def test_non_dev_deployment_makes_the_deployer_admin_only(chain: Chain, admin) -> None:
    ledger, record = deploy(chain, save=False, grant_all_roles=False)
    assert record.deployer == admin.address
    assert ledger.has_role("admin", admin.address)
    assert not ledger.has_role("key-manager", admin.address)
    assert not ledger.has_role("verifier", admin.address)

    ledger.register_vehicle(CAR)  # an admin power
    now = chain.latest_timestamp()
    with unauthorized(admin, KEY_MANAGER_ROLE):
        ledger.record_session(uuid.uuid4(), COMMIT, CAR, qber=0.01, final_key_bits=256, expires_at=now + 60)
    with unauthorized(admin, KEY_MANAGER_ROLE):
        ledger.anchor_batch(b"\x01" * 32, 1)

    ledger.grant_role("key-manager", admin.address)
    kid = record_key(ledger)
    with unauthorized(admin, VERIFIER_ROLE):
        ledger.record_verification(kid, True)
    ledger.grant_role("verifier", admin.address)
    ledger.record_verification(kid, True)
    assert ledger.verifications(kid)["passed"] == 1


def test_public_constants_and_role_admins(ledger: KeyLedgerClient) -> None:
    def call(name: str, *args: Any) -> Any:
        return ledger.contract.functions[name](*args).call()

    assert bytes(call("DEFAULT_ADMIN_ROLE")) == ADMIN_ROLE
    assert bytes(call("KEY_MANAGER_ROLE")) == bytes(KEY_MANAGER_ROLE)
    assert bytes(call("VERIFIER_ROLE")) == bytes(VERIFIER_ROLE)
    assert call("PPM") == 1_000_000
    assert (call("PROTOCOL_BB84"), call("PROTOCOL_E91")) == (ids.protocol("bb84"), ids.protocol("e91"))
    for role in (ADMIN_ROLE, KEY_MANAGER_ROLE, VERIFIER_ROLE):
        assert bytes(call("getRoleAdmin", role)) == ADMIN_ROLE
    assert call("supportsInterface", bytes.fromhex("01ffc9a7"))  # IERC165
    assert call("supportsInterface", bytes.fromhex("7965db0b"))  # IAccessControl
    assert not call("supportsInterface", bytes.fromhex("ffffffff"))


# ---------------------------------------------------------------------------- roles


def test_granted_key_manager_records_as_itself_until_revoked(
    ledger: KeyLedgerClient, car: str, admin, outsider, stranger: KeyLedgerClient
) -> None:
    with unauthorized(outsider, KEY_MANAGER_ROLE):
        record_key(stranger)

    granted = ledger.grant_role("key-manager", outsider.address)
    assert granted.event("RoleGranted").args == {
        "role": KEY_MANAGER_ROLE,
        "account": outsider.address,
        "sender": admin.address,
    }
    assert ledger.has_role("key-manager", outsider.address)

    kid = record_key(stranger)
    state = ledger.key_status(kid)
    assert state.status == "valid"
    assert state.record is not None
    assert state.record.key_manager == outsider.address

    revoked = ledger.revoke_role("key-manager", outsider.address)
    assert revoked.event("RoleRevoked").args == {
        "role": KEY_MANAGER_ROLE,
        "account": outsider.address,
        "sender": admin.address,
    }
    assert not ledger.has_role("key-manager", outsider.address)
    with unauthorized(outsider, KEY_MANAGER_ROLE):
        record_key(stranger)
    with unauthorized(outsider, KEY_MANAGER_ROLE):
        stranger.anchor_batch(b"\x01" * 32, 1)
    assert status(ledger, kid) == "valid"  # what it recorded stays


def test_granted_verifier_verifies_until_revoked(
    ledger: KeyLedgerClient, car: str, admin, outsider, stranger: KeyLedgerClient
) -> None:
    kid = record_key(ledger)
    with unauthorized(outsider, VERIFIER_ROLE):
        stranger.record_verification(kid, True)

    granted = ledger.grant_role("verifier", outsider.address)
    assert granted.event("RoleGranted").args["role"] == VERIFIER_ROLE
    assert ledger.has_role("verifier", outsider.address)
    assert not ledger.has_role("key-manager", outsider.address)
    stranger.record_verification(kid, False, VERIFY_REASONS["commitment-mismatch"])
    assert ledger.verifications(kid)["last_verifier"] == outsider.address

    ledger.revoke_role("verifier", outsider.address)
    assert not ledger.has_role("verifier", outsider.address)
    with unauthorized(outsider, VERIFIER_ROLE):
        stranger.record_verification(kid, True)


@pytest.mark.parametrize("action", ["grant_role", "revoke_role"])
@pytest.mark.parametrize("role", ["admin", "key-manager", "verifier"])
def test_a_non_admin_cannot_grant_or_revoke_roles(
    stranger: KeyLedgerClient, admin, outsider, action: str, role: str
) -> None:
    target = outsider.address if action == "grant_role" else admin.address
    with unauthorized(outsider, ADMIN_ROLE):
        getattr(stranger, action)(role, target)
    assert stranger.has_role(role, admin.address)
    assert not stranger.has_role(role, outsider.address)


def test_granting_a_held_role_again_is_a_silent_no_op(ledger: KeyLedgerClient, outsider) -> None:
    assert ledger.grant_role("verifier", outsider.address).events
    assert ledger.grant_role("verifier", outsider.address).events == []
    assert ledger.revoke_role("verifier", outsider.address).events
    assert ledger.revoke_role("verifier", outsider.address).events == []
    assert not ledger.has_role("verifier", outsider.address)


def test_renounce_role_only_for_oneself(ledger: KeyLedgerClient, admin, outsider) -> None:
    ledger.grant_role("key-manager", outsider.address)
    stranger = ledger.as_sender(outsider)
    with refused("AccessControlBadConfirmation"):
        stranger.transact("renounceRole", KEY_MANAGER_ROLE, admin.address)
    assert ledger.has_role("key-manager", admin.address)

    result = stranger.transact("renounceRole", KEY_MANAGER_ROLE, outsider.address)
    assert result.event("RoleRevoked").args == {
        "role": KEY_MANAGER_ROLE,
        "account": outsider.address,
        "sender": outsider.address,
    }
    assert not ledger.has_role("key-manager", outsider.address)


# ---------------------------------------------------------------------------- vehicles


def test_register_vehicle(ledger: KeyLedgerClient, chain: Chain, admin) -> None:
    assert ledger.vehicle(CAR) == ledger.vehicle(OTHER_CAR)  # both unknown
    assert not ledger.vehicle(CAR).registered

    result = ledger.register_vehicle(CAR)
    assert result.event("VehicleRegistered").args == {
        "vehicleId": ids.vehicle_id(CAR),
        "authority": admin.address,
        "epoch": 0,
    }
    info = ledger.vehicle(CAR)
    assert info.registered
    assert info.epoch == 0
    assert info.registered_at == block_time(chain, result.block_number)
    assert ledger.stats()["vehicles"] == 1


def test_register_vehicle_by_raw_hex_id(ledger: KeyLedgerClient) -> None:
    raw = "0x" + "ab" * 32
    ledger.register_vehicle(raw)
    assert ledger.vehicle(raw).registered
    with refused("VehicleAlreadyRegistered", vehicleId=bytes.fromhex("ab" * 32)) as excinfo:
        ledger.register_vehicle(raw)
    assert raw in str(excinfo.value)  # no printable label: shown as hex


def test_register_vehicles_in_multicall_batches(ledger: KeyLedgerClient) -> None:
    """The simulator's starting fleet: up to ``per_transaction`` registrations per multicall,
    each its own event; the calls are encoded as web3 would encode them."""
    fleet = [f"fleet-{i}" for i in range(5)]
    web3_encoding = ledger.contract.functions.registerVehicle(
        ids.vehicle_id(fleet[0])
    )._encode_transaction_data()
    assert "0x" + ledger.encode_call("registerVehicle", [ids.vehicle_id(fleet[0])]).hex() == web3_encoding
    results = ledger.register_vehicles(fleet, per_transaction=2)
    assert len(results) == 3
    assert [e.args["vehicleId"] for r in results for e in r.events if e.name == "VehicleRegistered"] == [
        ids.vehicle_id(v) for v in fleet
    ]
    assert all(ledger.vehicle(v).registered for v in fleet) and ledger.stats()["vehicles"] == 5


def test_register_zero_vehicle_id_is_refused(ledger: KeyLedgerClient) -> None:
    with refused("ZeroVehicleId"):
        ledger.transact("registerVehicle", ZERO32)
    assert ledger.stats()["vehicles"] == 0


def test_register_vehicle_twice_is_refused(ledger: KeyLedgerClient, car: str) -> None:
    with refused("VehicleAlreadyRegistered", vehicleId=ids.vehicle_id(car)):
        ledger.register_vehicle(car)
    assert ledger.stats()["vehicles"] == 1


def test_register_vehicle_needs_admin(stranger: KeyLedgerClient, outsider) -> None:
    with unauthorized(outsider, ADMIN_ROLE):
        stranger.register_vehicle(CAR)
    assert not stranger.vehicle(CAR).registered


def test_deregister_vehicle_refusals(ledger: KeyLedgerClient, car: str, stranger, outsider) -> None:
    with refused("VehicleNotRegistered", vehicleId=ids.vehicle_id(OTHER_CAR)):
        ledger.deregister_vehicle(OTHER_CAR)
    with refused("ZeroVehicleId"):
        ledger.transact("deregisterVehicle", ZERO32)
    with unauthorized(outsider, ADMIN_ROLE):
        stranger.deregister_vehicle(car)
    assert ledger.vehicle(car).registered


def test_deregister_revokes_keys_and_reregistering_keeps_them_revoked(
    ledger: KeyLedgerClient, car: str, admin
) -> None:
    old = record_key(ledger, car)
    result = ledger.deregister_vehicle(car)
    assert result.event("VehicleDeregistered").args == {
        "vehicleId": ids.vehicle_id(car),
        "authority": admin.address,
        "newEpoch": 1,
    }
    info = ledger.vehicle(car)
    assert (info.registered, info.epoch) == (False, 1)
    assert ledger.stats()["vehicles"] == 0
    assert status(ledger, old) == "revoked"
    with refused("VehicleNotRegistered", vehicleId=ids.vehicle_id(car)):
        record_key(ledger, car)
    with refused("VehicleNotRegistered"):
        ledger.deregister_vehicle(car)

    again = ledger.register_vehicle(car)
    assert again.event("VehicleRegistered").args["epoch"] == 1
    assert ledger.vehicle(car).registered
    assert ledger.stats()["vehicles"] == 1
    assert status(ledger, old) == "revoked"
    new = record_key(ledger, car)
    assert status(ledger, new) == "valid"
    state = ledger.key_status(new)
    assert state.record is not None
    assert state.record.vehicle_epoch == 1


# ---------------------------------------------------------------------------- sessions


def test_record_session_stores_and_emits_every_field(
    ledger: KeyLedgerClient, chain: Chain, car: str, admin
) -> None:
    kid = uuid.uuid4()
    now = chain.latest_timestamp()
    result = ledger.record_session(
        kid,
        COMMIT,
        car,
        qber=0.031415,
        final_key_bits=1024,
        protocol="e91",
        created_at=now - 5,
        expires_at=now + 600,
    )
    assert result.gas_used > 0
    assert result.event("SessionRecorded").args == {
        "keyId": ids.key_id(kid),
        "vehicleId": ids.vehicle_id(car),
        "keyManager": admin.address,
        "commitment": COMMIT,
        "qberPpm": 31_415,
        "finalKeyBits": 1024,
        "protocol": 2,
        "createdAt": now - 5,
        "expiresAt": now + 600,
    }
    state = ledger.key_status(kid)
    assert state.status == "valid"
    record = state.record
    assert record is not None
    assert record.key_id == kid
    assert record.commitment == COMMIT
    assert record.vehicle_id == ids.vehicle_id(car)
    assert record.vehicle == car
    assert record.key_manager == admin.address
    assert record.qber_ppm == 31_415
    assert record.final_key_bits == 1024
    assert record.protocol == 2
    assert record.revoked is False
    assert record.created_at == now - 5
    assert record.expires_at == now + 600
    assert record.vehicle_epoch == 0
    assert record.as_dict()["protocol"] == "e91"
    assert ledger.stats()["sessions"] == 1


def test_record_session_created_at_defaults_to_the_chain_clock(
    ledger: KeyLedgerClient, chain: Chain, car: str
) -> None:
    kid = uuid.uuid4()
    now = chain.latest_timestamp()
    ledger.record_session(kid, COMMIT, car, qber=0.0, final_key_bits=1, expires_at=now + 60)
    record = ledger.key_status(kid).record
    assert record is not None
    assert record.created_at == now
    assert (record.qber_ppm, record.protocol) == (0, 1)


@pytest.mark.parametrize("qber_ppm", [0, 1_000_000])
def test_record_session_accepts_qber_bounds(
    ledger: KeyLedgerClient, chain: Chain, car: str, qber_ppm: int
) -> None:
    ledger.transact("recordSession", *session_args(chain, qberPpm=qber_ppm))
    assert ledger.stats()["sessions"] == 1


# (custom error, fields to replace given the chain time, the error's arguments: replaced fields)
REFUSED_SESSIONS: list[tuple[str, Callable[[int], dict[str, Any]], tuple[str, ...]]] = [
    ("ZeroKeyId", lambda now: {"keyId": ZERO32}, ()),
    ("ZeroCommitment", lambda now: {"commitment": ZERO32}, ()),
    ("ZeroVehicleId", lambda now: {"vehicleId": ZERO32}, ()),
    ("VehicleNotRegistered", lambda now: {"vehicleId": ids.vehicle_id("car-404")}, ("vehicleId",)),
    ("QberOutOfRange", lambda now: {"qberPpm": 1_000_001}, ("qberPpm",)),
    ("QberOutOfRange", lambda now: {"qberPpm": 2**32 - 1}, ("qberPpm",)),
    ("ZeroKeyBits", lambda now: {"finalKeyBits": 0}, ()),
    ("UnknownProtocol", lambda now: {"protocol": 0}, ("protocol",)),
    ("UnknownProtocol", lambda now: {"protocol": 3}, ("protocol",)),
    ("ZeroCreatedAt", lambda now: {"createdAt": 0}, ()),
    ("ExpiryNotAfterCreation", lambda now: {"expiresAt": now}, ("expiresAt",)),
    ("ExpiryNotAfterCreation", lambda now: {"expiresAt": now - 1}, ("expiresAt",)),
    ("ExpiryInPast", lambda now: {"createdAt": now - 100, "expiresAt": now}, ("expiresAt",)),
    ("ExpiryInPast", lambda now: {"createdAt": 1, "expiresAt": 2}, ("expiresAt",)),
]


@pytest.mark.parametrize(
    ("error", "overrides", "arg_names"),
    REFUSED_SESSIONS,
    ids=[f"{error}-{i}" for i, (error, _, _) in enumerate(REFUSED_SESSIONS)],
)
def test_record_session_refusals(
    ledger: KeyLedgerClient,
    chain: Chain,
    car: str,
    error: str,
    overrides: Callable[[int], dict[str, Any]],
    arg_names: tuple[str, ...],
) -> None:
    now = chain.latest_timestamp()
    replaced = overrides(now)
    args = session_args(chain, **replaced)
    with refused(error, **{name: replaced[name] for name in arg_names}) as excinfo:
        ledger.transact("recordSession", *args)
    assert excinfo.value.function == "recordSession"
    if error == "ExpiryNotAfterCreation":
        assert excinfo.value.args_by_name["createdAt"] == now  # session_args' default
    if error == "ExpiryInPast":
        assert excinfo.value.args_by_name["blockTimestamp"] > now  # the pending block's time
    assert ledger.stats()["sessions"] == 0


def test_record_session_twice_is_refused(ledger: KeyLedgerClient, car: str) -> None:
    kid = record_key(ledger, car)
    with refused("KeyAlreadyRecorded", keyId=ids.key_id(kid)) as excinfo:
        record_key(ledger, car, key_id=kid, commitment=OTHER_COMMIT)
    assert str(kid) in str(excinfo.value)
    record = ledger.key_status(kid).record
    assert record is not None
    assert record.commitment == COMMIT  # the first record stands
    assert ledger.stats()["sessions"] == 1


def test_record_session_needs_key_manager(stranger: KeyLedgerClient, car: str, outsider) -> None:
    with unauthorized(outsider, KEY_MANAGER_ROLE):
        record_key(stranger, car)


def test_client_side_input_checks(ledger: KeyLedgerClient, chain: Chain, car: str) -> None:
    now = chain.latest_timestamp()
    with pytest.raises(BadInput):
        ledger.record_session(uuid.uuid4(), COMMIT, car, qber=1.5, final_key_bits=8, expires_at=now + 60)
    with pytest.raises(BadInput):
        ledger.record_session(
            uuid.uuid4(), COMMIT, car, qber=0.1, final_key_bits=8, expires_at=now + 60, protocol="b92"
        )
    kid = record_key(ledger, car)
    with pytest.raises(BadInput):
        ledger.record_verification(kid, True, 2**16)
    assert ledger.stats()["sessions"] == 1


# ---------------------------------------------------------------------------- key status


def test_key_status_of_an_unknown_key(ledger: KeyLedgerClient) -> None:
    kid = uuid.uuid4()
    state = ledger.key_status(kid)
    assert state.status == "unknown"
    assert state.record is None
    raw_status, raw_record = ledger.contract.functions.keyStatus(ids.key_id(kid)).call()
    assert raw_status == 0
    assert bytes(raw_record[0]) == ZERO32


def test_check_key(ledger: KeyLedgerClient, car: str) -> None:
    kid = record_key(ledger, car, commitment=COMMIT)
    assert ledger.check_key(kid, COMMIT) == ("valid", True)
    assert ledger.check_key(kid, OTHER_COMMIT) == ("valid", False)
    unknown = uuid.uuid4()
    assert ledger.check_key(unknown, COMMIT) == ("unknown", False)
    assert ledger.check_key(unknown, ZERO32) == ("unknown", False)  # zero never "matches"
    ledger.revoke_key(kid, "compromised")
    assert ledger.check_key(kid, COMMIT) == ("revoked", True)
    assert ledger.check_key(kid, OTHER_COMMIT) == ("revoked", False)


# ---------------------------------------------------------------------------- verification


def test_record_verification_counts_and_emits(
    ledger: KeyLedgerClient, chain: Chain, car: str, admin, outsider
) -> None:
    kid = record_key(ledger, car)
    assert ledger.verifications(kid) == {
        "passed": 0,
        "failed": 0,
        "last_verifier": "0x0000000000000000000000000000000000000000",
        "last_at": 0,
    }
    first = ledger.record_verification(kid, True)
    assert first.event("KeyVerified").args == {
        "keyId": ids.key_id(kid),
        "verifier": admin.address,
        "ok": True,
        "reasonCode": VERIFY_REASONS["ok"],
    }
    ledger.record_verification(kid, True)
    failed = ledger.record_verification(kid, False, VERIFY_REASONS["expired"])
    assert failed.event("KeyVerified").args["ok"] is False
    assert failed.event("KeyVerified").args["reasonCode"] == 3
    assert ledger.verifications(kid) == {
        "passed": 2,
        "failed": 1,
        "last_verifier": admin.address,
        "last_at": block_time(chain, failed.block_number),
    }

    ledger.grant_role("verifier", outsider.address)
    last = ledger.as_sender(outsider).record_verification(kid, False, 2**16 - 1)
    assert last.event("KeyVerified").args["reasonCode"] == 2**16 - 1
    counters = ledger.verifications(kid)
    assert (counters["passed"], counters["failed"]) == (2, 2)
    assert counters["last_verifier"] == outsider.address
    assert ledger.stats()["verifications"] == 4


def test_record_verification_of_a_revoked_key_is_allowed(ledger: KeyLedgerClient, car: str) -> None:
    kid = record_key(ledger, car)
    ledger.revoke_key(kid, "compromised")
    ledger.record_verification(kid, False, VERIFY_REASONS["revoked"])
    assert ledger.verifications(kid)["failed"] == 1


def test_record_verification_of_an_unknown_key_is_refused(ledger: KeyLedgerClient) -> None:
    kid = uuid.uuid4()
    with refused("KeyNotFound", keyId=ids.key_id(kid)) as excinfo:
        ledger.record_verification(kid, True)
    assert str(kid) in str(excinfo.value)
    assert ledger.stats()["verifications"] == 0


def test_record_verification_needs_verifier(
    ledger: KeyLedgerClient, stranger: KeyLedgerClient, car: str, outsider
) -> None:
    kid = record_key(ledger, car)
    ledger.grant_role("key-manager", outsider.address)  # a key manager is not a verifier
    with unauthorized(outsider, VERIFIER_ROLE):
        stranger.record_verification(kid, True)
    assert ledger.verifications(kid)["passed"] == 0


# ---------------------------------------------------------------------------- key revocation


def test_revoke_key(ledger: KeyLedgerClient, car: str, admin) -> None:
    kid = record_key(ledger, car)
    other = record_key(ledger, car)
    result = ledger.revoke_key(kid, "key material leaked")
    assert result.event("KeyRevoked").args == {
        "keyId": ids.key_id(kid),
        "authority": admin.address,
        "reason": "key material leaked",
    }
    state = ledger.key_status(kid)
    assert state.status == "revoked"
    assert state.record is not None
    assert state.record.revoked is True
    assert status(ledger, other) == "valid"
    assert ledger.stats()["key_revocations"] == 1


def test_revoke_key_refusals(ledger: KeyLedgerClient, stranger: KeyLedgerClient, car: str, outsider) -> None:
    unknown = uuid.uuid4()
    with refused("KeyNotFound", keyId=ids.key_id(unknown)):
        ledger.revoke_key(unknown, "why not")
    with refused("EmptyReason"):
        ledger.revoke_key(unknown, "")  # the reason is checked first

    kid = record_key(ledger, car)
    with refused("EmptyReason"):
        ledger.revoke_key(kid, "")
    with unauthorized(outsider, ADMIN_ROLE):
        stranger.revoke_key(kid, "not mine to revoke")
    assert status(ledger, kid) == "valid"

    ledger.revoke_key(kid, "compromised")
    with refused("KeyAlreadyRevoked", keyId=ids.key_id(kid)) as excinfo:
        ledger.revoke_key(kid, "again")
    assert str(kid) in str(excinfo.value)
    assert ledger.stats()["key_revocations"] == 1


def test_revoke_batched_key(ledger: KeyLedgerClient, stranger: KeyLedgerClient, car: str, outsider) -> None:
    """A key known only through its Merkle batch is revoked by id, with the usual event."""
    batched = uuid.uuid4()
    assert not ledger.batched_key_revoked(batched)
    with refused("EmptyReason"):
        ledger.revoke_batched_key(batched, "")
    with refused("ZeroKeyId"):
        ledger.transact("revokeBatchedKey", b"\x00" * 32, "zero")
    with unauthorized(outsider, ADMIN_ROLE):
        stranger.revoke_batched_key(batched, "not mine")
    result = ledger.revoke_batched_key(batched, "leaked")
    event = result.event("KeyRevoked")
    assert event.args["keyId"] == ids.key_id(batched) and event.args["reason"] == "leaked"
    assert ledger.batched_key_revoked(batched)
    with refused("KeyAlreadyRevoked", keyId=ids.key_id(batched)):
        ledger.revoke_batched_key(batched, "again")
    recorded = record_key(ledger, car)
    with refused("NotABatchedKey", keyId=ids.key_id(recorded)) as excinfo:
        ledger.revoke_batched_key(recorded, "wrong call")
    assert "revokeKey" in str(excinfo.value)
    assert status(ledger, recorded) == "valid" and not ledger.batched_key_revoked(recorded)
    assert ledger.stats()["key_revocations"] == 1


# ---------------------------------------------------------------------------- vehicle revocation


def test_revoke_vehicle_keys_invalidates_past_keys_only(ledger: KeyLedgerClient, car: str, admin) -> None:
    ledger.register_vehicle(OTHER_CAR)
    earlier = [record_key(ledger, car) for _ in range(4)]
    bystander = record_key(ledger, OTHER_CAR)

    result = ledger.revoke_vehicle_keys(car, "vehicle stolen")
    assert result.event("VehicleKeysRevoked").args == {
        "vehicleId": ids.vehicle_id(car),
        "authority": admin.address,
        "newEpoch": 1,
        "reason": "vehicle stolen",
    }
    assert ledger.vehicle(car).epoch == 1
    assert ledger.vehicle(car).registered
    for kid in earlier:
        state = ledger.key_status(kid)
        assert state.status == "revoked"
        assert state.record is not None
        assert state.record.revoked is False  # revoked by epoch, not one by one
    assert status(ledger, bystander) == "valid"

    later = record_key(ledger, car)
    assert status(ledger, later) == "valid"
    later_record = ledger.key_status(later).record
    assert later_record is not None
    assert later_record.vehicle_epoch == 1

    second = ledger.revoke_vehicle_keys(car, "still stolen")
    assert second.event("VehicleKeysRevoked").args["newEpoch"] == 2
    assert status(ledger, later) == "revoked"
    assert status(ledger, bystander) == "valid"
    stats = ledger.stats()
    assert stats["vehicle_revocations"] == 2
    assert stats["key_revocations"] == 0


def test_revoke_vehicle_keys_refusals(
    ledger: KeyLedgerClient, stranger: KeyLedgerClient, car: str, outsider
) -> None:
    with refused("EmptyReason"):
        ledger.revoke_vehicle_keys(car, "")
    with refused("VehicleNotRegistered", vehicleId=ids.vehicle_id(OTHER_CAR)) as excinfo:
        ledger.revoke_vehicle_keys(OTHER_CAR, "unknown car")
    assert OTHER_CAR in str(excinfo.value)
    with refused("ZeroVehicleId"):
        ledger.transact("revokeVehicleKeys", ZERO32, "zero")
    with unauthorized(outsider, ADMIN_ROLE):
        stranger.revoke_vehicle_keys(car, "not mine")
    assert ledger.vehicle(car).epoch == 0
    assert ledger.stats()["vehicle_revocations"] == 0


def test_revoke_vehicle_keys_gas_does_not_grow_with_the_number_of_keys(
    ledger: KeyLedgerClient, car: str
) -> None:
    for vehicle in ("car-a", "car-b"):
        ledger.register_vehicle(vehicle)
    ledger.revoke_vehicle_keys(car, "warm-up")  # first write of the stats slot costs extra
    few = [record_key(ledger, "car-a")]
    many = [record_key(ledger, "car-b") for _ in range(20)]

    gas_few = ledger.revoke_vehicle_keys("car-a", "compromised").gas_used
    gas_many = ledger.revoke_vehicle_keys("car-b", "compromised").gas_used
    assert abs(gas_many - gas_few) <= 300, (gas_few, gas_many)
    assert gas_many < 50_000
    assert {status(ledger, kid) for kid in few + many} == {"revoked"}


# ---------------------------------------------------------------------------- expiry


def test_key_expires_after_its_ttl(ledger: KeyLedgerClient, chain: Chain, car: str) -> None:
    kid = record_key(ledger, car, ttl=100)
    assert status(ledger, kid) == "valid"
    chain.advance_time(101)
    assert status(ledger, kid) == "expired"
    assert ledger.check_key(kid, COMMIT) == ("expired", True)
    # an expired key can still be verified (as failed) and revoked
    ledger.record_verification(kid, False, VERIFY_REASONS["expired"])
    ledger.revoke_key(kid, "expired and leaked")
    assert status(ledger, kid) == "revoked"


def test_a_key_is_expired_from_its_expiry_second_on(ledger: KeyLedgerClient, chain: Chain, car: str) -> None:
    # The next block is mined at the pending block's timestamp; let the key expire one second later.
    pending = int(chain.w3.eth.get_block("pending")["timestamp"])
    kid = uuid.uuid4()
    result = ledger.record_session(
        kid, COMMIT, car, qber=0.01, final_key_bits=256, created_at=pending - 1, expires_at=pending + 1
    )
    assert block_time(chain, result.block_number) == pending
    assert status(ledger, kid) == "valid"
    ledger.register_vehicle(OTHER_CAR)  # mines the next block, at pending + 1 = expires_at
    assert chain.latest_timestamp() >= pending + 1
    assert status(ledger, kid) == "expired"


@pytest.mark.parametrize("how", ["key", "vehicle"])
def test_revoked_takes_precedence_over_expired(
    ledger: KeyLedgerClient, chain: Chain, car: str, how: str
) -> None:
    kid = record_key(ledger, car, ttl=100)
    if how == "key":
        ledger.revoke_key(kid, "compromised")
    else:
        ledger.revoke_vehicle_keys(car, "compromised")
    chain.advance_time(101)
    assert status(ledger, kid) == "revoked"


def test_advance_time_moves_the_latest_block_by_the_given_seconds(chain: Chain) -> None:
    before = chain.latest_timestamp()
    returned = chain.advance_time(1)
    assert chain.latest_timestamp() == before + 1 == returned


def test_a_key_is_expired_once_advance_time_reaches_its_expiry(
    ledger: KeyLedgerClient, chain: Chain, car: str
) -> None:
    kid = record_key(ledger, car, ttl=100)
    record = ledger.key_status(kid).record
    assert record is not None
    reached = chain.advance_time(record.expires_at - chain.latest_timestamp())
    assert reached == record.expires_at
    assert status(ledger, kid) == "expired"


# ---------------------------------------------------------------------------- pause


def test_pause_and_unpause(ledger: KeyLedgerClient, car: str, admin) -> None:
    paused = ledger.pause()
    assert paused.event("Paused").args == {"account": admin.address}
    assert ledger.paused()
    with refused("EnforcedPause") as excinfo:
        ledger.pause()
    assert "paused" in str(excinfo.value)

    unpaused = ledger.unpause()
    assert unpaused.event("Unpaused").args == {"account": admin.address}
    assert not ledger.paused()
    with refused("ExpectedPause") as excinfo:
        ledger.unpause()
    assert "not paused" in str(excinfo.value)

    kid = record_key(ledger, car)  # recording works again
    assert status(ledger, kid) == "valid"


@pytest.mark.parametrize("action", ["pause", "unpause"])
def test_pause_and_unpause_need_admin(
    ledger: KeyLedgerClient, stranger: KeyLedgerClient, outsider, action: str
) -> None:
    if action == "unpause":
        ledger.pause()
    with unauthorized(outsider, ADMIN_ROLE):
        getattr(stranger, action)()
    assert ledger.paused() is (action == "unpause")


@pytest.mark.parametrize(
    "function",
    ["registerVehicle", "recordSession", "recordVerification", "anchorBatch"],
)
def test_paused_ledger_refuses_new_records(
    ledger: KeyLedgerClient, chain: Chain, car: str, function: str
) -> None:
    kid = record_key(ledger, car)
    args: dict[str, list[Any]] = {
        "registerVehicle": [ids.vehicle_id(OTHER_CAR)],
        "recordSession": session_args(chain),
        "recordVerification": [ids.key_id(kid), True, 0],
        "anchorBatch": [b"\x01" * 32, 1],
    }
    ledger.pause()
    before = ledger.stats()
    with refused("EnforcedPause"):
        ledger.transact(function, *args[function])
    assert ledger.stats() == before
    ledger.unpause()
    ledger.transact(function, *args[function])  # the very same call goes through now


def test_revocations_stay_open_while_paused(ledger: KeyLedgerClient, car: str) -> None:
    ledger.register_vehicle(OTHER_CAR)
    one = record_key(ledger, car)
    other = record_key(ledger, OTHER_CAR)
    ledger.pause()
    assert ledger.revoke_key(one, "compromised").event("KeyRevoked")
    assert ledger.revoke_vehicle_keys(OTHER_CAR, "stolen").event("VehicleKeysRevoked")
    assert ledger.deregister_vehicle(OTHER_CAR).event("VehicleDeregistered")
    assert status(ledger, one) == "revoked"
    assert status(ledger, other) == "revoked"
    assert ledger.paused()


# ---------------------------------------------------------------------------- Merkle batches


def _leaf_of(ledger: KeyLedgerClient, kid: uuid.UUID) -> bytes:
    record = ledger.key_status(kid).record
    assert record is not None
    return merkle.key_leaf(
        ids.key_id(kid),
        record.commitment,
        record.vehicle_id,
        record.qber_ppm,
        record.final_key_bits,
        record.protocol,
        record.created_at,
        record.expires_at,
    )


def test_anchor_batch(ledger: KeyLedgerClient, chain: Chain, admin) -> None:
    root = b"\x11" * 32
    assert ledger.batch(root) == {
        "key_manager": "0x0000000000000000000000000000000000000000",
        "count": 0,
        "anchored_at": 0,
    }
    result = ledger.anchor_batch(root, 7)
    assert result.event("BatchAnchored").args == {"root": root, "keyManager": admin.address, "count": 7}
    assert ledger.batch(root) == {
        "key_manager": admin.address,
        "count": 7,
        "anchored_at": block_time(chain, result.block_number),
    }
    ledger.anchor_batch(b"\x22" * 32, 2**32 - 1)
    stats = ledger.stats()
    assert (stats["batches"], stats["batched_records"]) == (2, 7 + 2**32 - 1)


def test_anchor_batch_refusals(ledger: KeyLedgerClient, stranger: KeyLedgerClient, outsider) -> None:
    root = b"\x11" * 32
    with refused("ZeroMerkleRoot"):
        ledger.anchor_batch(ZERO32, 3)
    with refused("ZeroBatchCount"):
        ledger.anchor_batch(root, 0)
    with unauthorized(outsider, KEY_MANAGER_ROLE):
        stranger.anchor_batch(root, 3)
    ledger.anchor_batch(root, 3)
    with refused("BatchAlreadyAnchored", root=root) as excinfo:
        ledger.anchor_batch(root, 4)
    assert "0x" + root.hex() in str(excinfo.value)
    assert ledger.batch(root)["count"] == 3
    assert ledger.stats()["batches"] == 1


def test_verify_inclusion_of_anchored_keys(ledger: KeyLedgerClient, car: str) -> None:
    keys = [record_key(ledger, car, commitment=bytes([i + 1]) * 32) for i in range(5)]
    leaves = [_leaf_of(ledger, kid) for kid in keys]
    tree = merkle.MerkleTree.from_leaves(leaves)
    assert not ledger.verify_inclusion(tree.root, tree.proof(leaves[0]), leaves[0])  # not anchored yet

    ledger.anchor_batch(tree.root, len(tree))
    for leaf in leaves:
        proof = tree.proof(leaf)
        assert merkle.verify(tree.root, proof, leaf)
        assert ledger.verify_inclusion(tree.root, proof, leaf)

    wrong_leaf = merkle.key_leaf(ids.key_id(uuid.uuid4()), COMMIT, ids.vehicle_id(car), 1, 1, 1, 1, 2)
    assert not ledger.verify_inclusion(tree.root, tree.proof(leaves[0]), wrong_leaf)
    assert not ledger.verify_inclusion(tree.root, tree.proof(leaves[1]), leaves[0])
    assert not ledger.verify_inclusion(tree.root, [], leaves[0])

    # a well-formed proof against a root nobody anchored
    other = merkle.MerkleTree.from_leaves(leaves[:3])
    assert merkle.verify(other.root, other.proof(leaves[0]), leaves[0])
    assert not ledger.verify_inclusion(other.root, other.proof(leaves[0]), leaves[0])


def test_verify_inclusion_of_a_single_leaf_batch(ledger: KeyLedgerClient, car: str) -> None:
    leaf = _leaf_of(ledger, record_key(ledger, car))
    tree = merkle.MerkleTree.from_leaves([leaf])
    assert tree.root == leaf
    ledger.anchor_batch(tree.root, 1)
    assert ledger.verify_inclusion(tree.root, [], leaf)


@pytest.mark.parametrize(
    "fields",
    [
        (b"\x01" * 32, b"\x02" * 32, ids.vehicle_id(CAR), 20_000, 256, 1, 1_700_000_000, 1_700_003_600),
        (b"\xff" * 32, b"\xee" * 32, b"\xdd" * 32, 1_000_000, 2**32 - 1, 2, 2**64 - 2, 2**64 - 1),
        (ZERO32, ZERO32, ZERO32, 0, 0, 0, 0, 0),
    ],
    ids=["typical", "maximal", "zero"],
)
def test_key_leaf_matches_the_python_merkle_leaf(ledger: KeyLedgerClient, fields: tuple[Any, ...]) -> None:
    on_chain = bytes(ledger.contract.functions.keyLeaf(*fields).call())
    assert on_chain == merkle.key_leaf(*fields)


# ---------------------------------------------------------------------------- multicall


def test_multicall_batches_calls_atomically(ledger: KeyLedgerClient, admin) -> None:
    encode = ledger.contract.encode_abi
    calls = [encode("registerVehicle", [ids.vehicle_id(v)]) for v in ("car-a", "car-b")]
    result = ledger.transact("multicall", [bytes.fromhex(c[2:]) for c in calls])
    assert [e.name for e in result.events] == ["VehicleRegistered", "VehicleRegistered"]
    assert ledger.stats()["vehicles"] == 2

    again = [encode("registerVehicle", [ids.vehicle_id(v)]) for v in ("car-c", "car-a")]
    with refused("VehicleAlreadyRegistered", vehicleId=ids.vehicle_id("car-a")):
        ledger.transact("multicall", [bytes.fromhex(c[2:]) for c in again])
    assert not ledger.vehicle("car-c").registered  # the whole batch rolled back
    assert ledger.stats()["vehicles"] == 2


# ---------------------------------------------------------------------------- stats


def test_stats_after_a_sequence_of_operations(ledger: KeyLedgerClient, outsider) -> None:
    for vehicle in ("car-a", "car-b", "car-c"):
        ledger.register_vehicle(vehicle)
    keys = [record_key(ledger, v) for v in ("car-a", "car-a", "car-b", "car-c")]
    ledger.record_verification(keys[0], True)
    ledger.record_verification(keys[0], False, VERIFY_REASONS["commitment-mismatch"])
    ledger.record_verification(keys[2], True)
    ledger.revoke_key(keys[1], "compromised")
    ledger.revoke_vehicle_keys("car-b", "stolen")
    ledger.revoke_vehicle_keys("car-b", "stolen again")
    ledger.deregister_vehicle("car-c")
    ledger.anchor_batch(b"\x01" * 32, 3)
    ledger.anchor_batch(b"\x02" * 32, 1)
    # refusals and role changes leave the counters alone
    with refused("KeyAlreadyRevoked"):
        ledger.revoke_key(keys[1], "again")
    ledger.grant_role("verifier", outsider.address)

    assert ledger.stats() == {
        "vehicles": 2,
        "sessions": 4,
        "verifications": 3,
        "key_revocations": 1,
        "vehicle_revocations": 2,
        "batches": 2,
        "batched_records": 4,
    }
    assert [status(ledger, k) for k in keys] == ["valid", "revoked", "revoked", "revoked"]


# ---------------------------------------------------------------------------- messages


def test_refusal_messages_are_readable(
    ledger: KeyLedgerClient, stranger: KeyLedgerClient, car: str, outsider
) -> None:
    with refused("VehicleAlreadyRegistered") as excinfo:
        ledger.register_vehicle(car)
    message = str(excinfo.value)
    assert message == "registerVehicle refused: VehicleAlreadyRegistered: vehicle car-1 is already registered"

    with refused("VehicleNotRegistered") as excinfo:
        record_key(ledger, "car-999")
    message = str(excinfo.value)
    assert "recordSession" in message
    assert "VehicleNotRegistered" in message
    assert "car-999" in message

    with unauthorized(outsider, KEY_MANAGER_ROLE) as excinfo:
        stranger.anchor_batch(b"\x01" * 32, 1)
    message = str(excinfo.value)
    assert "anchorBatch" in message
    assert "AccessControlUnauthorizedAccount" in message
    assert outsider.address in message  # checksummed
    assert "key-manager" in message

    with refused("QberOutOfRange") as excinfo:
        ledger.transact("recordSession", *session_args(ledger.chain, qberPpm=1_000_001))
    assert "1000001" in str(excinfo.value)
    assert excinfo.value.function == "recordSession"


def test_tx_result_event_lookup(ledger: KeyLedgerClient) -> None:
    result = ledger.register_vehicle(CAR)
    assert [e.name for e in result.events] == ["VehicleRegistered"]
    assert result.tx_hash.startswith("0x")
    assert len(result.tx_hash) == 66
    with pytest.raises(KeyError):
        result.event("KeyRevoked")


def test_key_status_fast_agrees_with_key_status(chain, ledger) -> None:
    """The raw eth_call fast path answers what the ABI path answers, for every status."""
    import os

    now = chain.latest_timestamp()
    ledger.register_vehicle("car-fast")
    keys = [str(uuid.uuid4()) for _ in range(3)]
    for key, ttl in zip(keys, (3600, 3600, 5), strict=True):
        ledger.record_session(
            key, os.urandom(32), "car-fast", qber=0.01, final_key_bits=256, expires_at=now + ttl
        )
    ledger.revoke_key(keys[1], "test")
    chain.advance_time(10)
    for key in [*keys, str(uuid.uuid4())]:
        assert ledger.key_status_fast(key) == ledger.key_status(key).status
    assert [ledger.key_status_fast(k) for k in keys] == ["valid", "revoked", "expired"]


def test_arguments_that_do_not_fit_the_abi_are_refused_before_sending(ledger: KeyLedgerClient) -> None:
    nonce = ledger.w3.eth.get_transaction_count(ledger.sender.address)
    with pytest.raises(BadInput, match="do not fit"):
        ledger.transact("anchorBatch", b"\x01" * 33, 1)  # bytes32 given 33 bytes
    with pytest.raises(BadInput, match="do not fit"):
        ledger.transact("anchorBatch", b"\x01" * 32, -1)  # a negative count
    with pytest.raises(BadInput, match="no single function"):
        ledger.transact("noSuchFunction")
    assert ledger.w3.eth.get_transaction_count(ledger.sender.address) == nonce  # nothing sent
