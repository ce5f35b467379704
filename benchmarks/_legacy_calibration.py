"""The interval multipliers of version 0.1's named-law mixture (``DEFAULT_CALIBRATION``).

``fit_curve(x, loss, laws=[...])`` still fits that mixture; its interval multipliers are
measured here on the constant-LR development curves (``python benchmarks/extrapolation.py
--calibrate``), as version 0.1 measured them (its multipliers are in-sample: the mixture is
not the default and is not what the benchmark's verdict scores).
"""

from __future__ import annotations

import math

import numpy as np

from _curves import load_sets, split_case

from lightning_scaling import fit_curve
from lightning_scaling.core.intervals import interval_terms
from lightning_scaling.core.laws import DEFAULT_LAWS

FRACTIONS = (0.1, 0.25, 0.5)


def is_constant_lr(curve) -> bool:
    """Curves whose LR stays constant after warm-up: where an LR-agnostic law applies."""
    schedule = str(curve.info.get("schedule", ""))
    return "constant" in schedule


def calibrate(data_dir=None, fractions=FRACTIONS, level=0.9, quantile=95.0) -> dict:
    """Split-conformal multipliers of the interval's extrapolation term (DEFAULT_CALIBRATION).

    First gamma, the exponent of the distance ratio (Theil-Sen slope, see below). Then, for
    every constant-LR development case, the smallest multiplier k of the extrapolation
    term that would put the truth inside the ``level`` band on its side of the forecast
    (0 on the other side); k_below / k_above are the ``quantile``-th percentiles over all
    cases (equal tails: 95 for a 90% band). Also reports leave-one-run-out coverage.
    """
    from scipy import stats


    z = stats.norm.ppf(0.5 + level / 2)
    cases = []
    for curve in load_sets(data_dir):
        if not is_constant_lr(curve):
            continue
        for f in fractions:
            case = split_case(curve, f)
            fit = fit_curve(case.x, case.loss, laws=list(DEFAULT_LAWS))
            if fit.ok and np.isfinite(fit.uncertainty["holdout_err"]):
                cases.append((curve, f, case, fit))
    # gamma: growth of the error with the distance ratio d / holdout_dist, the Theil-Sen slope
    # of log(|error| / holdout_err) on log(d / holdout_dist) (makes the scaled errors
    # homoscedastic across extrapolation distances)
    err = np.array([abs(math.log(fit.predict(c.x_final) / c.truth)) for _, _, c, fit in cases])
    ho = np.array([fit.uncertainty["holdout_err"] for *_, fit in cases])
    ratio = np.array([math.log(c.x_final / fit.x_last) / fit.uncertainty["holdout_dist"]
                      for _, _, c, fit in cases])
    gamma = float(stats.theilslopes(np.log(err / ho), np.log(ratio))[0])
    rows = []
    for curve, f, case, fit in cases:
        fit.uncertainty["calibration"] = {**fit.uncertainty["calibration"], "gamma": gamma}
        pred = fit.predict(case.x_final)
        base, ext = (float(v) for v in interval_terms(fit, np.array(case.x_final)))
        need = math.sqrt(max((math.log(pred / case.truth) / z) ** 2 - base ** 2, 0.0)) / max(ext, 1e-12)
        below, above = (need, 0.0) if case.truth < pred else (0.0, need)
        rows.append((curve.set, curve.run, f, below, above))
    kb = np.array([r[3] for r in rows])
    ka = np.array([r[4] for r in rows])
    out = {"k_below": float(np.percentile(kb, quantile)), "k_above": float(np.percentile(ka, quantile)),
           "gamma": gamma, "n_cases": len(rows), "sets": sorted({r[0] for r in rows}),
           "share_truth_below": float(np.mean(kb > 0))}
    covered = []
    for i, r in enumerate(rows):  # leave one run out
        rest = [j for j, q in enumerate(rows) if q[1] != r[1]]
        covered.append(r[3] <= np.percentile(kb[rest], quantile) and r[4] <= np.percentile(ka[rest], quantile))
    out["loo_coverage"] = float(np.mean(covered))
    return out
