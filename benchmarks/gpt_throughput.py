"""Training throughput of the example GPT: plain PyTorch loop vs Lightning vs Lightning + monitor.

    python benchmarks/gpt_throughput.py [--preset cpu] [--steps 60] [--rounds 3]

The three variants run alternately in one process, on the same batches, so a machine that
other people load at the same time slows all three alike: compare the ratios, and read the
absolute tokens/s together with the load average printed at the start and the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from gpt import train as gpt_train  # noqa: E402
from gpt.data import ByteDataModule  # noqa: E402
from gpt.module import GPTLightningModule  # noqa: E402


class _Timer(pl.Callback):
    def __init__(self, skip: int):
        self.skip, self.t0, self.t1, self.steps = skip, None, None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.skip:
            self.t0 = time.perf_counter()
        self.t1, self.steps = time.perf_counter(), trainer.global_step - self.skip


def plain_loop(preset, data, steps: int, skip: int) -> float:
    module = GPTLightningModule(preset.model, preset.optim, batch_size=preset.batch_size,
                                total_steps=steps + skip)
    opt = torch.optim.AdamW(module.parameters(), lr=preset.optim.lr, betas=preset.optim.betas)
    batches = iter(data.train_dataloader())
    for i in range(steps + skip):
        if i == skip:
            t0 = time.perf_counter()
        x, y = next(batches)
        loss = module(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * preset.batch_size * preset.model.seq_len / (time.perf_counter() - t0)


def lightning_run(preset, data, steps: int, skip: int, with_monitor: bool) -> float:
    module = GPTLightningModule(preset.model, preset.optim, batch_size=preset.batch_size,
                                total_steps=steps + skip)
    timer = _Timer(skip)
    callbacks = [timer]
    if with_monitor:
        from lightning_scaling import ScalingLawMonitor

        callbacks.insert(0, ScalingLawMonitor(x_axis="flops", write_summary=False))
    trainer = pl.Trainer(accelerator="cpu", max_steps=steps + skip, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0,
                         gradient_clip_val=1.0, callbacks=callbacks)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.fit(module, datamodule=data)
    return timer.steps * preset.batch_size * preset.model.seq_len / (timer.t1 - timer.t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", choices=("cpu", "smoke"))
    parser.add_argument("--steps", type=int, default=60, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    preset = gpt_train.PRESETS[args.preset]
    torch.set_num_threads(preset.threads or torch.get_num_threads())
    data = ByteDataModule(seq_len=preset.model.seq_len, batch_size=preset.batch_size)
    data.setup()
    print(f"load average at start: {os.getloadavg()}; {torch.get_num_threads()} torch threads; "
          f"preset {preset.name}, {args.steps} timed steps per run")
    rates = {"plain PyTorch": [], "Lightning": [], "Lightning + ScalingLawMonitor": []}
    skip = 5
    for r in range(args.rounds):
        rates["plain PyTorch"].append(plain_loop(preset, data, args.steps, skip))
        rates["Lightning"].append(lightning_run(preset, data, args.steps, skip, False))
        rates["Lightning + ScalingLawMonitor"].append(lightning_run(preset, data, args.steps, skip, True))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()) + " tokens/s",
              flush=True)
    base = statistics.median(rates["plain PyTorch"])
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"{name:<30} median {med:>9,.0f} tokens/s  ({med / base:.2f} x plain)")
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
