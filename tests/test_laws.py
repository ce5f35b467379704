"""The law registry: every law evaluates, converts units consistently, and fits itself back."""

import math

import numpy as np
import pytest

from lightning_scaling import InvalidInputError
from lightning_scaling.core.solver import fit_law
from lightning_scaling.core.laws import DEFAULT_LAWS, LAWS, LR_AGNOSTIC_LAWS, Law, get_law, register_law

TRUE = {
    "saturating_power": {"E": 2.0, "A": 30.0, "alpha": 0.5},
    "kaplan": {"x_c": 1e9, "alpha": 0.08},
    "shifted_power": {"E": 2.0, "A": 30.0, "alpha": 0.6, "x0": 200.0},
    "mmf": {"E": 2.0, "A": 4.0, "alpha": 0.7, "x_h": 300.0},
    "weibull": {"E": 2.0, "A": 4.0, "delta": 0.4, "x_k": 500.0},
}


def test_registry_holds_the_documented_laws():
    assert set(LR_AGNOSTIC_LAWS) == set(TRUE)
    assert set(DEFAULT_LAWS) <= set(LR_AGNOSTIC_LAWS)
    for name in LR_AGNOSTIC_LAWS:
        law = LAWS[name]
        assert law.name == name and not law.uses_context
        assert len(law.linear) == len(law.linear_lower)
        assert len(law.nonlinear) == len(law.bounds)


@pytest.mark.parametrize("name", sorted(TRUE))
def test_each_law_is_decreasing_and_recovered_by_fit_law(name):
    law = get_law(name)
    x = np.geomspace(50, 20000, 120)
    y = law.evaluate(x, TRUE[name])
    assert np.all(np.diff(y) < 0)
    fit = fit_law(law, x, y, prior={"alpha": (0.5, 1e3)})  # flat: recover the form itself
    assert fit.ok
    # the fitted curve reproduces the data and the forecast 5x beyond it
    assert np.max(np.abs(fit.predict(x) / y - 1)) < 2e-3
    x_far = 1e5
    assert fit.predict(x_far) == pytest.approx(law.evaluate(x_far, TRUE[name]), rel=0.01)


@pytest.mark.parametrize("name", sorted(TRUE))
def test_params_are_in_caller_units_whatever_the_scale(name):
    """Fitting x or x * 1e15 (steps vs FLOPs) gives the same curve; params carry the units."""
    law = get_law(name)
    x = np.geomspace(50, 20000, 80)
    y = law.evaluate(x, TRUE[name])
    a = fit_law(law, x, y)
    b = fit_law(law, x * 1e15, y)
    assert np.allclose(a.predict(x * 30), b.predict(x * 30e15), rtol=1e-6)
    for k in law.param_names:
        if k in ("E", "alpha", "delta") or (name in ("mmf", "weibull") and k == "A"):
            assert a.params[k] == pytest.approx(b.params[k], rel=1e-6)


def test_unknown_and_duplicate_names_are_invalid_input():
    with pytest.raises(InvalidInputError, match="unknown law"):
        get_law("nope")
    with pytest.raises(InvalidInputError, match="already registered"):
        register_law(LAWS["saturating_power"])


def test_a_registered_context_law_reads_its_context():
    """The extension point of issue 3: a law that depends on the LR at every step."""

    def basis(xn, theta, ctx):
        (alpha,) = theta
        s1 = np.cumsum(ctx["lr"])[np.asarray(np.broadcast_to(xn, np.broadcast_shapes(
            np.shape(xn), np.shape(alpha))), dtype=int)]
        return [1.0, np.exp(-alpha * np.log(s1))]

    def evaluate(x, p, ctx):
        s1 = np.cumsum(ctx["lr"])[np.asarray(x, dtype=int)]
        return p["E"] + p["A"] * s1 ** -p["alpha"]

    law = Law(name="test_lr_area", formula="E + A * S1**-alpha", param_names=("E", "A", "alpha"),
              evaluate=evaluate, linear=("E", "A"), linear_lower=(0.0, 0.0), nonlinear=("alpha",),
              bounds=((0.05, 2.0),), starts=((0.5,),), basis=basis,
              to_params=lambda c, t, s: {"E": c[0], "A": c[1], "alpha": t[0]},
              asymptote=None, uses_context=True)
    register_law(law, replace=True)
    try:
        lr = np.r_[np.linspace(0.1, 1.0, 100), np.ones(900), np.linspace(1.0, 0.1, 1000)]
        steps = np.arange(150, 2000, 10)
        truth = {"E": 2.0, "A": 20.0, "alpha": 0.45}
        y = evaluate(steps, truth, {"lr": lr})
        fit = fit_law(law, steps, y, context={"lr": lr})
        assert fit.params["alpha"] == pytest.approx(0.45, abs=0.01)
        assert math.isclose(fit.predict(1999, {"lr": lr}), evaluate(1999, truth, {"lr": lr}), rel_tol=1e-3)
    finally:
        LAWS.pop("test_lr_area", None)
