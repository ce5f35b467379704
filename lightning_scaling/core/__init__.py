"""The fitting core: numpy and scipy only (no torch, no Lightning, not even inside a function).

- ``laws``: functional forms of a single loss curve and their registry.
- ``curve``: ``fit_curve`` (the entry point) and ``CurveFit`` (``curvefit``); the LR-agnostic
  fit (``agnostic``) is built from ``points`` (preparation, warm-up), ``solver`` (robust
  variable projection), ``holdout`` (model choice) and ``intervals``.
- ``scheduled``: schedule-aware fits (``fit_curve(..., lr=lr)``); ``schedule``: features of
  an LR schedule.
- ``calibration``: every tuned constant of the forecaster.
- ``scaling``: multi-run laws L(N, D) and compute-optimal allocation.
- ``compute``: steps <-> cumulative compute; ``stats``: robust noise scales; ``plain``: JSON.
"""

from .curve import CurveFit, fit_curve
from .scaling import ScalingLawFit, fit_scaling_law

__all__ = ["CurveFit", "ScalingLawFit", "fit_curve", "fit_scaling_law"]
