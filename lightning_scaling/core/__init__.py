"""The fitting core: numpy and scipy only (no torch, no Lightning, not even inside a function).

- ``laws``: functional forms of a single loss curve and their registry.
- ``curve``: ``fit_curve`` (the entry point) and ``CurveFit`` (``curvefit``, with its
  ``forecast_table``).
- ``forecaster``: what ``fit_curve`` runs, with or without the LR schedule (grid posterior of
  one law, backtest-widened intervals, priors from finished sibling runs).
- ``calibration``: every constant of the forecaster; the derived ones are generated into
  ``calibration_data`` by ``benchmarks/calibrate.py``.
- ``agnostic`` (``fit_curve(x, loss, laws=[...])``: version 0.1's named-law mixture) is built
  from ``points``, ``solver`` (robust variable projection), ``holdout`` and ``intervals``.
- ``scheduled``: how fits store a schedule, its cached features, and 0.1's schedule-aware laws
  (loaded, no longer fitted); ``schedule``: features of an LR schedule.
- ``scaling``: multi-run laws L(N, D) and compute-optimal allocation.
- ``compute``: steps <-> cumulative compute; ``stats``: robust noise scales; ``plain``: JSON.
"""

from .curve import CurveFit, fit_curve
from .scaling import ScalingLawFit, fit_scaling_law

__all__ = ["CurveFit", "ScalingLawFit", "fit_curve", "fit_scaling_law"]
