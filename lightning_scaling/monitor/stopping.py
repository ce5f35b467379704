"""The stop rules: ``evaluate_stopping_criteria`` returns (decision, reason), pure.

The decision is a :class:`StopReason` (falsy for ``NOT_STOPPED``), the reason the
human-readable message the monitor reports as ``stopped_reason``. The callback reduces the
decision across processes and stops the trainer.

>>> from lightning_scaling.monitor.config import StopConfig
>>> evaluate_stopping_criteria(StopConfig(behind_trend=True), step=50, planned_steps=100, recent_forecasts=[],
...                            behind=True, behind_message="3% above the band")
(<StopReason.BEHIND_TREND: 2>, 'behind trend: 3% above the band')
>>> bool(StopReason.NOT_STOPPED)
False
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum
from typing import Any

from .config import StopConfig


class StopReason(Enum):
    """Why the monitor stopped a run (as Lightning's ``EarlyStoppingReason``); falsy when it did not."""

    NOT_STOPPED = 0
    DIVERGENCE = 1
    BEHIND_TREND = 2
    FORECAST_ABOVE = 3
    WORSE_THAN_REFERENCE = 4

    def __bool__(self) -> bool:
        return self is not StopReason.NOT_STOPPED


def evaluate_stopping_criteria(
    rules: StopConfig,
    *,
    step: int,
    planned_steps: float | None,
    recent_forecasts: Sequence[Any],
    behind: bool = False,
    behind_message: str | None = None,
    diverged: bool = False,
    divergence_message: str | None = None,
    worse_than_reference: bool = False,
    reference_message: str | None = None,
) -> tuple[StopReason, str | None]:
    """Should the run stop at optimizer step ``step``? Returns (decision, reason).

    Each rule of ``rules`` is off unless asked for; the first that holds, in this order, wins:

    - none before ``rules.min_fraction`` of the planned steps (when they are known);
    - ``divergence``: the loss is non-finite, or spiked for several steps in a row (``diverged``);
    - ``behind_trend``: a behind-trend episode is going on (``behind``);
    - ``forecast_above``: the newest ``forecast_patience`` forecasts (objects with ``lower``,
      ``upper``, ``final_loss``, ``level``, ``target_step``) all put even the optimistic (lower)
      end of their interval at the planned end above it;
    - ``worse_than_reference``: the reference check says stop (``worse_than_reference``, with
      its ``reference_message``).
    """
    known_end = planned_steps is not None and math.isfinite(planned_steps) and planned_steps > 0
    if known_end and step < rules.min_fraction * planned_steps:
        return StopReason.NOT_STOPPED, None
    if rules.divergence and diverged:
        return StopReason.DIVERGENCE, f"divergence: {divergence_message or 'the loss diverged'}"
    if rules.behind_trend and behind:
        return StopReason.BEHIND_TREND, f"behind trend: {behind_message or 'the loss stayed above its forecast band'}"
    target = rules.forecast_above
    patience = max(1, rules.forecast_patience)
    if target is not None and known_end:
        latest = list(recent_forecasts)[-patience:]
        if len(latest) >= patience and all(math.isfinite(f.lower) and f.lower > target for f in latest):
            f = latest[-1]
            return StopReason.FORECAST_ABOVE, (
                f"forecast above target: at step {step:,} the forecast final loss at step "
                f"{f.target_step:,} is {f.final_loss:.4g}, {100 * f.level:.0f}% interval "
                f"[{f.lower:.4g}, {f.upper:.4g}]; even its optimistic end misses the target "
                f"{target:.4g} (in {len(latest)} forecasts in a row)"
            )
    if rules.worse_than_reference and worse_than_reference:
        return StopReason.WORSE_THAN_REFERENCE, reference_message
    return StopReason.NOT_STOPPED, None
