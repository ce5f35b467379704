"""Single-run curve fitting: ``fit_curve`` -> ``CurveFit``.

PLACEHOLDER (skeleton commit): a least-squares saturating power law with a naive interval,
so that layers above can be built against the public contract. The core issue replaces the
internals; the public surface (names, meanings, to_dict/from_dict) stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from .errors import InvalidInputError
from .laws import LAWS


@dataclass
class CurveFit:
    """A fitted single-run loss curve.

    Attributes:
        law: name of the law used (a key of ``laws.LAWS``), or "none" when no fit was possible.
        params: fitted parameters, in the units of the caller's x (not normalised).
        diagnostics: points used/dropped and why, residual scale, flags.
    """

    law: str
    params: dict[str, float]
    diagnostics: dict[str, Any] = field(default_factory=dict)
    x_scale: float = 1.0
    noise: float = float("nan")
    x_last: float = float("nan")

    @property
    def ok(self) -> bool:
        """True when the fit can forecast (otherwise every forecast is NaN)."""
        return self.law in LAWS

    def predict(self, x):
        """Expected loss at x (same units as the fit's x); NaN when the fit is not ok."""
        x_arr = np.asarray(x, dtype=float)
        if not self.ok:
            out = np.full(x_arr.shape, np.nan)
        else:
            fn, names = LAWS[self.law]
            p = self.params
            out = fn(x_arr / self.x_scale, p["E"], p["A"] * self.x_scale ** -p["alpha"], p["alpha"])
        return float(out) if out.ndim == 0 else out

    def interval(self, x, level: float = 0.9):
        """(lower, upper) prediction interval for the expected loss at x."""
        if not 0 < level < 1:
            raise InvalidInputError(f"level must be in (0, 1), got {level!r}")
        mean = np.asarray(self.predict(x), dtype=float)
        x_arr = np.asarray(x, dtype=float)
        z = stats.norm.ppf(0.5 + level / 2)
        ratio = np.maximum(np.log(np.maximum(x_arr, 1e-300) / self.x_last), 0.0)
        half = z * (self.noise + 0.01 * mean * ratio)
        lo, hi = mean - half, mean + half
        if lo.ndim == 0:
            return float(lo), float(hi)
        return lo, hi

    def x_at(self, target_loss: float) -> float:
        """x where the expected loss reaches target_loss (inf if never, NaN if no fit)."""
        if not self.ok:
            return math.nan
        p = self.params
        if target_loss <= p["E"]:
            return math.inf
        return (p["A"] / (target_loss - p["E"])) ** (1.0 / p["alpha"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (plain floats, lists, strings)."""
        return {
            "law": self.law,
            "params": {k: float(v) for k, v in self.params.items()},
            "diagnostics": self.diagnostics,
            "x_scale": float(self.x_scale),
            "noise": float(self.noise),
            "x_last": float(self.x_last),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CurveFit":
        return cls(**d)


def fit_curve(x, loss, *, lr=None, prior=None) -> CurveFit:
    """Fit a saturating power law L = E + A * x**-alpha to (x, loss)."""
    try:
        x_arr = np.asarray(x, dtype=float).ravel()
        y_arr = np.asarray(loss, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"x and loss must be numeric arrays: {exc}") from None
    if x_arr.shape != y_arr.shape:
        raise InvalidInputError(f"x and loss differ in length: {x_arr.size} vs {y_arr.size}")
    good = np.isfinite(x_arr) & np.isfinite(y_arr) & (x_arr > 0) & (y_arr > 0)
    diagnostics: dict[str, Any] = {"n_points": int(x_arr.size), "n_dropped": int((~good).sum())}
    x_arr, y_arr = x_arr[good], y_arr[good]
    diagnostics["n_used"] = int(x_arr.size)
    if x_arr.size < 5:
        diagnostics["reason"] = "too few points"
        return CurveFit("none", {}, diagnostics)
    x_scale = float(x_arr.max())
    xn = x_arr / x_scale
    best = None
    for alpha in np.linspace(0.02, 2.0, 100):
        basis = np.column_stack([np.ones_like(xn), xn**-alpha])
        coef, *_ = np.linalg.lstsq(basis, y_arr, rcond=None)
        sse = float(np.sum((basis @ coef - y_arr) ** 2))
        if coef[1] > 0 and (best is None or sse < best[0]):
            best = (sse, coef, alpha)
    if best is None:
        diagnostics["reason"] = "no downward trend"
        return CurveFit("none", {}, diagnostics)
    sse, (E, A_norm), alpha = best
    params = {"E": float(E), "A": float(A_norm * x_scale**alpha), "alpha": float(alpha)}
    noise = math.sqrt(sse / max(x_arr.size - 3, 1))
    diagnostics["law"] = "saturating_power"
    return CurveFit("saturating_power", params, diagnostics, 1.0, noise, float(x_arr.max()))
