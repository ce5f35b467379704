"""How well do forecasts of the final loss hold up on real curves? (issue 2 benchmark)

Protocol (../shared/data/README.md): fit on the measured points with step <= f*T
(f = 0.1, 0.25, 0.5), forecast the loss at the final step T, compare with the mean measured
loss over the last 1% of steps. Per set and pooled over all sets: median and 90th percentile
of |forecast - truth| / truth, how often the 90% interval holds the truth, median interval
width (relative to the truth) and median fit time; for every method in ``METHODS`` on the
same points, in the same run.

    python benchmarks/extrapolation.py                  # data from ../shared/data
    python benchmarks/extrapolation.py --data DIR --sets gemstones --json out.json

Adding a method (e.g. a schedule-aware fit): append a ``Method`` to ``METHODS`` (or call
``run(methods=[...])``). ``forecast(case, level)`` returns ``Forecast(loss, lower, upper)``
or None when the method declines; ``applies(case)`` may skip cases (e.g. no LR schedule).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _curves import DEFAULT_DATA, Case, load_sets, split_case  # noqa: E402

FRACTIONS = (0.1, 0.25, 0.5)


@dataclass
class Forecast:
    """A method's forecast of the loss at the final x: central value and interval."""

    loss: float
    lower: float = math.nan
    upper: float = math.nan


@dataclass
class Method:
    """A forecasting method under test.

    Attributes:
        name: row label.
        forecast: ``(case, level) -> Forecast | None`` (None: the method declines).
        applies: ``case -> bool``; cases it does not apply to are left out of its rows.
    """

    name: str
    forecast: Callable[[Case, float], Forecast | None]
    applies: Callable[[Case], bool] = lambda case: True


# --------------------------------------------------------------------------- methods
def lightning_scaling_forecast(case: Case, level: float) -> Forecast | None:
    """fit_curve(x, loss), LR-agnostic."""
    from lightning_scaling import fit_curve

    fit = fit_curve(case.x, case.loss)
    if not fit.ok:
        return None
    lo, hi = fit.interval(case.x_final, level)
    return Forecast(fit.predict(case.x_final), lo, hi)


def _sat(x, E, A, alpha):
    return E + A * np.power(x, -alpha)


def scipy_baseline_forecast(case: Case, level: float) -> Forecast | None:
    """Plain scipy curve_fit of E + A x^-alpha (x / x_max), bounded E, A >= 0, 0 < alpha < 5;
    interval from the parameter covariance by the delta method."""
    from scipy import stats
    from scipy.optimize import curve_fit

    good = np.isfinite(case.x) & np.isfinite(case.loss) & (case.x > 0)
    x, y = case.x[good], case.loss[good]
    if x.size < 3:
        return None
    scale = float(x.max())
    p0 = [0.9 * y.min(), max(y.max() - 0.9 * y.min(), 1e-3), 0.5]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p, cov = curve_fit(_sat, x / scale, y, p0=p0, bounds=([0, 0, 0], [np.inf, np.inf, 5]),
                               maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    xf = case.x_final / scale
    pred = float(_sat(xf, *p))
    eps = 1e-6 * np.maximum(np.abs(p), 1e-6)
    grad = np.array([(_sat(xf, *(p + np.eye(3)[i] * eps[i])) - pred) / eps[i] for i in range(3)])
    var = float(grad @ cov @ grad) if np.all(np.isfinite(cov)) else math.nan
    z = stats.norm.ppf(0.5 + level / 2)
    half = z * math.sqrt(var) if var >= 0 else math.nan
    return Forecast(pred, pred - half, pred + half)


METHODS: list[Method] = [
    Method("lightning-scaling", lightning_scaling_forecast),
    Method("scipy curve_fit", scipy_baseline_forecast),
]


# --------------------------------------------------------------------------- schedule-aware (issue 3)
def scheduled_forecast(case: Case, level: float, prior=None, **options) -> Forecast | None:
    """fit_curve(step, loss, lr=lr): the schedule-aware fit (default law convex_bound, default
    priors)."""
    from lightning_scaling import fit_curve

    fit = fit_curve(case.seen_step, case.loss, lr=case.lr, prior=prior, **options)
    if not fit.ok:
        return None
    T = case.curve.final_step
    lo, hi = fit.interval(T, level)
    return Forecast(fit.predict(T), lo, hi)


REFERENCE_RUNS = ("cosine_24000", "constant_24000")
"""multipower: the same model size's runs that lend their fits to the other schedules."""

REFERENCE_DATA = None
"""Folder holding curves/ for the reference runs (None: ../shared/data)."""

_REFERENCE_FITS: dict[str, list] = {}


def _reference_prior(case: Case):
    """Full-curve schedule-aware fits of the same model size's reference runs (cached)."""
    from lightning_scaling import fit_curve

    size = case.curve.run.split("_")[0]
    if size not in _REFERENCE_FITS:
        runs = {c.run: c for c in load_sets(REFERENCE_DATA, ["multipower"])}
        fits = []
        for name in REFERENCE_RUNS:
            ref = runs[f"{size}_{name}"]
            measured = np.isfinite(ref.loss)
            fits.append(fit_curve(ref.step[measured], ref.loss[measured], lr=ref.lr).to_dict())
        _REFERENCE_FITS[size] = fits
    return _REFERENCE_FITS[size]


def scheduled_reference_forecast(case: Case, level: float) -> Forecast | None:
    """Schedule-aware fit with prior= the same size's cosine_24000 and constant_24000 fits."""
    return scheduled_forecast(case, level, prior=_reference_prior(case))


def _is_reference_target(case: Case) -> bool:
    return (case.curve.set == "multipower" and case.lr is not None
            and not case.curve.run.endswith(REFERENCE_RUNS))


METHODS += [
    Method("schedule-aware", scheduled_forecast, applies=lambda case: case.lr is not None),
    Method("schedule-aware tissue", lambda case, level: scheduled_forecast(case, level, law="tissue"),
           applies=lambda case: case.lr is not None),
    Method("schedule + reference", scheduled_reference_forecast, applies=_is_reference_target),
]


# --------------------------------------------------------------------------- scoring
@dataclass
class Result:
    method: str
    set: str
    run: str
    fraction: float
    truth: float
    forecast: Forecast | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.forecast is not None and math.isfinite(self.forecast.loss)

    @property
    def rel_error(self) -> float:
        return abs(self.forecast.loss - self.truth) / self.truth if self.ok else math.nan

    @property
    def covered(self) -> float:
        if not self.ok or not (math.isfinite(self.forecast.lower) and math.isfinite(self.forecast.upper)):
            return math.nan
        return float(self.forecast.lower <= self.truth <= self.forecast.upper)

    @property
    def rel_width(self) -> float:
        if not self.ok:
            return math.nan
        return (self.forecast.upper - self.forecast.lower) / self.truth


def run(data_dir=None, sets=None, fractions=FRACTIONS, methods=None, level=0.9) -> list[Result]:
    methods = METHODS if methods is None else methods
    curves = load_sets(data_dir, sets)
    results = []
    for curve in curves:
        for f in fractions:
            case = split_case(curve, f)
            for m in methods:
                if not m.applies(case):
                    continue
                t0 = time.perf_counter()
                try:
                    fc = m.forecast(case, level)
                except Exception as exc:  # a crash is a failed forecast, and is reported
                    print(f"  {m.name} crashed on {curve.set}/{curve.run} f={f}: {exc!r}",
                          file=sys.stderr)
                    fc = None
                results.append(Result(m.name, curve.set, curve.run, f, case.truth, fc,
                                      time.perf_counter() - t0))
    return results


def summarise(results: list[Result], method: str, set_name: str | None, fraction: float) -> dict:
    rows = [r for r in results if r.method == method and r.fraction == fraction
            and (set_name is None or r.set == set_name)]
    ok = [r for r in rows if r.ok]
    err = np.array([r.rel_error for r in ok])
    cov = np.array([r.covered for r in ok])
    cov = cov[np.isfinite(cov)]
    width = np.array([r.rel_width for r in ok])
    width = width[np.isfinite(width)]
    return {
        "method": method, "set": set_name or "ALL", "fraction": fraction,
        "n": len(rows), "n_ok": len(ok),
        "median_rel_error": float(np.median(err)) if err.size else math.nan,
        "p90_rel_error": float(np.percentile(err, 90)) if err.size else math.nan,
        "coverage": float(cov.mean()) if cov.size else math.nan,
        "median_rel_width": float(np.median(width)) if width.size else math.nan,
        "median_seconds": float(np.median([r.seconds for r in rows])) if rows else math.nan,
    }


def paired_ratio(results, method, baseline, set_name, fraction) -> float:
    """median error of baseline / median error of method, over cases both forecast."""
    key = lambda r: (r.set, r.run)  # noqa: E731
    a = {key(r): r for r in results if r.method == method and r.fraction == fraction and r.ok
         and (set_name is None or r.set == set_name)}
    b = {key(r): r for r in results if r.method == baseline and r.fraction == fraction and r.ok
         and (set_name is None or r.set == set_name)}
    common = sorted(set(a) & set(b))
    if not common:
        return math.nan
    ea = np.median([a[k].rel_error for k in common])
    eb = np.median([b[k].rel_error for k in common])
    return float(eb / ea) if ea > 0 else math.inf


def table(results: list[Result], methods: list[str], level: float, baseline: str | None) -> str:
    sets = sorted({r.set for r in results}) + [None]
    fractions = sorted({r.fraction for r in results})
    head = (f"{'set':16s} {'f':>5s} {'method':22s} {'n ok':>7s} {'median':>8s} {'p90':>8s} "
            f"{'cover':>6s} {'width':>8s} {'time':>9s} {'x better':>8s}")
    lines = [f"relative error of the final loss; {level:.0%} interval coverage; width = (hi-lo)/truth; "
             f"'x better' = paired baseline/method median error", head, "-" * len(head)]
    for s in sets:
        for f in fractions:
            for m in methods:
                d = summarise(results, m, s, f)
                if d["n"] == 0:
                    continue
                ratio = paired_ratio(results, m, baseline, s, f) if baseline and m != baseline else math.nan
                lines.append(
                    f"{d['set']:16s} {f:5.2f} {m:22s} {d['n_ok']:3d}/{d['n']:<3d} "
                    f"{100 * d['median_rel_error']:7.2f}% {100 * d['p90_rel_error']:7.2f}% "
                    f"{100 * d['coverage']:5.0f}% {100 * d['median_rel_width']:7.2f}% "
                    f"{1e3 * d['median_seconds']:7.1f}ms "
                    + (f"{ratio:7.2f}x" if math.isfinite(ratio) else "")
                )
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- calibration
def is_constant_lr(curve) -> bool:
    """Curves whose LR stays constant after warm-up: where an LR-agnostic law applies."""
    schedule = str(curve.info.get("schedule", ""))
    return "constant" in schedule


def calibrate(data_dir=None, fractions=FRACTIONS, level=0.9, quantile=95.0) -> dict:
    """Split-conformal multipliers of the interval's extrapolation term (DEFAULT_CALIBRATION).

    First gamma, the exponent of the distance ratio (Theil-Sen slope, see below). Then, for
    every constant-LR development case, the smallest multiplier k of the extrapolation
    term that would put the truth inside the ``level`` band on its side of the forecast
    (0 on the other side); k_below / k_above are the ``quantile``-th percentiles over all
    cases (equal tails: 95 for a 90% band). Also reports leave-one-run-out coverage.
    """
    from scipy import stats

    from lightning_scaling import fit_curve
    from lightning_scaling.core.intervals import interval_terms

    z = stats.norm.ppf(0.5 + level / 2)
    cases = []
    for curve in load_sets(data_dir):
        if not is_constant_lr(curve):
            continue
        for f in fractions:
            case = split_case(curve, f)
            fit = fit_curve(case.x, case.loss)
            if fit.ok and np.isfinite(fit.uncertainty["holdout_err"]):
                cases.append((curve, f, case, fit))
    # gamma: growth of the error with the distance ratio d / holdout_dist, the Theil-Sen slope
    # of log(|error| / holdout_err) on log(d / holdout_dist) (makes the scaled errors
    # homoscedastic across extrapolation distances)
    err = np.array([abs(math.log(fit.predict(c.x_final) / c.truth)) for _, _, c, fit in cases])
    ho = np.array([fit.uncertainty["holdout_err"] for *_, fit in cases])
    ratio = np.array([math.log(c.x_final / fit.x_last) / fit.uncertainty["holdout_dist"]
                      for _, _, c, fit in cases])
    gamma = float(stats.theilslopes(np.log(err / ho), np.log(ratio))[0])
    rows = []
    for curve, f, case, fit in cases:
        fit.uncertainty["calibration"] = {**fit.uncertainty["calibration"], "gamma": gamma}
        pred = fit.predict(case.x_final)
        base, ext = (float(v) for v in interval_terms(fit, np.array(case.x_final)))
        need = math.sqrt(max((math.log(pred / case.truth) / z) ** 2 - base ** 2, 0.0)) / max(ext, 1e-12)
        below, above = (need, 0.0) if case.truth < pred else (0.0, need)
        rows.append((curve.set, curve.run, f, below, above))
    kb = np.array([r[3] for r in rows])
    ka = np.array([r[4] for r in rows])
    out = {"k_below": float(np.percentile(kb, quantile)), "k_above": float(np.percentile(ka, quantile)),
           "gamma": gamma, "n_cases": len(rows), "sets": sorted({r[0] for r in rows}),
           "share_truth_below": float(np.mean(kb > 0))}
    covered = []
    for i, r in enumerate(rows):  # leave one run out
        rest = [j for j, q in enumerate(rows) if q[1] != r[1]]
        covered.append(r[3] <= np.percentile(kb[rest], quantile) and r[4] <= np.percentile(ka[rest], quantile))
    out["loo_coverage"] = float(np.mean(covered))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder holding curves/ (default ../shared/data)")
    ap.add_argument("--sets", nargs="*", default=None, help="only these sets")
    ap.add_argument("--fractions", nargs="*", type=float, default=list(FRACTIONS))
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--methods", nargs="*", default=None, help="only these method names")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write every result as JSON")
    ap.add_argument("--calibrate", action="store_true",
                    help="print the interval multipliers fitted on the constant-LR curves and exit")
    args = ap.parse_args(argv)
    if args.calibrate:
        print(json.dumps(calibrate(args.data, args.fractions, args.level), indent=1))
        return 0
    methods = [m for m in METHODS if args.methods is None or m.name in args.methods]
    results = run(args.data, args.sets, args.fractions, methods, args.level)
    names = [m.name for m in methods]
    baseline = "scipy curve_fit" if "scipy curve_fit" in names else None
    print(table(results, names, args.level, baseline))
    if args.json:
        out = {"summary": [summarise(results, m, s, f) for m in names
                           for s in sorted({r.set for r in results}) + [None] for f in args.fractions],
               "results": [{"method": r.method, "set": r.set, "run": r.run, "fraction": r.fraction,
                            "truth": r.truth, "seconds": r.seconds,
                            "forecast": None if r.forecast is None else vars(r.forecast)}
                           for r in results]}
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
