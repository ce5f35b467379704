"""``ScalingLawMonitor``: the Lightning callback (glue only: hooks, DDP sync, state_dict).

The decisions live in ``lightning_scaling.monitor`` (pure); the collaborators here read the
trainer (``losses``, ``compute``, ``plan``), pace the refits (``refits``), decide stops
(``stops``), report (``reporting``), and build the run summary (``summary``) and the
checkpoint state (``state``). ``_MonitorLogic`` holds the hooks and knows no Lightning
namespace; ``ScalingLawMonitor`` here is the ``pytorch_lightning`` Callback,
``lightning_scaling.lightning.ScalingLawMonitor`` the ``lightning.pytorch`` twin.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import pytorch_lightning as pl

from ..errors import InvalidInputError, ScalingWarning
from ..monitor.config import RefitConfig, StopConfig, TrendConfig, apply_legacy_options
from ..monitor.divergence import DivergenceDetector
from ..monitor.forecast import AXES, Forecast
from ..monitor.history import LossHistory
from ..monitor.observe import observe_batch
from ..monitor.refit import flush_every
from ..monitor.stopping import StopReason
from ..monitor.trend import TrendDetector
from .compute import ComputeCounter
from .losses import LossReader
from .metric_names import early_verdict
from .plan import load_schedule, planned_steps
from .refits import RefitScheduler, refit_job
from .reporting import Reporter, attach_panels
from .state import monitor_state, restore_monitor
from .stops import StopController
from .summary import build_summary, save_summary

log = logging.getLogger(__name__)


class _MonitorLogic:
    r"""Forecast a run's final loss while it trains; warn when it falls behind; stop it if asked.

    Zero configuration works for any LightningModule whose ``training_step`` returns its loss
    (a tensor, or a mapping with ``"loss"``). Each optimizer step's loss (the mean over its
    micro-batches) goes into a bounded history (at most 4,096 points), refit in the background
    within ``max_overhead`` of the training time; each fit forecasts the loss at the planned
    last step with a ``level`` interval.

    Args:
        monitor: a logged metric to follow instead of ``training_step``'s loss (``"val_loss"``).
        x_axis: the fit's axis, ``"step"`` (optimizer steps), ``"tokens"`` or ``"flops"`` (with a
            known LR schedule the fit runs on the step and converts compute).
        total_steps: the planned optimizer steps (default ``max_steps``, else
            ``estimated_stepping_batches``); unknown: forecasts only at ``target_loss``.
        refit_every: refit and decide every this many optimizer steps (``RefitConfig.every``).
        level: probability content of the forecast interval (0.9).
        target_loss: also forecast the steps, tokens and FLOPs to reach this loss (default:
            the ``stop_if_forecast_above`` target).
        flops_per_batch: FLOPs of forward + backward of one micro-batch on one process
            (default: the module's ``flops_per_batch``, else measured, else 6 N tokens).
        tokens_per_batch: tokens of one micro-batch on one process, an int or a callable on the
            batch (default: the module's ``tokens_per_batch``, else the integer input's size).
        stop_if_forecast_above: stop when even the optimistic end of the forecast interval is
            above this loss (``StopConfig.forecast_above``).
        reference: what a run like this should reach: a loss, a ``ScalingLawFit`` or a run
            summary; forecasts entirely above it warn (``WorseThanReferenceWarning``).
        trend: the behind-trend check, a ``TrendConfig``.
        stop: the stop rules, a ``StopConfig`` (each off by default).
        refit: the refit cadence and budget, a ``RefitConfig``.
        log_metrics: log ``scaling/*`` through ``pl_module.log`` at the trainer's log steps.
        write_summary: write ``scaling_summary.json`` into the log dir at the end of training.
        tensorboard: add the "Scaling law" panels when the trainer has a TensorBoardLogger.
        sinks: objects notified on rank zero (optional ``setup``, ``on_observation``,
            ``on_refit``, ``on_event``, ``on_train_end``, ``on_exception``, each called with
            ``(trainer, pl_module, monitor, ...)``); one that raises becomes a warning.

    The older flat arguments (``stop_when_behind_trend=``, ``patience=``, ``smoothing=``, ...)
    still work, with a ``DeprecationWarning`` naming their new spelling.

    Logged (rank zero; losses in the monitored metric's units): ``scaling/forecast_final_loss``,
    ``scaling/forecast_lower``, ``scaling/forecast_upper``, ``scaling/loss_smoothed``,
    ``scaling/tokens``, ``scaling/flops`` (cumulative, all processes), ``scaling/behind_trend``,
    ``scaling/{steps,tokens,flops}_to_target``, ``scaling/stopped``.

    Attributes:
        forecast: the newest ``Forecast`` (None before the first refit); ``forecasts``: all, oldest first.
        stopped_reason: None, or why the monitor stopped the run; ``stop_reason``: a ``StopReason``.

    Example::

        >>> from lightning_scaling import ScalingLawMonitor
        >>> from lightning_scaling.monitor import StopConfig
        >>> mon = ScalingLawMonitor(stop_if_forecast_above=3.2, stop=StopConfig(behind_trend=True))
        >>> mon.stop_config.forecast_above, mon.stop_reason
        (3.2, <StopReason.NOT_STOPPED: 0>)
        >>> # Trainer(max_steps=10_000, callbacks=[mon]).fit(model); mon.forecast.final_loss
    """

    def __init__(
        self,
        monitor: str | None = None,
        *,
        x_axis: str = "step",
        total_steps: int | None = None,
        refit_every: int | None = None,
        level: float = 0.9,
        target_loss: float | None = None,
        flops_per_batch: float | None = None,
        tokens_per_batch: Any = None,
        stop_if_forecast_above: float | None = None,
        reference: Any = None,
        trend: TrendConfig | None = None,
        stop: StopConfig | None = None,
        refit: RefitConfig | None = None,
        log_metrics: bool = True,
        write_summary: bool = True,
        tensorboard: bool = True,
        sinks: list | tuple = (),
        **deprecated: Any,
    ):
        super().__init__()
        trend, stop, refit = apply_legacy_options(deprecated, trend=trend, stop=stop, refit=refit,
                                                  refit_every=refit_every,
                                                  stop_if_forecast_above=stop_if_forecast_above)
        _check_options(monitor, x_axis, total_steps, level, target_loss, sinks,
                       log_metrics=log_metrics, write_summary=write_summary, tensorboard=tensorboard)
        self.monitor, self.x_axis, self.total_steps, self.level = monitor, x_axis, total_steps, float(level)
        self.trend_config, self.stop_config, self.refit_config = trend, stop, refit
        self.target_loss = target_loss if target_loss is not None else stop.forecast_above
        self.log_metrics, self.write_summary, self.tensorboard = log_metrics, write_summary, tensorboard
        self.stops = StopController(stop, reference)
        self.history = LossHistory()
        self.compute = ComputeCounter(flops_per_batch=flops_per_batch, tokens_per_batch=tokens_per_batch)
        self.trend = TrendDetector(patience=trend.patience or 3, window=trend.smoothing or 5,
                                   min_excess=trend.min_excess, level=trend.level)
        self.divergence = DivergenceDetector()
        self.report = Reporter(list(sinks), logger=self._logger)
        self.losses = LossReader(monitor, self.compute, self.report.info)
        self.refit_scheduler = RefitScheduler(refit)
        self._forecasts: list[Forecast] = []
        self._shared = 0  # forecasts every rank holds (under DDP, rank zero's are handed on)
        self.planned_steps: float | None = None
        self.schedule_lr = None
        self.schedule_reason = "schedule not looked up yet"
        self.summary_path: str | None = None
        self.seen_step = 0  # the newest optimizer step seen
        self._name_checked = monitor is None  # monitor= checked against the logged metrics
        self._name_warned = False
        self._active = False
        self._announced = False  # the one-line notice of where FLOPs and tokens come from

    # Lightning's own logger tree, so messages show where its callbacks' do (set by each twin)
    _logger = log

    # -- read-outs ------------------------------------------------------------------------------
    @property
    def forecast(self) -> Forecast | None:
        """The newest forecast, None before the first refit."""
        return self._forecasts[-1] if self._forecasts else None

    @property
    def forecasts(self) -> list[Forecast]:
        """Every forecast so far, oldest first."""
        return list(self._forecasts)

    @property
    def stopped_reason(self) -> str | None:
        """None, or why the monitor stopped the run (a message)."""
        return self.stops.message

    @property
    def stop_reason(self) -> StopReason:
        """Why the monitor stopped the run (``StopReason.NOT_STOPPED`` while it has not)."""
        return self.stops.reason

    stopped_step = property(lambda self: self.stops.step, doc="The optimizer step of the stop, or None.")
    warnings_emitted = property(lambda self: self.report.warnings_emitted, doc="Every warning so far, oldest first.")
    sinks = property(lambda self: self.report.sinks, doc="The sinks notified on rank zero.")
    loss_name = property(lambda self: self.losses.loss_name, doc="What the observations measure.")

    @property
    def state_key(self) -> str:
        # Lightning reads it several times a step: made once per (monitor, x_axis)
        key = (self.monitor, self.x_axis)
        cached = getattr(self, "_state_key_cache", None)
        if cached is None or cached[0] != key:
            cached = self._state_key_cache = (key, self._generate_state_key(monitor=self.monitor, x_axis=self.x_axis))
        return cached[1]

    def add_sink(self, sink: Any) -> None:
        """Register an object notified on rank zero (see ``sinks``)."""
        self.report.sinks.append(sink)

    def is_candidate(self, step: int) -> bool:
        """Does the monitor refit and decide at optimizer step ``step``? A function of the step and
        the planned length alone, so every DDP rank agrees (``ForecastPruning`` acts at the same steps)."""
        return self.refit_scheduler.is_candidate(step, self.planned_steps)

    # -- hooks (each a guard that delegates) ----------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or trainer.fast_dev_run:
            return
        self.compute.setup(pl_module, world_size=trainer.world_size)
        if self.tensorboard and trainer.is_global_zero:
            attach_panels(self, trainer)
        self.report.call_sinks(trainer, "setup", trainer, pl_module, self)

    def on_train_start(self, trainer, pl_module) -> None:
        self._active = not trainer.fast_dev_run
        if self._active:
            self._start(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._active:
            return
        t0 = time.perf_counter()
        first = not self.compute.micro_batches
        self._on_micro_batch(trainer, pl_module, outputs, batch)
        if not first:  # the first batch's one-time FLOP measurement is not a recurring cost
            self.refit_scheduler.hook_seconds += time.perf_counter() - t0

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._active and not trainer.sanity_checking and self.monitor is not None:
            if self.losses.read_metric(trainer, from_validation=True):
                self._flush(trainer, None)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._active:
            self.losses.check_found(trainer, epoch_end=True, observed=self.history.n_observed)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._active:
            self._finish(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not self._active:
            return
        self._active = False
        self.refit_scheduler.close()
        if trainer.is_global_zero and self.write_summary:
            save_summary(self, trainer, after_exception=True)
        self.report.call_sinks(trainer, "on_exception", trainer, pl_module, self, exception)

    def state_dict(self) -> dict[str, Any]:
        return monitor_state(self, self._forecasts)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._forecasts = restore_monitor(self, state_dict)
        self._shared = len(self._forecasts)

    # -- the run ----------------------------------------------------------------------------------
    def _start(self, trainer) -> None:
        self.refit_scheduler.start()
        self._announced = False
        self.seen_step = int(trainer.global_step)
        self.losses.start()
        self.report.cadence.start(trainer)
        self.compute.world_size = max(1, int(trainer.world_size))
        if self.stops.message is not None:
            self.report.info(trainer, f"ScalingLawMonitor: resuming a run it stopped at step {self.stops.step} "
                             f"({self.stops.message}); its stop rules apply again")
            self.stops.restore(None, None)
        self.planned_steps = planned_steps(trainer, self.total_steps)
        if self.planned_steps is None:
            self.report.unknown_end(trainer, forecast_stop=self.stop_config.forecast_above is not None)
        if trainer.is_global_zero:
            self.schedule_lr, self.schedule_reason = load_schedule(trainer, self.planned_steps)
        self.trend_config.size(self.trend, self.planned_steps, per_step=self.monitor is None)
        self.trend.horizon = self.planned_steps if self.monitor is None else None  # observations a run holds
        self.trend.schedule = self.schedule_lr

    def _on_micro_batch(self, trainer, pl_module, outputs, batch) -> None:
        self.compute.count_micro_batch(pl_module, batch)
        if not self._announced and not self.compute.measuring:  # the FLOP rate is measured on a thread
            self._announced = True
            self.report.info(trainer, f"ScalingLawMonitor: FLOPs from {self.compute.flops_source}; tokens from "
                             f"{self.compute.tokens_source}; planned end: {self.planned_steps} optimizer steps; "
                             f"{self.schedule_reason}")
        self.losses.add_micro_batch(trainer, pl_module, outputs)
        stepped = trainer.global_step != self.seen_step
        self.report.cadence.count(pl_module, stepped)
        if stepped:
            self._on_optimizer_step(trainer, pl_module)

    def _on_optimizer_step(self, trainer, pl_module) -> None:
        step = self.seen_step = self.compute.steps = int(trainer.global_step)
        if not self._name_checked:
            self._check_name(trainer, step)
        self.losses.on_optimizer_step(trainer, step, observed=self.history.n_observed)
        candidate = self.is_candidate(step)
        if candidate or len(self.losses.pending) >= flush_every(self.planned_steps):
            self._flush(trainer, pl_module)
        if trainer.is_global_zero:
            self._poll_refit(trainer, pl_module)
            if candidate and self.refit_scheduler.submit(step, self.history.n_observed, self.planned_steps,
                                                         self._refit_job) and not self.refit_config.background:
                self._poll_refit(trainer, pl_module)
        if candidate:
            self._share_forecasts(trainer)
            self.stops.decide(trainer, pl_module, monitor=self, forecasts=self._forecasts, report=self.report,
                              log_metrics=self.log_metrics)
        if self.log_metrics and trainer.is_global_zero and self.report.cadence.due(trainer):
            self.report.log_state(pl_module, self)

    def _check_name(self, trainer, step: int) -> None:
        """Say at once when ``monitor=`` is not among the metrics the module logs (see ``metric_names``)."""
        if self.losses.metric_seen or self.monitor in trainer.callback_metrics:
            self._name_checked = True
            return
        error, warning = early_verdict(self.monitor, trainer.callback_metrics.keys(), trainer.enable_validation, step)
        if error:
            raise InvalidInputError(error)
        if warning:
            self._name_checked = self._name_warned = True
            self.report.warn(trainer, warning, ScalingWarning)

    def _flush(self, trainer, pl_module) -> None:
        observations = self.losses.take()
        if not observations:
            return
        spikes, behind = observe_batch(observations, history=self.history, divergence=self.divergence,
                                       trend=self.trend, x_axis=self.x_axis, planned_steps=self.planned_steps,
                                       trend_config=self.trend_config, check_trend=trainer.is_global_zero)
        self.report.events(trainer, pl_module, self, spikes, behind)
        self.report.observations(trainer, pl_module, self, observations)

    def _refit_job(self):
        return refit_job(self.history, x_axis=self.x_axis, planned_steps=self.planned_steps,
                         schedule_lr=self.schedule_lr, schedule_reason=self.schedule_reason, level=self.level,
                         target_loss=self.target_loss, band_level=self.trend.level, compute=self.compute)

    def refit_now(self) -> Forecast:
        """Refit the stored history inline and return the forecast (without recording it)."""
        return self._refit_job()()

    def _poll_refit(self, trainer, pl_module) -> None:
        forecast = self.refit_scheduler.poll(trainer, self.report)
        if forecast is None:
            return
        self._forecasts.append(forecast)
        self.trend.offer_fit(forecast.fit, forecast.step, forecast.x_axis, forecast.band)
        self.report.call_sinks(trainer, "on_refit", trainer, pl_module, self, forecast)

    def _share_forecasts(self, trainer) -> None:
        """Hand rank zero's new forecasts to every rank, so ``forecast`` and ``forecasts`` are the
        same everywhere (a collective: every rank calls it at the same steps)."""
        if trainer.world_size <= 1:
            return
        new = [dataclasses.replace(f, band=None) for f in self._forecasts[self._shared:]] if trainer.is_global_zero \
            else None
        new = trainer.strategy.broadcast(new, src=0)
        if not trainer.is_global_zero:
            self._forecasts.extend(new or [])
        self._shared = len(self._forecasts)

    def _finish(self, trainer, pl_module) -> None:
        self.losses.finish(int(trainer.global_step))
        self._flush(trainer, pl_module)
        if trainer.is_global_zero:
            self.refit_scheduler.wait()
            # after a stop, the forecast that justified it stays the newest (no refit after the decision)
            if self.stops.message is None:
                self._poll_refit(trainer, pl_module)
                if self.refit_scheduler.needs_final_refit(self.history, self.forecast):
                    # a last refit on every observation, so the summary's fit covers the whole run
                    self.refit_scheduler.run_inline(int(trainer.global_step), self._refit_job())
                    self._poll_refit(trainer, pl_module)
            self.refit_scheduler.close()
        self._share_forecasts(trainer)
        if trainer.is_global_zero:
            if self.monitor is not None and not self.losses.metric_seen and not self._name_warned:
                self.report.warn(trainer, self.losses.never_logged(trainer), ScalingWarning)
            if self.write_summary:
                save_summary(self, trainer)
            self.report.call_sinks(trainer, "on_train_end", trainer, pl_module, self)
        self._active = False

    def summary(self, trainer=None) -> dict[str, Any]:
        """The run summary (the ``scaling_summary.json`` schema of ``lightning_scaling.io.summary``)."""
        return build_summary(self, trainer)


def _check_options(monitor, x_axis, total_steps, level, target_loss, sinks, **flags) -> None:
    """One clear error for a common argument that cannot be used."""
    if monitor is not None and not isinstance(monitor, str):
        raise InvalidInputError(f"monitor must be a logged metric name (str) or None, got {monitor!r}")
    if x_axis not in AXES:
        raise InvalidInputError(f"x_axis must be one of {AXES}, got {x_axis!r}")
    if total_steps is not None and not (isinstance(total_steps, int) and total_steps > 0):
        raise InvalidInputError(f"total_steps must be a positive int, got {total_steps!r}")
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise InvalidInputError(f"level must be in (0, 1), got {level!r}")
    if target_loss is not None and not (isinstance(target_loss, (int, float)) and math.isfinite(target_loss)
                                        and target_loss > 0):
        raise InvalidInputError(f"target_loss must be a positive finite loss or None, got {target_loss!r}")
    if not isinstance(sinks, (list, tuple)):
        raise InvalidInputError(f"sinks must be a list or tuple of sink objects, got {type(sinks).__name__}")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise InvalidInputError(f"{name} must be True or False, got {value!r}")


class ScalingLawMonitor(_MonitorLogic, pl.Callback):
    __doc__ = _MonitorLogic.__doc__
    _logger = logging.getLogger("pytorch_lightning.callbacks.scaling_law_monitor")
