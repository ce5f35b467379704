"""The two schedule features of the forecaster's law, at any (fractional) step.

* ``lr_area_at``: S1(t), the LR area before the loss at step t (peak-normalised LR summed
  over steps 0..t-1: "steps at peak LR").
* ``floor_drop_at``: F_p(t), the multi-power loss-drop sum (Luo et al. 2025) of the noise
  floor u**p instead of u itself: ``sum_k (u[k-1]**p - u[k]**p) G(u[k]**-gamma (S1(t) -
  S1(k)))``, ``G(z) = 1 - (1 + C z)**-beta`` with the published shape (``MULTIPOWER_SHAPE``:
  C = 0.11 per peak LR, beta 0.59, gamma 0.64). With p < 1 the first half of a decay removes
  less loss per unit of LR than the second (a floor concave in the LR), as the development
  runs show (``calibration.py``). F is 0 until the LR falls after its peak and at most 1 - u**p.

Both read the cached features of the schedule (``scheduled.features.schedule_features``);
the drop chunks of each p are built once per schedule (O(T)) and evaluated in O(points x
chunks).
"""

from __future__ import annotations

import numpy as np

from .. import schedule as sch
from ..calibration import MULTIPOWER_SHAPE
from ..scheduled.features import at_steps, interp_at


def lr_area_at(feat: dict, x) -> np.ndarray:
    """S1 at (fractional) steps x (peak-LR steps); NaN beyond the schedule."""
    return interp_at(feat["S1"], x)


def floor_drop_at(feat: dict, x, power: float, shape: dict | None = None) -> np.ndarray:
    """F_p at (fractional) steps x (linear between integer steps); NaN beyond the schedule."""
    shape = shape or MULTIPOWER_SHAPE
    key = ("floor_chunks", round(float(power), 9))
    if key not in feat:
        feat[key] = sch.drop_chunks(feat["u"], power=float(power))
    chunks = feat[key]
    return at_steps(feat, x, lambda s: sch.multipower_drop(chunks, s, shape["C"], shape["beta"], shape["gamma"]))


def has_decay(feat: dict) -> bool:
    """True when the LR falls after its peak somewhere within the schedule."""
    u = feat["u"]
    return bool(np.any(np.diff(u[feat["warmup_end"]:]) < 0))
