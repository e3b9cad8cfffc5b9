"""The vehicle simulator end to end on the embedded chain: small, seeded scenarios."""

from __future__ import annotations

import dataclasses
import itertools
import json
import signal
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vehicles import scenario as scenarios
from vehicles.cli import main
from vehicles.metrics import MessageRecord, Metrics, percentiles_ms
from vehicles.reception import Reception
from vehicles.simulate import confidence_interval, run
from vehicles.world import ANCHOR_POLL_S, LEDGER_SYNC_S, World, _next_tick, auto_session_workers

WALL_CLOCK_FIELDS = {"wall_s", "validation_latency_ms", "ledger", "outputs"}
SIMULATE_FIELDS = {
    "vehicles", "rsus", "duration_s", "cipher", "chain", "messages_sent", "messages_delivered", "pdr",
    "latency_ms", "validation_latency_ms", "ledger", "throughput_kbps", "energy_j", "keys", "rejected",
    "wall_s",
}  # fmt: skip
OUTPUT_FILES = {
    "config.json", "summary.json", "messages.csv", "keys.csv", "pdr_vs_distance.png", "latency_cdf.png",
    "validation_latency_cdf.png", "key_pool_levels.png", "ledger_records.png",
}  # fmt: skip


def small(cipher: str, **changes: object) -> scenarios.Scenario:
    base = scenarios.load("highway")
    keys = dataclasses.replace(base.keys, cipher=cipher, qkd_signals=100_000, refill_below_bits=8_192)
    road = dataclasses.replace(base.road, length_m=800.0, entry_rate_per_s=0.3)
    revocation = scenarios.RevocationConfig(vehicle=1, at_s=3.0)
    values = {
        "vehicles": 8,
        "rsus": 2,
        "duration_s": 6.0,
        "keys": keys,
        "road": road,
        "revocation": revocation,
    }
    return scenarios.validate(dataclasses.replace(base, **{**values, **changes}), origin="test")


@pytest.fixture(scope="module")
def aes_run():
    return run(small("aes-gcm"))


@pytest.fixture(scope="module")
def otp_run():
    return run(small("otp"))


def test_summary_has_the_documented_fields(aes_run) -> None:
    summary, _ = aes_run
    assert summary.keys() >= SIMULATE_FIELDS
    assert summary["messages_delivered"] > 0 and 0 < summary["pdr"] <= 1
    assert summary["keys"]["sessions"] > 0 and summary["ledger"]["records"] > 0
    assert set(summary["ledger"]) >= {"transactions", "tps", "records", "records_per_s"}


def test_same_seed_gives_an_identical_summary(aes_run) -> None:
    # QKD sessions on two worker processes, received frames opened on another, a step
    # behind, fading gains drawn ahead on a third
    again, world = run(small("aes-gcm"), session_workers=2, reception_worker=True, fading_worker=True)
    assert world.sessions.workers == 2 and world.reception.worker and world.fading.worker
    first, first_world = aes_run
    # small fleets: everything in process
    assert first_world.sessions.workers == 0 and not first_world.reception.worker
    assert not first_world.fading.worker
    assert first["rejected"]["replay"] > 0 and first["rejected"]["revoked"] > 0
    strip = lambda s: {k: v for k, v in s.items() if k not in WALL_CLOCK_FIELDS}  # noqa: E731
    assert strip(first) == strip(again)
    other, _ = run(small("aes-gcm", seed=2))
    assert strip(other) != strip(first)


def test_frames_spanning_a_departure_are_accounted_in_their_own_step() -> None:
    """A frame's receivers are numbered by the step it went on air in. Its end (in process)
    or its verdict (on the reception worker, a step later) can come after the vehicle with
    the highest node slot left the road (125 slots, then 124 here); both once failed."""
    base = scenarios.load("highway")
    leaving = scenarios.validate(
        dataclasses.replace(base, vehicles=120, rsus=5, duration_s=3.0), origin="test"
    )
    on_worker, world = run(leaving, reception_worker=True)
    in_process, _ = run(leaving, reception_worker=False)
    assert any(not v.active for v in world.vehicles.values())
    strip = lambda s: {k: v for k, v in s.items() if k not in WALL_CLOCK_FIELDS}  # noqa: E731
    assert strip(on_worker) == strip(in_process)


def test_otp_verdicts_opened_on_a_worker_match_in_process(otp_run) -> None:
    summary, _ = run(small("otp"), reception_worker=True)
    strip = lambda s: {k: v for k, v in s.items() if k not in WALL_CLOCK_FIELDS}  # noqa: E731
    assert strip(summary) == strip(otp_run[0]) and summary["messages_delivered"] > 0


def test_otp_never_reuses_a_pad_bit(otp_run) -> None:
    _, world = otp_run
    assert world.pad_segments, "the run sent no OTP message"
    used: dict[str, list[tuple[int, int]]] = {}
    for segment in world.pad_segments:
        used.setdefault(segment.key_id, []).append((segment.offset, segment.offset + segment.length))
    for key_id, spans in used.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"key {key_id}: pad bits {start}..{end} used twice"
        assert spans[-1][1] <= world.key_store[key_id].size
    consumed = sum(v.pool.bits_consumed for v in world.vehicles.values())
    assert consumed == sum(s.length for s in world.pad_segments)


def test_replayed_messages_are_rejected(aes_run) -> None:
    summary, world = aes_run
    assert world.replays_injected > 0
    assert summary["rejected"].get("replay", 0) >= world.replays_injected
    assert "replay-accepted" not in summary["rejected"]


def test_tampered_message_is_rejected(aes_run) -> None:
    _, world = aes_run
    vehicle = next(v for v in world.vehicles.values() if v.pool.bits_added and not v.banned)
    sealed = vehicle.cipher.encrypt(b"brake warning", vehicle.pool, world.env.now)
    wire = bytearray(sealed.to_bytes())
    wire[-20] ^= 0x01  # one bit of the ciphertext
    assert world._validate(sealed) == "ok"  # its key is valid on the ledger
    for worker in (False, True):  # opened here, and on a worker given the key relay's keys
        verdicts: list[str] = []
        with Reception(lambda items, batch, into=verdicts: into.extend(batch), worker=worker) as reception:
            for key_id, material in world.key_store.items():
                reception.add_key(key_id, material)
            for frame in (bytes(wire), sealed.to_bytes(), sealed.to_bytes()):
                reception.open(frame, None)
            reception.settle()
        # the genuine frame still opens, but only once
        assert verdicts == ["tampered", "ok", "replay"], worker


def test_revoked_vehicle_is_accepted_before_and_rejected_after(aes_run) -> None:
    summary, world = aes_run
    revoked, at = world.revoked_vehicle, world.revoked_at
    assert revoked is not None and at is not None
    mine = [m for m in world.metrics.messages if m.sender == revoked and m.key_id]
    before = [m for m in mine if m.sent_at < at]
    after = [m for m in mine if m.sent_at > at + LEDGER_SYNC_S + 0.01]
    assert before and after, "the revoked vehicle must send on both sides of the revocation"
    assert any(m.delivered for m in before) and not any(m.rejected for m in before)
    assert all(m.delivered == 0 for m in after)
    assert any(m.rejected for m in after)
    assert summary["rejected"]["revoked"] >= sum(m.rejected for m in after)


def test_pdr_falls_with_distance(aes_run) -> None:
    _, world = aes_run
    rows = world.metrics.pdr_by_distance()
    near = np.mean([r["pdr"] for r in rows if r["distance_m"] < 150])
    far = np.mean([r["pdr"] for r in rows if r["distance_m"] > 350])
    assert near > far


def test_keys_used_are_exactly_keys_recorded_on_the_ledger(otp_run) -> None:
    """Batched keys (the default): every key a message used is in a Merkle batch whose root is
    anchored on chain, and its proof verifies there; the chain holds no record that no session
    produced."""
    summary, world = otp_run
    recorded = set(world.view.key_ids())
    assert world.keys_used and world.keys_used <= recorded
    for key_id in world.keys_used:
        record = world.view.record(key_id)
        assert record is not None
        assert record.commitment.hex().removeprefix("0x") == world.key_commitment_of(key_id)
        anchored = next(a for b in world.batchers if (a := b.anchored(key_id)) is not None)
        assert world.ledger.verify_inclusion(anchored.root, list(anchored.proof), anchored.leaf)
    on_chain = world.ledger.stats()
    assert on_chain["sessions"] == 0  # nothing went through single-record transactions
    produced = len(world.metrics.key_rows) + summary["keys"]["awaiting_anchor"]
    assert on_chain["batched_records"] == produced == len(recorded) + summary["keys"]["awaiting_anchor"]


def test_single_record_anchoring_records_each_key() -> None:
    summary, world = run(
        small("otp", duration_s=3.0, keys=dataclasses.replace(small("otp").keys, anchoring="single"))
    )
    recorded = set(world.view.key_ids())
    assert world.keys_used and world.keys_used <= recorded
    assert world.ledger.stats()["sessions"] == len(recorded) == len(world.metrics.key_rows)
    assert summary["keys"]["anchoring"] == "single" and not world.batchers
    # one confirmation time per recordSession transaction, and a key is usable once recorded
    assert len(world.metrics.confirmation_s) == len(recorded)
    assert summary["ledger"]["confirmation_ms"]["p50"] > 0
    assert summary["keys"]["delivery_ms"]["p99"] == pytest.approx(0.0)


def test_batched_records_report_confirmation_and_delivery_times(aes_run) -> None:
    """Confirmation: one wall time per anchoring transaction. Delivery: simulated time from
    a session's end to its key in the pool, which waits for its batch (its age limit at
    most, plus the anchoring poll)."""
    summary, world = aes_run
    assert len(world.metrics.confirmation_s) == sum(b.batches for b in world.batchers) > 0
    assert summary["ledger"]["confirmation_ms"]["p50"] > 0
    waits = [row["usable_at"] - row["t"] for row in world.metrics.key_rows]
    assert summary["keys"]["delivery_ms"] == percentiles_ms(waits)
    assert min(waits) > 0 and max(waits) <= world.batchers[0].max_age_s + ANCHOR_POLL_S + 1e-9


def test_metric_definitions_on_a_hand_checked_case() -> None:
    metrics = Metrics(pdr_range_m=100.0)
    record = MessageRecord(1, "cam", 7, 0.0, 100, 150, "k", expected=0)
    metrics.on_air(record, np.array([10.0, 60.0, 90.0]))  # three receivers in range: bins 0, 1, 1
    record.expected = 3
    metrics.delivered(record, np.array([10.0, 90.0, 250.0]), latency_s=0.002)  # 250 m: beyond the range
    summary = metrics.summary(duration_s=2.0)
    assert summary["pdr"] == pytest.approx(2 / 3)
    assert summary["throughput_kbps"] == pytest.approx(3 * 800 / 2.0 / 1000)
    assert summary["mac_phy_overhead"] == pytest.approx(50 / 150)
    assert summary["latency_ms"]["p50"] == pytest.approx(2.0)
    assert [r["pdr"] for r in metrics.pdr_by_distance()] == [1.0, 0.5]


def test_weighted_percentiles_and_confidence_intervals() -> None:
    result = percentiles_ms([0.001, 0.002, 0.010], [98, 1, 1])
    assert result["p50"] == pytest.approx(1.0) and result["p99"] == pytest.approx(2.0)
    assert result["mean"] == pytest.approx((98 * 1 + 2 + 10) / 100)
    ci = confidence_interval([1.0, 2.0, 3.0])
    assert ci["mean"] == 2.0 and ci["ci95"] == pytest.approx(4.303 * 1.0 / 3**0.5)


def test_outputs_are_written(tmp_path: Path) -> None:
    summary, _ = run(small("aes-gcm", duration_s=2.0, vehicles=4), out_dir=tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert names >= OUTPUT_FILES
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 1
    assert json.loads((tmp_path / "summary.json").read_text())["messages_sent"] == summary["messages_sent"]


def test_ctrl_c_ends_the_run_as_a_shorter_scenario_would(tmp_path: Path) -> None:
    """A first SIGINT ends the run at the next mobility step, with everything up to then
    settled, summarised and written: the same as a run of that duration, the revocation
    at 3 s included. A second one interrupts at once."""
    interrupts = []

    def interrupt_after_half(fraction: float) -> None:
        if fraction >= 0.6 and not interrupts:
            interrupts.append(fraction)
            signal.raise_signal(signal.SIGINT)

    stopped, world = run(small("aes-gcm"), out_dir=tmp_path, progress=interrupt_after_half)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert stopped["interrupted"] and world.interrupted and 3.0 < stopped["duration_s"] < 4.5
    assert json.loads((tmp_path / "summary.json").read_text())["interrupted"] is True
    assert stopped["rejected"]["revoked"] > 0
    shorter, _ = run(small("aes-gcm", duration_s=stopped["duration_s"]))
    assert not shorter["interrupted"]
    strip = lambda s: {k: v for k, v in s.items() if k not in WALL_CLOCK_FIELDS | {"interrupted"}}  # noqa: E731
    assert strip(stopped) == strip(shorter)

    def interrupt_twice(fraction: float) -> None:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        run(small("aes-gcm", duration_s=1.0), progress=interrupt_twice)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class StoppedAtOnce(World):
    """A world told to stop before it starts, as by Ctrl-C during the set-up: it simulates
    its first step only."""

    def run(self) -> None:
        self.request_stop()
        super().run()


def test_an_interrupted_simulate_prints_what_it_covers_and_exits_130(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vehicles import simulate

    monkeypatch.setattr(simulate, "World", StoppedAtOnce)
    out = tmp_path / "run"
    code, err = _exit(capsys, "simulate", "--vehicles", "4", "--duration", "5", "--out", str(out))
    assert code == 130
    assert "interrupted: the summary and outputs cover the first 0.1 s of 5 s" in err
    assert json.loads((out / "summary.json").read_text())["duration_s"] == pytest.approx(0.1)


def test_interrupted_replications_report_the_runs_that_started(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while replications run: the runs under way end early and are reported (the
    pool processes, forked, inherit the patches); the seed not started is dropped."""
    from vehicles import simulate

    real_wait, calls = simulate.wait, []

    def interrupted_wait(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the parent's Ctrl-C, while two of three seeds run
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(simulate, "World", StoppedAtOnce)
    monkeypatch.setattr(simulate, "wait", interrupted_wait)
    out = tmp_path / "reps"
    argv = ("simulate", "--vehicles", "4", "--duration", "3", "--replications", "3", "--out", str(out))
    code, err = _exit(capsys, *argv)
    assert code == 130 and "interrupted: the report covers seed 1 0.1 s, seed 2 0.1 s of 3 s" in err
    report = json.loads((out / "replications.json").read_text())
    assert report["interrupted"] is True and report["seeds"] == [1, 2] and report["replications"] == 2
    assert all(run_["interrupted"] for run_ in report["runs"]) and not (out / "seed-3").exists()


def _exit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return int(info.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("[scenario\nname = 1", "not valid TOML"),
        ("[scenario]\nvehicles = 'many'", "scenario.vehicles must be an integer"),
        (
            "[scenario]\nspeed = 3",
            "unknown key scenario.speed (did you mean scenario.seed? [scenario] has name, duration_s",
        ),
        (
            "[radio]\ntx_power = 20",
            "unknown key radio.tx_power (did you mean radio.tx_power_dbm? [radio] has",
        ),
        ("[weather]\nrain = true", "unknown section [weather]"),
        ("vehicles = 40", "vehicles must sit in a section: put it under [scenario]"),
        ("colour = 3", "unknown setting colour outside any section"),
        ("[keys]\ncipher = 'rot13'", "keys.cipher must be one of"),
        ("[road]\nkind = 'roundabout'", "road.kind must be one of"),
        ("[scenario]\nduration_s = -1", "duration must be"),
        ("[revocation]\nvehicle = 2", "revocation needs both"),
        # values that used to fail only inside the run, with a traceback, or to hang it
        ("[keys]\nreconciliation = 'bogus'", "keys.reconciliation must be one of original, biconf, yanetal"),
        ("[road]\nlength_m = inf", "road.length_m must be a finite number, got inf"),
        ("[radio]\ntx_power_dbm = nan", "radio.tx_power_dbm must be a finite number, got nan"),
        ("[keys]\nkey_ttl_s = inf", "keys.key_ttl_s must be a finite number"),
        ("[traffic]\nv2i_hz = inf", "traffic.v2i_hz must be a finite number"),
        ("[traffic]\ndenm_rate_per_s = 1e9", "traffic.denm_rate_per_s must be in [0, 10]"),
        ("[road]\nlength_m = 1e9", "road.length_m must be between 100 and 100000"),
        ("[road]\nkind = 'sumo'\nsumo_config = 'nope.sumocfg'", "no SUMO configuration file"),
    ],
)
def test_bad_scenario_files_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, fragment: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    code, err = _exit(capsys, "simulate", "--scenario", str(path))
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert fragment in err, err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--scenario", "nowhere"], "no scenario file"),
        (["--vehicles", "-3"], "--vehicles"),
        (["--duration", "0"], "duration must be"),
        (["--cipher", "des"], "--cipher"),
        (["--vehicles", "2"], "revocation.vehicle 3 is not one of the starting vehicles (0-1)"),
        (["--vehicles", "2"], "or run with --no-revocation"),
        (["--replications", "0"], "--replications"),
        (["--chain", "mainnet-please", "--duration", "1"], "unknown chain"),
        (["--out", ""], "--out needs a directory name"),
        (["--replications", "2", "--qkd-workers", "0"], "--qkd-workers applies to a single run"),
        (["--bogus-flag"], "No such option"),
    ],
)
def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    code, err = _exit(capsys, "simulate", *argv)
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert fragment in err, err


def test_no_revocation_runs_a_bundled_scenario_with_fewer_vehicles_than_it_revokes(tmp_path: Path) -> None:
    """urban-grid revokes vehicle 5: with 5 vehicles it was refused, and no flag turned it off."""
    from click.testing import CliRunner

    from vehicles.cli import app

    argv = ["simulate", "--scenario", "urban-grid", "--vehicles", "5", "--duration", "1", "--json"]
    refused = CliRunner().invoke(app, argv)
    assert refused.exit_code == 2 and "or run with --no-revocation" in refused.output
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [*argv, "--no-revocation", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["vehicles_initial"] == 5 and summary["revocation"] == {"vehicle": None, "at_s": None}
    config = json.loads((out / "config.json").read_text())
    assert config["scenario"]["revocation"] == {"vehicle": None, "at_s": None}


@pytest.mark.parametrize("extra", [[], ["--replications", "2"]])
def test_an_unwritable_out_dir_exits_2_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, extra: list[str]
) -> None:
    """A bad --out is refused at once: it used to cost the whole run, then a traceback."""
    import vehicles.simulate

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a run started although its outputs could not be written")

    monkeypatch.setattr(vehicles.simulate, "connect", never)
    monkeypatch.setattr(vehicles.simulate, "ProcessPoolExecutor", never)
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "runs"
    code, err = _exit(capsys, "simulate", "--duration", "1", "--vehicles", "5", "--out", str(out), *extra)
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert f"cannot write outputs to {out}: {tmp_path / 'a-file'} is not a directory" in err, err


@pytest.mark.parametrize("extra", [[], ["--replications", "2"]])
def test_a_fleet_the_road_cannot_hold_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    """Found only when the road is built (in the replications' processes too): one line, not a traceback."""
    path = tmp_path / "short.toml"
    path.write_text("[road]\nlength_m = 100\n")
    code, err = _exit(
        capsys, "simulate", "--scenario", str(path), "--vehicles", "50", "--duration", "1", *extra
    )
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert "50 vehicles do not fit on the road: at most 42" in err, err


def test_the_scenario_chooses_the_chain_unless_a_flag_or_the_environment_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--chain had a default that always replaced [scenario] chain, so the file's was never used."""
    monkeypatch.delenv("QKDIOV_CHAIN", raising=False)
    path = tmp_path / "chain.toml"
    path.write_text("[scenario]\nchain = 'marsnet'\n")
    code, err = _exit(capsys, "simulate", "--scenario", str(path), "--duration", "1", "--vehicles", "4")
    assert code == 2 and "unknown chain 'marsnet'" in err, err
    small_run = ["simulate", "--scenario", str(path), "--duration", "1", "--vehicles", "4", "--json"]
    for chosen, argv in (("flag", [*small_run, "--chain", "embedded"]), ("env", small_run)):
        if chosen == "env":
            monkeypatch.setenv("QKDIOV_CHAIN", "embedded")
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert int(info.value.code or 0) == 0, chosen
        assert json.loads(capsys.readouterr().out)["chain"] == "embedded", chosen


def test_bench_sim_refuses_a_bad_duration(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit(capsys, "bench", "sim", "--duration", "0.5")
    assert (
        code == 2 and err.startswith("error:") and "--duration" in err and len(err.strip().splitlines()) == 1
    )


def test_bench_sim_quick_reports_its_fields(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "sim", "--quick", "--json"])
    assert int(info.value.code or 0) == 0
    report = json.loads(capsys.readouterr().out)
    for field in ("vehicles", "simulated_s", "wall_s", "realtime_factor", "events_per_s"):
        assert report[field] > 0, field
    assert [row["vehicles"] for row in report["scaling"]] == [20, 40]
    assert all(row["frames"] > 0 and row["events"] > 0 for row in report["scaling"])
    # one thread cannot use more CPU than the wall time it ran (1 ms: clock granularity)
    assert all(0 < row["main_cpu_s"] <= row["run_s"] + 1e-3 for row in report["scaling"])


def test_bench_sim_runs_the_sizes_asked_for(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "sim", "--vehicles", "12", "--duration", "1", "--json"])
    assert int(info.value.code or 0) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["vehicles"] for row in report["scaling"]] == [12] and report["vehicles"] == 12
    assert report["simulated_s"] == 1.0 and report["scaling"][0]["frames"] > 0
    with pytest.raises(SystemExit) as info:  # --quick used to replace a --duration given with 2 s
        main(["bench", "sim", "--quick", "--vehicles", "5", "--duration", "1", "--json"])
    quick = json.loads(capsys.readouterr().out)
    assert quick["simulated_s"] == 1.0 and [row["vehicles"] for row in quick["scaling"]] == [5]
    code, err = _exit(capsys, "bench", "sim", "--vehicles", "0")
    assert code == 2 and "--vehicles" in err and len(err.strip().splitlines()) == 1


def test_a_node_sends_one_frame_at_a_time_under_heavy_load() -> None:
    """Beacons, DENMs and V2I from one vehicle share its radio: a queue, never two frames at once."""
    heavy = small("aes-gcm", duration_s=4.0, vehicles=10)
    traffic = dataclasses.replace(heavy.traffic, etsi_triggers=False, denm_rate_per_s=50.0, v2i_hz=10.0)
    summary, world = run(dataclasses.replace(heavy, traffic=traffic))
    assert summary["messages_sent"] > 10 * 4 * 10  # and the channel never saw a node send two frames at once
    assert world.env.events_processed > 0
    # CAM checks keep a 100 ms clock of their own: queueing and air time never shift it
    gaps = []
    for sender in {m.sender for m in world.metrics.messages}:
        times = sorted(m.sent_at for m in world.metrics.messages if m.sender == sender and m.kind == "cam")
        gaps += np.diff(times).tolist()
    periods = np.asarray(gaps) / 0.1
    assert len(gaps) > 100 and np.allclose(periods, np.round(periods), atol=1e-6) and periods.min() > 0.5


def test_v2i_frames_go_to_the_nearest_roadside_unit(aes_run) -> None:
    """The per-step nearest-RSU table agrees with a search from each vehicle's position."""
    _, world = aes_run
    traffic = world.road.traffic
    assert len(traffic) > 0 and world.scenario.rsus > 1
    for row in range(len(traffic)):
        here = np.array([traffic.x[row], traffic.y[row]])
        assert world._nearest_rsu(row) == int(np.argmin(np.hypot(*(world.rsu_positions - here).T)))


def test_roadside_units_check_for_vehicles_on_one_shared_clock() -> None:
    """Key checks fall on multiples of the period, so sessions of vehicles that came into
    range of different RSUs start together (and run side by side on the QKD workers)."""
    assert [_next_tick(now, 0.5) for now in (0.0, 0.3, 0.5, 1.2345, 0.5 - 1e-12, 7.25)] == [
        0.5,
        0.5,
        1.0,
        1.5,
        1.0,  # a float a hair below a tick counts as on it: the next check is a period away
        7.5,
    ]


def test_replications_run_seeds_in_parallel_with_confidence_intervals(tmp_path: Path) -> None:
    from vehicles.simulate import replicate

    done: list[int] = []
    report = replicate(
        small("aes-gcm", duration_s=2.0, vehicles=4), 2, workers=2, out_dir=tmp_path, progress=done.append
    )
    assert report["seeds"] == [1, 2] and len(report["runs"]) == 2 and not report["interrupted"]
    assert done == [1, 2]  # the progress bar's count of ended runs
    # --out keeps every run's outputs and the report
    assert {p.name for p in tmp_path.iterdir()} == {"replications.json", "seed-1", "seed-2"}
    for seed, run_ in zip((1, 2), report["runs"], strict=True):
        assert {p.name for p in (tmp_path / f"seed-{seed}").iterdir()} >= OUTPUT_FILES
        written = json.loads((tmp_path / f"seed-{seed}" / "summary.json").read_text())
        assert written["seed"] == seed and written["messages_sent"] == run_["messages_sent"]
    assert json.loads((tmp_path / "replications.json").read_text())["metrics"] == report["metrics"]
    pdr = report["metrics"]["pdr"]
    values = [run_["pdr"] for run_ in report["runs"]]
    assert pdr["n"] == 2 and pdr["mean"] == pytest.approx(sum(values) / 2)
    assert pdr["ci95"] == pytest.approx(12.706 * abs(values[0] - values[1]) / 2**0.5 / 2**0.5)


def most_keys_of_one_vehicle(world) -> int:
    """How many keys the best-served vehicle received in the run."""
    return max(Counter(row["vehicle"] for row in world.metrics.key_rows).values(), default=0)


def test_otp_pools_are_topped_up_again_once_batched_keys_arrive(otp_run) -> None:
    """A vehicle that spends its pad gets another session once its last key was anchored
    (it used to stay marked as waiting for its first batch, so pools were never refilled)."""
    _, world = otp_run
    assert most_keys_of_one_vehicle(world) > 1


def test_an_otp_pool_too_small_for_one_message_is_topped_up() -> None:
    """A refill threshold below one message's pad bits must not strand a vehicle with a
    pool it can never spend."""
    keys = dataclasses.replace(small("otp").keys, refill_below_bits=0)
    _, world = run(small("otp", duration_s=4.0, keys=keys, revocation=scenarios.RevocationConfig()))
    assert most_keys_of_one_vehicle(world) > 1


@pytest.mark.parametrize(
    "changes",
    [
        {},  # every session gives a key; batches anchor by age
        {"qkd_signals": 30_000, "qkd_range_m": 400.0, "anchor_batch": 3},  # failures; batches fill
        {"qkd_signals": 30_000, "qkd_range_m": 400.0, "anchor_age_s": 2.0},  # retries before the age
    ],
    ids=["by-age", "failures-and-full-batches", "retry-before-age"],
)
def test_results_read_late_give_the_same_run(changes: dict[str, object]) -> None:
    """Reading a session's result only when something depends on it changes nothing."""
    scenario = small("otp", duration_s=5.0, keys=dataclasses.replace(small("otp").keys, **changes))
    strip = lambda s: {k: v for k, v in s.items() if k not in WALL_CLOCK_FIELDS}  # noqa: E731
    (now, world_now), (late, world_late) = (run(scenario, late_results=flag) for flag in (False, True))
    assert strip(late) == strip(now) and world_late.metrics.key_rows == world_now.metrics.key_rows
    assert now["keys"]["sessions"] > 0 and now["ledger"]["records"] > 0
    if changes:
        assert 0 < now["keys"]["aborted"] < now["keys"]["sessions"]
    else:
        assert now["messages_sent"] > 0


def test_senders_retire_a_key_when_the_ledger_says_it_expired() -> None:
    """A pool's key expires with its ledger record (created at the session's end, in whole
    chain seconds), not a batch later: frames refused as expired are only those on the air
    at that instant. Keys are renewed before they run out."""
    keys = dataclasses.replace(small("aes-gcm").keys, key_ttl_s=3.0)
    summary, world = run(small("aes-gcm", duration_s=8.0, keys=keys, revocation=scenarios.RevocationConfig()))
    expiry = {
        row["key_id"]: world.view.record(row["key_id"]).expires_at - world.chain_epoch
        for row in world.metrics.key_rows
    }
    refused = [m for m in world.metrics.messages if m.rejected and m.key_id]
    assert all(0 <= expiry[m.key_id] - m.sent_at < 0.05 for m in refused)
    assert summary["rejected"].get("expired", 0) <= 0.05 * summary["messages_delivered"]
    assert most_keys_of_one_vehicle(world) > 1  # some vehicle got a second key


@pytest.mark.parametrize(
    ("cipher", "vehicles", "duration_s", "cpus", "workers"),
    [
        ("aes-gcm", 40, 30.0, 2, 0),  # the default scenario: few sessions, in process
        ("aes-gcm", 100, 10.0, 2, 2),  # a large fleet
        ("otp", 40, 30.0, 2, 2),  # pad-hungry: sessions all run long
        ("otp", 8, 6.0, 2, 0),  # a short one-time-pad run: workers would cost more than they save
        ("otp", 40, 30.0, 1, 0),  # one core: nothing to run them on
        ("aes-gcm", 500, 10.0, 1, 0),
    ],
)
def test_qkd_workers_start_where_they_pay(
    cipher: str, vehicles: int, duration_s: float, cpus: int, workers: int
) -> None:
    scenario = small(cipher, vehicles=vehicles, duration_s=duration_s)
    assert auto_session_workers(scenario, cpus) == workers


def test_a_batch_replay_check_matches_one_frame_at_a_time() -> None:
    """World._fresh_batch against the definition, frame by frame: a receiver accepts a
    sender's frame only if its seq is newer than every one it accepted from that sender.
    Batches mix senders with several frames each (checked in rounds) and stale replays."""
    from types import SimpleNamespace

    from vehicles.crypto import Header
    from vehicles.world import World

    rng = np.random.default_rng(11)
    world = SimpleNamespace(_sender_rows={}, _newest_seq=np.zeros((0, 0), dtype=np.int64))
    world._grow_replay_table = World._grow_replay_table.__get__(world)
    newest: dict[tuple[str, int], int] = {}
    next_seq = dict.fromkeys(("car-1", "car-2", "car-3", "rsu-0"), 1)
    rounds_seen = 0
    for _ in range(60):
        frames = []
        for _ in range(int(rng.integers(1, 12))):
            sender = str(rng.choice(list(next_seq)))
            if rng.random() < 0.2:  # a replay of an old or current seq
                seq = int(rng.integers(1, next_seq[sender] + 1))
            else:
                seq = next_seq[sender] = next_seq[sender] + int(rng.integers(1, 3))
            slots = rng.choice(150, size=int(rng.integers(1, 9)), replace=False)
            frames.append((Header("aes-gcm", sender, seq, 0.0, "k"), slots))
        senders = [header.sender for header, _ in frames]
        rounds_seen = max(rounds_seen, max(senders.count(s) for s in senders))
        expected = []
        for header, slots in frames:
            for slot in slots.tolist():
                fresh = header.seq > newest.get((header.sender, slot), 0)
                expected.append(fresh)
                if fresh:
                    newest[(header.sender, slot)] = header.seq
        got = World._fresh_batch(world, frames)
        assert got.tolist() == expected
    assert rounds_seen >= 3 and world._newest_seq.shape[1] >= 150
