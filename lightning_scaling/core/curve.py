"""Single-run curve fitting: ``fit_curve`` -> ``CurveFit``.

``fit_curve(x, loss)`` cleans the points, buckets long noisy histories into log-spaced bins
(at most ``MAX_BINS``), cuts the warm-up transient (``detect_warmup``), fits each candidate law
(``laws.DEFAULT_LAWS``: the saturating power law and the MMF / log-logistic law) with a robust
variable-projection fit (Huber on log residuals, bounded multi-start grid, exponent prior),
weights the laws by how well each forecast held-back late points of the same curve
(``holdout_errors``, ``holdout_weights``), and attaches an interval model calibrated on real
curves (``DEFAULT_CALIBRATION``).

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
from typing import Any, Sequence

import numpy as np
from scipy import special

from ..errors import InvalidInputError
from .plain import nan_for_none, plain
from .laws import DEFAULT_LAWS, LAWS, Law, get_law

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
        """(below, above): standard deviations of log(expected loss) at x under and over the
        forecast that :meth:`interval` uses (NaN when the fit is not ok)."""
        x_arr = _as_float_array(x, "x")
        if not self.ok:
            lo = hi = np.full(x_arr.shape, np.nan)
        else:
            lo, hi = _uncertainty_sd(self, x_arr)
        if lo.ndim == 0:
            return float(lo), float(hi)
        return lo, hi

    def interval(self, x, level: float = 0.9):
        """(lower, upper) prediction interval for the expected loss at x (NaN if not ok).

        Log-normal on each side of ``predict(x)``: ``predict * exp(-z sd_below)`` to
        ``predict * exp(z sd_above)`` with z the normal quantile of ``level`` and the sds of
        :meth:`interval_sd`. They combine the residual noise of the fitted level, the spread
        of the mixture's laws (model-choice uncertainty) and the error the fit made on its
        own held-out late points (parameter and model error), scaled to the extrapolation
        distance with multipliers calibrated on real curves (``uncertainty["calibration"]``,
        see ``DEFAULT_CALIBRATION``).
        """
        level = _check_level(level)
        mean = np.asarray(self.predict(x), dtype=float)
        sd_lo, sd_hi = (np.asarray(v, dtype=float) for v in self.interval_sd(x))
        z = special.ndtri(0.5 + level / 2.0)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            lo = mean * np.exp(-z * sd_lo)
            hi = mean * np.exp(z * sd_hi)
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
        if ctx and ctx.get("horizon") is not None:  # schedule-aware fits: the last scheduled step
            return float(ctx["horizon"])
        if ctx and ctx.get("lr") is not None:
            return float(len(ctx["lr"]) - 1)
        return float(self.x_first) * 1e30 if self.x_first > 0 else 1e300

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of plain floats, ints, str, lists, dicts and None (NaN -> None).

        Survives ``json.dumps(..., allow_nan=False)`` and ``torch.load(weights_only=True)``.
        """
        return plain(
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
            },
            strict=True,
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
            uncertainty=nan_for_none(d.get("uncertainty") or {}),
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
        if not self.ok:
            return np.full(np.shape(x), np.nan)
        return self.law.evaluate(np.asarray(x, dtype=float), self.params, context)


def _theta_grid(law: Law, per_dim: int) -> np.ndarray:
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


class _Problem:
    """Batched evaluation of one law on one point set (variable projection)."""

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
            self.tau = _autocorr_inflation(r_first, self.w)
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


def _autocorr_inflation(r: np.ndarray, w: np.ndarray) -> float:
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
    return max(1.4826 * float(np.median(np.abs(u - np.median(u)))), 1e-6)


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
    prob = _Problem(law, xn, y / y_scale, w, context, prior_lin, prior_nl)
    dim = len(law.bounds)
    if grid_per_dim is None:
        grid_per_dim = grid_for(law, fine=True)
    lows = np.array([b[0] for b in law.bounds], dtype=float)
    highs = np.array([b[1] for b in law.bounds], dtype=float)
    grid = _theta_grid(law, grid_per_dim)

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
                prob.tau = _autocorr_inflation(r[0], w)
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


# =========================================================================== held-out late points
HOLDOUT_SPLITS = (0.5, 0.7)
"""Held-out late-point splits: fit on x <= q * x_last, forecast the points beyond."""


@dataclass
class Holdout:
    """How well each candidate law forecast held-back late points of the same curve.

    Attributes:
        errors: law name -> RMS log error (weighted by w) over the held-out points, averaged
            over the splits (inf when the law could not be fitted on a split).
        dist: mean log-x distance of the held-out points beyond the fitted part (the
            extrapolation distance the errors were measured at).
        n_splits: splits that had enough points on both sides.
        forecasts: law name -> list of (split fit's log forecast - truth) at the last point.
    """

    errors: dict[str, float]
    dist: float
    n_splits: int
    forecasts: dict[str, list[float]] = field(default_factory=dict)


def grid_for(law: Law, fine: bool = False) -> int:
    """Points per dimension of the starting grid of ``fit_law`` (coarser for held-out fits)."""
    dim = len(law.bounds)
    if fine:
        return {0: 1, 1: 32, 2: 11, 3: 7}.get(dim, 5)
    return {0: 1, 1: 16, 2: 7, 3: 5}.get(dim, 4)


def holdout_errors(laws: Sequence[Law], x: np.ndarray, y: np.ndarray, w: np.ndarray, *,
                   context=None, prior=None, splits: Sequence[float] = HOLDOUT_SPLITS,
                   min_fit: int = 4) -> Holdout:
    """Fit every law on the early part of the points and score its forecast of the rest.

    For each split q, points with x <= q * x_last are fitted (x_scale = the split's last x)
    and the forecast of the later points is scored by the w-weighted RMS of log errors.
    """
    errs: dict[str, list[float]] = {law.name: [] for law in laws}
    last: dict[str, list[float]] = {law.name: [] for law in laws}
    dists = []
    for q in splits:
        # a relative slack: a point sitting on the split (an integer step grid) must fall on the
        # same side whatever the units of x, or rescaling x by an inexact factor changes the fit
        train = x <= q * x[-1] * (1.0 + 1e-9)
        test = ~train
        if train.sum() < min_fit or test.sum() < 1:
            continue
        xt, yt, wt = x[train], y[train], w[train]
        dists.append(float(np.average(np.log(x[test] / xt[-1]), weights=w[test])))
        for law in laws:
            f = fit_law(law, xt, yt, wt, context=context, prior=prior, grid_per_dim=grid_for(law),
                        zoom_steps=3, refine_scale=False)
            if not f.ok:
                errs[law.name].append(math.inf)
                last[law.name].append(math.nan)
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.log(f.predict(x[test], context)) - np.log(y[test])
            e = float(np.sqrt(np.average(r * r, weights=w[test]))) if np.all(np.isfinite(r)) else math.inf
            errs[law.name].append(e)
            last[law.name].append(float(r[-1]))
    n = len(dists)
    errors = {k: (float(np.mean(v)) if v else math.inf) for k, v in errs.items()}
    return Holdout(errors, float(np.mean(dists)) if dists else math.nan, n, last)


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
    diag["x_range"] = [float(xc[-int(wb.sum())]), float(xc[-1])]
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
    slack = 1e-9 * span  # points on a third's edge stay put whatever the units of x
    first = lx <= lx[0] + span / 3 + slack
    last = lx >= lx[-1] - span / 3 - slack
    if first.sum() < 1 or last.sum() < 1:
        return False
    ly = np.log(y)
    m_first = np.average(ly[first], weights=w[first])
    m_last = np.average(ly[last], weights=w[last])
    return bool(m_last < m_first - 1e-4)


WARMUP_Z = 4.0
"""A leading point whose log residual exceeds this many robust sd is part of the warm-up."""

WARMUP_SCALE_FLOOR = 2e-4
"""Smallest residual sd (log loss) the warm-up test uses: float32 losses and bucketing of a
smooth curve leave ~1e-4 of misfit that is not a transient."""

WARMUP_MAX_SPAN = 0.75
"""The warm-up cut never removes more than this fraction of the log-x span."""


def detect_warmup(x: np.ndarray, y: np.ndarray, w: np.ndarray, *, z: float = WARMUP_Z,
                  law: str = "saturating_power", max_candidates: int = 48) -> tuple[int, str]:
    """Index of the first point past the warm-up transient, and why (0, "" when none).

    Warm-up points fall faster than any power law: a saturating power law fitted to the
    points after one of them, extrapolated one point back, leaves it far *above* the curve.
    For every candidate cut c (the first ``max_candidates`` points, at most
    ``WARMUP_MAX_SPAN`` of the log-x span) the law is fitted to the points from c on (all
    candidates in one batch) and point c-1 is judged against it; the cut is the first point
    that is not more than ``z`` robust sd above the fit of the points after it.
    """
    n = x.size
    if n < 2 * MIN_POINTS:
        return 0, ""
    lx = np.log(x)
    limit_lx = lx[0] + WARMUP_MAX_SPAN * (lx[-1] - lx[0]) * (1.0 + 1e-9)
    max_cut = min(int(np.searchsorted(lx, limit_lx, side="right")), n - MIN_POINTS, max_candidates)
    if max_cut <= 0:
        return 0, ""
    lw = get_law(law)
    prob = _Problem(lw, x / float(x[-1]), y, w, None, [], [])
    alphas = _theta_grid(lw, 16)[:16]
    lo_a, hi_a = lw.bounds[0]
    offsets = np.linspace(-1.0, 1.0, 7)
    chunk = 8
    for first in range(1, max_cut + 1, chunk):  # most curves stop within the first chunk
        cuts = np.arange(first, min(first + chunk, max_cut + 1))
        nc, na = cuts.size, alphas.shape[0]
        W1 = np.tile(w, (nc, 1))
        W1[np.arange(n)[None, :] < cuts[:, None]] = 0.0
        obj, _, r = prob.evaluate(np.tile(alphas, (nc, 1)), None, np.repeat(W1, na, axis=0))
        best = alphas[np.argmin(obj.reshape(nc, na), axis=1), 0]
        step = alphas[1, 0] - alphas[0, 0]
        W7 = np.repeat(W1, offsets.size, axis=0)
        for _ in range(6):  # zoom on each cut's exponent
            cand = np.clip(best[:, None] + step * offsets[None, :], lo_a, hi_a).reshape(-1, 1)
            obj, _, r = prob.evaluate(cand, None, W7)
            k = np.argmin(obj.reshape(nc, offsets.size), axis=1)
            best = cand.reshape(nc, offsets.size)[np.arange(nc), k]
            step *= 0.3
        rows = np.arange(nc) * offsets.size + k
        for i, c in enumerate(cuts):
            s = max(robust_scale(r[rows[i]], W1[i]), WARMUP_SCALE_FLOOR)
            u_prev = r[rows[i], c - 1] * math.sqrt(w[c - 1]) / s
            if not abs(u_prev) > z:  # point c-1 is on the trend: the warm-up ended before it
                c0 = int(c - 1)
                if c0 == 0:
                    return 0, ""
                return c0, (f"the first {c0} point(s) each lie more than {z:g} robust sd off a "
                            f"{law} fit of the points after them (not yet on a power law)")
    return int(max_cut), (f"warm-up transient reaches the search limit: cut the first {int(max_cut)} "
                          f"point(s)")


def fit_curve(x, loss, *, lr=None, prior=None, laws: Sequence[str] | None = None,
              **options) -> CurveFit:
    """Fit a single loss curve and forecast it (see the module docstring).

    Args:
        x: steps, tokens or FLOPs (any positive axis that grows with training; any scale:
            x is normalised internally, so 1e21 FLOPs fit like steps).
        loss: loss at each x (nats or any positive unit). NaN/inf and x <= 0 points are
            dropped and counted in ``diagnostics["dropped"]``.
        lr: learning rate at every optimizer step 0..horizon (x is then the step):
            delegates to ``lightning_scaling.scheduled.fit_scheduled``.
        prior: ``{parameter: (mean, sd)}`` Gaussian priors overriding the laws' defaults
            (e.g. ``{"alpha": (0.3, 0.1)}``).
        laws: candidate law names (default ``laws.DEFAULT_LAWS``); with one name, that law
            alone is fitted (no held-out weighting).

    Returns:
        CurveFit. ``ok`` is False (NaN forecasts, ``diagnostics["reason"]``: "too few
        points", "no downward trend", ...) when the data cannot be fitted; only invalid
        arguments raise (InvalidInputError).
    """
    if lr is not None:
        try:
            from .scheduled import fit_scheduled
        except ImportError:
            x_arr, _ = validate_inputs(x, loss)
            return failed_fit(
                "not implemented",
                {"n_points": int(x_arr.size), "flags": ["schedule-aware fitting unavailable"]},
                "schedule-aware fitting (lr=...) needs lightning_scaling.scheduled, which this "
                "installation lacks; call fit_curve without lr for an LR-agnostic fit",
            )
        return fit_scheduled(x, loss, lr=lr, prior=prior, **options)
    if options:
        raise InvalidInputError(f"unknown option(s) for fit_curve: {', '.join(sorted(options))}")
    t0 = time.perf_counter()
    names = tuple(laws) if laws is not None else DEFAULT_LAWS
    if not names:
        raise InvalidInputError("laws must name at least one law")
    candidates = [get_law(n) for n in names]
    if any(law.uses_context for law in candidates):
        raise InvalidInputError("schedule-aware laws need lr=...; fit_curve(x, loss, lr=lr)")
    if prior is not None and not isinstance(prior, dict):
        raise InvalidInputError("prior must be a dict {parameter name: (mean, sd)}")
    with np.errstate(all="ignore"):  # extreme inputs make inf/NaN candidates; they lose
        prep = prepare_points(x, loss)
        if prep.reason:
            return failed_fit(prep.reason, prep.diagnostics, prep.detail)
        return fit_prepared(candidates, prep, prior=prior, t0=t0)


def fit_prepared(candidates: Sequence[Law], prep: Prepared, *, context=None, prior=None,
                 t0: float | None = None, calibration: dict[str, float] | None = None) -> CurveFit:
    """Fit candidate laws to prepared points, weight them by held-out late points, build the fit.

    The reusable core of ``fit_curve`` (schedule-aware fitters pass their own laws and
    ``context``).
    """
    t0 = time.perf_counter() if t0 is None else t0
    fits = [fit_law(law, prep.x, prep.y, prep.w, context=context, prior=prior) for law in candidates]
    good = [f for f in fits if f.ok]
    if not good:
        return failed_fit("fit failed", prep.diagnostics, "no candidate law could be fitted")
    ho = holdout_errors([f.law for f in good], prep.x, prep.y, prep.w, context=context, prior=prior)
    weights = holdout_weights(ho, [f.law.name for f in good])
    return build_fit(good, weights, prep, context=context, holdout=ho,
                     elapsed=time.perf_counter() - t0, calibration=calibration)


def holdout_weights(ho: Holdout, names: Sequence[str]) -> np.ndarray:
    """Mixture weights from held-out errors: exp(-k) / error^2 per law (k free parameters).

    1 / error^2 is the inverse variance of each law's forecast of the held-out late points;
    exp(-k) is the Akaike complexity factor (AIC weights carry exp(-k)), so a law with one
    more parameter must forecast the held-out points e^(1/2) = 1.65x better to weigh as much.
    Laws that could not be scored on any split share the weight equally when no law could
    (too few points for a split), and get none otherwise.
    """
    e = np.array([ho.errors.get(n, math.inf) for n in names], dtype=float)
    finite = np.isfinite(e)
    if not finite.any():
        return np.full(len(names), 1.0 / len(names))
    floor = max(float(np.min(e[finite])) * 1e-3, 1e-12)
    k = np.array([get_law(n).n_free for n in names], dtype=float)
    w = np.where(finite, np.exp(-(k - k.min())) / np.maximum(e, floor) ** 2, 0.0)
    return w / w.sum()


def build_fit(fits: Sequence[LawFit], weights: Sequence[float], prep: Prepared, *,
              context=None, holdout: Holdout | None = None, elapsed: float | None = None,
              calibration: dict[str, float] | None = None) -> CurveFit:
    """Assemble a CurveFit from fitted laws and their mixture weights, with the interval model.

    The interval model (``CurveFit.uncertainty``) keeps, JSON-safe:
      * ``noise_sd``: sd of the fitted level from the residual noise (robust scale over the
        square root of the effective number of points);
      * ``holdout_err``, ``holdout_dist``: the mixture's RMS log error on held-out late
        points and how far (mean log x) beyond the fitted part they lay;
      * ``calibration``: ``k``, ``gamma``, ``k_spread``, ``floor`` fixed on the
        development curves (see ``DEFAULT_CALIBRATION``).
    """
    weights = np.asarray(weights, dtype=float)
    weights = weights / weights.sum()
    main = fits[int(np.argmax(weights))]
    diag = dict(prep.diagnostics)
    diag["law"] = main.law.name
    diag["residual_scale_log"] = float(main.scale)
    diag["weights"] = {f.law.name: float(wt) for f, wt in zip(fits, weights)}
    components = []
    if len(fits) > 1:
        components = [{"law": f.law.name, "params": dict(f.params), "weight": float(wt)}
                      for f, wt in zip(fits, weights) if wt > 0]
    if holdout is not None and holdout.n_splits:
        ho_err = float(sum(wt * holdout.errors[f.law.name] for f, wt in zip(fits, weights)
                           if wt > 0 and math.isfinite(holdout.errors[f.law.name])))
        ho_dist = float(holdout.dist)
        diag["holdout"] = {"rms_log_error": {k: (v if math.isfinite(v) else None)
                                             for k, v in holdout.errors.items()},
                           "distance_log_x": ho_dist, "n_splits": holdout.n_splits}
    else:
        ho_err, ho_dist = math.nan, math.nan
        diag["flags"] = list(diag.get("flags", [])) + [
            "too few points to score held-out late points: interval from noise and spread only"]
    n_eff = float(prep.w.sum()) / _autocorr_inflation(
        np.log(prep.y) - np.log(main.predict(prep.x, _context_arrays(context) if context else None)),
        prep.w)
    uncertainty = {
        "method": "holdout-scaled-v1",
        "noise_sd": float(main.scale / math.sqrt(max(n_eff, 1.0))),
        "holdout_err": ho_err,
        "holdout_dist": ho_dist,
        "calibration": dict(calibration or DEFAULT_CALIBRATION),
    }
    if elapsed is not None:
        diag["fit_seconds"] = float(elapsed)
    ctx_json = None if context is None else plain(context, strict=True)
    x_first, x_last = prep.diagnostics.get("x_range", (float(prep.x[0]), float(prep.x[-1])))
    return CurveFit(main.law.name, dict(main.params), plain(diag, strict=True), components, uncertainty,
                    ctx_json, float(x_first), float(x_last))


DEFAULT_CALIBRATION = {"k_below": 1.98, "k_above": 0.29, "gamma": 0.70, "k_spread": 1.0,
                       "floor": 0.0, "k_fallback": 0.02}
"""Interval calibration (see ``_uncertainty_sd``), fixed on the development curves.

Reproduce with ``python benchmarks/extrapolation.py --calibrate``, on the 43 constant-LR
development cases (the 11 gemstones runs and the 4 multipower constant-LR runs, each fitted
on 10/25/50% of its steps; LR-agnostic laws are meant for constant LR):

* ``gamma`` = 0.70: the error grows like (d / holdout_dist)^gamma; the Theil-Sen slope of
  log(|error| / holdout_err) on log(d / holdout_dist) over those cases.
* ``k_below`` = 1.98, ``k_above`` = 0.29: split-conformal, equal-tailed. For each case, the
  smallest multiplier of the extrapolation term that holds its truth inside the 90% band on
  its side of the forecast; the 95th percentile over the cases, per side. The truth fell
  below the forecast in 81% of the cases (a saturating law fitted early over-forecasts the
  final loss of a constant-LR run: the curve keeps bending), hence the asymmetry.
  Leave-one-run-out coverage of the 90% band: 86%.

Nothing else was tuned (``k_spread`` 1, ``floor`` 0). Other levels reuse the multipliers
with the normal quantile of the level. Runs whose LR decays fall below the constant-LR
trend: the band's long lower side covers part of that, but for those pass ``lr=``.
"""


def interval_terms(fit: CurveFit, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two uncalibrated parts of the interval sd at x: (base, extrapolation).

    base^2 = noise_sd^2 + floor^2 + (k_spread * spread(x))^2 (spread: weighted sd of the
    mixture members' log forecasts); extrapolation = holdout_err * (d / holdout_dist)^gamma
    with d = max(log(x / x_last), 0) (``k_fallback * d`` when no held-out error exists).
    """
    u = fit.uncertainty
    cal = dict(DEFAULT_CALIBRATION)
    cal.update(u.get("calibration") or {})
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.maximum(np.log(np.maximum(x, 1e-300) / fit.x_last), 0.0)
    var = np.full(x.shape, float(u.get("noise_sd", 0.0)) ** 2 + cal["floor"] ** 2)
    ho_err, ho_dist = float(u.get("holdout_err", math.nan)), float(u.get("holdout_dist", math.nan))
    if math.isfinite(ho_err) and math.isfinite(ho_dist) and ho_dist > 0:
        ext = ho_err * (d / ho_dist) ** cal["gamma"]
    else:
        ext = cal["k_fallback"] * d
    if fit.components and len(fit.components) > 1:
        ctx = fit._ctx()
        logs, ws = [], []
        for law, params, weight in fit._members():
            with np.errstate(invalid="ignore", divide="ignore"):
                logs.append(np.log(law.evaluate(x, params, ctx)))
            ws.append(weight)
        logs = np.array(logs)
        ws = np.array(ws).reshape((-1,) + (1,) * x.ndim)
        mean = np.sum(ws * logs, axis=0)
        var = var + cal["k_spread"] ** 2 * np.sum(ws * (logs - mean) ** 2, axis=0)
    return np.sqrt(var), ext


def _uncertainty_sd(fit: CurveFit, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sd_below, sd_above) of log(expected loss) at x.

    sd_side^2 = base^2 + (k_side * extrapolation)^2, see :func:`interval_terms`.
    """
    cal = dict(DEFAULT_CALIBRATION)
    given = fit.uncertainty.get("calibration") or {}
    cal.update(given)
    if "k" in given and "k_below" not in given:  # one symmetric multiplier
        cal["k_below"] = cal["k_above"] = given["k"]
    base, ext = interval_terms(fit, x)
    return np.hypot(base, cal["k_below"] * ext), np.hypot(base, cal["k_above"] * ext)
