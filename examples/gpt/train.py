"""Train a byte-level GPT on the Python standard library, with a live scaling-law forecast.

    python examples/gpt/train.py                  # CPU: 2-3 minutes on 2 cores
    python examples/gpt/train.py --preset gpu     # chosen automatically when CUDA is present
    python examples/gpt/train.py --preset smoke   # a few dozen steps, for CI
    python examples/gpt/train.py --inject-fault 400 --stop-when-behind   # watch it catch a fault

While it trains, ``ScalingLawMonitor`` fits the loss curve and forecasts the final loss with
an interval; at the end the forecasts made at 25% and 50% of the run are printed next to the
loss actually reached (nats per byte), with the TensorBoard command to look at the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the ``gpt`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# On a CPU that other processes share, OpenMP threads that spin while they wait for each
# other lose most of their time whenever one of them is descheduled: measured here on 2
# busy cores, 2 torch threads trained 3-5x slower spinning than sleeping (PASSIVE), and
# slower than 1 thread. Must be set before torch starts OpenMP; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
from pytorch_lightning.callbacks import Callback, ModelCheckpoint  # noqa: E402
from pytorch_lightning.loggers import TensorBoardLogger  # noqa: E402

from gpt.data import ByteDataModule, ByteWindows, CorpusError  # noqa: E402
from gpt.model import GPTConfig, flops_per_token  # noqa: E402
from gpt.module import GPTLightningModule, OptimConfig  # noqa: E402

# Lightning 2.6 on torch 2.13 warns about its own use of a torch pytree API on every run.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

# Dense bf16 tensor-core peaks in FLOP/s, by a substring of torch.cuda.get_device_name().
# First match wins, so the more specific names come first.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),   # SXM / NVL / HBM3
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
    ("L4", 121e12),
)


@dataclass
class Preset:
    """Everything that differs between the CPU, GPU and CI runs.

    Attributes:
        model, optim: shape of the transformer; AdamW and schedule.
        batch_size: examples per optimizer step per device; tokens per step is
            ``batch_size * model.seq_len``.
        max_steps: optimizer steps (the cosine schedule ends here).
        accelerator, precision: Lightning's names ("cpu"/"gpu"/"auto", "32-true"/"bf16-mixed").
        compile: wrap the LightningModule in ``torch.compile``.
        threads: torch intra-op threads on CPU (None: leave torch's default).
        val_every, val_batches: validation every this many steps, on this many batches.
        data: corpus, see ``gpt.data.corpus_files``.
        num_workers: DataLoader workers.
        report_every: print a progress line every this many steps.
        final_eval_windows: fresh training windows (sequences) on which the final model's
            loss is also measured at the end (kept in ``--json`` output as
            ``final_loss_fresh_windows``; the final loss printed is the run summary's).
    """

    name: str
    model: GPTConfig
    optim: OptimConfig
    batch_size: int
    max_steps: int
    accelerator: str = "cpu"
    precision: str = "32-true"
    compile: bool = False
    threads: int | None = None
    val_every: int = 500
    val_batches: int = 8
    data: str = "stdlib"
    num_workers: int = 0
    report_every: int = 100
    final_eval_windows: int = 4096


PRESETS = {
    # 2 CPU cores, about 2.5 minutes: 0.22M non-embedding parameters, 8,192 tokens per step.
    "cpu": Preset(
        name="cpu",
        model=GPTConfig(seq_len=128, n_layer=2, n_head=3, d_model=96),
        optim=OptimConfig(lr=6e-3, warmup_steps=40, min_lr_ratio=0.1, weight_decay=0.1),
        batch_size=64, max_steps=800, threads=None, val_every=200, val_batches=4, report_every=50,
    ),
    # One H100/H200: 42.5M non-embedding parameters, 131k tokens per step, bf16, compiled;
    # about 10 minutes at ~35% MFU (0.74B tokens, ~17 tokens per parameter).
    "gpu": Preset(
        name="gpu",
        model=GPTConfig(seq_len=1024, n_layer=6, n_head=12, d_model=768),
        optim=OptimConfig(lr=1.5e-3, warmup_steps=250, min_lr_ratio=0.1, weight_decay=0.1),
        batch_size=128, max_steps=5600, accelerator="gpu", precision="bf16-mixed", compile=True,
        val_every=500, val_batches=20, data="python", num_workers=4, report_every=250,
        final_eval_windows=2048,
    ),
    # CI: a few dozen steps of a tiny model, seconds on a CPU.
    "smoke": Preset(
        name="smoke",
        model=GPTConfig(seq_len=64, n_layer=2, n_head=2, d_model=64),
        optim=OptimConfig(lr=3e-3, warmup_steps=5, min_lr_ratio=0.1),
        batch_size=16, max_steps=48, threads=1, val_every=24, val_batches=2, report_every=12,
        final_eval_windows=64,
    ),
}
PRESETS["gpu-tiny"] = replace(
    # The GPU preset's code path (bf16-mixed, torch.compile, same optimizer and schedule)
    # scaled down to run on a CPU in seconds: only the device and the sizes differ.
    PRESETS["gpu"], name="gpu-tiny", accelerator="cpu",
    model=GPTConfig(seq_len=64, n_layer=2, n_head=2, d_model=64),
    optim=replace(PRESETS["gpu"].optim, warmup_steps=5), batch_size=8, max_steps=24,
    val_every=12, val_batches=2, data="stdlib", num_workers=0, threads=1, report_every=6,
    final_eval_windows=16,
)


def default_preset_name() -> str:
    return "gpu" if torch.cuda.is_available() else "cpu"


def peak_bf16_flops(device_name: str) -> float | None:
    """The card's dense bf16 peak in FLOP/s, or None when the card is not in the table."""
    for key, peak in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def model_flops_utilization(flops_per_second: float, peak_flops: float | None) -> float | None:
    """MFU: achieved model FLOP/s (from ``flops_per_batch``) over the card's peak, per device."""
    if not peak_flops:
        return None
    return flops_per_second / peak_flops


class TrainingRecord(Callback):
    """Per-step training losses, throughput, and a progress line with the current forecast.

    Losses are kept as device tensors and read once at the end, so recording them never
    forces a GPU synchronisation. Throughput is timed from ``warmup_steps`` on (after
    compilation and the first allocations), with a device synchronisation at both ends.
    """

    def __init__(self, report_every: int, warmup_steps: int, monitor=None, stream=None):
        self.report_every = max(1, report_every)
        self.warmup_steps = warmup_steps
        self.monitor = monitor
        self.stream = stream
        self.losses: list[torch.Tensor] = []
        self.lrs: list[float] = []  # the LR set after each optimizer step, for the next one
        self.t_warm = self.t_end = None
        self.step_warm = 0

    def _sync(self, trainer):
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(loss.detach())
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        step = trainer.global_step
        if step == self.warmup_steps:
            self._sync(trainer)
            self.t_warm, self.step_warm = time.perf_counter(), step
        if trainer.is_global_zero and (step % self.report_every == 0 or step == trainer.max_steps):
            self.print_progress(trainer, pl_module, step, float(loss))

    def on_train_end(self, trainer, pl_module):
        self._sync(trainer)
        self.t_end = time.perf_counter()

    def print_progress(self, trainer, pl_module, step, loss):
        line = f"step {step:>6}/{trainer.max_steps}  train_loss {loss:.3f}"
        val = trainer.callback_metrics.get("val_loss")
        if val is not None:
            line += f"  val_loss {float(val):.3f}"
        forecast = getattr(self.monitor, "forecast", None)
        if forecast is not None and math.isfinite(forecast.final_loss):
            line += (f"  | forecast final {forecast.final_loss:.3f} "
                     f"[{forecast.lower:.3f}, {forecast.upper:.3f}] ({forecast.level:.0%}, "
                     f"made at step {forecast.step})")
        rate = self.tokens_per_second(pl_module, trainer, now=True)
        if rate:
            line += f"  {rate:,.0f} tok/s"
        print(line + "   (losses in nats/byte)", file=self.stream or sys.stdout, flush=True)

    def tokens_per_second(self, pl_module, trainer, now=False) -> float | None:
        if self.t_warm is None:
            return None
        end = time.perf_counter() if now else self.t_end
        steps = trainer.global_step - self.step_warm
        if not end or steps <= 0:
            return None
        return steps * pl_module.tokens_per_batch * trainer.world_size / (end - self.t_warm)

    def loss_history(self) -> list[float]:
        return torch.stack(self.losses).float().cpu().tolist() if self.losses else []


class LRFault(Callback):
    """Multiply the learning rate by ``factor`` from optimizer step ``step`` on, unannounced.

    A stand-in for a real mistake (a bad LR change, a broken data shard): the scheduler's
    base LRs are scaled in place, so the planned schedule the monitor read at the start of
    training knows nothing about it and the loss falls behind the forecast.
    """

    def __init__(self, step: int, factor: float = 10.0, stream=None):
        if step < 1:
            raise ValueError(f"--inject-fault must be an optimizer step >= 1, got {step}")
        self.step, self.factor, self.stream = step, factor, stream
        self.injected_at: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.injected_at is not None or trainer.global_step < self.step:
            return
        for config in trainer.lr_scheduler_configs:
            config.scheduler.base_lrs = [lr * self.factor for lr in config.scheduler.base_lrs]
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= self.factor
        self.injected_at = trainer.global_step
        if trainer.is_global_zero:
            print(f"step {trainer.global_step:>6}: injected fault: learning rate x{self.factor:g} "
                  "from here on", file=self.stream or sys.stdout, flush=True)


def build_monitor(args, total_steps: int):
    """The scaling-law callback, or None (with the reason) when it cannot be built."""
    if args.no_forecast:
        return None, "disabled with --no-forecast"
    try:
        from lightning_scaling import ScalingLawMonitor, StopConfig
    except Exception as exc:  # the example still trains without the library
        return None, f"lightning_scaling.ScalingLawMonitor is unavailable ({exc})"
    # The training loss is training_step's own output (zero configuration); the validation
    # loss is followed by its logged name. The fit runs on optimizer steps (the LR schedule
    # is defined per step); FLOPs come from the module's flops_per_batch.
    kwargs = {"monitor": None if args.monitor == "train_loss" else args.monitor, "x_axis": "flops"}
    if args.stop_when_behind:
        # a fault shows as divergence (a jump that stays) at once, and as falling behind the trend
        # once a forecast narrow enough to test against exists: either stops the run
        kwargs["stop"] = StopConfig(behind_trend=True, divergence=True)
    return ScalingLawMonitor(**kwargs), None


def monitor_final_loss(logger) -> float | None:
    """The run summary's final_loss (the mean training loss over the last 2.5% of the steps)."""
    path = Path(logger.log_dir) / "scaling_summary.json"
    try:
        value = json.loads(path.read_text()).get("final_loss")
    except (OSError, ValueError):
        return None
    return float(value) if value is not None else None


def forecast_at(monitor, step: int):
    """The latest forecast made at or before ``step`` (None if there is none)."""
    made = [f for f in getattr(monitor, "forecasts", None) or [] if f.step <= step]
    return made[-1] if made else None


@torch.no_grad()
def final_training_loss(module: GPTLightningModule, train_bytes, n_windows: int, seed: int,
                        precision: str) -> float:
    """Mean loss (nats/byte) of the final model on ``n_windows`` random training windows.

    A second measurement of the loss reached, with far less batch scatter than the last
    steps' losses (files differ a lot); kept in the ``--json`` output, not printed, so the
    printout has one final loss. Windows are drawn with their own seed; a few overlap bytes
    seen once during training, which a model this size cannot have memorised.
    """
    windows = ByteWindows(train_bytes, module.config.seq_len)
    generator = torch.Generator().manual_seed(1_000_003 + seed)
    picks = torch.randint(len(windows), (max(1, n_windows),), generator=generator)
    was_training = module.training
    module.eval()
    total, count = 0.0, 0
    autocast = torch.autocast(module.device.type, dtype=torch.bfloat16,
                              enabled=precision.startswith("bf16"))
    with autocast:
        for chunk in picks.split(module.batch_size):
            inputs, targets = (torch.stack(t).to(module.device) for t in zip(*(windows[int(i)] for i in chunk)))
            total += float(module(inputs, targets)) * len(chunk)
            count += len(chunk)
    module.train(was_training)
    return total / count


FINAL_LOSS_HOW = "the mean training loss over the last 2.5% of the steps (the run summary's final_loss)"


def smoothed_final(losses: list[float], fraction: float = 0.025) -> float:
    """Mean training loss over the last ``fraction`` of steps (at least 5): the run summary's
    ``final_loss``, for a run without the monitor."""
    if not losses:
        return math.nan
    window = max(5, round(len(losses) * fraction))
    tail = losses[-window:]
    return sum(tail) / len(tail)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="run size (default: gpu when CUDA is available, else cpu)")
    parser.add_argument("--data", default=None,
                        help='"stdlib" (default on CPU), "python" (stdlib + site-packages, '
                             "default on GPU), or a folder or text file")
    parser.add_argument("--monitor", choices=("train_loss", "val_loss"), default="train_loss",
                        help="the loss the forecast follows")
    parser.add_argument("--inject-fault", type=positive_int, metavar="STEP", default=None,
                        help="multiply the LR by 10 from this optimizer step on")
    parser.add_argument("--stop-when-behind", action="store_true",
                        help="let the monitor stop the run when it falls behind its trend or diverges")
    parser.add_argument("--max-steps", type=positive_int, default=None, help="override the preset's steps")
    parser.add_argument("--batch-size", type=positive_int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=None)
    parser.add_argument("--min-lr-ratio", type=float, default=None,
                        help="final LR of the cosine as a fraction of the peak")
    parser.add_argument("--n-layer", type=positive_int, default=None)
    parser.add_argument("--d-model", type=positive_int, default=None)
    parser.add_argument("--n-head", type=positive_int, default=None)
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--no-forecast", action="store_true", help="train without the monitor")
    parser.add_argument("--out", default="runs", help="TensorBoard log folder (default: ./runs)")
    parser.add_argument("--name", default=None, help="run name (default: the preset's name)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-every", type=positive_int, default=None,
                        help="steps between progress lines (default: the preset's)")
    parser.add_argument("--json", dest="json_path", default=None,
                        help="also write the end-of-run figures to this JSON file")
    return parser.parse_args(argv)


def resolve_preset(args) -> Preset:
    preset = PRESETS[args.preset or default_preset_name()]
    model_overrides = {k: v for k, v in (("n_layer", args.n_layer), ("d_model", args.d_model),
                                         ("n_head", args.n_head)) if v is not None}
    model = replace(preset.model, **model_overrides) if model_overrides else preset.model
    optim = replace(preset.optim,
                    lr=args.lr if args.lr is not None else preset.optim.lr,
                    warmup_steps=preset.optim.warmup_steps if args.warmup_steps is None
                    else args.warmup_steps,
                    min_lr_ratio=preset.optim.min_lr_ratio if args.min_lr_ratio is None
                    else args.min_lr_ratio)
    max_steps = args.max_steps or preset.max_steps
    # validation keeps its share of the run; a forecast of the validation loss needs points
    # (a fit wants a dozen or more), so it validates every 4% of the run instead
    val_every = max(1, round(preset.val_every * max_steps / preset.max_steps))
    if args.monitor == "val_loss":
        val_every = max(1, max_steps // 25)
    preset = replace(preset, model=model, optim=optim,
                     batch_size=args.batch_size or preset.batch_size,
                     max_steps=max_steps, val_every=val_every,
                     threads=args.threads or preset.threads,
                     compile=preset.compile and not args.no_compile,
                     data=args.data or preset.data,
                     report_every=args.report_every or preset.report_every)
    if preset.accelerator == "gpu" and not torch.cuda.is_available():
        raise SystemExit(f"--preset {preset.name} needs a CUDA GPU; none is available "
                         "(try --preset cpu, or --preset gpu-tiny for the GPU code path on a CPU)")
    return preset


def train(args: argparse.Namespace) -> dict:
    """Run one training; returns the end-of-run figures (also printed)."""
    wall_start = time.perf_counter()
    preset = resolve_preset(args)
    if preset.threads and preset.accelerator == "cpu":
        torch.set_num_threads(preset.threads)
    if preset.accelerator == "gpu":
        torch.set_float32_matmul_precision("high")
    pl.seed_everything(args.seed, verbose=False)

    data = ByteDataModule(preset.data, seq_len=preset.model.seq_len, batch_size=preset.batch_size,
                          val_windows=preset.val_batches * preset.batch_size,
                          num_workers=preset.num_workers, pin_memory=preset.accelerator == "gpu",
                          seed=args.seed)
    data.setup()
    module = GPTLightningModule(preset.model, preset.optim, batch_size=preset.batch_size,
                                total_steps=preset.max_steps, compile=preset.compile)
    monitor, why_not = build_monitor(args, preset.max_steps)
    record = TrainingRecord(preset.report_every, warmup_steps=min(20, preset.max_steps // 10),
                            monitor=monitor)
    logger = TensorBoardLogger(args.out, name=args.name or preset.name, default_hp_metric=False)
    callbacks = [record, ModelCheckpoint(save_last=True, save_top_k=0)]
    if args.inject_fault is not None:
        callbacks.insert(0, LRFault(args.inject_fault))
    if monitor is not None:
        callbacks.insert(0, monitor)
    trainer = pl.Trainer(
        accelerator=preset.accelerator, devices=1, precision=preset.precision,
        max_steps=preset.max_steps, val_check_interval=preset.val_every,
        check_val_every_n_epoch=None, limit_val_batches=preset.val_batches,
        num_sanity_val_steps=0, logger=logger, callbacks=callbacks, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=max(1, min(10, preset.max_steps // 50)),
        gradient_clip_val=1.0,
    )

    n_params = module.n_params
    tokens_per_step = preset.batch_size * preset.model.seq_len * trainer.world_size
    if trainer.is_global_zero:
        print(f"preset {preset.name}: {n_params / 1e6:.2f}M non-embedding parameters, "
              f"{preset.max_steps} steps x {tokens_per_step:,} tokens = "
              f"{preset.max_steps * tokens_per_step / 1e6:.1f}M tokens, "
              f"{flops_per_token(preset.model) * preset.max_steps * tokens_per_step:.3g} FLOPs; "
              f"data {preset.data!r}: {len(data.train_bytes) / 1e6:.1f}M train / "
              f"{len(data.val_bytes) / 1e6:.2f}M val bytes; {preset.accelerator}, {preset.precision}"
              f"{', compiled' if preset.compile else ''}"
              f"{f', {torch.get_num_threads()} threads' if preset.accelerator == 'cpu' else ''}",
              flush=True)
        if why_not:
            print(f"note: no forecast: {why_not}", flush=True)
    trainer.fit(module, datamodule=data)

    losses = record.loss_history()
    fresh_loss = final_training_loss(module, data.train_bytes, preset.final_eval_windows,
                                     args.seed, preset.precision)
    final_loss = monitor_final_loss(logger) if monitor is not None else None
    if final_loss is None:
        final_loss = smoothed_final(losses)
    result = summarize(args, preset, trainer, module, monitor, record, losses, logger, wall_start,
                       final_loss, fresh_loss)
    if trainer.is_global_zero:
        print_report(result)
        if args.json_path:
            Path(args.json_path).write_text(json.dumps(result, indent=2))
    return result


def summarize(args, preset, trainer, module, monitor, record, losses, logger, wall_start,
              final_loss, fresh_loss) -> dict:
    steps = trainer.global_step
    tokens_per_step = module.tokens_per_batch * trainer.world_size
    rate = record.tokens_per_second(module, trainer)
    mfu = None
    device_name = None
    if trainer.strategy.root_device.type == "cuda":
        device_name = torch.cuda.get_device_name(trainer.strategy.root_device)
        if rate:
            flops_rate = rate / trainer.world_size * flops_per_token(preset.model)
            mfu = model_flops_utilization(flops_rate, peak_bf16_flops(device_name))
    val = trainer.callback_metrics.get("val_loss")

    def as_dict(forecast):
        if forecast is None:
            return None
        return {"final_loss": forecast.final_loss, "lower": forecast.lower,
                "upper": forecast.upper, "level": forecast.level, "step": forecast.step}

    return {
        "preset": preset.name,
        "model": dataclasses.asdict(preset.model),
        "optim": dataclasses.asdict(preset.optim),
        "batch_size": preset.batch_size,
        "log_dir": logger.log_dir,
        "tensorboard_root": str(Path(logger.root_dir).parent),
        "summary_file": str(Path(logger.log_dir) / "scaling_summary.json"),
        "n_params": module.n_params,
        "steps": steps,
        "planned_steps": preset.max_steps,
        "tokens": steps * tokens_per_step,
        "flops": steps * tokens_per_step * flops_per_token(preset.model),
        # the one final loss: the run summary's (what `lightning-scaling report` shows too)
        "final_loss": final_loss,
        "final_loss_how": FINAL_LOSS_HOW,
        # a second measurement, kept for the record only: the final model on fresh windows
        "final_loss_fresh_windows": fresh_loss,
        "final_val_loss": float(val) if val is not None else None,
        "monitored": args.monitor,
        # what the forecasts are compared with: the loss the monitor followed, at the end
        "reached_loss": float(val) if args.monitor == "val_loss" and val is not None else final_loss,
        "forecast_25": as_dict(forecast_at(monitor, preset.max_steps // 4)) if monitor else None,
        "forecast_50": as_dict(forecast_at(monitor, preset.max_steps // 2)) if monitor else None,
        "stopped_reason": getattr(monitor, "stopped_reason", None),
        "tokens_per_second": rate,
        "device": device_name or f"cpu ({torch.get_num_threads()} threads)",
        "mfu": mfu,
        "wall_seconds": time.perf_counter() - wall_start,
        "train_losses": losses,
        "lrs": record.lrs,
    }


def print_report(r: dict) -> None:
    print(f"\nfinished {r['steps']}/{r['planned_steps']} steps, {r['tokens'] / 1e6:.2f}M tokens, "
          f"{r['flops']:.3g} FLOPs, in {r['wall_seconds']:.0f} s")
    if r["stopped_reason"]:
        print(f"stopped early by the scaling monitor at step {r['steps']} of {r['planned_steps']} "
              "(its reason is above and in the run summary)")
    final = r["final_loss"]
    print(f"final loss {final:.4f} nats/byte ({final / math.log(2):.3f} bits/byte): {r['final_loss_how']}")
    if r["final_val_loss"] is not None:
        print(f"final validation loss {r['final_val_loss']:.4f} nats/byte")
    reached = r["reached_loss"]
    if reached != final:
        print("(the forecasts follow the validation loss: compared with the final validation loss)")
    for key, fraction in (("forecast_25", 0.25), ("forecast_50", 0.5)):
        f, label = r[key], f"{fraction:.0%}"
        if r["steps"] < fraction * r["planned_steps"]:
            print(f"forecast made at {label} of the run: the run stopped before step "
                  f"{int(fraction * r['planned_steps'])}")
            continue
        if f is None:
            print(f"forecast made at {label} of the run: none")
            continue
        if r["steps"] < r["planned_steps"]:
            print(f"forecast made at {label} of the run (step {f['step']}): {f['final_loss']:.4f} "
                  f"[{f['lower']:.4f}, {f['upper']:.4f}] nats/byte at step {r['planned_steps']}, "
                  "which the run did not reach")
            continue
        error = (f["final_loss"] - reached) / reached
        where = "inside" if f["lower"] <= reached <= f["upper"] else "outside"
        print(f"forecast made at {label} of the run (step {f['step']}): {f['final_loss']:.4f} "
              f"[{f['lower']:.4f}, {f['upper']:.4f}] nats/byte: error {error:+.2%} against the final loss, "
              f"which is {where} the interval")
    if r["tokens_per_second"]:
        line = f"throughput {r['tokens_per_second']:,.0f} tokens/s on {r['device']}"
        if r["mfu"] is not None:
            line += f", MFU {r['mfu']:.1%} of peak dense bf16"
        print(line)
    print(f"run summary: {r['summary_file']}")
    print(f"TensorBoard: tensorboard --logdir {r['tensorboard_root']}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
