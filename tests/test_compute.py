import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from lightning_scaling.core.compute import project_compute, step_at_compute
from lightning_scaling.trainer.compute import (
    ComputeCounter,
    count_parameters,
    infer_tokens,
    measure_flops_per_batch,
)
from lightning_scaling.errors import InvalidInputError


class TinyLM(nn.Module):
    def __init__(self, vocab=50, d=16, seq=8, tied=True):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        self.mlp = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab, bias=False)
        if tied:
            self.head.weight = self.tok.weight

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        return self.head(torch.relu(self.mlp(x)))


def test_non_embedding_parameters_exclude_embeddings_and_count_tied_weights_once():
    total, non_emb = count_parameters(TinyLM())
    assert total == 50 * 16 + 8 * 16 + (16 * 16 + 16)  # tied head counted once
    assert non_emb == 16 * 16 + 16
    total, non_emb = count_parameters(TinyLM(tied=False))
    assert non_emb == 16 * 16 + 16 + 50 * 16


def test_tokens_come_from_the_integer_input_tensor():
    x = torch.randint(0, 50, (4, 8))
    assert infer_tokens((x, x)) == 32  # (inputs, targets): the inputs
    assert infer_tokens({"attention_mask": torch.ones(4, 9, dtype=torch.long), "input_ids": x}) == 32
    assert infer_tokens((torch.randn(4, 3), torch.randn(4, 1))) is None


def test_flops_measured_on_meta_device_match_the_matmuls():
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    batch = (torch.randn(5, 32), torch.randn(5, 8))
    flops = measure_flops_per_batch(model, batch)
    forward = 2 * 5 * (32 * 64 + 64 * 8)
    assert flops == 3 * forward
    assert all(p.device.type == "cpu" for p in model.parameters())  # the real module is untouched


def test_sources_in_order_argument_attribute_measured_then_6nd(caplog):
    model = TinyLM()
    batch = (torch.randint(0, 50, (2, 8)), torch.randint(0, 50, (2, 8)))

    c = ComputeCounter(flops_per_batch=1e6, tokens_per_batch=100)
    c.setup(model, world_size=2)
    c.count_micro_batch(model, batch)
    assert (c.flops, c.tokens, c.samples) == (2e6, 200.0, 4.0)
    assert c.flops_source.startswith("flops_per_batch=") and c.tokens_source.startswith("tokens_per_batch=")

    model.flops_per_batch = 5e5
    c = ComputeCounter(tokens_per_batch=lambda b: int(b[0].numel()) // 2)
    c.setup(model)
    c.count_micro_batch(model, batch)
    assert c.flops == 5e5 and c.tokens == 8.0 and "attribute" in c.flops_source and "callable" in c.tokens_source
    del model.flops_per_batch

    c = ComputeCounter()
    c.setup(model)
    for _ in range(3):  # three micro-batches (gradient accumulation counts each)
        c.count_micro_batch(model, batch)
    assert c.tokens == 48.0 and c.micro_batches == 3
    assert c.flops_source.startswith("measured")
    assert c.flops == 3 * measure_flops_per_batch(model, batch)

    class Opaque(TinyLM):  # forward cannot run on meta tensors
        def forward(self, idx):
            if idx.sum().item() < 0:
                return idx
            return super().forward(idx)

    opaque = Opaque()
    c = ComputeCounter()
    c.setup(opaque)
    with caplog.at_level(logging.DEBUG, logger="lightning_scaling.trainer.compute"):
        c.count_micro_batch(opaque, batch)
        assert c.flops_source == "6*N*tokens with N = 272 non-embedding parameters"  # a normal path, said plainly
    assert "FLOPs not measured" in caplog.text
    assert c.flops == 6 * (16 * 16 + 16) * 16


def test_state_round_trip_and_bad_arguments():
    c = ComputeCounter(tokens_per_batch=10)
    c.setup(nn.Linear(2, 2))
    c.count_micro_batch(nn.Linear(2, 2), torch.randn(3, 2))
    c.steps = 1
    d = ComputeCounter()
    d.load_state_dict(c.state_dict())
    assert d.totals() == c.totals()
    with pytest.raises(InvalidInputError):
        ComputeCounter(flops_per_batch=-1)
    with pytest.raises(InvalidInputError):
        ComputeCounter(tokens_per_batch="many")


def test_step_and_compute_convert_both_ways():
    steps = np.arange(1, 101, dtype=float)
    tokens = 1000.0 * steps
    assert project_compute(steps, tokens, 50.5) == pytest.approx(50500.0)
    assert project_compute(steps, tokens, 1000) == pytest.approx(1e6)
    assert step_at_compute(steps, tokens, 2e6) == pytest.approx(2000.0)
    assert math.isnan(project_compute(steps, np.full(100, np.nan), 10))
