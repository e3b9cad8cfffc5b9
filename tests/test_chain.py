"""Chain backends, the compile cache and deployment records."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from ledger import compiler
from ledger.chain import ManagedNode, connect, embedded_journal_path, free_port, reset_embedded
from ledger.deployment import Deployment, deploy, load_client
from ledger.errors import BadInput, ChainUnavailable, DeploymentMissing, LedgerError
from ledger.paths import PROJECT_ROOT, node_binary

needs_anvil = pytest.mark.skipif(not node_binary("anvil").exists(), reason="anvil not installed (npm ci)")
needs_hardhat = pytest.mark.skipif(
    not node_binary("hardhat").exists(), reason="hardhat not installed (npm ci)"
)


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_embedded_journal_replays_state_and_clock():
    with connect("embedded") as chain:
        ledger, record = deploy(chain)
        ledger.register_vehicle("car-1")
        now = chain.latest_timestamp()
        kid = uuid.uuid4()
        ledger.record_session(
            kid, b"\x01" * 32, "car-1", qber=0.01, final_key_bits=128, created_at=now, expires_at=now + 100
        )
        chain.advance_time(50)
        head = chain.w3.eth.get_block("latest")
    with connect("embedded") as chain:
        replayed = chain.w3.eth.get_block("latest")
        assert replayed["number"] == head["number"]
        assert replayed["timestamp"] == head["timestamp"]
        assert replayed["stateRoot"] == head["stateRoot"]  # the very same state
        ledger = load_client(chain)
        assert ledger.address == record.address
        assert ledger.key_status(kid).status == "valid"
        chain.advance_time(60)
    with connect("embedded") as chain:
        assert load_client(chain).key_status(kid).status == "expired"
    assert reset_embedded()
    assert not embedded_journal_path().exists()


def test_throwaway_embedded_chain_writes_nothing():
    with connect("embedded", persist=False) as chain:
        deploy(chain, save=False)
    assert not embedded_journal_path().exists()


def test_corrupt_journal_is_reported():
    path = embedded_journal_path()
    path.parent.mkdir(parents=True)
    path.write_text('{"ts": 1}\n')
    with pytest.raises(ChainUnavailable, match="not an embedded-chain journal"):
        connect("embedded")


@pytest.mark.parametrize("kind", ["regular-file", "under-proc"])
def test_an_unusable_qkdiov_home_is_a_one_line_error_naming_it(tmp_path, monkeypatch, kind):
    if kind == "regular-file":
        home = tmp_path / "home-file"
        home.write_text("")
        reason = f"{home} is not a directory"
    else:
        home, reason = Path("/proc/qkdiov-no-such-dir"), ""
    monkeypatch.setenv("QKDIOV_HOME", str(home))
    with pytest.raises(BadInput, match=re.escape(f"QKDIOV_HOME={home} is unusable: cannot write")) as info:
        connect("embedded")
    assert reason in str(info.value)
    # a chain that keeps no journal: the record's directory is checked before the contract is sent
    with connect("embedded", persist=False) as chain:
        with pytest.raises(BadInput, match=re.escape(f"QKDIOV_HOME={home} is unusable: cannot create")):
            deploy(chain)
        assert chain.w3.eth.block_number == 0


@pytest.mark.parametrize("spec", ["mainnet", "ftp://x", ""])
def test_unknown_chain_spec(spec):
    with pytest.raises(BadInput):
        connect(spec)


def test_unreachable_url():
    port = free_port()
    with pytest.raises(ChainUnavailable, match="no Ethereum JSON-RPC node"):
        connect(f"http://127.0.0.1:{port}")


def test_missing_and_stale_deployment_records():
    with connect("embedded", persist=False) as chain:
        with pytest.raises(DeploymentMissing, match="qkdiov deploy"):
            load_client(chain)
        _, record = deploy(chain)
    # a new throw-away chain has the same chain id but no contract at the recorded address
    with connect("embedded", persist=False) as chain:
        assert Deployment.load(chain.chain_id) == record
        with pytest.raises(DeploymentMissing, match="no contract at"):
            load_client(chain)


def _damage_address(record: Deployment, address: object) -> None:
    path = Deployment.path(record.chain_id)
    path.write_text(json.dumps({**json.loads(path.read_text()), "address": address}))


@pytest.mark.parametrize("address", ["0x123", 5, None, "0x5FbDB2315678afecb367f032d93F642f64180aA3"])
def test_a_deployment_record_with_a_bad_address_is_reported(address):
    """Too short, not a string, or one character's case changed (the checksum no longer holds)."""
    with connect("embedded", persist=False) as chain:
        _, record = deploy(chain)
        _damage_address(record, address)
        with pytest.raises(
            DeploymentMissing, match=r"is not a deployment record \(address .* is not a valid Ethereum"
        ):
            load_client(chain)


def test_an_unreadable_deployment_record_is_reported():
    """A directory where the record should be (or a file without read permission) is one line."""
    with connect("embedded", persist=False) as chain:
        deploy(chain)
        path = Deployment.path(chain.chain_id)
        path.unlink()
        path.mkdir()
        with pytest.raises(DeploymentMissing, match=r"cannot read the deployment record .*: Is a directory"):
            load_client(chain)


def test_a_deployment_record_with_a_lowercase_address_still_loads():
    with connect("embedded", persist=False) as chain:
        _, record = deploy(chain)
        _damage_address(record, record.address.lower())
        assert load_client(chain).address == record.address


def test_compile_cache_skips_solc(monkeypatch):
    first = compiler.compile_contracts()

    def no_solc(_input):
        raise AssertionError("solc ran although the sources did not change")

    monkeypatch.setattr(compiler, "_run_solc", no_solc)
    assert compiler.compile_contracts() == first
    assert first["KeyLedger"].bytecode.startswith("0x6080")


def test_signing_accounts_from_env(monkeypatch):
    with connect("embedded", persist=False) as chain:
        with pytest.raises(BadInput, match="not an Ethereum address"):
            chain.account("0x1234")
        with pytest.raises(BadInput, match="no private key"):
            chain.account("0x" + "11" * 20)
    monkeypatch.setenv("QKDIOV_PRIVATE_KEYS", "0xnot-a-key")
    from ledger.chain import accounts_from_env

    with pytest.raises(BadInput, match="QKDIOV_PRIVATE_KEYS"):
        accounts_from_env()
    monkeypatch.setenv("QKDIOV_PRIVATE_KEYS", "0x" + "01" * 32)
    assert accounts_from_env()[0].address == "0x1a642f0E3c3aF545E7AcBD38b07251B3990914F1"


@needs_anvil
def test_managed_anvil_stops_cleanly_and_frees_its_port():
    node = ManagedNode("anvil")
    assert node.process.poll() is None
    node.stop()
    assert node.process.returncode is not None
    assert _port_is_free(node.port)


@needs_anvil
def test_managed_anvil_keeps_state_between_commands():
    with connect("anvil") as chain:
        ledger, _ = deploy(chain)
        ledger.register_vehicle("car-9")
    with connect("anvil") as chain:
        assert load_client(chain).vehicle("car-9").registered


@needs_anvil
def test_transactions_on_a_node_price_in_one_batch_and_refusals_keep_their_error():
    """On an HTTP node ``transact`` asks for gas and fees in one JSON-RPC batch; an
    estimate that reverts must still come back as the contract's custom error."""
    from ledger.errors import TransactionRefused

    with connect("anvil", persist=False) as chain:
        ledger, _ = deploy(chain, save=False)
        posts = []
        ledger.register_vehicle("car-1")  # opens the client's JSON-RPC session
        rpc = ledger._local.rpc
        original = rpc._post
        rpc._post = lambda items, ids: posts.append(len(items)) or original(items, ids)
        result = ledger.register_vehicle("car-2")
        assert result.block_number > 0 and ledger.vehicle("car-2").registered
        assert [e.name for e in result.events] == ["VehicleRegistered"]
        assert posts == [3, 1]  # estimate, latest block and tip; then eth_sendRawTransactionSync
        ledger.nonces._next[ledger.sender.address] = 0  # a stale nonce: the node refuses the send
        with pytest.raises(LedgerError, match="refused the transaction"):
            ledger.register_vehicle("car-4")
        ledger.register_vehicle("car-4")  # the refusal resynced the nonce
        assert ledger.vehicle("car-4").registered
        # A node without eth_sendRawTransactionSync: send and receipt in one batch, then the
        # receipt is polled for if the node answered it before mining.
        ledger._send_sync = False
        posts.clear()
        result = ledger.register_vehicle("car-5")
        assert posts[:2] == [3, 2] and set(posts[2:]) <= {1}
        assert [e.name for e in result.events] == ["VehicleRegistered"] and ledger.vehicle("car-5").registered
        ledger.nonces._next[ledger.sender.address] = 0
        with pytest.raises(LedgerError, match="refused the transaction"):
            ledger.register_vehicle("car-6")
        ledger.register_vehicle("car-6")
        assert ledger.vehicle("car-6").registered
        stranger = ledger.as_sender(chain.accounts[5])
        with pytest.raises(TransactionRefused) as refused:
            stranger.register_vehicle("car-3")
        assert refused.value.error == "AccessControlUnauthorizedAccount"
        assert not ledger.vehicle("car-3").registered


@needs_anvil
def test_websocket_url_reaches_the_same_chain():
    node = ManagedNode("anvil")
    try:
        with connect(node.url) as http_chain:
            _, record = deploy(http_chain)
        with connect(node.url.replace("http://", "ws://")) as ws_chain:
            ledger = load_client(ws_chain)
            assert ledger.address == record.address
            ledger.register_vehicle("car-ws")
            assert ledger.vehicle("car-ws").registered
    finally:
        node.stop()


@needs_hardhat
def test_managed_hardhat_node_runs_the_ledger():
    with connect("hardhat", persist=False) as chain:
        assert chain.chain_id == 31337
        ledger, _ = deploy(chain, save=False)
        ledger.register_vehicle("car-hh")
        assert ledger.vehicle("car-hh").registered


@needs_hardhat
def test_hardhat_compiles_offline_with_solcjs(tmp_path):
    result = subprocess.run(
        [str(node_binary("hardhat")), "compile", "--force"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true",
            "HOME": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stderr
    artifact = PROJECT_ROOT / "build" / "hardhat-artifacts" / "contracts" / "KeyLedger.sol" / "KeyLedger.json"
    abi = json.loads(artifact.read_text())["abi"]
    assert {i["name"] for i in abi if i["type"] == "function"} == {
        i["name"] for i in compiler.artifact("KeyLedger").abi if i["type"] == "function"
    }


def test_role_ids_are_the_keccak_of_the_contract_role_names() -> None:
    from eth_utils import keccak

    from ledger.ids import ROLE_NAMES

    assert ROLE_NAMES["key-manager"] == keccak(text="KEY_MANAGER_ROLE")
    assert ROLE_NAMES["verifier"] == keccak(text="VERIFIER_ROLE")
    assert ROLE_NAMES["admin"] == bytes(32)


def test_local_json_rpc_reopens_a_connection_the_node_closed_while_idle():
    """JSON-RPC to a node on this machine goes through one keep-alive http.client
    connection; a node that drops it between calls (as keep-alive timeouts do) costs a
    new connection, not an error, and no request is sent twice."""
    import http.server
    import threading

    from web3 import Web3

    from ledger.chain import JsonRpc

    seen = {"connections": 0, "requests": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            seen["connections"] += 1

        def do_POST(self) -> None:
            items = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen["requests"] += 1
            answer = [{"jsonrpc": "2.0", "id": item["id"], "result": hex(seen["requests"])} for item in items]
            body = json.dumps(answer)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()  # no "Connection: close": the client believes it may reuse it
            self.wfile.write(body.encode())
            self.close_connection = seen["requests"] % 2 == 0  # every second answer, then drop it

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rpc = JsonRpc(Web3(Web3.HTTPProvider(f"http://127.0.0.1:{server.server_address[1]}")))
        answers = []
        for _ in range(5):
            answers.append(rpc.call("eth_blockNumber", []))
            time.sleep(0.05)  # the drop reaches the client's socket before its next call
        assert answers == ["0x1", "0x2", "0x3", "0x4", "0x5"]
        assert seen == {"connections": 3, "requests": 5}
        rpc.close()
    finally:
        server.shutdown()
        server.server_close()
