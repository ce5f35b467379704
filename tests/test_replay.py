"""ReplayModule: a recorded curve (loss, LR schedule, compute) replayed through a real Trainer."""

import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

import lightning_scaling as ls
from lightning_scaling import ScalingLawMonitor
from lightning_scaling.errors import InvalidInputError
from lightning_scaling.monitor import RefitConfig, StopConfig
from lightning_scaling.trainer.replay import ReplayModule, read_curve_csv

CURVE = Path(__file__).parent / "data" / "replay" / "multipower_25M_wsd_20000_24000.csv"
GEMSTONES = Path(ls.__file__).parent / "data" / "gemstones_256x23.csv"
FAST = dict(enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
            num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu", devices=1, logger=False)


class LRProbe(pl.Callback):
    def __init__(self):
        self.lrs = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_the_recorded_loss_and_schedule_drive_a_real_trainer(tmp_path):
    module = ReplayModule(CURVE)
    raw = read_curve_csv(CURVE)
    assert module.stride == 128 and module.n_steps == math.ceil(23904 / 128)
    probe = LRProbe()
    mon = ScalingLawMonitor(refit=RefitConfig(every=10, background=False), write_summary=False)
    trainer = pl.Trainer(max_steps=module.n_steps, callbacks=[mon, probe], default_root_dir=tmp_path, **FAST)
    trainer.fit(module)
    # every measured loss comes back once, at the trainer step standing for its recorded step
    measured = np.isfinite(raw["loss"])
    history = mon.history.arrays()
    assert mon.history.n_observed == measured.sum()
    steps = list(history["step"])
    seen = {int(s): l for s, l in zip(history["step"], history["loss"]) if history["count"][steps.index(s)] == 1}
    for step, loss in zip(raw["step"][measured], raw["loss"][measured]):
        g = math.ceil(step / module.stride)
        if g in seen:
            assert seen[g] == pytest.approx(loss, rel=1e-6)
    # the LambdaLR scheduler reproduces the recorded schedule (segment means)
    np.testing.assert_allclose(probe.lrs, module.lrs[: len(probe.lrs)], rtol=1e-6)
    assert probe.lrs[0] < probe.lrs[30] and probe.lrs[-1] < 0.2 * max(probe.lrs)  # warm-up and WSD decay
    assert mon.schedule_reason == "schedule from the trainer's scheduler" and mon.schedule_lr is not None
    at_quarter = [f for f in mon.forecasts if f.step <= 0.25 * module.n_steps]
    assert at_quarter and math.isfinite(at_quarter[-1].final_loss)


def test_the_token_axis_stays_true_when_a_trainer_step_stands_for_many(tmp_path):
    raw = read_curve_csv(GEMSTONES)
    module = ReplayModule(GEMSTONES, tokens_per_step=4194304, n_params=48377600)
    assert module.stride == 477 and module.tokens_per_batch == 477 * 4194304
    mon = ScalingLawMonitor(x_axis="tokens", refit=RefitConfig(every=25, background=False), write_summary=False)
    trainer = pl.Trainer(max_steps=module.n_steps, callbacks=[mon], default_root_dir=tmp_path, **FAST)
    trainer.fit(module)
    assert mon.compute.tokens == pytest.approx(raw["tokens"][-1], rel=1e-4)
    assert mon.compute.flops == pytest.approx(6 * 48377600 * raw["tokens"][-1], rel=1e-4)
    h = mon.history.arrays()
    np.testing.assert_allclose(h["tokens"][-5:], raw["tokens"][-5:], rtol=1e-4)
    # a replay without a recorded LR has no scheduler: a constant LR, known to the end, so the
    # forecast runs on the optimizer step and maps the target back to tokens
    assert mon.schedule_reason == "no LR scheduler: constant LR" and mon.schedule_lr is not None
    assert mon.forecast.x_axis == "step"
    assert mon.forecast.target_tokens == pytest.approx(raw["tokens"][-1], rel=1e-4)
    assert mon.compute.tokens_source == "module attribute tokens_per_batch"


def run_replay(tmp_path, perturb=None, **kw):
    module = ReplayModule(CURVE, perturb=perturb)
    mon = ScalingLawMonitor(refit=RefitConfig(every=4, background=False), write_summary=False, **kw)
    trainer = pl.Trainer(max_steps=module.n_steps, callbacks=[mon], default_root_dir=tmp_path, **FAST)
    trainer.fit(module)
    return module, mon


def test_an_injected_fault_is_caught_soon_and_the_clean_curve_raises_nothing(tmp_path, recwarn):
    module, mon = run_replay(tmp_path)
    assert not [w for w in recwarn if issubclass(w.category, ls.BehindTrendWarning)]
    fault_at = 0.4 * module.final_step

    def fault(step, loss):
        return loss * 1.05 if step >= fault_at else loss

    expected = r"% above the .* expected from the trend fitted to the data up to step"
    with pytest.warns(ls.BehindTrendWarning, match=expected) as caught:
        module, mon = run_replay(tmp_path, perturb=fault, stop=StopConfig(behind_trend=True))
    messages = [str(w.message) for w in caught if issubclass(w.category, ls.BehindTrendWarning)]
    assert len(messages) == 1
    warned_at = int(mon.warnings_emitted[0].split(":")[0].split()[1])
    fault_step = math.ceil(fault_at / module.stride)
    assert fault_step <= warned_at <= fault_step + 0.05 * module.n_steps
    assert mon.stopped_reason.startswith("behind trend")
    assert mon.stopped_step <= warned_at + 4


class Events:
    """A sink that keeps the monitor's events."""

    def __init__(self):
        self.events = []

    def on_event(self, trainer, pl_module, monitor, event):
        self.events.append(event)


def test_a_passing_fault_is_one_episode_with_a_start_and_an_end_counted_in_the_summary(tmp_path):
    module = ReplayModule(CURVE)
    start, end = 0.45 * module.final_step, 0.6 * module.final_step

    def fault(step, loss):  # +5% for 15% of the run, then back
        return loss * 1.05 if start <= step < end else loss

    sink = Events()
    with pytest.warns(ls.BehindTrendWarning) as caught:
        module, mon = run_replay(tmp_path, perturb=fault, sinks=[sink])
    assert len([w for w in caught if issubclass(w.category, ls.BehindTrendWarning)]) == 1
    kinds = [e["kind"] for e in sink.events]
    assert kinds == ["behind_trend", "behind_trend_end"], kinds
    began, ended = sink.events
    assert began["detail"]["since_step"] >= math.ceil(start / module.stride)  # "since" never predates the shift
    assert "back on trend" in ended["message"] and ended["step"] > began["step"]
    episodes = mon.summary()["episodes"]
    assert episodes["behind_trend"]["count"] == 1 and episodes["divergence"]["count"] == 0
    assert episodes["behind_trend"]["steps"] == [[began["detail"]["since_step"], began["step"], ended["step"]]]


def test_bad_curves_are_one_clear_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("step,lossy\n1,2\n")
    with pytest.raises(InvalidInputError, match="lacks column"):
        ReplayModule(bad)
    bad.write_text("step,loss\n1,abc\n")
    with pytest.raises(InvalidInputError, match="not a number"):
        ReplayModule(bad)
    with pytest.raises(InvalidInputError, match="at least 2"):
        ReplayModule({"step": [0, 1], "loss": [np.nan, 3.0]})
    assert isinstance(ReplayModule({"step": [1, 2, 3], "loss": [3.0, 2.9, 2.8]}).weight, torch.nn.Parameter)
