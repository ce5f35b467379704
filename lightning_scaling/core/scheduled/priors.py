"""The priors of one schedule-aware fit: the defaults (``calibration.py``), a user's
``{name: (mean, sd)}``, or a reference fit of the same recipe that lends alpha and, when its
annealing was identified, the amplitude (and the multi-power shape)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import InvalidInputError
from .. import schedule as sch
from ..calibration import (
    ALPHA_PRIOR_LR_AREA,
    ANNEAL_RATIO_PRIOR,
    MULTIPOWER_SHAPE,
    REFERENCE_ALPHA_SD,
    REFERENCE_AMP_SD,
)
from ..curvefit import CurveFit
from .laws import AMP_NAME, SCHEDULE_LAWS


@dataclass
class Priors:
    """The priors of one fit (alpha, and the amplitude directly or through kappa), the
    annealing shape (momentum, multi-power C, beta, gamma) and where they came from."""

    alpha: tuple[float, float]
    amp: tuple[float, float] | None  # direct (mean, sd) on the amplitude, or None
    kappa: tuple[float, float] | None  # (mean, relative sd) of the annealing ratio
    momentum: float
    shape: dict[str, float]
    source: str
    ratio: float = 0.0  # prior share of the power-law part the annealing removes by T (set per fit)
    ratio_alt: float = 0.0  # the convex bound's reading of that share (set per fit)


def _as_fit_dicts(prior) -> list[dict] | None:
    """The reference fits in ``prior`` as dicts, or None when prior is a parameter-prior dict."""
    if prior is None:
        return None
    items = list(prior) if isinstance(prior, (list, tuple)) else [prior]
    out = []
    for item in items:
        if isinstance(item, CurveFit):
            out.append(item.to_dict())
        elif isinstance(item, dict) and "law" in item and "params" in item:
            out.append(item)
        else:
            return None if len(items) == 1 and isinstance(item, dict) else _bad_prior()
    return out


def _bad_prior():
    raise InvalidInputError(
        "prior must be a CurveFit, its to_dict(), a list of those, or a dict "
        "{parameter: (mean, sd)} (parameters: alpha, C, B, kappa)")


def _pair(name: str, spec) -> tuple[float, float]:
    try:
        mu, sd = (float(v) for v in spec)
    except (TypeError, ValueError):
        raise InvalidInputError(f"prior[{name!r}] must be a (mean, sd) pair of numbers") from None
    if not (math.isfinite(mu) and math.isfinite(sd) and sd > 0):
        raise InvalidInputError(f"prior[{name!r}] needs a finite mean and a positive sd")
    return mu, sd


def _combine(estimates: list[tuple[float, float]]) -> tuple[float, float]:
    """Precision-weighted mean and sd of independent (mean, sd) estimates."""
    w = np.array([1.0 / sd**2 for _, sd in estimates])
    mu = float(np.sum(w * np.array([m for m, _ in estimates])) / w.sum())
    return mu, float(1.0 / math.sqrt(w.sum()))


def resolve_priors(prior, law_name: str, momentum: float | None) -> tuple[Priors, str]:
    """Priors for this fit, and the law to use (a reference fit decides the law)."""
    refs = _as_fit_dicts(prior)
    mom = sch.DEFAULT_ANNEAL_MOMENTUM if momentum is None else float(momentum)
    pri = Priors(ALPHA_PRIOR_LR_AREA, None, ANNEAL_RATIO_PRIOR, mom, dict(MULTIPOWER_SHAPE), "default")
    if refs is None:
        if prior:
            known = {"alpha", "C", "B", "kappa"}
            for name, spec in prior.items():
                if name not in known:
                    raise InvalidInputError(f"unknown prior parameter {name!r} (known: {sorted(known)})")
                if name == "alpha":
                    pri.alpha = _pair(name, spec)
                elif name == "kappa":
                    pri.kappa = _pair(name, spec)
                elif name == AMP_NAME[law_name]:
                    pri.amp = _pair(name, spec)
                    pri.kappa = None
            pri.source = "user"
        return pri, law_name
    if not refs:
        _bad_prior()
    ref_laws = {r["law"] for r in refs if r.get("law") in SCHEDULE_LAWS}
    if not ref_laws:
        raise InvalidInputError(
            f"a reference prior must be a schedule-aware fit (law {', '.join(SCHEDULE_LAWS)})")
    law = law_name if law_name in ref_laws else next(n for n in SCHEDULE_LAWS if n in ref_laws)
    alphas, amps = [], []
    for r in refs:
        if r.get("law") != law:
            continue
        p = r["params"]
        post = (r.get("diagnostics") or {}).get("posterior_sd") or {}
        anneal = (r.get("diagnostics") or {}).get("anneal") or {}
        alphas.append((float(p["alpha"]), max(float(post.get("alpha") or 0.0), REFERENCE_ALPHA_SD)))
        amp_name = AMP_NAME[law]
        if anneal.get("identifiable"):
            a = float(p[amp_name])
            amps.append((a, max(float(post.get(amp_name) or 0.0), REFERENCE_AMP_SD * abs(a), 1e-12)))
            if law == "tissue":
                mom = float(p.get("momentum", mom))
            elif law == "multipower":
                pri.shape = {k: float(p[k]) for k in ("C", "beta", "gamma")}
    pri.alpha = _combine(alphas)
    if amps:
        pri.amp = _combine(amps)
        pri.kappa = None
    pri.momentum = mom
    pri.source = "reference" if amps else "reference (alpha only: its annealing was not identified)"
    return pri, law
