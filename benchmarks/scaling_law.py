"""Benchmark of ``fit_scaling_law`` (issue 7).

Three parts, all in one run:

1. Chinchilla points (Hoffmann et al. 2022, digitised by Epoch AI; the 5 points Epoch drop
   are dropped, D = C / (6 N)): our fit against a reference implementation of the published
   recipe (L-BFGS from a grid of 4,500 starts, written below), timed in the same process:
   parameters side by side, Huber objective values, time ratio, and whether our parameters
   lie inside Epoch AI's 95% intervals.
2. Bootstrap: 1,000 resamples, their wall time, and the 95% interval widths against the
   widths Epoch report (their intervals, and +-1.96 x their standard errors).
3. Over-training: Gadre et al. 2024's RedPajama family (benchmarks/data/gadre2024_rpj_c4val.csv,
   N 11M-411M at 5-640 tokens per parameter, plus 1.4B and 6.9B runs): fit on the models
   below 200M parameters, predict the 411M runs (and the 1.4B/6.9B ones); median relative
   error of our fit vs a plain ``scipy.optimize.curve_fit`` of the same law.

Run:  python benchmarks/scaling_law.py [--starts 4500|1620] [--bootstrap 1000] [--json OUT]

Exit status 1 when a target of part 1 or 2 is short (the last line names them), else 0.

BLAS threads are pinned to 1 before numpy loads: scipy's L-BFGS-B (the reference) calls BLAS
on 5-vectors and slows down ~10x when a multi-threaded BLAS pool competes for busy cores;
pinning is the fair setting for the reference (ours uses BFGS and is unaffected).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from scipy import optimize, special  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from lightning_scaling.core.scaling import PARAM_NAMES, fit_scaling_law  # noqa: E402

DEFAULT_POINTS = "/work/shared/data/points/chinchilla.csv"
DEFAULT_PUBLISHED = "/work/shared/data/points/chinchilla_published_fit.json"
GADRE_CSV = os.path.join(HERE, "data", "gadre2024_rpj_c4val.csv")

EPOCH_95 = {"E": (1.769, 1.871), "A": (285.0, 744.0), "B": (1042.0, 5810.0),
            "alpha": (0.317, 0.373), "beta": (0.331, 0.415)}
DELTA = 1e-3


# ----------------------------------------------------------------- data
def load_chinchilla(path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    kept = [r for r in rows if int(float(r["epoch_excluded_top5_loss"])) == 0]
    N = np.array([float(r["N_params"]) for r in kept])
    C = np.array([float(r["C_flops"]) for r in kept])
    D = C / (6.0 * N)  # the published data rule; equals the D_tokens column
    D_col = np.array([float(r["D_tokens"]) for r in kept])
    assert np.allclose(D, D_col, rtol=1e-9), "D_tokens differs from C/(6N)"
    L = np.array([float(r["loss"]) for r in kept])
    return N, D, L, len(rows)


def load_gadre(path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    run = [r["run"] for r in rows]
    N = np.array([float(r["N"]) for r in rows])
    D = np.array([float(r["D"]) for r in rows])
    L = np.array([float(r["loss"]) for r in rows])
    return run, N, D, L


# ----------------------------------------------------------------- reference recipe
def reference_grid(starts):
    """Hoffmann et al.'s initialisation grid (as replicated by Epoch AI): 4,500 starts.

    alpha, beta in {0, .5, 1, 1.5, 2}, e in {-1, -.5, 0, .5, 1}, a, b in {0, 5, ..., 25}.
    The 1,620-start grid keeps alpha, beta in {.5, 1, 1.5}.
    """
    ab = {4500: [0.0, 0.5, 1.0, 1.5, 2.0], 1620: [0.5, 1.0, 1.5]}[starts]
    es = [-1.0, -0.5, 0.0, 0.5, 1.0]
    ab_lin = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
    return [np.array([a, b, e, al, be]) for al, be, e, a, b in itertools.product(ab, ab, es, ab_lin, ab_lin)]


def reference_objective(theta, log_n, log_d, log_l):
    """Sum of scipy.special.huber(1e-3, .) of LSE(a - alpha logN, b - beta logD, e) - log L."""
    a, b, e, alpha, beta = theta
    pred = special.logsumexp([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)], axis=0)
    return float(special.huber(DELTA, pred - log_l).sum())


def reference_gradient(theta, log_n, log_d, log_l):
    a, b, e, alpha, beta = theta
    t = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    lse = special.logsumexp(t, axis=0)
    p = np.exp(t - lse)
    psi = np.clip(lse - log_l, -DELTA, DELTA)
    return np.array([(psi * p[0]).sum(), (psi * p[1]).sum(), (psi * p[2]).sum(),
                     -(psi * p[0] * log_n).sum(), -(psi * p[1] * log_d).sum()])


def reference_fit(N, D, L, starts, jac):
    log_n, log_d, log_l = np.log(N), np.log(D), np.log(L)
    best = None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for x0 in reference_grid(starts):
            res = optimize.minimize(reference_objective, x0, args=(log_n, log_d, log_l),
                                    jac=reference_gradient if jac == "analytic" else None,
                                    method="L-BFGS-B")
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
    a, b, e, alpha, beta = best.x
    params = {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)),
              "alpha": float(alpha), "beta": float(beta)}
    return params, float(best.fun)


# ----------------------------------------------------------------- over-training
def _law(X, E, A, B, alpha, beta):
    n, d = X
    return E + A * n ** -alpha + B * d ** -beta


def curve_fit_law(N, D, L, p0):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            p, _ = optimize.curve_fit(_law, (N, D), L, p0=p0, maxfev=20000)
        except (RuntimeError, ValueError) as exc:
            return None, str(exc).split(":")[0]
    return dict(zip(PARAM_NAMES, map(float, p))), None


def rel_err(pred, true):
    return np.abs(np.asarray(pred) - true) / true


def overtraining(path, cut=2e8):
    run, N, D, L = load_gadre(path)
    out = {}
    p0s = {"Hoffmann 2022 published (E 1.69, A 406.4, B 410.7, 0.34, 0.28)": (1.69, 406.4, 410.7, 0.34, 0.28),
           "Epoch AI fit (E 1.82, A 482, B 2085, 0.348, 0.366)": (1.817, 482.0, 2085.0, 0.348, 0.366),
           "ones (curve_fit's default start, exponents 0.3)": (1.0, 1.0, 1.0, 0.3, 0.3)}
    for name, lo in (("fit on 11M-154M (all smaller sizes)", 0.0), ("fit on 79M-154M (drop the 11M model)", 2e7)):
        train = (N < cut) & (N > lo)
        test = (N > 3e8) & (N < 5e8)
        big = N > 1e9
        t0 = time.perf_counter()
        fit = fit_scaling_law(N[train], D[train], L[train])
        t_ours = time.perf_counter() - t0
        e_ours = rel_err(fit.predict(N[test], D[test]), L[test])
        e_big = rel_err(fit.predict(N[big], D[big]), L[big])
        res = {"train_points": int(train.sum()), "test_points_411M": int(test.sum()),
               "ours": {"params": fit.params, "median_rel_err_411M": float(np.median(e_ours)),
                        "max_rel_err_411M": float(e_ours.max()), "seconds": t_ours,
                        "rel_err_1.4B_6.9B": {run[i]: float(v) for i, v in zip(np.nonzero(big)[0], e_big)}},
               "curve_fit": {}}
        for pname, p0 in p0s.items():
            p, err = curve_fit_law(N[train], D[train], L[train], p0)
            if p is None:
                res["curve_fit"][pname] = {"failed": err}
                continue
            pred = _law((N[test], D[test]), *p.values())
            e_cf = rel_err(pred, L[test])
            e_cf_big = rel_err(_law((N[big], D[big]), *p.values()), L[big])
            res["curve_fit"][pname] = {
                "params": p, "median_rel_err_411M": float(np.median(e_cf)) if np.all(np.isfinite(e_cf)) else None,
                "rel_err_1.4B_6.9B": {run[i]: float(v) for i, v in zip(np.nonzero(big)[0], e_cf_big)}}
        out[name] = res
    return out


# ----------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", default=DEFAULT_POINTS)
    ap.add_argument("--starts", type=int, default=4500, choices=(4500, 1620),
                    help="reference grid size (1620 when time is short)")
    ap.add_argument("--ref-jac", default="analytic", choices=("analytic", "numeric"),
                    help="reference gradient: analytic (fast) or scipy finite differences")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of our fit")
    ap.add_argument("--json", default=None, metavar="OUT", help="also write results as JSON")
    args = ap.parse_args(argv)

    report = {"load_average": os.getloadavg(), "cpu_count": os.cpu_count(), "argv": sys.argv[1:]}
    N, D, L, n_all = load_chinchilla(args.points)
    print(f"Chinchilla points: {n_all} rows, {N.size} kept (Epoch's 5 dropped); D = C/(6N)")
    print(f"load average {report['load_average'][0]:.2f} on {report['cpu_count']} CPUs")

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fit = fit_scaling_law(N, D, L)
        times.append(time.perf_counter() - t0)
    t_ours = float(np.median(times))
    t0 = time.perf_counter()
    ref_params, ref_obj = reference_fit(N, D, L, args.starts, args.ref_jac)
    t_ref = time.perf_counter() - t0
    ours_obj_ref_units = reference_objective(
        [np.log(fit.params["A"]), np.log(fit.params["B"]), np.log(fit.params["E"]),
         fit.params["alpha"], fit.params["beta"]], np.log(N), np.log(D), np.log(L))
    rel = (ours_obj_ref_units - ref_obj) / ref_obj

    print(f"\n1. fit: ours (variable projection + BFGS) vs reference recipe "
          f"(L-BFGS-B from {args.starts} starts, {args.ref_jac} gradient)")
    print(f"{'param':<7}{'ours':>12}{'reference':>12}{'Epoch 95% interval':>22}  inside")
    inside_all = True
    for k in PARAM_NAMES:
        lo, hi = EPOCH_95[k]
        inside = lo <= fit.params[k] <= hi
        inside_all &= inside
        print(f"{k:<7}{fit.params[k]:>12.5g}{ref_params[k]:>12.5g}{f'{lo:g}-{hi:g}':>22}  {'yes' if inside else 'NO'}")
    print(f"Huber objective: ours {ours_obj_ref_units:.10g}, reference {ref_obj:.10g}, "
          f"relative difference (ours - ref)/ref = {rel:.2e} ({'ours lower or equal' if rel <= 0 else 'ours higher'})")
    print(f"time: ours {t_ours:.3f} s (median of {args.repeats}; all {', '.join(f'{t:.3f}' for t in times)}), "
          f"reference {t_ref:.1f} s, ratio {t_ref / t_ours:.0f}x")
    ok_fit = inside_all and rel <= 1e-6 and t_ours <= 2.0
    targets = {"1. fit (inside intervals, objective within 1e-6 rel, <= 2 s)": ok_fit}
    print(f"target (inside intervals, objective within 1e-6 rel, <= 2 s): {'PASS' if ok_fit else 'FAIL'}")
    report["fit"] = {"ours": fit.params, "reference": ref_params, "ours_objective": ours_obj_ref_units,
                     "reference_objective": ref_obj, "relative_difference": rel,
                     "ours_seconds": times, "reference_seconds": t_ref, "reference_starts": args.starts,
                     "reference_jac": args.ref_jac, "inside_epoch_95": inside_all, "pass": ok_fit}

    if args.bootstrap:
        t0 = time.perf_counter()
        bfit = fit_scaling_law(N, D, L, bootstrap=args.bootstrap, seed=0)
        t_boot = time.perf_counter() - t0
        pint = bfit.param_intervals(0.95)
        with open(DEFAULT_PUBLISHED) as fh:
            pub = json.load(fh)["epoch_mle_with_stderr"]
        print(f"\n2. bootstrap: {args.bootstrap} resamples in {t_boot:.1f} s "
              f"(fit + resamples; resamples alone {bfit.diagnostics['bootstrap']['seconds']:.1f} s)")
        print(f"{'param':<7}{'ours 95%':>24}{'width':>10}{'Epoch 95%':>18}{'width':>10}{'ratio':>7}"
              f"{'1.96se width':>14}{'ratio':>7}")
        worst = 0.0
        widths = {}
        for k in PARAM_NAMES:
            lo, hi = pint[k]
            w = hi - lo
            elo, ehi = EPOCH_95[k]
            ew = ehi - elo
            sw = 2 * 1.96 * pub[f"{k}_se"]
            worst = max(worst, abs(w / ew - 1))
            widths[k] = {"ours": [lo, hi], "width": w, "epoch_width": ew, "ratio": w / ew,
                         "se_width": sw, "ratio_se": w / sw}
            print(f"{k:<7}{f'{lo:.4g}-{hi:.4g}':>24}{w:>10.4g}{f'{elo:g}-{ehi:g}':>18}{ew:>10.4g}"
                  f"{w / ew:>7.2f}{sw:>14.4g}{w / sw:>7.2f}")
        ok_boot = t_boot <= 30 and worst <= 0.3
        targets["2. bootstrap (<= 30 s, widths within 30% of Epoch's)"] = ok_boot
        print(f"target (<= 30 s, widths within 30% of Epoch's intervals): {'PASS' if ok_boot else 'FAIL'} "
              f"(largest deviation {worst:.0%})")
        report["bootstrap"] = {"resamples": args.bootstrap, "seconds": t_boot, "widths": widths,
                               "failed": bfit.diagnostics["bootstrap"]["failed"], "pass": ok_boot}

    print("\n3. over-training (Gadre et al. 2024 RedPajama family, C4 eval loss): "
          "fit below 200M parameters, predict the 411M runs (5-640 tokens/parameter)")
    ot = overtraining(GADRE_CSV)
    for name, res in ot.items():
        o = res["ours"]
        print(f"  {name}: {res['train_points']} training runs, {res['test_points_411M']} test runs")
        print(f"    ours:      median |rel err| {o['median_rel_err_411M']:.2%} (max {o['max_rel_err_411M']:.2%}); "
              f"1.4B/6.9B: " + ", ".join(f"{k} {v:.1%}" for k, v in o["rel_err_1.4B_6.9B"].items()))
        for pname, cf in res["curve_fit"].items():
            if "failed" in cf:
                print(f"    curve_fit from {pname}: failed ({cf['failed']})")
            else:
                med = cf["median_rel_err_411M"]
                print(f"    curve_fit from {pname}: median |rel err| "
                      f"{'n/a' if med is None else f'{med:.2%}'}; 1.4B/6.9B: "
                      + ", ".join(f"{k} {v:.1%}" for k, v in cf["rel_err_1.4B_6.9B"].items()))
    report["overtraining"] = ot

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2, default=float)
        print(f"\nresults written to {args.json}")
    short = [name for name, ok in targets.items() if not ok]
    print(f"\ntargets short: {'; '.join(short)}" if short else f"\nall {len(targets)} targets met")
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
