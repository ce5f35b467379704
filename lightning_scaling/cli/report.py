"""``lightning-scaling report LOGDIR``: one row per run found under a log directory.

Runs are read from the monitor's ``scaling_summary.json`` when there is one, else from their
TensorBoard scalars. A run that cannot be read is reported on stderr and the others are
still listed; exit status 2 only when nothing at all could be read. No torch, no Lightning.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np

from ..core.curve import CurveFit
from ..core.plain import plain
from ..errors import InvalidInputError
from ..io.runs import RunRecord, find_runs, load_run
from ..tensorboard.figures import matplotlib_available, report_figure, save_png
from ..tensorboard.text import ordered_warnings
from .common import CliError


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return f"{f:.{digits}g}" if math.isfinite(f) else "-"


def _forecast_text(rec: RunRecord) -> str:
    fc = rec.forecast
    if not fc or _fmt(fc.get("final_loss")) == "-":
        return "-"
    text = f"{_fmt(fc.get('final_loss'))} [{_fmt(fc.get('lower'))}, {_fmt(fc.get('upper'))}]"
    target = fc.get("target_step")
    if target is not None:
        text += f" @{_fmt(target, 6)}"
    return text


def _compute_text(rec: RunRecord) -> str:
    if rec.flops_total is not None:
        return f"{rec.flops_total:.3g} FLOPs"
    if rec.tokens_total is not None:
        return f"{rec.tokens_total:.3g} tokens"
    return "-"


def _warnings_text(rec: RunRecord) -> str:
    """How many warnings, and the most important one, shortened: a stop, else the first
    behind-trend warning, else the first of the next kind (``WARNING_ORDER``)."""
    if not rec.warnings:
        return "0"
    first = ordered_warnings(rec.warnings)[0].splitlines()[0].replace("ScalingLawMonitor: ", "")
    if len(first) > 48:
        first = first[:45] + "..."
    return f"{len(rec.warnings)}: {first}"


def format_table(records: list[RunRecord]) -> str:
    """The plain-text table: one row per run."""
    header = ("run", "source", "steps", "final loss", "forecast [interval] @step", "compute", "law", "warnings")
    rows = [
        (
            r.name,
            r.source,
            str(r.steps) if r.steps is not None else "-",
            _fmt(r.final_loss),
            _forecast_text(r),
            _compute_text(r),
            r.law or "-",
            _warnings_text(r),
        )
        for r in records
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# --plot


def _axis_values(rec: RunRecord, axis: str) -> np.ndarray | None:
    if axis == "step":
        return rec.step
    return rec.flops if axis == "flops" else rec.tokens


def _step_to_axis(rec: RunRecord, axis: str, steps: np.ndarray) -> np.ndarray | None:
    """Map optimizer steps to ``axis`` through the run's own (step, axis) pairs; beyond the
    last point, compute is taken to grow at its average rate per step."""
    if axis == "step":
        return np.asarray(steps, dtype=float)
    values = _axis_values(rec, axis)
    if values is None:
        return None
    good = np.isfinite(values) & np.isfinite(rec.step) & (rec.step > 0)
    if not good.any():
        return None
    s, v = rec.step[good], values[good]
    rate = v[-1] / s[-1]
    steps = np.asarray(steps, dtype=float)
    return np.where(steps <= s[-1], np.interp(steps, s, v), steps * rate)


def _trend(rec: RunRecord, axis: str):
    """(grid on the plot axis, fitted loss) from the run's last fit, or (None, None)."""
    if not rec.fit:
        return None, None
    try:

        fit = CurveFit.from_dict(rec.fit)
        if not fit.ok:
            return None, None
        end = rec.step[-1] if rec.step.size else 1.0
        target = (rec.forecast or {}).get("target_step")
        if isinstance(target, (int, float)) and math.isfinite(target):
            end = max(end, float(target))
        # the axis the fit ran on: the forecast says (a schedule-aware fit runs on the step
        # whatever the monitor's x_axis)
        fit_axis = (rec.forecast or {}).get("x_axis") or rec.x_axis
        fit_axis = fit_axis if fit_axis in ("step", "tokens", "flops") else "step"
        grid_steps = np.geomspace(max(rec.step[rec.step > 0].min(), 1.0), end, 200)
        grid_fit_x = _step_to_axis(rec, fit_axis, grid_steps)
        grid_plot_x = _step_to_axis(rec, axis, grid_steps)
        if grid_fit_x is None or grid_plot_x is None:
            return None, None
        return grid_plot_x, np.asarray(fit.predict(grid_fit_x), dtype=float)
    except Exception:  # an unreadable fit only costs the dashed line
        return None, None


def write_plot(records: list[RunRecord], path: str) -> str:
    """Overlay every run's curve, fitted law and forecast on one log-log figure; returns the x axis used."""
    if not matplotlib_available():
        raise InvalidInputError("--plot needs matplotlib (pip install 'lightning-scaling[plots]')")
    axis = "step"
    for candidate in ("flops", "tokens"):
        if all(_axis_values(r, candidate) is not None for r in records):
            axis = candidate
            break
    runs: list[dict[str, Any]] = []
    for rec in records:
        grid_x, trend = _trend(rec, axis)
        fc = rec.forecast or {}
        fx = None
        target = fc.get("target_step")
        if isinstance(target, (int, float)) and math.isfinite(target):
            mapped = _step_to_axis(rec, axis, np.array([float(target)]))
            fx = float(mapped[0]) if mapped is not None else None
        forecast = None
        if fc.get("final_loss") is not None:
            forecast = tuple(float(fc.get(k)) if fc.get(k) is not None else math.nan
                             for k in ("final_loss", "lower", "upper"))
        runs.append({"name": rec.name, "x": _axis_values(rec, axis), "loss": rec.loss,
                     "grid_x": grid_x, "trend": trend, "forecast_x": fx, "forecast": forecast})
    label = {"flops": "compute (FLOPs)", "tokens": "tokens", "step": "optimizer steps"}[axis]
    fig = report_figure(runs, x_label=label)
    try:
        save_png(fig, path)
    except OSError as exc:
        raise InvalidInputError(f"--plot {path}: cannot write: {exc.strerror or exc}") from None
    return axis


# --------------------------------------------------------------------------------------


def read_runs(logdir: str, tags=None) -> tuple[list[RunRecord], list[str]]:
    """Every readable run under ``logdir`` and the messages for what could not be read."""
    runs, messages = find_runs(logdir)
    records: list[RunRecord] = []
    for run in runs:
        try:
            records.append(load_run(run, tags))
        except InvalidInputError as exc:
            messages.append(str(exc))
    return records, messages


def run(args) -> int:
    tags = args.tag or None
    records, messages = read_runs(args.logdir, tags)
    for rec in records:
        messages.extend(f"{rec.name}: {p}" if not p.startswith(rec.name) else p for p in rec.problems)
    for msg in messages:
        print(f"lightning-scaling report: {msg}", file=sys.stderr)
    if not records:
        if not messages:
            raise CliError(
                f"{args.logdir}: no runs found (looked for scaling_summary.json and "
                "events.out.tfevents.* files)"
            )
        raise CliError(f"{args.logdir}: no run could be read")
    if args.json:
        payload = {"logdir": args.logdir, "runs": [], "errors": messages}
        for rec in records:
            item = rec.to_json()
            item.pop("curve")
            payload["runs"].append(item)
        print(json.dumps(plain(payload, strict=True), indent=2, allow_nan=False))
    else:
        print(format_table(records))
    if args.plot:
        axis = write_plot(records, args.plot)
        if not args.json:
            print(f"wrote {args.plot} (x axis: {axis})")
    return 0
