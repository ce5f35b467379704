"""Robust noise scales: the median absolute deviation, scaled to a normal's standard deviation."""

from __future__ import annotations

import math

import numpy as np

MAD_TO_SD = 1.4826
"""MAD times this is the standard deviation of a normal sample (1 / Phi^-1(3/4))."""


def mad_sd(values) -> float:
    """Robust standard deviation of ``values``: 1.4826 x the median absolute deviation.

    >>> mad_sd([1.0, 2.0, 3.0, 4.0, 100.0])
    1.4826
    """
    v = np.asarray(values, dtype=float)
    return MAD_TO_SD * float(np.median(np.abs(v - np.median(v))))


def difference_noise(values) -> float:
    """Noise sd of a slowly moving series, from its first differences (a trend costs it nothing).

    The robust sd of the differences divided by sqrt(2), since a difference holds two draws.
    Non-finite values are dropped; fewer than 4 values give 0.

    >>> round(difference_noise([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]), 4)
    0.0
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 4:
        return 0.0
    return mad_sd(np.diff(v)) / math.sqrt(2.0)
