"""Kept so ``lightning_scaling.pruning`` imports keep working: the code is in ``lightning_scaling.trainer.pruning``."""

from .trainer.pruning import ForecastPruning

__all__ = ["ForecastPruning"]
