"""Which fit a trend check compares with: the reference selection, with the LR schedule's drops.

A fit is *eligible* for an observation at ``step`` when its data ended at least ``lag`` steps
earlier (a fit made just before would already have bent towards a slow drift), or earlier
at all when the LR changed by more than ``lr_change`` (relative) since its data ended: a law
is not extrapolated across a change of the LR. A fit whose data ended less than ``2 * lag``
steps after an abrupt LR drop (by more than ``lr_change`` within 1% of the schedule) is
never a reference: the loss is still adjusting to the new LR, and a law fitted then
extrapolates that transient. Fits are entries ``(data step, fit, x axis, band table)``.

>>> import numpy as np
>>> lr = np.r_[np.ones(500), np.full(501, 0.1)]          # a drop at step 500
>>> drops = abrupt_drops(lr, lr_change=0.1)
>>> int(drops[0]), settled(drops, 510, lag=50), settled(drops, 620, lag=50)
(500, False, True)
>>> lr_changed(lr, 400, 600, lr_change=0.1), lr_changed(lr, 100, 400, lr_change=0.1)
(True, False)
>>> fits = [(100, "a", "step", None), (300, "b", "step", None), (480, "c", "step", None)]
>>> choose_reference(fits, 400, lag=50, schedule=None, abrupt=np.zeros(0, dtype=int), lr_change=0.1)
((300, 'b', 'step', None), 530)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

TABLE_POINTS = 257
"""Points of a fit's band table, log-spaced over a factor of 2 in x."""


def abrupt_drops(schedule: np.ndarray | None, lr_change: float) -> np.ndarray:
    """Steps at which an abrupt LR drop (by more than ``lr_change`` of the larger LR, within 1%
    of the schedule's length) completes. Drops only: after a warm-up the loss follows a law
    again at once, while after a drop it keeps falling for a while (the annealing response)."""
    if schedule is None or schedule.size <= 2:
        return np.zeros(0, dtype=int)
    lr = schedule
    w = max(1, int(round(0.01 * lr.size)))
    a, b = lr[:-w], lr[w:]
    top = np.maximum(np.abs(a), np.abs(b))
    with np.errstate(invalid="ignore", divide="ignore"):
        jump = np.where(top > 0, (a - b) / top, 0.0) > lr_change
    return np.flatnonzero(jump) + w


def settled(abrupt: np.ndarray, data_step: int, lag: float) -> bool:
    """No abrupt LR drop completed in the ``2 * lag`` steps before ``data_step``."""
    if abrupt.size == 0:
        return True
    i = np.searchsorted(abrupt, data_step, side="right")
    return bool(i == 0 or abrupt[i - 1] <= data_step - max(2.0 * lag, 1.0))


def lr_changed(schedule: np.ndarray | None, data_step: int, step: int, lr_change: float) -> bool:
    """Did the LR change by more than ``lr_change`` (relative) between ``data_step`` and ``step``?"""
    lr = schedule
    if lr is None or lr.size == 0:
        return False
    a, b = lr[min(int(data_step), lr.size - 1)], lr[min(int(step), lr.size - 1)]
    top = max(abs(a), abs(b))
    return bool(top > 0 and abs(a - b) / top > lr_change)


def choose_reference(
    fits: Iterable[tuple],
    step: int,
    *,
    lag: float,
    schedule: np.ndarray | None,
    abrupt: np.ndarray,
    lr_change: float,
) -> tuple[tuple | None, float]:
    """The newest eligible fit for an observation at ``step`` (None if none), and the step at
    which the choice can next change (``fits`` oldest first)."""
    # with a schedule, an LR change can make a newer fit eligible at any step: look again soon
    next_select = step + (16 if schedule is not None else math.inf)
    chosen = None
    for entry in fits:
        if not settled(abrupt, entry[0], lag):
            continue
        if entry[0] <= step - lag or (entry[0] < step and lr_changed(schedule, entry[0], step, lr_change)):
            chosen = entry
        else:
            next_select = min(next_select, entry[0] + lag)
    return chosen, next_select


def tabulate(fit: Any, table: Any, x: float, level: float) -> tuple[float, float, Any]:
    """``fit``'s expected loss and ``level`` band upper end at x, and the table they came from.

    A fit is tabulated on ``TABLE_POINTS`` log-spaced points spanning a factor of 2 in x
    (``table`` is reused while it spans x): a check then costs an interpolation, not a call
    into the fit's interval machinery every step.
    """
    if table is None or not (table[0][0] <= x <= table[0][-1]):
        if x > 0:
            xs = float(x) * np.logspace(0.0, math.log10(2.0), TABLE_POINTS)
        else:
            xs = np.linspace(x, x + 1.0, TABLE_POINTS)
        mean = np.atleast_1d(np.asarray(fit.predict(xs), dtype=float))
        hi = np.atleast_1d(np.asarray(fit.interval(xs, level=level)[1], dtype=float))
        table = (xs, mean, np.where(np.isfinite(hi), hi, mean))
    return float(np.interp(x, table[0], table[1])), float(np.interp(x, table[0], table[2])), table


def within_band(entry: tuple, axis: str, window: Any, level: float, threshold_of: Callable[[float], float]) -> bool:
    """Is the smoothed loss of ``window`` (a ``Window``) within the band of the fit ``entry``
    (on ``axis``): its relative excess at most ``threshold_of(relative band)``?"""
    _step, fit, fit_axis, table = entry
    if fit_axis != axis:
        return False
    xs = np.array([o[1] for o in window.obs])
    expected, hi_mean = band_means(fit, table, xs, level)
    if not (math.isfinite(expected) and expected != 0):
        return False
    excess = window.sums[0] / len(window) / expected - 1.0
    return excess <= threshold_of(hi_mean / expected - 1.0)


def band_means(fit: Any, table: Any, xs: np.ndarray, level: float) -> tuple[float, float]:
    """Mean expected loss and mean ``level`` band upper end of ``fit`` over ``xs`` (from its
    band table when that spans them, else from the fit)."""
    if table is not None and table[0][0] <= xs.min() and xs.max() <= table[0][-1]:
        mean, hi = np.interp(xs, table[0], table[1]), np.interp(xs, table[0], table[2])
    else:
        mean = np.atleast_1d(np.asarray(fit.predict(xs), dtype=float))
        hi = np.atleast_1d(np.asarray(fit.interval(xs, level=level)[1], dtype=float))
    return float(mean.mean()), float(hi.mean())
