"""``lightning-scaling extrapolate`` (PLACEHOLDER: table output only; the core issue completes it)."""

from __future__ import annotations

import csv
import math

import numpy as np

from .curve import fit_curve


def run(args) -> int:
    from .cli import CliError

    with open(args.file, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise CliError(f"{args.file}: no data rows")
    for col in (args.x, args.loss):
        if col not in rows[0]:
            raise CliError(f"{args.file}: no column {col!r} (columns: {', '.join(rows[0])})")
    x = np.array([float(r[args.x]) if r[args.x] else math.nan for r in rows])
    y = np.array([float(r[args.loss]) if r[args.loss] else math.nan for r in rows])
    fit = fit_curve(x, y)
    for at in args.at:
        lo, hi = fit.interval(at, args.level)
        print(f"{args.x}={at:g}  loss={fit.predict(at):.4f}  [{lo:.4f}, {hi:.4f}]")
    return 0
