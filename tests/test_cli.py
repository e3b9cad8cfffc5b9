"""The ``qkdiov`` command: its error contract, JSON output, and runs on embedded and anvil chains.

Exit codes and stderr are checked on the real entry point in a subprocess (``python -m
vehicles.cli``), since click's CliRunner bypasses ``main()``, which maps errors to one line
and status 2. JSON output is checked in-process with CliRunner, which is faster.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import record_key

from ledger.chain import connect, dev_accounts, embedded_journal_path, free_port, node_file
from ledger.deployment import deploy as deploy_ledger
from ledger.deployment import load_client
from ledger.errors import JournalError
from ledger.paths import PROJECT_ROOT, node_binary
from vehicles.cli import app, main

ANVIL = node_binary("anvil")
ENV_VARS_TO_DROP = ("QKDIOV_CHAIN", "QKDIOV_PRIVATE_KEYS", "QKDIOV_MNEMONIC")
CLI_TIMEOUT_S = 90

KEY_1 = "3f2b8c1e-6a4d-4e0f-9b7a-1c2d3e4f5a6b"
KEY_2 = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
KEY_3 = "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f"
COMMIT_1 = hashlib.sha256(b"session key 1").hexdigest()
COMMIT_2 = "0x" + hashlib.sha256(b"session key 2").hexdigest()


# ---------------------------------------------------------------------------- helpers


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS_TO_DROP}
    env["QKDIOV_HOME"] = str(home)
    return env


def run_cli(home: Path, *args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """The real entry point in a fresh interpreter, with QKDIOV_HOME=home."""
    return subprocess.run(
        [sys.executable, "-m", "vehicles.cli", *args],
        cwd=PROJECT_ROOT,
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def one_json_object(stdout: str) -> dict[str, Any]:
    """stdout holds exactly one JSON object (one line) and nothing else."""
    assert stdout.endswith("\n") and stdout.count("\n") == 1, f"expected one line on stdout: {stdout!r}"
    obj, end = json.JSONDecoder().raw_decode(stdout)
    assert stdout[end:].strip() == "", f"extra output after the JSON object: {stdout[end:]!r}"
    assert isinstance(obj, dict)
    return obj


def ok_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, f"exit {result.returncode}, stderr: {result.stderr}"
    assert "Traceback" not in result.stderr
    return one_json_object(result.stdout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 2, nothing on stdout, exactly one ``error: ...`` line on stderr; returns that line."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == 2, f"exit {result.returncode}, stderr: {result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("error:"), lines[0]
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture
def home() -> Path:
    """This test's QKDIOV_HOME (set by conftest's autouse fixture)."""
    return Path(os.environ["QKDIOV_HOME"])


# ---------------------------------------------------------------------------- bad input

NOT_HEX = "zz" * 32
BAD_INPUT = {
    "malformed-uuid": (["ledger", "verify", "--key-id", "not-a-uuid"], "not a UUID"),
    "malformed-commitment": (
        ["ledger", "record", "--key-id", KEY_1, "--commitment", NOT_HEX, "--vehicle", "car-1"],
        "commitment must be 64 hex digits",
    ),
    "short-commitment": (
        ["ledger", "verify", "--key-id", KEY_1, "--commitment", "0xabcd"],
        "commitment must be 64 hex digits",
    ),
    "unknown-role": (
        ["ledger", "grant", "--role", "superuser", "--account", dev_accounts(1)[0].address],
        "unknown role 'superuser'",
    ),
    "unknown-chain": (["ledger", "stats", "--chain", "mainnet-please"], "unknown chain 'mainnet-please'"),
    "unreachable-url": (["ledger", "stats", "--chain", "http://127.0.0.1:{port}"], "no Ethereum JSON-RPC"),
    "unreachable-ws-url": (
        ["ledger", "stats", "--chain", "ws://127.0.0.1:{port}"],
        "cannot open a WebSocket",
    ),
    "missing-deployment": (["ledger", "stats"], "no deployment for chain"),
    "unknown-flag": (["ledger", "stats", "--bogus"], "--bogus"),
    "zero-commitment": (
        ["ledger", "record", "--key-id", KEY_1, "--commitment", "00" * 32, "--vehicle", "car-1"],
        "the key commitment is zero",
    ),
    "ttl-zero": (
        ["ledger", "record", "--key-id", KEY_1, "--commitment", COMMIT_1, "--vehicle", "car-1", "--ttl", "0"],
        "--ttl must be positive",
    ),
    "qber-above-one": (
        [
            "ledger",
            "record",
            "--key-id",
            KEY_1,
            "--commitment",
            COMMIT_1,
            "--vehicle",
            "car-1",
            "--qber",
            "1.5",
        ],
        "--qber must lie in [0, 1]",
    ),
    "revoke-both": (
        ["ledger", "revoke", "--key-id", KEY_1, "--vehicle", "car-1", "--reason", "leak"],
        "exactly one of --key-id and --vehicle",
    ),
    "revoke-neither": (["ledger", "revoke", "--reason", "leak"], "exactly one of --key-id and --vehicle"),
    "vehicle-32-ascii-bytes": (["ledger", "register", "--vehicle", "v" * 32], "longer than 31 bytes"),
    "vehicle-32-utf8-bytes": (["ledger", "register", "--vehicle", "ü" * 16], "longer than 31 bytes"),
    "vehicle-bad-hex": (["ledger", "register", "--vehicle", "0xzz"], "0x must be followed by 64 hex digits"),
    "vehicle-hex-not-hex": (["ledger", "register", "--vehicle", "0x" + "z" * 64], "vehicle id"),
}


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_exits_2_with_one_error_line(home, case):
    args, fragment = BAD_INPUT[case]
    port = free_port()  # nothing listens here
    result = run_cli(home, *(a.format(port=port) for a in args))
    assert_one_line_error(result, fragment)


def _deploy_embedded() -> None:
    """A deployment on the persistent embedded chain, made in-process (faster than the CLI)."""
    with connect("embedded") as chain:
        client, _ = deploy_ledger(chain)
        client.register_vehicle("car-1")


def test_ttl_overflowing_uint64_is_a_one_line_error(home):
    _deploy_embedded()
    args = ["ledger", "record", "--key-id", KEY_1, "--commitment", COMMIT_1, "--vehicle", "car-1"]
    assert_one_line_error(run_cli(home, *args, "--ttl", str(2**64)), "uint64")


def test_torn_journal_line_is_dropped_and_earlier_work_kept(home):
    """A crash mid-append leaves a partial last line: it is dropped, everything before survives."""
    _deploy_embedded()
    assert run_cli(home, "ledger", "register", "--vehicle", "car-7").returncode == 0
    journal = home / ".qkdiov" / "embedded" / "journal.jsonl"
    intact = journal.read_text()
    with journal.open("a") as fh:
        fh.write('{"ts": 17000')  # a write cut short
    stats = ok_json(run_cli(home, "ledger", "stats", "--json"))
    assert stats["vehicles"] == 2  # car-1 from _deploy_embedded, car-7 here
    assert journal.read_text() == intact


def test_corrupt_journal_is_a_one_line_error(home):
    journal = home / ".qkdiov" / "embedded" / "journal.jsonl"
    journal.parent.mkdir(parents=True)
    journal.write_text('{"genesis_timestamp": 1700000000}\n{"ts": 17000\n{"ts": 1}\n')
    assert_one_line_error(run_cli(home, "ledger", "stats"), "journal", "corrupt")


def _fill_the_disk_under(path: Path, monkeypatch: pytest.MonkeyPatch, where: str, after: int = 0) -> None:
    """ENOSPC on ``path`` only, once ``after`` appends to it have gone through: from fsync,
    or after a short write that left a torn line."""
    real_write, real_fsync = os.write, os.fsync
    calls = 0

    def full(*_: object) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def ours(fd: int) -> bool:
        nonlocal calls
        if not path.exists() or os.fstat(fd).st_ino != path.stat().st_ino:
            return False
        calls += 1
        return calls > after

    def write(fd: int, data: Any) -> int:
        if not ours(fd):
            return real_write(fd, data)
        monkeypatch.setattr(os, "write", full)  # the rest of the line finds no room
        return real_write(fd, bytes(data[:9]))

    if where == "fsync":
        monkeypatch.setattr(os, "fsync", lambda fd: full() if ours(fd) else real_fsync(fd))
    else:
        monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("command", ["ledger register --vehicle car-7", "deploy"])
@pytest.mark.parametrize("where", ["fsync", "short-write"])
def test_a_full_disk_under_the_journal_is_a_one_line_error_and_loses_nothing(
    home, monkeypatch, capsys, where, command
):
    _deploy_embedded()
    journal = home / ".qkdiov" / "embedded" / "journal.jsonl"
    before = journal.read_bytes()
    with monkeypatch.context() as patch:
        _fill_the_disk_under(journal, patch, where)
        with pytest.raises(SystemExit) as info:
            main(command.split())
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == ""
    assert err.splitlines() == [
        f"error: cannot append to the embedded chain's journal {journal}: No space left on device "
        "(the block just mined is not kept; every one before it is)"
    ]
    assert journal.read_bytes() == before  # no torn line left to bury under the next block
    with connect("embedded") as chain:
        ledger = load_client(chain)
        assert not ledger.vehicle("car-7").registered and ledger.vehicle("car-1").registered
        ledger.register_vehicle("car-7")  # the next block replays after the earlier ones
    with connect("embedded") as chain:
        assert load_client(chain).vehicle("car-7").registered


def test_no_block_is_mined_after_a_failed_journal_append(monkeypatch):
    """A block journaled after the one that was lost would not replay: the chain refuses it."""
    with connect("embedded") as chain:
        ledger, _ = deploy_ledger(chain)
        journal = embedded_journal_path()
        with monkeypatch.context() as patch:
            _fill_the_disk_under(journal, patch, "fsync")
            with pytest.raises(JournalError, match="No space left on device"):
                ledger.register_vehicle("car-1")
        head, before = chain.w3.eth.block_number, journal.read_bytes()
        with pytest.raises(JournalError, match="cannot append to the embedded chain's journal"):
            ledger.register_vehicle("car-2")
        with pytest.raises(JournalError):
            chain.advance_time(10)
        assert chain.w3.eth.block_number == head and journal.read_bytes() == before


def _records_file(directory: Path) -> Path:
    records = directory / "records.jsonl"
    records.write_text(json.dumps({"key_id": KEY_1, "commitment": COMMIT_1, "vehicle": "car-1"}) + "\n")
    return records


UNWRITABLE_PROOFS = {
    "under-a-regular-file": "{regular}/proofs.jsonl",
    "under-proc": "/proc/qkdiov-no-such-dir/proofs.jsonl",
    "under-sys": "/sys/proofs.jsonl",
}


@pytest.mark.parametrize("case", UNWRITABLE_PROOFS, ids=list(UNWRITABLE_PROOFS))
def test_anchor_refuses_an_unwritable_proofs_path_before_sending(home, tmp_path, case):
    _deploy_embedded()
    journal = home / ".qkdiov" / "embedded" / "journal.jsonl"
    before = journal.read_text()
    regular = tmp_path / "regular"
    regular.write_text("")
    target = UNWRITABLE_PROOFS[case].format(regular=regular)
    result = run_cli(home, "ledger", "anchor", "--records", str(_records_file(tmp_path)), "--proofs", target)
    line = assert_one_line_error(result, f"cannot write proofs to {target}: ")
    if case == "under-a-regular-file":
        assert line.endswith(f"{regular} is not a directory")
    assert journal.read_text() == before  # no transaction was sent


REFUSED_RECORDS = {
    "zero-commitment": ({"commitment": "00" * 32}, "records.jsonl:2: the key commitment is zero"),
    "unregistered-vehicle": ({"vehicle": "car-404"}, "records.jsonl: vehicle car-404 is not registered"),
}


@pytest.mark.parametrize("case", REFUSED_RECORDS, ids=list(REFUSED_RECORDS))
def test_anchor_refuses_what_record_refuses_before_sending(home, tmp_path, case):
    """A batched record never meets recordSession's checks on chain, so anchor makes them first."""
    _deploy_embedded()
    journal = home / ".qkdiov" / "embedded" / "journal.jsonl"
    before = journal.read_text()
    changes, fragment = REFUSED_RECORDS[case]
    good = {"key_id": KEY_1, "commitment": COMMIT_1, "vehicle": "car-1"}
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps(good) + "\n" + json.dumps({**good, "key_id": KEY_2, **changes}) + "\n")
    target = tmp_path / "proofs.jsonl"
    result = run_cli(home, "ledger", "anchor", "--records", str(records), "--proofs", str(target))
    assert_one_line_error(result, fragment)
    assert journal.read_text() == before  # no batch was anchored
    assert not target.exists()


@pytest.mark.parametrize("where", ["fsync", "short-write"])
def test_a_full_disk_under_the_proofs_file_is_a_one_line_error_and_keeps_earlier_proofs(
    home, tmp_path, monkeypatch, capsys, where
):
    _deploy_embedded()
    keys = [str(uuid.UUID(int=n + 1)) for n in range(3)]
    records = tmp_path / "records.jsonl"
    records.write_text(
        "".join(json.dumps({"key_id": k, "commitment": COMMIT_1, "vehicle": "car-1"}) + "\n" for k in keys)
    )
    target = tmp_path / "proofs.jsonl"
    with monkeypatch.context() as patch:
        _fill_the_disk_under(target, patch, where, after=1)
        with pytest.raises(SystemExit) as info:
            main(
                ["ledger", "anchor", "--records", str(records), "--proofs", str(target), "--batch-size", "1"]
            )
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"error: cannot write proofs to {target}: No space left on device (batch 0x")
    assert line.endswith(
        "of 1 keys is anchored but its proofs are not written; the file keeps the 1 proofs before it)"
    )
    (kept,) = target.read_text().splitlines()  # the first batch's proof, whole; no torn line after it
    assert json.loads(kept)["key_id"] == keys[0]


def test_failed_anchor_leaves_no_empty_proofs_file(home, tmp_path):
    target = tmp_path / "out" / "proofs.jsonl"
    result = run_cli(
        home, "ledger", "anchor", "--records", str(_records_file(tmp_path)), "--proofs", str(target)
    )
    assert_one_line_error(result, "no deployment for chain")
    assert not target.exists()


def _proof_document(**changes: Any) -> dict[str, Any]:
    """A well-formed proof document for KEY_1 (under a root never anchored), then ``changes``."""
    document = {
        "key_id": KEY_1,
        "commitment": COMMIT_1,
        "vehicle": "car-1",
        "qber": 0.0,
        "bits": 256,
        "protocol": "bb84",
        "created_at": 1_700_000_000,
        "expires_at": 1_700_003_600,
        "root": "ab" * 32,
        "proof": ["cd" * 32, "ef" * 32],
    }
    return {**document, **changes}


BAD_PROOFS = {
    "short-proof-element": ([_proof_document(proof=["ab" * 5, "ef" * 32])], "proof element 0 is 5 bytes"),
    "short-root": ([_proof_document(root="ab")], "root is 1 bytes"),
    "proof-not-a-list": ([_proof_document(proof={"cd" * 32: 1})], "proof must be a list"),
    "line-not-an-object": ([[1], _proof_document()], "proofs.jsonl:1 is not a JSON object"),
}


@pytest.mark.parametrize("case", BAD_PROOFS, ids=list(BAD_PROOFS))
def test_prove_refuses_a_malformed_proof_document(home, tmp_path, case):
    _deploy_embedded()
    lines, fragment = BAD_PROOFS[case]
    proofs = tmp_path / "proofs.jsonl"
    proofs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = run_cli(home, "ledger", "prove", "--proofs", str(proofs), "--key-id", KEY_1)
    assert_one_line_error(result, "not a key proof document", fragment)


DAMAGED_PROOFS = {
    "not-json-after-the-key": ("not json", "proofs.jsonl:2: not JSON"),
    "malformed-after-the-key": (
        json.dumps(_proof_document(key_id=KEY_2, root="ab")),
        "proofs.jsonl:2: not a key proof document (root is 1 bytes, not 32)",
    ),
    "key-twice": (
        json.dumps(_proof_document(root="cd" * 32)),
        "proofs.jsonl:2: key " + KEY_1 + " appears twice",
    ),
}


@pytest.mark.parametrize("case", DAMAGED_PROOFS, ids=list(DAMAGED_PROOFS))
def test_prove_checks_the_whole_proofs_file(home, tmp_path, case):
    """A damaged line or a second proof after the wanted key is refused, not read past."""
    _deploy_embedded()
    later, fragment = DAMAGED_PROOFS[case]
    proofs = tmp_path / "proofs.jsonl"
    proofs.write_text(json.dumps(_proof_document()) + "\n" + later + "\n")
    result = run_cli(home, "ledger", "prove", "--proofs", str(proofs), "--key-id", KEY_1)
    assert_one_line_error(result, fragment)


NO_BATCH_HOLDS = "is unknown: no anchored batch holds it"
UNKNOWN_BATCHED = {
    "no-proof-in-the-file": (KEY_2, f"key {KEY_2} {NO_BATCH_HOLDS} (no proof for it in "),
    "proof-under-no-anchored-root": (KEY_1, f"key {KEY_1} {NO_BATCH_HOLDS} (its proof in "),
    "recorded-individually": (KEY_3, f"key {KEY_3} is recorded individually: revoke it without --batched"),
}


@pytest.mark.parametrize("case", UNKNOWN_BATCHED, ids=list(UNKNOWN_BATCHED))
def test_revoke_batched_refuses_a_key_no_anchored_batch_holds(home, tmp_path, case):
    """The contract revokes any batched key id; the key's proof shows it was anchored."""
    _deploy_embedded()
    with connect("embedded") as chain:
        record_key(load_client(chain), "car-1", key_id=uuid.UUID(KEY_3))
    journal = home / ".qkdiov" / "embedded" / "journal.jsonl"
    before = journal.read_text()
    proofs = tmp_path / "proofs.jsonl"
    proofs.write_text(json.dumps(_proof_document()) + "\n")  # KEY_1 under a root never anchored
    key, fragment = UNKNOWN_BATCHED[case]
    args = ["ledger", "revoke", "--batched", "--key-id", key, "--reason", "leaked"]
    assert_one_line_error(run_cli(home, *args, "--proofs", str(proofs)), fragment)
    assert journal.read_text() == before  # nothing was revoked
    assert_one_line_error(run_cli(home, *args), "--batched needs --proofs FILE")


@pytest.mark.parametrize("command", ["deploy", "ledger stats"])
def test_unusable_qkdiov_home_is_a_one_line_error(tmp_path, command):
    not_a_dir = tmp_path / "home-file"
    not_a_dir.write_text("")
    result = run_cli(not_a_dir, *command.split())
    assert_one_line_error(result, f"QKDIOV_HOME={not_a_dir} is unusable", f"{not_a_dir} is not a directory")
    under_proc = Path("/proc/qkdiov-no-such-dir")
    assert_one_line_error(run_cli(under_proc, *command.split()), f"QKDIOV_HOME={under_proc} is unusable")


def test_deployment_record_with_a_bad_address_is_a_one_line_error(home):
    _deploy_embedded()
    (path,) = (home / "deployments").glob("*.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), "address": "0x123"}))
    assert_one_line_error(run_cli(home, "ledger", "stats"), "is not a deployment record", "'0x123'")


def test_no_command_prints_help_and_succeeds(home):
    result = run_cli(home)
    assert "Traceback" not in result.stderr
    assert result.returncode == 0
    assert result.stderr == ""
    assert "Usage: qkdiov" in result.stdout


# -------------------------------------------------------------------- embedded chain, across processes


def test_embedded_chain_persists_across_processes(home):
    deployed = ok_json(run_cli(home, "deploy", "--json"))
    assert deployed["chain"] == "embedded"
    assert Path(deployed["record"]).is_relative_to(home)
    registered = run_cli(home, "ledger", "register", "--vehicle", "car-42")
    assert registered.returncode == 0, registered.stderr
    recorded = run_cli(
        home, "ledger", "record", "--key-id", KEY_1, "--commitment", COMMIT_1, "--vehicle", "car-42"
    )
    assert recorded.returncode == 0, recorded.stderr
    verified = ok_json(
        run_cli(home, "ledger", "verify", "--key-id", KEY_1, "--commitment", COMMIT_1, "--json")
    )
    assert verified == {"key_id": KEY_1, "status": "valid", "commitment_matches": True}


# ---------------------------------------------------------------------------- --json output (in-process)


def invoke_json(runner: CliRunner, *args: str) -> dict[str, Any]:
    result = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return one_json_object(result.stdout)


def test_json_output_is_one_object(home):
    runner = CliRunner()
    deployed = invoke_json(runner, "deploy")
    assert deployed["chain"] == "embedded" and deployed["address"].startswith("0x")
    assert invoke_json(runner, "ledger", "register", "--vehicle", "car-1")["registered"] is True
    recorded = invoke_json(
        runner, "ledger", "record", "--key-id", KEY_1, "--commitment", COMMIT_1, "--vehicle", "car-1"
    )
    assert recorded["recorded"] is True and recorded["key_id"] == KEY_1
    invoke_json(runner, "ledger", "record", "--key-id", KEY_2, "--commitment", COMMIT_2, "--vehicle", "car-1")
    verified = invoke_json(runner, "ledger", "verify", "--key-id", KEY_1, "--commitment", COMMIT_2)
    assert verified == {"key_id": KEY_1, "status": "valid", "commitment_matches": False}
    shown = invoke_json(runner, "ledger", "show", "--key-id", KEY_1)
    assert shown["status"] == "valid"
    assert shown["commitment"] == "0x" + COMMIT_1
    assert shown["vehicle"] == "car-1"
    revoked = invoke_json(runner, "ledger", "revoke", "--key-id", KEY_1, "--reason", "leaked")
    assert revoked["revoked"] is True and revoked["key_id"] == KEY_1
    revoked_vehicle = invoke_json(runner, "ledger", "revoke", "--vehicle", "car-1", "--reason", "stolen")
    assert revoked_vehicle["epoch"] == 1
    assert invoke_json(runner, "ledger", "show", "--key-id", KEY_2)["status"] == "revoked"
    stats = invoke_json(runner, "ledger", "stats")
    assert stats["address"] == deployed["address"]
    counts = {k: stats[k] for k in ("vehicles", "sessions", "key_revocations", "vehicle_revocations")}
    assert counts == {"vehicles": 1, "sessions": 2, "key_revocations": 1, "vehicle_revocations": 1}


# ---------------------------------------------------------------------------- a real anvil node

needs_anvil = pytest.mark.skipif(not ANVIL.exists(), reason=f"anvil is not installed ({ANVIL}): run `npm ci`")


@dataclass
class Node:
    port: int
    home: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(self.home, *args, "--chain", self.url)


def _rpc_chain_id(port: int) -> int | None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}",
        data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(json.loads(response.read())["result"], 16)
    except (OSError, ValueError, KeyError):
        return None


def _port_is_free(port: int) -> bool:
    """Nothing listens on the port: a connect is refused and a listener could bind it."""
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _default_sigint() -> None:
    """In the child: Ctrl-C semantics even if this pytest was started with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def anvil_node(tmp_path_factory) -> Iterator[Node]:
    """`qkdiov node --engine anvil --port P` in the background; stopped with SIGINT at the end."""
    if not ANVIL.exists():
        pytest.skip(f"anvil is not installed ({ANVIL}): run `npm ci`")
    home = tmp_path_factory.mktemp("anvil-home")
    port = free_port()
    log = (home / "node-command.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "vehicles.cli", "node", "--engine", "anvil", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=cli_env(home),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C on pytest does not reach it; we stop it ourselves
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 60
        while _rpc_chain_id(port) != 31337:
            if process.poll() is not None:
                pytest.fail(f"qkdiov node exited with {process.returncode}: {log.name}")
            if time.monotonic() > deadline:
                pytest.fail(f"anvil did not answer on port {port} within 60 s")
            time.sleep(0.1)
        # the node command announces the node so that `--chain anvil` attaches to it
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("QKDIOV_HOME", str(home))
            announced = node_file("anvil")
        while not announced.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        anvil_pid = int(json.loads(announced.read_text())["pid"])
        yield Node(port, home, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            returncode = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            log.close()
            pytest.fail("qkdiov node did not exit within 10 s of SIGINT")
        log.close()
    assert returncode == 0, (home / "node-command.log").read_text()
    assert not announced.exists(), "the node file should be removed on stop"
    gone_by = time.monotonic() + 5
    while _pid_alive(anvil_pid) and time.monotonic() < gone_by:
        time.sleep(0.05)
    assert not _pid_alive(anvil_pid), "anvil outlived qkdiov node"
    assert _port_is_free(port), f"port {port} still in use after the node stopped"


@pytest.fixture(scope="module")
def anvil_deployment(anvil_node: Node) -> dict[str, Any]:
    return ok_json(anvil_node.cli("deploy", "--json"))


@pytest.mark.anvil
@needs_anvil
def test_anvil_end_to_end(anvil_node: Node, anvil_deployment: dict[str, Any]):
    node = anvil_node
    admin = dev_accounts(1)[0].address
    assert anvil_deployment["chain_id"] == 31337
    assert anvil_deployment["deployer"] == admin

    assert node.cli("ledger", "register", "--vehicle", "car-7").returncode == 0
    recorded = ok_json(
        node.cli(
            "ledger", "record", "--key-id", KEY_1, "--commitment", COMMIT_1, "--vehicle", "car-7", "--json"
        )
    )
    assert recorded["key_manager"] == admin
    verified = ok_json(node.cli("ledger", "verify", "--key-id", KEY_1, "--commitment", COMMIT_1, "--json"))
    assert verified == {"key_id": KEY_1, "status": "valid", "commitment_matches": True}

    revoked = ok_json(node.cli("ledger", "revoke", "--vehicle", "car-7", "--reason", "stolen", "--json"))
    assert revoked["epoch"] == 1
    verified = ok_json(node.cli("ledger", "verify", "--key-id", KEY_1, "--json"))
    assert verified["status"] == "revoked"

    outsider = dev_accounts()[5].address
    record_2 = ["ledger", "record", "--key-id", KEY_2, "--commitment", COMMIT_2, "--vehicle", "car-7"]
    refused = node.cli(*record_2, "--from", outsider)
    line = assert_one_line_error(refused, "AccessControlUnauthorizedAccount", "key-manager")
    assert outsider in line

    granted = ok_json(node.cli("ledger", "grant", "--role", "key-manager", "--account", outsider, "--json"))
    assert granted["granted"] is True
    recorded = ok_json(node.cli(*record_2, "--from", outsider, "--json"))
    assert recorded["key_manager"] == outsider
    verified = ok_json(node.cli("ledger", "verify", "--key-id", KEY_2, "--commitment", COMMIT_2, "--json"))
    assert verified == {"key_id": KEY_2, "status": "valid", "commitment_matches": True}  # the new epoch's key


@pytest.mark.anvil
@needs_anvil
def test_anvil_stats_over_websocket(anvil_node: Node, anvil_deployment: dict[str, Any]):
    over_ws = ok_json(
        run_cli(anvil_node.home, "ledger", "stats", "--json", "--chain", f"ws://127.0.0.1:{anvil_node.port}")
    )
    assert over_ws["address"] == anvil_deployment["address"]
    assert over_ws["chain_id"] == 31337
    # `--chain anvil` attaches to the announced node rather than starting another one
    attached = ok_json(run_cli(anvil_node.home, "ledger", "stats", "--json", "--chain", "anvil"))
    assert attached["address"] == anvil_deployment["address"]
    assert attached["block"] >= over_ws["block"]
