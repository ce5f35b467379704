"""lightning-scaling: forecast where a training run will end, from its loss curve so far.

The fitting core (``fit_curve``, ``fit_scaling_law``) needs only numpy and scipy; the
Lightning callback ``ScalingLawMonitor`` is imported lazily so that ``import
lightning_scaling`` (and the command line) stay fast.
"""

from __future__ import annotations

from .core import CurveFit, ScalingLawFit, fit_curve, fit_scaling_law
from .monitor import Forecast, RefitConfig, StopConfig, StopReason, TrendConfig
from .errors import (
    BehindTrendWarning,
    DivergenceWarning,
    FitFailedWarning,
    InvalidInputError,
    ScalingWarning,
    WorseThanReferenceWarning,
)

__version__ = "0.1.0"

__all__ = [
    "BehindTrendWarning",
    "CurveFit",
    "DivergenceWarning",
    "FitFailedWarning",
    "Forecast",
    "InvalidInputError",
    "RefitConfig",
    "ScalingLawFit",
    "ScalingLawMonitor",
    "ScalingWarning",
    "StopConfig",
    "StopReason",
    "TrendConfig",
    "WorseThanReferenceWarning",
    "fit_curve",
    "fit_scaling_law",
    "__version__",
]

_LAZY = {
    "ScalingLawMonitor": ("lightning_scaling.trainer.callback", "ScalingLawMonitor"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lightning_scaling' has no attribute {name!r}")
