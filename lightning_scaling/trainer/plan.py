"""The run's plan as the trainer knows it: its planned length and the LR at every step of it."""

from __future__ import annotations

import math

import numpy as np

from .scheduler import future_lrs


def planned_steps(trainer, total_steps: int | None = None) -> float | None:
    """The planned number of optimizer steps: ``total_steps``, else ``trainer.max_steps``, else
    ``trainer.estimated_stepping_batches``; None when none is known (an unsized dataloader)."""
    if total_steps is not None:
        return float(total_steps)
    if trainer.max_steps is not None and trainer.max_steps > 0:
        return float(trainer.max_steps)
    try:
        est = float(trainer.estimated_stepping_batches)
    except Exception:
        return None
    return est if math.isfinite(est) and est > 0 else None


def load_schedule(trainer, planned: float | None) -> tuple[np.ndarray | None, str]:
    """The LR at every optimizer step 0..planned (or None) and one line saying where it came from."""
    if planned is None:
        return None, "schedule unused: the planned end is unknown"
    try:
        lr, reason = future_lrs(trainer, int(planned))
    except Exception as exc:  # a schedule we cannot simulate is not worth a crash
        return None, f"schedule unknown ({type(exc).__name__}: {exc})"
    if lr is None:
        return None, f"schedule unknown ({reason})"
    lr = np.asarray(lr, dtype=float)
    if lr.ndim != 1 or lr.size < int(planned) + 1 or not np.isfinite(lr).all():
        return None, "schedule unknown (future_lrs returned an unusable array)"
    return lr, str(reason or "schedule from the trainer's scheduler")
