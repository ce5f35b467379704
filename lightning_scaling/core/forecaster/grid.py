"""The posterior of one fit on an (alpha, gain) grid, and its forecasts at any targets.

The law, on binned points (``fit.py``): ``L(t) = L0 + A * s(t)**-alpha - B * F(t)`` with
``s = S1(t) / S1(t_ref)`` (the LR area relative to the last fitted point; x itself without a
schedule) and F the decay feature (``features.floor_drop``). For every alpha of ``ALPHAS`` and
every gain B of a log grid, (L0, A) are the weighted least-squares solution (2x2 normal
equations: the residual sum of squares is quadratic in B once (L0, A) are profiled, so all
alpha x B nodes cost O(n x alphas + alphas x gains)). Each node is weighted by its Laplace
evidence ``exp(-RSS / 2 sigma**2) |H|**-1/2`` (H the normal matrix of (L0, A)) times the
priors on alpha and on the gain; sigma**2 is the best node's RSS per degree of freedom. A loss
falls with the LR area to a non-negative asymptote: (L0, A) have a flat prior on L0 >= 0 (the
Gaussian truncated there, exactly) and A >= 0 (a node whose best A is negative is the plateau
A = 0). Points are weighted by their count over their smoothed level squared (relative
misfit). Nodes below ``PRUNE`` of the heaviest are dropped.

A forecast at a target is, per node, ``L0 + A sT**-alpha - B FT`` with the variance of
(L0, A) at that alpha (``Nodes.at``); the forecast is the weighted median over the nodes and
its 5% / 95% points the weighted quantiles of the node means widened in quadrature by the
mean within-node sd (``quantiles``: a mixture CDF would be ~10x slower and differs only
when one node dominates, where the widening is exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

Z90 = 1.6448536269514722
"""Normal quantile of a 90% two-sided interval."""

ALPHAS = np.linspace(0.08, 2.5, 61)
"""Grid of the exponent alpha (of the LR area, or of x without a schedule)."""

N_GAINS = 240
"""Nodes of the log gain grid when the fitted points inform the gain."""

N_GAINS_PRIOR = 120
"""Nodes of the log gain grid when the gain comes from its prior alone (a smooth density), at
half the cost of 240: on 255 development cases (every third curve of four sets at 10/25/50%
seen) the forecast moved by at most 0.09% and the interval's ends by at most 0.9% (median
0.1%, the lower end) against 240 nodes."""

PRUNE = 1e-7
"""Nodes whose posterior weight is below this share of the heaviest node's are dropped."""

RELATIVE_WEIGHTS = True
"""Each point's weight is its count over its level squared: the noise of a loss is about
proportional to its level, so the fit weighs relative misfit (as a fit of log loss would).
The level is a smooth quadratic in log-log through the points, not the point itself (weights
from noisy values would pull the fit toward the low ones)."""


def _smooth_level(s: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A smooth level through the points: quadratic in (log s, log y), weighted by count."""
    ls, ly = np.log(s), np.log(y)
    deg = min(2, s.size - 1)
    if deg < 1 or np.ptp(ls) <= 0:
        return np.full(y.shape, float(np.exp(np.average(ly, weights=w))))
    return np.exp(np.polyval(np.polyfit(ls, ly, deg, w=np.sqrt(w)), ls))

NOISE_FLOOR = 1e-4
"""Smallest residual sd the data term uses, relative to the mean loss (a noiseless curve
would otherwise give every misfit node zero weight)."""


@dataclass(frozen=True)
class GainPrior:
    """Prior on the decay gain B through rho = B / L_ref (L_ref: the loss level at the last
    fitted point): ``(1 - broad) * Normal(log rho; center, sd) + broad * LogUniform(lo, hi)``.

    Attributes:
        center: mean of log rho (natural log).
        sd: sd of log rho.
        broad: weight of the log-uniform component (a gain unlike every recipe the prior was
            measured on can still be fitted once the run shows it).
        lo, hi: range of the log-uniform component (rho units).
    """

    center: float
    sd: float
    broad: float
    lo: float = 0.003
    hi: float = 1.0

    def nodes(self, n: int = N_GAINS) -> tuple[np.ndarray, np.ndarray]:
        """(log rho nodes, log prior mass per node) on ``n`` nodes."""
        lo = min(math.log(self.lo), self.center - 4.0 * self.sd)
        hi = max(math.log(self.hi), self.center + 4.0 * self.sd)
        grid = np.linspace(lo, hi, n)
        gap = grid[1] - grid[0]
        normal = np.exp(-0.5 * ((grid - self.center) / self.sd) ** 2) / (self.sd * math.sqrt(2.0 * math.pi))
        inside = (grid >= math.log(self.lo) - 1e-9) & (grid <= math.log(self.hi) + 1e-9)
        dens = (1.0 - self.broad) * normal + self.broad * inside / math.log(self.hi / self.lo)
        return grid, np.log(np.maximum(dens * gap, 1e-300))


@dataclass
class Nodes:
    """The retained posterior nodes of one fit (one entry per node).

    Attributes:
        weight: posterior weights (sum to 1 within one fit; pooled fits rescale them).
        alpha, gain, L0, A: the node's parameters (A on s = S1 / S1_ref; gain in loss units).
        v0, v1, v2: variance of L0 + A X at the node's alpha is ``v0 + v1 X + v2 X**2``.
        log_prior_gain: log prior mass of the node's gain (0 without a gain prior).
        gain_from_data: True when the fitted points inform the gain (else the prior alone).
        log_evidence: log of the fit's marginal likelihood summed over its nodes, up to a
            constant shared by fits of the same points (compares floor exponents).
    """

    weight: np.ndarray
    alpha: np.ndarray
    gain: np.ndarray
    L0: np.ndarray
    A: np.ndarray
    v0: np.ndarray
    v1: np.ndarray
    v2: np.ndarray
    log_prior_gain: np.ndarray
    gain_from_data: bool = False
    log_evidence: float = 0.0

    def at(self, s_target, F_target, rows=None) -> tuple[np.ndarray, np.ndarray]:
        """(forecasts, within-node variances) of every node at targets (shape (nodes, targets)).
        ``F_target``: the decay feature at the targets, one row per fit when ``rows`` gives each
        node's row (pooled fits over floor exponents), else one row for all."""
        log_s = np.log(np.asarray(s_target, dtype=float))
        a_vals, a_idx = np.unique(self.alpha, return_inverse=True)
        X = np.exp(-a_vals[:, None] * log_s[None, :])[a_idx]  # one power per distinct alpha
        F = np.atleast_2d(np.asarray(F_target, dtype=float))
        F = F[rows] if rows is not None else F
        mean = self.L0[:, None] + self.A[:, None] * X - self.gain[:, None] * F
        var = self.v0[:, None] + X * (self.v1[:, None] + self.v2[:, None] * X)
        return mean, np.maximum(var, 0.0)


def pool(parts: list[Nodes]) -> tuple[Nodes, np.ndarray]:
    """The nodes of several fits with equal fixed weights (fits over the floor exponents), and
    each node's fit index."""
    k = 1.0 / len(parts)
    fields = ("alpha", "gain", "L0", "A", "v0", "v1", "v2", "log_prior_gain")
    cat = {f: np.concatenate([getattr(p, f) for p in parts]) for f in fields}
    rows = np.concatenate([np.full(p.weight.size, i) for i, p in enumerate(parts)])
    return Nodes(np.concatenate([p.weight * k for p in parts]), **cat,
                 gain_from_data=any(p.gain_from_data for p in parts)), rows


def posterior(s, F, y, w, L_ref: float, alpha_prior: tuple[float, float], gain: GainPrior | None,
              gain_center_loss: float | None = None, prune: float = PRUNE) -> Nodes | None:
    """Posterior nodes of one fit (see the module docstring); None when no node is admissible.

    Args:
        s: LR area of each fitted point over that of the last one (x / x_last without a schedule).
        F: the decay feature at each point (zeros: the gain is left to the prior).
        y, w: mean loss and weight (points averaged) of each point.
        L_ref: the loss level at the last fitted point (the gain prior's unit).
        alpha_prior: (mean, sd) of alpha.
        gain: the gain prior, or None when the schedule has no decay (B = 0).
        gain_center_loss: when given, the gain prior's center is log(gain_center_loss / L_ref)
            (a gain lent in loss units by a finished run).
        prune: nodes below this share of the heaviest node's weight are dropped (0: every
            admissible node is kept, as the calibration's conditional forecasts need).
    """
    n = s.size
    W = w / _smooth_level(s, y, w) ** 2 if RELATIVE_WEIGHTS else w
    W = W / W.mean()
    X1 = np.exp(np.log(s)[None, :] * -ALPHAS[:, None])                      # (alphas, n)
    sw, sx, sxx = W.sum(), (W * X1).sum(1), (W * X1 * X1).sum(1)
    det = sw * sxx - sx * sx
    with np.errstate(divide="ignore", invalid="ignore"):
        det = np.where(det > 1e-12 * sw * sxx, det, np.nan)
    if gain is not None:
        if gain_center_loss is not None:
            gain = GainPrior(math.log(gain_center_loss / L_ref), gain.sd, gain.broad, gain.lo, gain.hi)
        log_rho, log_prior_gain = gain.nodes(N_GAINS if np.any(F != 0) else N_GAINS_PRIOR)
        B = L_ref * np.exp(log_rho)
    else:
        B, log_prior_gain = np.zeros(1), np.zeros(1)
    Fw = W * F
    sy = (W * y).sum() + B * Fw.sum()                                         # (gains,)
    sxy = ((W * X1) @ y)[:, None] + ((W * X1) @ F)[:, None] * B[None, :]     # (alphas, gains)
    syy = (W * y * y).sum() + 2.0 * B * (Fw * y).sum() + B * B * (Fw * F).sum()
    with np.errstate(invalid="ignore"):
        L0 = (sxx[:, None] * sy[None, :] - sx[:, None] * sxy) / det[:, None]
        A = (sw * sxy - sx[:, None] * sy[None, :]) / det[:, None]
        rss = np.maximum(syy[None, :] - L0 * sy[None, :] - A * sxy, 0.0)
    sig2 = float(np.nanmin(rss)) / max(n - 3, 1) if np.isfinite(rss).any() else math.nan
    sig2 = max(sig2, (NOISE_FLOOR * float(np.mean(y))) ** 2)
    # the asymptote is a loss: L0 >= 0 (flat prior on [0, inf)). The posterior of (L0, A) at a
    # node is then the Gaussian truncated to L0 >= 0: its evidence gains P(L0 >= 0) and its
    # mean moves along the regression of A on L0 (exact for a half-plane)
    var_L0 = sig2 * sxx / det                                                # (alphas,)
    beta = -sx / sxx                                                          # d A / d L0
    sd_L0 = np.sqrt(var_L0)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = L0 / sd_L0
        log_cdf = special.log_ndtr(z)
        lam = np.exp(-0.5 * z * z - 0.5 * math.log(2.0 * math.pi) - log_cdf)  # inverse Mills ratio
        shift = sd_L0 * lam
        L0 = L0 + shift
        A = A + beta[:, None] * shift
    # the loss does not rise with the LR area: A >= 0. Where the best A is negative (a flat or
    # rising stretch) the node is the plateau A = 0 at the weighted mean level
    flat = np.isfinite(rss) & ~(A >= 0)
    level = np.broadcast_to(sy / sw, rss.shape)
    L0 = np.where(flat, level, L0)
    A = np.where(flat, 0.0, A)
    rss = np.where(flat, np.maximum(syy - sy * sy / sw, 0.0)[None, :], rss)
    log_cdf = np.where(flat, 0.0, log_cdf)
    good = np.isfinite(rss) & np.isfinite(L0) & (L0 >= 0)
    if not good.any():
        return None
    mu, sd = alpha_prior
    log_ev = (-0.5 * rss / sig2 - 0.5 * np.log(det / sig2 ** 2)[:, None] + log_cdf
              - 0.5 * ((ALPHAS[:, None] - mu) / sd) ** 2 + log_prior_gain[None, :])
    log_ev = np.where(good, log_ev, -np.inf)
    top = float(np.max(log_ev))
    weight = np.exp(log_ev - top)
    keep = (weight > prune) & good
    ia, ib = np.nonzero(keep)
    wk = weight[keep]
    # truncated covariance: var(L0) shrinks by 1 - lam (z + lam); A keeps its residual variance
    fk = flat[keep]
    k_trunc = np.clip(1.0 - lam[keep] * (z[keep] + lam[keep]), 0.0, 1.0)
    vL = np.where(fk, sig2 / sw, var_L0[ia] * k_trunc)
    var_A_given_L0 = np.maximum(sig2 * sw / det[ia] - beta[ia] ** 2 * var_L0[ia], 0.0)
    v1 = np.where(fk, 0.0, 2.0 * beta[ia] * vL)
    v2 = np.where(fk, 0.0, var_A_given_L0 + beta[ia] ** 2 * vL)
    return Nodes(wk / wk.sum(), ALPHAS[ia], B[ib], L0[keep], A[keep], vL, v1, v2, log_prior_gain[ib],
                 gain_from_data=bool(gain is not None and np.any(F != 0)),
                 log_evidence=top + math.log(float(weight[good].sum())) - 0.5 * n * math.log(sig2))


def quantiles(mean: np.ndarray, var: np.ndarray, weight: np.ndarray,
              probs=(0.05, 0.5, 0.95)) -> tuple[np.ndarray, ...]:
    """Weighted quantiles of the node forecasts per target (columns), the outer ones widened
    in quadrature by the mean within-node sd at that target (``Z90`` sds for 5% / 95%)."""
    order = np.argsort(mean, axis=0, kind="stable")
    m_sorted = np.take_along_axis(mean, order, axis=0)
    w_sorted = weight[order]
    cw = np.cumsum(w_sorted, axis=0) - 0.5 * w_sorted
    out = []
    for p in probs:
        idx = np.clip((cw < p).sum(axis=0), 1, mean.shape[0] - 1) if mean.shape[0] > 1 else np.zeros(mean.shape[1], int)
        if mean.shape[0] > 1:
            lo_i = idx - 1
            c0 = np.take_along_axis(cw, lo_i[None, :], 0)[0]
            c1 = np.take_along_axis(cw, idx[None, :], 0)[0]
            v0 = np.take_along_axis(m_sorted, lo_i[None, :], 0)[0]
            v1 = np.take_along_axis(m_sorted, idx[None, :], 0)[0]
            t = np.clip((p - c0) / np.where(c1 > c0, c1 - c0, 1.0), 0.0, 1.0)
            out.append(v0 + t * (v1 - v0))
        else:
            out.append(m_sorted[0])
    sbar = np.sqrt(np.sum(weight[:, None] * var, axis=0))
    mid = out[list(probs).index(0.5)]
    widened = []
    for p, v in zip(probs, out):
        z = float(special.ndtri(p))
        widened.append(v if p == 0.5 else mid + math.copysign(1.0, z) * np.hypot(v - mid, z * sbar))
    return tuple(widened)
