"""fit_curve / CurveFit: recovery on synthetic curves, hygiene, failure policy, round trips."""

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

import lightning_scaling as ls
from lightning_scaling import CurveFit, InvalidInputError, fit_curve
from lightning_scaling.core.points import bucket_log, clean_points, detect_warmup, prepare_points


def sat(x, E=2.0, A=30.0, alpha=0.5):
    return E + A * np.asarray(x, float) ** -alpha


def noisy(x, y, sd, seed=0):
    return y * np.exp(np.random.default_rng(seed).normal(0.0, sd, np.shape(x)))


# ------------------------------------------------------------------ recovery
def test_recovers_parameters_and_forecast_of_a_noisy_power_law():
    x = np.linspace(100, 10000, 300)
    fit = fit_curve(x, noisy(x, sat(x, 2.0, 30.0, 0.5), 0.002))
    assert fit.ok and fit.law == "saturating_power" and fit.components == []
    assert fit.params["E"] == pytest.approx(2.0, abs=0.05)
    assert fit.params["alpha"] == pytest.approx(0.5, abs=0.03)  # alpha grid: 0.04 apart
    assert fit.predict(40000) == pytest.approx(sat(40000), rel=0.004)
    lo, hi = fit.interval(40000)
    assert lo <= fit.predict(40000) <= hi
    assert lo < sat(40000) < hi
    assert hi / lo < 1.05  # and narrow enough to act on


def test_single_law_fit_reports_that_law_and_its_params():
    x = np.geomspace(10, 1e5, 200)
    fit = fit_curve(x, sat(x, 1.5, 12.0, 0.35), laws=["saturating_power"])
    assert fit.law == "saturating_power" and fit.components == []
    assert fit.diagnostics["law"] == "saturating_power"
    # the default exponent prior (0.5 +- 0.25) nudges a little ...
    assert fit.params["E"] == pytest.approx(1.5, rel=3e-3)
    assert fit.params["alpha"] == pytest.approx(0.35, abs=3e-3)
    # ... a flat prior recovers the exact curve
    flat = fit_curve(x, sat(x, 1.5, 12.0, 0.35), laws=["saturating_power"], prior={"alpha": (0.5, 1e3)})
    assert flat.params["E"] == pytest.approx(1.5, rel=1e-4)
    assert flat.params["A"] == pytest.approx(12.0, rel=1e-3)
    assert flat.params["alpha"] == pytest.approx(0.35, rel=1e-3)


def test_same_forecast_for_steps_tokens_and_flops():
    steps = np.arange(50, 3001, 10, dtype=float)
    y = noisy(steps, sat(steps / 10, 2.5, 6.0, 0.45), 0.003, seed=3)
    forecasts = []
    for scale in (1.0, 4e6, 1e21 / 3000):
        fit = fit_curve(steps * scale, y)
        forecasts.append(fit.predict(30000 * scale))
        assert fit.x_last == pytest.approx(3000 * scale)
    assert np.ptp(forecasts) / forecasts[0] < 1e-6


def test_warmup_transient_is_cut_and_reported():
    x = np.arange(1, 201, dtype=float) * 100
    y = sat(x, 2.0, 20.0, 0.4)
    y[:5] *= np.array([1.6, 1.35, 1.2, 1.1, 1.04])  # warm-up: falls faster than the power law
    fit = fit_curve(x, y)
    cut = fit.diagnostics["transient_cut"]  # the first quarter of the seen x is not fitted
    assert cut["before_x"] == pytest.approx(5000) and cut["n_points"] == 49
    assert fit.x_first >= 5000
    assert fit.predict(1e5) == pytest.approx(sat(1e5, 2.0, 20.0, 0.4), rel=0.003)
    # the named-law mixture of version 0.1 detects the warm-up point by point
    w = fit_curve(x, y, laws=["saturating_power", "mmf"]).diagnostics["warmup"]
    assert 3 <= w["n_points_cut"] <= 8
    assert "warmup" not in fit_curve(x, sat(x, 2.0, 20.0, 0.4), laws=["saturating_power"]).diagnostics


def test_twenty_thousand_noisy_steps_are_bucketed():
    x = np.arange(1, 20001, dtype=float)
    y = noisy(x, sat(x + 100, 2.2, 10.0, 0.4), 0.03, seed=1)
    fit = fit_curve(x, y)
    assert fit.ok
    assert fit.diagnostics["n_used"] == 15001 and fit.diagnostics["n_bins"] <= 40
    assert fit.predict(1e5) == pytest.approx(sat(1e5 + 100, 2.2, 10.0, 0.4), rel=0.01)
    # the fit keeps no per-point history: its dict is small
    assert len(json.dumps(fit.to_dict())) < 20000


def test_bucket_log_preserves_means_and_counts():
    x = np.arange(1, 5001, dtype=float)
    y = np.log(x)
    xb, yb, wb = bucket_log(x, y, 50)
    assert wb.sum() == 5000 and xb.size <= 50
    assert np.all(np.diff(xb) > 0)
    assert np.sum(xb * wb) == pytest.approx(x.sum())
    assert np.sum(yb * wb) == pytest.approx(y.sum())
    small = np.arange(1.0, 11.0)
    assert bucket_log(small, small, 50)[0] is small


def test_detect_warmup_on_short_or_clean_curves_cuts_nothing():
    x = np.arange(1.0, 8.0)
    assert detect_warmup(x, sat(x), np.ones_like(x)) == (0, "")
    x = np.geomspace(1, 1e4, 100)
    assert detect_warmup(x, sat(x), np.ones_like(x))[0] == 0


# ------------------------------------------------------------------ hygiene and failure policy
def test_bad_points_are_dropped_and_counted():
    x = np.linspace(100, 5000, 100)
    y = sat(x)
    x[3], y[7], y[9], x[11], x[12], y[20] = np.nan, np.inf, -np.inf, 0.0, -5.0, -1.0
    fit = fit_curve(x, y)
    assert fit.ok
    assert fit.diagnostics["dropped"] == {"nan_or_inf": 3, "x_not_positive": 2, "loss_not_positive": 1}
    assert fit.diagnostics["n_dropped"] == 6 and fit.diagnostics["n_points"] == 100


def test_unsorted_input_is_sorted():
    x = np.linspace(100, 5000, 80)
    perm = np.random.default_rng(0).permutation(80)
    a = fit_curve(x, sat(x))
    b = fit_curve(x[perm], sat(x)[perm])
    assert a.predict(20000) == pytest.approx(b.predict(20000), rel=1e-9)


@pytest.mark.parametrize("x, y", [([], []), ([1, 2], [3.0, 2.0]), ([5] * 20, [3.0] * 20),
                                  ([1, 2, 3, 4, 5], [5, 4, 3, 2.5, 2]),
                                  ([np.nan] * 30, [1.0] * 30)])
def test_too_few_points_gives_a_nan_fit(x, y):
    fit = fit_curve(x, y)
    assert not fit.ok and fit.law == "none"
    assert fit.diagnostics["reason"] == "too few points"
    assert math.isnan(fit.predict(10.0)) and all(math.isnan(v) for v in fit.interval(10.0))
    assert math.isnan(fit.x_at(1.0))
    assert np.isnan(fit.predict([1.0, 2.0])).all()
    CurveFit.from_dict(json.loads(json.dumps(fit.to_dict(), allow_nan=False)))


@pytest.mark.parametrize("y", [np.full(50, 3.0), np.linspace(2.0, 3.0, 50),
                               2.0 + 0.01 * np.random.default_rng(0).normal(size=50)])
def test_no_downward_trend_gives_a_nan_fit(y):
    fit = fit_curve(np.arange(1.0, 51.0), y)
    assert not fit.ok
    assert fit.diagnostics["reason"] == "no downward trend"
    assert math.isnan(fit.predict(100.0))


@pytest.mark.parametrize("call, match", [
    (lambda: fit_curve([1, 2, 3], [1, 2]), "differ in length"),
    (lambda: fit_curve(np.ones((3, 3)), np.ones((3, 3))), "one-dimensional"),
    (lambda: fit_curve(["a", "b"], [1, 2]), "numeric"),
    (lambda: fit_curve([1, 2], {"a": 1}), "numeric"),
    (lambda: fit_curve([1, 2, 3], [3, 2, 1], laws=["nope"]), "unknown law"),
    (lambda: fit_curve([1, 2, 3], [3, 2, 1], laws=[]), "at least one"),
    (lambda: fit_curve([1, 2, 3], [3, 2, 1], prior=[1, 2]), "prior"),
    (lambda: fit_curve(np.arange(1.0, 30), 1 / np.arange(1.0, 30), prior={"alpha": (0.5, -1)}), "sd"),
    (lambda: fit_curve([1, 2, 3], [3, 2, 1], bogus=1), "unknown option"),
])
def test_invalid_arguments_raise_invalid_input_error(call, match):
    with pytest.raises(InvalidInputError, match=match):
        call()


def test_invalid_arguments_of_the_fit_methods():
    x = np.linspace(100, 5000, 60)
    fit = fit_curve(x, sat(x))
    for level in (0, 1, -0.5, 2, "high", None):
        with pytest.raises(InvalidInputError):
            fit.interval(1e4, level)
    with pytest.raises(InvalidInputError):
        fit.predict("soon")
    with pytest.raises(InvalidInputError):
        fit.x_at([1.0, 2.0])
    with pytest.raises(InvalidInputError):
        CurveFit.from_dict("no")
    with pytest.raises(InvalidInputError, match="newer"):
        CurveFit.from_dict({**fit.to_dict(), "version": 99})


def test_lr_goes_to_the_schedule_aware_fitter():
    steps = np.arange(100, 2001, 20)
    decaying = np.r_[np.ones(3000), np.linspace(1.0, 0.0, 1001)]
    fit = fit_curve(steps, sat(steps), lr=decaying)
    assert fit.ok and fit.law == "multipower_floor"
    assert fit.diagnostics["schedule"]["horizon"] == 4000 and fit.diagnostics["decay"]["in_schedule"]
    assert fit.predict(4001) == fit.predict(1e6) == fit.predict(4000)  # training ends at the horizon
    assert fit.predict(4000) < fit.predict(3000)  # the decay lowers the loss
    # a constant LR goes there too: the LR area is the step count, and no decay term
    flat = fit_curve(steps, sat(steps), lr=np.ones(4001))
    assert flat.ok and flat.law == "multipower_floor" and flat.params["B"] == 0.0
    assert flat.diagnostics["decay"] == {"in_schedule": False, "seen_share": 0.0,
                                         "gain_from": "none: the LR never falls"}
    assert flat.predict(4000) == pytest.approx(sat(4000), rel=0.003)


def test_unknown_options_raise_with_or_without_lr():
    steps = np.arange(100, 2001, 20)
    lr = np.ones(2001)
    for kwargs in ({"bogus": 1}, {"lr": lr, "bogus": 1}, {"lr": lr, "anneal_momentum": 0.99}):
        with pytest.raises(InvalidInputError, match="unknown option"):
            fit_curve(steps, sat(steps), **kwargs)
    with pytest.raises(InvalidInputError, match="no longer fitted"):
        fit_curve(steps, sat(steps), lr=lr, law="convex_bound")
    with pytest.raises(InvalidInputError, match="multipower_floor"):
        fit_curve(steps, sat(steps), lr=lr, laws=["mmf"])
    with pytest.raises(InvalidInputError, match="calibration"):
        fit_curve(steps, sat(steps), calibration={"alpha_prior": 1})


def test_a_loss_that_goes_below_zero_is_refused_not_forecast():
    x = np.arange(1.0, 500.0)
    fit = fit_curve(x, -1 + 2 * x**-0.3)  # below zero from x = 11 on; -0.75 at x = 1000
    assert not fit.ok and fit.diagnostics["reason"] == "loss not positive"
    assert "489 of 499" in fit.diagnostics["reason_detail"]
    assert math.isnan(fit.predict(1000.0)) and all(math.isnan(v) for v in fit.interval(1000.0))
    # shifted by a constant it is an ordinary curve
    shifted = fit_curve(x, 1 + 2 * x**-0.3)
    assert shifted.ok and shifted.predict(1000.0) == pytest.approx(1 + 2 * 1000**-0.3, rel=0.01)


@pytest.mark.parametrize("seed", range(4))
def test_a_fall_the_law_cannot_follow_gets_a_wide_band_not_a_confident_wrong_number(seed):
    """An exponential fall to a noise floor of 0.09 (a regression's MSE), 30% noise per step:
    no power law follows it; 0.1 forecast 0.0017 (0.0004-0.003) here from 100 steps."""
    x = np.arange(1.0, 121.0)
    y = (0.09 + 26 * np.exp(-x / 6)) * np.exp(np.random.default_rng(seed).normal(0, 0.3, x.size))
    for n in (60, 80):
        fit = fit_curve(x[:n], y[:n])
        assert fit.ok and fit.params["E"] >= 0  # the asymptote of a loss is not negative
        lo, hi = fit.interval(120.0)
        assert lo <= 0.09 <= hi and lo > 0


def test_a_curve_heading_to_zero_keeps_a_non_negative_asymptote():
    x = np.arange(1.0, 400.0)
    y = 2.0 - 0.25 * np.log(x)  # positive where seen, zero at x = e**8 = 2981
    fit = fit_curve(x, y)
    assert fit.ok and fit.params["E"] >= 0
    xs = np.geomspace(400, 1e6, 20)
    assert np.all(fit.predict(xs) > 0) and np.all(fit.interval(xs)[0] > 0)
    assert fit.predict(x[-1]) == pytest.approx(y[-1], rel=0.02)


# ------------------------------------------------------------------ forecasts
def test_x_at_inverts_predict():
    x = np.linspace(100, 5000, 100)
    fit = fit_curve(x, sat(x, 2.0, 30.0, 0.5))
    for target in (2.5, 2.25, 2.1):
        xt = fit.x_at(target)
        assert fit.predict(xt) == pytest.approx(target, rel=1e-6)
    assert fit.x_at(10.0) == fit.x_first  # already below
    assert fit.x_at(1.0) == math.inf  # below the floor: never
    assert math.isnan(fit.x_at(float("nan")))


def test_interval_contains_the_forecast_and_widens_with_distance():
    x = np.linspace(100, 5000, 100)
    fit = fit_curve(x, noisy(x, sat(x), 0.003))
    xs = np.array([3000, 5000, 1e4, 1e5, 1e6])
    lo, hi = fit.interval(xs)
    mean = fit.predict(xs)
    assert np.all(lo <= mean) and np.all(mean <= hi)
    width = hi - lo
    assert np.all(np.diff(width[1:]) > 0)
    lo50, hi50 = fit.interval(xs, level=0.5)
    assert np.all(hi50 - lo50 < width)


# ------------------------------------------------------------------ serialisation
def test_to_dict_round_trips_through_json_and_torch_weights_only():
    torch = pytest.importorskip("torch")
    x = np.arange(1, 3001, dtype=float)
    fit = fit_curve(x, noisy(x, sat(x + 50, 2.0, 9.0, 0.45), 0.02))
    d = fit.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = CurveFit.from_dict(json.loads(text))
    buf = io.BytesIO()
    torch.save({"fit": d}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["fit"]
    again = CurveFit.from_dict(loaded)
    xs = np.array([100.0, 3000.0, 3e4])
    for other in (back, again):
        assert np.array_equal(other.predict(xs), fit.predict(xs))
        assert np.array_equal(other.interval(xs)[0], fit.interval(xs)[0])
        assert other.law == fit.law and other.params == fit.params
        assert other.x_at(2.5) == fit.x_at(2.5)
    assert d["format"] == "lightning-scaling/curve-fit" and d["version"] == 2
    # unknown extra keys are ignored
    CurveFit.from_dict({**d, "added_later": [1, 2]})


def test_fits_saved_by_version_0_1_still_load_and_forecast_the_same():
    saved = json.loads((Path(__file__).parent / "data" / "fits_v1" / "fits_v0.1.json").read_text())
    for kind, law in (("schedule_aware", "convex_bound"), ("lr_agnostic", "saturating_power")):
        old = saved[kind]
        assert old["fit"]["version"] == 1 and old["fit"]["law"] == law
        fit = CurveFit.from_dict(old["fit"])
        xs = np.array(old["x"])
        np.testing.assert_allclose(fit.predict(xs), old["predict"], rtol=1e-9)
        lo, hi = fit.interval(xs)
        np.testing.assert_allclose(lo, old["lower"], rtol=1e-9)
        np.testing.assert_allclose(hi, old["upper"], rtol=1e-9)
        again = CurveFit.from_dict(json.loads(json.dumps(fit.to_dict())))  # written back as version 2
        np.testing.assert_allclose(again.predict(xs), old["predict"], rtol=1e-9)
    with pytest.raises(InvalidInputError, match="table"):
        CurveFit.from_dict({**saved["lr_agnostic"]["fit"], "table": {"x": [1.0]}})


def test_public_names():
    assert ls.fit_curve is fit_curve and ls.CurveFit is CurveFit
    fit = fit_curve(np.linspace(10, 1000, 50), sat(np.linspace(10, 1000, 50)))
    assert "CurveFit(law=" in repr(fit)
    assert "ok=False" in repr(fit_curve([1.0], [1.0]))


def test_prepare_points_is_reusable():
    x = np.r_[np.nan, np.linspace(100, 5000, 50)]
    prep = prepare_points(x, sat(np.nan_to_num(x, nan=1.0)))
    assert prep.reason is None and prep.diagnostics["n_dropped"] == 1
    assert prep.x.size == prep.y.size == prep.w.size
    xc, yc, dropped = clean_points(np.array([2.0, 1.0]), np.array([1.0, 2.0]))
    assert list(xc) == [1.0, 2.0] and dropped["nan_or_inf"] == 0
