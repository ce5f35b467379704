import json
import math
import time

import numpy as np
import pytest

import lightning_scaling as ls
from lightning_scaling.core.stats import difference_noise
from lightning_scaling.monitor.config import StopConfig
from lightning_scaling.monitor.divergence import DivergenceDetector, DivergenceEnd, DivergenceEvent
from lightning_scaling.monitor.forecast import Forecast, make_forecast
from lightning_scaling.monitor.refit import RefitRunner
from lightning_scaling.monitor.stopping import StopReason, evaluate_stopping_criteria
from lightning_scaling.monitor.trend import TrendDetector, TrendEnd, TrendEvent


def curve(steps, rng, noise=0.004):
    return 2.0 + 8.0 * np.asarray(steps, float) ** -0.35 + noise * rng.standard_normal(np.size(steps))


def arrays_of(steps, loss):
    steps = np.asarray(steps, float)
    return {"step": steps, "key": steps, "tokens": steps * 1000.0, "flops": np.full(steps.size, np.nan),
            "loss": np.asarray(loss, float), "count": np.ones(steps.size)}


def run_detector(shift_from=None, shift=0.03, seed=0, n=2000, fit_at=(400, 800, 1200, 1600)):
    """Observations 1..n with refits at fit_at; returns the steps at which episodes started."""
    rng = np.random.default_rng(seed)
    steps = np.arange(1, n + 1)
    loss = curve(steps, rng)
    if shift_from is not None:
        loss[steps >= shift_from] *= 1 + shift
    det = TrendDetector(patience=3, window=5, min_excess=0.01)
    events = []
    for s, y in zip(steps, loss):
        if s - 1 in fit_at:
            fit = ls.fit_curve(steps[: s - 1], loss[: s - 1])
            det.offer_fit(fit, s - 1)
        e = det.observe(int(s), float(s), float(y))
        if isinstance(e, TrendEvent):
            events.append(e)
    return events


def test_no_behind_trend_event_on_a_clean_noisy_curve():
    for seed in range(3):
        assert run_detector(seed=seed) == []


def test_a_three_percent_fault_is_reported_once_soon_after_it_starts():
    events = run_detector(shift_from=1000)
    assert len(events) == 1
    e = events[0]
    assert 1000 <= e.step <= 1020 and 1000 - 5 <= e.since_step <= e.step
    assert e.excess_relative == pytest.approx(0.03, abs=0.01)
    assert e.reference_step <= 800  # the band was forecast before the fault
    assert "% above the" in e.message() and "behind since step" in e.message()


def test_the_reference_fit_is_frozen_while_checks_are_positive():
    rng = np.random.default_rng(1)
    steps = np.arange(1, 401)
    fit = ls.fit_curve(steps, curve(steps, rng))
    # the window test alone (the drift CUSUM would start an episode at once on a 5% jump)
    det = TrendDetector(patience=5, window=3, min_calibration=0, drift_level=None)
    assert det.offer_fit(fit, 400)
    for s in range(401, 431):  # in control: the noise scale is calibrated
        det.observe(s, float(s), float(curve([s], rng)[0]))
    for s in range(431, 434):
        det.observe(s, float(s), float(curve([s], rng)[0]) * 1.05)
    assert 0 < det.count < 5 and det.reference is fit
    later = ls.fit_curve(np.arange(1, 434), curve(np.arange(1, 434), rng))
    det.offer_fit(later, 433)
    det.observe(434, 434.0, float(curve([434], rng)[0]) * 1.05)
    assert det.reference is fit  # frozen: the newer fit saw the shift being tested
    for s in range(435, 480):
        det.observe(s, float(s), float(curve([s], rng)[0]))
    assert det.count == 0 and det.reference is later  # back within the band: follows the newest fit


def test_an_episode_ends_when_the_shift_has_become_the_trend():
    rng = np.random.default_rng(3)
    steps = np.arange(1, 3001)
    loss = curve(steps, rng)
    loss[steps > 1000] *= 1.03
    det = TrendDetector(patience=3, window=5, lag=100)
    started = ended = None
    for s in steps[400:]:
        if s % 50 == 0:
            det.offer_fit(ls.fit_curve(steps[:s], loss[:s]), int(s))
        event = det.observe(int(s), float(s), float(loss[s - 1]))
        if isinstance(event, TrendEvent):
            started = s
        if isinstance(event, TrendEnd):
            ended = s
            assert event.since_step >= 1000 and "back on trend" in event.message()
    assert 1000 < started < 1030 and det.episodes == 1
    assert ended is not None and started < ended < 1600 and det.reference_step > 1000


def monitor_like(n: int, drift_level=0.01) -> TrendDetector:
    """A detector sized as the monitor sizes it for an n-step run: window 2.5%, patience 1%, lag 5%."""
    return TrendDetector(patience=max(3, n // 100), window=n // 40, lag=0.05 * n, drift_level=drift_level)


def stream(det, loss, steps, fits):
    """Observe loss at steps (refits from the fits dict {data step: fit}); the episodes' start steps."""
    started = []
    for s in steps:
        if s in fits:
            det.offer_fit(fits[s], int(s))
        if isinstance(det.observe(int(s), float(s), float(loss[s - 1])), TrendEvent):
            started.append(int(s))
    return started


def refits(steps, loss, every):
    return {int(s): ls.fit_curve(steps[:s], loss[:s]) for s in steps if s % every == 0 and s >= every}


def test_the_drift_cusum_catches_a_slow_drift_the_window_test_misses_and_is_quiet_on_a_clean_curve():
    n, start = 2000, 1000
    rng = np.random.default_rng(0)
    steps = np.arange(1, n + 1)
    clean = curve(steps, rng)
    # +3% reached linearly over 30% of the run: the lagged references absorb part of it
    drift = clean * (1 + 0.03 * np.clip((steps - start) / (0.3 * n), 0, 1))
    every = n // 50
    observed = steps[n // 20:]
    with_cusum = stream(monitor_like(n), drift, observed, refits(steps, drift, every))
    window_only = stream(monitor_like(n, drift_level=None), drift, observed, refits(steps, drift, every))
    # at about +1.2%; a drift that goes on for 30% of the run may be a second episode once the
    # first one's level has become the trend
    assert 1 <= len(with_cusum) <= 2 and start < with_cusum[0] <= start + 0.15 * n
    assert not [s for s in window_only if s <= start + 0.15 * n]
    assert stream(monitor_like(n), clean, observed, refits(steps, clean, every)) == []


def test_the_drift_cusum_state_survives_a_checkpoint():
    n, start = 2000, 1000
    rng = np.random.default_rng(1)
    steps = np.arange(1, n + 1)
    loss = curve(steps, rng) * (1 + 0.03 * np.clip((steps - start) / (0.3 * n), 0, 1))
    fits = refits(steps, loss, n // 50)
    det = monitor_like(n)
    stream(det, loss, steps[n // 20: start + 150], fits)
    assert det.drift.sum > 0 and det.drift.held[1] is not det.reference  # mid-accumulation, on a held fit
    state = det.state_dict()
    assert state == json.loads(json.dumps(state))  # plain Python
    resumed = monitor_like(n)
    resumed.load_state_dict(state, ls.CurveFit.from_dict)
    rest = steps[start + 150:]
    assert stream(resumed, loss, rest, fits) == stream(det, loss, rest, fits) != []


def test_the_reference_lags_the_observations():
    rng = np.random.default_rng(2)
    det = TrendDetector(lag=100)
    fits = {}
    for end in (300, 400, 500):
        steps = np.arange(1, end + 1)
        fits[end] = ls.fit_curve(steps, curve(steps, rng))
        det.offer_fit(fits[end], end)
    det.observe(560, 560.0, 2.5)
    assert det.reference is fits[400] and det.reference_step == 400


def test_divergence_non_finite_and_spikes():
    d = DivergenceDetector(patience=3)
    for s in range(1, 40):
        assert d.observe(s, 3.0 + 0.01 * math.sin(s)) is None
    e = d.observe(40, float("nan"))
    assert isinstance(e, DivergenceEvent) and e.kind == "non-finite" and d.diverged
    assert d.observe(41, float("nan")) is None  # one report per episode
    assert d.observe(42, 3.0) is None and not d.diverged
    assert [d.observe(s, 3.0) for s in (43, 44)][-1].kind == "non-finite"  # the end, after 3 calm losses
    assert d.observe(45, 6.0) is None  # a spike is reported when the loss comes back (or stays up)
    e = d.observe(46, 3.0)
    assert e.kind == "spike" and e.step == 45 and not d.diverged  # a single spike is not divergence
    assert "at step 45 (1 step)" in e.message() and "recent median 3" in e.message()
    d.observe(47, 6.0)  # within the same episode: no second report
    assert [type(d.observe(s, 3.0)).__name__ for s in (48, 49, 50)] == ["NoneType", "NoneType", "DivergenceEnd"]
    d.observe(52, 6.0)
    d.observe(53, 6.5)
    e = d.observe(54, 7.0)
    assert e.kind == "jump" and d.diverged and "stayed up for 3 steps" in e.message()
    state = d.state_dict()
    d2 = DivergenceDetector(patience=3)
    d2.load_state_dict(state)
    assert d2.diverged


def test_divergence_reports_each_episode_once_and_a_level_shift_becomes_the_new_level():
    rng = np.random.default_rng(0)
    d = DivergenceDetector()
    events = []
    loss = 3.0 + 0.01 * rng.standard_normal(400)
    loss[100] = loss[101] = 9.0  # one episode of two bad batches
    loss[150] = 9.0
    loss[152] = 9.0  # two spikes close together: one episode
    loss[250:] *= 2.0  # the loss jumps and stays: reported once, then the new level
    for s, y in enumerate(loss, 1):
        e = d.observe(s, float(y))
        if e is not None:
            events.append(e)
    starts = [e for e in events if isinstance(e, DivergenceEvent)]
    ends = [e for e in events if isinstance(e, DivergenceEnd)]
    assert [(e.kind, e.step) for e in starts] == [("spike", 101), ("spike", 151), ("jump", 251)]
    assert [e.since_step for e in ends] == [101, 151, 251] and ends[-1].new_level == pytest.approx(6.0, rel=0.01)
    assert "settled at a new level" in ends[-1].message() and "2 spiked" in ends[1].message()
    # later spikes compare with the new level
    assert d.observe(401, 12.0) is None and d.observe(402, 6.0).baseline == pytest.approx(6.0, rel=0.01)


def test_difference_noise_ignores_the_trend():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 10, 500) + 0.1 * rng.standard_normal(500)
    assert difference_noise(x) == pytest.approx(0.1, rel=0.2)


def forecast(lower, final=None):
    final = lower + 0.1 if final is None else final
    return Forecast(step=10, final_loss=final, lower=lower, upper=final + 0.1, level=0.9, law="x", target_step=100)


@pytest.mark.parametrize(
    "rules, state, expected",
    [
        ({}, {}, StopReason.NOT_STOPPED),
        ({"forecast_above": 2.0}, {"recent_forecasts": [forecast(2.1), forecast(2.2)]}, StopReason.FORECAST_ABOVE),
        ({"forecast_above": 2.0}, {"recent_forecasts": [forecast(1.9), forecast(2.2)]}, StopReason.NOT_STOPPED),
        ({"forecast_above": 2.0}, {"recent_forecasts": [forecast(2.2)]}, StopReason.NOT_STOPPED),  # patience 2
        ({"forecast_above": 2.0, "forecast_patience": 1}, {"recent_forecasts": [forecast(2.2)]},
         StopReason.FORECAST_ABOVE),
        ({"forecast_above": 2.0}, {"recent_forecasts": [forecast(2.1), forecast(2.2)], "step": 10},
         StopReason.NOT_STOPPED),  # before min_fraction
        ({"forecast_above": 2.0}, {"recent_forecasts": [forecast(2.1), forecast(2.2)], "planned_steps": None},
         StopReason.NOT_STOPPED),  # no planned end: no forecast at the end
        ({"behind_trend": True}, {"behind": True}, StopReason.BEHIND_TREND),
        ({"divergence": True}, {"diverged": True, "step": 10, "planned_steps": None}, StopReason.DIVERGENCE),
        ({"divergence": False}, {"diverged": True}, StopReason.NOT_STOPPED),
        ({"divergence": True, "behind_trend": True}, {"diverged": True, "behind": True}, StopReason.DIVERGENCE),
        ({"worse_than_reference": True}, {"worse_than_reference": True, "reference_message": "worse than reference: x"},
         StopReason.WORSE_THAN_REFERENCE),
        ({"worse_than_reference": False}, {"worse_than_reference": True}, StopReason.NOT_STOPPED),
    ],
)
def test_stopping_criteria(rules, state, expected):
    args = dict(step=50, planned_steps=100, recent_forecasts=[])
    args.update(state)
    decision, reason = evaluate_stopping_criteria(StopConfig(**rules), **args)
    assert decision is expected and bool(decision) is (expected is not StopReason.NOT_STOPPED)
    assert (reason is not None) is bool(expected)
    if expected is StopReason.FORECAST_ABOVE:
        assert reason.startswith("forecast above target: at step 50") and "even its optimistic end" in reason


def test_make_forecast_falls_back_when_the_schedule_aware_fit_fails():
    rng = np.random.default_rng(0)
    steps = np.arange(1, 301)
    a = arrays_of(steps, curve(steps, rng))

    def fit_fn(x, y, lr=None):
        if lr is not None:
            return ls.fit_curve([1.0], [1.0])  # a failed (not ok) fit
        return ls.fit_curve(x, y)

    f = make_forecast(a, fit_fn=fit_fn, x_axis="tokens", target_step=1000, lr=np.full(1001, 1e-3), target_loss=2.9)
    assert "monitor_schedule_fallback" in f.diagnostics
    assert f.x_axis == "tokens"
    truth = 2.0 + 8.0 * 1000**-0.35
    assert f.lower < truth < f.upper
    assert abs(f.final_loss - truth) / truth < 0.02
    assert f.target_tokens == pytest.approx(1e6)
    assert f.steps_to_target == pytest.approx((8.0 / 0.9) ** (1 / 0.35), rel=0.2)
    assert f.tokens_to_target == pytest.approx(1000 * f.steps_to_target)
    d = f.to_dict()
    assert {"final_loss", "lower", "upper", "level", "step", "law", "target_step"} <= set(d)
    assert Forecast.from_dict(d).to_dict() == d


def test_refit_runner_runs_off_thread_and_reports_errors():
    r = RefitRunner(background=True)
    assert r.submit(lambda: time.sleep(0.05) or 42)
    assert not r.submit(lambda: 0)  # one at a time
    r.wait()
    result, error, cpu = r.poll()
    assert result == 42 and error is None and cpu < 0.05
    assert r.poll() is None
    r.submit(lambda: 1 / 0)
    r.wait()
    _, error, _ = r.poll()
    assert isinstance(error, ZeroDivisionError)
