"""Shared fixtures: a fresh embedded chain with KeyLedger deployed, per test.

Every test gets its own QKDIOV_HOME so deployment records and chain journals never leak
between tests or into the checkout.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ledger.chain import Chain, connect
from ledger.client import KeyLedgerClient
from ledger.compiler import compile_contracts
from ledger.deployment import deploy


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QKDIOV_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("QKDIOV_CHAIN", raising=False)
    monkeypatch.delenv("QKDIOV_PRIVATE_KEYS", raising=False)
    monkeypatch.delenv("QKDIOV_MNEMONIC", raising=False)


@pytest.fixture(scope="session", autouse=True)
def compiled() -> None:
    compile_contracts()


@pytest.fixture
def chain() -> Iterator[Chain]:
    with connect("embedded", persist=False) as c:
        yield c


@pytest.fixture
def ledger(chain: Chain) -> KeyLedgerClient:
    client, _ = deploy(chain, save=False)
    return client


@pytest.fixture
def admin(chain: Chain):
    return chain.accounts[0]


@pytest.fixture
def outsider(chain: Chain):
    """An account that holds no role."""
    return chain.accounts[9]


def new_key_id() -> uuid.UUID:
    return uuid.uuid4()


def record_key(
    ledger: KeyLedgerClient,
    vehicle: str = "car-1",
    *,
    ttl: int = 3600,
    commitment: bytes = b"\x42" * 32,
    key_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Record one valid key for a registered vehicle and return its id."""
    kid = key_id or new_key_id()
    now = ledger.chain.latest_timestamp()
    ledger.record_session(
        kid, commitment, vehicle, qber=0.02, final_key_bits=256, created_at=now, expires_at=now + ttl
    )
    return kid
