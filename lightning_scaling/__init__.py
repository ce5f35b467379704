"""lightning-scaling: forecast where a training run will end, from its loss curve so far.

The fitting core (``fit_curve``, ``fit_scaling_law``) needs only numpy and scipy; the
Lightning callback ``ScalingLawMonitor`` is imported lazily so that ``import
lightning_scaling`` (and the command line) stay fast.
"""

from __future__ import annotations

from .curve import CurveFit, fit_curve
from . import scheduled as _scheduled  # noqa: F401  registers the schedule-aware laws (from_dict)
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
    "InvalidInputError",
    "ScalingLawFit",
    "ScalingLawMonitor",
    "ScalingWarning",
    "WorseThanReferenceWarning",
    "fit_curve",
    "fit_scaling_law",
    "__version__",
]

_LAZY = {
    "ScalingLawMonitor": ("lightning_scaling.callback", "ScalingLawMonitor"),
    "ScalingLawFit": ("lightning_scaling.scaling", "ScalingLawFit"),
    "fit_scaling_law": ("lightning_scaling.scaling", "fit_scaling_law"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lightning_scaling' has no attribute {name!r}")
