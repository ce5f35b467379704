"""Kept so ``lightning_scaling.replay`` imports keep working: the code is in ``lightning_scaling.trainer.replay``."""

from .trainer.replay import ReplayModule, read_curve_csv

__all__ = ["ReplayModule", "read_curve_csv"]
