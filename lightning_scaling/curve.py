"""Single-run curve fitting: ``fit_curve`` -> ``CurveFit``.

``fit_curve(x, loss)`` cleans the points, cuts the warm-up transient, buckets long noisy
histories into log-spaced bins, fits every LR-agnostic law of ``laws.LR_AGNOSTIC_LAWS`` with a
robust variable-projection fit, weights the laws by how well each forecasts held-back late
points of the same curve, and attaches a calibrated interval model.

Failure policy
--------------
* Invalid *arguments* (not array-like, different lengths, non-numeric, a level outside
  (0, 1), an unknown law name, an ``lr`` that does not cover the steps) raise
  ``lightning_scaling.errors.InvalidInputError`` and nothing else.
* Data that is merely unusable (fewer than ``MIN_POINTS`` finite points, no downward trend,
  all NaN) is not an error: the fit comes back with ``ok == False``, NaN forecasts, and
  ``diagnostics["reason"]`` says why.

How to add a law
----------------
1. Write the law in ``laws.py`` (or your own module) as a :class:`laws.Law`: linear
   coefficients x basis columns that depend on a few bounded nonlinear parameters, a
   ``to_params`` that returns caller-unit parameters, and an ``evaluate(x, params, context)``.
   A law that needs the learning-rate schedule sets ``uses_context=True`` and reads
   ``context["lr"]`` (LR at every step 0..horizon) in ``basis``/``evaluate``; x is then the
   optimizer step.
2. ``laws.register_law(law)`` (names are unique).
3. Fit it with :func:`fit_law` (robust Huber-on-log, multi-start, variable projection) on the
   output of :func:`prepare_points`; compare candidates with :func:`holdout_weights`; build a
   :class:`CurveFit` with :func:`build_fit`, which attaches the calibrated interval model.
   ``CurveFit.context`` keeps the context (JSON-safe) so ``predict`` works after a
   ``to_dict``/``from_dict`` round trip.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import optimize, special

from .errors import InvalidInputError
from .laws import LAWS, LR_AGNOSTIC_LAWS, Law, get_law

FORMAT = "lightning-scaling/curve-fit"
VERSION = 1

MIN_POINTS = 6
"""Fewest usable points (after hygiene and the warm-up cut) ``fit_curve`` will fit."""

MAX_BINS = 160
"""Longer histories are averaged into at most this many log-spaced bins of x."""


# =========================================================================== CurveFit
@dataclass
class CurveFit:
    """A fitted single-run loss curve.

    Attributes:
        law: name of the main law (a key of ``laws.LAWS``), or "none" when no fit was
            possible (then ``ok`` is False and every forecast is NaN).
        params: the main law's fitted parameters, in the caller's x units.
        diagnostics: JSON-safe dict: points used/dropped and why, warm-up cut, law weights,
            residual scale, ``reason`` when the fit is not ok, ``flags`` (list of str).
        components: the forecast mixture ``[{"law", "params", "weight"}]`` (weights sum to 1);
            ``predict`` is the weighted mean. Empty means "the main law alone".
        uncertainty: the interval model (JSON-safe), see :meth:`interval`.
        context: side information the laws read (e.g. ``{"lr": [...]}``), JSON-safe, or None.
        x_first, x_last: range of x the fit saw (caller units).
    """

    law: str
    params: dict[str, float]
    diagnostics: dict[str, Any] = field(default_factory=dict)
    components: list[dict[str, Any]] = field(default_factory=list)
    uncertainty: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] | None = None
    x_first: float = math.nan
    x_last: float = math.nan

    # ------------------------------------------------------------------ forecasts
    @property
    def ok(self) -> bool:
        """True when the fit can forecast (otherwise every forecast is NaN)."""
        return self.law in LAWS and bool(self.params)

    def _members(self) -> list[tuple[Law, dict[str, float], float]]:
        if self.components:
            return [(get_law(c["law"]), c["params"], float(c["weight"])) for c in self.components]
        return [(get_law(self.law), self.params, 1.0)]

    def _ctx(self):
        if self.context is None:
            return None
        return _context_arrays(self.context)

    def predict(self, x):
        """Expected loss at x (caller units; scalar or array); NaN when the fit is not ok."""
        x_arr = _as_float_array(x, "x")
        if not self.ok:
            out = np.full(x_arr.shape, np.nan)
        else:
            ctx = self._ctx()
            out = np.zeros(x_arr.shape)
            for law, params, weight in self._members():
                out = out + weight * law.evaluate(x_arr, params, ctx)
            out = np.where(np.isfinite(out), out, np.nan)
        return float(out) if out.ndim == 0 else out

    def interval_sd(self, x):
        """Standard deviation of log(expected loss) at x that the interval uses."""
        x_arr = _as_float_array(x, "x")
        if not self.ok:
            out = np.full(x_arr.shape, np.nan)
        else:
            out = _uncertainty_sd(self, x_arr)
        return float(out) if out.ndim == 0 else out

    def interval(self, x, level: float = 0.9):
        """(lower, upper) prediction interval for the expected loss at x.

        The band is log-normal around ``predict(x)`` with the standard deviation of
        :meth:`interval_sd`: the spread of the alternative fits (laws and held-out-split
        refits: parameter and model-choice uncertainty) plus the noise of the fitted level,
        inflated with the distance of x beyond the data by factors calibrated on real curves
        (see ``uncertainty["calibration"]``). NaN when the fit is not ok.
        """
        level = _check_level(level)
        mean = np.asarray(self.predict(x), dtype=float)
        sd = np.asarray(self.interval_sd(x), dtype=float)
        z = special.ndtri(0.5 + level / 2.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            lo = mean * np.exp(-z * sd)
            hi = mean * np.exp(z * sd)
        if lo.ndim == 0:
            return float(lo), float(hi)
        return lo, hi

    def x_at(self, target_loss: float) -> float:
        """x where the expected loss first reaches ``target_loss``.

        inf when the forecast never gets there (target at or below the asymptote, or beyond
        the schedule's horizon); NaN when the fit is not ok. x_first when the target is
        above the loss at the first fitted x.
        """
        target = _as_float_array(target_loss, "target_loss")
        if target.ndim != 0:
            raise InvalidInputError("target_loss must be a single number")
        target = float(target)
        if not self.ok or not math.isfinite(target):
            return math.nan
        lo = self.x_first
        if self.predict(lo) <= target:
            return float(lo)
        hi_limit = self._x_limit()
        hi = lo
        while True:
            nxt = hi * 4.0
            if nxt > hi_limit:
                nxt = hi_limit
            val = self.predict(nxt)
            if math.isfinite(val) and val <= target:
                hi = nxt
                break
            if nxt >= hi_limit:
                return math.inf
            lo, hi = nxt, nxt
        # bisection on log x
        a, b = math.log(lo), math.log(hi)
        for _ in range(80):
            m = 0.5 * (a + b)
            if self.predict(math.exp(m)) <= target:
                b = m
            else:
                a = m
        return float(math.exp(b))

    def _x_limit(self) -> float:
        ctx = self.context
        if ctx and ctx.get("lr") is not None:
            return float(len(ctx["lr"]) - 1)
        return float(self.x_first) * 1e30 if self.x_first > 0 else 1e300

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of plain floats, ints, str, lists, dicts and None (NaN -> None).

        Survives ``json.dumps(..., allow_nan=False)`` and ``torch.load(weights_only=True)``.
        """
        return _jsonable(
            {
                "format": FORMAT,
                "version": VERSION,
                "law": self.law,
                "params": self.params,
                "components": self.components,
                "uncertainty": self.uncertainty,
                "context": self.context,
                "x_first": self.x_first,
                "x_last": self.x_last,
                "diagnostics": self.diagnostics,
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CurveFit":
        """Inverse of :meth:`to_dict`; unknown extra keys are ignored."""
        if not isinstance(d, dict):
            raise InvalidInputError("CurveFit.from_dict needs a dict")
        version = d.get("version", VERSION)
        if not isinstance(version, int) or version > VERSION:
            raise InvalidInputError(
                f"curve fit format version {version!r} is newer than this lightning-scaling "
                f"understands ({VERSION}); upgrade the package"
            )
        law = d.get("law", "none")
        if law != "none" and law not in LAWS:
            raise InvalidInputError(f"unknown law {law!r} in curve fit dict")

        def num(v):
            return math.nan if v is None else float(v)

        params = {k: num(v) for k, v in (d.get("params") or {}).items()}
        components = [
            {"law": c["law"], "params": {k: num(v) for k, v in c["params"].items()},
             "weight": num(c["weight"])}
            for c in (d.get("components") or [])
        ]
        for c in components:
            get_law(c["law"])
        return cls(
            law=law,
            params=params,
            diagnostics=dict(d.get("diagnostics") or {}),
            components=components,
            uncertainty=_unjson(d.get("uncertainty") or {}),
            context=d.get("context"),
            x_first=num(d.get("x_first")),
            x_last=num(d.get("x_last")),
        )

    def __repr__(self) -> str:
        if not self.ok:
            return f"CurveFit(ok=False, reason={self.diagnostics.get('reason')!r})"
        ps = ", ".join(f"{k}={v:.4g}" for k, v in self.params.items())
        return f"CurveFit(law={self.law!r}, {ps}, x_last={self.x_last:.4g})"


def failed_fit(reason: str, diagnostics: dict[str, Any] | None = None, detail: str | None = None,
               **kw) -> CurveFit:
    """A fit that cannot forecast: ``ok`` False, NaN forecasts, ``diagnostics["reason"]``.

    ``reason`` is a short stable phrase ("too few points", "no downward trend", ...);
    ``detail`` (``diagnostics["reason_detail"]``) says more for people.
    """
    diag = dict(diagnostics or {})
    diag["reason"] = reason
    if detail:
        diag["reason_detail"] = detail
    diag.setdefault("law", "none")
    return CurveFit("none", {}, diag, **kw)


# =========================================================================== small helpers
def _as_float_array(v, name: str) -> np.ndarray:
    try:
        arr = np.asarray(v, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be numeric: {exc}") from None
    return arr


def _check_level(level) -> float:
    try:
        lv = float(level)
    except (TypeError, ValueError):
        raise InvalidInputError(f"level must be a number in (0, 1), got {level!r}") from None
    if not 0.0 < lv < 1.0:
        raise InvalidInputError(f"level must be in (0, 1), got {level!r}")
    return lv


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _unjson(obj):
    if isinstance(obj, dict):
        return {k: _unjson(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unjson(v) for v in obj]
    return math.nan if obj is None else obj


def _context_arrays(context: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in context.items():
        out[k] = np.asarray(v, dtype=float) if isinstance(v, list) else v
    return out


# =========================================================================== input hygiene
def validate_inputs(x, loss) -> tuple[np.ndarray, np.ndarray]:
    """x and loss as 1-D float arrays of one length; InvalidInputError otherwise.

    Non-finite values are allowed here (``clean_points`` drops and counts them).
    """
    x_arr = _as_float_array(x, "x")
    y_arr = _as_float_array(loss, "loss")
    if x_arr.ndim > 1 or y_arr.ndim > 1:
        if x_arr.squeeze().ndim > 1 or y_arr.squeeze().ndim > 1:
            raise InvalidInputError(
                f"x and loss must be one-dimensional, got shapes {x_arr.shape} and {y_arr.shape}"
            )
    x_arr = np.atleast_1d(x_arr.squeeze()) if x_arr.ndim else x_arr.reshape(1)
    y_arr = np.atleast_1d(y_arr.squeeze()) if y_arr.ndim else y_arr.reshape(1)
    if x_arr.shape != y_arr.shape:
        raise InvalidInputError(f"x and loss differ in length: {x_arr.size} vs {y_arr.size}")
    return x_arr, y_arr


def clean_points(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Drop unusable points and sort by x.

    Returns (x, y, dropped) where dropped counts points by reason: "nan_or_inf" (x or loss
    not finite), "x_not_positive" (x <= 0: a power law of x is undefined there),
    "loss_not_positive" (loss <= 0: the fit works on log loss). Duplicate x values are
    kept (they are averaged by the bucketing).
    """
    finite = np.isfinite(x) & np.isfinite(y)
    xpos = x > 0
    ypos = y > 0
    dropped = {
        "nan_or_inf": int((~finite).sum()),
        "x_not_positive": int((finite & ~xpos).sum()),
        "loss_not_positive": int((finite & xpos & ~ypos).sum()),
    }
    good = finite & xpos & ypos
    if good.all() and (x.size < 2 or np.all(x[1:] >= x[:-1])):
        return x, y, dropped
    xg, yg = x[good], y[good]
    if xg.size > 1 and not np.all(xg[1:] >= xg[:-1]):
        order = np.argsort(xg, kind="stable")
        xg, yg = xg[order], yg[order]
    return xg, yg, dropped


def bucket_log(x: np.ndarray, y: np.ndarray, max_bins: int = MAX_BINS):
    """Average a long history into at most ``max_bins`` log-spaced bins of x.

    Returns (xb, yb, count): the mean x and mean loss of each non-empty bin and how many
    points it holds. Histories with at most ``max_bins`` points come back unchanged (count 1).
    Memory is O(len(x)) for one pass, nothing is kept.
    """
    n = x.size
    if n <= max_bins:
        return x, y, np.ones(n)
    lx = np.log(x)
    lo, hi = lx[0], lx[-1]
    if hi <= lo:
        return np.array([x.mean()]), np.array([y.mean()]), np.array([float(n)])
    idx = ((lx - lo) * (max_bins / (hi - lo))).astype(np.intp)
    np.minimum(idx, max_bins - 1, out=idx)
    count = np.bincount(idx, minlength=max_bins).astype(float)
    sx = np.bincount(idx, weights=x, minlength=max_bins)
    sy = np.bincount(idx, weights=y, minlength=max_bins)
    keep = count > 0
    count = count[keep]
    return sx[keep] / count, sy[keep] / count, count


# =========================================================================== robust law fit
HUBER_K = 1.345
"""Huber threshold, in robust standard deviations of the log residuals."""


@dataclass
class LawFit:
    """One law fitted to one set of points (what :func:`fit_law` returns).

    Attributes:
        law: the Law.
        params: caller-unit parameters (empty when ``ok`` is False).
        theta, coef: the nonlinear parameters and linear coefficients (fitter units).
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
        if not self.ok:
            return np.full(np.shape(x), np.nan)
        return self.law.evaluate(np.asarray(x, dtype=float), self.params, context)


def _theta_grid(law: Law, per_dim: int) -> np.ndarray:
    axes = [np.linspace(lo, hi, per_dim) for lo, hi in law.bounds]
    mesh = np.meshgrid(*axes, indexing="ij")
    grid = np.column_stack([m.ravel() for m in mesh])
    starts = np.array(law.starts, dtype=float).reshape(-1, len(law.bounds))
    return np.vstack([grid, starts])


def _huber_rho(u: np.ndarray) -> np.ndarray:
    a = np.abs(u)
    return np.where(a <= HUBER_K, 0.5 * u * u, HUBER_K * (a - 0.5 * HUBER_K))


class _Problem:
    """Batched evaluation of one law on one point set (variable projection)."""

    def __init__(self, law, xn, y, w, context, prior_lin, prior_nl):
        self.law = law
        self.xn_row = xn[None, :]
        self.y = y
        self.logy = np.log(y)
        self.w = w
        self.v0 = w / (y * y)  # relative residuals ~ log residuals
        self.context = context
        self.k = len(law.linear)
        self.lower = np.array(law.linear_lower, dtype=float)
        self.prior_lin = prior_lin  # list of (j, mu, sd) on linear coefficients
        self.prior_nl = prior_nl  # list of (j, mu, sd) on theta
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
        """Bounded weighted least squares for each of m candidates: coef (m, k), pred (m, n)."""
        m = C.shape[0]
        y = self.y
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
            better = feasible & (sse < best_sse)
            best_sse[better] = sse[better]
            best_coef[better] = coef[better]
        pred = np.einsum("mnk,mk->mn", C, best_coef)
        return best_coef, pred

    def evaluate(self, theta: np.ndarray, s: float | None):
        """Objective (m,), coef (m, k) and log residuals (m, n) for m thetas.

        s None: plain least squares on log residuals (first pass, to find the scale).
        """
        C = self.columns(theta)
        m = theta.shape[0]
        v = np.broadcast_to(self.v0, (m, self.y.size))
        s2 = 1.0 if s is None else s * s
        coef, pred = self.solve(C, v, s2)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = self.logy - np.log(np.where(pred > 0, pred, np.nan))
        if s is not None:
            u = np.nan_to_num(r / s, nan=1e6)
            h = np.minimum(1.0, HUBER_K / np.maximum(np.abs(u), 1e-12))
            coef, pred = self.solve(C, v * h, s2)
            with np.errstate(invalid="ignore", divide="ignore"):
                r = self.logy - np.log(np.where(pred > 0, pred, np.nan))
            obj = np.einsum("n,mn->m", self.w, _huber_rho(np.nan_to_num(r / s, nan=1e6)))
        else:
            obj = np.einsum("n,mn->m", self.w, np.nan_to_num(r, nan=1e3) ** 2)
        for j, mu, sd in self.prior_nl:
            obj = obj + 0.5 * ((theta[:, j] - mu) / sd) ** 2
        if s is not None:
            for j, mu, sd in self.prior_lin:
                obj = obj + 0.5 * ((coef[:, j] - mu) / sd) ** 2
        obj = np.where(np.isfinite(obj), obj, np.inf)
        return obj, coef, r


def _split_prior(law: Law, prior) -> tuple[list, list]:
    prior_lin, prior_nl = [], []
    if not prior:
        return prior_lin, prior_nl
    if not isinstance(prior, dict):
        raise InvalidInputError("prior must be a dict {parameter name: (mean, sd)}")
    for name, spec in prior.items():
        try:
            mu, sd = (float(v) for v in spec)
        except (TypeError, ValueError):
            raise InvalidInputError(f"prior[{name!r}] must be a (mean, sd) pair of numbers") from None
        if not (math.isfinite(mu) and math.isfinite(sd) and sd > 0):
            raise InvalidInputError(f"prior[{name!r}] needs a finite mean and a positive sd")
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
    zoom_steps: int = 5,
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
        zoom_steps: refinement rounds around the best candidate.
    """
    law = get_law(law) if isinstance(law, str) else law
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=float)
    if x_scale is None:
        x_scale = float(x.max())
    xn = x / x_scale if not law.uses_context else x
    prior_lin, prior_nl = _split_prior(law, prior)
    prob = _Problem(law, xn, y, w, context, prior_lin, prior_nl)
    dim = len(law.bounds)
    if grid_per_dim is None:
        grid_per_dim = {0: 1, 1: 40, 2: 13, 3: 7}.get(dim, 5)
    lows = np.array([b[0] for b in law.bounds], dtype=float)
    highs = np.array([b[1] for b in law.bounds], dtype=float)
    grid = _theta_grid(law, grid_per_dim)

    if scale is None:
        obj, _, r = prob.evaluate(grid, None)
        i = int(np.argmin(obj))
        ri = r[i]
        fin = np.isfinite(ri)
        if fin.sum() >= 2:
            med = np.median(ri[fin])
            scale = 1.4826 * float(np.median(np.abs(ri[fin] - med)))
        else:
            scale = 1e-2
    scale = max(float(scale), 1e-6)

    obj, coef, _ = prob.evaluate(grid, scale)
    i = int(np.argmin(obj))
    best_theta, best_obj, best_coef = grid[i].copy(), float(obj[i]), coef[i].copy()
    step = (highs - lows) / max(grid_per_dim - 1, 1)
    offsets = np.array(list(product((-1.0, -0.5, 0.0, 0.5, 1.0), repeat=dim)))
    for _ in range(zoom_steps if dim else 0):
        cand = np.clip(best_theta + offsets * step, lows, highs)
        obj, coef, _ = prob.evaluate(cand, scale)
        j = int(np.argmin(obj))
        if obj[j] < best_obj:
            best_theta, best_obj, best_coef = cand[j].copy(), float(obj[j]), coef[j].copy()
        step = step * 0.4
    if not math.isfinite(best_obj):
        return LawFit(law, {}, tuple(best_theta), tuple(best_coef), math.inf, scale, x_scale, False)
    params = law.to_params(tuple(float(c) for c in best_coef), tuple(float(t) for t in best_theta),
                           x_scale)
    ok = all(math.isfinite(v) for v in params.values())
    return LawFit(law, params, tuple(float(t) for t in best_theta), tuple(float(c) for c in best_coef),
                  best_obj, scale, x_scale, ok)


# =========================================================================== fit_curve
@dataclass
class Prepared:
    """Clean, warm-up-cut, bucketed points ready for :func:`fit_law` (see prepare_points).

    Attributes:
        x, y, w: bucketed points (caller units) and their weights (points per bucket).
        diagnostics: counts and reasons (n_points, dropped, warmup, n_used, n_buckets).
        reason: why the points cannot be fitted (None when they can): a short stable phrase.
        detail: more words about the reason, for people.
    """

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray
    diagnostics: dict[str, Any]
    reason: str | None = None
    detail: str | None = None


def prepare_points(x, loss, *, max_bins: int = MAX_BINS, min_points: int = MIN_POINTS,
                   cut_warmup: bool = True) -> Prepared:
    """Validate, clean, bucket and cut the warm-up of one curve (reusable by other fitters)."""
    x_arr, y_arr = validate_inputs(x, loss)
    xc, yc, dropped = clean_points(x_arr, y_arr)
    diag: dict[str, Any] = {
        "n_points": int(x_arr.size),
        "n_dropped": int(sum(dropped.values())),
        "dropped": {k: v for k, v in dropped.items() if v},
        "flags": [],
    }
    if xc.size < min_points or np.unique(xc).size < min_points:
        diag["n_used"] = int(xc.size)
        return Prepared(xc, yc, np.ones(xc.size), diag, "too few points",
                        f"{xc.size} usable points (distinct x > 0, loss > 0, finite), need {min_points}")
    xb, yb, wb = bucket_log(xc, yc, max_bins)
    if xb.size < xc.size:
        diag["bucketed"] = {"n_buckets": int(xb.size), "from_points": int(xc.size)}
    cut = 0
    if cut_warmup:
        cut, why = detect_warmup(xb, yb, wb)
        if cut:
            diag["warmup"] = {"cut_before_x": float(xb[cut]), "n_buckets_cut": int(cut),
                              "n_points_cut": int(wb[:cut].sum()), "why": why}
            xb, yb, wb = xb[cut:], yb[cut:], wb[cut:]
    diag["n_used"] = int(wb.sum())
    diag["x_range"] = [float(xb[0]), float(xb[-1])]
    if not has_downward_trend(xb, yb, wb):
        return Prepared(xb, yb, wb, diag, "no downward trend",
                        "the loss of the last third of the curve (log x) is not below the first third")
    return Prepared(xb, yb, wb, diag)


def has_downward_trend(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> bool:
    """True when the loss of the last third (in log x) is clearly below the first third."""
    lx = np.log(x)
    span = lx[-1] - lx[0]
    if span <= 0:
        return False
    first = lx <= lx[0] + span / 3
    last = lx >= lx[-1] - span / 3
    if first.sum() < 1 or last.sum() < 1:
        return False
    ly = np.log(y)
    m_first = np.average(ly[first], weights=w[first])
    m_last = np.average(ly[last], weights=w[last])
    return bool(m_last < m_first - 1e-4)


def detect_warmup(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[int, str]:
    """Index of the first point past the warm-up transient, and why (0, "" when none)."""
    return 0, ""


def fit_curve(x, loss, *, lr=None, prior=None, laws: Sequence[str] | None = None, **options) -> CurveFit:
    """Fit a single loss curve and forecast it (see the module docstring).

    Args:
        x: steps, tokens or FLOPs (any positive, increasing-in-time axis; any scale).
        loss: loss at each x (nats or any positive unit). NaN/inf/x <= 0 points are dropped
            and counted in ``diagnostics["dropped"]``.
        lr: learning rate at every optimizer step 0..horizon (x is then the step):
            delegates to ``lightning_scaling.scheduled.fit_scheduled``.
        prior: ``{parameter: (mean, sd)}`` Gaussian priors (e.g. ``{"alpha": (0.3, 0.1)}``).
        laws: names of the candidate laws (default ``laws.LR_AGNOSTIC_LAWS``).

    Returns:
        CurveFit; ``ok`` False (NaN forecasts, ``diagnostics["reason"]``) when the data
        cannot be fitted. Raises InvalidInputError only for invalid arguments.
    """
    if lr is not None:
        try:
            from .scheduled import fit_scheduled
        except ImportError:
            x_arr, _ = validate_inputs(x, loss)
            return failed_fit(
                "schedule-aware fitting (lr=...) is not available in this version",
                {"n_points": int(x_arr.size), "flags": ["not implemented: lightning_scaling.scheduled"]},
            )
        return fit_scheduled(x, loss, lr=lr, prior=prior, **options)
    t0 = time.perf_counter()
    names = tuple(laws) if laws is not None else LR_AGNOSTIC_LAWS
    candidates = [get_law(n) for n in names]
    prep = prepare_points(x, loss)
    if prep.reason:
        return failed_fit(prep.reason, prep.diagnostics, prep.detail)
    fits = [fit_law(law, prep.x, prep.y, prep.w, prior=prior) for law in candidates]
    ok = [f for f in fits if f.ok]
    if not ok:
        return failed_fit("no law could be fitted", prep.diagnostics)
    best = min(ok, key=lambda f: f.objective)
    return build_fit([best], [1.0], prep, elapsed=time.perf_counter() - t0)


def build_fit(fits: Sequence[LawFit], weights: Sequence[float], prep: Prepared, *,
              context=None, holdout: dict[str, Any] | None = None, elapsed: float | None = None,
              calibration: dict[str, float] | None = None) -> CurveFit:
    """Assemble a CurveFit from fitted laws and their mixture weights (weights sum to 1)."""
    weights = np.asarray(weights, dtype=float)
    weights = weights / weights.sum()
    main = fits[int(np.argmax(weights))]
    diag = dict(prep.diagnostics)
    diag["law"] = main.law.name
    diag["residual_scale_log"] = float(main.scale)
    diag["weights"] = {f.law.name: float(wt) for f, wt in zip(fits, weights)}
    if elapsed is not None:
        diag["fit_seconds"] = float(elapsed)
    components = []
    if len(fits) > 1:
        components = [{"law": f.law.name, "params": dict(f.params), "weight": float(wt)}
                      for f, wt in zip(fits, weights)]
    n_eff = float(prep.w.size)
    uncertainty = {
        "method": "holdout-scaled-v1",
        "noise_sd": float(main.scale / math.sqrt(max(n_eff, 1.0))),
        "holdout_err": float((holdout or {}).get("err", 0.02)),
        "holdout_dist": float((holdout or {}).get("dist", math.log(2.0))),
        "calibration": dict(calibration or DEFAULT_CALIBRATION),
    }
    ctx_json = None if context is None else _jsonable(context)
    return CurveFit(main.law.name, dict(main.params), diag, components, uncertainty, ctx_json,
                    float(prep.x[0]), float(prep.x[-1]))


DEFAULT_CALIBRATION = {"k": 1.0, "gamma": 1.0, "k_spread": 1.0}


def _uncertainty_sd(fit: CurveFit, x: np.ndarray) -> np.ndarray:
    u = fit.uncertainty
    cal = u.get("calibration", DEFAULT_CALIBRATION)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.maximum(np.log(np.maximum(x, 1e-300) / fit.x_last), 0.0)
    ext = cal["k"] * u["holdout_err"] * (d / u["holdout_dist"]) ** cal["gamma"]
    var = u["noise_sd"] ** 2 + ext**2
    if fit.components:
        ctx = fit._ctx()
        logs = []
        ws = []
        for law, params, weight in fit._members():
            with np.errstate(invalid="ignore", divide="ignore"):
                logs.append(np.log(law.evaluate(x, params, ctx)))
            ws.append(weight)
        logs = np.array(logs)
        ws = np.array(ws)[:, None] if logs.ndim > 1 else np.array(ws)
        mean = np.sum(ws * logs, axis=0)
        var = var + cal["k_spread"] ** 2 * np.sum(ws * (logs - mean) ** 2, axis=0)
    return np.sqrt(var)
