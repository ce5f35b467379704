"""``TrendDetector``: the stateful behind-trend check, composing the window test, the drift
CUSUM, the noise calibration and the reference selection (see the package docstring)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from ...core.plain import plain
from ...errors import InvalidInputError
from .drift import ARL_RUNS, DriftCusum, Limits
from .noise import NoiseCalibration
from .selection import (abrupt_drops, anchor_factor, band_too_wide, choose_reference, crosses_lr_change, predicted,
                        robust_mean, tabulate, warmup_end, within_band)
from .window import Clipper, TrendEnd, TrendEvent, Window, threshold

NORMAL_QUANTILES = {0.9: 1.6449, 0.95: 1.96, 0.8: 1.2816}
"""|N(0, 1)| quantiles (the 0.9 quantile of |x| is the normal's 0.95 quantile)."""

DEFAULT_HORIZON = 10_000
"""Observations a run is assumed to hold when its length is unknown (sizes the CUSUM's threshold)."""


class TrendDetector:
    """Is the run falling behind the trend forecast before its newest observations?

    Each finite observation is checked against a reference fit whose data ended at least
    ``lag`` steps earlier (``selection``; anchored to the loss seen at its data end): the
    window test (``window``) compares the smoothed loss with the reference's band, with a
    threshold that grows with the measured noise (``noise``); the drift CUSUM (``drift``)
    catches slow drifts. ``patience`` positive checks in a row start an episode, reported
    once as a ``TrendEvent``; its end is reported once as a ``TrendEnd``. While checks are
    positive the reference is frozen, so a newer fit cannot absorb the shift being tested;
    an episode ends after ``patience`` negative checks, or ``patience`` checks in a row
    within the band of the newest eligible fit (plus ``drift_level`` for an episode the
    CUSUM started).

    Args:
        patience: consecutive positive checks before an episode starts.
        window: observations in the smoothed loss.
        min_excess: relative margin (0.015 = 1.5% of the expected loss).
        level: the band level.
        z: noise scales allowed above the expected loss.
        lag: the reference's data must end at least this many optimizer steps before the
            observation (settable while running: ``detector.lag = ...``).
        min_calibration: noise samples needed before the first positive check (and ``2 * window``).
        schedule: the LR at every optimizer step (optional); ``lr_change``: the relative change
            of the LR that counts (``selection`` says how both are used).
        drift_level: smallest mean relative excess over the held fit's band for the drift
            CUSUM to fire (0.01 = 1%; None: no CUSUM); ``drift_floor``: its smallest allowance
            (relative); ``drift_quantile``: the quantile of the noise samples that scales it.
        horizon: observations the run will hold (sizes the CUSUM's threshold; settable).
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
        horizon: float | None = None,
    ):
        if int(patience) < 1 or int(window) < 1:
            raise InvalidInputError(f"patience and window must be >= 1, got {patience!r}, {window!r}")
        if not 0 < level < 1:
            raise InvalidInputError(f"level must be in (0, 1), got {level!r}")
        if not 0 < drift_quantile <= 1 or not drift_floor > 0:
            raise InvalidInputError(f"drift_quantile must be in (0, 1] and drift_floor > 0, got {drift_quantile!r}, "
                                    f"{drift_floor!r}")
        self.patience = int(patience)
        self.window = int(window)
        self.min_excess = float(min_excess)
        self.level = float(level)
        self.z = float(z)
        self.lag = float(lag)
        self.min_calibration = int(min_calibration)
        self.lr_change = float(lr_change)
        self.horizon = horizon
        self.observations = Window(self.window)  # [step, x, clipped loss, expected, band_hi]
        self.noise = NoiseCalibration(self.window)
        self.clipper = Clipper()
        self.drift = DriftCusum(self.window, drift_level, drift_floor, drift_quantile)
        self.recent: deque[tuple[int, dict, float]] = deque(maxlen=self._recent_size())
        self.schedule = schedule
        self.reference: Any = None
        self.reference_step: int | None = None
        self.reference_axis = "step"
        self.anchor = (1.0, 0.0)  # (factor, band at the reference's data end)
        self._grid: Any = None  # the reference's band table
        self._fits: deque[tuple] = deque(maxlen=64)  # (data step, fit, axis, table, anchor), oldest first
        self._dirty = True  # a fit was offered since the reference was last chosen
        self._next_select = 0.0
        self._fresh: tuple | None = None  # while frozen: the fit that would be the reference
        self._recovered = 0  # checks in a row within the fresh fit's band, while frozen
        self._limits: Limits | None = None
        self.count = 0
        self.since_step: int | None = None
        self.started_step: int | None = None
        self.behind = False  # an episode is going on
        self.episodes = 0
        self.last_excess_relative = 0.0

    def _recent_size(self) -> int:
        # the observations before a fit's data end that anchor it, and room for a refit's latency
        return 2 * self.window + 256

    def set_window(self, window: int) -> None:
        """Change the smoothing window (the monitor sizes it once the run's length is known)."""
        window = max(1, int(window))
        if window != self.window:
            self.window = window
            self.observations.resize(window)
            self.drift.resize(window)
            self.noise.resize(window)
            self.recent = deque(self.recent, maxlen=self._recent_size())

    @property
    def schedule(self) -> np.ndarray | None:
        return self._schedule

    @schedule.setter
    def schedule(self, lr: np.ndarray | None) -> None:
        self._schedule = None if lr is None else np.asarray(lr, dtype=float)
        self._abrupt = abrupt_drops(self._schedule, self.lr_change)
        self._warmup = warmup_end(self._schedule)

    @property
    def frozen(self) -> bool:
        return self.count > 0 or self.behind

    def noise_scale(self) -> float:
        """Robust spread (MAD) of the misfit of the smoothed relative excess (what the noise of
        single observations does not explain), over past negative checks."""
        return self.noise.scale()

    # -- the reference fit -------------------------------------------------------------------
    def offer_fit(self, fit: Any, data_step: int, axis: str = "step", band: Any = None) -> bool:
        """Offer a new fit (made from data up to ``data_step``, x on ``axis``) as a future reference.

        ``band``: optional ``(x, expected, upper)`` table of the fit (``Forecast.band``), so
        checks interpolate instead of evaluating the fit on the training thread. The fit is
        anchored (``selection.anchor_factor``) to the observations just before ``data_step``.
        """
        if fit is None or not getattr(fit, "ok", False):
            return False
        self._fits.append((int(data_step), fit, str(axis), band,
                           self._anchor_of(fit, int(data_step), str(axis), band)))
        self._dirty = True
        return True

    def _anchor_of(self, fit: Any, data_step: int, axis: str, band: Any = None) -> tuple[float, float]:
        try:
            factor = anchor_factor(fit, axis, data_step, self.recent, 2 * self.window, self.clipper.spread,
                                   self.clipper.noise, band)
            end = [o[1].get(axis, math.nan) for o in self.recent if o[0] <= data_step]
            band0 = 0.0
            if end and math.isfinite(end[-1]):
                mean, hi, _ = tabulate(fit, band, float(end[-1]), self.level)
                band0 = max(0.0, hi / mean - 1.0) if math.isfinite(mean) and mean > 0 and math.isfinite(hi) else 0.0
        except Exception:  # a fit that cannot be evaluated here is tried (and reported) by the checks
            return (1.0, 0.0)
        return (float(factor), float(band0))

    def reset_reference(self) -> None:
        """Forget every fit (one could not be evaluated); checks resume with the next fit."""
        self.reference, self.reference_step, self._grid = None, None, None
        self._fits.clear()
        self.observations.clear()
        self.count, self.behind, self.since_step = 0, False, None
        self.drift.release()
        self.drift.recent.clear()

    def _select_reference(self, step: int, x: dict) -> None:
        self._dirty = False
        chosen, self._next_select = choose_reference(self._fits, step, lag=self.lag, schedule=self._schedule,
                                                     abrupt=self._abrupt, lr_change=self.lr_change,
                                                     warmup=self._warmup)
        if chosen is not None and chosen[1] is not self.reference and (self._too_wide(chosen, x)
                                                                       or not self._earned(chosen)):
            chosen, self._next_select = None, step + 1 + self.window // 4
        if self.frozen and self.reference is not None:
            # keep testing against the frozen reference; the newest eligible fit can end the episode
            self._fresh = chosen if chosen is not None and chosen[1] is not self.reference else None
            return
        if chosen is None and self.reference is not None and not self.frozen:
            if self._too_wide((self.reference_step, self.reference, self.reference_axis, self._grid, self.anchor), x):
                self._drop_reference()
            return
        if chosen is not None and chosen[1] is not self.reference:
            self._adopt(chosen)

    def _too_wide(self, entry: tuple, x: dict) -> bool:
        """Is the band of ``entry`` at the observation ``x`` too wide to test against?"""
        xv = float(x.get(entry[2], math.nan))
        if not math.isfinite(xv):
            return False
        mean, hi, _table = tabulate(entry[1], entry[3], xv, self.level)
        return band_too_wide(mean, hi)

    def _earned(self, entry: tuple) -> bool:
        """Has the fit ``entry`` foreseen the observations that came after its data (the last
        ``window`` of them, the farthest it extrapolated): their robust mean excess over it
        (anchored) no more than a check would allow? A fit that already misses what it was
        not fitted to would make every check a test of its own error (a refit that jumped)."""
        after = [o for o in self.recent if o[0] > entry[0]][-self.window:]
        if len(after) < max(2, self.window // 2):
            return True  # too few to judge: the lag is shorter than the smoothing
        xs = np.array([float(o[1].get(entry[2], math.nan)) for o in after])
        ys = np.array([o[2] for o in after])
        if not np.isfinite(xs).all():
            return True
        expected, hi = predicted(entry, xs, self.level)
        ok = np.isfinite(expected) & (expected > 0)
        if ok.sum() < max(2, self.window // 2):
            return True
        excess = robust_mean(ys[ok] / expected[ok] - 1.0, self.clipper.spread)
        band = float(np.mean(hi[ok] / expected[ok])) - 1.0
        calibrated = len(self.noise.samples) >= max(self.min_calibration, 2 * self.window)
        sigma = self.clipper.noise if math.isfinite(self.clipper.noise) else 0.0
        scale = max(self.noise.scale() if calibrated else 0.0, sigma / math.sqrt(int(ok.sum())))
        offset = max(0.0, self.noise.center()) if calibrated else 0.0
        # before calibration, z noise scales of the mean over these observations
        limit = max(band + self.min_excess, offset + self.z * scale)
        return bool(excess <= limit)

    def _drop_reference(self) -> None:
        self.reference, self.reference_step, self._grid, self.anchor = None, None, None, (1.0, 0.0)
        self.observations.clear()
        self.drift.release()

    def _adopt(self, entry: tuple) -> None:
        self.reference_step, self.reference, self.reference_axis, self._grid, self.anchor = entry
        self._fresh = None
        while self._fits and self._fits[0][0] < self.reference_step:  # older ones are never needed again
            self._fits.popleft()
        if self.reference is not None:
            self.observations.rethreshold(self._band_at)

    def _band_at(self, x: float) -> tuple[float, float]:
        """The reference's expected loss and band upper end at x (anchored), from its cached table."""
        mean, hi, self._grid = tabulate(self.reference, self._grid, x, self.level)
        return mean * self.anchor[0], hi * self.anchor[0]

    def _expected_at(self, xs: np.ndarray) -> np.ndarray:
        return np.array([self._band_at(float(x))[0] for x in xs])

    def _measured_noise(self) -> tuple[float, float, float]:
        """The references' systematic miss, their misfit (the drift quantile of the samples'
        distance from it, less in quadrature what the noise of single observations explains)
        and the noise of one observation, now."""
        sigma = self.clipper.noise if math.isfinite(self.clipper.noise) else 0.0
        # the systematic miss (when positive) plus the quantile a normal of the samples' robust
        # spread has: a few samples far out (checks just after a change of reference) must not
        # set the allowance of every check
        scale = self.noise.scale()
        q = (max(0.0, self.noise.center()) + NORMAL_QUANTILES.get(self.drift.quantile, 1.645) * scale
             if math.isfinite(scale) else math.inf)
        white_q = NORMAL_QUANTILES.get(self.drift.quantile, 1.645) * sigma / math.sqrt(self.window)
        misfit = math.sqrt(max(0.0, q * q - white_q * white_q)) if math.isfinite(q) else math.inf
        return 0.0, misfit, sigma

    def _lr_changed(self, entry: tuple, step: int) -> bool:
        return crosses_lr_change(entry, step, self._schedule, self._abrupt, self.lr_change)

    # -- checks -------------------------------------------------------------------------------
    def observe(self, step: int, x: float | dict, loss: float, check: bool = True) -> TrendEvent | TrendEnd | None:
        """Take one finite observation and (``check``) check it; returns an event when an episode
        starts (``TrendEvent``) or ends (``TrendEnd``).

        ``x`` is the observation's position on the reference fit's axis, or a dict
        ``{"step": ..., "tokens": ..., "flops": ...}`` to pick from. Unchecked observations
        still count towards the noise of one observation and anchor later fits.
        """
        xs = x if isinstance(x, dict) else {"step": float(x), "tokens": float(x), "flops": float(x)}
        self.recent.append((int(step), xs, float(loss)))
        self.clipper.note(loss)
        if not check:
            return None
        if self._dirty or step >= self._next_select:
            self._select_reference(int(step), xs)
        if self.reference is None or (self.reference_step is not None and step <= self.reference_step):
            return None
        xv = float(xs.get(self.reference_axis, math.nan))
        if not math.isfinite(xv):
            return None
        mean, hi = self._band_at(xv)
        clipped = self.clipper(loss, mean)
        self.observations.push(step, xv, clipped, mean, hi)
        stat = self.observations.statistic() if self.observations.full else None
        if stat is None:
            return None
        calibrated = len(self.noise.samples) >= max(self.min_calibration, 2 * self.window)
        center = 0.0
        # the references' systematic miss when they keep expecting less than the loss (a
        # plateau the law does not have): part of how far a check strays on its own
        offset = max(0.0, self.noise.center()) if calibrated else 0.0
        scale = self.noise.scale()
        sigma = self.clipper.noise
        white = sigma / math.sqrt(self.window) if math.isfinite(sigma) else 0.0

        def threshold_of(band: float) -> float:
            return center + threshold(band, min_excess=self.min_excess, z=self.z, scale=max(scale, white),
                                      calibrated=calibrated, offset=offset)

        limit = threshold_of(stat.band)
        self.last_excess_relative = stat.excess - limit if calibrated else 0.0
        if self._fresh is None or not self.frozen:
            self._recovered = 0
        else:
            ended = self._recovers(step, threshold_of, stat, center)
            if ended is not None:
                return ended
        if self.drift.sum <= 0.0 or self._limits is None:
            self._limits = Limits(self._measured_noise, floor=self.drift.floor, level=self.drift.level or 0.0,
                                  window=self.window, arl=ARL_RUNS * float(self.horizon or DEFAULT_HORIZON))
        drifting = (calibrated and not self.behind and self.drift.on and (self.reference_step or 0) >= self.drift.rearm
                    and self.drift.check(int(step), xv, clipped, mean, hi, band_level=self.level,
                                         reference=(self.reference_step, self.reference, self.reference_axis,
                                                    self._grid, self.anchor),
                                         lr_changed=self._lr_changed, limits=self._limits, center=center))
        if drifting:
            return self._drift_episode(step, limit)
        if not calibrated or self.behind or (self.reference_step or 0) < self.drift.rearm:
            self.drift.release()
        # an episode the CUSUM started goes on while the window stays drift_level above the band
        drift_held = (self.drift.episode and self.behind and self.drift.on
                      and stat.expected > 0
                      and stat.excess - max(0.0, stat.band - self.anchor[1]) - center >= self.drift.level)
        if calibrated and (stat.excess > limit or drift_held):
            self.count += 1
            if self.count >= self.patience and not self.behind:
                since = self.observations.onset(self._expected_at)
                return self._start_episode(step, since, stat.smoothed, stat.expected, stat.hi_mean, limit, "window")
            return None
        if not self.frozen:
            # while the drift CUSUM accumulates, what it accumulates is held back from the noise samples
            self.noise.hold(stat.excess, self.window + self.patience, accumulating=not self.drift.sum <= 0.0)
        if self.behind:
            self.count = max(0, min(self.count, self.patience) - 1)
            if self.count == 0:
                return self._end_episode(step, stat.smoothed, stat.expected, "back within the band")
        else:
            self.count = 0
        return None

    def _recovers(self, step: int, threshold_of: Callable[[float], float], stat: Any, center: float
                  ) -> TrendEnd | None:
        """While frozen: ``patience`` checks in a row within the newest eligible fit's band end
        the episode (when one is going on), and that fit becomes the reference."""
        drift_level = self.drift.level
        within = (lambda band: center + band + drift_level) if self.drift.episode else threshold_of
        inside = within_band(self._fresh, self.reference_axis, self.observations, self.level, within)
        self._recovered = self._recovered + 1 if inside else 0
        if self._recovered < self.patience:
            return None
        was_behind = self.behind
        end = self._end_episode(step, stat.smoothed, stat.expected, "the new level became the trend")
        self.count, self._recovered = 0, 0
        self.noise.holding.clear()
        self._adopt(self._fresh)
        return end if was_behind else None

    def _end_episode(self, step: int, smoothed: float, expected: float, how: str) -> TrendEnd | None:
        was_behind, since, started = self.behind, self.since_step, self.started_step
        self.behind, self.since_step, self.started_step = False, None, None
        self.drift.rearm, self.drift.episode = int(step), False
        if not was_behind:
            return None
        return TrendEnd(step=int(step), since_step=int(since if since is not None else step),
                        started_step=int(started if started is not None else step), smoothed_loss=smoothed,
                        expected=expected, reference_step=int(self.reference_step or 0), how=how)

    def _drift_episode(self, step: int, limit: float) -> TrendEvent:
        """The drift CUSUM fired: the episode is judged against the fit it held, from before the drift."""
        held, since = self.drift.held, self.drift.since
        self.drift.release()
        self.drift.recent.clear()
        if held[1] is not self.reference:
            self._adopt(tuple(held))
        onset = self.observations.onset(self._expected_at, not_before=since)
        # the size of the shift: the observations since it began (the last window at most)
        smoothed, expected, hi_mean = self.observations.means_since(onset)
        self.count = max(self.count, self.patience)
        self.drift.episode = True
        return self._start_episode(step, onset, smoothed, expected, hi_mean, limit, "drift")

    def _start_episode(self, step: int, since: int, smoothed: float, expected: float, hi_mean: float,
                       limit: float, kind: str) -> TrendEvent:
        """Mark the run behind its trend and describe it (losses: means over the shifted window)."""
        self.behind = True
        self.since_step, self.started_step = int(since), int(step)
        self.noise.holding.clear()
        self.episodes += 1
        return TrendEvent(step=int(step), since_step=int(since), smoothed_loss=smoothed,
                          threshold=expected * (1 + limit), expected=expected, excess=smoothed - hi_mean,
                          excess_relative=smoothed / expected - 1.0, reference_step=int(self.reference_step or 0),
                          level=self.level, kind=kind)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "reference": None if self.reference is None else plain(self.reference.to_dict()),
            "reference_step": self.reference_step,
            "reference_axis": self.reference_axis,
            "anchor": [float(self.anchor[0]), float(self.anchor[1])],
            # the 16 newest candidates at most: the checkpoint stays small whatever a fit holds
            "fits": [[int(e[0]), plain(e[1].to_dict()), e[2], [float(e[4][0]), float(e[4][1])]]
                     for e in self._fits if e[1] is not self.reference][-16:],
            "window": int(self.window),
            "lag": float(self.lag),
            "obs": self.observations.state_dict(),
            **self.noise.state_dict(),
            "clipper": self.clipper.state_dict(),
            # what anchors the next fits (their data end after the checkpoint)
            "recent": [[int(o[0]), plain(o[1]), float(o[2])] for o in list(self.recent)[-(2 * self.window + 16):]],
            "count": int(self.count),
            "since_step": self.since_step,
            "started_step": self.started_step,
            "behind": bool(self.behind),
            "episodes": int(self.episodes),
            "drift": self.drift.state_dict(self.reference),
        }

    def load_state_dict(self, state: dict[str, Any], fit_from_dict: Callable[[dict], Any]) -> None:
        ref = state.get("reference")
        self.reference = None if ref is None else fit_from_dict(ref)
        self.reference_step = state.get("reference_step")
        self.reference_axis = state.get("reference_axis", "step")
        anchor = state.get("anchor") or [1.0, 0.0]
        self.anchor = (float(anchor[0]), float(anchor[1]))
        fits = []
        for item in state.get("fits", []):
            a = item[3] if len(item) > 3 else [1.0, 0.0]
            fits.append((int(item[0]), fit_from_dict(item[1]), item[2], None, (float(a[0]), float(a[1]))))
        if self.reference is not None:
            fits.append((int(self.reference_step or 0), self.reference, self.reference_axis, None, self.anchor))
        self._fits = deque(sorted(fits, key=lambda t: t[0]), maxlen=64)
        self.window = int(state.get("window", self.window))
        self.lag = float(state.get("lag", self.lag))
        self.observations = Window(self.window, state.get("obs", []))
        self.noise.load_state_dict(state, self.window)
        self.clipper.load_state_dict(state.get("clipper") or {})
        self.recent = deque(((int(o[0]), dict(o[1]), float(o[2])) for o in state.get("recent", [])),
                            maxlen=self._recent_size())
        self._grid = None
        self._dirty = True
        self._limits = None
        self.count = int(state.get("count", 0))
        self.since_step = state.get("since_step")
        self.started_step = state.get("started_step")
        self.behind = bool(state.get("behind", False))
        self.episodes = int(state.get("episodes", 0))
        self.drift.load_state_dict(state.get("drift") or {}, window=self.window, reference=self.reference,
                                   axis=self.reference_axis, fit_from_dict=fit_from_dict)
