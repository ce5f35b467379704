"""The schedule-aware laws of version 0.1, registered in ``laws.LAWS`` on import so that
fits saved by that version (``CurveFit.from_dict``) still load and forecast.

Three laws share one form, ``L(t) = L0 + A * S1(t)**-alpha - amp * F(t)`` (S1 the LR area,
F an annealing feature, all LRs divided by the peak): ``convex_bound`` (0.1's default),
``tissue`` and ``multipower``. They are no longer fitted: ``fit_curve(..., lr=lr)`` fits the
forecaster's law (``forecaster``), and naming one of these raises InvalidInputError.
"""

from __future__ import annotations

from .. import schedule as sch
from ..calibration import MULTIPOWER_SHAPE
from ..laws import LAWS, Law, register_law
from .features import anneal_at, interp_at, powerlaw, schedule_features
from .storage import context_lr

LEGACY_SCHEDULE_LAWS = ("convex_bound", "tissue", "multipower")
"""The schedule-aware laws of version 0.1 (loaded, no longer fitted)."""

AMP_NAME = {"convex_bound": "C", "tissue": "C", "multipower": "B"}
"""The parameter name of each law's annealing amplitude."""


def _make_eval(law: str):
    amp = AMP_NAME[law]

    def evaluate(x, p, context=None):
        feat = schedule_features(*context_lr(context))
        S1x = interp_at(feat["S1"], x)
        return p["L0"] + p["A"] * powerlaw(S1x, p["alpha"]) - p[amp] * anneal_at(law, feat, p, x)

    return evaluate


def _make_basis(law: str):
    def basis(xn, theta, context=None):
        (alpha,) = theta
        feat = schedule_features(*context_lr(context))
        shape = {"momentum": sch.DEFAULT_ANNEAL_MOMENTUM, **MULTIPOWER_SHAPE}
        return [1.0, powerlaw(interp_at(feat["S1"], xn), alpha), -anneal_at(law, feat, shape, xn)]

    return basis


def _make_params(law: str):
    def to_params(coef, theta, x_scale):
        L0, A, amp = (float(c) for c in coef)
        p = {"L0": L0, "A": A, "alpha": float(theta[0]), AMP_NAME[law]: amp}
        if law == "tissue":
            p["momentum"] = sch.DEFAULT_ANNEAL_MOMENTUM
        elif law == "multipower":
            p.update(MULTIPOWER_SHAPE)
        return p

    return to_params


_FORMULAS = {
    "convex_bound": ("L0 + A * S1(t)**-alpha - C * dV(t)  (S1: LR area; dV: drop of the convex "
                     "bound's variance term below holding the peak LR; LR / peak)",
                     ("L0", "A", "alpha", "C")),
    "tissue": ("L0 + A * S1(t)**-alpha - C * S2(t)  (S1: LR area, S2: annealing area; LR / peak)",
               ("L0", "A", "alpha", "C", "momentum")),
    "multipower": ("L0 + A * S1(t)**-alpha - B * LD(t; C, beta, gamma)  (LR / peak)",
                   ("L0", "A", "alpha", "B", "C", "beta", "gamma")),
}


def _register() -> None:
    for name in LEGACY_SCHEDULE_LAWS:
        if name in LAWS:
            continue
        formula, param_names = _FORMULAS[name]
        register_law(Law(
            name=name, formula=formula, param_names=param_names, evaluate=_make_eval(name),
            linear=("L0", "A", AMP_NAME[name]), basis=_make_basis(name), to_params=_make_params(name),
            linear_lower=(0.0, 0.0, 0.0), nonlinear=("alpha",), bounds=((0.05, 1.5),), starts=((0.5,),),
            asymptote=None, decreasing=False, uses_context=True))


_register()
