"""``qkdiov qkd`` and ``qkdiov bench``: the JSON contract and one-line errors for bad flags."""

from __future__ import annotations

import json

import pytest

from vehicles.cli import main

JSON_FIELDS = {
    "protocol", "signals", "sifted_bits", "qber", "qber_upper_bound", "aborted", "abort_reason",
    "reconciliation", "keys_match", "final_key_bits", "secret_fraction", "key_id", "key_sha256", "timings_s",
}  # fmt: skip


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_qkd_json_has_the_documented_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "qkd", "--signals", "40000", "--depolarizing", "0.04", "--seed", "1", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report.keys() >= JSON_FIELDS
    assert report["keys_match"] is True and report["final_key_bits"] > 0
    assert set(report["reconciliation"]) >= {"method", "efficiency", "leaked_bits", "channel_uses"}
    assert report["timings_s"]["total"] >= max(v for k, v in report["timings_s"].items() if k != "total")


def test_qkd_skip_discarded_gives_a_key_from_the_same_sifting(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("qkd", "--signals", "40000", "--depolarizing", "0.04", "--seed", "1", "--json")
    full = json.loads(run(capsys, *argv)[1])
    code, out, err = run(capsys, *argv, "--skip-discarded")
    assert code == 0, err
    lean = json.loads(out)
    assert lean["keys_match"] is True and lean["sifted_bits"] == full["sifted_bits"]
    assert lean["key_sha256"] != full["key_sha256"]  # other Aer outcomes, the same bases and detections


def test_qkd_eve_aborts_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "qkd", "--signals", "20000", "--eve-fraction", "1", "--seed", "2", "--json")
    report = json.loads(out)
    assert code == 0 and report["aborted"] and report["keys_match"] is False
    assert "QBER" in report["abort_reason"]


def test_qkd_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "qkd", "--signals", "20000", "--protocol", "e91", "--seed", "3")
    assert code == 0
    assert "E91 session" in out and "CHSH" in out and "keys match" in out
    assert "…" not in out  # in 80 columns too: the key's hash folds, it is not cut


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["qkd", "--signals", "0"], "--signals"),
        (["qkd", "--signals", "many"], "--signals"),
        (["qkd", "--protocol", "b92"], "--protocol"),
        (["qkd", "--channel", "copper"], "--channel"),
        (["qkd", "--eve-fraction", "1.5"], "eve fraction"),
        (["qkd", "--depolarizing", "-0.1"], "depolarizing"),
        (["qkd", "--channel", "fiber", "--distance-km", "-5"], "distance"),
        (["qkd", "--eps-sec", "0"], "eps-sec"),
        (["qkd", "--reconciliation", "ldpc"], "--reconciliation"),
        (["qkd", "--protocol", "e91", "--skip-discarded"], "BB84 only"),
        (
            ["qkd", "--signals", "1000", "--fiber-preset", "modern"],
            "--fiber-preset applies only to the fiber",
        ),
        (
            ["qkd", "--signals", "1000", "--channel", "free-space", "--fiber-preset", "gys"],
            "add --channel fiber",
        ),
        (["bench", "cascade", "--frames", "0"], "--frames"),
        (["bench", "teleport"], "teleport"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:"), err
    assert fragment in err


def test_bench_qkd_quick_reports_its_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "bench", "qkd", "--quick", "--json")
    assert code == 0, err
    report = json.loads(out)
    for field in ("signals_per_s", "sifted_only_signals_per_s", "naive_signals_per_s", "speedup",
                  "cascade_bits_per_s", "amplification_bits_per_s", "session_s",
                  "final_key_bits_per_s"):  # fmt: skip
        assert report[field] > 0, field
    assert report["keys_match"] is True
    assert report["speedup"] == pytest.approx(
        report["signals_per_s"] / report["naive_signals_per_s"], rel=0.01
    )


def test_bench_cascade_quick_rows(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "bench", "cascade", "--quick", "--json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert {r["method"] for r in rows} == {"original", "biconf", "yanetal"}
    for row in rows:
        assert set(row) >= {"method", "qber", "n", "frames", "efficiency_mean", "frame_error_rate",
                            "channel_uses_mean", "bits_per_s"}  # fmt: skip
        assert 1.0 < row["efficiency_mean"] < 1.6 and 0 <= row["frame_error_rate"] <= 1
    side_by_side = json.loads(out)["side_by_side"]  # the bench checks the results agree
    assert [r["together"] for r in side_by_side] == [1, 4, 16]
    assert all(r["ms_per_frame"] > 0 for r in side_by_side)


def test_bench_tables_show_every_figure_in_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A list of wide rows (the simulator's scaling: 18 fields) is printed one row per
    field, so no name or figure is cut to "..."; narrow rows stay one row per entry."""
    import io

    from rich.console import Console

    from qkd import cli as qkd_cli

    fields = [f"field_number_{i}" for i in range(18)]
    wide = [{"vehicles": n, **{f: n + i + 0.25 for i, f in enumerate(fields)}} for n in (100, 500, 1000)]
    narrow = [{"together": n, "ms": 0.25 * n} for n in (1, 4)]
    screen = io.StringIO()
    monkeypatch.setattr(qkd_cli, "out", Console(file=screen, width=80))
    qkd_cli.report_figures({"chain": "anvil", "scaling": wide, "side_by_side": narrow}, as_json=False)
    printed = screen.getvalue()
    assert "…" not in printed and max(map(len, printed.splitlines())) <= 80
    lines = printed.splitlines()
    for i, field in enumerate(fields):
        row = next(line for line in lines if f" {field} " in line)
        assert [f" {qkd_cli.figure(n + i + 0.25)} " in row for n in (100, 500, 1000)] == [True] * 3
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    assert ["1", "0.25"] in cells and ["4", "1"] in cells  # narrow rows: one per entry


def test_tables_print_large_figures_whole_and_grouped() -> None:
    """132,300 kb/s, not 1.323e+05; small figures keep four significant digits."""
    from qkd.cli import figure

    assert [figure(v) for v in (132_300.4, 9_999.9, 6_280.2, 999.4, 0.69771, 1.2e-5, -12_345.6)] == [
        "132,300", "10,000", "6,280", "999.4", "0.6977", "1.2e-05", "-12,346",
    ]  # fmt: skip
    assert [figure(v) for v in (7, "anvil", None, float("inf"))] == ["7", "anvil", "None", "inf"]
