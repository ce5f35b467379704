"""DDP on CPU (gloo, 2 processes): stop decisions reach every rank at the same step.

The assertions run inside the workers (a spawned worker's trainer is not the parent's); a
failed assertion there fails the test through the spawn launcher.
"""

import json
from datetime import timedelta
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy

from lightning_scaling import ScalingLawMonitor
from lightning_scaling.trainer.replay import ReplayModule

import lightning_scaling as ls

# measured at every trainer step (Lightning cannot skip a step under DDP)
CURVE = Path(ls.__file__).parent / "data" / "gemstones_256x23.csv"

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


class RankDiverges(ReplayModule):
    """Rank 1's loss turns NaN from step 60 on; rank 0's stays finite."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if loss is not None and self.global_rank == 1 and self.global_step >= 60:
            loss = loss * float("nan")
        return loss


class CheckInWorker(pl.Callback):
    def __init__(self, out: str, expect: str):
        self.out, self.expect = out, expect

    def on_train_end(self, trainer, pl_module):
        mon = next(c for c in trainer.callbacks if isinstance(c, ScalingLawMonitor))
        steps = trainer.strategy.all_gather(torch.tensor(trainer.global_step))  # every rank reaches it
        assert trainer.world_size == 2
        assert bool((steps == steps[0]).all()), f"ranks ended at different steps: {steps.tolist()}"
        assert mon.stopped_step == trainer.global_step < pl_module.n_steps
        assert mon.stopped_reason is not None and mon.stopped_reason.startswith(self.expect), mon.stopped_reason
        if self.expect == "forecast above target":
            # only rank 0 fits: rank 1 stopped on rank 0's forecast
            assert (mon.forecast is None) == (trainer.global_rank == 1)
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(json.dumps(
            {"step": trainer.global_step, "reason": mon.stopped_reason, "forecasts": len(mon.forecasts)}))


@pytest.mark.parametrize("case", ["forecast", "divergence_on_rank_1"])
def test_a_stop_ends_both_ranks_at_the_same_step(tmp_path, case):
    if case == "forecast":
        module, expect = ReplayModule(CURVE), "forecast above target"
        mon = ScalingLawMonitor(stop_if_forecast_above=3.0, refit_every=5, background=False)
    else:
        module, expect = RankDiverges(CURVE), "divergence"
        mon = ScalingLawMonitor(stop_on_divergence=True, refit_every=5, background=False)
    trainer = pl.Trainer(
        strategy=DDPStrategy(start_method="spawn", process_group_backend="gloo", timeout=timedelta(seconds=120)),
        accelerator="cpu",
        devices=2,
        max_steps=module.n_steps,
        use_distributed_sampler=False,  # both ranks replay the same curve
        callbacks=[mon, CheckInWorker(str(tmp_path), expect)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] < module.n_steps
    assert ranks[0]["reason"] == ranks[1]["reason"]  # rank 0's reason, broadcast
    if case == "forecast":
        assert ranks[0]["forecasts"] > 0 and ranks[1]["forecasts"] == 0
    else:
        assert "nan" in ranks[0]["reason"]  # rank 0 saw no NaN: the reason came from rank 1
    summary = json.loads((tmp_path / "scaling_summary.json").read_text())  # written by rank 0 only
    assert summary["stopped_reason"] == ranks[0]["reason"]
