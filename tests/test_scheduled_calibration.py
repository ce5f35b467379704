"""Schedule-aware intervals when the data disagree with the alpha prior, and the interval
multiplier of each regime (annealing identified, or taken from the prior)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_scheduled import bound_curve, cosine, wsd

import lightning_scaling as ls
from lightning_scaling.core import calibration
from lightning_scaling.core.intervals import interval_terms
from lightning_scaling.core.laws import LAWS
from lightning_scaling.core.scheduled import solver as sched_solver


def _fit_at_quarter(lr, alpha, A):
    t, y, truth = bound_curve(lr, A=A, alpha=alpha, noise=0.01, every=10, seed=0)
    T = lr.size - 1
    seen = t <= 0.25 * T
    return ls.fit_curve(t[seen], y[seen], lr=lr), truth, T


def test_an_exponent_far_from_the_prior_widens_the_interval_to_hold_the_truth():
    # alpha 0.25 against the prior N(0.5, 0.05), the LR falls only in the last 20%: with the
    # prior alone the 25% forecast is ~2% high and its interval misses the truth
    lr = wsd(T=4000, warmup=100, decay_from=3200)
    fit, truth, T = _fit_at_quarter(lr, alpha=0.25, A=3.0)
    conflict = fit.diagnostics["alpha_conflict"]
    assert conflict["z"] > calibration.ALPHA_CONFLICT_Z
    assert conflict["alpha_data"] < 0.4
    assert any("conflicts with the prior" in f for f in fit.diagnostics["flags"])
    lo, hi = fit.interval(T)
    assert lo < truth < hi
    # one-sided: toward the reading the data ask for (lower here); the upper end stays put
    assert fit.predict(T) - lo > 2 * (hi - fit.predict(T))
    round_trip = ls.CurveFit.from_dict(fit.to_dict())
    assert np.allclose(round_trip.interval(T), (lo, hi))


def test_a_steep_exponent_that_the_data_show_is_followed():
    lr = cosine(T=4000, warmup=100)
    fit, truth, T = _fit_at_quarter(lr, alpha=1.0, A=400.0)
    assert fit.params["alpha"] > 0.8
    lo, hi = fit.interval(T)
    assert lo < truth < hi
    assert abs(fit.predict(T) / truth - 1) < 0.01


def test_an_exponent_at_the_prior_keeps_a_tight_interval():
    lr = wsd(T=4000, warmup=100, decay_from=3200)
    fit, truth, T = _fit_at_quarter(lr, alpha=0.5, A=25.0)
    far, _, _ = _fit_at_quarter(lr, alpha=0.25, A=3.0)
    assert "alpha_conflict" not in fit.diagnostics
    lo, hi = fit.interval(T)
    lo_far, hi_far = far.interval(T)
    assert (hi - lo) / truth < 0.08
    assert (hi - lo) < 0.6 * (hi_far - lo_far)


def test_each_regime_gets_its_own_calibrated_multiplier():
    lr = wsd(T=4000, warmup=100, decay_from=3200)
    t, y, _ = bound_curve(lr, alpha=0.5, noise=0.002, every=10)
    before = ls.fit_curve(t[t <= 1000], y[t <= 1000], lr=lr)  # 25% seen, LR still at its peak
    after = ls.fit_curve(t[t <= 3800], y[t <= 3800], lr=lr)  # most of the decay seen
    assert before.diagnostics["anneal"]["identifiable"] is False
    assert after.diagnostics["anneal"]["identifiable"] is True
    assert before.uncertainty["calibration"]["k_spread"] == calibration.prior_calibration(1000 / 4000)["k_spread"]
    assert after.uncertainty["calibration"]["k_spread"] == calibration.CALIBRATION["k_spread"]
    # the prior regime's multiplier: the measured one at each listed seen share, linear in
    # log share between them, held beyond them
    shares = sorted(calibration.CALIBRATION_PRIOR)
    for s in shares:
        assert calibration.prior_calibration(s)["k_spread"] == calibration.CALIBRATION_PRIOR[s]
    assert calibration.prior_calibration(0.5 * shares[0])["k_spread"] == calibration.CALIBRATION_PRIOR[shares[0]]
    assert calibration.prior_calibration(0.99)["k_spread"] == calibration.CALIBRATION_PRIOR[shares[-1]]
    a, b = shares[0], shares[1]
    k_mid = calibration.prior_calibration(math.sqrt(a * b))["k_spread"]
    assert k_mid == pytest.approx(0.5 * (calibration.CALIBRATION_PRIOR[a] + calibration.CALIBRATION_PRIOR[b]))


def _node_forecasts(fit, T):
    """Mean forecast at T of the mixture members at each alpha node."""
    by_alpha = {}
    for member in fit.components:
        law = LAWS[member["law"]]
        by_alpha.setdefault(member["params"]["alpha"], []).append(
            float(law.evaluate(np.array(float(T)), member["params"], fit.context)))
    return {a: float(np.mean(v)) for a, v in sorted(by_alpha.items())}


def test_alpha_and_the_annealing_ratio_are_tied_so_alpha_is_not_counted_twice(monkeypatch):
    # before the decay the data pin the curve, not alpha: a larger alpha means a smaller
    # power-law part, and the same final loss needs a larger share of it annealed away. With
    # independent priors the alpha nodes' forecasts spread; tied, they agree
    lr = wsd(T=4000, warmup=100, decay_from=2800)
    t, y, truth = bound_curve(lr, A=8.0, alpha=0.5, C=0.02, noise=0.004, every=5, seed=5)
    seen = t <= 1600
    tied = ls.fit_curve(t[seen], y[seen], lr=lr)
    assert tied.diagnostics["anneal"]["source"] == "prior"
    monkeypatch.setattr(sched_solver, "ANNEAL_RATIO_ALPHA_SLOPE", 0.0)
    independent = ls.fit_curve(t[seen], y[seen], lr=lr)
    spread = {}
    for name, fit in (("tied", tied), ("independent", independent)):
        nodes = list(_node_forecasts(fit, 4000).values())
        assert len(nodes) == 3
        spread[name] = (max(nodes) - min(nodes)) / truth
        lo, hi = fit.interval(4000)
        assert lo < truth < hi
    assert spread["independent"] > 0.005
    assert spread["tied"] < 0.3 * spread["independent"]


def test_independent_points_count_and_slow_wiggles_do_not():
    rng = np.random.default_rng(0)
    white = rng.standard_normal(400)
    assert sched_solver.effective_n(white, 400.0) == calibration.N_EFF_MAX
    wiggle = np.sin(np.linspace(0, 3 * np.pi, 400)) + 0.1 * rng.standard_normal(400)
    assert sched_solver.effective_n(wiggle, 400.0) == calibration.N_EFF_CAP
    assert sched_solver.effective_n(white[:12], 12.0) == 12.0  # too few points to tell: all of them
    # bins of many steps each: the bins' independence is what counts
    assert sched_solver.effective_n(white[:40], 800.0) > 100


def _unit_sd(fit, T):
    """The interval's sd at T at multiplier 1 (what the calibration scales)."""
    fit.uncertainty["calibration"] = dict(calibration.INTERVAL_UNIT)
    base, ext = (float(v) for v in interval_terms(fit, np.array(float(T))))
    return math.hypot(base, ext)


def test_a_prior_regime_interval_tightens_as_independent_data_accrue(monkeypatch):
    # per-step losses (white noise ~1%), the LR falls only in the last 30%: at 20-45% seen the
    # annealing comes from the prior, and the data pin the rest of the curve more and more
    lr = wsd(T=3000, warmup=50, decay_from=2100)
    t, y, truth = bound_curve(lr, alpha=0.5, C=0.06, noise=0.035, every=1, seed=6)
    sds = []
    for share in (0.2, 0.3, 0.45):
        seen = t <= share * 3000
        fit = ls.fit_curve(t[seen], y[seen], lr=lr)
        assert fit.diagnostics["anneal"]["source"] == "prior"
        assert fit.diagnostics["n_eff"] > 2 * calibration.N_EFF_CAP  # bins of independent steps
        lo, hi = fit.interval(3000)
        assert lo < truth < hi
        sds.append(_unit_sd(fit, 3000))
    assert sds[0] > sds[1] > sds[2]
    # counting at most N_EFF_CAP of those points leaves L0 and A loose
    monkeypatch.setattr(sched_solver, "N_EFF_MAX", calibration.N_EFF_CAP)
    capped = ls.fit_curve(t[seen], y[seen], lr=lr)
    assert _unit_sd(capped, 3000) > 1.1 * sds[2]
