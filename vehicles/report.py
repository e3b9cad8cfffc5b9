"""Write a run's outputs: config.json (with the seed), summary.json, CSVs and PNG plots.

Files are written to a temporary name and renamed, so an interrupted run never
leaves a half-written summary beside complete ones.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ledger.chain import os_error_reason

from .metrics import Metrics

PLOTS = (
    "pdr_vs_distance.png",
    "latency_cdf.png",
    "validation_latency_cdf.png",
    "key_pool_levels.png",
    "ledger_records.png",
)


class OutputDirError(ValueError):
    """The output directory cannot be created or written: a user's choice, said in one line."""


def prepare_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` and prove it writable before a run, so a bad ``--out`` costs
    seconds, not the whole simulation."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise OutputDirError(f"cannot write outputs to {out_dir}: {os_error_reason(exc)}") from None
    return out_dir


def write_json(path: Path, data: Any) -> Path:
    """JSON to ``path`` by way of a temporary file (never half-written)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def write_outputs(
    out_dir: Path, config: dict[str, Any], summary: dict[str, Any], metrics: Metrics
) -> list[Path]:
    prepare_out_dir(out_dir)
    written = [write_json(out_dir / "config.json", config), write_json(out_dir / "summary.json", summary)]
    written.append(_write_csv(out_dir / "messages.csv", [m.__dict__ for m in metrics.messages]))
    written.append(_write_csv(out_dir / "keys.csv", metrics.key_rows))
    written.append(_write_csv(out_dir / "pdr_by_distance.csv", metrics.pdr_by_distance()))
    written.extend(_plots(out_dir, metrics))
    return written


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    os.replace(tmp, path)
    return path


def _cdf(ax: Any, values_ms: np.ndarray, label: str) -> None:
    if values_ms.size:
        ordered = np.sort(values_ms)
        ax.plot(ordered, np.arange(1, ordered.size + 1) / ordered.size, label=label)
    ax.set_ylabel("fraction of messages")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)


def _plots(out_dir: Path, metrics: Metrics) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path.with_suffix(".tmp.png"), dpi=110)
        os.replace(path.with_suffix(".tmp.png"), path)
        plt.close(fig)
        paths.append(path)

    rows = metrics.pdr_by_distance()
    fig, ax = plt.subplots(figsize=(6, 4))
    if rows:
        ax.plot([r["distance_m"] for r in rows], [r["pdr"] for r in rows], marker="o")
    ax.set_xlabel("sender-receiver distance (m)")
    ax.set_ylabel("packet delivery ratio")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title("PDR against distance")
    save(fig, "pdr_vs_distance.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    _cdf(ax, np.asarray(metrics.latencies_s) * 1000, "end-to-end")
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_title("Latency CDF")
    save(fig, "latency_cdf.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    _cdf(ax, np.asarray(metrics.validation_ns) / 1e3, "local ledger view")
    ax.set_xlabel("key validation latency (us, wall clock)")
    ax.set_title("Validation latency CDF")
    save(fig, "validation_latency_cdf.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    if metrics.pool_samples:
        samples = np.asarray(metrics.pool_samples, dtype=float)
        for vehicle in np.unique(samples[:, 1])[:12]:
            mine = samples[samples[:, 1] == vehicle]
            ax.step(mine[:, 0], mine[:, 2] / 8192, where="post", lw=0.8)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("key pool (KiB)")
    ax.set_title("Key-pool levels (first 12 vehicles)")
    ax.grid(alpha=0.3)
    save(fig, "key_pool_levels.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    if metrics.ledger_samples:
        samples = np.asarray(metrics.ledger_samples, dtype=float)
        ax.step(samples[:, 0], samples[:, 1], where="post")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("key records on the ledger")
    ax.set_title("Ledger records over time")
    ax.grid(alpha=0.3)
    save(fig, "ledger_records.png")
    return paths
