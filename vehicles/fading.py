"""Nakagami fading gains from their own seeded streams, drawn ahead on a worker process.

Why: at 500 vehicles the channel draws 4.8 million fading gains in ten simulated seconds
(every link of every mobility step), which cost the simulating thread 0.38 s of its 5 s
(0.09 s with the worker); NumPy's Gamma sampler holds the GIL, so a thread cannot take them over,
and the second core idles once every vehicle holds its first key. The gains depend on
nothing the simulated world does, only on the seed and the Nakagami shape m, so they
come in fixed-size blocks from one generator per shape: block k of shape m is the same
array whether this process drew it or a worker drew it ahead. A run's results therefore
do not depend on ``worker``.

A worker is ``python -m vehicles.fading SEED BLOCK M...`` (see :mod:`qkd.workers`); it
imports only NumPy.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np

from qkd.workers import OneWorker, WorkerError, WorkerProcess, serve

BLOCK = 1 << 16
"""Gains per block: one block is a few ms of drawing and about 0.3 ms to ship."""

AHEAD = 2
"""Blocks of each shape requested ahead of the one in use, so one is always waiting."""


class FadingError(WorkerError):
    """The fading worker failed or died: the run cannot go on without its gains."""


def gains_db(rng: np.random.Generator, m: float, size: int) -> np.ndarray:
    """``size`` Nakagami power gains in dB: 10 log10 of Gamma(m, 1/m), unit mean."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(rng.gamma(m, 1.0 / m, size=size))


class _Streams:
    """One generator per shape, seeded by (seed, the shape's position in ``shapes``)."""

    def __init__(self, seed: int, shapes: Sequence[float], block: int) -> None:
        self.block = int(block)
        self._rngs = {float(m): np.random.default_rng([int(seed), i]) for i, m in enumerate(shapes)}

    def next_block(self, m: float) -> np.ndarray:
        return gains_db(self._rngs[float(m)], float(m), self.block)


class FadingGains(OneWorker):
    """``next_block(m)``: the next ``block`` gains of shape ``m``, in stream order.

    With ``worker``, blocks are drawn ahead on a worker process (``AHEAD`` per shape in
    flight); without, here when asked. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self, seed: int, shapes: Sequence[float], *, block: int = BLOCK, worker: bool = False
    ) -> None:
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        if not shapes or any(not m > 0 for m in shapes):
            raise ValueError(f"Nakagami shapes must be positive, got {list(shapes)}")
        self.seed = int(seed)
        self.shapes = tuple(float(m) for m in shapes)
        self.block = int(block)
        self.worker = bool(worker)
        self._local = None if worker else _Streams(self.seed, self.shapes, self.block)
        self._worker = (
            WorkerProcess(
                "vehicles.fading",
                [str(self.seed), str(self.block), *(repr(m) for m in self.shapes)],
                error=FadingError,
                what="the fading worker",
            )
            if worker
            else None
        )
        self._ahead: dict[float, deque[Future[np.ndarray]]] = {m: deque() for m in self.shapes}
        if self._worker is not None:
            for m in self.shapes:
                for _ in range(AHEAD):
                    self._ahead[m].append(self._worker.submit(m))

    def next_block(self, m: float) -> np.ndarray:
        m = float(m)
        if m not in self._ahead:
            raise ValueError(f"no fading stream of shape {m}: the streams are {list(self.shapes)}")
        if self._local is not None:
            return self._local.next_block(m)
        if self._worker is None:
            raise FadingError("the fading worker is closed")
        queue = self._ahead[m]
        queue.append(self._worker.submit(m))
        return queue.popleft().result()


if __name__ == "__main__":
    _seed, _block, *_shapes = sys.argv[1:]
    serve(_Streams(int(_seed), [float(m) for m in _shapes], int(_block)).next_block)
