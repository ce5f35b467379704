"""The monitor's TensorBoard sink, and how the monitor finds the trainer's TensorBoardLogger."""

from __future__ import annotations

import json
import os
import time

from .drawing import FigureUpdates
from .figure_data import figure_jobs
from .layout import PanelTags
from .numeric import finite
from .series import ScalarSeries
from .state import PanelState
from .status import panel_status
from .subruns import SeriesRuns
from .text import summary_markdown
from .timing import Stopwatch
from .view import MonitorView
from .writing import log_dir_of, write_text


class TensorBoardSink:
    """Draws the monitor's forecasts in TensorBoard (the "Scaling law" panels).

    ``ScalingLawMonitor`` adds one by itself when the trainer has a TensorBoardLogger; build
    one yourself to change its options (``ScalingLawMonitor(sinks=[TensorBoardSink(logger,
    figure_every=5)])``). Called on rank zero only. What it draws, and in which runs and tags,
    is in ``layout``'s docstring; the numbers are ``state``'s. It writes, at the trainer's
    global step:

    - every ``every`` optimizer steps (default: the trainer's ``log_every_n_steps``): the
      smoothed loss, the trend it is compared with and its band, how far behind the trend the
      run is (:class:`~.series.ScalarSeries`; buffered, see ``MAX_BUFFERED``);
    - at every refit: the forecast of the final loss with its interval, the target, the
      fitted parameters; the custom-scalars layout whenever the law in use changes; the
      markdown summary when an event came or ``TEXT_EVERY`` of the run has passed since the
      last;
    - figures (matplotlib, optional) every ``figure_every`` refits while their rendering has
      cost less than ``max_figure_overhead`` of the training time so far, and at the end
      (:class:`~.drawing.FigureUpdates`: drawn in a helper process; the final ones written
      off the training thread into an event file of their own, about 0.1-0.2 s after
      ``trainer.fit`` returns; ``wait_for_figures()`` waits for them, and so does an
      interpreter that exits first, up to ``figure_timeout``);
    - at the end: the last point, the summary with the final verdict.

    What it reads of the monitor is :class:`~.view.MonitorView`; of the events
    (``on_event``), the dicts' ``kind``, ``step``, ``message`` and, for "behind_trend", the
    ``detail``'s ``since_step`` and ``reference_step``.

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

    >>> class Writer:  # a SummaryWriter stand-in without a log directory: prints what it gets
    ...     def add_scalar(self, tag, value, step): print(step, tag, value)
    >>> sink = TensorBoardSink(writer=Writer(), every=10, figures=False)
    >>> trainer = type("Trainer", (), {"global_step": 1})()
    >>> sink.on_observation(trainer, None, None, [{"step": 1, "loss": 3.5}])
    >>> sink.close()  # writes what is buffered
    1 Scaling law/2 loss vs trend band/scaling_observed 3.5
    1 scaling/margin/loss/scaling_observed 3.5
    1 scaling/margin/loss_lower/scaling_observed 3.5
    1 scaling/margin/loss_upper/scaling_observed 3.5
    1 Scaling law/3 behind trend, % above/scaling_observed 0.0
    """

    #: The per-step series are written in batches of at most this many, or this many seconds
    #: after the last batch (see :class:`~.series.ScalarSeries`).
    MAX_BUFFERED = 64
    MAX_BUFFER_SECONDS = 30.0
    #: The summary text is rewritten at a refit once this share of the planned run (of the
    #: steps so far when the end is unknown) has passed since the last, or an event came.
    TEXT_EVERY = 0.1

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
        self._text_step: int | None = None  # step of the last summary text
        self._events_seen = 0  # events when the last summary text was written
        self._finished = False  # a fit ended (the next setup starts afresh)
        #: seconds spent in this sink by kind of work ("figures": the periodic ones, "end": the
        #: final figures and text): wall clock, and CPU time of the calling thread
        self.stopwatch = Stopwatch(("observations", "refits", "figures", "end"))
        self.timings, self.cpu_timings = self.stopwatch.wall, self.stopwatch.cpu
        self.figure_updates = FigureUpdates(lambda: self.writer, self._figure_jobs, self.stopwatch, enabled=figures,
                                            every=figure_every, max_overhead=max_figure_overhead,
                                            use_process=figure_process, timeout=figure_timeout)

    # -- read-outs -----------------------------------------------------------------------------
    @property
    def writer(self):
        """The SummaryWriter written to (the main run)."""
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
        """The custom-scalars layout written last, None before the first fit."""
        return None if self.series is None else self.series.layout

    @property
    def state(self) -> PanelState | None:
        """What the panels derived (smoothed loss, episodes, events), None before the first hook."""
        return None if self.series is None else self.series.state

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
        if self._finished:  # a new fit: its own series, state and text
            self.series, self._text_step, self._events_seen, self._finished = None, None, 0, False
        self._ensure_setup(trainer)
        self._wall_t0 = time.time() - 1.0  # this fit's start (file times can be coarse)
        self.figure_updates.setup()

    def on_observation(self, trainer, pl_module, monitor, observations) -> None:
        if not observations:
            return
        t = self.stopwatch.start()
        series = self._ensure_setup(trainer)
        series.observe(observations, MonitorView(monitor).planned_steps if monitor is not None else None)
        self.stopwatch.account("observations", t)

    def on_refit(self, trainer, pl_module, monitor, forecast) -> None:
        t = self.stopwatch.start()
        series = self._ensure_setup(trainer)
        view = MonitorView(monitor)
        writer = self.writer
        series.flush()  # the refit thread is idle now: the GIL is free for a batch
        step = int(getattr(trainer, "global_step", forecast.step))
        series.refit(writer, step, forecast, view.level)
        self._refits += 1
        self._maybe_write_text(trainer, view, step)
        self.stopwatch.account("refits", t)
        elapsed = time.perf_counter() - self._t0 if self._t0 is not None else None
        self.figure_updates.on_refit(trainer, view, self._refits, elapsed)

    def on_event(self, trainer, pl_module, monitor, event) -> None:
        """A monitor event (behind trend, divergence, stop, ...): marked, and a behind-trend
        event opens an episode that holds the trend the run fell behind."""
        t = self.stopwatch.start()
        self._ensure_setup(trainer).state.on_event(event)
        self.stopwatch.account("refits", t)

    def on_train_end(self, trainer, pl_module, monitor) -> None:
        series = self._ensure_setup(trainer)
        view = MonitorView(monitor)
        t = self.stopwatch.start()
        series.finish()
        series.ensure_forecast_written()
        self.stopwatch.account("observations", t)
        figures = self.figure_updates
        self._finished = True
        try:
            # with a helper: the final job is sent now and drawn while the rest is written
            figures.write_final(trainer, view)
            self._write_summary_text(trainer, view)
            figures.finish()  # a writer without a log directory: the final figures go in it
            t = self.stopwatch.start()
            self.writer.flush()
            series.runs.close()
            self.stopwatch.account("end", t)
        finally:
            figures.start_final()  # after the flush: its event file comes after the last record here

    def on_exception(self, trainer, pl_module, monitor, exception) -> None:
        """Training failed: write what is buffered and end the figure helper (no final figures)."""
        self._finished = True
        self.close()

    def close(self) -> None:
        """Write the buffered series, close the series' runs and end the figure helper; the
        sink can be set up again."""
        if self.series is not None:
            if self.series.due:
                self.series.flush()
            self.series.runs.close()
        self.figure_updates.close()

    # -- plumbing ------------------------------------------------------------------------------
    def _ensure_setup(self, trainer) -> ScalarSeries:
        if self.series is None:
            if self.every is None:
                self.every = max(1, int(getattr(trainer, "log_every_n_steps", 50) or 50))
            prefix = getattr(self.logger, "_prefix", "") or ""
            join = getattr(self.logger, "LOGGER_JOIN_CHAR", "-")
            tags = PanelTags().with_prefix(f"{prefix}{join}" if prefix else "")
            writer = self.writer
            runs = SeriesRuns(log_dir_of(writer), fallback=writer)
            self.series = ScalarSeries(tags, self.every, runs, PanelState(), max_buffered=self.MAX_BUFFERED,
                                       max_buffer_seconds=self.MAX_BUFFER_SECONDS)
            self._t0 = time.perf_counter()
            self._wall_t0 = time.time() - 1.0  # file times can be coarse
        return self.series

    def _figure_jobs(self, view: MonitorView, final: bool) -> dict:
        return figure_jobs(view, self.series, final)

    def _run_name(self) -> str:
        logdir = log_dir_of(self.writer)
        if not logdir:
            return "run"
        parts = os.path.normpath(logdir).split(os.sep)
        return "/".join(parts[-2:])

    def _maybe_write_text(self, trainer, view: MonitorView, step: int) -> None:
        state = self.series.state
        planned = view.planned_steps
        gap = self.TEXT_EVERY * (float(planned) if finite(planned) else float(step))
        if (self._text_step is not None and step - self._text_step < gap
                and len(state.marks) == self._events_seen):
            return
        summary = running_summary(view, state, self.series.last_point, self._run_name(), step)
        self._write_text(summary, step, finished=False)

    def _write_text(self, summary, step: int, finished: bool) -> None:
        series = self.series
        status = panel_status(series.state, series.last_point, finished=finished)
        write_text(self.writer, series.tags.summary, summary_markdown(summary, status), step)
        self._text_step = step
        self._events_seen = len(series.state.marks)

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
        step = int(trainer.global_step)
        # what the monitor's summary lacks, the sink's own has
        summary = {**running_summary(view, self.series.state, self.series.last_point, self._run_name(), step),
                   **{k: v for k, v in summary.items() if v is not None}}
        if log_dir_of(self.writer):
            summary["run"] = self._run_name()  # the name TensorBoard shows
        self._write_text(summary, step, finished=True)
        self.stopwatch.account("end", t)


def _forecast_dict(f) -> dict | None:
    """A forecast as the run summary holds it (the attributes the text reads)."""
    if f is None:
        return None
    keys = ("step", "final_loss", "lower", "upper", "level", "law", "target_step", "x_axis")
    return {k: getattr(f, k, None) for k in keys}


def running_summary(view: MonitorView, state: PanelState, point, run: str, step: int) -> dict:
    """A run summary (the ``io.summary`` schema's keys the text reads) from what the sink
    has, for the text written at refits (the monitor's own summary is made at the end)."""
    f = view.forecast
    fit = getattr(f, "fit", None)
    fit_dict = None
    if fit is not None and getattr(fit, "ok", False):
        diagnostics = getattr(fit, "diagnostics", None) or {}
        fit_dict = {"law": getattr(fit, "law", None), "params": dict(fit.params),
                    "diagnostics": {"posterior_sd": diagnostics.get("posterior_sd") or {}}}
    return {"run": run, "steps": step, "loss_name": view.loss_name, "x_axis": getattr(f, "x_axis", "step"),
            "fit": fit_dict, "forecast": _forecast_dict(f),
            "forecasts": [_forecast_dict(x) for x in state.all_forecasts],
            "warnings": [f"step {m.step}: {m.message}" for m in state.marks],
            "flops": None if point is None else point.flops, "tokens": None if point is None else point.tokens}


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
