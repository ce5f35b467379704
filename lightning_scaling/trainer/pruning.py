"""Sweep pruning with Optuna on the *forecast* final loss (optional: ``pip install lightning-scaling[optuna]``).

Optuna's own Lightning pruning callback reports the current value of a metric and lets the
study's pruner compare trials on it. A run with a long schedule looks worse than a short one
at the same step (its learning rate is still high) although it will end lower; what the
pruner should compare is where each run will *end*. ``ForecastPruning`` reports the
``ScalingLawMonitor``'s forecast of the final loss at each of the monitor's decision steps
(its refit cadence) and asks the study's pruner whether to stop.

DDP: only the process of global rank 0 needs (and touches) the trial; pass ``None`` on the
other ranks. The decision is reduced across ranks with ``trainer.strategy.reduce_boolean_decision``
at the same steps on every rank (the decision steps depend on the step alone), so every rank
stops at the same step. ``optuna.TrialPruned`` is raised after the fit has ended (from
``on_fit_end``) on the process that holds the trial, so checkpoints, the run summary and the
loggers are finished first; with ``raise_on_prune=False`` call :meth:`check_pruned` yourself.

Optuna is imported only when a ``ForecastPruning`` is created with a trial: importing
``lightning_scaling`` (or this module) never imports it.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
from typing import Any

import pytorch_lightning as pl

from ..errors import InvalidInputError
from .callback import _MonitorLogic

log = logging.getLogger(__name__)

VALUES = ("forecast", "loss")
_SMOOTHING = 5  # observations averaged into the current loss of value="loss"


def _import_optuna():
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ForecastPruning needs optuna: pip install 'lightning-scaling[optuna]' (or pip install optuna)"
        ) from exc
    return optuna


class _ForecastPruningLogic:
    r"""Report the forecast final loss to an Optuna trial and prune through the study's pruner.

    Place it after the ``ScalingLawMonitor`` in ``callbacks`` (then each decision step reports
    the forecast made at that step).

    Args:
        trial: the ``optuna.trial.Trial`` of this run on global rank 0; ``None`` (or anything)
            on the other ranks of a DDP job, which never touch it. Not a
            ``TorchDistributedTrial``: pass the plain trial on rank 0 and ``None`` elsewhere.
        monitor: the ``ScalingLawMonitor`` whose forecasts to report; default: the first one
            in the trainer's callbacks.
        value: ``"forecast"`` (default): the expected loss at the planned last step: the median
            of the newest ``smoothing`` forecasts with a finite value. ``"loss"``: the current
            loss (the mean of the last 5 observed losses), which is what Optuna's own callback
            prunes on; for comparisons.
        smoothing: forecasts whose median is reported (default 3; 1: the newest alone). Optuna's
            pruners judge a trial by the *best* value it ever reported, so one optimistic
            outlier among the forecasts would shield a trial for good.
        min_fraction: report and prune only from this fraction of the planned steps on. Default:
            the monitor's ``stop_config.min_fraction`` (0.2), for the same reason: early forecasts are the
            least reliable, and a report counts for the rest of the trial even before the
            pruner's ``n_warmup_steps``.
        report_every: report and decide every this many optimizer steps. Default: at the
            monitor's decision steps (its ``refit_every``, or 1/200 of the planned run). The
            study's pruner compares trials at equal steps, so every trial of a study should
            report at the same steps: give all of them the same ``refit_every`` (or this).
        raise_on_prune: raise ``optuna.TrialPruned`` from ``on_fit_end`` on the process that
            holds the trial (default True); else call :meth:`check_pruned` after ``fit``.

    Reported values are losses in the monitored metric's units at optimizer step
    ``trainer.global_step``.

    Attributes:
        reports: ``[(step, value), ...]`` reported to the trial (rank 0), oldest first.
        pruned_step: the optimizer step at which the trial was pruned, or None.
        message: why it was pruned (the value, the step, the pruner), or None.

    Example::

        >>> import optuna, pytorch_lightning as pl                                    # doctest: +SKIP
        >>> from lightning_scaling import ScalingLawMonitor
        >>> from lightning_scaling.pruning import ForecastPruning
        >>> def objective(trial):                                                     # doctest: +SKIP
        ...     model = make_model(lr=trial.suggest_float("lr", 1e-4, 1e-2, log=True))
        ...     monitor = ScalingLawMonitor(refit_every=100)
        ...     trainer = pl.Trainer(max_steps=10_000, callbacks=[monitor, ForecastPruning(trial, monitor)])
        ...     trainer.fit(model)        # raises optuna.TrialPruned after fit when pruned
        ...     return monitor.summary()["final_loss"]
        >>> optuna.create_study(pruner=optuna.pruners.MedianPruner()).optimize(objective, 20)  # doctest: +SKIP
    """

    def __init__(
        self,
        trial: Any,
        monitor: Any = None,
        *,
        value: str = "forecast",
        smoothing: int = 3,
        min_fraction: float | None = None,
        report_every: int | None = None,
        raise_on_prune: bool = True,
    ):
        super().__init__()
        if value not in VALUES:
            raise InvalidInputError(f"value must be one of {VALUES}, got {value!r}")
        if not (isinstance(smoothing, int) and smoothing >= 1):
            raise InvalidInputError(f"smoothing must be a positive int, got {smoothing!r}")
        if min_fraction is not None and not (isinstance(min_fraction, (int, float)) and 0 <= min_fraction <= 1):
            raise InvalidInputError(f"min_fraction must be in [0, 1] or None, got {min_fraction!r}")
        if report_every is not None and not (isinstance(report_every, int) and report_every > 0):
            raise InvalidInputError(f"report_every must be a positive int or None, got {report_every!r}")
        if trial is not None:
            _import_optuna()
            if type(trial).__name__ == "TorchDistributedTrial":
                raise InvalidInputError(
                    "ForecastPruning takes the plain optuna trial on global rank 0 and None on the other ranks "
                    "(it reduces the decision across ranks itself), not a TorchDistributedTrial"
                )
            if not (callable(getattr(trial, "report", None)) and callable(getattr(trial, "should_prune", None))):
                raise InvalidInputError("trial must be an optuna trial (report, should_prune), "
                                        f"got {type(trial).__name__}")
        self.trial = trial
        self.monitor = monitor
        self.value = value
        self.smoothing = smoothing
        self.min_fraction = None if min_fraction is None else float(min_fraction)
        self.report_every = report_every
        self.raise_on_prune = bool(raise_on_prune)
        self.reports: list[tuple[int, float]] = []
        self.pruned_step: int | None = None
        self.message: str | None = None
        self._active = False
        self._seen_step = 0

    # -- hooks (each a guard that delegates) --------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or trainer.fast_dev_run:
            return
        self._attach(trainer)

    def on_train_start(self, trainer, pl_module) -> None:
        self._active = not trainer.fast_dev_run
        self._seen_step = int(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._active or trainer.global_step == self._seen_step:
            return
        self._seen_step = int(trainer.global_step)
        if self._is_decision_step(self._seen_step):
            self._decide(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._active = False

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._active = False

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.raise_on_prune and self.trial is not None and trainer.is_global_zero:
            self.check_pruned()

    # -- logic ------------------------------------------------------------------------------
    def check_pruned(self) -> None:
        """Raise ``optuna.TrialPruned`` if this run was pruned (call after ``trainer.fit``)."""
        if self.pruned_step is not None:
            raise _import_optuna().TrialPruned(self.message)

    def _attach(self, trainer) -> None:
        if self.monitor is None:
            found = [cb for cb in trainer.callbacks if isinstance(cb, _MonitorLogic)]
            if not found:
                raise InvalidInputError(
                    "ForecastPruning needs a ScalingLawMonitor in the trainer's callbacks (it reports the monitor's "
                    "forecasts): Trainer(callbacks=[ScalingLawMonitor(...), ForecastPruning(trial)])"
                )
            self.monitor = found[0]
        elif not isinstance(self.monitor, _MonitorLogic):
            raise InvalidInputError(f"monitor must be a ScalingLawMonitor, got {type(self.monitor).__name__}")
        if trainer.is_global_zero and self.trial is None:
            raise InvalidInputError("ForecastPruning: the process of global rank 0 must hold the optuna trial "
                                    "(got None)")
        if trainer.world_size > 1 and _runs_in_a_copy():
            raise InvalidInputError(
                "ForecastPruning needs global rank 0 to be the process that holds the trial; spawn-based strategies "
                "(ddp_spawn, ddp_notebook) train in copies of it. Use strategy='ddp' (or torchrun)."
            )

    def _is_decision_step(self, step: int) -> bool:
        """A function of the step alone (and the planned end), so every rank agrees."""
        if step <= 0:
            return False
        if self.report_every is not None:
            return step % self.report_every == 0
        return bool(self.monitor.is_candidate(step))

    def _current_value(self) -> float | None:
        if self.value == "loss":
            recent = [r[4] for r in self.monitor.history.last(_SMOOTHING) if math.isfinite(r[4])]
            return float(sum(recent) / len(recent)) if recent else None
        finite = [f.final_loss for f in self.monitor.forecasts[-4 * self.smoothing:] if math.isfinite(f.final_loss)]
        if not finite:
            return None
        newest = sorted(finite[-self.smoothing:])
        mid = len(newest) // 2
        return float(newest[mid] if len(newest) % 2 else (newest[mid - 1] + newest[mid]) / 2)

    def _decide(self, trainer) -> None:
        step = int(trainer.global_step)
        local = False
        if trainer.is_global_zero and self.pruned_step is None and self._past_min_fraction(step):
            value = self._current_value()
            if value is not None:
                self.trial.report(value, step)
                self.reports.append((step, value))
                local = bool(self.trial.should_prune())
        # every rank reaches this collective at the same steps; only rank 0 can say yes
        prune = bool(trainer.strategy.reduce_boolean_decision(local, all=False))
        if not prune or self.pruned_step is not None:
            return
        trainer.should_stop = True
        self.pruned_step = step
        if trainer.is_global_zero:
            what = "forecast final loss" if self.value == "forecast" else "current loss"
            pruner = type(getattr(getattr(self.trial, "study", None), "pruner", None)).__name__
            self.message = (f"pruned by the study's {pruner} at step {step:,} (optimizer steps): {what} "
                            f"{self.reports[-1][1]:.4g} (monitored metric's units)")
            log.info("ForecastPruning: %s", self.message)
        else:
            self.message = f"pruned at step {step:,} (decided on global rank 0)"

    def _past_min_fraction(self, step: int) -> bool:
        fraction = self.min_fraction if self.min_fraction is not None else float(self.monitor.stop_config.min_fraction)
        planned = getattr(self.monitor, "planned_steps", None)
        if not fraction or planned is None or not math.isfinite(planned):
            return True
        return step >= fraction * planned


def _runs_in_a_copy() -> bool:
    """Does this process train in a copy of the one that made the trial?

    Spawn-based strategies (``ddp_spawn``, ``ddp_notebook``, ``ddp_fork``: Lightning's
    multiprocessing launcher) train in child processes that the ``multiprocessing`` module
    made, each with a pickled copy of the trial; ``strategy="ddp"`` (and torchrun) starts the
    other ranks as fresh interpreters and trains rank 0 in the user's own process. The
    standard library says which case this is (``multiprocessing.parent_process()``, Python
    3.8+), whatever the launcher class and whichever Lightning namespace is in use.
    """
    return multiprocessing.parent_process() is not None


class ForecastPruning(_ForecastPruningLogic, pl.Callback):
    __doc__ = _ForecastPruningLogic.__doc__
