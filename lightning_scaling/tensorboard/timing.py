"""Where the sink's time goes: seconds by kind of work, wall clock and CPU."""

from __future__ import annotations

import time
from collections.abc import Iterable


class Stopwatch:
    """Seconds spent by kind of work: wall clock (``wall``) and CPU time of the calling thread
    (``cpu``: the training loop's; unlike wall time, blind to the load of other processes).

    >>> watch = Stopwatch(["refits"])
    >>> elapsed = watch.account("refits", watch.start())
    >>> elapsed >= 0 and watch.wall["refits"] == elapsed and watch.total == elapsed
    True
    """

    def __init__(self, kinds: Iterable[str]):
        self.wall = dict.fromkeys(kinds, 0.0)
        self.cpu = dict(self.wall)

    @staticmethod
    def start() -> tuple[float, float]:
        """The clocks now: (wall seconds, thread CPU seconds), for :meth:`account`."""
        return time.perf_counter(), time.thread_time()

    def account(self, kind: str, start: tuple[float, float]) -> float:
        """Add the time since ``start`` to ``kind``; returns the wall seconds added."""
        wall, cpu = time.perf_counter(), time.thread_time()
        self.wall[kind] += wall - start[0]
        self.cpu[kind] += cpu - start[1]
        return wall - start[0]

    @property
    def total(self) -> float:
        """Wall seconds of every kind together."""
        return sum(self.wall.values())
