"""Schedule-aware forecasts (``fit_curve(steps, loss, lr=lr)``): the law recovered from a whole
curve, the decay gain from the prior before the decay and from the data after it, finished
sibling runs as priors, no negative forecasts, compact stored schedules, real vendored curves."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import lightning_scaling as ls
from lightning_scaling.core import schedule as sch
from lightning_scaling.core.scheduled import compress_schedule, expand_schedule
from lightning_scaling.errors import InvalidInputError

DATA = Path(__file__).parent / "data"
NOT_IDENTIFIABLE = "annealing term not identifiable yet"


def wsd(T=20000, warmup=1000, decay_from=16000, floor=0.0, peak=3e-4):
    s = np.arange(T + 1)
    u = np.where(s < warmup, (s + 1) / warmup, 1.0)
    d = s >= decay_from
    u[d] = 1 - (1 - floor) * (s[d] - decay_from) / (T - decay_from)
    return u * peak


def cosine(T=20000, warmup=1000, floor=0.1, peak=3e-4):
    s = np.arange(T + 1)
    cos = floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * np.clip(s - warmup, 0, None) / (T - warmup)))
    return np.where(s < warmup, (s + 1) / warmup, cos) * peak


def floor_curve(lr, L0=2.5, A=12.0, alpha=0.5, B=0.25, p=0.75, noise=0.002, every=50, seed=0):
    """Points of the forecaster's law (exact multi-power sum of the floor u**p) and its truth
    function."""
    u, _ = sch.peak_normalized(lr)
    S1 = sch.lr_area(u)
    t = np.arange(every, lr.size, every)
    steps = np.r_[t, lr.size - 1]
    F = sch.multipower_drop_exact(u, steps, 0.11, 0.59, 0.64, power=p) if B else np.zeros(steps.size)
    law = L0 + A * S1[steps] ** -alpha - B * F
    y = law[:-1] * np.exp(noise * np.random.default_rng(seed).standard_normal(t.size))
    return t, y, float(law[-1])


def flagged(fit) -> bool:
    return any(NOT_IDENTIFIABLE in f for f in fit.diagnostics.get("flags", []))


# ------------------------------------------------------------------ the law and the decay gain
def test_a_whole_curve_recovers_the_law_and_its_decay_gain():
    lr = wsd(T=8000, warmup=200, decay_from=5000)
    t, y, truth = floor_curve(lr, every=20)
    fit = ls.fit_curve(t, y, lr=lr)
    assert fit.ok and fit.law == "multipower_floor" and not flagged(fit)
    assert fit.diagnostics["decay"]["gain_from"] == "data"
    alpha, alpha_sd = fit.diagnostics["posterior"]["alpha"]
    assert abs(alpha - 0.5) < max(2 * alpha_sd, 0.03)
    assert fit.diagnostics["posterior"]["gain"] == pytest.approx(0.25, rel=0.2)
    assert fit.predict(8000) == pytest.approx(truth, rel=0.002)
    lo, hi = fit.interval(8000)
    assert lo < truth < hi and hi / lo < 1.02


def test_before_the_decay_the_gain_comes_from_the_prior_and_the_band_carries_it():
    lr = wsd()
    t, y, truth = floor_curve(lr, B=0.2)
    before = ls.fit_curve(t[t <= 10000], y[t <= 10000], lr=lr)
    assert before.ok and flagged(before)
    assert before.diagnostics["decay"] == {"in_schedule": True, "seen_share": 0.0, "gain_from": "prior"}
    assert before.diagnostics["posterior"]["regime"] == "prior"
    lo, hi = before.interval(20000)
    assert lo < truth < hi
    # the prior's spread (log sd ~0.55 of the gain) is most of the band; once the decay shows,
    # the data take over and the band shrinks
    during = ls.fit_curve(t[t <= 18500], y[t <= 18500], lr=lr)
    assert not flagged(during) and during.diagnostics["decay"]["gain_from"] == "data"
    lo2, hi2 = during.interval(20000)
    assert lo2 < truth < hi2
    assert (hi2 - lo2) < 0.5 * (hi - lo)
    assert abs(during.predict(20000) - truth) < abs(before.predict(20000) - truth) + 0.002 * truth


def test_the_backtest_widens_the_band_where_the_law_misfits():
    """A fall that accelerates (something the law has no term for): the law's own earlier
    prefixes miss the points seen since, and the band at the horizon carries that."""
    lr = np.full(20001, 1e-3)
    t = np.arange(50, 10001, 50)
    smooth = ls.fit_curve(t, 2.0 + 10.0 * t ** -0.5, lr=lr)
    bent = ls.fit_curve(t, 2.0 + 10.0 * t ** -0.5 - 0.05 * (t / 10000.0) ** 2, lr=lr)
    assert bent.diagnostics["interval"]["backtest_sd"] > 10 * smooth.diagnostics["interval"]["backtest_sd"]
    (lo, hi), (slo, shi) = bent.interval(20000), smooth.interval(20000)
    assert (hi - lo) > 5 * (shi - slo)


# ------------------------------------------------------------------ priors
def test_finished_sibling_runs_lend_alpha_and_the_gain_in_nats():
    lr = wsd()
    B = 0.45  # far from the default prior (rho 0.07 of a loss of ~2.6: 0.18 nats)
    siblings = []
    for A, seed in ((14.0, 1), (16.0, 2)):  # smaller models: higher loss, same decay gain
        t, y, _ = floor_curve(lr, A=A, B=B, seed=seed)
        siblings.append(ls.fit_curve(t, y, lr=lr))
    assert all(s.diagnostics["lend"]["gain"] == pytest.approx(B, rel=0.15) for s in siblings)
    t, y, truth = floor_curve(lr, B=B, seed=3)
    seen = t <= 5000
    alone = ls.fit_curve(t[seen], y[seen], lr=lr)
    lent = ls.fit_curve(t[seen], y[seen], lr=lr, prior=siblings)
    assert lent.diagnostics["priors"]["source"] == "reference (2 runs: alpha and the decay gain)"
    assert abs(lent.predict(20000) - truth) < 0.3 * abs(alone.predict(20000) - truth)
    lo, hi = lent.interval(20000)
    assert lo < truth < hi
    # a dict of the fit works the same; so does one sibling
    same = ls.fit_curve(t[seen], y[seen], lr=lr, prior=[s.to_dict() for s in siblings])
    assert same.predict(20000) == lent.predict(20000)
    assert ls.fit_curve(t[seen], y[seen], lr=lr, prior=siblings[0]).ok


def test_parameter_prior_dict_and_bad_priors():
    lr = wsd()
    t, y, truth = floor_curve(lr, B=0.45)
    seen = t <= 5000
    fit = ls.fit_curve(t[seen], y[seen], lr=lr, prior={"B": (0.45, 0.05), "alpha": (0.5, 0.02)})
    assert fit.diagnostics["priors"]["source"] == "user"
    assert fit.predict(20000) == pytest.approx(truth, rel=0.01)
    bad = [{"C": (1.0, 0.1)}, {"B": (-0.1, 0.05)}, {"alpha": (0.5, 0.0)}, {"alpha": "wide"}, [], [1, 2]]
    for prior in bad:
        with pytest.raises(InvalidInputError):
            ls.fit_curve(t[seen], y[seen], lr=lr, prior=prior)
    old = json.loads((DATA / "fits_v1" / "fits_v0.1.json").read_text())["schedule_aware"]["fit"]
    with pytest.raises(InvalidInputError, match="refit the finished run"):
        ls.fit_curve(t[seen], y[seen], lr=lr, prior=old)


# ------------------------------------------------------------------ never a confident wrong number
def test_random_schedules_and_curves_never_give_an_ok_fit_a_non_positive_forecast():
    rng = np.random.default_rng(7)
    for _ in range(12):
        T = int(rng.integers(800, 4000))
        knots = np.sort(rng.uniform(0, T, 3)).astype(int)
        lr = np.interp(np.arange(T + 1), np.r_[0, knots, T], np.r_[0.01, rng.uniform(0.05, 1, 3), rng.uniform(0, 0.3)])
        t = np.arange(10, int(T * rng.uniform(0.2, 1.0)), 10)
        y = rng.uniform(0.05, 3) + rng.uniform(0.1, 20) * (t / 10.0) ** -rng.uniform(0.1, 1.5)
        y = y * np.exp(rng.normal(0, rng.uniform(0, 0.05), t.size))
        fit = ls.fit_curve(t, y, lr=lr)
        if not fit.ok:
            assert fit.diagnostics["reason"]
            continue
        steps = np.linspace(t[-1], T, 50)
        pred = fit.predict(steps)
        lo, hi = fit.interval(steps)
        assert np.all(pred > 0) and np.all(lo > 0) and np.all((lo <= pred) & (pred <= hi))


# ------------------------------------------------------------------ stored fits
def test_round_trip_intervals_and_x_at():
    lr = wsd()
    t, y, _ = floor_curve(lr)
    fit = ls.fit_curve(t[t < 12000], y[t < 12000], lr=lr)
    back = ls.CurveFit.from_dict(json.loads(json.dumps(fit.to_dict(), allow_nan=False)))
    steps = np.array([5000, 15000, 20000])
    np.testing.assert_allclose(back.predict(steps), fit.predict(steps), rtol=1e-12)
    np.testing.assert_allclose(back.interval(steps), fit.interval(steps), rtol=1e-12)
    assert fit.predict(20001) == fit.predict(20000)  # the run ends at the schedule's horizon
    target = float(fit.predict(19000))
    assert fit.x_at(target) == pytest.approx(19000, rel=0.01)
    assert fit.x_at(1.0) == math.inf
    assert back.x_at(target) == pytest.approx(fit.x_at(target), rel=1e-9)
    # the forecast equals the table's median at its knots, between them it keeps the law's shape
    table = fit.table
    np.testing.assert_allclose(np.log(fit.predict(np.array(table["x"])) / ls.core.laws.LAWS[fit.law].evaluate(
        np.array(table["x"]), fit.params, fit.evaluation_context())), table["log_ratio"], atol=1e-12)


def test_the_stored_schedule_is_compact_and_old_context_lists_still_load():
    T = 1_000_000
    lr = cosine(T=T, warmup=10_000)
    t = np.arange(1000, 200_001, 1000)
    u, _ = sch.peak_normalized(lr)
    y = 3.0 + 25 * sch.lr_area(u)[t] ** -0.5
    fit = ls.fit_curve(t, y, lr=lr)
    d = fit.to_dict()
    assert "lr" not in d["context"] and len(d["context"]["lr_knots"]["step"]) < 2000
    assert len(json.dumps(d)) < 200_000  # the per-step list alone would take ~20 MB
    steps, values = compress_schedule(lr)
    assert np.max(np.abs(expand_schedule(steps, values, T) - lr)) <= 1.0001e-6 * lr.max()
    wsd_knots = compress_schedule(wsd())
    assert wsd_knots[0].size <= 6  # piecewise linear: its corners, exactly
    np.testing.assert_allclose(expand_schedule(*wsd_knots, 20000), wsd(), rtol=0, atol=1e-18)
    assert fit.predict(T) == pytest.approx(ls.CurveFit.from_dict(json.loads(json.dumps(d))).predict(T), rel=1e-12)
    old = dict(d, context={"lr": expand_schedule(steps, values, T).tolist()})  # one LR per step
    assert ls.CurveFit.from_dict(old).predict([T // 2, T]) == pytest.approx(fit.predict([T // 2, T]), rel=1e-12)


def test_schedules_are_told_apart_by_content():
    a = wsd()
    b = a.copy()
    b[5001], b[5002] = b[5001] * 0.5, b[5002] * 1.5  # same length and sum
    t, y, _ = floor_curve(a)
    fa = ls.fit_curve(t[t < 12000], y[t < 12000], lr=a)
    fb = ls.fit_curve(t[t < 12000], y[t < 12000], lr=b)
    assert fa.predict(5100) != fb.predict(5100)


def test_invalid_inputs():
    lr = wsd()
    t, y, _ = floor_curve(lr)
    with pytest.raises(InvalidInputError, match="every step"):
        ls.fit_curve(t, y, lr=lr[:1000])
    with pytest.raises(InvalidInputError):
        ls.fit_curve(t, y, lr=np.full(lr.size, np.nan))
    with pytest.raises(InvalidInputError, match="unknown law"):
        ls.fit_curve(t, y, lr=lr, law="saturating_power")
    with pytest.raises(InvalidInputError):
        ls.fit_curve(t, y, lr=lr, skip_fraction=1.5)
    few = ls.fit_curve(t[:3], y[:3], lr=lr)
    assert not few.ok and math.isnan(few.predict(20000)) and few.diagnostics["reason"] == "too few points"


def test_fit_of_twenty_thousand_steps_is_fast():
    lr = cosine()
    s = np.arange(1, lr.size)
    u, _ = sch.peak_normalized(lr)
    y = 3.0 + 25 * sch.lr_area(u)[s] ** -0.45
    y = y + 0.01 * np.random.default_rng(0).standard_normal(y.size)
    ls.fit_curve(s, y, lr=lr)  # warm imports
    t0 = time.perf_counter()
    fit = ls.fit_curve(s, y, lr=lr * 1.0001)  # a new schedule: features recomputed
    assert fit.ok and time.perf_counter() - t0 < 1.0  # ~40 ms idle; slack for a loaded machine


# ------------------------------------------------------------------ real vendored curves
def _read(path):
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as fh:
        data = np.genfromtxt(fh, delimiter=",", names=True)
    return data["step"], data["loss"], data["lr"]


def test_real_multipower_wsd_curve():
    step, loss, lr = _read(DATA / "schedule" / "multipower_25M_wsd_20000_24000.csv.gz")
    measured = np.isfinite(loss)
    T = int(step[-1])
    truth = float(np.mean(loss[measured & (step >= 0.99 * T)]))
    full = ls.fit_curve(step[measured], loss[measured], lr=lr)
    assert full.diagnostics["decay"]["gain_from"] == "data"
    assert abs(full.predict(T) - truth) / truth < 0.003  # the law follows the whole curve
    seen = measured & (step <= 0.5 * T)  # the decay starts at 83%
    half = ls.fit_curve(step[seen], loss[seen], lr=lr)
    assert flagged(half)
    # multipower's decays remove 0.57x the gain the prior centres on (rho 0.040 vs 0.070): the
    # forecast is 2.7% low, and the band, which carries the prior's spread, holds the truth
    assert abs(half.predict(T) - truth) / truth < 0.03
    lo, hi = half.interval(T)
    assert lo < truth < hi


def test_real_modded_nanogpt_curve():
    step, loss, lr = _read(DATA / "curves" / "modded_nanogpt_ValueEmbed_00008ea0.csv")
    measured = np.isfinite(loss)
    T = int(step[-1])
    truth = float(np.mean(loss[measured & (step >= 0.99 * T)]))
    seen = measured & (step <= 0.5 * T)  # linear decay to 0 over the last 600 steps
    fit = ls.fit_curve(step[seen], loss[seen], lr=lr)
    assert fit.ok and flagged(fit)
    assert abs(fit.predict(T) - truth) / truth < 0.02
    lo, hi = fit.interval(T)
    assert lo < truth < hi


def test_a_fresh_process_reads_a_schedule_aware_fit(tmp_path):
    lr = wsd()
    t, y, _ = floor_curve(lr)
    fit = ls.fit_curve(t[t < 12000], y[t < 12000], lr=lr)
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(fit.to_dict()))
    code = ("import json, sys, lightning_scaling as ls; "
            "f = ls.CurveFit.from_dict(json.load(open(sys.argv[1]))); print(repr(f.predict(20000)))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert float(out.stdout) == pytest.approx(fit.predict(20000), rel=1e-12)


def test_extrapolate_cli_with_the_lr_column(capsys):
    from lightning_scaling.cli import main

    path = DATA / "curves" / "modded_nanogpt_ValueEmbed_00008ea0.csv"
    assert main(["extrapolate", str(path), "--lr", "lr", "--at", "1530", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fit"]["law"] == "multipower_floor"
    assert 3.0 < out["forecasts"][0]["loss"] < 3.6
    assert main(["extrapolate", str(path), "--lr", "lr", "--at", "1530"]) == 0
    assert "law: multipower_floor" in capsys.readouterr().out
