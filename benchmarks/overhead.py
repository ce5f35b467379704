"""Overhead of ScalingLawMonitor on a small transformer language model on the CPU (issue 4 target).

The same training run (a 2-layer GPT on a synthetic Markov-chain language, same seed, same
batches) with and without ``ScalingLawMonitor()`` (zero configuration: background refits
held to 1% of the training time), alternating in one process so that machine load hits both
alike. The measured runs are the first ``--steps`` steps of a run planned for ``--planned``
steps (``total_steps=``), so the monitor paces itself as it would in a real run. A timing callback, last in the list, stamps the end of every training batch (after
the monitor's hook), so a step's time includes everything the monitor does in it.

Prints: the ratio of time per step (monitored / plain; target <= 1.01), the worst single
step of the monitored runs against the plain runs' median step (target: no refit stalls a
step by more than 50 ms; the plain runs' own worst step is printed as the noise floor), the
refits done, and the history size (after the run, and after 1,000,000 synthetic steps).
Exits with status 1 when a target is short (the verdict line says which).

    python benchmarks/overhead.py                  # 3 pairs of 400-step runs
    python benchmarks/overhead.py --pairs 5 --steps 600 --json out.json
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
import warnings

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytorch_lightning as pl  # noqa: E402

from lightning_scaling import ScalingLawMonitor  # noqa: E402
from lightning_scaling.monitor.history import LossHistory  # noqa: E402


class MarkovText(Dataset):
    """Token sequences from a fixed random first-order Markov chain (learnable, so the loss falls)."""

    def __init__(self, vocab: int, seq: int, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(vocab, vocab, generator=g) * 3.0
        probs = torch.softmax(logits, dim=-1)
        tokens = torch.empty(n, seq + 1, dtype=torch.long)
        tokens[:, 0] = torch.randint(0, vocab, (n,), generator=g)
        for t in range(seq):
            tokens[:, t + 1] = torch.multinomial(probs[tokens[:, t]], 1, generator=g).squeeze(1)
        self.tokens = tokens

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        return self.tokens[i, :-1], self.tokens[i, 1:]


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x, mask):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class TinyGPT(pl.LightningModule):
    """A small decoder-only transformer LM (pre-norm blocks, learned positions)."""

    def __init__(self, vocab=256, seq=64, d=128, heads=4, layers=2, lr=3e-3):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.register_buffer("mask", torch.triu(torch.full((seq, seq), float("-inf")), diagonal=1), persistent=False)
        self.lr = lr

    def forward(self, idx):
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x, self.mask[:t, :t])
        return self.head(self.ln(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x).flatten(0, 1), y.flatten())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


class TimedMonitor(ScalingLawMonitor):
    """The monitor, with the CPU time of its per-batch hook accounted (thread CPU time, so other
    processes' load does not count)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.hook_cpu: list[float] = []
        self.hook_wall: list[float] = []
        self.refit_cpu: list[float] = []

    def _poll_refit(self, trainer, pl_module):
        runner = self.refit_scheduler.runner
        before = runner.cpu_seconds
        super()._poll_refit(trainer, pl_module)
        if runner.cpu_seconds > before:
            self.refit_cpu.append(runner.cpu_seconds - before)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        c0, w0 = time.thread_time(), time.perf_counter()
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.hook_cpu.append(time.thread_time() - c0)
        self.hook_wall.append(time.perf_counter() - w0)


class StepTimer(pl.Callback):
    """Wall time of every training step, stamped after every other callback's batch-end hook."""

    def __init__(self):
        self.stamps: list[float] = []

    cpu0 = cpu1 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.stamps:
            self.stamps.append(time.perf_counter())
            self.cpu0 = time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.stamps.append(time.perf_counter())
        self.cpu1 = time.process_time()

    @property
    def step_times(self) -> np.ndarray:
        return np.diff(np.asarray(self.stamps))


def one_run(data, steps: int, monitored: bool, seed: int, planned: int | None = None):
    pl.seed_everything(seed, verbose=False)
    model = TinyGPT()
    timer = StepTimer()
    callbacks = [TimedMonitor(write_summary=False, total_steps=planned)] if monitored else []
    trainer = pl.Trainer(
        max_steps=steps,
        callbacks=callbacks + [timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accelerator="cpu",
        devices=1,
    )
    loader = DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed))
    trainer.fit(model, loader)
    return timer, (callbacks[0] if monitored else None)


def history_after_a_million_steps() -> tuple[int, int]:
    h = LossHistory()
    for s in range(1, 1_000_001):
        h.append(step=s, key=s, loss=2.0 + 5.0 * s**-0.3, tokens=1024.0 * s, flops=6e9 * s)
    buf = io.BytesIO()
    torch.save(h.state_dict(), buf)
    return len(h), buf.tell()


RATIO_TARGET = 1.01  # time per step, monitored / plain
STALL_TARGET_MS = 50.0  # worst single step over the plain runs' median
HISTORY_POINTS_TARGET = 4096
HISTORY_BYTES_TARGET = 1_000_000


def short_targets(out: dict) -> list[str]:
    """The printed targets the measurements miss."""
    short = []
    if out["time_per_step_ratio"] > RATIO_TARGET:
        short.append(f"time per step ratio {out['time_per_step_ratio']:.4f} > {RATIO_TARGET}")
    if out["worst_stall_ms"] > STALL_TARGET_MS:
        short.append(f"worst stall {out['worst_stall_ms']:.1f} ms > {STALL_TARGET_MS:.0f} ms")
    if out["history_points_after_1e6_steps"] > HISTORY_POINTS_TARGET:
        short.append(f"history {out['history_points_after_1e6_steps']} points > {HISTORY_POINTS_TARGET}")
    if out["history_state_bytes_after_1e6_steps"] >= HISTORY_BYTES_TARGET:
        short.append(f"history state {out['history_state_bytes_after_1e6_steps']} bytes >= 1 MB")
    return short


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3, help="plain/monitored run pairs (alternating)")
    ap.add_argument("--steps", type=int, default=400, help="optimizer steps per run")
    ap.add_argument("--planned", type=int, default=20000,
                    help="the run's planned length told to the monitor (total_steps=): the runs measured are "
                         "the first --steps steps of it (0: the measured runs are the whole plan)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = MarkovText(vocab=256, seq=64, n=4096)
    load_before = os.getloadavg()[0]
    one_run(data, 20, False, 0)  # warm-up: imports, allocator, kernels

    plain, monitored, monitors, cpu_p, cpu_m = [], [], [], [], []
    for pair in range(args.pairs):
        order = (False, True) if pair % 2 == 0 else (True, False)  # alternate who goes first
        for with_monitor in order:
            timer, mon = one_run(data, args.steps, with_monitor, seed=pair, planned=args.planned or None)
            (monitored if with_monitor else plain).append(timer.step_times)
            (cpu_m if with_monitor else cpu_p).append(timer.cpu1 - timer.cpu0)
            if mon is not None:
                monitors.append(mon)
    skip = 5  # the first steps of a run include Lightning's own start-up
    p = [t[skip:] for t in plain]
    m = [t[skip:] for t in monitored]
    pair_ratios = [float(np.mean(b) / np.mean(a)) for a, b in zip(p, m)]
    ratio = float(np.sum([b.sum() for b in m]) / np.sum([a.sum() for a in p]))
    base_median = float(np.median(np.concatenate(p)))
    worst_mon = float(max(b.max() for b in m))
    worst_plain = float(max(a.max() for a in p))
    # steps right after a refit started or where the monitor did a flush + refit bookkeeping
    refits = [len(mon.forecasts) for mon in monitors]
    refit_cpu = [mon.refit_scheduler.runner.cpu_seconds for mon in monitors]
    train_seconds = [float(b.sum()) for b in m]
    hist_points = [len(mon.history) for mon in monitors]
    million_points, million_bytes = history_after_a_million_steps()
    load_after = os.getloadavg()[0]

    out = {
        "steps_per_run": args.steps,
        "planned_steps": args.planned or args.steps,
        "pairs": args.pairs,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        "median_step_ms_plain": 1e3 * base_median,
        "median_step_ms_monitored": 1e3 * float(np.median(np.concatenate(m))),
        "time_per_step_ratio": ratio,
        "pair_ratios": pair_ratios,
        "worst_step_ms_monitored": 1e3 * worst_mon,
        "worst_step_ms_plain": 1e3 * worst_plain,
        "worst_stall_ms": 1e3 * (worst_mon - base_median),
        "worst_stall_ms_plain_noise": 1e3 * (worst_plain - base_median),
        "process_cpu_ratio": float(np.sum(cpu_m) / np.sum(cpu_p)),
        "hook_cpu_share": [sum(mon.hook_cpu) / t for mon, t in zip(monitors, train_seconds)],
        "hook_cpu_us_per_step": [1e6 * float(np.mean(mon.hook_cpu)) for mon in monitors],
        "hook_cpu_us_per_step_after_first": [1e6 * float(np.mean(mon.hook_cpu[1:])) for mon in monitors],
        "hook_first_step_ms": [1e3 * mon.hook_wall[0] for mon in monitors],
        "hook_worst_ms": [1e3 * max(mon.hook_wall) for mon in monitors],
        "hook_worst_ms_after_first": [1e3 * max(mon.hook_wall[1:]) for mon in monitors],
        "refit_cpu_ms_max": [1e3 * max(mon.refit_cpu) if mon.refit_cpu else 0.0 for mon in monitors],
        "refits_per_run": refits,
        "refit_cpu_share": [c / t for c, t in zip(refit_cpu, train_seconds)],
        "history_points_after_run": hist_points,
        "history_points_after_1e6_steps": million_points,
        "history_state_bytes_after_1e6_steps": million_bytes,
        "flops_source": monitors[0].compute.flops_source if monitors else None,
    }
    print(f"{args.pairs} pairs of {args.steps}-step runs; the monitor is told the run is planned for "
          f"{args.planned or args.steps} steps")
    print(f"load average (1 min) before/after: {out['load_average_1min']}; torch threads {out['torch_threads']}")
    print(f"median step: plain {out['median_step_ms_plain']:.2f} ms, monitored {out['median_step_ms_monitored']:.2f} ms")
    print(f"time per step, monitored / plain: {ratio:.4f}  (pairs: {', '.join(f'{r:.4f}' for r in pair_ratios)})"
          f"   target <= 1.01")
    print(f"worst single step: monitored {out['worst_step_ms_monitored']:.1f} ms, plain {out['worst_step_ms_plain']:.1f} ms;"
          f" worst stall over the plain median: {out['worst_stall_ms']:.1f} ms (plain runs' own: "
          f"{out['worst_stall_ms_plain_noise']:.1f} ms)   target <= 50 ms")
    print(f"process CPU time, monitored / plain: {out['process_cpu_ratio']:.4f}")
    print(f"accounted overhead: the monitor's batch hook {', '.join(f'{100 * s:.2f}%' for s in out['hook_cpu_share'])}"
          f" of training time ({', '.join(f'{u:.0f}' for u in out['hook_cpu_us_per_step'])} us CPU per step, "
          f"{', '.join(f'{u:.0f}' for u in out['hook_cpu_us_per_step_after_first'])} after the first step, whose "
          f"one-time FLOP measurement took {', '.join(f'{u:.0f}' for u in out['hook_first_step_ms'])} ms; worst "
          f"single hook after it {max(out['hook_worst_ms_after_first']):.1f} ms wall) + refits on their thread "
          f"{', '.join(f'{100 * s:.2f}%' for s in out['refit_cpu_share'])} CPU")
    print(f"refits per monitored run: {refits}; the longest refit took {max(out['refit_cpu_ms_max']):.1f} ms CPU "
          f"on its thread (the most a step could wait for the GIL behind it)")
    print(f"history: {hist_points} stored points after {args.steps} steps; {million_points} points and "
          f"{million_bytes / 1e3:.0f} kB of state after 1,000,000 steps   target <= 4096 points, < 1 MB")
    print(f"FLOPs source: {out['flops_source']}")
    short = short_targets(out)
    print("verdict: every target met" if not short else "verdict: SHORT: " + "; ".join(short))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 1 if short else 0


if __name__ == "__main__":
    raise SystemExit(main())
