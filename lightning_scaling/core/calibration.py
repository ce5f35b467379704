"""Every tuned constant of the single-run forecaster, in one place.

Each number here was chosen by measuring on the development curves (../shared/data); its
docstring says what it is and how it was measured. The measurements are reproducible:
``benchmarks/extrapolation.py --calibrate`` (the LR-agnostic interval, ``DEFAULT_CALIBRATION``)
and ``benchmarks/schedule_calibration.py`` (``--measure``: the schedule-aware priors;
``--intervals``: the schedule-aware interval multipliers). The modules that use them import
them from here; nothing else in the core is tuned.

Two priors on an exponent alpha live here, and they differ on purpose:
``ALPHA_PRIOR_LR_AGNOSTIC`` (sd 0.1) is on the exponent of x (steps, tokens or FLOPs) of the
LR-agnostic laws, which spreads over 0.42-0.63 across recipes, while ``ALPHA_PRIOR_LR_AREA``
(sd 0.05) is on the exponent of the LR area S1 of the schedule-aware laws, which the
schedule pins to 0.48-0.51 on every decaying development curve.
"""

from __future__ import annotations

import math

import numpy as np

# =========================================================================== LR-agnostic fits
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

# =========================================================================== schedule-aware fits
ALPHA_PRIOR_LR_AREA = (0.5, 0.05)
"""Gaussian prior (mean, sd) on alpha, the exponent of the LR area S1 in the schedule-aware
laws (``L0 + A * S1**-alpha - amp * F``). Full-curve convex_bound fits
(``schedule_calibration.py --measure``): 0.480-0.508 on the 14 decaying multipower curves
(mean 0.496), 0.500-0.502 on the three modded-nanogpt records; the sd is 6x the multipower
spread, room for other recipes (Tissue-law fits of the same curves: 0.41-0.52)."""

ANNEAL_RATIO_PRIOR = (0.4, 0.17)
"""Prior on kappa, the annealing drop at the horizon over (share of the peak LR removed by
then) x (power-law part left there, A * S1(T)**-alpha): (mean, relative sd), at alpha =
``ALPHA_PRIOR_LR_AREA[0]`` (joint with alpha: ``ANNEAL_RATIO_ALPHA_SLOPE``).

Measured (``--measure``) as the kappa that makes each forecast hit the true final loss, on
the 60 development cases (25% and 40% seen) whose annealing is not identifiable yet, 13
groups: multipower AdamW (wsd, wsdld, two-stage; 10 runs) geometric mean 0.422, log sd 0.17;
modded-nanogpt Muon (3 records) 0.455, log sd 0.10. Leave one recipe out (the other recipe's
mean as prior mean): log rms error 0.18 on multipower, 0.12 on modded-nanogpt, 0.17 pooled;
rms of log(kappa / 0.4) over all groups 0.17: hence sd 0.17. Full-curve fits (that prior off)
spread more (log sd 0.36: cosine runs reach the annealing cap, where kappa and alpha trade
off) and are a cross-check only."""

ANNEAL_RATIO_ALPHA_SLOPE = 5.0
"""The annealing-ratio prior is joint with alpha: kappa | alpha has median
``ANNEAL_RATIO_PRIOR[0] * exp(slope * (alpha - ALPHA_PRIOR_LR_AREA[0]))`` (same relative sd),
applied within 2 prior sds of the prior mean (held beyond: the measured range is 0.45-0.55).

Before the decay the data pin the loss curve, not alpha: a fit at a larger alpha has a higher
L0 and a smaller power-law part, so the same final loss needs a larger share of it annealed
away; with independent priors that error is counted twice (through alpha and through kappa).
Measured (``--measure``, the tilt off): the kappa that makes the forecast hit the truth at
alpha fixed to 0.45..0.55, slope of log(kappa) on alpha at 25% / 40% / 50% seen: multipower
8.5 / 6.0 / 4.8 (10 runs), modded-nanogpt 6.7 / 4.8 / 4.2 (3 records); 5 is about the 40%
value."""

ANNEAL_MAX_SHARE = 0.9
"""The annealing term never removes more than this share of the power-law part
A * S1(t)**-alpha at any step up to the horizon (the loss the LR's noise adds sits on top of
L0, so removing it cannot reach below L0). Measured shares at the horizon on the
development curves: 0.15-0.48; the convex bound with a well-tuned LR gives at most ~0.6."""

MULTIPOWER_SHAPE = {"C": 0.11, "beta": 0.59, "gamma": 0.64}
"""Multi-power shape relative to the peak LR: Luo et al. 2025's published 25M fit
(C = 2.07, beta = 0.583, gamma = 0.641 at peak LR 3e-4; C scales as peak**(1 - gamma))."""

SKIP_FRACTION = 0.25
"""Points in the first quarter of the seen steps are not fitted: early training falls faster
than any power law of the LR area (the transient), and biases alpha when kept."""

ANNEAL_SEEN_MIN = 0.05
"""The annealing term counts as identifiable once the fitted steps hold this share of the
schedule's annealing feature at the horizon (below it, it comes from the prior)."""

N_EFF_CAP = 30.0
"""Residuals of a long curve are not independent (data order, slow wiggles); the data term
counts at least this many independent points (when the curve has them) and more only when
its residuals show neighbouring points to be independent (``N_EFF_BLOCKS``)."""

N_EFF_MAX = 300.0
"""Most independent points a fit counts (see ``N_EFF_BLOCKS``)."""

N_EFF_BLOCKS = 8
"""The data term counts the points' total weight over the variance inflation of this many
block means of the fit's residuals, between ``N_EFF_CAP`` and ``N_EFF_MAX``. Measured block
estimates: 10-160 on the multipower curves (11-106 points); 25-110 on the modded-nanogpt
per-step losses (300-1000 steps in ~35 log-spaced bins, i.e. bins as independent as the test
can tell). Counting at most ``N_EFF_CAP`` there made L0 and A so loose that the interval at
25-50% seen was 6-8x their errors."""

WINDOW_SHARE = 0.01
"""The loss a forecast stands for is the mean measured loss over this share of the horizon's
steps (how the development curves' truth is scored, ../shared/data/README.md), and the
interval carries the noise of such a mean (``uncertainty["noise_sd"]``, not scaled by the
calibrated multipliers): the residual sd per measured point over the square root of the
points in the window. Measured scatter of 1%-window means around full-prefix fits: 0.4-0.9%
on modded-nanogpt (per-step losses, ~3-4% noise each), 0.01-0.06% on multipower."""

REFERENCE_AMP_SD = 0.15
"""Least relative sd of an amplitude lent by a reference run: across the schedules of one
multipower recipe the convex_bound amplitude differs from the cosine_24000 run's by 14-15%
rms (-3..+13%, and -31% for the 72,000-step cosine); Tissue's C by a similar amount."""

REFERENCE_ALPHA_SD = 0.03
"""Least sd of an alpha lent by a reference run."""

ALPHA_CONFLICT_Z = 3.0
"""Prior-data conflict on alpha: when the data's own estimate of alpha (flat prior on the
grid) lies more than this many combined sds (prior sd and the estimate's own, in quadrature)
from the prior mean, the prior yields (the interval widens toward the data's reading)."""

CONFLICT_EDGE_Z = 1.6448536269514722
"""Normal quantile of a 90% interval: where the widened reading sits at multiplier 1."""

# --------------------------------------------------------------------------- interval multipliers
INTERVAL_UNIT = {"k": 1.0, "gamma": 1.0, "k_spread": 1.0, "floor": 0.001, "k_fallback": 0.002}
"""The schedule-aware interval's sd at multiplier 1 (``intervals.interval_terms``): the
posterior spread of the forecast (parameters, alpha, prior), a floor of 0.1% and 0.2% per
unit of log-step extrapolation (the power law in the LR area is itself only an
approximation), added in quadrature. Each fit stores this scaled by a calibrated multiplier."""


def scaled_calibration(multiplier: float) -> dict:
    """``INTERVAL_UNIT`` with its spread, floor and fallback scaled by ``multiplier``."""
    return {**INTERVAL_UNIT, "k_spread": multiplier, "floor": multiplier * INTERVAL_UNIT["floor"],
            "k_fallback": multiplier * INTERVAL_UNIT["k_fallback"]}


CALIBRATION = scaled_calibration(1.27)
"""Interval of fits with the default priors whose annealing term the data identify (or whose
schedule never decays): split-conformal multiplier of ``INTERVAL_UNIT``
(``schedule_calibration.py``): the 90% quantile of the multiplier that puts the truth at the
interval's edge over those development cases (multipower; 26 cases at 10/25/40/50% seen,
each curve weighted once per fraction). Leave-one-group-out coverage 85%."""

CALIBRATION_PRIOR = {0.1: 2.31, 0.25: 0.65, 0.4: 0.75, 0.5: 0.81}
"""Interval of fits whose annealing term comes from the default prior (not identifiable yet):
multiplier by seen share of the horizon (x_last / horizon), linear in log share between the
listed shares, held beyond them. Split conformal per seen fraction (Mondrian) on the
development cases of this regime (``schedule_calibration.py``; 22 cases at 10% seen, 30 at
each of 25/40/50%; modded-nanogpt: 3 records, each weighted once; multipower wsd, wsdld and
two-stage runs: 10 groups, plus the 72,000-step cosine runs at 10%): leave-one-group-out
coverage 80% / 85% / 85% / 85% (groups weighted). Multipower sets the multipliers at 40-50%
seen; there the modded-nanogpt errors sit inside the window noise alone (``WINDOW_SHARE``),
so their intervals cover 100%. The window noise matters to the monitor: without it a band at
level 0.5 from a fit at 55% of a ValueEmbed run is 0.2% wide where the loss bumps 2% above
the trend (its trend warning fired on all 14 clean replays); with it the band is ~0.55%."""

CALIBRATION_REFERENCE = {0.1: 1.04, 0.25: 0.53, 0.4: 0.60, 0.5: 0.71}
"""Interval of fits whose annealing amplitude a reference run lent, by seen share like
``CALIBRATION_PRIOR``: the same procedure on the benchmark's multipower reference protocol
(4 cases at 10% seen, 14 runs at 25/40/50%; leave-one-run-out coverage 75% / 86% / 86% / 86%).
One multiplier for all shares (0.71) covered 100% at 25% and 93% at 50%."""


def calibration_by_share(table: dict, seen_share: float) -> dict:
    """The calibration of a per-share ``table`` at ``seen_share``: linear in log share
    between the listed shares, held beyond them.

    >>> calibration_by_share({0.1: 2.0, 0.4: 1.0}, 0.2)["k_spread"]
    1.5
    """
    shares = np.array(sorted(table))
    mult = np.array([table[s] for s in shares])
    share = min(max(float(seen_share), shares[0]), shares[-1])
    return scaled_calibration(float(np.interp(math.log(share), np.log(shares), mult)))


def prior_calibration(seen_share: float) -> dict:
    """Interval calibration of a fit whose annealing comes from the default prior."""
    return calibration_by_share(CALIBRATION_PRIOR, seen_share)


def reference_calibration(seen_share: float) -> dict:
    """Interval calibration of a fit whose annealing amplitude a reference run lent."""
    return calibration_by_share(CALIBRATION_REFERENCE, seen_share)
