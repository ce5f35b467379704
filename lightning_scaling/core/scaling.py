"""Multi-run scaling laws: ``fit_scaling_law`` -> ``ScalingLawFit``.

The law is Chinchilla's (Hoffmann et al. 2022, approach 3)::

    L(N, D) = E + A / N**alpha + B / D**beta

N: parameters, D: training tokens, L: loss in nats. It is fitted the Chinchilla way, on log L
with a Huber loss: minimise ``sum_i huber_delta(LSE(a - alpha log N_i, b - beta log D_i, e)
- log L_i)`` over (a, b, e, alpha, beta) with A = exp(a), B = exp(b), E = exp(e). The solver
(a variable-projection grid over the exponents, then BFGS) is in ``scaling_solver.py``.

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

from ..errors import InvalidInputError
from .plain import plain
from .scaling_solver import (
    EXPONENT_GRID,
    N_REFINE,
    bootstrap_refits,
    fit_points,
    huber,
    huber_objective,
    log_law,
)

__all__ = [
    "EXPONENT_GRID", "FORMAT", "MIN_POINTS", "N_REFINE", "PARAM_NAMES", "VERSION", "ScalingLawFit",
    "compute_optimal_allocation", "fit_scaling_law", "huber", "huber_objective", "log_law",
]

FORMAT = "lightning-scaling/scaling-law-fit"
VERSION = 1

PARAM_NAMES = ("E", "A", "B", "alpha", "beta")

MIN_POINTS = 5
"""Fewest (N, D, loss) points ``fit_scaling_law`` accepts: the law has five parameters."""

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
        n_opt, d_opt = compute_optimal_allocation(self._vector()[None], C_arr)
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
        n_opt, d_opt = compute_optimal_allocation(draws, C_arr)
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


def compute_optimal_allocation(P: np.ndarray, C: np.ndarray):
    """Compute-optimal (N_opt parameters, D_opt tokens) of several laws at FLOP budgets C.

    P holds one law per row, columns (E, A, B, alpha, beta) as ``PARAM_NAMES`` (shape (k, 5));
    C is an array of budgets in FLOPs (C = 6 N D). Returns two arrays of shape (k, *C.shape).
    Closed form: N_opt = G (C/6)**(beta/(alpha+beta)), G = (alpha A / (beta B))**(1/(alpha+beta)).

    >>> n, d = compute_optimal_allocation(np.array([[1.8, 400.0, 400.0, 0.3, 0.3]]), np.array(6e20))
    >>> f"{float(n[0]):.3g} parameters, {float(d[0]):.3g} tokens"
    '1e+10 parameters, 1e+10 tokens'
    """
    P = P.reshape(-1, 5, *([1] * C.ndim))
    E, A, B, alpha, beta = (P[:, i] for i in range(5))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = alpha + beta
        log_g = (np.log(alpha * A) - np.log(beta * B)) / s
        log_n = log_g + beta / s * np.log(C / 6.0)
        n_opt = np.exp(log_n)
        d_opt = C / (6.0 * n_opt)
    return n_opt, d_opt




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

    Example (nine runs of a known law; parameters, tokens, nats):

    >>> import numpy as np
    >>> N = np.repeat([1e8, 3e8, 1e9], 3)
    >>> D = np.tile([2e9, 6e9, 2e10], 3)
    >>> fit = fit_scaling_law(N, D, 1.8 + 400.0 / N**0.34 + 2000.0 / D**0.37)
    >>> {k: round(v, 2) for k, v in fit.params.items()}
    {'E': 1.8, 'A': 400.0, 'B': 2000.0, 'alpha': 0.34, 'beta': 0.37}
    >>> n_opt, d_opt = fit.compute_optimal(1e21)  # FLOPs -> parameters, tokens
    >>> print(f"{n_opt:.2g} parameters, {d_opt:.2g} tokens")
    3.2e+09 parameters, 5.2e+10 tokens

    With ``bootstrap=k`` (noisy data), ``fit.param_intervals(0.9)`` and
    ``fit.interval(N, D)`` give percentile intervals over the k refits.
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
    theta, obj, info, (mn, md, z_best) = fit_points(log_n, log_d, l_arr, delta)
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
        boot, failed = bootstrap_refits(log_n - mn, log_d - md, np.log(l_arr), delta, z_best,
                                  (mn, md), bootstrap, seed)
        diagnostics["bootstrap"] = {"resamples": bootstrap, "failed": failed, "seed": int(seed),
                                    "seconds": time.perf_counter() - t1,
                                    "method": "case resampling, BFGS warm-started at the "
                                              "full-data optimum, percentile intervals"}
    return ScalingLawFit(params=params, huber_delta=delta, objective=float(obj),
                         diagnostics=diagnostics, bootstrap_params=boot, residuals=resid)
