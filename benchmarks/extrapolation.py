"""How well do forecasts of the final loss hold up on real curves? (issue 12 benchmark)

Protocol (../shared/data/README.md, ``_curves.split_case``): fit on the measured points with
step <= f*T (f = 0.1, 0.25, 0.5) and forecast the loss at the final step T; truth = the mean
measured loss over the last 1% of steps (lr_schedules: the validation loss at its last
measured row, forecast at that row's step). The exact LR schedule is passed wherever it is
known (multipower, modded_nanogpt per step; lr_schedules and algoperf from schedules.json);
gemstones (warm-up length unknown, then constant) is fitted on tokens without it.

Rows, per set and fraction (median and p90 relative error, 90% coverage, median width, median
signed error, time):

* ``forecaster (out-of-set)``: ``fit_curve`` with the constants ``calibrate.derive`` fits
  without the set scored: what the verdict uses;
* ``forecaster (in-sample)``: the shipped constants (all five sets);
* ``scipy curve_fit``: E + A x**-alpha by ``scipy.optimize.curve_fit``, delta-method interval;
* ``named-law mixture (0.1)``: ``fit_curve(x, loss, laws=DEFAULT_LAWS)``, the LR-agnostic
  fitter of version 0.1 (its interval multipliers were tuned on gemstones and multipower);
* sibling prior (lr_schedules: the 124M runs, ``prior=`` the whole-curve fits of every
  33M-93M run of the same recipe, or of the largest longest one), out-of-set constants;
* the full-curve miss: each law fitted to the whole curve (points after 5% of it, up to 150
  bins, flat priors), its miss at the scored point; "forecaster law" pools the floor exponents
  with the forecaster's fixed equal weights; "law, p fitted 0.5-1" weighs p over the whole
  scan grid (0.5..1.0) by each fit's evidence: the law fitted, its exponent included (what
  the target judges: can the law follow the curve).

Then the issue's targets, one line each; the last line is the verdict and the exit status is
1 when one is short.

    python benchmarks/extrapolation.py [--sets ...] [--fractions ...] [--json out.json] [--quick]
    python benchmarks/extrapolation.py --calibrate    # the 0.1 mixture's interval multipliers
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _curves import DEFAULT_DATA, Case, load_sets, split_case  # noqa: E402
from _scoring import LM_SETS, Forecast, Method, Result, score, summarise, table  # noqa: E402
from calibrate import P_GRID, SETS, Measure, derive  # noqa: E402

from lightning_scaling import fit_curve  # noqa: E402
from lightning_scaling.core import calibration as cal  # noqa: E402
from lightning_scaling.core.forecaster.features import floor_drop_at, lr_area_at  # noqa: E402
from lightning_scaling.core.forecaster.grid import GainPrior, posterior, quantiles  # noqa: E402
from lightning_scaling.core.laws import DEFAULT_LAWS  # noqa: E402
from lightning_scaling.core.scheduled.features import anneal_at, schedule_features  # noqa: E402

FRACTIONS = (0.1, 0.25, 0.5)
LM_MEDIAN_TARGETS = (0.015, 0.007, 0.004)
COVERAGE = (0.80, 0.95)
WIDTH_OVER_ERROR = 4.0
SIBLING_TARGET = 0.005
MISFIT_TARGET = 0.003
OOS, INS = "forecaster (out-of-set)", "forecaster (in-sample)"
SCIPY, LEGACY = "scipy curve_fit", "named-law mixture (0.1)"
SIB_ALL, SIB_ONE = "sibling prior (all smaller)", "sibling prior (one run)"
EVIDENCE_LAW = "law, p fitted 0.5-1"


# --------------------------------------------------------------------------- methods
def _forecaster_fit(case: Case, calibration=None, prior=None):
    if case.lr is not None:
        return fit_curve(case.seen_step, case.loss, lr=case.lr, prior=prior, calibration=calibration), case.target_step
    return fit_curve(case.x, case.loss, prior=prior, calibration=calibration), case.x_final


def forecaster_method(name: str, calibration_of) -> Method:
    """fit_curve with the constants ``calibration_of(set name)`` (None: the shipped ones)."""
    def forecast(case: Case, level: float):
        fit, at = _forecaster_fit(case, calibration_of(case.curve.set))
        if not fit.ok:
            return None
        lo, hi = fit.interval(at, level)
        return Forecast(fit.predict(at), lo, hi)

    return Method(name, forecast)


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
            p, cov = curve_fit(_sat, x / scale, y, p0=p0, bounds=([0, 0, 0], [np.inf, np.inf, 5]), maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    xf = case.x_final / scale
    pred = float(_sat(xf, *p))
    eps = 1e-6 * np.maximum(np.abs(p), 1e-6)
    grad = np.array([(_sat(xf, *(p + np.eye(3)[i] * eps[i])) - pred) / eps[i] for i in range(3)])
    var = float(grad @ cov @ grad) if np.all(np.isfinite(cov)) else math.nan
    half = stats.norm.ppf(0.5 + level / 2) * math.sqrt(var) if var >= 0 else math.nan
    return Forecast(pred, pred - half, pred + half)


def legacy_mixture_forecast(case: Case, level: float) -> Forecast | None:
    """Version 0.1's LR-agnostic mixture (``laws=DEFAULT_LAWS``) on the set's x axis."""
    fit = fit_curve(case.x, case.loss, laws=list(DEFAULT_LAWS))
    if not fit.ok:
        return None
    lo, hi = fit.interval(case.x_final, level)
    return Forecast(fit.predict(case.x_final), lo, hi)


# --------------------------------------------------------------------------- sibling prior
RECIPE = re.compile(r"spj_(L\d+d\d+)_bs200_(lr[0-9.]+)_(.*)_T\d+$")
TARGET_SIZE = "L12d768"


def _recipe(curve):
    m = RECIPE.search(curve.run) if curve.set == "lr_schedules" else None
    return (m.group(2), m.group(3), m.group(1)) if m else None


def sibling_results(curves, calibration, fractions, level=0.9) -> list[Result]:
    """The 124M lr_schedules runs forecast with ``prior=`` the whole-curve fits of the smaller
    runs of their recipe (every one, and the largest longest one alone)."""
    by_recipe = {}
    for c in curves:
        r = _recipe(c)
        if r:
            by_recipe.setdefault(r[:2], []).append(c)
    fits = {}

    def whole(c):
        if c.run not in fits:
            case = split_case(c, 1.0)
            fits[c.run] = fit_curve(case.seen_step, case.loss, lr=case.lr, calibration=calibration)
        return fits[c.run]

    out = []
    for c in curves:
        r = _recipe(c)
        if not r or r[2] != TARGET_SIZE:
            continue
        sibs = [s for s in by_recipe[r[:2]] if _recipe(s)[2] != TARGET_SIZE]
        if not sibs:
            continue
        one = max(sibs, key=lambda s: (float(s.info.get("n_params") or 0), s.final_step))
        for f in fractions:
            case = split_case(c, f)
            for name, prior in ((SIB_ALL, [whole(s) for s in sibs]), (SIB_ONE, [whole(one)])):
                t0 = time.perf_counter()
                fit, at = _forecaster_fit(case, calibration, prior)
                fc = None
                if fit.ok:
                    lo, hi = fit.interval(at, level)
                    fc = Forecast(fit.predict(at), lo, hi)
                out.append(Result(name, c.set, c.run, f, case.truth, fc, time.perf_counter() - t0))
    return out


# --------------------------------------------------------------------------- full-curve misfit
def _full_feature(law: str, feat, x, target):
    """The decay feature of a law at the points and the target (normalised to 1 at the target
    for the laws whose feature has no natural scale)."""
    pts = np.r_[x, target]
    if law.startswith("p="):
        v = floor_drop_at(feat, pts, float(law[2:]))
    elif law == "tissue S2":
        v = anneal_at("tissue", feat, {"momentum": 0.999}, pts)
    elif law == "convex bound dV":
        v = anneal_at("convex_bound", feat, {}, pts)
    else:
        return None
    v = np.nan_to_num(v)
    if law in ("tissue S2", "convex bound dV") and v[-1] > 0:
        v = v / v[-1]
    return v


def full_curve_misses(curves, powers, laws) -> dict:
    """{law: {set: [signed miss at the scored point]}} of whole-curve fits (flat priors)."""
    out = {law: {} for law in laws}
    flat_gain = GainPrior(math.log(0.05), 1.0, 1.0)
    for c in curves:
        case = split_case(c, 1.0)
        lr = case.lr
        x, y = (case.seen_step, case.loss) if lr is not None else (case.x, case.loss)
        ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
        x, y = x[ok], y[ok]
        target = case.target_step if lr is not None else case.x_final
        keep = x >= 0.05 * x[-1]
        x, y = x[keep], y[keep]
        edges = np.linspace(x[0], x[-1] * (1 + 1e-12), min(150, x.size) + 1)
        i = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
        n = np.bincount(i, minlength=edges.size - 1).astype(float)
        bx = np.bincount(i, x, edges.size - 1)[n > 0] / n[n > 0]
        by = np.bincount(i, y, edges.size - 1)[n > 0] / n[n > 0]
        bw = n[n > 0]
        feat = schedule_features(lr) if lr is not None else None
        S = lr_area_at(feat, np.r_[bx, target]) if feat is not None else np.r_[bx, target]
        s, sT = S[:-1] / S[-2], S[-1] / S[-2]
        L_ref = float(np.mean(by[-3:]))
        for law in laws:
            parts = []
            names = ([f"p={p:g}" for p in P_GRID] if law == EVIDENCE_LAW else
                     [f"p={p:g}" for p in powers] if law == "forecaster law" else [law])
            for name in names:
                F = _full_feature(name, feat, bx, target) if feat is not None else None
                gain = flat_gain if F is not None and F[-1] > 0 else None
                Fx = F[:-1] if gain is not None else np.zeros_like(bx)
                nodes = posterior(s, Fx, by, bw, L_ref, (0.5, 100.0), gain)
                if nodes is not None:
                    m, v = nodes.at(np.array([sT]), np.array([F[-1] if gain is not None else 0.0]))
                    parts.append((nodes.weight, m, v, nodes.log_evidence))
            if parts:
                if law == EVIDENCE_LAW:  # p weighed by each fit's evidence: the law fitted, p included
                    le = np.array([p[3] for p in parts])
                    pw = np.exp(le - le.max()) / np.exp(le - le.max()).sum()
                else:  # the forecaster's fixed equal weights
                    pw = np.full(len(parts), 1.0 / len(parts))
                (med,) = quantiles(np.vstack([p[1] for p in parts]), np.vstack([p[2] for p in parts]),
                                   np.concatenate([p[0] * k for p, k in zip(parts, pw)]), probs=(0.5,))
                out[law].setdefault(c.set, []).append((float(med[0]) - case.truth) / case.truth)
    return out


# --------------------------------------------------------------------------- targets
def target_lines(results, siblings, misses, fractions) -> list[tuple[str, bool]]:
    lines = []
    for s in SETS:
        cov = [summarise(results, OOS, s, f)["coverage"] for f in fractions]
        ok = all(COVERAGE[0] <= c <= COVERAGE[1] for c in cov)
        lines.append((f"coverage {s} (out-of-set, 80-95%): " + " / ".join(f"{100 * c:.0f}%" for c in cov), ok))
    for f, goal in zip(fractions, LM_MEDIAN_TARGETS):
        m = float(np.mean([summarise(results, OOS, s, f)["median_rel_error"] for s in LM_SETS]))
        lines.append((f"LM mean of median errors at {f:.0%} (out-of-set, <= {100 * goal:.1f}%): {100 * m:.2f}%",
                      m <= goal))
    a = [summarise(results, OOS, "algoperf", f)["median_rel_error"] for f in fractions]
    b = [summarise(results, SCIPY, "algoperf", f)["median_rel_error"] for f in fractions]
    lines.append(("algoperf median error vs scipy (out-of-set): " + " / ".join(f"{100 * x:.1f}% vs {100 * y:.1f}%"
                                                                         for x, y in zip(a, b)),
                  all(x <= y for x, y in zip(a, b))))
    for s in LM_SETS:
        d = summarise(results, OOS, s, 0.5)
        r = d["median_rel_width"] / d["median_rel_error"]
        lines.append((f"width / median error at 50% {s} (<= {WIDTH_OVER_ERROR:g}x): {r:.1f}x", r <= WIDTH_OVER_ERROR))
    if siblings:
        d = summarise(siblings, SIB_ALL, "lr_schedules", 0.25)
        lines.append((f"sibling prior at 25% (124M lr_schedules, <= 0.5%, coverage 80-95%): "
                      f"{100 * d['median_rel_error']:.2f}%, {100 * d['coverage']:.0f}%",
                      d["median_rel_error"] <= SIBLING_TARGET and COVERAGE[0] <= d["coverage"] <= COVERAGE[1]))
    if misses:
        per = {s: float(np.median(np.abs(v))) for s, v in misses[EVIDENCE_LAW].items() if s in LM_SETS}
        lines.append(("full-curve miss of the law, p fitted (median, <= 0.3% on every LM set): "
                      + ", ".join(f"{s} {100 * v:.2f}%" for s, v in sorted(per.items())),
                      all(v <= MISFIT_TARGET for v in per.values())))
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--sets", nargs="*", default=None)
    ap.add_argument("--fractions", nargs="*", type=float, default=list(FRACTIONS))
    ap.add_argument("--json", default=None, metavar="PATH")
    ap.add_argument("--quick", action="store_true", help="out-of-set and scipy rows only")
    ap.add_argument("--calibrate", action="store_true", help="the 0.1 mixture's interval multipliers, then exit")
    args = ap.parse_args(argv)
    if args.calibrate:
        from _legacy_calibration import calibrate

        print(json.dumps(calibrate(args.data, args.fractions), indent=1))
        return 0
    t0 = time.time()
    measure = Measure.load(args.data)
    loso = {s: derive([x for x in SETS if x != s], measure)[0] for s in SETS}
    print("constants derived without each set (calibrate.derive):")
    for s, d in loso.items():
        print(f"  without {s:15s} alpha ~ N({d['alpha_prior'][0]:.3f}, {d['alpha_prior'][1]:.3f}); rho0 "
              f"{d['gain_prior']['rho']:.4f} log sd {d['gain_prior']['log_sd']:.3f}; p {d['floor_powers']}")
    curves = load_sets(args.data, args.sets)
    methods = [forecaster_method(OOS, lambda s: loso[s]), Method(SCIPY, scipy_baseline_forecast)]
    if not args.quick:
        methods += [forecaster_method(INS, lambda s: None), Method(LEGACY, legacy_mixture_forecast)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = score(curves, args.fractions, methods)
        siblings = [] if args.quick else sibling_results([c for c in curves if c.set == "lr_schedules"],
                                                         loso["lr_schedules"], args.fractions)
    names = [m.name for m in methods]
    print(f"\nrelative error of the loss at the scored point; 90% intervals [{time.time() - t0:.0f} s]")
    print(table(results, names, args.fractions))
    if siblings:
        print("sibling prior (lr_schedules, 124M targets; out-of-set constants):")
        print(table(siblings, [SIB_ALL, SIB_ONE], args.fractions))
    misses = None
    if not args.quick:
        laws = (["forecaster law", EVIDENCE_LAW] + [f"p={p:g}" for p in (0.6, 0.75, 0.9, 1.0)]
                + ["tissue S2", "convex bound dV", "power law only"])
        misses = full_curve_misses(curves, cal.FORECASTER.floor_powers, laws)
        print("full-curve fit, miss at the scored point: median |miss| (p90) per set")
        sets = sorted({s for v in misses.values() for s in v})
        print(f"  {'law':25s} " + " ".join(f"{s:>17s}" for s in sets))
        for law, per in misses.items():
            print(f"  {law:25s} " + " ".join(
                f"{100 * np.median(np.abs(per[s])):7.2f}% ({100 * np.percentile(np.abs(per[s]), 90):5.2f}%)"
                if s in per else f"{'':>17s}" for s in sets))
    if args.sets is not None or args.quick:
        print("\ntargets are judged on a full run (every set, every row): none judged here")
        return 0
    lines = target_lines(results, siblings, misses, args.fractions)
    print("\ntargets (issue 12):")
    for text, ok in lines:
        print(f"  {'OK   ' if ok else 'SHORT'} {text}")
    short = [t for t, ok in lines if not ok]
    if args.json:
        out = {"summary": [summarise(results + siblings, m, s, f) for m in names + [SIB_ALL, SIB_ONE]
                           for s in sorted({r.set for r in results}) for f in args.fractions],
               "derived_without": loso, "targets": [{"target": t, "ok": ok} for t, ok in lines]}
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    print(f"verdict: {len(short)} target(s) short" + (f": {'; '.join(s.split(':')[0] for s in short)}" if short
                                                     else ": every target met") + f" [{time.time() - t0:.0f} s]")
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
