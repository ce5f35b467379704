"""Trend panels in TensorBoard: the custom-scalars layout, scalar/figure/text writers.

What a user sees under Custom Scalars -> "Scaling law":

- "Forecast final loss": the forecast of the loss at the planned end with its interval (a
  Margin chart), drawn against the observed loss: the band narrows as the run goes on, and
  the observed loss should end inside it.
- "Trend at the current step": the fitted law evaluated at the current step with its band,
  against the observed loss: the run is on trend while the observed loss stays in the band.
- one Multiline chart per fitted parameter (E, A, alpha, ...): they settle as the fit firms up.
- "Residual (noise units)": (observed - trend) / noise scale; beyond about +-2 for long is
  a run leaving its own trend.
- cumulative compute (FLOPs, tokens) as scalars, and the loss against compute on a step axis
  whose unit (e.g. GFLOPs) keeps the count inside TensorBoard's int64 steps; the unit is in
  the tag's name.

TensorBoard steps are int64 and its scalars float32, so every series here uses the trainer's
global step as its step; FLOPs are values (float32 keeps 7 significant digits, plenty for a
running total), never steps, except in the compute-axis series whose unit is chosen so that
the planned total stays below 1e12 steps. Log-log pictures are drawn as figures (images).

The writer functions take any SummaryWriter-like object (``torch.utils.tensorboard``'s,
tensorboardX's: the ``experiment`` of Lightning's TensorBoardLogger). Nothing here imports
torch or Lightning.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

CATEGORY = "Scaling law"
#: Second category: the charts TensorBoard would otherwise put above the Margin charts
#: (it draws a category's Multiline charts first).
CATEGORY_DETAILS = "Scaling law: fit details and compute"
LAYOUT_TAG = "custom_scalars__config__"

#: Chart titles of the layout, in order (the page check and the tests look for these).
CHART_FORECAST = "Forecast final loss (band) vs observed loss"
CHART_TREND = "Trend at the current step (band) vs observed loss"
CHART_RESIDUAL = "Residual (observed - trend) in noise units"
CHART_FLOPS = "Cumulative compute (FLOPs)"
CHART_TOKENS = "Cumulative tokens"


@dataclass(frozen=True)
class PanelTags:
    """Scalar tags the panels read. Defaults are the tags the monitor's TensorBoard sink
    writes; ``observed`` may point at the user's own loss tag instead."""

    observed: str = "scaling/observed_loss"
    forecast: str = "scaling/forecast_final_loss"
    forecast_lower: str = "scaling/forecast_lower"
    forecast_upper: str = "scaling/forecast_upper"
    trend: str = "scaling/trend"
    trend_lower: str = "scaling/trend_lower"
    trend_upper: str = "scaling/trend_upper"
    param_prefix: str = "scaling/param/"
    residual: str = "scaling/residual_sigma"
    flops: str = "scaling/flops"
    tokens: str = "scaling/tokens"

    def param(self, name: str) -> str:
        return self.param_prefix + name


# --------------------------------------------------------------------------------------
# Units for the compute-axis series

_PREFIXES = ((1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T"), (1e15, "P"),
             (1e18, "E"), (1e21, "Z"), (1e24, "Y"))
#: The compute-axis series keeps its planned total below this many steps.
MAX_AXIS_STEPS = 1e12


def axis_unit(planned_total: float, base: str = "FLOPs") -> tuple[str, float]:
    """(unit name, size) of a decimal unit that keeps ``planned_total`` below 1e12 steps.

    The smallest SI multiple is taken, so steps stay as fine as possible: 3e17 FLOPs ->
    ("MFLOPs", 1e6), i.e. 3e11 steps. ``base`` is "FLOPs" or "tokens".
    """
    if not (planned_total > 0 and math.isfinite(planned_total)):
        return base, 1.0
    for size, prefix in _PREFIXES:
        if planned_total / size < MAX_AXIS_STEPS:
            return prefix + base, size
    return _PREFIXES[-1][1] + base, _PREFIXES[-1][0]


def compute_axis_tag(unit: str) -> str:
    """Tag of the loss series whose step is cumulative compute in ``unit`` (e.g. GFLOPs)."""
    return f"scaling/loss_vs_compute_step_in_{unit}"


# --------------------------------------------------------------------------------------
# Layout


def build_layout(tags: PanelTags, param_names: Iterable[str] = (), compute_tag: str | None = None):
    """The custom-scalars layout (a ``layout_pb2.Layout``) of the "Scaling law" category.

    Margin charts take exact tags; Multiline charts take regular expressions, anchored here
    (``^...$``) so that each chart shows exactly the tags it names.
    """
    from tensorboard.plugins.custom_scalar import layout_pb2

    def margin(title: str, value: str, lower: str, upper: str):
        series = [
            layout_pb2.MarginChartContent.Series(value=value, lower=lower, upper=upper),
            layout_pb2.MarginChartContent.Series(value=tags.observed, lower=tags.observed,
                                                 upper=tags.observed),
        ]
        return layout_pb2.Chart(title=title, margin=layout_pb2.MarginChartContent(series=series))

    def multiline(title: str, *exact_tags: str):
        regexes = [f"^{re.escape(t)}$" for t in exact_tags]
        return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=regexes))

    # TensorBoard (2.x) draws a category's Margin charts in reverse order: the forecast,
    # listed last, comes out first.
    glance = [
        margin(CHART_TREND, tags.trend, tags.trend_lower, tags.trend_upper),
        margin(CHART_FORECAST, tags.forecast, tags.forecast_lower, tags.forecast_upper),
    ]
    details = [multiline(f"Fitted parameter {name}", tags.param(name)) for name in param_names]
    details.append(multiline(CHART_RESIDUAL, tags.residual))
    if compute_tag:
        unit = compute_tag.rsplit("_in_", 1)[-1]
        details.append(multiline(f"Loss vs compute (step axis = {unit})", compute_tag))
    details.append(multiline(CHART_FLOPS, tags.flops))
    details.append(multiline(CHART_TOKENS, tags.tokens))
    return layout_pb2.Layout(category=[
        layout_pb2.Category(title=CATEGORY, chart=glance),
        layout_pb2.Category(title=CATEGORY_DETAILS, chart=details),
    ])


def layout_tags(layout) -> tuple[set[str], list[str]]:
    """(exact tags of the Margin charts, regexes of the Multiline charts) of a layout."""
    exact: set[str] = set()
    regexes: list[str] = []
    for category in layout.category:
        for chart in category.chart:
            if chart.WhichOneof("content") == "margin":
                for s in chart.margin.series:
                    exact.update((s.value, s.lower, s.upper))
            else:
                regexes.extend(chart.multiline.tag)
    return exact, regexes


def missing_tags(layout, available: Iterable[str]) -> list[str]:
    """Tags (and Multiline regexes) of ``layout`` that no tag in ``available`` satisfies."""
    available = set(available)
    exact, regexes = layout_tags(layout)
    missing = sorted(t for t in exact if t not in available)
    for rx in regexes:
        pattern = re.compile(rx)
        if not any(pattern.match(t) for t in available):
            missing.append(rx)
    return missing


def _layout_summary(layout):
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto

    tensor = TensorProto(dtype="DT_STRING", string_val=[layout.SerializeToString()],
                         tensor_shape=TensorShapeProto())
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="custom_scalars"))
    return Summary(value=[Summary.Value(tag=LAYOUT_TAG, tensor=tensor, metadata=metadata)])


def write_layout(writer, layout, step: int = 0) -> None:
    """Write ``layout`` as the run's custom-scalars layout (TensorBoard shows the latest one).

    torch's SummaryWriter takes TensorBoard's protobuf classes directly; tensorboardX has
    its own copies of the same messages, so the summary is re-parsed into them.
    """
    summary = _layout_summary(layout)
    file_writer = writer._get_file_writer()
    if type(writer).__module__.startswith("tensorboardX"):
        from tensorboardX.proto.summary_pb2 import Summary as XSummary  # type: ignore

        summary = XSummary.FromString(summary.SerializeToString())
    file_writer.add_summary(summary, int(step))


# --------------------------------------------------------------------------------------
# Scalars, images, text


def write_scalars(writer, step: int, values: Mapping[str, Any]) -> int:
    """add_scalar for every finite value (None/NaN/inf are skipped); returns how many were written."""
    written = 0
    for tag, value in values.items():
        if value is None:
            continue
        value = float(value)
        if math.isfinite(value):
            writer.add_scalar(tag, value, int(step))
            written += 1
    return written


def write_image(writer, tag: str, rgb: np.ndarray, step: int) -> None:
    """Write an (H, W, 3) uint8 image (a rendered figure)."""
    writer.add_image(tag, rgb, int(step), dataformats="HWC")


def write_text(writer, tag: str, markdown: str, step: int) -> None:
    """Write markdown text (TensorBoard's Text dashboard renders it)."""
    writer.add_text(tag, markdown, int(step))


# --------------------------------------------------------------------------------------
# The text summary


def format_number(value, unit: str = "", digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits and its unit; "n/a" for None/NaN."""
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


def summary_markdown(summary: Mapping[str, Any], loss_unit: str = "") -> str:
    """A markdown report of a run summary (schema in docs/dev/TEAM.md): law, parameters with
    intervals, forecast vs observed final loss, compute used, warnings raised."""
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
