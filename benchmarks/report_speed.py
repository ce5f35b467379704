#!/usr/bin/env python
"""How long ``lightning-scaling report`` takes on 100 run directories (target: <= 5 s).

The log directory mimics a sweep: half the runs have the monitor's scaling_summary.json (a
bucketed curve of --summary-points points, plus their event file, which report does not
need to read), half only a TensorBoard event file with --logged-steps logged steps of 4
scalar tags (train_loss, epoch, lr, scaling/flops), as Lightning writes them. One event file
of each kind is written with torch's SummaryWriter and copied into every run directory.

Each measurement is a fresh process (`python -m lightning_scaling report DIR`), so Python
start-up and imports are included; the median of --repeat runs is reported with the load.

    python benchmarks/report_speed.py [--runs 100] [--logged-steps 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def write_event_file(directory: str, logged_steps: int, every: int = 50) -> str:
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(directory)
    rng = np.random.default_rng(0)
    for i in range(logged_steps):
        step = (i + 1) * every - 1
        loss = 2.0 + 8.0 * (step + 100) ** -0.3 + 0.02 * rng.standard_normal()
        w.add_scalar("train_loss", loss, step)
        w.add_scalar("epoch", step // 1000, step)
        w.add_scalar("lr", 3e-4, step)
        w.add_scalar("scaling/flops", 6 * 1.2e8 * 5e5 * (step + 1), step)
    w.close()
    (name,) = [n for n in os.listdir(directory) if "tfevents" in n]
    return os.path.join(directory, name)


def summary(points: int, run: str) -> dict:
    steps = np.unique(np.geomspace(1, 100_000, points).astype(int))
    loss = 2.0 + 8.0 * (steps + 100.0) ** -0.3
    flops = 6 * 1.2e8 * 5e5 * steps
    fc = {"final_loss": 2.31, "lower": 2.28, "upper": 2.35, "level": 0.9, "step": 100_000,
          "law": "power", "target_step": 100_000}
    return {
        "format": "lightning-scaling/run-summary", "version": 1, "run": run, "n_params": 1.2e8,
        "tokens": 5e5 * 100_000, "flops": float(flops[-1]), "steps": 100_000,
        "final_loss": float(loss[-1]), "loss_name": "train_loss", "x_axis": "flops",
        "curve": {"step": steps.tolist(), "tokens": (5e5 * steps).tolist(), "flops": flops.tolist(),
                  "loss": loss.tolist()},
        "fit": None, "forecast": fc, "forecasts": [fc] * 50, "schedule": None,
        "warnings": [], "stopped_reason": None,
    }


def build(root: str, runs: int, logged_steps: int, summary_points: int) -> None:
    template = tempfile.mkdtemp(prefix="ls-bench-template-")
    try:
        event = write_event_file(template, logged_steps)
        for i in range(runs):
            d = os.path.join(root, f"sweep_{i:03d}", "version_0")
            os.makedirs(d)
            shutil.copy(event, d)
            if i % 2 == 0:
                with open(os.path.join(d, "scaling_summary.json"), "w") as fh:
                    json.dump(summary(summary_points, f"sweep_{i:03d}"), fh)
    finally:
        shutil.rmtree(template, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--logged-steps", type=int, default=2000)
    parser.add_argument("--summary-points", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--target", type=float, default=5.0, help="seconds")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="ls-bench-report-")
    try:
        build(root, args.runs, args.logged_steps, args.summary_points)
        size_mb = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(root) for f in fs) / 1e6
        results = {}
        for mode, extra in (("table", []), ("json", ["--json"])):
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "lightning_scaling", "report", root, *extra],
                                      capture_output=True, text=True)
                times.append(time.perf_counter() - t0)
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return 1
            rows = len(proc.stdout.strip().splitlines()) - 1 if mode == "table" else None
            results[mode] = {"median_s": statistics.median(times), "all_s": [round(t, 3) for t in times],
                             "rows": rows}
        # the floor: interpreter start-up and `import lightning_scaling` alone
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import lightning_scaling.cli"], check=True)
        startup = time.perf_counter() - t0
        load = os.getloadavg()
        print(json.dumps({"runs": args.runs, "logged_steps": args.logged_steps, "logdir_MB": round(size_mb, 1),
                          "target_s": args.target, "results": results, "startup_s": round(startup, 3),
                          "load_avg_1m": round(load[0], 2), "cpus": os.cpu_count()}, indent=2))
        worst = max(r["median_s"] for r in results.values())
        print(f"report on {args.runs} runs: {worst:.2f} s (target {args.target:.1f} s): "
              f"{'OK' if worst <= args.target else 'TOO SLOW'}")
        return 0 if worst <= args.target else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
