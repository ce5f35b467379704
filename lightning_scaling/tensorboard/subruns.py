"""The series' own runs: one event file writer per sub-directory of the logger's run directory.

TensorBoard colours lines by run, so the observed loss, the trend, the forecast and the band
ends each go into a run of their own (``layout.SERIES_RUNS``). TensorBoard orders runs, and
hands out its palette's colours, by the time of their first event: the writers are opened
together, in ``SERIES_RUNS`` order, at the first write (the target's only when there is
one, last).

A writer without a log directory (a stand-in, a custom writer) cannot have sub-runs: the
series then go to it, each tag followed by "/" and its run's name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from .layout import RUN_TARGET, SERIES_RUNS
from .writing import clean_values, write_scalars

#: Seconds between two flushes of the sub-runs' event files by their writers' own thread.
FLUSH_SECONDS = 30.0


class SeriesRuns:
    """Writers of the series' runs under ``logdir`` (None: everything into ``fallback``).

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as logdir:
    ...     runs = SeriesRuns(logdir)
    ...     written = runs.write("scaling_observed", 10, {"Scaling law/2 loss vs trend band": 2.5})
    ...     runs.close()
    ...     sorted(os.listdir(logdir))
    ['scaling_band_lower', 'scaling_band_upper', 'scaling_forecast', 'scaling_observed', 'scaling_trend']
    """

    def __init__(self, logdir: str | None, fallback: Any = None):
        self.logdir = logdir
        self.fallback = fallback
        self._writers: dict[str, EventFileWriter] = {}

    def directory(self, run: str) -> str | None:
        """The directory of ``run`` (None without a log directory)."""
        return None if self.logdir is None else os.path.join(self.logdir, run)

    def _writer(self, run: str) -> EventFileWriter:
        if not self._writers:
            for name in SERIES_RUNS:
                if name != RUN_TARGET:
                    self._writers[name] = EventFileWriter(self.directory(name), flush_secs=FLUSH_SECONDS)
        writer = self._writers.get(run)
        if writer is None:
            writer = self._writers[run] = EventFileWriter(self.directory(run), flush_secs=FLUSH_SECONDS)
        return writer

    def write(self, run: str, step: int, values: Mapping[str, Any]) -> int:
        """Write the finite ``values`` ({tag: number}) into ``run`` at ``step``, as one event;
        returns how many were written."""
        if self.logdir is None:
            return write_scalars(self.fallback, step, {f"{tag}/{run}": v for tag, v in values.items()})
        clean = clean_values(values)
        if clean:
            summary = Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in clean.items()])
            self._writer(run).add_event(Event(wall_time=time.time(), step=int(step), summary=summary))
        return len(clean)

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        """Close every writer (a later write opens new event files)."""
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()
