"""The lightning.pytorch twins (lightning_scaling.lightning), where the `lightning` package imports."""

import json
from pathlib import Path

import pytest

L = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

import lightning_scaling as ls  # noqa: E402
from lightning_scaling.lightning import ReplayModule, ScalingLawMonitor  # noqa: E402
from lightning_scaling.monitor import RefitConfig  # noqa: E402

CURVE = Path(__file__).parent / "data" / "replay" / "multipower_25M_wsd_20000_24000.csv"


class Regression(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 8, generator=g)
        y = x.sum(1, keepdim=True) + 0.2 * torch.randn(256, 1, generator=g)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.02)


FAST = dict(enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
            num_sanity_val_steps=0, accelerator="cpu", devices=1, logger=False)


def test_the_twin_is_a_lightning_pytorch_callback_and_works_with_zero_configuration(tmp_path):
    import pytorch_lightning

    assert isinstance(ScalingLawMonitor(), L.Callback)
    assert not isinstance(ScalingLawMonitor(), pytorch_lightning.Callback)
    assert isinstance(ls.ScalingLawMonitor(), pytorch_lightning.Callback)
    mon = ScalingLawMonitor(refit=RefitConfig(background=False))
    trainer = L.Trainer(max_steps=60, callbacks=[mon], default_root_dir=tmp_path, **FAST)
    trainer.fit(Regression())
    assert mon.history.n_observed == 60 and mon.forecast is not None and mon.forecast.target_step == 60
    summary = json.loads((tmp_path / "scaling_summary.json").read_text())
    assert summary["steps"] == 60 and summary["forecast"]["law"] == mon.forecast.law


def test_the_replay_twin_and_a_stop_in_the_lightning_namespace(tmp_path):
    module = ReplayModule(CURVE)
    assert isinstance(module, L.LightningModule)
    mon = ScalingLawMonitor(stop_if_forecast_above=2.5, refit=RefitConfig(every=5, background=False),
                            write_summary=False)
    trainer = L.Trainer(max_steps=module.n_steps, callbacks=[mon], default_root_dir=tmp_path, **FAST)
    trainer.fit(module)
    assert trainer.global_step == mon.stopped_step < module.n_steps
    assert mon.stopped_reason.startswith("forecast above target")
