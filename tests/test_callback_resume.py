"""Stop at step k, save, resume: the monitor's forecast at k survives the checkpoint exactly."""

import io
import pickle
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lightning_scaling import ScalingLawMonitor
from lightning_scaling.monitor import RefitConfig
from lightning_scaling.trainer.replay import ReplayModule

CURVE = Path(__file__).parent / "data" / "replay" / "multipower_25M_wsd_20000_24000.csv"
FAST = dict(enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
            num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu", devices=1, logger=False)
CORE = ("step", "final_loss", "lower", "upper", "level", "law", "target_step")


class Probe(pl.Callback):
    """Runs after the monitor's on_train_start: what the resumed monitor holds at step k."""

    def __init__(self, mon):
        self.mon = mon

    def on_train_start(self, trainer, pl_module):
        self.restored = self.mon.forecast
        self.refit = self.mon.refit_now()


def monitor(**kw):
    return ScalingLawMonitor(refit=RefitConfig(every=5, background=False), write_summary=False, **kw)


def test_stop_save_resume_gives_the_same_forecast_at_the_stop_step(tmp_path):
    module = ReplayModule(CURVE)
    mon = monitor(stop_if_forecast_above=2.5)  # far below where this run ends (3.28 nats)
    trainer = pl.Trainer(max_steps=module.n_steps, callbacks=[mon], default_root_dir=tmp_path, **FAST)
    trainer.fit(module)
    k = trainer.global_step
    assert mon.stopped_step == k < module.n_steps and mon.stopped_reason.startswith("forecast above target")
    before = mon.forecast
    assert before.step == k
    ckpt = tmp_path / "stopped.ckpt"
    trainer.save_checkpoint(ckpt)

    raw = torch.load(ckpt, weights_only=True)  # plain Python state only
    (state,) = [v for key, v in raw["callbacks"].items() if key.startswith("ScalingLawMonitor")]
    assert len(pickle.dumps(state)) < 1_000_000
    buf = io.BytesIO()
    torch.save(state, buf)
    assert buf.tell() < 1_000_000

    # resume: the restored monitor holds the same forecast, and refitting its restored history at
    # step k (with the schedule looked up again) reproduces it
    mon2 = monitor(stop_if_forecast_above=2.5)
    probe = Probe(mon2)
    trainer2 = pl.Trainer(max_steps=module.n_steps, callbacks=[mon2, probe], default_root_dir=tmp_path, **FAST)
    trainer2.fit(ReplayModule(CURVE), ckpt_path=ckpt)
    after, again = probe.restored, probe.refit
    assert {c: getattr(after, c) for c in CORE} == {c: getattr(before, c) for c in CORE}
    assert after.fit.predict(module.n_steps) == pytest.approx(before.fit.predict(module.n_steps), rel=1e-12)
    for c in CORE:
        expected = getattr(before, c)
        assert getattr(again, c) == (pytest.approx(expected, rel=1e-9) if isinstance(expected, float) else expected), c
    assert [f.final_loss for f in mon2.forecasts[: len(mon.forecasts)]] == pytest.approx(
        [f.final_loss for f in mon.forecasts])
    # the stop rules apply again after a resume: the next decision step stops it again
    assert mon2.stopped_step == k + 5 and mon2.stopped_reason.startswith("forecast above target")

    # and the resumed run keeps going from k with its history intact
    mon3 = monitor()
    trainer3 = pl.Trainer(max_steps=k + 10, callbacks=[mon3], default_root_dir=tmp_path, **FAST)
    trainer3.fit(ReplayModule(CURVE), ckpt_path=ckpt)
    assert mon3.history.n_observed == mon.history.n_observed + 10
    assert mon3.compute.steps == k + 10 and mon3.forecast.step == k + 10
