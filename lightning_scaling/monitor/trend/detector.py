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
from .drift import DriftCusum
from .noise import NoiseCalibration, log_distance
from .selection import abrupt_drops, choose_reference, lr_changed, tabulate, within_band
from .window import TrendEvent, Window, threshold


class TrendDetector:
    """Is the run falling behind the trend forecast before its newest observations?

    Each finite observation is checked against a reference fit whose data ended at least
    ``lag`` steps earlier (``selection``): the window test (``window``) compares the smoothed
    loss with the reference's band, with a threshold that grows with the measured noise
    (``noise``); the drift CUSUM (``drift``) catches slow drifts. ``patience`` positive checks
    in a row start an episode, reported once as a ``TrendEvent``. While checks are positive
    the reference is frozen, so a newer fit cannot absorb the shift being tested; an episode
    ends after ``patience`` negative checks, or ``patience`` checks in a row within the band
    of the newest eligible fit (plus ``drift_level`` for an episode the CUSUM started).

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
        self.observations = Window(self.window)  # [step, x, loss, expected, band_hi]
        self.noise = NoiseCalibration(self.window)
        self.drift = DriftCusum(self.window, drift_level, drift_floor, drift_quantile)
        self.schedule = schedule
        self.reference: Any = None
        self.reference_step: int | None = None
        self.reference_axis = "step"
        self._grid: Any = None  # the reference's band table
        self._fits: deque[tuple] = deque(maxlen=64)  # (data step, fit, x axis, band table), oldest first
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
            self.observations.resize(window)
            self.drift.resize(window)
            self.noise.resize(window)

    @property
    def schedule(self) -> np.ndarray | None:
        return self._schedule

    @schedule.setter
    def schedule(self, lr: np.ndarray | None) -> None:
        self._schedule = None if lr is None else np.asarray(lr, dtype=float)
        self._abrupt = abrupt_drops(self._schedule, self.lr_change)

    @property
    def frozen(self) -> bool:
        return self.count > 0 or self.behind

    def noise_scale(self) -> float:
        """Robust spread (MAD) of the smoothed relative excess per unit of log-extrapolation
        distance, over past negative checks."""
        return self.noise.scale()

    # -- the reference fit -------------------------------------------------------------------
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
        self.observations.clear()
        self.count, self.behind, self.since_step = 0, False, None
        self.drift.release()
        self.drift.recent.clear()

    def _select_reference(self, step: int) -> None:
        self._dirty = False
        chosen, self._next_select = choose_reference(self._fits, step, lag=self.lag, schedule=self._schedule,
                                                     abrupt=self._abrupt, lr_change=self.lr_change)
        if self.frozen and self.reference is not None:
            # keep testing against the frozen reference; the newest eligible fit can end the episode
            self._fresh = chosen if chosen is not None and chosen[1] is not self.reference else None
            return
        if chosen is not None and chosen[1] is not self.reference:
            self._adopt(chosen)

    def _adopt(self, entry: tuple) -> None:
        self.reference_step, self.reference, self.reference_axis, self._grid = entry
        self._fresh = None
        while self._fits and self._fits[0][0] < self.reference_step:  # older ones are never needed again
            self._fits.popleft()
        if self.reference is not None:
            self.observations.rethreshold(self._band_at)

    def _band_at(self, x: float) -> tuple[float, float]:
        """The reference's expected loss and band upper end at x, from its cached table."""
        mean, hi, self._grid = tabulate(self.reference, self._grid, x, self.level)
        return mean, hi

    def _lr_changed(self, data_step: int, step: int) -> bool:
        return lr_changed(self._schedule, data_step, step, self.lr_change)

    # -- checks -------------------------------------------------------------------------------
    def observe(self, step: int, x: float | dict, loss: float) -> TrendEvent | None:
        """Check one finite observation; returns an event when an episode starts.

        ``x`` is the observation's position on the reference fit's axis, or a dict
        ``{"step": ..., "tokens": ..., "flops": ...}`` to pick from.
        """
        if self._dirty or step >= self._next_select:
            self._select_reference(int(step))
        if self.reference is None or (self.reference_step is not None and step <= self.reference_step):
            return None
        x = float(x.get(self.reference_axis, math.nan) if isinstance(x, dict) else x)
        if not math.isfinite(x):
            return None
        mean, hi = self._band_at(x)
        self.observations.push(step, x, loss, mean, hi)
        stat = self.observations.statistic() if self.observations.full else None
        if stat is None:
            return None
        distance = log_distance(self.observations.middle(step), self.reference_step)
        scale = self.noise.scale() * distance
        calibrated = len(self.noise.samples) >= max(self.min_calibration, 2 * self.window)

        def threshold_of(band: float) -> float:
            return threshold(band, min_excess=self.min_excess, z=self.z, scale=scale, calibrated=calibrated)

        limit = threshold_of(stat.band)
        self.last_excess_relative = stat.excess - limit if calibrated else 0.0
        if self._fresh is None or not self.frozen:
            self._recovered = 0
        elif self._recovers(step, threshold_of):
            return None
        drifting = (calibrated and not self.behind and self.drift.on and (self.reference_step or 0) >= self.drift.rearm
                    and self.drift.check(int(step), x, float(loss), mean, hi, band_level=self.level,
                                         reference=(self.reference_step, self.reference, self.reference_axis, self._grid),
                                         lr_changed=self._lr_changed, noise_quantile=self.noise.abs_quantile))
        if drifting:
            return self._drift_episode(step, limit)
        if not calibrated or self.behind or (self.reference_step or 0) < self.drift.rearm:
            self.drift.release()
        # an episode the CUSUM started goes on while the window stays drift_level above the band
        drift_held = (self.drift.episode and self.behind and self.drift.on
                      and stat.hi_mean > 0 and stat.smoothed / stat.hi_mean - 1.0 >= self.drift.level)
        if calibrated and (stat.excess > limit or drift_held):
            if self.count == 0:
                self.since_step = self.observations.onset(limit)
            self.count += 1
            if self.count >= self.patience and not self.behind:
                since = self.since_step if self.since_step is not None else step
                return self._start_episode(step, since, stat.smoothed, stat.expected, stat.hi_mean, limit)
            return None
        if not self.frozen:
            # while the drift CUSUM accumulates, what it accumulates is held back from the noise samples
            self.noise.hold(stat.excess / distance, self.window + self.patience, accumulating=not self.drift.sum <= 0.0)
        if self.behind:
            self.count = max(0, min(self.count, self.patience) - 1)
            if self.count == 0:
                self.behind = False
                self.since_step = None
                self.drift.rearm, self.drift.episode = int(step), False
        else:
            self.count = 0
            self.since_step = None
        return None

    def _recovers(self, step: int, threshold_of: Callable[[float], float]) -> bool:
        """While frozen: ``patience`` checks in a row within the newest eligible fit's band end
        the episode, and that fit becomes the reference."""
        drift_level = self.drift.level
        within = (lambda band: band + drift_level) if self.drift.episode else threshold_of
        inside = within_band(self._fresh, self.reference_axis, self.observations, self.level, within)
        self._recovered = self._recovered + 1 if inside else 0
        if self._recovered < self.patience:
            return False
        self.count, self.behind, self.since_step, self._recovered = 0, False, None, 0
        self.drift.rearm, self.drift.episode = int(step), False
        self.noise.holding.clear()
        self._adopt(self._fresh)
        return True

    def _drift_episode(self, step: int, limit: float) -> TrendEvent:
        """The drift CUSUM fired: the episode is judged against the fit it held, from before the drift."""
        held, since = self.drift.held, self.drift.since
        self.drift.release()
        self.drift.recent.clear()
        if held[1] is not self.reference:
            self._adopt(tuple(held))
        # the size of the shift: the observations since the sum left zero (the last window at most)
        smoothed, expected, hi_mean = self.observations.means_since(since)
        self.count, self.since_step = max(self.count, self.patience), since
        self.drift.episode = True
        return self._start_episode(step, since, smoothed, expected, hi_mean, limit)

    def _start_episode(self, step: int, since: int, smoothed: float, expected: float, hi_mean: float,
                       limit: float) -> TrendEvent:
        """Mark the run behind its trend and describe it (losses: means over the shifted window)."""
        self.behind = True
        self.noise.holding.clear()
        self.episodes += 1
        return TrendEvent(step=int(step), since_step=int(since), smoothed_loss=smoothed,
                          threshold=expected * (1 + limit), expected=expected, excess=smoothed - hi_mean, excess_relative=smoothed / expected - 1.0,
                          reference_step=int(self.reference_step or 0), level=self.level)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "reference": None if self.reference is None else plain(self.reference.to_dict()),
            "reference_step": self.reference_step,
            "reference_axis": self.reference_axis,
            # the 16 newest candidates at most: the checkpoint stays small whatever a fit holds
            "fits": [[int(e[0]), plain(e[1].to_dict()), e[2]] for e in self._fits if e[1] is not self.reference][-16:],
            "window": int(self.window),
            "lag": float(self.lag),
            "obs": self.observations.state_dict(),
            **self.noise.state_dict(),
            "count": int(self.count),
            "since_step": self.since_step,
            "behind": bool(self.behind),
            "episodes": int(self.episodes),
            "drift": self.drift.state_dict(self.reference),
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
        self.observations = Window(self.window, state.get("obs", []))
        self.noise.load_state_dict(state, self.window)
        self._grid = None
        self._dirty = True
        self.count = int(state.get("count", 0))
        self.since_step = state.get("since_step")
        self.behind = bool(state.get("behind", False))
        self.episodes = int(state.get("episodes", 0))
        self.drift.load_state_dict(state.get("drift") or {}, window=self.window, reference=self.reference,
                                   axis=self.reference_axis, fit_from_dict=fit_from_dict)
