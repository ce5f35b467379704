"""Functional forms of single-run loss curves, pure numpy.

Every law is a :class:`Law` in the registry ``LAWS`` (name -> Law). A law is written as a
linear combination of basis columns whose shape depends on a few nonlinear parameters:

    L(x) = sum_j  c_j * B_j(x / x_scale; theta, context)

e.g. the saturating power law ``E + A x^-alpha`` has linear coefficients (E, A), basis
columns (1, x^-alpha) and one nonlinear parameter alpha. That structure is what lets the
fitter (``solver.fit_law``) solve the linear coefficients exactly for every trial theta
(variable projection) and search only over theta.

Units. The fitter works on ``xn = x / x_scale`` (x_scale = the last fitted x), so that a law
fits the same way whether x counts steps, tokens or 1e21 FLOPs. ``Law.to_params`` turns the
normalised solution into parameters in the caller's units (what ``CurveFit.params`` holds)
and ``Law.evaluate(x, params, context)`` evaluates in the caller's units.

``context`` is a dict (or None) of per-run side information a law may depend on; the
schedule-aware laws (``lightning_scaling.core.scheduled``) read the learning rate at every step
from ``context["lr"]`` (x is then the optimizer step). The LR-agnostic laws here ignore it.
Anything kept in a context must be JSON-safe (plain lists of floats), because a
``CurveFit`` stores it in ``to_dict()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import InvalidInputError
from .calibration import ALPHA_PRIOR_LR_AGNOSTIC

Context = "dict[str, Any] | None"


@dataclass(frozen=True)
class Law:
    """One functional form of a loss curve.

    Attributes:
        name: registry key (also ``CurveFit.law``).
        formula: human-readable formula, caller units.
        param_names: names of the parameters in ``CurveFit.params`` (caller units).
        evaluate: ``f(x, params, context) -> loss`` with x and params in caller units.
        linear: names of the linear coefficients c_j, in basis-column order.
        linear_lower: lower bound of each linear coefficient (e.g. 0 for E and A).
        nonlinear: names of the nonlinear parameters theta (normalised units).
        bounds: (low, high) of each theta, normalised units (x / x_scale).
        starts: starting thetas for the multi-start search.
        basis: ``B(xn, theta, context) -> [column, ...]`` (one per linear coefficient) on
            normalised x. It must broadcast: the fitter passes xn of shape (1, n) and each
            theta component of shape (m, 1) to score m candidate thetas at once; a column
            may be a scalar (e.g. 1.0 for a constant term).
        to_params: ``(coef, theta, x_scale) -> params`` in caller units.
        asymptote: ``params -> loss as x -> inf`` (None when unbounded / context-bound).
        decreasing: True when the law is non-increasing in x for every admissible parameter
            set (lets ``x_at`` use a bracketing search).
        uses_context: True when ``evaluate``/``basis`` read ``context`` (schedule laws).
        default_prior: ``{name: (mean, sd)}`` Gaussian priors the fitter applies unless the
            caller's ``prior`` names the parameter (nonlinear: fitter units; linear:
            basis units).
        n_free: number of free parameters (for penalising flexible laws on few points).
    """

    name: str
    formula: str
    param_names: tuple[str, ...]
    evaluate: Callable[..., np.ndarray]
    linear: tuple[str, ...]
    linear_lower: tuple[float, ...]
    nonlinear: tuple[str, ...]
    bounds: tuple[tuple[float, float], ...]
    starts: tuple[tuple[float, ...], ...]
    basis: Callable[..., np.ndarray]
    to_params: Callable[..., dict[str, float]]
    asymptote: Callable[[dict[str, float]], float] | None = None
    decreasing: bool = True
    uses_context: bool = False
    default_prior: dict[str, tuple[float, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_free(self) -> int:
        return len(self.linear) + len(self.nonlinear)


LAWS: dict[str, Law] = {}

def register_law(law: Law, *, replace: bool = False) -> Law:
    """Add ``law`` to the registry (``replace=True`` to overwrite an existing name)."""
    if law.name in LAWS and not replace:
        raise InvalidInputError(f"a law named {law.name!r} is already registered")
    LAWS[law.name] = law
    return law


def get_law(name: str) -> Law:
    """The registered law called ``name``; InvalidInputError when unknown."""
    try:
        return LAWS[name]
    except KeyError:
        raise InvalidInputError(
            f"unknown law {name!r} (known: {', '.join(sorted(LAWS))})"
        ) from None


def _pos(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


# --------------------------------------------------------------------------- saturating power
def _sat_eval(x, p, context=None):
    x = _pos(x)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return p["E"] + p["A"] * np.exp(-p["alpha"] * np.log(x))


def _sat_basis(xn, theta, context=None):
    (alpha,) = theta
    return [1.0, np.exp(-alpha * np.log(xn))]


def _sat_params(coef, theta, x_scale):
    E, A = coef
    (alpha,) = theta
    return {"E": float(E), "A": float(A * math.exp(alpha * math.log(x_scale))), "alpha": float(alpha)}


register_law(
    Law(
        name="saturating_power",
        formula="E + A * x**-alpha",
        param_names=("E", "A", "alpha"),
        evaluate=_sat_eval,
        linear=("E", "A"),
        linear_lower=(0.0, 0.0),
        nonlinear=("alpha",),
        bounds=((0.02, 3.0),),
        starts=((0.1,), (0.3,), (0.7,), (1.5,)),
        basis=_sat_basis,
        to_params=_sat_params,
        asymptote=lambda p: p["E"],
        default_prior={"alpha": ALPHA_PRIOR_LR_AGNOSTIC},
    )
)


# --------------------------------------------------------------------------- Kaplan pure power
def _kaplan_eval(x, p, context=None):
    x = _pos(x)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return np.exp(p["alpha"] * (math.log(p["x_c"]) - np.log(x)))


def _kaplan_basis(xn, theta, context=None):
    (alpha,) = theta
    return [np.exp(-alpha * np.log(xn))]


def _kaplan_params(coef, theta, x_scale):
    (A,) = coef
    (alpha,) = theta
    # A * xn^-alpha = (x_c / x)^alpha  with  x_c = x_scale * A^(1/alpha)
    log_xc = math.log(x_scale) + math.log(max(A, 1e-300)) / alpha
    return {"x_c": float(math.exp(min(log_xc, 700.0))), "alpha": float(alpha)}


register_law(
    Law(
        name="kaplan",
        formula="(x_c / x)**alpha",
        param_names=("x_c", "alpha"),
        evaluate=_kaplan_eval,
        linear=("A",),
        linear_lower=(0.0,),
        nonlinear=("alpha",),
        bounds=((0.001, 2.0),),
        starts=((0.01,), (0.05,), (0.2,)),
        basis=_kaplan_basis,
        to_params=_kaplan_params,
        asymptote=lambda p: 0.0,
    )
)


# --------------------------------------------------------------------------- shifted power (pow4)
def _shift_eval(x, p, context=None):
    x = _pos(x)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return p["E"] + p["A"] * np.exp(-p["alpha"] * np.log(x + p["x0"]))


def _shift_basis(xn, theta, context=None):
    alpha, log_x0 = theta
    return [1.0, np.exp(-alpha * np.log(xn + np.exp(log_x0)))]


def _shift_params(coef, theta, x_scale):
    E, A = coef
    alpha, log_x0 = theta
    return {
        "E": float(E),
        "A": float(A * math.exp(alpha * math.log(x_scale))),
        "alpha": float(alpha),
        "x0": float(math.exp(log_x0) * x_scale),
    }


register_law(
    Law(
        name="shifted_power",
        formula="E + A * (x + x0)**-alpha",
        param_names=("E", "A", "alpha", "x0"),
        evaluate=_shift_eval,
        linear=("E", "A"),
        linear_lower=(0.0, 0.0),
        nonlinear=("alpha", "log_x0"),
        bounds=((0.02, 3.0), (-10.0, 0.0)),
        starts=((0.3, -4.0), (0.7, -3.0), (1.5, -2.0)),
        basis=_shift_basis,
        to_params=_shift_params,
        asymptote=lambda p: p["E"],
        default_prior={"alpha": ALPHA_PRIOR_LR_AGNOSTIC},
    )
)


# --------------------------------------------------------------------------- MMF / log-power
def _mmf_eval(x, p, context=None):
    x = _pos(x)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return p["E"] + p["A"] / (1.0 + np.exp(p["alpha"] * (np.log(x) - math.log(p["x_h"]))))


def _mmf_basis(xn, theta, context=None):
    alpha, log_h = theta
    z = np.clip(alpha * (np.log(xn) - log_h), -700.0, 700.0)
    return [1.0, 1.0 / (1.0 + np.exp(z))]


def _mmf_params(coef, theta, x_scale):
    E, A = coef
    alpha, log_h = theta
    return {"E": float(E), "A": float(A), "alpha": float(alpha), "x_h": float(x_scale * math.exp(log_h))}


register_law(
    Law(
        name="mmf",
        formula="E + A / (1 + (x / x_h)**alpha)",
        param_names=("E", "A", "alpha", "x_h"),
        evaluate=_mmf_eval,
        linear=("E", "A"),
        linear_lower=(0.0, 0.0),
        nonlinear=("alpha", "log_h"),
        bounds=((0.05, 3.0), (-12.0, 3.0)),
        starts=((0.5, -4.0), (1.0, -2.0), (0.3, -7.0)),
        basis=_mmf_basis,
        to_params=_mmf_params,
        asymptote=lambda p: p["E"],
        default_prior={"alpha": ALPHA_PRIOR_LR_AGNOSTIC},
    )
)


# --------------------------------------------------------------------------- Weibull (stretched exp)
def _weib_eval(x, p, context=None):
    x = _pos(x)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return p["E"] + p["A"] * np.exp(-np.exp(p["delta"] * (np.log(x) - math.log(p["x_k"]))))


def _weib_basis(xn, theta, context=None):
    delta, log_k = theta
    z = np.clip(delta * (np.log(xn) - log_k), -700.0, 700.0)
    return [1.0, np.exp(-np.exp(z))]


def _weib_params(coef, theta, x_scale):
    E, A = coef
    delta, log_k = theta
    return {"E": float(E), "A": float(A), "delta": float(delta), "x_k": float(x_scale * math.exp(log_k))}


register_law(
    Law(
        name="weibull",
        formula="E + A * exp(-(x / x_k)**delta)",
        param_names=("E", "A", "delta", "x_k"),
        evaluate=_weib_eval,
        linear=("E", "A"),
        linear_lower=(0.0, 0.0),
        nonlinear=("delta", "log_k"),
        bounds=((0.02, 2.0), (-14.0, 4.0)),
        starts=((0.2, -3.0), (0.5, -1.0), (0.1, -6.0)),
        basis=_weib_basis,
        to_params=_weib_params,
        asymptote=lambda p: p["E"],
    )
)


LR_AGNOSTIC_LAWS: tuple[str, ...] = ("saturating_power", "kaplan", "shifted_power", "mmf", "weibull")
"""Every LR-agnostic law registered here (``fit_curve(..., laws=...)`` may pick any)."""

DEFAULT_LAWS: tuple[str, ...] = ("saturating_power", "mmf")
"""The candidates ``fit_curve`` weights by held-out late points when ``laws`` is not given.

Two different families: a power law with a floor, and the MMF / log-logistic curve (a
plateau, then a power-law fall, then a floor). Kaplan's pure power law, the shifted power
law and the Weibull form stay available through ``laws=``, but are not default candidates:
on the development curves (../shared/data) adding them to the held-out weighting raised the
median error of the constant-LR set (no floor: the pure power law under-forecasts by 5-9%;
Weibull saturates too early, +1-2%; the shifted power law changed nothing but the time)."""


def evaluate(name: str, x, params: dict[str, float], context=None) -> np.ndarray:
    """Evaluate the registered law ``name`` at x (caller units)."""
    return get_law(name).evaluate(_pos(x), params, context)
