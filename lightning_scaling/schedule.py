"""Kept so ``lightning_scaling.schedule`` imports keep working: the schedule features are in
``lightning_scaling.core.schedule``, the simulation of a live torch scheduler in
``lightning_scaling.trainer.scheduler``."""

from .core.schedule import *  # noqa: F401,F403
from .trainer.scheduler import future_lrs, scheduler_calls_before_step, simulate_scheduler  # noqa: F401
