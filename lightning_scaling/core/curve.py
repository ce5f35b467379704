"""Single-run curve fitting: ``fit_curve`` -> ``CurveFit``.

``fit_curve(x, loss)`` and ``fit_curve(steps, loss, lr=lr)`` run the forecaster
(``forecaster.fit_forecast``): a Bayesian fit of ``L0 + A S1**-alpha - B F_p`` (S1 the LR
area, F_p the LR decay's effect; S1 = x and B = 0 without a schedule) on a grid, with priors
derived from the development curves by leaving one set out, the posterior median as the
forecast and an interval that adds a backtest of the law on the run's own earlier prefixes.

``fit_curve(x, loss, laws=[...])`` fits the named LR-agnostic laws as version 0.1 did
(``agnostic.fit_agnostic``: robust variable projection, held-out weighting, its own interval
model); the pieces stay importable from here (``fit_law``, ``prepare_points``, ...).

Failure policy
--------------
* Invalid *arguments* (not array-like, different lengths, non-numeric, a level outside
  (0, 1), an unknown law or option, an ``lr`` that does not cover the steps, a malformed
  prior) raise ``lightning_scaling.errors.InvalidInputError`` and nothing else.
* Data that is merely unusable (fewer than ``MIN_POINTS`` finite points, no downward trend,
  losses that reach zero or below, all NaN) is not an error: the fit comes back with
  ``ok == False``, NaN forecasts, and ``diagnostics["reason"]`` says why.

How to add a law
----------------
Named LR-agnostic laws: write a :class:`laws.Law`, ``laws.register_law(law)``, and fit it
with ``fit_curve(x, loss, laws=[name])`` (``fit_law``, ``holdout_weights``, ``build_fit``).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InvalidInputError
from .agnostic import build_fit, fit_agnostic, fit_prepared
from .calibration import HOLDOUT_SPLITS, WARMUP_MAX_SPAN, WARMUP_SCALE_FLOOR, WARMUP_Z
from .curvefit import FORMAT, VERSION, CurveFit, failed_fit
from .forecaster import LAW_NAME, fit_forecast
from .holdout import Holdout, holdout_errors, holdout_weights
from .intervals import interval_terms
from .points import (
    MAX_BINS,
    MIN_POINTS,
    Prepared,
    bucket_log,
    clean_points,
    detect_warmup,
    has_downward_trend,
    prepare_points,
    validate_inputs,
)
from .scheduled import LEGACY_SCHEDULE_LAWS
from .solver import HUBER_K, LawFit, fit_law, grid_for, robust_scale

__all__ = [
    "FORMAT", "HOLDOUT_SPLITS", "HUBER_K", "MAX_BINS", "MIN_POINTS", "VERSION",
    "WARMUP_MAX_SPAN", "WARMUP_SCALE_FLOOR", "WARMUP_Z", "CurveFit", "Holdout", "LawFit", "Prepared",
    "bucket_log", "build_fit", "clean_points", "detect_warmup", "failed_fit", "fit_curve", "fit_law",
    "fit_prepared", "grid_for", "has_downward_trend", "holdout_errors", "holdout_weights",
    "interval_terms", "prepare_points", "robust_scale", "validate_inputs",
]

OPTIONS = ("law", "calibration", "skip_fraction")
"""Keyword options of the forecaster (``fit_curve(..., law=..., calibration=..., skip_fraction=...)``)."""


def fit_curve(x, loss, *, lr=None, prior=None, laws: Sequence[str] | None = None,
              **options) -> CurveFit:
    """Fit a single loss curve and forecast it (see the module docstring).

    Args:
        x: steps, tokens or FLOPs (any positive axis that grows with training; any scale);
            with ``lr`` the optimizer step. NaN/inf and x <= 0 points are dropped and counted
            in ``diagnostics["dropped"]``.
        loss: loss at each x (nats or any positive unit). A few losses <= 0 are dropped as
            glitches; a curve that goes to zero or below is refused (``ok`` False).
        lr: learning rate at every optimizer step 0..horizon (future steps included; any
            units): the forecast follows the schedule (its LR area and its decay) up to the
            horizon ``len(lr) - 1``, where training ends (the forecast holds beyond it).
        prior: a finished sibling run's fit (same recipe and data, e.g. a smaller model; a
            CurveFit, its ``to_dict()``, or a list of them: they lend alpha and, when their
            decay was seen, the decay gain in nats), or ``{"alpha": (mean, sd), "B": (mean,
            sd)}`` (B: the loss the whole LR decay removes, nats).
        laws: fit these named LR-agnostic laws as version 0.1 did (held-out weighted
            mixture; ``laws.LR_AGNOSTIC_LAWS``) instead of the forecaster; with ``lr`` only
            ``["multipower_floor"]`` is accepted.
        **options: ``law`` (with ``lr``: "multipower_floor", the only schedule-aware law
            fitted; 0.1's convex_bound / tissue / multipower fits still load), ``calibration``
            (the forecaster's derived constants: a ``calibration.ForecastConstants`` or a dict
            like ``calibration_data.DERIVED``; default the shipped ones), ``skip_fraction``
            (share of the seen x left out as early transient, default 0.25). Any other name
            raises InvalidInputError.

    Returns:
        CurveFit. ``ok`` is False (NaN forecasts, ``diagnostics["reason"]``: "too few
        points", "no downward trend", "loss not positive", ...) when the data cannot be
        fitted; only invalid arguments raise (InvalidInputError).

    Example (a curve E + A x**-alpha seen up to step 200, forecast at step 800):

    >>> import numpy as np
    >>> x = np.arange(1.0, 201.0)
    >>> fit = fit_curve(x, 2.0 + 8.0 * x**-0.5)
    >>> fit.ok, fit.law
    (True, 'saturating_power')
    >>> round(fit.predict(800.0), 2)  # 2 + 8 / sqrt(800) = 2.283
    2.28
    >>> lo, hi = fit.interval(800.0, level=0.9)
    >>> bool(lo < 2.283 < hi)
    True
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidInputError(f"unknown option(s) for fit_curve: {', '.join(unknown)} "
                                f"(known: {', '.join(OPTIONS)})")
    law = options.pop("law", None)
    if laws is not None and lr is None:
        if options or law is not None:
            raise InvalidInputError(f"options {', '.join(sorted(options) or ['law'])} apply to the forecaster, "
                                    "not to a mixture of named laws (laws=...)")
        return fit_agnostic(x, loss, prior=prior, laws=laws)
    if laws is not None:
        names = list(laws)
        if names != [LAW_NAME]:
            raise InvalidInputError(f"with lr the only law fitted is {LAW_NAME!r}, got laws={names!r}")
    if law is not None and (lr is None or law != LAW_NAME):
        if law in LEGACY_SCHEDULE_LAWS:
            raise InvalidInputError(
                f"law {law!r} is no longer fitted (fits saved by version 0.1 with it still load and forecast); "
                f"with lr the law is {LAW_NAME!r}")
        raise InvalidInputError(f"unknown law {law!r}: with lr the law is {LAW_NAME!r}; without lr use laws=[...]")
    return fit_forecast(x, loss, lr, prior, **options)
