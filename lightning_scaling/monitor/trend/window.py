"""The window test of the trend check: the smoothed loss against the reference's band.

The statistic is the relative excess of the mean of the last ``window`` (clipped) losses over
the mean of their expected losses; a check is positive when it exceeds the larger of the band
(how much the fit's band upper end, relative to the expected loss, has widened since the
reference's data ended) plus ``min_excess``, and ``z`` noise scales (once the noise is
calibrated).

Each loss enters clipped (``Clipper``): to the median of its last few neighbours' relative
excess plus or minus ``CLIP`` times the measured noise of one observation. One bad batch
then moves the smoothed loss by at most a few noise scales over the window, while a shift
that lasts moves the median within three observations and passes whole.

>>> w = Window(3)
>>> for step, loss in [(1, 2.0), (2, 2.1), (3, 2.2), (4, 2.3)]:
...     w.push(step, float(step), loss, 2.0, 2.1)
>>> s = w.statistic()
>>> round(s.smoothed, 6), round(s.excess, 6), round(s.band, 6)
(2.2, 0.1, 0.05)
>>> round(threshold(s.band, min_excess=0.015, z=3.0, scale=0.01, calibrated=True), 6)
0.065
>>> clip = Clipper()
>>> for loss in [2.0, 2.02, 1.98, 2.01, 1.99, 2.0, 2.02, 1.98, 2.01, 1.99]:
...     clip.note(loss)
...     _ = clip(loss, expected=2.0)
>>> round(clip(40.0, expected=2.0), 3)        # a single-batch spike: clipped to a few noise scales
2.073
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ...core.stats import difference_noise

CLIP = 3.0
"""Noise scales around the median of its neighbours beyond which one observation is clipped
(a normal sample is clipped about one time in 400)."""

CLIP_CENTER = 5
"""Observations whose median centres the clipping: a shift that lasts three of them passes."""


@dataclass
class TrendEvent:
    """The run fell behind its trend (emitted once per episode; losses in loss units).

    ``excess_relative`` is the smoothed loss over the expected loss, minus 1; ``excess`` the
    smoothed loss minus the upper end of the band, in loss units.
    """

    step: int
    since_step: int
    smoothed_loss: float
    threshold: float
    expected: float
    excess: float  # smoothed loss minus the band's upper end, loss units
    excess_relative: float  # smoothed / expected - 1
    reference_step: int  # the newest step the reference fit had seen
    level: float
    kind: str = "window"  # "window" (the window test) or "drift" (the drift CUSUM)

    def message(self) -> str:
        return (
            f"the smoothed loss {self.smoothed_loss:.4g} at step {self.step:,} is "
            f"{100 * self.excess_relative:.1f}% above the {self.expected:.4g} expected from the trend fitted "
            f"to the data up to step {self.reference_step:,} (the upper end of its {100 * self.level:.0f}% "
            f"band: {self.smoothed_loss - self.excess:.4g}); "
            f"behind since step {self.since_step:,}"
        )


@dataclass
class TrendEnd:
    """A behind-trend episode ended at ``step`` (it began at ``since_step``, was reported at
    ``started_step``); ``how``: "back within the band" or "the new level became the trend"."""

    step: int
    since_step: int
    started_step: int
    smoothed_loss: float
    expected: float
    reference_step: int
    how: str

    def message(self) -> str:
        return (
            f"back on trend at step {self.step:,}: {self.how} (the smoothed loss {self.smoothed_loss:.4g}, "
            f"expected {self.expected:.4g} from the data up to step {self.reference_step:,}); it was behind "
            f"from step {self.since_step:,} ({self.step - self.since_step:,} steps)"
        )


class Clipper:
    """Robust clipping of single observations, and the noise of one observation.

    From the successive differences of the last ``history`` losses (over their median, so
    relative): ``spread``, their robust spread (MAD, as a normal's sd), sets the clipping
    width; ``noise``, the standard deviation they keep once clipped like the observations,
    is what a mean of clipped observations averages (single-batch losses have heavy tails:
    their sd exceeds their MAD spread by a third or more). Both over sqrt(2), refreshed every 8.
    """

    def __init__(self, history: int = 128):
        self.losses: deque[float] = deque(maxlen=int(history))
        self.excess: deque[float] = deque(maxlen=CLIP_CENTER)
        self.noise = math.nan
        self.spread = math.nan
        self._age = 0

    def note(self, loss: float) -> None:
        """Count a finite observation towards the noise (also those before checks start)."""
        self.losses.append(float(loss))
        self._age += 1
        if self._age >= 8 or (not math.isfinite(self.noise) and len(self.losses) >= 8):
            self._age = 0
            values = np.asarray(self.losses)
            level = abs(float(np.median(values)))
            if not level > 0:
                self.noise = self.spread = math.nan
                return
            self.spread = difference_noise(values) / level
            diffs = np.diff(values) / level
            width = CLIP * math.sqrt(2.0) * self.spread
            clipped = np.clip(diffs, float(np.median(diffs)) - width, float(np.median(diffs)) + width)
            self.noise = max(self.spread, float(np.std(clipped)) / math.sqrt(2.0))

    def __call__(self, loss: float, expected: float) -> float:
        """``loss`` clipped around the median relative excess of its last neighbours over ``expected``."""
        if not (math.isfinite(expected) and expected > 0):
            return float(loss)
        r = float(loss) / expected - 1.0
        self.excess.append(r)
        if not (math.isfinite(self.spread) and self.spread > 0):
            return float(loss)
        # around the expected loss itself until there are neighbours enough for a median
        mid = sorted(self.excess)[len(self.excess) // 2] if len(self.excess) >= 3 else 0.0
        width = CLIP * self.spread
        return expected * (1.0 + min(max(r, mid - width), mid + width))

    def state_dict(self) -> dict:
        return {"losses": [float(v) for v in self.losses], "excess": [float(v) for v in self.excess],
                "noise": _finite_or_none(self.noise), "spread": _finite_or_none(self.spread), "age": int(self._age)}

    def load_state_dict(self, state: dict) -> None:
        self.losses.clear()
        self.losses.extend(float(v) for v in state.get("losses", []))
        self.excess.clear()
        self.excess.extend(float(v) for v in state.get("excess", []))
        self.noise = math.nan if state.get("noise") is None else float(state["noise"])
        self.spread = math.nan if state.get("spread") is None else float(state["spread"])
        self._age = int(state.get("age", 8))


class WindowStatistic(NamedTuple):
    """Means over the window (loss units) and the relative excess and band."""

    smoothed: float  # mean loss
    expected: float  # mean expected loss of the reference
    hi_mean: float  # mean band upper end
    excess: float  # smoothed / expected - 1
    band: float  # hi_mean / expected - 1


def threshold(band: float, *, min_excess: float, z: float, scale: float, calibrated: bool,
              offset: float = 0.0) -> float:
    """The relative excess above which a check is positive, for a relative band ``band``:
    ``min_excess`` above the band, and ``z`` noise scales (``scale``: the larger of the
    statistic's calibrated spread and the spread a window mean has from the noise of its
    observations alone) above the references' systematic ``offset``."""
    return max(band + min_excess, offset + z * scale if calibrated else math.inf)


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


class Window:
    """The last ``size`` observations ``[step, x, loss, expected, band_hi]`` (loss clipped) and
    their running sums; ``tail``: ``(step, x, loss)`` of the last ``4 * size``, for the onset."""

    def __init__(self, size: int, obs: Iterable[Iterable[float]] = ()):
        self.obs: deque[list[float]] = deque((list(map(float, o)) for o in obs), maxlen=int(size))
        self.tail: deque[tuple[float, float, float]] = deque(((o[0], o[1], o[2]) for o in self.obs),
                                                             maxlen=4 * int(size))
        self.sums = [0.0, 0.0, 0.0]  # of loss, expected loss, band upper end
        self.resum()

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def full(self) -> bool:
        return len(self.obs) == self.obs.maxlen

    def resize(self, size: int) -> None:
        self.obs = deque(self.obs, maxlen=int(size))
        self.tail = deque(self.tail, maxlen=4 * int(size))
        self.resum()

    def clear(self) -> None:
        self.obs.clear()
        self.tail.clear()
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
        self.tail.append((float(step), x, float(loss)))
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

    def onset(self, expected_at: Callable[[np.ndarray], np.ndarray], not_before: float = -math.inf) -> int:
        """When the shift now seen began: the change point of the ``tail``'s relative excess
        over ``expected_at(x)`` (the reference's expected losses), not before ``not_before``.

        With ``d`` the mean excess over the window, the change point is where the one-sided
        sum of ``excess - d / 2`` from there to now is largest (the likelihood estimate of
        a step of size ``d``), moved on to the first observation whose excess reaches
        ``d / 2``: noise before a shift can make the estimate early, never late by much,
        and "since" must not predate the shift.
        """
        pts = [p for p in self.tail if p[0] >= not_before] or [self.tail[-1]]
        steps = np.array([p[0] for p in pts])
        expected = np.asarray(expected_at(np.array([p[1] for p in pts])), dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            excess = np.array([p[2] for p in pts]) / expected - 1.0
        excess = np.where(np.isfinite(excess), excess, 0.0)
        half = 0.5 * float(np.mean(excess[-len(self.obs):]))
        tail_sums = np.cumsum((excess - half)[::-1])[::-1]  # sum from i to now
        start = int(np.argmax(tail_sums))
        above = np.flatnonzero(excess[start:] >= half)
        return int(steps[start + (int(above[0]) if above.size else 0)])

    def means_since(self, since: float) -> tuple[float, float, float]:
        """Mean loss, expected loss and band upper end of the observations from ``since`` on
        (the newest alone if none)."""
        recent = [o for o in self.obs if o[0] >= since] or [self.obs[-1]]
        smoothed, expected, hi_mean = (math.fsum(o[i] for o in recent) / len(recent) for i in (2, 3, 4))
        return smoothed, expected, hi_mean
