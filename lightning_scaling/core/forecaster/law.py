"""The forecaster's schedule-aware law, registered in ``laws.LAWS`` as ``multipower_floor``.

``L(t) = L0 + A * S1(t)**-alpha - B * F_p(t)`` in the caller's units: t the optimizer step,
S1 the LR area (peak-LR steps, ``features.lr_area_at``), F_p the multi-power drop of the noise
floor u**p (``features.floor_drop_at``; shape C, beta, gamma). The schedule ends at its horizon
(``len(lr) - 1``): there training stops, and the law holds its value beyond it. It is fitted by
``forecaster.fit`` (grid posterior), never by ``solver.fit_law``; without a schedule the
forecaster's law is ``saturating_power`` (``E + A x**-alpha``, ``laws.py``).
"""

from __future__ import annotations

import numpy as np

from ...errors import InvalidInputError
from ..laws import LAWS, Law, register_law
from ..scheduled.features import powerlaw, schedule_features
from ..scheduled.storage import context_lr
from .features import floor_drop_at, lr_area_at

LAW_NAME = "multipower_floor"
PARAM_NAMES = ("L0", "A", "alpha", "B", "p", "C", "beta", "gamma")


def evaluate(x, params, context=None) -> np.ndarray:
    """The law at steps x; beyond the schedule's horizon the run has ended and the loss stays
    at its value there."""
    feat = schedule_features(*context_lr(context))
    x = np.minimum(np.asarray(x, dtype=float), float(feat["horizon"]))
    shape = {k: params[k] for k in ("C", "beta", "gamma")}
    S1 = lr_area_at(feat, x)
    drop = floor_drop_at(feat, x, params["p"], shape) if params["B"] != 0 else 0.0
    return params["L0"] + params["A"] * powerlaw(S1, params["alpha"]) - params["B"] * drop


def _not_here(*_args, **_kw):
    raise InvalidInputError(f"{LAW_NAME} is fitted by fit_curve(steps, loss, lr=lr), not by fit_law")


if LAW_NAME not in LAWS:
    register_law(Law(
        name=LAW_NAME,
        formula="L0 + A * S1(t)**-alpha - B * F_p(t)  (S1: LR area in peak-LR steps; F_p: multi-power "
                "drop of the noise floor (LR / peak)**p)",
        param_names=PARAM_NAMES, evaluate=evaluate, linear=("L0", "A", "B"), linear_lower=(-np.inf, 0.0, 0.0),
        nonlinear=("alpha",), bounds=((0.08, 2.5),), starts=((0.5,),), basis=_not_here, to_params=_not_here,
        asymptote=None, decreasing=False, uses_context=True))
