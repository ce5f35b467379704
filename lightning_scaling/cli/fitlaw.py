"""``lightning-scaling fit-law FILE|LOGDIR``: fit L(N, D) across runs, compute-optimal budgets.

FILE is a CSV with one row per run (columns N, D, loss found by name); LOGDIR is a folder
searched recursively for the callback's run summaries (``scaling_summary.json``: n_params,
tokens, final_loss). Unreadable summaries, summaries of a newer version and summaries without
the three numbers are skipped and listed on stderr (and in ``--json`` under "skipped").
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np

from ..core.plain import plain
from ..core.scaling import fit_scaling_law
from ..errors import InvalidInputError
from ..io.summary import SUMMARY_FILENAME, read_summary
from ..io.tables import read_csv
from .common import CliError
from .plots_scaling import plot_scaling_law

N_COLUMNS = ("N", "n_params", "N_params")
D_COLUMNS = ("D", "tokens", "D_tokens")
LOSS_COLUMNS = ("loss",)


def _pick_column(columns, wanted, defaults, what, path):
    """The column named ``wanted`` (exact), or the first default present (any case)."""
    if wanted is not None:
        if wanted in columns:
            return wanted
        raise CliError(f"{path}: no column {wanted!r} for {what} (columns: {', '.join(columns)})")
    lower = {c.lower(): c for c in columns}
    for name in defaults:
        if name in columns:
            return name
        if name.lower() in lower:
            return lower[name.lower()]
    raise CliError(f"{path}: no {what} column (tried {', '.join(defaults)}; columns: "
                   f"{', '.join(columns)}); name it with the option for it")


def _from_csv(path, n_col, d_col, loss_col):
    cols = read_csv(path)
    n_name = _pick_column(cols, n_col, N_COLUMNS, "N (parameters, --n)", path)
    d_name = _pick_column(cols, d_col, D_COLUMNS, "D (tokens, --d)", path)
    l_name = _pick_column(cols, loss_col, LOSS_COLUMNS, "loss (--loss)", path)
    N, D, L = cols[n_name], cols[d_name], cols[l_name]
    blank = np.isnan(N) | np.isnan(D) | np.isnan(L)
    notes = []
    if blank.all():
        raise CliError(f"{path}: every row has a blank {n_name}, {d_name} or {l_name}")
    if blank.any():
        notes.append(f"skipped {int(blank.sum())} row(s) with a blank {n_name}, {d_name} or {l_name}")
    keep = ~blank
    names = [f"row {i + 2}" for i in np.nonzero(keep)[0]]
    return N[keep], D[keep], L[keep], names, notes, {"N": n_name, "D": d_name, "loss": l_name}


def _from_summaries(logdir):
    found = []
    for directory, subdirs, files in os.walk(logdir):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        if SUMMARY_FILENAME in files:
            found.append(os.path.join(directory, SUMMARY_FILENAME))
    if not found:
        raise CliError(f"{logdir}: no {SUMMARY_FILENAME} found (and it is not a CSV file)")
    N, D, L, names, skipped = [], [], [], [], []
    for path in sorted(found):
        try:
            data = read_summary(path)
        except InvalidInputError as exc:
            skipped.append(str(exc))
            continue
        values = []
        for key in ("n_params", "tokens", "final_loss"):
            v = data.get(key)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
            values.append(float(v) if ok else None)
        missing = [k for k, v in zip(("n_params", "tokens", "final_loss"), values) if v is None]
        if missing:
            skipped.append(f"{path}: no usable {', '.join(missing)} (null, non-positive or not a number)")
            continue
        N.append(values[0])
        D.append(values[1])
        L.append(values[2])
        names.append(str(data.get("run") or os.path.relpath(os.path.dirname(path), logdir)))
    if not N:
        raise CliError(f"{logdir}: none of {len(found)} run summaries is usable "
                       f"(first problem: {skipped[0]})")
    return (np.array(N), np.array(D), np.array(L), names, skipped,
            {"N": "n_params", "D": "tokens", "loss": "final_loss"})


def _fmt(x):
    return f"{x:.5g}"


def run(args) -> int:
    source = args.source
    if not os.path.exists(source):
        raise CliError(f"{source}: no such file or directory")
    if os.path.isdir(source):
        N, D, L, names, notes, columns = _from_summaries(source)
    else:
        N, D, L, names, notes, columns = _from_csv(source, args.n, args.d, args.loss)
    if args.bootstrap < 0:
        raise CliError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if not 0 < args.level < 1:
        raise CliError(f"--level must be in (0, 1), got {args.level}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CliError("--plot needs matplotlib: pip install 'lightning-scaling[plots]'") from None
    budgets = args.budget or []
    for c in budgets:
        if not (math.isfinite(c) and c > 0):
            raise CliError(f"--budget must be a positive number of FLOPs, got {c:g}")

    fit = fit_scaling_law(N, D, L, bootstrap=args.bootstrap, seed=args.seed)
    pint = fit.param_intervals(args.level) if args.bootstrap else None
    optimal = []
    for c in budgets:
        n_opt, d_opt = fit.compute_optimal(c)
        row = {"flops": c, "n_params": n_opt, "tokens": d_opt, "loss": fit.predict(n_opt, d_opt)}
        if args.bootstrap:
            row["intervals"] = {k: list(v) for k, v in fit.compute_optimal_intervals(c, args.level).items()}
        optimal.append(row)

    if args.plot:
        try:
            plot_scaling_law(fit, N, D, L, args.plot, budgets=budgets, level=args.level)
        except ImportError as exc:
            raise CliError(f"--plot needs matplotlib ({exc}); pip install 'lightning-scaling[plots]'")

    for note in notes:
        print(f"lightning-scaling fit-law: note: {note}", file=sys.stderr)

    if args.json:
        out = {
            "law": "L(N, D) = E + A/N^alpha + B/D^beta",
            "units": {"N": "parameters", "D": "tokens", "loss": "nats", "C": "FLOPs (C = 6 N D)"},
            "source": source,
            "columns": columns,
            "n_points": int(N.size),
            "params": fit.params,
            "level": args.level if args.bootstrap else None,
            "intervals": None if pint is None else {k: list(v) for k, v in pint.items()},
            "huber_delta": fit.huber_delta,
            "objective": fit.objective,
            "diagnostics": fit.to_dict()["diagnostics"],
            "compute_optimal": optimal,
            "skipped": notes,
            "plot": args.plot,
        }
        print(json.dumps(plain(out, strict=True), indent=2, allow_nan=False))
        return 0

    p = fit.params
    print(f"L(N, D) = E + A/N^alpha + B/D^beta   fitted to {N.size} runs "
          f"(N: {columns['N']}, parameters; D: {columns['D']}, tokens; loss: {columns['loss']}, nats)")
    head = (f"  {int(round(args.level * 100))}% interval ({args.bootstrap} bootstrap resamples)"
            if pint else "  (no intervals: --bootstrap 0)")
    print(head)
    units = {"E": "nats", "A": "nats * parameters^alpha", "B": "nats * tokens^beta",
             "alpha": "", "beta": ""}
    for k in ("E", "A", "B", "alpha", "beta"):
        iv = f"  [{_fmt(pint[k][0])}, {_fmt(pint[k][1])}]" if pint else ""
        print(f"  {k:<6} {_fmt(p[k]):>10}{iv:<26} {units[k]}")
    d = fit.diagnostics
    print(f"  Huber objective {fit.objective:.6g} (delta {fit.huber_delta:g} on log loss); "
          f"median |log residual| {d['residual_scale']:.3g}; "
          f"{d['n_model_sizes']} model sizes, {d['n_token_counts']} token counts")
    for flag in d.get("flags", []):
        print(f"  warning: {flag}")
    for row in optimal:
        print(f"compute-optimal for C = {row['flops']:.4g} FLOPs (C = 6 N D):")
        iv = row.get("intervals")
        for key, label, unit in (("n_params", "N", "parameters"), ("tokens", "D", "tokens"),
                                 ("loss", "loss", "nats")):
            ik = {"n_params": "N", "tokens": "D", "loss": "loss"}[key]
            extra = f"  [{_fmt(iv[ik][0])}, {_fmt(iv[ik][1])}]" if iv else ""
            print(f"  {label:<5}= {_fmt(row[key])} {unit}{extra}")
        print(f"  tokens per parameter {row['tokens'] / row['n_params']:.3g}")
    if args.plot:
        print(f"figure written to {args.plot}")
    return 0
