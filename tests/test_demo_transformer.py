"""Lightning's own demo transformer, trained with ``ScalingLawMonitor()`` and nothing else.

A script nobody on the project wrote, as a new user would run it: the
``pytorch_lightning.demos`` word-level transformer (its decoder fed the inputs under a causal
mask, not the targets it must predict), one sequence per step, plain SGD, on a small
embedded corpus. Its per-step loss is noisy (one sequence of 16 words: 15-20% from step to
step) and falls from 4 to about 1 nat in 400 steps; no warm-up, no LR schedule.
Then the same run with single bad batches (random words) injected now and then.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from pytorch_lightning import Trainer
from torch.utils.data import DataLoader, Dataset

import lightning_scaling as ls
from lightning_scaling import ScalingLawMonitor

demos = pytest.importorskip("pytorch_lightning.demos.transformer")

CORPUS = """
The river starts as a thin line of water under the stones of the high pass . In spring the snow
melts and the line becomes a stream , and the stream finds the valley . Farmers in the valley
wait for the water , because the fields are dry after the long winter . They open the gates of
the old channels , and the water runs between the rows of young wheat . In the evening the
children walk along the channels and count the frogs . The mill at the end of the valley turns
when the water is high , and the miller sells flour to the town on the other side of the hill .
When summer comes the stream grows slow and warm . Fish rest in the shade of the willows , and
the farmers close the gates again to keep a little water for the dry weeks . In autumn the rain
returns , the river rises , and the mill turns day and night . The town buys bread , the farmers
count their grain , and the children look for the first snow on the high pass .
"""

STEPS = 400
SEQ = 16


class Corpus(Dataset):
    """Next-word pairs over the embedded corpus (as the demo's WikiText2, without the download)."""

    def __init__(self, block: int = SEQ):
        words = CORPUS.split()
        self.vocab = sorted(set(words))
        index = {w: i for i, w in enumerate(self.vocab)}
        self.ids = torch.tensor([index[w] for w in words], dtype=torch.int64)
        self.block = block

    def __len__(self) -> int:
        return len(self.ids) - self.block - 1

    def __getitem__(self, i):
        return self.ids[i:i + self.block], self.ids[i + 1:i + self.block + 1]


class DemoLM(demos.LightningTransformer):
    """The demo module, its decoder fed the inputs (causal), bad batches at ``bad_steps``."""

    def __init__(self, vocab_size: int, bad_steps=()):
        super().__init__(vocab_size=vocab_size)
        self.bad_steps = set(bad_steps)

    def training_step(self, batch, batch_idx):
        inputs, target = batch
        if self.global_step in self.bad_steps:  # a bad batch: random words
            g = torch.Generator().manual_seed(int(self.global_step))
            inputs = torch.randint(0, self.model.vocab_size, inputs.shape, generator=g)
            target = torch.randint(0, self.model.vocab_size, target.shape, generator=g)
        output = self.model(inputs, inputs)
        return torch.nn.functional.nll_loss(output, target.view(-1))

    def prepare_data(self) -> None:  # the corpus is embedded: nothing to download
        pass

    def train_dataloader(self):
        return DataLoader(Corpus(), shuffle=True, generator=torch.Generator().manual_seed(0))


def train(tmp_path, bad_steps=()):
    torch.manual_seed(0)
    module = DemoLM(len(Corpus().vocab), bad_steps)
    monitor = ScalingLawMonitor()
    trainer = Trainer(max_steps=STEPS, callbacks=[monitor], default_root_dir=tmp_path, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu", devices=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ls.ScalingWarning)
        trainer.fit(module)
    return monitor, [w for w in caught if issubclass(w.category, ls.ScalingWarning)]


def test_the_demo_transformer_trains_without_a_warning(tmp_path):
    monitor, ours = train(tmp_path)
    history = monitor.history.arrays()["loss"]
    assert history[-20:].mean() < 0.4 * history[:20].mean()  # it learns the text
    assert not ours, [str(w.message) for w in ours]
    assert monitor.forecasts and monitor.summary()["episodes"]["behind_trend"]["count"] == 0


def test_single_bad_batches_are_one_divergence_warning_each_and_never_behind_trend(tmp_path):
    bad = (150, 230, 231, 320)  # three episodes: one batch, two in a row, one batch
    monitor, ours = train(tmp_path, bad_steps=bad)
    assert not [w for w in ours if issubclass(w.category, ls.BehindTrendWarning)], [str(w.message) for w in ours]
    divergence = [str(w.message) for w in ours if issubclass(w.category, ls.DivergenceWarning)]
    assert 1 <= len(divergence) <= 3, divergence
    assert len(ours) == len(divergence)  # nothing else
    for message in divergence:
        assert "spiked to" in message and "recent median" in message
