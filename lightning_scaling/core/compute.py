"""Steps <-> cumulative compute (tokens or FLOPs): interpolation inside a run's history,
the recent rate beyond it. numpy only."""

from __future__ import annotations

import math

import numpy as np


def project_compute(steps, compute, target_step: float, recent: int = 64) -> float:
    """Cumulative compute (tokens or FLOPs) at ``target_step``, from its history in steps.

    Inside the history: linear interpolation. Beyond it: the last value plus the compute per
    step of the last ``recent`` stored points (constant batches make this exact). NaN when the
    compute is unknown.
    """
    s = np.asarray(steps, dtype=float)
    c = np.asarray(compute, dtype=float)
    good = np.isfinite(s) & np.isfinite(c)
    s, c = s[good], c[good]
    if s.size == 0:
        return math.nan
    if target_step <= s[-1]:
        return float(np.interp(target_step, s, c))
    lo = max(0, s.size - recent)
    if s.size - lo >= 2 and s[-1] > s[lo]:
        rate = (c[-1] - c[lo]) / (s[-1] - s[lo])
    else:
        rate = c[-1] / s[-1] if s[-1] > 0 else math.nan
    return float(c[-1] + rate * (target_step - s[-1]))


def step_at_compute(steps, compute, target_compute: float, recent: int = 64) -> float:
    """The optimizer step where cumulative compute reaches ``target_compute`` (inverse of above)."""
    s = np.asarray(steps, dtype=float)
    c = np.asarray(compute, dtype=float)
    good = np.isfinite(s) & np.isfinite(c)
    s, c = s[good], c[good]
    if s.size == 0 or not math.isfinite(target_compute):
        return math.nan if not math.isinf(target_compute) else math.inf
    if target_compute <= c[-1]:
        return float(np.interp(target_compute, c, s))
    lo = max(0, s.size - recent)
    if s.size - lo >= 2 and c[-1] > c[lo]:
        rate = (c[-1] - c[lo]) / (s[-1] - s[lo])
    else:
        rate = c[-1] / s[-1] if s[-1] > 0 else math.nan
    if not rate > 0:
        return math.nan
    return float(s[-1] + (target_compute - c[-1]) / rate)
