"""Schedule features: S1, S2 and the multi-power drop against direct (slow) definitions."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lightning_scaling.errors import InvalidInputError
from lightning_scaling.core.schedule import (
    annealing_area,
    as_schedule,
    bound_sums,
    convex_bound,
    convex_bound_exact,
    drop_chunks,
    lr_area,
    lr_drops,
    multipower_drop,
    multipower_drop_exact,
    peak_normalized,
    warmup_end,
)


def warmup_cosine(T=6000, warmup=500, floor=0.1):
    s = np.arange(T + 1)
    cos = floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * np.clip(s - warmup, 0, None) / (T - warmup)))
    return np.where(s < warmup, (s + 1) / warmup, cos) * 3e-4


def wsd(T=6000, warmup=500, decay_from=5000, floor=0.0):
    s = np.arange(T + 1)
    u = np.where(s < warmup, (s + 1) / warmup, 1.0)
    d = s >= decay_from
    u[d] = 1 - (1 - floor) * (s[d] - decay_from) / (T - decay_from)
    return u


def test_peak_normalisation_and_warmup_end():
    lr = warmup_cosine()
    u, peak = peak_normalized(lr)
    assert peak == pytest.approx(3e-4)
    assert u.max() == 1.0
    assert warmup_end(lr) == 499


def test_lr_area_is_the_sum_before_each_step():
    u = np.array([0.5, 1.0, 1.0, 0.5, 0.25])
    np.testing.assert_allclose(lr_area(u), [0, 0.5, 1.5, 2.5, 3.0, 3.25])


def test_annealing_area_matches_its_definition():
    u, _ = peak_normalized(warmup_cosine(T=800, warmup=100))
    lam = 0.99
    d = lr_drops(u)
    assert np.all(d[:100] == 0)  # warm-up rises are not annealing
    m = np.zeros_like(u)
    for s in range(1, u.size):
        m[s] = lam * m[s - 1] + d[s]
    expected = np.concatenate([[0.0], np.cumsum(m)])
    np.testing.assert_allclose(annealing_area(u, lam), expected, rtol=1e-10, atol=1e-12)
    # one drop of 0.5 at step 100: S2[t] = 0.5 * (1 - lam**(t - 100)) / (1 - lam) -> 0.5 / (1 - lam)
    step = np.r_[np.ones(100), 0.5 * np.ones(5000)]
    S2 = annealing_area(step, 0.99)
    t = np.array([101, 150, 1000, 5100])
    np.testing.assert_allclose(S2[t], 0.5 * (1 - 0.99 ** (t - 100)) / 0.01, rtol=1e-9)


@pytest.mark.parametrize("schedule", ["cosine", "wsd_to_zero", "two_stage"])
@pytest.mark.parametrize("shape", [(0.11, 0.59, 0.64), (2.0, 0.5, 0.6), (0.01, 1.2, 0.3)])
@pytest.mark.parametrize("power", [1.0, 0.6])
def test_chunked_multipower_drop_matches_the_direct_sum(schedule, shape, power):
    if schedule == "cosine":
        u, _ = peak_normalized(warmup_cosine())
    elif schedule == "wsd_to_zero":
        u = wsd()
    else:
        u = np.r_[np.ones(3000), 0.3 * np.ones(3001)]
    t = np.unique(np.linspace(10, u.size - 1, 60).astype(int))
    approx = multipower_drop(drop_chunks(u, power=power), t, *shape)
    exact = multipower_drop_exact(u, t, *shape, power=power)
    # the unit drop saturates at the total LR drop (<= 1): 1e-3 absolute is 0.1% of it
    np.testing.assert_allclose(approx, exact, atol=1e-3)
    assert np.all(np.diff(exact) >= -1e-12)  # more annealing seen, more loss removed
    # the floor u**p: at most 1 - u(t)**p removed, all of it once the relaxation is complete
    assert np.all(exact <= 1 - np.power(np.maximum(u[t - 1], 0), power) + 1e-9)


def test_features_are_linear_time():
    u = wsd(T=1_000_000, warmup=10_000, decay_from=800_000)
    t0 = time.perf_counter()
    lr_area(u)
    annealing_area(u)
    ch = drop_chunks(u)
    multipower_drop(ch, np.linspace(1, 1_000_000, 300).astype(int), 0.11, 0.59, 0.64)
    assert time.perf_counter() - t0 < 2.0  # O(T^2) would take hours


@pytest.mark.parametrize("schedule", ["cosine", "wsd_to_zero", "two_stage", "restarts"])
def test_bucketed_convex_bound_matches_the_direct_sum(schedule):
    if schedule == "cosine":
        u, _ = peak_normalized(warmup_cosine())
    elif schedule == "wsd_to_zero":
        u = wsd()
    elif schedule == "two_stage":
        u = np.r_[np.ones(3000), 0.1 * np.ones(3001)]  # an abrupt drop: the hardest case
    else:
        s = np.arange(6001)
        u = 0.5 * (1 + np.cos(np.pi * (s % 2000) / 2000)) + 1e-3
    t = np.unique(np.r_[np.linspace(2, u.size - 1, 60).astype(int), 3001, 3002, 3010, 3100])
    bias, var = convex_bound(bound_sums(u), t)
    bias_x, var_x = convex_bound_exact(u, t)
    np.testing.assert_allclose(bias, bias_x, rtol=1e-12)
    np.testing.assert_allclose(var, var_x, rtol=1e-3)


def test_convex_bound_of_a_constant_lr_is_harmonic_and_zero_lrs_do_not_move_it():
    # eta = 1 for n steps: bias 1/(2n), variance (1 + H_{n-1}) / 2
    n = np.array([1, 10, 100, 5000])
    bias, var = convex_bound(bound_sums(np.ones(6000)), n)
    harmonic = np.array([np.sum(1.0 / np.arange(1, k)) for k in n])
    np.testing.assert_allclose(bias, 0.5 / n, rtol=1e-12)
    np.testing.assert_allclose(var, 0.5 * (1 + harmonic), rtol=2e-4)
    # a step with LR 0 leaves the iterate, and the bound, where they were
    u = np.r_[np.linspace(1, 0, 1001), np.zeros(500)]
    b, v = convex_bound(bound_sums(u), np.array([1000, 1200, 1500]))
    assert b[0] == b[1] == b[2] and v[0] == v[1] == v[2]


def test_convex_bound_is_cheap_on_a_million_steps():
    u = wsd(T=1_000_000, warmup=10_000, decay_from=800_000)
    t0 = time.perf_counter()
    convex_bound(bound_sums(u), np.linspace(1, 1_000_000, 300).astype(int))
    assert time.perf_counter() - t0 < 2.0  # O(points * log T), not O(points * T)


def test_invalid_schedules_are_rejected():
    for bad in ([1.0], [[1.0, 2.0]], [1.0, np.nan], [1.0, -0.1], [0.0, 0.0], ["a", "b"]):
        with pytest.raises(InvalidInputError):
            as_schedule(bad)
