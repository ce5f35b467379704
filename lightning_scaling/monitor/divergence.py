"""Divergence: non-finite losses and sudden spikes (pure; the callback turns events into warnings
and, when asked, a stop).

>>> d = DivergenceDetector()
>>> [d.observe(s, 3.0) for s in range(1, 20)].count(None)
19
>>> d.observe(20, 9.0).message()
'the loss spiked to 9 at step 20, 200% above its recent median 3'
>>> d.diverged, d.observe(21, 3.0), d.observe(22, float("nan")).kind, d.diverged
(False, None, 'non-finite', True)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.stats import difference_noise


@dataclass
class DivergenceEvent:
    """A divergence episode began at ``step``: a non-finite loss or a spike (losses in loss units)."""

    step: int
    kind: str  # "non-finite" or "spike"
    loss: float
    baseline: float  # the median of the recent finite losses

    def message(self) -> str:
        if self.kind == "non-finite":
            return f"the loss is {self.loss} at step {self.step:,} (recent median {self.baseline:.4g})"
        return (
            f"the loss spiked to {self.loss:.4g} at step {self.step:,}, "
            f"{100 * (self.loss / self.baseline - 1):.0f}% above its recent median {self.baseline:.4g}"
        )


class DivergenceDetector:
    """Non-finite losses and sudden spikes.

    A spike is a loss above the median of the last ``window`` finite losses by more than both
    ``spike_ratio`` of that median and ``spike_sigma`` noise scales. ``diverged`` is true
    while the newest loss is non-finite, or after ``patience`` spiked losses in a row (a
    single spike that recovers is reported but does not count as divergence).
    """

    def __init__(self, spike_ratio: float = 0.25, spike_sigma: float = 8.0, window: int = 32, patience: int = 3):
        self.spike_ratio = float(spike_ratio)
        self.spike_sigma = float(spike_sigma)
        self.window = int(window)
        self.patience = int(patience)
        self._recent: deque[float] = deque(maxlen=self.window)
        self.nonfinite = False
        self.spikes_in_row = 0
        self.in_episode = False
        self.last_event: DivergenceEvent | None = None
        self._stats: tuple[float, float] | None = None  # (median, noise) of the recent losses
        self._stats_age = 0

    @property
    def diverged(self) -> bool:
        return self.nonfinite or self.spikes_in_row >= self.patience

    def _baseline(self) -> tuple[float, float]:
        if self._stats is None or self._stats_age >= 8:  # refreshed every 8 losses
            r = np.asarray(self._recent) if self._recent else np.zeros(0)
            self._stats = (float(np.median(r)) if r.size else math.nan, difference_noise(r))
            self._stats_age = 0
        return self._stats

    def observe(self, step: int, loss: float) -> DivergenceEvent | None:
        baseline, sigma = self._baseline()
        if not math.isfinite(loss):
            self.nonfinite = True
            event = None
            if not self.in_episode:
                event = DivergenceEvent(int(step), "non-finite", float(loss), baseline)
            self.in_episode = True
            self.last_event = event or self.last_event
            return event
        self.nonfinite = False
        spiked = False
        if len(self._recent) >= 8 and math.isfinite(baseline):
            limit = baseline + max(self.spike_ratio * abs(baseline), self.spike_sigma * sigma)
            spiked = loss > limit
        event = None
        if spiked:
            self.spikes_in_row += 1
            if not self.in_episode:
                event = DivergenceEvent(int(step), "spike", float(loss), baseline)
                self.in_episode = True
                self.last_event = event
            if self.spikes_in_row > self.window:  # a new level, not a spike: follow it
                self._recent.append(float(loss))
        else:
            self.spikes_in_row = 0
            self.in_episode = False
            self._recent.append(float(loss))
            self._stats_age += 1
        return event

    def state_dict(self) -> dict[str, Any]:
        return {
            "recent": [float(v) for v in self._recent],
            "nonfinite": bool(self.nonfinite),
            "spikes_in_row": int(self.spikes_in_row),
            "in_episode": bool(self.in_episode),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._recent = deque((float(v) for v in state.get("recent", [])), maxlen=self.window)
        self.nonfinite = bool(state.get("nonfinite", False))
        self.spikes_in_row = int(state.get("spikes_in_row", 0))
        self.in_episode = bool(state.get("in_episode", False))
        self._stats = None
