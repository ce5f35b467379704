"""Fit time of ``fit_curve`` against the number of points, beside scipy ``curve_fit``.

Synthetic noisy loss curves L = E + A x^-alpha (x = step 1..n, 2% log-normal noise, like
per-step training losses) of 100 to 100,000 points; for each size, the median wall time of
``fit_curve(x, loss)`` and of ``fit_curve(steps, loss, lr=lr)`` (a warm-up + constant + linear
decay schedule over 2n steps), each with ``interval`` at the horizon, and of a plain scipy
``curve_fit`` of E + A x^-alpha on the same arrays, in the same run, and their ratios; wall
time and CPU time of the process (on a shared, loaded machine the CPU time is the fair one:
single-threaded work, inflated in wall time by other jobs).

Target (issue 12): ``fit_curve`` with an interval on 2,000 points in at most 20 ms (both
paths, CPU time); the last line is the verdict and the exit status 1 when short.

    python benchmarks/fit_speed.py [--repeats 7] [--sizes 100 1000 ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightning_scaling import fit_curve  # noqa: E402

SIZES = (100, 300, 1000, 2000, 5000, 20000, 100000)
TARGET_POINTS, TARGET_SECONDS = 2000, 0.020


def _schedule(n: int) -> np.ndarray:
    """Warm-up over 5%, constant, linear decay to zero over the last 20% of 2n steps."""
    T = 2 * n
    s = np.arange(T + 1, dtype=float)
    return np.clip(np.minimum((s + 1) / (0.05 * T), (T - s) / (0.2 * T)), 0.0, 1.0) * 1e-3


def _curve(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.arange(1, n + 1, dtype=float)
    y = (2.0 + 8.0 * (x / 10.0 + 1.0) ** -0.4) * np.exp(rng.normal(0.0, 0.02, n))
    return x, y


def _scipy(x, y):
    from scipy.optimize import curve_fit

    s = x.max()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        curve_fit(lambda t, E, A, a: E + A * t ** -a, x / s, y,
                  p0=[0.9 * y.min(), y.max() - 0.9 * y.min(), 0.5],
                  bounds=([0, 0, 0], [np.inf, np.inf, 5]), maxfev=20000)


def _median_time(fn, repeats):
    """Median wall time and median CPU time of this process (s); CPU time is what a loaded
    shared machine does not inflate."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="*", type=int, default=list(SIZES))
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"median of {args.repeats} runs; load average {load:.2f} on {os.cpu_count()} cores; "
          "each fit_curve includes interval() at the horizon")
    print(f"{'':8s} {'------------- wall time -------------':>40s}   {'-------------- CPU time -------------':>40s}")
    print(f"{'points':>8s} {'x, loss':>9s} {'lr=':>9s} {'curve_fit':>10s} {'ratio':>9s}   "
          f"{'x, loss':>9s} {'lr=':>9s} {'curve_fit':>10s} {'ratio':>9s}")
    verdict = None
    for n in args.sizes:
        x, y = _curve(n)
        lr = _schedule(n)
        plain = lambda: fit_curve(x, y).interval(2.0 * n)  # noqa: E731
        sched = lambda: fit_curve(x, y, lr=lr).interval(2.0 * n)  # noqa: E731
        plain(), sched()  # warm caches (imports) outside the timing
        w_ls, c_ls = _median_time(plain, args.repeats)
        w_lr, c_lr = _median_time(sched, args.repeats)
        w_sp, c_sp = _median_time(lambda: _scipy(x, y), args.repeats)
        print(f"{n:8d} {1e3 * w_ls:7.1f}ms {1e3 * w_lr:7.1f}ms {1e3 * w_sp:8.1f}ms {max(w_ls, w_lr) / w_sp:8.2f}x   "
              f"{1e3 * c_ls:7.1f}ms {1e3 * c_lr:7.1f}ms {1e3 * c_sp:8.1f}ms {max(c_ls, c_lr) / max(c_sp, 1e-9):8.2f}x")
        if n == TARGET_POINTS:
            verdict = max(c_ls, c_lr)
    if verdict is None:
        print(f"verdict: not judged ({TARGET_POINTS} points not among the sizes)")
        return 0
    ok = verdict <= TARGET_SECONDS
    print(f"verdict: {'OK' if ok else 'SHORT'}: fit_curve with an interval on {TARGET_POINTS} points "
          f"{1e3 * verdict:.1f} ms CPU (target <= {1e3 * TARGET_SECONDS:.0f} ms)")
    return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
