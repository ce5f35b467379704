"""Route a batch of observations into the history, the divergence check and the trend check.

Pure: the callback collects ``(step, tokens, FLOPs, loss)`` observations (optimizer steps,
cumulative tokens and FLOPs, the loss in the monitored metric's units), hands a batch of
them here, and reports the events that come back.

>>> from lightning_scaling.monitor.config import TrendConfig
>>> from lightning_scaling.monitor.divergence import DivergenceDetector
>>> from lightning_scaling.monitor.history import LossHistory
>>> from lightning_scaling.monitor.trend import TrendDetector
>>> history = LossHistory()
>>> observations = [(s, 100.0 * s, float("nan"), 3.0) for s in range(1, 11)] + [(11, 1100.0, float("nan"), 9.0),
...                                                                               (12, 1200.0, float("nan"), 3.0)]
>>> spikes, trend = observe_batch(observations, history=history, divergence=DivergenceDetector(),
...     trend=TrendDetector(), x_axis="tokens", planned_steps=100, trend_config=TrendConfig(), check_trend=True)
>>> history.n_observed, [e.kind for e in spikes], trend
(12, ['spike'], [])
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .config import TrendConfig
from .divergence import DivergenceDetector, DivergenceEnd, DivergenceEvent
from .history import LossHistory
from .trend import TrendDetector, TrendEnd, TrendEvent


@dataclass
class TrendFailure:
    """The trend check at ``step`` could not evaluate its reference fit; it forgot its fits."""

    step: int
    error: BaseException


def history_key(x_axis: str, step: float, tokens: float, flops: float) -> float:
    """The bucketing axis of the history: the chosen x axis, the step while that is unknown."""
    if x_axis == "tokens" and math.isfinite(tokens):
        return tokens
    if x_axis == "flops" and math.isfinite(flops):
        return flops
    return float(step)


def observe_batch(
    observations: Iterable[tuple[int, float, float, float]],
    *,
    history: LossHistory,
    divergence: DivergenceDetector,
    trend: TrendDetector,
    x_axis: str,
    planned_steps: float | None,
    trend_config: TrendConfig,
    check_trend: bool,
) -> tuple[list[DivergenceEvent | DivergenceEnd], list[TrendEvent | TrendEnd | TrendFailure]]:
    """Feed ``observations`` (oldest first) to the divergence check and the history, then (when
    ``check_trend``) the finite ones from ``trend_config.start`` of the planned run on to the
    trend check, its ``lag`` set from the planned length (the steps so far when unknown).

    Every finite observation reaches the trend detector (its noise and anchors count them);
    only those from ``start`` on are checked. Returns the divergence events (starts and ends
    of episodes) and the trend events (starts, ends, or failures), each oldest first.
    """
    observations = list(observations)
    spikes = []
    for step, tokens, flops, loss in observations:
        event = divergence.observe(step, loss)
        if event is not None:
            spikes.append(event)
        history.append(step=step, key=history_key(x_axis, step, tokens, flops), loss=loss, tokens=tokens, flops=flops)
    behind: list[TrendEvent | TrendEnd | TrendFailure] = []
    if not check_trend:
        return spikes, behind
    start = 0.0 if planned_steps is None else trend_config.start * planned_steps
    for step, tokens, flops, loss in observations:
        if not math.isfinite(loss):
            continue
        span = planned_steps if planned_steps is not None else step
        trend.lag = trend_config.lag * span
        try:
            event = trend.observe(step, {"step": float(step), "tokens": tokens, "flops": flops}, loss,
                                  check=step >= start)
        except Exception as exc:  # a fit that cannot be evaluated must not end training
            trend.reset_reference()
            behind.append(TrendFailure(int(step), exc))
            continue
        if event is not None:
            behind.append(event)
    return spikes, behind
