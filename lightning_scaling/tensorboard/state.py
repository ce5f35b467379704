"""What the panels derive from the monitor's notifications, on the sink's side.

The sink receives the raw observations, every forecast and the monitor's events (see
``ScalingLawMonitor(sinks=...)``); from them alone it keeps:

- the **smoothed loss**: the mean of the observations of the last 2.5% of the planned run
  (``SMOOTHING_FRACTION``; at least 5 steps, at most 200 observations), the number every
  panel shows as "observed" and the final verdict judges;
- the **trend** it is compared with: the newest forecast whose data ended at least 5% of the
  run earlier (``TREND_LAG_FRACTION``, what the monitor's behind-trend check compares with),
  so that the comparison is a test and not the fit of the same points, and whose forecast is
  informative (``verdict.informative``: early fits' bands would flatten the chart);
- the **episodes** behind the trend: each starts at a behind-trend event and holds the fit
  the run fell behind (the newest forecast made before the episode began, by the onset the
  event gives) until the smoothed loss is back near that fit's trend (``END_LEVEL``,
  ``END_MARGIN``, ``END_AFTER``). A fault the later fits absorb stays visibly above the held
  band, however the monitor's own episode ends;
- the other events (divergence, stop, reference) as marks.

Nothing here writes; ``series.ScalarSeries`` writes what this computes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .numeric import finite

#: Share of the planned run (of the steps so far when the end is unknown) the smoothed loss
#: averages over: the monitor's default behind-trend window.
SMOOTHING_FRACTION = 0.025
#: The smoothed loss averages at least this many steps, and at most this many observations.
MIN_SMOOTHING_STEPS = 5
MAX_SMOOTHING_OBSERVATIONS = 200
#: The trend a step is compared with comes from a fit whose data ended at least this share of
#: the run earlier (the monitor's default ``trend_lag``).
TREND_LAG_FRACTION = 0.05
#: An episode ends when the smoothed loss is back under the held fit's central ``END_LEVEL``
#: band plus ``END_MARGIN`` of the trend (the band and margin the monitor's behind-trend check
#: starts an episode above, by default) for ``END_AFTER`` written points in a row. Its 90%
#: band is too wide for that: a fit made early leaves room for a lasting fault inside it.
END_LEVEL = 0.5
END_MARGIN = 0.015
END_AFTER = 3


@dataclass
class Point:
    """One point of the per-step series: the smoothed loss at ``step`` and where it sits."""

    step: int  #: optimizer step (the newest observation averaged)
    loss: float  #: the smoothed loss (mean over the window)
    raw: float  #: the newest raw loss
    n: int  #: observations averaged
    x: dict  #: mean "step", "tokens", "flops" of the window (NaN when unknown)
    flops: float = math.nan  #: cumulative FLOPs at ``step``
    tokens: float = math.nan  #: cumulative tokens at ``step``
    trend: float = math.nan  #: the trend (mean over the window) and its band
    lower: float = math.nan
    upper: float = math.nan
    behind: float = 0.0  #: % above the trend while behind it, else 0
    trend_step: int | None = None  #: the step the trend's fit was made at


@dataclass
class Episode:
    """The run behind its trend: from ``since`` (the monitor's onset) to ``end`` (None: still)."""

    since: int
    start: int  #: the step of the monitor's event
    held: Any  #: the forecast whose band is held (None: none was made before)
    end: int | None = None
    excess: float = math.nan  #: % above the held trend at the newest point
    peak: float = 0.0  #: largest % above it so far
    messages: list = field(default_factory=list)
    _inside: int = 0

    def covers(self, step: int) -> bool:
        return self.since <= step and (self.end is None or step < self.end)


@dataclass
class Mark:
    """A monitor event as the panels mark it."""

    kind: str  #: "behind_trend", "divergence", "stop", "worse_than_reference", ...
    step: int
    message: str


def forecast_ok(forecast) -> bool:
    """Whether a forecast has a usable fit (its trend can be drawn)."""
    return bool(getattr(getattr(forecast, "fit", None), "ok", False))


class PanelState:
    """The sink's running state (module docstring). Feed it in order: :meth:`observe` every
    observation, :meth:`add_forecast` every forecast, :meth:`on_event` every event; take
    :meth:`point` at the steps to write and :meth:`place` each point before writing it.

    >>> state = PanelState()
    >>> state.configure(planned_steps=400)  # smoothing over 10 steps
    >>> for step in range(1, 21):
    ...     state.observe({"step": step, "loss": float(step % 2)})
    >>> p = state.point()
    >>> p.step, p.loss, p.n
    (20, 0.5, 10)
    """

    def __init__(self):
        self.planned_steps: float | None = None
        self.window_steps: float | None = None
        self._window: deque = deque(maxlen=MAX_SMOOTHING_OBSERVATIONS)  # (step, tokens, flops, loss)
        self._newest: Mapping | None = None
        self.forecasts: list = []  # forecasts with a usable fit, oldest first
        self.all_forecasts: list = []  # every forecast received
        self.episodes: list[Episode] = []
        self.marks: list[Mark] = []

    # -- feeding ----------------------------------------------------------------------------
    def configure(self, planned_steps: float | None) -> None:
        """Fix the smoothing window from the planned last step (None: unknown)."""
        self.planned_steps = float(planned_steps) if finite(planned_steps) and planned_steps > 0 else None
        if self.planned_steps is not None:
            self.window_steps = max(float(MIN_SMOOTHING_STEPS), SMOOTHING_FRACTION * self.planned_steps)

    def observe(self, obs: Mapping[str, Any]) -> None:
        """One observation (``step``, ``loss``, ``tokens``, ``flops``); non-finite losses are
        left out of the smoothing."""
        loss = obs.get("loss")
        if not finite(loss):
            return
        step = float(obs["step"])
        self._window.append((step, _num(obs.get("tokens")), _num(obs.get("flops")), float(loss)))
        self._newest = obs
        span = self.window_steps if self.window_steps is not None else max(
            float(MIN_SMOOTHING_STEPS), SMOOTHING_FRACTION * step)
        while len(self._window) > 1 and self._window[0][0] <= step - span:
            self._window.popleft()

    def add_forecast(self, forecast) -> None:
        self.all_forecasts.append(forecast)
        if forecast_ok(forecast):
            self.forecasts.append(forecast)

    def on_event(self, event: Mapping[str, Any]) -> Episode | None:
        """Record a monitor event; a behind-trend event opens an episode (returned) unless one
        is open (the event is added to it)."""
        kind = str(event.get("kind", "event"))
        step = int(event.get("step") or 0)
        message = str(event.get("message") or kind)
        self.marks.append(Mark(kind, step, message))
        if kind != "behind_trend":
            return None
        episode = self.open_episode
        if episode is not None:
            episode.messages.append(message)
            return None
        detail = event.get("detail") or {}
        since = detail.get("since_step")
        since = int(since) if finite(since) else step
        held = self._held_forecast(detail.get("reference_step"), min(since, step))
        episode = Episode(since=min(since, step), start=step, held=held, messages=[message])
        self.episodes.append(episode)
        return episode

    def _held_forecast(self, reference_step, since: int):
        """The forecast the run fell behind: the newest made before the episode began (the
        most informed one the shift cannot have touched), else the monitor's reference (by the
        step its data ended)."""
        for f in reversed(self.forecasts):
            if f.step < since:
                return f
        if finite(reference_step):
            return next((f for f in reversed(self.forecasts) if int(f.step) == int(reference_step)), None)
        return None

    # -- reading ----------------------------------------------------------------------------
    @property
    def open_episode(self) -> Episode | None:
        return self.episodes[-1] if self.episodes and self.episodes[-1].end is None else None

    def point(self) -> Point | None:
        """The smoothed loss at the newest observation, None before any."""
        if not self._window or self._newest is None:
            return None
        n = len(self._window)
        means = {}
        for i, axis in ((0, "step"), (1, "tokens"), (2, "flops")):
            values = [w[i] for w in self._window if math.isfinite(w[i])]
            means[axis] = sum(values) / len(values) if values else math.nan
        obs = self._newest
        return Point(step=int(obs["step"]), loss=math.fsum(w[3] for w in self._window) / n, raw=float(obs["loss"]),
                     n=n, x=means, flops=_num(obs.get("flops")), tokens=_num(obs.get("tokens")))

    def lag_steps(self, step: float) -> float:
        span = self.planned_steps if self.planned_steps is not None else float(step)
        return TREND_LAG_FRACTION * span

    def trend_forecast(self, step: int):
        """(the forecast whose trend ``step`` is compared with, the episode holding it or None)."""
        episode = next((e for e in reversed(self.episodes) if e.since <= step), None)
        if episode is not None and not episode.covers(step):
            episode = None
        if episode is not None and episode.held is not None:
            return episode.held, episode
        limit = step - self.lag_steps(step)
        for f in reversed(self.forecasts):
            # the trend is read near the fit's data, where its band is narrow even while the
            # forecast at the planned end is still wide; a fit that failed is no trend
            if f.step <= limit and getattr(getattr(f, "fit", None), "ok", False):
                return f, episode
        return None, episode

    def place(self, point: Point, trend: float, lower: float, upper: float, episode: Episode | None,
              end_upper: float = math.nan) -> None:
        """Set ``point``'s trend and band (the trend of :meth:`trend_forecast`) and how far it
        is behind; an episode ends here when the smoothed loss has been under ``end_upper``
        (the held fit's ``END_LEVEL`` band upper end; NaN: ``upper``) plus ``END_MARGIN`` of the
        trend for ``END_AFTER`` points in a row."""
        point.trend, point.lower, point.upper = trend, lower, upper
        point.behind = 0.0
        if episode is None or episode.end is not None or not finite(trend) or trend <= 0:
            return
        excess = 100.0 * (point.loss / trend - 1.0)
        episode.excess = excess
        episode.peak = max(episode.peak, excess)
        limit = (end_upper if finite(end_upper) else upper) + END_MARGIN * trend
        episode._inside = episode._inside + 1 if finite(limit) and point.loss <= limit else 0
        if episode._inside >= END_AFTER:
            episode.end = point.step
            return
        point.behind = max(0.0, excess)


def _num(value) -> float:
    return float(value) if finite(value) else math.nan
