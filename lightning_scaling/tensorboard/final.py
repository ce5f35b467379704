"""The end-of-training figures, finished off the training thread, in an event file of their own.

At ``on_train_end`` the sink gathers the final figures' data (the curve to the last step, the
final forecast and the forecast history: it does not change after that) and hands the job
and the figure helper process to a :class:`FinalFigures`. Its daemon thread waits for the
drawings, writes them at the final step into an event file of their own in the run's
directory (name ending in ``FINAL_FIGURES_SUFFIX``; the logger closes its writer right after
training, and a file of their own needs no coordination with it), closes that file and ends
the helper. An interpreter that exits meanwhile waits for it: an ``atexit`` hook, bounded by
the same deadline plus ``EXIT_WRITE_MARGIN_S``.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time

from . import figures
from .writing import image_summary, write_events_file

#: Suffix of the event file that holds the final figures (TensorBoard reads every file of a
#: run's directory whose name contains "tfevents").
FINAL_FIGURES_SUFFIX = ".final_figures"
#: Seconds an exiting interpreter gives the final figures' event file, past ``figure_timeout``,
#: to be written and closed.
EXIT_WRITE_MARGIN_S = 10.0

# "lightning_scaling.tensorboard", the name users and tests filter on
log = logging.getLogger(__package__)

_unfinished: set = set()  # FinalFigures whose thread has not ended
_unfinished_lock = threading.Lock()
_exit_hook_registered = False


def _wait_at_exit() -> None:
    """The interpreter is exiting: let final figures on their way reach their event file
    (each bounded by its deadline plus ``EXIT_WRITE_MARGIN_S``)."""
    with _unfinished_lock:
        pending = list(_unfinished)
    for final in pending:
        final.done.wait(max(0.0, final.deadline - time.monotonic()) + EXIT_WRITE_MARGIN_S)


def write_images_file(logdir: str, images) -> int:
    """Write [(tag, PNG, height, width, step)] as image summaries into a new event file in
    ``logdir`` (name ending in ``FINAL_FIGURES_SUFFIX``), closed on return; returns how many."""
    summaries = [(image_summary(tag, png, height, width), step) for tag, png, height, width, step in images]
    return write_events_file(logdir, summaries, suffix=FINAL_FIGURES_SUFFIX)


class FinalFigures:
    """The final figures of one ``fit`` on their way to their event file (module docstring).

    Built on the training thread: it sends ``jobs`` to ``helper`` queued behind any periodic
    job still out (``earlier``: their job ids -> (global step, final)), whose images it writes
    too. ``start`` starts the thread; ``done`` is set when it has ended (written, or given up
    after ``timeout`` seconds). Should the helper be unable to draw, the thread draws the
    figures itself (this process has matplotlib: the sink checked).

    The thread adds what it did to ``counts``, the sink's read-outs: ``figures_written``
    (images written), ``figure_pid`` (the process that drew them; None: this one) and
    ``helper_cpu_seconds`` (the helper's CPU seconds, as it reported them).
    """

    def __init__(self, counts, helper, jobs: dict, step: int, logdir: str, earlier: dict, timeout: float):
        self.counts = counts
        self.helper = helper
        self.jobs = jobs
        self.step = int(step)
        self.logdir = logdir
        self.timeout = float(timeout)
        self.job_steps = dict(earlier)  # helper job id -> (global step, final)
        self.job_id = helper.submit(jobs, queue=True)
        if self.job_id is not None:
            self.job_steps[self.job_id] = (self.step, True)
        self.done = threading.Event()
        self.deadline = math.inf
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        global _exit_hook_registered
        self.deadline = time.monotonic() + self.timeout
        with _unfinished_lock:
            _unfinished.add(self)
            if not _exit_hook_registered:
                # registered after the helper's weakref finalizers: atexit runs it before them
                atexit.register(_wait_at_exit)
                _exit_hook_registered = True
        self.thread = threading.Thread(target=self._run, daemon=True, name="lightning-scaling-final-figures")
        self.thread.start()

    def _collect(self) -> tuple[list, int | None]:
        """The images drawn by the deadline, [(tag, PNG, height, width, step)], and who drew them."""
        helper = self.helper
        images, drawn_by = [], None
        final_answered = False
        for reply in helper.wait(max(0.0, self.deadline - time.monotonic())):
            step, _ = self.job_steps.pop(reply["id"], (self.step, False))
            final_answered = final_answered or reply["id"] == self.job_id
            if reply.get("error"):
                log.info("lightning-scaling: a figure could not be drawn (%s)", reply["error"])
            images += [(tag, *image, step) for tag, image in reply.get("images", {}).items()]
            drawn_by = helper.pid
        if not final_answered and (helper.matplotlib is False or not helper.busy):
            # the helper could not draw, or ended: this process has matplotlib (checked)
            log.info("lightning-scaling: the figure helper process could not draw (%s); the final figures "
                     "are drawn in this process", helper.error or "it ended")
            images += [(tag, *image, self.step) for tag, image in figures.render_pngs(self.jobs).items()]
            drawn_by = None
        elif not final_answered:
            log.warning("lightning-scaling: the final figures took longer than %.0f s and were not written",
                        self.timeout)
        return images, drawn_by

    def _run(self) -> None:
        helper, counts = self.helper, self.counts
        try:
            images, drawn_by = self._collect()
            if images:
                write_images_file(self.logdir, images)
                counts.figures_written += len(images)
                counts.figure_pid = drawn_by
        except Exception as exc:  # the training is over; tell, do not raise in a thread
            log.warning("lightning-scaling: the final figures could not be written (%s: %s)", type(exc).__name__, exc)
        finally:
            helper.close(timeout=5.0)
            counts.helper_cpu_seconds += helper.cpu_seconds
            self.done.set()
            with _unfinished_lock:
                _unfinished.discard(self)
