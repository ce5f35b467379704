"""Pure decision logic of the monitor: forecasts, behind-trend and divergence detection, stops.

Nothing here knows Lightning. The callback feeds observations and fits in, and turns what
comes out (events, ``(decision, reason)`` pairs) into warnings, logs and ``trainer.should_stop``.

- ``make_forecast``: one refit of the bounded history and its forecast at the planned end.
- ``TrendDetector``: compares each new observation with the band of a fit made *before* it;
  the smoothed excess over the band's upper end must stay positive for ``patience`` checks.
- ``DivergenceDetector``: non-finite losses and sudden spikes.
- ``evaluate_stopping_criteria``: the stop rules, each off unless asked for.
- ``RefitRunner``: runs a refit on a background thread so no training step waits for it.

Losses are in the units of the monitored metric (nats for a cross-entropy); steps are
optimizer steps; tokens and FLOPs are cumulative over all processes.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..core.plain import plain
from ..core.stats import difference_noise, mad_sd
from ..errors import InvalidInputError

AXES = ("step", "tokens", "flops")



def _f(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# -- forecasts ------------------------------------------------------------------------------
@dataclass
class Forecast:
    """One forecast of the run's loss, made from the observations up to ``step``.

    Attributes:
        step: optimizer step of the newest observation the fit used.
        final_loss: expected loss at ``target_step`` (loss units; NaN when the planned end is
            unknown or the fit failed).
        lower, upper: the ``level`` prediction interval at ``target_step``.
        level: the interval's probability content.
        law: name of the fitted law ("none" when no fit was possible).
        target_step: the planned last optimizer step, or None when unknown.
        x_axis: the axis the fit ran on ("step", "tokens" or "flops").
        tokens, flops: cumulative tokens / FLOPs at ``step`` (NaN when unknown).
        target_tokens, target_flops: the same projected to ``target_step``.
        target_loss: the loss the ``*_to_target`` numbers aim at (None when not asked).
        steps_to_target, tokens_to_target, flops_to_target: cumulative optimizer steps,
            tokens and FLOPs at which the expected loss reaches ``target_loss`` (inf: never
            on this law; NaN: unknown).
        diagnostics: the fit's diagnostics plus the monitor's (points used, schedule, timing).
        fit: the ``CurveFit`` itself (not part of ``to_dict``).
        band: ``(x, expected, upper)`` arrays tabulating the fit and its ``level`` band upper
            end from the last fitted x to the planned end (at least twice the last x);
            computed with the fit, off the training thread (not part of ``to_dict``).
    """

    step: int
    final_loss: float
    lower: float
    upper: float
    level: float
    law: str
    target_step: int | None
    x_axis: str = "step"
    tokens: float = math.nan
    flops: float = math.nan
    target_tokens: float = math.nan
    target_flops: float = math.nan
    target_loss: float | None = None
    steps_to_target: float = math.nan
    tokens_to_target: float = math.nan
    flops_to_target: float = math.nan
    diagnostics: dict = field(default_factory=dict)
    fit: Any = field(default=None, repr=False, compare=False)
    band: Any = field(default=None, repr=False, compare=False)

    def to_dict(self, diagnostics: bool = True) -> dict[str, Any]:
        """Plain-Python dict (the run summary's forecast entry plus the extra keys above)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__ if f not in ("fit", "diagnostics", "band")}
        d = plain(d)
        if diagnostics:
            d["diagnostics"] = plain(self.diagnostics)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], fit: Any = None) -> "Forecast":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k not in ("fit", "band")}
        out = cls(**known)
        out.fit = fit
        return out


def make_forecast(
    arrays: dict[str, np.ndarray],
    *,
    fit_fn: Callable[..., Any],
    x_axis: str = "step",
    target_step: float | None = None,
    lr: np.ndarray | None = None,
    level: float = 0.9,
    target_loss: float | None = None,
    extra_diagnostics: dict | None = None,
    band_level: float | None = None,
) -> Forecast:
    """Refit the history and forecast the loss at ``target_step``.

    Args:
        arrays: ``LossHistory.arrays()`` (step, tokens, flops, loss, ...).
        fit_fn: ``lightning_scaling.fit_curve`` (passed in so this stays testable).
        x_axis: the axis to fit on. With ``lr`` given the fit always runs on the optimizer
            step (a schedule is defined per step) and compute is converted through the
            recorded compute per step.
        target_step: the planned last optimizer step, or None (no end-of-run forecast).
        lr: the LR at every optimizer step 0..target_step, or None.
        level: the interval level.
        target_loss: also say the compute at which the expected loss reaches this.
        band_level: the level of the tabulated band (``Forecast.band``; default ``level``).
    """
    from ..core.compute import project_compute, step_at_compute

    steps = arrays["step"]

    def points(axis: str, rounded: bool) -> tuple[np.ndarray, np.ndarray]:
        x = arrays[axis] if axis != "step" else (np.rint(steps) if rounded else steps)
        good = np.isfinite(x) & np.isfinite(arrays["loss"])
        return x[good], arrays["loss"][good]

    t0 = time.perf_counter()
    fallback = None
    fit = None
    if lr is not None:
        fit_axis = "step"
        x_fit, y_fit = points("step", rounded=True)
        try:
            fit = fit_fn(x_fit, y_fit, lr=lr)
        except InvalidInputError as exc:
            fallback = f"schedule-aware fit refused the data ({exc}); fitted without the schedule"
        else:
            if not getattr(fit, "ok", False):
                reason = (getattr(fit, "diagnostics", {}) or {}).get("reason", "not ok")
                fallback = f"schedule-aware fit failed ({reason}); fitted without the schedule"
    if fit is None or fallback is not None:
        fit_axis = x_axis
        x_fit, y_fit = points(x_axis, rounded=False)
        fit = fit_fn(x_fit, y_fit)
    fit_seconds = time.perf_counter() - t0

    step_now = int(round(float(steps[-1]))) if steps.size else 0
    tokens_now = float(arrays["tokens"][-1]) if steps.size else math.nan
    flops_now = float(arrays["flops"][-1]) if steps.size else math.nan

    def to_axis(step_value: float) -> float:
        if fit_axis == "step":
            return step_value
        return project_compute(steps, arrays[fit_axis], step_value)

    final = lower = upper = math.nan
    target_tokens = target_flops = math.nan
    if target_step is not None and math.isfinite(target_step):
        x_end = to_axis(float(target_step))
        if math.isfinite(x_end) and fit.ok:
            final = _f(fit.predict(x_end))
            lo, hi = fit.interval(x_end, level=level)
            lower, upper = _f(lo), _f(hi)
        target_tokens = project_compute(steps, arrays["tokens"], float(target_step))
        target_flops = project_compute(steps, arrays["flops"], float(target_step))

    steps_to = tokens_to = flops_to = math.nan
    if target_loss is not None and fit.ok:
        x_target = _f(fit.x_at(float(target_loss)))
        if math.isinf(x_target):
            steps_to = tokens_to = flops_to = math.inf
        elif math.isfinite(x_target):
            steps_to = x_target if fit_axis == "step" else step_at_compute(steps, arrays[fit_axis], x_target)
            tokens_to = project_compute(steps, arrays["tokens"], steps_to) if math.isfinite(steps_to) else math.nan
            flops_to = project_compute(steps, arrays["flops"], steps_to) if math.isfinite(steps_to) else math.nan

    band = None
    if fit.ok and x_fit.size:
        x_last = float(np.max(x_fit))
        x_far = 2.0 * x_last
        if target_step is not None and math.isfinite(target_step):
            x_end = to_axis(float(target_step))
            if math.isfinite(x_end):
                x_far = max(x_far, 1.01 * x_end)
        if x_last > 0:
            xs = np.geomspace(x_last, x_far, 513)
            _lo, hi = fit.interval(xs, level=band_level or level)
            band = (xs, np.asarray(fit.predict(xs), dtype=float), np.asarray(hi, dtype=float))

    diagnostics = dict(plain(getattr(fit, "diagnostics", {}) or {}))
    diagnostics.update(
        {
            "monitor_points": int(x_fit.size),
            "monitor_fit_axis": fit_axis,
            "monitor_fit_seconds": round(fit_seconds, 6),
        }
    )
    if fallback:
        diagnostics["monitor_schedule_fallback"] = fallback
    if extra_diagnostics:
        diagnostics.update(plain(extra_diagnostics))
    return Forecast(
        step=step_now,
        final_loss=final,
        lower=lower,
        upper=upper,
        level=float(level),
        law=str(getattr(fit, "law", "none")),
        target_step=None if target_step is None or not math.isfinite(target_step) else int(target_step),
        x_axis=fit_axis,
        tokens=tokens_now,
        flops=flops_now,
        target_tokens=target_tokens,
        target_flops=target_flops,
        target_loss=None if target_loss is None else float(target_loss),
        steps_to_target=float(steps_to),
        tokens_to_target=float(tokens_to),
        flops_to_target=float(flops_to),
        diagnostics=diagnostics,
        fit=fit,
        band=band,
    )


# -- robust noise --------------------------------------------------------------------------
def robust_noise(values) -> float:
    """Noise scale (standard deviation) of a slowly moving series from its first differences.

    The median absolute deviation of the differences, divided by sqrt(2) (a difference holds
    two draws) and scaled to a normal's standard deviation; a trend costs it nothing.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 4:
        return 0.0
    d = np.diff(v)
    mad = float(np.median(np.abs(d - np.median(d))))
    return 1.4826 * mad / math.sqrt(2.0)


# -- behind the trend ----------------------------------------------------------------------
@dataclass
class TrendEvent:
    """The run fell behind its trend (emitted once per episode)."""

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


DISTANCE_MIN = 1.01
"""Smallest extrapolation ratio a noise sample is normalised by (a window that overlaps the
reference's own data still carries noise)."""


def _log_distance(step: float, data_step: float | None) -> float:
    """How far (log of the step ratio, at least ``log(DISTANCE_MIN)``) a fit whose data ended
    at ``data_step`` extrapolates to ``step``."""
    return math.log(max(float(step) / max(float(data_step or 0), 1.0), DISTANCE_MIN))


class TrendDetector:
    """Is the run falling behind the trend forecast before its newest observations?

    Each observation is compared with a reference fit made from data that ended at least
    ``lag`` optimizer steps before it (a fit made just before would already have bent
    towards a slow drift). The statistic is the relative excess of the mean of the last
    ``window`` losses over the mean of their expected losses; a check is positive when it
    exceeds the larger of the band (the fit's ``level`` upper end, relative to the expected
    loss) plus ``min_excess``, and ``z`` noise scales. The noise scale is measured, not
    assumed: the robust spread (MAD) of the same statistic over the last
    ``max(64, 3 * window)`` checks that were not positive (each admitted only after
    ``window + patience`` later checks passed without an episode, so the onset of a shift
    cannot widen the threshold meant to catch it), so correlated noise and the law's
    short-range misfit count in it; no check fires before ``max(min_calibration, 2 * window)``
    such samples exist. The misfit of a law grows with how far it extrapolates, so each
    sample is stored per unit of extrapolation distance ``log(step / reference_step)`` (at
    the window's middle) and the scale is applied at the current distance: the large misses
    of fits made from the first few percent of a run, far from their data, do not blunt the
    checks of later fits that extrapolate a short way. ``patience`` positive checks in
    a row start an episode, reported once. While checks are positive the reference is frozen,
    so a newer fit cannot absorb the shift being tested; an episode ends after ``patience``
    negative checks against it, or ``patience`` checks in a row within the band of the
    newest eligible fit (the shift has become the run's trend, or the frozen fit was wrong).

    A second trigger catches slow drifts, which the lagged references partly absorb before
    the window test sees them: a one-sided CUSUM of the per-observation relative excess
    ``loss / expected - 1`` over its own reference, the detector's reference while the sum
    is zero and held (frozen) while it is positive. Its allowance (subtracted from every
    observation) is the band plus ``max(drift_floor, q)`` and it fires when the sum exceeds
    ``window * max(drift_floor, 2 q)`` while the mean of the last ``window`` losses is at
    least ``drift_level`` above the held fit's band upper end; ``q`` is the ``drift_quantile``
    quantile of the absolute noise samples (per unit of extrapolation distance, taken when
    the sum last was zero) times the distance from the held fit's data: on smooth curves the
    allowance is a few hundredths of a percent and a drift is caught early, on noisy curves
    (or ones whose law misses by a percent at times) it is as large as their usual swings
    and the CUSUM stays quiet. A held fit is released when the LR changes by more than
    ``lr_change`` since its data ended. While the sum is positive no noise sample is
    admitted (up to ``3 * (window + patience)`` held back), so the drift being accumulated
    cannot widen the scale meant to catch it. When the CUSUM fires, an episode starts
    against its held fit, which becomes the reference; it goes on while the window stays
    ``drift_level`` above that fit's band, and ends as above, with ``band + drift_level``
    as the newest fit's bound. After an episode the CUSUM waits for a reference made from
    data after the episode's end (a fit that saw the shift would only report it again).

    Args:
        patience: consecutive positive checks before an episode starts.
        window: observations in the smoothed loss.
        min_excess: relative margin (0.015 = 1.5% of the expected loss).
        level: the band level.
        z: noise scales allowed above the expected loss.
        lag: the reference fit's data must end at least this many optimizer steps before the
            observation (settable while running: ``detector.lag = ...``).
        min_calibration: noise samples needed before the first positive check.
        drift_level: smallest mean relative excess over the held fit's band for the drift
            CUSUM to fire (0.01 = 1%); None turns the drift CUSUM off.
        drift_floor: smallest allowance and per-observation threshold of the drift CUSUM,
            relative (0.0015 = 0.15%).
        drift_quantile: the quantile of the absolute noise samples that scales the CUSUM.
        schedule: the LR at every optimizer step (optional). A lagged reference is not
            extrapolated across a change of the LR by more than ``lr_change`` (relative):
            the newest fit made before the observation is used there instead. A fit whose
            data ended less than ``2 * lag`` steps after an abrupt LR drop (by more than
            ``lr_change`` within 1% of the schedule) is never a reference: the loss is still
            adjusting to the new LR, and a law fitted then extrapolates that transient.
    """

    def __init__(
        self,
        patience: int = 3,
        window: int = 5,
        min_excess: float = 0.015,
        level: float = 0.9,
        z: float = 3.0,
        lag: float = 0.0,
        min_calibration: int = 10,
        schedule: np.ndarray | None = None,
        lr_change: float = 0.1,
        drift_level: float | None = 0.01,
        drift_floor: float = 0.0015,
        drift_quantile: float = 0.9,
    ):
        if int(patience) < 1 or int(window) < 1:
            raise InvalidInputError(f"patience and window must be >= 1, got {patience!r}, {window!r}")
        if not 0 < level < 1:
            raise InvalidInputError(f"level must be in (0, 1), got {level!r}")
        if not 0 < drift_quantile <= 1 or not drift_floor > 0:
            raise InvalidInputError(f"drift_quantile must be in (0, 1] and drift_floor > 0, got {drift_quantile!r}, {drift_floor!r}")
        self.patience = int(patience)
        self.window = int(window)
        self.min_excess = float(min_excess)
        self.level = float(level)
        self.z = float(z)
        self.lag = float(lag)
        self.min_calibration = int(min_calibration)
        self.lr_change = float(lr_change)
        self.drift_level = None if drift_level is None else float(drift_level)
        self.drift_floor = float(drift_floor)
        self.drift_quantile = float(drift_quantile)
        self._drift_sum = 0.0  # one-sided CUSUM of the relative excess over the allowance, relative x observations
        self._drift_ref: list | None = None  # [data step, fit, axis, table]: held while the sum is positive
        self._drift_scale: float | None = math.inf  # noise quantile per unit of log-extrapolation distance, when the sum last was zero
        self._drift_since = 0
        self._drift_rearm = 0  # after an episode, the CUSUM waits for a reference made from data up to here
        self._drift_episode = False  # the episode going on was started by the drift CUSUM
        self._drift_recent: deque[float] = deque(maxlen=self.window)  # loss / band upper end - 1 against the held fit
        self.schedule = schedule
        self.reference: Any = None
        self.reference_step: int | None = None
        self.reference_axis = "step"
        self._fits: deque[tuple] = deque(maxlen=64)  # (data step, fit, x axis, band table), oldest first
        self._obs: deque[list[float]] = deque(maxlen=self.window)  # [step, x, loss, expected, band_hi]
        self._calibration: deque[float] = deque(maxlen=self._calibration_size(self.window))
        self._holding: deque[float] = deque()  # negative checks not yet trusted as noise samples
        self._scale_cache: float | None = None
        self._scale_age = 0
        self._grid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._sums = [0.0, 0.0, 0.0]  # window sums of loss, expected loss, band upper end
        self._dirty = True  # a fit was offered since the reference was last chosen
        self._next_select = 0.0
        self._fresh: tuple | None = None  # while frozen: the fit that would be the reference
        self._recovered = 0  # checks in a row within the fresh fit's band, while frozen
        self.count = 0
        self.since_step: int | None = None
        self.behind = False  # an episode is going on
        self.episodes = 0
        self.last_excess_relative = 0.0

    def set_window(self, window: int) -> None:
        """Change the smoothing window (the monitor sizes it once the run's length is known)."""
        window = max(1, int(window))
        if window != self.window:
            self.window = window
            self._obs = deque(self._obs, maxlen=window)
            self._drift_recent = deque(self._drift_recent, maxlen=window)
            self._calibration = deque(self._calibration, maxlen=self._calibration_size(window))
            self._resum()

    @staticmethod
    def _calibration_size(window: int) -> int:
        return max(64, 3 * int(window))

    def _distance(self, step: int) -> float:
        """Log-extrapolation distance of the window's middle from the reference's data end."""
        return _log_distance(float(step) - 0.5 * (len(self._obs) - 1), self.reference_step)

    # the reference fit
    def offer_fit(self, fit: Any, data_step: int, axis: str = "step", band: Any = None) -> bool:
        """Offer a new fit (made from data up to ``data_step``, x on ``axis``) as a future reference.

        ``band``: optional ``(x, expected, upper)`` table of the fit (``Forecast.band``), so
        checks interpolate instead of evaluating the fit on the training thread.
        """
        if fit is None or not getattr(fit, "ok", False):
            return False
        self._fits.append((int(data_step), fit, str(axis), band))
        self._dirty = True
        return True

    def reset_reference(self) -> None:
        """Forget every fit (one could not be evaluated); checks resume with the next fit."""
        self.reference, self.reference_step, self._grid = None, None, None
        self._fits.clear()
        self._obs.clear()
        self._resum()
        self.count, self.behind, self.since_step = 0, False, None
        self._drift_sum, self._drift_ref = 0.0, None
        self._drift_recent.clear()

    @property
    def frozen(self) -> bool:
        return self.count > 0 or self.behind

    def _select_reference(self, step: int) -> None:
        """Pick the reference for ``step``; also say when the choice can next change."""
        self._dirty = False
        # with a schedule, an LR change can make a newer fit eligible at any step: look again soon
        self._next_select = step + (16 if self._schedule is not None else math.inf)
        chosen = None
        for entry in self._fits:  # (data step, fit, axis, band table)
            if not self._settled(entry[0]):
                continue
            if entry[0] <= step - self.lag or (entry[0] < step and self._lr_changed(entry[0], step)):
                chosen = entry
            else:
                self._next_select = min(self._next_select, entry[0] + self.lag)
        if self.frozen and self.reference is not None:
            # keep testing against the frozen reference; the newest eligible fit can end the episode
            self._fresh = chosen if chosen is not None and chosen[1] is not self.reference else None
            return
        if chosen is None or chosen[1] is self.reference:
            return
        self._adopt(chosen)

    def _adopt(self, entry: tuple) -> None:
        self.reference_step, self.reference, self.reference_axis, self._grid = entry
        self._fresh = None
        while self._fits and self._fits[0][0] < self.reference_step:  # older ones are never needed again
            self._fits.popleft()
        self._rethreshold()

    def _recovered_against_fresh(self, threshold_of: Callable[[float], float]) -> bool:
        """While frozen: is the window within the band of the newest eligible fit?"""
        entry = self._fresh
        if entry is None:
            return False
        _step, fit, axis, table = entry
        if axis != self.reference_axis:
            return False
        x = np.array([o[1] for o in self._obs])
        if table is not None and table[0][0] <= x.min() and x.max() <= table[0][-1]:
            mean, hi = np.interp(x, table[0], table[1]), np.interp(x, table[0], table[2])
        else:
            mean = np.atleast_1d(np.asarray(fit.predict(x), dtype=float))
            hi = np.atleast_1d(np.asarray(fit.interval(x, level=self.level)[1], dtype=float))
        expected = float(mean.mean())
        if not (math.isfinite(expected) and expected != 0):
            return False
        excess = self._sums[0] / len(self._obs) / expected - 1.0
        return excess <= threshold_of(float(hi.mean()) / expected - 1.0)

    @property
    def schedule(self) -> np.ndarray | None:
        return self._schedule

    @schedule.setter
    def schedule(self, lr: np.ndarray | None) -> None:
        self._schedule = None if lr is None else np.asarray(lr, dtype=float)
        self._abrupt = np.zeros(0, dtype=int)
        if self._schedule is not None and self._schedule.size > 2:
            lr = self._schedule
            w = max(1, int(round(0.01 * lr.size)))
            a, b = lr[:-w], lr[w:]
            top = np.maximum(np.abs(a), np.abs(b))
            with np.errstate(invalid="ignore", divide="ignore"):
                # drops only: after a warm-up the loss follows a law again at once, while after
                # a drop it keeps falling for a while (the annealing response)
                jump = np.where(top > 0, (a - b) / top, 0.0) > self.lr_change
            self._abrupt = np.flatnonzero(jump) + w  # steps at which an abrupt change completes

    def _settled(self, data_step: int) -> bool:
        """No abrupt LR change in the ``2 * lag`` steps before ``data_step``."""
        if self._abrupt.size == 0:
            return True
        i = np.searchsorted(self._abrupt, data_step, side="right")
        return i == 0 or self._abrupt[i - 1] <= data_step - max(2.0 * self.lag, 1.0)

    def _lr_changed(self, data_step: int, step: int) -> bool:
        """Did the LR change by more than ``lr_change`` between a fit's data end and ``step``?"""
        lr = self.schedule
        if lr is None or lr.size == 0:
            return False
        a, b = lr[min(int(data_step), lr.size - 1)], lr[min(int(step), lr.size - 1)]
        top = max(abs(a), abs(b))
        return bool(top > 0 and abs(a - b) / top > self.lr_change)

    def _band_at(self, x: float) -> tuple[float, float]:
        """The reference's expected loss and band upper end at x, from its cached table."""
        mean, hi, self._grid = self._tabulated(self.reference, self._grid, x)
        return mean, hi

    def _tabulated(self, fit: Any, table: Any, x: float) -> tuple[float, float, Any]:
        """``fit``'s expected loss and band upper end at x, and the table they came from.

        A fit is tabulated on 257 log-spaced points spanning a factor of 2 in x (``table``
        is reused while it spans x): a check then costs an interpolation, not a call into
        the fit's interval machinery every step.
        """
        if table is None or not (table[0][0] <= x <= table[0][-1]):
            xs = float(x) * np.logspace(0.0, math.log10(2.0), 257) if x > 0 else np.linspace(x, x + 1.0, 257)
            mean = np.atleast_1d(np.asarray(fit.predict(xs), dtype=float))
            hi = np.atleast_1d(np.asarray(fit.interval(xs, level=self.level)[1], dtype=float))
            table = (xs, mean, np.where(np.isfinite(hi), hi, mean))
        return float(np.interp(x, table[0], table[1])), float(np.interp(x, table[0], table[2])), table

    def _drift_check(self, step: int, x: float, loss: float, mean: float, hi: float) -> bool:
        """Add one observation to the drift CUSUM (``mean``, ``hi``: the reference's expected
        loss and band upper end at x); True when it fires."""
        ref = self._drift_ref
        if self._drift_sum <= 0.0 or ref is None or ref[2] != self.reference_axis or self._lr_changed(ref[0], step):
            self._drift_sum = 0.0
            if ref is None or ref[1] is not self.reference:
                self._drift_recent.clear()
            self._drift_ref = ref = [self.reference_step, self.reference, self.reference_axis, self._grid]
            self._drift_scale = None  # of the noise samples as they are now; computed when first needed
            self._drift_since = int(step)
        if ref[1] is not self.reference:
            mean, hi, ref[3] = self._tabulated(ref[1], ref[3], x)
        if not (math.isfinite(mean) and mean != 0 and math.isfinite(hi) and hi != 0):
            return False
        if self._drift_sum <= 0.0 and (loss - hi) / mean <= self.drift_floor:
            # below band + floor, the least allowance there is: the sum stays at zero whatever
            # the noise quantile, which is then not worth computing (this runs every step)
            self._drift_recent.append(loss / hi - 1.0)
            return False
        if self._drift_scale is None:
            samples = np.abs(np.asarray(self._calibration, dtype=float))
            self._drift_scale = float(np.quantile(samples, self.drift_quantile)) if samples.size else math.inf
        q = self._drift_scale * _log_distance(float(step), ref[0])
        allowance = hi / mean - 1.0 + max(self.drift_floor, q)
        self._drift_sum = max(0.0, self._drift_sum + loss / mean - 1.0 - allowance)
        self._drift_recent.append(loss / hi - 1.0)
        if len(self._drift_recent) < self.window or math.fsum(self._drift_recent) < self.window * self.drift_level:
            return False
        return self._drift_sum > self.window * max(self.drift_floor, 2.0 * q)

    def _rethreshold(self) -> None:
        if not self._obs or self.reference is None:
            return
        for o in self._obs:
            o[3], o[4] = self._band_at(o[1])
        self._resum()

    def _resum(self) -> None:
        self._sums = [math.fsum(o[2] for o in self._obs), math.fsum(o[3] for o in self._obs),
                      math.fsum(o[4] for o in self._obs)]

    def noise_scale(self) -> float:
        """Robust spread (MAD) of the smoothed relative excess per unit of log-extrapolation
        distance, over past negative checks."""
        if len(self._calibration) < 2:
            return math.nan
        if self._scale_cache is None or self._scale_age >= 8:  # refreshed every 8 samples
            c = np.asarray(self._calibration)
            self._scale_cache = float(1.4826 * np.median(np.abs(c - np.median(c))))
            self._scale_age = 0
        return self._scale_cache

    def observe(self, step: int, x: float | dict, loss: float) -> TrendEvent | None:
        """Check one finite observation; returns an event when an episode starts.

        ``x`` is the observation's position on the reference fit's axis, or a dict
        ``{"step": ..., "tokens": ..., "flops": ...}`` to pick from.
        """
        if self._dirty or step >= self._next_select:
            self._select_reference(int(step))
        if self.reference is None or (self.reference_step is not None and step <= self.reference_step):
            return None
        if isinstance(x, dict):
            x = x.get(self.reference_axis, math.nan)
        x = float(x)
        if not math.isfinite(x):
            return None
        mean, hi = self._band_at(x)
        if len(self._obs) == self.window:
            old = self._obs[0]
            self._sums[0] -= old[2]
            self._sums[1] -= old[3]
            self._sums[2] -= old[4]
        self._obs.append([float(step), x, float(loss), mean, hi])
        self._sums[0] += float(loss)
        self._sums[1] += mean
        self._sums[2] += hi
        n = len(self._obs)
        if n < self.window:
            return None
        expected = self._sums[1] / n
        hi_mean = self._sums[2] / n
        if not (math.isfinite(expected) and expected != 0 and math.isfinite(hi_mean)):
            return None
        smoothed = self._sums[0] / n
        excess = smoothed / expected - 1.0
        band = hi_mean / expected - 1.0
        distance = self._distance(step)
        scale = self.noise_scale() * distance
        calibrated = len(self._calibration) >= max(self.min_calibration, 2 * self.window)

        def threshold_of(band_relative: float) -> float:
            return max(band_relative + self.min_excess, self.z * scale if calibrated else math.inf)

        threshold = threshold_of(band)
        self.last_excess_relative = excess - threshold if calibrated else 0.0
        if self.frozen and self._fresh is not None:
            # the shift may have become the run's new trend (or the frozen fit was the wrong one):
            # patience checks in a row within the newest eligible fit's band end the episode
            within = (lambda band_relative: band_relative + self.drift_level) if self._drift_episode else threshold_of
            self._recovered = self._recovered + 1 if self._recovered_against_fresh(within) else 0
            if self._recovered >= self.patience:
                self.count, self.behind, self.since_step, self._recovered = 0, False, None, 0
                self._drift_rearm, self._drift_episode = int(step), False
                self._holding.clear()
                self._adopt(self._fresh)
                return None
        else:
            self._recovered = 0
        drifting = (calibrated and not self.behind and self.drift_level is not None
                    and (self.reference_step or 0) >= self._drift_rearm
                    and self._drift_check(int(step), x, float(loss), mean, hi))
        if drifting:
            # the drift CUSUM fired: the episode is judged against the fit it held, from before the drift
            ref, since = self._drift_ref, self._drift_since
            self._drift_sum, self._drift_ref = 0.0, None
            self._drift_recent.clear()
            if ref[1] is not self.reference:
                self._adopt(tuple(ref))
            # the size of the shift: the observations since the sum left zero (the last window at most)
            recent = [o for o in self._obs if o[0] >= since] or [self._obs[-1]]
            smoothed, expected, hi_mean = (math.fsum(o[i] for o in recent) / len(recent) for i in (2, 3, 4))
            self.count, self.since_step = max(self.count, self.patience), since
            self._drift_episode = True
            return self._start_episode(step, since, smoothed, expected, hi_mean, threshold)
        if not calibrated or self.behind or (self.reference_step or 0) < self._drift_rearm:
            self._drift_sum, self._drift_ref = 0.0, None
        # an episode the CUSUM started goes on while the window stays drift_level above the band
        drift_held = (self._drift_episode and self.behind and self.drift_level is not None
                      and hi_mean > 0 and smoothed / hi_mean - 1.0 >= self.drift_level)
        if calibrated and (excess > threshold or drift_held):
            if self.count == 0:
                above = [o for o in self._obs if o[2] > o[3] * (1 + threshold)]
                self.since_step = int((above[0] if above else self._obs[-1])[0])
            self.count += 1
            if self.count >= self.patience and not self.behind:
                since = self.since_step if self.since_step is not None else step
                return self._start_episode(step, since, smoothed, expected, hi_mean, threshold)
            return None
        if not self.frozen:
            # a sample becomes a noise sample only once window + patience later checks passed
            # without an episode: the onset of a shift must not widen the threshold meant to catch it
            self._holding.append(excess / distance)
            delay = self.window + self.patience
            # while the drift CUSUM accumulates, what it accumulates is held back from the noise samples
            while len(self._holding) > delay and (self._drift_sum <= 0.0 or len(self._holding) > 3 * delay):
                self._calibration.append(self._holding.popleft())
                self._scale_age += 1
        if self.behind:
            self.count = max(0, min(self.count, self.patience) - 1)
            if self.count == 0:
                self.behind = False
                self.since_step = None
                self._drift_rearm, self._drift_episode = int(step), False
        else:
            self.count = 0
            self.since_step = None
        return None

    def _start_episode(self, step: int, since: int, smoothed: float, expected: float, hi_mean: float,
                       threshold: float) -> TrendEvent:
        """Mark the run behind its trend and describe it (losses: means over the shifted window)."""
        self.behind = True
        self._holding.clear()
        self.episodes += 1
        return TrendEvent(
            step=int(step),
            since_step=int(since),
            smoothed_loss=smoothed,
            threshold=expected * (1 + threshold),
            expected=expected,
            excess=smoothed - hi_mean,
            excess_relative=smoothed / expected - 1.0,
            reference_step=int(self.reference_step or 0),
            level=self.level,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "reference": None if self.reference is None else plain(self.reference.to_dict()),
            "reference_step": self.reference_step,
            "reference_axis": self.reference_axis,
            # the 16 newest candidates at most: the checkpoint stays small whatever a fit holds
            "fits": [[int(e[0]), plain(e[1].to_dict()), e[2]] for e in self._fits if e[1] is not self.reference][-16:],
            "window": int(self.window),
            "lag": float(self.lag),
            "obs": [list(map(float, o)) for o in self._obs],
            "calibration": [float(v) for v in self._calibration],
            "holding": [float(v) for v in self._holding],
            "count": int(self.count),
            "since_step": self.since_step,
            "behind": bool(self.behind),
            "episodes": int(self.episodes),
            "drift": self._drift_state(),
        }

    def _drift_state(self) -> dict[str, Any]:
        ref = self._drift_ref
        if ref is None:
            return {"rearm": int(self._drift_rearm), "episode": bool(self._drift_episode)}
        same = ref[1] is self.reference
        return {
            "rearm": int(self._drift_rearm),
            "episode": bool(self._drift_episode),
            "sum": float(self._drift_sum),
            "reference_step": None if ref[0] is None else int(ref[0]),
            "reference": None if same else plain(ref[1].to_dict()),
            "axis": str(ref[2]),
            "scale": None if self._drift_scale is None else float(self._drift_scale),
            "since": int(self._drift_since),
            "recent": [float(v) for v in self._drift_recent],
        }

    def load_state_dict(self, state: dict[str, Any], fit_from_dict: Callable[[dict], Any]) -> None:
        ref = state.get("reference")
        self.reference = None if ref is None else fit_from_dict(ref)
        self.reference_step = state.get("reference_step")
        self.reference_axis = state.get("reference_axis", "step")
        fits = [(int(s), fit_from_dict(d), a, None) for s, d, a in state.get("fits", [])]
        if self.reference is not None:
            fits.append((int(self.reference_step or 0), self.reference, self.reference_axis, None))
        self._fits = deque(sorted(fits, key=lambda t: t[0]), maxlen=64)
        self.window = int(state.get("window", self.window))
        self.lag = float(state.get("lag", self.lag))
        self._obs = deque((list(map(float, o)) for o in state.get("obs", [])), maxlen=self.window)
        self._calibration = deque((float(v) for v in state.get("calibration", [])), maxlen=self._calibration_size(self.window))
        self._holding = deque(float(v) for v in state.get("holding", []))
        self._scale_cache, self._grid = None, None
        self._resum()
        self._dirty = True
        self.count = int(state.get("count", 0))
        self.since_step = state.get("since_step")
        self.behind = bool(state.get("behind", False))
        self.episodes = int(state.get("episodes", 0))
        self._drift_recent = deque(maxlen=self.window)
        self._drift_sum, self._drift_ref = 0.0, None
        drift = state.get("drift") or {}
        self._drift_rearm = int(drift.get("rearm", 0))
        self._drift_episode = bool(drift.get("episode", False))
        if drift.get("axis") is not None:
            fit = self.reference if drift.get("reference") is None else fit_from_dict(drift["reference"])
            if fit is not None:
                self._drift_ref = [drift.get("reference_step"), fit, drift.get("axis", self.reference_axis), None]
                self._drift_sum = float(drift.get("sum", 0.0))
                scale = drift.get("scale", math.inf)
                self._drift_scale = None if scale is None else float(scale)
                self._drift_since = int(drift.get("since", 0))
                self._drift_recent.extend(float(v) for v in drift.get("recent", []))


# -- divergence ----------------------------------------------------------------------------
@dataclass
class DivergenceEvent:
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
            self._stats = (float(np.median(r)) if r.size else math.nan, robust_noise(r))
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


# -- stopping ------------------------------------------------------------------------------
def evaluate_stopping_criteria(
    *,
    step: int,
    planned_steps: float | None,
    min_fraction: float,
    stop_if_forecast_above: float | None,
    recent_forecasts: list[Forecast],
    forecast_patience: int,
    stop_when_behind_trend: bool,
    behind: bool,
    behind_message: str | None,
    stop_on_divergence: bool,
    diverged: bool,
    divergence_message: str | None,
) -> tuple[bool, str | None]:
    """Should the run stop now? Returns (decision, reason); each rule is off unless asked.

    - No decision before ``min_fraction`` of the planned steps (when they are known).
    - ``stop_if_forecast_above``: the newest ``forecast_patience`` forecasts all put even the
      optimistic (lower) end of their interval at the planned end above the target.
    - ``stop_when_behind_trend``: a behind-trend episode is going on.
    - ``stop_on_divergence``: the loss is non-finite, or spiked for several steps in a row.
    """
    known_end = planned_steps is not None and math.isfinite(planned_steps) and planned_steps > 0
    if known_end and step < min_fraction * planned_steps:
        return False, None
    if stop_on_divergence and diverged:
        return True, f"divergence: {divergence_message or 'the loss diverged'}"
    if stop_when_behind_trend and behind:
        return True, f"behind trend: {behind_message or 'the loss stayed above its forecast band'}"
    if stop_if_forecast_above is not None and known_end:
        latest = recent_forecasts[-max(1, forecast_patience):]
        if len(latest) >= max(1, forecast_patience) and all(
            math.isfinite(f.lower) and f.lower > stop_if_forecast_above for f in latest
        ):
            f = latest[-1]
            return True, (
                f"forecast above target: at step {step:,} the forecast final loss at step "
                f"{f.target_step:,} is {f.final_loss:.4g}, {100 * f.level:.0f}% interval "
                f"[{f.lower:.4g}, {f.upper:.4g}]; even its optimistic end misses the target "
                f"{stop_if_forecast_above:.4g} (in {len(latest)} forecasts in a row)"
            )
    return False, None


# -- refits off the training thread --------------------------------------------------------
class RefitRunner:
    """Runs one refit at a time, on a persistent daemon worker thread or inline.

    ``submit`` hands a job to the worker unless one is pending or running (no thread is
    created per job: starting a thread makes the caller wait for the GIL handoff);
    ``poll`` returns the finished job's ``(result, error, cpu_seconds)`` once, else None.
    The job's CPU time is measured with ``time.thread_time`` so the caller can hold refits to
    a share of the training time.
    """

    def __init__(self, background: bool = True):
        self.background = bool(background)
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._job: Callable[[], Any] | None = None
        self._running = False
        self._done: tuple[Any, BaseException | None, float] | None = None
        self.cpu_seconds = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # picklable for ddp_spawn: a fresh runner (no thread, no pending result) in the child
        return {"background": self.background, "cpu_seconds": self.cpu_seconds}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(background=state["background"])
        self.cpu_seconds = state["cpu_seconds"]

    @property
    def busy(self) -> bool:
        return self._job is not None or self._running

    def _execute(self, fn: Callable[[], Any]) -> tuple[Any, BaseException | None, float]:
        t0 = time.thread_time()
        result, error = None, None
        try:
            result = fn()
        except BaseException as exc:  # reported to the caller, never raised on the worker
            error = exc
        return result, error, time.thread_time() - t0

    def _worker(self) -> None:
        while True:
            with self._cond:
                while self._job is None:
                    self._cond.wait()
                fn, self._job, self._running = self._job, None, True
            done = self._execute(fn)
            with self._cond:
                self._done, self._running = done, False
                self._cond.notify_all()

    def submit(self, fn: Callable[[], Any]) -> bool:
        if self.busy:
            return False
        if not self.background:
            self._done = self._execute(fn)
            return True
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._worker, name="lightning-scaling-refit", daemon=True)
                self._thread.start()
            self._job = fn
            self._cond.notify_all()
        return True

    def poll(self) -> tuple[Any, BaseException | None, float] | None:
        if self._done is None:  # cheap check first: poll runs every step
            return None
        with self._cond:
            done, self._done = self._done, None
        if done is not None:
            self.cpu_seconds += done[2]
        return done

    def wait(self, timeout: float | None = None) -> None:
        """Block until no job is pending or running (at most ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._job is not None or self._running:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                self._cond.wait(remaining)
