"""Derive the forecaster's constants from the development curves and write them (issue 12).

    python benchmarks/calibrate.py                # derive from all five sets, print
    python benchmarks/calibrate.py --write        # ... and write lightning_scaling/core/calibration_data.py
    python benchmarks/calibrate.py --check        # exit 1 when calibration_data.py is stale
    python benchmarks/calibrate.py --loso         # also print the constants derived without each set

``derive(sets, measure)`` is the one derivation: the shipped constants call it with every set,
``benchmarks/extrapolation.py`` calls it without the set it scores (out-of-set). Measurements
(``Measure``) are per set and cached in memory; the settings they run under are the fixed,
weak ones named below or come from the same derivation on the same sets, so nothing of a set
left out enters:

1. Floor exponent p (``best_power``): forecasts made after the LR decay started (u < 0.9 at
   the last seen step; at 50% and 75% seen), weak priors (``SCAN_PRIORS``), one p at a time
   from ``P_GRID``; the set's best p has the lowest median |error|. ``floor_powers`` = (min,
   median, max) of the sets' best p (sets with an LR schedule).
2. alpha (``full_alpha``): whole-curve fits (points after ``FULL_SKIP`` of the curve, flat
   priors) with those powers; per set the median posterior mean. Prior: N(median of the set
   medians, max(0.05, 1.4826 MAD of them)).
3. Decay gain (``oracle_rho``): per case at 25% and 50% seen, the rho = B / L_ref that makes
   the forecast (alpha prior of step 2, the gain fixed) hit the truth; cases whose forecast
   moves by less than 0.5% of the truth between rho 0.025 and 0.1 are left out (the data, not
   the prior, decide them). Per set the median rho and the sd of log rho. Prior: log rho ~
   N(log median of the set medians, sqrt((1.4826 MAD of the log set medians)**2 + mean
   within-set variance)).
4. Interval multipliers: 1 for every term (each term is in its natural units; calibrating them
   on the other sets bought nothing out of set in the research study).
"""

from __future__ import annotations

import argparse
import datetime
import math
import pprint
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _curves import DEFAULT_DATA, load_sets, split_case  # noqa: E402

from lightning_scaling.core import calibration as cal  # noqa: E402
from lightning_scaling.core.forecaster.fit import Curve  # noqa: E402
from lightning_scaling.core.forecaster.grid import GainPrior, quantiles  # noqa: E402
from lightning_scaling.core.forecaster.priors import Priors  # noqa: E402
from lightning_scaling.core.points import clean_points  # noqa: E402
from lightning_scaling.core.scheduled.features import schedule_features  # noqa: E402

SETS = ("algoperf", "gemstones", "lr_schedules", "modded_nanogpt", "multipower")
OUT = Path(__file__).resolve().parent.parent / "lightning_scaling" / "core" / "calibration_data.py"

P_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SCAN_FRACTIONS = (0.5, 0.75)
SCAN_PRIORS = Priors((0.5, 0.15), GainPrior(math.log(0.07), 2.0, 0.2), None, "scan")
"""Weak priors of the p scan (fixed measurement settings, not fitted)."""
FLAT_GAIN = GainPrior(math.log(0.05), 1.0, 1.0)
"""Log-uniform gain prior over rho 0.003..1 (whole-curve fits and the oracle's grid)."""
FLAT_ALPHA = (0.5, 100.0)
FULL_SKIP = 0.05
ORACLE_FRACTIONS = (0.25, 0.5)
ORACLE_SENSITIVITY = 0.005
ALPHA_SD_MIN = 0.05
MULTIPLIERS = {"prior": [1.0, 1.0, 1.0], "data": [1.0, 1.0, 1.0]}


def _clean(x, y):
    xc, yc, _ = clean_points(np.asarray(x, float), np.asarray(y, float))
    return xc, yc


def _median_at(curve: Curve, upto: float, powers, priors: Priors, target: float) -> float:
    post = curve.posterior_at(upto, powers, priors, np.array([target]))
    if post is None:
        return math.nan
    (med,) = quantiles(post.mean, post.var, post.weight, probs=(0.5,))
    return float(med[0])


@dataclass
class Measure:
    """Per-set measurements of the development curves (cached in memory)."""

    curves: dict = field(default_factory=dict)  # set -> [Curve of _curves]
    cache: dict = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir=None, sets=SETS) -> Measure:
        m = cls()
        for c in load_sets(data_dir, list(sets)):
            m.curves.setdefault(c.set, []).append(c)
        return m

    def _curve(self, c, fraction=1.0, skip=cal.SKIP_FRACTION):
        case = split_case(c, fraction)
        lr = case.lr
        x, y = (case.seen_step, case.loss) if lr is not None else (case.x, case.loss)
        xc, yc = _clean(x, y)
        feat = schedule_features(lr) if lr is not None else None
        target = case.target_step if lr is not None else case.x_final
        return Curve(xc, yc, feat, float(lr.size - 1) if lr is not None else None, skip), target, case.truth

    def best_power(self, s: str) -> tuple[float | None, dict]:
        """The set's best floor exponent (lowest median |error| after the decay started)."""
        key = ("p", s)
        if key not in self.cache:
            errs = {p: [] for p in P_GRID}
            for c in self.curves[s]:
                if c.schedule() is None:
                    continue
                for f in SCAN_FRACTIONS:
                    curve, target, truth = self._curve(c, f)
                    if curve.x.size < 6 or not curve.decays:
                        continue
                    u = curve.feat["u"]
                    if u[int(min(curve.x[-1], u.size - 1))] > 0.9:
                        continue
                    for p in P_GRID:
                        fc = _median_at(curve, curve.x[-1], (p,), SCAN_PRIORS, target)
                        if math.isfinite(fc):
                            errs[p].append(abs(fc - truth) / truth)
            med = {p: float(np.median(v)) for p, v in errs.items() if v}
            best = min(med, key=med.get) if med else None
            self.cache[key] = (best, {"median_error": med, "n_cases": len(errs[P_GRID[0]])})
        return self.cache[key]

    def full_alpha(self, s: str, powers) -> dict:
        key = ("alpha", s, tuple(powers))
        if key not in self.cache:
            alphas = []
            flat = Priors(FLAT_ALPHA, FLAT_GAIN, None, "flat")
            for c in self.curves[s]:
                curve, _, _ = self._curve(c, 1.0, FULL_SKIP)
                post = curve.posterior_at(curve.x[-1], powers if curve.decays else powers[:1], flat,
                                          np.array([curve.x[-1]]))
                if post is not None:
                    alphas.append(float(np.sum(post.weight * post.alpha)))
            self.cache[key] = {"median": float(np.median(alphas)), "n_curves": len(alphas)}
        return self.cache[key]

    def oracle_rho(self, s: str, powers, alpha_prior) -> dict | None:
        key = ("rho", s, tuple(powers), tuple(alpha_prior))
        if key not in self.cache:
            pri = Priors(tuple(alpha_prior), FLAT_GAIN, None, "oracle")
            rhos, n_cases = [], 0
            for c in self.curves[s]:
                if c.schedule() is None:
                    continue
                for f in ORACLE_FRACTIONS:
                    curve, target, truth = self._curve(c, f)
                    if curve.x.size < 6 or not curve.decays:
                        continue
                    n_cases += 1
                    rho = _oracle_case(curve, powers, pri, target, truth)
                    if rho is not None:
                        rhos.append(rho)
            if len(rhos) < 3:
                self.cache[key] = None
            else:
                lr_ = np.log(rhos)
                self.cache[key] = {"median": float(np.exp(np.median(lr_))), "log_sd": float(np.std(lr_)),
                                   "n_used": len(rhos), "n_cases": n_cases}
        return self.cache[key]


def _oracle_case(curve: Curve, powers, pri: Priors, target: float, truth: float) -> float | None:
    """rho at which the forecast with the gain held fixed hits the truth (None: insensitive or
    no crossing)."""
    post = curve.posterior_at(curve.x[-1], powers, pri, np.array([target]), prune=0.0)
    if post is None:
        return None
    gains, g = np.unique(post.gain, return_inverse=True)
    fc = np.full(gains.size, np.nan)
    for j in range(gains.size):
        sel = g == j
        w = post.weight[sel]
        if w.sum() <= 0:
            continue
        (med,) = quantiles(post.mean[sel], post.var[sel], w / w.sum(), probs=(0.5,))
        fc[j] = med[0]
    ok = np.isfinite(fc)
    if ok.sum() < 2:
        return None
    lrho = np.log(gains[ok] / post.L_ref)
    d = fc[ok] - truth
    lo, hi = np.interp([math.log(0.025), math.log(0.1)], lrho, fc[ok])
    if abs(hi - lo) / truth <= ORACLE_SENSITIVITY:
        return None
    cross = np.flatnonzero(np.diff(np.sign(d)) != 0)
    if cross.size == 0:
        return None
    i = cross[0]
    return float(math.exp(lrho[i] - d[i] * (lrho[i + 1] - lrho[i]) / (d[i + 1] - d[i])))


def derive(sets, measure: Measure) -> tuple[dict, dict]:
    """The forecaster's constants from ``sets`` (the ``DERIVED`` layout of calibration_data) and
    the per-set values they came from."""
    sets = sorted(sets)
    per_set = {s: {} for s in sets}
    best = {}
    for s in sets:
        p, info = measure.best_power(s)
        per_set[s]["best_power"] = p
        per_set[s]["power_scan"] = info
        if p is not None:
            best[s] = p
    ps = sorted(best.values())
    powers = sorted({ps[0], float(np.median(ps)), ps[-1]})
    alpha_meds = []
    for s in sets:
        a = measure.full_alpha(s, powers)
        per_set[s]["alpha"] = a
        alpha_meds.append(a["median"])
    a_center = float(np.median(alpha_meds))
    a_sd = max(ALPHA_SD_MIN, 1.4826 * float(np.median(np.abs(np.array(alpha_meds) - a_center))))
    rho_meds, within = [], []
    for s in sets:
        r = measure.oracle_rho(s, powers, (a_center, a_sd))
        per_set[s]["rho"] = r
        if r is not None:
            rho_meds.append(r["median"])
            within.append(r["log_sd"])
    center = float(np.exp(np.median(np.log(rho_meds))))
    across = 1.4826 * float(np.median(np.abs(np.log(np.array(rho_meds) / center))))
    log_sd = math.sqrt(across ** 2 + float(np.mean(np.square(within))))
    derived = {"sets": sets, "alpha_prior": [a_center, a_sd], "gain_prior": {"rho": center, "log_sd": log_sd},
               "floor_powers": powers, "interval_multipliers": MULTIPLIERS}
    return derived, per_set


def _rounded(v):
    if isinstance(v, float):
        return float(f"{v:.6g}")
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_rounded(x) for x in v]
    return v


def module_text(derived: dict, per_set: dict, data_dir) -> str:
    source = {"command": "python benchmarks/calibrate.py --write", "data": str(data_dir),
              "written": datetime.date.today().isoformat(),
              "n_curves": {s: v["alpha"]["n_curves"] for s, v in per_set.items()}}
    return (
        '"""GENERATED by `python benchmarks/calibrate.py --write`: do not edit by hand.\n\n'
        "The forecaster's derived constants (``DERIVED``, read by ``calibration.FORECASTER``), the per-set\n"
        "values they came from (``PER_SET``) and where (``SOURCE``). ``benchmarks/calibrate.py`` documents\n"
        'the derivation; ``--check`` says whether this file is stale.\n"""\n\n'
        f"DERIVED = {pprint.pformat(_rounded(derived), width=100, sort_dicts=False)}\n\n"
        f"PER_SET = {pprint.pformat(_rounded(per_set), width=100, sort_dicts=False)}\n\n"
        f"SOURCE = {pprint.pformat(source, width=100, sort_dicts=False)}\n")


def _show(derived: dict, per_set: dict, label: str) -> None:
    print(f"[{label}] sets {derived['sets']}")
    for s, v in per_set.items():
        r = v.get("rho") or {}
        print(f"  {s:15s} best p {v['best_power']}  alpha median {v['alpha']['median']:.3f} "
              f"({v['alpha']['n_curves']} curves)  rho median {r.get('median', math.nan):.4f} "
              f"log sd {r.get('log_sd', math.nan):.2f} ({r.get('n_used', 0)}/{r.get('n_cases', 0)} cases)")
    print(f"  -> floor powers {derived['floor_powers']}; alpha ~ N({derived['alpha_prior'][0]:.3f}, "
          f"{derived['alpha_prior'][1]:.3f}); rho0 {derived['gain_prior']['rho']:.4f}, "
          f"log sd {derived['gain_prior']['log_sd']:.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--write", action="store_true", help="write lightning_scaling/core/calibration_data.py")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when calibration_data.py differs from a fresh derivation")
    ap.add_argument("--loso", action="store_true", help="also derive without each set")
    args = ap.parse_args(argv)
    measure = Measure.load(args.data)
    derived, per_set = derive(SETS, measure)
    _show(derived, per_set, "all sets")
    if args.loso:
        for s in SETS:
            d, ps = derive([x for x in SETS if x != s], measure)
            _show(d, ps, f"without {s}")
    if args.write:
        OUT.write_text(module_text(derived, per_set, args.data))
        print(f"wrote {OUT}")
    if args.check:
        from lightning_scaling.core import calibration_data

        stale = _rounded(derived) != calibration_data.DERIVED
        print("calibration_data.py is " + ("STALE: rerun with --write" if stale else "up to date"))
        return 1 if stale else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
