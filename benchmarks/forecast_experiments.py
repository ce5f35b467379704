"""Variants of the forecaster scored out-of-set (issue 12, item 6): what was tried for the
targets still short, reproducibly.

    python benchmarks/forecast_experiments.py run NAME [option=value ...]   # -> NAME.pkl
    python benchmarks/forecast_experiments.py score NAME [--conformal]

``run`` forecasts every case of every set (10/25/50% seen) with the constants derived without
its set (``calibrate.derive``, as ``extrapolation.py`` does) and keeps, per case, the forecast
and the interval's parts at the scored point (posterior, backtest, drift: three fits with unit
multipliers), so that ``score`` can rescale them without refitting. Options:

* ``prefixes=0.5,0.7``: the backtest prefixes (``calibration.BACKTEST_PREFIXES``);
* ``powers=evidence``: pool the floor exponents by evidence once the data inform the gain
  (``forecaster.fit.POWER_WEIGHTS``);
* ``gain=core``: the gain prior's normal component from the sets whose median rho lies within
  3 robust sds of the median of the sets' medians; ``gain=lm``: from the language-model sets
  only (the broad component left to cover the others);
* ``sets=a,b``: only these sets.

``score --conformal`` adds interval multipliers per regime ("prior", "data") fitted, for each
left-out set, on the other sets' out-of-set cases: the smallest k reaching 90% coverage (mean
over set x fraction, or median over sets), scaling every term or the posterior term only.
Runs take 1.5-3 minutes each on a loaded 2-core machine (the derivations are cached in
``--cache``).
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import calibrate  # noqa: E402
from _curves import split_case  # noqa: E402

from lightning_scaling import fit_curve  # noqa: E402
from lightning_scaling.core import calibration as cal  # noqa: E402
from lightning_scaling.core.forecaster import fit as forecaster_fit  # noqa: E402
from lightning_scaling.core.forecaster.grid import Z90  # noqa: E402

SETS = calibrate.SETS
LM = SETS[1:]
FRACTIONS = (0.1, 0.25, 0.5)
KGRID = np.round(np.arange(0.3, 3.01, 0.05), 2)


def derive_variant(sets, measure, gain="all") -> dict:
    derived, per = calibrate.derive(sets, measure)
    rho = {s: v["rho"] for s, v in per.items() if v.get("rho")}
    if gain == "core":
        lm = np.log([v["median"] for v in rho.values()])
        c, mad = np.median(lm), 1.4826 * np.median(np.abs(lm - np.median(lm)))
        rho = {s: v for s, v in rho.items() if abs(math.log(v["median"]) - c) <= 3 * max(mad, 0.1)}
    elif gain == "lm":
        rho = {s: v for s, v in rho.items() if s in LM}
    if gain in ("core", "lm"):
        lc = np.log([v["median"] for v in rho.values()])
        across = 1.4826 * np.median(np.abs(lc - np.median(lc)))
        within = math.sqrt(np.mean([v["log_sd"] ** 2 for v in rho.values()]))
        derived = dict(derived, gain_prior={"rho": float(np.exp(np.median(lc))),
                                            "log_sd": math.sqrt(across ** 2 + within ** 2)}, gain_sets=sorted(rho))
    return derived


def parts_at_target(case, calibration) -> dict | None:
    """Forecast, truth and the interval's three parts (log sds, per side) at the scored point."""
    sides = []
    for k in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
        c = dict(calibration, interval_multipliers={"prior": list(k), "data": list(k)})
        if case.lr is not None:
            fit, at = fit_curve(case.seen_step, case.loss, lr=case.lr, calibration=c), case.target_step
        else:
            fit, at = fit_curve(case.x, case.loss, calibration=c), case.x_final
        if not fit.ok:
            return None
        lo, hi = fit.interval(at)
        f = fit.predict(at)
        sides.append((math.log(f / lo) / Z90, math.log(hi / f) / Z90))
    floor2 = cal.INTERVAL_FLOOR ** 2
    lo_parts = [math.sqrt(max(s[0] ** 2 - floor2, 0.0)) for s in sides]
    hi_parts = [math.sqrt(max(s[1] ** 2 - floor2, 0.0)) for s in sides]
    return {"fc": f, "truth": case.truth, "qlo": lo_parts[0], "qhi": hi_parts[0], "bt": lo_parts[1],
            "dlo": lo_parts[2], "dhi": hi_parts[2], "regime": fit.diagnostics["posterior"]["regime"]}


def run(name: str, opts: dict, out_dir: Path, cache: Path) -> None:
    if "prefixes" in opts:
        cal.BACKTEST_PREFIXES = tuple(float(v) for v in opts["prefixes"].split(","))
    if "powers" in opts:
        forecaster_fit.POWER_WEIGHTS = opts["powers"]
    t0 = time.time()
    measure = pickle.loads(cache.read_bytes()) if cache.exists() else calibrate.Measure.load()
    rows = []
    for s in opts.get("sets", ",".join(SETS)).split(","):
        d = derive_variant([x for x in SETS if x != s], measure, opts.get("gain", "all"))
        print(f"{s}: gain {d['gain_prior']} p {d['floor_powers']} [{time.time() - t0:.0f} s]", flush=True)
        for c in measure.curves[s]:
            for f in FRACTIONS:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r = parts_at_target(split_case(c, f), d)
                rows.append({"set": s, "run": c.run, "f": f, **(r or {"fc": None})})
    (out_dir / f"{name}.pkl").write_bytes(pickle.dumps(rows))
    if not cache.exists():
        cache.write_bytes(pickle.dumps(measure))
    print(f"done [{time.time() - t0:.0f} s]")


def _sides(r, k):
    kp, kb, kd = k
    floor2 = cal.INTERVAL_FLOOR ** 2
    return (math.sqrt((kp * r["qlo"]) ** 2 + (kb * r["bt"]) ** 2 + (kd * r["dlo"]) ** 2 + floor2),
            math.sqrt((kp * r["qhi"]) ** 2 + (kb * r["bt"]) ** 2 + (kd * r["dhi"]) ** 2 + floor2))


def score(rows, kfun) -> dict:
    out = {}
    for s in SETS:
        for f in FRACTIONS:
            ok = [r for r in rows if r["set"] == s and r["f"] == f and r.get("fc") is not None]
            err, cov, wid = [], [], []
            for r in ok:
                sl, sh = _sides(r, kfun(r))
                lo, hi = r["fc"] * math.exp(-Z90 * sl), r["fc"] * math.exp(Z90 * sh)
                err.append(abs(r["fc"] - r["truth"]) / r["truth"])
                cov.append(lo <= r["truth"] <= hi)
                wid.append((hi - lo) / r["truth"])
            out[(s, f)] = (np.median(err), np.mean(cov), np.median(wid)) if ok else (math.nan,) * 3
    return out


def show(out, label) -> None:
    print(label)
    for s in SETS:
        print(f"  {s:15s} " + "  ".join(f"{100 * out[(s, f)][0]:5.2f}% c{100 * out[(s, f)][1]:3.0f}% "
                                         f"w{100 * out[(s, f)][2]:6.2f}%" for f in FRACTIONS))
    print("  LM mean of medians: " + " / ".join(f"{100 * np.mean([out[(s, f)][0] for s in LM]):.2f}%"
                                                for f in FRACTIONS)
          + "; width / median error at 50%: " + " ".join(f"{out[(s, 0.5)][2] / out[(s, 0.5)][0]:.1f}" for s in LM))


def conformal(rows, crit="mean", which="all", target=0.9):
    """Multipliers per (left-out set, regime) from the other sets' cases (see the docstring)."""
    ks = {}
    for left_out in SETS:
        for regime in ("prior", "data"):
            others = [r for r in rows if r["set"] != left_out and r.get("fc") is not None and r["regime"] == regime]
            ks[(left_out, regime)] = KGRID[-1]
            for k in KGRID:
                kk = (k, 1, 1) if which == "post" else (k, k, k)
                groups = {}
                for r in others:
                    sl, sh = _sides(r, kk)
                    e = math.log(r["fc"] / r["truth"])
                    groups.setdefault((r["set"], r["f"]), []).append(e <= Z90 * sl if e > 0 else -e <= Z90 * sh)
                per = {key: np.mean(v) for key, v in groups.items()}
                if crit == "mean":
                    c = np.mean(list(per.values()))
                else:
                    c = np.median([np.mean([v for (s, _), v in per.items() if s == s_]) for s_ in {s for s, _ in per}])
                if c >= target:
                    ks[(left_out, regime)] = k
                    break
    print("  k (left-out set / regime): " + ", ".join(f"{s[:5]}/{g}: {k:.2f}" for (s, g), k in ks.items()))
    return lambda r: ((ks[(r["set"], r["regime"])], 1, 1) if which == "post" else (ks[(r["set"], r["regime"])],) * 3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("run", "score"))
    ap.add_argument("name")
    ap.add_argument("options", nargs="*", help="option=value (run)")
    ap.add_argument("--out", default=os.environ.get("TMPDIR", "/tmp"), help="folder for NAME.pkl")
    ap.add_argument("--cache", default=None, help="pickled calibrate.Measure (default OUT/measure.pkl)")
    ap.add_argument("--conformal", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.action == "run":
        run(args.name, dict(o.split("=", 1) for o in args.options), out, Path(args.cache or out / "measure.pkl"))
        return 0
    rows = [r for r in pickle.loads((out / f"{args.name}.pkl").read_bytes()) if r.get("fc") is not None]
    show(score(rows, lambda r: (1, 1, 1)), f"{args.name}: multipliers 1")
    if args.conformal:
        for crit in ("mean", "median"):
            for which in ("all", "post"):
                show(score(rows, conformal(rows, crit, which)), f"conformal per regime ({crit} criterion, {which})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
