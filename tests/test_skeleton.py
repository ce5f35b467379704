import numpy as np

import lightning_scaling as ls


def test_fit_curve_recovers_a_clean_power_law():
    x = np.linspace(100, 5000, 200)
    y = 2.0 + 30.0 * x**-0.5
    fit = ls.fit_curve(x, y)
    assert abs(fit.predict(20000) - (2.0 + 30.0 * 20000**-0.5)) < 0.01


def test_too_few_points_gives_nan_forecast():
    fit = ls.fit_curve([1, 2], [3.0, 2.0])
    assert np.isnan(fit.predict(10))
    assert fit.diagnostics["reason"] == "too few points"
