"""When and where the sink's figures are drawn: the budget, the helper process, the end."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from . import figures
from .final import FinalFigures
from .helper import FigureProcess
from .timing import Stopwatch
from .view import MonitorView
from .writing import log_dir_of, write_png

# "lightning_scaling.tensorboard", the name users and tests filter on
log = logging.getLogger(__package__)


class FigureUpdates:
    """The figures of a :class:`~.sink.TensorBoardSink`: periodic updates within a budget,
    and the final ones.

    Figures are drawn in a helper process (:class:`~.helper.FigureProcess`) started at
    :meth:`setup`: the training process neither draws nor imports matplotlib for it. The
    training thread gathers the figures' data (:func:`~.figure_data.figure_jobs`) and writes
    the finished PNGs at a later hook. The final figures go to a
    :class:`~.final.FinalFigures` (their own event file, written off the training thread);
    with a writer that has no log directory, :meth:`finish` waits for them instead, up to
    ``timeout`` seconds. Where no process can be started, or the helper cannot draw, figures
    are drawn on the training thread.

    Args:
        writer: returns the SummaryWriter to write to (the logger's may be re-created).
        make_jobs: ``(view, final) -> {tag: (kind, kwargs)}``, the figures as data
            (``figure_data.figure_jobs`` of the sink's series).
        stopwatch: where the time spent is counted ("figures": the periodic ones, "end").
        enabled: draw figures at all.
        every: refits between two figure updates.
        max_overhead: share of training time the periodic figures may take, counting the
            helper's drawing CPU seconds and the training thread's own.
        use_process: draw in a helper process (set to False when none can be had).
        timeout: seconds the final figures are waited for at most.

    Attributes:
        figures_written: images written so far (the final ones included, once written).
        figure_pid: process id of the helper that drew the latest figures (None: this one).
        helper_cpu_seconds: CPU seconds the helper processes used (imports, warm-up,
            drawings), as they reported.
        helper: the running :class:`~.helper.FigureProcess`, or None.
        final: the :class:`~.final.FinalFigures` of the latest end of training, or None.
    """

    def __init__(self, writer: Callable[[], Any], make_jobs: Callable[[MonitorView, bool], dict], stopwatch: Stopwatch,
                 *, enabled: bool = True, every: int = 10, max_overhead: float = 0.002, use_process: bool = True,
                 timeout: float = 30.0):
        self._writer = writer
        self.make_jobs = make_jobs
        self.stopwatch = stopwatch
        self.enabled = bool(enabled)
        self.every = max(1, int(every))
        self.max_overhead = float(max_overhead)
        self.use_process = bool(use_process)
        self.timeout = float(timeout)
        self.figures_written = 0
        self.figure_pid: int | None = None
        self.helper_cpu_seconds = 0.0
        self.helper: FigureProcess | None = None
        self.final: FinalFigures | None = None
        self._job_steps: dict[int, tuple[int, bool]] = {}  # helper job id -> (global step, final)
        self._helper_figure_cpu = 0.0  # CPU seconds of the helper's periodic drawings (the budget's)
        self._matplotlib: bool | None = None
        self._last_figure_seconds = 0.0

    # -- the sink's hooks ----------------------------------------------------------------------
    def setup(self) -> None:
        """Start the helper (it imports matplotlib while training starts)."""
        if self.enabled and self.use_process and self.check_matplotlib():
            self._start_helper()

    def on_refit(self, trainer, view: MonitorView, refits: int, elapsed: float | None) -> None:
        """Write what the helper has drawn; every ``every`` refits, update the figures if
        the budget allows (``elapsed``: training seconds so far, None: unknown)."""
        if self.helper is not None:
            self._write_helper_images(self.helper.results())
        if not (self.enabled and refits % self.every == 0 and elapsed is not None):
            return
        # the next update is expected to cost what the last did (the first: in this process,
        # the matplotlib import too)
        if self.helper is not None:
            expected = self.helper.render_cpu_seconds or 0.2
            spent = self.stopwatch.wall["figures"] + self._helper_figure_cpu
        else:
            expected = self._last_figure_seconds if self._last_figure_seconds else 0.5
            spent = self.stopwatch.wall["figures"]
        if spent + expected <= self.max_overhead * elapsed:
            self.write(trainer, view, final=False)

    def write_final(self, trainer, view: MonitorView) -> None:
        """The end of training: send the final figures on their way (see :meth:`start_final`)."""
        self.final = None
        if self.enabled:
            self.write(trainer, view, final=True)

    def finish(self) -> None:
        """Wait (up to ``timeout`` s) for the figures still out, write them, end the helper
        (with a writer without a log directory, the final figures come this way)."""
        helper = self.helper
        if helper is None:
            return
        t = self.stopwatch.start()
        self._write_helper_images(helper.wait(self.timeout))
        if helper.busy and helper.alive:
            log.warning("lightning-scaling: the final figures took longer than %.0f s and were not written",
                        self.timeout)
        self._drop_helper()
        self.stopwatch.account("end", t)

    def start_final(self) -> None:
        """Start writing the final figures off the training thread (after the last write of
        the training thread's own, so that their event file comes after it)."""
        if self.final is not None:
            self.final.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait (up to ``timeout`` s; None: until done, itself bounded by ``self.timeout``)
        for the final figures; True when none are on their way any more."""
        final = self.final
        return final is None or final.done.wait(timeout)

    def close(self) -> None:
        """End the helper (no final figures)."""
        self._drop_helper()

    # -- drawing -------------------------------------------------------------------------------
    def write(self, trainer, view: MonitorView, final: bool) -> None:
        """Update the figures at the trainer's global step: a job for the helper (skipped
        while it is busy, except at the end), or drawn here without one."""
        t = self.stopwatch.start()
        kind = "end" if final else "figures"
        if not self.check_matplotlib():
            return
        step = int(getattr(trainer, "global_step", 0))
        if self.use_process and self.helper is None and final and self.figures_written == 0:
            self._start_helper()  # a sink used without setup (a custom loop)
        if final and self.helper is not None and self._hand_off_final(view, step):
            self.stopwatch.account(kind, t)
            return
        if self.helper is not None and (self.helper.matplotlib is None or self.helper.busy):
            if not final:
                self.stopwatch.account(kind, t)
                return  # still warming up, or drawing the last update: this update is skipped
            # the end: the warm-up or the last update must be done before the final job goes out
            self._write_helper_images(self.helper.wait(self.timeout))
        if self.helper is not None and not self.helper.alive:
            self.use_process = False  # the helper died: draw here from now on
            self._drop_helper()
        if self.helper is not None:
            job_id = self.helper.submit(self.make_jobs(view, final))
            if job_id is not None:
                self._job_steps[job_id] = (step, final)
            self.stopwatch.account(kind, t)
            return
        if not self.enabled:
            return
        drawn = figures.render_pngs(self.make_jobs(view, final))
        for tag, png in drawn.items():
            write_png(self._writer(), tag, *png, step)
        self.figures_written += len(drawn)
        self.figure_pid = None
        self._last_figure_seconds = self.stopwatch.account(kind, t)

    def check_matplotlib(self) -> bool:
        """Whether matplotlib is installed (found without importing it); one log line if not."""
        if self._matplotlib is None:
            self._matplotlib = figures.matplotlib_installed()
            if not self._matplotlib:
                log.info("lightning-scaling: matplotlib is not installed, so TensorBoard gets no figures "
                         "(pip install 'lightning-scaling[plots]')")
        return self._matplotlib

    def _hand_off_final(self, view: MonitorView, step: int) -> bool:
        """Send the final figures' job to the helper and hand the helper to a
        :class:`~.final.FinalFigures`. False (nothing done) when the figures cannot go in an
        event file of their own (a writer without a log directory) or the helper is gone."""
        logdir = log_dir_of(self._writer())
        if logdir is None:
            return False
        self._write_helper_images(self.helper.results())  # what is ready goes in now
        helper = self.helper
        if helper is None or not helper.alive:
            return False
        final = FinalFigures(self, helper, self.make_jobs(view, True), step, logdir, self._job_steps,
                             self.timeout)
        if final.job_id is None:
            return False
        self.final, self.helper, self._job_steps = final, None, {}
        return True

    # -- the helper process ----------------------------------------------------------------------
    def _start_helper(self) -> None:
        if self.helper is not None and self.helper.alive:
            return
        helper = FigureProcess()
        try:
            helper.start()
        except OSError as exc:
            log.info("lightning-scaling: no figure helper process (%s); figures are drawn on the training thread",
                     exc)
            self.use_process = False
            return
        self.helper = helper

    def _drop_helper(self) -> None:
        helper, self.helper = self.helper, None
        if helper is not None:
            helper.close(timeout=5.0)
            self.helper_cpu_seconds += helper.cpu_seconds

    def _write_helper_images(self, replies) -> None:
        helper = self.helper
        for reply in replies:
            step, final = self._job_steps.pop(reply["id"], (0, False))
            if not final:
                self._helper_figure_cpu += float(reply.get("render_cpu_s", 0.0))
            if reply.get("error"):
                log.info("lightning-scaling: a figure could not be drawn (%s)", reply["error"])
            for tag, (png, height, width) in reply.get("images", {}).items():
                write_png(self._writer(), tag, png, height, width, step)
                self.figures_written += 1
                self.figure_pid = helper.pid
        if helper.matplotlib is False:
            # this process finds matplotlib (checked before the helper started), the helper
            # could not use it (another sys.path, a broken backend): draw here from now on
            log.info("lightning-scaling: the figure helper process could not draw (%s); figures are drawn on the "
                     "training thread", helper.error)
            self.use_process = False
            self._drop_helper()
