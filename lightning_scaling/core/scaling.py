"""Multi-run scaling laws: ``fit_scaling_law`` -> ``ScalingLawFit``.

The law is Chinchilla's (Hoffmann et al. 2022, approach 3)::

    L(N, D) = E + A / N**alpha + B / D**beta

N: parameters, D: training tokens, L: loss in nats. It is fitted the Chinchilla way, on log L
with a Huber loss: minimise ``sum_i huber_delta(LSE(a - alpha log N_i, b - beta log D_i, e)
- log L_i)`` over (a, b, e, alpha, beta) with A = exp(a), B = exp(b), E = exp(e).

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

Uncertainty
-----------
``bootstrap=k`` refits k resamples of the points (drawn with replacement; a resample is a
weight vector of counts, so no data is copied) warm-started at the full-data optimum (BFGS).
``param_intervals`` and ``interval`` are percentile intervals over those refits; without
bootstrap draws they raise :class:`InvalidInputError` saying so.

Failure policy
--------------
Arguments that cannot give an identifiable law raise ``InvalidInputError``: arrays of
different lengths, non-numeric, non-finite or non-positive values, fewer than
``MIN_POINTS`` points, a single model size or a single token count, or token counts that
are an exact power of the model sizes (a fixed tokens-per-parameter ratio: the N and D terms
cannot be told apart). The core imports numpy and scipy only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize

from ..errors import InvalidInputError
from .plain import plain

FORMAT = "lightning-scaling/scaling-law-fit"
VERSION = 1

PARAM_NAMES = ("E", "A", "B", "alpha", "beta")

MIN_POINTS = 5
"""Fewest (N, D, loss) points ``fit_scaling_law`` accepts: the law has five parameters."""

EXPONENT_GRID = np.round(np.arange(0.02, 2.0001, 0.04), 6)
"""Exponent values (for alpha and for beta) of the variable-projection sweep."""

N_REFINE = 6
"""How many of the best, mutually distinct grid pairs the BFGS refinement starts from."""

_REFINE_OPTIONS = {"maxiter": 5000, "gtol": 1e-10}
_BOOT_OPTIONS = {"maxiter": 2000, "gtol": 1e-8}


# =========================================================================== objective
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
    # BFGS rather than scipy's L-BFGS-B: with five parameters the dense inverse Hessian is
    # tiny, and L-BFGS-B's BLAS calls on 5-vectors slow it down ~10x when the BLAS thread
    # pool competes for busy cores (measured on a loaded 2-core machine).
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        res = optimize.minimize(
            _scaled_objective_and_grad, np.asarray(z0, float), jac=True, method="BFGS",
            args=(ln_c, ld_c, log_loss, delta, weights), options=options,
        )
    return res.x, float(res.fun), res


# =========================================================================== grid stage
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


# =========================================================================== validation
def _as_positive_array(name, values):
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name}: expected numbers, got {values!r:.80}") from exc
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name}: expected a 1-D sequence, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise InvalidInputError(
            f"{name}: {int(bad.sum())} non-finite value(s) (first at index {int(np.argmax(bad))})")
    if (arr <= 0).any():
        i = int(np.argmax(arr <= 0))
        raise InvalidInputError(f"{name}: values must be > 0 (index {i} is {arr[i]:g})")
    return arr


def _check_level(level):
    try:
        level = float(level)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"level must be a number in (0, 1), got {level!r}") from exc
    if not 0.0 < level < 1.0:
        raise InvalidInputError(f"level must be in (0, 1), got {level}")
    return level


def _validate(N, D, loss, huber_delta, bootstrap):
    n_arr = _as_positive_array("N (parameters)", N)
    d_arr = _as_positive_array("D (tokens)", D)
    l_arr = _as_positive_array("loss (nats)", loss)
    if not (n_arr.size == d_arr.size == l_arr.size):
        raise InvalidInputError(
            f"N, D and loss must have the same length (got {n_arr.size}, {d_arr.size}, "
            f"{l_arr.size})")
    if n_arr.size < MIN_POINTS:
        raise InvalidInputError(
            f"need at least {MIN_POINTS} (N, D, loss) points for a 5-parameter law, "
            f"got {n_arr.size}")
    if np.unique(n_arr).size < 2:
        raise InvalidInputError(
            "all points have the same model size N: the N term cannot be identified; "
            "add runs of other sizes")
    if np.unique(d_arr).size < 2:
        raise InvalidInputError(
            "all points have the same token count D: the D term cannot be identified; "
            "add runs with other token counts")
    ln, ld = np.log(n_arr), np.log(d_arr)
    slope, icept = np.polyfit(ln, ld, 1)
    if np.max(np.abs(ld - (slope * ln + icept))) < 1e-9 * max(1.0, float(np.abs(ld).max())):
        raise InvalidInputError(
            "log D is an exact linear function of log N (e.g. a fixed tokens-per-parameter "
            "ratio): the N and D terms cannot be separated; vary the tokens per parameter")
    try:
        huber_delta = float(huber_delta)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"huber_delta must be a positive number, got {huber_delta!r}") from exc
    if not (math.isfinite(huber_delta) and huber_delta > 0):
        raise InvalidInputError(f"huber_delta must be a positive number, got {huber_delta}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise InvalidInputError(f"bootstrap must be a non-negative integer, got {bootstrap!r}")
    return n_arr, d_arr, l_arr, huber_delta, int(bootstrap)


# =========================================================================== result
def _theta_to_params(theta) -> dict[str, float]:
    a, b, e, alpha, beta = (float(t) for t in theta)
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}


def _law(params_matrix: np.ndarray, N, D) -> np.ndarray:
    """L for each row (E, A, B, alpha, beta) of ``params_matrix`` (k, 5) at N, D: (k, *shape)."""
    P = params_matrix.reshape(-1, 5, *([1] * np.ndim(N)))
    return P[:, 0] + P[:, 1] * np.power(N, -P[:, 3]) + P[:, 2] * np.power(D, -P[:, 4])


@dataclass
class ScalingLawFit:
    """A fitted L(N, D) = E + A / N**alpha + B / D**beta.

    Units: N in parameters, D in tokens, L in nats (whatever the loss was), C in FLOPs.

    Attributes:
        params: {"E", "A", "B", "alpha", "beta"} as plain floats.
        huber_delta: the Huber threshold used (on log L).
        objective: the Huber objective at ``params`` (sum over points, not divided by delta).
        diagnostics: JSON-safe dict: points, distinct sizes and token counts, the range of
            the data, residual scale (median |log residual|), grid/refinement details, time,
            bootstrap failures, ``flags`` (list of str).
        bootstrap_params: (k, 5) array of the bootstrap refits (columns as PARAM_NAMES), or
            None without bootstrap.
        residuals: log-residuals log L - log L_pred of the fitted points (for prediction
            intervals), or None.
    """

    params: dict[str, float]
    huber_delta: float = 1e-3
    objective: float = math.nan
    diagnostics: dict[str, Any] = field(default_factory=dict)
    bootstrap_params: np.ndarray | None = None
    residuals: np.ndarray | None = None

    # ------------------------------------------------------------------ predictions
    def _vector(self) -> np.ndarray:
        return np.array([self.params[k] for k in PARAM_NAMES], dtype=float)

    def predict(self, N, D):
        """Expected loss (nats) at N parameters and D tokens (scalars or broadcastable arrays)."""
        N_arr, D_arr = self._nd(N, D)
        out = _law(self._vector()[None], N_arr, D_arr)[0]
        return float(out) if out.ndim == 0 else out

    def _nd(self, N, D):
        N_arr = _as_array_positive("N", N)
        D_arr = _as_array_positive("D", D)
        try:
            np.broadcast_shapes(N_arr.shape, D_arr.shape)
        except ValueError as exc:
            raise InvalidInputError(f"N and D shapes do not broadcast: {N_arr.shape}, {D_arr.shape}") from exc
        return N_arr, D_arr

    def _draws(self) -> np.ndarray:
        if self.bootstrap_params is None or len(self.bootstrap_params) == 0:
            raise InvalidInputError(
                "no bootstrap draws: intervals need fit_scaling_law(..., bootstrap=k) "
                "(e.g. k=200; 1,000 for publication-grade 95% intervals)")
        return np.asarray(self.bootstrap_params, float)

    def param_intervals(self, level: float = 0.9) -> dict[str, tuple[float, float]]:
        """Bootstrap percentile interval of each parameter at ``level`` (central)."""
        level = _check_level(level)
        draws = self._draws()
        q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
        lo, hi = np.percentile(draws, q, axis=0)
        return {k: (float(lo[i]), float(hi[i])) for i, k in enumerate(PARAM_NAMES)}

    def interval(self, N, D, level: float = 0.9, kind: str = "mean"):
        """Bootstrap percentile interval for the loss at (N, D), in nats.

        kind="mean" (default): interval for the expected loss (parameter uncertainty only).
        kind="prediction": interval for one new run's loss there: each bootstrap law is
        multiplied by a log-residual of the fit drawn at random (run-to-run scatter).
        Returns (lower, upper), floats for scalar input, arrays otherwise.
        """
        level = _check_level(level)
        if kind not in ("mean", "prediction"):
            raise InvalidInputError(f"kind must be 'mean' or 'prediction', got {kind!r}")
        draws = self._draws()
        N_arr, D_arr = self._nd(N, D)
        preds = _law(draws, N_arr, D_arr)
        if kind == "prediction":
            res = np.asarray(self.residuals if self.residuals is not None else [0.0], float)
            rng = np.random.default_rng(12345)
            eps = rng.choice(res, size=preds.shape[0])
            preds = preds * np.exp(eps).reshape(-1, *([1] * (preds.ndim - 1)))
        q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
        lo, hi = np.percentile(preds, q, axis=0)
        if lo.ndim == 0:
            return float(lo), float(hi)
        return lo, hi

    # ------------------------------------------------------------------ allocation
    def compute_optimal(self, C):
        """Compute-optimal (N_opt parameters, D_opt tokens) for a budget of C FLOPs, C = 6 N D.

        Closed form: N_opt = G (C/6)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta)),
        D_opt = C / (6 N_opt). Scalars in, floats out; arrays in, arrays out.
        """
        C_arr = _as_array_positive("C (FLOPs)", C)
        n_opt, d_opt = _optimal(self._vector()[None], C_arr)
        n_opt, d_opt = n_opt[0], d_opt[0]
        if n_opt.ndim == 0:
            return float(n_opt), float(d_opt)
        return n_opt, d_opt

    def compute_optimal_intervals(self, C, level: float = 0.9) -> dict[str, tuple[float, float]]:
        """Bootstrap intervals of N_opt (parameters), D_opt (tokens) and the loss there (nats)
        for one budget C (FLOPs): each bootstrap law gives its own optimum."""
        level = _check_level(level)
        draws = self._draws()
        C_arr = _as_array_positive("C (FLOPs)", C)
        if C_arr.ndim != 0:
            raise InvalidInputError("compute_optimal_intervals takes one budget C")
        n_opt, d_opt = _optimal(draws, C_arr)
        loss = draws[:, 0] + draws[:, 1] * n_opt ** -draws[:, 3] + draws[:, 2] * d_opt ** -draws[:, 4]
        q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
        out = {}
        for key, vals in (("N", n_opt), ("D", d_opt), ("loss", loss)):
            lo, hi = np.percentile(vals, q)
            out[key] = (float(lo), float(hi))
        return out

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of plain floats/lists (also loads with torch.load(weights_only=True))."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "law": "E + A/N^alpha + B/D^beta",
            "params": {k: float(self.params[k]) for k in PARAM_NAMES},
            "huber_delta": float(self.huber_delta),
            "objective": float(self.objective),
            "diagnostics": plain(self.diagnostics),
            "bootstrap_params": None if self.bootstrap_params is None
            else [[float(v) for v in row] for row in np.asarray(self.bootstrap_params)],
            "residuals": None if self.residuals is None
            else [float(v) for v in np.asarray(self.residuals)],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ScalingLawFit":
        """Inverse of :meth:`to_dict`; refuses another format or a newer version."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InvalidInputError(f"not a {FORMAT} dict")
        if int(d.get("version", 0)) > VERSION:
            raise InvalidInputError(
                f"{FORMAT} version {d.get('version')} is newer than this lightning-scaling "
                f"understands ({VERSION}); upgrade lightning-scaling")
        try:
            params = {k: float(d["params"][k]) for k in PARAM_NAMES}
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"params must hold numbers {PARAM_NAMES}") from exc
        boot = d.get("bootstrap_params")
        res = d.get("residuals")
        return cls(
            params=params,
            huber_delta=float(d.get("huber_delta", 1e-3)),
            objective=float(d.get("objective", math.nan)),
            diagnostics=dict(d.get("diagnostics") or {}),
            bootstrap_params=None if boot is None else np.asarray(boot, float).reshape(-1, 5),
            residuals=None if res is None else np.asarray(res, float),
        )

    def __str__(self) -> str:
        p = self.params
        return (f"L(N, D) = {p['E']:.4g} + {p['A']:.4g}/N^{p['alpha']:.4g} "
                f"+ {p['B']:.4g}/D^{p['beta']:.4g}  (nats; N parameters, D tokens)")


def _as_array_positive(name, x):
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name}: expected numbers, got {x!r:.80}") from exc
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InvalidInputError(f"{name}: values must be finite and > 0")
    return arr


def _optimal(P: np.ndarray, C: np.ndarray):
    """(N_opt, D_opt) for every row of P (k, 5) at budgets C: arrays of shape (k, *C.shape)."""
    P = P.reshape(-1, 5, *([1] * C.ndim))
    E, A, B, alpha, beta = (P[:, i] for i in range(5))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = alpha + beta
        log_g = (np.log(alpha * A) - np.log(beta * B)) / s
        log_n = log_g + beta / s * np.log(C / 6.0)
        n_opt = np.exp(log_n)
        d_opt = C / (6.0 * n_opt)
    return n_opt, d_opt



# =========================================================================== fitting
def _fit_points(log_n, log_d, loss, delta, weights=None, grid=EXPONENT_GRID, n_refine=N_REFINE):
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


def fit_scaling_law(N, D, loss, huber_delta: float = 1e-3, bootstrap: int = 0, *,
                    seed: int = 0) -> ScalingLawFit:
    """Fit L(N, D) = E + A / N**alpha + B / D**beta to final losses of several runs.

    Args:
        N: model sizes, parameters (one per run; > 0).
        D: training tokens of each run (> 0).
        loss: final loss of each run, nats (> 0).
        huber_delta: Huber threshold on log-residuals (Chinchilla: 1e-3).
        bootstrap: number of bootstrap refits for intervals (0: none; 200 is quick, 1,000
            gives stable 95% intervals).
        seed: seed of the bootstrap resampling.

    Returns:
        ScalingLawFit. Raises InvalidInputError for input that cannot identify the law (see
        the module docstring).

    Example:
        >>> fit = fit_scaling_law(N, D, loss, bootstrap=200)
        >>> fit.params["alpha"], fit.param_intervals(0.95)["alpha"]
        >>> n_opt, d_opt = fit.compute_optimal(1e21)  # FLOPs -> parameters, tokens
    """
    t0 = time.perf_counter()
    n_arr, d_arr, l_arr, delta, bootstrap = _validate(N, D, loss, huber_delta, bootstrap)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer, got {seed!r}")
    # A canonical order makes the result independent of the order of the runs: where the
    # data leave a flat valley (e.g. two model sizes), summation order would pick the point.
    order = np.lexsort((l_arr, d_arr, n_arr))
    inverse = np.argsort(order)
    n_arr, d_arr, l_arr = n_arr[order], d_arr[order], l_arr[order]
    log_n, log_d = np.log(n_arr), np.log(d_arr)
    theta, obj, info, (mn, md, z_best) = _fit_points(log_n, log_d, l_arr, delta)
    params = _theta_to_params(theta)
    resid = (np.log(l_arr) - log_law(theta, log_n, log_d))[inverse]
    flags = []
    for name in ("alpha", "beta"):
        if params[name] < 0.03 or params[name] > 1.95:
            flags.append(f"{name} = {params[name]:.3g} is at the edge of the searched range "
                         "(0.02-2): the data may not constrain it")
    if params["E"] < 1e-3 * float(l_arr.min()):
        flags.append(f"E = {params['E']:.3g} (irreducible loss ~ 0): the runs do not pin down "
                     "the loss floor; long extrapolations are unreliable")
    if np.unique(n_arr).size < 3 or np.unique(d_arr).size < 3:
        flags.append("fewer than 3 distinct model sizes or token counts: exponents are "
                     "weakly identified")
    diagnostics = {
        "n_points": int(l_arr.size),
        "n_model_sizes": int(np.unique(n_arr).size),
        "n_token_counts": int(np.unique(d_arr).size),
        "N_range": [float(n_arr.min()), float(n_arr.max())],
        "D_range": [float(d_arr.min()), float(d_arr.max())],
        "residual_scale": float(np.median(np.abs(resid))),
        **info,
        "fit_seconds": time.perf_counter() - t0,
        "flags": flags,
    }
    boot = None
    if bootstrap:
        t1 = time.perf_counter()
        boot, failed = _bootstrap(log_n - mn, log_d - md, np.log(l_arr), delta, z_best,
                                  (mn, md), bootstrap, seed)
        diagnostics["bootstrap"] = {"resamples": bootstrap, "failed": failed, "seed": int(seed),
                                    "seconds": time.perf_counter() - t1,
                                    "method": "case resampling, BFGS warm-started at the "
                                              "full-data optimum, percentile intervals"}
    return ScalingLawFit(params=params, huber_delta=delta, objective=float(obj),
                         diagnostics=diagnostics, bootstrap_params=boot, residuals=resid)


def _bootstrap(ln_c, ld_c, log_loss, delta, z_best, centres, k, seed):
    """k case-resampling refits (weights = multinomial counts), warm-started at z_best."""
    rng = np.random.default_rng(seed)
    n = log_loss.size
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=k).astype(float)
    mn, md = centres
    out = np.empty((k, 5))
    failed = 0
    for i in range(k):
        z, f, res = _refine(z_best, ln_c, ld_c, log_loss, delta, counts[i], _BOOT_OPTIONS)
        row = _natural_params(z, mn, md)
        if not np.all(np.isfinite(row)):
            # a resample that ran off (e.g. one model size drawn over and over): counted, and
            # replaced by the full-data optimum so the intervals stay finite
            failed += 1
            row = _natural_params(z_best, mn, md)
        out[i] = row
    return out, failed


def _natural_params(z, mn, md) -> np.ndarray:
    """Centred optimiser coordinates -> [E, A, B, alpha, beta] (inf where exp overflows)."""
    z = np.asarray(z, dtype=float)
    log_a, log_b = z[0] + z[3] * mn, z[1] + z[4] * md
    with np.errstate(over="ignore", invalid="ignore"):
        return np.array([np.exp(z[2]), np.exp(log_a), np.exp(log_b), z[3], z[4]])
