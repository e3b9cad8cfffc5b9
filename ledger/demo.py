"""The ledger walk-through behind ``make demo`` until the vehicle simulator lands.

Deploys KeyLedger on a fresh chain, registers vehicles, records session keys, verifies,
revokes one key and then every key of one vehicle, anchors a Merkle batch and checks a
proof on chain; it reports what happened with the gas and time each step took.
The keys are random 256-bit strings standing in for QKD output; only their SHA-256
commitments reach the chain, as they will for real QKD keys.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .chain import connect
from .client import KeyLedgerClient
from .compiler import compile_contracts
from .deployment import deploy
from .ids import VERIFY_REASONS
from .merkle import MerkleTree, key_leaf, verify

COMMITMENT_TAG = b"qkd-iov/key-commitment/v1"


def commitment(key_id: uuid.UUID, key: bytes) -> bytes:
    """SHA-256 over a domain tag, the key id and the key: what the ledger stores."""
    return hashlib.sha256(COMMITMENT_TAG + key_id.bytes + key).digest()


@dataclass
class Step:
    name: str
    transactions: int
    gas: int
    seconds: float


@dataclass
class DemoReport:
    chain: str
    chain_id: int
    address: str
    compile_s: float
    steps: list[Step] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    merkle_proof_on_chain: bool = False
    merkle_proof_local: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "chain_id": self.chain_id,
            "address": self.address,
            "compile_s": self.compile_s,
            "steps": [vars(s) for s in self.steps],
            "statuses": self.statuses,
            "stats": self.stats,
            "merkle_proof_on_chain": self.merkle_proof_on_chain,
            "merkle_proof_local": self.merkle_proof_local,
        }


def run_demo(
    chain_spec: str = "embedded",
    vehicles: int = 4,
    keys_per_vehicle: int = 3,
    batch_size: int = 256,
    progress: Callable[[str], None] | None = None,
) -> DemoReport:
    say = progress or (lambda _msg: None)
    say("compiling the contracts (cached after the first run)")
    t0 = time.perf_counter()
    compile_contracts()
    compile_s = time.perf_counter() - t0
    with connect(chain_spec, persist=False) as chain:
        say("deploying KeyLedger")
        t0 = time.perf_counter()
        ledger, record = deploy(chain, save=False)
        report = DemoReport(chain.name, chain.chain_id, record.address, compile_s=compile_s)
        report.steps.append(Step("deploy", 1, record.gas_used, time.perf_counter() - t0))

        def step(name: str, calls: list[Callable[[], Any]]) -> list[Any]:
            say(name)
            start = time.perf_counter()
            results = [call() for call in calls]
            report.steps.append(
                Step(name, len(results), sum(r.gas_used for r in results), time.perf_counter() - start)
            )
            return results

        # Off dev chains the deployer is only the admin: it grants itself the working roles.
        for role in ("key-manager", "verifier"):
            if not ledger.has_role(role, ledger.sender.address):
                step(f"grant {role} role", [lambda r=role: ledger.grant_role(r, ledger.sender.address)])

        names = [f"car-{i + 1}" for i in range(vehicles)]
        step("register vehicles", [lambda n=n: ledger.register_vehicle(n) for n in names])

        now = chain.latest_timestamp()
        keys: dict[uuid.UUID, tuple[str, bytes]] = {}
        for name in names:
            for _ in range(keys_per_vehicle):
                keys[uuid.uuid4()] = (name, secrets.token_bytes(32))
        step(
            "record session keys",
            [
                lambda k=k, v=v: ledger.record_session(
                    k,
                    commitment(k, v[1]),
                    v[0],
                    qber=0.02,
                    final_key_bits=256,
                    created_at=now,
                    expires_at=now + 3600,
                )
                for k, v in keys.items()
            ],
        )
        step(
            "record verifications",
            [lambda k=k, v=v: _verify(ledger, k, commitment(k, v[1])) for k, v in keys.items()],
        )

        first_key = next(iter(keys))
        step("revoke one key", [lambda: ledger.revoke_key(first_key, "key material exposed")])
        step(
            "revoke every key of car-2",
            [lambda: ledger.revoke_vehicle_keys("car-2", "vehicle reported stolen")],
        )

        leaves = [
            key_leaf(
                secrets.token_bytes(32),
                secrets.token_bytes(32),
                names[0].encode().ljust(32, b"\0"),
                20_000,
                256,
                1,
                now,
                now + 3600,
            )
            for _ in range(batch_size)
        ]
        tree = MerkleTree.from_leaves(leaves)
        step(
            f"anchor Merkle batch ({batch_size} keys)",
            [lambda: ledger.anchor_batch(tree.root, batch_size)],
        )
        proof = tree.proof(leaves[-1])
        report.merkle_proof_local = verify(tree.root, proof, leaves[-1])
        report.merkle_proof_on_chain = ledger.verify_inclusion(tree.root, proof, leaves[-1])

        for k in keys:
            status = ledger.key_status(k).status
            report.statuses[status] = report.statuses.get(status, 0) + 1
        report.stats = ledger.stats()
        return report


def _verify(ledger: KeyLedgerClient, key_id: uuid.UUID, expected: bytes) -> Any:
    status, matches = ledger.check_key(key_id, expected)
    ok = status == "valid" and matches
    return ledger.record_verification(key_id, ok, VERIFY_REASONS["ok" if ok else status])
