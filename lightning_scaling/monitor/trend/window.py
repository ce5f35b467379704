"""The window test of the trend check: the smoothed loss against the reference's band.

The statistic is the relative excess of the mean of the last ``window`` losses over the
mean of their expected losses; a check is positive when it exceeds the larger of the band
(the fit's band upper end, relative to the expected loss) plus ``min_excess``, and ``z``
noise scales (once the noise is calibrated).

>>> w = Window(3)
>>> for step, loss in [(1, 2.0), (2, 2.1), (3, 2.2), (4, 2.3)]:
...     w.push(step, float(step), loss, 2.0, 2.1)
>>> s = w.statistic()
>>> round(s.smoothed, 6), round(s.excess, 6), round(s.band, 6)
(2.2, 0.1, 0.05)
>>> round(threshold(s.band, min_excess=0.015, z=3.0, scale=0.01, calibrated=True), 6)
0.065
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple


@dataclass
class TrendEvent:
    """The run fell behind its trend (emitted once per episode; losses in loss units)."""

    step: int
    since_step: int
    smoothed_loss: float
    threshold: float
    expected: float
    excess: float  # smoothed loss minus the band's upper end, loss units
    excess_relative: float  # excess / expected
    reference_step: int  # the newest step the reference fit had seen
    level: float

    def message(self) -> str:
        return (
            f"the smoothed loss {self.smoothed_loss:.4g} at step {self.step:,} is {self.excess:.3g} "
            f"({100 * self.excess_relative:.1f}%) above the upper end of the {100 * self.level:.0f}% band "
            f"forecast from the data up to step {self.reference_step:,} (expected {self.expected:.4g}); "
            f"behind since step {self.since_step:,}"
        )


class WindowStatistic(NamedTuple):
    """Means over the window (loss units) and the relative excess and band."""

    smoothed: float  # mean loss
    expected: float  # mean expected loss of the reference
    hi_mean: float  # mean band upper end
    excess: float  # smoothed / expected - 1
    band: float  # hi_mean / expected - 1


def threshold(band: float, *, min_excess: float, z: float, scale: float, calibrated: bool) -> float:
    """The relative excess above which a check is positive, for a relative band ``band``."""
    return max(band + min_excess, z * scale if calibrated else math.inf)


class Window:
    """The last ``size`` observations ``[step, x, loss, expected, band_hi]`` and their running sums."""

    def __init__(self, size: int, obs: Iterable[Iterable[float]] = ()):
        self.obs: deque[list[float]] = deque((list(map(float, o)) for o in obs), maxlen=int(size))
        self.sums = [0.0, 0.0, 0.0]  # of loss, expected loss, band upper end
        self.resum()

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def full(self) -> bool:
        return len(self.obs) == self.obs.maxlen

    def resize(self, size: int) -> None:
        self.obs = deque(self.obs, maxlen=int(size))
        self.resum()

    def clear(self) -> None:
        self.obs.clear()
        self.resum()

    def state_dict(self) -> list[list[float]]:
        return [list(map(float, o)) for o in self.obs]

    def resum(self) -> None:
        self.sums = [math.fsum(o[2] for o in self.obs), math.fsum(o[3] for o in self.obs),
                     math.fsum(o[4] for o in self.obs)]

    def push(self, step: int, x: float, loss: float, expected: float, band_hi: float) -> None:
        if len(self.obs) == self.obs.maxlen:
            old = self.obs[0]
            self.sums[0] -= old[2]
            self.sums[1] -= old[3]
            self.sums[2] -= old[4]
        self.obs.append([float(step), x, float(loss), expected, band_hi])
        self.sums[0] += float(loss)
        self.sums[1] += expected
        self.sums[2] += band_hi

    def rethreshold(self, band_at: Callable[[float], tuple[float, float]]) -> None:
        """Re-evaluate every observation's expected loss and band upper end (a new reference)."""
        if not self.obs:
            return
        for o in self.obs:
            o[3], o[4] = band_at(o[1])
        self.resum()

    def statistic(self) -> WindowStatistic | None:
        """The window's statistic, None when the expected loss is not usable."""
        n = len(self.obs)
        expected = self.sums[1] / n
        hi_mean = self.sums[2] / n
        if not (math.isfinite(expected) and expected != 0 and math.isfinite(hi_mean)):
            return None
        smoothed = self.sums[0] / n
        return WindowStatistic(smoothed, expected, hi_mean, smoothed / expected - 1.0, hi_mean / expected - 1.0)

    def middle(self, step: float) -> float:
        """The step at the window's middle, for a window ending at ``step``."""
        return float(step) - 0.5 * (len(self.obs) - 1)

    def onset(self, relative_threshold: float) -> int:
        """The first observation above ``expected * (1 + relative_threshold)`` (else the newest)."""
        above = [o for o in self.obs if o[2] > o[3] * (1 + relative_threshold)]
        return int((above[0] if above else self.obs[-1])[0])

    def means_since(self, since: float) -> tuple[float, float, float]:
        """Mean loss, expected loss and band upper end of the observations from ``since`` on
        (the newest alone if none)."""
        recent = [o for o in self.obs if o[0] >= since] or [self.obs[-1]]
        smoothed, expected, hi_mean = (math.fsum(o[i] for o in recent) / len(recent) for i in (2, 3, 4))
        return smoothed, expected, hi_mean
