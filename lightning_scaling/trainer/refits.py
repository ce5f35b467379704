"""Refit scheduling: which candidate steps refit, within the monitor's time budget.

``RefitScheduler`` owns the ``RefitRunner`` (a helper process, a daemon thread, or inline),
the budget (the refits' CPU time plus the monitor's per-step hook, against the training
time) and the counts; ``refit_job`` builds a refit over a snapshot of the history, so the
refit never touches live state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core import curve
from ..errors import FitFailedWarning
from ..monitor.config import RefitConfig
from ..monitor.forecast import Forecast, make_forecast
from ..monitor.history import LossHistory
from ..monitor.refit import RefitRunner, is_candidate, over_budget, refit_overdue
from .compute import ComputeCounter
from .reporting import Reporter

MIN_POINTS = 8
"""Observations before the first refit."""


class RefitScheduler:
    """When to refit, and the refits' runner and bookkeeping.

    Attributes:
        runner: the ``RefitRunner``.
        refits, failures: refits that gave a forecast / that raised.
        inflight_step: the optimizer step of the newest refit submitted.
        hook_seconds: wall time spent in the monitor's batch hook (after its first call).
    """

    def __init__(self, config: RefitConfig):
        self.config = config
        self.runner = RefitRunner(background=config.background)
        self.refits = 0
        self.failures = 0
        self.inflight_step: int | None = None
        self.hook_seconds = 0.0
        self._train_start: float | None = None

    def start(self) -> None:
        self._train_start = time.perf_counter()
        self.hook_seconds = 0.0

    def is_candidate(self, step: int, planned_steps: float | None) -> bool:
        return is_candidate(step, self.config.every, planned_steps)

    def submit(self, step: int, observed: int, planned_steps: float | None, job: Callable[[], Callable]) -> bool:
        """Submit ``job()`` at optimizer step ``step`` unless too few observations, a refit
        running, or (automatic cadence, after the first refit) the budget is spent and the
        last refit is not overdue. True when submitted."""
        if observed < MIN_POINTS or self.runner.busy:
            return False
        if self.config.every is None and self._train_start is not None and self.refits > 0:
            # refits (CPU time of their thread) and the per-step hook share one budget; a refit
            # that is overdue runs anyway, so an expensive hook (a tiny model) cannot starve them
            elapsed = time.perf_counter() - self._train_start
            over = over_budget(self.runner.cpu_seconds, self.hook_seconds, elapsed, self.config.max_overhead)
            if over and not refit_overdue(step, self.inflight_step, planned_steps):
                return False
        fn = job()
        self.inflight_step = step
        self.runner.submit(fn)
        return True

    def wait(self, timeout: float = 60.0) -> None:
        """Let a running refit finish (at most ``timeout`` seconds)."""
        if self.runner.busy:
            self.runner.wait(timeout=timeout)

    def needs_final_refit(self, history: LossHistory, newest: Forecast | None) -> bool:
        """Has the history observations the newest forecast did not see (and is the runner free)?"""
        last = history.last_step
        return (last is not None and history.n_observed >= MIN_POINTS and (newest is None or newest.step < last)
                and not self.runner.busy)

    def close(self) -> None:
        """End the refit helper process (the run is over); a later refit starts a new one."""
        self.runner.close()

    def run_inline(self, step: int, job: Callable[[], Any]) -> None:
        """Refit now on this thread (the last refit of a run)."""
        self.inflight_step = step
        self.runner.submit(job, inline=True)

    def poll(self, trainer, report: Reporter) -> Forecast | None:
        """The finished refit's forecast, once; a refit that raised is a ``FitFailedWarning``."""
        done = self.runner.poll()
        if done is None:
            return None
        forecast, error, _cpu = done
        if error is not None:
            self.failures += 1
            report.warn(trainer, f"ScalingLawMonitor: the refit at step {self.inflight_step} failed "
                        f"({type(error).__name__}: {error}); training goes on, the previous forecast stays",
                        FitFailedWarning)
            return None
        self.refits += 1
        return forecast


_STOCK_FIT = curve.fit_curve  # what the helper process runs


class RefitJob:
    """A refit over a snapshot of the history: ``job()`` runs it here; ``job.request()`` describes
    it for the helper process (``monitor.refit_helper``), which runs the same ``make_forecast``."""

    def __init__(self, arrays: dict[str, np.ndarray], lr: np.ndarray | None, kwargs: dict[str, Any]):
        self.arrays, self.lr, self.kwargs = arrays, lr, kwargs

    def __call__(self) -> Forecast:
        return make_forecast(self.arrays, fit_fn=_STOCK_FIT, lr=self.lr, **self.kwargs)

    def request(self) -> dict[str, Any]:
        return {"arrays": self.arrays, "kwargs": self.kwargs, "lr": self.lr}


def refit_job(
    history: LossHistory,
    *,
    x_axis: str,
    planned_steps: float | None,
    schedule_lr: np.ndarray | None,
    schedule_reason: str,
    level: float,
    target_loss: float | None,
    band_level: float,
    compute: ComputeCounter,
) -> Callable[[], Forecast]:
    """A refit over a snapshot of the history: the fit runs on the optimizer step when the
    schedule is known, else on ``x_axis`` (the step while that axis is unknown). A
    ``RefitJob`` (which the helper process can run) unless ``curve.fit_curve`` was replaced."""
    stored = history.arrays()
    arrays = {name: stored[name] for name in ("step", "tokens", "flops", "loss")}
    axis = "step" if schedule_lr is not None else x_axis
    if axis != "step" and not np.isfinite(arrays[axis]).any():
        axis = "step"
    kwargs = dict(
        x_axis=axis,
        target_step=planned_steps,
        level=level,
        target_loss=target_loss,
        band_level=band_level,
        extra_diagnostics={
            "schedule": schedule_reason,
            "flops_source": compute.flops_source,
            "tokens_source": compute.tokens_source,
            "history_points": len(history),
        },
    )
    fit_fn = curve.fit_curve  # looked up now: a test may replace it
    if fit_fn is _STOCK_FIT:
        return RefitJob(arrays, schedule_lr, kwargs)
    return lambda: make_forecast(arrays, fit_fn=fit_fn, lr=schedule_lr, **kwargs)
