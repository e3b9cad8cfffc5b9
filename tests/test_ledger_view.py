"""ledger.view.LedgerView against the KeyLedger contract on the embedded chain.

The contract's ``keyStatus`` is the oracle: after every ``sync`` the view must answer the
same for every key, at the chain's latest block time (eth_call runs at that timestamp).
"""

from __future__ import annotations

import json
import uuid

import pytest
from conftest import record_key

from ledger import ids, merkle
from ledger.chain import Chain, connect
from ledger.client import KeyLedgerClient
from ledger.deployment import deploy
from ledger.errors import LedgerError
from ledger.paths import node_binary
from ledger.view import LedgerView, ViewEvent

COMMIT = b"\x42" * 32
OTHER_COMMIT = b"\x43" * 32


def assert_agrees_with_contract(view: LedgerView, ledger: KeyLedgerClient, key_ids: list[uuid.UUID]) -> None:
    now = ledger.chain.latest_timestamp()
    for key_id in key_ids:
        assert view.status(key_id, now) == ledger.key_status(key_id).status, key_id


def build_history(ledger: KeyLedgerClient, chain: Chain) -> dict[str, uuid.UUID]:
    """Every kind of state change: records, a key revocation, a vehicle revocation, a
    deregistration, a re-registration, an expiry, a verification and a pause."""
    for car in ("car-1", "car-2", "car-3"):
        ledger.register_vehicle(car)
    keys = {
        "revoked": record_key(ledger, "car-1"),
        "valid": record_key(ledger, "car-1", commitment=OTHER_COMMIT),
        "short": record_key(ledger, "car-1", ttl=20),
        "car2-old": record_key(ledger, "car-2"),
        "car3": record_key(ledger, "car-3"),
    }
    ledger.record_verification(keys["valid"], True)
    ledger.revoke_key(keys["revoked"], "leaked")
    ledger.revoke_vehicle_keys("car-2", "stolen")
    keys["car2-new"] = record_key(ledger, "car-2")
    ledger.deregister_vehicle("car-3")
    ledger.register_vehicle("car-3")  # back, but its old keys stay invalid
    ledger.pause()
    ledger.unpause()
    chain.advance_time(30)
    return keys


def test_statuses_agree_with_the_contract(chain: Chain, ledger: KeyLedgerClient) -> None:
    view = LedgerView(ledger)
    keys = build_history(ledger, chain)
    assert view.sync() > 0
    assert view.sync() == 0
    unknown = uuid.uuid4()
    assert_agrees_with_contract(view, ledger, [*keys.values(), unknown])
    now = chain.latest_timestamp()
    expected = {
        "revoked": "revoked",
        "valid": "valid",
        "short": "expired",
        "car2-old": "revoked",
        "car3": "revoked",
        "car2-new": "valid",
    }
    assert {name: view.status(k, now) for name, k in keys.items()} == expected
    assert view.validate(keys["valid"], OTHER_COMMIT, now) == (True, "valid")
    assert view.validate(keys["valid"], None, now) == (True, "valid")
    assert view.validate(keys["valid"], COMMIT, now) == (False, "commitment-mismatch")
    assert view.validate(keys["revoked"], COMMIT, now) == (False, "revoked")
    assert view.validate(keys["short"], COMMIT, now) == (False, "expired")
    assert view.validate(unknown, COMMIT, now) == (False, "unrecorded")
    assert view.status(keys["short"], now - 31) == "valid"  # the clock is the caller's
    assert view.revocation_reason(keys["revoked"]) == "leaked"
    assert view.vehicle_revocations("car-2") == ["stolen"]
    assert (view.vehicle_epoch("car-2"), view.vehicle_epoch("car-3")) == (1, 1)
    assert view.is_registered("car-3") and view.verifications(keys["valid"]) == (1, 0)
    assert view.has_role("key-manager", ledger.sender.address) and not view.paused
    record = view.record(keys["valid"])
    on_chain = ledger.key_status(keys["valid"]).record
    assert record is not None and on_chain is not None
    assert (record.commitment, record.expires_at, record.vehicle_epoch, record.key_manager) == (
        on_chain.commitment,
        on_chain.expires_at,
        on_chain.vehicle_epoch,
        on_chain.key_manager,
    )


def test_key_id_spellings(chain: Chain, ledger: KeyLedgerClient) -> None:
    ledger.register_vehicle("car-1")
    key_id = record_key(ledger)
    view = LedgerView(ledger)
    view.sync()
    now = chain.latest_timestamp()
    spellings = [key_id, str(key_id), str(key_id).upper(), key_id.bytes, ids.key_id(key_id)]
    spellings.append("0x" + ids.key_id(key_id).hex())
    assert {view.status(s, now) for s in spellings} == {"valid"}
    assert view.status("not-a-key", now) == view.status(b"short", now) == "unknown"


def test_revoked_after_being_valid_is_reported_after_sync(chain: Chain, ledger: KeyLedgerClient) -> None:
    ledger.register_vehicle("car-1")
    key_id = record_key(ledger)
    view = LedgerView(ledger)
    heard: list[ViewEvent] = []
    view.on_event(heard.append, names={"KeyRevoked", "VehicleKeysRevoked"})
    view.sync()
    assert view.status(key_id, chain.latest_timestamp()) == "valid"
    revocation = ledger.revoke_key(key_id, "compromised")
    assert view.status(key_id, chain.latest_timestamp()) == "valid"  # not yet synced: stale
    view.sync()
    assert view.status(key_id, chain.latest_timestamp()) == "revoked"
    assert [(e.name, e.block) for e in heard] == [("KeyRevoked", revocation.block_number)]
    assert heard[0].args["reason"] == "compromised"

    other = record_key(ledger)
    view.sync()
    assert view.status(other, chain.latest_timestamp()) == "valid"
    ledger.revoke_vehicle_keys("car-1", "stolen")
    view.sync()
    assert view.status(other, chain.latest_timestamp()) == "revoked"
    assert [e.name for e in heard] == ["KeyRevoked", "VehicleKeysRevoked"]


def test_rebuilt_view_equals_live_view_and_save_load_resumes(
    chain: Chain, ledger: KeyLedgerClient, tmp_path
) -> None:
    live = LedgerView(ledger)
    ledger.register_vehicle("car-1")
    live.sync()
    first = record_key(ledger)
    live.sync()
    ledger.revoke_key(first, "test")
    second = record_key(ledger)
    live.sync()

    rebuilt = LedgerView(ledger, max_block_range=2)  # many bounded eth_getLogs calls
    assert rebuilt.sync() == live.events_applied
    assert rebuilt == live and rebuilt.snapshot() == live.snapshot()

    path = live.save(tmp_path / "views" / "rsu-1.json")
    assert not list(path.parent.glob("*.tmp"))
    restored = LedgerView.load(path, ledger)
    assert restored == live
    assert restored.sync() == 0

    third = record_key(ledger)
    ledger.revoke_key(second, "later")
    assert restored.sync() == 2  # only the events after the saved position
    live.sync()
    assert restored == live
    assert_agrees_with_contract(restored, ledger, [first, second, third])
    assert json.loads(path.read_text())["state"]["next_block"] < restored.next_block


def test_load_refuses_other_contracts_and_corrupt_files(
    chain: Chain, ledger: KeyLedgerClient, tmp_path
) -> None:
    view = LedgerView(ledger)
    view.sync()
    path = view.save(tmp_path / "view.json")
    document = json.loads(path.read_text())
    document["address"] = "0x" + "11" * 20
    path.write_text(json.dumps(document))
    with pytest.raises(LedgerError, match="not of"):
        LedgerView.load(path, ledger)
    path.write_text("{not json")
    with pytest.raises(LedgerError, match="corrupt"):
        LedgerView.load(path, ledger)
    with pytest.raises(LedgerError, match="cannot read"):
        LedgerView.load(tmp_path / "missing.json", ledger)


def test_listener_failure_does_not_apply_events_twice(chain: Chain, ledger: KeyLedgerClient) -> None:
    ledger.register_vehicle("car-1")
    keys = [record_key(ledger) for _ in range(3)]
    view = LedgerView(ledger)
    calls = []

    def fail_once(event: ViewEvent) -> None:
        calls.append(event.name)
        if len(calls) == 2:
            raise RuntimeError("simulator hiccup")

    view.on_event(fail_once)
    with pytest.raises(RuntimeError):
        view.sync()
    view.sync()
    fresh = LedgerView(ledger)
    fresh.sync()
    assert view == fresh and len(calls) == fresh.events_applied
    assert_agrees_with_contract(view, ledger, keys)


def test_anchored_root_proofs_verify_locally(chain: Chain, ledger: KeyLedgerClient) -> None:
    now = chain.latest_timestamp()
    leaves = [
        merkle.key_leaf(
            ids.key_id(uuid.UUID(int=i + 1)), COMMIT, ids.vehicle_id("car-1"), 20_000, 256, 1, now, now + 3600
        )
        for i in range(5)
    ]
    tree = merkle.MerkleTree.from_leaves(leaves)
    unanchored = merkle.MerkleTree.from_leaves(leaves[:3])
    anchored = ledger.anchor_batch(tree.root, len(leaves))
    view = LedgerView(ledger)
    view.sync()
    for leaf in leaves:
        proof = tree.proof(leaf)
        assert view.verify_inclusion(tree.root, proof, leaf)
        assert ledger.verify_inclusion(tree.root, proof, leaf)
    assert not view.verify_inclusion(tree.root, tree.proof(leaves[0]), leaves[1])
    leaf = leaves[0]
    assert not view.verify_inclusion(unanchored.root, unanchored.proof(leaf), leaf)
    assert not ledger.verify_inclusion(unanchored.root, unanchored.proof(leaf), leaf)
    anchor = view.anchor(tree.root)
    on_chain = ledger.batch(tree.root)
    assert anchor is not None and anchor.block == anchored.block_number
    assert (anchor.count, anchor.key_manager, anchor.anchored_at) == (
        on_chain["count"],
        on_chain["key_manager"],
        on_chain["anchored_at"],
    )


def test_view_started_after_registration_learns_epochs_from_the_chain(
    chain: Chain, ledger: KeyLedgerClient
) -> None:
    ledger.register_vehicle("car-1")
    ledger.revoke_vehicle_keys("car-1", "old certificate")  # epoch 1 before the view starts
    view = LedgerView(ledger, from_block=chain.w3.eth.block_number + 1)
    key_id = record_key(ledger)
    view.sync()
    assert view.vehicle_epoch("car-1") == 1
    assert_agrees_with_contract(view, ledger, [key_id])
    assert view.status(key_id, chain.latest_timestamp()) == "valid"
    ledger.revoke_vehicle_keys("car-1", "stolen")
    view.sync()
    assert view.status(key_id, chain.latest_timestamp()) == "revoked"


def test_decoder_matches_web3s(chain: Chain, ledger: KeyLedgerClient) -> None:
    """The client's eth_abi decoder (receipts and the view both use it) against web3's process_log."""
    build_history(ledger, chain)
    ledger.anchor_batch(b"\x07" * 32, 3)
    logs = chain.w3.eth.get_logs({"address": ledger.address, "fromBlock": 0, "toBlock": "latest"})
    names = set()
    for log in logs:
        decoded = ledger.log_decoder.decode(log)
        assert decoded is not None
        expected = ledger.contract.events[decoded[0]]().process_log(log)
        assert decoded == (expected["event"], dict(expected["args"]))
        assert ledger.decode_events([log])[0].args == decoded[1]
        names.add(decoded[0])
    assert len(names) >= 10


@pytest.mark.skipif(not node_binary("anvil").exists(), reason="anvil not installed (npm ci)")
def test_batched_sync_on_a_node_matches_range_by_range_sync() -> None:
    """On an HTTP node a sync is one JSON-RPC batch (head and logs); it must build exactly
    the state the block-range path builds, and honour ``confirmations``."""
    with connect("anvil", persist=False) as node:
        ledger, _ = deploy(node, save=False)
        keys = build_history(ledger, node)
        root = b"\x07" * 32
        ledger.anchor_batch(root, 3)
        batched, ranged = LedgerView(ledger), LedgerView(ledger, max_block_range=3)
        ranged._head_and_logs = lambda: None  # type: ignore[method-assign]
        posts: list[int] = []
        rpc = ledger.rpc()
        original = rpc._post
        rpc._post = lambda items, ids: posts.append(len(items)) or original(items, ids)  # type: ignore[method-assign]
        assert ranged.sync() > 0
        w3, ledger.w3 = ledger.w3, None  # anvil's logs carry their block's time: no block request
        assert batched.sync() == ranged.events_applied
        ledger.w3 = w3
        on_chain = ledger.batch(root)
        assert batched.anchor(root) == ranged.anchor(root)
        assert batched.anchor(root).anchored_at == on_chain["anchored_at"] > 0  # type: ignore[union-attr]
        w3, ledger.w3 = ledger.w3, None  # any call through web3 would now fail
        assert batched.sync() == 0  # nothing new: still one round trip, none through web3
        ledger.w3 = w3
        assert posts == [2, 2]  # head and logs in one round trip
        assert batched.next_block == ranged.next_block == node.w3.eth.block_number + 1
        now = node.latest_timestamp()
        assert {k: batched.status(v, now) for k, v in keys.items()} == {
            k: ranged.status(v, now) for k, v in keys.items()
        }
        assert_agrees_with_contract(batched, ledger, list(keys.values()))
        behind = LedgerView(ledger, confirmations=1)
        behind.sync()
        assert behind.next_block == node.w3.eth.block_number  # the newest block waits
        late = record_key(ledger, "car-1")
        batched.sync()
        assert batched.status(late, node.latest_timestamp()) == "valid"
