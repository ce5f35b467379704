"""What the TensorBoard panels read of the monitor: one narrow, read-only view.

The sink and the figure data reach the monitor through :class:`MonitorView` only, so that a
change of the monitor's attributes is met here, in one place.
"""

from __future__ import annotations

from typing import Any

import numpy as np


#: Every attribute of the monitor the panels read (through :class:`MonitorView`).
MONITOR_ATTRIBUTES = ("forecast", "forecasts", "planned_steps", "level", "loss_name", "history", "summary_path",
                      "summary")


class MonitorView:
    """A read-only view of a ``ScalingLawMonitor`` (or any object with the same attributes):
    everything the panels read of it, evaluated when asked (nothing is copied).

    Of the monitor, it reads (absent attributes fall back to the defaults in brackets):

    - ``forecast``: the newest ``Forecast`` or None [None];
    - ``forecasts``: every forecast so far, oldest first [[]];
    - ``planned_steps``: the planned last optimizer step or None [None];
    - ``level``: the intervals' probability content [0.9];
    - ``loss_name``: the name of the loss [``"loss"``];
    - ``history.arrays()``: dict of float arrays ``step``, ``loss``, ``tokens``, ``flops``
      (NaN where unknown), oldest first; ``history.last(n)``: the newest raw observations
      as tuples whose fifth item is the loss;
    - ``summary_path`` (the run summary's JSON file, once written) [None] and
      ``summary(trainer)``: the run-summary dict (``lightning_scaling.io.summary`` schema).

    Of a ``Forecast``: ``step``, ``final_loss``, ``lower``, ``upper``, ``level``, ``law``,
    ``x_axis``, ``target_step``, ``target_tokens``, ``target_flops``, ``target_loss`` and
    ``fit`` (a ``CurveFit``: ``ok``, ``law``, ``params``, ``predict``, ``interval``,
    ``x_first``, ``x_last``, ``diagnostics``).

    The sink also keeps, on its side, what it derives from the forecasts and the events it is
    notified of (``state.PanelState``): the smoothed loss, the trend each step is compared
    with, the behind-trend episodes.

    >>> from types import SimpleNamespace
    >>> view = MonitorView(SimpleNamespace(planned_steps=100))
    >>> view.forecast, view.forecasts, view.planned_steps, view.level, view.loss_name
    (None, [], 100, 0.9, 'loss')
    """

    __slots__ = ("monitor",)

    def __init__(self, monitor: Any):
        self.monitor = monitor

    @property
    def forecast(self):
        """The newest forecast, None before the first."""
        return getattr(self.monitor, "forecast", None)

    @property
    def forecasts(self) -> list:
        """Every forecast so far, oldest first."""
        return getattr(self.monitor, "forecasts", [])

    @property
    def planned_steps(self) -> float | None:
        """The planned last optimizer step, None when unknown."""
        return getattr(self.monitor, "planned_steps", None)

    @property
    def level(self) -> float:
        """Probability content of the monitor's intervals."""
        return getattr(self.monitor, "level", 0.9)

    @property
    def loss_name(self) -> str:
        """Name of the loss the monitor forecasts (for labels)."""
        return getattr(self.monitor, "loss_name", "loss")

    @property
    def summary_path(self) -> str | None:
        """The run summary's JSON file, once the monitor has written it."""
        return getattr(self.monitor, "summary_path", None)

    def curve(self) -> dict[str, np.ndarray]:
        """The observed curve, oldest first: float arrays ``step`` (optimizer steps), ``loss``,
        ``tokens`` and ``flops`` (cumulative; NaN where unknown)."""
        return self.monitor.history.arrays()

    def recent_loss(self, n: int = 5) -> float | None:
        """Mean loss of the newest ``n`` raw observations, None before any."""
        recent = self.monitor.history.last(n)
        return float(np.mean([r[4] for r in recent])) if recent else None

    def summary(self, trainer) -> dict[str, Any]:
        """The run summary as the monitor makes it now."""
        return self.monitor.summary(trainer)


def as_view(monitor: Any) -> MonitorView:
    """``monitor`` as a :class:`MonitorView` (a view is returned as it is)."""
    return monitor if isinstance(monitor, MonitorView) else MonitorView(monitor)

