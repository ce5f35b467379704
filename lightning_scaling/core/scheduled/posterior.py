"""The posterior of one schedule-aware fit: the forecast mixture (Gauss-Hermite nodes in
alpha x sigma points of the linear coefficients), the data's own alpha when it conflicts with
the prior, and the multi-power shape search."""

from __future__ import annotations

import math

import numpy as np

from .. import schedule as sch
from ..calibration import ALPHA_CONFLICT_Z, ANNEAL_MAX_SHARE, N_EFF_CAP
from ..laws import LAWS
from .features import anneal_at
from .laws import AMP_NAME
from .priors import Priors
from .solver import (
    ALPHA_GRID,
    Profile,
    ScheduleProblem,
    map_index,
    profile_alpha,
    robust_sigma,
)


def anneal_feature(feat, law, pri: Priors, x, horizon: int):
    """The annealing feature at the fitted steps x and at the horizon, and the steps (with
    their LR area and feature values) where the annealing cap is checked."""
    cap_steps = np.unique(np.r_[np.linspace(0, horizon, 257).round(), horizon]).astype(np.int64)
    cap_steps = cap_steps[cap_steps > 0]
    params = {"momentum": pri.momentum, **pri.shape}
    vals = anneal_at(law, feat, params, np.concatenate([x, [float(horizon)], cap_steps.astype(float)]))
    vals = np.nan_to_num(vals)
    return vals[: x.size], float(vals[x.size]), feat["S1"][cap_steps], vals[x.size + 1:]


def search_shape(feat, prob: ScheduleProblem, x, pri: Priors, horizon: int):
    """Multi-power shape (C, beta, gamma): fitted on a small grid around the published shape
    when the fitted steps hold enough of the annealing to tell shapes apart, else kept."""
    base = dict(pri.shape)
    if "chunks" not in feat:
        feat["chunks"] = sch.drop_chunks(feat["u"])
    t_pts = np.append(np.round(x).astype(np.int64), horizon)
    ld0 = sch.multipower_drop(feat["chunks"], t_pts, base["C"], base["beta"], base["gamma"])
    if ld0[-1] <= 0 or ld0[-2] / ld0[-1] < 0.3:
        return base, "published shape (the annealing seen so far cannot tell shapes apart)"
    sig = robust_sigma(prob.S1, prob.y, prob.w)
    k = min(1.0, N_EFF_CAP / float(prob.w.sum()))
    best = None
    for cm in (0.3, 1.0, 3.0):
        for bm in (0.6, 1.0, 1.6):
            for dg in (-0.2, 0.0, 0.2):
                shape = {"C": base["C"] * cm, "beta": base["beta"] * bm, "gamma": base["gamma"] + dg}
                ld = sch.multipower_drop(feat["chunks"], t_pts, shape["C"], shape["beta"], shape["gamma"])
                trial = ScheduleProblem(prob.S1, ld[:-1], prob.y, prob.w, prob.S1T, float(ld[-1]),
                                 prob.cap_S1[-1:], np.array([float(ld[-1])]), True)
                obj = np.min(profile_alpha(trial, ALPHA_GRID[::5], sig * sig, k, pri).objective)
                if np.isfinite(obj) and (best is None or obj < best[0]):
                    best = (obj, shape)
    if best is None:
        return base, "published shape"
    return best[1], "fitted on a grid around the published shape"


def law_params(law: str, coef, alpha, pri: Priors) -> dict[str, float]:
    L0, A, amp = (float(c) for c in coef)
    p = {"L0": L0, "A": A, "alpha": float(alpha), AMP_NAME[law]: amp}
    if law == "tissue":
        p["momentum"] = float(pri.momentum)
    elif law == "multipower":
        p.update({k: float(v) for k, v in pri.shape.items()})
    return p


def _admissible(center: np.ndarray, step: np.ndarray, XT: float, FT: float, cap: float) -> np.ndarray:
    """center + step, the step halved (up to 6 times) until the point is admissible (L0, A,
    amp >= 0, annealing within its cap, a positive forecast at the horizon): sigma points."""
    for _ in range(6):
        c = center + step
        if (c.min() >= 0 and ANNEAL_MAX_SHARE * c[1] - c[2] * cap >= 0
                and c[0] + c[1] * XT - c[2] * FT > 0):
            return c
        step = 0.5 * step
    return center.copy()


def posterior(prob: ScheduleProblem, sig: float, k: float, pri: Priors, law: str, FT: float) -> dict | None:
    """Posterior of one fit under the priors ``pri``: the alpha profile on the grid (coarse),
    the MAP (profile, index), the posterior sd of alpha, and the mixture members (3
    Gauss-Hermite nodes in alpha x sigma points of the linear coefficients); None when no
    alpha is admissible."""
    coarse = profile_alpha(prob, ALPHA_GRID, sig * sig, k, pri)
    i0 = map_index(coarse)
    if i0 is None:
        return None
    fine = profile_alpha(prob, np.clip(coarse.alpha[i0] + np.linspace(-0.01, 0.01, 11), ALPHA_GRID[0], ALPHA_GRID[-1]),
                    sig * sig, k, pri)
    i1 = map_index(fine)
    best = (fine, i1) if i1 is not None and fine.objective[i1] < coarse.objective[i0] else (coarse, i0)

    # posterior over alpha (Laplace weights on the grid) -> 3 Gauss-Hermite nodes
    a_mean, a_sd = _grid_moments(coarse.alpha, coarse.log_evidence)
    prof_b, ib = best
    a_best = float(prof_b.alpha[ib])
    nodes = [(prof_b, ib, 2.0 / 3.0)]
    if a_sd > 1e-4:
        side = np.clip(a_best + np.array([-1.0, 1.0]) * math.sqrt(3.0) * a_sd, ALPHA_GRID[0], ALPHA_GRID[-1])
        prof_s = profile_alpha(prob, side, sig * sig, k, pri)
        for i in range(2):
            if np.isfinite(prof_s.objective[i]):
                nodes.append((prof_s, i, 1.0 / 6.0))
    total = sum(wt for *_, wt in nodes)

    components = []
    for prof, i, wt in nodes:
        # sigma points of the linear coefficients' Gaussian posterior at this alpha
        cov = 0.5 * (prof.cov[i] + prof.cov[i].T)
        vals, vecs = np.linalg.eigh(cov)
        dirs = [vecs[:, j] * math.sqrt(max(vals[j], 0.0) * 3.0) for j in range(3) if vals[j] > 0]
        XT_i, cap_i = float(prof.XT[i]), float(prof.cap[i])
        pts = [_admissible(prof.coef[i], s * d, XT_i, FT, cap_i) for d in dirs for s in (1.0, -1.0)]
        if not pts:
            pts = [prof.coef[i]]
        for c in pts:
            components.append({"law": law, "params": law_params(law, c, prof.alpha[i], pri),
                               "weight": wt / total / len(pts)})
    return {"coarse": coarse, "best": best, "alpha_sd": a_sd, "components": components}


def _grid_moments(alphas: np.ndarray, log_weight: np.ndarray) -> tuple[float, float]:
    """Mean and sd of alpha under unnormalised log weights on a grid (-inf: excluded)."""
    if not np.isfinite(log_weight).any():
        return math.nan, math.nan
    pw = np.exp(log_weight - np.max(log_weight))
    pw /= pw.sum()
    mean = float(np.sum(pw * alphas))
    return mean, float(np.sqrt(np.sum(pw * (alphas - mean) ** 2)))


def alpha_conflict(coarse: Profile, pri: Priors) -> dict | None:
    """The data's own alpha (Laplace weights of the profile with the alpha prior taken out,
    flat on the grid) when it conflicts with the prior (see ``ALPHA_CONFLICT_Z``), with the
    prior sd widened to the distance: sqrt((alpha_data - mean)**2 - sd_data**2), the prior
    scale that maximises the marginal likelihood of the data's estimate; None otherwise."""
    mu, sd = pri.alpha
    data_le = coarse.log_evidence + 0.5 * ((coarse.alpha - mu) / sd) ** 2
    a_data, s_data = _grid_moments(coarse.alpha, data_le)
    if not math.isfinite(a_data):
        return None
    z = abs(a_data - mu) / math.hypot(sd, s_data)
    if z <= ALPHA_CONFLICT_Z:
        return None
    widened = math.sqrt(max((a_data - mu) ** 2 - s_data ** 2, sd * sd))
    return {"alpha_data": a_data, "alpha_data_sd": s_data, "z": z, "widened_sd": widened}


def mixture_at(components: list[dict], context: dict, step: float) -> float:
    """The mean forecast (nats) of a list of mixture members at one step."""
    total = sum(c["weight"] * float(LAWS[c["law"]].evaluate(np.array(float(step)), c["params"], context))
                for c in components)
    return total / max(sum(c["weight"] for c in components), 1e-300)
