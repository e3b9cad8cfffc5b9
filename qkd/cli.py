"""``qkdiov qkd`` and ``qkdiov bench qkd|cascade``: thin front ends over the engine.

Bad flags become ``click.UsageError`` (one line, exit 2, via the root ``main``);
progress goes to stderr so ``--json`` output stays one object on stdout.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

out = Console()
err = Console(stderr=True)

CHANNELS = ("ideal", "fiber", "free-space")


@contextmanager
def progress_bar(enabled: bool, total: float = 1.0) -> Iterator[Callable[[str, float], None]]:
    """A transient rich bar on stderr; yields ``update(stage, fraction_done)``."""
    if not enabled:
        yield lambda stage, fraction: None
        return
    bar = Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    with bar:
        task = bar.add_task("starting", total=total)
        yield lambda stage, fraction: bar.update(task, description=stage, completed=fraction)


def _usage(fn: Callable[[], Any]) -> Any:
    """Turn the engine's ValueError on bad parameters into a one-line usage error."""
    try:
        return fn()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@click.command()
@click.option(
    "--signals", type=click.IntRange(min=1), default=100_000, show_default=True, help="Signals Alice sends."
)
@click.option("--protocol", type=click.Choice(["bb84", "e91"]), default="bb84", show_default=True)
@click.option("--channel", "channel_name", type=click.Choice(CHANNELS), default="ideal", show_default=True)
@click.option(
    "--distance-km", type=float, default=None, help="Link length (fiber default 10 km, free-space 0.1 km)."
)
@click.option(
    "--fiber-preset",
    type=click.Choice(["gys", "modern"]),
    default="gys",
    show_default=True,
    help="Detector and fibre parameters for --channel fiber.",
)
@click.option("--depolarizing", type=float, default=0.0, show_default=True, help="Depolarizing p (QBER p/2).")
@click.option("--bitflip", type=float, default=0.0, show_default=True, help="Z-basis-only bit-flip p.")
@click.option("--eve-fraction", type=float, default=0.0, show_default=True, help="Intercept-resend fraction.")
@click.option(
    "--reconciliation",
    type=click.Choice(["original", "biconf", "yanetal"]),
    default="biconf",
    show_default=True,
    help="Cascade parameter set (Martinez-Mateo et al. 2015).",
)
@click.option("--eps-sec", type=float, default=1e-10, show_default=True)
@click.option("--eps-cor", type=float, default=1e-15, show_default=True)
@click.option(
    "--sample-fraction", type=float, default=0.1, show_default=True, help="Sifted bits disclosed for QBER."
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=None, help="Seed: the same seed gives the same run."
)
@click.option(
    "--skip-discarded",
    is_flag=True,
    help="BB84: skip the outcomes sifting discards (same key distribution, about half the Aer work).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def qkd(
    signals: int,
    protocol: str,
    channel_name: str,
    distance_km: float | None,
    fiber_preset: str,
    depolarizing: float,
    bitflip: float,
    eve_fraction: float,
    reconciliation: str,
    eps_sec: float,
    eps_cor: float,
    sample_fraction: float,
    seed: int | None,
    skip_discarded: bool,
    as_json: bool,
) -> None:
    """Run one QKD session (BB84 or E91 on Qiskit Aer) and report it."""
    from . import channel as channels
    from .session import SessionConfig, run_session

    preset_source = click.get_current_context().get_parameter_source("fiber_preset")
    if channel_name != "fiber" and preset_source is not ParameterSource.DEFAULT:
        raise click.UsageError(
            f"--fiber-preset applies only to the fiber channel, not {channel_name}: add --channel fiber"
        )
    overrides: dict[str, Any] = {}
    if distance_km is not None:
        overrides["distance_km"] = distance_km
    if channel_name == "fiber":
        overrides["preset"] = fiber_preset
    link = _usage(
        lambda: channels.build(channel_name, depolarizing=depolarizing, bitflip=bitflip, **overrides)
    )
    config = _usage(
        lambda: SessionConfig(
            channel=link,
            signals=signals,
            protocol=protocol,
            eve_fraction=eve_fraction,
            reconciliation=reconciliation,
            eps_sec=eps_sec,
            eps_cor=eps_cor,
            sample_fraction=sample_fraction,
            seed=seed,
            simulate_discarded=not skip_discarded,
        )
    )
    with progress_bar(enabled=err.is_terminal and signals >= 200_000) as update:
        result = run_session(config, progress=update)
    report = result.as_dict()
    if as_json:
        print(json.dumps(report))
        return
    _print_session(report)


def _print_session(r: dict[str, Any]) -> None:
    table = Table(
        title=f"{r['protocol'].upper()} session {r['key_id']}", title_justify="left", show_header=False
    )
    table.add_column("field")
    # a narrow console folds the key's hash onto two lines instead of cutting it to "..."
    table.add_column("value", justify="right", overflow="fold")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.3%}"

    ch = r["channel"]
    table.add_row("channel", f"{ch['name']}, {ch['distance_km']} km, transmittance {ch['transmittance']:.3g}")
    table.add_row("noise", r["noise"])
    table.add_row("eavesdropper", f"intercept-resend on {r['eve_fraction']:.0%} of signals")
    table.add_row(
        "signals / detected / sifted", f"{r['signals']:,} / {r['detected']:,} / {r['sifted_bits']:,}"
    )
    if r["chsh"]:
        c = r["chsh"]
        table.add_row(
            "CHSH S (lower bound)", f"{c['s']:.3f} ± {c['s_std_error']:.3f} ({c['s_lower_bound']:.3f})"
        )
    table.add_row("QBER sample / upper bound", f"{pct(r['qber'])} / {pct(r['qber_upper_bound'])}")
    table.add_row("QBER of the whole sifted key", pct(r["actual_qber"]))
    rec = r["reconciliation"]
    if rec:
        eff = "-" if rec["efficiency"] is None else f"{rec['efficiency']:.3f}"
        table.add_row(
            f"Cascade ({rec['method']})",
            f"leaked {rec['leaked_bits']:,} bits, f = {eff}, {rec['channel_uses']} round trips",
        )
    status = f"ABORTED: {r['abort_reason']}" if r["aborted"] else "ok"
    table.add_row("status", status)
    table.add_row("final key bits", f"{r['final_key_bits']:,} ({r['secret_fraction']:.4%} of signals)")
    table.add_row("keys match", str(r["keys_match"]))
    if r["key_sha256"]:
        table.add_row("key sha256", r["key_sha256"])
    for name, value in r["rates"].items():
        table.add_row(name.replace("_", " "), figure(value))
    table.add_row("time", ", ".join(f"{k} {v:.3f} s" for k, v in r["timings_s"].items()))
    out.print(table)


@click.command("qkd")
@click.option("--quick", is_flag=True, help="Small sizes: seconds, for smoke tests (figures not comparable).")
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_qkd(quick: bool, seed: int, as_json: bool) -> None:
    """Quantum-stage, Cascade and amplification throughput, and a full 10^6-signal session."""
    from .bench import run_qkd_bench

    with progress_bar(enabled=err.is_terminal) as update:
        report = run_qkd_bench(quick=quick, seed=seed, progress=update)
    report_figures(report, as_json)


@click.command("cascade")
@click.option("--quick", is_flag=True, help="Few frames and small n: for smoke tests.")
@click.option("--frames", type=click.IntRange(min=1), default=None, help="Frames per row (default by n).")
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_cascade(quick: bool, frames: int | None, seed: int, as_json: bool) -> None:
    """Cascade efficiency, frame error rate, round trips and speed per method, QBER and n."""
    from .bench import run_cascade_bench

    with progress_bar(enabled=err.is_terminal) as update:
        report = run_cascade_bench(quick=quick, frames=frames, seed=seed, progress=update)
    report_figures(report, as_json)


def report_figures(report: dict[str, Any], as_json: bool) -> None:
    """Benchmark figures: one JSON object, or a table of scalars and one table per list of rows."""
    if as_json:
        print(json.dumps(report))
        return
    scalars = {k: v for k, v in report.items() if not isinstance(v, list | dict)}
    table = Table(show_header=False)
    for key, value in scalars.items():
        table.add_row(key, figure(value))
    out.print(table)
    for key, value in report.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            out.print(_listing(key, value, out.width))


def figure(value: Any) -> str:
    """A number as people read it in a table: four significant digits, but from 1,000 up
    whole and grouped (132,300, where .4g gives 1.323e+05); small ones stay .4g (1.2e-05)."""
    if not isinstance(value, float):
        return str(value)
    if math.isfinite(value) and abs(value) >= 999.5:  # what .4g would round to 1,000 or more
        return f"{value:,.0f}"
    return f"{value:,.4g}"


def _listing(title: str, rows: list[dict[str, Any]], width: int) -> Table:
    """A list of rows as a table, one row per entry; transposed (one row per field, one
    column per entry, headed by its first field) when the plain one is wider than
    ``width`` and the transposed one is narrower: the simulator's scaling rows have 18
    fields, which rich cut to "..." in 80 columns."""
    fields = list(rows[0])
    table = Table(title=title, title_justify="left")
    for field in fields:  # too narrow a console folds a cell onto two lines: no "..." for a figure
        table.add_column(field, justify="right", overflow="fold")
    for row in rows:
        table.add_row(*(figure(row.get(field, "")) for field in fields))
    plain_width = _natural_width(table)
    if plain_width <= width:
        return table
    turned = Table(title=title, title_justify="left")
    turned.add_column(fields[0], justify="left", no_wrap=True, min_width=max(map(len, fields)))
    for row in rows:
        turned.add_column(figure(row.get(fields[0], "")), justify="right", overflow="fold")
    for field in fields[1:]:
        turned.add_row(field, *(figure(row.get(field, "")) for row in rows))
    return turned if _natural_width(turned) < plain_width else table


def _natural_width(table: Table) -> int:
    """Columns the table needs to print without cutting a cell."""
    return Console(width=10_000).measure(table).maximum
