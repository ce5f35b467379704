"""``fit_forecast``: the forecaster's fit of one loss curve (what ``fit_curve`` runs).

Steps (constants: ``calibration.py``):

1. Points: the finite points with x > 0 and loss > 0 (a curve whose loss goes to zero or below
   is refused: its forecast works on the log of the loss); those before ``SKIP_FRACTION`` of
   the last seen x are left out (the early transient); the rest is averaged into at most
   ``MAX_BINS`` log-spaced bins.
2. Law and posterior (``grid.py``): ``L0 + A s**-alpha - B F_p``; p averaged over
   ``floor_powers``, with equal weights while the gain comes from the prior (the spread of p
   across recipes becomes width) and by evidence once the data inform it (``POWER_WEIGHTS``);
   the gain B informed by the data only once the seen points hold ``GAIN_SEEN_MIN`` of the
   decay feature at the horizon.
3. Forecast: the posterior median at every table knot (``forecast_table.py``).
4. Interval, per side, on the log scale: ``sd**2 = (k_post q)**2 + (k_bt bt)**2 +
   (k_drift drift)**2 + INTERVAL_FLOOR**2``:
   * q: the posterior's 5% (95%) point's distance from the median over 1.645;
   * bt (backtest): the fit refitted on the points up to ``BACKTEST_PREFIXES`` of the last
     seen x forecasts the last seen level; its log error is scaled by the law's predicted
     log-change still to go (median to the target against the fitted last level) over the
     prefix's predicted change to the last seen point, at most ``BACKTEST_CAP``; rms over
     the prefixes;
   * drift: log(forecast now / the prefix's forecast of the same target), rms, on the side the
     forecasts have been moving toward; scaled down for targets closer (in log x) than the
     prefix's end is to the last seen x (none at the data itself);
   * multipliers k per regime ("prior": the decay gain's spread is most of the posterior's;
     "data" otherwise) from ``calibration.FORECASTER``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ...errors import InvalidInputError
from .. import calibration as cal
from .. import forecast_table
from .. import schedule as sch
from ..calibration import FORECASTER, ForecastConstants
from ..curvefit import CurveFit, failed_fit
from ..plain import plain
from ..points import MIN_POINTS, clean_points, has_downward_trend, validate_inputs
from ..scheduled.features import schedule_features
from ..scheduled.storage import schedule_context
from ..stats import difference_noise
from .features import floor_drop_at, has_decay, lr_area_at
from .grid import PRUNE, Z90, pool, posterior, quantiles
from .law import LAW_NAME
from .priors import Priors, resolve_priors

POWER_WEIGHTS = "evidence"
"""How the fits over the floor exponents are pooled: "evidence" (equal weights while the gain
comes from its prior; by each fit's marginal likelihood once the data inform it) or "equal"
(fixed equal weights throughout, the research prototype). Out-of-set
(``benchmarks/forecast_experiments.py``, with ``BACKTEST_PREFIXES`` (0.7, 0.85)): LM mean of
median errors 1.11 / 1.09 / 0.57% at 10/25/50% seen against 1.11 / 1.15 / 0.59%;
lr_schedules at 50%: 0.68% error, width 4.1% (0.73%, 5.4%); algoperf at 50%: 10.9% (10.7%)."""

NEGATIVE_SHARE = 0.02
"""A curve with more than this share (and more than one) of its finite losses <= 0 is refused:
a loss that can reach zero or below cannot be forecast on the log scale. Fewer are dropped and
counted as glitches."""


def log_bins(x: np.ndarray, y: np.ndarray, lo: float, max_bins: int):
    """The points with x >= lo averaged into at most ``max_bins`` log-spaced bins:
    (mean x, mean loss, points per bin)."""
    keep = x >= lo
    x, y = x[keep], y[keep]
    if x.size <= max_bins:
        return x, y, np.ones(x.size)
    edges = np.geomspace(x[0], x[-1] * (1 + 1e-12), max_bins + 1)
    i = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max_bins - 1)
    n = np.bincount(i, minlength=max_bins).astype(float)
    ok = n > 0
    return (np.bincount(i, x, max_bins)[ok] / n[ok], np.bincount(i, y, max_bins)[ok] / n[ok], n[ok])


@dataclass
class Posterior:
    """One fit's pooled posterior nodes (over the floor exponents) and their forecasts."""

    bx: np.ndarray  # fitted bins
    by: np.ndarray
    bw: np.ndarray
    s_ref: float  # LR area (x without a schedule) at the last bin
    L_ref: float
    weight: np.ndarray  # per node
    mean: np.ndarray  # (nodes, targets)
    var: np.ndarray
    level_last: np.ndarray  # fitted level at the last bin, per node
    alpha: np.ndarray
    gain: np.ndarray
    L0: np.ndarray
    A: np.ndarray
    power: np.ndarray
    log_prior_gain: np.ndarray
    seen_share: float  # share of the decay feature at the horizon held by the fitted points
    gain_from_data: bool


class Curve:
    """One run's cleaned points and schedule: fits its prefixes (``posterior_at``)."""

    def __init__(self, x, y, feat: dict | None, horizon: float | None, skip: float):
        self.x, self.y, self.feat, self.horizon, self.skip = x, y, feat, horizon, skip
        self.decays = feat is not None and has_decay(feat)

    def area(self, x) -> np.ndarray:
        return lr_area_at(self.feat, x) if self.feat is not None else np.asarray(x, dtype=float)

    def posterior_at(self, upto: float, powers, priors: Priors, targets: np.ndarray,
                     prune: float = PRUNE) -> Posterior | None:
        """The pooled posterior of the points with x <= upto (bins, features, nodes over the
        floor exponents ``powers``) and its node forecasts at ``targets``; None when fewer
        than 4 bins remain."""
        m = self.x <= upto
        bx, by, bw = log_bins(self.x[m], self.y[m], self.skip * upto, cal.MAX_BINS)
        S = self.area(bx)
        ok = np.isfinite(S) & (S > 0)
        bx, by, bw, S = bx[ok], by[ok], bw[ok], S[ok]
        if bx.size < 4:
            return None
        s_ref = float(S[-1])
        s = S / s_ref
        L_ref = float(np.mean(by[-max(1, min(3, by.size // 4)):]))
        sT = self.area(targets) / s_ref
        parts, FTs, levels, used, seen = [], [], [], [], 0.0
        for p in powers:
            if self.decays:
                F_all = floor_drop_at(self.feat, np.r_[bx, targets, self.horizon], p)
                F, FT, FH = F_all[:bx.size], F_all[bx.size:-1], float(F_all[-1])
                share = float(F[-1] / FH) if FH > 0 else 0.0
                seen = max(seen, share)
                F_fit = F if share >= cal.GAIN_SEEN_MIN else np.zeros_like(F)
                nodes = posterior(s, F_fit, by, bw, L_ref, priors.alpha, priors.gain, priors.gain_loss, prune)
            else:
                F_fit, FT = np.zeros_like(bx), np.zeros_like(targets)
                nodes = posterior(s, F_fit, by, bw, L_ref, priors.alpha, None, prune=prune)
            if nodes is None:
                continue
            parts.append(nodes)
            FTs.append(FT)
            levels.append(nodes.L0 + nodes.A - nodes.gain * F_fit[-1])
            used.append(p)
        if not parts:
            return None
        nodes, rows = pool(parts)
        if POWER_WEIGHTS == "evidence" and nodes.gain_from_data and len(parts) > 1:
            le = np.array([q.log_evidence for q in parts])
            pw = np.exp(le - le.max())
            nodes.weight = nodes.weight * (pw / pw.sum() * len(parts))[rows]
        mean, var = nodes.at(sT, np.vstack(FTs), rows)
        return Posterior(bx, by, bw, s_ref, L_ref, nodes.weight, mean, var, np.concatenate(levels), nodes.alpha,
                         nodes.gain, nodes.L0, nodes.A, np.asarray(used, dtype=float)[rows], nodes.log_prior_gain,
                         seen, nodes.gain_from_data)


def _constants(calibration) -> ForecastConstants:
    if calibration is None:
        return FORECASTER
    if isinstance(calibration, ForecastConstants):
        return calibration
    if isinstance(calibration, dict):
        try:
            return ForecastConstants.from_dict(calibration)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"calibration must be the layout calibration_data.DERIVED holds: {exc!r}") from None
    raise InvalidInputError("calibration must be a ForecastConstants or a dict like calibration_data.DERIVED")


def _check_skip(skip_fraction) -> float:
    try:
        ok = 0.0 <= float(skip_fraction) < 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidInputError(f"skip_fraction must be in [0, 1), got {skip_fraction!r}")
    return float(skip_fraction)


def fit_forecast(x, loss, lr=None, prior=None, *, calibration=None,
                 skip_fraction: float = cal.SKIP_FRACTION) -> CurveFit:
    """Fit one loss curve and forecast it (see the module docstring; ``fit_curve`` documents
    the arguments). InvalidInputError only for invalid arguments."""
    t0 = time.perf_counter()
    constants = _constants(calibration)
    skip = _check_skip(skip_fraction)
    x_arr, y_arr = validate_inputs(x, loss)
    lr_in = horizon = None
    if lr is not None:
        lr_in = sch.as_schedule(lr)
        horizon = float(lr_in.size - 1)
        finite_x = x_arr[np.isfinite(x_arr)]
        if finite_x.size and finite_x.max() > horizon:
            raise InvalidInputError(
                f"lr must give the LR at every step up to the last loss point: lr has {lr_in.size} entries "
                f"(steps 0..{horizon:g}) but a loss is given at step {finite_x.max():g}")
    priors = resolve_priors(prior, constants, lr is not None)
    xc, yc, dropped = clean_points(x_arr, y_arr)
    diag = {"n_points": int(x_arr.size), "n_dropped": int(sum(dropped.values())),
            "dropped": {k: v for k, v in dropped.items() if v}, "flags": []}
    context = feat = None
    if lr_in is not None:
        context, lr_used = schedule_context(lr_in)
        feat = schedule_features(lr_used)
        diag["schedule"] = {"horizon": int(horizon), "peak_lr": float(feat["peak"]),
                            "warmup_steps": int(feat["warmup_end"]), "final_lr_over_peak": float(feat["u"][-1])}
    n_neg = dropped["loss_not_positive"]
    if n_neg > max(1.0, NEGATIVE_SHARE * (xc.size + n_neg)):
        return failed_fit("loss not positive", diag,
                          f"{n_neg} of {xc.size + n_neg} losses are <= 0: forecasts work on the log of the loss; "
                          "shift a loss that can go negative (a likelihood) by a constant first", context=context)
    if xc.size < MIN_POINTS or np.unique(xc).size < MIN_POINTS:
        diag["n_used"] = int(xc.size)
        return failed_fit("too few points", diag, f"{xc.size} usable points (distinct x > 0, loss > 0, finite), "
                          f"need {MIN_POINTS}", context=context)
    ax, ay, aw = log_bins(xc, yc, xc[0], 160)
    if not has_downward_trend(ax, ay, aw):
        return failed_fit("no downward trend", diag, "the loss of the last third of the curve (log x) is not "
                          "below the first third", context=context)
    curve = Curve(xc, yc, feat, horizon, skip)
    x_last = float(xc[-1])
    targets = forecast_table.knots(x_last, horizon)
    powers = tuple(sorted(constants.floor_powers)) if curve.decays else (constants.floor_powers[0],)
    post = curve.posterior_at(x_last, powers, priors, targets)
    n_fit = int((xc >= skip * x_last).sum())
    diag["n_used"] = n_fit
    diag["transient_cut"] = {"before_x": float(skip * x_last), "n_points": int(xc.size - n_fit)}
    if post is None:
        return failed_fit("too few points", diag, f"fewer than 4 bins of points after the early transient "
                          f"(x >= {skip:.0%} of the last seen x)", context=context)
    q05, f, q95 = quantiles(post.mean, post.var, post.weight)
    if not np.all(f > 0):  # only a decay gain larger than the loss left can do this
        bad = float(targets[int(np.argmax(~(f > 0)))])
        return failed_fit("forecast not positive", diag, f"the fitted law reaches a loss <= 0 by x = {bad:.6g}: "
                          "a loss that can reach zero cannot be forecast on the log scale", context=context)
    level_last = float(np.sum(post.weight * post.level_last))
    bt, drift = _backtest(curve, post, powers, priors, targets, f, level_last)
    regime, gain_share = _regime(post)
    k_post, k_bt, k_dr = constants.multipliers[regime]
    q_lo = np.where(q05 > 0, np.log(f / np.where(q05 > 0, q05, 1.0)) / Z90, 1.0)
    q_hi = np.log(q95 / f) / Z90
    dr_sd = np.sqrt(np.mean(np.square(drift), axis=0)) if drift else np.zeros_like(f)
    dr_sign = np.sign(np.mean(drift, axis=0)) if drift else np.zeros_like(f)
    bt_sd = np.sqrt(np.mean(np.square(bt), axis=0)) if bt else np.zeros_like(f)

    def side(q, d):
        return np.sqrt((k_post * q) ** 2 + (k_bt * bt_sd) ** 2 + (k_dr * d) ** 2 + cal.INTERVAL_FLOOR ** 2)

    sd_lo = side(np.maximum(q_lo, 0.0), np.where(dr_sign > 0, dr_sd, 0.0))
    sd_hi = side(np.maximum(q_hi, 0.0), np.where(dr_sign < 0, dr_sd, 0.0))

    main = _main_node(post)
    law, params = _main_params(post, main, feat is not None)
    main_at = post.mean[main]
    table = forecast_table.make_table(targets, np.log(f / main_at), sd_lo, sd_hi,
                                      axis_values=main_at if feat is None else None)
    extra = _diagnostics(post, priors, constants, regime, gain_share, curve, law, xc, yc, skip, x_last)
    flags = diag["flags"] + extra.pop("flags", [])
    diag.update(extra)
    diag["flags"] = flags
    diag["interval"] = {"at_x": float(targets[-1]), "posterior_sd_below": float(q_lo[-1]),
                        "posterior_sd_above": float(q_hi[-1]), "backtest_sd": float(bt_sd[-1]),
                        "drift_sd": float(dr_sd[-1]), "drift_side": "below" if dr_sign[-1] > 0 else
                        ("above" if dr_sign[-1] < 0 else "none"), "multipliers": [k_post, k_bt, k_dr],
                        "backtest_prefixes": len(bt)}
    diag["fit_seconds"] = float(time.perf_counter() - t0)
    fit = CurveFit(law, params, plain(diag, strict=True), [], {"method": "grid-posterior-v1"}, context,
                   float(post.bx[0]), x_last, table)
    return fit


def _backtest(curve: Curve, post: Posterior, powers, priors: Priors, targets, f, level_last):
    """Backtest errors scaled to the distance still to go, and drifts, per prefix (lists of
    arrays over the targets)."""
    bt, drift = [], []
    x_last = float(curve.x[-1])
    t_last, y_last = float(post.bx[-1]), float(post.by[-1])
    p_mid = (powers[len(powers) // 2],)
    to_go = np.abs(np.log(f / level_last)) + cal.BACKTEST_EPS if level_last > 0 else np.ones_like(f)
    for r in cal.BACKTEST_PREFIXES:
        up = r * x_last
        if (curve.x <= up).sum() < MIN_POINTS:
            continue
        pre = curve.posterior_at(up, p_mid, priors, np.r_[t_last, targets])
        if pre is None:
            continue
        (med,) = quantiles(pre.mean, pre.var, pre.weight, probs=(0.5,))
        # a prefix that forecasts no positive loss missed by a factor of 1000 (not skipped: it
        # is the backtest's most telling failure)
        med = np.maximum(med, 1e-3 * y_last)
        pre_level = max(float(np.sum(pre.weight * pre.level_last)), 1e-3 * y_last)
        gone = abs(math.log(med[0] / pre_level)) + cal.BACKTEST_EPS
        err = math.log(med[0] / y_last)
        bt.append(err * np.minimum(to_go / gone, cal.BACKTEST_CAP))
        # a target at the data has no drift left to come: scaled down to the log distance still
        # to go over the distance the forecasts moved across (held at 1 beyond it)
        ahead = np.log(np.maximum(targets, x_last) / x_last) / math.log(x_last / float(pre.bx[-1]))
        drift.append(np.log(f / med[1:]) * np.minimum(ahead, 1.0))
    return bt, drift


def _regime(post: Posterior) -> tuple[str, float]:
    """"prior" when the spread of the decay gain makes more than half the posterior variance of
    the forecast at the last knot, else "data"; and that share."""
    m, v, w = post.mean[:, -1], post.var[:, -1], post.weight
    mean = float(np.sum(w * m))
    total = float(np.sum(w * (v + (m - mean) ** 2)))
    _, g = np.unique(post.gain, return_inverse=True)
    wg = np.bincount(g, w)
    fg = np.bincount(g, w * m) / np.maximum(wg, 1e-300)
    gain_var = float(np.sum(wg * (fg - mean) ** 2))
    share = gain_var / total if total > 0 else 0.0
    return ("prior" if share > 0.5 else "data"), share


def _main_node(post: Posterior) -> int:
    """The heaviest node whose forecast is positive at every knot."""
    order = np.argsort(-post.weight, kind="stable")
    positive = np.all(post.mean > 0, axis=1)
    hit = order[positive[order]]
    return int(hit[0] if hit.size else order[0])


def _main_params(post: Posterior, i: int, with_schedule: bool) -> tuple[str, dict]:
    alpha = float(post.alpha[i])
    A = float(post.A[i] * post.s_ref ** alpha)
    if not with_schedule:
        return "saturating_power", {"E": float(post.L0[i]), "A": A, "alpha": alpha}
    return LAW_NAME, {"L0": float(post.L0[i]), "A": A, "alpha": alpha, "B": float(post.gain[i]),
                      "p": float(post.power[i]), **cal.MULTIPOWER_SHAPE}


def _diagnostics(post: Posterior, priors: Priors, constants: ForecastConstants, regime: str, gain_share: float,
                 curve: Curve, law: str, xc, yc, skip: float, x_last: float) -> dict:
    w = post.weight
    a_mean = float(np.sum(w * post.alpha))
    a_sd = float(math.sqrt(max(np.sum(w * (post.alpha - a_mean) ** 2), 0.0)))
    out = {"law": law, "n_bins": int(post.bx.size), "x_range": [float(post.bx[0]), x_last],
           "residual_scale_log": float(difference_noise(np.log(yc[xc >= skip * x_last]))),
           "posterior": {"alpha": [a_mean, a_sd], "regime": regime, "gain_variance_share": gain_share},
           "priors": {"alpha": list(priors.alpha), "source": priors.source,
                      "calibration_sets": list(constants.sets)}}
    lend = {"alpha": a_mean, "gain": None}
    if curve.decays:
        order = np.argsort(post.gain)
        cw = np.cumsum(w[order])
        g_med = float(post.gain[order][min(np.searchsorted(cw, 0.5), cw.size - 1)])
        out["posterior"]["gain"] = g_med
        out["posterior"]["rho"] = g_med / post.L_ref
        out["priors"]["gain"] = ({"center_nats": priors.gain_loss} if priors.gain_loss is not None
                                 else {"center_rho": math.exp(priors.gain.center)})
        out["priors"]["gain"].update({"log_sd": priors.gain.sd, "broad_weight": priors.gain.broad})
        out["priors"]["floor_powers"] = [float(p) for p in np.unique(post.power)]
        if post.gain_from_data:
            flat = w * np.exp(-post.log_prior_gain)
            lend["gain"] = float(np.sum(flat * post.gain) / np.sum(flat))
        source = "data" if post.gain_from_data else ("reference" if priors.source.startswith("reference") else "prior")
        out["decay"] = {"in_schedule": True, "seen_share": post.seen_share, "gain_from": source}
        if not post.gain_from_data:
            out["flags"] = [f"annealing term not identifiable yet: the fitted steps hold {post.seen_share:.1%} of the "
                            f"LR decay's effect at the horizon (< {cal.GAIN_SEEN_MIN:.0%}); the decay gain comes from "
                            f"the {'reference runs' if source == 'reference' else 'prior'} and the interval carries "
                            "its spread"]
    elif curve.feat is not None:
        out["decay"] = {"in_schedule": False, "seen_share": 0.0, "gain_from": "none: the LR never falls"}
    out["lend"] = lend
    return out
