"""The monitor's figures as data: plain arrays and numbers, ready to draw anywhere.

:func:`figure_jobs` evaluates the fits and gathers the curve and the panels' own series
(numpy, a few milliseconds) into a job {tag: (kind, kwargs)} that ``figures.render_pngs``
draws, here or in the figure helper process, which then needs neither the fitting code nor
the monitor. No matplotlib here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.compute import project_compute
from . import figures
from .numeric import finite
from .status import headline
from .view import as_view

#: Observed points drawn at most in a figure: more are thinned evenly (the history is already
#: logarithmic in its older part), which keeps a drawing at ~0.05 s.
MAX_FIGURE_POINTS = 1000
#: Points of a fit's curve in a figure.
GRID_POINTS = 120


def to_plot_axis(steps: np.ndarray, compute: np.ndarray | None, step_values: np.ndarray) -> np.ndarray:
    """Optimizer steps -> cumulative compute, through the run's own record (projected past
    its end at the recent compute per step); the steps themselves when ``compute`` is None.

    >>> steps, flops = np.array([1.0, 2.0, 4.0]), np.array([10.0, 20.0, 40.0])
    >>> to_plot_axis(steps, flops, np.array([3.0, 8.0])).tolist()
    [30.0, 80.0]
    >>> to_plot_axis(steps, None, np.array([3.0])).tolist()
    [3.0]
    """
    if compute is None:
        return np.asarray(step_values, dtype=float)
    values = np.atleast_1d(np.asarray(step_values, dtype=float))
    s = np.asarray(steps, dtype=float)
    c = np.asarray(compute, dtype=float)
    good = np.isfinite(s) & np.isfinite(c)
    if not good.any():
        return np.full(values.shape, math.nan)
    s, c = s[good], c[good]
    # project_compute is linear past the record: two of its values give the whole line, instead
    # of one call (two full-array passes) per grid point
    last = float(s[-1])
    at_last = project_compute(s, c, last)
    rate = project_compute(s, c, last + 1.0) - at_last
    return np.where(values <= last, np.interp(values, s, c), at_last + rate * (values - last))


def thin(x: np.ndarray, y: np.ndarray, limit: int = MAX_FIGURE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``limit`` points of (x, y), evenly spaced in index, first and last kept.

    >>> [a.tolist() for a in thin(np.arange(10.0), np.arange(10.0), limit=4)]
    [[0.0, 3.0, 6.0, 9.0], [0.0, 3.0, 6.0, 9.0]]
    """
    if x.size <= limit:
        return x, y
    keep = np.unique(np.linspace(0, x.size - 1, limit).round().astype(int))
    return x[keep], y[keep]


def first_fitted_step(forecast, steps: np.ndarray, arrays: dict) -> float | None:
    """The optimizer step of the first point ``forecast``'s fit used (its ``x_first``)."""
    fit = getattr(forecast, "fit", None)
    x_first = getattr(fit, "x_first", None)
    if not finite(x_first):
        return None
    axis = getattr(forecast, "x_axis", "step")
    if axis == "step":
        return float(x_first)
    c = arrays.get(axis)
    good = np.isfinite(steps) & np.isfinite(c) if c is not None else None
    if good is None or not good.any():
        return None
    return float(np.interp(x_first, c[good], steps[good]))


def fit_curve_on_steps(forecast, arrays: dict, step_grid: np.ndarray, level: float):
    """(trend, lower, upper) of ``forecast``'s fit at the optimizer steps ``step_grid``."""
    fit = forecast.fit
    axis = getattr(forecast, "x_axis", "step")
    x = step_grid if axis == "step" else to_plot_axis(arrays["step"], arrays[axis], step_grid)
    with np.errstate(all="ignore"):
        trend = np.asarray(fit.predict(x), dtype=float)
        lower, upper = (np.asarray(v, dtype=float) for v in fit.interval(x, level=level))
    return trend, lower, upper


def _fit_ok(forecast) -> bool:
    return forecast is not None and bool(getattr(getattr(forecast, "fit", None), "ok", False))


def figure_jobs(monitor: Any, series, final: bool = True) -> dict:
    """The figures as data: {tag: (kind, kwargs)} with kinds from ``figures.FIGURE_KINDS``.
    Plain arrays and numbers only (the fits are evaluated here).

    ``monitor``: a ``ScalingLawMonitor`` or a :class:`~.view.MonitorView` of one; ``series``:
    the sink's ``series.ScalarSeries`` (its points, state and tags). ``final``: the run is over.
    """
    view = as_view(monitor)
    state, tags = series.state, series.tags
    arrays = view.curve()
    steps, loss = arrays["step"], arrays["loss"]
    level = view.level
    name = view.loss_name
    forecast = view.forecast
    planned = view.planned_steps
    end_step = float(planned) if finite(planned) else (float(steps[-1]) if steps.size else 1.0)
    points = series.points
    p_step = np.array([p.step for p in points], dtype=float)
    p_loss = np.array([p.loss for p in points], dtype=float)
    p_trend = np.array([p.trend for p in points], dtype=float)
    has_trend = np.isfinite(p_trend)
    last = points[-1] if points else None

    episode = state.open_episode
    episodes = [(e.since, e.end, f"behind since {e.since:,}" + (f": {e.excess:+.0f}%" if e.end is None and
                finite(e.excess) else f" (peak +{e.peak:.0f}%)")) for e in state.episodes]
    marks = [(m.step, m.kind) for m in state.marks if m.kind in figures.MARKS]

    proj = held = None
    fc = None
    if _fit_ok(forecast) and steps.size:
        start = max(float(getattr(forecast, "step", steps[-1])), 1.0)
        if end_step > start * 1.01:  # still ahead: the newest fit projected to the planned end
            grid = np.linspace(start, end_step, 60)
            proj = (grid, *fit_curve_on_steps(forecast, arrays, grid, level))
        if finite(getattr(forecast, "final_loss", None)) and finite(planned):
            fc = (float(forecast.final_loss), float(forecast.lower), float(forecast.upper))
    if episode is not None and _fit_ok(episode.held):
        grid = np.linspace(float(episode.since), max(end_step, episode.since + 1.0), 60)
        held = (grid, fit_curve_on_steps(episode.held, arrays, grid, level)[0])
    x_first = first_fitted_step(forecast, steps, arrays) if _fit_ok(forecast) else None
    x_start = max(v for v in (x_first or 0.0, 0.1 * end_step, float(p_step.min()) if p_step.size else 0.0))
    title = headline(state, last, forecast, finished=final)
    raw_step, raw_loss = thin(steps, loss)
    target = getattr(forecast, "target_loss", None)
    jobs = {tags.figure_trend: ("trend", {
        "step": p_step, "loss": p_loss, "trend": p_trend if has_trend.any() else None,
        "lower": np.array([p.lower for p in points], dtype=float),
        "upper": np.array([p.upper for p in points], dtype=float),
        "raw_step": raw_step, "raw_loss": raw_loss,
        "proj_step": None if proj is None else proj[0], "proj_trend": None if proj is None else proj[1],
        "proj_lower": None if proj is None else proj[2], "proj_upper": None if proj is None else proj[3],
        "held_step": None if held is None else held[0], "held_trend": None if held is None else held[1],
        "held_label": None if episode is None or episode.held is None else
        f"trend held from step {int(episode.held.step):,} (before the episode)",
        "forecast": fc, "target_step": end_step if finite(planned) else None,
        "target_loss": float(target) if finite(target) else None, "episodes": episodes, "marks": marks,
        "x_start": x_start, "level": level, "loss_label": name, "title": title})}
    jobs[tags.figure_compute] = ("loss_vs_compute", _compute_job(view, arrays, series, forecast, episode, end_step,
                                                                 fc, episodes, marks, x_first, level, name, title))
    return jobs


def _compute_job(view, arrays, series, forecast, episode, end_step, fc, episodes, marks, x_first, level, name, title):
    steps = arrays["step"]
    label, compute = "optimizer steps", None  # the x axis drawn: compute where counted, else steps
    for key, unit in (("flops", "compute (FLOPs)"), ("tokens", "tokens")):
        if np.isfinite(arrays[key]).any():
            label, compute = unit, arrays[key]
            break

    def on_x(step_values):
        return to_plot_axis(steps, compute, np.asarray(step_values, dtype=float))

    x_obs, loss_obs = thin(on_x(steps) if compute is not None else steps, arrays["loss"])
    grid_x = trend = lower = upper = held_x = held_trend = None
    if _fit_ok(forecast) and steps.size:
        first = max(x_first or 1.0, 1.0)
        grid = np.geomspace(first, max(end_step, first * 1.01), GRID_POINTS)
        trend, lower, upper = fit_curve_on_steps(forecast, arrays, grid, level)
        grid_x = on_x(grid)
    if episode is not None and _fit_ok(episode.held):
        grid = np.geomspace(max(float(episode.since), 1.0), max(end_step, episode.since + 1.0), 40)
        held_trend = fit_curve_on_steps(episode.held, arrays, grid, level)[0]
        held_x = on_x(grid)
    points = series.points
    smooth_step = np.array([p.step for p in points], dtype=float)
    planned = view.planned_steps
    return {
        "x": x_obs, "loss": loss_obs, "x_label": label, "loss_label": name,
        "smooth_x": on_x(smooth_step) if points else None,
        "smooth_loss": np.array([p.loss for p in points], dtype=float) if points else None,
        "grid_x": grid_x, "trend": trend, "lower": lower, "upper": upper, "held_x": held_x, "held_trend": held_trend,
        "planned_end": float(on_x([end_step])[0]) if finite(planned) else None, "forecast": fc,
        "episodes": [(float(on_x([s])[0]), None if e is None else float(on_x([e])[0]), text)
                     for s, e, text in episodes],
        "marks": [(float(on_x([s])[0]), kind) for s, kind in marks],
        "level": level, "law": getattr(forecast, "law", None),
        "title": f"{name} vs {label}, log-log: the law over its fitted range",
    }


def figures_for_monitor(monitor: Any, series, final: bool = True) -> dict:
    """The figures drawn in this process: {tag: matplotlib Figure}."""
    return {tag: figures.FIGURE_KINDS[kind](**kwargs)
            for tag, (kind, kwargs) in figure_jobs(monitor, series, final).items()}
