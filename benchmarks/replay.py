"""Replay the development curves through a real Trainer with ScalingLawMonitor (issue 13 targets).

For every curve of ../shared/data (265 runs, five sets), a ``ReplayModule`` replays the
recorded loss (and LR schedule, where recorded) through ``pytorch_lightning.Trainer`` with
the monitor. ``lr_schedules`` replays its per-step *training* loss (``train_loss``: one
batch's, about 4% of noise per observation), since that is what the monitor follows in real
use; ``lr_schedules`` and ``algoperf`` drive the trainer's scheduler with the exact LR of
every step, expanded from ``schedules.json`` (``_curves.Curve.schedule``).

- clean: the unmodified curve. A forecast must exist at 25% of the run; no behind-trend
  warning may fire.
- fault: from a random step in [20%, 90%] of the run the loss is raised 3% and kept there; a
  behind-trend warning must come within 5% of the run's steps (target: >= 90% of cases).
- drift: from a random step in [20%, 85%] the loss rises linearly to +3% over the next 10% of
  the run and stays there; a warning must come within 10% of the run (target >= 90%).
- stop below: ``stop_if_forecast_above`` 2% under the true final loss; the run must stop
  before 40% of its steps (target >= 80% of runs).
- stop above: the target 2% above the true final loss; no run may stop (a false stop).

Every target holds per set (one table row each). The true final loss is the README's: the
mean measured loss over the last 1% of steps (for the replayed training loss of
``lr_schedules``, over at least its last 20 measured points: one batch's loss is too noisy).
Fractions are of the replayed trainer steps (one trainer step stands for ``stride`` recorded
steps; see lightning_scaling/replay.py). Refits every 2% of the run, inline (deterministic).
The last line is the verdict; the exit status is 1 when a target is short.

    python benchmarks/replay.py                 # everything, 2 processes
    python benchmarks/replay.py --sets gemstones --trials 1 --jobs 1
    python benchmarks/replay.py --json out.json
    python benchmarks/replay.py --parts stop    # clean replays and the stop rules only
    python benchmarks/replay.py --sets lr_schedules --every 8   # every 8th curve of a set
"""

from __future__ import annotations

import argparse
import csv
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

from _curves import load_sets  # noqa: E402

FAULT = 0.03  # relative loss increase of the fault and of the drift's end
FAULT_WINDOW = 0.05  # detection deadline, fraction of the run
DRIFT_LENGTH = 0.10
DRIFT_WINDOW = 0.10
STOP_BEFORE = 0.40
STOP_MARGIN = 0.02
TRAIN_LOSS_SETS = ("lr_schedules",)
"""Sets replayed on their ``train_loss`` column (their ``loss`` column is a validation loss)."""
MIN_TRUTH_POINTS = 20
"""Measured points the truth of a replayed training loss averages at least."""


def train_loss_column(curve, data_dir=None) -> np.ndarray:
    """The ``train_loss`` column of a curve's CSV (NaN where blank)."""
    from _curves import DEFAULT_DATA

    path = os.path.join(str(data_dir or DEFAULT_DATA), "curves", curve.set, curve.run + ".csv")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return np.array([float(r["train_loss"]) if r.get("train_loss") not in (None, "") else math.nan for r in rows])


def replayed(curve, data_dir=None) -> tuple[dict, float]:
    """The arrays a ``ReplayModule`` replays for ``curve`` and the true final loss to score against.

    With an exact schedule: one row per optimizer step 0..T (loss blank where not measured),
    the LR of every step, tokens ``step * tokens_per_step`` when known.
    """
    loss = train_loss_column(curve, data_dir) if curve.set in TRAIN_LOSS_SETS else curve.loss
    spec = curve.spec
    step, lr, tokens = curve.step, curve.lr, curve.tokens
    if spec is not None:
        T = int(spec["total_steps"])
        full = np.arange(T + 1, dtype=float)
        lr = curve.schedule()
        per_step = np.full(T + 1, math.nan)
        keep = np.isfinite(loss) & (curve.step <= T)
        per_step[curve.step[keep].astype(int)] = loss[keep]
        tps = float(curve.info["tokens_per_step"]) if curve.info.get("tokens_per_step") else math.nan
        step, loss, tokens = full, per_step, full * tps
    measured = np.flatnonzero(np.isfinite(loss) & (step > 0))
    T = curve.final_step
    last = measured[step[measured] >= 0.99 * T]
    if curve.set in TRAIN_LOSS_SETS and last.size < MIN_TRUTH_POINTS:
        last = measured[-MIN_TRUTH_POINTS:]
    if last.size == 0:
        last = measured[-1:]
    return {"step": step, "tokens": tokens, "loss": loss, "lr": lr}, float(np.mean(loss[last]))


def _quiet() -> None:
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    warnings.filterwarnings("ignore", category=UserWarning,
                            message=(".*(num_workers|does not have many workers|LeafSpec|"
                                     "training_step. returned .None.).*"))
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning_scaling"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _run(curve, *, arrays=None, perturb=None, stop_target=None, refit_fraction=0.02, x_axis=None):
    """One replay through a real Trainer (of ``arrays``, default the curve's own); returns the
    monitor, the module, the trainer and the number of BehindTrendWarnings."""
    import pytorch_lightning as pl

    from lightning_scaling import ScalingLawMonitor
    from lightning_scaling.errors import BehindTrendWarning
    from lightning_scaling.monitor import RefitConfig
    from lightning_scaling.trainer.replay import ReplayModule

    info = curve.info
    tps = float(info["tokens_per_step"]) if info.get("tokens_per_step") else None
    n_params = float(info["n_params"]) if info.get("n_params") else None
    module = ReplayModule(
        arrays or {"step": curve.step, "tokens": curve.tokens, "loss": curve.loss, "lr": curve.lr},
        tokens_per_step=tps,
        n_params=n_params,
        perturb=perturb,
        final_step=curve.final_step,
    )
    mon = ScalingLawMonitor(
        x_axis=x_axis or curve.x_axis,
        refit=RefitConfig(every=max(1, int(round(refit_fraction * module.n_steps))), background=False),
        stop_if_forecast_above=stop_target,
        write_summary=False,
        log_metrics=False,
    )
    trainer = pl.Trainer(
        max_steps=module.n_steps,
        callbacks=[mon],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accelerator="cpu",
        devices=1,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BehindTrendWarning)
        trainer.fit(module)
    behind = [w for w in caught if issubclass(w.category, BehindTrendWarning)]
    return mon, module, trainer, len(behind)


def _behind_steps(mon) -> list[int]:
    """The steps at which a behind-trend episode started (its first message)."""
    out = []
    for w in mon.warnings_emitted:
        if w.startswith("step ") and "ScalingLawMonitor: behind trend:" in w:
            out.append(int(w.split(":")[0].split()[1]))
    return out


def evaluate_curve(curve, trials: int, seed: int, parts=("clean", "fault", "stop"), data=None) -> dict:
    _quiet()
    rng = np.random.default_rng(seed)
    arrays, truth = replayed(curve, data)
    t0 = time.perf_counter()
    row: dict = {"set": curve.set, "run": curve.run}

    def run_one(curve, **kw):
        return _run(curve, arrays=arrays, **kw)

    # clean (always: it sizes the run)
    mon, module, trainer, n_behind = run_one(curve)
    row["clean_divergence_warnings"] = sum("ScalingLawMonitor: divergence:" in w for w in mon.warnings_emitted)
    n = module.n_steps
    row["n_steps"], row["stride"] = n, module.stride
    at25 = [f for f in mon.forecasts if f.step <= 0.25 * n and math.isfinite(f.final_loss)]
    row["forecast_at_25"] = bool(at25)
    row["err_at_25"] = abs(at25[-1].final_loss - truth) / truth if at25 else None
    row["in_interval_at_25"] = bool(at25 and at25[-1].lower <= truth <= at25[-1].upper)
    row["clean_behind_warnings"] = n_behind
    row["clean_behind_steps"] = [s / n for s in _behind_steps(mon)]
    row["law_at_25"] = at25[-1].law if at25 else None

    # faults and drifts
    faults, drifts = [], []
    for _ in range(trials if "fault" in parts else 0):
        start = int(rng.uniform(0.2, 0.9) * n)
        rec_start = module.recorded_step(start)

        def fault(rec_step, loss, s=rec_start):
            return loss * (1 + FAULT) if rec_step >= s else loss

        mon, _, _, _ = run_one(curve, perturb=fault)
        hits = [s for s in _behind_steps(mon) if s >= start]
        early = [s for s in _behind_steps(mon) if s < start]
        delay = (hits[0] - start) / n if hits else None
        faults.append({"start": start / n, "delay": delay, "false_before": len(early),
                       "detected": delay is not None and delay <= FAULT_WINDOW})

        dstart = int(rng.uniform(0.2, 0.85) * n)
        rec_d = module.recorded_step(dstart)
        ramp = DRIFT_LENGTH * module.recorded_step(n)

        def drift(rec_step, loss, s=rec_d, r=ramp):
            return loss * (1 + FAULT * min(1.0, max(0.0, (rec_step - s) / r)))

        mon, _, _, _ = run_one(curve, perturb=drift)
        hits = [s for s in _behind_steps(mon) if s >= dstart]
        early = [s for s in _behind_steps(mon) if s < dstart]
        delay = (hits[0] - dstart) / n if hits else None
        drifts.append({"start": dstart / n, "delay": delay, "false_before": len(early),
                       "detected": delay is not None and delay <= DRIFT_WINDOW})
    row["faults"], row["drifts"] = faults, drifts

    # stopping
    row["stop_below_step"] = row["stop_above_step"] = None
    row["stop_below_ok"] = False
    if "stop" in parts:
        mon, _, trainer, _ = run_one(curve, stop_target=truth * (1 - STOP_MARGIN))
        row["stop_below_step"] = None if mon.stopped_step is None else mon.stopped_step / n
        row["stop_below_ok"] = mon.stopped_step is not None and mon.stopped_step < STOP_BEFORE * n
        mon, _, trainer, _ = run_one(curve, stop_target=truth * (1 + STOP_MARGIN))
        row["stop_above_step"] = None if mon.stopped_step is None else mon.stopped_step / n
        row["stop_above_reason"] = mon.stopped_reason
    row["seconds"] = time.perf_counter() - t0
    return row


def summarize(rows: list[dict]) -> dict:
    faults = [f for r in rows for f in r["faults"]]
    drifts = [d for r in rows for d in r["drifts"]]
    errs = [r["err_at_25"] for r in rows if r["err_at_25"] is not None]
    return {
        "curves": len(rows),
        "forecast_at_25": sum(r["forecast_at_25"] for r in rows),
        "median_rel_error_at_25": float(np.median(errs)) if errs else None,
        "p90_rel_error_at_25": float(np.percentile(errs, 90)) if errs else None,
        "interval_holds_truth_at_25": sum(r["in_interval_at_25"] for r in rows),
        "clean_runs_with_behind_warning": sum(r["clean_behind_warnings"] > 0 for r in rows),
        "clean_behind_warnings": sum(r["clean_behind_warnings"] for r in rows),
        "clean_divergence_warnings": sum(r.get("clean_divergence_warnings", 0) for r in rows),
        "fault_cases": len(faults),
        "fault_detected_within_5pct": sum(f["detected"] for f in faults),
        "fault_false_alarm_before": sum(f["false_before"] > 0 for f in faults),
        "drift_cases": len(drifts),
        "drift_detected_within_10pct": sum(d["detected"] for d in drifts),
        "stop_below_before_40pct": sum(r["stop_below_ok"] for r in rows),
        "stop_above_stopped": sum(r["stop_above_step"] is not None for r in rows),
    }


def short_targets(s: dict, parts) -> list[str]:
    """The printed targets a summary misses (a part that did not run has none)."""
    short = []
    if s["forecast_at_25"] < s["curves"]:
        short.append(f"forecast at 25% on {s['forecast_at_25']}/{s['curves']} curves (every curve)")
    if s["clean_behind_warnings"] > 0:
        short.append(f"{s['clean_behind_warnings']} behind-trend warnings on clean curves (target 0)")
    for key, cases, need, what in (("fault_detected_within_5pct", "fault_cases", 0.9, "faults caught within 5%"),
                                   ("drift_detected_within_10pct", "drift_cases", 0.9, "drifts caught within 10%"),
                                   ("stop_below_before_40pct", "curves", 0.8, "stops before 40%")):
        if s[cases] and (key != "stop_below_before_40pct" or "stop" in parts) and s[key] < need * s[cases]:
            short.append(f"{what}: {s[key]}/{s[cases]} ({100 * s[key] / s[cases]:.0f}% < {100 * need:.0f}%)")
    if s["stop_above_stopped"] > 0:
        short.append(f"{s['stop_above_stopped']} runs stopped with the target above their final loss (target 0)")
    return short


def _pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.0f}%)" if b else "-"


def print_table(per_set: dict[str, dict], total: dict) -> None:
    """One row per set and one for all: the targets' numbers side by side."""
    head = (f"{'set':15s} {'runs':>4s} {'clean warn (runs)':>17s} {'fault <=5% (>=90%)':>19s} "
            f"{'drift <=10% (>=90%)':>20s} {'stop<40% (>=80%)':>17s} {'false stops (0)':>15s} "
            f"{'div. warn':>9s} {'err@25 med/p90':>15s}")
    print(head)
    print("-" * len(head))
    for name, s in list(per_set.items()) + [("all", total)]:
        err = (f"{100 * (s['median_rel_error_at_25'] or 0):.1f}%/{100 * (s['p90_rel_error_at_25'] or 0):.1f}%")
        clean = f"{s['clean_behind_warnings']} ({s['clean_runs_with_behind_warning']})"
        print(f"{name:15s} {s['curves']:4d} {clean:>17s} "
              f"{_pct(s['fault_detected_within_5pct'], s['fault_cases']):>19s} "
              f"{_pct(s['drift_detected_within_10pct'], s['drift_cases']):>20s} "
              f"{_pct(s['stop_below_before_40pct'], s['curves']):>17s} {s['stop_above_stopped']:>15d} "
              f"{s['clean_divergence_warnings']:>9d} {err:>15s}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder holding curves/ (default ../shared/data)")
    ap.add_argument("--sets", nargs="*", default=None, help="only these sets")
    ap.add_argument("--runs", nargs="*", default=None, help="only runs whose name contains one of these")
    ap.add_argument("--every", type=int, default=1, help="only every n-th curve of each set (a quick subset)")
    ap.add_argument("--trials", type=int, default=2, help="fault and drift trials per curve")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write every row and the summary here")
    ap.add_argument("--parts", nargs="+", choices=("fault", "stop"), default=("fault", "stop"),
                    help="what to run beside the clean replay: fault (faults and drifts), stop (stop rules)")
    args = ap.parse_args(argv)

    curves = load_sets(args.data, args.sets)
    if args.runs:
        curves = [c for c in curves if any(r in c.run for r in args.runs)]
    if args.every > 1:
        by_set: dict[str, list] = {}
        for c in curves:
            by_set.setdefault(c.set, []).append(c)
        curves = [c for group in by_set.values() for c in group[::args.every]]
    t0 = time.perf_counter()
    seeds = [args.seed * 1000 + i for i in range(len(curves))]

    def show(r):
        f_ok = sum(f["detected"] for f in r["faults"])
        d_ok = sum(d["detected"] for d in r["drifts"])
        err = "  -  " if r["err_at_25"] is None else f"{100 * r['err_at_25']:5.1f}%"
        stop = "-" if r["stop_below_step"] is None else f"{r['stop_below_step']:.2f}"
        above = "-" if r["stop_above_step"] is None else f"{r['stop_above_step']:.2f}"
        print(f"{r['set']:15s} {r['run'][:36]:36s} steps {r['n_steps']:5d} err@25 {err} "
              f"clean-warn {r['clean_behind_warnings']} div {r.get('clean_divergence_warnings', 0)} "
              f"fault {f_ok}/{len(r['faults'])} drift {d_ok}/{len(r['drifts'])} stop<{stop} stop>{above} "
              f"({r['seconds']:.0f}s)", flush=True)

    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(evaluate_curve, c, args.trials, s, args.parts, args.data)
                       for c, s in zip(curves, seeds)]
            rows = []
            for fut in futures:
                rows.append(fut.result())
                show(rows[-1])
    else:
        rows = []
        for c, s in zip(curves, seeds):
            rows.append(evaluate_curve(c, args.trials, s, args.parts, args.data))
            show(rows[-1])
    s = summarize(rows)
    s["seconds"] = round(time.perf_counter() - t0, 1)
    per_set = {name: summarize([r for r in rows if r["set"] == name]) for name in sorted({r["set"] for r in rows})}
    print()
    print(f"forecast at 25% exists:          {s['forecast_at_25']}/{s['curves']} curves   target: every curve")
    print(f"  |error| at 25% median / p90:   {100 * (s['median_rel_error_at_25'] or 0):.2f}% / "
          f"{100 * (s['p90_rel_error_at_25'] or 0):.2f}% of the true final loss; interval holds truth "
          f"{s['interval_holds_truth_at_25']}/{s['curves']}")
    print(f"behind-trend warnings, clean:    {s['clean_behind_warnings']} "
          f"(in {s['clean_runs_with_behind_warning']} of {s['curves']} runs)   target 0")
    print(f"divergence warnings, clean:      {s['clean_divergence_warnings']}")
    print(f"fault +3% detected within 5%:    {s['fault_detected_within_5pct']}/{s['fault_cases']} "
          f"({100 * s['fault_detected_within_5pct'] / max(1, s['fault_cases']):.0f}%)   target >= 90% per set"
          f"   [false alarm before the fault in {s['fault_false_alarm_before']}]")
    print(f"drift +3%/10% detected within 10%: {s['drift_detected_within_10pct']}/{s['drift_cases']} "
          f"({100 * s['drift_detected_within_10pct'] / max(1, s['drift_cases']):.0f}%)   target >= 90% per set")
    print(f"stop, target 2% under truth:     {s['stop_below_before_40pct']}/{s['curves']} stopped before 40% "
          f"({100 * s['stop_below_before_40pct'] / max(1, s['curves']):.0f}%)   target >= 80%")
    print(f"stop, target 2% above truth:     {s['stop_above_stopped']}/{s['curves']} stopped (false stops)   target 0")
    print(f"wall time {s['seconds']} s\n")
    print_table(per_set, s)
    short = [f"{name}: {what}" for name, ps in per_set.items() for what in short_targets(ps, args.parts)]
    print("verdict: every target met" if not short else "verdict: SHORT: " + "; ".join(short))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"summary": s, "per_set": per_set, "rows": rows}, fh, indent=1)
    return 1 if short else 0


if __name__ == "__main__":
    raise SystemExit(main())
