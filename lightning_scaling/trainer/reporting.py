"""What the monitor tells the world: warnings, notices, ``scaling/*`` logs and sinks (rank zero).

``Reporter`` holds the warnings emitted so far, the sinks and the logging cadence.
``LogCadence`` follows Lightning's documented rule for when loggers write: every
``log_every_n_steps``-th training batch that stepped the optimizer (every batch under manual
optimization), and whenever the trainer is about to stop; it counts the batches itself.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

from ..core.plain import plain
from ..errors import BehindTrendWarning, DivergenceWarning, FitFailedWarning, ScalingWarning
from ..monitor.divergence import DivergenceEnd, DivergenceEvent
from ..monitor.observe import TrendFailure
from ..monitor.trend import TrendEnd, TrendEvent

log = logging.getLogger(__name__)


class LogCadence:
    """Lightning's rule for the steps at which its loggers write, counted in the batch hook."""

    def __init__(self) -> None:
        self.batches = 0  # training batches that stepped the optimizer (every batch under manual optimization)

    def start(self, trainer) -> None:
        # resumed runs count on from the restored step (one optimizer step per batch)
        self.batches = int(trainer.global_step)

    def count(self, pl_module, stepped: bool) -> None:
        if stepped or not pl_module.automatic_optimization:
            self.batches += 1

    def due(self, trainer) -> bool:
        """Will Lightning send this batch's logged values to the loggers?"""
        n = getattr(trainer, "log_every_n_steps", 50) or 0
        return n > 0 and (self.batches % n == 0 or bool(trainer.should_stop))


class Reporter:
    """Warnings, notices, metric logs and sink calls of one monitor (rank zero only).

    Args:
        sinks: objects notified on rank zero (see ``ScalingLawMonitor``); a sink that raises
            is reported as a warning and skipped from then on.
        logger: where notices go (Lightning's logger tree, set by each twin).

    Attributes:
        warnings_emitted: every warning message so far, ``"step N: ..."``, oldest first.
        last_behind_message: the newest behind-trend message (for a behind-trend stop).
        episodes: ``{"behind_trend": [...], "divergence": [...]}``, one ``[since, reported, ended]``
            step triple per episode (``ended`` None while it goes on), for the run summary.
    """

    def __init__(self, sinks: list, logger: logging.Logger = log):
        self.sinks = list(sinks)
        self.logger = logger
        self.warnings_emitted: list[str] = []
        self.last_behind_message: str | None = None
        self.episodes: dict[str, list[list[int | None]]] = {"behind_trend": [], "divergence": []}
        self.cadence = LogCadence()
        self._bad_sinks: set[tuple[int, str]] = set()
        self._logged_forecast: Any = None
        self._logged_behind: bool | None = None

    # -- messages -------------------------------------------------------------------------------
    def warn(self, trainer, message: str, category: type[Warning]) -> None:
        if trainer is not None and not trainer.is_global_zero:
            return
        step = None if trainer is None else int(trainer.global_step)
        self.warnings_emitted.append(message if step is None else f"step {step}: {message}")
        warnings.warn(message, category, stacklevel=3)

    def info(self, trainer, message: str) -> None:
        if trainer is None or trainer.is_global_zero:
            self.logger.info(message)

    def unknown_end(self, trainer, forecast_stop: bool) -> None:
        """Say that the planned end is unknown (and that the forecast stop is off for this run)."""
        self.info(trainer, "ScalingLawMonitor: the planned end of the run is unknown (no max_steps, an unsized "
                  "dataloader); forecasting only at target_loss. Pass total_steps= to forecast the end.")
        if forecast_stop:
            self.warn(trainer, "stop_if_forecast_above needs the planned end of the run (max_steps or "
                      "total_steps=); it is off for this run", ScalingWarning)

    def events(self, trainer, pl_module, monitor, spikes: list, behind: list) -> None:
        """Report the divergence and trend events of one batch of observations, in order: an
        episode's start is a warning, its end a notice (and a sink event either way)."""
        if trainer.is_global_zero:
            for event in spikes:
                if isinstance(event, DivergenceEnd):
                    self._episode_end(trainer, pl_module, monitor, "divergence", event,
                                      f"ScalingLawMonitor: divergence ended: {event.message()}.")
                else:
                    self._divergence(trainer, pl_module, monitor, event)
        for event in behind:
            if isinstance(event, TrendFailure):
                self.warn(trainer, f"ScalingLawMonitor: the trend check at step {event.step} could not evaluate "
                          f"its reference fit ({type(event.error).__name__}: {event.error}); it waits for the next "
                          "fit", FitFailedWarning)
            elif isinstance(event, TrendEnd):
                self._episode_end(trainer, pl_module, monitor, "behind_trend", event,
                                  f"ScalingLawMonitor: {event.message()}.")
            else:
                self._behind(trainer, pl_module, monitor, event)

    def _episode_end(self, trainer, pl_module, monitor, kind: str, event, message: str) -> None:
        if not trainer.is_global_zero:
            return
        open_ = [e for e in self.episodes[kind] if e[2] is None]
        if open_:
            open_[-1][2] = int(event.step)
        else:  # the end of an episode that began before this monitor was restored
            self.episodes[kind].append([int(event.since_step), None, int(event.step)])
        self.info(trainer, message)
        self.call_sinks(trainer, "on_event", trainer, pl_module, monitor,
                        {"kind": f"{kind}_end", "step": int(event.step), "message": message,
                         "detail": plain(vars(event))})

    def _behind(self, trainer, pl_module, monitor, event: TrendEvent) -> None:
        now = monitor.forecast
        if now is not None and math.isfinite(now.final_loss):
            forecast_now = (f"the forecast now is {now.final_loss:.4g} [{now.lower:.4g}, {now.upper:.4g}] "
                            f"at step {now.target_step:,}")
        elif now is not None:
            forecast_now = f"the newest fit ({now.law}, step {now.step:,}) has no end-of-run forecast"
        else:
            forecast_now = "no forecast yet"
        self.last_behind_message = f"{event.message()}; {forecast_now}"
        message = f"ScalingLawMonitor: behind trend: {self.last_behind_message}."
        if trainer.is_global_zero:
            self.episodes["behind_trend"].append([int(event.since_step), int(event.step), None])
        self.warn(trainer, message, BehindTrendWarning)
        self.call_sinks(trainer, "on_event", trainer, pl_module, monitor,
                        {"kind": "behind_trend", "step": event.step, "message": message, "detail": plain(vars(event))})

    def _divergence(self, trainer, pl_module, monitor, event: DivergenceEvent) -> None:
        message = f"ScalingLawMonitor: divergence: {event.message()}."
        self.episodes["divergence"].append([int(event.step), int(event.reported_step or event.step), None])
        self.warn(trainer, message, DivergenceWarning)
        self.call_sinks(trainer, "on_event", trainer, pl_module, monitor,
                        {"kind": "divergence", "step": event.step, "message": message, "detail": plain(vars(event))})

    def observations(self, trainer, pl_module, monitor, observations: list) -> None:
        """Hand a batch of ``(step, tokens, flops, loss)`` observations to the sinks."""
        if trainer.is_global_zero and self.sinks:
            obs = [{"step": s, "tokens": t, "flops": f, "loss": v} for s, t, f, v in observations]
            self.call_sinks(trainer, "on_observation", trainer, pl_module, monitor, obs)

    # -- metrics ------------------------------------------------------------------------------
    def log_state(self, pl_module, monitor) -> None:
        """Log ``scaling/*``: the compute always, the forecast and the trend flag when they changed.

        Few keys, and a forecast only when it is new: Lightning's self.log costs a few hundred
        microseconds per call, more than the rest of the monitor's step.
        """
        values = {"scaling/tokens": monitor.compute.tokens, "scaling/flops": monitor.compute.flops}
        f, behind = monitor.forecast, monitor.trend.behind
        if behind != self._logged_behind or (f is not None and f is not self._logged_forecast):
            self._logged_behind = behind
            values["scaling/behind_trend"] = 1.0 if behind else 0.0
        if f is not None and f is not self._logged_forecast:
            self._logged_forecast = f
            recent = monitor.history.last(5)
            if recent:
                values["scaling/loss_smoothed"] = sum(r[4] for r in recent) / len(recent)
            values.update({"scaling/forecast_final_loss": f.final_loss, "scaling/forecast_lower": f.lower,
                           "scaling/forecast_upper": f.upper})
            if f.target_loss is not None:
                values.update({"scaling/steps_to_target": f.steps_to_target,
                               "scaling/tokens_to_target": f.tokens_to_target,
                               "scaling/flops_to_target": f.flops_to_target})
        log_values(pl_module, values)

    # -- sinks ----------------------------------------------------------------------------------
    def call_sinks(self, trainer, method: str, *args) -> None:
        if not self.sinks or (trainer is not None and not trainer.is_global_zero):
            return
        for sink in list(self.sinks):
            fn = getattr(sink, method, None)
            key = (id(sink), method)
            if fn is None or key in self._bad_sinks:
                continue
            try:
                fn(*args)
            except Exception as exc:  # a sink never ends training
                self._bad_sinks.add(key)
                warnings.warn(f"ScalingLawMonitor: sink {type(sink).__name__}.{method} raised "
                              f"{type(exc).__name__}: {exc}; it is skipped from now on", ScalingWarning, stacklevel=2)


def log_values(pl_module, values: dict[str, float]) -> None:
    """``pl_module.log`` the finite ones, on this step, from rank zero."""
    clean = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
    for name, value in clean.items():
        pl_module.log(name, value, on_step=True, on_epoch=False, rank_zero_only=True, batch_size=1,
                      prog_bar=name == "scaling/forecast_final_loss")


def attach_panels(monitor, trainer) -> None:
    """Add the TensorBoard "Scaling law" panels' sink when the trainer has a TensorBoardLogger."""
    # the panels' layer sits above this one: imported here, on demand, so the arrow stays one-way
    try:
        from ..tensorboard.sink import attach_tensorboard_sink
    except ImportError:  # panels not available in this installation
        return
    try:
        attach_tensorboard_sink(monitor, trainer)
    except Exception as exc:  # panels are a nicety; training goes on without them
        warnings.warn(f"ScalingLawMonitor: no TensorBoard panels ({type(exc).__name__}: {exc})",
                      ScalingWarning, stacklevel=2)
