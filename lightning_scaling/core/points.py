"""Point preparation for single-run fits: validate, clean, bucket, cut the warm-up.

``prepare_points(x, loss)`` turns raw (x, loss) arrays into the points a law is fitted to:
validated (``validate_inputs``: one clear error for bad arguments), cleaned
(``clean_points``: non-finite and non-positive points dropped and counted, sorted by x),
bucketed into at most ``MAX_BINS`` log-spaced bins (``bucket_log``), with the warm-up
transient cut (``detect_warmup``) and a check that the curve falls at all
(``has_downward_trend``). Data that cannot be fitted comes back with a ``reason``, not an
error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .calibration import WARMUP_MAX_SPAN, WARMUP_SCALE_FLOOR, WARMUP_Z
from .laws import get_law
from .solver import LawProblem, robust_scale, theta_grid

MIN_POINTS = 6
"""Fewest usable points (after hygiene and the warm-up cut) ``fit_curve`` will fit."""

MAX_BINS = 160
"""Longer histories are averaged into at most this many log-spaced bins of x."""


def as_float_array(v, name: str) -> np.ndarray:
    """``v`` as a float array (any shape); InvalidInputError naming ``name`` when not numeric."""
    try:
        arr = np.asarray(v, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be numeric: {exc}") from None
    return arr


def check_level(level) -> float:
    """An interval level as a float in (0, 1); InvalidInputError otherwise."""
    try:
        lv = float(level)
    except (TypeError, ValueError):
        raise InvalidInputError(f"level must be a number in (0, 1), got {level!r}") from None
    if not 0.0 < lv < 1.0:
        raise InvalidInputError(f"level must be in (0, 1), got {level!r}")
    return lv


def validate_inputs(x, loss) -> tuple[np.ndarray, np.ndarray]:
    """x and loss as 1-D float arrays of one length; InvalidInputError otherwise.

    Non-finite values are allowed here (``clean_points`` drops and counts them).
    """
    x_arr = as_float_array(x, "x")
    y_arr = as_float_array(loss, "loss")
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
    prob = LawProblem(lw, x / float(x[-1]), y, w, None, [], [])
    alphas = theta_grid(lw, 16)[:16]
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
