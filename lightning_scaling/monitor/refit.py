"""When to refit, and running a refit away from the training thread.

``is_candidate`` says at which optimizer steps the monitor refits and decides (a function of
the step and the planned length alone, so every DDP rank agrees without communicating);
``refit_overdue`` and ``over_budget`` pace the automatic cadence; ``RefitRunner`` runs one
refit at a time, in a helper process (``refit_helper``), on a daemon thread, or inline.

A refit is about 10-60 ms of numpy and scipy, much of it Python that holds the GIL: on a
thread of the training process it delays every step that needs the GIL meanwhile (a GPU
step launching kernels needs it between every two of them). In the helper process it holds
no lock the training loop needs; the training process only pickles the history (about 0.1
ms) and unpickles the forecast, on the runner's thread, which waits on the pipe otherwise.

>>> [s for s in range(1, 60) if is_candidate(s, every=None, planned_steps=2000)]
[10, 20, 30, 40, 50]
>>> r = RefitRunner(background=False)
>>> r.submit(lambda: 42), r.poll()[:2]
(True, (42, None))
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from .refit_helper import RefitProcess

MIN_REFIT_SPACING = 0.05
"""A refit runs whatever the overhead budget once the last one is this share of the run old."""

FLUSH_EVERY = 16
"""At most this many optimizer steps between two batches of checks."""

MODES = ("process", "thread", "inline")
"""Where ``RefitRunner`` runs refits."""


def is_candidate(step: int, every: int | None, planned_steps: float | None) -> bool:
    """Is optimizer step ``step`` one at which the monitor refits and decides?

    Every ``every`` steps when given; else every 1/200 of the planned run (at least 4 steps);
    when the end is unknown, every 8 steps, and from step 2,048 on every 2^floor(log2(step / 128))
    steps (a cadence that doubles as the run does).
    """
    if step <= 0:
        return False
    if every is not None:
        return step % every == 0
    if planned_steps is not None:
        return step % max(4, int(planned_steps) // 200) == 0
    cadence = max(8, 2 ** int(math.log2(max(step, 1) / 128.0)) if step >= 256 else 8)
    return step % cadence == 0


def refit_overdue(step: int, last_refit_step: int | None, planned_steps: float | None) -> bool:
    """Has the last refit (at ``last_refit_step``) fallen ``MIN_REFIT_SPACING`` of the run behind
    (of the steps so far when the end is unknown)?"""
    last = last_refit_step if last_refit_step is not None else 0
    span = planned_steps if planned_steps is not None else step
    return step - last >= MIN_REFIT_SPACING * span


def over_budget(refit_cpu_seconds: float, hook_seconds: float, elapsed_seconds: float, max_overhead: float) -> bool:
    """Have the refits' CPU time and the per-step hook's time used more than ``max_overhead`` of
    the training time ``elapsed_seconds``?"""
    return refit_cpu_seconds + hook_seconds > max_overhead * elapsed_seconds


def flush_every(planned_steps: float | None) -> int:
    """Optimizer steps between two batches of checks: 0.2% of the planned run, 1 to 16.

    Converting accelerator losses to floats waits for the device, and every Python call
    in a training step runs with caches cold from the step's own work: a batch of checks
    every few steps costs far less than one check every step, and delays a warning by
    at most 0.2% of the run.
    """
    if planned_steps is None:
        return FLUSH_EVERY // 2
    return max(1, min(FLUSH_EVERY, int(0.002 * planned_steps)))


class RefitRunner:
    """Runs one refit at a time: in a helper process, on a persistent daemon thread, or inline.

    Args:
        background: False runs every refit inline, on the caller's thread (deterministic).
        mode: ``"process"`` (default with ``background``): jobs that can say what they compute
            (a ``request()`` method; see ``refit_helper``) run in a helper process started on
            the first one, the others on the thread; ``"thread"``: every job on the thread.

    ``submit`` hands a job to the worker thread unless one is pending or running (no thread is
    created per job: starting a thread makes the caller wait for the GIL handoff); ``poll``
    returns the finished job's ``(result, error, cpu_seconds)`` once, else None. The CPU time
    (the helper's for its job plus the thread's own) lets the caller hold refits to a share of
    the training time (``helper_cpu_seconds`` adds the helper's start-up, about 0.4 s, which
    pacing leaves out: it is paid once). A helper that cannot start or dies sends every later
    job to the thread (``process_error`` says why).
    """

    def __init__(self, background: bool = True, mode: str = "process"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.background = bool(background)
        self.mode = mode if self.background else "inline"
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._job: Callable[[], Any] | None = None
        self._running = False
        self._done: tuple[Any, BaseException | None, float] | None = None
        self._helper: RefitProcess | None = None
        self.process_error: str | None = None
        self.cpu_seconds = 0.0
        self.helper_cpu_seconds = 0.0  # helper processes' CPU time, start-up included (not paced)

    def __getstate__(self) -> dict[str, Any]:
        # picklable for ddp_spawn: a fresh runner (no thread, no helper, no pending result) in the child
        return {"background": self.background, "mode": self.mode if self.background else "process",
                "cpu_seconds": self.cpu_seconds}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(background=state["background"], mode=state.get("mode", "process"))
        self.cpu_seconds = state["cpu_seconds"]

    @property
    def busy(self) -> bool:
        return self._job is not None or self._running

    def _execute(self, fn: Callable[[], Any]) -> tuple[Any, BaseException | None, float]:
        t0 = time.thread_time()
        if self.mode == "process" and self.process_error is None and callable(getattr(fn, "request", None)):
            helper = self._helper
            try:
                if helper is None:
                    helper = self._helper = RefitProcess()
                before = helper.cpu_seconds
                result, error, job_cpu = helper.run(fn.request())
                self.helper_cpu_seconds += helper.cpu_seconds - before
                return result, error, job_cpu + time.thread_time() - t0
            except OSError as exc:
                if helper is not self._helper:  # closed under the job (the run ended): no answer
                    return None, exc, time.thread_time() - t0
                # no helper: this job and the later ones run here
                self.process_error = f"{type(exc).__name__}: {exc}"
                self._close_helper()
        result, error = None, None
        try:
            result = fn()
        except BaseException as exc:  # reported to the caller, never raised on the worker
            error = exc
        return result, error, time.thread_time() - t0

    def _worker(self) -> None:
        while True:
            with self._cond:
                while self._job is None:
                    self._cond.wait()
                fn, self._job, self._running = self._job, None, True
            done = self._execute(fn)
            with self._cond:
                self._done, self._running = done, False
                self._cond.notify_all()

    def submit(self, fn: Callable[[], Any], inline: bool = False) -> bool:
        """Start ``fn`` (on the worker, or now on this thread when ``inline`` or not ``background``);
        False while busy."""
        if self.busy:
            return False
        if inline or not self.background:
            t0 = time.thread_time()
            result, error = None, None
            try:
                result = fn()
            except BaseException as exc:  # reported to the caller like a background job's
                error = exc
            self._done = (result, error, time.thread_time() - t0)
            return True
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._worker, name="lightning-scaling-refit", daemon=True)
                self._thread.start()
            self._job = fn
            self._cond.notify_all()
        return True

    def poll(self) -> tuple[Any, BaseException | None, float] | None:
        if self._done is None:  # cheap check first: poll runs every step
            return None
        with self._cond:
            done, self._done = self._done, None
        if done is not None:
            self.cpu_seconds += done[2]
        return done

    def wait(self, timeout: float | None = None) -> None:
        """Block until no job is pending or running (at most ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._job is not None or self._running:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                self._cond.wait(remaining)

    def close(self) -> None:
        """End the helper process, if any (it ends once its input closes, after a job in hand);
        a later job starts a new one."""
        self._close_helper()

    def _close_helper(self) -> None:
        helper, self._helper = self._helper, None
        if helper is not None:
            helper.close()
