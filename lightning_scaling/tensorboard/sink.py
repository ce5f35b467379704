"""The monitor's TensorBoard sink, and how the monitor finds the trainer's TensorBoardLogger."""

from __future__ import annotations

import json
import os
import time

from .drawing import FigureUpdates
from .layout import PanelTags
from .series import ScalarSeries
from .text import summary_markdown
from .timing import Stopwatch
from .view import MonitorView
from .writing import write_text


class TensorBoardSink:
    """Draws the monitor's forecasts in TensorBoard (the "Scaling law" panels).

    ``ScalingLawMonitor`` adds one by itself when the trainer has a TensorBoardLogger; build
    one yourself to change its options (``ScalingLawMonitor(sinks=[TensorBoardSink(logger,
    figure_every=5)])``). Called on rank zero only. It writes, at the trainer's global step:

    - every ``every`` optimizer steps (default: the trainer's ``log_every_n_steps``): the
      observed loss the monitor saw, the trend of the newest fit at this step with its band,
      the residual in noise units, cumulative FLOPs and tokens, and the loss on a compute step
      axis (:class:`~.series.ScalarSeries`; buffered, see ``MAX_BUFFERED``);
    - at every refit: the forecast of the final loss with its interval, the fitted parameters;
      the custom-scalars layout once, at the first refit that produced a fit;
    - figures (matplotlib, optional) every ``figure_every`` refits while their rendering has
      cost less than ``max_figure_overhead`` of the training time so far, and at the end
      (:class:`~.drawing.FigureUpdates`: drawn in a helper process; the final ones written
      off the training thread into an event file of their own, about 0.1-0.2 s after
      ``trainer.fit`` returns; ``wait_for_figures()`` waits for them, and so does an
      interpreter that exits first, up to ``figure_timeout``);
    - at the end: a markdown summary (text dashboard).

    What it reads of the monitor is :class:`~.view.MonitorView`.

    Args:
        logger: a TensorBoardLogger (its ``experiment`` is the SummaryWriter written to).
        writer: a SummaryWriter to use instead of ``logger.experiment``.
        every: optimizer steps between two writes of the per-step series.
        figures: draw figures at all.
        figure_every: refits between two figure updates.
        max_figure_overhead: share of training time the periodic figures may take (0.002),
            counting the helper's drawing CPU seconds and the training thread's own.
        figure_process: draw figures in a helper process (True) or on the training thread.
        figure_timeout: seconds the final figures are waited for at most (after training, by
            the background thread; by an exiting interpreter, what is left of them).

    >>> class Writer:  # a SummaryWriter stand-in: prints what it is given
    ...     def add_scalar(self, tag, value, step): print(step, tag, value)
    >>> sink = TensorBoardSink(writer=Writer(), every=10, figures=False)
    >>> trainer = type("Trainer", (), {"global_step": 1})()
    >>> sink.on_observation(trainer, None, None, [{"step": 1, "loss": 3.5}])
    >>> sink.close()  # writes what is buffered
    1 scaling/observed_loss 3.5
    """

    #: The per-step series are written in batches of at most this many, or this many seconds
    #: after the last batch (see :class:`~.series.ScalarSeries`).
    MAX_BUFFERED = 64
    MAX_BUFFER_SECONDS = 30.0

    def __init__(self, logger=None, *, writer=None, every: int | None = None, figures: bool = True,
                 figure_every: int = 10, max_figure_overhead: float = 0.002, figure_process: bool = True,
                 figure_timeout: float = 30.0):
        if logger is None and writer is None:
            raise ValueError("TensorBoardSink needs a TensorBoardLogger or a SummaryWriter")
        self.logger = logger
        self._writer = writer
        self.auto = False  # True when attach_tensorboard_sink added it
        self.every = every
        self.series: ScalarSeries | None = None  # made at the first hook
        self._refits = 0
        self._t0: float | None = None
        self._wall_t0 = 0.0
        #: seconds spent in this sink by kind of work ("figures": the periodic ones, "end": the
        #: final figures and text): wall clock, and CPU time of the calling thread
        self.stopwatch = Stopwatch(("observations", "refits", "figures", "end"))
        self.timings, self.cpu_timings = self.stopwatch.wall, self.stopwatch.cpu
        self.figure_updates = FigureUpdates(lambda: self.writer, self.stopwatch, enabled=figures,
                                            every=figure_every, max_overhead=max_figure_overhead,
                                            use_process=figure_process, timeout=figure_timeout)

    # -- read-outs -----------------------------------------------------------------------------
    @property
    def writer(self):
        """The SummaryWriter written to."""
        return self._writer if self._writer is not None else self.logger.experiment

    @property
    def seconds(self) -> float:
        """Wall seconds this sink has spent in all (scalars, layout, figures, text)."""
        return self.stopwatch.total

    @property
    def tags(self) -> PanelTags | None:
        """The tags written (with the logger's prefix), None before the first hook."""
        return None if self.series is None else self.series.tags

    @property
    def layout(self):
        """The custom-scalars layout written, None before the first fit."""
        return None if self.series is None else self.series.layout

    @property
    def compute_tag(self) -> str | None:
        """Tag of the loss on the compute step axis (its unit in the name), once chosen."""
        return None if self.series is None else self.series.compute_tag

    @property
    def figures_written(self) -> int:
        """Images written so far (the final ones once their thread has written them)."""
        return self.figure_updates.figures_written

    @property
    def figure_pid(self) -> int | None:
        """Process id of the helper that drew the latest figures (None: drawn in this process)."""
        return self.figure_updates.figure_pid

    @property
    def helper_cpu_seconds(self) -> float:
        """CPU seconds the figure helper process used (imports, warm-up, drawings)."""
        return self.figure_updates.helper_cpu_seconds

    def wait_for_figures(self, timeout: float | None = None) -> bool:
        """Wait (up to ``timeout`` s; None: as long as it takes, itself bounded by
        ``figure_timeout``) until the final figures of the last ``fit`` are in their event
        file. True when none are on their way any more (written, or given up)."""
        return self.figure_updates.wait(timeout)

    # -- hooks ---------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, monitor) -> None:
        self._ensure_setup(trainer)
        self._wall_t0 = time.time() - 1.0  # this fit's start (file times can be coarse)
        self.figure_updates.setup()

    def on_observation(self, trainer, pl_module, monitor, observations) -> None:
        series = self.series
        if series is not None and (not observations or not series.is_due(int(observations[-1]["step"]))):
            return  # nothing due: most calls end here, before any clock is read
        t = self.stopwatch.start()
        series = self._ensure_setup(trainer)
        view = MonitorView(monitor)
        series.observe(self.writer, observations, view.forecast, view.planned_steps)
        self.stopwatch.account("observations", t)

    def on_refit(self, trainer, pl_module, monitor, forecast) -> None:
        t = self.stopwatch.start()
        series = self._ensure_setup(trainer)
        view = MonitorView(monitor)
        writer = self.writer
        series.flush(writer, view.planned_steps)  # the refit thread is idle now: the GIL is free for a batch
        series.refit(writer, int(getattr(trainer, "global_step", forecast.step)), forecast)
        self._refits += 1
        self.stopwatch.account("refits", t)
        elapsed = time.perf_counter() - self._t0 if self._t0 is not None else None
        self.figure_updates.on_refit(trainer, view, self._refits, elapsed)

    def on_train_end(self, trainer, pl_module, monitor) -> None:
        series = self._ensure_setup(trainer)
        view = MonitorView(monitor)
        t = self.stopwatch.start()
        series.flush(self.writer, view.planned_steps)
        self.stopwatch.account("observations", t)
        figures = self.figure_updates
        try:
            # with a helper: the final job is sent now and drawn while the rest is written
            figures.write_final(trainer, view)
            self._write_summary_text(trainer, view)
            figures.finish()  # a writer without a log directory: the final figures go in it
            t = self.stopwatch.start()
            self.writer.flush()
            self.stopwatch.account("end", t)
        finally:
            figures.start_final()  # after the flush: its event file comes after the last record here

    def on_exception(self, trainer, pl_module, monitor, exception) -> None:
        """Training failed: write what is buffered and end the figure helper (no final figures)."""
        self.close()

    def close(self) -> None:
        """Write the buffered series and end the figure helper; the sink can be set up again."""
        if self.series is not None and self.series.due:
            self.series.flush(self.writer, None)
        self.figure_updates.close()

    # -- plumbing ------------------------------------------------------------------------------
    def _ensure_setup(self, trainer) -> ScalarSeries:
        if self.series is None:
            if self.every is None:
                self.every = max(1, int(getattr(trainer, "log_every_n_steps", 50) or 50))
            prefix = getattr(self.logger, "_prefix", "") or ""
            join = getattr(self.logger, "LOGGER_JOIN_CHAR", "-")
            tag_prefix = f"{prefix}{join}" if prefix else ""
            self.series = ScalarSeries(PanelTags().with_prefix(tag_prefix), self.every, tag_prefix,
                                       max_buffered=self.MAX_BUFFERED, max_buffer_seconds=self.MAX_BUFFER_SECONDS)
            self._t0 = time.perf_counter()
            self._wall_t0 = time.time() - 1.0  # file times can be coarse
        return self.series

    def _write_summary_text(self, trainer, view: MonitorView) -> None:
        t = self.stopwatch.start()
        summary = None
        path = view.summary_path  # the callback has just written it
        if path:
            try:
                if os.path.getmtime(path) < self._wall_t0:  # from an earlier fit
                    raise OSError("stale")
                with open(path, encoding="utf-8") as fh:
                    summary = json.load(fh)
            except (OSError, ValueError):
                summary = None
        if summary is None:
            summary = view.summary(trainer)
        write_text(self.writer, "scaling/summary", summary_markdown(summary), int(trainer.global_step))
        self.stopwatch.account("end", t)


# -- finding the logger and adding the sink --------------------------------------------------------


def is_tensorboard_logger(logger) -> bool:
    """True for Lightning's TensorBoardLogger (pytorch_lightning, lightning.pytorch or
    lightning_fabric flavour, subclasses included), recognised without importing any.

    >>> is_tensorboard_logger(type("TensorBoardLogger", (), {"experiment": None})())
    True
    >>> is_tensorboard_logger(object())
    False
    """
    return any(cls.__name__ == "TensorBoardLogger" for cls in type(logger).__mro__) and hasattr(logger, "experiment")


def find_tensorboard_logger(trainer):
    """The trainer's first TensorBoardLogger, or None."""
    for logger in getattr(trainer, "loggers", None) or []:
        if is_tensorboard_logger(logger):
            return logger
    return None


def attach_tensorboard_sink(monitor, trainer, **options) -> TensorBoardSink | None:
    """Add a :class:`TensorBoardSink` to ``monitor`` when the trainer logs to TensorBoard.

    Does nothing (returns None) without a TensorBoardLogger, when the monitor already has a
    TensorBoardSink the user configured or one added for this same logger by an earlier
    ``fit``, or when the monitor's ``tensorboard`` attribute is False. A sink added for
    another logger (the monitor reused with a new Trainer) is replaced.

    Of the monitor it uses ``tensorboard`` (bool), ``sinks`` (list) and ``add_sink(sink)``.
    """
    if getattr(monitor, "tensorboard", True) is False:
        return None
    logger = find_tensorboard_logger(trainer)
    if logger is None:
        return None
    sinks = getattr(monitor, "sinks", [])
    for existing in [s for s in sinks if isinstance(s, TensorBoardSink)]:
        if not existing.auto or existing.logger is logger:
            return None
        sinks.remove(existing)
    sink = TensorBoardSink(logger, **options)
    sink.auto = True
    if hasattr(monitor, "add_sink"):
        monitor.add_sink(sink)
    else:
        sinks.append(sink)
    return sink
