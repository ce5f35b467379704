"""The schedule-aware solver: for every alpha of a grid at once, the MAP of the linear
coefficients (L0, A, amp) under their bounds, the annealing cap and the priors (the alpha
profile), and the noise scale and effective number of points the data term counts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..calibration import (
    ALPHA_PRIOR_LR_AREA,
    ANNEAL_MAX_SHARE,
    ANNEAL_RATIO_ALPHA_SLOPE,
    N_EFF_BLOCKS,
    N_EFF_CAP,
    N_EFF_MAX,
    WINDOW_SHARE,
)
from ..stats import mad_sd
from .features import powerlaw
from .priors import Priors

ALPHA_GRID = np.linspace(0.05, 1.5, 146)


@dataclass
class ScheduleProblem:
    """The fitted points of one law, and what the solver needs at the horizon.

    S1, F: LR area and annealing feature at the points; FT: feature at the horizon; S1T: LR
    area at the horizon; cap_S1, cap_F: steps (LR area, feature) where the annealing cap is
    checked (the worst of them binds).
    """

    S1: np.ndarray
    F: np.ndarray
    y: np.ndarray
    w: np.ndarray
    S1T: float
    FT: float
    cap_S1: np.ndarray
    cap_F: np.ndarray
    has_anneal: bool

    def subset(self, mask: np.ndarray) -> ScheduleProblem:
        return ScheduleProblem(self.S1[mask], self.F[mask], self.y[mask], self.w[mask], self.S1T, self.FT,
                        self.cap_S1, self.cap_F, self.has_anneal)


@dataclass
class Profile:
    """MAP of (L0, A, amp) for each alpha of a grid (arrays over the grid)."""

    alpha: np.ndarray
    coef: np.ndarray  # (K, 3)
    cov: np.ndarray  # (K, 3, 3) posterior covariance given alpha (k-scaled data term)
    objective: np.ndarray  # -2 log posterior up to a constant; inf where infeasible
    log_evidence: np.ndarray  # Laplace weight of each alpha
    XT: np.ndarray  # S1(T)**-alpha
    cap: np.ndarray  # worst F / S1**-alpha over the cap steps


def robust_sigma(S1pts, y, w) -> float:
    """Noise sd per unit weight from the best plain power-law fit (MAD of weighted residuals)."""
    P = powerlaw(S1pts[None, :], ALPHA_GRID[::5, None])
    Sw, Sp, Spp = w.sum(), P @ w, (P * P) @ w
    Sy, Spy = w @ y, P @ (w * y)
    det = Sw * Spp - Sp * Sp
    with np.errstate(divide="ignore", invalid="ignore"):
        A = np.where(det > 0, (Sw * Spy - Sp * Sy) / det, 0.0)
        L0 = (Sy - A * Sp) / Sw
    R = (y[None, :] - L0[:, None] - A[:, None] * P) * np.sqrt(w)[None, :]
    sse = np.where(np.isfinite(R).all(axis=1), np.sum(R * R, axis=1), np.inf)
    r = R[int(np.argmin(sse))]
    s = mad_sd(r)
    return max(s, 1e-4 * float(np.median(y)))


def _faces(K: int, cap: np.ndarray, has_anneal: bool) -> list[np.ndarray]:
    """Bases (K, 3, k) of the faces of the feasible cone {L0, A, amp >= 0, amp * cap <=
    ANNEAL_MAX_SHARE * A} where a constrained minimum can sit (its interior first)."""
    e = np.eye(3)

    def const(*cols):
        return np.broadcast_to(np.stack(cols, axis=1), (K, 3, len(cols)))

    capdir = np.stack([np.zeros(K), cap, np.full(K, ANNEAL_MAX_SHARE)], axis=1)  # A * cap = amp / share
    capdir = capdir / np.linalg.norm(capdir, axis=1, keepdims=True)
    faces = [const(e[0], e[1]), const(e[1]), const(e[0])]  # amplitude 0
    if has_anneal:
        faces = [const(e[0], e[1], e[2]), np.stack([np.broadcast_to(e[0], (K, 3)), capdir], axis=2),
                 capdir[:, :, None], const(e[1], e[2])] + faces
    return faces


def _tilt_offset(alphas: np.ndarray) -> np.ndarray:
    """alpha - ALPHA_PRIOR_LR_AREA[0], held within 2 prior sds (the measured range of
    ``ANNEAL_RATIO_ALPHA_SLOPE``; far beyond it the data, not this prior, decide alpha)."""
    mu, sd = ALPHA_PRIOR_LR_AREA
    return np.clip(np.asarray(alphas, dtype=float) - mu, -2.0 * sd, 2.0 * sd)


def profile_alpha(prob: ScheduleProblem, alphas: np.ndarray, sig2: float, k: float, pri: Priors) -> Profile:
    """MAP (L0, A, amp) for every alpha at once, under the bounds and the annealing cap."""
    alphas = np.asarray(alphas, dtype=float)
    K = alphas.size
    y, w, F = prob.y, prob.w, prob.F
    P = powerlaw(prob.S1[None, :], alphas[:, None])  # (K, n)
    XT = powerlaw(np.array([prob.S1T]), alphas)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        cap = np.max(prob.cap_F[None, :] / powerlaw(prob.cap_S1[None, :], alphas[:, None]), axis=1)
    cap = np.where(np.isfinite(cap), np.maximum(cap, 0.0), 0.0)
    W = w * (k / sig2)
    Sw, Sf, Sff = W.sum(), W @ F, W @ (F * F)
    Sp, Spp, Spf = P @ W, (P * P) @ W, P @ (W * F)
    Sy, Spy, Sfy, Syy = W @ y, P @ (W * y), W @ (F * y), W @ (y * y)
    G = np.empty((K, 3, 3))
    G[:, 0, 0], G[:, 0, 1], G[:, 0, 2] = Sw, Sp, -Sf
    G[:, 1, 1], G[:, 1, 2], G[:, 2, 2] = Spp, -Spf, Sff
    G[:, 1, 0], G[:, 2, 0], G[:, 2, 1] = G[:, 0, 1], G[:, 0, 2], G[:, 1, 2]
    b = np.stack([np.full(K, Sy), Spy, np.full(K, -Sfy)], axis=1)
    const = np.full(K, Syy)
    if prob.has_anneal and pri.amp is not None:
        G[:, 2, 2] += 1.0 / pri.amp[1] ** 2
        b[:, 2] += pri.amp[0] / pri.amp[1] ** 2
        const += (pri.amp[0] / pri.amp[1]) ** 2
    elif prob.has_anneal and pri.kappa is not None:
        # amp * F(T) ~ ratio * A * S1(T)**-alpha; sd: kappa's own spread, widened until the
        # convex bound's reading of the ratio lies at the 90% edge. The scale is the power-law
        # part left at T by a fit without annealing (A_guess).
        det = Sw * Spp - Sp * Sp
        with np.errstate(divide="ignore", invalid="ignore"):
            A_guess = np.where(det > 0, (Sw * Spy - Sp * Sy) / det, 0.0)
        A_guess = np.where(np.isfinite(A_guess), np.maximum(A_guess, 0.0), 0.0)
        rel_sd = math.hypot(pri.kappa[1] * pri.ratio, (pri.ratio_alt - pri.ratio) / 1.645)
        tilt = np.exp(ANNEAL_RATIO_ALPHA_SLOPE * _tilt_offset(alphas))
        sd = np.maximum(rel_sd * tilt * A_guess * XT, 1e-6)
        row = np.stack([np.zeros(K), -pri.ratio * tilt * XT, np.full(K, prob.FT)], axis=1) / sd[:, None]
        G += row[:, :, None] * row[:, None, :]
    best_obj = np.full(K, np.inf)
    coef = np.zeros((K, 3))
    cov = np.zeros((K, 3, 3))
    logdet = np.zeros(K)
    for N in _faces(K, cap, prob.has_anneal):
        H = np.einsum("kia,kij,kjb->kab", N, G, N)
        g = np.einsum("kia,ki->ka", N, b)
        kk = H.shape[1]
        ridge = 1e-12 * np.trace(H, axis1=1, axis2=2)[:, None, None] * np.eye(kk)
        with np.errstate(all="ignore"):
            try:
                z = np.linalg.solve(H + ridge, g[:, :, None])[:, :, 0]
                Hi = np.linalg.inv(H + ridge)
                sign, ld = np.linalg.slogdet(H + ridge)
            except np.linalg.LinAlgError:
                continue
            c = np.einsum("kia,ka->ki", N, z)
            obj = np.einsum("ki,kij,kj->k", c, G, c) - 2.0 * np.einsum("ki,ki->k", b, c) + const
            tol = 1e-9 * np.maximum(np.abs(c).max(axis=1), 1e-12)
            forecast = c[:, 0] + c[:, 1] * XT - c[:, 2] * prob.FT
            ok = ((c >= -tol[:, None]).all(axis=1) & (ANNEAL_MAX_SHARE * c[:, 1] - c[:, 2] * cap >= -tol)
                  & (forecast > 0) & np.isfinite(obj) & (sign > 0) & np.isfinite(XT))
        margin = np.where(np.isfinite(best_obj), 1e-12 * np.abs(best_obj).clip(1.0), 0.0)
        better = ok & (obj < best_obj - margin)
        if better.any():
            c = np.maximum(c, 0.0)
            best_obj[better] = obj[better]
            coef[better] = c[better]
            cov[better] = np.einsum("kia,kab,kjb->kij", N, Hi, N)[better]
            logdet[better] = ld[better]
    objective = best_obj + ((alphas - pri.alpha[0]) / pri.alpha[1]) ** 2
    log_ev = np.where(np.isfinite(objective), -0.5 * objective - 0.5 * logdet, -np.inf)
    return Profile(alphas, coef, cov, objective, log_ev, XT, cap)


def effective_n(r: np.ndarray, total_weight: float) -> float:
    """Independent points the data term counts (``N_EFF_CAP``..``N_EFF_MAX``, at most the
    points' total weight), from the weighted residuals r in step order: the total weight over
    the variance inflation of ``N_EFF_BLOCKS`` block means (1 when neighbouring points are
    independent; slow wiggles and a misfit of the law's shape raise it)."""
    m = r.size // N_EFF_BLOCKS
    floor = min(total_weight, N_EFF_CAP)
    if m < 2:
        return floor
    rr = r[r.size - m * N_EFF_BLOCKS:]  # the newest points
    var = float(np.var(rr, ddof=1))
    if not var > 0:
        return floor
    inflation = max(1.0, m * float(np.var(rr.reshape(N_EFF_BLOCKS, m).mean(axis=1), ddof=1)) / var)
    return float(min(total_weight, max(floor, min(N_EFF_MAX, total_weight / inflation))))


def model_sigma(prob: ScheduleProblem, sig0: float, k: float, pri: Priors) -> tuple[float, float]:
    """Noise sd per unit weight from the law's own residuals (MAD) at a fit without the
    annealing prior, and the effective number of independent points (``effective_n``). The
    plain power law behind ``sig0`` cannot follow an anneal in the data, and its misfit there
    would pass for noise and let the prior outweigh the data."""
    total = float(prob.w.sum())
    free = Priors(pri.alpha, None, None, pri.momentum, pri.shape, pri.source)
    first = profile_alpha(prob, ALPHA_GRID[::5], sig0 * sig0, k, free)
    i = map_index(first)
    if i is None:
        return sig0, min(total, N_EFF_CAP)
    c = first.coef[i]
    r = (prob.y - c[0] - c[1] * powerlaw(prob.S1, first.alpha[i]) + c[2] * prob.F) * np.sqrt(prob.w)
    s = mad_sd(r)
    return max(min(s, sig0), 1e-4 * float(np.median(prob.y))), effective_n(r, total)


def window_noise(prob: ScheduleProblem, x: np.ndarray, sig: float, horizon: int) -> float:
    """Relative sd of the mean measured loss over ``WINDOW_SHARE`` of the horizon: the noise
    sd per measured point (``sig``) over the square root of the points such a window holds
    at the density of the fitted points."""
    span = float(x[-1] - x[0])
    if not span > 0:
        return 0.0
    points = max(1.0, WINDOW_SHARE * float(horizon) * float(prob.w.sum()) / span)
    return float(sig / float(np.median(prob.y)) / math.sqrt(points))


def map_index(prof: Profile) -> int | None:
    if not np.isfinite(prof.objective).any():
        return None
    return int(np.argmin(prof.objective))
