"""Overhead of ScalingLawMonitor per training step, against a plain run in the same process (issue 15).

The step is synthetic and of fixed cost: a tiny linear model's real forward, backward and
optimizer step, then ``--step-ms`` of waiting in 1 ms sleeps that release the GIL, the way
a training thread waits on its accelerator (a GPU step launches kernels and waits, and
needs the GIL back between every two launches). So the monitor's cost is not hidden by a
real model's noise, and a refit that holds the GIL shows up as a longer step. The loss
follows a noisy power law, so fits, trend checks and divergence checks do their usual work.

Runs alternate plain / monitored (``ScalingLawMonitor()``, zero configuration, told the run
is planned for ``--planned`` steps: by default the whole run, so every check of a real run
happens) in one process, so that machine load hits both alike. Each run has a probe thread
that wakes every 1 ms and records how late it woke (the GIL wait of anything that needs the
GIL while a refit runs, beside the same probe's lateness in the plain runs). Targets:

- the monitor's batch hook, amortised over a run after its first step: <= 50 us of CPU;
- time per step, monitored / plain: <= 1.01 (the median over pairs);
- a step waits <= 10 ms behind a refit: the probe's longest wake-up gap while refits ran,
  outside the monitor's own batch hook (whose cost is the first target's), beside the plain
  run's probe in the same windows (and the steps that overlapped a refit, over the plain
  median step);
- the first step's one-time FLOP measurement: <= 2 steps of training-thread time or off the
  training thread (measured on a 2-layer GPT, ``--gpt-steps`` steps);
- the history: <= 4,096 points and < 1 MB of state after 1,000,000 steps.

Exits with status 1 when a target is short (the verdict line says which).

    python benchmarks/overhead.py                       # 3 pairs of 1500-step runs, refits in the helper process
    python benchmarks/overhead.py --modes process,thread --json out.json   # both refit runners, side by side
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import sys
import threading
import time
import warnings

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytorch_lightning as pl  # noqa: E402

from lightning_scaling import ScalingLawMonitor  # noqa: E402
from lightning_scaling.monitor.history import LossHistory  # noqa: E402
from lightning_scaling.monitor.refit import RefitRunner  # noqa: E402

HOOK_US_TARGET = 50.0  # CPU per step of the batch hook, after the first step
RATIO_TARGET = 1.01  # time per step, monitored / plain (median over pairs)
WAIT_MS_TARGET = 10.0  # the longest wait behind a refit
FLOP_STEPS_TARGET = 2.0  # the first step's FLOP measurement, in steps of training-thread time
LATE_S = 0.004  # a probe gap this long (1 ms sleep + 3 ms) waited for the GIL, or for the CPU
HISTORY_POINTS_TARGET = 4096
HISTORY_BYTES_TARGET = 1_000_000


# -- the synthetic fixed-cost step ---------------------------------------------------------------
class FixedStep(pl.LightningModule):
    """A tiny real model whose step then waits ``step_ms`` in 1 ms sleeps (GIL released); the LR
    follows a cosine over ``planned`` steps, so refits are schedule-aware, as in most LM runs."""

    def __init__(self, step_ms: float = 10.0, planned: int = 1000, seed: int = 0):
        super().__init__()
        self.lin = nn.Linear(16, 1)
        self.planned = planned
        self.slices = max(1, int(round(step_ms)))
        self.slice_s = step_ms / 1e3 / self.slices
        self.noise = torch.Generator().manual_seed(seed)
        self.scale = 0.02

    def training_step(self, batch, batch_idx):
        x, y = batch
        s = self.global_step + 1
        curve = 2.0 + 3.0 * s ** -0.4 + self.scale * float(torch.randn((), generator=self.noise))
        loss = nn.functional.mse_loss(self.lin(x), y) * 1e-3 + curve
        for _ in range(self.slices):
            time.sleep(self.slice_s)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=1e-3)
        cosine = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, self.planned)
                                                                                       / self.planned)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}


class Probe:
    """A thread that wakes every 1 ms and records when (its gaps show how long it waited)."""

    def __init__(self):
        self.stamps: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="probe")

    def _run(self):
        stamps = self.stamps
        while not self._stop.is_set():
            time.sleep(0.001)
            stamps.append(time.perf_counter())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def gaps(self) -> tuple[np.ndarray, np.ndarray]:
        """(end time, length) of each gap between two wake-ups, in seconds."""
        t = np.asarray(self.stamps)
        return t[1:], np.diff(t)


try:  # the runner before issue 15 had a thread only: this script also measures that code
    RefitRunner(background=False, mode="thread")
    _MODES = True
except TypeError:
    _MODES = False


class TimedRunner(RefitRunner):
    """The refit runner, with the wall-time window of each refit recorded."""

    def __init__(self, mode: str):
        super().__init__(background=True, **({"mode": mode} if _MODES else {}))
        self.windows: list[tuple[float, float]] = []

    def _execute(self, fn):
        t0 = time.perf_counter()
        try:
            return super()._execute(fn)
        finally:
            self.windows.append((t0, time.perf_counter()))


class TimedMonitor(ScalingLawMonitor):
    """The monitor, with the CPU and wall time of its batch hook recorded (thread CPU time,
    so other processes' load does not count)."""

    def __init__(self, mode: str = "process", **kw):
        super().__init__(**kw)
        self.refit_scheduler.runner = TimedRunner(mode)
        self.hook_cpu: list[float] = []
        self.hook_wall: list[float] = []
        self.hook_ends: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        c0, w0 = time.thread_time(), time.perf_counter()
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        w1 = time.perf_counter()
        self.hook_cpu.append(time.thread_time() - c0)
        self.hook_wall.append(w1 - w0)
        self.hook_ends.append(w1)


class StepTimer(pl.Callback):
    """Wall time of every training step, stamped after every other callback's batch-end hook."""

    def __init__(self):
        self.stamps: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.stamps:
            self.stamps.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.stamps.append(time.perf_counter())


def _trainer(steps: int, callbacks: list) -> pl.Trainer:
    return pl.Trainer(max_steps=steps, callbacks=callbacks, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, accelerator="cpu", devices=1)


def fixed_run(steps: int, mode: str | None, planned: int, step_ms: float, seed: int) -> dict:
    """One run of the fixed-cost step; ``mode`` None: plain, else the monitor's refit runner."""
    pl.seed_everything(seed, verbose=False)
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(256, 16, generator=g), torch.randn(256, 1, generator=g))
    timer = StepTimer()
    mon = TimedMonitor(mode=mode, write_summary=False, total_steps=planned) if mode else None
    trainer = _trainer(steps, ([mon] if mon else []) + [timer])
    with Probe() as probe:
        trainer.fit(FixedStep(step_ms, planned, seed), DataLoader(data, batch_size=8))
    ends, gaps = probe.gaps()
    stamps = np.asarray(timer.stamps)
    inside = (ends - gaps >= stamps[0]) & (ends <= stamps[-1])  # the training steps only, not the set-up
    ends, gaps = ends[inside], gaps[inside]
    return {"steps": np.diff(stamps), "start": stamps[0], "step_ends": stamps[1:], "gap_ends": ends, "gaps": gaps,
            "monitor": mon}


def during(ends: np.ndarray, lengths: np.ndarray, windows: list[tuple[float, float]],
           outside: list[tuple[float, float]] = ()) -> np.ndarray:
    """The lengths of the intervals (ending at ``ends``) that overlap one of ``windows`` and none
    of ``outside``."""
    if not len(windows) or not len(ends):
        return np.zeros(0)
    starts = ends - lengths
    hit = np.zeros(len(ends), dtype=bool)
    for a, b in windows:
        hit |= (starts < b) & (ends > a)
    if len(outside):
        spans = np.asarray(outside)
        order = np.argsort(spans[:, 0])
        lo, hi = spans[order, 0], spans[order, 1]
        # an interval overlaps a span iff the last span starting before its end ends after its start
        k = np.searchsorted(lo, ends, side="left") - 1
        hit &= ~((k >= 0) & (hi[np.maximum(k, 0)] > starts))
    return lengths[hit]


# -- the first step's FLOP measurement, on a real model -------------------------------------------
class MarkovText(Dataset):
    """Token sequences from a fixed random first-order Markov chain."""

    def __init__(self, vocab: int, seq: int, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        probs = torch.softmax(torch.randn(vocab, vocab, generator=g) * 3.0, dim=-1)
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


def flop_measurement(steps: int, planned: int = 20_000) -> dict:
    """The first step's hook on a 2-layer GPT (training-thread time), the measurement's own
    time on its thread, and the median step (the first ``steps`` steps of a ``planned`` run)."""
    pl.seed_everything(0, verbose=False)
    timer = StepTimer()
    mon = TimedMonitor(write_summary=False, total_steps=planned)
    timed = {"measure": 0.0, "wait": 0.0}
    try:
        import lightning_scaling.trainer.flops as flops_module
    except ImportError:  # before issue 15: measured inline, in the first hook
        import lightning_scaling.trainer.compute as flops_module
    patched = [(flops_module, "measure_flops_per_batch", "measure")]
    if hasattr(flops_module, "FlopMeasurement"):  # the training thread waits for the answer here, if at all
        patched.append((flops_module.FlopMeasurement, "result", "wait"))
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patched]

    def timing(fn, key):
        def timed_call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timed[key] += time.perf_counter() - t0
        return timed_call

    for (owner, name, key), (_, _, fn) in zip(patched, originals):
        setattr(owner, name, timing(fn, key))
    try:
        _trainer(steps, [mon, timer]).fit(TinyGPT(), DataLoader(MarkovText(256, 64, 512), batch_size=16))
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)
    step = float(np.median(np.diff(timer.stamps)[1:]))
    return {"first_hook_ms": 1e3 * mon.hook_wall[0], "measurement_thread_ms": 1e3 * timed["measure"],
            "median_step_ms": 1e3 * step, "later_wait_ms": 1e3 * timed["wait"],
            "flops_source": mon.compute.flops_source}


def history_after_a_million_steps() -> tuple[int, int]:
    h = LossHistory()
    for s in range(1, 1_000_001):
        h.append(step=s, key=s, loss=2.0 + 5.0 * s**-0.3, tokens=1024.0 * s, flops=6e9 * s)
    buf = io.BytesIO()
    torch.save(h.state_dict(), buf)
    return len(h), buf.tell()


# -- the report ------------------------------------------------------------------------------------
def summarize(plain: list[dict], monitored: list[dict], skip: int = 5) -> dict:
    """Ratios, hook CPU and waits of one refit mode against the plain runs."""
    pair_ratios = [float(np.mean(m["steps"][skip:]) / np.mean(p["steps"][skip:])) for p, m in zip(plain, monitored)]
    plain_median = float(np.median(np.concatenate([p["steps"][skip:] for p in plain])))
    mons = [m["monitor"] for m in monitored]
    hook_us = [1e6 * float(np.mean(mon.hook_cpu[1:])) for mon in mons]
    windows = [m["monitor"].refit_scheduler.runner.windows for m in monitored]
    # a gap that overlaps the monitor's own batch hook is the hook's (counted in its CPU), not a refit's
    hooks = [list(zip(np.asarray(mon.hook_ends) - np.asarray(mon.hook_wall), mon.hook_ends)) for mon in mons]
    refit_gaps = [during(m["gap_ends"], m["gaps"], w, h) for m, w, h in zip(monitored, windows, hooks)]
    # the control: the plain run's probe in the same windows (the same times since its first step)
    control = [during(p["gap_ends"], p["gaps"], [(a - m["start"] + p["start"], b - m["start"] + p["start"])
                                                 for a, b in w]) for p, m, w in zip(plain, monitored, windows)]
    refit_steps = [during(m["step_ends"], m["steps"], m["monitor"].refit_scheduler.runner.windows) for m in monitored]
    plain_gaps = [p["gaps"] for p in plain]
    train_s = [float(np.sum(m["steps"])) for m in monitored]
    return {
        "time_per_step_ratio": float(np.median(pair_ratios)),
        "pair_ratios": pair_ratios,
        "median_step_ms_plain": 1e3 * plain_median,
        "median_step_ms_monitored": 1e3 * float(np.median(np.concatenate([m["steps"][skip:] for m in monitored]))),
        "hook_cpu_us_per_step_after_first": hook_us,
        "hook_cpu_us_median_step": [1e6 * float(np.median(mon.hook_cpu[1:])) for mon in mons],
        "hook_worst_ms_after_first": [1e3 * max(mon.hook_wall[1:]) for mon in mons],
        "hook_first_step_ms": [1e3 * mon.hook_wall[0] for mon in mons],
        "refits_per_run": [mon.refit_scheduler.refits for mon in mons],
        "refit_cpu_share": [mon.refit_scheduler.runner.cpu_seconds / t for mon, t in zip(mons, train_s)],
        "refit_process_error": [getattr(mon.refit_scheduler.runner, "process_error", None) for mon in mons],
        "probe_gap_max_ms_during_refits": [1e3 * float(g.max()) if g.size else 0.0 for g in refit_gaps],
        "probe_gap_p99_ms_during_refits": [1e3 * float(np.quantile(g, 0.99)) if g.size else 0.0 for g in refit_gaps],
        "probe_gap_max_ms_plain": [1e3 * float(g.max()) for g in plain_gaps],
        "probe_gap_max_ms_plain_same_windows": [1e3 * float(g.max()) if g.size else 0.0 for g in control],
        "probe_gap_p99_ms_plain": [1e3 * float(np.quantile(g, 0.99)) for g in plain_gaps],
        "probe_samples_during_refits": [int(g.size) for g in refit_gaps],
        # a wake-up 4 ms late waited out most of a switch interval (5 ms): another thread held the GIL
        "probe_late_share_during_refits": [float(np.mean(g > LATE_S)) if g.size else 0.0 for g in refit_gaps],
        "probe_late_share_plain_same_windows": [float(np.mean(g > LATE_S)) if g.size else 0.0 for g in control],
        "step_excess_ms_during_refits": [1e3 * (float(s.max()) - plain_median) if s.size else 0.0 for s in refit_steps],
        "step_excess_ms_plain_worst": [1e3 * (float(p["steps"][skip:].max()) - plain_median) for p in plain],
        "history_points_after_run": [len(mon.history) for mon in mons],
    }


def short_targets(modes: dict, first: dict, history: tuple[int, int], target_mode: str) -> list[str]:
    """The printed targets the measurements miss (those of ``target_mode``)."""
    m = modes[target_mode]
    short = []
    hook = float(np.median(m["hook_cpu_us_per_step_after_first"]))
    if hook > HOOK_US_TARGET:
        short.append(f"hook {hook:.0f} us CPU per step > {HOOK_US_TARGET:.0f} us")
    if m["time_per_step_ratio"] > RATIO_TARGET:
        short.append(f"time per step ratio {m['time_per_step_ratio']:.4f} > {RATIO_TARGET}")
    wait = float(np.median(m["probe_gap_max_ms_during_refits"]))
    if wait > WAIT_MS_TARGET:
        short.append(f"wait behind a refit {wait:.1f} ms > {WAIT_MS_TARGET:.0f} ms")
    on_thread = (first["first_hook_ms"] + first["later_wait_ms"]) / first["median_step_ms"]
    if on_thread > FLOP_STEPS_TARGET:
        short.append(f"first-step FLOP measurement {on_thread:.1f} steps of training-thread time "
                     f"> {FLOP_STEPS_TARGET:.0f}")
    if history[0] > HISTORY_POINTS_TARGET:
        short.append(f"history {history[0]} points > {HISTORY_POINTS_TARGET}")
    if history[1] >= HISTORY_BYTES_TARGET:
        short.append(f"history state {history[1]} bytes >= 1 MB")
    return short


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3, help="plain/monitored run pairs per refit mode (alternating)")
    ap.add_argument("--steps", type=int, default=1500, help="optimizer steps per run")
    ap.add_argument("--planned", type=int, default=0,
                    help="the run's planned length told to the monitor (total_steps=); 0: --steps (the whole run)")
    ap.add_argument("--step-ms", type=float, default=10.0, help="the fixed step's wait, in ms")
    ap.add_argument("--modes", default="process", help="refit runners to compare: process, thread (comma-separated)")
    ap.add_argument("--gpt-steps", type=int, default=30, help="steps of the GPT run that times the FLOP measurement")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    planned = args.planned or args.steps
    load_before = os.getloadavg()[0]
    fixed_run(20, None, planned, args.step_ms, 0)  # warm-up: imports, allocator
    fixed_run(20, modes[0], planned, args.step_ms, 0)

    runs: dict[str, tuple[list, list]] = {m: ([], []) for m in modes}
    for pair in range(args.pairs):
        for mode in modes:
            order = (None, mode) if pair % 2 == 0 else (mode, None)  # alternate who goes first
            for which in order:
                run = fixed_run(args.steps, which, planned, args.step_ms, seed=pair)
                runs[mode][0 if which is None else 1].append(run)
    results = {mode: summarize(*runs[mode]) for mode in modes}
    first = flop_measurement(args.gpt_steps)
    history = history_after_a_million_steps()
    load_after = os.getloadavg()[0]

    print(f"{args.pairs} pairs of {args.steps}-step runs of a fixed {args.step_ms:g} ms step (monitor told: "
          f"{planned} steps planned); load average (1 min) before/after: {load_before:.2f}/{load_after:.2f}; "
          f"torch threads {torch.get_num_threads()}")
    for mode, r in results.items():
        print(f"[refits: {mode}] median step plain {r['median_step_ms_plain']:.2f} ms, monitored "
              f"{r['median_step_ms_monitored']:.2f} ms; refits per run {r['refits_per_run']}, refit CPU "
              f"{', '.join(f'{100 * s:.2f}%' for s in r['refit_cpu_share'])} of training time"
              + (f"; helper failed: {r['refit_process_error']}" if any(r["refit_process_error"]) else ""))
        hook = ", ".join(f"{u:.1f}" for u in r["hook_cpu_us_per_step_after_first"])
        median = ", ".join(f"{u:.1f}" for u in r["hook_cpu_us_median_step"])
        print(f"  batch hook CPU per step after the first: {hook} us (median step {median} us; worst single hook "
              f"{max(r['hook_worst_ms_after_first']):.1f} ms wall)   target <= {HOOK_US_TARGET:.0f} us")
        print(f"  time per step, monitored / plain: {r['time_per_step_ratio']:.4f} median (pairs: "
              f"{', '.join(f'{x:.4f}' for x in r['pair_ratios'])})   target <= {RATIO_TARGET}")
        longest = ", ".join(f"{g:.1f}" for g in r["probe_gap_max_ms_during_refits"])
        p99 = ", ".join(f"{g:.1f}" for g in r["probe_gap_p99_ms_during_refits"])
        print(f"  1 ms probe, longest gap while refits ran (outside the monitor's hook): {longest} ms (p99 {p99}; "
              f"{sum(r['probe_samples_during_refits'])} wake-ups); the plain runs in the same windows: "
              f"{', '.join(f'{g:.1f}' for g in r['probe_gap_max_ms_plain_same_windows'])} ms, in all: "
              f"{', '.join(f'{g:.1f}' for g in r['probe_gap_max_ms_plain'])} ms (p99 "
              f"{', '.join(f'{g:.1f}' for g in r['probe_gap_p99_ms_plain'])})   target <= {WAIT_MS_TARGET:.0f} ms")
        late = ", ".join(f"{100 * x:.1f}%" for x in r["probe_late_share_during_refits"])
        late_plain = ", ".join(f"{100 * x:.1f}%" for x in r["probe_late_share_plain_same_windows"])
        print(f"  probe wake-ups over {1e3 * LATE_S:.0f} ms late while refits ran: {late} (plain runs, same windows: "
              f"{late_plain})")
        print(f"  steps that overlapped a refit, worst over the plain median step: "
              f"{', '.join(f'{x:.1f}' for x in r['step_excess_ms_during_refits'])} ms (the plain runs' worst step: "
              f"{', '.join(f'{x:.1f}' for x in r['step_excess_ms_plain_worst'])} ms)")
    on_thread = (first["first_hook_ms"] + first["later_wait_ms"]) / first["median_step_ms"]
    print(f"first step's FLOP measurement (2-layer GPT, median step {first['median_step_ms']:.1f} ms): first hook "
          f"{first['first_hook_ms']:.2f} ms + later waits for the answer {first['later_wait_ms']:.2f} ms on the "
          f"training thread = {on_thread:.2f} steps; the measurement itself {first['measurement_thread_ms']:.1f} ms "
          f"(wall)   target <= {FLOP_STEPS_TARGET:.0f} steps; FLOPs from {first['flops_source']}")
    print(f"history: {history[0]} points and {history[1] / 1e3:.0f} kB of state after 1,000,000 steps   "
          f"target <= {HISTORY_POINTS_TARGET} points, < 1 MB")
    short = short_targets(results, first, history, modes[0])
    print(f"verdict ({modes[0]} refits): " + ("every target met" if not short else "SHORT: " + "; ".join(short)))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "load_average_1min": [load_before, load_after], "modes": results,
                       "flop_measurement": first, "history_after_1e6_steps": history, "short": short}, fh, indent=1)
    return 1 if short else 0


if __name__ == "__main__":
    raise SystemExit(main())
