"""The Besu QBFT network description in networks/besu-qbft/ (no Besu needed).

Everything here is derived again from first principles (eth_keys, rlp, the dev mnemonic of
ledger/chain.py) and compared with what generate.py wrote, so a wrong encoding, a key that
does not match its enode, or a stale committed file fails.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import rlp
from eth_keys import keys
from eth_utils import to_checksum_address

from ledger.chain import dev_accounts

NETWORK = Path(__file__).resolve().parents[1] / "networks" / "besu-qbft"
SCRIPT = NETWORK / "generate.py"
ENODE = re.compile(r"^enode://([0-9a-f]{128})@127\.0\.0\.1:(\d+)$")
CANCUN_AT_GENESIS = ("berlinBlock", "londonBlock", "shanghaiTime", "cancunTime")


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("besu_qbft_generate", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def node_keys(network: Path) -> dict[str, keys.PrivateKey]:
    """node<i> -> its private key, read the way Besu reads it (one line of hex)."""
    found = {}
    for key_file in sorted(network.glob("node*/key")):
        lines = key_file.read_text().splitlines()
        assert len(lines) == 1, f"{key_file}: Besu wants exactly one line"
        assert re.fullmatch(r"0x[0-9a-f]{64}", lines[0]), f"{key_file}: not 0x + 64 hex digits"
        found[key_file.parent.name] = keys.PrivateKey(bytes.fromhex(lines[0][2:]))
    return dict(sorted(found.items(), key=lambda item: int(item[0].removeprefix("node"))))


def decode_extra_data(genesis: dict) -> list:
    return rlp.decode(bytes.fromhex(genesis["extraData"].removeprefix("0x")))


def check_network(network: Path, *, validators: int, chain_id: int) -> None:
    """Every file of a generated network agrees with the node keys it holds."""
    keys_by_node = node_keys(network)
    assert list(keys_by_node) == [f"node{i}" for i in range(1, validators + 1)]
    genesis = json.loads((network / "genesis.json").read_text())

    # extraData = RLP([32-byte vanity, [validators], no vote, round 0, no seals])
    vanity, listed, vote, round_, seals = decode_extra_data(genesis)
    assert vanity == bytes(32)
    assert vote == [] and round_ == b"" and seals == []
    derived = [bytes.fromhex(k.public_key.to_address()[2:]) for k in keys_by_node.values()]
    assert listed == derived, "extraData must list node1..nodeN's addresses, in that order"
    assert listed == sorted(listed), "Besu's docs ask for the genesis validators in ascending order"

    # key.pub, static-nodes.json and the nodes allowlist all carry the same enodes.
    enodes = []
    for i, (name, key) in enumerate(keys_by_node.items()):
        public = key.public_key.to_bytes().hex()
        assert (network / name / "key.pub").read_text().strip() == "0x" + public
        enodes.append(f"enode://{public}@127.0.0.1:{30303 + i}")
    permissions = tomllib.loads((network / "permissions_config.toml").read_text())
    assert permissions["nodes-allowlist"] == enodes
    assert json.loads((network / "static-nodes.json").read_text()) == enodes
    assert all(ENODE.match(e) for e in enodes)

    # Each container uses its own key and the ports its enode advertises.
    compose = (network / "docker-compose.yml").read_text()
    for i, name in enumerate(keys_by_node):
        block = compose.split(f"\n  {name}:\n", 1)[1].split("\n  node", 1)[0]
        assert f'"--node-private-key-file=/config/{name}/key"' in block
        assert f'"--p2p-port={30303 + i}"' in block
        assert f'"--rpc-http-port={8545 + i}"' in block
    run_node = (network / "run-node.sh").read_text()
    for i in range(validators):
        assert f"  {i + 1}) p2p={30303 + i}; rpc={8545 + i} ;;" in run_node

    assert genesis["config"]["chainId"] == chain_id


# ---------------------------------------------------------------------------- generator


def test_generated_extra_data_lists_the_node_key_addresses_in_order(tmp_path: Path) -> None:
    done = run_generator("--random", "--out", str(tmp_path), "--validators", "5", "--chain-id", "4242")
    assert done.returncode == 0, done.stderr
    check_network(tmp_path, validators=5, chain_id=4242)
    assert (tmp_path / "node1" / "key").stat().st_mode & 0o077 == 0, "random keys are private to the owner"


def test_extra_data_matches_the_besu_documentation_example() -> None:
    """The exact example of Besu's QBFT docs ("Extra data", generated with `besu rlp encode`)."""
    gen = load_generator()
    validators = [
        "0x4592c8e45706cc08b8f44b11e43cba0cfc5892cb",
        "0x06e23768a0f59cf365e18c2e0c89e151bcdedc70",
        "0xc5327f96ee02d7bcbc1bf1236b8c15148971e1de",
        "0xab5e7f4061c605820d3744227eed91ff8e2c8908",
    ]
    assert gen.qbft_extra_data(validators) == (
        "0xf87aa00000000000000000000000000000000000000000000000000000000000000000f854944592c8e45706"
        "cc08b8f44b11e43cba0cfc5892cb9406e23768a0f59cf365e18c2e0c89e151bcdedc7094c5327f96ee02d7bc"
        "bc1bf1236b8c15148971e1de94ab5e7f4061c605820d3744227eed91ff8e2c8908c080c0"
    )
    # Contract validator selection: no validators at all.
    assert (
        gen.qbft_extra_data([])
        == "0xe5a00000000000000000000000000000000000000000000000000000000000000000c0c080c0"
    )


def test_dev_seeded_generation_is_reproducible(tmp_path: Path) -> None:
    for out in (tmp_path / "a", tmp_path / "b"):
        assert run_generator("--seed-from-dev-keys", "--out", str(out)).returncode == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_random_keys_differ_between_runs(tmp_path: Path) -> None:
    for out in (tmp_path / "a", tmp_path / "b"):
        assert run_generator("--random", "--out", str(out)).returncode == 0
    assert (tmp_path / "a" / "genesis.json").read_text() != (tmp_path / "b" / "genesis.json").read_text()


def test_a_smaller_network_replaces_the_node_directories_of_a_larger_one(tmp_path: Path) -> None:
    assert run_generator("--random", "--out", str(tmp_path), "--validators", "6").returncode == 0
    assert run_generator("--random", "--out", str(tmp_path), "--validators", "4").returncode == 0
    check_network(tmp_path, validators=4, chain_id=1337)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--random", "--validators", "0"], "--validators must be between 1 and"),
        (["--random", "--validators", "-3"], "--validators must be between 1 and"),
        (["--random", "--chain-id", "0"], "--chain-id must be a positive integer"),
        (["--random", "--block-period", "0"], "--block-period must be at least 1 second"),
        (["--random", "--accounts", "11"], "--accounts must be between 1 and 10"),
        (["--validators", "4"], "one of the arguments --seed-from-dev-keys --random is required"),
        (["--random", "--seed-from-dev-keys"], "not allowed with argument"),
        (["--random", "--validators", "four"], "invalid int value"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_status_2(tmp_path: Path, args: list[str], message: str) -> None:
    done = run_generator("--out", str(tmp_path / "net"), *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "net").exists(), "nothing is written on bad arguments"


# ---------------------------------------------------------------------------- the committed network


def test_committed_network_is_consistent_with_its_node_keys() -> None:
    check_network(NETWORK, validators=4, chain_id=1337)


def test_committed_network_is_what_the_generator_writes(tmp_path: Path) -> None:
    """The committed files are the --seed-from-dev-keys output: nothing was edited by hand."""
    assert run_generator("--seed-from-dev-keys", "--out", str(tmp_path)).returncode == 0
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for rel in generated:
        assert (NETWORK / rel).read_bytes() == (tmp_path / rel).read_bytes(), f"{rel} differs: regenerate"


def test_committed_genesis_funds_and_allowlists_the_dev_mnemonic_accounts() -> None:
    expected = [acct.address for acct in dev_accounts(10)]  # qkdiov's own derivation
    genesis = json.loads((NETWORK / "genesis.json").read_text())
    funded = [to_checksum_address("0x" + a.removeprefix("0x")) for a in genesis["alloc"]]
    assert funded == expected
    assert all(int(entry["balance"], 16) >= 10**21 for entry in genesis["alloc"].values())
    permissions = tomllib.loads((NETWORK / "permissions_config.toml").read_text())
    assert [to_checksum_address(a) for a in permissions["accounts-allowlist"]] == expected
    validators = {to_checksum_address(a) for a in decode_extra_data(genesis)[1]}
    assert not validators & set(expected), "no validator node key is also a funded account key"
    assert genesis["config"]["chainId"] == 1337


def test_committed_genesis_enables_the_forks_of_the_cancun_evm_target() -> None:
    from ledger.compiler import EVM_VERSION

    assert EVM_VERSION == "cancun"  # the contract's bytecode target; this test is about that fork
    genesis = json.loads((NETWORK / "genesis.json").read_text())
    config = genesis["config"]
    for fork in CANCUN_AT_GENESIS:
        assert config.get(fork) == 0, f"{fork} must be active from genesis"
    assert int(genesis["timestamp"], 16) >= config["cancunTime"]
    assert config["zeroBaseFee"] is True
    assert config["qbft"] == {"blockperiodseconds": 2, "epochlength": 30000, "requesttimeoutseconds": 4}
    assert genesis["difficulty"] == "0x1"
    assert genesis["mixHash"] == "0x63746963616c2062797a616e74696e65206661756c7420746f6c6572616e6365"
    assert int(genesis["gasLimit"], 16) >= 30_000_000


def test_committed_readme_lists_the_committed_validators_and_accounts() -> None:
    readme = (NETWORK / "README.md").read_text()
    for name, key in node_keys(NETWORK).items():
        row = next(line for line in readme.splitlines() if line.strip().startswith(f"| {name} |"))
        assert key.public_key.to_checksum_address() in row, f"README row for {name} is stale"
    for acct in dev_accounts(10):
        assert acct.address in readme
