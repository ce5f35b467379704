"""Functional forms of single-run loss curves, pure numpy.

PLACEHOLDER (skeleton commit): only the saturating power law. The core issue replaces this.
"""

from __future__ import annotations

import numpy as np


def saturating_power(x, E, A, alpha):
    """L(x) = E + A * x**-alpha; x in the fit's normalised units (x / x_scale)."""
    return E + A * np.power(np.asarray(x, dtype=float), -alpha)


LAWS = {"saturating_power": (saturating_power, ("E", "A", "alpha"))}
