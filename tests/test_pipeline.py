"""Pipelined submission: fast signing equals eth_account's, nonces stay right under concurrency,
only receipts count, and the batcher anchors asynchronously through it."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import rlp
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import ids
from ledger.batcher import Anchored, KeyBatcher, KeyRecord
from ledger.chain import Chain, connect
from ledger.client import KeyLedgerClient
from ledger.deployment import deploy
from ledger.errors import BadInput, TransactionRefused
from ledger.paths import node_binary
from ledger.pipeline import TxPipeline
from ledger.signing import FastSigner, _rlp
from ledger.view import LedgerView

needs_anvil = pytest.mark.skipif(not node_binary("anvil").exists(), reason="anvil not installed (npm ci)")

TO_ADDRESS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
TO = bytes.fromhex(TO_ADDRESS[2:])


# ---------------------------------------------------------------------------- signing


@settings(max_examples=40, deadline=None)
@given(
    nonce=st.integers(0, 2**40),
    gas=st.integers(21_000, 30_000_000),
    data=st.binary(max_size=300),
    chain_id=st.sampled_from([1, 1337, 31337, 2**31 - 1]),
    tip=st.integers(0, 10**12),
    base=st.integers(0, 10**12),
)
def test_fast_signer_matches_eth_account_eip1559(
    nonce: int, gas: int, data: bytes, chain_id: int, tip: int, base: int
) -> None:
    account = Account.from_key(hashlib.sha256(b"pipeline test key").digest())
    fees = {"maxPriorityFeePerGas": tip, "maxFeePerGas": tip + base}
    raw, tx_hash = FastSigner(account).sign(
        chain_id=chain_id, nonce=nonce, gas=gas, to=TO, data=data, fees=fees
    )
    expected = account.sign_transaction(
        {
            "chainId": chain_id,
            "nonce": nonce,
            "gas": gas,
            "to": TO_ADDRESS,
            "value": 0,
            "data": data,
            "type": 2,
            **fees,
        }
    )
    assert raw == bytes(expected.raw_transaction)
    assert tx_hash == bytes(expected.hash)


@settings(max_examples=40, deadline=None)
@given(
    nonce=st.integers(0, 2**40),
    gas=st.integers(21_000, 30_000_000),
    data=st.binary(max_size=300),
    chain_id=st.sampled_from([1, 1337, 31337]),
    price=st.integers(0, 10**12),
)
def test_fast_signer_matches_eth_account_legacy(
    nonce: int, gas: int, data: bytes, chain_id: int, price: int
) -> None:
    account = Account.from_key(hashlib.sha256(b"pipeline legacy key").digest())
    raw, tx_hash = FastSigner(account).sign(
        chain_id=chain_id, nonce=nonce, gas=gas, to=TO, data=data, fees={"gasPrice": price}
    )
    expected = account.sign_transaction(
        {
            "chainId": chain_id,
            "nonce": nonce,
            "gas": gas,
            "to": TO_ADDRESS,
            "value": 0,
            "data": data,
            "gasPrice": price,
        }
    )
    assert raw == bytes(expected.raw_transaction)
    assert tx_hash == bytes(expected.hash)
    assert Account.recover_transaction(raw) == account.address


rlp_items = st.recursive(
    st.one_of(st.integers(0, 2**256 - 1), st.binary(max_size=80)),
    lambda children: st.lists(children, max_size=6),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(item=rlp_items)
def test_rlp_encoder_matches_the_rlp_package(item: Any) -> None:
    assert _rlp(item) == rlp.encode(item)


# ---------------------------------------------------------------------------- on a chain


def _record_call(vehicle: str, now: int) -> tuple[str, tuple[Any, ...]]:
    return (
        "recordSession",
        (ids.key_id(uuid.uuid4()), os.urandom(32), ids.vehicle_id(vehicle), 20_000, 256, 1, now, now + 3600),
    )


def _with_managers(client: KeyLedgerClient, count: int) -> list[Any]:
    managers = client.chain.accounts[1 : 1 + count]
    for account in managers:
        client.grant_role("key-manager", account.address)
    return managers


def test_pipeline_mines_everything_on_the_embedded_chain(ledger: KeyLedgerClient, chain: Chain) -> None:
    ledger.register_vehicle("car-1")
    managers = _with_managers(ledger, 2)
    now = chain.latest_timestamp()
    seen: list[Any] = []
    with TxPipeline(ledger, managers) as pipeline:
        hashes = pipeline.submit_many([_record_call("car-1", now) for _ in range(12)], on_mined=seen.append)
    assert len(set(hashes)) == 12 and pipeline.mined == 12 and not pipeline.failed
    assert sorted(m.tx_hash for m in seen) == sorted(hashes)
    assert ledger.stats()["sessions"] == 12
    # spread round robin: six each, nonces 0..5 per account
    for account in managers:
        assert sorted(m.nonce for m in seen if m.sender == account.address) == list(range(6))


def test_a_mined_revert_is_a_failure_not_a_success(ledger: KeyLedgerClient) -> None:
    root = hashlib.sha256(b"one root").digest()
    with TxPipeline(ledger) as pipeline:
        pipeline.submit_many([("anchorBatch", (root, 3)), ("anchorBatch", (root, 3))])
    assert pipeline.mined == 2
    assert len(pipeline.failed) == 1 and not pipeline.failed[0].ok
    assert ledger.stats()["batches"] == 1


def test_a_refusal_at_estimation_is_raised_before_anything_is_sent(ledger: KeyLedgerClient) -> None:
    now = ledger.chain.latest_timestamp()
    with TxPipeline(ledger) as pipeline:
        with pytest.raises(TransactionRefused, match="VehicleNotRegistered"):
            pipeline.submit_many([_record_call("nobody", now)])
        with pytest.raises(BadInput, match="single function"):
            pipeline.submit("noSuchFunction")
    assert pipeline.sent == 0


def test_batcher_through_the_pipeline_is_pending_until_mined(ledger: KeyLedgerClient) -> None:
    ledger.register_vehicle("car-1")
    heard: list[Anchored] = []
    now = ledger.chain.latest_timestamp()
    records = [
        KeyRecord(str(uuid.uuid4()), os.urandom(32), "car-1", 0.02, 512, now, now + 600) for _ in range(10)
    ]
    with TxPipeline(ledger) as pipeline:
        batcher = KeyBatcher(ledger, max_batch=4, max_age_s=60, pipeline=pipeline, on_anchored=heard.extend)
        for r in records:
            assert batcher.add(r) == []  # asynchronous: nothing is returned, listeners hear
        assert batcher.pending == 2
        assert batcher.status(records[-1].key_id) == "pending"
        batcher.drain()
    assert sorted(a.key_id for a in heard) == sorted(r.key_id for r in records)
    assert batcher.batches == 3 and batcher.records == 10
    view = LedgerView(ledger)
    view.sync()
    for r in records:
        item = batcher.anchored(r.key_id)
        assert item is not None and batcher.status(r.key_id) == "anchored"
        assert ledger.verify_inclusion(item.root, list(item.proof), item.leaf)
        assert view.admit(r, item.root, item.proof) == "admitted"
        assert view.validate(r.key_id, r.commitment, now + 1) == (True, "valid")


@pytest.fixture
def anvil_ledger() -> Iterator[KeyLedgerClient]:
    with connect("anvil", persist=False, block_time=0.5, gas_limit=300_000_000) as node:
        client, _ = deploy(node, save=False)
        yield client


@needs_anvil
def test_nonces_stay_right_with_several_accounts_under_concurrency(anvil_ledger: KeyLedgerClient) -> None:
    """Four submitting threads share one pipeline over three accounts while another thread sends
    one-at-a-time transactions from a fourth: everything is mined, each account's nonces
    are exactly 0..n-1 with nothing replaced, and no send is refused."""
    client = anvil_ledger
    client.register_vehicle("car-1")
    managers = _with_managers(client, 4)
    pipelined, serial = managers[:3], managers[3]
    now = client.chain.latest_timestamp()
    hashes: list[str] = []
    errors: list[BaseException] = []
    mined: list[Any] = []
    lock = threading.Lock()
    before = {a.address: client.w3.eth.get_transaction_count(a.address) for a in managers}

    with TxPipeline(client, pipelined, chunk=25) as pipeline:

        def submit() -> None:
            try:
                sent = pipeline.submit_many(
                    [_record_call("car-1", now) for _ in range(60)], on_mined=mined.append
                )
                with lock:
                    hashes.extend(sent)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        def one_at_a_time() -> None:
            try:
                single = client.as_sender(serial)
                for _ in range(5):
                    call = _record_call("car-1", now)[1]
                    single.transact("recordSession", *call)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=submit) for _ in range(4)] + [
            threading.Thread(target=one_at_a_time)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(set(hashes)) == 240 and pipeline.mined == 240 and not pipeline.failed
    for account in pipelined:
        nonces = sorted(m.nonce for m in mined if m.sender == account.address)
        assert nonces == list(range(before[account.address], before[account.address] + 80))
        assert client.w3.eth.get_transaction_count(account.address) == before[account.address] + 80
    assert client.w3.eth.get_transaction_count(serial.address) == before[serial.address] + 5
    assert client.stats()["sessions"] == 245  # every transaction landed: none was replaced


@needs_anvil
def test_legacy_gas_price_transactions_are_mined(anvil_ledger: KeyLedgerClient) -> None:
    """The client signs type-0 transactions with a gas price when the node has no base fee."""
    client = anvil_ledger
    assert set(client._fees()) == {"maxPriorityFeePerGas", "maxFeePerGas"}  # anvil has a base fee
    latest = dict(client.w3.eth.get_block("latest"))
    latest.pop("baseFeePerGas")
    original = client.w3.eth.get_block
    client.w3.eth.get_block = lambda *a, **k: latest  # type: ignore[method-assign]  # a pre-London block
    client._eip1559 = None
    try:
        assert set(client._fees()) == {"gasPrice"}
    finally:
        client.w3.eth.get_block = original  # type: ignore[method-assign]
    assert client._eip1559 is False
    result = client.register_vehicle("car-legacy")
    tx = client.w3.eth.get_transaction(result.tx_hash)
    assert tx["type"] == 0 and tx["gasPrice"] > 0
    now = client.chain.latest_timestamp()
    with TxPipeline(client) as pipeline:
        hashes = pipeline.submit_many([_record_call("car-legacy", now) for _ in range(3)])
    assert pipeline.mined == 3 and not pipeline.failed
    assert all(client.w3.eth.get_transaction(h)["type"] == 0 for h in hashes)
