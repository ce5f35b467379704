"""The stop decision: the rules of ``StopConfig`` and the reference check, reduced across
processes with ``trainer.strategy.reduce_boolean_decision`` and turned into ``trainer.should_stop``.

Every rank reaches the collective calls at the same steps (the decision steps depend on the
step alone); only rank zero holds forecasts, so the reason is taken from rank zero when it
has one.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError, ScalingWarning, WorseThanReferenceWarning
from ..monitor.config import StopConfig
from ..monitor.reference import ReferenceCheck
from ..monitor.stopping import StopReason, evaluate_stopping_criteria
from .reporting import Reporter, log_values


class StopController:
    """Decides at candidate steps whether to stop, and remembers why it did.

    Args:
        config: the stop rules.
        reference: what a run like this should reach (``lightning_scaling.monitor.reference``), or None.

    Attributes:
        reason: the ``StopReason`` (``NOT_STOPPED`` while running).
        message: the human-readable reason (None while running).
        step: the optimizer step of the stop (None while running).
        reference_check: the ``ReferenceCheck``, or None without a reference.
    """

    def __init__(self, config: StopConfig, reference: Any = None):
        if config.worse_than_reference and reference is None:
            raise InvalidInputError("stop_if_worse_than_reference=True needs reference= (a loss, a ScalingLawFit "
                                    "or a run summary)")
        self.config = config
        self.reference_check = None if reference is None else ReferenceCheck(
            reference, patience=config.forecast_patience, stop=config.worse_than_reference)
        self.reason = StopReason.NOT_STOPPED
        self.message: str | None = None
        self.step: int | None = None

    def restore(self, message: str | None, step: int | None, reason: str | None = None) -> None:
        self.message, self.step = message, step
        if reason in StopReason.__members__:
            self.reason = StopReason[reason]
        else:
            self.reason = StopReason.NOT_STOPPED if message is None else _kind_of(message)

    def decide(self, trainer, pl_module, *, monitor, forecasts: list, report: Reporter, log_metrics: bool) -> None:
        """Check the rules at this candidate step; stop every rank when one holds on any."""
        step = int(trainer.global_step)
        ref_stop, ref_message = self._check_reference(trainer, pl_module, monitor, forecasts, report)
        if not self.config.any_rule or self.message is not None:
            return
        last = monitor.divergence.last_event
        behind = monitor.trend.behind
        reason, message = evaluate_stopping_criteria(
            self.config, step=step, planned_steps=monitor.planned_steps,
            recent_forecasts=forecasts[-self.config.forecast_patience:], behind=behind,
            behind_message=report.last_behind_message if behind else None, diverged=monitor.divergence.diverged,
            divergence_message=None if last is None else last.message(), worse_than_reference=ref_stop,
            reference_message=ref_message)
        # every rank reaches this call at the same steps (candidate steps depend on the step only)
        if not bool(trainer.strategy.reduce_boolean_decision(bool(reason), all=False)):
            return
        if trainer.world_size > 1:
            shared_reason, shared = trainer.strategy.broadcast((reason.name, message), src=0)
            if shared:
                reason, message = StopReason[shared_reason], shared
            elif not message:  # only divergence is judged off rank zero
                reason, message = StopReason.DIVERGENCE, "another process decided to stop (its loss diverged)"
        trainer.should_stop = True
        self.reason, self.message, self.step = reason, message, step
        if trainer.is_global_zero:
            report.info(trainer, f"ScalingLawMonitor stopped the run at step {step:,}: {message}")
            report.warnings_emitted.append(f"step {step}: stopped: {message}")
            report.call_sinks(trainer, "on_event", trainer, pl_module, monitor,
                              {"kind": "stop", "step": step, "message": message})
            if log_metrics and pl_module is not None:
                log_values(pl_module, {"scaling/stopped": 1.0})

    def _check_reference(self, trainer, pl_module, monitor, forecasts: list,
                         report: Reporter) -> tuple[bool, str | None]:
        """Compare the newest forecasts with the reference; flag on rank zero (forecasts live there)."""
        if self.reference_check is None:
            return False, None
        verdict = self.reference_check.evaluate(
            step=int(trainer.global_step), planned_steps=monitor.planned_steps, min_fraction=self.config.min_fraction,
            n_params=monitor.compute.n_params_non_embedding, forecasts=forecasts)
        if verdict.unavailable:
            report.warn(trainer, verdict.unavailable, ScalingWarning)
        if verdict.flag:
            message = f"ScalingLawMonitor: {verdict.message}."
            report.warn(trainer, message, WorseThanReferenceWarning)
            report.call_sinks(trainer, "on_event", trainer, pl_module, monitor, {
                "kind": "worse_than_reference", "step": int(trainer.global_step), "message": message,
                "detail": {"reference_loss": verdict.reference_loss, "n_params": verdict.n_params,
                           "tokens": verdict.tokens}})
        return verdict.stop, verdict.message


def _kind_of(message: str) -> StopReason:
    """The reason of a stop message written before the reason was stored (older checkpoints)."""
    for prefix, reason in (("divergence", StopReason.DIVERGENCE), ("another process", StopReason.DIVERGENCE),
                           ("behind trend", StopReason.BEHIND_TREND), ("forecast above", StopReason.FORECAST_ABOVE),
                           ("worse than reference", StopReason.WORSE_THAN_REFERENCE)):
        if message.startswith(prefix):
            return reason
    return StopReason.NOT_STOPPED
