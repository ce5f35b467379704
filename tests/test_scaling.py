"""fit_scaling_law / ScalingLawFit: recovery, the Chinchilla fit, compute-optimal allocation,
serialisation and every rejected input."""

from __future__ import annotations

import csv
import io
import json
import math
import os

import numpy as np
import pytest
from scipy import optimize

import lightning_scaling as ls
from lightning_scaling.core.scaling import (
    PARAM_NAMES,
    ScalingLawFit,
    fit_scaling_law,
    huber_objective,
)
from lightning_scaling.core.scaling_solver import natural_params
from lightning_scaling.errors import InvalidInputError

DATA = os.path.join(os.path.dirname(__file__), "data", "chinchilla_points.csv")

TRUE = {"E": 1.8, "A": 400.0, "B": 1800.0, "alpha": 0.34, "beta": 0.37}

# Epoch AI's 95% intervals (Besiroglu et al. 2024) and their L-BFGS point estimate.
EPOCH_95 = {"E": (1.769, 1.871), "A": (285.0, 744.0), "B": (1042.0, 5810.0),
            "alpha": (0.317, 0.373), "beta": (0.331, 0.415)}
EPOCH_LBFGS = {"E": 1.8172, "A": 477.84, "B": 2143.86, "alpha": 0.34731, "beta": 0.36718}


def law(p, N, D):
    return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]


def synthetic(noise=0.005, seed=0):
    """7 model sizes x 6 tokens-per-parameter ratios, multiplicative noise."""
    rng = np.random.default_rng(seed)
    N = np.repeat(np.logspace(7, 9.5, 7), 6)
    D = N * np.tile([5.0, 10, 20, 40, 80, 160], 7)
    L = law(TRUE, N, D) * np.exp(rng.normal(0, noise, N.size))
    return N, D, L


@pytest.fixture(scope="module")
def chinchilla():
    with open(DATA, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["epoch_excluded_top5_loss"] == "0"]
    N = np.array([float(r["N_params"]) for r in rows])
    D = np.array([float(r["C_flops"]) for r in rows]) / (6 * N)
    L = np.array([float(r["loss"]) for r in rows])
    return N, D, L


@pytest.fixture(scope="module")
def synthetic_fit():
    N, D, L = synthetic()
    return fit_scaling_law(N, D, L, bootstrap=100, seed=1)


# ----------------------------------------------------------------- recovery
def test_recovers_known_parameters_from_noisy_synthetic_runs(synthetic_fit):
    p = synthetic_fit.params
    assert abs(p["E"] - TRUE["E"]) < 0.05
    assert abs(p["alpha"] - TRUE["alpha"]) < 0.03
    assert abs(p["beta"] - TRUE["beta"]) < 0.03
    # A and B trade off against the exponents; the predictions are what must hold, in and
    # beyond the data (10x the largest model, 4x its tokens).
    for N, D in [(3e7, 6e8), (1e9, 2e10), (3e10, 8e11)]:
        assert synthetic_fit.predict(N, D) == pytest.approx(law(TRUE, N, D), rel=0.01)


def test_noise_free_data_is_fitted_exactly():
    N, D, _ = synthetic()
    fit = fit_scaling_law(N, D, law(TRUE, N, D))
    for k in PARAM_NAMES:
        assert fit.params[k] == pytest.approx(TRUE[k], rel=1e-3), k


def test_bootstrap_intervals_cover_the_truth_and_behave(synthetic_fit):
    pint = synthetic_fit.param_intervals(0.95)
    for k in ("E", "alpha", "beta"):
        lo, hi = pint[k]
        assert lo < TRUE[k] < hi, (k, lo, hi)
        assert lo <= synthetic_fit.params[k] <= hi
    narrow, wide = synthetic_fit.param_intervals(0.5), synthetic_fit.param_intervals(0.95)
    assert all(wide[k][1] - wide[k][0] > narrow[k][1] - narrow[k][0] for k in PARAM_NAMES)
    lo, hi = synthetic_fit.interval(1e9, 2e10, level=0.9)
    assert lo < synthetic_fit.predict(1e9, 2e10) < hi
    plo, phi = synthetic_fit.interval(1e9, 2e10, level=0.9, kind="prediction")
    assert phi - plo > hi - lo  # run-to-run scatter widens it
    arr_lo, arr_hi = synthetic_fit.interval(np.array([1e8, 1e9]), np.array([2e9, 2e10]))
    assert arr_lo.shape == (2,) and np.all(arr_lo < arr_hi)


def test_result_does_not_depend_on_the_order_of_the_runs():
    N, D, L = synthetic(seed=3)
    perm = np.random.default_rng(0).permutation(N.size)
    a, b = fit_scaling_law(N, D, L), fit_scaling_law(N[perm], D[perm], L[perm])
    assert a.params == b.params
    np.testing.assert_allclose(b.residuals, a.residuals[perm])


# ----------------------------------------------------------------- Chinchilla
def test_chinchilla_points_fit_inside_epochs_intervals(chinchilla):
    N, D, L = chinchilla
    assert N.size == 240
    fit = ls.fit_scaling_law(N, D, L)
    for k, (lo, hi) in EPOCH_95.items():
        assert lo <= fit.params[k] <= hi, k
        assert fit.params[k] == pytest.approx(EPOCH_LBFGS[k], rel=2e-3), k
    # The objective is no worse than at Epoch's published L-BFGS estimate (rounded).
    ref = [math.log(EPOCH_LBFGS["A"]), math.log(EPOCH_LBFGS["B"]), math.log(EPOCH_LBFGS["E"]),
           EPOCH_LBFGS["alpha"], EPOCH_LBFGS["beta"]]
    assert fit.objective <= huber_objective(ref, np.log(N), np.log(D), np.log(L), 1e-3)
    assert fit.diagnostics["n_points"] == 240 and fit.diagnostics["flags"] == []


# ----------------------------------------------------------------- compute-optimal
def test_compute_optimal_matches_numeric_minimisation(synthetic_fit):
    for C in (1e19, 1e22, 5.76e23):
        n_opt, d_opt = synthetic_fit.compute_optimal(C)
        assert 6 * n_opt * d_opt == pytest.approx(C, rel=1e-12)
        res = optimize.minimize_scalar(
            lambda logn: synthetic_fit.predict(math.exp(logn), C / (6 * math.exp(logn))),
            bounds=(math.log(1e3), math.log(1e15)), method="bounded",
            options={"xatol": 1e-10})
        assert n_opt == pytest.approx(math.exp(res.x), rel=1e-4)
        assert synthetic_fit.predict(n_opt, d_opt) <= res.fun + 1e-12
    n_arr, d_arr = synthetic_fit.compute_optimal(np.array([1e20, 1e21]))
    assert n_arr.shape == (2,) and n_arr[1] > n_arr[0] and d_arr[1] > d_arr[0]
    iv = synthetic_fit.compute_optimal_intervals(1e22, level=0.9)
    n_opt, d_opt = synthetic_fit.compute_optimal(1e22)
    assert iv["N"][0] < n_opt < iv["N"][1] and iv["D"][0] < d_opt < iv["D"][1]


# ----------------------------------------------------------------- serialisation
def test_to_dict_round_trips_through_json(synthetic_fit):
    d = synthetic_fit.to_dict()
    back = ScalingLawFit.from_dict(json.loads(json.dumps(d, allow_nan=False)))
    assert back.params == synthetic_fit.params
    assert back.predict(2e9, 5e10) == synthetic_fit.predict(2e9, 5e10)
    assert back.param_intervals(0.9) == synthetic_fit.param_intervals(0.9)
    assert back.interval(2e9, 5e10) == synthetic_fit.interval(2e9, 5e10)
    assert back.compute_optimal(1e21) == synthetic_fit.compute_optimal(1e21)


def test_to_dict_loads_with_torch_weights_only(synthetic_fit):
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"scaling_law": synthetic_fit.to_dict()}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["scaling_law"]
    back = ScalingLawFit.from_dict(loaded)
    assert back.params == synthetic_fit.params
    assert back.param_intervals(0.8) == synthetic_fit.param_intervals(0.8)


def test_from_dict_refuses_other_formats_and_newer_versions(synthetic_fit):
    d = synthetic_fit.to_dict()
    with pytest.raises(InvalidInputError, match="newer"):
        ScalingLawFit.from_dict({**d, "version": d["version"] + 1})
    with pytest.raises(InvalidInputError, match="not a"):
        ScalingLawFit.from_dict({"format": "something-else"})
    with pytest.raises(InvalidInputError, match="params"):
        ScalingLawFit.from_dict({**d, "params": {"E": 1.0}})


# ----------------------------------------------------------------- bad input
GOOD_N = [1e7, 1e7, 1e8, 1e8, 1e9, 1e9]
GOOD_D = [1e8, 1e9, 1e9, 1e10, 1e10, 1e11]
GOOD_L = [4.0, 3.6, 3.2, 2.9, 2.6, 2.4]


@pytest.mark.parametrize(
    "N, D, L, match",
    [
        (GOOD_N[:4], GOOD_D[:4], GOOD_L[:4], "at least 5"),
        ([1e8] * 6, GOOD_D, GOOD_L, "same model size"),
        (GOOD_N, [1e10] * 6, GOOD_L, "same token count"),
        (GOOD_N, [20 * n for n in GOOD_N], GOOD_L, "tokens-per-parameter"),
        ([0.0] + GOOD_N[1:], GOOD_D, GOOD_L, "> 0"),
        (GOOD_N, GOOD_D[:-1] + [-5.0], GOOD_L, "> 0"),
        (GOOD_N, GOOD_D, GOOD_L[:-1] + [0.0], "> 0"),
        (GOOD_N, GOOD_D, GOOD_L[:-1] + [float("nan")], "non-finite"),
        (GOOD_N[:-1] + [float("inf")], GOOD_D, GOOD_L, "non-finite"),
        (GOOD_N, GOOD_D, GOOD_L[:-1], "same length"),
        (GOOD_N, GOOD_D, ["a"] * 6, "numbers"),
        (np.ones((2, 3)), GOOD_D, GOOD_L, "1-D"),
    ],
)
def test_bad_input_raises_one_clear_error(N, D, L, match):
    with pytest.raises(InvalidInputError, match=match):
        fit_scaling_law(N, D, L)


@pytest.mark.parametrize("kwargs, match", [
    ({"huber_delta": 0}, "huber_delta"), ({"huber_delta": float("nan")}, "huber_delta"),
    ({"bootstrap": -1}, "bootstrap"), ({"bootstrap": 2.5}, "bootstrap"),
    ({"bootstrap": True}, "bootstrap"), ({"seed": -1}, "seed"), ({"seed": "x"}, "seed"),
])
def test_bad_options_raise(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        fit_scaling_law(GOOD_N, GOOD_D, GOOD_L, **kwargs)


def test_intervals_without_bootstrap_say_how_to_get_them():
    fit = fit_scaling_law(GOOD_N, GOOD_D, GOOD_L)
    for call in (lambda: fit.param_intervals(), lambda: fit.interval(1e9, 1e10),
                 lambda: fit.compute_optimal_intervals(1e20)):
        with pytest.raises(InvalidInputError, match="bootstrap=k"):
            call()


def test_two_model_sizes_fit_but_are_flagged_weakly_identified():
    N = [1e7] * 3 + [1e8] * 3
    D = [1e8, 1e9, 1e10] * 2
    fit = fit_scaling_law(N, D, [4.0, 3.7, 3.5, 3.3, 3.0, 2.8])
    assert any("fewer than 3 distinct model sizes" in f for f in fit.diagnostics["flags"])
    assert np.isfinite(fit.predict(1e9, 1e10))


def test_bad_arguments_to_the_fitted_law(synthetic_fit):
    for call, match in [
        (lambda: synthetic_fit.param_intervals(1.5), "level"),
        (lambda: synthetic_fit.interval(1e9, 1e10, level=0), "level"),
        (lambda: synthetic_fit.interval(1e9, 1e10, kind="other"), "kind"),
        (lambda: synthetic_fit.compute_optimal(0), "C"),
        (lambda: synthetic_fit.compute_optimal(float("inf")), "C"),
        (lambda: synthetic_fit.predict(-1, 1e10), "N"),
        (lambda: synthetic_fit.predict([1e9, 2e9], [1e10, 2e10, 3e10]), "broadcast"),
        (lambda: synthetic_fit.compute_optimal_intervals([1e20, 1e21]), "one budget"),
    ]:
        with pytest.raises(InvalidInputError, match=match):
            call()


def test_bootstrap_survives_resamples_that_run_off():
    # Nine real runs of examples/sweep.py (tiny GPTs): some resamples drive an exponent so
    # far that exp(log A) overflows. Those count as failed; the intervals stay finite.
    pts = [(221664, 1998848, 2.0622), (221664, 3997696, 1.6097), (221664, 999424, 2.6349),
           (49344, 1998848, 2.387), (49344, 3997696, 1.9538), (49344, 999424, 2.7899),
           (98624, 1998848, 2.1841), (98624, 3997696, 1.7668), (98624, 999424, 2.467)]
    N, D, L = (np.array(c, dtype=float) for c in zip(*pts))
    fit = fit_scaling_law(N, D, L, bootstrap=200)
    assert 0 <= fit.diagnostics["bootstrap"]["failed"] < 200
    for lo, hi in fit.param_intervals(0.9).values():
        assert np.isfinite(lo) and np.isfinite(hi) and lo <= hi
    lo, hi = fit.interval(N, D, level=0.9)
    assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))


def test_natural_params_of_a_runaway_resample_is_inf_not_an_overflow_error():
    row = natural_params([800.0, 0.0, 0.0, 0.3, 0.3], 0.0, 0.0)  # log A = 800: exp overflows
    assert math.isinf(row[1]) and np.all(np.isfinite(row[[0, 2, 3, 4]]))
