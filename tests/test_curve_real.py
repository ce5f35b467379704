"""fit_curve on real curves vendored in tests/data/curves (sources and MIT licences there)."""

from pathlib import Path

import numpy as np
import pytest

from lightning_scaling import fit_curve
from lightning_scaling.io import read_csv

DATA = Path(__file__).parent / "data" / "curves"


def load(name, x_col):
    c = read_csv(DATA / name)
    m = ~np.isnan(c["loss"])
    return c["step"][m], c[x_col][m], c["loss"][m], c


def scored(step, x, y, T, fraction):
    """The benchmark protocol: fit on step <= f T, truth = mean loss over the last 1% of steps."""
    seen = step <= fraction * T
    truth = float(y[step >= 0.99 * T].mean())
    x_final = float(x[step == step.max()][0])
    return fit_curve(x[seen], y[seen]), x_final, truth


@pytest.mark.parametrize("fraction, tol", [(0.1, 0.015), (0.25, 0.01), (0.5, 0.006)])
def test_gemstones_validation_curve_forecast(fraction, tol):
    """A 1.9B-parameter run at constant LR, x in tokens: forecast the loss at 350B tokens."""
    step, tokens, loss, _ = load("gemstones_1536x50.csv", "tokens")
    fit, x_final, truth = scored(step, tokens, loss, 83475, fraction)
    assert fit.ok
    assert abs(fit.predict(x_final) - truth) / truth < tol
    lo, hi = fit.interval(x_final)
    assert lo <= truth <= hi
    # the first quarter of the seen tokens (right after the LR warm-up) is cut as a transient
    assert fit.diagnostics["transient_cut"]["n_points"] >= 1


def test_multipower_constant_lr_curve_forecast():
    step, x, loss, _ = load("multipower_25M_constant_72000_measured.csv", "step")
    fit, x_final, truth = scored(step, x, loss, 71936, 0.5)
    assert fit.ok and abs(fit.predict(x_final) - truth) / truth < 0.01
    lo, hi = fit.interval(x_final)
    assert lo <= truth <= hi


def test_noisy_per_step_training_loss_is_fitted():
    """modded-nanogpt: 1,530 noisy per-step losses from step 1 (loss 10.8, the untrained model)."""
    step, x, loss, cols = load("modded_nanogpt_ValueEmbed_00008ea0.csv", "step")
    fit = fit_curve(x, loss)
    assert fit.ok
    assert fit.diagnostics["n_points"] == loss.size and fit.diagnostics["n_bins"] <= 40
    # in-sample, the fit follows the smoothed curve within the per-step noise
    mid = (step > 300) & (step < 900)
    assert abs(np.median(loss[mid] / fit.predict(x[mid])) - 1) < 0.02
    # the loss column is blank on step 0: dropped before fitting (x = 0 is no power-law point)
    assert np.isnan(cols["loss"][0])


def test_lr_column_reaches_the_schedule_aware_fitter():
    """Half of a modded-nanogpt run seen, before its linear decay to zero (last 600 steps)."""
    step, x, loss, cols = load("modded_nanogpt_ValueEmbed_00008ea0.csv", "step")
    T = int(cols["step"][-1])
    seen = step <= 765
    truth = float(loss[step >= 0.99 * T].mean())
    fit = fit_curve(step[seen], loss[seen], lr=cols["lr"])
    assert fit.ok and fit.law == "multipower_floor"
    assert fit.diagnostics["decay"]["gain_from"] == "prior"  # the decay has not started
    assert abs(fit.predict(T) - truth) / truth < 0.02
    lo, hi = fit.interval(T)
    assert lo < truth < hi
    # the LR-agnostic fit of the same points cannot know the decay: it forecasts higher
    assert fit_curve(x[seen], loss[seen]).predict(T) > fit.predict(T)
