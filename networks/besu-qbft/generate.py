#!/usr/bin/env python3
"""Generate a Hyperledger Besu QBFT permissioned network for the QKD-IoV key ledger.

Writes, into one directory that Besu and docker compose read as is:

- ``genesis.json``: QBFT consensus, the validator set in ``extraData``, forks through Cancun
  (the contract is compiled for the ``cancun`` EVM), a zero base fee, and the funded accounts;
- ``node<i>/key`` and ``node<i>/key.pub``: each validator's secp256k1 node key, in the format
  Besu's ``--node-private-key-file`` reads and ``besu operator generate-blockchain-config`` writes;
- ``permissions_config.toml``: the node allowlist (the validators' enode URLs) and the
  account allowlist (the funded accounts);
- ``static-nodes.json``: the same enode URLs, so the nodes find each other without discovery;
- ``docker-compose.yml`` and ``run-node.sh``: the same Besu command line, in a container or
  for a local ``besu`` binary.

Every node runs on 127.0.0.1 with its own ports (P2P 30303+i, JSON-RPC 8545+i), so the
enode URLs are the same whether the nodes run in docker (host networking) or as processes.

``--seed-from-dev-keys`` derives the validator keys from the well-known development
mnemonic, so the output is reproducible byte for byte (this is how the committed network was
made); ``--random`` draws fresh keys from the operating system's CSPRNG.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import rlp
from eth_account import Account
from eth_keys import keys
from eth_keys.constants import SECPK1_N

# The mnemonic of anvil, Hardhat and qkdiov's embedded chain (ledger/chain.py DEV_MNEMONIC):
# the funded accounts are its accounts m/44'/60'/0'/0/i, the ones QKDIOV_MNEMONIC signs with.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
ACCOUNT_PATH = "m/44'/60'/0'/0/{}"
# Dev-seeded validator node keys come from another account branch, so that no node key is
# also a funded account key.
VALIDATOR_PATH = "m/44'/60'/1'/0/{}"
# QKDIOV_MNEMONIC gives qkdiov ten signers (ledger/chain.py DEV_ACCOUNT_COUNT); `qkdiov bench ledger`
# sends from accounts 1..N (--accounts, up to 9), so all ten are funded and allowlisted by default.
MAX_ACCOUNTS = 10
MAX_VALIDATORS = 64  # keeps the P2P (30303+) and RPC (8545+) port ranges apart and readable

HOST = "127.0.0.1"
P2P_BASE_PORT = 30303
RPC_BASE_PORT = 8545
RPC_APIS = "ETH,NET,QBFT,WEB3,TXPOOL"
BESU_IMAGE = "hyperledger/besu:${BESU_VERSION:-latest}"
CONTAINER_CONFIG_DIR = "/config"
CONTAINER_DATA_DIR = "/opt/besu/data"  # not the image's /opt/besu itself (Besu docs: never mount there)

# QBFT genesis constants from the Besu QBFT documentation: difficulty 0x1 and this mixHash
# ("ctical byzantine fault tolerance") identify an Istanbul-family BFT block.
QBFT_MIX_HASH = "0x63746963616c2062797a616e74696e65206661756c7420746f6c6572616e6365"
GAS_LIMIT = "0x1C9C380"  # 30,000,000: room for large Merkle-batch anchoring transactions
EPOCH_LENGTH = 30000
ACCOUNT_BALANCE_WEI = 10**24  # one million ether per funded account
VANITY = bytes(32)

Account.enable_unaudited_hdwallet_features()


@dataclass(frozen=True)
class Validator:
    """One validator node: its key, its name (``node<i>``) and its ports."""

    index: int  # 1-based
    private_key: bytes

    @property
    def name(self) -> str:
        return f"node{self.index}"

    @property
    def _key(self) -> keys.PrivateKey:
        return keys.PrivateKey(self.private_key)

    @property
    def public_key(self) -> bytes:
        """The 64-byte uncompressed public key without the 0x04 prefix: the enode node ID."""
        return self._key.public_key.to_bytes()

    @property
    def address(self) -> str:
        """The validator address, as QBFT lists it in extraData and reports it over RPC."""
        return self._key.public_key.to_checksum_address()

    @property
    def p2p_port(self) -> int:
        return P2P_BASE_PORT + self.index - 1

    @property
    def rpc_port(self) -> int:
        return RPC_BASE_PORT + self.index - 1

    @property
    def enode(self) -> str:
        return f"enode://{self.public_key.hex()}@{HOST}:{self.p2p_port}"


def validator_keys(count: int, *, seed_from_dev_keys: bool) -> list[bytes]:
    """Validator private keys: reproducible from the dev mnemonic, or fresh from the OS CSPRNG."""
    if seed_from_dev_keys:
        return [
            bytes(Account.from_mnemonic(DEV_MNEMONIC, account_path=VALIDATOR_PATH.format(i)).key)
            for i in range(count)
        ]
    found: list[bytes] = []
    while len(found) < count:
        candidate = secrets.token_bytes(32)
        if 0 < int.from_bytes(candidate, "big") < SECPK1_N:  # a valid scalar
            found.append(candidate)
    return found


def make_validators(private_keys: Sequence[bytes]) -> list[Validator]:
    """Validators named node1..nodeN in ascending address order.

    Besu's QBFT docs ask for the genesis validators in ascending order; numbering the nodes
    the same way makes ``node1`` the first validator in ``extraData`` too.
    """
    ordered = sorted(
        private_keys, key=lambda k: bytes.fromhex(keys.PrivateKey(k).public_key.to_address()[2:])
    )
    return [Validator(i, key) for i, key in enumerate(ordered, start=1)]


def funded_accounts(count: int) -> list[str]:
    """Checksummed addresses of the dev mnemonic's accounts 0..count-1."""
    return [
        Account.from_mnemonic(DEV_MNEMONIC, account_path=ACCOUNT_PATH.format(i)).address for i in range(count)
    ]


def qbft_extra_data(addresses: Sequence[str]) -> str:
    """The QBFT genesis extraData for a block-header-managed validator set.

    Besu docs (Configure QBFT consensus, "Extra data"):
    RLP([32 bytes Vanity, List<Validators>, No Vote, Round=Int(0), 0 Seals]).
    No vote is an empty list, round 0 the RLP integer 0 (the empty string 0x80) and no seals
    an empty list, so a genesis extraData ends in ``c0 80 c0``.
    """
    validators = [bytes.fromhex(a.removeprefix("0x")) for a in addresses]
    if any(len(v) != 20 for v in validators):
        raise ValueError("a validator address is not 20 bytes")
    return "0x" + rlp.encode([VANITY, validators, [], 0, []]).hex()


def genesis(
    *,
    chain_id: int,
    block_period: int,
    request_timeout: int,
    validators: Sequence[Validator],
    accounts: Sequence[str],
) -> dict[str, Any]:
    """The genesis file: QBFT, every fork through Cancun at genesis, zero base fee.

    Fork keys are the ones Besu's JsonGenesisConfigOptions reads (block numbers up to London,
    timestamps from Shanghai on). ``zeroBaseFee`` is Besu's documented free-gas setting for
    London-or-later networks; the qkdiov client then sends EIP-1559 transactions with a
    base fee of 0.
    """
    forks = (
        "homesteadBlock",
        "eip150Block",
        "eip155Block",
        "eip158Block",
        "byzantiumBlock",
        "constantinopleBlock",
        "petersburgBlock",
        "istanbulBlock",
        "muirGlacierBlock",
        "berlinBlock",
        "londonBlock",
    )
    config: dict[str, Any] = {"chainId": chain_id}
    config.update(dict.fromkeys(forks, 0))
    config.update({"shanghaiTime": 0, "cancunTime": 0, "zeroBaseFee": True})
    config["qbft"] = {
        "blockperiodseconds": block_period,
        "epochlength": EPOCH_LENGTH,
        "requesttimeoutseconds": request_timeout,
    }
    return {
        "config": config,
        "nonce": "0x0",
        "timestamp": "0x0",
        "extraData": qbft_extra_data([v.address for v in validators]),
        "gasLimit": GAS_LIMIT,
        "difficulty": "0x1",
        "mixHash": QBFT_MIX_HASH,
        "coinbase": "0x0000000000000000000000000000000000000000",
        "alloc": {a.lower().removeprefix("0x"): {"balance": hex(ACCOUNT_BALANCE_WEI)} for a in accounts},
        "number": "0x0",
        "gasUsed": "0x0",
        "parentHash": "0x" + "00" * 32,
    }


def _toml_list(items: Sequence[str]) -> str:
    # One line, as in Besu's docs: Besu rewrites these lines itself when the perm_* RPC
    # methods change an allowlist.
    return "[" + ",".join(f'"{item}"' for item in items) + "]"


def permissions_toml(validators: Sequence[Validator], accounts: Sequence[str]) -> str:
    """Besu local permissioning: only these nodes may peer, only these accounts may transact."""
    return (
        "# Besu local permissioning (--permissions-*-config-file), generated by generate.py.\n"
        "# Only the validators below may connect; only the accounts below may send transactions.\n"
        f"accounts-allowlist={_toml_list([a.lower() for a in accounts])}\n\n"
        f"nodes-allowlist={_toml_list([v.enode for v in validators])}\n"
    )


def besu_args(
    *, config_dir: str, data_dir: str, key_file: str, p2p_port: object, rpc_port: object
) -> list[str]:
    """One validator's Besu command line; docker-compose.yml and run-node.sh both use it.

    Every option is one the Besu CLI reference documents. Discovery is off: the nodes
    connect through static-nodes.json, and node permissioning admits only the validators.
    """
    return [
        f"--genesis-file={config_dir}/genesis.json",
        f"--node-private-key-file={key_file}",
        f"--data-path={data_dir}",
        "--profile=ENTERPRISE",
        "--sync-mode=FULL",
        "--data-storage-format=FOREST",
        "--min-gas-price=0",
        f"--static-nodes-file={config_dir}/static-nodes.json",
        "--discovery-enabled=false",
        "--permissions-nodes-config-file-enabled=true",
        f"--permissions-nodes-config-file={config_dir}/permissions_config.toml",
        "--permissions-accounts-config-file-enabled=true",
        f"--permissions-accounts-config-file={config_dir}/permissions_config.toml",
        f"--p2p-host={HOST}",
        f"--p2p-port={p2p_port}",
        "--rpc-http-enabled=true",
        f"--rpc-http-host={HOST}",
        f"--rpc-http-port={rpc_port}",
        f"--rpc-http-api={RPC_APIS}",
        "--host-allowlist=*",
        "--rpc-http-cors-origins=*",
    ]


def docker_compose(validators: Sequence[Validator]) -> str:
    """docker compose file: one container per validator, host networking, config mounted read-only.

    Host networking keeps every node on 127.0.0.1 with the ports in the enode URLs. The chain
    data lives in the container (``docker compose down`` starts the chain afresh).
    """
    lines = [
        "# Generated by networks/besu-qbft/generate.py - a LOCAL TEST network (see README.md).",
        "# Start: docker compose up -d    Stop and reset: docker compose down",
        "# Pin a Besu release with BESU_VERSION=<tag> (default: latest).",
        "name: qkdiov-besu-qbft",
        "services:",
    ]
    for v in validators:
        args = besu_args(
            config_dir=CONTAINER_CONFIG_DIR,
            data_dir=CONTAINER_DATA_DIR,
            key_file=f"{CONTAINER_CONFIG_DIR}/{v.name}/key",
            p2p_port=v.p2p_port,
            rpc_port=v.rpc_port,
        )
        lines += [
            f"  {v.name}:",
            f'    image: "{BESU_IMAGE}"',
            f"    container_name: qkdiov-besu-{v.name}",
            "    network_mode: host",
            "    restart: unless-stopped",
            "    volumes:",
            f"      - ./:{CONTAINER_CONFIG_DIR}:ro",
            "    command:",
            *(f'      - "{arg}"' for arg in args),
        ]
    return "\n".join(lines) + "\n"


def run_node_script(validators: Sequence[Validator]) -> str:
    """A POSIX shell script that starts one validator with a local ``besu`` binary."""
    args = besu_args(
        config_dir="$here",
        data_dir="$here/data/node$n",
        key_file="$here/node$n/key",
        p2p_port="$p2p",
        rpc_port="$rpc",
    )
    quoted = [f'  {option}="{value}"' for option, value in (arg.split("=", 1) for arg in args)]
    cases = "".join(f"  {v.index}) p2p={v.p2p_port}; rpc={v.rpc_port} ;;\n" for v in validators)
    return (
        "#!/bin/sh\n"
        "# Generated by networks/besu-qbft/generate.py - a LOCAL TEST network (see README.md).\n"
        f"# Start validator node N (1-{len(validators)}) with a local besu binary: ./run-node.sh N\n"
        "set -eu\n"
        'here=$(cd "$(dirname "$0")" && pwd)\n'
        'n="${1:-}"\n'
        'case "$n" in\n'
        f"{cases}"
        f'  *) echo "usage: $0 NODE   (NODE is 1-{len(validators)})" >&2; exit 2 ;;\n'
        "esac\n"
        'mkdir -p "$here/data/node$n"\n'
        "exec besu \\\n" + " \\\n".join(quoted) + "\n"
    )


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def _remove_stale_nodes(out: Path, keep: int) -> None:
    """Drop node<i> directories left by an earlier, larger network (only our own files)."""
    ours = {"key", "key.pub"}
    for d in out.glob("node*"):
        suffix = d.name.removeprefix("node")
        if d.is_dir() and suffix.isdigit() and int(suffix) > keep and {p.name for p in d.iterdir()} <= ours:
            shutil.rmtree(d)


def write_network(
    out: Path,
    *,
    validators: Sequence[Validator],
    chain_id: int,
    block_period: int,
    request_timeout: int,
    accounts: Sequence[str],
    key_mode: int = 0o644,
) -> None:
    """Write every file of the network description into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_nodes(out, len(validators))
    for v in validators:
        # Besu writes and reads a one-line, 0x-prefixed hex key (KeyPairUtil); key.pub as
        # `besu operator generate-blockchain-config` writes it: 0x + 64-byte public key.
        _write(out / v.name / "key", "0x" + v.private_key.hex(), key_mode)
        _write(out / v.name / "key.pub", "0x" + v.public_key.hex())
    doc = genesis(
        chain_id=chain_id,
        block_period=block_period,
        request_timeout=request_timeout,
        validators=validators,
        accounts=accounts,
    )
    _write(out / "genesis.json", json.dumps(doc, indent=2) + "\n")
    _write(out / "permissions_config.toml", permissions_toml(validators, accounts))
    _write(out / "static-nodes.json", json.dumps([v.enode for v in validators], indent=2) + "\n")
    _write(out / "docker-compose.yml", docker_compose(validators))
    _write(out / "run-node.sh", run_node_script(validators), 0o755)
    _write(out / ".gitignore", "# chain data of nodes started with run-node.sh\n/data/\n")


class _OneLineErrors(argparse.ArgumentParser):
    """argparse, but a bad argument gives one line on stderr (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _OneLineErrors(
        prog="generate.py",
        description="Generate a Hyperledger Besu QBFT permissioned network (LOCAL TEST keys).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="output directory (default: this script's directory, the committed network)",
    )
    parser.add_argument("--validators", type=int, default=4, help="number of validators (default 4)")
    parser.add_argument("--chain-id", type=int, default=1337, help="chain ID (default 1337)")
    parser.add_argument("--block-period", type=int, default=2, help="QBFT blockperiodseconds (default 2)")
    parser.add_argument(
        "--request-timeout",
        type=int,
        default=None,
        help="QBFT requesttimeoutseconds (default: twice the block period, as Besu's docs advise)",
    )
    parser.add_argument(
        "--accounts",
        type=int,
        default=MAX_ACCOUNTS,
        help=f"dev-mnemonic accounts 0..N-1 to fund and allowlist (default {MAX_ACCOUNTS}: all qkdiov uses)",
    )
    keys_from = parser.add_mutually_exclusive_group(required=True)
    keys_from.add_argument(
        "--seed-from-dev-keys",
        action="store_true",
        help="derive the validator keys from the public dev mnemonic (reproducible; test only)",
    )
    keys_from.add_argument("--random", action="store_true", help="fresh validator keys from the OS CSPRNG")
    args = parser.parse_args(argv)
    if not 1 <= args.validators <= MAX_VALIDATORS:
        parser.error(f"--validators must be between 1 and {MAX_VALIDATORS}, not {args.validators}")
    if args.chain_id < 1:
        parser.error(f"--chain-id must be a positive integer, not {args.chain_id}")
    if args.block_period < 1:
        parser.error(f"--block-period must be at least 1 second, not {args.block_period}")
    if args.request_timeout is None:
        args.request_timeout = 2 * args.block_period
    if args.request_timeout < 1:
        parser.error(f"--request-timeout must be at least 1 second, not {args.request_timeout}")
    if not 1 <= args.accounts <= MAX_ACCOUNTS:
        parser.error(f"--accounts must be between 1 and {MAX_ACCOUNTS}, not {args.accounts}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a directory")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    validators = make_validators(validator_keys(args.validators, seed_from_dev_keys=args.seed_from_dev_keys))
    write_network(
        args.out,
        validators=validators,
        chain_id=args.chain_id,
        block_period=args.block_period,
        request_timeout=args.request_timeout,
        accounts=funded_accounts(args.accounts),
        key_mode=0o644 if args.seed_from_dev_keys else 0o600,
    )
    print(f"wrote a {len(validators)}-validator QBFT network (chain ID {args.chain_id}) to {args.out}")
    for v in validators:
        print(f"  {v.name}  {v.address}  p2p {v.p2p_port}  rpc http://{HOST}:{v.rpc_port}")
    if f := (len(validators) - 1) // 3:
        print(f"  tolerates {f} faulty validator{'s' if f > 1 else ''}")
    else:
        print("  note: fewer than 4 validators tolerate no faulty validator")
    return 0


if __name__ == "__main__":
    sys.exit(main())
