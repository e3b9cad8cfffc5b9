"""SUMO as the mobility engine: the same simulator, driven by a SUMO scenario.

Users of Veins, Artery and MOSAIC bring SUMO scenarios (``.sumocfg``). ``SumoRoad``
steps SUMO through ``libsumo`` (in-process, from PyPI: ``pip install 'qkd-iov[sumo]'``)
and exposes what the world needs from a road: ``traffic`` (the same struct of arrays
as the built-in roads), ``step(dt)`` with the vehicles that entered and left, and
``bounds()``. SUMO's string vehicle ids map to integers that are never reused, in order
of departure, as the built-in roads number theirs.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from .mobility import StepEvents, Traffic


class SumoUnavailable(RuntimeError):
    """libsumo is not installed: the ``sumo`` extra is optional."""


def _libsumo() -> Any:
    try:
        import libsumo
    except ImportError as exc:
        raise SumoUnavailable(
            "the SUMO road needs libsumo: pip install 'qkd-iov[sumo]' (eclipse-sumo and libsumo from PyPI)"
        ) from exc
    return libsumo


def sumo_home() -> Path:
    """Where eclipse-sumo installed its binaries and tools."""
    try:
        import sumo  # the eclipse-sumo wheel
    except ImportError as exc:
        raise SumoUnavailable("eclipse-sumo is not installed: pip install 'qkd-iov[sumo]'") from exc
    return Path(sumo.SUMO_HOME)


class SumoRoad:
    """Vehicles positioned by SUMO; one SUMO step per ``step(dt)`` of ``dt`` seconds."""

    def __init__(self, config_file: str | Path, *, seed: int, step_s: float = 0.1) -> None:
        path = Path(config_file)
        if not path.is_file():
            raise ValueError(f"no SUMO configuration file {path}")
        self._sumo = _libsumo()
        self.step_s = step_s
        self._sumo.start(
            ["sumo", "-c", str(path), "--step-length", str(step_s), "--seed", str(seed),
             "--no-step-log", "true", "--no-warnings", "true", "--duration-log.disable", "true"]
        )  # fmt: skip
        self._numbers: dict[str, int] = {}
        self._next_number = 0
        self.traffic = Traffic()
        self._bounds = self._sumo.simulation.getNetBoundary()
        self._refresh()

    def bounds(self) -> tuple[float, float, float, float]:
        (x0, y0), (x1, y1) = self._bounds
        return float(x0), float(y0), float(x1), float(y1)

    def step(self, dt: float) -> StepEvents:
        if not math.isclose(dt, self.step_s):
            raise ValueError(f"this SUMO run steps by {self.step_s} s, not {dt} s")
        before = set(self._numbers)
        self._sumo.simulationStep()
        self._refresh()
        now = set(self._numbers_present)
        entered = sorted(self._numbers[v] for v in now - before)
        exited = sorted(self._numbers[v] for v in before - now)
        for vehicle in before - now:
            del self._numbers[vehicle]
        return StepEvents(
            entered=np.array(entered, dtype=np.int64),
            exited=np.array(exited, dtype=np.int64),
            blocked_entries=0,
        )

    def _refresh(self) -> None:
        vehicle = self._sumo.vehicle
        present = list(vehicle.getIDList())
        for name in present:
            if name not in self._numbers:
                self._numbers[name] = self._next_number
                self._next_number += 1
        self._numbers_present = present
        ordered = sorted(present, key=self._numbers.__getitem__)
        n = len(ordered)
        xy = np.array([vehicle.getPosition(v) for v in ordered], dtype=float).reshape(n, 2)
        angle = np.array([vehicle.getAngle(v) for v in ordered], dtype=float)  # degrees, 0 = north, clockwise
        self.traffic = Traffic(
            ids=np.array([self._numbers[v] for v in ordered], dtype=np.int64),
            lane=np.zeros(n, dtype=np.int64),
            s=np.array([vehicle.getLanePosition(v) for v in ordered], dtype=float),
            speed=np.array([vehicle.getSpeed(v) for v in ordered], dtype=float),
            next_lane=np.full(n, -1, dtype=np.int64),
            halted=np.zeros(n, dtype=bool),
            x=xy[:, 0],
            y=xy[:, 1],
            heading=np.radians(90.0 - angle),
        )

    def close(self) -> None:
        self._sumo.close()


def write_grid_scenario(
    directory: Path, *, blocks: int = 3, block_m: float = 200.0, period_s: float = 2.0
) -> Path:
    """A small SUMO grid (netgenerate) with flows across it: for tests and for a first run."""
    home = sumo_home()
    netgenerate = shutil.which("netgenerate") or str(home / "bin" / "netgenerate")
    directory.mkdir(parents=True, exist_ok=True)
    net = directory / "grid.net.xml"
    subprocess.run(
        [netgenerate, "--grid", "--grid.number", str(blocks + 1), "--grid.length", str(block_m),
         "--default.lanenumber", "1", "-o", str(net)],
        check=True, capture_output=True,
    )  # fmt: skip
    last = chr(ord("A") + blocks)
    exit_edge = f"{last}{blocks - 1}{last}{blocks}"  # the top edge of the far column
    flow = '  <flow id="{name}" begin="0" end="3600" period="{period}" from="{start}" to="{end}"/>\n'
    routes = directory / "flows.rou.xml"
    routes.write_text(
        "<routes>\n"
        + flow.format(name="east", period=period_s, start="A0B0", end=exit_edge)
        + flow.format(name="north", period=period_s, start="A0A1", end=exit_edge)
        + "</routes>\n"
    )
    config = directory / "grid.sumocfg"
    config.write_text(
        "<configuration>\n"
        f'  <input><net-file value="{net.name}"/><route-files value="{routes.name}"/></input>\n'
        "</configuration>\n"
    )
    return config
