"""Optuna sweep pruning on the forecast final loss vs on the current loss (issue 7 target).

A study of replayed development curves: each trial replays one recorded curve of one set of
../shared/data through a real ``pytorch_lightning.Trainer`` (``ReplayModule``, one trainer step
per ``--stride`` recorded optimizer steps, the recorded LR schedule driving a real scheduler)
with a ``ScalingLawMonitor`` and ``ForecastPruning``. The same trials, in the same order, run
twice, with the same ``MedianPruner`` and the same report steps (every ``--refit-every``
trainer steps, from the same step on):

- forecast: the monitor's forecast of the final loss is reported (``value="forecast"``);
- loss: the current loss, the mean of the last 5 observed losses (``value="loss"``), which is
  what Optuna's own Lightning callback prunes on (there on a logged metric).

The objective of a finished trial is its true final loss (the README's: the mean measured
loss over the last 1% of steps). Reported per study: total optimizer steps trained (recorded
steps, summed over trials), trials pruned, and whether the best trial (the curve with the
lowest true final loss) was kept.

When a set has fewer curves than ``--trials``, the first trials are every curve once and the
rest repeat curves drawn at random (a configuration tried twice); then the order is shuffled.
``--orders k`` repeats the comparison over k shuffled orders (seeds seed..seed+k-1).

    python benchmarks/pruning.py                                   # multipower, 20 trials
    python benchmarks/pruning.py --set modded_nanogpt --stride 8
    python benchmarks/pruning.py --orders 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _curves import load_sets, split_case  # noqa: E402

MODES = ("forecast", "loss")


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning_scaling", "optuna"):
        logging.getLogger(name).setLevel(logging.ERROR)


def trial_plan(curves, n_trials: int, seed: int) -> list[int]:
    """Indices into ``curves``: every curve once (repeats drawn at random when short), shuffled."""
    rng = np.random.default_rng(seed)
    idx = list(range(len(curves)))[:n_trials]
    if n_trials > len(curves):
        idx += rng.choice(len(curves), size=n_trials - len(curves), replace=False).tolist()
    rng.shuffle(idx)
    return [int(i) for i in idx]


def run_study(args: dict) -> dict:
    """One study: the trials of ``plan`` in order, pruned on ``mode``. Runs in a worker process."""
    _quiet()
    import optuna
    import pytorch_lightning as pl

    from lightning_scaling import ScalingLawMonitor
    from lightning_scaling.monitor import RefitConfig
    from lightning_scaling.trainer.pruning import ForecastPruning
    from lightning_scaling.trainer.replay import ReplayModule

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    curves = load_sets(args["data"], [args["set"]])
    plan, mode, stride = args["plan"], args["mode"], args["stride"]
    pruner = optuna.pruners.MedianPruner(n_startup_trials=args["startup"], n_warmup_steps=args["warmup_steps"])
    study = optuna.create_study(direction="minimize", pruner=pruner)
    rows: list[dict] = []
    t0 = time.perf_counter()

    def objective(trial):
        curve = curves[plan[trial.number]]
        truth = split_case(curve, 1.0).truth
        module = ReplayModule(
            {"step": curve.step, "tokens": curve.tokens, "loss": curve.loss, "lr": curve.lr},
            stride=stride, final_step=curve.final_step,
            tokens_per_step=float(curve.info["tokens_per_step"]) if curve.info.get("tokens_per_step") else None,
        )
        monitor = ScalingLawMonitor(x_axis=curve.x_axis, refit=RefitConfig(every=args["refit_every"], background=False),
                                    write_summary=False, log_metrics=False)
        pruning = ForecastPruning(trial, monitor, value=mode, min_fraction=args["min_fraction"],
                                  smoothing=args["smoothing"])
        trainer = pl.Trainer(max_steps=module.n_steps, callbacks=[monitor, pruning], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0, accelerator="cpu", devices=1)
        row = {"trial": trial.number, "run": curve.run, "truth": truth, "planned_steps": module.n_steps * stride}
        rows.append(row)
        try:
            trainer.fit(module)
        finally:
            row["steps"] = int(trainer.global_step) * stride
            row["pruned_at"] = None if pruning.pruned_step is None else pruning.pruned_step * stride
            row["last_report"] = pruning.reports[-1][1] if pruning.reports else None
        return truth

    study.optimize(objective, n_trials=len(plan))
    for row, t in zip(rows, study.trials):
        row["state"] = t.state.name
    best_truth = min(r["truth"] for r in rows)
    kept = [r for r in rows if r["state"] == "COMPLETE"]
    best_kept = min((r["truth"] for r in kept), default=math.nan)
    return {
        "mode": mode,
        "order_seed": args["order_seed"],
        "rows": rows,
        "total_steps": sum(r["steps"] for r in rows),
        "planned_steps": sum(r["planned_steps"] for r in rows),
        "pruned": sum(r["state"] == "PRUNED" for r in rows),
        "best_truth": best_truth,
        "best_kept_truth": best_kept,
        "best_kept": bool(best_kept == best_truth),
        "seconds": time.perf_counter() - t0,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder holding curves/ (default ../shared/data)")
    ap.add_argument("--set", default="multipower", help="one set of curves (default multipower)")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--stride", type=int, default=128, help="recorded steps per trainer step, the same for all trials")
    ap.add_argument("--refit-every", type=int, default=5, help="trainer steps between refits = report steps")
    ap.add_argument("--startup", type=int, default=5, help="MedianPruner n_startup_trials")
    ap.add_argument("--warmup", type=float, default=0.0,
                    help="MedianPruner n_warmup_steps as a fraction of the shortest run (default 0)")
    ap.add_argument("--min-fraction", type=float, default=None,
                    help="ForecastPruning min_fraction, both modes (default: the monitor's, 0.2 of each run)")
    ap.add_argument("--smoothing", type=int, default=3, help="ForecastPruning smoothing (forecast mode)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the trial order")
    ap.add_argument("--orders", type=int, default=1, help="shuffled orders to compare on (seeds seed..seed+k-1)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    curves = load_sets(args.data, [args.set])
    if not curves:
        raise SystemExit(f"no curves in set {args.set!r}")
    shortest = min(int(math.ceil(c.final_step / args.stride)) for c in curves)
    warmup_steps = max(1, int(round(args.warmup * shortest)))
    jobs = []
    for k in range(args.orders):
        plan = trial_plan(curves, args.trials, args.seed + k)
        for mode in MODES:
            jobs.append({"data": args.data, "set": args.set, "plan": plan, "mode": mode, "stride": args.stride,
                         "refit_every": args.refit_every, "startup": args.startup, "warmup_steps": warmup_steps,
                         "min_fraction": args.min_fraction, "smoothing": args.smoothing,
                         "order_seed": args.seed + k})
    t0 = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(run_study, jobs))
    else:
        results = [run_study(j) for j in jobs]

    repeats = max(0, args.trials - len(curves))
    print(f"set {args.set}: {len(curves)} curves, {args.trials} trials"
          + (f" ({len(curves)} curves once + {repeats} repeats drawn at random)" if repeats else "")
          + f"; stride {args.stride} recorded steps per trainer step; report/refit every {args.refit_every} trainer "
          f"steps; MedianPruner(n_startup_trials={args.startup}, n_warmup_steps={warmup_steps} trainer steps = "
          f"{warmup_steps * args.stride:,} optimizer steps); reports from "
          + ("the monitor's min_fraction (0.2)" if args.min_fraction is None else f"min_fraction {args.min_fraction}")
          + f" of each run; forecast = median of the newest {args.smoothing} forecasts")
    for k in range(args.orders):
        pair = {r["mode"]: r for r in results if r["order_seed"] == args.seed + k}
        f, l = pair["forecast"], pair["loss"]
        print(f"\norder seed {args.seed + k}: trial order " + ", ".join(r["run"] for r in f["rows"]))
        print(f"{'trial':>5s} {'run':28s} {'true final':>10s} | {'forecast: steps':>16s} {'state':9s} | "
              f"{'loss: steps':>12s} {'state':9s}")
        for rf, rl in zip(f["rows"], l["rows"]):
            star = " *" if rf["truth"] == f["best_truth"] else ""
            print(f"{rf['trial']:5d} {rf['run'][:28]:28s} {rf['truth']:10.4f} | {rf['steps']:16,d} {rf['state']:9s} | "
                  f"{rl['steps']:12,d} {rl['state']:9s}{star}")
        for r in (f, l):
            print(f"  prune on {r['mode']:8s}: total {r['total_steps']:,} optimizer steps "
                  f"({100 * r['total_steps'] / r['planned_steps']:.1f}% of {r['planned_steps']:,}), "
                  f"{r['pruned']} pruned, best trial kept: {'yes' if r['best_kept'] else 'NO'} "
                  f"(best kept true final loss {r['best_kept_truth']:.4f}, best {r['best_truth']:.4f}) "
                  f"[{r['seconds']:.0f} s]")
    if args.orders > 1:
        print()
        for mode in MODES:
            rs = [r for r in results if r["mode"] == mode]
            print(f"over {args.orders} orders, prune on {mode:8s}: total steps {sum(r['total_steps'] for r in rs):,}, "
                  f"best kept in {sum(r['best_kept'] for r in rs)}/{len(rs)}")
        fewer = sum(
            1 for k in range(args.orders)
            if [r for r in results if r["order_seed"] == args.seed + k and r["mode"] == "forecast"][0]["total_steps"]
            < [r for r in results if r["order_seed"] == args.seed + k and r["mode"] == "loss"][0]["total_steps"])
        print(f"forecast pruning spent fewer steps than loss pruning in {fewer}/{args.orders} orders")
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "warmup_steps": warmup_steps, "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
