"""ScalingLawMonitor in real (tiny) Trainer runs, pytorch_lightning namespace."""

import collections
import csv
import json
import math
import pickle
import threading
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_scaling as ls
from lightning_scaling import ScalingLawMonitor
from lightning_scaling.errors import InvalidInputError
from lightning_scaling.monitor import RefitConfig, StopConfig, StopReason, TrendConfig

FAST = dict(enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
            num_sanity_val_steps=0, accelerator="cpu", devices=1)


def regression_data(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    y = x @ torch.randn(16, 1, generator=g) + 0.3 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


class Regression(pl.LightningModule):
    """A linear model learning a noisy linear map: a falling, flattening loss."""

    def __init__(self, output="tensor", lr=0.02):
        super().__init__()
        self.layer = nn.Linear(16, 1)
        self.output = output
        self.lr = lr
        self.losses = []

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.losses.append(float(loss.detach()))
        return {"loss": loss, "n": x.shape[0]} if self.output == "dict" else loss

    def train_dataloader(self):
        return DataLoader(regression_data(), batch_size=8)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def test_zero_configuration_refits_in_the_background_and_ends_with_a_fit_of_the_whole_run(tmp_path):
    mon = ScalingLawMonitor()
    trainer = pl.Trainer(max_steps=150, callbacks=[mon], logger=False, default_root_dir=tmp_path, **FAST)
    trainer.fit(Regression())
    assert mon.refit_scheduler.runner.background and mon.forecasts and mon.forecast.step == 150
    assert (tmp_path / "scaling_summary.json").exists()


def test_forecasts_logs_and_the_run_summary(tmp_path):
    mon = ScalingLawMonitor(refit=RefitConfig(background=False))  # inline refits: what is logged when is deterministic
    logger = CSVLogger(tmp_path, name="run")
    trainer = pl.Trainer(max_steps=120, callbacks=[mon], logger=logger, log_every_n_steps=10, **FAST)
    trainer.fit(Regression())
    f = mon.forecast
    assert f is not None and mon.forecasts[-1] is f
    assert f.target_step == 120 and f.level == 0.9 and f.law != "none"
    assert f.lower <= f.final_loss <= f.upper
    assert mon.stopped_reason is None
    assert mon.history.n_observed == 120
    assert mon.compute.steps == 120 and mon.compute.samples == 120 * 8
    assert mon.compute.flops_source.startswith("measured") and mon.compute.flops == 120 * 3 * 2 * 8 * 16
    metrics = trainer.callback_metrics
    for name in ("scaling/forecast_final_loss", "scaling/forecast_lower", "scaling/forecast_upper",
                 "scaling/flops", "scaling/loss_smoothed", "scaling/behind_trend"):
        assert name in metrics, name
    logged = (tmp_path / "run" / "version_0" / "metrics.csv").read_text()
    assert "scaling/forecast_final_loss" in logged and "scaling/flops" in logged

    summary = json.loads((tmp_path / "run" / "version_0" / "scaling_summary.json").read_text())
    assert summary["format"] == "lightning-scaling/run-summary" and summary["version"] == 1
    assert summary["run"] == "run/0" and summary["steps"] == 120 and summary["x_axis"] == "step"
    assert summary["n_params"] == 17.0 and summary["tokens"] is None and summary["flops"] > 0
    assert len(summary["curve"]["step"]) == len(summary["curve"]["loss"]) == 120
    assert summary["curve"]["tokens"] is None and summary["curve"]["flops"] is not None
    assert summary["forecast"]["final_loss"] == pytest.approx(f.final_loss)
    assert len(summary["forecasts"]) == len(mon.forecasts)
    assert summary["fit"]["law"] == f.law
    assert ls.CurveFit.from_dict(summary["fit"]).predict(120) == pytest.approx(f.fit.predict(120))
    assert summary["stopped_reason"] is None and summary == mon.summary(trainer)


def test_the_summarys_final_loss_is_the_mean_loss_of_the_last_two_and_a_half_percent_of_the_steps(tmp_path):
    mon = ScalingLawMonitor(refit=RefitConfig(background=False))
    trainer = pl.Trainer(max_steps=400, callbacks=[mon], logger=False, default_root_dir=tmp_path, **FAST)
    model = Regression()
    trainer.fit(model)
    assert len(model.losses) == 400
    assert mon.summary(trainer)["final_loss"] == pytest.approx(sum(model.losses[-10:]) / 10, rel=1e-6)


def test_gradient_accumulation_records_the_mean_of_each_optimizer_steps_micro_batches(tmp_path):
    mon = ScalingLawMonitor(refit=RefitConfig(every=5, background=False))
    model = Regression(output="dict")
    trainer = pl.Trainer(max_steps=12, accumulate_grad_batches=4, callbacks=[mon], logger=False,
                         default_root_dir=tmp_path, **FAST)
    trainer.fit(model)
    assert mon.compute.micro_batches == 48 and mon.compute.steps == 12
    recorded = [p[4] for p in mon.history.last(12)]
    expected = [sum(model.losses[i:i + 4]) / 4 for i in range(0, 48, 4)]
    assert recorded == pytest.approx(expected, rel=1e-6)
    assert [p[0] for p in mon.history.last(12)] == list(range(1, 13))


class TwoLoaders(Regression):
    def train_dataloader(self):
        return {"a": DataLoader(regression_data(seed=1), batch_size=4),
                "b": DataLoader(regression_data(seed=2), batch_size=4)}

    def training_step(self, batch, batch_idx):
        losses = [nn.functional.mse_loss(self(x), y) for x, y in batch.values()]
        return sum(losses) / 2

    def val_dataloader(self):
        return [DataLoader(regression_data(64, seed=3), batch_size=32),
                DataLoader(regression_data(64, seed=4), batch_size=32)]

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))


def test_multiple_dataloaders_and_a_monitored_validation_metric(tmp_path):
    zero = ScalingLawMonitor(refit=RefitConfig(every=10, background=False))
    val = ScalingLawMonitor("val_loss/dataloader_idx_1", refit=RefitConfig(every=10, background=False))
    trainer = pl.Trainer(max_steps=60, val_check_interval=6, callbacks=[zero, val], logger=False,
                         default_root_dir=tmp_path, **FAST)
    trainer.fit(TwoLoaders())
    assert zero.history.n_observed == 60 and zero.compute.micro_batches == 60
    # one observation per validation run, at the step it ran
    assert val.history.n_observed == 10
    assert [p[0] for p in val.history.last(10)] == [6 * k for k in range(1, 11)]
    assert val.summary()["loss_name"] == "val_loss/dataloader_idx_1"
    assert val.forecast is not None and val.forecast.step == 60  # the final refit saw the last one


class Manual(Regression):
    def __init__(self, returns_loss: bool, logs_loss: bool):
        super().__init__()
        self.automatic_optimization = False
        self.returns_loss, self.logs_loss = returns_loss, logs_loss

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.losses.append(float(loss.detach()))
        if self.logs_loss:
            self.log("train_loss", loss)
        return loss if self.returns_loss else None


@pytest.mark.parametrize("returns_loss, logs_loss", [(True, False), (False, True)])
def test_manual_optimisation(tmp_path, returns_loss, logs_loss):
    mon = ScalingLawMonitor(refit=RefitConfig(every=10, background=False))
    model = Manual(returns_loss, logs_loss)
    trainer = pl.Trainer(max_steps=40, callbacks=[mon], logger=False, default_root_dir=tmp_path, **FAST)
    trainer.fit(model)
    assert mon.history.n_observed == 40
    assert [p[4] for p in mon.history.last(40)] == pytest.approx(model.losses, rel=1e-6)
    assert mon.summary()["loss_name"] == ("training_step loss" if returns_loss else "train_loss")
    assert mon.forecast is not None


class ManualMapping(Manual):
    """Returns its loss in a Mapping that is not a dict (Lightning's manual loop hands it on as it is)."""

    def training_step(self, batch, batch_idx):
        return collections.UserDict({"loss": super().training_step(batch, batch_idx), "n": len(batch[0])})


def test_a_loss_in_a_mapping_that_is_not_a_dict_is_read(tmp_path):
    mon = ScalingLawMonitor(refit=RefitConfig(every=10, background=False), write_summary=False)
    model = ManualMapping(returns_loss=True, logs_loss=False)
    trainer = pl.Trainer(max_steps=60, callbacks=[mon], logger=False, default_root_dir=tmp_path, **FAST)
    trainer.fit(model)  # before the fix: "found no loss to follow" after 50 steps
    assert mon.history.n_observed == 60 and mon.loss_name == "training_step loss"
    assert [p[4] for p in mon.history.last(60)] == pytest.approx(model.losses, rel=1e-6)


def test_a_module_that_logs_no_loss_gets_one_clear_error_naming_the_fix(tmp_path):
    trainer = pl.Trainer(max_steps=60, callbacks=[ScalingLawMonitor()], logger=False, default_root_dir=tmp_path,
                         **FAST)
    with pytest.raises(InvalidInputError) as err:
        trainer.fit(Manual(returns_loss=False, logs_loss=False))
    message = str(err.value)
    assert "no loss" in message and "self.log('train_loss', loss)" in message
    assert "ScalingLawMonitor(monitor='train_loss')" in message


def test_a_monitored_metric_that_is_never_logged_is_an_error_listing_the_logged_ones(tmp_path):
    trainer = pl.Trainer(max_steps=20, val_check_interval=5, callbacks=[ScalingLawMonitor("val_los")],
                         logger=False, default_root_dir=tmp_path, **FAST)
    with pytest.raises(InvalidInputError, match=r"monitor='val_los'.*'val_loss/dataloader_idx_0'"):
        trainer.fit(TwoLoaders())


def test_a_misspelled_training_metric_is_an_error_at_the_first_logged_step(tmp_path):
    trainer = pl.Trainer(max_steps=300, callbacks=[ScalingLawMonitor("train_los")], logger=False,
                         default_root_dir=tmp_path, **FAST)
    with pytest.raises(InvalidInputError, match=r"monitor='train_los'.*Did you mean 'train_loss'\?"):
        trainer.fit(LogsItsLoss())
    assert trainer.global_step == 1


def test_an_unlogged_metric_is_said_at_the_first_logged_step_and_once(tmp_path):
    mon = ScalingLawMonitor("does_not_exist", refit=RefitConfig(every=10, background=False))
    trainer = pl.Trainer(max_steps=60, callbacks=[mon], logger=False, default_root_dir=tmp_path, **FAST)
    with pytest.warns(ls.ScalingWarning, match=r"no metric named 'does_not_exist' has been logged by step 1,.*"
                                               r"Logged metrics: 'train_loss'"):
        trainer.fit(LogsItsLoss())
    assert len(mon.warnings_emitted) == 1 and mon.warnings_emitted[0].startswith("step 1:")


def test_without_a_logger_or_a_chosen_root_dir_no_summary_lands_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mon = ScalingLawMonitor(refit=RefitConfig(every=10, background=False))
    pl.Trainer(max_steps=20, callbacks=[mon], logger=False, **FAST).fit(Regression())
    assert mon.summary_path is None and not list(tmp_path.rglob("scaling_summary.json"))
    assert mon.summary()["steps"] == 20


def test_fast_dev_run_does_nothing(tmp_path):
    mon = ScalingLawMonitor()
    trainer = pl.Trainer(fast_dev_run=3, callbacks=[mon], default_root_dir=tmp_path, **{
        k: v for k, v in FAST.items() if k != "num_sanity_val_steps"})
    trainer.fit(Regression())
    assert mon.history.n_observed == 0 and mon.forecast is None and mon.compute.micro_batches == 0
    assert not list(tmp_path.rglob("scaling_summary.json"))


class LogsItsLoss(Regression):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return loss


@pytest.mark.parametrize("make, accumulate, every", [
    (LogsItsLoss, 1, 7),
    (LogsItsLoss, 2, 3),  # an optimizer step every second batch
    (lambda: Manual(returns_loss=True, logs_loss=True), 1, 5),  # manual optimization: every batch counts
])
def test_scaling_metrics_are_logged_at_the_steps_lightning_writes(tmp_path, make, accumulate, every):
    mon = ScalingLawMonitor(refit=RefitConfig(every=10, background=False), write_summary=False)
    logger = CSVLogger(tmp_path, name="run")
    trainer = pl.Trainer(max_steps=70, accumulate_grad_batches=accumulate, log_every_n_steps=every, callbacks=[mon],
                         logger=logger, **FAST)  # 64 batches an epoch: the logged steps cross an epoch's end
    trainer.fit(make())
    rows = list(csv.DictReader(open(tmp_path / "run" / "version_0" / "metrics.csv")))
    written = {int(r["step"]) for r in rows if r.get("train_loss")}
    ours = {int(r["step"]) for r in rows if r.get("scaling/flops")}
    assert ours == written and len(written) >= 70 // every - 1  # the module's loss and ours, in the same rows
    assert {int(r["step"]) for r in rows if r.get("scaling/forecast_final_loss")} <= written


def test_the_monitor_pickles_for_ddp_spawn_even_with_its_refit_thread_busy(tmp_path):
    mon = ScalingLawMonitor()  # background refits: a thread, a lock and a condition inside
    runner = mon.refit_scheduler.runner
    gate = threading.Event()
    assert runner.submit(gate.wait) and runner.busy
    copy = pickle.loads(pickle.dumps(mon))  # what ddp_spawn does to the callbacks before it starts the workers
    gate.set()
    assert copy.refit_scheduler.runner.background and not copy.refit_scheduler.runner.busy
    pl.Trainer(max_steps=40, callbacks=[copy], logger=False, default_root_dir=tmp_path, **FAST).fit(Regression())
    assert copy.history.n_observed == 40 and copy.forecast.step == 40 and copy.refit_scheduler.refits > 0


class Diverging(Regression):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step >= 30 else loss


def test_nan_losses_warn_and_stop_on_divergence(tmp_path):
    mon = ScalingLawMonitor(refit=RefitConfig(every=8, background=False), stop=StopConfig(divergence=True))
    trainer = pl.Trainer(max_steps=200, callbacks=[mon], logger=False, default_root_dir=tmp_path, **FAST)
    with pytest.warns(ls.DivergenceWarning, match="the loss is nan at step 31"):
        trainer.fit(Diverging())
    assert mon.stopped_reason.startswith("divergence: the loss is nan")
    assert trainer.global_step == mon.stopped_step == 40  # the first decision step at min_fraction=0.2
    assert mon.history.n_dropped == 10  # steps 31..40: non-finite losses never enter the history
    summary = json.loads((tmp_path / "scaling_summary.json").read_text())
    assert summary["stopped_reason"] == mon.stopped_reason and summary["warnings"]


def test_a_refit_that_raises_is_a_warning_and_training_goes_on(tmp_path, monkeypatch):
    import lightning_scaling.core.curve as curve

    def broken(*args, **kwargs):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(curve, "fit_curve", broken)
    mon = ScalingLawMonitor(refit=RefitConfig(every=10, background=False))
    trainer = pl.Trainer(max_steps=30, callbacks=[mon], logger=False, default_root_dir=tmp_path, **FAST)
    with pytest.warns(ls.FitFailedWarning, match="solver exploded"):
        trainer.fit(Regression())
    assert trainer.global_step == 30 and mon.forecast is None


class RecordingSink:
    def __init__(self):
        self.calls = []

    def setup(self, trainer, pl_module, monitor):
        self.calls.append("setup")

    def on_refit(self, trainer, pl_module, monitor, forecast):
        assert forecast is monitor.forecast
        self.calls.append("refit")

    def on_observation(self, trainer, pl_module, monitor, observations):
        assert all({"step", "loss", "tokens", "flops"} <= set(o) for o in observations)
        self.calls.append("obs")

    def on_train_end(self, trainer, pl_module, monitor):
        self.calls.append("end")


class BrokenSink:
    def on_refit(self, *args):
        raise ValueError("sink bug")


def test_sinks_are_called_and_a_failing_sink_is_only_a_warning(tmp_path):
    good = RecordingSink()
    mon = ScalingLawMonitor(refit=RefitConfig(every=10, background=False), sinks=[BrokenSink()])
    mon.add_sink(good)
    trainer = pl.Trainer(max_steps=40, callbacks=[mon], logger=False, default_root_dir=tmp_path, **FAST)
    with pytest.warns(ls.ScalingWarning, match="BrokenSink.on_refit raised ValueError: sink bug"):
        trainer.fit(Regression())
    assert good.calls[0] == "setup" and good.calls[-1] == "end"
    assert good.calls.count("refit") == len(mon.forecasts) == 4 and "obs" in good.calls


class TinyLM(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(32, 16)
        self.mlp = nn.Linear(16, 16)
        self.head = nn.Linear(16, 32)

    def forward(self, idx):
        return self.head(torch.relu(self.mlp(self.emb(idx))))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x).flatten(0, 1), y.flatten())

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 32, (256, 12), generator=g)
        return DataLoader(TensorDataset(x, (x + 1) % 32), batch_size=4)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_a_token_model_counts_tokens_and_flops_and_forecasts_on_the_flops_axis(tmp_path):
    mon = ScalingLawMonitor(x_axis="flops", refit=RefitConfig(every=10, background=False), target_loss=1.0)
    trainer = pl.Trainer(max_steps=50, callbacks=[mon], logger=False, default_root_dir=tmp_path, **FAST)
    trainer.fit(TinyLM())
    assert mon.compute.tokens == 50 * 4 * 12
    per_batch = 3 * 2 * 4 * 12 * (16 * 16 + 16 * 32)
    assert mon.compute.flops == 50 * per_batch
    f = mon.forecast
    assert f.x_axis in ("flops", "step")  # "step" only when a schedule-aware fit was used
    assert f.flops == 50 * per_batch and f.target_flops == pytest.approx(50 * per_batch)
    assert f.target_tokens == pytest.approx(2400)
    if math.isfinite(f.steps_to_target):
        assert f.tokens_to_target == pytest.approx(48 * f.steps_to_target, rel=1e-6)
    assert mon.summary()["n_params"] == 16 * 16 + 16 + 16 * 32 + 32


@pytest.mark.parametrize("kwargs, match", [
    (dict(x_axis="epochs"), "x_axis"),
    (dict(level=1.5), "level"),
    (dict(refit_every=0), "refit_every"),
    (dict(target_loss=-1.0), "target_loss"),
    (dict(target_loss=math.nan), "target_loss"),
    (dict(stop_if_forecast_above=-3.0), "stop_if_forecast_above"),
    (dict(total_steps=0), "total_steps"),
    (dict(monitor=3), "monitor"),
    (dict(sinks=object()), "sinks"),
    (dict(write_summary="yes"), "write_summary"),
    (dict(flops_per_batch=-1.0), "flops_per_batch"),
    (dict(reference=[1.0, 2.0]), "reference must be"),
    (dict(stop=StopConfig(worse_than_reference=True)), "needs reference="),
    (dict(trend=StopConfig()), "trend= must be a TrendConfig"),
    (dict(stop_if_forecast_above=3.0, stop=StopConfig(forecast_above=2.0)), "both given"),
    (dict(patience=3, trend=TrendConfig(smoothing=10)), "both given"),
])
def test_bad_options_are_one_clear_error(kwargs, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(InvalidInputError, match=match):
            ScalingLawMonitor(**kwargs)


@pytest.mark.parametrize("make, match", [
    (lambda: TrendConfig(min_excess=-1.0), "min_excess"),
    (lambda: TrendConfig(min_excess=math.nan), "min_excess"),
    (lambda: TrendConfig(patience=0), "patience"),
    (lambda: TrendConfig(lag=1.0), "lag"),
    (lambda: StopConfig(forecast_patience=0), "forecast_patience"),
    (lambda: StopConfig(forecast_patience=-1), "forecast_patience"),
    (lambda: StopConfig(min_fraction=1.5), "min_fraction"),
    (lambda: StopConfig(behind_trend="yes"), "behind_trend"),
    (lambda: RefitConfig(max_overhead=0.0), "max_overhead"),
    # the old flat spellings reach the same checks
    (lambda: ScalingLawMonitor(min_excess=-1.0), "min_excess"),
    (lambda: ScalingLawMonitor(min_excess=math.nan), "min_excess"),
    (lambda: ScalingLawMonitor(forecast_patience=0), "forecast_patience"),
    (lambda: ScalingLawMonitor(forecast_patience=-1), "forecast_patience"),
])
def test_bad_rules_are_one_clear_error(make, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(InvalidInputError, match=match):
            make()


def test_the_old_flat_options_map_onto_the_configs_and_warn_with_the_new_spelling():
    with pytest.warns(DeprecationWarning) as caught:
        mon = ScalingLawMonitor(patience=4, smoothing=20, min_excess=0.02, trend_lag=0.1, trend_after=0.2,
                                trend_level=0.6, stop_when_behind_trend=True, stop_on_divergence=True,
                                min_fraction=0.3, forecast_patience=3, max_overhead=0.05, background=False,
                                reference=2.0, stop_if_worse_than_reference=True)
    messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
    assert len(messages) == 13 and all(w.filename == __file__ for w in caught)
    assert ("ScalingLawMonitor(stop_when_behind_trend=...) is deprecated; use stop=StopConfig(behind_trend=...)"
            in messages)
    assert "ScalingLawMonitor(trend_after=...) is deprecated; use trend=TrendConfig(start=...)" in messages
    assert mon.trend_config == TrendConfig(smoothing=20, patience=4, min_excess=0.02, lag=0.1, start=0.2, level=0.6)
    assert mon.stop_config == StopConfig(behind_trend=True, divergence=True, worse_than_reference=True,
                                         min_fraction=0.3, forecast_patience=3)
    assert mon.refit_config == RefitConfig(max_overhead=0.05, background=False)
    assert (mon.trend.window, mon.trend.patience, mon.trend.level) == (20, 4, 0.6)
    assert mon.stops.reference_check.patience == 3
    # the common shorthands stay silent, and so do the new spellings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mon = ScalingLawMonitor(stop_if_forecast_above=3.0, refit_every=7, stop=StopConfig(behind_trend=True))
    assert mon.stop_config == StopConfig(forecast_above=3.0, behind_trend=True) and mon.refit_config.every == 7
    assert mon.target_loss == 3.0 and mon.stop_reason is StopReason.NOT_STOPPED and not mon.stop_reason
    with pytest.raises(TypeError, match="unexpected keyword argument 'stop_if_forecast_abov'"):
        ScalingLawMonitor(stop_if_forecast_abov=3.0)


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        w = torch.randn(16, 1, generator=g)
        for _ in range(400):
            x = torch.randn(8, 16, generator=g)
            yield x, x @ w + 0.3 * torch.randn(8, 1, generator=g)


class Streaming(Regression):
    def train_dataloader(self):
        return DataLoader(Stream(), batch_size=None)


def test_an_unknown_end_forecasts_only_at_the_target_loss(tmp_path):
    mon = ScalingLawMonitor(refit=RefitConfig(every=25, background=False), target_loss=0.12, stop_if_forecast_above=0.1)
    trainer = pl.Trainer(max_epochs=1, callbacks=[mon], logger=False, default_root_dir=tmp_path, **FAST)
    with pytest.warns(ls.ScalingWarning, match="stop_if_forecast_above needs the planned end"):
        trainer.fit(Streaming())
    assert mon.planned_steps is None and trainer.global_step == 400 and mon.stopped_reason is None
    f = mon.forecast
    assert f.target_step is None and math.isnan(f.final_loss) and math.isnan(f.lower)
    assert f.target_loss == 0.12 and (math.isinf(f.steps_to_target) or f.steps_to_target > 0)
