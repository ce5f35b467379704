import json
import os
import sys
import time

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_scaling import ScalingLawMonitor
from lightning_scaling.errors import InvalidInputError
from lightning_scaling.monitor.history import LossHistory
from lightning_scaling.monitor.refit import RefitRunner
from lightning_scaling.trainer.compute import ComputeCounter
from lightning_scaling.trainer.refits import RefitJob, refit_job


def a_job(planned=3000, schedule=True) -> RefitJob:
    rng = np.random.default_rng(0)
    history = LossHistory()
    for s in range(1, 601):
        history.append(step=s, key=s, loss=2 + 5 * s ** -0.3 + 0.01 * rng.standard_normal(), tokens=512.0 * s)
    lr = 1e-3 * 0.5 * (1 + np.cos(np.pi * np.arange(planned + 1) / planned)) if schedule else None
    return refit_job(history, x_axis="step", planned_steps=planned, schedule_lr=lr, schedule_reason="cosine",
                     level=0.9, target_loss=2.3, band_level=0.5, compute=ComputeCounter())


def comparable(forecast) -> str:
    d = forecast.to_dict()
    for timing in ("fit_seconds", "monitor_fit_seconds"):
        d["diagnostics"].pop(timing, None)
    return json.dumps(d, sort_keys=True)  # NaN == NaN here


def run(runner: RefitRunner, job):
    assert runner.submit(job)
    runner.wait(timeout=60)
    return runner.poll()


def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_a_refit_in_the_helper_process_is_the_inline_refit():
    job = a_job()
    runner = RefitRunner(mode="process")
    first, error, cpu = run(runner, job)
    second, _, _ = run(runner, job)  # the schedule goes over the pipe once
    assert error is None and 0 < cpu < 10 and runner.process_error is None
    assert comparable(first) == comparable(job()) == comparable(second)
    assert first.fit.params == job().fit.params and runner.helper_cpu_seconds > runner.cpu_seconds / 2
    pid = runner._helper.pid
    runner.close()
    assert gone(pid)


def test_the_helper_reports_a_refits_error_as_the_jobs():
    job = a_job()
    job.kwargs["level"] = 2.0  # the interval refuses it
    _, error, _ = run(RefitRunner(mode="process"), job)
    assert isinstance(error, InvalidInputError)


def test_jobs_the_helper_cannot_run_and_helpers_that_cannot_start_go_to_the_thread(monkeypatch):
    runner = RefitRunner(mode="process")
    assert run(runner, lambda: 42)[:2] == (42, None) and runner._helper is None  # a plain callable
    monkeypatch.setattr(sys, "executable", "")
    job = a_job(schedule=False)
    forecast, error, _ = run(runner, job)
    assert error is None and comparable(forecast) == comparable(job())
    assert "no Python executable" in runner.process_error


def test_a_helper_that_dies_sends_the_next_refits_to_the_thread():
    job = a_job(schedule=False)
    runner = RefitRunner(mode="process")
    run(runner, job)
    runner._helper.process.kill()
    runner._helper.process.wait()
    forecast, error, _ = run(runner, job)
    assert error is None and comparable(forecast) == comparable(job())
    assert runner.process_error  # a broken pipe, or "the refit helper ended"


def test_a_monitored_run_refits_in_the_helper_and_ends_it(tmp_path):
    class Fitted(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self.lin(x), y) + 1.0 / (1 + self.global_step) ** 0.5

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    mon = ScalingLawMonitor(write_summary=False)
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    trainer = pl.Trainer(max_steps=200, callbacks=[mon], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(Fitted(), DataLoader(data, batch_size=8))
    runner = mon.refit_scheduler.runner
    assert runner.mode == "process" and runner.process_error is None and runner.helper_cpu_seconds > 0
    assert mon.refit_scheduler.refits > 1 and mon.forecast.step == 200 and runner._helper is None
