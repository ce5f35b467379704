"""Kept so ``lightning_scaling.monitor.monitoring`` imports keep working: the parts now live in
``forecast``, ``trend``, ``divergence``, ``stopping`` and ``refit``."""

from ..core.stats import difference_noise as robust_noise  # noqa: F401  the old name
from .divergence import DivergenceDetector, DivergenceEvent
from .forecast import AXES, Forecast, make_forecast
from .refit import RefitRunner
from .stopping import StopReason, evaluate_stopping_criteria
from .trend import DISTANCE_MIN, TrendDetector, TrendEvent

__all__ = [
    "AXES",
    "DISTANCE_MIN",
    "DivergenceDetector",
    "DivergenceEvent",
    "Forecast",
    "RefitRunner",
    "StopReason",
    "TrendDetector",
    "TrendEvent",
    "evaluate_stopping_criteria",
    "make_forecast",
]
