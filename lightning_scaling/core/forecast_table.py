"""The forecast table of a grid-posterior fit: what ``CurveFit.predict`` and ``interval`` read.

A forecaster fit (``core.forecaster``) computes its forecast (the posterior median) and the
interval's sds exactly at a set of knots from the last seen x to the horizon (the schedule's
last step; without a schedule up to ``FAR`` times the last seen x). The table stores, per knot,
the log ratio of the median to the fit's main law (its heaviest posterior node, the law and
parameters ``CurveFit.params`` name) and the two interval sds (log loss, below and above).
Between knots the ratio and sds are interpolated, so a forecast keeps the main law's shape
(an LR decay's kink included) and equals the median at every knot; before the first knot and
beyond the last they are held.

Without a schedule the main law falls strictly, and the ratio is interpolated in log of the
main law's value instead of log x (axis "log_law"): then the forecast falls wherever the
median falls at the knots.
"""

from __future__ import annotations

import numpy as np

FAR = 1e4
"""Without a schedule the table reaches this many times the last seen x."""

N_GEOM, N_LINEAR = 12, 13
"""Knots spaced evenly in log x and in x (with a schedule) between the last seen x and the
horizon; without a schedule ``N_GEOM + N_LINEAR`` knots evenly in log x."""


def knots(x_last: float, horizon: float | None) -> np.ndarray:
    """Table knots from the last seen x to the horizon (None: no schedule, ``FAR`` x_last)."""
    if horizon is None:
        return np.geomspace(x_last, FAR * x_last, N_GEOM + N_LINEAR)
    if horizon <= x_last:
        return np.array([float(x_last)])
    pts = np.concatenate([np.geomspace(x_last, horizon, N_GEOM), np.linspace(x_last, horizon, N_LINEAR)])
    return np.unique(pts)


def make_table(x, log_ratio, sd_below, sd_above, axis_values=None) -> dict:
    """The JSON-safe table; ``axis_values``: the main law's value at each knot when the ratio is
    to be interpolated in log of it (strictly decreasing values), else None (log x)."""
    table = {"x": [float(v) for v in x], "log_ratio": [float(v) for v in log_ratio],
             "sd_below": [float(v) for v in sd_below], "sd_above": [float(v) for v in sd_above],
             "axis": "log_x"}
    if axis_values is not None:
        av = np.asarray(axis_values, dtype=float)
        if av.size > 1 and np.all(av > 0) and np.all(np.diff(av) < 0):
            table["axis"] = "log_law"
            table["law_at_knots"] = [float(v) for v in av]
    return table


def table_at(table: dict, x: np.ndarray, law_values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log_ratio, sd_below, sd_above) at x (caller units), given the main law's values there."""
    kx = np.asarray(table["x"], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if table.get("axis") == "log_law":
            # decreasing in x: interpolate on -log(law value), increasing
            pos = -np.log(np.asarray(table["law_at_knots"], dtype=float))
            at = -np.log(np.where(law_values > 0, law_values, np.nan))
            beyond = x > kx[-1]
            at = np.where(beyond, pos[-1], np.where(x < kx[0], pos[0], at))
        else:
            pos = np.log(kx)
            at = np.log(np.maximum(x, 1e-300))
    out = [np.interp(at, pos, np.asarray(table[k], dtype=float)) for k in ("log_ratio", "sd_below", "sd_above")]
    out = [np.where(np.isfinite(at), o, np.nan) for o in out]
    return out[0], out[1], out[2]
