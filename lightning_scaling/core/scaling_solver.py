"""The solver behind ``fit_scaling_law``: Chinchilla's Huber-on-log objective, a vectorised
variable-projection grid over the exponents, BFGS refinement and bootstrap refits.

Why it is fast
--------------
Hoffmann et al. run L-BFGS from a grid of 4,500 starts because the objective has many local
minima. Given the exponents (alpha, beta) the law is *linear* in (E, A, B), so we
(1) sweep a grid of exponent pairs and solve, for every pair at once (vectorised), a small
robust (IRLS-Huber) least-squares problem for (E, A, B) in relative units (variable
projection); (2) rank the pairs by the true Huber objective; (3) run BFGS (a dense
quasi-Newton method, the small-problem sibling of Chinchilla's L-BFGS) on the full
five-parameter objective from the few best, distinct pairs. The refinement works in centred
coordinates (a - alpha * mean(log N), ...) so the pairs (a, alpha), (b, beta) are not
collinear, and on the objective divided by delta so that the optimiser's tolerances are
relative to the data rather than to 1.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize

EXPONENT_GRID = np.round(np.arange(0.02, 2.0001, 0.04), 6)
"""Exponent values (for alpha and for beta) of the variable-projection sweep."""

N_REFINE = 6
"""How many of the best, mutually distinct grid pairs the BFGS refinement starts from."""

_REFINE_OPTIONS = {"maxiter": 5000, "gtol": 1e-10}
_BOOT_OPTIONS = {"maxiter": 2000, "gtol": 1e-8}


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss of residuals ``r`` (same as ``scipy.special.huber(delta, r)``)."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def log_law(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """log L_pred = LSE(a - alpha log N, b - beta log D, e); theta = (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = theta
    t1 = a - alpha * log_n
    t2 = b - beta * log_d
    m = np.maximum(np.maximum(t1, t2), e)
    return m + np.log(np.exp(t1 - m) + np.exp(t2 - m) + np.exp(e - m))


def huber_objective(theta, log_n, log_d, log_loss, delta, weights=None) -> float:
    """Chinchilla's objective: sum of Huber(delta) of log-residuals (optionally weighted).

    ``theta`` is (a, b, e, alpha, beta) in the natural (uncentred) coordinates; the value is
    in the units of Hoffmann et al.'s objective (not divided by delta).
    """
    r = log_law(np.asarray(theta, float), log_n, log_d) - log_loss
    h = huber(r, delta)
    return float(h.sum() if weights is None else (weights * h).sum())


def _scaled_objective_and_grad(z, ln_c, ld_c, log_loss, delta, weights):
    """Objective / delta and its gradient in centred coordinates.

    z = (a_c, b_c, e, alpha, beta) with a_c = a - alpha * mean(log N) (and b likewise);
    ln_c, ld_c are the centred logs. Dividing by delta makes the value O(sum |r|).
    """
    a, b, e, alpha, beta = z
    t1 = a - alpha * ln_c
    t2 = b - beta * ld_c
    m = np.maximum(np.maximum(t1, t2), e)
    x1 = np.exp(t1 - m)
    x2 = np.exp(t2 - m)
    x3 = np.exp(e - m)
    s = x1 + x2 + x3
    r = m + np.log(s) - log_loss
    ar = np.abs(r)
    inside = ar <= delta
    f = np.where(inside, 0.5 * r * r / delta, ar - 0.5 * delta)
    psi = np.clip(r / delta, -1.0, 1.0)
    if weights is not None:
        f = f * weights
        psi = psi * weights
    ps = psi / s
    g1 = ps * x1
    g2 = ps * x2
    grad = np.array([g1.sum(), g2.sum(), (ps * x3).sum(), -(g1 @ ln_c), -(g2 @ ld_c)])
    return float(f.sum()), grad


def _refine(z0, ln_c, ld_c, log_loss, delta, weights, options):
    """BFGS on the scaled objective from z0 (centred coordinates): (z, objective / delta, result)."""
    # BFGS rather than scipy's L-BFGS-B: with five parameters the dense inverse Hessian is
    # tiny, and L-BFGS-B's BLAS calls on 5-vectors slow it down ~10x when the BLAS thread
    # pool competes for busy cores (measured on a loaded 2-core machine).
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        res = optimize.minimize(
            _scaled_objective_and_grad, np.asarray(z0, float), jac=True, method="BFGS",
            args=(ln_c, ld_c, log_loss, delta, weights), options=options,
        )
    return res.x, float(res.fun), res


def _grid_candidates(log_n, log_d, loss, delta, grid, n_irls=3):
    """Variable projection over an (alpha, beta) grid, vectorised.

    For every exponent pair the law is linear in (E, A, B); solve a relative-error
    least-squares problem for them, reweighted a few times towards the Huber-on-log
    criterion (IRLS), then score the pair by the true objective. Returns an array of rows
    (objective/delta, E, A, B, alpha, beta), best first, for pairs with E, A, B > 0.
    """
    n = loss.size
    inv_l = 1.0 / loss
    rows = []
    # Chunk over alpha so memory stays ~ len(grid) * n * chunk floats.
    chunk = max(1, int(2_000_000 // max(1, len(grid) * n)))
    v_all = np.exp(-np.outer(grid, log_d)) * inv_l  # (Gb, n): D^-beta / L
    for start in range(0, len(grid), chunk):
        alphas = grid[start:start + chunk]
        u = np.exp(-np.outer(alphas, log_n)) * inv_l  # (Ga, n): N^-alpha / L
        U = u[:, None, :]
        V = v_all[None, :, :]
        one = inv_l[None, None, :]
        w = np.ones((len(alphas), len(grid), n))
        for _ in range(n_irls + 1):
            s11 = (w * one * one).sum(-1)
            s1u = (w * one * U).sum(-1)
            s1v = (w * one * V).sum(-1)
            suu = (w * U * U).sum(-1)
            suv = (w * U * V).sum(-1)
            svv = (w * V * V).sum(-1)
            r1 = (w * one).sum(-1)
            ru = (w * U).sum(-1)
            rv = (w * V).sum(-1)
            M = np.stack([np.stack([s11, s1u, s1v], -1), np.stack([s1u, suu, suv], -1),
                          np.stack([s1v, suv, svv], -1)], -2)
            rhs = np.stack([r1, ru, rv], -1)
            M = M + 1e-12 * np.trace(M, axis1=-2, axis2=-1)[..., None, None] * np.eye(3)
            try:
                coef = np.linalg.solve(M, rhs[..., None])[..., 0]  # (Ga, Gb, 3): E, A, B
            except np.linalg.LinAlgError:  # an exactly singular pair: least norm instead
                coef = (np.linalg.pinv(M) @ rhs[..., None])[..., 0]
            rel = coef[..., 0:1] * one + coef[..., 1:2] * U + coef[..., 2:3] * V  # pred / L
            r = np.log(np.maximum(rel, 1e-300))
            w = np.where(np.abs(r) <= delta, 1.0, delta / np.maximum(np.abs(r), delta))
        ok = np.all(coef > 0, axis=-1)
        obj = np.where(np.abs(r) <= delta, 0.5 * r * r / delta, np.abs(r) - 0.5 * delta).sum(-1)
        obj = np.where(ok, obj, np.inf)
        ia, ib = np.nonzero(np.isfinite(obj))
        for i, j in zip(ia, ib):
            rows.append((obj[i, j], *coef[i, j], alphas[i], grid[j]))
    if not rows:
        return np.empty((0, 6))
    out = np.array(rows)
    return out[np.argsort(out[:, 0])]


def _distinct_starts(cands, k, min_sep=0.15):
    """The k best candidates whose (alpha, beta) differ by at least ``min_sep`` pairwise."""
    chosen = []
    for row in cands:
        if all(max(abs(row[4] - c[4]), abs(row[5] - c[5])) >= min_sep for c in chosen):
            chosen.append(row)
            if len(chosen) == k:
                break
    return chosen


def fit_points(log_n, log_d, loss, delta, weights=None, grid=EXPONENT_GRID, n_refine=N_REFINE):
    """Grid + refinement on one data set. Returns (theta natural coords, objective, info)."""
    mn, md = float(log_n.mean()), float(log_d.mean())
    ln_c, ld_c = log_n - mn, log_d - md
    log_loss = np.log(loss)
    cands = _grid_candidates(log_n, log_d, loss, delta, grid)
    starts = _distinct_starts(cands, n_refine)
    if not starts:  # no pair gives E, A, B > 0: fall back to Chinchilla-like exponents
        lmin = float(loss.min())
        starts = [(math.inf, 0.5 * lmin, lmin * math.exp(0.3 * mn), lmin * math.exp(0.3 * md), 0.3, 0.3)]
    best = None
    n_iter = 0
    for row in starts:
        _, E, A, B, alpha, beta = row
        z0 = np.array([math.log(A) - alpha * mn, math.log(B) - beta * md, math.log(E), alpha, beta])
        z, f, res = _refine(z0, ln_c, ld_c, log_loss, delta, weights, _REFINE_OPTIONS)
        # A restart from the end point drops the stale inverse-Hessian estimate (the objective is
        # nearly piecewise linear at delta=1e-3) and often gains the last digits.
        z2, f2, res2 = _refine(z, ln_c, ld_c, log_loss, delta, weights, _REFINE_OPTIONS)
        n_iter += res.nit + res2.nit
        if f2 <= f:
            z, f = z2, f2
        if best is None or f < best[1]:
            best = (z, f)
    z, f = best
    theta = np.array([z[0] + z[3] * mn, z[1] + z[4] * md, z[2], z[3], z[4]])
    info = {"grid_pairs": int(len(grid) ** 2), "grid_pairs_feasible": int(len(cands)),
            "refine_starts": len(starts), "refine_iterations": int(n_iter),
            "starts_alpha_beta": [[float(r[4]), float(r[5])] for r in starts]}
    return theta, f * delta, info, (mn, md, z)


def bootstrap_refits(ln_c, ld_c, log_loss, delta, z_best, centres, k, seed):
    """k case-resampling refits (weights = multinomial counts), warm-started at z_best."""
    rng = np.random.default_rng(seed)
    n = log_loss.size
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=k).astype(float)
    mn, md = centres
    out = np.empty((k, 5))
    failed = 0
    for i in range(k):
        z, f, res = _refine(z_best, ln_c, ld_c, log_loss, delta, counts[i], _BOOT_OPTIONS)
        row = natural_params(z, mn, md)
        if not np.all(np.isfinite(row)):
            # a resample that ran off (e.g. one model size drawn over and over): counted, and
            # replaced by the full-data optimum so the intervals stay finite
            failed += 1
            row = natural_params(z_best, mn, md)
        out[i] = row
    return out, failed


def natural_params(z, mn, md) -> np.ndarray:
    """Centred optimiser coordinates -> [E, A, B, alpha, beta] (inf where exp overflows)."""
    z = np.asarray(z, dtype=float)
    log_a, log_b = z[0] + z[3] * mn, z[1] + z[4] * md
    with np.errstate(over="ignore", invalid="ignore"):
        return np.array([np.exp(z[2]), np.exp(log_a), np.exp(log_b), z[3], z[4]])
