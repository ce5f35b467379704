"""The LR schedule as fits store and read it, and the schedule-aware laws of version 0.1.

* ``storage``: ``CurveFit.context`` keeps the schedule as piecewise-linear knots
  (``compress_schedule``: exact for piecewise-linear schedules, within ``SCHEDULE_TOLERANCE``
  of the peak LR elsewhere: a cosine over any number of steps needs ~800 knots); the fit runs
  on the expansion of those knots, so a fit forecasts the same before and after a JSON round
  trip. Dicts written with one LR per step (``context = {"lr": [...]}``) still load.
  Expanded schedules and their features are cached by content digest.
* ``features``: peak-normalised features of one schedule (LR area, annealing features),
  cached per schedule.
* ``laws``: ``convex_bound``, ``tissue`` and ``multipower`` as version 0.1 fitted them,
  registered so that its saved fits load and forecast (``CurveFit.from_dict``); they are no
  longer fitted. ``fit_curve(steps, loss, lr=lr)`` runs ``core.forecaster``.
"""

from __future__ import annotations

from .features import convex_ratio, schedule_features
from .laws import LEGACY_SCHEDULE_LAWS
from .storage import MAX_KNOTS, SCHEDULE_TOLERANCE, compress_schedule, expand_schedule, schedule_context

__all__ = ["LEGACY_SCHEDULE_LAWS", "MAX_KNOTS", "SCHEDULE_TOLERANCE", "compress_schedule", "convex_ratio",
           "expand_schedule", "schedule_context", "schedule_features"]
