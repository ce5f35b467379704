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

import atexit
import json
import math
import os
import re
import threading
import time
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


def build_layout(tags: PanelTags, param_names: Iterable[str] = (), compute_tag: str | None = None, *,
                 flops: bool = True, tokens: bool = True):
    """The custom-scalars layout (a ``layout_pb2.Layout``) of the "Scaling law" category.

    ``flops``/``tokens``: include the cumulative-compute charts (leave out what the run
    does not count, so that every chart has data).

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
    if flops:
        details.append(multiline(CHART_FLOPS, tags.flops))
    if tokens:
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


def _file_writer_and_summary_class(writer):
    """(file writer, Summary class) of a torch or tensorboardX SummaryWriter, else (None, None)."""
    get = getattr(writer, "_get_file_writer", None)
    if get is None:
        return None, None
    if type(writer).__module__.startswith("tensorboardX"):
        from tensorboardX.proto.summary_pb2 import Summary  # type: ignore
    else:
        from tensorboard.compat.proto.summary_pb2 import Summary
    return get(), Summary


def write_scalars(writer, step: int, values: Mapping[str, Any]) -> int:
    """Write every finite value (None/NaN/inf are skipped) at ``step``; returns how many.

    The values go out as one event with several summary values (what TensorBoard's own
    writers do for one ``add_scalars`` call): one protobuf and one queue hand-off instead
    of one per tag. Writers without a file writer get one ``add_scalar`` per tag.
    """
    clean = {}
    for tag, value in values.items():
        if value is None:
            continue
        value = float(value)
        if math.isfinite(value):
            clean[tag] = value
    if not clean:
        return 0
    file_writer, summary_cls = _file_writer_and_summary_class(writer)
    if file_writer is None:
        for tag, value in clean.items():
            writer.add_scalar(tag, value, int(step))
    else:
        summary = summary_cls(value=[summary_cls.Value(tag=t, simple_value=v) for t, v in clean.items()])
        file_writer.add_summary(summary, int(step))
    return len(clean)


def write_image(writer, tag: str, rgb: np.ndarray, step: int) -> None:
    """Write an (H, W, 3) uint8 image (a rendered figure)."""
    writer.add_image(tag, rgb, int(step), dataformats="HWC")


def write_png(writer, tag: str, png: bytes, height: int, width: int, step: int) -> None:
    """Write an already encoded (``height`` x ``width``) RGB PNG as an image summary: no
    decoding and re-encoding on the calling thread (``add_image`` would do both)."""
    file_writer, summary_cls = _file_writer_and_summary_class(writer)
    if file_writer is None:
        import io

        from PIL import Image

        write_image(writer, tag, np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), step)
        return
    image = summary_cls.Image(height=int(height), width=int(width), colorspace=3, encoded_image_string=png)
    file_writer.add_summary(summary_cls(value=[summary_cls.Value(tag=tag, image=image)]), int(step))


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


def _early_forecasts(forecasts, observed, fractions=(0.1, 0.25, 0.5)) -> list[str]:
    """Table rows of the forecasts made nearest 10%, 25% and 50% of the planned run."""
    rows = []
    usable = [f for f in forecasts if isinstance(f, Mapping) and _finite(f.get("final_loss"))
              and _finite(f.get("target_step")) and f.get("target_step") > 0 and _finite(f.get("step"))]
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
        if _finite(observed) and _finite(lo) and _finite(hi):
            inside = "yes" if lo <= observed <= hi else "no"
        rows.append(f"| step {int(best['step'])} | {100 * share:.0f}% | {format_number(best['final_loss'])} "
                    f"| [{format_number(lo)}, {format_number(hi)}] | {inside} |")
    return rows


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


# --------------------------------------------------------------------------------------
# The monitor's sink


def is_tensorboard_logger(logger) -> bool:
    """True for Lightning's TensorBoardLogger (pytorch_lightning, lightning.pytorch or
    lightning_fabric flavour, subclasses included), recognised without importing any."""
    return any(cls.__name__ == "TensorBoardLogger" for cls in type(logger).__mro__) and hasattr(logger, "experiment")


def find_tensorboard_logger(trainer):
    """The trainer's first TensorBoardLogger, or None."""
    for logger in getattr(trainer, "loggers", None) or []:
        if is_tensorboard_logger(logger):
            return logger
    return None


def attach_tensorboard_sink(monitor, trainer, **options) -> "TensorBoardSink | None":
    """Add a :class:`TensorBoardSink` to ``monitor`` when the trainer logs to TensorBoard.

    Does nothing (returns None) without a TensorBoardLogger, when the monitor already has a
    TensorBoardSink the user configured or one added for this same logger by an earlier
    ``fit``, or when the monitor's ``tensorboard`` attribute is False. A sink added for
    another logger (the monitor reused with a new Trainer) is replaced.
    """
    if getattr(monitor, "tensorboard", True) is False:
        return None
    logger = find_tensorboard_logger(trainer)
    if logger is None:
        return None
    sinks = getattr(monitor, "sinks", [])
    for existing in [s for s in sinks if isinstance(s, TensorBoardSink)]:
        if not existing.auto or existing.logger is logger:
            return None
        sinks.remove(existing)
    sink = TensorBoardSink(logger, **options)
    sink.auto = True
    if hasattr(monitor, "add_sink"):
        monitor.add_sink(sink)
    else:
        sinks.append(sink)
    return sink


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


def _clean_name(name: str) -> str:
    return re.sub(r"[^-/\w.]", "_", str(name))


class TensorBoardSink:
    """Draws the monitor's forecasts in TensorBoard (the "Scaling law" panels).

    ``ScalingLawMonitor`` adds one by itself when the trainer has a TensorBoardLogger; build
    one yourself to change its options (``ScalingLawMonitor(sinks=[TensorBoardSink(logger,
    figure_every=5)])``). Called on rank zero only. It writes, at the trainer's global step:

    - every ``every`` optimizer steps (default: the trainer's ``log_every_n_steps``): the
      observed loss the monitor saw, the trend of the newest fit at this step with its band,
      the residual in noise units, cumulative FLOPs and tokens, and the loss on a compute step
      axis;
    - at every refit: the forecast of the final loss with its interval, the fitted parameters;
      the custom-scalars layout once, at the first refit that produced a fit;
    - figures (matplotlib, optional) every ``figure_every`` refits while their rendering has
      cost less than ``max_figure_overhead`` of the training time so far, and at the end (the
      final fit: a user opening TensorBoard after the run sees it);
    - at the end: a markdown summary (text dashboard).

    Figures are drawn in a helper process (:class:`~lightning_scaling.plots_tb.FigureProcess`)
    started at ``setup``: the training process does not draw, nor import matplotlib for it.
    The training thread gathers the figures' data (numpy, a few milliseconds) and writes the
    finished PNGs at a later hook. The final figures (the curve to the last step, the final
    forecast and the forecast history: their data is complete at ``on_train_end``) are sent
    to the helper at ``on_train_end`` and the training thread does not wait for them: a
    background thread writes them, at the final step, into an event file of their own in the
    run's directory (name ending in ``FINAL_FIGURES_SUFFIX``) about 0.1-0.2 s after
    ``trainer.fit`` returns (the helper's drawing: about 0.1 CPU s for the two), then lets the
    helper go. ``wait_for_figures()`` waits for that; an interpreter that exits first waits
    for it too (an ``atexit`` hook, bounded by ``figure_timeout``). A process killed outright
    (SIGKILL, ``os._exit``) loses them, as it loses a SummaryWriter's unflushed queue. With a
    writer that has no log directory (not a torch or tensorboardX SummaryWriter), the end of
    training waits for the final figures instead, up to ``figure_timeout`` seconds. Where no
    process can be started, figures are drawn on the training thread. The per-step series are
    buffered and written in batches (see ``MAX_BUFFERED``).

    Args:
        logger: a TensorBoardLogger (its ``experiment`` is the SummaryWriter written to).
        writer: a SummaryWriter to use instead of ``logger.experiment``.
        every: optimizer steps between two writes of the per-step series.
        figures: draw figures at all.
        figure_every: refits between two figure updates.
        max_figure_overhead: share of training time the periodic figures may take (0.002),
            counting the helper's drawing CPU seconds and the training thread's own.
        figure_process: draw figures in a helper process (True) or on the training thread.
        figure_timeout: seconds the final figures are waited for at most (after training, by
            the background thread; by an exiting interpreter, what is left of them).
    """

    def __init__(self, logger=None, *, writer=None, every: int | None = None, figures: bool = True,
                 figure_every: int = 10, max_figure_overhead: float = 0.002, figure_process: bool = True,
                 figure_timeout: float = 30.0):
        if logger is None and writer is None:
            raise ValueError("TensorBoardSink needs a TensorBoardLogger or a SummaryWriter")
        self.logger = logger
        self._writer = writer
        self.auto = False  # True when attach_tensorboard_sink added it
        self.every = every
        self.figures = bool(figures)
        self.figure_every = max(1, int(figure_every))
        self.max_figure_overhead = float(max_figure_overhead)
        self.tags: PanelTags | None = None
        self.layout = None
        self.compute_tag: str | None = None
        self._compute_unit: tuple[str, float, str] | None = None  # (unit, size, "flops"|"tokens")
        self._next_write = 0
        self._refits = 0
        self._t0: float | None = None
        #: seconds spent in this sink by kind of work ("figures": the periodic ones, "end": the
        #: final figures and text): wall clock, and CPU time of the calling thread (the training
        #: loop's; unlike wall time, blind to the load of other processes)
        self.timings = {"observations": 0.0, "refits": 0.0, "figures": 0.0, "end": 0.0}
        self.cpu_timings = dict(self.timings)
        self.figures_written = 0
        self._matplotlib: bool | None = None
        self._seen = {"flops": False, "tokens": False}
        self._last_figure_seconds = 0.0
        self.figure_process = bool(figure_process)
        self.figure_timeout = float(figure_timeout)
        self._helper = None  # a plots_tb.FigureProcess while one runs
        self._job_steps: dict[int, tuple[int, bool]] = {}  # helper job id -> (global step, final)
        #: CPU seconds the figure helper process used (imports, warm-up, drawings), as it reported
        self.helper_cpu_seconds = 0.0
        #: CPU seconds of the helper's periodic drawings (what the figure budget counts)
        self._helper_figure_cpu = 0.0
        #: process id of the helper that drew the figures (None: drawn in this process)
        self.figure_pid: int | None = None
        self._band = None  # the newest fit's trend and band, tabulated (see _tabulate_band)
        self._due: list[tuple[Mapping[str, Any], Any]] = []  # (observation, newest forecast) to write
        self._last_flush = time.monotonic()
        self._last_refit_step: int | None = None
        self._final: _FinalFigures | None = None  # the final figures being finished after training

    #: The per-step series are buffered and written in batches: at each refit (when the
    #: monitor's refit thread is idle, so that writing does not wait on the GIL behind it), at
    #: the end, and when this many are waiting or this many seconds have passed. What a user
    #: sees is not delayed by it: the SummaryWriter itself reaches the disk every 120 s.
    MAX_BUFFERED = 64
    MAX_BUFFER_SECONDS = 30.0

    # -- plumbing --------------------------------------------------------------------------
    def _account(self, kind: str, start: tuple[float, float]) -> float:
        wall, cpu = _clock()
        self.timings[kind] += wall - start[0]
        self.cpu_timings[kind] += cpu - start[1]
        return wall - start[0]

    @property
    def seconds(self) -> float:
        """Wall seconds this sink has spent in all (scalars, layout, figures, text)."""
        return sum(self.timings.values())

    @property
    def writer(self):
        return self._writer if self._writer is not None else self.logger.experiment

    def _prefix(self) -> str:
        prefix = getattr(self.logger, "_prefix", "") or ""
        join = getattr(self.logger, "LOGGER_JOIN_CHAR", "-")
        return f"{prefix}{join}" if prefix else ""

    def _ensure_setup(self, trainer) -> None:
        if self.tags is not None:
            return
        p = self._prefix()
        self.tags = PanelTags(**{name: p + value for name, value in PanelTags().__dict__.items()})
        if self.every is None:
            self.every = max(1, int(getattr(trainer, "log_every_n_steps", 50) or 50))
        self._t0 = time.perf_counter()
        self._wall_t0 = time.time() - 1.0  # file times can be coarse

    # -- hooks -------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, monitor) -> None:
        self._ensure_setup(trainer)
        self._wall_t0 = time.time() - 1.0  # this fit's start (file times can be coarse)
        if self.figures and self.figure_process and self._check_matplotlib():
            self._start_helper()

    def on_observation(self, trainer, pl_module, monitor, observations) -> None:
        if self.tags is not None and (not observations or int(observations[-1]["step"]) < self._next_write):
            return  # nothing due: most calls end here, before any clock is read
        t = _clock()
        self._ensure_setup(trainer)
        forecast = getattr(monitor, "forecast", None)
        for obs in observations:
            step = int(obs["step"])
            if step < self._next_write:
                continue
            self._next_write = (step // self.every + 1) * self.every
            self._due.append((obs, forecast))
        now = time.monotonic()
        if len(self._due) >= self.MAX_BUFFERED or now - self._last_flush >= self.MAX_BUFFER_SECONDS:
            self._write_due(monitor)
        self._account("observations", t)

    def on_refit(self, trainer, pl_module, monitor, forecast) -> None:
        t = _clock()
        self._ensure_setup(trainer)
        self._write_due(monitor)  # the refit thread is idle now: the GIL is free for a batch
        step = int(getattr(trainer, "global_step", forecast.step))
        fit = getattr(forecast, "fit", None)
        ok = bool(getattr(fit, "ok", False))
        if self.layout is None and ok:
            self._write_layout(list(fit.params))
        tags = self.tags
        values = {tags.forecast: forecast.final_loss, tags.forecast_lower: forecast.lower,
                  tags.forecast_upper: forecast.upper}
        if ok:
            values.update({tags.param(_clean_name(k)): v for k, v in fit.params.items()})
            # Tabulate the band now, while the monitor's refit thread is idle (done, the next
            # one not yet submitted): evaluated later, in an observation write, the fit's numpy
            # calls would wait on the GIL behind a running refit. Only when a write is due
            # before the next refit is expected, so that refits faster than the writes do not
            # each pay for a table nobody reads.
            gap = step - self._last_refit_step if self._last_refit_step is not None else 0
            if gap <= 0 or self._next_write - step <= gap:
                self._band = self._tabulate_band(forecast)
            self._last_refit_step = step
        write_scalars(self.writer, step, values)
        self._refits += 1
        self._account("refits", t)
        if self._helper is not None:
            self._write_helper_images(self._helper.results())
        if self.figures and self._refits % self.figure_every == 0 and self._t0 is not None:
            elapsed = time.perf_counter() - self._t0
            # the next update is expected to cost what the last did (the first: in this process,
            # the matplotlib import too)
            if self._helper is not None:
                expected = self._helper.render_cpu_seconds or 0.2
                spent = self.timings["figures"] + self._helper_figure_cpu
            else:
                expected = self._last_figure_seconds if self._last_figure_seconds else 0.5
                spent = self.timings["figures"]
            if spent + expected <= self.max_figure_overhead * elapsed:
                self._write_figures(trainer, monitor, final=False)

    def on_train_end(self, trainer, pl_module, monitor) -> None:
        self._ensure_setup(trainer)
        t = _clock()
        self._write_due(monitor)
        self._account("observations", t)
        self._final = None
        try:
            if self.figures:
                # with a helper: the job is sent now and drawn while the rest is written; the
                # figures are written by a _FinalFigures thread, without holding up the training
                self._write_figures(trainer, monitor, final=True)
            self._write_summary_text(trainer, monitor)
            if self._helper is not None:
                self._finish_helper()  # a writer without a log directory: the figures go in it
            t = _clock()
            self.writer.flush()
            self._account("end", t)
        finally:
            if self._final is not None:
                self._final.start()  # after the flush: its event file comes after the last record here

    def _write_summary_text(self, trainer, monitor) -> None:
        t = _clock()
        summary = None
        path = getattr(monitor, "summary_path", None)  # the callback has just written it
        if path:
            try:
                if os.path.getmtime(path) < self._wall_t0:  # from an earlier fit
                    raise OSError("stale")
                with open(path, encoding="utf-8") as fh:
                    summary = json.load(fh)
            except (OSError, ValueError):
                summary = None
        if summary is None:
            summary = monitor.summary(trainer)
        write_text(self.writer, "scaling/summary", summary_markdown(summary), int(trainer.global_step))
        self._account("end", t)

    def on_exception(self, trainer, pl_module, monitor, exception) -> None:
        """Training failed: write what is buffered and end the figure helper (no final figures)."""
        self.close()

    def close(self) -> None:
        """Write the buffered series and end the figure helper; the sink can be set up again."""
        if self.tags is not None and self._due:
            self._write_due(None)
        self._drop_helper()

    # -- writers -------------------------------------------------------------------------------
    def _choose_compute_unit(self, monitor, obs) -> None:
        step = float(obs["step"])
        planned = getattr(monitor, "planned_steps", None)
        horizon = float(planned) if _finite(planned) and planned > step else step * 1000.0
        for key, base in (("flops", "FLOPs"), ("tokens", "tokens")):
            value = obs.get(key)
            if _finite(value) and value > 0 and step > 0:
                unit, size = axis_unit(value / step * horizon, base)
                self._compute_unit = (unit, size, key)
                self.compute_tag = self._prefix() + compute_axis_tag(unit)
                return

    def _write_due(self, monitor) -> None:
        """Write the buffered per-step series, oldest first, each with the forecast that was
        the newest when it was observed."""
        due, self._due = self._due, []
        self._last_flush = time.monotonic()
        for obs, forecast in due:
            self._write_observation(monitor, obs, forecast)

    def _write_observation(self, monitor, obs, forecast) -> None:
        tags = self.tags
        step = int(obs["step"])
        loss = obs.get("loss")
        values = {tags.observed: loss, tags.flops: obs.get("flops"), tags.tokens: obs.get("tokens")}
        for key in ("flops", "tokens"):
            self._seen[key] = self._seen[key] or _finite(obs.get(key))
        fit = getattr(forecast, "fit", None)
        if fit is not None and getattr(fit, "ok", False):
            if self._band is None or self._band[0] is not fit:
                self._band = self._tabulate_band(forecast)
            band = self._band
            axis = getattr(forecast, "x_axis", "step")
            x = float(step) if axis == "step" else obs.get(axis)
            if _finite(x) and x > 0:
                trend, lo, hi = self._band_at(band, float(x), getattr(forecast, "level", 0.9))
                values.update({tags.trend: trend, tags.trend_lower: lo, tags.trend_upper: hi})
                values[tags.residual] = self._residual(band[0], loss, trend, lo, hi,
                                                       getattr(forecast, "level", 0.9))
        writer = self.writer
        write_scalars(writer, step, values)
        if self._compute_unit is None:
            self._choose_compute_unit(monitor, obs)
        if self._compute_unit is not None and _finite(loss):
            _, size, key = self._compute_unit
            c = obs.get(key)
            if _finite(c) and c >= 0 and c / size < 2**62:
                write_scalars(writer, int(c / size), {self.compute_tag: loss})

    _BAND_POINTS = 96

    def _tabulate_band(self, forecast):
        """(fit, log x grid, trend, lower, upper) on a log grid of the fit's axis from its first
        point to past the planned end: a fit evaluation costs about the same for 1 point as
        for 96 (a schedule-aware mixture: ~1 ms), and the series written until the next
        refit then cost an interpolation each."""
        fit = forecast.fit
        axis = getattr(forecast, "x_axis", "step")
        end = {"step": forecast.target_step, "tokens": getattr(forecast, "target_tokens", None),
               "flops": getattr(forecast, "target_flops", None)}.get(axis)
        first = fit.x_first if _finite(fit.x_first) and fit.x_first > 0 else 1.0
        last = max(v for v in (fit.x_last, end, first * 2.0) if _finite(v))
        grid = np.geomspace(first, 1.5 * last, self._BAND_POINTS)
        level = getattr(forecast, "level", 0.9)
        with np.errstate(all="ignore"):
            trend = np.asarray(fit.predict(grid), dtype=float)
            lo, hi = (np.asarray(v, dtype=float) for v in fit.interval(grid, level=level))
        return fit, np.log(grid), trend, lo, hi

    @staticmethod
    def _band_at(band, x: float, level: float):
        fit, log_grid, trend, lo, hi = band
        lx = math.log(x)
        if log_grid[0] <= lx <= log_grid[-1]:
            return (float(np.interp(lx, log_grid, trend)), float(np.interp(lx, log_grid, lo)),
                    float(np.interp(lx, log_grid, hi)))
        lo_x, hi_x = fit.interval(x, level=level)
        return float(fit.predict(x)), float(lo_x), float(hi_x)

    @staticmethod
    def _residual(fit, loss, trend, lo, hi, level) -> float | None:
        """(observed - trend) in units of the fit's per-point noise: the robust sd of the log
        residuals when the fit reports it, else the band's half-width turned into an sd."""
        if not (_finite(loss) and _finite(trend)) or loss <= 0 or trend <= 0:
            return None
        scale = (getattr(fit, "diagnostics", None) or {}).get("residual_scale_log")
        if _finite(scale) and scale > 0:
            return math.log(loss / trend) / scale
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + level / 2)
        if _finite(lo) and _finite(hi) and hi > lo:
            return (loss - trend) / ((hi - lo) / (2 * z))
        return None

    def _write_layout(self, param_names) -> None:
        names = [_clean_name(n) for n in param_names]
        self.layout = build_layout(self.tags, names, self.compute_tag, flops=self._seen["flops"],
                                   tokens=self._seen["tokens"])
        write_layout(self.writer, self.layout)

    def _check_matplotlib(self) -> bool:
        """Whether matplotlib is installed (found without importing it); one log line if not."""
        if self._matplotlib is None:
            from .figures import matplotlib_installed

            self._matplotlib = matplotlib_installed()
            if not self._matplotlib:
                _note_no_matplotlib()
        return self._matplotlib

    def _start_helper(self) -> None:
        if self._helper is not None and self._helper.alive:
            return
        from .figures import FigureProcess

        helper = FigureProcess()
        try:
            helper.start()
        except OSError as exc:
            import logging

            logging.getLogger(__package__).info(
                "lightning-scaling: no figure helper process (%s); figures are drawn on the training thread", exc)
            self.figure_process = False
            return
        self._helper = helper

    def _drop_helper(self) -> None:
        helper, self._helper = self._helper, None
        if helper is not None:
            helper.close(timeout=5.0)
            self.helper_cpu_seconds += helper.cpu_seconds

    def _write_helper_images(self, replies) -> None:
        helper = self._helper
        for reply in replies:
            step, final = self._job_steps.pop(reply["id"], (0, False))
            if not final:
                self._helper_figure_cpu += float(reply.get("render_cpu_s", 0.0))
            if reply.get("error"):
                import logging

                logging.getLogger(__package__).info("lightning-scaling: a figure could not be drawn (%s)",
                                                 reply["error"])
            for tag, (png, height, width) in reply.get("images", {}).items():
                write_png(self.writer, tag, png, height, width, step)
                self.figures_written += 1
                self.figure_pid = helper.pid
        if helper.matplotlib is False:
            # this process finds matplotlib (checked before the helper started), the helper
            # could not use it (another sys.path, a broken backend): draw here from now on
            import logging

            logging.getLogger(__package__).info(
                "lightning-scaling: the figure helper process could not draw (%s); figures are drawn on the "
                "training thread", helper.error)
            self.figure_process = False
            self._drop_helper()

    def _finish_helper(self) -> None:
        """Wait (up to ``figure_timeout`` s) for the final figures, write them, end the helper."""
        t = _clock()
        helper = self._helper
        self._write_helper_images(helper.wait(self.figure_timeout))
        if helper.busy and helper.alive:
            import logging

            logging.getLogger(__package__).warning(
                "lightning-scaling: the final figures took longer than %.0f s and were not written",
                self.figure_timeout)
        self._drop_helper()
        self._account("end", t)

    def _hand_off_final(self, monitor, step: int) -> bool:
        """Send the final figures' job to the helper and hand the helper to a
        :class:`_FinalFigures`, which writes them when drawn (started at the end of
        ``on_train_end``). False (nothing done) when the figures cannot go in an event file of
        their own (a writer without a log directory) or the helper is gone."""
        logdir = _log_dir_of(self.writer)
        if logdir is None:
            return False
        self._write_helper_images(self._helper.results())  # what is ready goes in now
        helper = self._helper
        if helper is None or not helper.alive:
            return False
        final = _FinalFigures(self, helper, figure_jobs(monitor, final=True), step, logdir, self._job_steps)
        if final.job_id is None:
            return False
        self._final, self._helper, self._job_steps = final, None, {}
        return True

    def wait_for_figures(self, timeout: float | None = None) -> bool:
        """Wait (up to ``timeout`` s; None: as long as it takes, itself bounded by
        ``figure_timeout``) until the final figures of the last ``fit`` are in their event
        file. True when none are on their way any more (written, or given up)."""
        final = self._final
        return final is None or final.done.wait(timeout)

    def _write_figures(self, trainer, monitor, final: bool) -> None:
        t = _clock()
        kind = "end" if final else "figures"
        if not self._check_matplotlib():
            return
        step = int(getattr(trainer, "global_step", 0))
        if self.figure_process and self._helper is None and final and self.figures_written == 0:
            self._start_helper()  # a sink used without setup (a custom loop)
        if final and self._helper is not None and self._hand_off_final(monitor, step):
            self._account(kind, t)
            return
        if self._helper is not None and (self._helper.matplotlib is None or self._helper.busy):
            if not final:
                self._account(kind, t)
                return  # still warming up, or drawing the last update: this update is skipped
            # the end: the warm-up or the last update must be done before the final job goes out
            self._write_helper_images(self._helper.wait(self.figure_timeout))
        if self._helper is not None and not self._helper.alive:
            self.figure_process = False  # the helper died: draw here from now on
            self._drop_helper()
        if self._helper is not None:
            job_id = self._helper.submit(figure_jobs(monitor, final=final))
            if job_id is not None:
                self._job_steps[job_id] = (step, final)
            self._account(kind, t)
            return
        if not self.figures:
            return
        from . import figures as plots_tb

        figures = figures_for_monitor(monitor, final=final)
        for tag, fig in figures.items():
            write_png(self.writer, tag, *plots_tb.figure_to_png(fig), step)
        self.figures_written += len(figures)
        self.figure_pid = None
        self._last_figure_seconds = self._account(kind, t)


def _log_dir_of(writer) -> str | None:
    """The directory a torch or tensorboardX SummaryWriter writes to, else None."""
    get = getattr(writer, "get_logdir", None)
    if get is None or getattr(writer, "_get_file_writer", None) is None:
        return None
    try:
        logdir = get()
    except Exception:
        return None
    return logdir if isinstance(logdir, str) and logdir else None


#: Suffix of the event file that holds the final figures (TensorBoard reads every file of a
#: run's directory whose name contains "tfevents").
FINAL_FIGURES_SUFFIX = ".final_figures"
#: Seconds an exiting interpreter gives the final figures' event file, past ``figure_timeout``,
#: to be written and closed.
EXIT_WRITE_MARGIN_S = 10.0

_unfinished: set = set()  # _FinalFigures whose thread has not ended
_unfinished_lock = threading.Lock()
_exit_hook_registered = False


def _wait_at_exit() -> None:
    """The interpreter is exiting: let final figures on their way reach their event file
    (each bounded by its deadline plus ``EXIT_WRITE_MARGIN_S``)."""
    with _unfinished_lock:
        pending = list(_unfinished)
    for final in pending:
        final.done.wait(max(0.0, final.deadline - time.monotonic()) + EXIT_WRITE_MARGIN_S)


class _FinalFigures:
    """The end-of-training figures, finished off the training thread.

    The training thread gathers their data (the curve to the last step and the final
    forecast: what the figures show does not change after ``on_train_end``), sends the job to
    the helper process queued behind any periodic job still out, and goes on; a daemon thread
    waits for the drawings (up to ``figure_timeout``), writes them at the final step into an
    event file of their own in the run's directory (the logger closes its writer right after
    training; a file of their own needs no coordination with it), closes that file and ends the
    helper. Should the helper be unable to draw, the thread draws them itself. An interpreter
    that exits meanwhile waits for it (an ``atexit`` hook, bounded by the same deadline).
    """

    def __init__(self, sink, helper, jobs: dict, step: int, logdir: str, earlier: dict):
        self.sink = sink
        self.helper = helper
        self.jobs = jobs
        self.step = int(step)
        self.logdir = logdir
        self.timeout = float(sink.figure_timeout)
        self.job_steps = dict(earlier)  # helper job id -> (global step, final)
        self.job_id = helper.submit(jobs, queue=True)
        if self.job_id is not None:
            self.job_steps[self.job_id] = (self.step, True)
        self.done = threading.Event()
        self.deadline = math.inf
        self.path: str | None = None  # the event file, once written
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        global _exit_hook_registered
        self.deadline = time.monotonic() + self.timeout
        with _unfinished_lock:
            _unfinished.add(self)
            if not _exit_hook_registered:
                # registered after the helper's weakref finalizers: atexit runs it before them
                atexit.register(_wait_at_exit)
                _exit_hook_registered = True
        self.thread = threading.Thread(target=self._run, daemon=True, name="lightning-scaling-final-figures")
        self.thread.start()

    def _run(self) -> None:
        import logging

        log = logging.getLogger(__package__)
        helper, sink = self.helper, self.sink
        try:
            images, drawn_by = [], None
            final_answered = False
            for reply in helper.wait(max(0.0, self.deadline - time.monotonic())):
                step, _ = self.job_steps.pop(reply["id"], (self.step, False))
                final_answered = final_answered or reply["id"] == self.job_id
                if reply.get("error"):
                    log.info("lightning-scaling: a figure could not be drawn (%s)", reply["error"])
                images += [(tag, *image, step) for tag, image in reply.get("images", {}).items()]
                drawn_by = helper.pid
            if not final_answered and (helper.matplotlib is False or not helper.busy):
                # the helper could not draw, or ended: this process has matplotlib (checked)
                log.info("lightning-scaling: the figure helper process could not draw (%s); the final figures "
                         "are drawn in this process", helper.error or "it ended")
                from . import figures as plots_tb

                images += [(tag, *image, self.step) for tag, image in plots_tb.render_pngs(self.jobs).items()]
                drawn_by = None
            elif not final_answered:
                log.warning("lightning-scaling: the final figures took longer than %.0f s and were not written",
                            self.timeout)
            if images:
                self.path = _write_images_file(self.logdir, images)
                sink.figures_written += len(images)
                sink.figure_pid = drawn_by
        except Exception as exc:  # the training is over; tell, do not raise in a thread
            log.warning("lightning-scaling: the final figures could not be written (%s: %s)", type(exc).__name__, exc)
        finally:
            helper.close(timeout=5.0)
            sink.helper_cpu_seconds += helper.cpu_seconds
            self.done.set()
            with _unfinished_lock:
                _unfinished.discard(self)


def _write_images_file(logdir: str, images) -> str:
    """Write [(tag, PNG, height, width, step)] as image summaries into a new event file in
    ``logdir``, closed on return; returns its path."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(logdir, filename_suffix=FINAL_FIGURES_SUFFIX)
    try:
        for tag, png, height, width, step in images:
            image = Summary.Image(height=int(height), width=int(width), colorspace=3, encoded_image_string=png)
            writer.add_event(Event(wall_time=time.time(), step=int(step),
                                   summary=Summary(value=[Summary.Value(tag=tag, image=image)])))
    finally:
        writer.close()
    return writer._file_name if hasattr(writer, "_file_name") else logdir


def _note_no_matplotlib() -> None:
    import logging

    logging.getLogger(__package__).info(
        "lightning-scaling: matplotlib is not installed, so TensorBoard gets no figures "
        "(pip install 'lightning-scaling[plots]')")


def _to_plot_axis(steps: np.ndarray, compute: np.ndarray | None, step_values: np.ndarray) -> np.ndarray:
    """Optimizer steps -> cumulative compute, through the run's own record (projected past
    its end at the recent compute per step)."""
    if compute is None:
        return np.asarray(step_values, dtype=float)
    from ..core.compute import project_compute

    values = np.atleast_1d(np.asarray(step_values, dtype=float))
    s = np.asarray(steps, dtype=float)
    c = np.asarray(compute, dtype=float)
    good = np.isfinite(s) & np.isfinite(c)
    if not good.any():
        return np.full(values.shape, math.nan)
    s, c = s[good], c[good]
    # project_compute is linear past the record: two of its values give the whole line, instead
    # of one call (two full-array passes) per grid point
    last = float(s[-1])
    at_last = project_compute(s, c, last)
    rate = project_compute(s, c, last + 1.0) - at_last
    return np.where(values <= last, np.interp(values, s, c), at_last + rate * (values - last))


#: Observed points drawn at most in a figure: more are thinned evenly (the history is already
#: logarithmic in its older part), which keeps a drawing at ~0.05 s.
MAX_FIGURE_POINTS = 1000


def _thin(x: np.ndarray, y: np.ndarray, limit: int = MAX_FIGURE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    if x.size <= limit:
        return x, y
    keep = np.unique(np.linspace(0, x.size - 1, limit).round().astype(int))
    return x[keep], y[keep]


def figure_jobs(monitor, final: bool = True) -> dict:
    """The monitor's figures as data: {tag: (kind, kwargs)} for :mod:`lightning_scaling.plots_tb`
    (kinds in ``plots_tb.FIGURE_KINDS``). Plain arrays and numbers only (the fit is evaluated
    here), so a helper process can draw them without the fitting code; no matplotlib here."""
    arrays = monitor.history.arrays()
    steps, loss = arrays["step"], arrays["loss"]
    axis, label, compute = "step", "optimizer steps", None
    for key, name in (("flops", "compute (FLOPs)"), ("tokens", "tokens")):
        if np.isfinite(arrays[key]).any():
            axis, label, compute = key, name, arrays[key]
            break
    x_obs = steps if compute is None else compute
    forecast = getattr(monitor, "forecast", None)
    fit = getattr(forecast, "fit", None)
    level = getattr(forecast, "level", getattr(monitor, "level", 0.9))
    grid_x = trend = lower = upper = None
    planned_end = fc = None
    planned = getattr(monitor, "planned_steps", None)
    end_step = float(planned) if _finite(planned) else (float(steps[-1]) if steps.size else None)
    if end_step is not None and _finite(planned):
        planned_end = float(_to_plot_axis(steps, compute, np.array([end_step]))[0])
    if fit is not None and getattr(fit, "ok", False) and steps.size and end_step:
        first = max(float(steps[steps > 0].min()) if (steps > 0).any() else 1.0, 1.0)
        grid_steps = np.geomspace(first, max(end_step, first * 1.01), 120)
        fit_axis = getattr(forecast, "x_axis", "step")
        if fit_axis == "step":
            grid_fit = grid_steps
        else:
            grid_fit = _to_plot_axis(steps, arrays[fit_axis], grid_steps)
        grid_x = _to_plot_axis(steps, compute, grid_steps)
        with np.errstate(all="ignore"):
            trend = np.asarray(fit.predict(grid_fit), dtype=float)
            lower, upper = (np.asarray(v, dtype=float) for v in fit.interval(grid_fit, level=level))
        if _finite(getattr(forecast, "final_loss", None)):
            fc = (forecast.final_loss, forecast.lower, forecast.upper)
    name = getattr(monitor, "loss_name", "loss")
    x_drawn, loss_drawn = _thin(np.asarray(x_obs, dtype=float), np.asarray(loss, dtype=float))
    jobs = {
        "scaling/figure/loss_vs_compute": ("loss_vs_compute", dict(
            x=x_drawn, loss=loss_drawn, x_label=label, loss_label=name, grid_x=grid_x, trend=trend, lower=lower,
            upper=upper, planned_end=planned_end, forecast=fc, level=level,
            law=getattr(forecast, "law", None), title=f"{name} vs {label} (log-log)")),
    }
    history = getattr(monitor, "forecasts", [])
    if history:
        recent = monitor.history.last(5)
        observed = float(np.mean([r[4] for r in recent])) if recent else None
        jobs["scaling/figure/forecast_history"] = ("forecast_history", dict(
            made_at=[f.step for f in history], final=[f.final_loss for f in history],
            lower=[f.lower for f in history], upper=[f.upper for f in history], observed_final=observed,
            loss_label=name, observed_label="observed final" if final else "latest observed",
            target_step=float(planned) if _finite(planned) else None, level=level))
    return jobs


def figures_for_monitor(monitor, final: bool = True) -> dict:
    """The monitor's figures drawn in this process: {tag: matplotlib Figure}."""
    from . import figures as plots_tb

    return {tag: plots_tb.FIGURE_KINDS[kind](**kwargs) for tag, (kind, kwargs) in figure_jobs(monitor, final).items()}
