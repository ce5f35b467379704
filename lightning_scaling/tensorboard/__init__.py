"""TensorBoard panels: the custom-scalars layout, per-step series, figures and the run's text.

``TensorBoardSink`` is added by ``ScalingLawMonitor`` itself when the trainer has a
``TensorBoardLogger``; pass your own to configure it.
"""

from .sink import (  # noqa: F401
    CATEGORY,
    CATEGORY_DETAILS,
    CHART_FLOPS,
    CHART_FORECAST,
    CHART_RESIDUAL,
    CHART_TOKENS,
    CHART_TREND,
    FINAL_FIGURES_SUFFIX,
    LAYOUT_TAG,
    MAX_AXIS_STEPS,
    PanelTags,
    TensorBoardSink,
    _to_plot_axis,
    _write_images_file,
    attach_tensorboard_sink,
    axis_unit,
    build_layout,
    compute_axis_tag,
    figure_jobs,
    figures_for_monitor,
    layout_tags,
    missing_tags,
    summary_markdown,
    write_image,
    write_layout,
    write_png,
    write_scalars,
    write_text,
)
