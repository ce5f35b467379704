"""The event-file writers through the SummaryWriter's public FileWriter, with a closed writer
(the logger closes its writer after each fit), and with tensorboardX where it is installed."""

import math

import numpy as np
import pytest

from lightning_scaling import tensorboard as tb
from lightning_scaling.tensorboard.writing import file_writer_of

SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.custom_scalar import layout_pb2  # noqa: E402


def reload(path):
    ea = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    ea.Reload()
    return ea


def png_bytes():
    import io

    Image = pytest.importorskip("PIL.Image")
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 10, 10)).save(buffer, format="png")
    return buffer.getvalue()


def test_writers_go_through_the_public_file_writer_and_survive_a_closed_writer(tmp_path):
    w = SummaryWriter(str(tmp_path))
    assert file_writer_of(w) is w.file_writer
    assert tb.write_scalars(w, 1, {"scaling/flops": 1e9, "scaling/tokens": 64.0}) == 2
    w.close()  # what TensorBoardLogger.finalize does after each fit
    assert file_writer_of(w) is None
    # a closed writer: add_scalar/add_image open a new event file, the layout gets one of its own
    assert tb.write_scalars(w, 2, {"scaling/flops": 2e9, "scaling/tokens": math.nan}) == 1
    tb.write_png(w, "scaling/figure/x", png_bytes(), 20, 30, 2)
    w.close()
    layout = tb.build_layout(tb.PanelTags(), "mmf", ["E"])
    tb.write_layout(w, layout)
    w.close()
    ea = reload(tmp_path)
    assert [(e.step, e.value) for e in ea.Scalars("scaling/flops")] == [(1, 1e9), (2, 2e9)]
    assert [e.step for e in ea.Scalars("scaling/tokens")] == [1]
    (img,) = ea.Images("scaling/figure/x")
    assert (img.step, img.width, img.height) == (2, 30, 20)
    (event,) = ea.Tensors(tb.LAYOUT_TAG)
    assert layout_pb2.Layout.FromString(event.tensor_proto.string_val[0]) == layout


def test_write_layout_refuses_a_writer_without_a_log_directory():
    with pytest.raises(TypeError, match="SummaryWriter"):
        tb.write_layout(object(), tb.build_layout(tb.PanelTags()))


def test_tensorboardx_writer_gets_the_same_events(tmp_path):
    tensorboardX = pytest.importorskip("tensorboardX")
    w = tensorboardX.SummaryWriter(str(tmp_path))
    assert file_writer_of(w) is not None
    tb.write_scalars(w, 3, {"scaling/trend": 2.5, "scaling/param/E": np.float64(1.5)})
    tb.write_png(w, "scaling/figure/x", png_bytes(), 20, 30, 3)
    layout = tb.build_layout(tb.PanelTags(), "mmf", ["E"])
    tb.write_layout(w, layout)
    w.close()
    ea = reload(tmp_path)
    assert [(e.step, e.value) for e in ea.Scalars("scaling/trend")] == [(3, 2.5)]
    assert ea.Images("scaling/figure/x")[0].width == 30
    (event,) = ea.Tensors(tb.LAYOUT_TAG)
    assert layout_pb2.Layout.FromString(event.tensor_proto.string_val[0]) == layout
