"""Numbers and the run's markdown summary as the panels show them (TensorBoard's Text dashboard)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def finite(value) -> bool:
    """True for a number (or numeric string) that is finite; False for None, NaN, inf, text.

    >>> finite(2.5), finite(None), finite(float("nan")), finite("x")
    (True, False, False, False)
    """
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def format_number(value, unit: str = "", digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits and its unit; "n/a" for None/NaN.

    >>> format_number(1.2e18, "FLOPs"), format_number(2.31456), format_number(None, "nats")
    ('1.2e+18 FLOPs', '2.315', 'n/a')
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(v):
        return "n/a"
    text = f"{v:.{digits}g}"
    return f"{text} {unit}".rstrip()


def _param_interval(fit: Mapping[str, Any], name: str):
    """A parameter's interval from a fit dict, wherever the core put it (None if absent)."""
    for holder in (fit, fit.get("diagnostics") or {}):
        if not isinstance(holder, Mapping):
            continue
        for key in ("param_intervals", "params_interval", "param_ci"):
            table = holder.get(key)
            if isinstance(table, Mapping) and name in table:
                pair = table[name]
                if isinstance(pair, (list, tuple)) and len(pair) == 2:
                    return pair
    return None


def _early_forecasts(forecasts, observed, fractions=(0.1, 0.25, 0.5)) -> list[str]:
    """Table rows of the forecasts made nearest 10%, 25% and 50% of the planned run."""
    rows = []
    usable = [f for f in forecasts if isinstance(f, Mapping) and finite(f.get("final_loss"))
              and finite(f.get("target_step")) and f.get("target_step") > 0 and finite(f.get("step"))]
    seen = set()
    for frac in fractions:
        if not usable:
            break
        best = min(usable, key=lambda f: abs(f["step"] / f["target_step"] - frac))
        share = best["step"] / best["target_step"]
        if id(best) in seen or abs(share - frac) > 0.5 * frac:
            continue
        seen.add(id(best))
        lo, hi = best.get("lower"), best.get("upper")
        inside = "n/a"
        if finite(observed) and finite(lo) and finite(hi):
            inside = "yes" if lo <= observed <= hi else "no"
        rows.append(f"| step {int(best['step'])} | {100 * share:.0f}% | {format_number(best['final_loss'])} "
                    f"| [{format_number(lo)}, {format_number(hi)}] | {inside} |")
    return rows


def summary_markdown(summary: Mapping[str, Any], loss_unit: str = "") -> str:
    """A markdown report of a run summary (the schema of ``lightning_scaling.io.summary``):
    law, parameters with intervals, forecast vs observed final loss, compute used, warnings.

    ``loss_unit``: the loss's unit (e.g. "nats"), shown after each loss; without it the text
    says which loss the numbers are in.

    >>> md = summary_markdown({"run": "demo", "final_loss": 2.31, "steps": 1000, "flops": 1.2e18,
    ...                        "forecast": {"final_loss": 2.3, "lower": 2.25, "upper": 2.36, "level": 0.9,
    ...                                     "step": 500, "target_step": 1000}})
    >>> print(md.splitlines()[0])
    ### Scaling law: demo
    >>> [line for line in md.splitlines() if "inside" in line]
    ['- The observed final loss is **inside** the forecast interval.']
    """
    lines = [f"### Scaling law: {summary.get('run') or 'run'}", ""]
    fit = summary.get("fit") or {}
    forecast = summary.get("forecast") or {}
    law = forecast.get("law") or fit.get("law") or "none"
    lines.append(f"**Law:** `{law}` (x axis: {summary.get('x_axis', 'step')})")
    lines.append("")
    params = fit.get("params") or {}
    if params:
        lines += ["| parameter | value | interval |", "| --- | --- | --- |"]
        for name, value in params.items():
            iv = _param_interval(fit, name)
            iv_text = f"[{format_number(iv[0])}, {format_number(iv[1])}]" if iv else "not estimated"
            lines.append(f"| {name} | {format_number(value)} | {iv_text} |")
        lines.append("")
    else:
        lines += ["No fit was possible.", ""]
    observed = summary.get("final_loss")
    loss_name = summary.get("loss_name") or "loss"
    if forecast:
        level = forecast.get("level")
        level_text = f"{100 * float(level):.0f}% " if isinstance(level, (int, float)) else ""
        lines.append(
            f"- **Forecast final {loss_name}:** {format_number(forecast.get('final_loss'), loss_unit)} "
            f"({level_text}interval [{format_number(forecast.get('lower'))}, "
            f"{format_number(forecast.get('upper'))}]) at step {forecast.get('target_step', 'n/a')}, "
            f"made at step {forecast.get('step', 'n/a')}"
        )
    else:
        lines.append("- **Forecast:** none made")
    lines.append(f"- **Observed final {loss_name}:** {format_number(observed, loss_unit)}")
    try:
        lo, hi = float(forecast.get("lower")), float(forecast.get("upper"))
        obs = float(observed)
        if all(math.isfinite(v) for v in (lo, hi, obs)):
            verdict = "inside" if lo <= obs <= hi else ("below" if obs < lo else "above")
            lines.append(f"- The observed final loss is **{verdict}** the forecast interval.")
    except (TypeError, ValueError):
        pass
    if not loss_unit:
        lines.append(f"- Losses are in the units of `{loss_name}` (nats for a cross-entropy).")
    early = _early_forecasts(summary.get("forecasts") or [], observed)
    if early:
        lines += ["", "| forecast made at | of the run | forecast | interval | observed inside |",
                  "| --- | --- | --- | --- | --- |"]
        lines += early
    lines.append("")
    lines.append(
        f"**Compute used:** {format_number(summary.get('flops'), 'FLOPs')}, "
        f"{format_number(summary.get('tokens'), 'tokens')}, {summary.get('steps', 'n/a')} steps; "
        f"model {format_number(summary.get('n_params'), 'parameters (non-embedding)')}"
    )
    lines.append("")
    warnings = summary.get("warnings") or []
    if warnings:
        lines.append(f"**Warnings ({len(warnings)}):**")
        lines += [f"- {w}" for w in warnings[:20]]
        if len(warnings) > 20:
            lines.append(f"- ... and {len(warnings) - 20} more")
    else:
        lines.append("**Warnings:** none")
    if summary.get("stopped_reason"):
        lines += ["", f"**Stopped early:** {summary['stopped_reason']}"]
    return "\n".join(lines) + "\n"
