"""Opening received frames in this process or on a worker: same verdicts, same order."""

from __future__ import annotations

import numpy as np
import pytest

from vehicles import crypto
from vehicles.reception import Reception, ReceptionError


def _frames() -> tuple[dict[str, np.ndarray], list[bytes]]:
    rng = np.random.default_rng(5)
    pool = crypto.KeyPool("car-1")
    key = rng.integers(0, 2, 512).astype(np.uint8)
    pool.add("key-1", key, expires_at=100.0)
    cipher = crypto.AesGcmCipher("car-1", rekey_messages=3)
    wires = [cipher.encrypt(rng.bytes(40), pool, float(t)).to_bytes() for t in range(8)]
    tampered = bytearray(wires[2])
    tampered[-1] ^= 0x80
    unknown = crypto.AesGcmCipher("car-2")
    stranger = crypto.KeyPool("car-2")
    stranger.add("key-9", key, expires_at=100.0)
    # genuine, a replay, a tampered one, a key the relay never gave out, a cut-off frame
    frames = [
        *wires[:2],
        wires[0],
        bytes(tampered),
        *wires[3:],
        unknown.encrypt(b"x", stranger, 0.0).to_bytes(),
    ]
    return {"key-1": key}, [*frames, wires[7][:10]]


@pytest.mark.parametrize("worker", [False, True])
def test_verdicts_come_back_in_order_whatever_the_batches(worker: bool) -> None:
    keys, frames = _frames()
    expected = ["ok", "ok", "replay", "tampered", "ok", "ok", "ok", "ok", "ok", "unknown-key", "malformed"]
    seen: list[tuple[int, str]] = []
    batches: list[int] = []

    def apply(items: list[int], verdicts: list[str]) -> None:
        batches.append(len(items))
        seen.extend(zip(items, verdicts, strict=True))

    with Reception(apply, worker=worker) as reception:
        reception.wait_ready()
        for key_id, material in keys.items():
            reception.add_key(key_id, material)
        for index, frame in enumerate(frames):
            reception.open(frame, index)
            if index % 3 == 2:
                reception.flush()  # batches of three (with a worker, applied one flush behind)
                assert len(seen) == index + 1 - 3 * worker
        reception.settle()
    assert seen == list(enumerate(expected))
    assert batches == [3, 3, 3, 2]  # a batch per flush, the remainder at settle


def test_a_dead_worker_is_an_error_not_a_hang() -> None:
    with Reception(lambda items, verdicts: None, worker=True) as reception:
        reception.wait_ready()
        reception._worker.process.kill()  # type: ignore[union-attr]
        reception._worker.process.wait()  # type: ignore[union-attr]
        reception.open(b"frame", 0)
        with pytest.raises(ReceptionError, match="reception worker died"):
            reception.settle()


def test_a_dead_worker_ends_the_command_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker killed under the simulator (out of memory, say) is not the user's mistake:
    exit 1 with one line, no traceback."""
    from vehicles import simulate
    from vehicles.cli import main

    def dies(*args: object, **kwargs: object) -> None:
        raise ReceptionError("the reception worker died (exit status -9): the other side closed the pipe")

    monkeypatch.setattr(simulate, "run", dies)
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--duration", "1"])
    err = capsys.readouterr().err
    assert (
        info.value.code == 1
        and err.startswith("error: the reception worker died")
        and len(err.splitlines()) == 1
    )
