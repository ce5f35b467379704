"""The robust single-law solver: ``fit_law`` -> ``LawFit``.

One law (``laws.Law``: linear coefficients times basis columns that depend on a few bounded
nonlinear parameters theta) is fitted to clean points by variable projection: for every trial
theta the linear coefficients are solved exactly by bounded weighted least squares, and the
search runs over theta only (a dense multi-start grid, then zooming around the best). The
loss is Huber on log residuals (threshold ``HUBER_K`` robust sd), tempered for autocorrelated
residuals, plus Gaussian priors on the parameters. Pure numpy; no knowledge of where the
points came from (``points.py``) or how fits are combined (``agnostic.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

import numpy as np

from ..errors import InvalidInputError
from .laws import Law, get_law
from .stats import mad_sd

HUBER_K = 1.345
"""Huber threshold, in robust standard deviations of the log residuals."""


@dataclass
class LawFit:
    """One law fitted to one set of points (what :func:`fit_law` returns).

    Attributes:
        law: the Law.
        params: caller-unit parameters (empty when ``ok`` is False).
        theta, coef: the nonlinear parameters (fitter units) and the linear coefficients
            (loss units, of the basis on x / x_scale).
        objective: robust negative log-likelihood at the optimum (Huber on log residuals,
            plus the prior penalty); comparable only between fits of the same points.
        scale: robust standard deviation of the log residuals (MAD based).
        x_scale: the normalisation of x used (caller units).
        ok: False when no admissible fit was found.
    """

    law: Law
    params: dict[str, float]
    theta: tuple[float, ...]
    coef: tuple[float, ...]
    objective: float
    scale: float
    x_scale: float
    ok: bool = True

    def predict(self, x, context=None) -> np.ndarray:
        """The law at x (caller units); NaN when the fit is not ok."""
        if not self.ok:
            return np.full(np.shape(x), np.nan)
        return self.law.evaluate(np.asarray(x, dtype=float), self.params, context)


def theta_grid(law: Law, per_dim: int) -> np.ndarray:
    """A regular grid of ``per_dim`` points per nonlinear parameter over its bounds, plus
    ``law.starts``: (m, dim) trial thetas."""
    axes = [np.linspace(lo, hi, per_dim) for lo, hi in law.bounds]
    mesh = np.meshgrid(*axes, indexing="ij")
    grid = np.column_stack([m.ravel() for m in mesh])
    starts = np.array(law.starts, dtype=float).reshape(-1, len(law.bounds))
    return np.vstack([grid, starts])


def _nan_to(a: np.ndarray, value: float) -> np.ndarray:
    return np.where(np.isnan(a), value, a)


def _huber_rho(u: np.ndarray) -> np.ndarray:
    a = np.abs(u)
    return np.where(a <= HUBER_K, 0.5 * u * u, HUBER_K * (a - 0.5 * HUBER_K))


class LawProblem:
    """Batched evaluation of one law on one point set (variable projection): objective,
    linear coefficients and log residuals of many trial thetas at once."""

    def __init__(self, law, xn, y, w, context, prior_lin, prior_nl):
        self.law = law
        self.xn_row = xn[None, :]
        self.y = y
        self.logy = np.log(y)
        self.w = w
        self.inv_y2 = 1.0 / (y * y)  # relative residuals ~ log residuals
        self.context = context
        self.k = len(law.linear)
        self.lower = np.array(law.linear_lower, dtype=float)
        self.prior_lin = prior_lin  # list of (j, mu, sd) on linear coefficients
        self.prior_nl = prior_nl  # list of (j, mu, sd) on theta
        self.tau = 1.0  # likelihood temperature: (1 + rho) / (1 - rho) for autocorrelated residuals
        self.subsets = self._subsets()

    def _subsets(self):
        bounded = [j for j in range(self.k) if np.isfinite(self.lower[j])]
        subsets = []
        for mask in product((True, False), repeat=len(bounded)):
            free = np.ones(self.k, dtype=bool)
            for j, is_free in zip(bounded, mask):
                free[j] = is_free
            subsets.append(free)
        return subsets

    def columns(self, theta: np.ndarray) -> np.ndarray:
        """(m, n, k) basis matrix for m thetas."""
        m = theta.shape[0]
        n = self.y.size
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            cols = self.law.basis(self.xn_row, tuple(theta[:, j:j + 1] for j in range(theta.shape[1])),
                                  self.context)
        out = np.empty((m, n, self.k))
        for j, c in enumerate(cols):
            out[:, :, j] = c
        bad = ~np.isfinite(out)
        if bad.any():
            out[bad] = 0.0
        return out

    def solve(self, C: np.ndarray, v: np.ndarray, s2: float):
        """Bounded weighted least squares for each of m candidates: coef (m, k), pred (m, n).

        Minimises sum v (y - C c)^2 (+ linear priors) with c_j >= lower_j, by trying every
        active set of the bounded coefficients (k is 1-3, so at most 8 small solves).
        """
        m = C.shape[0]
        y = self.y
        if self.k == 2 and not self.prior_lin and C.shape[0] and np.all(C[:, :, 0] == 1.0):
            return self._solve_const_plus_one(C, v)
        G = np.einsum("mnk,mn,mnl->mkl", C, v, C)
        b = np.einsum("mnk,mn,n->mk", C, v, y)
        for j, mu, sd in self.prior_lin:
            lam = s2 / (sd * sd)
            G[:, j, j] += lam
            b[:, j] += lam * mu
        best_coef = np.zeros((m, self.k))
        best_sse = np.full(m, np.inf)
        scale = np.maximum(np.abs(np.diagonal(G, axis1=1, axis2=2)), 1e-300)
        for free in self.subsets:
            coef = np.tile(np.where(np.isfinite(self.lower), self.lower, 0.0), (m, 1))
            fi = np.flatnonzero(free)
            if fi.size:
                pinned = np.flatnonzero(~free)
                rhs = b[:, fi]
                if pinned.size:
                    rhs = rhs - np.einsum("mfp,mp->mf", G[:, fi][:, :, pinned], coef[:, pinned])
                Gf = G[:, fi][:, :, fi]
                d = np.sqrt(scale[:, fi])
                Gs = Gf / d[:, :, None] / d[:, None, :] + 1e-12 * np.eye(fi.size)
                try:
                    sol = np.linalg.solve(Gs, (rhs / d)[..., None])[..., 0] / d
                except np.linalg.LinAlgError:
                    sol = np.stack([np.linalg.lstsq(g, r, rcond=None)[0] for g, r in zip(Gs, rhs / d)]) / d
                coef[:, fi] = sol
                feasible = np.all(sol >= self.lower[fi] - 1e-12, axis=1) & np.all(np.isfinite(sol), axis=1)
            else:
                feasible = np.ones(m, dtype=bool)
            pred = np.einsum("mnk,mk->mn", C, coef)
            sse = np.einsum("mn,mn->m", v, (y - pred) ** 2)
            for j, mu, sd in self.prior_lin:
                sse = sse + s2 * ((coef[:, j] - mu) / sd) ** 2
            better = feasible & (sse < best_sse)
            best_sse[better] = sse[better]
            best_coef[better] = coef[better]
        pred = np.einsum("mnk,mk->mn", C, best_coef)
        return best_coef, pred

    def _solve_const_plus_one(self, C, v):
        """Closed form of the common case c0 + c1 * g(x) (E + A g) with lower bounds."""
        y = self.y
        g = C[:, :, 1]
        vg = v * g
        S0 = v.sum(axis=1)
        S1 = vg.sum(axis=1)
        S2 = np.einsum("mn,mn->m", vg, g)
        T0 = v @ y
        T1 = vg @ y
        Syy = v @ (y * y)
        lo0, lo1 = self.lower
        lo0 = lo0 if np.isfinite(lo0) else -np.inf
        lo1 = lo1 if np.isfinite(lo1) else -np.inf
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            det = S0 * S2 - S1 * S1
            c0 = (S2 * T0 - S1 * T1) / det
            c1 = (S0 * T1 - S1 * T0) / det
            ok = (c0 >= lo0) & (c1 >= lo1) & np.isfinite(c0) & np.isfinite(c1) & (det > 1e-14 * S0 * S2)

            def sse(a, b):
                return Syy - 2 * a * T0 - 2 * b * T1 + a * a * S0 + 2 * a * b * S1 + b * b * S2

            best0 = np.where(ok, c0, np.nan)
            best1 = np.where(ok, c1, np.nan)
            best = np.where(ok, sse(c0, c1), np.inf)
            # c1 pinned at its bound
            b1 = np.full_like(S0, lo1 if np.isfinite(lo1) else 0.0)
            a0 = np.maximum((T0 - b1 * S1) / S0, lo0)
            e = sse(a0, b1)
            take = e < best
            best0, best1, best = np.where(take, a0, best0), np.where(take, b1, best1), np.where(take, e, best)
            # c0 pinned at its bound
            a0 = np.full_like(S0, lo0 if np.isfinite(lo0) else 0.0)
            b1 = np.maximum((T1 - a0 * S1) / np.maximum(S2, 1e-300), lo1)
            e = sse(a0, b1)
            take = (e < best) & np.isfinite(b1)
            best0, best1 = np.where(take, a0, best0), np.where(take, b1, best1)
        coef = np.column_stack([_nan_to(best0, 0.0), _nan_to(best1, 0.0)])
        pred = coef[:, :1] + coef[:, 1:2] * g
        return coef, pred

    def evaluate(self, theta: np.ndarray, s: float | None, W: np.ndarray | None = None):
        """Objective (m,), coef (m, k) and log residuals (m, n) for m thetas.

        s None: plain weighted least squares on log residuals (first pass, for the scale).
        W: per-candidate point weights (m, n) instead of ``self.w`` (0 leaves a point out).
        """
        C, v, w, coef, r = self._ls(theta, W)
        if s is None:
            obj = (w * _nan_to(r, 1e3) ** 2).sum(axis=1)
            return np.where(np.isfinite(obj), obj, np.inf), coef, r
        return self._huber(theta, C, v, w, r, s)

    def evaluate_scaled(self, theta: np.ndarray, s: float | None, autocorr: bool):
        """First pass, then (robust scale and) autocorrelation from its best candidate, then
        the Huber pass, with one basis build. Returns (objective, coef, residuals, scale).
        """
        C, v, w, coef, r = self._ls(theta, None)
        obj_ls = (w * _nan_to(r, 1e3) ** 2).sum(axis=1)
        r_first = r[int(np.argmin(np.where(np.isfinite(obj_ls), obj_ls, np.inf)))]
        if s is None:
            s = robust_scale(r_first, self.w)
        s = max(float(s), 1e-6)
        if autocorr:
            self.tau = autocorr_inflation(r_first, self.w)
        obj, coef, r = self._huber(theta, C, v, w, r, s)
        return obj, coef, r, s

    def _ls(self, theta, W):
        C = self.columns(theta)
        m = theta.shape[0]
        w = np.broadcast_to(self.w, (m, self.y.size)) if W is None else W
        v = w * self.inv_y2
        coef, pred = self.solve(C, v, self.tau)
        return C, v, w, coef, self._logres(pred)

    def _logres(self, pred):
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.logy - np.log(np.where(pred > 0, pred, np.nan))

    def _huber(self, theta, C, v, w, r, s):
        sw = np.sqrt(w)
        u = _nan_to(r * sw / s, 1e6)
        h = np.minimum(1.0, HUBER_K / np.maximum(np.abs(u), 1e-12))
        coef, pred = self.solve(C, v * h, s * s * self.tau)
        r = self._logres(pred)
        obj = _huber_rho(_nan_to(r * sw / s, 1e6)).sum(axis=1) / self.tau
        for j, mu, sd in self.prior_nl:
            obj = obj + 0.5 * ((theta[:, j] - mu) / sd) ** 2
        for j, mu, sd in self.prior_lin:
            obj = obj + 0.5 * ((coef[:, j] - mu) / sd) ** 2
        return np.where(np.isfinite(obj), obj, np.inf), coef, r


AUTOCORR_MAX = 0.95
"""Largest lag-1 residual autocorrelation the likelihood tempering counts (inflation <= 39)."""


def autocorr_inflation(r: np.ndarray, w: np.ndarray) -> float:
    """(1 + rho) / (1 - rho) for the lag-1 autocorrelation rho >= 0 of standardised residuals."""
    use = np.isfinite(r) & (w > 0)
    u = r[use] * np.sqrt(w[use])
    if u.size < 4:
        return 1.0
    u = u - u.mean()
    den = float(u @ u)
    if den <= 0:
        return 1.0
    rho = min(max(float(u[1:] @ u[:-1]) / den, 0.0), AUTOCORR_MAX)
    return (1.0 + rho) / (1.0 - rho)


def robust_scale(r: np.ndarray, w: np.ndarray) -> float:
    """Robust sd (1.4826 MAD) of log residuals r of points with precision weights w."""
    use = np.isfinite(r) & (w > 0)
    if use.sum() < 3:
        return 1e-2
    u = r[use] * np.sqrt(w[use])
    return max(mad_sd(u), 1e-6)


def prior_pair(name: str, spec) -> tuple[float, float]:
    """``prior[name]`` as a checked (mean, sd) pair; InvalidInputError when it is not one."""
    try:
        mu, sd = (float(v) for v in spec)
    except (TypeError, ValueError):
        raise InvalidInputError(f"prior[{name!r}] must be a (mean, sd) pair of numbers") from None
    if not (math.isfinite(mu) and math.isfinite(sd) and sd > 0):
        raise InvalidInputError(f"prior[{name!r}] needs a finite mean and a positive sd")
    return mu, sd


def _split_prior(law: Law, prior) -> tuple[list, list]:
    """``prior`` as (index, mean, sd) lists: on the linear coefficients, and on theta."""
    prior_lin, prior_nl = [], []
    if not prior:
        return prior_lin, prior_nl
    if not isinstance(prior, dict):
        raise InvalidInputError("prior must be a dict {parameter name: (mean, sd)}")
    for name, spec in prior.items():
        mu, sd = prior_pair(name, spec)
        if name in law.nonlinear:
            prior_nl.append((law.nonlinear.index(name), mu, sd))
        elif name in law.linear:
            prior_lin.append((law.linear.index(name), mu, sd))
    return prior_lin, prior_nl


def fit_law(
    law: Law | str,
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None = None,
    *,
    context=None,
    x_scale: float | None = None,
    prior: dict[str, tuple[float, float]] | None = None,
    scale: float | None = None,
    grid_per_dim: int | None = None,
    zoom_steps: int | None = None,
    autocorr: bool = True,
    refine_scale: bool = True,
) -> LawFit:
    """Robust fit of one law to clean points (x > 0, loss > 0, sorted).

    Minimises the Huber loss of log residuals (threshold ``HUBER_K`` robust sd) weighted by
    ``w``, over bounded nonlinear parameters theta; for every trial theta the linear
    coefficients are solved exactly by bounded weighted least squares (variable
    projection). The search is a dense multi-start grid over the bounds (plus ``law.starts``)
    refined by successive zooming around the best candidate.

    Args:
        law: a Law or a registered name.
        x, y: points, caller units (x > 0, y > 0).
        w: per-point weights (e.g. bucket counts); default 1.
        context: passed to the law (e.g. ``{"lr": ndarray}`` for schedule laws).
        x_scale: x is divided by this before fitting (default: the largest x).
        prior: ``{name: (mean, sd)}`` Gaussian penalties on nonlinear parameters (fitter
            units, e.g. alpha) or linear coefficients (units of the basis columns).
        scale: robust sd of log residuals to use (default: estimated from a first LS pass).
        grid_per_dim: points per dimension of the starting grid.
        zoom_steps: refinement rounds around the best candidate (default 8 for one
            nonlinear parameter, 5 otherwise).
        autocorr: temper the likelihood by (1 + rho) / (1 - rho), rho the lag-1
            autocorrelation of the residuals of a first pass: neighbouring points of a
            smooth curve carry less independent information than their number says, so
            priors keep their intended weight against long, smooth curves.
        refine_scale: re-estimate the residual scale after refinement and refine again
            when it shrank (a smooth curve fits far better than the coarse grid said).

    ``law.default_prior`` applies to parameters that ``prior`` does not name.
    """
    law = get_law(law) if isinstance(law, str) else law
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=float)
    if x_scale is None:
        x_scale = float(x.max())
    xn = x / x_scale if not law.uses_context else x
    merged = dict(law.default_prior)
    merged.update(prior or {})
    prior_lin, prior_nl = _split_prior(law, merged)
    # the linear coefficients are solved on loss / y_scale (any loss magnitude fits alike)
    y_scale = float(np.median(y))
    if not (math.isfinite(y_scale) and y_scale > 0):
        y_scale = 1.0
    prior_lin = [(j, mu / y_scale, sd / y_scale) for j, mu, sd in prior_lin]
    prob = LawProblem(law, xn, y / y_scale, w, context, prior_lin, prior_nl)
    dim = len(law.bounds)
    if grid_per_dim is None:
        grid_per_dim = grid_for(law, fine=True)
    lows = np.array([b[0] for b in law.bounds], dtype=float)
    highs = np.array([b[1] for b in law.bounds], dtype=float)
    grid = theta_grid(law, grid_per_dim)

    estimate_scale = scale is None
    obj, coef, _, scale = prob.evaluate_scaled(grid, scale, autocorr)
    i = int(np.argmin(obj))
    best_theta, best_obj, best_coef = grid[i].copy(), float(obj[i]), coef[i].copy()
    if zoom_steps is None:
        zoom_steps = 8 if dim == 1 else 5
    grid_step = (highs - lows) / max(grid_per_dim - 1, 1)
    offsets = np.array(list(product((-1.0, -0.5, 0.0, 0.5, 1.0), repeat=dim)))

    def zoom(theta, obj_best, coef_best, step):
        for _ in range(zoom_steps if dim else 0):
            cand = np.clip(theta + offsets * step, lows, highs)
            obj, coef, _ = prob.evaluate(cand, scale)
            j = int(np.argmin(obj))
            if obj[j] < obj_best:
                theta, obj_best, coef_best = cand[j].copy(), float(obj[j]), coef[j].copy()
            step = step * 0.4
        return theta, obj_best, coef_best

    best_theta, best_obj, best_coef = zoom(best_theta, best_obj, best_coef, grid_step)
    if estimate_scale and refine_scale:
        # the scale came from the coarse grid; a smooth curve fits far better once refined:
        # re-estimate it there (and the autocorrelation), and refine again
        _, _, r = prob.evaluate(best_theta[None, :], None)
        new_scale = robust_scale(r[0], w)
        if new_scale < 0.5 * scale:
            scale = max(new_scale, 1e-6)
            if autocorr:
                prob.tau = autocorr_inflation(r[0], w)
            obj, coef, _ = prob.evaluate(best_theta[None, :], scale)
            best_obj, best_coef = float(obj[0]), coef[0].copy()
            zoom_steps = max(zoom_steps - 2, 1)
            best_theta, best_obj, best_coef = zoom(best_theta, best_obj, best_coef, grid_step * 0.16)
    best_coef = best_coef * y_scale
    if not math.isfinite(best_obj):
        return LawFit(law, {}, tuple(best_theta), tuple(best_coef), math.inf, scale, x_scale, False)
    params = law.to_params(tuple(float(c) for c in best_coef), tuple(float(t) for t in best_theta),
                           x_scale)
    ok = all(math.isfinite(v) for v in params.values())
    return LawFit(law, params, tuple(float(t) for t in best_theta), tuple(float(c) for c in best_coef),
                  best_obj, scale, x_scale, ok)


def grid_for(law: Law, fine: bool = False) -> int:
    """Points per dimension of the starting grid of ``fit_law`` (coarser for held-out fits)."""
    dim = len(law.bounds)
    if fine:
        return {0: 1, 1: 32, 2: 11, 3: 7}.get(dim, 5)
    return {0: 1, 1: 16, 2: 7, 3: 5}.get(dim, 4)

