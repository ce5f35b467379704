"""``lightning-scaling extrapolate FILE --at X``: fit one loss curve from a CSV and forecast it.

Columns are found by name (``--x``, default ``step``; ``--loss``, default ``loss``); rows with
a blank loss are skipped (the shared data layout leaves the loss blank on unmeasured steps).
With ``--lr COL`` the LR column of *every* row (one row per optimizer step 0..horizon) is
passed to ``fit_curve(..., lr=...)`` (schedule-aware fit; x must then be the step).
Bad input ends with one line on stderr and exit status 2 (see ``cli.main``).
"""

from __future__ import annotations

import json
import math

import numpy as np

from ..core.curve import fit_curve
from ..core.laws import get_law
from ..core.plain import plain
from ..io.tables import read_csv
from .common import CliError
from .plots import extrapolate_figure

UNITS = {"step": "steps", "steps": "steps", "tokens": "tokens", "token": "tokens",
         "flops": "FLOPs", "flop": "FLOPs", "compute": "FLOPs"}


def x_unit(column: str) -> str:
    """Unit of an x column, from its name (the name itself when unknown)."""
    return UNITS.get(column.lower(), column)


def _fmt(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.4f}"


def run(args) -> int:
    at = [float(a) for a in args.at]
    if any(not math.isfinite(a) or a <= 0 for a in at):
        raise CliError(f"--at must be positive numbers, got {', '.join(f'{a:g}' for a in at)}")
    if not 0.0 < args.level < 1.0:
        raise CliError(f"--level must be in (0, 1), got {args.level:g}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CliError("--plot needs matplotlib: pip install 'lightning-scaling[plots]'") from None

    cols = read_csv(args.file)
    wanted = [args.x, args.loss] + ([args.lr] if args.lr else [])
    for col in wanted:
        if col not in cols:
            raise CliError(f"{args.file}: no column {col!r} (columns: {', '.join(cols)})")
    x_all, y_all = cols[args.x], cols[args.loss]
    measured = ~np.isnan(y_all)
    if not measured.any():
        raise CliError(f"{args.file}: column {args.loss!r} is blank on every row")
    x, y = x_all[measured], y_all[measured]
    lr = None
    if args.lr:
        lr = cols[args.lr]
        if np.isnan(lr).any():
            raise CliError(f"{args.file}: column {args.lr!r} must hold the LR on every row "
                           f"(one row per optimizer step 0..horizon)")

    fit = fit_curve(x, y, lr=lr)
    diag = fit.diagnostics
    if not fit.ok:
        detail = diag.get("reason_detail")
        raise CliError(f"{args.file}: cannot forecast: {diag.get('reason', 'fit failed')}"
                       + (f" ({detail})" if detail else ""))

    unit = x_unit(args.x)
    forecasts = []
    for a in at:
        lo, hi = fit.interval(a, args.level)
        forecasts.append({"x": a, "loss": fit.predict(a), "lower": lo, "upper": hi,
                          "level": args.level})

    if args.plot:
        x_label = args.x if unit == args.x else f"{args.x} ({unit})"
        fig = extrapolate_figure(fit, x, y, at=at, level=args.level, x_label=x_label,
                                 loss_label=args.loss, title=str(args.file))
        try:
            fig.savefig(args.plot)
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot write {args.plot}: {exc}") from None

    if args.json:
        out = {"file": str(args.file), "x_column": args.x, "x_unit": unit, "loss_column": args.loss,
               "lr_column": args.lr, "rows": int(x_all.size), "measured_rows": int(x.size),
               "forecasts": forecasts, "fit": fit.to_dict(), "plot": args.plot}
        print(json.dumps(plain(out, strict=True), indent=1, allow_nan=False))
        return 0

    print(_table(args, fit, forecasts, unit, int(x_all.size), int(x.size)))
    return 0


def _table(args, fit, forecasts, unit, n_rows, n_measured) -> str:
    d = fit.diagnostics
    law = get_law(fit.law)
    params = ", ".join(f"{k}={v:.4g}" for k, v in fit.params.items())
    x_desc = args.x if unit == args.x else f"{args.x} ({unit})"
    lines = [f"{args.file}: {n_measured} measured rows of {n_rows}; x = {x_desc}, loss = {args.loss}"]
    lines.append(f"law: {fit.law}  L = {law.formula}  ({params}; x in {unit})")
    weights = d.get("weights") or {}
    if len(weights) > 1:
        lines.append("held-out late-point weights: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in weights.items()))
    used = f"points used: {d.get('n_used', '?')}"
    if d.get("n_dropped"):
        used += f"; dropped {d['n_dropped']} (" + ", ".join(
            f"{k.replace('_', ' ')}: {v}" for k, v in d.get("dropped", {}).items()) + ")"
    if "warmup" in d:
        w = d["warmup"]
        n_cut = w["n_points_cut"]
        used += (f"; warm-up cut before {args.x} = {w['cut_before_x']:.4g} "
                 f"({n_cut} point{'s' if n_cut != 1 else ''})")
    if "bucketed" in d:
        used += f"; averaged into {d['bucketed']['n_buckets']} log-spaced bins"
    lines.append(used)
    lines.append(f"fitted {args.x} range: {fit.x_first:.4g} .. {fit.x_last:.4g} {unit}")
    for flag in d.get("flags", []):
        lines.append(f"note: {flag}")
    level = forecasts[0]["level"]
    x_head = args.x if unit == args.x else f"{args.x} ({unit})"
    head = f"{x_head:>18s}  {'forecast ' + args.loss:>16s}  {f'{level:.0%} interval':>22s}"
    lines.append("")
    lines.append(head)
    for f in forecasts:
        beyond = "" if f["x"] <= fit.x_last else f"  ({f['x'] / fit.x_last:.3g}x beyond data)"
        lines.append(f"{f['x']:18.6g}  {_fmt(f['loss']):>16s}  "
                     f"{'[' + _fmt(f['lower']) + ', ' + _fmt(f['upper']) + ']':>22s}{beyond}")
    lines.append(f"(loss in the units of column {args.loss!r}, e.g. nats for cross-entropy)")
    return "\n".join(lines)
