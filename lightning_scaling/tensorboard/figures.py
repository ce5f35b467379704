"""Figures of the trend panels and of ``lightning-scaling report`` (matplotlib, optional).

The functions take plain arrays (the caller evaluates the fit), draw on a
``matplotlib.figure.Figure`` without pyplot (no global state, no GUI backend, safe in a
training process) and return it; :func:`figure_to_rgb` renders one to an image array for
TensorBoard, :func:`figure_to_png` to PNG bytes, :func:`save_png` to a file.
:func:`render_pngs` draws a job, {tag: (kind, kwargs)} with kinds from ``FIGURE_KINDS``.

matplotlib and Pillow are imported where a figure is drawn: they are optional, and their
import (about 0.3 CPU s) is paid only where something draws. This file is also loaded by its
path, without the package, in the figure helper process (``helper.py``): it imports nothing
of the package (numpy, matplotlib and Pillow only).
"""

from __future__ import annotations

import importlib.util
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def matplotlib_available() -> bool:
    """True when matplotlib can be imported (the ``plots`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float = 6.4, height: float = 4.0, dpi: int = 100, *, fixed_margins: bool = False):
    """A pyplot-free Figure. ``fixed_margins``: fixed subplot margins (fit for one axes with
    short labels) instead of the constrained layout, which measures every text twice and
    makes a drawing about 40% slower."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    if fixed_margins:
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92)
    else:
        fig.set_layout_engine("constrained")
    return fig


def figure_to_rgb(fig) -> np.ndarray:
    """Render ``fig`` to an (H, W, 3) uint8 array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def figure_to_png(fig) -> tuple[bytes, int, int]:
    """Render ``fig`` to (PNG bytes, height, width in pixels), as a 128-colour palette PNG.

    A line plot has few colours: the palette image looks the same and is a third of the RGB
    one's size (~13 kB vs ~40 kB), which matters because TensorBoard's event writer checksums
    every record in pure Python (on its own thread, but holding the GIL: ~0.1 ms per kB).
    """
    from PIL import Image

    rgb = figure_to_rgb(fig)
    buffer = io.BytesIO()
    Image.fromarray(rgb).quantize(128, method=Image.Quantize.FASTOCTREE).save(buffer, format="png")
    return buffer.getvalue(), int(rgb.shape[0]), int(rgb.shape[1])


def save_png(fig, path: str) -> None:
    """Write ``fig`` as a PNG file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")


def _positive(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)


def loss_vs_compute_figure(
    x: Sequence[float],
    loss: Sequence[float],
    *,
    x_label: str,
    loss_label: str = "loss",
    grid_x: Sequence[float] | None = None,
    trend: Sequence[float] | None = None,
    lower: Sequence[float] | None = None,
    upper: Sequence[float] | None = None,
    planned_end: float | None = None,
    forecast: tuple[float, float, float] | None = None,
    level: float | None = None,
    law: str | None = None,
    title: str = "Loss vs compute",
):
    """Observed loss against compute on log-log axes, with the fitted law, its band and the
    planned end of the run.

    Args:
        x, loss: observed points (x in the unit named by ``x_label``, e.g. "FLOPs").
        grid_x, trend, lower, upper: the fitted law and its band evaluated on ``grid_x``
            (same x unit), reaching out to the planned end.
        planned_end: x where the run is planned to stop (a vertical line).
        forecast: (final, lower, upper) loss forecast at ``planned_end`` (a point with bars).
    """
    fig = _figure(fixed_margins=True)
    ax = fig.add_subplot()
    x = np.asarray(x, dtype=float)
    loss = np.asarray(loss, dtype=float)
    ok = _positive(x, loss)
    ax.plot(x[ok], loss[ok], ".", ms=3, color="tab:blue", alpha=0.6, label=f"observed {loss_label}")
    if grid_x is not None and trend is not None:
        gx = np.asarray(grid_x, dtype=float)
        ty = np.asarray(trend, dtype=float)
        good = _positive(gx, ty)
        ax.plot(gx[good], ty[good], "-", color="tab:orange", lw=1.5, label=f"fitted law ({law or 'fit'})")
        if lower is not None and upper is not None:
            lo = np.asarray(lower, dtype=float)
            hi = np.asarray(upper, dtype=float)
            band = good & np.isfinite(lo) & np.isfinite(hi) & (lo > 0)
            pct = f"{100 * level:.0f}% " if level else ""
            ax.fill_between(gx[band], lo[band], hi[band], color="tab:orange", alpha=0.2,
                            lw=0, label=f"{pct}band")
    if planned_end is not None and math.isfinite(planned_end) and planned_end > 0:
        ax.axvline(planned_end, color="0.4", ls="--", lw=1, label="planned end")
        if forecast is not None and all(v is not None and math.isfinite(v) for v in forecast):
            final, lo, hi = forecast
            ax.errorbar([planned_end], [final], yerr=[[max(final - lo, 0)], [max(hi - final, 0)]],
                        fmt="o", color="tab:red", ms=4, capsize=3, label=f"forecast {final:.4g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_labels(ax)
    ax.set_xlabel(x_label)
    ax.set_ylabel(loss_label)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def _plain_log_labels(ax) -> None:
    """Tick labels of log axes as plain text ("1e+10", "3"): the default mathtext labels
    ($10^{10}$) are parsed by pyparsing, about a quarter of a drawing's time."""
    from matplotlib import ticker

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ticker.LogFormatter(labelOnlyBase=False))
        axis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    # compute spans decades: minor ticks at 2x and 5x only (each tick is several artists; the
    # default 8 a decade make a quarter of the drawing time)
    ax.xaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))


def forecast_history_figure(
    made_at: Sequence[float],
    final: Sequence[float],
    lower: Sequence[float],
    upper: Sequence[float],
    *,
    observed_final: float | None = None,
    observed_label: str = "observed final",
    loss_label: str = "loss",
    target_step: float | None = None,
    level: float | None = None,
):
    """The forecast final loss (and its interval) against the step the forecast was made at;
    a horizontal line at the observed final loss once it is known."""
    fig = _figure(fixed_margins=True)
    ax = fig.add_subplot()
    s = np.asarray(made_at, dtype=float)
    f = np.asarray(final, dtype=float)
    lo = np.asarray(lower, dtype=float)
    hi = np.asarray(upper, dtype=float)
    good = np.isfinite(s) & np.isfinite(f)
    ax.plot(s[good], f[good], "o-", ms=3, color="tab:red", label="forecast final loss")
    band = good & np.isfinite(lo) & np.isfinite(hi)
    pct = f"{100 * level:.0f}% " if level else ""
    ax.fill_between(s[band], lo[band], hi[band], color="tab:red", alpha=0.15, lw=0,
                    label=f"{pct}interval", step=None)
    if observed_final is not None and math.isfinite(observed_final):
        ax.axhline(observed_final, color="tab:blue", lw=1.2, label=f"{observed_label} {observed_final:.4g}")
    if target_step is not None and math.isfinite(target_step):
        ax.set_xlim(0, target_step)
    # the first intervals can be wide enough to flatten the rest: scale to the later half
    later = np.arange(s.size) >= s.size // 2
    ys = np.concatenate([f[good], lo[band & later], hi[band & later],
                         [observed_final] if observed_final is not None else []])
    ys = ys[np.isfinite(ys)]
    if ys.size:
        y0, y1 = float(ys.min()), float(ys.max())
        pad = 0.15 * (y1 - y0) if y1 > y0 else 0.05 * abs(y1) + 1e-12
        ax.set_ylim(y0 - pad, y1 + pad)
    ax.set_xlabel("step the forecast was made at (optimizer steps)")
    ax.set_ylabel(f"forecast final {loss_label}")
    ax.set_title("Forecast of the final loss over time")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def report_figure(runs: Sequence[dict[str, Any]], *, x_label: str, loss_label: str = "loss"):
    """Every run's curve and forecast on one log-log figure.

    Each run is a dict: ``name``, ``x``, ``loss`` (observed), optional ``grid_x``/``trend``
    (the fitted law), optional ``forecast_x`` with ``forecast`` = (final, lower, upper).
    """
    fig = _figure(7.2, 4.8)
    ax = fig.add_subplot()
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if len(runs) <= 10 else colormaps["viridis"]
    for i, run in enumerate(runs):
        color = cmap(i % 10) if len(runs) <= 10 else cmap(i / max(len(runs) - 1, 1))
        x = np.asarray(run["x"], dtype=float)
        y = np.asarray(run["loss"], dtype=float)
        ok = _positive(x, y)
        label = run["name"] if len(runs) <= 12 else None
        ax.plot(x[ok], y[ok], "-", lw=1, color=color, alpha=0.8, label=label)
        if run.get("grid_x") is not None and run.get("trend") is not None:
            gx = np.asarray(run["grid_x"], dtype=float)
            ty = np.asarray(run["trend"], dtype=float)
            good = _positive(gx, ty)
            ax.plot(gx[good], ty[good], "--", lw=1, color=color, alpha=0.8)
        fc = run.get("forecast")
        fx = run.get("forecast_x")
        if fc is not None and fx is not None and all(v is not None and math.isfinite(v) for v in (fx, *fc)):
            final, lo, hi = fc
            if fx > 0 and final > 0:
                ax.errorbar([fx], [final], yerr=[[max(final - lo, 0)], [max(hi - final, 0)]],
                            fmt="o", ms=4, capsize=3, color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(loss_label)
    ax.set_title("Runs: observed loss (lines), fitted law (dashed), forecast (points)")
    ax.grid(True, which="both", alpha=0.25)
    if len(runs) <= 12:
        ax.legend(fontsize=7, loc="upper right")
    return fig


# --------------------------------------------------------------------------------------
# Jobs: what the figure helper process (and the sink, without one) draws

#: The figures a job may ask for, by kind.
FIGURE_KINDS = {"loss_vs_compute": loss_vs_compute_figure, "forecast_history": forecast_history_figure}


def render_pngs(figures: dict) -> dict:
    """{tag: (kind, kwargs)} -> {tag: (PNG bytes, height, width)}: each figure drawn and encoded."""
    return {tag: figure_to_png(FIGURE_KINDS[kind](**kwargs)) for tag, (kind, kwargs) in figures.items()}


def matplotlib_installed() -> bool:
    """True when matplotlib can be found, without importing it (about 1 ms instead of 0.3 s)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False
