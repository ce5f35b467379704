"""The interval model of a ``CurveFit``: the sd of log(expected loss) below and above the
forecast at any x.

Two parts, combined in quadrature per side: a base (the residual noise of the fitted level,
a floor, and the spread of the mixture's laws) and an extrapolation term that grows with the
log distance beyond the last fitted x (scaled by the held-out error, see ``holdout.py``), with
multipliers calibrated on the development curves (``calibration.py``). The calibration a fit
stores in ``uncertainty["calibration"]`` overrides ``DEFAULT_CALIBRATION`` key by key.
"""

from __future__ import annotations

import math

import numpy as np

from .calibration import DEFAULT_CALIBRATION


def interval_terms(fit, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two uncalibrated parts of the interval sd of a CurveFit ``fit`` at x (an array,
    caller units): (base, extrapolation).

    base^2 = noise_sd^2 + floor^2 + (k_spread * spread(x))^2 (spread: weighted sd of the
    mixture members' log forecasts); extrapolation = holdout_err * (d / holdout_dist)^gamma
    with d = max(log(x / x_last), 0) (``k_fallback * d`` when no held-out error exists).
    """
    u = fit.uncertainty
    cal = dict(DEFAULT_CALIBRATION)
    cal.update(u.get("calibration") or {})
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.maximum(np.log(np.maximum(x, 1e-300) / fit.x_last), 0.0)
    var = np.full(x.shape, float(u.get("noise_sd", 0.0)) ** 2 + cal["floor"] ** 2)
    ho_err, ho_dist = float(u.get("holdout_err", math.nan)), float(u.get("holdout_dist", math.nan))
    if math.isfinite(ho_err) and math.isfinite(ho_dist) and ho_dist > 0:
        ext = ho_err * (d / ho_dist) ** cal["gamma"]
    else:
        ext = cal["k_fallback"] * d
    if fit.components and len(fit.components) > 1:
        ctx = fit.evaluation_context()
        logs, ws = [], []
        for law, params, weight in fit.members():
            with np.errstate(invalid="ignore", divide="ignore"):
                logs.append(np.log(law.evaluate(x, params, ctx)))
            ws.append(weight)
        logs = np.array(logs)
        ws = np.array(ws).reshape((-1,) + (1,) * x.ndim)
        mean = np.sum(ws * logs, axis=0)
        var = var + cal["k_spread"] ** 2 * np.sum(ws * (logs - mean) ** 2, axis=0)
    return np.sqrt(var), ext


def uncertainty_sd(fit, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sd_below, sd_above) of log(expected loss) of a CurveFit ``fit`` at x (an array).

    sd_side^2 = base^2 + (k_side * extrapolation)^2, see :func:`interval_terms`.
    """
    cal = dict(DEFAULT_CALIBRATION)
    given = fit.uncertainty.get("calibration") or {}
    cal.update(given)
    if "k" in given and "k_below" not in given:  # one symmetric multiplier
        cal["k_below"] = cal["k_above"] = given["k"]
    base, ext = interval_terms(fit, x)
    return np.hypot(base, cal["k_below"] * ext), np.hypot(base, cal["k_above"] * ext)
