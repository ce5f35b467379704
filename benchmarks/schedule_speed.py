"""Speed of the schedule-aware pieces (issue 3), against baselines timed in the same run.

* A schedule-aware fit of a 20,000-step curve (loss logged at every step, warm-up + cosine
  LR): ``fit_curve(steps, loss, lr=lr)``; target: median <= 200 ms. "cold" gives every
  repetition a new LR array (schedule features recomputed), "warm" refits the same schedule
  (what the callback does as the run goes on). Baselines: the LR-agnostic ``fit_curve`` and
  a plain scipy ``curve_fit`` of E + A x^-alpha on the same points.
* A schedule-aware fit on a 1,000,000-step warm-up + cosine schedule (200 points seen, the
  first 20%), the size of its ``to_dict()`` as JSON (the schedule is stored as knots, not one
  LR per step) against the per-step list alone, and ``predict`` at the horizon after a JSON
  round trip (a resumed callback).
* Simulating a torch scheduler for 1,000,000 steps (``schedule.simulate_scheduler``);
  target <= 1 s. Baseline: stepping the real scheduler (10,000 steps, scaled to 1e6).

    python benchmarks/schedule_speed.py [--repeat 7] [--json out.json]

Timings depend on the machine's load: the script prints the load average next to them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _curve(T=20000, warmup=1000, seed=0):
    from lightning_scaling.core import schedule as sch

    s = np.arange(T + 1)
    cos = 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * np.clip(s - warmup, 0, None) / (T - warmup)))
    lr = np.where(s < warmup, (s + 1) / warmup, cos) * 3e-4
    u, _ = sch.peak_normalized(lr)
    steps = np.arange(1, T + 1)
    loss = 3.0 + 25.0 * sch.lr_area(u)[steps] ** -0.45 - 1.3e-4 * sch.annealing_area(u)[steps]
    loss = loss + 0.02 * np.random.default_rng(seed).standard_normal(steps.size)
    return steps, loss, lr


def _median_ms(fn, repeat):
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def fit_timings(repeat: int) -> dict:
    from scipy.optimize import curve_fit

    from lightning_scaling import fit_curve

    steps, loss, lr = _curve()
    seen = steps <= 10000  # half the run seen; the forecast covers the rest
    x, y = steps[seen], loss[seen]
    fit_curve(x, y, lr=lr)  # imports, first-call costs
    out = {"points": int(x.size), "horizon_steps": int(lr.size - 1)}
    out["schedule_aware_cold_ms"] = _median_ms(lambda i: fit_curve(x, y, lr=lr * (1 + 1e-9 * (i + 1))), repeat)
    out["schedule_aware_warm_ms"] = _median_ms(lambda i: fit_curve(x, y, lr=lr), repeat)
    out["schedule_aware_full_curve_cold_ms"] = _median_ms(
        lambda i: fit_curve(steps, loss, lr=lr * (1 - 1e-9 * (i + 1))), repeat)
    out["lr_agnostic_fit_curve_ms"] = _median_ms(lambda i: fit_curve(x, y), repeat)

    def scipy_fit(i):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            curve_fit(lambda t, E, A, a: E + A * t ** -a, x / x.max(), y, p0=[2.5, 0.5, 0.5],
                      bounds=([0, 0, 0], [np.inf, np.inf, 5]), maxfev=20000)

    out["scipy_curve_fit_ms"] = _median_ms(scipy_fit, repeat)
    return out


def long_schedule_timings(repeat: int) -> dict:
    from lightning_scaling import CurveFit, fit_curve
    from lightning_scaling.core import schedule as sch

    T = 1_000_000
    s = np.arange(T + 1)
    lr = np.where(s < 10_000, (s + 1) / 10_000, 0.1 + 0.45 * (1 + np.cos(np.pi * (s - 10_000) / (T - 10_000)))) * 3e-4
    steps = np.linspace(1_000, 200_000, 200).round()
    u, _ = sch.peak_normalized(lr)
    loss = 3.0 + 25.0 * sch.lr_area(u)[steps.astype(int)] ** -0.5
    fit_curve(steps, loss, lr=lr)
    out = {"fit_1e6_cold_ms": _median_ms(lambda i: fit_curve(steps, loss, lr=lr * (1 + 1e-9 * (i + 1))), repeat),
           "fit_1e6_warm_ms": _median_ms(lambda i: fit_curve(steps, loss, lr=lr), repeat)}
    fit = fit_curve(steps, loss, lr=lr)
    text = json.dumps(fit.to_dict())
    out["to_dict_json_bytes"] = len(text)
    out["per_step_lr_list_json_bytes"] = len(json.dumps(lr.tolist()))
    out["predict_after_round_trip_ms"] = _median_ms(
        lambda i: CurveFit.from_dict(json.loads(text)).predict(float(T)), repeat)
    return out


def simulation_timings(repeat: int) -> dict:
    import torch
    from torch.optim import lr_scheduler as L

    from lightning_scaling.trainer.scheduler import simulate_scheduler

    def optimizer():
        return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)

    def warmup_cosine(o):
        return L.SequentialLR(o, [L.LinearLR(o, 0.01, 1.0, 10_000),
                                  L.CosineAnnealingLR(o, 990_000, eta_min=3e-5)], [10_000])

    def lambda_warmup_cosine(o):
        return L.LambdaLR(o, lambda s: min(1.0, (s + 1) / 10_000) * 0.5 * (1 + math.cos(math.pi * min(s, 1e6) / 1e6)))

    out = {}
    for name, make in (("SequentialLR(LinearLR, CosineAnnealingLR)", warmup_cosine),
                       ("LambdaLR(warm-up * cosine)", lambda_warmup_cosine),
                       ("OneCycleLR", lambda o: L.OneCycleLR(o, max_lr=1e-3, total_steps=1_000_001))):
        sched = make(optimizer())
        out[f"simulate_1e6_ms[{name}]"] = _median_ms(lambda i: simulate_scheduler(sched, 1_000_000), repeat)
        o = optimizer()
        real = make(o)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            for _ in range(10_000):
                o.step()
                real.step()
            per_step = (time.perf_counter() - t0) / 10_000
        out[f"real_stepping_1e6_ms_extrapolated[{name}]"] = 1e3 * per_step * 1_000_000
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", default=None, metavar="PATH")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    res = {"load_average_1_5_15": load, "cpus": os.cpu_count()}
    res.update(fit_timings(args.repeat))
    res.update(long_schedule_timings(max(3, args.repeat // 2)))
    res.update(simulation_timings(max(3, args.repeat // 2)))
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs; "
          f"medians of {args.repeat} runs")
    for k, v in res.items():
        if k.endswith("_ms") or "_ms[" in k or "_extrapolated[" in k:
            print(f"  {k:70s} {v:9.1f} ms")
    print(f"  to_dict() of the 1e6-step fit: {res['to_dict_json_bytes'] / 1e3:.1f} kB of JSON "
          f"(the per-step LR list alone: {res['per_step_lr_list_json_bytes'] / 1e6:.1f} MB)")
    print(f"  schedule-aware fit / LR-agnostic fit_curve: "
          f"{res['schedule_aware_cold_ms'] / res['lr_agnostic_fit_curve_ms']:.2f}x (cold), "
          f"{res['schedule_aware_warm_ms'] / res['lr_agnostic_fit_curve_ms']:.2f}x (warm)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
