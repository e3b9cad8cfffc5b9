"""``qkdiov node | deploy | ledger ... | console``: the ledger from the shell.

Thin: every command parses its flags, calls the ledger package and reports. Reporting
commands print exactly one JSON object with ``--json``; tables go to stdout otherwise and
progress to stderr. User mistakes raise ``LedgerError`` and leave with status 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from . import ids
from .errors import BadInput, TransactionRefused

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

CHAINS_HELP = "embedded, anvil, hardhat, or an http(s):// / ws:// JSON-RPC URL"
chain_option = click.option(
    "--chain",
    default=lambda: os.environ.get("QKDIOV_CHAIN", "embedded"),
    show_default="embedded",
    help=f"{CHAINS_HELP}. Env: QKDIOV_CHAIN.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
from_option = click.option(
    "--from",
    "sender",
    default=None,
    metavar="ADDR",
    help="Sending account (default: the chain's first account).",
)


@click.group("ledger")
def app() -> None:
    """Work with the permissioned key ledger."""


# ---------------------------------------------------------------------------- helpers


@contextmanager
def ledger_client(chain_spec: str, sender: str | None = None) -> Iterator[Any]:
    """Connect, load this chain's deployment and yield a client sending from ``sender``."""
    from .chain import connect
    from .deployment import load_client

    with connect(chain_spec) as chain:
        client = load_client(chain)
        yield client.as_sender(sender) if sender else client


def report(data: dict[str, Any], as_json: bool, title: str | None = None) -> None:
    """One JSON object, or a two-column table of the same fields."""
    if as_json:
        print(json.dumps(data, default=str))
        return
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    out.print(table)


def tx_fields(result: Any) -> dict[str, Any]:
    return {"tx_hash": result.tx_hash, "block": result.block_number, "gas_used": result.gas_used}


def _commitment(value: str) -> bytes:
    return ids.hex32(value, "commitment")


# ---------------------------------------------------------------------------- node / deploy / console


@click.command()
@click.option("--engine", type=click.Choice(["anvil", "hardhat"]), default="anvil", show_default=True)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8545,
    show_default=True,
    help="Loopback port to serve JSON-RPC on.",
)
@click.option(
    "--block-time",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds between blocks (anvil); 0 = mine each transaction.",
)
def node(engine: str, port: int, block_time: float) -> None:
    """Start a local testnet in the foreground; Ctrl-C stops it."""
    from .chain import ManagedNode, announce_node, dev_accounts, node_file

    managed = ManagedNode(engine, port=port, block_time=block_time or None)
    path = announce_node(managed)
    err.print(f"[bold]{engine}[/] serving JSON-RPC on [bold]{managed.url}[/] (chain id 31337)")
    err.print(f"other commands reach it with [bold]--chain {engine}[/] or [bold]--chain {managed.url}[/]")
    for i, acct in enumerate(dev_accounts(3)):
        err.print(f"  account {i}: {acct.address}")
    err.print("Ctrl-C to stop")
    try:
        while managed.process.poll() is None:
            time.sleep(0.5)
        raise BadInput(f"{engine} stopped unexpectedly with status {managed.process.returncode}")
    except KeyboardInterrupt:
        err.print(f"stopping {engine}")
    finally:
        managed.stop()
        if node_file(engine).exists():
            path.unlink()


@click.command()
@chain_option
@click.option("--fresh", is_flag=True, help="Start the embedded chain afresh before deploying.")
@from_option
@json_option
def deploy(chain: str, fresh: bool, sender: str | None, as_json: bool) -> None:
    """Compile (cached) and deploy the KeyLedger contract; record it in deployments/."""
    from .chain import connect, reset_embedded
    from .compiler import compile_contracts
    from .deployment import deploy as deploy_ledger

    started = time.perf_counter()
    compile_contracts()
    compiled = time.perf_counter()
    if fresh:
        if chain != "embedded":
            raise BadInput("--fresh applies to the embedded chain only")
        reset_embedded()
    with connect(chain) as conn:
        _, record = deploy_ledger(conn, conn.account(sender) if sender else None)
    done = time.perf_counter()
    report(
        {
            "chain": chain,
            "chain_id": record.chain_id,
            "address": record.address,
            "block": record.block,
            "deployer": record.deployer,
            "gas_used": record.gas_used,
            "compile_s": round(compiled - started, 3),
            "deploy_s": round(done - compiled, 3),
            "record": str(record.path(record.chain_id)),
        },
        as_json,
        title="KeyLedger deployed",
    )


@click.command()
@chain_option
def console(chain: str) -> None:
    """Interactive Python with w3, ledger, accounts and chain preloaded (IPython when installed)."""
    from .chain import connect
    from .deployment import load_client
    from .errors import DeploymentMissing

    with connect(chain) as conn:
        try:
            ledger = load_client(conn)
        except DeploymentMissing as exc:  # no deployment yet: the console is still useful
            err.print(f"[yellow]no ledger loaded[/]: {exc}")
            ledger = None
        namespace = {"w3": conn.w3, "chain": conn, "accounts": conn.accounts, "ledger": ledger}
        banner = (
            f"QKD-IoV console on {conn.name} (chain id {conn.chain_id}, block {conn.w3.eth.block_number})\n"
            "preloaded: w3, chain, accounts, ledger"
        )
        try:
            from IPython import start_ipython
        except ImportError:
            import code

            code.interact(banner=banner, local=namespace)
        else:
            print(banner)
            start_ipython(argv=[], user_ns=namespace)


# ---------------------------------------------------------------------------- ledger ...


VEHICLE_HELP = "Vehicle id: a label of up to 31 bytes, or 0x + 64 hex digits."
ROLE_HELP = "admin, key-manager or verifier."


@app.command()
@click.option("--vehicle", required=True, help=VEHICLE_HELP)
@chain_option
@from_option
@json_option
def register(vehicle: str, chain: str, sender: str | None, as_json: bool) -> None:
    """Register a vehicle (authority only)."""
    ids.vehicle_id(vehicle)
    with ledger_client(chain, sender) as ledger:
        result = ledger.register_vehicle(vehicle)
    report({"vehicle": vehicle, "registered": True, **tx_fields(result)}, as_json)


@app.command()
@click.option("--vehicle", required=True, help=VEHICLE_HELP)
@chain_option
@from_option
@json_option
def deregister(vehicle: str, chain: str, sender: str | None, as_json: bool) -> None:
    """Deregister a vehicle; its keys turn invalid at once (authority only)."""
    ids.vehicle_id(vehicle)
    with ledger_client(chain, sender) as ledger:
        result = ledger.deregister_vehicle(vehicle)
    report({"vehicle": vehicle, "registered": False, **tx_fields(result)}, as_json)


@app.command()
@click.option("--role", required=True, help=ROLE_HELP)
@click.option("--account", required=True, metavar="ADDR", help="Address to grant the role to.")
@chain_option
@from_option
@json_option
def grant(role: str, account: str, chain: str, sender: str | None, as_json: bool) -> None:
    """Grant a role to an account (admin only)."""
    ids.role(role)
    with ledger_client(chain, sender) as ledger:
        result = ledger.grant_role(role, account)
    report({"role": role, "account": account, "granted": True, **tx_fields(result)}, as_json)


@app.command("revoke-role")
@click.option("--role", required=True, help=ROLE_HELP)
@click.option("--account", required=True, metavar="ADDR", help="Address to take the role from.")
@chain_option
@from_option
@json_option
def revoke_role(role: str, account: str, chain: str, sender: str | None, as_json: bool) -> None:
    """Take a role away from an account (admin only)."""
    ids.role(role)
    with ledger_client(chain, sender) as ledger:
        result = ledger.revoke_role(role, account)
    report({"role": role, "account": account, "granted": False, **tx_fields(result)}, as_json)


@app.command()
@click.option("--key-id", required=True, metavar="UUID", help="The key's UUID.")
@click.option("--commitment", required=True, metavar="HEX64", help="SHA-256 commitment to the key.")
@click.option("--vehicle", required=True, help="The registered vehicle the key belongs to.")
@click.option("--qber", type=float, default=0.0, show_default=True, help="QBER of the session, 0-1.")
@click.option("--bits", type=int, default=256, show_default=True, help="Final key length in bits.")
@click.option("--ttl", type=int, default=3600, show_default=True, help="Seconds until the key expires.")
@click.option("--protocol", type=click.Choice(["bb84", "e91"]), default="bb84", show_default=True)
@chain_option
@from_option
@json_option
def record(
    key_id: str,
    commitment: str,
    vehicle: str,
    qber: float,
    bits: int,
    ttl: int,
    protocol: str,
    chain: str,
    sender: str | None,
    as_json: bool,
) -> None:
    """Record a QKD session key by its commitment (key-manager role)."""
    raw_commitment = ids.commitment(commitment)
    ids.key_id(key_id)
    ids.vehicle_id(vehicle)
    ids.protocol(protocol)
    if not 0.0 <= qber <= 1.0:
        raise BadInput(f"--qber must lie in [0, 1], got {qber}")
    if not 0 < bits < 2**32:
        raise BadInput(f"--bits must be a positive 32-bit number, got {bits}")
    if ttl <= 0:
        raise BadInput(f"--ttl must be positive, got {ttl}")
    with ledger_client(chain, sender) as ledger:
        now = ledger.chain.latest_timestamp()
        if now + ttl >= 2**64:
            raise BadInput(f"--ttl {ttl} puts the expiry past the contract's uint64 range")
        result = ledger.record_session(
            key_id,
            raw_commitment,
            vehicle,
            qber=qber,
            final_key_bits=bits,
            created_at=now,
            expires_at=now + ttl,
            protocol=protocol,
        )
    report(
        {
            "key_id": key_id,
            "vehicle": vehicle,
            "recorded": True,
            "expires_at": now + ttl,
            "key_manager": ledger.sender.address,
            **tx_fields(result),
        },
        as_json,
    )


@app.command()
@click.option("--key-id", required=True, metavar="UUID")
@click.option("--commitment", default=None, metavar="HEX64", help="Also check that this commitment matches.")
@click.option("--record", "record_result", is_flag=True, help="Record the outcome on chain (verifier role).")
@chain_option
@from_option
@json_option
def verify(
    key_id: str, commitment: str | None, record_result: bool, chain: str, sender: str | None, as_json: bool
) -> None:
    """Is this key valid, revoked, expired or unknown; does the commitment match?"""
    ids.key_id(key_id)
    raw = _commitment(commitment) if commitment is not None else None
    with ledger_client(chain, sender) as ledger:
        state = ledger.key_status(key_id)
        data: dict[str, Any] = {"key_id": key_id, "status": state.status}
        if raw is not None:
            data["commitment_matches"] = ledger.check_key(key_id, raw)[1]
        if record_result:
            if state.status != "valid":
                outcome = state.status
            else:
                outcome = "ok" if data.get("commitment_matches", True) else "commitment-mismatch"
            result = ledger.record_verification(key_id, outcome == "ok", ids.VERIFY_REASONS[outcome])
            data["recorded"] = {"outcome": outcome, **tx_fields(result)}
    report(data, as_json)


@app.command()
@click.option("--key-id", default=None, metavar="UUID", help="Revoke this one key.")
@click.option("--batched", is_flag=True, help="The key was anchored in a Merkle batch (`ledger anchor`).")
@click.option(
    "--proofs",
    "proofs_file",
    default=None,
    metavar="FILE",
    help="With --batched: the `ledger anchor` proofs file holding the key's proof.",
)
@click.option("--vehicle", default=None, help="Revoke every key of this vehicle.")
@click.option("--reason", required=True, help="Why (recorded in the event).")
@chain_option
@from_option
@json_option
def revoke(
    key_id: str | None,
    batched: bool,
    proofs_file: str | None,
    vehicle: str | None,
    reason: str,
    chain: str,
    sender: str | None,
    as_json: bool,
) -> None:
    """Revoke one key, or every key of a vehicle in O(1) gas (authority only).

    A batched key needs its proof: the contract keeps only each batch's root and revokes
    any key id it is given, so the proof is what shows the key was ever anchored.
    """
    from .batcher import read_proofs

    if (key_id is None) == (vehicle is None):
        raise BadInput("give exactly one of --key-id and --vehicle")
    if not reason.strip():
        raise BadInput("--reason must not be empty")
    if batched and key_id is None:
        raise BadInput("--batched goes with --key-id")
    if batched and proofs_file is None:
        raise BadInput(
            "--batched needs --proofs FILE (written by `ledger anchor`): the chain keeps only each "
            "batch's root, so the key's proof is what shows it was anchored"
        )
    if proofs_file is not None and not batched:
        raise BadInput("--proofs goes with --batched")
    if key_id is not None:
        ids.key_id(key_id)
    else:
        ids.vehicle_id(vehicle or "")
    proofs = read_proofs(proofs_file) if proofs_file is not None else {}
    with ledger_client(chain, sender) as ledger:
        if key_id is not None:
            if batched:
                _require_anchored(ledger, ids.parse_key_id(key_id)[0], proofs, proofs_file or "")
            try:
                result = (
                    ledger.revoke_batched_key(key_id, reason)
                    if batched
                    else ledger.revoke_key(key_id, reason)
                )
            except TransactionRefused as exc:
                if exc.error == "KeyNotFound":
                    raise BadInput(
                        f"{exc} (a key anchored in a Merkle batch: add --batched --proofs FILE)"
                    ) from None
                raise
            data: dict[str, Any] = {"key_id": key_id, "batched": batched}
        else:
            result = ledger.revoke_vehicle_keys(vehicle or "", reason)
            data = {"vehicle": vehicle, "epoch": result.event("VehicleKeysRevoked").args["newEpoch"]}
    report({**data, "revoked": True, "reason": reason, **tx_fields(result)}, as_json)


def _require_anchored(ledger: Any, key: str, proofs: dict[str, Any], proofs_file: str) -> None:
    """Refuse to revoke a batched key that no anchored batch holds, as ``revokeKey`` refuses
    an unrecorded one: ``revokeBatchedKey`` would accept it and report it revoked."""
    found = proofs.get(key)
    if found is not None:
        record, root, proof = found
        if ledger.verify_inclusion(root, proof, record.leaf()):
            return
    if ledger.key_status(key).status != "unknown":
        raise BadInput(f"key {key} is recorded individually: revoke it without --batched")
    why = (
        f"no proof for it in {proofs_file}"
        if found is None
        else f"its proof in {proofs_file} does not verify"
    )
    raise BadInput(f"key {key} is unknown: no anchored batch holds it ({why})")


@app.command()
@click.option("--key-id", required=True, metavar="UUID")
@chain_option
@json_option
def show(key_id: str, chain: str, as_json: bool) -> None:
    """Everything the ledger holds about one key."""
    ids.key_id(key_id)
    with ledger_client(chain) as ledger:
        state = ledger.key_status(key_id)
        data: dict[str, Any] = {"key_id": key_id, "status": state.status}
        if state.record is not None:
            data.update(state.record.as_dict())
            data["verifications"] = ledger.verifications(key_id)
    report(data, as_json, title=f"key {key_id}")


@app.command()
@chain_option
@json_option
def stats(chain: str, as_json: bool) -> None:
    """Counts kept by the contract, and where it lives."""
    with ledger_client(chain) as ledger:
        data = {
            "chain": chain,
            "chain_id": ledger.chain.chain_id,
            "block": int(ledger.w3.eth.block_number),
            "address": ledger.address,
            "paused": ledger.paused(),
            **ledger.stats(),
        }
    report(data, as_json, title="KeyLedger")


@app.command()
@chain_option
@from_option
@json_option
def pause(chain: str, sender: str | None, as_json: bool) -> None:
    """Stop all recording (revocations stay open) - admin only."""
    with ledger_client(chain, sender) as ledger:
        result = ledger.pause()
    report({"paused": True, **tx_fields(result)}, as_json)


@app.command()
@chain_option
@from_option
@json_option
def unpause(chain: str, sender: str | None, as_json: bool) -> None:
    """Resume recording - admin only."""
    with ledger_client(chain, sender) as ledger:
        result = ledger.unpause()
    report({"paused": False, **tx_fields(result)}, as_json)


@app.command()
@click.option(
    "--records",
    "records_file",
    required=True,
    metavar="FILE",
    help="JSON lines: key_id, commitment, vehicle [, qber, bits, protocol, created_at, expires_at | ttl].",
)
@click.option(
    "--proofs", "proofs_file", required=True, metavar="OUT", help="Where to write each key's proof."
)
@click.option("--batch-size", type=click.IntRange(min=1, max=65_536), default=1024, show_default=True)
@click.option(
    "--ttl", type=click.IntRange(min=1), default=3600, show_default=True, help="Default lifetime, s."
)
@chain_option
@from_option
@json_option
def anchor(
    records_file: str,
    proofs_file: str,
    batch_size: int,
    ttl: int,
    chain: str,
    sender: str | None,
    as_json: bool,
) -> None:
    """Record many keys as Merkle batches, one root per transaction (key-manager role).

    Each anchored batch's proofs are appended to OUT (JSON lines, fsynced) as soon as it
    is mined, so an interrupted run keeps every proof of what reached the chain.
    """
    from .batcher import KeyBatcher, proof_document, read_records
    from .chain import append_whole, os_error_reason

    target = Path(proofs_file)
    written = 0
    roots: list[str] = []
    # Open OUT before connecting: a path that cannot be written costs nothing yet.
    with _open_proofs(target), ledger_client(chain, sender) as ledger:
        records = read_records(records_file, now=ledger.chain.latest_timestamp(), default_ttl=ttl)
        try:  # recordSession refuses these; anchorBatch sees only a root, so check before anchoring
            ledger.require_registered(r.vehicle for r in records)
        except BadInput as exc:
            raise BadInput(f"{records_file}: {exc} (`qkdiov ledger register` it first)") from None
        by_key = {str(r.key_id): r for r in records}
        with _progress(len(records), "anchoring") as advance:

            def save(items: list[Any]) -> None:
                nonlocal written
                root = "0x" + items[0].root.hex()
                lines = "".join(json.dumps(proof_document(by_key[i.key_id], i)) + "\n" for i in items)
                try:
                    append_whole(target, lines.encode())
                except OSError as exc:
                    raise BadInput(
                        f"cannot write proofs to {target}: {os_error_reason(exc)} (batch {root} of "
                        f"{len(items)} keys is anchored but its proofs are not written; "
                        f"the file keeps the {written} proofs before it)"
                    ) from None
                written += len(items)
                roots.append(root)
                advance(len(items))

            batcher = KeyBatcher(ledger, max_batch=batch_size, max_age_s=3600, on_anchored=save)
            for record in records:
                batcher.add(record)
            batcher.flush()
    report(
        {
            "records": written,
            "batches": batcher.batches,
            "gas_used": batcher.gas_used,
            "gas_per_record": round(batcher.gas_used / max(written, 1), 1),
            "roots": roots,
            "proofs": str(target),
            "key_manager": ledger.sender.address,
        },
        as_json,
    )


@contextmanager
def _open_proofs(target: Path) -> Iterator[None]:
    """``target`` created for appending proofs, or a one-line refusal if it cannot be written.

    A file this call created is removed again if the run fails while it is still empty,
    so a mistake (a bad records file, a missing deployment) leaves no empty proofs file.
    """
    from .chain import os_error_reason

    try:
        if target.exists() and target.stat().st_size:
            raise BadInput(f"{target} exists: choose a new file for the proofs")
        created = not target.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.open("a").close()
    except OSError as exc:
        raise BadInput(f"cannot write proofs to {target}: {os_error_reason(exc)}") from None
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            if created and target.stat().st_size == 0:
                target.unlink()
        raise


@app.command()
@click.option(
    "--proofs", "proofs_file", required=True, metavar="FILE", help="A file written by `ledger anchor`."
)
@click.option("--key-id", required=True, metavar="UUID")
@chain_option
@json_option
def prove(proofs_file: str, key_id: str, chain: str, as_json: bool) -> None:
    """Check a batched key: its proof on chain and in a local ledger view, and its status."""
    from .batcher import read_proofs
    from .view import LedgerView

    wanted = ids.parse_key_id(key_id)[0]
    proofs = read_proofs(proofs_file)  # all of it: a damaged line or a second proof is refused
    if wanted not in proofs:
        raise BadInput(f"no proof for key {wanted} in {proofs_file}")
    record, root, proof = proofs[wanted]
    with ledger_client(chain) as ledger:
        view = LedgerView(ledger)
        view.sync()
        admitted = view.admit(record, root, proof)
        data = {
            "key_id": wanted,
            "root": "0x" + root.hex(),
            "anchored": view.anchor(root) is not None,
            "included_on_chain": ledger.verify_inclusion(root, proof, record.leaf()),
            "view": admitted,
            "status": view.status(wanted, ledger.chain.latest_timestamp())
            if admitted == "admitted"
            else "unknown",
        }
    report(data, as_json)


@contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for long work; ``advance(n)`` moves it on."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,  # a pipe or a log gets no bar (it left an empty line there)
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
