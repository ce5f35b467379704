"""The monitor's figures as data: plain arrays and numbers, ready to draw anywhere.

:func:`figure_jobs` evaluates the fit and gathers the curve (numpy, a few milliseconds) into
a job {tag: (kind, kwargs)} that ``figures.render_pngs`` draws, here or in the figure helper
process, which then needs neither the fitting code nor the monitor. No matplotlib here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.compute import project_compute
from . import figures
from .text import finite
from .view import as_view

#: Observed points drawn at most in a figure: more are thinned evenly (the history is already
#: logarithmic in its older part), which keeps a drawing at ~0.05 s.
MAX_FIGURE_POINTS = 1000

#: Tags of the figures (images) the sink writes.
FIGURE_LOSS_VS_COMPUTE = "scaling/figure/loss_vs_compute"
FIGURE_FORECAST_HISTORY = "scaling/figure/forecast_history"


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


def figure_jobs(monitor: Any, final: bool = True) -> dict:
    """The monitor's figures as data: {tag: (kind, kwargs)} with kinds from
    ``figures.FIGURE_KINDS``. Plain arrays and numbers only (the fit is evaluated here).

    ``monitor``: a ``ScalingLawMonitor`` or a :class:`~.view.MonitorView` of one. ``final``:
    the run is over (the forecast history's line is then the observed final loss).
    """
    view = as_view(monitor)
    arrays = view.curve()
    steps, loss = arrays["step"], arrays["loss"]
    label, compute = "optimizer steps", None  # the x axis drawn: compute where counted, else steps
    for key, name in (("flops", "compute (FLOPs)"), ("tokens", "tokens")):
        if np.isfinite(arrays[key]).any():
            label, compute = name, arrays[key]
            break
    x_obs = steps if compute is None else compute
    forecast = view.forecast
    fit = getattr(forecast, "fit", None)
    level = getattr(forecast, "level", view.level)
    grid_x = trend = lower = upper = None
    planned_end = fc = None
    planned = view.planned_steps
    end_step = float(planned) if finite(planned) else (float(steps[-1]) if steps.size else None)
    if end_step is not None and finite(planned):
        planned_end = float(to_plot_axis(steps, compute, np.array([end_step]))[0])
    if fit is not None and getattr(fit, "ok", False) and steps.size and end_step:
        first = max(float(steps[steps > 0].min()) if (steps > 0).any() else 1.0, 1.0)
        grid_steps = np.geomspace(first, max(end_step, first * 1.01), 120)
        fit_axis = getattr(forecast, "x_axis", "step")
        if fit_axis == "step":
            grid_fit = grid_steps
        else:
            grid_fit = to_plot_axis(steps, arrays[fit_axis], grid_steps)
        grid_x = to_plot_axis(steps, compute, grid_steps)
        with np.errstate(all="ignore"):
            trend = np.asarray(fit.predict(grid_fit), dtype=float)
            lower, upper = (np.asarray(v, dtype=float) for v in fit.interval(grid_fit, level=level))
        if finite(getattr(forecast, "final_loss", None)):
            fc = (forecast.final_loss, forecast.lower, forecast.upper)
    name = view.loss_name
    x_drawn, loss_drawn = thin(np.asarray(x_obs, dtype=float), np.asarray(loss, dtype=float))
    jobs = {
        FIGURE_LOSS_VS_COMPUTE: ("loss_vs_compute", {
            "x": x_drawn, "loss": loss_drawn, "x_label": label, "loss_label": name, "grid_x": grid_x,
            "trend": trend, "lower": lower, "upper": upper, "planned_end": planned_end, "forecast": fc,
            "level": level, "law": getattr(forecast, "law", None), "title": f"{name} vs {label} (log-log)"}),
    }
    history = view.forecasts
    if history:
        observed = view.recent_loss(5)
        jobs[FIGURE_FORECAST_HISTORY] = ("forecast_history", {
            "made_at": [f.step for f in history], "final": [f.final_loss for f in history],
            "lower": [f.lower for f in history], "upper": [f.upper for f in history], "observed_final": observed,
            "loss_label": name, "observed_label": "observed final" if final else "latest observed",
            "target_step": float(planned) if finite(planned) else None, "level": level})
    return jobs


def figures_for_monitor(monitor: Any, final: bool = True) -> dict:
    """The monitor's figures drawn in this process: {tag: matplotlib Figure}."""
    return {tag: figures.FIGURE_KINDS[kind](**kwargs) for tag, (kind, kwargs) in figure_jobs(monitor, final).items()}
