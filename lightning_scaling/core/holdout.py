"""Model choice by held-out late points: how well each candidate law, fitted to the early
part of a curve, forecast the rest (``holdout_errors``), and the mixture weights that follow
(``holdout_weights``). The held-out error also sets the scale of the extrapolation term of
the interval (``intervals.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .calibration import HOLDOUT_SPLITS
from .laws import Law, get_law
from .solver import fit_law, grid_for


@dataclass
class Holdout:
    """How well each candidate law forecast held-back late points of the same curve.

    Attributes:
        errors: law name -> RMS log error (weighted by w) over the held-out points, averaged
            over the splits (inf when the law could not be fitted on a split).
        dist: mean log-x distance of the held-out points beyond the fitted part (the
            extrapolation distance the errors were measured at).
        n_splits: splits that had enough points on both sides.
        forecasts: law name -> list of (split fit's log forecast - truth) at the last point.
    """

    errors: dict[str, float]
    dist: float
    n_splits: int
    forecasts: dict[str, list[float]] = field(default_factory=dict)


def holdout_errors(laws: Sequence[Law], x: np.ndarray, y: np.ndarray, w: np.ndarray, *,
                   context=None, prior=None, splits: Sequence[float] = HOLDOUT_SPLITS,
                   min_fit: int = 4) -> Holdout:
    """Fit every law on the early part of the points and score its forecast of the rest.

    For each split q, points with x <= q * x_last are fitted (x_scale = the split's last x)
    and the forecast of the later points is scored by the w-weighted RMS of log errors.
    """
    errs: dict[str, list[float]] = {law.name: [] for law in laws}
    last: dict[str, list[float]] = {law.name: [] for law in laws}
    dists = []
    for q in splits:
        # a relative slack: a point sitting on the split (an integer step grid) must fall on the
        # same side whatever the units of x, or rescaling x by an inexact factor changes the fit
        train = x <= q * x[-1] * (1.0 + 1e-9)
        test = ~train
        if train.sum() < min_fit or test.sum() < 1:
            continue
        xt, yt, wt = x[train], y[train], w[train]
        dists.append(float(np.average(np.log(x[test] / xt[-1]), weights=w[test])))
        for law in laws:
            f = fit_law(law, xt, yt, wt, context=context, prior=prior, grid_per_dim=grid_for(law),
                        zoom_steps=3, refine_scale=False)
            if not f.ok:
                errs[law.name].append(math.inf)
                last[law.name].append(math.nan)
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.log(f.predict(x[test], context)) - np.log(y[test])
            e = float(np.sqrt(np.average(r * r, weights=w[test]))) if np.all(np.isfinite(r)) else math.inf
            errs[law.name].append(e)
            last[law.name].append(float(r[-1]))
    n = len(dists)
    errors = {k: (float(np.mean(v)) if v else math.inf) for k, v in errs.items()}
    return Holdout(errors, float(np.mean(dists)) if dists else math.nan, n, last)


def holdout_weights(ho: Holdout, names: Sequence[str]) -> np.ndarray:
    """Mixture weights from held-out errors: exp(-k) / error^2 per law (k free parameters).

    1 / error^2 is the inverse variance of each law's forecast of the held-out late points;
    exp(-k) is the Akaike complexity factor (AIC weights carry exp(-k)), so a law with one
    more parameter must forecast the held-out points e^(1/2) = 1.65x better to weigh as much.
    Laws that could not be scored on any split share the weight equally when no law could
    (too few points for a split), and get none otherwise.
    """
    e = np.array([ho.errors.get(n, math.inf) for n in names], dtype=float)
    finite = np.isfinite(e)
    if not finite.any():
        return np.full(len(names), 1.0 / len(names))
    floor = max(float(np.min(e[finite])) * 1e-3, 1e-12)
    k = np.array([get_law(n).n_free for n in names], dtype=float)
    w = np.where(finite, np.exp(-(k - k.min())) / np.maximum(e, floor) ** 2, 0.0)
    return w / w.sum()

