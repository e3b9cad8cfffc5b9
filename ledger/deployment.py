"""Deploying KeyLedger and remembering where: ``deployments/<chain-id>.json``.

A record names the address, the ABI hash, the block and the deployer. Loading checks that
code still lives at the address, so a record left over from a restarted dev node (anvil
and Hardhat share chain id 31337) is reported instead of silently used.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from .chain import Chain, os_error_reason, workspace_io
from .client import KeyLedgerClient, NonceManager
from .compiler import Artifact, artifact
from .errors import DeploymentMissing, LedgerError
from .paths import deployments_dir

CONTRACT_NAME = "KeyLedger"
DEV_CHAIN_IDS = {31337, 131277322940537}  # anvil / Hardhat, eth-tester


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    contract: str
    address: str
    abi_hash: str
    block: int
    deployer: str
    tx_hash: str
    gas_used: int
    deployed_at: int

    @staticmethod
    def path(chain_id: int) -> Path:
        return deployments_dir() / f"{chain_id}.json"

    def save(self) -> Path:
        path = self.path(self.chain_id)
        with workspace_io(path, "write"):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
            tmp.replace(path)
        return path

    @classmethod
    def load(cls, chain_id: int) -> Deployment:
        path = cls.path(chain_id)
        if not path.exists():
            raise DeploymentMissing(f"no deployment for chain {chain_id} ({path}): run `qkdiov deploy` first")
        try:
            record = cls(**json.loads(path.read_text()))
        except OSError as exc:  # a directory in its place, no permission to read it
            raise DeploymentMissing(
                f"cannot read the deployment record {path}: {os_error_reason(exc)}"
            ) from None
        except (ValueError, TypeError) as exc:
            raise DeploymentMissing(f"{path} is not a deployment record: delete it and redeploy") from exc
        address = _checksummed(record.address)
        if address is None:
            raise DeploymentMissing(
                f"{path} is not a deployment record (address {record.address!r} is not a valid Ethereum"
                " address): delete it and redeploy"
            )
        return replace(record, address=address)


def _checksummed(value: object) -> str | None:
    """The address checksummed (the only form web3 takes), or ``None`` if it is not one.

    ``0x`` + 40 hex digits in one case, or in mixed case with a valid EIP-55 checksum: a
    character retyped in a checksummed address fails the checksum.
    """
    if not isinstance(value, str) or not re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
        return None
    digits = value[2:]
    if digits not in (digits.lower(), digits.upper()) and not Web3.is_checksum_address(value):
        return None
    return Web3.to_checksum_address(value)


def deploy(
    chain: Chain,
    deployer: LocalAccount | None = None,
    *,
    grant_all_roles: bool | None = None,
    save: bool = True,
) -> tuple[KeyLedgerClient, Deployment]:
    """Deploy KeyLedger; the deployer becomes the authority (and, on dev chains, every role)."""
    acct = deployer or chain.account()
    art: Artifact = artifact(CONTRACT_NAME)
    if grant_all_roles is None:
        grant_all_roles = chain.chain_id in DEV_CHAIN_IDS
    if save:  # where the record goes must be usable before the contract costs gas
        directory = deployments_dir()
        with workspace_io(directory, "create"):
            directory.mkdir(parents=True, exist_ok=True)
    w3 = chain.w3
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    data = factory.constructor(acct.address, grant_all_roles).data_in_transaction
    gas = w3.eth.estimate_gas({"from": acct.address, "data": data})
    nonces = NonceManager(w3)
    tx = {"from": acct.address, "data": data, "gas": gas + gas // 5, "chainId": chain.chain_id}
    base_fee = w3.eth.get_block("latest").get("baseFeePerGas")
    if base_fee is None:
        tx["gasPrice"] = int(w3.eth.gas_price)
    else:
        tx["maxPriorityFeePerGas"] = 10**9
        tx["maxFeePerGas"] = 2 * int(base_fee) + 10**9
    tx["nonce"] = nonces.allocate(acct.address)
    tx_hash = chain.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120, poll_latency=0.02)
    if receipt["status"] != 1 or not receipt.get("contractAddress"):
        raise LedgerError(f"deployment of {CONTRACT_NAME} failed in block {receipt['blockNumber']}")
    record = Deployment(
        chain_id=chain.chain_id,
        contract=CONTRACT_NAME,
        address=receipt["contractAddress"],
        abi_hash=art.abi_hash,
        block=int(receipt["blockNumber"]),
        deployer=acct.address,
        tx_hash="0x" + bytes(tx_hash).hex(),
        gas_used=int(receipt["gasUsed"]),
        deployed_at=int(time.time()),
    )
    if save:
        record.save()
    return KeyLedgerClient(chain, record.address, art.abi, acct, nonces), record


def load_client(chain: Chain, sender: LocalAccount | None = None) -> KeyLedgerClient:
    """The client for this chain's recorded deployment, checked against the chain."""
    record = Deployment.load(chain.chain_id)
    art = artifact(CONTRACT_NAME)
    code = chain.w3.eth.get_code(record.address)
    if len(code) == 0:
        raise DeploymentMissing(
            f"no contract at {record.address} on chain {chain.chain_id} (the node was probably restarted):"
            " run `qkdiov deploy` again"
        )
    if record.abi_hash != art.abi_hash:
        raise DeploymentMissing(
            f"contracts/ changed since the deployment at {record.address}: run `qkdiov deploy` again"
        )
    return KeyLedgerClient(chain, record.address, art.abi, sender or chain.account())
