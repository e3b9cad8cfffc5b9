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
from qkd.workers import WorkerError


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


@bench.command("ledger")
@ledger_cli.chain_option
@click.option(
    "--records",
    type=click.IntRange(min=1, max=10_000_000),
    default=None,
    help="Key records to anchor in Merkle batches [default: 200000; --quick: 600].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1, max=65_536),
    default=None,
    help="Records per batch [default: 4096; --quick: 128].",
)
@click.option(
    "--baseline-records",
    type=click.IntRange(min=1, max=1_000_000),
    default=None,
    help="Single-record transactions for the baseline [default: 5000; --quick: 20].",
)
@click.option(
    "--accounts",
    type=click.IntRange(min=1, max=9),
    default=None,
    help="Key-manager accounts the transactions are spread over [default: 4; --quick: 2].",
)
@click.option(
    "--block-time",
    type=click.FloatRange(min=0),
    default=None,
    help="Interval mining on the anvil node the bench starts (--chain anvil) [default: 1 s; 0 = automine].",
)
@click.option(
    "--quick", is_flag=True, help="Small defaults (flags given still win): a smoke test, not a figure."
)
@ledger_cli.json_option
def bench_ledger(
    chain: str,
    records: int | None,
    batch_size: int | None,
    baseline_records: int | None,
    accounts: int | None,
    block_time: float | None,
    quick: bool,
    as_json: bool,
) -> None:
    """Mined key records/s in Merkle batches against one record per transaction; validation latency."""
    from ledger.bench import run_ledger_bench

    with ledger_cli.err.status("measuring") as status:
        report = run_ledger_bench(
            chain=chain,
            records=records,
            batch_size=batch_size,
            baseline_records=baseline_records,
            accounts=accounts,
            block_time=block_time,
            quick=quick,
            progress=lambda msg: status.update(msg),
        )
    qkd_cli.report_figures(report, as_json)


@bench.command("sim")
@ledger_cli.chain_option
@click.option(
    "--quick",
    is_flag=True,
    help="20 and 40 vehicles for 2 s (flags given still win): a smoke test, not a figure.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=1.0, max=600.0),
    default=None,
    help="Simulated seconds per size (longer runs show the rate after every vehicle has its first key) "
    "[default: 10; --quick: 2].",
)
@click.option(
    "--vehicles",
    "sizes",
    type=click.IntRange(min=1, max=5_000),
    multiple=True,
    help="Fleet size to run (repeatable) [default: 100, 200, 500 and 1000].",
)
@ledger_cli.json_option
def bench_sim(chain: str, quick: bool, duration: float | None, sizes: tuple[int, ...], as_json: bool) -> None:
    """Simulator speed: real-time factor and events/s, scaling over 100/200/500/1000 vehicles at 10 Hz."""
    from vehicles.bench import run_sim_bench

    with ledger_cli.err.status("measuring") as status:
        report = run_sim_bench(
            chain=chain,
            quick=quick,
            duration_s=duration,
            sizes=sizes or None,
            progress=lambda msg: status.update(msg),
        )
    qkd_cli.report_figures(report, as_json)


@app.command()
@click.option(
    "--scenario",
    "scenario_file",
    default=None,
    help="TOML file, or a bundled name: highway, urban-grid, sumo-grid (needs the sumo extra).",
)
@click.option("--vehicles", type=click.IntRange(min=0), default=None, help="Vehicles at the start.")
@click.option("--rsus", type=click.IntRange(min=1), default=None, help="Roadside units.")
@click.option("--duration", type=float, default=None, help="Simulated seconds.")
@click.option("--cipher", type=click.Choice(["otp", "aes-gcm"]), default=None)
@click.option(
    "--chain",
    default=None,
    envvar="QKDIOV_CHAIN",
    help=f"{ledger_cli.CHAINS_HELP} [default: the scenario's, embedded in the bundled ones]. "
    "Env: QKDIOV_CHAIN.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=None,
    help="The run's seed; replications use seed, seed+1, ...",
)
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Write JSON, CSV and plots here."
)
@click.option(
    "--replications",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Seeds to run in parallel processes, each metric reported with its 95% confidence interval.",
)
@click.option(
    "--no-revocation",
    is_flag=True,
    help="Revoke no vehicle during the run (the bundled scenarios revoke one part-way).",
)
@click.option(
    "--qkd-workers",
    type=click.IntRange(min=0, max=64),
    default=None,
    help="Processes for QKD sessions (0: in this one; default 2 from 100 vehicles up, and for "
    "one-time-pad runs from 400 vehicle-seconds). Same results.",
)
@ledger_cli.json_option
def simulate(
    scenario_file: str | None,
    vehicles: int | None,
    rsus: int | None,
    duration: float | None,
    cipher: str | None,
    chain: str | None,
    seed: int | None,
    out_dir: str | None,
    replications: int,
    no_revocation: bool,
    qkd_workers: int | None,
    as_json: bool,
) -> None:
    """Run the V2V/V2I simulation: QKD keys, ledger records, encrypted traffic, metrics."""
    from pathlib import Path

    from rich.progress import Progress

    from vehicles import scenario as scenarios
    from vehicles.report import OutputDirError
    from vehicles.simulate import replicate, run
    from vehicles.sumo import SumoUnavailable

    if out_dir is not None and not out_dir.strip():
        raise click.UsageError("--out needs a directory name")
    if replications > 1 and qkd_workers is not None:
        raise click.UsageError(
            "--qkd-workers applies to a single run: each replication runs its sessions in its own process"
        )
    try:
        base = scenarios.load(scenario_file if scenario_file is not None else "highway")
        chosen = base.with_overrides(
            vehicles=vehicles,
            rsus=rsus,
            duration_s=duration,
            seed=seed,
            chain=chain,
            revocation=scenarios.RevocationConfig() if no_revocation else None,
            **{"keys.cipher": cipher},
        )
    except scenarios.ScenarioError as exc:
        raise click.UsageError(str(exc)) from None
    out_path = Path(out_dir) if out_dir else None
    # mistakes found only once a run starts (a fleet the road cannot hold, no libsumo, --out)
    user_errors = (scenarios.ScenarioError, SumoUnavailable, OutputDirError)
    if replications > 1:
        with Progress(console=ledger_cli.err, transient=True, disable=not ledger_cli.err.is_terminal) as bar:
            task = bar.add_task(f"{replications} replications of {chosen.duration_s:g} s", total=replications)
            try:
                report = replicate(
                    chosen,
                    replications,
                    out_dir=out_path,
                    progress=lambda done: bar.update(task, completed=done),
                )
            except user_errors as exc:
                raise click.UsageError(str(exc)) from None
        if as_json:
            print(json.dumps(report))
            if report["interrupted"]:
                raise click.exceptions.Exit(130)
            return
        table = Table(
            title=f"{report['replications']} replications, seeds {report['seeds']}", title_justify="left"
        )
        for column in ("metric", "mean", "95% CI half-width"):
            table.add_column(column, justify="right")
        for name, ci in report["metrics"].items():
            table.add_row(name, _fmt(ci["mean"]), _fmt(ci["ci95"]))
        ledger_cli.out.print(table)
        if out_path:
            ledger_cli.out.print(f"report in {out_path / 'replications.json'}, each run's outputs in seed-*/")
        if report["interrupted"]:
            covered = ", ".join(f"seed {r['seed']} {r['duration_s']:g} s" for r in report["runs"])
            ledger_cli.err.print(
                f"interrupted: the report covers {covered or 'no run'} of {chosen.duration_s:g} s"
            )
            raise click.exceptions.Exit(130)
        return
    with Progress(console=ledger_cli.err, transient=True, disable=not ledger_cli.err.is_terminal) as bar:
        task = bar.add_task(f"simulating {chosen.duration_s:g} s", total=1.0)
        try:
            summary, _ = run(
                chosen,
                out_dir=out_path,
                progress=lambda fraction: bar.update(task, completed=fraction),
                session_workers=qkd_workers,
            )
        except user_errors as exc:
            raise click.UsageError(str(exc)) from None
    if as_json:
        print(json.dumps(summary))
    else:
        _print_simulation(summary, out_dir)
    if summary["interrupted"]:
        ledger_cli.err.print(
            f"interrupted: the summary{' and outputs' if out_dir else ''} cover the first "
            f"{summary['duration_s']:g} s of {chosen.duration_s:g} s"
        )
        raise click.exceptions.Exit(130)


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    return qkd_cli.figure(value)


def _print_simulation(s: dict, out_dir: str | None) -> None:
    table = Table(
        title=(
            f"{s['vehicles']} vehicles, {s['rsus']} RSUs, {s['duration_s']:g} s"
            f"{' (interrupted)' if s['interrupted'] else ''}, {s['cipher']}, chain {s['chain']}"
        ),
        title_justify="left",
        show_header=False,
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    lat, val, led, keys = s["latency_ms"], s["validation_latency_ms"], s["ledger"], s["keys"]
    rows = [
        ("messages sent / delivered", f"{s['messages_sent']:,} / {s['messages_delivered']:,}"),
        (f"PDR within {s['radio_range_m']:.0f} m", _fmt(s["pdr"])),
        ("latency p50 / p95 / p99 (ms)", f"{_fmt(lat['p50'])} / {_fmt(lat['p95'])} / {_fmt(lat['p99'])}"),
        ("validation p50 / p99 (ms, wall)", f"{_fmt(val['p50'])} / {_fmt(val['p99'])}"),
        ("throughput (kb/s)", _fmt(s["throughput_kbps"])),
        ("MAC/PHY overhead", _fmt(s["mac_phy_overhead"])),
        ("energy (J)", _fmt(s["energy_j"])),
        ("QKD sessions (aborted)", f"{keys['sessions']} ({keys['aborted']})"),
        ("key bits generated / consumed", f"{keys['bits_generated']:,} / {keys['bits_consumed']:,}"),
        ("ledger tx / records", f"{led['transactions']} / {led['records']}"),
        ("ledger tx/s, records/s (wall)", f"{_fmt(led['tps'])}, {_fmt(led['records_per_s'])}"),
        (
            "record confirmation p50 / p99 (ms, wall)",
            f"{_fmt(led['confirmation_ms']['p50'])} / {_fmt(led['confirmation_ms']['p99'])}",
        ),
        (
            "key ready after session p50 / p99 (ms)",
            f"{_fmt(keys['delivery_ms']['p50'])} / {_fmt(keys['delivery_ms']['p99'])}",
        ),
        ("rejected", ", ".join(f"{k} {v:,}" for k, v in s["rejected"].items()) or "none"),
        ("dropped at the sender", ", ".join(f"{k} {v:,}" for k, v in s["dropped"].items()) or "none"),
        ("wall time (s)", _fmt(s["wall_s"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    ledger_cli.out.print(table)
    if out_dir:
        ledger_cli.out.print(f"outputs (JSON, CSV, PNG plots) in {out_dir}/")


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
    except WorkerError as exc:  # a worker process died (killed, out of memory): not the user's doing
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
