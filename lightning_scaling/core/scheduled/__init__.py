"""Schedule-aware single-run fits: ``fit_curve(steps, loss, lr=lr)`` lands here.

Modules: ``fit`` (``fit_scheduled``), ``priors``, ``solver`` (the alpha profile),
``posterior`` (the forecast mixture), ``laws`` (registration), ``features`` and ``storage``
(the schedule, its features and caches). Every tuned constant named below lives in
``core.calibration``.

When the learning rate at every optimizer step 0..horizon is known, the loss curve is
modelled in terms of the schedule instead of the step count (all LRs divided by the peak LR,
so every coefficient is "per unit of peak LR" and transfers between runs with different peak
LRs). Three laws share one form, ``L(t) = L0 + A * S1(t)**-alpha - amp * F(t)``, S1 the LR
area (steps at peak LR) and F an annealing feature that is zero until the LR falls:

* ``convex_bound`` (default): F = dV, how much the schedule lowers the variance term of the
  last-iterate bound of SGD (Schaipp et al. 2025, "The surprising agreement between convex
  optimization theory and learning-rate scheduling for large model training"; Defazio et al.
  2023) below that of holding the peak LR (``schedule.convex_bound``). It has no time scale
  to choose, and when the LR is zero the iterate, and F, stand still. Measured on the
  development curves (../shared/data, full-curve fits): residuals about half those of the
  Tissue law on the multipower WSD and two-stage runs, alpha 0.47-0.52 on every curve, and
  an amplitude that varies 2-3x across the two sets against 5x for Tissue's C.
* ``tissue`` (Tissue et al. 2024, "Scaling law with learning rate annealing"): F = S2, the
  momentum-weighted annealing area (``schedule.annealing_area``, momentum 0.999).
* ``multipower`` (Luo et al. 2025): F = LD(t), the multi-power law's loss-drop sum.

All are linear in (L0, A, amp) for a given alpha: the fitter profiles alpha on a grid and
solves the rest in closed form (every alpha at once), under bounds L0, A, amp >= 0 and a cap:
the annealing removes at most ``ANNEAL_MAX_SHARE`` of the reducible loss ``A * S1**-alpha``,
so a fit that reports ok never forecasts a loss below ``L0 >= 0`` (nor a negative one).

Identifiability and priors
--------------------------
Before the LR has fallen, the data say nothing about the annealing amplitude. The fit then
leans on a prior and says so in ``diagnostics`` ("annealing term not identifiable yet"),
and the interval carries the prior's spread (with its own calibrated multipliers by seen
share, ``CALIBRATION_PRIOR``). The prior is a *ratio*: the loss the schedule's
annealing removes by the horizon T is ``kappa = 0.4`` (sd 17%) times the share of the peak
LR removed by then, times the power-law part still left at T, ``A * S1(T)**-alpha``. Its sd
is widened until a second reading sits at its 90% edge: the same share computed from the
convex bound alone (``convex_ratio``: the bound at T for this schedule against holding the
peak, with D/G set so that the peak LR is the schedule's optimal base LR). Per unit of LR
removed, the kappa that makes a forecast made before the decay hit the final loss is 0.42
(multipower WSD and two-stage, log sd 0.17) and 0.45 (modded-nanogpt, log sd 0.10); the bound
reads 0.41 (modded-nanogpt), 0.44-0.46 (WSD), 0.36-0.54 (two-stage) and widens the prior where
it disagrees (see ``ANNEAL_RATIO_PRIOR`` for the measurements).

The exponent has a prior alpha ~ N(0.5, 0.05) (``ALPHA_PRIOR_LR_AREA``): on short prefixes the data
cannot tell L0 and alpha apart. The two priors are joint: before the decay the data pin the
curve, not alpha, and at a larger alpha the same final loss needs a larger share of the
(smaller) power-law part annealed away, so kappa's median grows as exp(5 (alpha - 0.5))
(``ANNEAL_RATIO_ALPHA_SLOPE``, measured). With independent priors the alpha nodes alone
moved a modded-nanogpt forecast at 40% seen by -3% / +2%, an error the kappa sd already
counted. When the data's own alpha (the profile with a flat prior)
sits more than ``ALPHA_CONFLICT_Z`` combined sds from it, the forecast keeps the prior's
reading (early curves often look flatter than their asymptotic law) but the interval widens,
on that side, to reach the forecast under the prior widened to the distance
(``diagnostics["alpha_conflict"]``). The noise scale comes from the law's own residuals at a fit
without the annealing prior, so an anneal the data do show outweighs the prior; the data
count as many independent points as the residuals' block means allow (``N_EFF_BLOCKS``,
30..300), and the interval carries the noise of the mean loss over 1% of the horizon, the
quantity a forecast is scored against (``WINDOW_SHARE``).

``prior=`` takes an earlier CurveFit of the same recipe (or its ``to_dict()``, or a list of
them): it lends alpha and, when its own annealing term was identified, the amplitude itself
(and, for multipower, the shape C, beta, gamma), as tight priors.

Compact fits
------------
``CurveFit.context`` keeps the schedule as a piecewise-linear list of knots (exact for
piecewise-linear schedules, within ``SCHEDULE_TOLERANCE`` of the peak LR elsewhere: a cosine
over any number of steps needs ~800 knots), and the fit itself runs on that same schedule,
so a fit forecasts the same before and after a JSON round trip. Dicts written by older
versions (``context = {"lr": [...]}``, one LR per step) still load.
"""

from __future__ import annotations

from .features import convex_ratio
from .fit import fit_scheduled
from .laws import SCHEDULE_LAWS
from .storage import MAX_KNOTS, SCHEDULE_TOLERANCE, compress_schedule, expand_schedule

__all__ = ["MAX_KNOTS", "SCHEDULE_LAWS", "SCHEDULE_TOLERANCE", "compress_schedule", "convex_ratio",
           "expand_schedule", "fit_scheduled"]
