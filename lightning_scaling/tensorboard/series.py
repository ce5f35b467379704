"""The panels' scalars: the per-step series, the forecasts, the parameters, and the layout.

What goes where is in ``layout``'s docstring; what the numbers are is in ``state``'s.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from .band import TrendBand, band_at, tabulate_band
from .layout import (
    RUN_FORECAST,
    RUN_LOWER,
    RUN_OBSERVED,
    RUN_TARGET,
    RUN_TREND,
    RUN_UPPER,
    PanelTags,
    build_layout,
    clean_name,
)
from .numeric import finite
from .state import END_LEVEL, PanelState, Point
from .subruns import SeriesRuns
from .verdict import MAX_INTERVAL_RATIO, informative
from .writing import write_layout, write_scalars

#: Written points kept for the figures: beyond it, every other one is dropped.
MAX_KEPT_POINTS = 4096


class ScalarSeries:
    """The scalars of the panels at the trainer's global step, and their layout.

    - every ``every`` optimizer steps (:meth:`observe`): the smoothed loss, the trend it is
      compared with and its band, how far behind the trend the run is (``state``);
    - at every refit (:meth:`refit`): the forecast of the final loss with its interval (when
      informative, ``verdict.informative``), the target, the fitted parameters; the layout,
      again whenever the law or its parameters change.

    The per-step points are buffered and written in batches: at each refit (the monitor's
    refit thread is idle then, so that writing does not wait on the GIL behind it), at the
    end, and when ``max_buffered`` are waiting or ``max_buffer_seconds`` have passed.

    Args:
        tags: the tags to write (with the logger's prefix).
        every: optimizer steps between two points of the per-step series.
        runs: the series' own runs (``subruns.SeriesRuns``).
        state: the sink's state (``state.PanelState``), fed here with the observations and
            forecasts.
    """

    def __init__(self, tags: PanelTags, every: int, runs: SeriesRuns, state: PanelState, *, max_buffered: int = 64,
                 max_buffer_seconds: float = 30.0):
        self.tags = tags
        self.every = max(1, int(every))
        self.runs = runs
        self.state = state
        self.max_buffered = int(max_buffered)
        self.max_buffer_seconds = float(max_buffer_seconds)
        self.layout = None  # the layout written, once it is
        self.layout_key: tuple | None = None  # (law, parameter names, level, planned end) of the layout
        self.points: list[Point] = []  # the points written, oldest first (thinned past MAX_KEPT_POINTS)
        self.due: list[Point] = []
        self._next_write = 0  # the next optimizer step whose point is written
        self._last_flush = time.monotonic()
        self._bands: OrderedDict[tuple, TrendBand] = OrderedDict()  # (id(forecast), level) -> its band
        self._written_forecasts = 0
        self._last_forecast_step = -1
        self._layout_step = -1

    @property
    def last_point(self) -> Point | None:
        return self.points[-1] if self.points else None

    def is_due(self, step: int) -> bool:
        """Whether the point at optimizer ``step`` is to be written."""
        return step >= self._next_write

    def observe(self, observations: Iterable[Mapping[str, Any]], planned_steps) -> None:
        """Feed the observations (dicts: ``step``, ``loss``, ``flops``, ``tokens``) to the state
        and buffer a point at each due step; write the buffer when it is full or old."""
        state = self.state
        if state.window_steps is None and finite(planned_steps):
            state.configure(planned_steps)
        for obs in observations:
            state.observe(obs)
            step = int(obs["step"])
            if step >= self._next_write and finite(obs.get("loss")):
                self._next_write = (step // self.every + 1) * self.every
                point = state.point()
                if point is not None:
                    self.due.append(point)
        if len(self.due) >= self.max_buffered or time.monotonic() - self._last_flush >= self.max_buffer_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered points, oldest first."""
        due, self.due = self.due, []
        self._last_flush = time.monotonic()
        for point in due:
            self._write_point(point)

    def finish(self) -> Point | None:
        """The end of training: a point at the newest observation (unless written), everything
        buffered written; returns the last point."""
        point = self.state.point()
        last = self.due[-1] if self.due else self.last_point
        if point is not None and (last is None or last.step < point.step):
            self.due.append(point)
        self.flush()
        self.runs.flush()
        return self.last_point

    def refit(self, writer, step: int, forecast, level: float) -> None:
        """Write a new forecast (and the layout, when the law changed) at global ``step``."""
        self.state.add_forecast(forecast)
        fit = getattr(forecast, "fit", None)
        ok = bool(getattr(fit, "ok", False))
        tags, runs = self.tags, self.runs
        made = int(getattr(forecast, "step", step))
        if made > self._last_forecast_step and informative(forecast):
            self._write_forecast(made, forecast.final_loss, forecast.lower, forecast.upper)
        target = getattr(forecast, "target_loss", None)
        if finite(target) and made > self._last_forecast_step:
            runs.write(RUN_TARGET, made, {tags.forecast: target, tags.margin_forecast: target,
                                          tags.margin_forecast_lower: target, tags.margin_forecast_upper: target})
        self._last_forecast_step = max(self._last_forecast_step, made)
        if ok:
            law = str(getattr(forecast, "law", None) or getattr(fit, "law", "law"))
            names = [clean_name(k) for k in fit.params]
            key = (law, tuple(names), float(level), getattr(forecast, "target_step", None))
            if key != self.layout_key:
                self._write_layout(writer, key, step)
            write_scalars(writer, step, {tags.param(law, k): v for k, v in fit.params.items()})

    def ensure_forecast_written(self) -> None:
        """At the end: the forecast chart gets the newest finite forecast when none was
        informative enough to be drawn (so that it is never empty)."""
        if self._written_forecasts:
            return
        usable = [f for f in self.state.all_forecasts if finite(getattr(f, "final_loss", None))]
        if usable:
            f = usable[-1]
            self._write_forecast(int(f.step), f.final_loss, f.lower, f.upper)

    # -- writing ---------------------------------------------------------------------------
    def _write_forecast(self, step: int, final, lower, upper) -> None:
        tags, runs = self.tags, self.runs
        runs.write(RUN_FORECAST, step, {tags.forecast: final, tags.margin_forecast: final,
                                        tags.margin_forecast_lower: lower, tags.margin_forecast_upper: upper})
        runs.write(RUN_UPPER, step, {tags.forecast: upper})
        runs.write(RUN_LOWER, step, {tags.forecast: lower})
        self._written_forecasts += 1

    def _write_layout(self, writer, key: tuple, step: int) -> None:
        law, names, level, target_step = key
        self.layout = build_layout(self.tags, law, names, level=level, target_step=target_step)
        # each layout at a later step than the last: TensorBoard shows a run's newest one
        self._layout_step = max(int(step), self._layout_step + 1)
        write_layout(writer, self.layout, self._layout_step)
        self.layout_key = key

    def _band(self, forecast, level: float | None = None) -> TrendBand:
        key = (id(forecast), level)
        band = self._bands.get(key)
        if band is None or band.fit is not forecast.fit:
            band = self._bands[key] = tabulate_band(forecast, level=level)
            while len(self._bands) > 6:
                self._bands.popitem(last=False)
        return band

    def _write_point(self, point: Point) -> None:
        tags, runs, state = self.tags, self.runs, self.state
        forecast, episode = state.trend_forecast(point.step)
        if forecast is not None:
            axis = getattr(forecast, "x_axis", "step")
            x = point.x.get(axis)
            trend = lo = hi = math.nan
            if finite(x) and x > 0:
                trend, lo, hi = band_at(self._band(forecast), float(x), getattr(forecast, "level", 0.9))
            # a band this wide at the point (an early fit far from its data) is no trend to draw
            if finite(lo) and lo > 0 and hi / lo <= MAX_INTERVAL_RATIO:
                point.trend_step = int(forecast.step)
                end_upper = math.nan
                if episode is not None and episode.held is forecast:  # the central band it must return to
                    end_upper = band_at(self._band(forecast, END_LEVEL), float(x), END_LEVEL)[2]
                state.place(point, trend, lo, hi, episode, end_upper)
        # behind is 0 without a trend to be behind (the monitor cannot warn then either)
        observed = {tags.loss: point.loss, tags.margin_loss: point.loss, tags.margin_loss_lower: point.loss,
                    tags.margin_loss_upper: point.loss, tags.behind: point.behind}
        if finite(point.trend):
            runs.write(RUN_TREND, point.step, {tags.loss: point.trend, tags.margin_loss: point.trend,
                                               tags.margin_loss_lower: point.lower,
                                               tags.margin_loss_upper: point.upper})
            runs.write(RUN_UPPER, point.step, {tags.loss: point.upper})
            runs.write(RUN_LOWER, point.step, {tags.loss: point.lower})
        runs.write(RUN_OBSERVED, point.step, observed)
        self.points.append(point)
        if len(self.points) > MAX_KEPT_POINTS:
            self.points = self.points[:-1:2] + [self.points[-1]]
