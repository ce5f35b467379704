"""Where the panels go: the series' runs and tags, and the custom-scalars layout.

TensorBoard colours a line by its *run* and overlays the runs that share a tag in one chart.
So each series the panels draw is a run of its own, a sub-directory of the logger's run
directory, and the series shown together share their tags:

- ``scaling_forecast``: the forecast of the final loss (at the planned last step), at the
  step it was made;
- ``scaling_observed``: the observed loss, smoothed (mean over the last 2.5% of the planned
  steps), and how far it sits above the trend while the run is behind it;
- ``scaling_trend``: the trend, a fit made at least 5% of the run earlier evaluated at the
  same steps (the fit the run fell behind, held for as long as it stays behind);
- ``scaling_band_upper``, ``scaling_band_lower``: the ends of the interval around the
  forecast and of the band around the trend (so that Time Series and Scalars show them);
- ``scaling_target``: the target loss, when the monitor has one.

Their tags begin with "Scaling law/" and a number: TensorBoard sorts tag groups by name, with
capitals before lower case, so the group comes before Lightning's ``epoch`` and
``hp_metric`` and is the first thing Time Series and Scalars show. The main run (the
logger's own directory) holds the layout, the fitted parameters, the figures and the text.

The custom-scalars layout ("Custom Scalars" tab) draws the same series with shaded bands:
its Margin charts read value/lower/upper triples (``MARGIN_*`` tags) that each series run
writes (the observed loss as a band of zero width), so one chart shows the observed loss and
the trend band in their runs' colours.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields

from tensorboard.plugins.custom_scalar import layout_pb2

CATEGORY = "Scaling law"
#: Second category: the fitted parameters of the law in use.
CATEGORY_DETAILS = "Scaling law: fitted parameters"
#: The tag TensorBoard's custom-scalars plugin reads its layout from.
LAYOUT_TAG = "custom_scalars__config__"

#: Sub-runs of the logger's run directory, in the order they are created: TensorBoard gives
#: runs their colours in the order it finds them, and neighbours in its palettes differ most.
RUN_FORECAST = "scaling_forecast"
RUN_OBSERVED = "scaling_observed"
RUN_TREND = "scaling_trend"
RUN_UPPER = "scaling_band_upper"
RUN_LOWER = "scaling_band_lower"
RUN_TARGET = "scaling_target"
SERIES_RUNS = (RUN_FORECAST, RUN_OBSERVED, RUN_TREND, RUN_UPPER, RUN_LOWER, RUN_TARGET)

#: Chart titles of the "Scaling law" category (the page check and the tests look for these).
CHART_FORECAST = "Forecast of the final loss (band: interval)"
CHART_TREND = "Observed loss (smoothed) vs trend band"
CHART_BEHIND = "Behind trend: % above the trend"


@dataclass(frozen=True)
class PanelTags:
    """Tags the panels write (see the module docstring for the runs that hold them).

    >>> PanelTags().param("convex_bound", "L0")
    'scaling/param/convex_bound/L0'
    >>> PanelTags().with_prefix("exp-").forecast
    'exp-Scaling law/1 final loss forecast'
    """

    forecast: str = "Scaling law/1 final loss forecast"  #: forecast, band ends, target runs
    loss: str = "Scaling law/2 loss vs trend band"  #: observed, trend, band ends runs
    behind: str = "Scaling law/3 behind trend, % above"  #: observed run
    figure_trend: str = "Scaling law/4 figure: loss and trend"  #: main run, image
    figure_compute: str = "Scaling law/5 figure: loss vs compute"  #: main run, image
    summary: str = "Scaling law/summary"  #: main run, markdown text
    margin_forecast: str = "scaling/margin/forecast"  #: forecast and target runs
    margin_forecast_lower: str = "scaling/margin/forecast_lower"
    margin_forecast_upper: str = "scaling/margin/forecast_upper"
    margin_loss: str = "scaling/margin/loss"  #: observed and trend runs
    margin_loss_lower: str = "scaling/margin/loss_lower"
    margin_loss_upper: str = "scaling/margin/loss_upper"
    param_prefix: str = "scaling/param/"  #: main run: ``<prefix><law>/<name>``

    def param(self, law: str, name: str) -> str:
        """Tag of the fitted parameter ``name`` of ``law``."""
        return f"{self.param_prefix}{clean_name(law)}/{clean_name(name)}"

    def with_prefix(self, prefix: str) -> PanelTags:
        """Every tag with ``prefix`` in front (a logger's ``prefix`` plus its join character)."""
        return PanelTags(**{f.name: prefix + getattr(self, f.name) for f in fields(self)})


def clean_name(name: str) -> str:
    """``name`` with every character a tag should not hold replaced by "_".

    >>> clean_name("A (scale)")
    'A__scale_'
    """
    return re.sub(r"[^-\w.]", "_", str(name))


def build_layout(tags: PanelTags, law: str | None = None, param_names: Iterable[str] = (), *,
                 level: float = 0.9, target_step: int | None = None) -> layout_pb2.Layout:
    """The custom-scalars layout (a ``layout_pb2.Layout``): the "Scaling law" category (the
    forecast, the observed loss against the trend, behind-trend), and one chart per fitted
    parameter of ``law`` (the law in use; the layout is rewritten when it changes).

    Margin charts take exact tags; Multiline charts take regular expressions, anchored here
    (``^...$``) so that each chart shows exactly the tags it names.

    >>> layout = build_layout(PanelTags(), "mmf", ["E", "A"], target_step=800)
    >>> [category.title for category in layout.category]
    ['Scaling law', 'Scaling law: fitted parameters']
    >>> [chart.title for chart in layout.category[1].chart]
    ['mmf: E', 'mmf: A']
    """
    pct = f"{100 * level:.0f}%"
    at = f" at step {int(target_step):,}" if target_step else ""

    def margin(title: str, value: str, lower: str, upper: str) -> layout_pb2.Chart:
        series = [layout_pb2.MarginChartContent.Series(value=value, lower=lower, upper=upper)]
        return layout_pb2.Chart(title=title, margin=layout_pb2.MarginChartContent(series=series))

    def multiline(title: str, *exact_tags: str) -> layout_pb2.Chart:
        regexes = [f"^{re.escape(t)}$" for t in exact_tags]
        return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=regexes))

    # TensorBoard (2.x) draws a category's Multiline charts first, then its Margin charts in
    # reverse order: all three are Margin charts (behind trend: a band of zero width), and
    # this list comes out as forecast, trend, behind.
    glance = [
        margin(CHART_BEHIND, tags.behind, tags.behind, tags.behind),
        margin(f"{CHART_TREND} ({pct})", tags.margin_loss, tags.margin_loss_lower, tags.margin_loss_upper),
        margin(f"{CHART_FORECAST.replace('interval', pct + ' interval')}{at}", tags.margin_forecast,
               tags.margin_forecast_lower, tags.margin_forecast_upper),
    ]
    details = [multiline(f"{law}: {name}", tags.param(law, name)) for name in param_names] if law else []
    categories = [layout_pb2.Category(title=CATEGORY, chart=glance)]
    if details:
        categories.append(layout_pb2.Category(title=CATEGORY_DETAILS, chart=details))
    return layout_pb2.Layout(category=categories)


def layout_tags(layout: layout_pb2.Layout) -> tuple[set[str], list[str]]:
    """(exact tags of the Margin charts, regexes of the Multiline charts) of a layout.

    >>> exact, regexes = layout_tags(build_layout(PanelTags(), "mmf", ["E"]))
    >>> sorted(exact)[:2]
    ['Scaling law/3 behind trend, % above', 'scaling/margin/forecast']
    >>> regexes[-1]
    '^scaling/param/mmf/E$'
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

    >>> layout = build_layout(PanelTags())
    >>> missing_tags(layout, ["scaling/margin/loss", "scaling/margin/loss_lower"])[:2]
    ['Scaling law/3 behind trend, % above', 'scaling/margin/forecast']
    """
    available = set(available)
    exact, regexes = layout_tags(layout)
    missing = sorted(t for t in exact if t not in available)
    for rx in regexes:
        pattern = re.compile(rx)
        if not any(pattern.match(t) for t in available):
            missing.append(rx)
    return missing
