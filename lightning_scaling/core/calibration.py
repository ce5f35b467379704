"""Every constant of the single-run forecaster, in one place.

Two kinds:

* **Derived** (``FORECASTER``, from the generated module ``calibration_data``): the priors on
  alpha and on the decay gain, the floor exponents p and the interval multipliers. They are
  fitted from the development curves (../shared/data) by ``python benchmarks/calibrate.py
  --write`` with the function ``derive`` there; the generated module keeps the per-set values
  they came from and the sets used. ``benchmarks/extrapolation.py`` scores every set with the
  same derivation run without that set (out-of-set) and passes the result as
  ``fit_curve(..., calibration=...)``.
* **Design** (below, named and explained one by one): grid sizes, the transient cut, the
  backtest prefixes, the interval floor, the weight of the broad gain component, how a
  finished sibling run's values are widened. They were chosen while building the forecaster
  (their measured effect is in each docstring), not fitted to a set.

The LR-agnostic mixture of named laws (``fit_curve(x, loss, laws=[...])``, the version-0.1
fitter kept for explicit use) keeps its own constants at the end of this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field


from . import calibration_data

# =========================================================================== the forecaster


@dataclass(frozen=True)
class ForecastConstants:
    """The derived constants of the forecaster (what ``benchmarks/calibrate.py`` fits).

    Attributes:
        alpha_prior: (mean, sd) of alpha, the exponent of the LR area (of x without a
            schedule).
        gain_rho: center of the decay-gain prior, rho = B / L_ref (B: loss removed when the
            noise floor u**p falls from 1 to 0; L_ref: the loss level at the last fitted point).
        gain_log_sd: sd of log rho in the prior's normal component.
        floor_powers: the exponents p of the noise floor u**p, averaged with equal weights.
        multipliers: interval multipliers (posterior, backtest, drift) per regime: "prior"
            (the decay gain still comes from the prior) and "data".
        sets: the development sets these were derived from.
    """

    alpha_prior: tuple[float, float]
    gain_rho: float
    gain_log_sd: float
    floor_powers: tuple[float, ...]
    multipliers: dict = field(default_factory=lambda: {"prior": (1.0, 1.0, 1.0), "data": (1.0, 1.0, 1.0)})
    sets: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict) -> ForecastConstants:
        """From the ``DERIVED`` layout of ``calibration_data`` (what ``derive`` returns)."""
        mult = {k: tuple(float(v) for v in vals) for k, vals in d.get("interval_multipliers", {}).items()}
        return cls(alpha_prior=tuple(float(v) for v in d["alpha_prior"]),
                   gain_rho=float(d["gain_prior"]["rho"]), gain_log_sd=float(d["gain_prior"]["log_sd"]),
                   floor_powers=tuple(float(p) for p in d["floor_powers"]),
                   multipliers={"prior": mult.get("prior", (1.0, 1.0, 1.0)), "data": mult.get("data", (1.0, 1.0, 1.0))},
                   sets=tuple(d.get("sets", ())))

    def to_dict(self) -> dict:
        return {"sets": list(self.sets), "alpha_prior": list(self.alpha_prior),
                "gain_prior": {"rho": self.gain_rho, "log_sd": self.gain_log_sd},
                "floor_powers": list(self.floor_powers),
                "interval_multipliers": {k: list(v) for k, v in self.multipliers.items()}}


FORECASTER = ForecastConstants.from_dict(calibration_data.DERIVED)
"""The shipped constants: derived from every development set (``calibration_data``)."""

MULTIPOWER_SHAPE = {"C": 0.11, "beta": 0.59, "gamma": 0.64}
"""Relaxation shape of the multi-power kernel, relative to the peak LR: Luo et al. 2025's
published 25M fit (C = 2.07, beta = 0.583, gamma = 0.641 at peak LR 3e-4; C scales as
peak**(1 - gamma)). Changing it (C 0.01-0.4, beta 0.3-1.2, gamma 0) did not move the
half-decay forecasts of the development runs (research FINDINGS, ``shape_scan``); not fitted."""

SKIP_FRACTION = 0.25
"""Points in the first quarter of the seen steps are not fitted: early training falls faster
than any power law of the LR area (the transient)."""

MAX_BINS = 40
"""The fitted points are at most this many log-spaced bins of x (mean loss, weight = count)."""

GAIN_SEEN_MIN = 0.1
"""The fitted points inform the decay gain once they hold this share of the decay feature at
the horizon; before, the gain comes from the prior alone (cosine runs at 10% seen otherwise
read the early curvature as a huge gain: -7.5% bias in the prototype)."""

GAIN_BROAD_WEIGHT = 0.2
"""Weight of the log-uniform component of the gain prior (rho in [0.003, 1]). Out-of-set
(research ``loso.py``): 0 -> algoperf coverage 32/16/24% at 10/25/50% seen; 0.2 -> 60-88 /
68-70 / 52%; 0.35 -> 100/98/52% with 20% wider LM intervals. A design choice, not fitted."""

GAIN_RANGE = (0.003, 1.0)
"""Range of rho of the broad component."""

BACKTEST_PREFIXES = (0.7, 0.85)
"""The backtest refits the points up to these shares of the last seen x and forecasts the last
seen level from each. Prefixes close to now see most of what the run has shown (a decay under
way, a recent bend). Out-of-set (``benchmarks/forecast_experiments.py``, 10/25/50% seen)
against the prototype's (0.5, 0.7): algoperf coverage 90/66/60% (88/66/56%), multipower
75/94/100% (50/100/100%), lr_schedules 97/98/93% (98/99/95%) at median width 5.4% at 50%
(5.9%); medians unchanged (the backtest moves only the interval)."""

BACKTEST_CAP = 20.0
"""Largest factor by which a prefix's error is scaled up to the distance still to go."""

BACKTEST_EPS = 0.002
"""Added to both predicted log-changes of the backtest's scale (a flat curve is not an
infinitely confident one)."""

INTERVAL_FLOOR = 0.001
"""Least sd of log loss of every interval side (0.1%)."""

REFERENCE_GAIN_SD = 0.1
"""Added in quadrature to the log sd of a decay gain lent by finished sibling runs (same data
and tokenizer: the gain in loss units is nearly size- and horizon-free within lr_schedules,
0.18-0.22 nats at 33M-93M and 0.21 at 124M)."""

REFERENCE_GAIN_SD_SINGLE = 0.2
"""Log sd of a gain lent by one sibling run (no spread to measure)."""

REFERENCE_ALPHA_SD = 0.03
"""Added in quadrature to the sd of an alpha lent by sibling runs."""

REFERENCE_ALPHA_SD_SINGLE = 0.05
"""sd of an alpha lent by one sibling run."""

REFERENCE_BROAD_WEIGHT = 0.05
"""Weight of the broad gain component when sibling runs lend the gain."""


# =========================================================================== named LR-agnostic laws (laws=...)
ALPHA_PRIOR_LR_AGNOSTIC = (0.5, 0.1)
"""Gaussian prior (mean, sd) on alpha, the exponent of x in the LR-agnostic saturating laws
(``E + A x**-alpha`` and kin; ``laws.py``).

Past the warm-up, loss curves at constant LR fall as x**-alpha with alpha near 0.5
(Tissue et al. 2024 fit alpha ~ 0.5 in L0 + A S1**-alpha, S1 proportional to the step at
constant LR); full-curve fits of that law to every development curve give 0.42-0.63. Short
curves cannot tell E and alpha apart (E drifts to 0, alpha to ~0.15 and the forecast falls
too far); the prior decides then and gives way to long curves. Checked once on the benchmark
(sd 0.25 instead: gemstones errors 0.71/0.35/0.19% at 10/25/50% seen against
0.62/0.32/0.18%; all sets pooled 3.1/1.4/1.4% against 1.5/0.7/1.3%), not tuned beyond that.
"""

WARMUP_Z = 4.0
"""A leading point whose log residual exceeds this many robust sd is part of the warm-up."""

WARMUP_SCALE_FLOOR = 2e-4
"""Smallest residual sd (log loss) the warm-up test uses: float32 losses and bucketing of a
smooth curve leave ~1e-4 of misfit that is not a transient."""

WARMUP_MAX_SPAN = 0.75
"""The warm-up cut never removes more than this fraction of the log-x span."""

HOLDOUT_SPLITS = (0.5, 0.7)
"""Held-out late-point splits: fit on x <= q * x_last, forecast the points beyond."""

DEFAULT_CALIBRATION = {"k_below": 1.98, "k_above": 0.29, "gamma": 0.70, "k_spread": 1.0,
                       "floor": 0.0, "k_fallback": 0.02}
"""Interval model of the LR-agnostic fits (``intervals.uncertainty_sd``).

Measured with ``python benchmarks/extrapolation.py --calibrate`` on the 43 constant-LR
development cases (the 11 gemstones runs and the 4 multipower constant-LR runs, each fitted
on 10/25/50% of its steps; LR-agnostic laws are meant for constant LR):

* ``gamma`` = 0.70: the error grows like (d / holdout_dist)**gamma; the Theil-Sen slope of
  log(|error| / holdout_err) on log(d / holdout_dist) over those cases.
* ``k_below`` = 1.98, ``k_above`` = 0.29: split-conformal, equal-tailed. For each case, the
  smallest multiplier of the extrapolation term that holds its truth inside the 90% band on
  its side of the forecast; the 95th percentile over the cases, per side. The truth fell
  below the forecast in 81% of the cases (a saturating law fitted early over-forecasts the
  final loss of a constant-LR run: the curve keeps bending), hence the asymmetry.
  Leave-one-run-out coverage of the 90% band: 86%.

Nothing else was tuned (``k_spread`` 1, ``floor`` 0). Other levels reuse the multipliers
with the normal quantile of the level. Runs whose LR decays fall below the constant-LR
trend: the band's long lower side covers part of that, but for those pass ``lr=``.
"""

