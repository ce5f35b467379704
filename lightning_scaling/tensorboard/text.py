"""The run's markdown summary (TensorBoard's Text dashboard), written at refits and at the end.

TensorBoard shows a text card at a fixed height with the newest entry first, so the summary
puts first what a user must not miss: the final verdict, whether the run is on its trend
(since when and by how much it is behind), where it is heading, and the warnings, most
important first; the law with its formula, the parameters, the forecasts over time and the
compute used come after.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ..core import scheduled  # noqa: F401  (registers the schedule-aware laws and their formulas)
from ..core.laws import LAWS
from .numeric import finite, format_number

#: Warning kinds, most important first (the summary lists them in this order).
WARNING_ORDER = ("stopped", "behind trend", "worse than reference", "divergence", "other")
#: Warnings listed in full (the rest are counted).
MAX_WARNINGS_LISTED = 6


def law_formula(name: str | None) -> str | None:
    """The formula of a law by its name (``CurveFit.law``), None when unknown.

    >>> law_formula("saturating_power")
    'E + A * x**-alpha'
    """
    law = LAWS.get(str(name)) if name else None
    return law.formula if law is not None else None


def warning_kind(text: str) -> str:
    """The kind of a warning line (see ``WARNING_ORDER``).

    >>> warning_kind("step 410: ScalingLawMonitor: behind trend: the smoothed loss ...")
    'behind trend'
    """
    lowered = text.lower()
    for kind in WARNING_ORDER[:-1]:
        if kind in lowered:
            return kind
    return "other"


def ordered_warnings(warnings: Sequence[str]) -> list[str]:
    """Warnings sorted by kind (``WARNING_ORDER``), in order of occurrence within a kind."""
    rank = {kind: i for i, kind in enumerate(WARNING_ORDER)}
    return [w for _, _, w in sorted((rank[warning_kind(w)], i, w) for i, w in enumerate(warnings))]


def _short(warning: str) -> str:
    return re.sub(r"ScalingLawMonitor: ", "", str(warning)).strip()


def warnings_markdown(warnings: Sequence[str]) -> list[str]:
    """Lines of the warnings block: counts by kind, then the most important ones in full."""
    if not warnings:
        return ["**Warnings:** none"]
    counts = Counter(warning_kind(w) for w in warnings)
    by_kind = ", ".join(f"{counts[k]} {k}" for k in WARNING_ORDER if counts[k])
    lines = [f"**Warnings ({len(warnings)}: {by_kind}):**", ""]
    ordered = ordered_warnings(warnings)
    lines += [f"- {_short(w)}" for w in ordered[:MAX_WARNINGS_LISTED]]
    if len(ordered) > MAX_WARNINGS_LISTED:
        rest = Counter(warning_kind(w) for w in ordered[MAX_WARNINGS_LISTED:])
        lines.append("- ... and " + ", ".join(f"{n} more {k}" for k, n in rest.items()))
    return lines


def _param_rows(fit: Mapping[str, Any]) -> list[str]:
    params = fit.get("params") or {}
    if not params:
        return ["No fit was possible."]
    intervals = {}
    for holder in (fit, fit.get("diagnostics") or {}):
        for key in ("param_intervals", "params_interval", "param_ci"):
            table = holder.get(key) if isinstance(holder, Mapping) else None
            if isinstance(table, Mapping):
                intervals.update({k: v for k, v in table.items() if isinstance(v, (list, tuple)) and len(v) == 2})
    sds = (fit.get("diagnostics") or {}).get("posterior_sd") or {}
    header, rule = "| parameter | value |", "| --- | --- |"
    extra = []
    if intervals:
        header, rule = header + " interval |", rule + " --- |"
        extra.append(lambda n: f"[{format_number(intervals[n][0])}, {format_number(intervals[n][1])}]"
                     if n in intervals else "")
    if any(finite(v) for v in sds.values()):
        header, rule = header + " sd |", rule + " --- |"
        extra.append(lambda n: format_number(sds.get(n), digits=2) if finite(sds.get(n)) else "")
    rows = [header, rule]
    for name, value in params.items():
        rows.append(f"| {name} | {format_number(value)} |" + "".join(f" {cell(name)} |" for cell in extra))
    return rows


def _forecast_rows(forecasts: Sequence[Mapping[str, Any]], observed, fractions=(0.1, 0.25, 0.5, 0.75, 0.9)):
    """Table rows of the forecasts made nearest 10%, 25%, 50%, 75% and 90% of the planned run."""
    usable = [f for f in forecasts if finite(f.get("final_loss")) and finite(f.get("target_step"))
              and f["target_step"] > 0 and finite(f.get("step"))]
    rows, seen = [], set()
    for frac in fractions:
        if not usable:
            break
        best = min(usable, key=lambda f: abs(f["step"] / f["target_step"] - frac))
        share = best["step"] / best["target_step"]
        if id(best) in seen or abs(share - frac) > 0.5 * frac:
            continue
        seen.add(id(best))
        lo, hi = best.get("lower"), best.get("upper")
        inside = ""
        if finite(observed) and finite(lo) and finite(hi):
            inside = "inside" if lo <= observed <= hi else ("above" if observed > hi else "below")
        rows.append(f"| step {int(best['step']):,} | {100 * share:.0f}% | {format_number(best['final_loss'])} "
                    f"| [{format_number(lo)}, {format_number(hi)}] | {inside} |")
    return rows


def summary_markdown(summary: Mapping[str, Any], status: Mapping[str, Any] | None = None,
                     loss_unit: str = "") -> str:
    """A markdown report of a run: ``summary`` in the run-summary schema
    (``lightning_scaling.io.summary``: run, fit, forecast, forecasts, warnings, compute, ...),
    ``status`` what the panels derived (``sink.panel_status``): ``step``, ``planned``,
    ``finished``, ``observed`` (the smoothed loss) and ``smoothing_steps``, ``trend_line``,
    ``verdict_line`` (markdown sentences, or None).

    >>> md = summary_markdown({"run": "demo", "steps": 1000, "forecast": {"final_loss": 2.3, "lower": 2.25,
    ...     "upper": 2.36, "level": 0.9, "step": 500, "target_step": 1000, "law": "mmf"}},
    ...     {"finished": True, "observed": 2.31, "verdict_line": "**Final verdict: inside**: ..."})
    >>> print(md.splitlines()[0])
    ### Scaling law: demo, step 1,000 (finished)
    >>> md.splitlines()[2]
    '**Final verdict: inside**: ...'
    """
    status = status or {}
    fit = summary.get("fit") or {}
    forecast = summary.get("forecast") or {}
    loss_name = summary.get("loss_name") or "loss"
    step = status.get("step", summary.get("steps"))
    planned = status.get("planned")
    where = f"step {int(step):,}" if finite(step) else "no step yet"
    if finite(planned):
        where += f" of {int(planned):,}"
    where += " (finished)" if status.get("finished") else " (running)"
    lines = [f"### Scaling law: {summary.get('run') or 'run'}, {where}", ""]
    for key in ("verdict_line", "trend_line"):
        if status.get(key):
            lines += [status[key], ""]
    level = forecast.get("level")
    pct = f"{100 * float(level):.0f}% " if finite(level) else ""
    if finite(forecast.get("final_loss")):
        lines.append(f"**Heading for {format_number(forecast['final_loss'], loss_unit)}** ({pct}interval "
                     f"[{format_number(forecast.get('lower'))}, {format_number(forecast.get('upper'))}]) at step "
                     f"{int(forecast['target_step']):,}: the newest forecast, made at step {int(forecast['step']):,}.")
    elif forecast:
        lines.append(f"**No forecast of the final loss** yet (law {forecast.get('law', 'none')}).")
    else:
        lines.append("**No forecast** made yet.")
    observed = status.get("observed")
    if finite(observed):
        n = status.get("smoothing_steps")
        lines.append(f"Observed {loss_name}, smoothed{f' over the last {n} observations' if n else ''}: "
                     f"{format_number(observed, loss_unit)}.")
    lines += [""] + warnings_markdown(summary.get("warnings") or [])
    if summary.get("stopped_reason"):
        lines += ["", f"**Stopped early:** {summary['stopped_reason']}"]
    lines += ["", "---", ""]
    law = forecast.get("law") or fit.get("law")
    formula = law_formula(law)
    lines.append(f"**Law:** `{law or 'none'}`" + (f": L = {formula}" if formula else "")
                 + f" (x: {summary.get('x_axis') or 'step'}; t: optimizer step)")
    lines += [""] + _param_rows(fit)
    rows = _forecast_rows(summary.get("forecasts") or [], observed if status.get("finished") else None)
    if rows:
        header = "| forecast made at | of the run | final loss | interval | observed final |"
        lines += ["", header, "| --- | --- | --- | --- | --- |", *rows]
    if not loss_unit:
        lines += ["", f"Losses are in the units of `{loss_name}` (nats for a cross-entropy)."]
    compute = (f"**Compute used:** {format_number(summary.get('flops'), 'FLOPs')}, "
               f"{format_number(summary.get('tokens'), 'tokens')}, {summary.get('steps', 'n/a')} optimizer steps; "
               f"model {format_number(summary.get('n_params'), 'parameters (non-embedding)')}")
    lines += ["", compute]
    return "\n".join(lines) + "\n"
