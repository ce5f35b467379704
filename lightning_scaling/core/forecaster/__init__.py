"""The forecaster: what ``fit_curve`` runs (with or without the LR schedule).

A Bayesian fit of one law on a grid (``grid``): ``L(t) = L0 + A (S1(t) / S1_ref)**-alpha -
B F_p(t)`` (``law``: ``multipower_floor``; without a schedule S1 = x and B = 0, the law
``saturating_power``), priors derived from the development curves by leaving one set out
(``priors``, ``calibration.FORECASTER``), a forecast table of the posterior median and an
interval that adds a backtest of the law on the run's own prefixes (``fit``). Schedule
features: ``features``.
"""

from __future__ import annotations

from .fit import fit_forecast
from .law import LAW_NAME
from .priors import PRIOR_NAMES

__all__ = ["LAW_NAME", "PRIOR_NAMES", "fit_forecast"]
