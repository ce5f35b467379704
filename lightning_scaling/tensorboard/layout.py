"""The "Scaling law" custom-scalars layout: its tags, chart titles, and the step-axis units.

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

TensorBoard steps are int64 and its scalars float32, so every series uses the trainer's
global step as its step; FLOPs are values (float32 keeps 7 significant digits, plenty for a
running total), never steps, except in the compute-axis series whose unit is chosen so that
the planned total stays below 1e12 steps. Log-log pictures are drawn as figures (images).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from tensorboard.plugins.custom_scalar import layout_pb2

CATEGORY = "Scaling law"
#: Second category: the charts TensorBoard would otherwise put above the Margin charts
#: (it draws a category's Multiline charts first).
CATEGORY_DETAILS = "Scaling law: fit details and compute"
#: The tag TensorBoard's custom-scalars plugin reads its layout from.
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
    writes; ``observed`` may point at the user's own loss tag instead.

    >>> PanelTags().param("alpha")
    'scaling/param/alpha'
    >>> PanelTags(observed="train_loss").observed
    'train_loss'
    """

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
        """Tag of the fitted parameter ``name``."""
        return self.param_prefix + name

    def with_prefix(self, prefix: str) -> PanelTags:
        """Every tag with ``prefix`` in front (a logger's ``prefix`` plus its join character).

        >>> PanelTags().with_prefix("exp-").flops
        'exp-scaling/flops'
        """
        return PanelTags(**{name: prefix + value for name, value in self.__dict__.items()})


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

    >>> axis_unit(3e17)
    ('MFLOPs', 1000000.0)
    >>> axis_unit(4e9, "tokens")
    ('tokens', 1.0)
    >>> axis_unit(float("nan"))  # unknown total: the base unit
    ('FLOPs', 1.0)
    """
    if not (planned_total > 0 and math.isfinite(planned_total)):
        return base, 1.0
    for size, prefix in _PREFIXES:
        if planned_total / size < MAX_AXIS_STEPS:
            return prefix + base, size
    return _PREFIXES[-1][1] + base, _PREFIXES[-1][0]


def compute_axis_tag(unit: str) -> str:
    """Tag of the loss series whose step is cumulative compute in ``unit`` (e.g. GFLOPs).

    >>> compute_axis_tag("GFLOPs")
    'scaling/loss_vs_compute_step_in_GFLOPs'
    """
    return f"scaling/loss_vs_compute_step_in_{unit}"


# --------------------------------------------------------------------------------------
# Layout


def build_layout(tags: PanelTags, param_names: Iterable[str] = (), compute_tag: str | None = None, *,
                 flops: bool = True, tokens: bool = True) -> layout_pb2.Layout:
    """The custom-scalars layout (a ``layout_pb2.Layout``) of the "Scaling law" category.

    ``flops``/``tokens``: include the cumulative-compute charts (leave out what the run
    does not count, so that every chart has data).

    Margin charts take exact tags; Multiline charts take regular expressions, anchored here
    (``^...$``) so that each chart shows exactly the tags it names.

    >>> layout = build_layout(PanelTags(), ["E"], tokens=False)
    >>> [category.title for category in layout.category]
    ['Scaling law', 'Scaling law: fit details and compute']
    >>> [chart.title for chart in layout.category[1].chart]
    ['Fitted parameter E', 'Residual (observed - trend) in noise units', 'Cumulative compute (FLOPs)']
    """

    def margin(title: str, value: str, lower: str, upper: str) -> layout_pb2.Chart:
        series = [
            layout_pb2.MarginChartContent.Series(value=value, lower=lower, upper=upper),
            layout_pb2.MarginChartContent.Series(value=tags.observed, lower=tags.observed,
                                                 upper=tags.observed),
        ]
        return layout_pb2.Chart(title=title, margin=layout_pb2.MarginChartContent(series=series))

    def multiline(title: str, *exact_tags: str) -> layout_pb2.Chart:
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
    if flops:
        details.append(multiline(CHART_FLOPS, tags.flops))
    if tokens:
        details.append(multiline(CHART_TOKENS, tags.tokens))
    return layout_pb2.Layout(category=[
        layout_pb2.Category(title=CATEGORY, chart=glance),
        layout_pb2.Category(title=CATEGORY_DETAILS, chart=details),
    ])


def layout_tags(layout: layout_pb2.Layout) -> tuple[set[str], list[str]]:
    """(exact tags of the Margin charts, regexes of the Multiline charts) of a layout.

    >>> exact, regexes = layout_tags(build_layout(PanelTags(), ["E"]))
    >>> sorted(exact)[:3]
    ['scaling/forecast_final_loss', 'scaling/forecast_lower', 'scaling/forecast_upper']
    >>> regexes[0]
    '^scaling/param/E$'
    """
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


def missing_tags(layout: layout_pb2.Layout, available: Iterable[str]) -> list[str]:
    """Tags (and Multiline regexes) of ``layout`` that no tag in ``available`` satisfies.

    >>> layout = build_layout(PanelTags(), [], flops=False, tokens=False)
    >>> missing_tags(layout, ["scaling/observed_loss", "scaling/residual_sigma"])[:2]
    ['scaling/forecast_final_loss', 'scaling/forecast_lower']
    """
    available = set(available)
    exact, regexes = layout_tags(layout)
    missing = sorted(t for t in exact if t not in available)
    for rx in regexes:
        pattern = re.compile(rx)
        if not any(pattern.match(t) for t in available):
            missing.append(rx)
    return missing
