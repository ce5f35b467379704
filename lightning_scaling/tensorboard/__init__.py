"""TensorBoard panels: the "Scaling law" series, their layout, figures and the run's text.

``TensorBoardSink`` is added by ``ScalingLawMonitor`` itself when the trainer has a
``TensorBoardLogger``; pass your own to configure it. Where each series goes (a run of its
own per series, so that TensorBoard tells them apart by colour) is in ``layout``.

Modules (imports point down this list, or along a line; none back up):

- ``sink``: ``TensorBoardSink`` (the monitor's hooks) and ``attach_tensorboard_sink``;
- ``series``, ``drawing``, ``final``: what the sink delegates to (the scalars and layout;
  the figures, their budget and helper process; the final figures' event file);
- ``figure_data``, ``status``: the figures as data; the run's status in words;
- ``state``, ``verdict``, ``band``, ``view``: what the panels derive (smoothed loss, trend,
  episodes), the final verdict, a fit's band, and what they read of the monitor
  (``MonitorView``);
- ``helper``: the figure helper process and its pipe protocol; ``figures``: matplotlib
  figures (optional); both load without the package;
- ``subruns``, ``writing``, ``layout``, ``text``, ``numeric``, ``timing``: the series' runs,
  event-file writing, runs/tags/layout, the markdown summary, numbers, time accounting.
"""

from .figure_data import figure_jobs, figures_for_monitor
from .final import FINAL_FIGURES_SUFFIX
from .layout import (
    CATEGORY,
    CATEGORY_DETAILS,
    CHART_BEHIND,
    CHART_FORECAST,
    CHART_TREND,
    LAYOUT_TAG,
    RUN_FORECAST,
    RUN_LOWER,
    RUN_OBSERVED,
    RUN_TARGET,
    RUN_TREND,
    RUN_UPPER,
    SERIES_RUNS,
    PanelTags,
    build_layout,
    layout_tags,
    missing_tags,
)
from .numeric import format_number
from .sink import TensorBoardSink, attach_tensorboard_sink, find_tensorboard_logger
from .text import summary_markdown
from .view import MonitorView
from .writing import write_image, write_layout, write_png, write_scalars, write_text

__all__ = [
    "CATEGORY", "CATEGORY_DETAILS", "CHART_BEHIND", "CHART_FORECAST", "CHART_TREND", "FINAL_FIGURES_SUFFIX",
    "LAYOUT_TAG", "RUN_FORECAST", "RUN_LOWER", "RUN_OBSERVED", "RUN_TARGET", "RUN_TREND", "RUN_UPPER", "SERIES_RUNS",
    "MonitorView", "PanelTags", "TensorBoardSink", "attach_tensorboard_sink", "build_layout", "figure_jobs",
    "figures_for_monitor", "find_tensorboard_logger", "format_number", "layout_tags", "missing_tags",
    "summary_markdown", "write_image", "write_layout", "write_png", "write_scalars", "write_text",
]
