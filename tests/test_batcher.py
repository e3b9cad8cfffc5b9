"""The key-manager batcher: Merkle roots anchored by size or age, proofs that verify everywhere."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import ids, merkle
from ledger.batcher import KeyBatcher, KeyRecord
from ledger.client import KeyLedgerClient
from ledger.errors import BadInput, TransactionRefused
from ledger.view import LedgerView


def record(n: int, now: int = 1_900_000_000) -> KeyRecord:
    return KeyRecord(
        key_id=str(uuid.UUID(int=n + 1, version=4)),
        commitment=hashlib.sha256(n.to_bytes(8, "big")).digest(),
        vehicle=f"car-{n % 5}",
        qber=0.01 + (n % 7) / 1000,
        final_key_bits=256 + n,
        created_at=now,
        expires_at=now + 600,
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 257])
def test_batches_anchor_and_every_proof_verifies_locally_and_on_chain(
    ledger: KeyLedgerClient, size: int
) -> None:
    batcher = KeyBatcher(ledger, max_batch=10_000)
    records = [record(i) for i in range(size)]
    for r in records:
        batcher.add(r)
    anchored = batcher.flush()
    assert len(anchored) == size and batcher.batches == 1
    root = anchored[0].root
    assert ledger.batch(root)["count"] == size
    view = LedgerView(ledger)
    view.sync()
    for r, item in zip(records, anchored, strict=True):
        assert item.leaf == r.leaf()
        contract_leaf = ledger._call(
            "keyLeaf", ids.key_id(r.key_id), r.commitment, ids.vehicle_id(r.vehicle),
            round(r.qber * 1_000_000), r.final_key_bits, ids.protocol(r.protocol), r.created_at, r.expires_at,
        )  # fmt: skip
        assert contract_leaf == item.leaf
        assert merkle.verify(root, item.proof, item.leaf)
        assert view.verify_inclusion(root, item.proof, item.leaf)
    # on chain for a sample (each is an eth_call)
    for item in anchored[:: max(1, size // 8)]:
        assert ledger.verify_inclusion(root, list(item.proof), item.leaf)
    tampered = bytes([anchored[0].leaf[0] ^ 1]) + anchored[0].leaf[1:]
    assert not ledger.verify_inclusion(root, list(anchored[0].proof), tampered)


def test_flushes_by_size(ledger: KeyLedgerClient) -> None:
    batcher = KeyBatcher(ledger, max_batch=4, max_age_s=3600)
    assert [len(batcher.add(record(i))) for i in range(9)] == [0, 0, 0, 4, 0, 0, 0, 4, 0]
    assert batcher.pending == 1 and batcher.batches == 2
    assert batcher.status(record(0).key_id) == "anchored"
    assert batcher.status(record(8).key_id) == "pending"
    assert batcher.status(str(uuid.uuid4())) == "unknown"


def test_the_batcher_refuses_records_not_worth_anchoring(ledger: KeyLedgerClient) -> None:
    """Checked where records enter a batch, not only in records files: the zero key id
    (never revocable), and what recordSession refuses of a key recorded alone. Nothing is
    queued."""
    import dataclasses

    batcher = KeyBatcher(ledger, max_batch=4, max_age_s=3600)
    good = record(0)
    for bad, message in [
        (dataclasses.replace(good, key_id=str(uuid.UUID(int=0))), "key_id is all zeros"),
        (dataclasses.replace(good, expires_at=good.created_at), "is not after creation"),
        (dataclasses.replace(good, final_key_bits=0), "bits must be a positive 32-bit number"),
        (dataclasses.replace(good, commitment=bytes(32)), "the key commitment is zero"),
        (dataclasses.replace(good, created_at=0), "created_at is zero"),
    ]:
        with pytest.raises(BadInput, match=message):
            batcher.add(bad)
    assert batcher.pending == 0
    batcher.add(good)
    assert batcher.pending == 1


def test_flushes_by_age_when_polled(ledger: KeyLedgerClient) -> None:
    clock = FakeClock()
    batcher = KeyBatcher(ledger, max_batch=100, max_age_s=2.0, clock=clock)
    batcher.add(record(1))
    clock.now = 1.0
    batcher.add(record(2))
    assert batcher.poll() == [] and batcher.pending == 2
    clock.now = 2.0  # the oldest record has now waited max_age_s
    assert len(batcher.poll()) == 2 and batcher.pending == 0


def test_flushes_on_age_even_when_traffic_stops(ledger: KeyLedgerClient) -> None:
    batcher = KeyBatcher(ledger, max_batch=100, max_age_s=0.2)
    with batcher.background(interval_s=0.02):
        batcher.add(record(1))
        deadline = time.monotonic() + 10
        while batcher.status(record(1).key_id) != "anchored" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert batcher.status(record(1).key_id) == "anchored"  # no further add, no explicit flush
    assert batcher.batches == 1


def test_a_refused_anchor_keeps_the_records(ledger: KeyLedgerClient, outsider) -> None:
    batcher = KeyBatcher(ledger.as_sender(outsider), max_batch=100)
    batcher.add(record(1))
    with pytest.raises(TransactionRefused):
        batcher.flush()
    assert batcher.pending == 1 and batcher.status(record(1).key_id) == "pending"


def test_bad_input_is_refused(ledger: KeyLedgerClient) -> None:
    batcher = KeyBatcher(ledger)
    batcher.add(record(1))
    with pytest.raises(BadInput, match="already batched"):
        batcher.add(record(1))
    with pytest.raises(BadInput, match="32 bytes"):
        batcher.add(KeyRecord(str(uuid.uuid4()), b"short", "car-1", 0.01, 256, 1, 2))
    with pytest.raises(BadInput, match="max_batch"):
        KeyBatcher(ledger, max_batch=0)
    assert batcher.flush()[0].batch_size == 1
    assert batcher.flush() == []


def test_bench_ledger_quick_reports_its_fields(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from vehicles.cli import main

    with pytest.raises(SystemExit) as info:
        main(["bench", "ledger", "--quick", "--json"])
    assert int(info.value.code or 0) == 0
    report = json.loads(capsys.readouterr().out)
    for field in ("records", "records_per_s", "tx_per_s", "baseline_tx_per_s", "speedup", "batch_size",
                  "gas_per_record"):  # fmt: skip
        assert report[field] > 0, field
    for field in ("commit_latency_ms", "validation_latency_ms", "onchain_validation_latency_ms"):
        assert set(report[field]) == {"p50", "p99"} and 0 < report[field]["p50"] <= report[field]["p99"]
    assert report["records"] == 600 and report["batches"] == 5


def test_bench_ledger_flags_given_win_over_quick(capsys: pytest.CaptureFixture[str]) -> None:
    """--quick only picks what is not given (it used to replace --records and the others silently)."""
    import json

    from vehicles.cli import main

    with pytest.raises(SystemExit) as info:
        main(
            [
                "bench",
                "ledger",
                "--quick",
                "--records",
                "50",
                "--batch-size",
                "10",
                "--accounts",
                "1",
                "--json",
            ]
        )
    assert int(info.value.code or 0) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["records"], report["batch_size"], report["key_manager_accounts"]) == (50, 10, 1)
    assert report["baseline_records"] == 20 and report["batches"] == 5  # the quick default where not given


def test_a_key_revoked_after_anchoring_is_revoked_in_the_view(ledger: KeyLedgerClient) -> None:
    """Batched keys are revoked through their vehicle's epoch (the contract's O(1) revocation):
    keys anchored before ``revokeVehicleKeys`` turn revoked once the view has the event, a
    key anchored after it is valid, and a proof is only admitted under an anchored root."""
    ledger.register_vehicle("car-1")
    ledger.register_vehicle("car-2")
    now = ledger.chain.latest_timestamp()
    before = [KeyRecord(str(uuid.uuid4()), os.urandom(32), f"car-{1 + i % 2}", 0.02, 512, now, now + 600)
              for i in range(6)]  # fmt: skip
    batcher = KeyBatcher(ledger, max_batch=100)
    for r in before:
        batcher.add(r)
    batcher.flush()
    view = LedgerView(ledger)
    first = batcher.anchored(before[0].key_id)
    assert first is not None
    assert view.admit(before[0], first.root, first.proof) == "root-not-anchored"  # not synced yet
    view.sync()
    for r in before:
        item = batcher.anchored(r.key_id)
        assert item is not None and view.admit(r, item.root, item.proof) == "admitted"
        assert view.status(r.key_id, now + 1) == "valid"
    # refusals: a wrong proof, a record that is not the leaf, an unregistered vehicle
    assert view.admit(before[1], first.root, first.proof) == "bad-proof"
    forged = KeyRecord(before[0].key_id, os.urandom(32), "car-1", 0.02, 512, now, now + 600)
    assert view.admit(forged, first.root, first.proof) == "bad-proof"
    stranger = KeyRecord(str(uuid.uuid4()), os.urandom(32), "car-9", 0.02, 512, now, now + 600)
    lone = KeyBatcher(ledger, max_batch=1).add(stranger)[0]
    view.sync()
    assert view.admit(stranger, lone.root, lone.proof) == "unregistered"

    ledger.revoke_vehicle_keys("car-1", "compromised")
    assert view.status(before[0].key_id, now + 1) == "valid"  # the view has not seen it yet
    view.sync()
    for r in before:
        expected = "revoked" if r.vehicle == "car-1" else "valid"
        assert view.status(r.key_id, now + 1) == expected, r.vehicle
        assert view.validate(r.key_id, r.commitment, now + 1)[1] == expected

    # one batched key of car-2 revoked on its own: the contract keeps it by id, the view hears the event
    single = next(r for r in before if r.vehicle == "car-2")
    ledger.revoke_batched_key(single.key_id, "leaked")
    assert ledger.batched_key_revoked(single.key_id)
    assert view.status(single.key_id, now + 1) == "valid"
    view.sync()
    assert view.status(single.key_id, now + 1) == "revoked"
    assert view.revocation_reason(single.key_id) == "leaked"
    assert sum(view.status(r.key_id, now + 1) == "valid" for r in before) == 2  # car-2's other two

    after = KeyRecord(str(uuid.uuid4()), os.urandom(32), "car-1", 0.02, 512, now, now + 600)
    item = KeyBatcher(ledger, max_batch=1).add(after)[0]
    view.sync()
    assert view.admit(after, item.root, item.proof) == "admitted"
    assert view.status(after.key_id, now + 1) == "valid"  # anchored in the new epoch
    # a view rebuilt from events and saved/loaded keeps the admitted keys' verdicts
    copy = LedgerView.load(view.save(Path(tempfile.mkdtemp()) / "view.json"), ledger)
    assert (
        copy.status(before[0].key_id, now + 1) == "revoked" and copy.status(after.key_id, now + 1) == "valid"
    )


def test_ledger_anchor_and_prove_from_the_shell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from vehicles.cli import main

    def qkdiov(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as info:
            main(list(argv))
        out, err = capsys.readouterr()
        return int(info.value.code or 0), out, err

    records = tmp_path / "records.jsonl"
    keys = [str(uuid.uuid4()) for _ in range(7)]
    records.write_text(
        "".join(
            json.dumps(
                {"key_id": k, "commitment": os.urandom(32).hex(), "vehicle": f"car-{i % 2}", "ttl": 600}
            )
            + "\n"
            for i, k in enumerate(keys)
        )
    )
    assert qkdiov("deploy", "--json")[0] == 0
    for vehicle in ("car-0", "car-1"):
        assert qkdiov("ledger", "register", "--vehicle", vehicle, "--json")[0] == 0
    proofs = tmp_path / "proofs.jsonl"
    code, out, err = qkdiov("ledger", "anchor", "--records", str(records), "--proofs", str(proofs),
                            "--batch-size", "3", "--json")  # fmt: skip
    summary = json.loads(out)
    assert code == 0 and summary["records"] == 7 and summary["batches"] == 3
    assert err == ""  # no progress bar off a terminal (it left an empty line on stderr)
    assert len(proofs.read_text().splitlines()) == 7

    code, out, _ = qkdiov("ledger", "prove", "--proofs", str(proofs), "--key-id", keys[0], "--json")
    assert code == 0 and json.loads(out) | {"root": None} == {
        "key_id": keys[0], "root": None, "anchored": True, "included_on_chain": True,
        "view": "admitted", "status": "valid",
    }  # fmt: skip

    def status_of(key: str) -> str:
        return json.loads(qkdiov("ledger", "prove", "--proofs", str(proofs), "--key-id", key, "--json")[1])[
            "status"
        ]

    assert qkdiov("ledger", "revoke", "--vehicle", "car-0", "--reason", "stolen", "--json")[0] == 0
    assert status_of(keys[0]) == "revoked" and status_of(keys[1]) == "valid"
    code, _, err = qkdiov("ledger", "revoke", "--key-id", keys[1], "--reason", "leaked")
    assert code == 2 and "add --batched" in err
    batched = ["--key-id", keys[1], "--batched", "--proofs", str(proofs), "--reason", "leaked", "--json"]
    assert qkdiov("ledger", "revoke", *batched)[0] == 0
    assert status_of(keys[1]) == "revoked" and status_of(keys[3]) == "valid"

    # a tampered record no longer matches its proof
    lines = [json.loads(line) for line in proofs.read_text().splitlines()]
    lines[1]["bits"] += 1
    forged = tmp_path / "forged.jsonl"
    forged.write_text("".join(json.dumps(line) + "\n" for line in lines))
    verdict = json.loads(qkdiov("ledger", "prove", "--proofs", str(forged), "--key-id", keys[1], "--json")[1])
    assert verdict["included_on_chain"] is False and verdict["view"] == "bad-proof"

    # user mistakes: one line, exit 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"key_id": keys[0], "commitment": "01" * 32, "vehicle": "car-0"}) + "\nnot json\n"
    )
    code, _, err = qkdiov("ledger", "anchor", "--records", str(bad), "--proofs", str(tmp_path / "p.jsonl"))
    assert code == 2 and "bad.jsonl:2: not JSON" in err and err.count("\n") == 1
    code, _, err = qkdiov("ledger", "anchor", "--records", str(records), "--proofs", str(proofs))
    assert code == 2 and "exists" in err
    code, _, err = qkdiov("ledger", "prove", "--proofs", str(proofs), "--key-id", str(uuid.uuid4()))
    assert code == 2 and "no proof for key" in err


@settings(max_examples=300, deadline=None)
@given(value=st.uuids(), form=st.sampled_from(["str", "upper", "object", "braces", "hex", "padded"]))
def test_the_fast_key_id_parse_agrees_with_uuid(value: uuid.UUID, form: str) -> None:
    from ledger.ids import parse_key_id

    spelled = {
        "str": str(value), "upper": str(value).upper(), "object": value, "braces": "{" + str(value) + "}",
        "hex": value.hex, "padded": f" {value} ",
    }[form]  # fmt: skip
    assert parse_key_id(spelled) == (str(value), value.bytes)


@pytest.mark.parametrize(
    "bad", ["zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "12 45678-1234-1234-1234-123456789012", "1234-5678", ""]
)
def test_the_fast_key_id_parse_refuses_what_uuid_refuses(bad: str) -> None:
    from ledger.ids import parse_key_id

    with pytest.raises(BadInput, match="not a UUID"):
        parse_key_id(bad)


def test_a_records_file_refuses_the_all_zero_key_id_and_a_past_expiry(tmp_path: Path) -> None:
    """The chain refuses to revoke key id zero, so anchoring one would leave it unrevocable;
    a key already expired at the chain's time is a mistake in the file."""
    from ledger.batcher import read_records

    records = tmp_path / "records.jsonl"
    line = {"key_id": str(uuid.UUID(int=1)), "commitment": "01" * 32, "vehicle": "car-0"}
    records.write_text(json.dumps(line) + "\n" + json.dumps(line | {"key_id": str(uuid.UUID(int=0))}) + "\n")
    with pytest.raises(BadInput, match=r"records.jsonl:2: key_id is all zeros"):
        read_records(records, now=1_000, default_ttl=60)
    records.write_text(json.dumps(line | {"created_at": 100, "expires_at": 900}) + "\n")
    with pytest.raises(BadInput, match=r"records.jsonl:1: expiry 900 is not after the chain's time 1000"):
        read_records(records, now=1_000, default_ttl=60)
    records.write_text(json.dumps(line | {"created_at": 0, "expires_at": 2_000}) + "\n")
    with pytest.raises(BadInput, match=r"records.jsonl:1: created_at is zero"):
        read_records(records, now=1_000, default_ttl=60)
    records.write_text(json.dumps(line) + "\n")
    assert [r.key_id for r in read_records(records, now=1_000, default_ttl=60)] == [str(uuid.UUID(int=1))]
