"""``fit_scheduled``: the schedule-aware fit of one loss curve (``fit_curve(..., lr=lr)``)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from ...errors import InvalidInputError
from .. import schedule as sch
from ..agnostic import fit_agnostic
from ..calibration import (
    ANNEAL_MAX_SHARE,
    ANNEAL_SEEN_MIN,
    CALIBRATION,
    CONFLICT_EDGE_Z,
    N_EFF_CAP,
    SKIP_FRACTION,
    prior_calibration,
    reference_calibration,
)
from ..curvefit import CurveFit, failed_fit
from ..plain import plain
from ..points import MIN_POINTS, prepare_points, validate_inputs
from .features import convex_ratio_of, interp_at, schedule_features
from .laws import AMP_NAME, SCHEDULE_LAWS
from .posterior import (
    alpha_conflict,
    anneal_feature,
    law_params,
    mixture_at,
    posterior,
    search_shape,
)
from .priors import Priors, resolve_priors
from .solver import ScheduleProblem, model_sigma, robust_sigma, window_noise
from .storage import schedule_context


def fit_scheduled(steps, loss, lr, prior=None, *, law: str | None = None, laws: Sequence[str] | None = None,
                  anneal_momentum: float | None = None, skip_fraction: float = SKIP_FRACTION,
                  **_ignored) -> CurveFit:
    """Schedule-aware fit of one loss curve (what ``fit_curve(steps, loss, lr=lr)`` calls).

    Args:
        steps: optimizer step of each loss point (the loss logged at step t was computed
            after t updates, i.e. with ``lr[0..t-1]`` applied).
        loss: loss at each step (nats); NaN / inf / step <= 0 points are dropped and counted.
        lr: learning rate at every optimizer step 0..horizon, future steps included (any
            units: the schedule is divided by its peak). The forecast horizon is
            ``len(lr) - 1``.
        prior: None (the defaults of ``calibration.py``), an earlier schedule-aware CurveFit of the same
            recipe (or its ``to_dict()``, or a list of them) to lend alpha and the annealing
            parameters, or ``{name: (mean, sd)}`` for alpha, the amplitude (C for
            convex_bound and tissue, B for multipower) or kappa (annealing ratio; sd relative).
        law: "convex_bound" (default), "tissue" or "multipower".
        anneal_momentum: momentum of the tissue law's annealing area (default 0.999).
        skip_fraction: share of the seen steps, from the start, left out of the fit as early
            transient.

    Returns:
        CurveFit whose ``predict(step)`` forecasts any step up to the horizon (NaN beyond);
        ``diagnostics["anneal"]`` says whether the annealing term was identified, and
        ``diagnostics["flags"]`` carries "annealing term not identifiable yet: ..." when it
        came from the prior. InvalidInputError only for invalid arguments.

    Example (the LR holds, then decays linearly over the last 1,000 of 4,000 steps; half of
    the constant phase seen, so the annealing comes from the prior):

    >>> import numpy as np
    >>> lr = np.r_[np.full(3000, 1e-3), np.linspace(1e-3, 1e-4, 1001)]  # steps 0..4000
    >>> steps = np.arange(10, 2001, 10)
    >>> loss = 2.0 + 10.0 * np.cumsum(lr / lr.max())[steps - 1] ** -0.5
    >>> fit = fit_scheduled(steps, loss, lr)
    >>> fit.law, fit.diagnostics["anneal"]["source"]
    ('convex_bound', 'prior')
    >>> lo, hi = fit.interval(4000.0)
    >>> bool(lo < fit.predict(4000.0) < hi < 2.0 + 10.0 * 3000 ** -0.5)
    True
    """
    t0 = time.perf_counter()
    law = _checked_law(law, laws)
    _check_skip_fraction(skip_fraction)
    lr_in = sch.as_schedule(lr)
    x_arr, y_arr = validate_inputs(steps, loss)
    horizon = lr_in.size - 1
    finite_x = x_arr[np.isfinite(x_arr)]
    if finite_x.size and finite_x.max() > horizon:
        raise InvalidInputError(
            f"lr must give the LR at every step up to the last loss point: lr has {lr_in.size} "
            f"entries (steps 0..{horizon}) but a loss is given at step {finite_x.max():g}")
    pri, law = resolve_priors(prior, law, anneal_momentum)
    if np.all(lr_in == lr_in[0]) and (prior is None or set(prior) <= {"alpha"}):
        return _constant_lr_fit(x_arr, y_arr, prior)
    context, lr_arr = schedule_context(lr_in)
    feat = schedule_features(lr_arr)

    prep = prepare_points(x_arr, y_arr)
    diag = dict(prep.diagnostics)
    diag["schedule"] = {"horizon": int(horizon), "peak_lr": feat["peak"],
                        "warmup_steps": int(feat["warmup_end"]),
                        "final_lr_over_peak": float(feat["u"][-1]),
                        "stored_knots": len(context["lr_knots"]["step"]) if "lr_knots" in context
                        else None}
    if prep.reason:
        return failed_fit(prep.reason, diag, prep.detail, context=context)
    x, y, w = prep.x, prep.y, prep.w
    after_warmup = x > feat["warmup_end"]
    if (~after_warmup).any():
        diag["lr_warmup_cut"] = {"n_points": int(w[~after_warmup].sum()),
                                 "before_step": int(feat["warmup_end"] + 1)}
    x, y, w = x[after_warmup], y[after_warmup], w[after_warmup]
    if x.size < MIN_POINTS:
        diag["n_used"] = int(w.sum())
        return failed_fit("too few points", diag,
                          f"{x.size} points after the LR warm-up, need {MIN_POINTS}", context=context)

    S1T = float(feat["S1"][horizon])
    F, FT, cap_S1, cap_F = anneal_feature(feat, law, pri, x, horizon)
    has_anneal = FT > 1e-12 * max(S1T, 1.0)
    prob = ScheduleProblem(interp_at(feat["S1"], x), F, y, w, S1T, FT, cap_S1, cap_F, has_anneal)
    pri.ratio = pri.kappa[0] * float(max(0.0, 1.0 - feat["u"][horizon])) if pri.kappa else 0.0
    pri.ratio_alt = convex_ratio_of(feat) if has_anneal else 0.0

    keep = x >= float(skip_fraction) * x[-1]
    if (~keep).any():
        diag["transient_cut"] = {"n_points": int(w[~keep].sum()), "before_step": float(skip_fraction * x[-1])}
    prob = prob.subset(keep)
    x = x[keep]
    diag["n_used"] = int(prob.w.sum())
    if x.size < MIN_POINTS:
        return failed_fit("too few points", diag,
                          f"{x.size} points after the LR warm-up and the early transient, need {MIN_POINTS}",
                          context=context)

    shape_note = None
    if law == "multipower" and pri.source == "default" and has_anneal:
        pri.shape, shape_note = search_shape(feat, prob, x, pri, horizon)
        F, FT, cap_S1, cap_F = anneal_feature(feat, law, pri, x, horizon)
        prob = ScheduleProblem(prob.S1, F, prob.y, prob.w, S1T, FT, cap_S1, cap_F, has_anneal)
    seen = float(prob.F[-1] / FT) if has_anneal else 0.0
    identifiable = has_anneal and seen >= ANNEAL_SEEN_MIN

    sig = robust_sigma(prob.S1, prob.y, prob.w)
    sig, n_eff = model_sigma(prob, sig, min(1.0, N_EFF_CAP / float(prob.w.sum())), pri)
    k = min(1.0, n_eff / float(prob.w.sum()))
    post = posterior(prob, sig, k, pri, law, FT)
    if post is None:
        return failed_fit("no law could be fitted", diag, "no admissible alpha (A >= 0, amplitude >= 0)",
                          context=context)
    conflict = _widened_for_conflict(prob, sig, k, pri, law, post, context, horizon)
    prof_b, ib = post["best"]
    coef, cov = prof_b.coef[ib], prof_b.cov[ib]
    params = law_params(law, coef, float(prof_b.alpha[ib]), pri)
    diag["law"] = law
    diag["posterior_sd"] = {"alpha": post["alpha_sd"], AMP_NAME[law]: float(math.sqrt(max(cov[2, 2], 0.0))),
                            "L0": float(math.sqrt(max(cov[0, 0], 0.0)))}
    diag["residual_scale"] = float(sig)
    diag["n_eff"] = float(n_eff)
    flags = list(diag.get("flags", []))
    anneal = _anneal_report(pri, coef, FT, float(prof_b.XT[ib]), float(prof_b.cap[ib]), has_anneal, seen,
                            identifiable, flags)
    if conflict is not None:
        diag["alpha_conflict"] = conflict
        flags.append(
            f"the data's own alpha {conflict['alpha_data']:.2f} (sd {conflict['alpha_data_sd']:.2f}) conflicts "
            f"with the prior N({pri.alpha[0]:.2f}, {pri.alpha[1]:.2f}) ({conflict['z']:.1f} sd): the interval widens "
            f"to reach the forecast {conflict['forecast_widened']:.4g} under the prior widened to sd "
            f"{conflict['widened_sd']:.2f}")
    if pri.source != "default":
        flags.append(f"prior: {pri.source}")
    if shape_note:
        anneal["shape"] = shape_note
    diag["anneal"] = anneal
    diag["flags"] = flags
    diag["fit_seconds"] = float(time.perf_counter() - t0)
    calibration = _interval_calibration(pri, has_anneal and not identifiable, float(x[-1]), horizon, conflict)
    uncertainty = {"method": "schedule-posterior-v2", "noise_sd": window_noise(prob, x, sig, horizon),
                   "holdout_err": math.nan,
                   "holdout_dist": math.nan, "calibration": dict(calibration)}
    fit = CurveFit(law, params, diag, post["components"], uncertainty, context, float(x[0]), float(x[-1]))
    fit.diagnostics = plain(diag, strict=True)  # JSON-safe, like every CurveFit
    return fit


def _checked_law(law: str | None, laws: Sequence[str] | None) -> str:
    """The schedule-aware law to fit: ``law``, else the first schedule-aware name in ``laws``,
    else the default; InvalidInputError for any other name."""
    if law is None and laws:
        named = [n for n in laws if n in SCHEDULE_LAWS]
        law = named[0] if named else None
    law = law or SCHEDULE_LAWS[0]
    if law not in SCHEDULE_LAWS:
        raise InvalidInputError(f"law must be one of {SCHEDULE_LAWS} when lr is given, got {law!r}")
    return law


def _check_skip_fraction(skip_fraction) -> None:
    try:
        skip_ok = 0.0 <= float(skip_fraction) < 1.0
    except (TypeError, ValueError):
        skip_ok = False
    if not skip_ok:
        raise InvalidInputError(f"skip_fraction must be in [0, 1), got {skip_fraction!r}")


def _constant_lr_fit(x: np.ndarray, y: np.ndarray, prior) -> CurveFit:
    """One LR throughout: the LR area is the step count times a constant, so the schedule adds
    nothing the LR-agnostic fit (more laws, held-out weighting) lacks."""
    fit = fit_agnostic(x, y, prior=prior)
    fit.diagnostics.setdefault("flags", []).append(
        "constant LR over the whole schedule: LR-agnostic fit (the schedule adds nothing)")
    fit.diagnostics["anneal"] = {"in_schedule": False, "identifiable": False, "seen_fraction": 0.0,
                                 "source": "none: the LR never changes"}
    return fit


def _widened_for_conflict(prob: ScheduleProblem, sig: float, k: float, pri: Priors, law: str, post: dict,
                          context: dict, horizon: int) -> dict | None:
    """The alpha conflict (``posterior.alpha_conflict``) with the forecasts at the horizon under
    the prior and under the prior widened to the distance, and the sd that puts the widened
    one at the 90% edge; None when there is no conflict (or no widened fit).

    Early curves often look flatter than their asymptotic law (development curves at 10%, the
    GPT example at 25%), so the forecast keeps the prior's reading; the interval widens until
    the reading under the prior widened to the distance (type-II maximum likelihood of its
    scale) sits at the 90% edge.
    """
    conflict = alpha_conflict(post["coarse"], pri)
    if conflict is None:
        return None
    wide = Priors(**{**pri.__dict__, "alpha": (pri.alpha[0], conflict["widened_sd"])})
    post_w = posterior(prob, sig, k, wide, law, prob.FT)
    if post_w is None:
        return None
    f_prior = mixture_at(post["components"], context, horizon)
    f_wide = mixture_at(post_w["components"], context, horizon)
    conflict.update({"forecast_prior": f_prior, "forecast_widened": f_wide,
                     "sd": abs(math.log(f_wide / f_prior)) / CONFLICT_EDGE_Z
                     if f_wide > 0 and f_prior > 0 else 0.0})
    return conflict


def _anneal_report(pri: Priors, coef, FT: float, XT: float, cap: float, has_anneal: bool, seen: float,
                   identifiable: bool, flags: list[str]) -> dict:
    """``diagnostics["anneal"]``: whether and how the annealing term was identified, its drop at
    the horizon and share of the power-law part; appends the matching ``flags``."""
    anneal = {"in_schedule": bool(has_anneal), "seen_fraction": seen, "identifiable": bool(identifiable),
              "prior": pri.source, "drop_at_horizon": float(coef[2] * FT),
              "share_of_power_law_part": float(coef[2] * FT / (coef[1] * XT)) if coef[1] * XT > 0 else 0.0}
    if ANNEAL_MAX_SHARE * coef[1] - coef[2] * cap <= 1e-9 * max(coef[1], 1e-12) and coef[2] > 0:
        flags.append(f"annealing term at its cap ({ANNEAL_MAX_SHARE:.0%} of the power-law part): the "
                     "curve falls faster than this law explains")
    if pri.amp is not None:
        anneal["prior_amplitude"] = list(pri.amp)
    elif pri.kappa is not None and has_anneal:
        anneal["prior_ratio"] = [pri.ratio, pri.kappa[1]]
        anneal["convex_bound_ratio"] = pri.ratio_alt
    if not has_anneal:
        anneal["source"] = "none: the LR never falls after its peak within the horizon"
    elif identifiable:
        anneal["source"] = "data" if pri.source == "default" else "data and prior"
    else:
        anneal["source"] = "prior"
        flags.append(
            "annealing term not identifiable yet: the LR has not fallen within the fitted steps "
            f"({seen:.1%} of the annealing at the horizon seen); the forecast takes it from the "
            f"{'reference run' if pri.source.startswith('reference') else 'prior'} and the interval "
            "carries that prior's spread")
    return anneal


def _interval_calibration(pri: Priors, anneal_from_prior: bool, x_last: float, horizon: int,
                          conflict: dict | None) -> dict:
    """The interval multipliers of this fit (``calibration.py``: by regime and seen share),
    widened on one side when the data's alpha conflicts with the prior."""
    if pri.amp is not None and pri.source == "reference":
        calibration = reference_calibration(x_last / horizon)
    elif anneal_from_prior:
        calibration = prior_calibration(x_last / horizon)
    else:
        calibration = CALIBRATION
    calibration = dict(calibration)
    ext_T = calibration["k_fallback"] * math.log(horizon / x_last) if horizon > x_last else 0.0
    if conflict is not None and ext_T > 0:
        # one-sided: toward the widened reading, growing with the extrapolation distance
        # like the extrapolation term it scales (intervals.interval_terms)
        side = "k_below" if conflict["forecast_widened"] < conflict["forecast_prior"] else "k_above"
        calibration[side] = math.hypot(calibration["k"], calibration["k_spread"] * conflict["sd"] / ext_T)
    return calibration
