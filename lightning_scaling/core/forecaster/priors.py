"""The priors of one forecast: the shipped ones (``calibration.FORECASTER``), a user's
``{name: (mean, sd)}``, or finished sibling runs of the same recipe (``prior=`` a CurveFit, its
``to_dict()``, or a list of them) that lend alpha and the decay gain in loss units."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import InvalidInputError
from .. import calibration as cal
from ..calibration import ForecastConstants
from ..curvefit import CurveFit
from ..solver import prior_pair
from .grid import GainPrior
from .law import LAW_NAME

PRIOR_NAMES = ("alpha", "B")
"""Parameters a ``{name: (mean, sd)}`` prior may name: alpha, and the decay gain B (nats)."""


@dataclass(frozen=True)
class Priors:
    """The priors of one fit.

    Attributes:
        alpha: (mean, sd) of alpha.
        gain: the gain prior (its center in rho = B / L_ref units, unless ``gain_loss``).
        gain_loss: the gain prior's center in loss units (nats) when lent by a finished run or
            given by the user; None: the center is ``gain.center`` (a share of the loss level).
        source: "calibrated", "user" or "reference (N runs)".
    """

    alpha: tuple[float, float]
    gain: GainPrior
    gain_loss: float | None
    source: str


def default_priors(constants: ForecastConstants) -> Priors:
    gain = GainPrior(math.log(constants.gain_rho), constants.gain_log_sd, cal.GAIN_BROAD_WEIGHT, *cal.GAIN_RANGE)
    return Priors(tuple(constants.alpha_prior), gain, None, "calibrated")


def _fit_dicts(prior) -> list[dict] | None:
    """The sibling fits in ``prior`` as dicts, or None when prior is a parameter dict."""
    items = list(prior) if isinstance(prior, (list, tuple)) else [prior]
    if len(items) == 1 and isinstance(items[0], dict) and "law" not in items[0]:
        return None
    out = []
    for item in items:
        if isinstance(item, CurveFit):
            item = item.to_dict()
        if not (isinstance(item, dict) and "law" in item and "params" in item):
            raise InvalidInputError("prior must be a CurveFit, its to_dict(), a list of those, or a dict "
                                    f"{{parameter: (mean, sd)}} (parameters: {', '.join(PRIOR_NAMES)})")
        out.append(item)
    if not out:
        raise InvalidInputError("prior is an empty list: pass at least one finished run's fit")
    return out


def resolve_priors(prior, constants: ForecastConstants, with_schedule: bool) -> Priors:
    """The priors of this fit (see the module docstring); InvalidInputError for a bad prior."""
    base = default_priors(constants)
    if prior is None:
        return base
    refs = _fit_dicts(prior)
    if refs is None:
        alpha, gain_loss, gain = base.alpha, None, base.gain
        for name, spec in prior.items():
            if name not in PRIOR_NAMES:
                raise InvalidInputError(f"unknown prior parameter {name!r} (known: {', '.join(PRIOR_NAMES)})")
            mu, sd = prior_pair(name, spec)
            if name == "alpha":
                alpha = (mu, sd)
            elif mu <= 0:
                raise InvalidInputError("prior['B'] needs a positive mean (the loss the decay removes, nats)")
            else:
                gain_loss = mu
                gain = GainPrior(0.0, max(sd / mu, 1e-3), cal.REFERENCE_BROAD_WEIGHT, *cal.GAIN_RANGE)
        return Priors(alpha, gain, gain_loss, "user")
    return _lent_priors(refs, base, with_schedule)


def _lent_priors(refs: list[dict], base: Priors, with_schedule: bool) -> Priors:
    """Alpha and the decay gain lent by finished sibling runs (their own fits, whole curves)."""
    alphas, gains = [], []
    for r in refs:
        lend = (r.get("diagnostics") or {}).get("lend")
        if not lend or r.get("law") not in (LAW_NAME, "saturating_power"):
            raise InvalidInputError(
                f"a prior fit must come from this version's fit_curve (law {LAW_NAME} or saturating_power, "
                f"with diagnostics['lend']); got law {r.get('law')!r}: refit the finished run")
        alphas.append(float(lend["alpha"]))
        if lend.get("gain") is not None and with_schedule:
            gains.append(float(lend["gain"]))
    a = np.array(alphas)
    a_sd = math.hypot(float(a.std()) if a.size > 1 else cal.REFERENCE_ALPHA_SD_SINGLE, cal.REFERENCE_ALPHA_SD)
    gain, gain_loss = base.gain, None
    if gains:
        lg = np.log(gains)
        g_sd = math.hypot(float(lg.std()) if lg.size > 1 else cal.REFERENCE_GAIN_SD_SINGLE, cal.REFERENCE_GAIN_SD)
        gain = GainPrior(0.0, g_sd, cal.REFERENCE_BROAD_WEIGHT, *cal.GAIN_RANGE)
        gain_loss = float(np.exp(lg.mean()))
    what = "alpha and the decay gain" if gains else "alpha only (no sibling showed its decay)"
    return Priors((float(a.mean()), a_sd), gain, gain_loss, f"reference ({len(refs)} runs: {what})")
