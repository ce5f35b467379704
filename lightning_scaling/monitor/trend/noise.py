"""Noise calibration of the trend check: how far the window statistic strays on its own.

A sample is a negative check's statistic (the smoothed relative excess over the anchored
reference's expected loss). Their median is the references' systematic miss at the lag
(a law that keeps under-predicting how fast the loss falls misses by about as much at every
check), which the checks subtract; their spread about it, less (in quadrature) what the
noise of single observations explains (``sigma / sqrt(window)``, measured apart), is the
references' misfit. The samples are the recent ones (a bounded deque): references anchored
at their data end miss by about the same whatever their extrapolation distance, so no
normalisation by it (which would inflate the short-distance samples of late checks).
A sample is admitted only after it has been held for ``delay`` later checks
that passed without an episode (the onset of a shift must not widen the threshold meant to
catch it), and held back longer while the drift CUSUM accumulates.

>>> cal = NoiseCalibration(window=5)
>>> for v in [0.01, -0.02, 0.015, -0.005, 0.0, 0.02, -0.01]:
...     cal.hold(v, delay=2, accumulating=False)
>>> len(cal), list(cal.holding)
(5, [0.02, -0.01])
>>> round(cal.scale(), 5)
0.01483
>>> round(log_distance(200, 100), 4), round(log_distance(100, 100), 4)
(0.6931, 0.01)
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from ...core.stats import mad_sd

DISTANCE_MIN = 1.01
"""Smallest extrapolation ratio ``log_distance`` reports (kept for imports; the checks no
longer normalise by the distance)."""


def log_distance(step: float, data_step: float | None) -> float:
    """How far (log of the step ratio, at least ``log(DISTANCE_MIN)``) a fit whose data ended
    at ``data_step`` extrapolates to ``step``."""
    return math.log(max(float(step) / max(float(data_step or 0), 1.0), DISTANCE_MIN))


def calibration_size(window: int) -> int:
    """Noise samples kept for a window of ``window`` observations: ``max(64, 3 * window)``."""
    return max(64, 3 * int(window))


class NoiseCalibration:
    """Past checks' statistics (relative excess of the smoothed loss over the reference), their
    centre and spread.

    Attributes:
        samples: the admitted samples, newest last (at most ``calibration_size(window)``).
        holding: negative checks not yet trusted as samples, oldest first.
    """

    def __init__(self, window: int):
        self.samples: deque[float] = deque(maxlen=calibration_size(window))
        self.holding: deque[float] = deque()
        self._stats: tuple[float, float] | None = None  # (median, MAD spread)
        self._age = 0  # samples admitted since the statistics were computed

    def __len__(self) -> int:
        return len(self.samples)

    def resize(self, window: int) -> None:
        """Keep the samples a window of ``window`` observations needs (the newest)."""
        self.samples = deque(self.samples, maxlen=calibration_size(window))

    def hold(self, sample: float, delay: int, accumulating: bool) -> None:
        """Hold ``sample``; admit the ones held for more than ``delay`` checks (more than
        ``3 * delay`` while the drift CUSUM is ``accumulating``)."""
        self.holding.append(sample)
        while len(self.holding) > delay and (not accumulating or len(self.holding) > 3 * delay):
            self.samples.append(self.holding.popleft())
            self._age += 1

    def _refresh(self) -> tuple[float, float]:
        if self._stats is None or self._age >= 8:  # refreshed every 8 samples
            v = np.asarray(self.samples, dtype=float)
            self._stats = (float(np.median(v)), mad_sd(v))
            self._age = 0
        return self._stats

    def center(self) -> float:
        """The median of the samples: the reference's systematic miss (0 with fewer than 2)."""
        return self._refresh()[0] if len(self.samples) >= 2 else 0.0

    def scale(self) -> float:
        """Robust spread (MAD about the median) of the samples; NaN with fewer than 2."""
        return self._refresh()[1] if len(self.samples) >= 2 else math.nan

    def abs_quantile(self, q: float) -> float:
        """The ``q`` quantile of the samples' distance from their median (inf without samples)."""
        if not self.samples:
            return math.inf
        samples = np.asarray(self.samples, dtype=float)
        return float(np.quantile(np.abs(samples - self.center()), q))

    def state_dict(self) -> dict[str, Any]:
        return {"calibration": [float(v) for v in self.samples], "holding": [float(v) for v in self.holding]}

    def load_state_dict(self, state: dict[str, Any], window: int) -> None:
        self.samples = deque((float(v) for v in state.get("calibration", [])), maxlen=calibration_size(window))
        self.holding = deque(float(v) for v in state.get("holding", []))
        self._stats = None
