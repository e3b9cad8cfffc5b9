"""The ``qkdiov`` command: one entry point over the three layers.

Every user mistake ends with a one-line ``error: ...`` on stderr and exit status 2,
whether click rejects a flag or the ledger refuses a transaction.
"""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from ledger import cli as ledger_cli
from ledger.errors import LedgerError
from qkd import cli as qkd_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def app() -> None:
    """QKD-IoV: quantum-secured key management for the Internet of Vehicles."""


app.add_command(ledger_cli.node)
app.add_command(ledger_cli.deploy)
app.add_command(ledger_cli.console)
app.add_command(ledger_cli.app)
app.add_command(qkd_cli.qkd)


@app.group()
def bench() -> None:
    """Measure: print figures and ratios (docs/BENCHMARKS.md has the published ones)."""


bench.add_command(qkd_cli.bench_qkd)
bench.add_command(qkd_cli.bench_cascade)


@app.command()
@ledger_cli.chain_option
@ledger_cli.json_option
def demo(chain: str, as_json: bool) -> None:
    """Deploy on a fresh chain, register vehicles, record, verify, revoke, anchor: a summary."""
    from ledger.demo import run_demo

    with ledger_cli.err.status("starting") as status:
        report = run_demo(chain, progress=lambda msg: status.update(msg))
    if as_json:
        print(json.dumps(report.as_dict()))
        return
    table = Table(
        title=f"KeyLedger on {report.chain} (chain id {report.chain_id}) at {report.address}",
        title_justify="left",
    )
    for column in ("step", "transactions", "gas", "gas/tx", "seconds"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for s in report.steps:
        table.add_row(
            s.name, str(s.transactions), f"{s.gas:,}", f"{s.gas // s.transactions:,}", f"{s.seconds:.2f}"
        )
    out = ledger_cli.out
    out.print(table)
    out.print("key statuses now: " + ", ".join(f"{n} {k}" for k, n in sorted(report.statuses.items())))
    out.print("contract counters: " + ", ".join(f"{k} {v}" for k, v in report.stats.items()))
    out.print(
        f"Merkle inclusion proof accepted locally: {report.merkle_proof_local}, "
        f"on chain: {report.merkle_proof_on_chain}"
    )


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map user mistakes to one line and exit 2."""
    try:
        code = app.main(args=argv, prog_name="qkdiov", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else exc.format_message())
        sys.exit(0)
    except click.UsageError as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except LedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
