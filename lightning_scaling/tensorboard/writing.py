"""Writing the panels into a run's event files: scalars, images, text and the layout.

The functions take any SummaryWriter-like object: ``torch.utils.tensorboard``'s or
tensorboardX's (the ``experiment`` of Lightning's TensorBoardLogger), or anything with their
``add_scalar``/``add_image``/``add_text`` methods. Nothing here imports torch or Lightning.

Several values at one step go out as one event (what TensorBoard's own writers do for one
``add_scalars`` call): one protobuf and one queue hand-off instead of one per tag. That
goes through the SummaryWriter's public ``file_writer`` attribute (a ``FileWriter`` with a
public ``add_summary``, in torch and tensorboardX alike). A SummaryWriter that has been
closed has none until its next ``add_*`` call opens a new event file: the writers then use
the ``add_*`` methods, which do.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from .layout import LAYOUT_TAG


def file_writer_of(writer) -> Any | None:
    """The open ``FileWriter`` of a torch or tensorboardX SummaryWriter (its public
    ``file_writer``), else None: a closed SummaryWriter, or another kind of writer.

    >>> file_writer_of(object()) is None
    True
    """
    file_writer = getattr(writer, "file_writer", None)
    return file_writer if callable(getattr(file_writer, "add_summary", None)) else None


def summary_class(writer) -> type:
    """The ``Summary`` protobuf class ``writer`` takes: TensorBoard's, or tensorboardX's own
    copy of the same message for a tensorboardX writer."""
    if type(writer).__module__.startswith("tensorboardX"):
        from tensorboardX.proto.summary_pb2 import (
            Summary as XSummary,  # optional: tensorboardX users only
        )

        return XSummary
    return Summary


def _add_summary(writer, file_writer, summary: Summary, step: int) -> None:
    """Add a TensorBoard ``Summary`` through ``file_writer``, re-parsed for tensorboardX."""
    cls = summary_class(writer)
    if cls is not Summary:
        summary = cls.FromString(summary.SerializeToString())
    file_writer.add_summary(summary, int(step))


def clean_values(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite values of ``values`` as floats (None, NaN and inf left out).

    >>> clean_values({"a": 1, "b": None, "c": float("nan")})
    {'a': 1.0}
    """
    clean = {}
    for tag, value in values.items():
        if value is None:
            continue
        value = float(value)
        if math.isfinite(value):
            clean[tag] = value
    return clean


def write_scalars(writer, step: int, values: Mapping[str, Any]) -> int:
    """Write every finite value (None/NaN/inf are skipped) at ``step``; returns how many.

    The values go out as one event with several summary values; writers without an open
    file writer get one ``add_scalar`` per tag.

    >>> class Recorder:
    ...     def add_scalar(self, tag, value, step):
    ...         print(tag, value, step)
    >>> write_scalars(Recorder(), 7, {"scaling/flops": 3.2e18, "scaling/tokens": None, "scaling/trend": float("nan")})
    scaling/flops 3.2e+18 7
    1
    """
    clean = clean_values(values)
    if not clean:
        return 0
    file_writer = file_writer_of(writer)
    if file_writer is None:
        for tag, value in clean.items():
            writer.add_scalar(tag, value, int(step))
    else:
        summary = Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in clean.items()])
        _add_summary(writer, file_writer, summary, step)
    return len(clean)


def write_image(writer, tag: str, rgb: np.ndarray, step: int) -> None:
    """Write an (H, W, 3) uint8 image (a rendered figure)."""
    writer.add_image(tag, rgb, int(step), dataformats="HWC")


def image_summary(tag: str, png: bytes, height: int, width: int) -> Summary:
    """An image summary of an encoded (``height`` x ``width``) RGB PNG."""
    image = Summary.Image(height=int(height), width=int(width), colorspace=3, encoded_image_string=png)
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def write_png(writer, tag: str, png: bytes, height: int, width: int, step: int) -> None:
    """Write an already encoded (``height`` x ``width``) RGB PNG as an image summary: no
    decoding and re-encoding on the calling thread (``add_image`` would do both)."""
    file_writer = file_writer_of(writer)
    if file_writer is None:
        from PIL import (
            Image,  # optional (comes with matplotlib); only for writers without a file writer
        )

        write_image(writer, tag, np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), step)
        return
    _add_summary(writer, file_writer, image_summary(tag, png, height, width), step)


def write_text(writer, tag: str, markdown: str, step: int) -> None:
    """Write markdown text (TensorBoard's Text dashboard renders it)."""
    writer.add_text(tag, markdown, int(step))


def layout_summary(layout: layout_pb2.Layout) -> Summary:
    """The summary that carries ``layout`` to TensorBoard's custom-scalars plugin."""
    tensor = TensorProto(dtype="DT_STRING", string_val=[layout.SerializeToString()],
                         tensor_shape=TensorShapeProto())
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="custom_scalars"))
    return Summary(value=[Summary.Value(tag=LAYOUT_TAG, tensor=tensor, metadata=metadata)])


def write_layout(writer, layout: layout_pb2.Layout, step: int = 0) -> None:
    """Write ``layout`` as the run's custom-scalars layout (TensorBoard shows the latest one).

    torch's ``add_custom_scalars`` cannot say it (one series per Margin chart), so the summary
    is built here. A closed SummaryWriter's layout goes into an event file of its own in the
    writer's log directory.
    """
    summary = layout_summary(layout)
    file_writer = file_writer_of(writer)
    if file_writer is not None:
        _add_summary(writer, file_writer, summary, step)
        return
    logdir = log_dir_of(writer)
    if logdir is None:
        raise TypeError(f"write_layout needs a torch or tensorboardX SummaryWriter, got {type(writer).__name__}")
    write_events_file(logdir, [(summary, step)], suffix=".layout")


def log_dir_of(writer) -> str | None:
    """The directory a torch or tensorboardX SummaryWriter writes to, else None.

    >>> log_dir_of(object()) is None
    True
    """
    get = getattr(writer, "get_logdir", None)
    if get is None or not hasattr(writer, "file_writer"):
        return None
    try:
        logdir = get()
    except Exception:
        return None
    return logdir if isinstance(logdir, str) and logdir else None


def write_events_file(logdir: str, summaries, suffix: str) -> int:
    """Write [(Summary, step)] into a new event file in ``logdir`` whose name ends in
    ``suffix`` (TensorBoard reads every file of a run's directory whose name contains
    "tfevents"), closed on return; returns how many events it holds.

    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as logdir:
    ...     n = write_events_file(logdir, [(image_summary("figure", b"PNG", 1, 1), 40)], suffix=".demo")
    ...     names = os.listdir(logdir)
    >>> n, len(names), names[0].endswith(".demo"), "tfevents" in names[0]
    (1, 1, True, True)
    """
    writer = EventFileWriter(logdir, filename_suffix=suffix)
    count = 0
    try:
        for summary, step in summaries:
            writer.add_event(Event(wall_time=time.time(), step=int(step), summary=summary))
            count += 1
    finally:
        writer.close()
    return count
