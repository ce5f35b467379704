"""DDP on CPU (gloo, 2 processes): stop decisions reach every rank at the same step.

Starting the processes costs most of the time, so one two-process job (``strategy="ddp"``,
both ranks started here) runs four fits in a row and reports what each rank saw: a stop on
rank zero's forecast, a stop on a reference, a stop on a divergence only rank 1 sees, and
Optuna pruning with the trial on rank zero only. Inside the workers, every fit checks that
each rank holds rank zero's forecasts, and that a forecast stop quotes ``mon.forecast``.
(That the monitor survives the pickling of
``ddp_spawn`` is checked in tests/test_callback.py, without processes.)
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch.distributed as dist

import lightning_scaling as ls

# measured at every trainer step (Lightning cannot skip a step under DDP)
CURVE = os.path.join(os.path.dirname(ls.__file__), "data", "gemstones_256x23.csv")
STEPS = 100  # of the synthetic curve of the shared job

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

SCRIPT = textwrap.dedent("""
    import json, os, sys, warnings
    import numpy as np, pytorch_lightning as pl
    import lightning_scaling, lightning_scaling.trainer.callback, lightning_scaling.trainer.pruning
    optuna_imported_by_us = "optuna" in sys.modules  # optuna stays optional: only a trial imports it
    import optuna
    import torch.distributed as dist
    from lightning_scaling import ScalingLawMonitor
    from lightning_scaling.monitor import RefitConfig, StopConfig
    from lightning_scaling.trainer.pruning import ForecastPruning
    from lightning_scaling.trainer.replay import ReplayModule

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rank = int(os.environ["LOCAL_RANK"])
    steps, out_dir, db, curve_csv = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    s = np.arange(0, steps + 1, dtype=float)  # L = 2 + 3 s^-0.5 with 0.3% noise: ends at 2.3
    loss = (2.0 + 3.0 * np.maximum(s, 1) ** -0.5) * (1 + 0.003 * np.random.default_rng(0).standard_normal(s.size))
    loss[0] = np.nan
    curve = {"step": s, "tokens": s * 1000.0, "loss": loss}
    kw = dict(accelerator="cpu", devices=2, strategy="ddp", use_distributed_sampler=False, logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    refit = RefitConfig(every=10, background=False)
    out = {"optuna_imported_by_lightning_scaling": optuna_imported_by_us}

    def report(mon, trainer):
        # every rank holds rank zero's forecasts: checked here, against rank zero's own
        mine = json.dumps([f.to_dict(diagnostics=False) for f in mon.forecasts], sort_keys=True)
        assert trainer.strategy.broadcast(mine, src=0) == mine, f"rank {rank}: forecasts differ from rank 0's"
        f = mon.forecast
        if mon.stop_reason.name == "FORECAST_ABOVE":  # the reason quotes the forecast mon.forecast holds
            assert f"is {f.final_loss:.4g}, 90% interval [{f.lower:.4g}, {f.upper:.4g}]" in mon.stopped_reason
            assert f.step <= mon.stopped_step
        return {"step": trainer.global_step, "stopped_step": mon.stopped_step, "reason": mon.stopped_reason,
                "kind": mon.stop_reason.name, "forecasts": len(mon.forecasts),
                "last_forecast_step": None if f is None else f.step}

    # 1. a stop on rank zero's forecast (only rank zero refits); rank 0 writes the run summary
    module = ReplayModule(curve_csv)
    mon = ScalingLawMonitor(stop_if_forecast_above=3.0, refit=RefitConfig(every=5, background=False))
    trainer = pl.Trainer(callbacks=[mon], max_steps=module.n_steps, default_root_dir=out_dir, **kw)
    trainer.fit(module)
    out["forecast"] = dict(report(mon, trainer), n_steps=module.n_steps)

    # 2. a stop on a reference: the verdict is made on rank zero, where the forecasts are
    mon = ScalingLawMonitor(refit=refit, write_summary=False, log_metrics=False, reference=2.0,
                            stop=StopConfig(worse_than_reference=True))
    trainer = pl.Trainer(callbacks=[mon], max_steps=steps, **kw)
    trainer.fit(ReplayModule(curve))
    out["reference"] = report(mon, trainer)

    # 3. a stop on a divergence rank 1 alone sees (its loss turns NaN from step 36, past min_fraction)
    class RankDiverges(ReplayModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if self.global_rank == 1 and self.global_step >= 36 else loss

    mon = ScalingLawMonitor(refit=refit, write_summary=False, log_metrics=False, stop=StopConfig(divergence=True))
    trainer = pl.Trainer(callbacks=[mon], max_steps=steps, **kw)
    trainer.fit(RankDiverges(curve))
    out["divergence"] = report(mon, trainer)

    # 4. pruning (last: TrialPruned ends rank 0's fit with an exception); the trial lives on rank 0 only
    # (SQLite storage, one finished trial to compare with)
    trial = None
    if rank == 0:
        study = optuna.create_study(storage="sqlite:///" + db,
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=30))
        study.add_trial(optuna.trial.create_trial(value=1.9, intermediate_values={s: 1.9 for s in range(10, 201, 10)}))
        trial = study.ask()
    mon = ScalingLawMonitor(refit=refit, write_summary=False, log_metrics=False)
    pruning = ForecastPruning(trial, mon)
    trainer = pl.Trainer(callbacks=[mon, pruning], max_steps=steps, **kw)
    try:
        trainer.fit(ReplayModule(curve))
        raised = False
    except optuna.TrialPruned:
        raised = True
    out["prune"] = [trainer.global_step, pruning.pruned_step, raised, len(pruning.reports)]

    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
        json.dump(out, fh)
    # a gloo process group left to the interpreter's exit aborts it now and then
    # ("terminate called without an active exception", exit status 134) after the work is done
    if dist.is_initialized():
        dist.destroy_process_group()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stops_and_pruning_reach_every_rank_at_the_same_step(tmp_path):
    """One ``strategy="ddp"`` job, both ranks started here, four fits in a row (see SCRIPT)."""
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2",
               NODE_RANK="0", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    args = [sys.executable, str(script), str(STEPS), str(tmp_path), str(tmp_path / "study.db"), str(CURVE)]
    procs = [subprocess.Popen(args, env=dict(env, LOCAL_RANK=str(r), RANK=str(r)), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))

    # 1. forecast stop: only rank 0 fits; rank 1 holds the same forecasts and stopped with the same reason
    f0, f1 = r0["forecast"], r1["forecast"]
    assert f0["step"] == f1["step"] == f0["stopped_step"] == f1["stopped_step"] < f0["n_steps"]
    assert f0["reason"] == f1["reason"] and f0["reason"].startswith("forecast above target")
    assert f0["kind"] == f1["kind"] == "FORECAST_ABOVE"
    assert f0["forecasts"] == f1["forecasts"] > 0 and f0["last_forecast_step"] == f1["last_forecast_step"]
    summary = json.loads((tmp_path / "scaling_summary.json").read_text())  # written by rank 0 only
    assert summary["stopped_reason"] == f0["reason"]

    # 2. reference stop: the verdict is made on rank 0 (it has the forecasts), past min_fraction
    a, b = r0["reference"], r1["reference"]
    assert a["forecasts"] == b["forecasts"] > 0  # rank zero's, handed to rank 1
    assert a["step"] == b["step"] == a["stopped_step"] == b["stopped_step"] and 0.2 * STEPS <= a["step"] < STEPS
    assert a["reason"].startswith("worse than reference") and b["reason"] == a["reason"]
    assert a["kind"] == b["kind"] == "WORSE_THAN_REFERENCE"

    # 3. divergence on rank 1 only: any rank's decision stops all; rank 0 takes rank 1's reason
    a, b = r0["divergence"], r1["divergence"]
    assert a["step"] == b["step"] == a["stopped_step"] == b["stopped_step"] and 36 <= a["step"] < STEPS
    assert a["reason"] == b["reason"] and a["reason"].startswith("divergence")
    assert a["kind"] == b["kind"] == "DIVERGENCE"

    # 4. pruning: reported on rank 0 only, pruned on both at the same step, TrialPruned raised where the trial is
    assert r0["optuna_imported_by_lightning_scaling"] is False  # checked here, where a fresh process is paid for
    assert r0["prune"][0] == r1["prune"][0] == r0["prune"][1] == r1["prune"][1] and 30 <= r0["prune"][0] < STEPS
    assert r0["prune"][2] is True and r1["prune"][2] is False
    assert r0["prune"][3] > 0 and r1["prune"][3] == 0
