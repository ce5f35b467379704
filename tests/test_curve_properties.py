"""Property tests (hypothesis): scale invariance, monotone forecasts, never a stray exception."""

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lightning_scaling import CurveFit, InvalidInputError, fit_curve

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

curve_params = st.tuples(
    st.floats(0.5, 5.0),      # E
    st.floats(0.5, 50.0),     # A (at x = 1 in units of x0)
    st.floats(0.1, 1.2),      # alpha
    st.floats(1.0, 1e4),      # x0: where the curve starts
    st.integers(20, 400),     # points
    st.floats(0.0, 0.02),     # log-normal noise
    st.integers(0, 2**16),    # seed
)


def make_curve(E, A, alpha, x0, n, noise, seed):
    x = x0 * np.linspace(1.0, 50.0, n)
    y = (E + A * (x / x0) ** -alpha) * np.exp(np.random.default_rng(seed).normal(0, noise, n))
    return x, y


@SETTINGS
@given(curve_params, st.floats(-25.0, 25.0))
def test_forecasts_do_not_depend_on_the_units_of_x(params, log10_scale):
    x, y = make_curve(*params)
    scale = 10.0 ** log10_scale
    a = fit_curve(x, y)
    b = fit_curve(x * scale, y)
    assert a.ok == b.ok
    if a.ok:
        xs = np.array([1.0, 2.0, 10.0]) * x[-1]
        assert np.allclose(a.predict(xs), b.predict(xs * scale), rtol=1e-6)
        assert np.allclose(a.interval(xs)[0], b.interval(xs * scale)[0], rtol=1e-6)


@SETTINGS
@given(curve_params)
def test_forecasts_fall_monotonically_and_the_band_holds_them(params):
    x, y = make_curve(*params)
    fit = fit_curve(x, y)
    if not fit.ok:
        assert fit.diagnostics["reason"]
        return
    xs = np.geomspace(x[0], x[-1] * 100, 60)
    mean = fit.predict(xs)
    assert np.all(np.isfinite(mean))
    assert np.all(np.diff(mean) <= 1e-12 * mean[:-1])
    lo, hi = fit.interval(xs)
    assert np.all(lo <= mean + 1e-12) and np.all(mean <= hi + 1e-12)
    target = float(mean[-1]) * 1.0001
    xt = fit.x_at(target)
    assert xt <= xs[-1] * 1.001 and math.isclose(fit.predict(xt), target, rel_tol=1e-5)


floats_any = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 60).flatmap(lambda n: st.tuples(arrays(np.float64, n, elements=floats_any),
                                                      arrays(np.float64, n, elements=floats_any))))
def test_arbitrary_float_arrays_never_crash(xy):
    x, y = xy
    fit = fit_curve(x, y)  # anything but InvalidInputError would fail the test
    assert isinstance(fit, CurveFit)
    if not fit.ok:
        assert fit.diagnostics["reason"]
        assert math.isnan(fit.predict(1.0))
    else:
        x_far = float(np.max(x[np.isfinite(x) & (x > 0)])) * 2
        v = fit.predict(x_far)
        lo, hi = fit.interval(x_far)
        assert v > 0 and lo <= v <= hi  # an ok fit forecasts a positive loss inside its band
    back = CurveFit.from_dict(fit.to_dict())
    assert back.ok == fit.ok


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=3), st.none(), st.floats()), max_size=8))
def test_non_numeric_input_is_invalid_input_only(values):
    try:
        fit_curve(values, values)
    except InvalidInputError:
        pass
