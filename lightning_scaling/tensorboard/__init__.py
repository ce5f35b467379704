"""TensorBoard panels: the custom-scalars layout, per-step series, figures and the run's text.

``TensorBoardSink`` is added by ``ScalingLawMonitor`` itself when the trainer has a
``TensorBoardLogger``; pass your own to configure it.

Modules (imports point down this list, or along a line; none back up):

- ``sink``: ``TensorBoardSink`` (the monitor's hooks) and ``attach_tensorboard_sink``;
- ``series``, ``drawing``, ``final``: what the sink delegates to (the scalars and layout;
  the figures, their budget and helper process; the final figures' event file);
- ``figure_data``, ``band``, ``view``: the figures as data, the trend band, and what the
  panels read of the monitor (``MonitorView``);
- ``helper``: the figure helper process and its pipe protocol; ``figures``: matplotlib
  figures (optional); both load without the package;
- ``writing``, ``layout``, ``text``, ``timing``: event-file writing, the layout and its
  tags, numbers and the markdown summary, time accounting.
"""

from .figure_data import figure_jobs, figures_for_monitor
from .final import FINAL_FIGURES_SUFFIX
from .layout import (
    CATEGORY,
    CATEGORY_DETAILS,
    CHART_FLOPS,
    CHART_FORECAST,
    CHART_RESIDUAL,
    CHART_TOKENS,
    CHART_TREND,
    LAYOUT_TAG,
    MAX_AXIS_STEPS,
    PanelTags,
    axis_unit,
    build_layout,
    compute_axis_tag,
    layout_tags,
    missing_tags,
)
from .sink import TensorBoardSink, attach_tensorboard_sink, find_tensorboard_logger
from .text import format_number, summary_markdown
from .view import MonitorView
from .writing import write_image, write_layout, write_png, write_scalars, write_text

__all__ = [
    "CATEGORY", "CATEGORY_DETAILS", "CHART_FLOPS", "CHART_FORECAST", "CHART_RESIDUAL", "CHART_TOKENS", "CHART_TREND",
    "FINAL_FIGURES_SUFFIX", "LAYOUT_TAG", "MAX_AXIS_STEPS", "MonitorView", "PanelTags", "TensorBoardSink",
    "attach_tensorboard_sink", "axis_unit", "build_layout", "compute_axis_tag", "figure_jobs", "figures_for_monitor",
    "find_tensorboard_logger", "format_number", "layout_tags", "missing_tags", "summary_markdown", "write_image",
    "write_layout", "write_png", "write_scalars", "write_text",
]
