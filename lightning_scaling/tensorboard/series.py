"""The panels' scalars: the per-step series, the forecasts and parameters, and the layout."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .band import TrendBand, band_at, residual_sigma, tabulate_band
from .layout import PanelTags, axis_unit, build_layout, compute_axis_tag
from .text import finite
from .writing import write_layout, write_scalars


def clean_name(name: str) -> str:
    """``name`` with every character a tag should not hold replaced by "_".

    >>> clean_name("A (scale)")
    'A__scale_'
    """
    return re.sub(r"[^-/\w.]", "_", str(name))


class ScalarSeries:
    """The scalars of the "Scaling law" panels and their layout, at the trainer's global step.

    - every ``every`` optimizer steps (:meth:`observe`): the observed loss, the trend of the
      newest fit at this step with its band, the residual in noise units, cumulative FLOPs
      and tokens, and the loss on a compute step axis (unit chosen at the first observation
      with compute, see ``layout.axis_unit``);
    - at every refit (:meth:`refit`): the forecast of the final loss with its interval and
      the fitted parameters; the layout once, at the first refit that produced a fit.

    The per-step series are buffered and written in batches: at each refit (when the
    monitor's refit thread is idle, so that writing does not wait on the GIL behind it), at
    the end, and when ``max_buffered`` are waiting or ``max_buffer_seconds`` have passed.
    What a user sees is not delayed by it: the SummaryWriter itself reaches the disk every
    120 s.

    Args:
        tags: the tags to write (with the logger's prefix).
        every: optimizer steps between two writes of the per-step series.
        tag_prefix: the logger's prefix with its join character ("" for none), for the
            compute-axis tag.
    """

    def __init__(self, tags: PanelTags, every: int, tag_prefix: str = "", *, max_buffered: int = 64,
                 max_buffer_seconds: float = 30.0):
        self.tags = tags
        self.every = max(1, int(every))
        self.tag_prefix = tag_prefix
        self.max_buffered = int(max_buffered)
        self.max_buffer_seconds = float(max_buffer_seconds)
        self.layout = None  # the layout written, once it is
        self.compute_tag: str | None = None
        self._compute_unit: tuple[str, float, str] | None = None  # (unit, size, "flops"|"tokens")
        self._seen = {"flops": False, "tokens": False}
        self._next_write = 0  # the next optimizer step whose observation is written
        self.due: list[tuple[Mapping[str, Any], Any]] = []  # (observation, newest forecast) to write
        self._last_flush = time.monotonic()
        self._band: TrendBand | None = None  # the newest fit's trend and band, tabulated
        self._last_refit_step: int | None = None

    def is_due(self, step: int) -> bool:
        """Whether the observation at optimizer ``step`` is to be written."""
        return step >= self._next_write

    def observe(self, writer, observations: Iterable[Mapping[str, Any]], forecast, planned_steps) -> None:
        """Buffer the observations that are due (dicts: ``step``, ``loss``, ``flops``,
        ``tokens``) with ``forecast``, the newest; write the buffer when it is full or old."""
        for obs in observations:
            step = int(obs["step"])
            if step < self._next_write:
                continue
            self._next_write = (step // self.every + 1) * self.every
            self.due.append((obs, forecast))
        if len(self.due) >= self.max_buffered or time.monotonic() - self._last_flush >= self.max_buffer_seconds:
            self.flush(writer, planned_steps)

    def flush(self, writer, planned_steps) -> None:
        """Write the buffered per-step series, oldest first, each with the forecast that was
        the newest when it was observed. ``planned_steps``: the planned last optimizer step
        (None: unknown), for the compute axis's unit."""
        due, self.due = self.due, []
        self._last_flush = time.monotonic()
        for obs, forecast in due:
            self._write_observation(writer, obs, forecast, planned_steps)

    def refit(self, writer, step: int, forecast) -> None:
        """Write a new forecast (and the layout, at the first fit) at global ``step``."""
        fit = getattr(forecast, "fit", None)
        ok = bool(getattr(fit, "ok", False))
        if self.layout is None and ok:
            self._write_layout(writer, list(fit.params))
        tags = self.tags
        values = {tags.forecast: forecast.final_loss, tags.forecast_lower: forecast.lower,
                  tags.forecast_upper: forecast.upper}
        if ok:
            values.update({tags.param(clean_name(k)): v for k, v in fit.params.items()})
            # Tabulate the band now, while the monitor's refit thread is idle (done, the next
            # one not yet submitted): evaluated later, in an observation write, the fit's numpy
            # calls would wait on the GIL behind a running refit. Only when a write is due
            # before the next refit is expected, so that refits faster than the writes do not
            # each pay for a table nobody reads.
            gap = step - self._last_refit_step if self._last_refit_step is not None else 0
            if gap <= 0 or self._next_write - step <= gap:
                self._band = tabulate_band(forecast)
            self._last_refit_step = step
        write_scalars(writer, step, values)

    def _write_observation(self, writer, obs, forecast, planned_steps) -> None:
        tags = self.tags
        step = int(obs["step"])
        loss = obs.get("loss")
        values = {tags.observed: loss, tags.flops: obs.get("flops"), tags.tokens: obs.get("tokens")}
        for key in ("flops", "tokens"):
            self._seen[key] = self._seen[key] or finite(obs.get(key))
        fit = getattr(forecast, "fit", None)
        if fit is not None and getattr(fit, "ok", False):
            if self._band is None or self._band.fit is not fit:
                self._band = tabulate_band(forecast)
            axis = getattr(forecast, "x_axis", "step")
            x = float(step) if axis == "step" else obs.get(axis)
            if finite(x) and x > 0:
                level = getattr(forecast, "level", 0.9)
                trend, lo, hi = band_at(self._band, float(x), level)
                values.update({tags.trend: trend, tags.trend_lower: lo, tags.trend_upper: hi})
                values[tags.residual] = residual_sigma(self._band.fit, loss, trend, lo, hi, level)
        write_scalars(writer, step, values)
        if self._compute_unit is None:
            self._choose_compute_unit(obs, planned_steps)
        if self._compute_unit is not None and finite(loss):
            _, size, key = self._compute_unit
            c = obs.get(key)
            if finite(c) and c >= 0 and c / size < 2**62:
                write_scalars(writer, int(c / size), {self.compute_tag: loss})

    def _choose_compute_unit(self, obs, planned_steps) -> None:
        step = float(obs["step"])
        horizon = float(planned_steps) if finite(planned_steps) and planned_steps > step else step * 1000.0
        for key, base in (("flops", "FLOPs"), ("tokens", "tokens")):
            value = obs.get(key)
            if finite(value) and value > 0 and step > 0:
                unit, size = axis_unit(value / step * horizon, base)
                self._compute_unit = (unit, size, key)
                self.compute_tag = self.tag_prefix + compute_axis_tag(unit)
                return

    def _write_layout(self, writer, param_names) -> None:
        names = [clean_name(n) for n in param_names]
        self.layout = build_layout(self.tags, names, self.compute_tag, flops=self._seen["flops"],
                                   tokens=self._seen["tokens"])
        write_layout(writer, self.layout)
