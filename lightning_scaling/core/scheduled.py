"""Schedule-aware single-run fits: ``fit_curve(steps, loss, lr=lr)`` lands here.

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

The exponent has a prior alpha ~ N(0.5, 0.05) (``ALPHA_PRIOR``): on short prefixes the data
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

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import schedule as sch
from .curve import MIN_POINTS, CurveFit, failed_fit, prepare_points, validate_inputs
from ..errors import InvalidInputError
from .plain import plain
from .laws import LAWS, Law, register_law

# ----------------------------------------------------------------------------- defaults
ALPHA_PRIOR = (0.5, 0.05)
"""Gaussian prior (mean, sd) on alpha of the schedule-aware laws. Full-curve convex_bound
fits: 0.480-0.508 on the 14 decaying multipower curves (mean 0.496), 0.500-0.502 on the three
modded-nanogpt records (benchmarks/schedule_calibration.py --measure); the sd is 6x the
multipower spread, room for other recipes (Tissue-law fits of the same curves: 0.41-0.52)."""

ANNEAL_RATIO_PRIOR = (0.4, 0.17)
"""Prior on kappa, the annealing drop at the horizon over (share of the peak LR removed by
then) x (power-law part left there, A * S1(T)**-alpha): (mean, relative sd), at alpha =
ALPHA_PRIOR[0] (joint with alpha: ``ANNEAL_RATIO_ALPHA_SLOPE``). Measured
(benchmarks/schedule_calibration.py --measure) as the kappa that makes each forecast hit the
true final loss, on the 60 development cases (25% and 40% seen) whose annealing is not
identifiable yet, 13 groups: multipower AdamW (wsd, wsdld, two-stage; 10 runs) geometric mean
0.422, log sd 0.17; modded-nanogpt Muon (3 records) 0.455, log sd 0.10. Leave one recipe
out (the other recipe's mean as prior mean): log rms error 0.18 on multipower, 0.12 on
modded-nanogpt, 0.17 pooled; rms of log(kappa / 0.4) over all groups 0.17: hence sd 0.17.
Full-curve fits (that prior off) spread more (log sd 0.36: cosine runs reach the annealing
cap, where kappa and alpha trade off) and are kept as a cross-check only. History: sd 0.5
until 2026-11-29, then 0.25 (the same measurement with independent alpha and kappa priors:
log sd 0.26 on multipower, leave-one-recipe-out rms 0.25; part of that spread was alpha's,
counted a second time through the alpha prior)."""

ANNEAL_RATIO_ALPHA_SLOPE = 5.0
"""The annealing-ratio prior is joint with alpha: kappa | alpha has median
``ANNEAL_RATIO_PRIOR[0] * exp(slope * (alpha - ALPHA_PRIOR[0]))`` (same relative sd). Before
the decay the data pin the loss curve, not alpha: a fit at a larger alpha has a higher L0 and
a smaller power-law part A * S1(T)**-alpha, so the same final loss needs a larger share of it
annealed away. Measured (benchmarks/schedule_calibration.py --measure, the tilt off): the
kappa that makes the forecast hit the truth at alpha fixed to 0.45..0.55, per group, slope
of log(kappa) on alpha at 25% / 40% / 50% seen: multipower 8.5 / 6.0 / 4.8 (10 runs),
modded-nanogpt 6.7 / 4.8 / 4.2 (3 records; each recipe's median off the other's by rms 1.3-1.8
at 40-50%); 5 is about the 40% value. Applied within 2 prior sds of ALPHA_PRIOR[0] (held
beyond: the measured range is 0.45-0.55). With independent priors
(slope 0) the three alpha nodes' forecasts of a modded-nanogpt run at 40% seen spread by
-3% / +2% around the middle one, and the same error was counted twice: once through alpha
and once through kappa, whose sd was measured at the fitted alpha."""

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

N_EFF_CAP = 30.0
"""Residuals of a long curve are not independent (data order, slow wiggles); the data term
counts at least this many independent points (when the curve has them) and more only when
its residuals show neighbouring points to be independent (``N_EFF_BLOCKS``)."""

WINDOW_SHARE = 0.01
"""The loss a forecast stands for is the mean measured loss over this share of the horizon's
steps (how the development curves' truth is scored, ../shared/data/README.md), and the
interval carries the noise of such a mean (``uncertainty["noise_sd"]``, not scaled by the
calibrated multipliers): the residual sd per measured point over the square root of the
points in the window. Measured scatter of 1%-window means around full-prefix fits: 0.4-0.9%
on modded-nanogpt (per-step losses, ~3-4% noise each), 0.01-0.06% on multipower."""

N_EFF_MAX = 300.0
"""Most independent points a fit counts (see ``N_EFF_BLOCKS``)."""

N_EFF_BLOCKS = 8
"""The data term counts the points' total weight over the variance inflation of this many
block means of the fit's residuals (``_effective_n``), between ``N_EFF_CAP`` and
``N_EFF_MAX``. Before 2026-11-29 every fit counted at most ``N_EFF_CAP`` points: right for
the multipower curves (11-106 points, block estimate 10-160), but the modded-nanogpt
per-step losses (300-1000 steps in ~35 log-spaced bins) have bins as independent as the
block test can tell (block estimate 25-110 of ~35 bins, i.e. the whole weight), and
counting 30 of ~600 made their L0 and A so loose that the interval at 25-50% seen was 6-8x
their errors."""

ANNEAL_SEEN_MIN = 0.05
"""The annealing term counts as identifiable once the fitted steps hold this share of the
schedule's annealing feature at the horizon (below it, it comes from the prior)."""

INTERVAL_UNIT = {"k": 1.0, "gamma": 1.0, "k_spread": 1.0, "floor": 0.001, "k_fallback": 0.002}
"""The interval's sd at multiplier 1 (``curve.interval_terms``): the posterior spread of the
forecast (parameters, alpha, prior), a floor of 0.1% and 0.2% per unit of log-step
extrapolation (the power law in the LR area is itself only an approximation), added in
quadrature. Each fit stores this scaled by a calibrated multiplier."""


def _scaled(multiplier: float) -> dict:
    return {**INTERVAL_UNIT, "k_spread": multiplier, "floor": multiplier * INTERVAL_UNIT["floor"],
            "k_fallback": multiplier * INTERVAL_UNIT["k_fallback"]}


CALIBRATION = _scaled(1.27)
"""Interval of fits with the default priors whose annealing term the data identify (or whose
schedule never decays): split-conformal multiplier of ``INTERVAL_UNIT``
(benchmarks/schedule_calibration.py): the 90% quantile of the multiplier that puts the truth
at the interval's edge over those development cases (multipower; 26 cases at 10/25/40/50%
seen, each curve weighted once per fraction). Leave-one-group-out coverage 85%."""

CALIBRATION_PRIOR = {0.1: 2.31, 0.25: 0.65, 0.4: 0.75, 0.5: 0.81}
"""Interval of fits whose annealing term comes from the default prior (not identifiable yet):
multiplier by seen share of the horizon (x_last / horizon), linear in log share between the
listed shares, held beyond them. Split conformal per seen fraction (Mondrian) on the
development cases of this regime (benchmarks/schedule_calibration.py; 22 cases at 10% seen,
30 at each of 25/40/50%; modded-nanogpt: 3 records, each weighted once; multipower wsd,
wsdld and two-stage runs: 10 groups, plus the 72,000-step cosine runs at 10%):
leave-one-group-out coverage 80% / 85% / 85% / 85% (groups weighted). Multipower sets the
multipliers at 40-50% seen; there the modded-nanogpt errors sit inside the window noise
alone (``WINDOW_SHARE``), so their intervals cover 100%. Measured on 2026-11-29 with the
joint alpha-kappa prior and the counted points of ``N_EFF_BLOCKS``. The previous attempt at
a per-share table (1.79 / 0.98 / 0.37, independent priors, 30 points counted, no window
noise) made the monitor's trend band fire on all 14 clean ValueEmbed replays: its band at
level 0.5 from a fit at 55% of the run was 0.2% wide where the loss bumps 2% above the trend;
with the window noise it is ~0.55% (0.73% with the earlier single multiplier 0.98), and the
clean replays warn no more than before this change (benchmarks/replay.py --parts stop with the
monitor of 2026-11-29: 1 warning, in ValueEmbed_4f8bcdc3, against 2 before)."""

CALIBRATION_REFERENCE = {0.1: 1.04, 0.25: 0.53, 0.4: 0.60, 0.5: 0.71}
"""Interval of fits whose annealing amplitude a reference run lent, by seen share like
``CALIBRATION_PRIOR``: the same procedure on the benchmark's multipower reference protocol
(4 cases at 10% seen, 14 runs at 25/40/50%; leave-one-run-out coverage 75% / 86% / 86% / 86%).
One multiplier for all shares (0.71) covered 100% at 25% and 93% at 50%."""


def _by_share(table: dict, seen_share: float) -> dict:
    """The calibration of a per-share ``table`` at ``seen_share``: linear in log share
    between the listed shares, held beyond them."""
    shares = np.array(sorted(table))
    mult = np.array([table[s] for s in shares])
    share = min(max(float(seen_share), shares[0]), shares[-1])
    return _scaled(float(np.interp(math.log(share), np.log(shares), mult)))


def _prior_calibration(seen_share: float) -> dict:
    return _by_share(CALIBRATION_PRIOR, seen_share)


def _reference_calibration(seen_share: float) -> dict:
    return _by_share(CALIBRATION_REFERENCE, seen_share)


REFERENCE_AMP_SD = 0.15
"""Least relative sd of an amplitude lent by a reference run: across the schedules of one
multipower recipe the convex_bound amplitude differs from the cosine_24000 run's by 14-15%
rms (-3..+13%, and -31% for the 72,000-step cosine); Tissue's C by a similar amount."""

REFERENCE_ALPHA_SD = 0.03
"""Least sd of an alpha lent by a reference run."""

SCHEDULE_TOLERANCE = 1e-6
"""Largest error of the stored (piecewise-linear) schedule, as a share of the peak LR."""

SCHEDULE_LAWS = ("convex_bound", "tissue", "multipower")
"""The schedule-aware laws; the first is the default."""

_AMP_NAME = {"convex_bound": "C", "tissue": "C", "multipower": "B"}


# ----------------------------------------------------------------------------- schedules
_CACHE: "OrderedDict[tuple, Any]" = OrderedDict()
_CACHE_SIZE = {"features": 4, "compress": 8, "expand": 8}
"""Schedules kept per kind (a million-step schedule's features take ~80 MB)."""


def _cached(key: tuple, make):
    """make() cached under key (key[0]: the kind); keyed by content digests, never by id."""
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    value = make()
    _CACHE[key] = value
    kind = [k for k in _CACHE if k[0] == key[0]]
    for old in kind[: max(len(kind) - _CACHE_SIZE[key[0]], 0)]:
        del _CACHE[old]
    return value


def _digest(*arrays: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=float)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.digest()


MAX_KNOTS = 20000
"""A schedule that needs more knots than this (noise on the LR, thousands of restarts) is
stored as it is, one LR per step."""


def compress_schedule(lr, tolerance: float = SCHEDULE_TOLERANCE) -> tuple[np.ndarray, np.ndarray] | None:
    """Knots (steps, LRs) whose linear interpolation stays within ``tolerance * peak`` of
    ``lr`` at every step, or None when that needs more than ``MAX_KNOTS``: the corners of a
    piecewise-linear schedule, a few hundred for a cosine of any length. Douglas-Peucker
    splitting, every segment of a level at once: O(T) per level, ~log2(knots) levels."""
    lr = np.asarray(lr, dtype=float)
    n = lr.size
    tol = tolerance * float(np.max(np.abs(lr)) or 1.0)
    idx = np.arange(n, dtype=float)
    knots = np.array([0, n - 1], dtype=np.int64)
    while True:
        err = np.abs(lr - np.interp(idx, knots, lr[knots]))
        seg_max = np.maximum.reduceat(err, knots[:-1])
        bad = np.flatnonzero(seg_max > tol)
        if bad.size == 0:
            return knots, lr[knots]
        if knots.size + bad.size > MAX_KNOTS:
            return None
        new = [knots[i] + int(np.argmax(err[knots[i]:knots[i + 1]])) for i in bad]
        knots = np.union1d(knots, np.asarray(new, dtype=np.int64))


def expand_schedule(steps, values, horizon: int) -> np.ndarray:
    """The LR at every step 0..horizon from knots (inverse of ``compress_schedule``)."""
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    return np.interp(np.arange(int(horizon) + 1, dtype=float), steps, values)


def _schedule_context(lr_arr: np.ndarray) -> tuple[dict, np.ndarray]:
    """(context to store, the schedule the fit runs on): knots, and their expansion."""
    def make():
        knots = compress_schedule(lr_arr)
        if knots is None:
            return None, None, lr_arr
        return knots[0], knots[1], expand_schedule(knots[0], knots[1], lr_arr.size - 1)

    steps, values, used = _cached(("compress", _digest(lr_arr)), make)
    if steps is None:
        return {"horizon": int(lr_arr.size - 1), "lr": lr_arr.tolist()}, used
    context = {"horizon": int(lr_arr.size - 1), "lr_knots": {"step": steps.tolist(), "lr": values.tolist()},
               "lr_tolerance": SCHEDULE_TOLERANCE}
    # what a forecast from this context will look up: the schedule the fit ran on
    _cached(("expand", _digest(steps, values), int(lr_arr.size - 1)), lambda: (used, _digest(used)))
    return context, used


def _ctx_lr(context) -> tuple[np.ndarray, bytes]:
    """The LR at every step 0..horizon stored in a fit's context (knots or, older, a list),
    and its content digest (computed once per stored schedule, not per evaluation)."""
    if context:
        if context.get("lr") is not None:
            lr = np.asarray(context["lr"], dtype=float)
            return lr, _digest(lr)
        knots = context.get("lr_knots")
        if knots is not None:
            steps = np.asarray(knots["step"], dtype=float)
            values = np.asarray(knots["lr"], dtype=float)
            horizon = int(context.get("horizon", steps[-1]))

            def make():
                lr = expand_schedule(steps, values, horizon)
                return lr, _digest(lr)

            return _cached(("expand", _digest(steps, values), horizon), make)
    raise InvalidInputError("schedule-aware laws need the schedule in context (lr_knots or lr)")


# ----------------------------------------------------------------------------- features
def _features(lr: np.ndarray, digest: bytes | None = None) -> dict:
    """Peak-normalised schedule features of one LR array (cached: fits and forecasts reuse them)."""
    def make():
        u, peak = sch.peak_normalized(lr)
        return {"u": u, "peak": peak, "S1": sch.lr_area(u), "warmup_end": sch.warmup_end(u),
                "horizon": u.size - 1}

    return _cached(("features", digest if digest is not None else _digest(lr)), make)


def _s2(feat: dict, momentum: float) -> np.ndarray:
    key = ("S2", round(float(momentum), 12))
    if key not in feat:
        feat[key] = sch.annealing_area(feat["u"], momentum)
    return feat[key]


def _bound_sums(feat: dict, held: bool) -> sch.BoundSums:
    """Bound prefix sums of the schedule, or (held=True) of the schedule held at its peak
    after the warm-up: the reference the annealing is measured against."""
    key = "bsum_held" if held else "bsum"
    if key not in feat:
        u = feat["u"]
        if held:
            u = u.copy()
            u[feat["warmup_end"]:] = 1.0
        feat[key] = sch.bound_sums(u)
    return feat[key]


def _at_steps(feat: dict, x, values_at) -> np.ndarray:
    """A feature defined at integer steps, at (possibly fractional) steps x: linear between
    neighbours, NaN beyond the schedule; evaluated only at the steps asked for."""
    x = np.asarray(x, dtype=float)
    inside = (x >= 0) & (x <= feat["horizon"])
    xc = np.where(inside, x, 0.0)
    lo = np.floor(xc).astype(np.int64)
    hi = np.minimum(lo + 1, feat["horizon"])
    steps, inv = np.unique(np.concatenate([lo.ravel(), hi.ravel()]), return_inverse=True)
    vals = values_at(steps)[inv]
    v_lo, v_hi = vals[: lo.size].reshape(x.shape), vals[lo.size:].reshape(x.shape)
    out = v_lo + (xc - lo) * (v_hi - v_lo)
    return np.where(inside, out, np.nan)


def _dv_at(feat: dict, x) -> np.ndarray:
    """convex_bound's annealing feature: variance term held at the peak minus the schedule's
    (zero during the warm-up; never negative: just after an abrupt drop the bound spikes, an
    artefact of the proof, not a loss that rises). Values are memoised per step: a forecast
    mixture evaluates every member at the same steps."""
    def compute(steps):
        s = np.maximum(steps, 1)
        _, v = sch.convex_bound(_bound_sums(feat, False), s)
        _, v_held = sch.convex_bound(_bound_sums(feat, True), s)
        return np.maximum(v_held - v, 0.0) * (steps > feat["warmup_end"])

    def values_at(steps):
        known_s, known_v = feat.get("dv_memo", (np.zeros(0, np.int64), np.zeros(0)))
        pos = np.minimum(np.searchsorted(known_s, steps), max(known_s.size - 1, 0))
        hit = (known_s.size > 0) & (known_s[pos] == steps) if known_s.size else np.zeros(steps.size, bool)
        out = np.empty(steps.size)
        out[hit] = known_v[pos[hit]]
        if (~hit).any():
            new_s = steps[~hit]
            out[~hit] = compute(new_s)
            all_s = np.concatenate([known_s, new_s])
            order = np.argsort(all_s, kind="stable")
            feat["dv_memo"] = (all_s[order], np.concatenate([known_v, out[~hit]])[order])
        return out

    return _at_steps(feat, x, values_at)


def _ld_at(feat: dict, shape: dict, x) -> np.ndarray:
    """Unit multi-power drop at (possibly fractional) steps x; NaN beyond the schedule."""
    if "chunks" not in feat:
        feat["chunks"] = sch.drop_chunks(feat["u"])
    return _at_steps(feat, x, lambda s: sch.multipower_drop(feat["chunks"], s, shape["C"], shape["beta"],
                                                            shape["gamma"]))


def _at(arr: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Feature values at (possibly fractional) steps x; NaN beyond the schedule."""
    x = np.asarray(x, dtype=float)
    grid = np.arange(arr.size, dtype=float)
    out = np.interp(x, grid, arr)
    return np.where((x >= 0) & (x <= arr.size - 2), out, np.nan)


def convex_ratio(lr, alpha: float = 1.0) -> float:
    """Share of the excess loss at the horizon that the schedule's decay removes, by the
    convex bound: 1 - bound(schedule) / bound(peak held), with D/G set so that the peak LR is
    the schedule's optimal base LR and the bound's bias term falling as S1**-alpha (alpha = 1:
    the theorem itself). 0 for a schedule that never decays."""
    return _convex_ratio(_features(sch.as_schedule(lr)), alpha)


def _convex_ratio(feat: dict, alpha: float = 1.0) -> float:
    T = feat["horizon"]
    if "cvxT" not in feat:
        steps = np.array([T])
        _, v = sch.convex_bound(_bound_sums(feat, False), steps)
        _, v_held = sch.convex_bound(_bound_sums(feat, True), steps)
        held = _bound_sums(feat, True)
        feat["cvxT"] = (float(v[0]), float(v_held[0]), float(feat["S1"][T]), float(held.P[held.count[T]]))
    v, v_held, S1, S1_held = feat["cvxT"]
    if not (v > 0 and S1 > 0 and S1_held > 0):
        return 0.0
    bound = v / alpha + v  # at the optimal base LR the bias term is variance / alpha
    bound_held = v / alpha * (S1_held / S1) ** -alpha + v_held
    return float(min(max(1.0 - bound / bound_held, 0.0), 1.0))


# ----------------------------------------------------------------------------- the laws
def _powerlaw(S1x: np.ndarray, alpha) -> np.ndarray:
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return np.where(S1x > 0, np.exp(-alpha * np.log(np.maximum(S1x, 1e-300))), np.nan)


def _anneal_at(law: str, feat: dict, params: dict, x) -> np.ndarray:
    if law == "convex_bound":
        return _dv_at(feat, x)
    if law == "tissue":
        return _at(_s2(feat, params.get("momentum", sch.DEFAULT_ANNEAL_MOMENTUM)), x)
    return _ld_at(feat, params, x)


def _make_eval(law: str):
    amp = _AMP_NAME[law]

    def evaluate(x, p, context=None):
        feat = _features(*_ctx_lr(context))
        S1x = _at(feat["S1"], x)
        return p["L0"] + p["A"] * _powerlaw(S1x, p["alpha"]) - p[amp] * _anneal_at(law, feat, p, x)

    return evaluate


def _make_basis(law: str):
    def basis(xn, theta, context=None):
        (alpha,) = theta
        feat = _features(*_ctx_lr(context))
        shape = {"momentum": sch.DEFAULT_ANNEAL_MOMENTUM, **MULTIPOWER_SHAPE}
        return [1.0, _powerlaw(_at(feat["S1"], xn), alpha), -_anneal_at(law, feat, shape, xn)]

    return basis


def _make_params(law: str):
    def to_params(coef, theta, x_scale):
        L0, A, amp = (float(c) for c in coef)
        p = {"L0": L0, "A": A, "alpha": float(theta[0]), _AMP_NAME[law]: amp}
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
    for name in SCHEDULE_LAWS:
        if name in LAWS:
            continue
        formula, param_names = _FORMULAS[name]
        register_law(Law(
            name=name, formula=formula, param_names=param_names, evaluate=_make_eval(name),
            linear=("L0", "A", _AMP_NAME[name]), basis=_make_basis(name), to_params=_make_params(name),
            linear_lower=(0.0, 0.0, 0.0), nonlinear=("alpha",), bounds=((0.05, 1.5),), starts=((0.5,),),
            asymptote=None, decreasing=False, uses_context=True, default_prior={"alpha": ALPHA_PRIOR}))


_register()


# ----------------------------------------------------------------------------- priors
@dataclass
class _Priors:
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


def _resolve_priors(prior, law_name: str, momentum: float | None) -> tuple[_Priors, str]:
    """Priors for this fit, and the law to use (a reference fit decides the law)."""
    refs = _as_fit_dicts(prior)
    mom = sch.DEFAULT_ANNEAL_MOMENTUM if momentum is None else float(momentum)
    pri = _Priors(ALPHA_PRIOR, None, ANNEAL_RATIO_PRIOR, mom, dict(MULTIPOWER_SHAPE), "default")
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
                elif name == _AMP_NAME[law_name]:
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
        amp_name = _AMP_NAME[law]
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


# ----------------------------------------------------------------------------- the fitter
ALPHA_GRID = np.linspace(0.05, 1.5, 146)


@dataclass
class _Problem:
    """The fitted points of one law, and what the solver needs at the horizon.

    S1, F: LR area and annealing feature at the points; FT: feature at the horizon; S1T: LR
    area at the horizon; cap_S1, cap_F: steps (LR area, feature) where the annealing cap is
    checked (the worst of them binds).
    """

    S1: np.ndarray
    F: np.ndarray
    y: np.ndarray
    w: np.ndarray
    S1T: float
    FT: float
    cap_S1: np.ndarray
    cap_F: np.ndarray
    has_anneal: bool

    def subset(self, mask: np.ndarray) -> "_Problem":
        return _Problem(self.S1[mask], self.F[mask], self.y[mask], self.w[mask], self.S1T, self.FT,
                        self.cap_S1, self.cap_F, self.has_anneal)


@dataclass
class _Profile:
    """MAP of (L0, A, amp) for each alpha of a grid (arrays over the grid)."""

    alpha: np.ndarray
    coef: np.ndarray  # (K, 3)
    cov: np.ndarray  # (K, 3, 3) posterior covariance given alpha (k-scaled data term)
    objective: np.ndarray  # -2 log posterior up to a constant; inf where infeasible
    log_evidence: np.ndarray  # Laplace weight of each alpha
    XT: np.ndarray  # S1(T)**-alpha
    cap: np.ndarray  # worst F / S1**-alpha over the cap steps


def _robust_sigma(S1pts, y, w) -> float:
    """Noise sd per unit weight from the best plain power-law fit (MAD of weighted residuals)."""
    P = _powerlaw(S1pts[None, :], ALPHA_GRID[::5, None])
    Sw, Sp, Spp = w.sum(), P @ w, (P * P) @ w
    Sy, Spy = w @ y, P @ (w * y)
    det = Sw * Spp - Sp * Sp
    with np.errstate(divide="ignore", invalid="ignore"):
        A = np.where(det > 0, (Sw * Spy - Sp * Sy) / det, 0.0)
        L0 = (Sy - A * Sp) / Sw
    R = (y[None, :] - L0[:, None] - A[:, None] * P) * np.sqrt(w)[None, :]
    sse = np.where(np.isfinite(R).all(axis=1), np.sum(R * R, axis=1), np.inf)
    r = R[int(np.argmin(sse))]
    s = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    return max(s, 1e-4 * float(np.median(y)))


def _faces(K: int, cap: np.ndarray, has_anneal: bool) -> list[np.ndarray]:
    """Bases (K, 3, k) of the faces of the feasible cone {L0, A, amp >= 0, amp * cap <=
    ANNEAL_MAX_SHARE * A} where a constrained minimum can sit (its interior first)."""
    e = np.eye(3)

    def const(*cols):
        return np.broadcast_to(np.stack(cols, axis=1), (K, 3, len(cols)))

    capdir = np.stack([np.zeros(K), cap, np.full(K, ANNEAL_MAX_SHARE)], axis=1)  # A * cap = amp / share
    capdir = capdir / np.linalg.norm(capdir, axis=1, keepdims=True)
    faces = [const(e[0], e[1]), const(e[1]), const(e[0])]  # amplitude 0
    if has_anneal:
        faces = [const(e[0], e[1], e[2]), np.stack([np.broadcast_to(e[0], (K, 3)), capdir], axis=2),
                 capdir[:, :, None], const(e[1], e[2])] + faces
    return faces


def _tilt_offset(alphas: np.ndarray) -> np.ndarray:
    """alpha - ALPHA_PRIOR[0], held within 2 prior sds (the measured range of
    ``ANNEAL_RATIO_ALPHA_SLOPE``; far beyond it the data, not this prior, decide alpha)."""
    mu, sd = ALPHA_PRIOR
    return np.clip(np.asarray(alphas, dtype=float) - mu, -2.0 * sd, 2.0 * sd)


def _profile(prob: _Problem, alphas: np.ndarray, sig2: float, k: float, pri: _Priors) -> _Profile:
    """MAP (L0, A, amp) for every alpha at once, under the bounds and the annealing cap."""
    alphas = np.asarray(alphas, dtype=float)
    K = alphas.size
    y, w, F = prob.y, prob.w, prob.F
    P = _powerlaw(prob.S1[None, :], alphas[:, None])  # (K, n)
    XT = _powerlaw(np.array([prob.S1T]), alphas)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        cap = np.max(prob.cap_F[None, :] / _powerlaw(prob.cap_S1[None, :], alphas[:, None]), axis=1)
    cap = np.where(np.isfinite(cap), np.maximum(cap, 0.0), 0.0)
    W = w * (k / sig2)
    Sw, Sf, Sff = W.sum(), W @ F, W @ (F * F)
    Sp, Spp, Spf = P @ W, (P * P) @ W, P @ (W * F)
    Sy, Spy, Sfy, Syy = W @ y, P @ (W * y), W @ (F * y), W @ (y * y)
    G = np.empty((K, 3, 3))
    G[:, 0, 0], G[:, 0, 1], G[:, 0, 2] = Sw, Sp, -Sf
    G[:, 1, 1], G[:, 1, 2], G[:, 2, 2] = Spp, -Spf, Sff
    G[:, 1, 0], G[:, 2, 0], G[:, 2, 1] = G[:, 0, 1], G[:, 0, 2], G[:, 1, 2]
    b = np.stack([np.full(K, Sy), Spy, np.full(K, -Sfy)], axis=1)
    const = np.full(K, Syy)
    if prob.has_anneal and pri.amp is not None:
        G[:, 2, 2] += 1.0 / pri.amp[1] ** 2
        b[:, 2] += pri.amp[0] / pri.amp[1] ** 2
        const += (pri.amp[0] / pri.amp[1]) ** 2
    elif prob.has_anneal and pri.kappa is not None:
        # amp * F(T) ~ ratio * A * S1(T)**-alpha; sd: kappa's own spread, widened until the
        # convex bound's reading of the ratio lies at the 90% edge. The scale is the power-law
        # part left at T by a fit without annealing (A_guess).
        det = Sw * Spp - Sp * Sp
        with np.errstate(divide="ignore", invalid="ignore"):
            A_guess = np.where(det > 0, (Sw * Spy - Sp * Sy) / det, 0.0)
        A_guess = np.where(np.isfinite(A_guess), np.maximum(A_guess, 0.0), 0.0)
        rel_sd = math.hypot(pri.kappa[1] * pri.ratio, (pri.ratio_alt - pri.ratio) / 1.645)
        tilt = np.exp(ANNEAL_RATIO_ALPHA_SLOPE * _tilt_offset(alphas))
        sd = np.maximum(rel_sd * tilt * A_guess * XT, 1e-6)
        row = np.stack([np.zeros(K), -pri.ratio * tilt * XT, np.full(K, prob.FT)], axis=1) / sd[:, None]
        G += row[:, :, None] * row[:, None, :]
    best_obj = np.full(K, np.inf)
    coef = np.zeros((K, 3))
    cov = np.zeros((K, 3, 3))
    logdet = np.zeros(K)
    scale = np.abs(b).max(axis=1) + 1e-300
    for N in _faces(K, cap, prob.has_anneal):
        H = np.einsum("kia,kij,kjb->kab", N, G, N)
        g = np.einsum("kia,ki->ka", N, b)
        kk = H.shape[1]
        ridge = 1e-12 * np.trace(H, axis1=1, axis2=2)[:, None, None] * np.eye(kk)
        with np.errstate(all="ignore"):
            try:
                z = np.linalg.solve(H + ridge, g[:, :, None])[:, :, 0]
                Hi = np.linalg.inv(H + ridge)
                sign, ld = np.linalg.slogdet(H + ridge)
            except np.linalg.LinAlgError:
                continue
            c = np.einsum("kia,ka->ki", N, z)
            obj = np.einsum("ki,kij,kj->k", c, G, c) - 2.0 * np.einsum("ki,ki->k", b, c) + const
            tol = 1e-9 * np.maximum(np.abs(c).max(axis=1), 1e-12)
            forecast = c[:, 0] + c[:, 1] * XT - c[:, 2] * prob.FT
            ok = ((c >= -tol[:, None]).all(axis=1) & (ANNEAL_MAX_SHARE * c[:, 1] - c[:, 2] * cap >= -tol)
                  & (forecast > 0) & np.isfinite(obj) & (sign > 0) & np.isfinite(XT))
        margin = np.where(np.isfinite(best_obj), 1e-12 * np.abs(best_obj).clip(1.0), 0.0)
        better = ok & (obj < best_obj - margin)
        if better.any():
            c = np.maximum(c, 0.0)
            best_obj[better] = obj[better]
            coef[better] = c[better]
            cov[better] = np.einsum("kia,kab,kjb->kij", N, Hi, N)[better]
            logdet[better] = ld[better]
    objective = best_obj + ((alphas - pri.alpha[0]) / pri.alpha[1]) ** 2
    log_ev = np.where(np.isfinite(objective), -0.5 * objective - 0.5 * logdet, -np.inf)
    return _Profile(alphas, coef, cov, objective, log_ev, XT, cap)


def _effective_n(r: np.ndarray, total_weight: float) -> float:
    """Independent points the data term counts (``N_EFF_CAP``..``N_EFF_MAX``, at most the
    points' total weight), from the weighted residuals r in step order: the total weight over
    the variance inflation of ``N_EFF_BLOCKS`` block means (1 when neighbouring points are
    independent; slow wiggles and a misfit of the law's shape raise it)."""
    m = r.size // N_EFF_BLOCKS
    floor = min(total_weight, N_EFF_CAP)
    if m < 2:
        return floor
    rr = r[r.size - m * N_EFF_BLOCKS:]  # the newest points
    var = float(np.var(rr, ddof=1))
    if not var > 0:
        return floor
    inflation = max(1.0, m * float(np.var(rr.reshape(N_EFF_BLOCKS, m).mean(axis=1), ddof=1)) / var)
    return float(min(total_weight, max(floor, min(N_EFF_MAX, total_weight / inflation))))


def _model_sigma(prob: _Problem, sig0: float, k: float, pri: _Priors) -> tuple[float, float]:
    """Noise sd per unit weight from the law's own residuals (MAD) at a fit without the
    annealing prior, and the effective number of independent points (``_effective_n``). The
    plain power law behind ``sig0`` cannot follow an anneal in the data, and its misfit there
    would pass for noise and let the prior outweigh the data."""
    total = float(prob.w.sum())
    free = _Priors(pri.alpha, None, None, pri.momentum, pri.shape, pri.source)
    first = _profile(prob, ALPHA_GRID[::5], sig0 * sig0, k, free)
    i = _map(first)
    if i is None:
        return sig0, min(total, N_EFF_CAP)
    c = first.coef[i]
    r = (prob.y - c[0] - c[1] * _powerlaw(prob.S1, first.alpha[i]) + c[2] * prob.F) * np.sqrt(prob.w)
    s = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    return max(min(s, sig0), 1e-4 * float(np.median(prob.y))), _effective_n(r, total)


def _window_noise(prob: _Problem, x: np.ndarray, sig: float, horizon: int) -> float:
    """Relative sd of the mean measured loss over ``WINDOW_SHARE`` of the horizon: the noise
    sd per measured point (``sig``) over the square root of the points such a window holds
    at the density of the fitted points."""
    span = float(x[-1] - x[0])
    if not span > 0:
        return 0.0
    points = max(1.0, WINDOW_SHARE * float(horizon) * float(prob.w.sum()) / span)
    return float(sig / float(np.median(prob.y)) / math.sqrt(points))


def _map(prof: _Profile) -> int | None:
    if not np.isfinite(prof.objective).any():
        return None
    return int(np.argmin(prof.objective))


def _anneal_feature(feat, law, pri: _Priors, x, horizon: int):
    """The annealing feature at the fitted steps x and at the horizon, and the steps (with
    their LR area and feature values) where the annealing cap is checked."""
    cap_steps = np.unique(np.r_[np.linspace(0, horizon, 257).round(), horizon]).astype(np.int64)
    cap_steps = cap_steps[cap_steps > 0]
    params = {"momentum": pri.momentum, **pri.shape}
    vals = _anneal_at(law, feat, params, np.concatenate([x, [float(horizon)], cap_steps.astype(float)]))
    vals = np.nan_to_num(vals)
    return vals[: x.size], float(vals[x.size]), feat["S1"][cap_steps], vals[x.size + 1:]


def _search_shape(feat, prob: _Problem, x, pri: _Priors, horizon: int):
    """Multi-power shape (C, beta, gamma): fitted on a small grid around the published shape
    when the fitted steps hold enough of the annealing to tell shapes apart, else kept."""
    base = dict(pri.shape)
    if "chunks" not in feat:
        feat["chunks"] = sch.drop_chunks(feat["u"])
    t_pts = np.append(np.round(x).astype(np.int64), horizon)
    ld0 = sch.multipower_drop(feat["chunks"], t_pts, base["C"], base["beta"], base["gamma"])
    if ld0[-1] <= 0 or ld0[-2] / ld0[-1] < 0.3:
        return base, "published shape (the annealing seen so far cannot tell shapes apart)"
    sig = _robust_sigma(prob.S1, prob.y, prob.w)
    k = min(1.0, N_EFF_CAP / float(prob.w.sum()))
    best = None
    for cm in (0.3, 1.0, 3.0):
        for bm in (0.6, 1.0, 1.6):
            for dg in (-0.2, 0.0, 0.2):
                shape = {"C": base["C"] * cm, "beta": base["beta"] * bm, "gamma": base["gamma"] + dg}
                ld = sch.multipower_drop(feat["chunks"], t_pts, shape["C"], shape["beta"], shape["gamma"])
                trial = _Problem(prob.S1, ld[:-1], prob.y, prob.w, prob.S1T, float(ld[-1]),
                                 prob.cap_S1[-1:], np.array([float(ld[-1])]), True)
                obj = np.min(_profile(trial, ALPHA_GRID[::5], sig * sig, k, pri).objective)
                if np.isfinite(obj) and (best is None or obj < best[0]):
                    best = (obj, shape)
    if best is None:
        return base, "published shape"
    return best[1], "fitted on a grid around the published shape"


def _params(law: str, coef, alpha, pri: _Priors) -> dict[str, float]:
    L0, A, amp = (float(c) for c in coef)
    p = {"L0": L0, "A": A, "alpha": float(alpha), _AMP_NAME[law]: amp}
    if law == "tissue":
        p["momentum"] = float(pri.momentum)
    elif law == "multipower":
        p.update({k: float(v) for k, v in pri.shape.items()})
    return p


def _admissible(center: np.ndarray, step: np.ndarray, XT: float, FT: float, cap: float) -> np.ndarray:
    """center + step, the step halved (up to 6 times) until the point is admissible (L0, A,
    amp >= 0, annealing within its cap, a positive forecast at the horizon): sigma points."""
    for _ in range(6):
        c = center + step
        if (c.min() >= 0 and ANNEAL_MAX_SHARE * c[1] - c[2] * cap >= 0
                and c[0] + c[1] * XT - c[2] * FT > 0):
            return c
        step = 0.5 * step
    return center.copy()


ALPHA_CONFLICT_Z = 3.0
"""Prior-data conflict on alpha: when the data's own estimate of alpha (flat prior on the
grid) lies more than this many combined sds (prior sd and the estimate's own, in quadrature)
from the prior mean, the prior yields (``fit_scheduled``)."""


CONFLICT_EDGE_Z = 1.6448536269514722
"""Normal quantile of a 90% interval: where the widened reading sits at multiplier 1."""


def _posterior(prob: _Problem, sig: float, k: float, pri: _Priors, law: str, FT: float) -> dict | None:
    """Posterior of one fit under the priors ``pri``: the alpha profile on the grid (coarse),
    the MAP (profile, index), the posterior sd of alpha, and the mixture members (3
    Gauss-Hermite nodes in alpha x sigma points of the linear coefficients); None when no
    alpha is admissible."""
    coarse = _profile(prob, ALPHA_GRID, sig * sig, k, pri)
    i0 = _map(coarse)
    if i0 is None:
        return None
    fine = _profile(prob, np.clip(coarse.alpha[i0] + np.linspace(-0.01, 0.01, 11), ALPHA_GRID[0], ALPHA_GRID[-1]),
                    sig * sig, k, pri)
    i1 = _map(fine)
    best = (fine, i1) if i1 is not None and fine.objective[i1] < coarse.objective[i0] else (coarse, i0)

    # posterior over alpha (Laplace weights on the grid) -> 3 Gauss-Hermite nodes
    a_mean, a_sd = _grid_moments(coarse.alpha, coarse.log_evidence)
    prof_b, ib = best
    a_best = float(prof_b.alpha[ib])
    nodes = [(prof_b, ib, 2.0 / 3.0)]
    if a_sd > 1e-4:
        side = np.clip(a_best + np.array([-1.0, 1.0]) * math.sqrt(3.0) * a_sd, ALPHA_GRID[0], ALPHA_GRID[-1])
        prof_s = _profile(prob, side, sig * sig, k, pri)
        for i in range(2):
            if np.isfinite(prof_s.objective[i]):
                nodes.append((prof_s, i, 1.0 / 6.0))
    total = sum(wt for *_, wt in nodes)

    components = []
    for prof, i, wt in nodes:
        # sigma points of the linear coefficients' Gaussian posterior at this alpha
        cov = 0.5 * (prof.cov[i] + prof.cov[i].T)
        vals, vecs = np.linalg.eigh(cov)
        dirs = [vecs[:, j] * math.sqrt(max(vals[j], 0.0) * 3.0) for j in range(3) if vals[j] > 0]
        XT_i, cap_i = float(prof.XT[i]), float(prof.cap[i])
        pts = [_admissible(prof.coef[i], s * d, XT_i, FT, cap_i) for d in dirs for s in (1.0, -1.0)]
        if not pts:
            pts = [prof.coef[i]]
        for c in pts:
            components.append({"law": law, "params": _params(law, c, prof.alpha[i], pri),
                               "weight": wt / total / len(pts)})
    return {"coarse": coarse, "best": best, "alpha_sd": a_sd, "components": components}


def _grid_moments(alphas: np.ndarray, log_weight: np.ndarray) -> tuple[float, float]:
    """Mean and sd of alpha under unnormalised log weights on a grid (-inf: excluded)."""
    if not np.isfinite(log_weight).any():
        return math.nan, math.nan
    pw = np.exp(log_weight - np.max(log_weight))
    pw /= pw.sum()
    mean = float(np.sum(pw * alphas))
    return mean, float(np.sqrt(np.sum(pw * (alphas - mean) ** 2)))


def _alpha_conflict(coarse: _Profile, pri: _Priors) -> dict | None:
    """The data's own alpha (Laplace weights of the profile with the alpha prior taken out,
    flat on the grid) when it conflicts with the prior (see ``ALPHA_CONFLICT_Z``), with the
    prior sd widened to the distance: sqrt((alpha_data - mean)**2 - sd_data**2), the prior
    scale that maximises the marginal likelihood of the data's estimate; None otherwise."""
    mu, sd = pri.alpha
    data_le = coarse.log_evidence + 0.5 * ((coarse.alpha - mu) / sd) ** 2
    a_data, s_data = _grid_moments(coarse.alpha, data_le)
    if not math.isfinite(a_data):
        return None
    z = abs(a_data - mu) / math.hypot(sd, s_data)
    if z <= ALPHA_CONFLICT_Z:
        return None
    widened = math.sqrt(max((a_data - mu) ** 2 - s_data ** 2, sd * sd))
    return {"alpha_data": a_data, "alpha_data_sd": s_data, "z": z, "widened_sd": widened}


def _mixture_at(components: list[dict], context: dict, step: float) -> float:
    """The mean forecast (nats) of a list of mixture members at one step."""
    total = sum(c["weight"] * float(LAWS[c["law"]].evaluate(np.array(float(step)), c["params"], context))
                for c in components)
    return total / max(sum(c["weight"] for c in components), 1e-300)


def fit_scheduled(steps, loss, lr, prior=None, *, law: str | None = None, laws: Sequence[str] | None = None,
                  anneal_momentum: float | None = None, skip_fraction: float = SKIP_FRACTION,
                  **_ignored) -> CurveFit:
    """Schedule-aware fit of one loss curve (what ``fit_curve(steps, loss, lr=lr)`` calls).

    Args:
        steps: optimizer step of each loss point (the loss logged at step t was computed
            after t updates, i.e. with ``lr[0..t-1]`` applied).
        loss: loss at each step (nats); NaN / inf / step <= 0 points are dropped and counted.
        lr: learning rate at every optimizer step 0..horizon, future steps included (any
            units: the schedule is divided by its peak). The forecast horizon is
            ``len(lr) - 1``.
        prior: None (defaults of this module), an earlier schedule-aware CurveFit of the same
            recipe (or its ``to_dict()``, or a list of them) to lend alpha and the annealing
            parameters, or ``{name: (mean, sd)}`` for alpha, the amplitude (C for
            convex_bound and tissue, B for multipower) or kappa (annealing ratio; sd relative).
        law: "convex_bound" (default), "tissue" or "multipower".
        anneal_momentum: momentum of the tissue law's annealing area (default 0.999).
        skip_fraction: share of the seen steps, from the start, left out of the fit as early
            transient.

    Returns:
        CurveFit whose ``predict(step)`` forecasts any step up to the horizon (NaN beyond);
        ``diagnostics["anneal"]`` says whether the annealing term was identified, and
        ``diagnostics["flags"]`` carries "annealing term not identifiable yet: ..." when it
        came from the prior. InvalidInputError only for invalid arguments.
    """
    t0 = time.perf_counter()
    if law is None and laws:
        named = [n for n in laws if n in SCHEDULE_LAWS]
        law = named[0] if named else None
    law = law or SCHEDULE_LAWS[0]
    if law not in SCHEDULE_LAWS:
        raise InvalidInputError(f"law must be one of {SCHEDULE_LAWS} when lr is given, got {law!r}")
    try:
        skip_ok = 0.0 <= float(skip_fraction) < 1.0
    except (TypeError, ValueError):
        skip_ok = False
    if not skip_ok:
        raise InvalidInputError(f"skip_fraction must be in [0, 1), got {skip_fraction!r}")
    lr_in = sch.as_schedule(lr)
    x_arr, y_arr = validate_inputs(steps, loss)
    horizon = lr_in.size - 1
    finite_x = x_arr[np.isfinite(x_arr)]
    if finite_x.size and finite_x.max() > horizon:
        raise InvalidInputError(
            f"lr must give the LR at every step up to the last loss point: lr has {lr_in.size} "
            f"entries (steps 0..{horizon}) but a loss is given at step {finite_x.max():g}")
    pri, law = _resolve_priors(prior, law, anneal_momentum)
    if np.all(lr_in == lr_in[0]) and (prior is None or set(prior) <= {"alpha"}):
        # one LR throughout: the LR area is the step count times a constant, so the
        # schedule adds nothing the LR-agnostic fit (more laws, held-out weighting) lacks
        from .curve import fit_curve

        fit = fit_curve(x_arr, y_arr, prior=prior)
        fit.diagnostics.setdefault("flags", []).append(
            "constant LR over the whole schedule: LR-agnostic fit (the schedule adds nothing)")
        fit.diagnostics["anneal"] = {"in_schedule": False, "identifiable": False, "seen_fraction": 0.0,
                                     "source": "none: the LR never changes"}
        return fit
    context, lr_arr = _schedule_context(lr_in)
    feat = _features(lr_arr)

    prep = prepare_points(x_arr, y_arr)
    diag = dict(prep.diagnostics)
    diag["schedule"] = {"horizon": int(horizon), "peak_lr": feat["peak"],
                        "warmup_steps": int(feat["warmup_end"]),
                        "final_lr_over_peak": float(feat["u"][-1]),
                        "stored_knots": len(context["lr_knots"]["step"]) if "lr_knots" in context
                        else None}
    if prep.reason:
        return failed_fit(prep.reason, diag, prep.detail, context=context)
    x, y, w = prep.x, prep.y, prep.w
    after_warmup = x > feat["warmup_end"]
    if (~after_warmup).any():
        diag["lr_warmup_cut"] = {"n_points": int(w[~after_warmup].sum()),
                                 "before_step": int(feat["warmup_end"] + 1)}
    x, y, w = x[after_warmup], y[after_warmup], w[after_warmup]
    if x.size < MIN_POINTS:
        diag["n_used"] = int(w.sum())
        return failed_fit("too few points", diag,
                          f"{x.size} points after the LR warm-up, need {MIN_POINTS}", context=context)

    S1T = float(feat["S1"][horizon])
    F, FT, cap_S1, cap_F = _anneal_feature(feat, law, pri, x, horizon)
    has_anneal = FT > 1e-12 * max(S1T, 1.0)
    prob = _Problem(_at(feat["S1"], x), F, y, w, S1T, FT, cap_S1, cap_F, has_anneal)
    pri.ratio = pri.kappa[0] * float(max(0.0, 1.0 - feat["u"][horizon])) if pri.kappa else 0.0
    pri.ratio_alt = _convex_ratio(feat) if has_anneal else 0.0

    keep = x >= float(skip_fraction) * x[-1]
    if (~keep).any():
        diag["transient_cut"] = {"n_points": int(w[~keep].sum()), "before_step": float(skip_fraction * x[-1])}
    prob = prob.subset(keep)
    x = x[keep]
    diag["n_used"] = int(prob.w.sum())
    if x.size < MIN_POINTS:
        return failed_fit("too few points", diag,
                          f"{x.size} points after the LR warm-up and the early transient, need {MIN_POINTS}",
                          context=context)

    shape_note = None
    if law == "multipower" and pri.source == "default" and has_anneal:
        pri.shape, shape_note = _search_shape(feat, prob, x, pri, horizon)
        F, FT, cap_S1, cap_F = _anneal_feature(feat, law, pri, x, horizon)
        prob = _Problem(prob.S1, F, prob.y, prob.w, S1T, FT, cap_S1, cap_F, has_anneal)
    seen = float(prob.F[-1] / FT) if has_anneal else 0.0
    identifiable = has_anneal and seen >= ANNEAL_SEEN_MIN

    sig = _robust_sigma(prob.S1, prob.y, prob.w)
    sig, n_eff = _model_sigma(prob, sig, min(1.0, N_EFF_CAP / float(prob.w.sum())), pri)
    k = min(1.0, n_eff / float(prob.w.sum()))
    post = _posterior(prob, sig, k, pri, law, FT)
    if post is None:
        return failed_fit("no law could be fitted", diag, "no admissible alpha (A >= 0, amplitude >= 0)",
                          context=context)
    conflict = _alpha_conflict(post["coarse"], pri)
    if conflict is not None:
        # the data's own alpha lies beyond what the prior and its spread allow. Early curves
        # often look flatter than their asymptotic law (development curves at 10%, the GPT
        # example at 25%), so the forecast keeps the prior's reading; the interval widens
        # until the reading under the prior widened to the distance (type-II maximum
        # likelihood of its scale) sits at the 90% edge.
        wide = _Priors(**{**pri.__dict__, "alpha": (pri.alpha[0], conflict["widened_sd"])})
        post_w = _posterior(prob, sig, k, wide, law, FT)
        if post_w is None:
            conflict = None
        else:
            f_prior = _mixture_at(post["components"], context, horizon)
            f_wide = _mixture_at(post_w["components"], context, horizon)
            conflict.update({"forecast_prior": f_prior, "forecast_widened": f_wide,
                             "sd": abs(math.log(f_wide / f_prior)) / CONFLICT_EDGE_Z
                             if f_wide > 0 and f_prior > 0 else 0.0})
    components = post["components"]
    prof_b, ib = post["best"]
    a_best, a_sd = float(prof_b.alpha[ib]), post["alpha_sd"]

    coef = prof_b.coef[ib]
    cov = prof_b.cov[ib]
    params = _params(law, coef, a_best, pri)
    amp_name = _AMP_NAME[law]
    diag["law"] = law
    diag["posterior_sd"] = {"alpha": a_sd, amp_name: float(math.sqrt(max(cov[2, 2], 0.0))),
                            "L0": float(math.sqrt(max(cov[0, 0], 0.0)))}
    diag["residual_scale"] = float(sig)
    diag["n_eff"] = float(n_eff)
    flags = list(diag.get("flags", []))
    XT_b = float(prof_b.XT[ib])
    anneal = {"in_schedule": bool(has_anneal), "seen_fraction": seen, "identifiable": bool(identifiable),
              "prior": pri.source, "drop_at_horizon": float(coef[2] * FT),
              "share_of_power_law_part": float(coef[2] * FT / (coef[1] * XT_b)) if coef[1] * XT_b > 0 else 0.0}
    if ANNEAL_MAX_SHARE * coef[1] - coef[2] * float(prof_b.cap[ib]) <= 1e-9 * max(coef[1], 1e-12) and coef[2] > 0:
        flags.append(f"annealing term at its cap ({ANNEAL_MAX_SHARE:.0%} of the power-law part): the "
                     "curve falls faster than this law explains")
    if pri.amp is not None:
        anneal["prior_amplitude"] = list(pri.amp)
    elif pri.kappa is not None and has_anneal:
        anneal["prior_ratio"] = [pri.ratio, pri.kappa[1]]
        anneal["convex_bound_ratio"] = pri.ratio_alt
    if not has_anneal:
        anneal["source"] = "none: the LR never falls after its peak within the horizon"
    elif identifiable:
        anneal["source"] = "data" if pri.source == "default" else "data and prior"
    else:
        anneal["source"] = "prior"
        flags.append(
            "annealing term not identifiable yet: the LR has not fallen within the fitted steps "
            f"({seen:.1%} of the annealing at the horizon seen); the forecast takes it from the "
            f"{'reference run' if pri.source.startswith('reference') else 'prior'} and the interval "
            "carries that prior's spread")
    if conflict is not None:
        diag["alpha_conflict"] = conflict
        flags.append(
            f"the data's own alpha {conflict['alpha_data']:.2f} (sd {conflict['alpha_data_sd']:.2f}) conflicts "
            f"with the prior N({pri.alpha[0]:.2f}, {pri.alpha[1]:.2f}) ({conflict['z']:.1f} sd): the interval widens "
            f"to reach the forecast {conflict['forecast_widened']:.4g} under the prior widened to sd "
            f"{conflict['widened_sd']:.2f}")
    if pri.source != "default":
        flags.append(f"prior: {pri.source}")
    if shape_note:
        anneal["shape"] = shape_note
    diag["anneal"] = anneal
    diag["flags"] = flags
    diag["fit_seconds"] = float(time.perf_counter() - t0)
    if pri.amp is not None and pri.source == "reference":
        calibration = _reference_calibration(float(x[-1]) / horizon)
    elif has_anneal and not identifiable:
        calibration = _prior_calibration(float(x[-1]) / horizon)
    else:
        calibration = CALIBRATION
    calibration = dict(calibration)
    ext_T = calibration["k_fallback"] * math.log(horizon / float(x[-1])) if horizon > x[-1] else 0.0
    if conflict is not None and ext_T > 0:
        # one-sided: toward the widened reading, growing with the extrapolation distance
        # like the extrapolation term it scales (curve.interval_terms)
        side = "k_below" if conflict["forecast_widened"] < conflict["forecast_prior"] else "k_above"
        calibration[side] = math.hypot(calibration["k"], calibration["k_spread"] * conflict["sd"] / ext_T)
    uncertainty = {"method": "schedule-posterior-v2", "noise_sd": _window_noise(prob, x, sig, horizon),
                   "holdout_err": math.nan,
                   "holdout_dist": math.nan, "calibration": dict(calibration)}
    fit = CurveFit(law, params, diag, components, uncertainty, context, float(x[0]), float(x[-1]))
    fit.diagnostics = plain(diag, strict=True)  # JSON-safe, like every CurveFit
    return fit
