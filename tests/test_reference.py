"""Cross-run references (issue 7, part 3): the pure comparison, then real Trainer runs (DDP: tests/test_ddp.py)."""

import json
import math
import os
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl

from lightning_scaling import ScalingLawMonitor
from lightning_scaling.core.scaling import ScalingLawFit
from lightning_scaling.errors import InvalidInputError, ScalingWarning
from lightning_scaling.monitor import RefitConfig, StopConfig
from lightning_scaling.monitor.reference import (
    Reference,
    ReferenceCheck,
    WorseThanReferenceWarning,
    as_reference,
    forecast_above_reference,
    summary_reference_loss,
)
from lightning_scaling.trainer.replay import ReplayModule

FAST = dict(enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
            num_sanity_val_steps=0, accelerator="cpu", devices=1, logger=False)
STEPS = 200
TOKENS_PER_STEP = 1000.0
LAW = dict(E=1.5, A=0.25, B=40.0, alpha=0.3, beta=0.3)


def power_curve(E=2.0, A=3.0, alpha=0.5, n=STEPS, noise=0.003, seed=0):
    """A recorded curve L(s) = E + A s^-alpha with 0.3% multiplicative noise; truth = E + A n^-alpha."""
    s = np.arange(0, n + 1, dtype=float)
    loss = (E + A * np.maximum(s, 1) ** -alpha) * (1 + noise * np.random.default_rng(seed).standard_normal(s.size))
    loss[0] = np.nan
    return {"step": s, "tokens": s * TOKENS_PER_STEP, "loss": loss}


TRUTH = 2.0 + 3.0 * STEPS ** -0.5  # 2.212


def summary(**kw):
    d = {"format": "lightning-scaling/run-summary", "version": 1, "run": "ref", "steps": 1000,
         "final_loss": 3.0, "forecast": {"final_loss": 2.9, "target_step": 2000}, "stopped_reason": None,
         "planned_steps": 1000, "loss_name": "train_loss", "some_future_key": [1, 2]}
    d.update(kw)
    return d


def forecast(lower, upper=None, final=None, tokens=2e5, target=STEPS):
    upper = lower + 0.1 if upper is None else upper
    final = (lower + upper) / 2 if final is None else final
    return SimpleNamespace(lower=lower, upper=upper, final_loss=final, level=0.9, target_step=target,
                           target_tokens=tokens)


# -- pure ---------------------------------------------------------------------------------------
def test_a_number_is_its_own_reference_and_bad_numbers_are_refused():
    ref = as_reference(3.2)
    assert ref.kind == "number" and ref.loss_at(None, None) == (3.2, None)
    for bad in (math.nan, math.inf, True, "3.2x", object()):
        with pytest.raises(InvalidInputError):
            as_reference(bad)
    with pytest.raises(InvalidInputError, match="scaling-law reference only"):
        as_reference(3.2, n_params=1e6)


def test_a_scaling_law_is_evaluated_at_the_runs_own_n_and_d():
    law = ScalingLawFit(params=dict(LAW))
    ref = as_reference(law)
    expected = LAW["E"] + LAW["A"] / 1e8 ** LAW["alpha"] + LAW["B"] / 2e9 ** LAW["beta"]
    assert ref.loss_at(1e8, 2e9)[0] == pytest.approx(expected, rel=1e-12)
    loss, why = ref.loss_at(1e8, math.nan)
    assert math.isnan(loss) and "tokens" in why
    assert math.isnan(ref.loss_at(None, 2e9)[0])
    # overrides win over the run's numbers; the to_dict() form is a law too
    pinned = as_reference(law.to_dict(), n_params=1e8)
    assert pinned.kind == "law" and pinned.loss_at(5.0, 2e9)[0] == pytest.approx(expected, rel=1e-12)
    assert "N=100M non-embedding params, D=2B tokens" in pinned.describe(5.0, 2e9)


def test_a_run_summary_stands_for_its_final_loss_or_its_forecast_when_it_stopped_early(tmp_path):
    assert summary_reference_loss(summary())[0] == 3.0
    stopped = summary(stopped_reason="behind trend", steps=400)
    value, what = summary_reference_loss(stopped)
    assert value == 2.9 and "forecast" in what and "stopped at step 400" in what
    assert summary_reference_loss(summary(steps=500, forecast=None))[0] == 3.0  # short, no forecast: its loss
    with pytest.raises(InvalidInputError, match="neither a final loss"):
        summary_reference_loss(summary(final_loss=None, forecast=None))
    # dicts, files and folders
    assert as_reference(summary()).value == 3.0
    (tmp_path / "scaling_summary.json").write_text(json.dumps(summary(final_loss=2.5)))
    assert as_reference(tmp_path).value == 2.5
    assert as_reference(str(tmp_path / "scaling_summary.json")).loss_name == "train_loss"
    law_file = tmp_path / "law.json"
    law_file.write_text(json.dumps(ScalingLawFit(params=dict(LAW)).to_dict()))
    assert as_reference(law_file).kind == "law"


@pytest.mark.parametrize("content, match", [
    (None, "no such file"),
    ("{not json", "not valid JSON"),
    (json.dumps([1, 2]), "JSON object"),
    (json.dumps({"format": "something-else"}), "neither a run summary"),
    (json.dumps(summary(version=99)), "newer than this lightning-scaling"),
])
def test_unusable_reference_files_are_one_clear_error(tmp_path, content, match):
    path = tmp_path / "ref.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InvalidInputError, match=match):
        as_reference(path)


def test_the_check_needs_patience_flags_once_per_episode_and_stops_only_after_min_fraction():
    assert forecast_above_reference(2.01, 2.0) and not forecast_above_reference(2.0, 2.0)
    assert not forecast_above_reference(math.nan, 2.0)
    check = ReferenceCheck(2.0, patience=2, stop=True)
    kw = dict(planned_steps=STEPS, min_fraction=0.5, n_params=None)
    fs = [forecast(1.9)]
    assert not check.evaluate(step=20, forecasts=fs, **kw).worse
    fs.append(forecast(2.05))  # one forecast above: not yet
    assert not check.evaluate(step=40, forecasts=fs, **kw).worse
    fs.append(forecast(2.06, final=2.1, upper=2.2))
    v = check.evaluate(step=60, forecasts=fs, **kw)
    assert v.worse and v.flag and not v.stop and v.reference_loss == 2.0  # before min_fraction: flag only
    assert "2.1, 90% interval [2.06, 2.2]" in v.message and "reference loss: 2" in v.message
    fs.append(forecast(2.07))
    v = check.evaluate(step=100, forecasts=fs, **kw)
    assert v.worse and not v.flag and v.stop  # still worse: no second flag; past min_fraction: stop
    fs.append(forecast(1.95))
    assert not check.evaluate(step=120, forecasts=fs, **kw).worse
    fs += [forecast(2.1), forecast(2.1)]
    assert check.evaluate(step=140, forecasts=fs, **kw).flag and check.flags == 2  # a new episode
    assert not ReferenceCheck(2.0, stop=False).evaluate(step=180, forecasts=fs, **kw).stop


def test_a_law_without_tokens_says_so_once():
    check = ReferenceCheck(ScalingLawFit(params=dict(LAW)), patience=1, stop=True)
    fs = [forecast(9.0, tokens=math.nan)]
    v = check.evaluate(step=100, planned_steps=STEPS, min_fraction=0.2, n_params=1e6, forecasts=fs)
    assert not v.worse and "tokens_per_batch" in v.unavailable
    verdict = check.evaluate(step=120, planned_steps=STEPS, min_fraction=0.2, n_params=1e6, forecasts=fs)
    assert verdict.unavailable is None


# -- real Trainer runs ---------------------------------------------------------------------------
def replay(curve, reference, stop=True, root=None, **kw):
    mon = ScalingLawMonitor(refit=RefitConfig(every=10, background=False), log_metrics=False,
                            write_summary=root is not None,
                            reference=reference, stop=StopConfig(worse_than_reference=stop), **kw)
    module = ReplayModule(curve)
    trainer = pl.Trainer(max_steps=module.n_steps, callbacks=[mon], default_root_dir=root, **FAST)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ScalingWarning)
        trainer.fit(module)
    flags = [str(w.message) for w in caught if issubclass(w.category, WorseThanReferenceWarning)]
    return mon, trainer, flags


def test_a_run_headed_above_a_reference_number_is_flagged_and_stopped_after_min_fraction():
    mon, trainer, flags = replay(power_curve(), TRUTH * 0.95)
    assert len(flags) == 1 and f"{TRUTH * 0.95:.4g}" in flags[0] and "interval" in flags[0]
    assert mon.stopped_reason.startswith("worse than reference") and trainer.global_step == mon.stopped_step
    assert 0.2 * STEPS <= mon.stopped_step < STEPS
    assert any("worse than reference" in w for w in mon.warnings_emitted)
    # a reference the run beats: no flag, the run goes to its end
    mon, trainer, flags = replay(power_curve(), TRUTH * 1.05)
    assert flags == [] and mon.stopped_reason is None and trainer.global_step == STEPS
    # flag only
    mon, trainer, flags = replay(power_curve(), TRUTH * 0.95, stop=False)
    assert len(flags) == 1 and mon.stopped_reason is None and trainer.global_step == STEPS


def test_a_scaling_law_reference_uses_the_monitors_n_and_the_planned_tokens():
    # ReplayModule has one parameter (N = 1 non-embedding parameter); D = 200 steps * 1,000 tokens
    d = STEPS * TOKENS_PER_STEP
    below = dict(LAW, E=TRUTH * 0.95 - LAW["A"] - LAW["B"] / d ** LAW["beta"])  # L(1, D) = 0.95 * truth
    mon, trainer, flags = replay(power_curve(), ScalingLawFit(params=below))
    assert len(flags) == 1 and "N=1 non-embedding params, D=200k tokens" in flags[0]
    assert f"{TRUTH * 0.95:.4g}" in flags[0] and mon.stopped_step is not None
    above = dict(below, E=below["E"] + 0.1 * TRUTH)  # L(1, D) = 1.05 * truth
    mon, trainer, flags = replay(power_curve(), ScalingLawFit(params=above))
    assert flags == [] and mon.stopped_step is None


def test_a_run_summary_of_a_better_run_stops_a_worse_one(tmp_path):
    good, _, _ = replay(power_curve(E=1.8, seed=1), None, stop=False, root=str(tmp_path / "good"))
    path = good.summary_path
    with open(path) as fh:
        assert json.load(fh)["final_loss"] == pytest.approx(1.8 + 3.0 * STEPS ** -0.5, rel=0.01)
    mon, _, flags = replay(power_curve(E=2.0, seed=2), path)  # ends about 9% above the good run
    assert len(flags) == 1 and "final loss of run" in flags[0] and mon.stopped_step is not None
    mon, _, flags = replay(power_curve(E=1.6, seed=3), os.path.dirname(path))  # better than the reference
    assert flags == [] and mon.stopped_step is None


def test_bad_reference_options_fail_before_training():
    with pytest.raises(InvalidInputError, match="needs reference="):
        ScalingLawMonitor(stop=StopConfig(worse_than_reference=True))
    with pytest.raises(InvalidInputError, match="reference must be"):
        ScalingLawMonitor(reference=[1.0, 2.0])
    assert isinstance(ScalingLawMonitor(reference=2.0).stops.reference_check.reference, Reference)
