#!/usr/bin/env python
"""What the TensorBoard panels add to training time (target: <= 0.5%, figures included).

Two configurations, alternated run by run, each run in a fresh process (so the panels pay
their own imports, matplotlib included):

- ``off``: TensorBoardLogger + ScalingLawMonitor with its TensorBoard sink switched off
  (``monitor.tensorboard = False``): the monitor's own logging through ``pl_module.log``;
- ``on``:  the same with the sink the monitor adds by itself (every observation into the
  smoothed loss, the per-step series of the series' own runs every ``log_every_n_steps``
  steps, forecasts and parameters at each refit, layout, summary text at refits, budgeted
  figures, final figures and markdown summary).

Reported, for the ``on`` runs (medians):

- the sink's time on the training thread, timed inside it by kind of work, as a share of the
  run's fit time: wall clock (the verdict: what the sink adds to ``trainer.fit``; any wait for
  the figure helper on the training thread included) and CPU time of the training thread;
- split into a per-step part (scalars, forecasts, periodic figures: grows with the run) and a
  fixed end-of-run part (final figures, text), with the share projected to longer runs
  (``--project`` seconds of training at the measured per-step share);
- the CPU seconds of the figure helper process (matplotlib's import and its drawings): not on
  the training thread, but on another core of the machine;
- how long after ``trainer.fit`` returned the final figures were in their event file (they are
  drawn and written off the training thread, see ``TensorBoardSink``), and whether they are
  there, read back with TensorBoard's EventAccumulator;
- the difference of median fit times between the two configurations, whose run-to-run
  noise on a shared machine is far above 0.5% (its spread is printed with it).

The workload: an MLP regression with steps of a few milliseconds to tens of milliseconds on
one CPU thread (--width, --batch).

    python benchmarks/tensorboard_overhead.py [--steps 3000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time


def one_run(mode: str, steps: int, width: int, batch: int, threads: int, log_every: int) -> dict:
    import warnings

    import torch
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger

    from lightning_scaling import ScalingLawMonitor
    from lightning_scaling.tensorboard import TensorBoardSink

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    class MLP(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(32, width), torch.nn.GELU(), torch.nn.Linear(width, width),
                                           torch.nn.GELU(), torch.nn.Linear(width, 1))
            n = sum(p.numel() for p in self.parameters())
            self.flops_per_batch = 6.0 * n * batch

        def forward(self, x):
            return self.net(x)

        def training_step(self, b, i):
            x, y = b
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    x = torch.randn(batch * 64, 32)
    y = torch.sin(x[:, :8].sum(1, keepdim=True)) * torch.cos(x[:, 8:16].sum(1, keepdim=True))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True)
    with tempfile.TemporaryDirectory() as root:
        logger = TensorBoardLogger(root, name="bench")
        monitor = ScalingLawMonitor(tokens_per_batch=batch)
        if mode == "off":
            monitor.tensorboard = False
        trainer = pl.Trainer(max_steps=steps, logger=logger, callbacks=[monitor], enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=log_every,
                             accelerator="cpu", devices=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
            trainer.fit(MLP(), loader)
            fit_s, fit_cpu = time.perf_counter() - t0, time.thread_time() - c0
            process_cpu = time.process_time() - p0
        sinks = [s for s in monitor.sinks if isinstance(s, TensorBoardSink)]
        out = {"mode": mode, "fit_s": fit_s, "fit_cpu_s": fit_cpu, "process_cpu_s": process_cpu, "steps": steps,
               "refits": len(monitor.forecasts)}
        if sinks:
            sink = sinks[0]
            # the final figures are finished by a thread after fit returns: how long after, and
            # whether they reached the event files (read back as TensorBoard reads them)
            t1 = time.perf_counter()
            done = sink.wait_for_figures(60.0)
            out["final_figures_after_fit_s"] = time.perf_counter() - t1
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

            ea = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
            ea.Reload()
            tags = (sink.tags.figure_trend, sink.tags.figure_compute)
            out["final_figures_in_event_file"] = done and all(
                tag in ea.Tags()["images"] and ea.Images(tag)[-1].step == steps for tag in tags)
            timings = dict(sink.timings)
            out.update({"sink_s": sink.seconds, "timings": timings, "cpu_timings": dict(sink.cpu_timings),
                        "sink_cpu_s": sum(sink.cpu_timings.values()), "figures_written": sink.figures_written,
                        "helper_cpu_s": getattr(sink, "helper_cpu_seconds", 0.0),
                        "figures_in_helper": getattr(sink, "figure_pid", None) not in (None, os.getpid()),
                        # Lightning itself imports matplotlib (torchmetrics); its Agg backend only
                        # comes in when something draws in this process
                        "agg_imported_here": "matplotlib.backends.backend_agg" in sys.modules})
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--log-every", type=int, default=50, help="Trainer(log_every_n_steps=...)")
    parser.add_argument("--project", type=float, nargs="*", default=[600.0, 3600.0],
                        help="training seconds to project the share to (per-step share + fixed end cost)")
    parser.add_argument("--one", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.steps, args.width, args.batch, args.threads, args.log_every)))
        return 0
    runs = []
    load_before = os.getloadavg()[0]
    for i in range(args.repeat):
        for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):
            cmd = [sys.executable, __file__, "--one", mode, "--steps", str(args.steps), "--width", str(args.width),
                   "--batch", str(args.batch), "--threads", str(args.threads), "--log-every", str(args.log_every)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"  {mode:3s} fit {runs[-1]['fit_s']:.2f} s" + (f", sink {runs[-1]['sink_s']:.3f} s"
                                                                    if "sink_s" in runs[-1] else ""), file=sys.stderr)
    on = [r for r in runs if r["mode"] == "on"]
    off = [r for r in runs if r["mode"] == "off"]
    med = statistics.median
    med_on = med(r["fit_s"] for r in on)
    med_off = med(r["fit_s"] for r in off)
    share = [r["sink_s"] / r["fit_s"] for r in on]
    cpu_share = [r["sink_cpu_s"] / r["fit_cpu_s"] for r in on]
    kinds = {k: med(r["timings"][k] for r in on) for k in on[0]["timings"]}
    cpu_kinds = {k: med(r["cpu_timings"][k] for r in on) for k in on[0]["cpu_timings"]}
    fit_wall = med(r["fit_s"] for r in on)
    fit_cpu = med(r["fit_cpu_s"] for r in on)
    # per-step work grows with the run; the end-of-run figures and text are paid once
    per_step_wall = (kinds["observations"] + kinds["refits"] + kinds["figures"]) / fit_wall
    per_step_cpu = (cpu_kinds["observations"] + cpu_kinds["refits"] + cpu_kinds["figures"]) / fit_cpu
    fixed_wall, fixed_cpu = kinds["end"], cpu_kinds["end"]
    breakeven = fixed_wall / (0.005 - per_step_wall) if per_step_wall < 0.005 else math.inf
    projected = {f"{t:.0f}": per_step_wall + fixed_wall / t for t in args.project}
    helper_cpu = med(r.get("helper_cpu_s", 0.0) for r in on)
    result = {
        "steps": args.steps, "repeat": args.repeat, "log_every_n_steps": args.log_every,
        "step_ms_off": 1000 * med_off / args.steps,
        "fit_s": {"on": [round(r["fit_s"], 3) for r in on], "off": [round(r["fit_s"], 3) for r in off]},
        "fit_cpu_s_on": [round(r["fit_cpu_s"], 3) for r in on],
        "sink_share_of_fit_wall": {"median": med(share), "max": max(share)},
        "sink_share_of_fit_cpu": {"median": med(cpu_share), "max": max(cpu_share)},
        "sink_wall_seconds_by_kind": kinds,
        "sink_cpu_seconds_by_kind": cpu_kinds,
        "per_step_share_wall": per_step_wall,
        "per_step_share_cpu": per_step_cpu,
        "fixed_end_wall_s": fixed_wall,
        "fixed_end_cpu_s": fixed_cpu,
        "training_wall_s_for_0.5pct": breakeven,
        "projected_wall_share": projected,
        "helper_cpu_s": helper_cpu,
        "figures_in_helper": [r.get("figures_in_helper") for r in on],
        "drew_in_training_process": [r.get("agg_imported_here") for r in on],
        "figures_written": [r["figures_written"] for r in on],
        "final_figures_after_fit_s": [round(r.get("final_figures_after_fit_s", math.nan), 3) for r in on],
        "final_figures_in_event_file": [r.get("final_figures_in_event_file") for r in on],
        "refits": [r["refits"] for r in on],
        "ab_difference": (med_on - med_off) / med_off,
        # all threads of the training process, plus the helper's CPU: what the panels cost the
        # machine in all (CPU time is far less sensitive to other users' load than wall time)
        "ab_cpu_difference": (med(r["process_cpu_s"] + r.get("helper_cpu_s", 0.0) for r in on)
                              - med(r["process_cpu_s"] for r in off)) / med(r["process_cpu_s"] for r in off),
        "process_cpu_s": {"on": [round(r["process_cpu_s"], 3) for r in on],
                          "off": [round(r["process_cpu_s"], 3) for r in off]},
        "ab_spread_off": (max(r["fit_s"] for r in off) - min(r["fit_s"] for r in off)) / med_off,
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)], "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    s = result["sink_share_of_fit_wall"]["median"]
    print(f"TensorBoard panels: {100 * s:.3f}% of the fit's wall time on the training thread (target 0.5%): "
          f"{'OK' if s <= 0.005 else 'OVER'}; per-step part {100 * per_step_wall:.3f}%, end of run "
          f"{fixed_wall:.3f} s ({fixed_cpu:.3f} CPU s; <= 0.5% in all from {breakeven:.0f} s of training); "
          + ", ".join(f"{100 * v:.3f}% at {k} s" for k, v in projected.items())
          + f"; training-thread CPU share {100 * result['sink_share_of_fit_cpu']['median']:.3f}%; figure helper "
          f"process {helper_cpu:.2f} CPU s on another core; final figures written "
          f"{statistics.median(result['final_figures_after_fit_s']):.3f} s after fit returned (off the training "
          f"thread; in the event files: {all(result['final_figures_in_event_file'])}); A/B wall difference "
          f"{100 * result['ab_difference']:+.2f}% (run-to-run spread {100 * result['ab_spread_off']:.1f}%), "
          f"A/B CPU difference (training process + helper) {100 * result['ab_cpu_difference']:+.2f}%")
    return 0 if s <= 0.005 and all(result["final_figures_in_event_file"]) else 1


if __name__ == "__main__":
    sys.exit(main())
