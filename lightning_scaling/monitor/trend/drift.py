"""The drift CUSUM of the trend check: slow drifts the lagged window test partly absorbs.

A one-sided CUSUM of the per-observation relative excess ``loss / expected - 1`` (each loss
clipped, so one bad batch adds at most a few noise scales) over its own reference: the
detector's reference while the sum is zero, held (frozen) while it is positive. Each
observation adds its excess minus an allowance; the sum fires when it passes a threshold
while the mean of the last ``window`` losses is at least ``level`` above the held fit's
band. Both come from measured noise (``limits``):

- the *misfit* ``m``: the ``quantile`` of the noise samples' size (the window statistic
  over past checks less, in quadrature, what the noise of single observations explains;
  per unit of extrapolation distance, times the distance): how far the reference itself
  strays;
- the allowance is the band plus ``max(floor, m, d / 2)``: the misfit must not accumulate,
  and ``d`` is the smallest shift the sum is built for (half the shift: the classic choice):
  ``level`` above the band, or on noisy losses the smallest shift it can catch within a
  window at all (``smallest_shift``: a CUSUM built for a shift it cannot see in time only
  waits longer for the ones it can);
- the threshold is the larger of ``window * max(floor, 2 m)`` (the misfit's share) and
  ``h sigma``, with ``h`` the CUSUM threshold that makes false alarms from noise alone
  rarer than one in ``arl`` observations (Siegmund's approximation for a normal sum; ``arl``
  is ``ARL_RUNS`` times the observations a run holds, so a run rarely sees one).

On smooth curves sigma is tiny and the misfit sets both (a few hundredths of a percent: a
drift is caught early); on noisy per-step losses the threshold is a dozen or so noise
scales and the allowance a fraction of one. A held fit is released when the LR changes by
more than the detector's rule (``selection.crosses_lr_change``) since its data ended.

>>> class Flat:                                  # a fit: expected loss 2.0, band upper end 2.02
...     def predict(self, x): return 0 * x + 2.0
...     def interval(self, x, level=0.5): return 0 * x + 1.98, 0 * x + 2.02
>>> flat = Flat()
>>> cusum = DriftCusum(window=4, level=0.01)
>>> reference = (100, flat, "step", None, (1.0, 0.0))
>>> fired = [cusum.check(s, float(s), 2.1, 2.0, 2.02, reference=reference, lr_changed=lambda a, b: False,
...                      limits=lambda: (0.015, 0.09), band_level=0.5) for s in range(101, 106)]
>>> fired, round(cusum.sum, 4)
([False, False, False, True, True], 0.125)
>>> round(arl_threshold(0.25, 2e4), 1)                     # noise scales, allowance a quarter of one
14.5
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from ...core.plain import plain
from .selection import tabulate

ARL_RUNS = 50
"""False alarms from noise alone are held rarer than once in this many runs' worth of observations."""


def arl_threshold(k: float, arl: float) -> float:
    """The threshold (noise scales) of a one-sided CUSUM with allowance ``k`` (noise scales)
    whose mean time to a false alarm is ``arl`` observations (Siegmund 1985:
    ``(exp(2 k h') - 2 k h' - 1) / (2 k^2)`` with ``h' = h + 1.166``)."""
    k = max(float(k), 1e-3)
    arl = max(float(arl), 10.0)
    lo, hi = 0.0, 10.0
    while _arl(k, hi) < arl:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _arl(k, mid) < arl else (lo, mid)
    return max(0.0, 0.5 * (lo + hi) - 1.166)


@functools.lru_cache(maxsize=256)
def _smallest_shift(level: float, sigma: float, window: int, arl: float) -> float:
    shift = level
    while sigma > 0 and shift < 1.0 and shift * window < sigma * arl_threshold(shift / (2.0 * sigma), arl):
        shift *= 1.05
    return shift


def smallest_shift(level: float, sigma: float, window: int, arl: float) -> float:
    """The smallest shift (relative; at least ``level``) the CUSUM built for it catches within
    ``window`` observations of noise ``sigma`` with false alarms rarer than one in ``arl``:
    the shift ``d`` with ``d * window >= sigma * arl_threshold(d / (2 sigma), arl)``. On smooth
    curves it is ``level``; on noisy per-step losses it grows with ``sigma / sqrt(window)``.

    >>> round(smallest_shift(0.01, 0.0005, 25, 5e4), 4), round(smallest_shift(0.01, 0.04, 25, 5e4), 3)
    (0.01, 0.024)
    """
    return _smallest_shift(float(level), round(float(sigma), 5), int(window), float(arl))


def _arl(k: float, h_prime: float) -> float:
    a = 2.0 * k * h_prime
    if a > 700:
        return math.inf
    return (math.exp(a) - a - 1.0) / (2.0 * k * k)


class Limits:
    """The allowance above the band and the threshold of the CUSUM (see the module docstring),
    from the noise as measured when the sum leaves zero: ``measure()`` gives (the references'
    systematic miss, their misfit, the noise of one observation), called once, on first use."""

    def __init__(self, measure: Callable[[], tuple[float, float, float]] | None, *, floor: float, level: float,
                 window: int, arl: float, values: tuple[float, float, float] | None = None):
        self._measure = measure
        self.values = values
        self.floor, self.level, self.window, self.arl = float(floor), float(level), int(window), float(arl)
        self._h: dict[float, float] = {}

    def __call__(self) -> tuple[float, float]:
        if self.values is None:
            self.values = tuple(float(v) for v in self._measure())
            self._measure = None  # a snapshot: nothing live kept
        center, misfit, sigma = self.values
        allowance = center + max(self.floor, misfit, 0.5 * smallest_shift(self.level, sigma, self.window, self.arl))
        h = self.window * max(self.floor, misfit)
        if sigma > 0:
            key = round((allowance - center) / sigma, 3)
            if key not in self._h:
                self._h[key] = arl_threshold(key, self.arl)
            h = max(h, sigma * self._h[key])
        return allowance, h

    def state_dict(self) -> dict[str, Any] | None:
        if self.values is None:
            return None
        return {"values": [float(v) for v in self.values], "floor": self.floor, "level": self.level,
                "window": self.window, "arl": self.arl}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> Limits | None:
        if not state:
            return None
        return cls(None, floor=state["floor"], level=state["level"], window=state["window"], arl=state["arl"],
                   values=tuple(state["values"]))


class DriftCusum:
    """State of the drift CUSUM (``level`` None: off).

    Attributes:
        sum: the CUSUM, relative excess x observations (0 while nothing accumulates).
        held: ``[data step, fit, axis, table, anchor]`` of the held fit while the sum is positive.
        frozen_limits: the ``Limits`` (allowance above the band, threshold) taken when the sum left zero.
        since: the step at which the sum last left zero.
        rearm: after an episode the CUSUM waits for a reference made from data up to here.
        episode: the episode going on was started by the CUSUM.
        recent: ``loss / band upper end - 1`` of the last ``window`` observations, against the held fit.
    """

    def __init__(self, window: int, level: float | None = 0.01, floor: float = 0.0015, quantile: float = 0.9):
        self.level = None if level is None else float(level)
        self.floor = float(floor)
        self.quantile = float(quantile)
        self.sum = 0.0
        self.held: list | None = None
        self.frozen_limits: Limits | None = None
        self.since = 0
        self.rearm = 0
        self.episode = False
        self.recent: deque[float] = deque(maxlen=int(window))

    @property
    def on(self) -> bool:
        return self.level is not None

    def resize(self, window: int) -> None:
        self.recent = deque(self.recent, maxlen=int(window))

    def release(self) -> None:
        """Drop the sum and the held fit."""
        self.sum, self.held = 0.0, None

    def check(
        self,
        step: int,
        x: float,
        loss: float,
        mean: float,
        hi: float,
        *,
        reference: tuple,
        lr_changed: Callable[[Any, int], bool],
        limits: Callable[[], tuple[float, float]],
        band_level: float,
        center: float = 0.0,
    ) -> bool:
        """Add one (clipped) observation; True when the CUSUM fires.

        ``mean``, ``hi``: the expected loss and band upper end at x of ``reference``, the
        detector's current reference ``(data step, fit, axis, table, anchor)`` (anchored:
        ``anchor = (factor, band at its data end)``); ``lr_changed(entry, step)``: would the
        fit ``entry`` be extrapolated across an LR change it cannot follow; ``limits()``: the allowance above the band
        and the threshold (relative excess, and relative excess x observations) at an
        extrapolation distance (see the module docstring); ``center``: the references'
        systematic miss now (the allowance includes it).
        """
        window = self.recent.maxlen
        held = self.held
        if self.sum <= 0.0 or held is None or held[2] != reference[2] or lr_changed(held, step):
            self.sum = 0.0
            if held is None or held[1] is not reference[1]:
                self.recent.clear()
            self.held = held = list(reference)
            self.frozen_limits = None  # the limits as they are now; computed when first needed
            self.since = int(step)
        factor, band0 = held[4]
        if held[1] is not reference[1]:
            mean, hi, held[3] = tabulate(held[1], held[3], x, band_level)
            mean, hi = mean * factor, hi * factor
        if not (math.isfinite(mean) and mean != 0 and math.isfinite(hi) and hi != 0):
            return False
        band = max(0.0, hi / mean - 1.0 - band0)
        if self.sum <= 0.0 and loss / mean - 1.0 - band <= self.floor + min(0.0, center):
            # below band + floor (+ the systematic miss when negative), the least allowance there
            # is: the sum stays at zero whatever the limits, which are then not worth computing
            # (this runs every step)
            self.recent.append(loss / mean - 1.0 - band)
            return False
        if self.frozen_limits is None:
            self.frozen_limits = limits
        allowance, threshold = self.frozen_limits()
        self.sum = max(0.0, self.sum + loss / mean - 1.0 - band - allowance)
        self.recent.append(loss / mean - 1.0 - band)
        if len(self.recent) < window or math.fsum(self.recent) < window * self.level:
            return False
        return self.sum > threshold

    def state_dict(self, reference: Any) -> dict[str, Any]:
        """Plain state; the held fit is stored only when it is not ``reference`` (stored apart)."""
        held = self.held
        if held is None:
            return {"rearm": int(self.rearm), "episode": bool(self.episode)}
        return {
            "rearm": int(self.rearm),
            "episode": bool(self.episode),
            "sum": float(self.sum),
            "reference_step": None if held[0] is None else int(held[0]),
            "reference": None if held[1] is reference else plain(held[1].to_dict()),
            "axis": str(held[2]),
            "anchor": [float(held[4][0]), float(held[4][1])],
            "since": int(self.since),
            "recent": [float(v) for v in self.recent],
            "limits": None if self.frozen_limits is None else self.frozen_limits.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], *, window: int, reference: Any, axis: str,
                        fit_from_dict: Callable[[dict], Any]) -> None:
        """Restore ``state_dict``'s answer (``reference``, ``axis``: the detector's restored reference)."""
        self.recent = deque(maxlen=int(window))
        self.sum, self.held = 0.0, None
        self.frozen_limits = None
        self.rearm = int(state.get("rearm", 0))
        self.episode = bool(state.get("episode", False))
        if state.get("axis") is None:
            return
        fit = reference if state.get("reference") is None else fit_from_dict(state["reference"])
        if fit is not None:
            anchor = state.get("anchor") or [1.0, 0.0]
            self.held = [state.get("reference_step"), fit, state.get("axis", axis), None,
                         (float(anchor[0]), float(anchor[1]))]
            self.sum = float(state.get("sum", 0.0))
            self.since = int(state.get("since", 0))
            self.recent.extend(float(v) for v in state.get("recent", []))
            self.frozen_limits = Limits.from_state(state.get("limits"))
