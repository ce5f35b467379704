import logging
import threading

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.transformer import LightningTransformer
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_scaling.errors import InvalidInputError
from lightning_scaling.trainer.compute import ComputeCounter
from lightning_scaling.trainer.flops import FlopMeasurement, measure_flops_per_batch, meta_copy


def real_forward_flops(module, *args) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*args)
    return counter.get_total_flops()


class TwoInputs(pl.LightningModule):
    """A module whose forward takes the inputs and the targets (forward(batch[0]) does not fit)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.head = nn.Linear(16, 50)
        self.seen: list = []

    def forward(self, inputs, target):
        return self.head(self.embed(inputs)).log_softmax(-1)

    def training_step(self, batch, batch_idx):
        inputs, target = batch
        loss = nn.functional.nll_loss(self(inputs, target).flatten(0, 1), target.flatten())
        self.seen.append(loss)  # a common pattern: outputs kept for the epoch's end
        self.log("train_loss", loss)
        return loss


def test_the_meta_copy_leaves_the_module_alone_and_keeps_tied_weights_tied():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10))
    model[1].weight = model[0].weight  # tied
    copy = meta_copy(model)
    assert copy[0].weight is copy[1].weight and copy[0].weight.device.type == "meta"
    assert model[0].weight.device.type == "cpu" and copy[0] is not model[0] and type(copy[0]) is nn.Embedding


def test_a_forward_that_does_not_fit_the_batch_is_measured_through_training_step():
    model = TwoInputs()
    batch = (torch.randint(0, 50, (2, 8)), torch.randint(0, 50, (2, 8)))
    assert measure_flops_per_batch(model, batch) == 3 * real_forward_flops(model, *batch)
    assert model.seen == [] and model.head.weight.device.type == "cpu"  # the module's list and weights untouched


def test_lightnings_demo_transformer_falls_back_quietly_with_the_reason_at_debug(caplog):
    model = LightningTransformer(vocab_size=100)  # nn.Transformer calls .item(): no meta measurement
    batch = (torch.randint(0, 100, (2, 16)), torch.randint(0, 100, (2, 16)))
    counter = ComputeCounter()
    counter.setup(model)
    with caplog.at_level(logging.DEBUG, logger="lightning_scaling.trainer.compute"):
        counter.count_micro_batch(model, batch)
        assert counter.flops_source.startswith("6*N*tokens with N = ")
    assert "failed" not in counter.flops_source and "Error" not in counter.flops_source
    assert "FLOPs not measured" in caplog.text and counter.flops == 6 * counter.n_params_non_embedding * 32


def test_a_compiled_module_is_not_measured():
    with pytest.raises(InvalidInputError, match="compile"):
        measure_flops_per_batch(torch.compile(nn.Linear(4, 4)), torch.randn(2, 4))


def test_the_measurement_runs_on_its_own_thread_and_counts_none_of_the_training_threads_work():
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    batch = (torch.randn(5, 32), torch.randn(5, 8))
    names = []
    model.register_forward_pre_hook(lambda module, args: names.append(threading.current_thread().name))
    measurement = FlopMeasurement(model, batch)
    for _ in range(20):  # the training thread's own matmuls meanwhile
        torch.randn(64, 64) @ torch.randn(64, 64)
    flops, error = measurement.result(timeout=30)
    assert error is None and flops == 3 * 2 * 5 * (32 * 64 + 64 * 8)
    assert names == ["lightning-scaling-flops"]


def test_micro_batches_counted_while_measuring_are_priced_in_order_once_the_answer_comes():
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 50))
    counter = ComputeCounter()
    counter.setup(model)
    marks = []
    for seq in (8, 4, 8):  # tokens vary: FLOPs per token
        counter.count_micro_batch(model, (torch.randint(0, 50, (2, seq)),))
        marks.append((counter.micro_batches, counter.flops_now()))
    per_token = 3 * 2 * 16 * 50
    assert [counter.flops_after(n) for n, _ in marks] == [per_token * 16, per_token * 24, per_token * 40]
    assert counter.flops == per_token * 40 and counter.flops_now() == per_token * 40 and not counter.measuring
    counter.count_micro_batch(model, (torch.randint(0, 50, (2, 8)),))  # priced on the spot from now on
    assert counter.flops_now() == per_token * 56


def test_every_observation_carries_the_flops_of_its_step_even_those_taken_while_measuring(tmp_path, monkeypatch):
    from torch.utils.data import DataLoader, TensorDataset

    import lightning_scaling.trainer.flops as flops_module
    from lightning_scaling import ScalingLawMonitor

    monkeypatch.setattr(flops_module, "PAUSE_S", 0.05)  # a slow measurement: the first steps go by meanwhile

    class Regression(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(16, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self.lin(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    mon = ScalingLawMonitor(total_steps=2000, write_summary=False)  # flushes every 4 steps
    data = TensorDataset(torch.randn(64, 16), torch.randn(64, 1))
    trainer = pl.Trainer(max_steps=24, callbacks=[mon], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(Regression(), DataLoader(data, batch_size=8))
    per_batch = 3 * 2 * 8 * 16
    arrays = mon.history.arrays()
    assert mon.compute.flops_source.startswith("measured")
    assert arrays["flops"].tolist() == [per_batch * s for s in arrays["step"].tolist()]
