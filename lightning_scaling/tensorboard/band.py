"""A fit's trend and band, tabulated once, read at each step the panels write.

A fit evaluation costs about the same for 1 point as for 96 (a schedule-aware mixture:
~1 ms), so the band is tabulated once per refit on a log grid, and each per-step series
written until the next refit costs an interpolation.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .numeric import finite

#: Points of the tabulated band (a log grid of the fit's axis).
BAND_POINTS = 96


class TrendBand(NamedTuple):
    """A fit's trend and ``level`` band tabulated on a log grid of its x axis."""

    fit: Any  #: the CurveFit tabulated (the band belongs to it)
    log_x: np.ndarray  #: natural log of the grid's x (the fit's axis: steps, tokens or FLOPs)
    trend: np.ndarray  #: expected loss at each x (loss units)
    lower: np.ndarray  #: lower end of the band at each x
    upper: np.ndarray  #: upper end of the band at each x


def tabulate_band(forecast, points: int = BAND_POINTS, level: float | None = None) -> TrendBand:
    """The forecast's fit tabulated from its first point to the planned end (if the end is
    unknown: to 1.5x past its last point, or twice its first, whichever is furthest). Not past
    a known end: a schedule-aware fit knows the LR up to the end only, and a grid point past
    it (NaN) would spoil the interpolation below it.

    Reads of ``forecast``: ``fit`` (``x_first``, ``x_last``, ``predict``, ``interval``),
    ``x_axis``, ``target_step``/``target_tokens``/``target_flops``, ``level`` (the band's,
    unless ``level`` is given).
    """
    fit = forecast.fit
    axis = getattr(forecast, "x_axis", "step")
    end = {"step": forecast.target_step, "tokens": getattr(forecast, "target_tokens", None),
           "flops": getattr(forecast, "target_flops", None)}.get(axis)
    first = fit.x_first if finite(fit.x_first) and fit.x_first > 0 else 1.0
    if finite(end) and end > first:
        last = float(end)
    else:
        last = 1.5 * max(v for v in (fit.x_last, first * 2.0) if finite(v))
    grid = np.geomspace(first, last, points)
    level = level if level is not None else getattr(forecast, "level", 0.9)
    with np.errstate(all="ignore"):
        trend = np.asarray(fit.predict(grid), dtype=float)
        lo, hi = (np.asarray(v, dtype=float) for v in fit.interval(grid, level=level))
    return TrendBand(fit, np.log(grid), trend, lo, hi)


def band_at(band: TrendBand, x: float, level: float) -> tuple[float, float, float]:
    """(trend, lower, upper) at ``x`` (> 0): interpolated in log x inside the table, the fit
    evaluated directly outside it.

    >>> class Line:  # a stand-in fit: loss 1/x, band +-10%
    ...     def predict(self, x): return 1 / np.asarray(x)
    ...     def interval(self, x, level): return 0.9 / np.asarray(x), 1.1 / np.asarray(x)
    >>> grid = np.geomspace(1, 100, 5)
    >>> band = TrendBand(Line(), np.log(grid), 1 / grid, 0.9 / grid, 1.1 / grid)
    >>> [round(v, 3) for v in band_at(band, 10.0, 0.9)]
    [0.1, 0.09, 0.11]
    >>> [round(v, 4) for v in band_at(band, 1000.0, 0.9)]  # past the table
    [0.001, 0.0009, 0.0011]
    """
    lx = math.log(x)
    log_x = band.log_x
    if log_x[0] <= lx <= log_x[-1]:
        return (float(np.interp(lx, log_x, band.trend)), float(np.interp(lx, log_x, band.lower)),
                float(np.interp(lx, log_x, band.upper)))
    lo_x, hi_x = band.fit.interval(x, level=level)
    return float(band.fit.predict(x)), float(lo_x), float(hi_x)
