"""Noise calibration of the trend check: how far the window statistic strays on its own.

A sample is the *misfit* of a check's statistic (the smoothed relative excess over the
anchored reference's expected loss): the statistic less, in quadrature, what the noise of
its single observations explains (``sigma / sqrt(window)``, measured apart), so the samples
say how far the reference itself strays. The samples are the recent ones (a bounded deque):
references anchored at their data end miss by about the same whatever their extrapolation
distance, so no normalisation by it (which would inflate the short-distance samples of
late checks). A sample is admitted only after it has been held for ``delay`` later checks
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
    """Noise samples (relative excess per unit of log-extrapolation distance) and their scale.

    Attributes:
        samples: the admitted samples, newest last (at most ``calibration_size(window)``).
        holding: negative checks not yet trusted as samples, oldest first.
    """

    def __init__(self, window: int):
        self.samples: deque[float] = deque(maxlen=calibration_size(window))
        self.holding: deque[float] = deque()
        self._scale: float | None = None
        self._age = 0  # samples admitted since the scale was computed

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

    def scale(self) -> float:
        """Robust spread (MAD) of the samples; NaN with fewer than 2. Refreshed every 8 samples."""
        if len(self.samples) < 2:
            return math.nan
        if self._scale is None or self._age >= 8:
            self._scale = mad_sd(self.samples)
            self._age = 0
        return self._scale

    def abs_quantile(self, q: float) -> float:
        """The ``q`` quantile of the absolute samples (inf without samples)."""
        samples = np.abs(np.asarray(self.samples, dtype=float))
        return float(np.quantile(samples, q)) if samples.size else math.inf

    def state_dict(self) -> dict[str, Any]:
        return {"calibration": [float(v) for v in self.samples], "holding": [float(v) for v in self.holding]}

    def load_state_dict(self, state: dict[str, Any], window: int) -> None:
        self.samples = deque((float(v) for v in state.get("calibration", [])), maxlen=calibration_size(window))
        self.holding = deque(float(v) for v in state.get("holding", []))
        self._scale = None
