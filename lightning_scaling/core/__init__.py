"""The fitting core: numpy and scipy only (no torch, no Lightning, not even inside a function).

- ``laws``: functional forms of a single loss curve and their registry.
- ``curve``: ``fit_curve`` and ``CurveFit`` (single-run fits, held-out model choice, intervals).
- ``schedule``: features of an LR schedule; ``scheduled``: schedule-aware fits.
- ``scaling``: multi-run laws L(N, D) and compute-optimal allocation.
- ``compute``: steps <-> cumulative compute.
"""

from . import scheduled as _scheduled  # noqa: F401  registers the schedule-aware laws (from_dict)
from .curve import CurveFit, fit_curve
from .scaling import ScalingLawFit, fit_scaling_law

__all__ = ["CurveFit", "ScalingLawFit", "fit_curve", "fit_scaling_law"]
