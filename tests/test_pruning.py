"""Optuna sweep pruning on the forecast (issue 7, part 4), in real Trainer runs of replayed curves.

The DDP case (trial on rank 0 only, every rank pruned at the same step) and the check that
importing lightning_scaling (pruning included) never imports optuna are in tests/test_ddp.py,
which pays for the fresh processes once.
"""

import logging
import multiprocessing
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl

from lightning_scaling import ScalingLawMonitor
from lightning_scaling.errors import InvalidInputError
from lightning_scaling.monitor import RefitConfig
from lightning_scaling.trainer.pruning import ForecastPruning
from lightning_scaling.trainer.replay import ReplayModule

optuna = pytest.importorskip("optuna")

FAST = dict(enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
            num_sanity_val_steps=0, accelerator="cpu", devices=1, logger=False)
STEPS = 160
INLINE = RefitConfig(every=10, background=False)  # refits on the training thread: deterministic


def power_curve(E, A, alpha=0.5, n=STEPS, noise=0.003, seed=0):
    """A recorded curve L(s) = E + A s^-alpha with 0.3% multiplicative noise."""
    s = np.arange(0, n + 1, dtype=float)
    loss = (E + A * np.maximum(s, 1) ** -alpha) * (1 + noise * np.random.default_rng(seed).standard_normal(s.size))
    loss[0] = np.nan
    return {"step": s, "tokens": s * 1000.0, "loss": loss}


# Two ordinary runs finish first. Then a slow starter that ends best (at step 40 its loss is
# above theirs, at the end it is the lowest), then a run that is worse all along.
CURVES = [
    dict(E=2.0, A=2.0, seed=1),   # ends 2.158
    dict(E=2.01, A=2.0, seed=2),  # ends 2.168
    dict(E=1.8, A=4.0, seed=3),   # ends 2.116: the best; at step 40 2.43 against 2.32
    dict(E=2.3, A=2.0, seed=4),   # ends 2.458: the worst
]


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("pytorch_lightning", "lightning_fabric", "lightning_scaling"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="pytorch_lightning")
        warnings.filterwarnings("ignore", module="lightning_fabric")
        yield


def run_study(storage=None, value="forecast", curves=CURVES):
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=30)
    study = optuna.create_study(storage=storage, pruner=pruner)
    callbacks = {}

    def objective(trial):
        module = ReplayModule(power_curve(**curves[trial.number]))
        monitor = ScalingLawMonitor(refit=INLINE, write_summary=False, log_metrics=False)
        pruning = ForecastPruning(trial, value=value)  # finds the monitor in the trainer's callbacks
        callbacks[trial.number] = (monitor, pruning)
        trainer = pl.Trainer(max_steps=module.n_steps, callbacks=[monitor, pruning], **FAST)
        trainer.fit(module)
        return monitor.summary(trainer)["final_loss"]

    study.optimize(objective, n_trials=len(curves))
    return study, callbacks


def test_forecast_pruning_keeps_the_slow_starter_that_ends_best_where_current_loss_pruning_drops_it():
    study, cbs = run_study(value="forecast")
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 3 + [optuna.trial.TrialState.PRUNED]
    assert study.best_trial.number == 2
    # reported: the median of the newest 3 forecasts, at every decision step (refit) from the
    # monitor's min_fraction (0.2 of 160 steps) on
    monitor, pruning = cbs[2]
    reported = study.trials[2].intermediate_values
    assert sorted(reported) == list(range(40, STEPS + 1, 10))
    by_step = {f.step: f.final_loss for f in monitor.forecasts}
    assert reported[STEPS] == pytest.approx(np.median([by_step[s] for s in (140, 150, 160)]))
    assert reported[40] == pytest.approx(np.median([by_step[s] for s in (20, 30, 40)]))
    # the worst run stopped at its first report; the trial holds the reason
    monitor, pruning = cbs[3]
    assert pruning.pruned_step == 40 and monitor.history.last_step == 40
    assert "forecast final loss" in pruning.message and "MedianPruner" in pruning.message

    # the same study on the current loss (Optuna's own approach) prunes the run that ends best
    study, cbs = run_study(value="loss")
    assert study.trials[2].state == optuna.trial.TrialState.PRUNED
    assert cbs[2][1].pruned_step == 40
    assert study.trials[2].intermediate_values[40] > study.trials[0].intermediate_values[40]


def test_sqlite_storage_holds_the_reports_and_the_pruned_state(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    curves = [CURVES[0], CURVES[1], CURVES[3]]
    study, cbs = run_study(storage=url, curves=curves)
    reloaded = optuna.load_study(study_name=study.study_name, storage=url)
    states = [t.state for t in reloaded.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]
    pruned = reloaded.trials[2]
    assert dict(pruned.intermediate_values) == pytest.approx(dict(cbs[2][1].reports))
    assert max(pruned.intermediate_values) == 40


def test_check_pruned_after_fit_when_not_raising():
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    flat = {s: 1.5 for s in range(10, STEPS + 1, 10)}
    study.add_trial(optuna.trial.create_trial(value=1.5, intermediate_values=flat))
    trial = study.ask()
    monitor = ScalingLawMonitor(refit=INLINE, write_summary=False, log_metrics=False)
    pruning = ForecastPruning(trial, monitor, raise_on_prune=False, min_fraction=0.25, smoothing=1)
    module = ReplayModule(power_curve(**CURVES[0]))
    trainer = pl.Trainer(max_steps=module.n_steps, callbacks=[monitor, pruning], **FAST)
    trainer.fit(module)  # does not raise
    assert pruning.pruned_step == trainer.global_step == 40  # the first report comes at 25% of 160 steps
    assert pruning.reports == [(40, pytest.approx(monitor.forecasts[-1].final_loss))]  # smoothing=1: the newest
    with pytest.raises(optuna.TrialPruned, match="step 40"):
        pruning.check_pruned()


def test_bad_configurations_are_one_clear_error():
    trial = optuna.create_study().ask()
    with pytest.raises(InvalidInputError, match="value must be"):
        ForecastPruning(trial, value="val_loss")
    with pytest.raises(InvalidInputError, match="smoothing"):
        ForecastPruning(trial, smoothing=0)
    with pytest.raises(InvalidInputError, match="min_fraction"):
        ForecastPruning(trial, min_fraction=1.5)
    with pytest.raises(InvalidInputError, match="optuna trial"):
        ForecastPruning(object())
    module = ReplayModule(power_curve(**CURVES[0]))
    with pytest.raises(InvalidInputError, match="needs a ScalingLawMonitor"):
        pl.Trainer(max_steps=5, callbacks=[ForecastPruning(trial)], **FAST).fit(module)
    with pytest.raises(InvalidInputError, match="rank 0 must hold the optuna trial"):
        pl.Trainer(max_steps=5, callbacks=[ScalingLawMonitor(), ForecastPruning(None)], **FAST).fit(module)


def test_lightning_pytorch_twin_prunes_the_same_way():
    lp = pytest.importorskip("lightning.pytorch")
    from lightning_scaling.lightning import ForecastPruning as LPForecastPruning
    from lightning_scaling.lightning import ReplayModule as LPReplayModule
    from lightning_scaling.lightning import ScalingLawMonitor as LPScalingLawMonitor

    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=30))

    def objective(trial):
        module = LPReplayModule(power_curve(**CURVES[[0, 1, 3][trial.number]]))
        monitor = LPScalingLawMonitor(refit=INLINE, write_summary=False, log_metrics=False)
        pruning = LPForecastPruning(trial)
        assert isinstance(pruning, lp.Callback)
        trainer = lp.Trainer(max_steps=module.n_steps, callbacks=[monitor, pruning], **FAST)
        trainer.fit(module)
        return monitor.summary(trainer)["final_loss"]

    study.optimize(objective, n_trials=3)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]


def _setup_in_a_forked_child(pruning, trainer, conn):
    try:
        pruning.setup(trainer, None, "fit")
        conn.send("no error")
    except InvalidInputError as exc:
        conn.send(str(exc))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method")
def test_a_spawn_based_strategy_is_refused_where_the_trial_would_be_a_copy():
    # ddp_spawn and its kin train in child processes that multiprocessing made, each with a copy of
    # the trial; the same trainer set up in this process (as strategy="ddp" would) is accepted
    trial = optuna.create_study().ask()
    monitor = ScalingLawMonitor()
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", **{
        k: v for k, v in FAST.items() if k not in ("accelerator", "devices")})
    assert trainer.world_size == 2
    ForecastPruning(trial, monitor).setup(trainer, None, "fit")
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(target=_setup_in_a_forked_child,
                                                         args=(ForecastPruning(trial, monitor), trainer, theirs))
    child.start()
    message = ours.recv() if ours.poll(60) else "no answer"
    child.join(10)
    assert "spawn-based strategies" in message and "strategy='ddp'" in message
