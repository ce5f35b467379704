"""Scheduler simulation: the simulated LR equals what the real scheduler produces when stepped,
and the live scheduler / optimizer are left exactly as they were."""

from __future__ import annotations

import copy
import math
import time
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.optim import lr_scheduler as L  # noqa: E402

from lightning_scaling.errors import InvalidInputError  # noqa: E402
from lightning_scaling.trainer.scheduler import (  # noqa: E402
    future_lrs,
    scheduler_calls_before_step,
    simulate_scheduler,
)


def _optimizer(lr=0.1, groups=2):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(groups)]
    return torch.optim.AdamW([{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(params)], lr=lr)


def _warmup_cosine(step: int) -> float:
    # a typical user function: linear warm-up, then cosine to 10%
    if step < 10:
        return (step + 1) / 10
    progress = min((step - 10) / 140, 1.0)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))


SCHEDULERS = {
    "LambdaLR": lambda o: L.LambdaLR(o, _warmup_cosine),
    "LambdaLR_per_group": lambda o: L.LambdaLR(o, [lambda e: 0.99**e, _warmup_cosine]),
    "MultiplicativeLR": lambda o: L.MultiplicativeLR(o, lambda e: 0.98),
    "StepLR": lambda o: L.StepLR(o, step_size=7, gamma=0.5),
    "MultiStepLR": lambda o: L.MultiStepLR(o, milestones=[5, 20, 20, 60], gamma=0.3),
    "ConstantLR": lambda o: L.ConstantLR(o, factor=0.25, total_iters=13),
    "LinearLR": lambda o: L.LinearLR(o, start_factor=0.01, end_factor=1.0, total_iters=30),
    "LinearLR_decay": lambda o: L.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=100),
    "ExponentialLR": lambda o: L.ExponentialLR(o, gamma=0.97),
    "PolynomialLR": lambda o: L.PolynomialLR(o, total_iters=80, power=2.0),
    "CosineAnnealingLR": lambda o: L.CosineAnnealingLR(o, T_max=50),  # runs past T_max
    "CosineAnnealingLR_eta_min": lambda o: L.CosineAnnealingLR(o, T_max=150, eta_min=1e-3),
    "OneCycleLR": lambda o: L.OneCycleLR(o, max_lr=1.0, total_steps=200),
    "OneCycleLR_3phase_linear": lambda o: L.OneCycleLR(
        o, max_lr=[1.0, 2.0], total_steps=200, three_phase=True, anneal_strategy="linear"),
    "CosineAnnealingWarmRestarts": lambda o: L.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=1e-3),
    "SequentialLR_warmup_cosine": lambda o: L.SequentialLR(
        o, [L.LinearLR(o, 0.01, 1.0, 20), L.CosineAnnealingLR(o, 150, eta_min=1e-3)], milestones=[20]),
    "SequentialLR_three": lambda o: L.SequentialLR(
        o, [L.LinearLR(o, 0.1, 1.0, 10), L.ConstantLR(o, 1.0, 1), L.ExponentialLR(o, 0.98)], milestones=[10, 50]),
    "SequentialLR_lambda": lambda o: L.SequentialLR(
        o, [L.ConstantLR(o, 0.1, 5), L.LambdaLR(o, lambda e: 1 - e / 300)], milestones=[5]),
    "ChainedScheduler": lambda o: L.ChainedScheduler([L.ConstantLR(o, 0.1, 5), L.ExponentialLR(o, 0.98)]),
    "ChainedScheduler_warmup_cosine": lambda o: L.ChainedScheduler(
        [L.LinearLR(o, 0.1, 1.0, 10), L.CosineAnnealingLR(o, 100, eta_min=0.01)]),
}


def _stepped(make, n, group):
    """The LR the real scheduler gives after 0..n steps (each after an optimizer step)."""
    opt = _optimizer()
    sched = make(opt)
    out = [opt.param_groups[group]["lr"]]
    for _ in range(n):
        opt.step()
        sched.step()
        out.append(opt.param_groups[group]["lr"])
    return np.array(out, dtype=float)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_simulation_equals_real_stepping_and_leaves_scheduler_untouched(name):
    make = SCHEDULERS[name]
    n = 199
    for group in (0, 1):
        expected = _stepped(make, n, group)
        # the scheduler under test is part-way through its run
        opt = _optimizer()
        sched = make(opt)
        for _ in range(37):
            opt.step()
            sched.step()
        state_before = copy.deepcopy(sched.state_dict())
        groups_before = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
        sim, why = simulate_scheduler(sched, n, group=group)
        assert why == ""
        np.testing.assert_allclose(sim, expected, rtol=1e-12, atol=1e-15)
        assert _same(sched.state_dict(), state_before)
        assert _same([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups], groups_before)
        # and the live scheduler goes on exactly as an undisturbed one
        opt.step()
        sched.step()
        assert opt.param_groups[group]["lr"] == pytest.approx(expected[38], rel=1e-12)


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if callable(a):
        return True  # lambdas are not copied by state_dict
    return a == b


def test_reduce_on_plateau_and_unknown_schedulers_are_reported_not_raised():
    opt = _optimizer()
    sim, why = simulate_scheduler(L.ReduceLROnPlateau(opt), 100)
    assert sim is None and why.startswith("schedule unknown") and "ReduceLROnPlateau" in why

    class Custom(L.LRScheduler):
        def get_lr(self):
            return [g["lr"] * 0.5 for g in self.optimizer.param_groups]

    sim, why = simulate_scheduler(Custom(_optimizer()), 10)
    assert sim is None and "Custom" in why

    def bad(step):
        raise RuntimeError("boom")

    opt = _optimizer()
    sched = L.LambdaLR(opt, lambda e: 1.0)
    sched.lr_lambdas[0] = bad
    sim, why = simulate_scheduler(sched, 10)
    assert sim is None and "boom" in why


def test_hand_changed_lr_is_detected():
    opt = _optimizer()
    sched = L.CosineAnnealingLR(opt, T_max=100)
    for _ in range(5):
        opt.step()
        sched.step()
    opt.param_groups[0]["lr"] *= 0.5
    sim, why = simulate_scheduler(sched, 100)
    assert sim is None and "optimizer holds" in why


def test_one_cycle_past_its_total_steps_is_unknown():
    sched = L.OneCycleLR(_optimizer(), max_lr=1.0, total_steps=50)
    sim, why = simulate_scheduler(sched, 80)
    assert sim is None and "total_steps" in why


def test_bad_group_is_an_invalid_input():
    with pytest.raises(InvalidInputError):
        simulate_scheduler(L.StepLR(_optimizer(), 3), 10, group=5)


def test_a_million_steps_in_well_under_a_second():
    timings = {}
    for name in ("SequentialLR_warmup_cosine", "LambdaLR", "CosineAnnealingLR_eta_min"):
        sched = SCHEDULERS[name](_optimizer())
        t0 = time.perf_counter()
        sim, why = simulate_scheduler(sched, 1_000_000)
        timings[name] = time.perf_counter() - t0
        assert why == "" and sim.shape == (1_000_001,)
    # the target is 1 s; the shared test machine gets some slack
    assert max(timings.values()) < 2.0, timings


def test_calls_before_step_matches_lightning_rules():
    # accumulation 2, 5 batches per epoch: optimizer steps on batches 1, 3, 4 of every epoch
    calls = scheduler_calls_before_step(8, interval="step", frequency=1, batches_per_epoch=5,
                                        accumulate_grad_batches=2)
    np.testing.assert_array_equal(calls, [0, 1, 2, 3, 4, 5, 6, 7, 8])
    # frequency 2 counts batches, not optimizer steps: fires after batches 1 and 3 only
    calls = scheduler_calls_before_step(8, interval="step", frequency=2, batches_per_epoch=5,
                                        accumulate_grad_batches=2)
    np.testing.assert_array_equal(calls, [0, 1, 2, 2, 3, 4, 4, 5, 6])
    calls = scheduler_calls_before_step(7, interval="epoch", frequency=1, batches_per_epoch=3)
    np.testing.assert_array_equal(calls, [0, 0, 0, 1, 1, 1, 2, 2])
    calls = scheduler_calls_before_step(5, interval="step", frequency=3)
    np.testing.assert_array_equal(calls, [0, 0, 0, 1, 1, 1])
    with pytest.raises(InvalidInputError):
        scheduler_calls_before_step(5, interval="batch")


# ------------------------------------------------------------------ a real Lightning Trainer
pl = pytest.importorskip("pytorch_lightning")


class _Module(pl.LightningModule):
    def __init__(self, sched_config):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.sched_config = sched_config
        self.used_lr = []  # LR of each optimizer step, as the optimizer applied it
        self.forecasts = {}

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.layer(x).pow(2).mean()

    def on_before_optimizer_step(self, optimizer):
        self.used_lr.append(optimizer.param_groups[0]["lr"])
        step = self.trainer.global_step
        if step in (0, 9):
            self.forecasts[step] = future_lrs(self.trainer, self.trainer.estimated_stepping_batches - 1)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(14, 4))
        return torch.utils.data.DataLoader(data, batch_size=2)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.5)
        if self.sched_config is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": self.sched_config(opt)}


def _fit(sched_config, accumulate=1, epochs=3):
    module = _Module(sched_config)
    trainer = pl.Trainer(max_epochs=epochs, accumulate_grad_batches=accumulate, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module)
    return module


@pytest.mark.parametrize(
    "config, accumulate",
    [
        (lambda o: {"scheduler": L.SequentialLR(o, [L.LinearLR(o, 0.1, 1.0, 4),
                                                    L.CosineAnnealingLR(o, 20)], [4]),
                    "interval": "step"}, 1),
        (lambda o: {"scheduler": L.StepLR(o, 1, 0.5), "interval": "step", "frequency": 3}, 2),
        (lambda o: {"scheduler": L.ExponentialLR(o, 0.5), "interval": "epoch"}, 1),
        (None, 1),
    ],
    ids=["warmup_cosine_per_step", "step_freq3_accumulate2", "per_epoch", "no_scheduler"],
)
def test_future_lrs_from_a_real_trainer_matches_the_lrs_it_used(config, accumulate):
    module = _fit(config, accumulate)
    used = np.array(module.used_lr)
    for when, (lrs, why) in module.forecasts.items():
        assert lrs is not None, why
        np.testing.assert_allclose(lrs, used, rtol=1e-12, err_msg=f"forecast made at step {when}")
        if config is None:
            assert why == "no LR scheduler: constant LR"


def test_future_lrs_reports_plateau_scheduler():
    module = _fit(lambda o: {"scheduler": L.ReduceLROnPlateau(o), "monitor": "train_loss_missing",
                             "strict": False}, epochs=1)
    lrs, why = module.forecasts[0]
    assert lrs is None and "ReduceLROnPlateau" in why
