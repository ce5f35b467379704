"""``ScalingLawMonitor``: the Lightning callback (glue only: hooks, DDP sync, state_dict).

The decisions live in ``monitoring`` (pure), the history in ``history``, the compute count in
``compute``; this module reads the trainer, feeds them, and turns their answers into logs,
warnings, ``trainer.should_stop`` and the run summary. ``_MonitorLogic`` holds the hooks and
knows no Lightning namespace; ``ScalingLawMonitor`` here is the ``pytorch_lightning``
Callback, ``lightning_scaling.lightning.ScalingLawMonitor`` the ``lightning.pytorch`` twin.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from .compute import ComputeCounter
from ..errors import (
    BehindTrendWarning,
    DivergenceWarning,
    FitFailedWarning,
    InvalidInputError,
    ScalingWarning,
)
from ..monitor.history import LossHistory
from ..monitor.monitoring import (
    AXES,
    DivergenceDetector,
    Forecast,
    RefitRunner,
    TrendDetector,
    evaluate_stopping_criteria,
    make_forecast,
)
from ..core.plain import plain
from ..monitor.config import StopConfig

log = logging.getLogger(__name__)

_STATE_FORMAT = "lightning-scaling/monitor"
_STATE_VERSION = 1
_SUMMARY_FORMAT = "lightning-scaling/run-summary"
_SUMMARY_VERSION = 1
_SUMMARY_FILE = "scaling_summary.json"

# Names a training loss is commonly logged under, followed when training_step returns none.
_LOSS_NAMES = ("train_loss", "loss", "train/loss", "training_loss", "train_loss_step", "train/loss_step")
_FLUSH_EVERY = 16  # at most this many optimizer steps between two batches of checks
_NO_LOSS_GRACE = 50  # optimizer steps without any loss before the configuration error
_MIN_POINTS = 8  # observations before the first refit
MIN_REFIT_SPACING = 0.05
"""A refit runs whatever the overhead budget once the last one is this share of the run old."""
_KEEP_FORECASTS = 256  # forecasts kept in a checkpoint (older ones thinned)


class _MonitorLogic:
    r"""Forecast a run's final loss while it trains; warn when it falls behind; stop it if asked.

    Zero configuration works for any LightningModule whose ``training_step`` returns its loss
    (a tensor, or a dict with ``"loss"``). Every optimizer step's loss (the mean over the
    micro-batches of gradient accumulation) goes into a bounded history (at most 4,096 stored
    points however long the run); the history is refit on a background thread at a cadence
    held to ``max_overhead`` of the training time, and the fit forecasts the loss at the
    planned last step with a ``level`` interval.

    Args:
        monitor: a logged metric to follow instead of ``training_step``'s loss, e.g.
            ``"val_loss"`` (read whenever it is logged anew) or ``"train_loss"``.
        x_axis: the compute axis of the fit: ``"step"`` (optimizer steps, default),
            ``"tokens"`` or ``"flops"``. When the trainer's LR schedule is known the fit runs on
            the optimizer step whatever this says (a schedule is defined per step) and compute
            is converted through the measured compute per step.
        total_steps: the planned number of optimizer steps; default ``trainer.max_steps``, else
            ``trainer.estimated_stepping_batches``. When none is known the monitor forecasts
            only at ``target_loss``.
        refit_every: refit every this many optimizer steps. ``None`` (default): a candidate
            every 1/200 of the planned run (at least 4 steps; when the end is unknown, a
            cadence that doubles as the run does); after the first refit, a candidate is
            skipped while the monitor (the refits' CPU time plus its per-step hook) has used
            more than ``max_overhead`` of the training time, unless the last refit is
            ``MIN_REFIT_SPACING`` (5%) of the run old. Candidates are also the steps at
            which stop decisions are reduced across processes: a function of the step only,
            the same on every rank (only rank zero refits).
        level: probability content of the forecast interval (default 0.9).
        target_loss: also forecast the steps, tokens and FLOPs at which the expected loss
            reaches this (defaults to ``stop_if_forecast_above`` when that is set).
        flops_per_batch: FLOPs of forward + backward of one micro-batch on one process
            (default: the module's ``flops_per_batch`` attribute, else measured on the meta
            device, else 6 * non-embedding parameters * tokens).
        tokens_per_batch: tokens of one micro-batch on one process, an int or a callable on
            the batch (default: the module's ``tokens_per_batch`` attribute, else the element
            count of the batch's integer input tensor).
        patience: behind-trend checks (one per observation) in a row before the warning
            (default: 1% of the planned steps, at least 3 and at most 50: a shift must
            outlast a bump; a quarter of the smoothing window when the end is unknown).
        smoothing: observations averaged into the smoothed loss of a behind-trend check
            (default: 2.5% of the planned steps, at least 5 and at most 200; 5 for a metric
            given by ``monitor=``). Window and patience were chosen on the replayed
            development curves (benchmarks/replay.py): shorter windows or patience let the
            short bumps of clean per-step curves through.
        min_excess: relative margin above the band before a check counts (default 0.015: 1.5%).
        trend_lag: behind-trend checks compare with a fit whose data ended at least this
            fraction of the planned run earlier (of the steps so far when the end is
            unknown; default 0.05), so a slow drift is not absorbed by the fit it is tested
            against.
        trend_after: no behind-trend check before this fraction of the planned run (0.05).
        trend_level: the level of the band behind-trend checks compare with (default 0.5:
            the central half; the margin, the measured noise and ``patience`` guard against
            false alarms, and a wide band would hide a shift of a few percent).
        stop_if_forecast_above: stop when, in ``forecast_patience`` forecasts in a row, even
            the optimistic (lower) end of the interval at the planned end is above this loss.
        stop_when_behind_trend: stop when a behind-trend warning is standing.
        stop_on_divergence: stop when the loss is NaN/inf or spiked for several steps.
        reference: what a run like this one should reach (``lightning_scaling.reference``): a loss,
            a ``ScalingLawFit`` (evaluated at this run's N, the non-embedding parameters, and D,
            the tokens at the planned last step) or a run summary (dict, or path of a
            ``scaling_summary.json`` or its folder: its final loss, or its forecast if it stopped
            early). When ``forecast_patience`` forecasts in a row lie entirely above it (even the
            lower end of the interval), a ``WorseThanReferenceWarning`` is emitted (once per episode).
        stop_if_worse_than_reference: also stop the run then (after ``min_fraction``).
        min_fraction: no stop before this fraction of the planned steps (default 0.2).
        forecast_patience: forecasts in a row that must agree before a forecast stop.
        max_overhead: share of training time the monitor may spend (0.01): a candidate refit
            of the automatic cadence is skipped while the refits' CPU time plus the time of
            the monitor's per-step hook exceed it.
        background: refit on a daemon thread (default) or inline (deterministic; for tests).
        log_metrics: log ``scaling/*`` through ``pl_module.log`` at the trainer's log steps.
        write_summary: write ``scaling_summary.json`` into the log dir at the end of training.
        tensorboard: add the TensorBoard "Scaling law" panels (``lightning_scaling.tensorboard``)
            when the trainer has a TensorBoardLogger (default True).
        sinks: objects notified on rank zero (optional methods ``setup(trainer, pl_module,
            monitor)``, ``on_observation(trainer, pl_module, monitor, observations)``,
            ``on_refit(trainer, pl_module, monitor, forecast)``, ``on_event(trainer,
            pl_module, monitor, event)``, ``on_train_end(trainer, pl_module, monitor)``);
            a sink that raises is reported as a warning and skipped from then on.

    Logged (rank zero, at the trainer's log steps; losses in the monitored metric's units):
        ``scaling/forecast_final_loss``, ``scaling/forecast_lower``, ``scaling/forecast_upper``
        (the forecast of the loss at the planned last step and its interval; at the first log
        step after each refit),
        ``scaling/tokens`` (cumulative tokens, all processes), ``scaling/flops`` (cumulative
        FLOPs, all processes), ``scaling/loss_smoothed`` (mean of the last 5 observations,
        with each new forecast),
        ``scaling/behind_trend`` (1 while a behind-trend warning stands, else 0; when it
        changes and with each new forecast),
        ``scaling/steps_to_target`` (optimizer steps), ``scaling/tokens_to_target`` (tokens),
        ``scaling/flops_to_target`` (FLOPs) where the expected loss reaches ``target_loss``,
        ``scaling/stopped`` (1 at the step the monitor stops the run).

    Attributes:
        forecast: the newest ``Forecast`` (None before the first refit): ``.final_loss``,
            ``.lower``, ``.upper``, ``.level``, ``.step``, ``.law``, ``.diagnostics``,
            ``.target_step``, ``.steps_to_target``, ``.tokens_to_target``, ``.flops_to_target``.
        forecasts: every forecast so far, oldest first.
        stopped_reason: None, or why the monitor stopped the run.

    Example::

        >>> from pytorch_lightning import Trainer
        >>> from lightning_scaling import ScalingLawMonitor
        >>> mon = ScalingLawMonitor(stop_if_forecast_above=3.2)
        >>> trainer = Trainer(max_steps=10_000, callbacks=[mon])
        >>> # trainer.fit(model); mon.forecast.final_loss, mon.stopped_reason
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
        patience: int | None = None,
        smoothing: int | None = None,
        min_excess: float = 0.015,
        trend_lag: float = 0.05,
        trend_after: float = 0.05,
        trend_level: float = 0.5,
        stop_if_forecast_above: float | None = None,
        stop_when_behind_trend: bool = False,
        stop_on_divergence: bool = False,
        reference: Any = None,
        stop_if_worse_than_reference: bool = False,
        min_fraction: float = 0.2,
        forecast_patience: int = 2,
        max_overhead: float = 0.01,
        background: bool = True,
        log_metrics: bool = True,
        write_summary: bool = True,
        sinks: list | tuple = (),
        tensorboard: bool = True,
    ):
        super().__init__()
        if monitor is not None and not isinstance(monitor, str):
            raise InvalidInputError(f"monitor must be a logged metric name (str) or None, got {monitor!r}")
        if x_axis not in AXES:
            raise InvalidInputError(f"x_axis must be one of {AXES}, got {x_axis!r}")
        if total_steps is not None and not (isinstance(total_steps, int) and total_steps > 0):
            raise InvalidInputError(f"total_steps must be a positive int, got {total_steps!r}")
        if refit_every is not None and not (isinstance(refit_every, int) and refit_every > 0):
            raise InvalidInputError(f"refit_every must be a positive int or None, got {refit_every!r}")
        if not 0 < level < 1:
            raise InvalidInputError(f"level must be in (0, 1), got {level!r}")
        if not 0 <= min_fraction <= 1:
            raise InvalidInputError(f"min_fraction must be in [0, 1], got {min_fraction!r}")
        if not 0 < max_overhead <= 1:
            raise InvalidInputError(f"max_overhead must be in (0, 1], got {max_overhead!r}")
        for name, value in (("target_loss", target_loss), ("stop_if_forecast_above", stop_if_forecast_above)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise InvalidInputError(f"{name} must be a finite number or None, got {value!r}")
        self.monitor = monitor
        self.x_axis = x_axis
        self.total_steps = total_steps
        self.refit_every = refit_every
        self.level = float(level)
        self.target_loss = target_loss if target_loss is not None else stop_if_forecast_above
        self.stop_if_forecast_above = stop_if_forecast_above
        self.stop_when_behind_trend = bool(stop_when_behind_trend)
        self.stop_on_divergence = bool(stop_on_divergence)
        self.min_fraction = float(min_fraction)
        self.forecast_patience = int(forecast_patience)
        self.max_overhead = float(max_overhead)
        self.background = bool(background)
        self.log_metrics = bool(log_metrics)
        self.write_summary = bool(write_summary)
        self.sinks: list = list(sinks)
        self.tensorboard = bool(tensorboard)
        if stop_if_worse_than_reference and reference is None:
            raise InvalidInputError("stop_if_worse_than_reference=True needs reference= (a loss, a ScalingLawFit "
                                    "or a run summary)")
        from ..monitor.reference import ReferenceCheck  # the pure comparison (issue 7)

        self.stop_if_worse_than_reference = bool(stop_if_worse_than_reference)
        self.reference_check = None if reference is None else ReferenceCheck(
            reference, patience=max(1, int(forecast_patience)), stop=self.stop_if_worse_than_reference)

        self.history = LossHistory()
        self.compute = ComputeCounter(flops_per_batch=flops_per_batch, tokens_per_batch=tokens_per_batch)
        if smoothing is not None and not (isinstance(smoothing, int) and smoothing >= 1):
            raise InvalidInputError(f"smoothing must be a positive int or None, got {smoothing!r}")
        if not (0 <= trend_lag < 1 and 0 <= trend_after < 1):
            raise InvalidInputError(f"trend_lag and trend_after must be in [0, 1), got {trend_lag!r}, {trend_after!r}")
        self.smoothing = smoothing
        self.trend_lag = float(trend_lag)
        self.trend_after = float(trend_after)
        if patience is not None and not (isinstance(patience, int) and patience >= 1):
            raise InvalidInputError(f"patience must be a positive int or None, got {patience!r}")
        self.patience = patience
        if not 0 < trend_level < 1:
            raise InvalidInputError(f"trend_level must be in (0, 1), got {trend_level!r}")
        self.trend = TrendDetector(patience=patience or 3, window=smoothing or 5, min_excess=min_excess,
                                   level=trend_level)
        self.divergence = DivergenceDetector()
        self._forecasts: list[Forecast] = []
        self._stopped_reason: str | None = None
        self.stopped_step: int | None = None
        self.warnings_emitted: list[str] = []
        self.planned_steps: float | None = None
        self.schedule_lr: np.ndarray | None = None
        self.schedule_reason = "schedule not looked up yet"
        self.loss_name = monitor or "training_step loss"

        self._runner = RefitRunner(background=background)
        self._active = False
        self._seen_step = 0
        self._micro: list = []  # this optimizer step's micro-batch losses (tensors or floats)
        self._pending: list[list] = []  # [step, tokens, flops, loss (tensor or float)]
        self._followed: str | None = monitor
        self._last_metric: Any = None
        self._metric_seen = False
        self._loss_seen = False
        self._steps_without_loss = 0
        self._train_start: float | None = None
        self._refits = 0
        self._refit_failures = 0
        self._bad_sinks: set[tuple[int, str]] = set()
        self._inflight_step: int | None = None
        self._hook_seconds = 0.0  # wall time spent in on_train_batch_end, counted in the budget
        self._loss_factor = 1
        self._logged_forecast: Forecast | None = None
        self._logged_behind: bool | None = None

    # -- public read-outs --------------------------------------------------------------------
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
        """None, or why the monitor stopped the run."""
        return self._stopped_reason

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, x_axis=self.x_axis)

    # -- hooks (each a guard that delegates) ----------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or trainer.fast_dev_run:
            return
        self.compute.setup(pl_module, world_size=trainer.world_size)
        if self.tensorboard and trainer.is_global_zero:
            self._attach_tensorboard(trainer)  # the "Scaling law" panels (issue 5)
        self._call_sinks(trainer, "setup", trainer, pl_module, self)

    def on_train_start(self, trainer, pl_module) -> None:
        self._active = not trainer.fast_dev_run
        if not self._active:
            return
        self._start(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._active:
            return
        t0 = time.perf_counter()
        first = not self.compute.micro_batches
        self._on_micro_batch(trainer, pl_module, outputs, batch)
        if not first:  # the first batch's one-time FLOP measurement is not a recurring cost
            self._hook_seconds += time.perf_counter() - t0

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self._active or trainer.sanity_checking or self.monitor is None:
            return
        self._read_metric(trainer, from_validation=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._active:
            return
        self._check_loss_found(trainer, epoch_end=True)

    def on_train_end(self, trainer, pl_module) -> None:
        if not self._active:
            return
        self._finish(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not self._active:
            return
        self._active = False
        if trainer.is_global_zero and self.write_summary:
            try:
                self._write_summary(trainer)
            except Exception:  # the user's exception is the one to see
                log.debug("could not write the run summary after an exception", exc_info=True)
        self._call_sinks(trainer, "on_exception", trainer, pl_module, self, exception)

    def state_dict(self) -> dict[str, Any]:
        pending = [[p[0], p[1], p[2], v] for p, v in zip(self._pending, _to_floats([p[3] for p in self._pending]))]
        kept = _thin(self._forecasts, _KEEP_FORECASTS)
        latest = self.forecast
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "history": self.history.state_dict(),
            "compute": self.compute.state_dict(),
            "trend": self.trend.state_dict(),
            "divergence": self.divergence.state_dict(),
            "forecasts": [f.to_dict(diagnostics=f is latest) for f in kept],
            "fit": None if latest is None or latest.fit is None else plain(latest.fit.to_dict()),
            "stopped_reason": self._stopped_reason,
            "stopped_step": self.stopped_step,
            "warnings": list(self.warnings_emitted[-100:]),
            "seen_step": int(self._seen_step),
            "loss_name": self.loss_name,
            "followed": self._followed,
            "refits": int(self._refits),
            "pending": [[float(v) for v in p] for p in pending],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        from ..core.curve import CurveFit

        if state_dict.get("format") != _STATE_FORMAT:
            raise InvalidInputError("not a ScalingLawMonitor state (missing or wrong 'format')")
        if int(state_dict.get("version", 0)) > _STATE_VERSION:
            raise InvalidInputError(
                f"ScalingLawMonitor state version {state_dict['version']} is newer than this "
                f"lightning-scaling understands ({_STATE_VERSION}); upgrade to resume this run"
            )
        self.history.load_state_dict(state_dict["history"])
        self.compute.load_state_dict(state_dict["compute"])
        self.trend.load_state_dict(state_dict["trend"], CurveFit.from_dict)
        self.divergence.load_state_dict(state_dict["divergence"])
        fit = None if state_dict.get("fit") is None else CurveFit.from_dict(state_dict["fit"])
        dicts = state_dict.get("forecasts", [])
        self._forecasts = [Forecast.from_dict(d, fit if i == len(dicts) - 1 else None) for i, d in enumerate(dicts)]
        self._stopped_reason = state_dict.get("stopped_reason")
        self.stopped_step = state_dict.get("stopped_step")
        self.warnings_emitted = list(state_dict.get("warnings", []))
        self._seen_step = int(state_dict.get("seen_step", 0))
        self.loss_name = state_dict.get("loss_name", self.loss_name)
        self._followed = state_dict.get("followed", self._followed)
        self._loss_seen = self.history.n_observed > 0
        self._refits = int(state_dict.get("refits", 0))
        self._pending = [[int(p[0]), p[1], p[2], p[3]] for p in state_dict.get("pending", [])]

    # -- start -------------------------------------------------------------------------------
    def _start(self, trainer, pl_module) -> None:
        self._train_start = time.perf_counter()
        self._hook_seconds = 0.0
        self._seen_step = int(trainer.global_step)
        self._micro = []
        self.compute.world_size = max(1, int(trainer.world_size))
        if self._stopped_reason is not None:
            self._info(trainer, f"ScalingLawMonitor: resuming a run it stopped at step {self.stopped_step} "
                       f"({self._stopped_reason}); its stop rules apply again")
            self._stopped_reason = None
            self.stopped_step = None
        self.planned_steps = self._planned_steps(trainer)
        if self.planned_steps is None:
            self._info(trainer, "ScalingLawMonitor: the planned end of the run is unknown (no max_steps, an "
                       "unsized dataloader); forecasting only at target_loss. Pass total_steps= to forecast the end.")
            if self.stop_if_forecast_above is not None:
                self._warn(trainer, "stop_if_forecast_above needs the planned end of the run (max_steps or "
                           "total_steps=); it is off for this run", ScalingWarning)
        if trainer.is_global_zero:
            self.schedule_lr, self.schedule_reason = self._load_schedule(trainer)
        self._configure_trend()

    def _configure_trend(self) -> None:
        """Size the smoothing window and the patience once the run's length is known."""
        per_step = self.planned_steps is not None and self.monitor is None
        if self.smoothing is None:
            auto = round(0.025 * self.planned_steps) if per_step else 5
            self.trend.set_window(min(200, max(5, auto)))
        if self.patience is None:
            auto = round(0.01 * self.planned_steps) if per_step else self.trend.window // 4
            self.trend.patience = min(50, max(3, auto))
        self.trend.schedule = self.schedule_lr

    def _planned_steps(self, trainer) -> float | None:
        if self.total_steps is not None:
            return float(self.total_steps)
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return float(trainer.max_steps)
        try:
            est = float(trainer.estimated_stepping_batches)
        except Exception:
            return None
        return est if math.isfinite(est) and est > 0 else None

    def _load_schedule(self, trainer) -> tuple[np.ndarray | None, str]:
        if self.planned_steps is None:
            return None, "schedule unused: the planned end is unknown"
        try:
            from .scheduler import future_lrs
        except (ImportError, AttributeError):
            return None, "schedule unknown (lightning_scaling.schedule is not available)"
        try:
            lr, reason = future_lrs(trainer, int(self.planned_steps))
        except Exception as exc:  # a schedule we cannot simulate is not worth a crash
            return None, f"schedule unknown ({type(exc).__name__}: {exc})"
        if lr is None:
            return None, f"schedule unknown ({reason})"
        lr = np.asarray(lr, dtype=float)
        if lr.ndim != 1 or lr.size < int(self.planned_steps) + 1 or not np.isfinite(lr).all():
            return None, "schedule unknown (future_lrs returned an unusable array)"
        return lr, str(reason or "schedule from the trainer's scheduler")

    # -- per micro-batch -----------------------------------------------------------------------
    def _on_micro_batch(self, trainer, pl_module, outputs, batch) -> None:
        self.compute.count_micro_batch(pl_module, batch)
        if self.compute.micro_batches == 1:
            self._info(trainer, f"ScalingLawMonitor: FLOPs from {self.compute.flops_source}; tokens from "
                       f"{self.compute.tokens_source}; planned end: {self.planned_steps} optimizer steps; "
                       f"{self.schedule_reason}")
        if self.monitor is None:
            loss = _loss_of(outputs)
            if loss is not None:
                self._micro.append(loss)
                # Lightning divides the returned loss by accumulate_grad_batches; undone at the step
                self._loss_factor = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
        if trainer.global_step != self._seen_step:
            self._on_optimizer_step(trainer, pl_module)

    def _on_optimizer_step(self, trainer, pl_module) -> None:
        step = int(trainer.global_step)
        self._seen_step = step
        self.compute.steps = step
        if self._micro:
            self._push(step, self._step_loss())
        elif self._followed is not None:
            self._read_metric(trainer, from_validation=False)
        elif self.monitor is None:
            self._follow_logged_loss(trainer)
        self._check_loss_found(trainer, epoch_end=False)

        candidate = self.is_candidate(step)
        if candidate or len(self._pending) >= self._flush_every():
            self._flush(trainer, pl_module)
        if trainer.is_global_zero:
            self._poll_refit(trainer, pl_module)
            if candidate:
                self._maybe_refit(trainer, pl_module)
        if candidate:
            self._decide(trainer, pl_module)
        if self.log_metrics and trainer.is_global_zero and _should_log(trainer):
            self._log(pl_module)

    def _flush_every(self) -> int:
        """Optimizer steps between two batches of checks: 0.2% of the planned run, 1 to 16.

        Converting accelerator losses to floats waits for the device, and every Python call
        in a training step runs with caches cold from the step's own work: a batch of checks
        every few steps costs far less than one check every step, and delays a warning by
        at most 0.2% of the run.
        """
        if self.planned_steps is None:
            return _FLUSH_EVERY // 2
        return max(1, min(_FLUSH_EVERY, int(0.002 * self.planned_steps)))

    def _step_loss(self) -> Any:
        """The optimizer step's loss: the mean of its micro-batches' (no device sync)."""
        micro, self._micro = self._micro, []
        factor = self._loss_factor
        if len(micro) == 1:
            return micro[0] if factor == 1 else micro[0] * factor
        return sum(micro) * (factor / len(micro))

    def _push(self, step: int, loss: Any) -> None:
        tokens, flops = self.compute.tokens, self.compute.flops
        if self._pending and self._pending[-1][0] == step:
            self._pending[-1] = [step, tokens, flops, loss]
        else:
            self._pending.append([step, tokens, flops, loss])
        self._loss_seen = True

    def _follow_logged_loss(self, trainer) -> None:
        metrics = trainer.callback_metrics
        for name in _LOSS_NAMES:
            if name in metrics:
                self._followed = name
                self.loss_name = name
                self._info(trainer, f"ScalingLawMonitor: training_step returns no loss; following the logged "
                           f"metric '{name}' (set monitor= to choose another)")
                self._read_metric(trainer, from_validation=False)
                return

    def _read_metric(self, trainer, from_validation: bool) -> None:
        name = self._followed
        value = trainer.callback_metrics.get(name)
        if value is None:
            if from_validation and not self._metric_seen:
                raise InvalidInputError(_missing_metric_message(name, trainer.callback_metrics))
            return
        self._metric_seen = True
        if value is self._last_metric:  # not logged anew since the last read
            return
        self._last_metric = value
        if hasattr(value, "detach"):
            value = value.detach()
            if value.numel() != 1:
                raise InvalidInputError(f"ScalingLawMonitor: monitor={name!r} must be a scalar, got shape "
                                        f"{tuple(value.shape)}")
            value = value.reshape(())
        self._push(int(trainer.global_step), value)
        if from_validation:
            self._flush(trainer, None)

    def _check_loss_found(self, trainer, epoch_end: bool) -> None:
        if self._loss_seen or self.history.n_observed or self.monitor is not None:
            return
        if epoch_end and self._followed is None:
            self._follow_logged_loss(trainer)
        if self._pending or self._loss_seen:
            return
        self._steps_without_loss += 0 if epoch_end else 1
        if epoch_end or self._steps_without_loss >= _NO_LOSS_GRACE:
            raise InvalidInputError(_no_loss_message(trainer.callback_metrics, self._steps_without_loss))

    # -- observations --------------------------------------------------------------------------
    def _flush(self, trainer, pl_module) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        losses = _to_floats([p[3] for p in pending])
        steps = [p[0] for p in pending]
        is_zero = trainer is None or trainer.is_global_zero
        for (step, tokens, flops, _), loss in zip(pending, losses):
            event = self.divergence.observe(step, loss)
            if event is not None and is_zero and trainer is not None:
                self._divergence_event(trainer, pl_module, event)
            self.history.append(step=step, key=self._key(step, tokens, flops), loss=loss, tokens=tokens, flops=flops)
        if is_zero:
            start = 0.0 if self.planned_steps is None else self.trend_after * self.planned_steps
            for (step, tokens, flops, _), loss in zip(pending, losses):
                if not math.isfinite(loss) or step < start:
                    continue
                span = self.planned_steps if self.planned_steps is not None else step
                self.trend.lag = self.trend_lag * span
                try:
                    event = self.trend.observe(step, {"step": float(step), "tokens": tokens, "flops": flops}, loss)
                except Exception as exc:  # a fit that cannot be evaluated must not end training
                    self.trend.reset_reference()
                    self._warn(trainer, f"ScalingLawMonitor: the trend check at step {step} could not evaluate "
                               f"its reference fit ({type(exc).__name__}: {exc}); it waits for the next fit",
                               FitFailedWarning)
                    continue
                if event is not None and trainer is not None:
                    self._behind_event(trainer, pl_module, event)
            if trainer is not None and self.sinks:
                obs = [{"step": s, "tokens": p[1], "flops": p[2], "loss": l} for s, p, l in zip(steps, pending, losses)]
                self._call_sinks(trainer, "on_observation", trainer, pl_module, self, obs)

    def _key(self, step: float, tokens: float, flops: float) -> float:
        """The bucketing axis of the history (the chosen x axis; the step while it is unknown)."""
        if self.x_axis == "tokens" and math.isfinite(tokens):
            return tokens
        if self.x_axis == "flops" and math.isfinite(flops):
            return flops
        return float(step)

    def _fit_axis(self) -> str:
        return "step" if self.schedule_lr is not None else self.x_axis

    # -- refits --------------------------------------------------------------------------------
    def is_candidate(self, step: int) -> bool:
        """Is ``step`` (an optimizer step) one at which the monitor refits and decides?

        A function of the step and the planned length alone, so every DDP rank agrees without
        communicating; integrations that must act at the same steps (``ForecastPruning``) use it.
        """
        if step <= 0:
            return False
        if self.refit_every is not None:
            return step % self.refit_every == 0
        if self.planned_steps is not None:
            return step % max(4, int(self.planned_steps) // 200) == 0
        cadence = max(8, 2 ** int(math.log2(max(step, 1) / 128.0)) if step >= 256 else 8)
        return step % cadence == 0

    def _maybe_refit(self, trainer, pl_module) -> None:
        if self.history.n_observed < _MIN_POINTS or self._runner.busy:
            return
        step = int(trainer.global_step)
        if self.refit_every is None and self._train_start is not None and self._refits > 0:
            # refits (CPU time of their thread) and the per-step hook share one budget; a refit
            # that is overdue runs anyway, so an expensive hook (a tiny model) cannot starve them
            elapsed = time.perf_counter() - self._train_start
            over = self._runner.cpu_seconds + self._hook_seconds > self.max_overhead * elapsed
            if over and not self._refit_overdue(step):
                return
        job = self._refit_job()
        self._inflight_step = step
        self._runner.submit(job)
        if not self.background:
            self._poll_refit(trainer, pl_module)

    def _refit_overdue(self, step: int) -> bool:
        """Has the last refit fallen ``MIN_REFIT_SPACING`` of the run behind (of the steps so
        far when the end is unknown)?"""
        last = self._inflight_step if self._inflight_step is not None else 0
        span = self.planned_steps if self.planned_steps is not None else step
        return step - last >= MIN_REFIT_SPACING * span

    def _refit_job(self):
        """A closure over a snapshot of the history (the thread never touches live state)."""
        from ..core.curve import fit_curve

        arrays = self.history.arrays()
        axis = self._fit_axis()
        if axis != "step" and not np.isfinite(arrays[axis]).any():
            axis = "step"
        kwargs = dict(
            fit_fn=fit_curve,
            x_axis=axis,
            target_step=self.planned_steps,
            lr=self.schedule_lr,
            level=self.level,
            target_loss=self.target_loss,
            band_level=self.trend.level,
            extra_diagnostics={
                "schedule": self.schedule_reason,
                "flops_source": self.compute.flops_source,
                "tokens_source": self.compute.tokens_source,
                "history_points": len(self.history),
            },
        )
        return lambda: make_forecast(arrays, **kwargs)

    def refit_now(self) -> Forecast:
        """Refit the stored history inline and return the forecast (without recording it)."""
        return self._refit_job()()

    def _poll_refit(self, trainer, pl_module) -> None:
        done = self._runner.poll()
        if done is None:
            return
        forecast, error, _cpu = done
        if error is not None:
            self._refit_failures += 1
            self._warn(trainer, f"ScalingLawMonitor: the refit at step {self._inflight_step} failed "
                       f"({type(error).__name__}: {error}); training goes on, the previous forecast stays",
                       FitFailedWarning)
            return
        self._refits += 1
        self._forecasts.append(forecast)
        self.trend.offer_fit(forecast.fit, forecast.step, forecast.x_axis, forecast.band)
        self._call_sinks(trainer, "on_refit", trainer, pl_module, self, forecast)

    # -- decisions -----------------------------------------------------------------------------
    def _decide(self, trainer, pl_module) -> None:
        ref_stop, ref_reason = self._check_reference(trainer, pl_module)
        if not (self.stop_if_forecast_above is not None or self.stop_when_behind_trend or self.stop_on_divergence
                or self.stop_if_worse_than_reference):
            return
        if self._stopped_reason is not None:
            return
        last = self.divergence.last_event
        behind_msg = self._last_behind_message if self.trend.behind else None
        local, reason = evaluate_stopping_criteria(
            StopConfig(forecast_above=self.stop_if_forecast_above, behind_trend=self.stop_when_behind_trend,
                       divergence=self.stop_on_divergence, min_fraction=self.min_fraction,
                       forecast_patience=max(1, self.forecast_patience)),
            step=int(trainer.global_step),
            planned_steps=self.planned_steps,
            recent_forecasts=self._forecasts[-self.forecast_patience:],
            behind=self.trend.behind,
            behind_message=behind_msg,
            diverged=self.divergence.diverged,
            divergence_message=None if last is None else last.message(),
        )
        if not local and ref_stop:
            local, reason = True, ref_reason
        # every rank reaches this call at the same steps (candidate steps depend on the step only)
        should_stop = bool(trainer.strategy.reduce_boolean_decision(bool(local), all=False))
        if not should_stop:
            return
        if trainer.world_size > 1:
            shared = trainer.strategy.broadcast(reason, src=0)
            reason = shared or reason or "another process decided to stop (its loss diverged)"
        trainer.should_stop = True
        self._stopped_reason = reason
        self.stopped_step = int(trainer.global_step)
        if trainer.is_global_zero:
            self._info(trainer, f"ScalingLawMonitor stopped the run at step {self.stopped_step:,}: {reason}")
            self.warnings_emitted.append(f"step {self.stopped_step}: stopped: {reason}")
            self._call_sinks(trainer, "on_event", trainer, pl_module, self,
                             {"kind": "stop", "step": self.stopped_step, "message": reason})
            if self.log_metrics and pl_module is not None:
                _log(pl_module, {"scaling/stopped": 1.0})

    def _check_reference(self, trainer, pl_module) -> tuple[bool, str | None]:
        """Compare the newest forecasts with the reference; flag on rank zero (forecasts live there)."""
        if self.reference_check is None:
            return False, None
        verdict = self.reference_check.evaluate(
            step=int(trainer.global_step), planned_steps=self.planned_steps, min_fraction=self.min_fraction,
            n_params=self.compute.n_params_non_embedding, forecasts=self._forecasts)
        if verdict.unavailable:
            self._warn(trainer, verdict.unavailable, ScalingWarning)
        if verdict.flag:
            from ..monitor.reference import WorseThanReferenceWarning

            message = f"ScalingLawMonitor: {verdict.message}."
            self._warn(trainer, message, WorseThanReferenceWarning)
            self._call_sinks(trainer, "on_event", trainer, pl_module, self, {
                "kind": "worse_than_reference", "step": int(trainer.global_step), "message": message,
                "detail": {"reference_loss": verdict.reference_loss, "n_params": verdict.n_params,
                           "tokens": verdict.tokens}})
        return verdict.stop, verdict.message

    _last_behind_message: str | None = None

    def _behind_event(self, trainer, pl_module, event) -> None:
        now = self.forecast
        if now is not None and math.isfinite(now.final_loss):
            forecast_now = (f"the forecast now is {now.final_loss:.4g} [{now.lower:.4g}, {now.upper:.4g}] "
                            f"at step {now.target_step:,}")
        elif now is not None:
            forecast_now = f"the newest fit ({now.law}, step {now.step:,}) has no end-of-run forecast"
        else:
            forecast_now = "no forecast yet"
        self._last_behind_message = f"{event.message()}; {forecast_now}"
        message = f"ScalingLawMonitor: behind trend: {self._last_behind_message}."
        self._warn(trainer, message, BehindTrendWarning)
        self._call_sinks(trainer, "on_event", trainer, pl_module, self,
                         {"kind": "behind_trend", "step": event.step, "message": message, "detail": plain(vars(event))})

    def _divergence_event(self, trainer, pl_module, event) -> None:
        message = f"ScalingLawMonitor: divergence: {event.message()}."
        self._warn(trainer, message, DivergenceWarning)
        self._call_sinks(trainer, "on_event", trainer, pl_module, self,
                         {"kind": "divergence", "step": event.step, "message": message, "detail": plain(vars(event))})

    # -- logging -------------------------------------------------------------------------------
    def _log(self, pl_module) -> None:
        # few keys, and a forecast only when it is new: Lightning's self.log costs a few hundred
        # microseconds per call, more than the rest of the monitor's step
        values = {"scaling/tokens": self.compute.tokens, "scaling/flops": self.compute.flops}
        f = self.forecast
        if self.trend.behind != self._logged_behind or (f is not None and f is not self._logged_forecast):
            self._logged_behind = self.trend.behind
            values["scaling/behind_trend"] = 1.0 if self.trend.behind else 0.0
        if f is not None and f is not self._logged_forecast:
            self._logged_forecast = f
            recent = self.history.last(5)
            if recent:
                values["scaling/loss_smoothed"] = sum(r[4] for r in recent) / len(recent)
            values.update({
                "scaling/forecast_final_loss": f.final_loss,
                "scaling/forecast_lower": f.lower,
                "scaling/forecast_upper": f.upper,
            })
            if f.target_loss is not None:
                values.update({
                    "scaling/steps_to_target": f.steps_to_target,
                    "scaling/tokens_to_target": f.tokens_to_target,
                    "scaling/flops_to_target": f.flops_to_target,
                })
        _log(pl_module, values)

    def _warn(self, trainer, message: str, category: type[Warning]) -> None:
        if trainer is not None and not trainer.is_global_zero:
            return
        step = None if trainer is None else int(trainer.global_step)
        self.warnings_emitted.append(message if step is None else f"step {step}: {message}")
        warnings.warn(message, category, stacklevel=3)

    # Lightning's own logger tree, so messages show where its callbacks' do (set by each twin)
    _logger = log

    def _info(self, trainer, message: str) -> None:
        if trainer is None or trainer.is_global_zero:
            self._logger.info(message)

    # -- sinks ---------------------------------------------------------------------------------
    def _attach_tensorboard(self, trainer) -> None:
        """Add the TensorBoard sink when the trainer has a TensorBoardLogger."""
        try:
            from ..tensorboard.sink import attach_tensorboard_sink
        except ImportError:  # panels not available in this installation
            return
        try:
            attach_tensorboard_sink(self, trainer)
        except Exception as exc:  # panels are a nicety; training goes on without them
            warnings.warn(f"ScalingLawMonitor: no TensorBoard panels ({type(exc).__name__}: {exc})",
                          ScalingWarning, stacklevel=2)

    def add_sink(self, sink: Any) -> None:
        """Register an object notified on rank zero (see ``sinks`` in the class docstring)."""
        self.sinks.append(sink)

    def _call_sinks(self, trainer, method: str, *args) -> None:
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

    # -- the end -------------------------------------------------------------------------------
    def _finish(self, trainer, pl_module) -> None:
        if self._micro:
            self._push(int(trainer.global_step), self._step_loss())
        self._flush(trainer, pl_module)
        if trainer.is_global_zero:
            if self._runner.busy:
                self._runner.wait(timeout=60.0)
            self._poll_refit(trainer, pl_module)
            last = self.history.last_step
            newest = self.forecast
            if (last is not None and self.history.n_observed >= _MIN_POINTS
                    and (newest is None or newest.step < last) and not self._runner.busy):
                # a last refit on every observation, so the summary's fit covers the whole run
                self._runner.background, background = False, self._runner.background
                try:
                    self._inflight_step = int(trainer.global_step)
                    self._runner.submit(self._refit_job())
                finally:
                    self._runner.background = background
                self._poll_refit(trainer, pl_module)
            if self.monitor is not None and not self._metric_seen:
                self._warn(trainer, f"ScalingLawMonitor: monitor={self.monitor!r} was never logged, so nothing "
                           "was forecast. " + _missing_metric_message(self.monitor, trainer.callback_metrics),
                           ScalingWarning)
            if self.write_summary:
                try:
                    self._write_summary(trainer)
                except OSError as exc:
                    self._warn(trainer, f"ScalingLawMonitor: could not write {_SUMMARY_FILE}: {exc}", ScalingWarning)
            self._call_sinks(trainer, "on_train_end", trainer, pl_module, self)
        self._active = False

    def summary(self, trainer=None) -> dict[str, Any]:
        """The run summary (the ``scaling_summary.json`` schema of docs/dev/TEAM.md)."""
        a = self.history.arrays()
        latest = self.forecast
        totals = self.compute
        recent = self.history.last(5)

        def column(values):
            v = np.asarray(values, dtype=float)
            return None if not np.isfinite(v).any() else [None if not math.isfinite(x) else float(x) for x in v]

        return plain(strict=True, value={
            "format": _SUMMARY_FORMAT,
            "version": _SUMMARY_VERSION,
            "run": _run_name(trainer),
            "n_params": None if totals.n_params_non_embedding is None else float(totals.n_params_non_embedding),
            "tokens": totals.tokens if math.isfinite(totals.tokens) else None,
            "flops": totals.flops if math.isfinite(totals.flops) else None,
            "steps": int(self._seen_step),
            "final_loss": float(np.mean([r[4] for r in recent])) if recent else None,
            "loss_name": self.loss_name,
            "x_axis": self.x_axis,
            "curve": {
                "step": [float(s) for s in a["step"]],
                "tokens": column(a["tokens"]),
                "flops": column(a["flops"]),
                "loss": [float(v) for v in a["loss"]],
            },
            "fit": None if latest is None or latest.fit is None else latest.fit.to_dict(),
            "forecast": None if latest is None else latest.to_dict(),
            "forecasts": [f.to_dict(diagnostics=False) for f in self._forecasts],
            "schedule": None if self.schedule_lr is None else {"lr": [float(v) for v in self.schedule_lr]},
            "warnings": list(self.warnings_emitted),
            "stopped_reason": self._stopped_reason,
            # extra keys (readers accept unknown keys)
            "stopped_step": self.stopped_step,
            "planned_steps": self.planned_steps,
            "n_params_total": None if totals.n_params is None else float(totals.n_params),
            "samples": totals.samples,
            "compute_sources": {"flops": totals.flops_source, "tokens": totals.tokens_source},
            "schedule_source": self.schedule_reason,
            "history": {"stored_points": len(self.history), "observations": self.history.n_observed},
            "refits": self._refits,
            "refit_failures": self._refit_failures,
        })

    def _write_summary(self, trainer) -> str:
        directory = _log_dir(trainer)
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, _SUMMARY_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.summary(trainer), fh, allow_nan=False)
        os.replace(tmp, path)
        self.summary_path = path
        return path


# -- helpers -------------------------------------------------------------------------------------
def _loss_of(outputs: Any) -> Any:
    """The scalar loss tensor in a training_step's output (tensor or dict with "loss"), or None.

    Kept as a tensor (Lightning hands it over detached): turning it into a float would wait
    for the device; the monitor converts a batch of them at once.
    """
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    if loss is None and isinstance(outputs, Mapping):
        loss = outputs.get("loss")
    if loss is None or not hasattr(loss, "detach") or loss.numel() != 1:
        return None
    return loss.detach()


def _to_floats(values: list) -> list[float]:
    """Floats from a mix of scalar tensors and numbers, with one device sync for the tensors."""
    tensors = [(i, v) for i, v in enumerate(values) if hasattr(v, "detach")]
    out = [float(v) if not hasattr(v, "detach") else math.nan for v in values]
    if len(tensors) == 1:
        i, t = tensors[0]
        out[i] = float(t)
    elif tensors:
        import torch

        by_device: dict[Any, list] = {}
        for i, t in tensors:
            by_device.setdefault(t.device, []).append((i, t))
        for items in by_device.values():
            stacked = torch.stack([t.reshape(()).float() for _, t in items]).tolist()
            for (i, _), v in zip(items, stacked):
                out[i] = float(v)
    return out


def _should_log(trainer) -> bool:
    """Will Lightning send this step's logged values to the loggers? (its own rule, read cheaply)"""
    n = getattr(trainer, "log_every_n_steps", 50) or 0
    if n <= 0:
        return False
    try:  # _LoggerConnector.should_update_logs, without its loop type checks
        stepped = trainer.fit_loop.epoch_loop._batches_that_stepped
        return (stepped + 1) % n == 0 or bool(trainer.should_stop)
    except AttributeError:
        return trainer.global_step % n == 0


def _log(pl_module, values: dict[str, float]) -> None:
    clean = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
    for name, value in clean.items():
        pl_module.log(name, value, on_step=True, on_epoch=False, rank_zero_only=True, batch_size=1,
                      prog_bar=name == "scaling/forecast_final_loss")


def _thin(items: list, keep: int) -> list:
    """At most ``keep`` items: the newest half as they are, the older ones evenly thinned."""
    if len(items) <= keep:
        return list(items)
    half = keep // 2
    old, new = items[:-half], items[-half:]
    idx = np.linspace(0, len(old) - 1, keep - half).round().astype(int)
    return [old[i] for i in sorted(set(idx.tolist()))] + new



def _log_dir(trainer) -> str:
    """The first logger's directory, else ``default_root_dir`` (no collective call, unlike trainer.log_dir)."""
    loggers = getattr(trainer, "loggers", None) or []
    if loggers:
        for attr in ("log_dir", "save_dir"):
            try:
                d = getattr(loggers[0], attr)
            except Exception:
                d = None
            if d:
                return str(d)
    return str(trainer.default_root_dir)


def _run_name(trainer) -> str:
    if trainer is None:
        return "run"
    loggers = getattr(trainer, "loggers", None) or []
    if loggers:
        try:
            name, version = loggers[0].name, loggers[0].version
            if name is not None:
                return f"{name}/{version}" if version is not None and version != "" else str(name)
        except Exception:
            pass
    return os.path.basename(os.path.abspath(str(trainer.default_root_dir))) or "run"


def _available(metrics: Mapping) -> str:
    names = sorted(k for k in metrics.keys() if not str(k).startswith("scaling/"))
    return ", ".join(f"'{n}'" for n in names) if names else "none"


def _missing_metric_message(name: str | None, metrics: Mapping) -> str:
    return (
        f"ScalingLawMonitor(monitor={name!r}): no metric named {name!r} has been logged. Log it in your "
        f"LightningModule (self.log({name!r}, value)) or pass the name of a metric you do log as "
        f"ScalingLawMonitor(monitor=...). Logged metrics: {_available(metrics)}."
    )


def _no_loss_message(metrics: Mapping, steps: int) -> str:
    return (
        "ScalingLawMonitor found no loss to follow: training_step returned no loss (a tensor or a dict "
        f"with 'loss') in {max(steps, 1)} optimizer step(s), and none of {', '.join(map(repr, _LOSS_NAMES))} "
        "was logged. Fix: return the loss from training_step (`return loss` or `return {'loss': loss}`), "
        "or log it with `self.log('train_loss', loss)` and pass ScalingLawMonitor(monitor='train_loss'). "
        f"Logged metrics: {_available(metrics)}."
    )


try:  # the declared dependency; the lightning.pytorch twin lives in lightning_scaling.lightning
    import pytorch_lightning as _pl
except ImportError:  # pragma: no cover - only without pytorch_lightning installed
    _pl = None

if _pl is not None:

    class ScalingLawMonitor(_MonitorLogic, _pl.Callback):
        __doc__ = _MonitorLogic.__doc__
        _logger = logging.getLogger("pytorch_lightning.callbacks.scaling_law_monitor")
