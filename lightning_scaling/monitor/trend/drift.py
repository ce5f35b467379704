"""The drift CUSUM of the trend check: slow drifts the lagged window test partly absorbs.

A one-sided CUSUM of the per-observation relative excess ``loss / expected - 1`` over its
own reference: the detector's reference while the sum is zero, held (frozen) while it is
positive. Its allowance (subtracted from every observation) is the band plus
``max(floor, q)`` and it fires when the sum exceeds ``window * max(floor, 2 q)`` while the
mean of the last ``window`` losses is at least ``level`` above the held fit's band upper end;
``q`` is the ``quantile`` quantile of the absolute noise samples (per unit of extrapolation
distance, taken when the sum last was zero) times the distance from the held fit's data. On
smooth curves the allowance is a few hundredths of a percent and a drift is caught early; on
noisy curves (or ones whose law misses by a percent at times) it is as large as their usual
swings and the CUSUM stays quiet. A held fit is released when the LR changes by more than
the detector's ``lr_change`` since its data ended.

>>> class Flat:                                  # a fit: expected loss 2.0, band upper end 2.02
...     def predict(self, x): return 0 * x + 2.0
...     def interval(self, x, level=0.5): return 0 * x + 1.98, 0 * x + 2.02
>>> flat = Flat()
>>> cusum = DriftCusum(window=4, level=0.01)
>>> reference = (100, flat, "step", None)
>>> fired = [cusum.check(s, float(s), 2.1, 2.0, 2.02, reference=reference, lr_changed=lambda a, b: False,
...                      noise_quantile=lambda q: 0.001, band_level=0.5) for s in range(101, 106)]
>>> fired, round(cusum.sum, 4)
([False, False, False, True, True], 0.1925)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

from ...core.plain import plain
from .noise import log_distance
from .selection import tabulate


class DriftCusum:
    """State of the drift CUSUM (``level`` None: off).

    Attributes:
        sum: the CUSUM, relative excess x observations (0 while nothing accumulates).
        held: ``[data step, fit, axis, table]`` of the held fit while the sum is positive.
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
        self.scale: float | None = math.inf  # noise quantile per unit of log distance, when the sum last was zero
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
        noise_quantile: Callable[[float], float],
        band_level: float,
    ) -> bool:
        """Add one observation; True when the CUSUM fires.

        ``mean``, ``hi``: the expected loss and band upper end at x of ``reference``, the
        detector's current reference ``(data step, fit, axis, table)``; ``lr_changed(a, b)``:
        did the LR change too much between steps a and b; ``noise_quantile(q)``: the q
        quantile of the absolute noise samples.
        """
        window = self.recent.maxlen
        held = self.held
        if self.sum <= 0.0 or held is None or held[2] != reference[2] or lr_changed(held[0], step):
            self.sum = 0.0
            if held is None or held[1] is not reference[1]:
                self.recent.clear()
            self.held = held = list(reference)
            self.scale = None  # of the noise samples as they are now; computed when first needed
            self.since = int(step)
        if held[1] is not reference[1]:
            mean, hi, held[3] = tabulate(held[1], held[3], x, band_level)
        if not (math.isfinite(mean) and mean != 0 and math.isfinite(hi) and hi != 0):
            return False
        if self.sum <= 0.0 and (loss - hi) / mean <= self.floor:
            # below band + floor, the least allowance there is: the sum stays at zero whatever
            # the noise quantile, which is then not worth computing (this runs every step)
            self.recent.append(loss / hi - 1.0)
            return False
        if self.scale is None:
            self.scale = noise_quantile(self.quantile)
        q = self.scale * log_distance(float(step), held[0])
        allowance = hi / mean - 1.0 + max(self.floor, q)
        self.sum = max(0.0, self.sum + loss / mean - 1.0 - allowance)
        self.recent.append(loss / hi - 1.0)
        if len(self.recent) < window or math.fsum(self.recent) < window * self.level:
            return False
        return self.sum > window * max(self.floor, 2.0 * q)

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
            "scale": None if self.scale is None else float(self.scale),
            "since": int(self.since),
            "recent": [float(v) for v in self.recent],
        }

    def load_state_dict(self, state: dict[str, Any], *, window: int, reference: Any, axis: str,
                        fit_from_dict: Callable[[dict], Any]) -> None:
        """Restore ``state_dict``'s answer (``reference``, ``axis``: the detector's restored reference)."""
        self.recent = deque(maxlen=int(window))
        self.sum, self.held = 0.0, None
        self.rearm = int(state.get("rearm", 0))
        self.episode = bool(state.get("episode", False))
        if state.get("axis") is None:
            return
        fit = reference if state.get("reference") is None else fit_from_dict(state["reference"])
        if fit is not None:
            self.held = [state.get("reference_step"), fit, state.get("axis", axis), None]
            self.sum = float(state.get("sum", 0.0))
            scale = state.get("scale", math.inf)
            self.scale = None if scale is None else float(scale)
            self.since = int(state.get("since", 0))
            self.recent.extend(float(v) for v in state.get("recent", []))
