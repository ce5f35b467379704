"""Matplotlib figures of single-run fits (optional dependency: ``pip install lightning-scaling[plots]``).

Figures are built on ``matplotlib.figure.Figure`` without pyplot (no global state, no GUI
backend). Importing this module does not import matplotlib; the functions raise ImportError
when it is missing.
"""

from __future__ import annotations

import numpy as np

MAX_DRAWN_POINTS = 4000
"""Longer histories are thinned (evenly in log x) before drawing, so figures stay light."""


def _thin(x: np.ndarray, y: np.ndarray, n: int = MAX_DRAWN_POINTS):
    if x.size <= n:
        return x, y
    idx = np.unique(np.round(np.geomspace(1, x.size, n)).astype(int) - 1)
    return x[idx], y[idx]


def extrapolate_figure(fit, x, loss, *, at=(), level: float = 0.9, x_label: str = "x",
                       loss_label: str = "loss", title: str | None = None):
    """Log-log figure of one curve: the data, the fitted law, its band and the forecasts.

    Args:
        fit: a ``CurveFit`` (its ``predict`` and ``interval``).
        x, loss: the points that were fitted (all of them; NaN / non-positive are skipped).
        at: x values forecast (drawn as points with error bars).
        level: interval level of the band.
        x_label, loss_label: axis labels, with units (e.g. "tokens", "loss (nats)").
    Returns:
        matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    x = np.asarray(x, dtype=float)
    y = np.asarray(loss, dtype=float)
    good = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    xd, yd = _thin(x[good], y[good])
    at = np.atleast_1d(np.asarray(at, dtype=float))
    at = at[np.isfinite(at) & (at > 0)]

    fig = Figure(figsize=(7.0, 4.6), dpi=100)
    fig.set_layout_engine("constrained")
    ax = fig.subplots()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.plot(xd, yd, ".", ms=3, color="0.55", alpha=0.7, label="data")
    if fit.ok:
        x_lo = float(np.min(xd)) if xd.size else fit.x_first
        x_hi = max([fit.x_last] + list(at)) * 1.05
        grid = np.geomspace(x_lo, x_hi, 300)
        mean = np.asarray(fit.predict(grid))
        lo, hi = (np.asarray(v) for v in fit.interval(grid, level))
        ax.plot(grid, mean, "-", color="C0", lw=1.8, label=f"fit: {fit.law}")
        ax.fill_between(grid, lo, hi, color="C0", alpha=0.2, lw=0, label=f"{level:.0%} band")
        ax.axvline(fit.x_last, color="0.3", lw=0.8, ls=":", label="last fitted point")
        if "warmup" in fit.diagnostics:
            ax.axvline(fit.x_first, color="C3", lw=0.8, ls=":", label="warm-up cut")
        if at.size:
            p = np.asarray(fit.predict(at))
            plo, phi = (np.asarray(v) for v in fit.interval(at, level))
            ax.errorbar(at, p, yerr=[p - plo, phi - p], fmt="o", color="C1", capsize=4,
                        label="forecast")
    else:
        ax.text(0.5, 0.5, f"no fit: {fit.diagnostics.get('reason', '?')}", transform=ax.transAxes,
                ha="center", va="center")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(x_label)
    ax.set_ylabel(loss_label)
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="upper right", fontsize=8)
    return fig
