"""Schedule-aware single-run fits: ``fit_curve(steps, loss, lr=lr)`` lands here.

When the learning rate at every optimizer step 0..horizon is known, the loss curve is
modelled in terms of the schedule instead of the step count (all LRs divided by the peak LR,
so every coefficient is "per unit of peak LR" and transfers between runs with different peak
LRs):

* ``tissue`` (default; Tissue et al. 2024, "Scaling law with learning rate annealing"):
  ``L(t) = L0 + A * S1(t)**-alpha - C * S2(t)``, S1 the LR area (steps at peak LR) and S2
  the momentum-weighted annealing area (``schedule.annealing_area``, momentum 0.999).
* ``multipower`` (Luo et al. 2025, the multi-power law):
  ``L(t) = L0 + A * S1(t)**-alpha - B * LD(t)`` with
  ``LD(t) = sum_k (u[k-1] - u[k]) * (1 - (1 + C u[k]**-gamma (S1(t) - S1(k)))**-beta)``.

Both are linear in (L0, A, amplitude) for a given alpha, which the fitter exploits: a profile
over alpha, with Gaussian priors, solved in closed form per alpha.

Identifiability and priors
--------------------------
Before the LR has fallen, the data say nothing about the annealing amplitude (C or B). The
fit then leans on a prior and says so in ``diagnostics`` ("annealing term not identifiable
yet"), and the interval carries the prior's spread. The default prior is a *ratio*: the
loss the schedule's annealing removes by the horizon T is about ``kappa = 0.4`` (sd 50%)
times the share of the peak LR removed by then, times the power-law part still left at T,
``A * S1(T)**-alpha``. Measured on the development curves (../shared/data, full-curve Tissue
fits, per unit of LR removed): 0.31-0.48 for WSD-style and linear-to-zero decays on both the
multipower LMs and the modded-nanogpt GPT-2 runs, 0.2-0.42 for the two-stage drops, 0.4-1.0
for cosine. A plain prior on C does not transfer: C (momentum 0.999) is 1.0e-4..1.5e-4 on
every multipower curve but 3e-4..8e-4 on the shorter modded-nanogpt runs. The ratio is the
shape prior in the spirit of Schaipp et al. 2025: with a tuned peak LR, the convex bound's
variance term (what annealing removes) is a fixed share of the suboptimality left, whatever
the recipe. Where the ratio and the absolute reading (C = 1.25e-4) disagree - long runs,
where little power-law loss is left but annealing still removes ~0.1 nats - the prior's sd is
widened until the absolute reading sits at its 90% edge.

The exponent has a prior alpha ~ N(0.5, 0.1) (full-curve fits: 0.42-0.63 on all development
curves): on short prefixes the data cannot tell L0 and alpha apart.

``prior=`` takes an earlier CurveFit of the same recipe (or its ``to_dict()``, or a list of
them): it lends alpha and, when its own annealing term was identified, the amplitude itself
(and, for multipower, the shape C, beta, gamma), as tight priors.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import schedule as sch
from .curve import MIN_POINTS, CurveFit, _jsonable, failed_fit, prepare_points, validate_inputs
from .errors import InvalidInputError
from .laws import LAWS, Law, register_law

# ----------------------------------------------------------------------------- defaults
ALPHA_PRIOR = (0.5, 0.1)
"""Gaussian prior (mean, sd) on alpha of the schedule-aware laws (see the module docstring)."""

ANNEAL_RATIO_PRIOR = (0.4, 0.5)
"""Prior on kappa, the annealing drop at the horizon over (share of the peak LR removed by
then) x (power-law part left there, A * S1(T)**-alpha): (mean, relative sd)."""

ANNEAL_C_ALTERNATIVE = 1.25e-4
"""The other reading of the development curves: the Tissue coefficient C (momentum 0.999, LR /
peak, nats) is 1.0e-4..1.5e-4 on every multipower curve, whatever the length. Where the
ratio prior and this absolute one disagree (long runs, where the power-law part left is small),
the prior's sd is widened until this alternative sits at its 90% edge."""

MULTIPOWER_SHAPE = {"C": 0.11, "beta": 0.59, "gamma": 0.64}
"""Multi-power shape relative to the peak LR: Luo et al. 2025's published 25M fit
(C = 2.07, beta = 0.583, gamma = 0.641 at peak LR 3e-4; C scales as peak**(1 - gamma))."""

SKIP_FRACTION = 0.25
"""Points in the first quarter of the seen steps are not fitted: early training falls faster
than any power law of the LR area (the transient), and biases alpha when kept."""

N_EFF_CAP = 30.0
"""Residuals of a long curve are not independent (data order, slow wiggles); the data term is
scaled as if the fit had at most this many independent points, so priors keep their say."""

ANNEAL_SEEN_MIN = 0.05
"""The annealing term counts as identifiable once the fitted steps hold this share of the
schedule's annealing feature at the horizon (below it, it comes from the prior)."""

CALIBRATION = {"k": 1.0, "gamma": 1.0, "k_spread": 0.8, "floor": 0.001, "k_fallback": 0.002}
"""Interval calibration (``curve.interval_terms``), fixed on the 38 development curves with a
known schedule at 10/25/50% seen: the posterior spread (parameters, alpha, prior) times
``k_spread``, a floor of 0.1% and 0.2% per unit of log-step extrapolation (the power law in
the LR area is itself only an approximation). In-sample coverage of the 90% interval: 92%,
89%, 95% (see benchmarks/extrapolation.py)."""

REFERENCE_AMP_SD = 0.15
"""Least relative sd of an amplitude lent by a reference run: C varies by +-10-15% across the
schedules of one recipe (multipower 25M: 1.0-1.4e-4; 100M: 1.2-1.5e-4)."""

REFERENCE_ALPHA_SD = 0.03
"""Least sd of an alpha lent by a reference run."""

SCHEDULE_LAWS = ("tissue", "multipower")


# ----------------------------------------------------------------------------- features
_FEATURE_CACHE: "OrderedDict[tuple, dict]" = OrderedDict()


def _lr_key(lr: np.ndarray) -> tuple:
    stride = max(1, lr.size // 257)
    return (lr.size, float(lr.sum()), lr[::stride].tobytes())


def _features(lr: np.ndarray) -> dict:
    """Peak-normalised schedule features of one LR array (cached: fits and forecasts reuse them)."""
    key = _lr_key(lr)
    hit = _FEATURE_CACHE.get(key)
    if hit is not None:
        _FEATURE_CACHE.move_to_end(key)
        return hit
    u, peak = sch.peak_normalized(lr)
    feat = {"u": u, "peak": peak, "S1": sch.lr_area(u), "warmup_end": sch.warmup_end(u),
            "horizon": u.size - 1}
    _FEATURE_CACHE[key] = feat
    while len(_FEATURE_CACHE) > 8:
        _FEATURE_CACHE.popitem(last=False)
    return feat


def _s2(feat: dict, momentum: float) -> np.ndarray:
    key = ("S2", round(float(momentum), 12))
    if key not in feat:
        feat[key] = sch.annealing_area(feat["u"], momentum)
    return feat[key]


def _ld_at(feat: dict, shape: dict, x) -> np.ndarray:
    """Unit multi-power drop at (possibly fractional) steps x; NaN beyond the schedule.

    Evaluated only where asked (linear between the two neighbouring steps), never on the
    whole horizon: a million-step schedule costs what its few requested steps cost.
    """
    if "chunks" not in feat:
        feat["chunks"] = sch.drop_chunks(feat["u"])
    x = np.asarray(x, dtype=float)
    inside = (x >= 0) & (x <= feat["horizon"])
    xc = np.where(inside, x, 0.0)
    lo = np.floor(xc).astype(np.int64)
    hi = np.minimum(lo + 1, feat["horizon"])
    steps, inv = np.unique(np.concatenate([lo.ravel(), hi.ravel()]), return_inverse=True)
    vals = sch.multipower_drop(feat["chunks"], steps, shape["C"], shape["beta"], shape["gamma"])[inv]
    v_lo, v_hi = vals[: lo.size].reshape(x.shape), vals[lo.size:].reshape(x.shape)
    out = v_lo + (xc - lo) * (v_hi - v_lo)
    return np.where(inside, out, np.nan)


def _at(arr: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Feature values at (possibly fractional) steps x; NaN beyond the schedule."""
    x = np.asarray(x, dtype=float)
    grid = np.arange(arr.size, dtype=float)
    out = np.interp(x, grid, arr)
    return np.where((x >= 0) & (x <= arr.size - 2), out, np.nan)


def _ctx_lr(context) -> np.ndarray:
    if not context or context.get("lr") is None:
        raise InvalidInputError("schedule-aware laws need context={'lr': [...]} (LR at every step)")
    return np.asarray(context["lr"], dtype=float)


# ----------------------------------------------------------------------------- the laws
def _powerlaw(S1x: np.ndarray, alpha: float) -> np.ndarray:
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return np.where(S1x > 0, np.exp(-alpha * np.log(np.maximum(S1x, 1e-300))), np.nan)


def _tissue_eval(x, p, context=None):
    feat = _features(_ctx_lr(context))
    S1x = _at(feat["S1"], x)
    S2x = _at(_s2(feat, p.get("momentum", sch.DEFAULT_ANNEAL_MOMENTUM)), x)
    return p["L0"] + p["A"] * _powerlaw(S1x, p["alpha"]) - p["C"] * S2x


def _tissue_basis(xn, theta, context=None):
    (alpha,) = theta
    feat = _features(_ctx_lr(context))
    return [1.0, _powerlaw(_at(feat["S1"], xn), alpha),
            -_at(_s2(feat, sch.DEFAULT_ANNEAL_MOMENTUM), xn)]


def _tissue_params(coef, theta, x_scale):
    L0, A, C = coef
    return {"L0": float(L0), "A": float(A), "alpha": float(theta[0]), "C": float(C),
            "momentum": sch.DEFAULT_ANNEAL_MOMENTUM}


def _mp_eval(x, p, context=None):
    feat = _features(_ctx_lr(context))
    S1x = _at(feat["S1"], x)
    LDx = _ld_at(feat, p, x)
    return p["L0"] + p["A"] * _powerlaw(S1x, p["alpha"]) - p["B"] * LDx


def _mp_basis(xn, theta, context=None):
    (alpha,) = theta
    feat = _features(_ctx_lr(context))
    return [1.0, _powerlaw(_at(feat["S1"], xn), alpha), -_ld_at(feat, MULTIPOWER_SHAPE, xn)]


def _mp_params(coef, theta, x_scale):
    L0, A, B = coef
    return {"L0": float(L0), "A": float(A), "alpha": float(theta[0]), "B": float(B), **MULTIPOWER_SHAPE}


def _register() -> None:
    common = dict(linear_lower=(0.0, 0.0, 0.0), nonlinear=("alpha",), bounds=((0.05, 1.5),),
                  starts=((0.5,),), asymptote=None, decreasing=False, uses_context=True,
                  default_prior={"alpha": ALPHA_PRIOR})
    laws = [
        Law(name="tissue",
            formula="L0 + A * S1(t)**-alpha - C * S2(t)  (S1: LR area, S2: annealing area; LR / peak)",
            param_names=("L0", "A", "alpha", "C", "momentum"), evaluate=_tissue_eval,
            linear=("L0", "A", "C"), basis=_tissue_basis, to_params=_tissue_params, **common),
        Law(name="multipower",
            formula="L0 + A * S1(t)**-alpha - B * LD(t; C, beta, gamma)  (LR / peak)",
            param_names=("L0", "A", "alpha", "B", "C", "beta", "gamma"), evaluate=_mp_eval,
            linear=("L0", "A", "B"), basis=_mp_basis, to_params=_mp_params, **common),
    ]
    for law in laws:
        if law.name not in LAWS:
            register_law(law)


_register()


# ----------------------------------------------------------------------------- priors
@dataclass
class _Priors:
    alpha: tuple[float, float]
    amp: tuple[float, float] | None  # direct (mean, sd) on the amplitude, or None
    kappa: tuple[float, float] | None  # (mean, relative sd) of the annealing ratio
    momentum: float
    shape: dict[str, float]
    source: str
    drop_fraction: float = 1.0  # share of the peak LR removed by the horizon (set per fit)
    alt_drop: float = 0.0  # annealing drop at the horizon under ANNEAL_C_ALTERNATIVE (nats)


def _as_fit_dicts(prior) -> list[dict] | None:
    """The reference fits in ``prior`` as dicts, or None when prior is a parameter-prior dict."""
    if prior is None:
        return None
    items = list(prior) if isinstance(prior, (list, tuple)) else [prior]
    out = []
    for item in items:
        if isinstance(item, CurveFit):
            out.append(item.to_dict())
        elif isinstance(item, dict) and "law" in item and "params" in item:
            out.append(item)
        else:
            return None if len(items) == 1 and isinstance(item, dict) else _bad_prior()
    return out


def _bad_prior():
    raise InvalidInputError(
        "prior must be a CurveFit, its to_dict(), a list of those, or a dict "
        "{parameter: (mean, sd)} (parameters: alpha, C, B, kappa)")


def _pair(name: str, spec) -> tuple[float, float]:
    try:
        mu, sd = (float(v) for v in spec)
    except (TypeError, ValueError):
        raise InvalidInputError(f"prior[{name!r}] must be a (mean, sd) pair of numbers") from None
    if not (math.isfinite(mu) and math.isfinite(sd) and sd > 0):
        raise InvalidInputError(f"prior[{name!r}] needs a finite mean and a positive sd")
    return mu, sd


def _combine(estimates: list[tuple[float, float]]) -> tuple[float, float]:
    """Precision-weighted mean and sd of independent (mean, sd) estimates."""
    w = np.array([1.0 / sd**2 for _, sd in estimates])
    mu = float(np.sum(w * np.array([m for m, _ in estimates])) / w.sum())
    return mu, float(1.0 / math.sqrt(w.sum()))


def _resolve_priors(prior, law_name: str, momentum: float | None) -> tuple[_Priors, str]:
    """Priors for this fit, and the law to use (a reference fit decides the law)."""
    refs = _as_fit_dicts(prior)
    mom = sch.DEFAULT_ANNEAL_MOMENTUM if momentum is None else float(momentum)
    pri = _Priors(ALPHA_PRIOR, None, ANNEAL_RATIO_PRIOR, mom, dict(MULTIPOWER_SHAPE), "default")
    if refs is None:
        if prior:
            known = {"alpha", "C", "B", "kappa"}
            for name, spec in prior.items():
                if name not in known:
                    raise InvalidInputError(f"unknown prior parameter {name!r} (known: {sorted(known)})")
                if name == "alpha":
                    pri.alpha = _pair(name, spec)
                elif name == "kappa":
                    pri.kappa = _pair(name, spec)
                elif (name == "C" and law_name == "tissue") or (name == "B" and law_name == "multipower"):
                    pri.amp = _pair(name, spec)
                    pri.kappa = None
            pri.source = "user"
        return pri, law_name
    if not refs:
        _bad_prior()
    ref_laws = {r["law"] for r in refs if r.get("law") in SCHEDULE_LAWS}
    if not ref_laws:
        raise InvalidInputError("a reference prior must be a schedule-aware fit (law tissue or multipower)")
    law = law_name if law_name in ref_laws else sorted(ref_laws)[0]
    alphas, amps = [], []
    for r in refs:
        if r.get("law") != law:
            continue
        p = r["params"]
        post = (r.get("diagnostics") or {}).get("posterior_sd") or {}
        anneal = (r.get("diagnostics") or {}).get("anneal") or {}
        alphas.append((float(p["alpha"]), max(float(post.get("alpha") or 0.0), REFERENCE_ALPHA_SD)))
        amp_name = "C" if law == "tissue" else "B"
        if anneal.get("identifiable"):
            a = float(p[amp_name])
            amps.append((a, max(float(post.get(amp_name) or 0.0), REFERENCE_AMP_SD * abs(a), 1e-12)))
            if law == "tissue":
                mom = float(p.get("momentum", mom))
            else:
                pri.shape = {k: float(p[k]) for k in ("C", "beta", "gamma")}
    pri.alpha = _combine(alphas)
    if amps:
        pri.amp = _combine(amps)
        pri.kappa = None
    pri.momentum = mom
    pri.source = "reference" if amps else "reference (alpha only: its annealing was not identified)"
    return pri, law


# ----------------------------------------------------------------------------- the fitter
ALPHA_GRID = np.linspace(0.05, 1.5, 146)


@dataclass
class _Solution:
    alpha: float
    coef: np.ndarray  # L0, A, amplitude
    cov: np.ndarray  # posterior covariance of coef given alpha (k-scaled data term)
    objective: float  # -2 log posterior (up to a constant)
    log_evidence: float  # -objective/2 - log det(G)/2 : Laplace weight of this alpha


def _solve_alpha(alpha, S1pts, F, y, w, sig2, k, S1T, FT, pri: _Priors, has_anneal: bool):
    """MAP (L0, A, amp) for one alpha with bounds A >= 0, amp >= 0; None if infeasible."""
    X = np.column_stack([np.ones_like(y), _powerlaw(S1pts, alpha), -F])
    Xw = X * (w * k / sig2)[:, None]
    G0 = X.T @ Xw
    b0 = Xw.T @ y
    XT = float(_powerlaw(np.array([S1T]), alpha)[0])
    G = G0.copy()
    b = b0.copy()
    prior_rows: list[tuple[np.ndarray, float, float]] = []  # (row, target, sd)
    if not has_anneal:
        G[2, 2] += 1e12  # no LR drop anywhere in the horizon: amplitude pinned at 0
    elif pri.amp is not None:
        prior_rows.append((np.array([0.0, 0.0, 1.0]), pri.amp[0], pri.amp[1]))
    elif pri.kappa is not None:
        # amp * F(T) ~ kappa * (LR fraction removed) * A * S1(T)^-alpha; sd: kappa's own spread,
        # widened until the absolute alternative (C0 per peak-LR step) lies at the 90% edge
        A_guess = max(np.linalg.lstsq(X[:, :2] * np.sqrt(w)[:, None], y * np.sqrt(w), rcond=None)[0][1], 0.0)
        ratio = pri.kappa[0] * pri.drop_fraction
        center = ratio * A_guess * XT
        sd = math.hypot(pri.kappa[1] * center, (pri.alt_drop - center) / 1.645)
        prior_rows.append((np.array([0.0, -ratio * XT, FT]), 0.0, max(sd, 1e-6)))
    for row, target, sd in prior_rows:
        G += np.outer(row, row) / sd**2
        b += row * target / sd**2
    best = None
    # every coefficient is >= 0 (a loss floor, a falling power law, an annealing that lowers
    # the loss): active sets, the unconstrained one first
    for free in ((0, 1, 2), (0, 1), (0, 2), (1, 2), (0,), (1,), (2,)):
        idx = list(free)
        coef = np.zeros(3)
        try:
            coef[idx] = np.linalg.solve(G[np.ix_(idx, idx)], b[idx])
        except np.linalg.LinAlgError:
            continue
        if np.any(coef < -1e-12) or coef[0] + coef[1] * XT - coef[2] * FT <= 0:
            continue  # infeasible, or a forecast at the horizon that is not a loss
        r = y - X @ coef
        obj = float(np.sum(w * r * r) * k / sig2)
        for row, target, sd in prior_rows:
            obj += float((row @ coef - target) / sd) ** 2
        if best is None or obj < best[1]:
            best = (coef, obj, idx)
        if len(idx) == 3:
            break  # the unconstrained solution is feasible: it is the optimum
    if best is None:
        return None
    coef, obj, idx = best
    obj += ((alpha - pri.alpha[0]) / pri.alpha[1]) ** 2
    cov = np.zeros((3, 3))
    try:
        Gi = np.linalg.inv(G[np.ix_(idx, idx)])
        cov[np.ix_(idx, idx)] = Gi
        sign, logdet = np.linalg.slogdet(G[np.ix_(idx, idx)])
    except np.linalg.LinAlgError:
        logdet = 0.0
    return _Solution(float(alpha), coef, cov, obj, -0.5 * obj - 0.5 * float(logdet))


def _admissible(center: np.ndarray, step: np.ndarray, XT: float, FT: float) -> np.ndarray:
    """center + step, the step halved (up to 6 times) until the point forecasts a positive
    loss at the horizon with non-negative L0 and A (sigma points of the interval)."""
    for _ in range(6):
        c = center + step
        if c[0] >= 0 and c[1] >= 0 and c[0] + c[1] * XT - c[2] * FT > 0:
            return c
        step = 0.5 * step
    return center.copy()


def _profile(S1pts, F, y, w, sig2, k, S1T, FT, pri, has_anneal, grid=ALPHA_GRID):
    sols = []
    for a in grid:
        s = _solve_alpha(a, S1pts, F, y, w, sig2, k, S1T, FT, pri, has_anneal)
        if s is not None:
            sols.append(s)
    return sols


def _robust_sigma(S1pts, y, w) -> float:
    """Noise sd per unit weight from the best plain power-law fit (MAD of weighted residuals)."""
    best = None
    sw = np.sqrt(w)
    for a in ALPHA_GRID[::5]:
        X = np.column_stack([np.ones_like(y), _powerlaw(S1pts, a)])
        coef, *_ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
        r = (y - X @ coef) * sw
        sse = float(r @ r)
        if best is None or sse < best[0]:
            best = (sse, r)
    r = best[1]
    s = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    return max(s, 1e-4 * float(np.median(y)))


def _anneal_feature(feat, law, pri: _Priors, x, horizon: int) -> tuple[np.ndarray, float]:
    """The annealing feature at the fitted steps x and at the horizon."""
    if law == "tissue":
        S2 = _s2(feat, pri.momentum)
        return _at(S2, x), float(S2[horizon])
    vals = _ld_at(feat, pri.shape, np.append(x, float(horizon)))
    return vals[:-1], float(vals[-1])


def _search_shape(feat, x, y, w, pri: _Priors, horizon: int):
    """Multi-power shape (C, beta, gamma): fitted on a small grid around the published shape
    when the fitted steps hold enough of the annealing to tell shapes apart, else kept."""
    base = dict(pri.shape)
    if "chunks" not in feat:
        feat["chunks"] = sch.drop_chunks(feat["u"])
    t_pts = np.append(np.round(x).astype(np.int64), horizon)
    ld0 = sch.multipower_drop(feat["chunks"], t_pts, base["C"], base["beta"], base["gamma"])
    if ld0[-1] <= 0 or ld0[-2] / ld0[-1] < 0.3:
        return base, "published shape (the annealing seen so far cannot tell shapes apart)"
    S1pts = _at(feat["S1"], x)
    sig = _robust_sigma(S1pts, y, w)
    k = min(1.0, N_EFF_CAP / float(w.sum()))
    S1T = float(feat["S1"][horizon])
    best = None
    for cm in (0.3, 1.0, 3.0):
        for bm in (0.6, 1.0, 1.6):
            for dg in (-0.2, 0.0, 0.2):
                shape = {"C": base["C"] * cm, "beta": base["beta"] * bm, "gamma": base["gamma"] + dg}
                ld = sch.multipower_drop(feat["chunks"], t_pts, shape["C"], shape["beta"], shape["gamma"])
                sols = _profile(S1pts, ld[:-1], y, w, sig * sig, k, S1T, float(ld[-1]), pri, True,
                                grid=ALPHA_GRID[::5])
                if sols:
                    obj = min(s.objective for s in sols)
                    if best is None or obj < best[0]:
                        best = (obj, shape)
    if best is None:
        return base, "published shape"
    return best[1], "fitted on a grid around the published shape"


def _params(law: str, coef, alpha, pri: _Priors) -> dict[str, float]:
    L0, A, amp = (float(c) for c in coef)
    if law == "tissue":
        return {"L0": L0, "A": A, "alpha": float(alpha), "C": amp, "momentum": float(pri.momentum)}
    return {"L0": L0, "A": A, "alpha": float(alpha), "B": amp, **{k: float(v) for k, v in pri.shape.items()}}


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
        prior: None (defaults of this module), an earlier schedule-aware CurveFit of the same
            recipe (or its ``to_dict()``, or a list of them) to lend alpha and the annealing
            parameters, or ``{name: (mean, sd)}`` for alpha, C (tissue), B (multipower) or
            kappa (annealing ratio; sd relative).
        law: "tissue" (default) or "multipower".
        anneal_momentum: momentum of the tissue law's annealing area (default 0.999).
        skip_fraction: fraction of the seen steps, from the start, left out of the fit.

    Returns:
        CurveFit whose ``predict(step)`` forecasts any step up to the horizon (NaN beyond);
        ``diagnostics["anneal"]`` says whether the annealing term was identified, and
        ``diagnostics["flags"]`` carries "annealing term not identifiable yet: ..." when it
        came from the prior. InvalidInputError only for invalid arguments.
    """
    t0 = time.perf_counter()
    if law is None and laws:
        named = [n for n in laws if n in SCHEDULE_LAWS]
        law = named[0] if named else None
    law = law or "tissue"
    if law not in SCHEDULE_LAWS:
        raise InvalidInputError(f"law must be one of {SCHEDULE_LAWS} when lr is given, got {law!r}")
    if not 0.0 <= float(skip_fraction) < 1.0:
        raise InvalidInputError(f"skip_fraction must be in [0, 1), got {skip_fraction!r}")
    lr_arr = sch.as_schedule(lr)
    x_arr, y_arr = validate_inputs(steps, loss)
    horizon = lr_arr.size - 1
    finite_x = x_arr[np.isfinite(x_arr)]
    if finite_x.size and finite_x.max() > horizon:
        raise InvalidInputError(
            f"lr must give the LR at every step up to the last loss point: lr has {lr_arr.size} "
            f"entries (steps 0..{horizon}) but a loss is given at step {finite_x.max():g}")
    pri, law = _resolve_priors(prior, law, anneal_momentum)
    feat = _features(lr_arr)
    if np.all(np.abs(feat["u"] - 1.0) <= 1e-12) and (prior is None or set(prior) <= {"alpha"}):
        # one LR throughout: the LR area is the step count times a constant, so the
        # schedule adds nothing the LR-agnostic fit (more laws, held-out weighting) lacks
        from .curve import fit_curve

        fit = fit_curve(x_arr, y_arr, prior=prior)
        fit.diagnostics.setdefault("flags", []).append(
            "constant LR over the whole schedule: LR-agnostic fit (the schedule adds nothing)")
        fit.diagnostics["anneal"] = {"in_schedule": False, "identifiable": False, "seen_fraction": 0.0,
                                     "source": "none: the LR never changes"}
        return fit
    context = {"lr": lr_arr.tolist()}

    prep = prepare_points(x_arr, y_arr)
    diag = dict(prep.diagnostics)
    diag["schedule"] = {"horizon": int(horizon), "peak_lr": feat["peak"],
                        "warmup_steps": int(feat["warmup_end"]),
                        "final_lr_over_peak": float(feat["u"][-1])}
    if prep.reason:
        return failed_fit(prep.reason, diag, prep.detail, context=context)
    x, y, w = prep.x, prep.y, prep.w
    keep = (x > feat["warmup_end"]) & (x >= skip_fraction * x[-1])
    n_lr_warm = int(np.sum(x <= feat["warmup_end"]))
    if n_lr_warm:
        diag["lr_warmup_cut"] = {"n_points": int(w[x <= feat["warmup_end"]].sum()),
                                 "before_step": int(feat["warmup_end"] + 1)}
    n_skip = int(np.sum((x > feat["warmup_end"]) & ~keep))
    if n_skip:
        diag["transient_cut"] = {"n_points": int(w[(x > feat["warmup_end"]) & ~keep].sum()),
                                 "before_step": float(skip_fraction * x[-1])}
    x, y, w = x[keep], y[keep], w[keep]
    diag["n_used"] = int(w.sum())
    if x.size < MIN_POINTS:
        return failed_fit("too few points", diag,
                          f"{x.size} points after the LR warm-up and the early transient, need {MIN_POINTS}",
                          context=context)

    shape_note = None
    if law == "multipower" and pri.source == "default":
        pri.shape, shape_note = _search_shape(feat, x, y, w, pri, horizon)
    pri.drop_fraction = float(max(0.0, 1.0 - feat["u"][horizon]))
    pri.alt_drop = ANNEAL_C_ALTERNATIVE * float(_s2(feat, sch.DEFAULT_ANNEAL_MOMENTUM)[horizon])
    S1pts = _at(feat["S1"], x)
    F, FT = _anneal_feature(feat, law, pri, x, horizon)
    S1T = float(feat["S1"][horizon])
    has_anneal = FT > 1e-12 * max(S1T, 1.0)
    seen = float(F[-1] / FT) if has_anneal else 0.0
    identifiable = has_anneal and seen >= ANNEAL_SEEN_MIN

    sig = _robust_sigma(S1pts, y, w)
    k = min(1.0, N_EFF_CAP / float(w.sum()))
    sols = _profile(S1pts, F, y, w, sig * sig, k, S1T, FT, pri, has_anneal)
    if not sols:
        return failed_fit("no law could be fitted", diag, "no admissible alpha (A >= 0, amplitude >= 0)",
                          context=context)
    # refine alpha around the best grid point
    best_i = int(np.argmin([s.objective for s in sols]))
    a0 = sols[best_i].alpha
    fine = np.clip(a0 + np.linspace(-0.01, 0.01, 11), ALPHA_GRID[0], ALPHA_GRID[-1])
    sols += _profile(S1pts, F, y, w, sig * sig, k, S1T, FT, pri, has_anneal, grid=fine)
    best = min(sols, key=lambda s: s.objective)

    # posterior over alpha (Laplace weights on the grid) -> 3 Gauss-Hermite nodes
    grid_sols = [s for s in sols if s.alpha in set(ALPHA_GRID.tolist())] or sols
    le = np.array([s.log_evidence for s in grid_sols])
    pw = np.exp(le - le.max())
    pw /= pw.sum()
    al = np.array([s.alpha for s in grid_sols])
    a_mean = float(np.sum(pw * al))
    a_sd = float(np.sqrt(np.sum(pw * (al - a_mean) ** 2)))
    nodes = [(best, 2.0 / 3.0)]
    if a_sd > 1e-4:
        for sgn in (-1.0, 1.0):
            a = float(np.clip(best.alpha + sgn * math.sqrt(3.0) * a_sd, ALPHA_GRID[0], ALPHA_GRID[-1]))
            s = _solve_alpha(a, S1pts, F, y, w, sig * sig, k, S1T, FT, pri, has_anneal)
            if s is not None:
                nodes.append((s, 1.0 / 6.0))
    total = sum(wt for _, wt in nodes)

    def XT_of(alpha):
        return float(_powerlaw(np.array([S1T]), alpha)[0])

    components = []
    for s, wt in nodes:
        # sigma points of the linear coefficients' Gaussian posterior at this alpha
        cov = 0.5 * (s.cov + s.cov.T)
        vals, vecs = np.linalg.eigh(cov)
        dirs = [vecs[:, i] * math.sqrt(max(vals[i], 0.0) * 3.0) for i in range(3) if vals[i] > 0]
        pts = [_admissible(s.coef, d, XT_of(s.alpha), FT) for d in dirs]
        pts += [_admissible(s.coef, -d, XT_of(s.alpha), FT) for d in dirs]
        if not pts:
            pts = [s.coef]
        for c in pts:
            components.append({"law": law, "params": _params(law, c, s.alpha, pri),
                               "weight": wt / total / len(pts)})

    params = _params(law, best.coef, best.alpha, pri)
    amp_name = "C" if law == "tissue" else "B"
    amp_sd = float(math.sqrt(max(best.cov[2, 2], 0.0)))
    diag["law"] = law
    diag["posterior_sd"] = {"alpha": a_sd, amp_name: amp_sd,
                            "L0": float(math.sqrt(max(best.cov[0, 0], 0.0)))}
    diag["residual_scale"] = float(sig)
    diag["n_eff"] = float(min(w.sum(), N_EFF_CAP))
    flags = list(diag.get("flags", []))
    anneal = {"in_schedule": bool(has_anneal), "seen_fraction": seen, "identifiable": bool(identifiable),
              "prior": pri.source,
              "drop_at_horizon": float(best.coef[2] * FT)}
    if pri.amp is not None:
        anneal["prior_amplitude"] = list(pri.amp)
    elif pri.kappa is not None and has_anneal:
        anneal["prior_ratio"] = list(pri.kappa)
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
    if pri.source != "default":
        flags.append(f"prior: {pri.source}")
    if shape_note:
        anneal["shape"] = shape_note
    diag["anneal"] = anneal
    diag["flags"] = flags
    diag["fit_seconds"] = float(time.perf_counter() - t0)
    uncertainty = {"method": "schedule-posterior-v1", "noise_sd": 0.0, "holdout_err": math.nan,
                   "holdout_dist": math.nan, "calibration": dict(CALIBRATION)}
    fit = CurveFit(law, params, diag, components, uncertainty, context, float(x[0]), float(x[-1]))
    fit.diagnostics = _jsonable(diag)  # JSON-safe, like every CurveFit
    return fit
