"""Single-run curve fitting: ``fit_curve`` -> ``CurveFit``.

``fit_curve(x, loss)`` is the entry point; it dispatches:

* without ``lr``: the LR-agnostic fit (``agnostic.fit_agnostic``): clean the points, bucket
  long noisy histories into log-spaced bins, cut the warm-up transient (``points.py``), fit
  each candidate law with a robust variable-projection fit (``solver.py``), weight the laws
  by how well each forecast held-back late points of the same curve (``holdout.py``) and
  attach an interval model calibrated on real curves (``intervals.py``, ``calibration.py``);
* with ``lr`` (the LR at every optimizer step 0..horizon): the schedule-aware fit
  (``scheduled.fit_scheduled``).

The pieces stay importable from here (``CurveFit``, ``interval_terms``, ``fit_law``,
``prepare_points``, ...), so ``from lightning_scaling.core.curve import X`` keeps working.

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
   A law that needs the learning-rate schedule sets ``uses_context=True`` and reads the
   schedule from ``context`` in ``basis``/``evaluate``; x is then the optimizer step.
2. ``laws.register_law(law)`` (names are unique).
3. Fit it with :func:`fit_law` (robust Huber-on-log, multi-start, variable projection) on the
   output of :func:`prepare_points`; compare candidates with :func:`holdout_weights`; build a
   :class:`CurveFit` with :func:`build_fit`, which attaches the calibrated interval model.
   ``CurveFit.context`` keeps the context (JSON-safe) so ``predict`` works after a
   ``to_dict``/``from_dict`` round trip.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InvalidInputError
from .agnostic import build_fit, fit_agnostic, fit_prepared
from .calibration import (
    DEFAULT_CALIBRATION,
    HOLDOUT_SPLITS,
    WARMUP_MAX_SPAN,
    WARMUP_SCALE_FLOOR,
    WARMUP_Z,
)
from .curvefit import FORMAT, VERSION, CurveFit, failed_fit
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
from .scheduled import fit_scheduled
from .solver import HUBER_K, LawFit, fit_law, grid_for, robust_scale

__all__ = [
    "DEFAULT_CALIBRATION", "FORMAT", "HOLDOUT_SPLITS", "HUBER_K", "MAX_BINS", "MIN_POINTS", "VERSION",
    "WARMUP_MAX_SPAN", "WARMUP_SCALE_FLOOR", "WARMUP_Z", "CurveFit", "Holdout", "LawFit", "Prepared",
    "bucket_log", "build_fit", "clean_points", "detect_warmup", "failed_fit", "fit_curve", "fit_law",
    "fit_prepared", "grid_for", "has_downward_trend", "holdout_errors", "holdout_weights",
    "interval_terms", "prepare_points", "robust_scale", "validate_inputs",
]


def fit_curve(x, loss, *, lr=None, prior=None, laws: Sequence[str] | None = None,
              **options) -> CurveFit:
    """Fit a single loss curve and forecast it (see the module docstring).

    Args:
        x: steps, tokens or FLOPs (any positive axis that grows with training; any scale:
            x is normalised internally, so 1e21 FLOPs fit like steps).
        loss: loss at each x (nats or any positive unit). NaN/inf and x <= 0 points are
            dropped and counted in ``diagnostics["dropped"]``.
        lr: learning rate at every optimizer step 0..horizon (x is then the step):
            delegates to ``lightning_scaling.core.scheduled.fit_scheduled`` (``options``
            go there too).
        prior: ``{parameter: (mean, sd)}`` Gaussian priors overriding the laws' defaults
            (e.g. ``{"alpha": (0.3, 0.1)}``).
        laws: candidate law names (default ``laws.DEFAULT_LAWS``); with one name, that law
            alone is fitted.

    Returns:
        CurveFit. ``ok`` is False (NaN forecasts, ``diagnostics["reason"]``: "too few
        points", "no downward trend", ...) when the data cannot be fitted; only invalid
        arguments raise (InvalidInputError).

    Example (a curve E + A x**-alpha seen up to step 200, forecast at step 800):

    >>> import numpy as np
    >>> x = np.arange(1.0, 201.0)
    >>> fit = fit_curve(x, 2.0 + 8.0 * x**-0.5)
    >>> fit.ok, fit.law
    (True, 'saturating_power')
    >>> round(fit.predict(800.0), 3)  # 2 + 8 / sqrt(800)
    2.283
    >>> lo, hi = fit.interval(800.0, level=0.9)
    >>> bool(lo < fit.predict(800.0) < hi)
    True
    """
    if lr is not None:
        return fit_scheduled(x, loss, lr=lr, prior=prior, **options)
    if options:
        raise InvalidInputError(f"unknown option(s) for fit_curve: {', '.join(sorted(options))}")
    return fit_agnostic(x, loss, prior=prior, laws=laws)
