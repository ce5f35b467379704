"""Fit time of ``fit_curve`` against the number of points, beside scipy ``curve_fit``.

Synthetic noisy loss curves L = E + A x^-alpha (x = step 1..n, 2% log-normal noise, like
per-step training losses) of 100 to 100,000 points; for each size, the median wall time of
``fit_curve(x, loss)`` (every default law, held-out weighting, interval model) and of a plain
scipy ``curve_fit`` of E + A x^-alpha on the same arrays, in the same run, and their ratio;
wall time and CPU time of the process (on a shared, loaded machine the CPU time is the fair
one: single-threaded work, inflated in wall time by other jobs).

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
    print(f"median of {args.repeats} runs; load average {load:.2f} on {os.cpu_count()} cores")
    print(f"{'':8s} {'---- wall time ----':>32s}   {'----- CPU time -----':>32s}")
    print(f"{'points':>8s} {'fit_curve':>11s} {'curve_fit':>11s} {'ratio':>8s}   "
          f"{'fit_curve':>11s} {'curve_fit':>11s} {'ratio':>8s}  law")
    for n in args.sizes:
        x, y = _curve(n)
        fit = fit_curve(x, y)  # warm caches (imports) outside the timing
        w_ls, c_ls = _median_time(lambda: fit_curve(x, y), args.repeats)
        w_sp, c_sp = _median_time(lambda: _scipy(x, y), args.repeats)
        print(f"{n:8d} {1e3 * w_ls:9.1f}ms {1e3 * w_sp:9.1f}ms {w_ls / w_sp:7.2f}x   "
              f"{1e3 * c_ls:9.1f}ms {1e3 * c_sp:9.1f}ms {c_ls / max(c_sp, 1e-9):7.2f}x  {fit.law}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
