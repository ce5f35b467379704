"""LR-agnostic single-run fits: ``fit_agnostic`` (what ``fit_curve(x, loss)`` runs).

The points are prepared (``points.prepare_points``: cleaned, bucketed, warm-up cut), each
candidate law (``laws.DEFAULT_LAWS``: the saturating power law and the MMF / log-logistic
law) is fitted with the robust solver (``solver.fit_law``), the laws are weighted by how well
each forecast held-back late points of the same curve (``holdout.py``), and the interval
model calibrated on real curves (``calibration.DEFAULT_CALIBRATION``) is attached
(``build_fit``). ``fit_prepared`` and ``build_fit`` are the reusable steps for other fitters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from ..errors import InvalidInputError
from .calibration import DEFAULT_CALIBRATION
from .curvefit import CurveFit, context_arrays, failed_fit
from .holdout import Holdout, holdout_errors, holdout_weights
from .laws import DEFAULT_LAWS, Law, get_law
from .plain import plain
from .points import Prepared, prepare_points
from .solver import LawFit, autocorr_inflation, fit_law


def fit_agnostic(x, loss, *, prior=None, laws: Sequence[str] | None = None) -> CurveFit:
    """LR-agnostic fit of one loss curve (``fit_curve`` without ``lr``; see its docstring).

    Args:
        x: steps, tokens or FLOPs (increasing with training; any scale).
        loss: loss at each x (nats or any positive unit).
        prior: ``{parameter: (mean, sd)}`` Gaussian priors overriding the laws' defaults.
        laws: candidate law names (default ``laws.DEFAULT_LAWS``).
    """
    t0 = time.perf_counter()
    names = tuple(laws) if laws is not None else DEFAULT_LAWS
    if not names:
        raise InvalidInputError("laws must name at least one law")
    candidates = [get_law(n) for n in names]
    if any(law.uses_context for law in candidates):
        raise InvalidInputError("schedule-aware laws need lr=...; fit_curve(x, loss, lr=lr)")
    if prior is not None and not isinstance(prior, dict):
        raise InvalidInputError("prior must be a dict {parameter name: (mean, sd)}")
    with np.errstate(all="ignore"):  # extreme inputs make inf/NaN candidates; they lose
        prep = prepare_points(x, loss)
        if prep.reason:
            return failed_fit(prep.reason, prep.diagnostics, prep.detail)
        return fit_prepared(candidates, prep, prior=prior, t0=t0)


def fit_prepared(candidates: Sequence[Law], prep: Prepared, *, context=None, prior=None,
                 t0: float | None = None, calibration: dict[str, float] | None = None) -> CurveFit:
    """Fit candidate laws to prepared points, weight them by held-out late points, build the fit.

    The reusable core of ``fit_curve`` (schedule-aware fitters pass their own laws and
    ``context``).
    """
    t0 = time.perf_counter() if t0 is None else t0
    fits = [fit_law(law, prep.x, prep.y, prep.w, context=context, prior=prior) for law in candidates]
    good = [f for f in fits if f.ok]
    if not good:
        return failed_fit("fit failed", prep.diagnostics, "no candidate law could be fitted")
    ho = holdout_errors([f.law for f in good], prep.x, prep.y, prep.w, context=context, prior=prior)
    weights = holdout_weights(ho, [f.law.name for f in good])
    return build_fit(good, weights, prep, context=context, holdout=ho,
                     elapsed=time.perf_counter() - t0, calibration=calibration)


def build_fit(fits: Sequence[LawFit], weights: Sequence[float], prep: Prepared, *,
              context=None, holdout: Holdout | None = None, elapsed: float | None = None,
              calibration: dict[str, float] | None = None) -> CurveFit:
    """Assemble a CurveFit from fitted laws and their mixture weights, with the interval model.

    The interval model (``CurveFit.uncertainty``) keeps, JSON-safe:
      * ``noise_sd``: sd of the fitted level from the residual noise (robust scale over the
        square root of the effective number of points);
      * ``holdout_err``, ``holdout_dist``: the mixture's RMS log error on held-out late
        points and how far (mean log x) beyond the fitted part they lay;
      * ``calibration``: ``k``, ``gamma``, ``k_spread``, ``floor`` fixed on the
        development curves (see ``DEFAULT_CALIBRATION``).
    """
    weights = np.asarray(weights, dtype=float)
    weights = weights / weights.sum()
    main = fits[int(np.argmax(weights))]
    diag = dict(prep.diagnostics)
    diag["law"] = main.law.name
    diag["residual_scale_log"] = float(main.scale)
    diag["weights"] = {f.law.name: float(wt) for f, wt in zip(fits, weights)}
    components = []
    if len(fits) > 1:
        components = [{"law": f.law.name, "params": dict(f.params), "weight": float(wt)}
                      for f, wt in zip(fits, weights) if wt > 0]
    if holdout is not None and holdout.n_splits:
        ho_err = float(sum(wt * holdout.errors[f.law.name] for f, wt in zip(fits, weights)
                           if wt > 0 and math.isfinite(holdout.errors[f.law.name])))
        ho_dist = float(holdout.dist)
        diag["holdout"] = {"rms_log_error": {k: (v if math.isfinite(v) else None)
                                             for k, v in holdout.errors.items()},
                           "distance_log_x": ho_dist, "n_splits": holdout.n_splits}
    else:
        ho_err, ho_dist = math.nan, math.nan
        diag["flags"] = list(diag.get("flags", [])) + [
            "too few points to score held-out late points: interval from noise and spread only"]
    n_eff = float(prep.w.sum()) / autocorr_inflation(
        np.log(prep.y) - np.log(main.predict(prep.x, context_arrays(context) if context else None)),
        prep.w)
    uncertainty = {
        "method": "holdout-scaled-v1",
        "noise_sd": float(main.scale / math.sqrt(max(n_eff, 1.0))),
        "holdout_err": ho_err,
        "holdout_dist": ho_dist,
        "calibration": dict(calibration or DEFAULT_CALIBRATION),
    }
    if elapsed is not None:
        diag["fit_seconds"] = float(elapsed)
    ctx_json = None if context is None else plain(context, strict=True)
    x_first, x_last = prep.diagnostics.get("x_range", (float(prep.x[0]), float(prep.x[-1])))
    return CurveFit(main.law.name, dict(main.params), plain(diag, strict=True), components, uncertainty,
                    ctx_json, float(x_first), float(x_last))

