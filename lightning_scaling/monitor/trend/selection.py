"""Which fit a trend check compares with: the reference selection, with the LR schedule's drops.

A fit is *eligible* for an observation at ``step`` when its data ended at least ``lag`` steps
earlier (a fit made just before would already have bent towards a slow drift), or earlier
at all when the LR changed since its data ended in a way the fit cannot follow
(``crosses_lr_change``: an abrupt drop for a schedule-aware fit, a change by more than
``lr_change`` for one without the schedule). A fit has to earn its place first:

- its data must reach ``lag`` steps past the LR warm-up (``warmup_end``): a law fitted to the
  warm-up extrapolates the warm-up's transient, not the run;
- its data must not end less than ``2 * lag`` steps after an abrupt LR drop (by more than
  ``lr_change`` within 1% of the schedule): the loss is still adjusting to the new LR;
- its band at the check must be narrower than ``MAX_BAND`` (``band_too_wide``): a fit that
  uncertain cannot tell the few-percent shifts the check is for;
- it must have foreseen the observations that arrived after its data, before it is used
  (``TrendDetector._earned``): a refit that jumped would make every check a test of its
  own error.

Each reference is *anchored* (``anchor_factor``): its expected loss is scaled so that it
passes through the (robustly) smoothed loss observed just before its data ended. A law that
misses the level of its own newest data by a percent would otherwise carry that miss into
every check; anchored, a check measures how the loss moved since the reference's data
ended against how the law said it would move. Fits are entries
``(data step, fit, x axis, band table, anchor)``.

>>> import numpy as np
>>> lr = np.r_[np.ones(500), np.full(501, 0.1)]          # a drop at step 500
>>> drops = abrupt_drops(lr, lr_change=0.1)
>>> int(drops[0]), settled(drops, 510, lag=50), settled(drops, 620, lag=50)
(500, False, True)
>>> lr_changed(lr, 400, 600, lr_change=0.1), lr_changed(lr, 100, 400, lr_change=0.1)
(True, False)
>>> fits = [(100, "a", "step", None, 1.0), (300, "b", "step", None, 1.0), (480, "c", "step", None, 1.0)]
>>> choose_reference(fits, 400, lag=50, schedule=None, abrupt=np.zeros(0, dtype=int), lr_change=0.1)
((300, 'b', 'step', None, 1.0), 530)
>>> warmup = np.r_[np.linspace(0.1, 1.0, 40), np.ones(60)]   # a 40-step warm-up
>>> warmup_end(warmup), warmup_end(np.ones(10)), warmup_end(None)
(39, 0, 0)
>>> choose_reference(fits[:1], 400, lag=50, schedule=warmup, abrupt=np.zeros(0, dtype=int), lr_change=0.1,
...                  warmup=120)[0] is None                  # data ended before 120 + 50
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

TABLE_POINTS = 257
"""Points of a fit's band table, log-spaced over a factor of 2 in x."""

MAX_BAND = 0.05
"""Widest band (its upper end over the expected loss, minus 1) of a usable reference: a fit
whose central band spans more than 5% of the loss cannot tell the shifts of a few percent the
check is for, and its central value is no better than its width."""

CLIP = 3.0
"""Observations farther than this many noise scales from the median of their neighbours are
clipped to that distance (smoothing robust to single-batch spikes; a normal sample is clipped
about one time in 400)."""


def warmup_end(schedule: np.ndarray | None) -> int:
    """The step at which the LR warm-up ends: the first step at which the LR reaches its peak
    (0 when the schedule starts at its peak or is unknown)."""
    if schedule is None or schedule.size == 0:
        return 0
    peak = float(np.max(schedule))
    if not peak > 0 or schedule[0] >= (1.0 - 1e-6) * peak:
        return 0
    return int(np.argmax(schedule >= (1.0 - 1e-6) * peak))


def band_too_wide(mean: float, hi: float) -> bool:
    """Is a reference's band at a check (expected loss ``mean``, band upper end ``hi``) too wide to test?"""
    return not (math.isfinite(mean) and mean > 0 and math.isfinite(hi)) or hi / mean - 1.0 > MAX_BAND


def robust_mean(values: np.ndarray, noise: float) -> float:
    """Mean of ``values`` clipped to their median +- ``CLIP * noise`` (noise <= 0 or NaN: the median)."""
    v = np.asarray(values, dtype=float)
    mid = float(np.median(v))
    if not (math.isfinite(noise) and noise > 0):
        return mid
    return float(np.mean(np.clip(v, mid - CLIP * noise, mid + CLIP * noise)))


def anchor_factor(fit: Any, axis: str, data_step: int, recent: Iterable[tuple], span: int, spread: float,
                  noise: float, table: Any = None) -> float:
    """The factor that makes ``fit`` pass through the loss observed just before its data ended.

    ``recent``: observations ``(step, {"step": .., "tokens": .., "flops": ..}, loss)``, oldest
    first; the last ``span`` of them at or before ``data_step`` are used (fewer than
    ``span // 2`` of them, or a non-finite prediction: 1.0, no anchoring). ``spread``: the
    robust relative spread of one observation (``CLIP`` of it clips single spikes);
    ``noise``: the sd of one clipped observation; ``table``: the fit's band table (``tabulate``),
    read where it spans the observations. The factor is
    the robust mean of loss / expected over them, its distance from 1 shrunk by the
    variance of that mean (``noise^2 / n``).
    """
    chosen = [(o[1].get(axis, math.nan), o[2]) for o in recent if o[0] <= data_step][-int(span):]
    if len(chosen) < max(2, int(span) // 2):
        return 1.0
    xs = np.array([c[0] for c in chosen], dtype=float)
    ys = np.array([c[1] for c in chosen], dtype=float)
    if not np.isfinite(xs).all():
        return 1.0
    if table is not None and table[0][0] <= xs.min() and xs.max() <= table[0][-1]:
        expected = np.interp(xs, table[0], table[1])
    else:
        expected = np.atleast_1d(np.asarray(fit.predict(xs), dtype=float))
    ok = np.isfinite(expected) & (expected > 0) & np.isfinite(ys)
    if ok.sum() < max(2, int(span) // 2):
        return 1.0
    factor = robust_mean(ys[ok] / expected[ok], spread)
    if not (math.isfinite(factor) and factor > 0):
        return 1.0
    # shrunk by its own noise (positive-part James-Stein): a level miss no larger than the
    # noise of its estimate is mostly noise, and anchoring to it would move every check
    miss, se2 = factor - 1.0, (noise * noise / int(ok.sum()) if math.isfinite(noise) else 0.0)
    return 1.0 + miss * max(0.0, 1.0 - se2 / (miss * miss)) if miss != 0 else 1.0


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


def schedule_aware(fit: Any) -> bool:
    """Was ``fit`` made with the LR schedule (a law of the summed LR and its decay)?"""
    return bool(getattr(fit, "context", None))


def crosses_lr_change(entry: tuple, step: int, schedule: np.ndarray | None, abrupt: np.ndarray,
                      lr_change: float) -> bool:
    """Would a check at ``step`` extrapolate the fit ``entry`` across a change of the LR it
    cannot follow? A schedule-aware fit follows smooth changes (warm-ups, cosine and linear
    decays) but not the transient after an abrupt drop; a fit without the schedule follows none."""
    if schedule is None:
        return False
    if schedule_aware(entry[1]):
        i = np.searchsorted(abrupt, entry[0], side="right")
        return bool(i < abrupt.size and abrupt[i] <= step)
    return lr_changed(schedule, entry[0], step, lr_change)


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
    warmup: int = 0,
) -> tuple[tuple | None, float]:
    """The newest eligible fit for an observation at ``step`` (None if none), and the step at
    which the choice can next change (``fits`` oldest first; ``warmup``: the step the LR
    warm-up ends)."""
    # with a schedule, an LR change can make a newer fit eligible at any step: look again soon
    next_select = step + (16 if schedule is not None else math.inf)
    chosen = None
    for entry in fits:
        if not settled(abrupt, entry[0], lag) or (warmup > 0 and entry[0] < warmup + lag):
            continue
        if entry[0] <= step - lag or (entry[0] < step and crosses_lr_change(entry, step, schedule, abrupt, lr_change)):
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
    (on ``axis``, anchored): its relative excess at most ``threshold_of(relative band)``?"""
    _step, fit, fit_axis, table, anchor = entry
    if fit_axis != axis:
        return False
    xs = np.array([o[1] for o in window.obs])
    factor, _band0 = anchor
    expected, hi_mean = band_means(fit, table, xs, level)
    expected, hi_mean = expected * factor, hi_mean * factor
    if not (math.isfinite(expected) and expected != 0):
        return False
    excess = window.sums[0] / len(window) / expected - 1.0
    return excess <= threshold_of(hi_mean / expected - 1.0)


def predicted(entry: tuple, xs: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Expected loss and ``level`` band upper end of the fit ``entry`` at ``xs`` (anchored)."""
    _step, fit, _axis, table, (factor, _band0) = entry
    if table is not None and table[0][0] <= xs.min() and xs.max() <= table[0][-1]:
        mean, hi = np.interp(xs, table[0], table[1]), np.interp(xs, table[0], table[2])
    else:
        mean = np.atleast_1d(np.asarray(fit.predict(xs), dtype=float))
        hi = np.atleast_1d(np.asarray(fit.interval(xs, level=level)[1], dtype=float))
        hi = np.where(np.isfinite(hi), hi, mean)
    return mean * factor, hi * factor


def band_means(fit: Any, table: Any, xs: np.ndarray, level: float) -> tuple[float, float]:
    """Mean expected loss and mean ``level`` band upper end of ``fit`` over ``xs`` (from its
    band table when that spans them, else from the fit)."""
    if table is not None and table[0][0] <= xs.min() and xs.max() <= table[0][-1]:
        mean, hi = np.interp(xs, table[0], table[1]), np.interp(xs, table[0], table[2])
    else:
        mean = np.atleast_1d(np.asarray(fit.predict(xs), dtype=float))
        hi = np.atleast_1d(np.asarray(fit.interval(xs, level=level)[1], dtype=float))
    return float(mean.mean()), float(hi.mean())
