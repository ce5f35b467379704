"""ScalingLawMonitor + TensorBoard in real (tiny) Trainer runs: the "Scaling law" panels, the
figures, the text and JSON summaries; and runs without TensorBoard."""

import json
import logging
import os
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("pytorch_lightning")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.custom_scalar import layout_pb2  # noqa: E402

from lightning_scaling import ScalingLawMonitor  # noqa: E402
from lightning_scaling import tensorboard as tb  # noqa: E402
from lightning_scaling.cli import main as cli_main  # noqa: E402
from lightning_scaling.io import SUMMARY_FILENAME, read_summary  # noqa: E402

STEPS = 80


def make_module(base):
    class Tiny(base):
        flops_per_batch = 6.0 * (8 * 16 + 16) * 16

        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return Tiny()


def loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 8, generator=g)
    y = torch.sin(x.sum(1, keepdim=True))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True,
                                       generator=g)


def fit(tmp_path, logger, *, trainer_cls=pl.Trainer, base=pl.LightningModule, monitor_cls=ScalingLawMonitor,
        steps=STEPS, **monitor_kw):
    torch.manual_seed(0)
    monitor = monitor_cls(refit_every=10, background=False, tokens_per_batch=16, **monitor_kw)
    trainer = trainer_cls(max_steps=steps, logger=logger, callbacks=[monitor], default_root_dir=str(tmp_path),
                          enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                          log_every_n_steps=5, accelerator="cpu", devices=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(make_module(base), loader())
    for sink in monitor.sinks:
        if isinstance(sink, tb.TensorBoardSink):
            # the final figures are written by a thread shortly after fit returns
            assert sink.wait_for_figures(60)
    return trainer, monitor


def events(log_dir):
    ea = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    ea.Reload()
    return ea


def sink_of(monitor):
    (sink,) = [s for s in monitor.sinks if isinstance(s, tb.TensorBoardSink)]
    return sink


def all_scalar_tags(log_dir):
    """Scalar tags of the run and of the series' runs under it."""
    tags = set(events(log_dir).Tags()["scalars"])
    for run in tb.SERIES_RUNS:
        if os.path.isdir(os.path.join(log_dir, run)):
            tags |= set(events(os.path.join(log_dir, run)).Tags()["scalars"])
    return tags


def test_every_layout_tag_exists_after_a_real_run(tmp_path, capsys):
    from pytorch_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    _, monitor = fit(tmp_path, logger)
    sink = sink_of(monitor)
    tags = sink.tags
    ea = events(logger.log_dir)
    # the layout: the newest is the one the sink built; every tag and regex satisfied
    layout = layout_pb2.Layout.FromString(ea.Tensors(tb.LAYOUT_TAG)[-1].tensor_proto.string_val[0])
    assert layout == sink.layout
    assert [c.title for c in layout.category] == [tb.CATEGORY, tb.CATEGORY_DETAILS]
    assert tb.missing_tags(layout, all_scalar_tags(logger.log_dir)) == []
    assert [c.title.split(":")[0] for c in layout.category[1].chart] == [monitor.forecast.law] * len(
        monitor.forecast.fit.params)
    # the series, each in a run of its own: the smoothed loss every 5th step (log_every_n_steps)
    # up to the end, none lost; its last point is the monitor's final loss (5 steps: 2.5% of 80, at least 5)
    observed = events(os.path.join(logger.log_dir, tb.RUN_OBSERVED)).Scalars(tags.loss)
    assert observed[-1].step == STEPS and set(np.diff([e.step for e in observed[1:]])) == {5}
    summary = read_summary(os.path.join(logger.log_dir, SUMMARY_FILENAME))
    assert observed[-1].value == pytest.approx(summary["final_loss"], rel=1e-6)
    trend = events(os.path.join(logger.log_dir, tb.RUN_TREND)).Scalars(tags.loss)
    assert trend and trend[-1].step == STEPS
    # forecasts as written match the monitor's (float32), at the steps they were made
    written = {e.step: e.value for e in events(os.path.join(logger.log_dir, tb.RUN_FORECAST)).Scalars(tags.forecast)}
    last = monitor.forecasts[-1]
    assert written[last.step] == pytest.approx(last.final_loss, rel=1e-6)
    # figures at the end, the markdown summary (written at refits too) with the final verdict
    assert set(ea.Tags()["images"]) == {tags.figure_trend, tags.figure_compute}
    assert ea.Images(tags.figure_trend)[-1].step == STEPS
    texts = ea.Tensors(tags.summary + "/text_summary")
    md = texts[-1].tensor_proto.string_val[0].decode()
    assert len(texts) >= 2 and "### Scaling law" in md and "FLOPs" in md and "Final verdict" in md
    # the JSON summary lands in the logger's directory and `report` reads it (one run: the
    # series' runs are part of it)
    assert summary["steps"] == STEPS and summary["flops"] == pytest.approx(monitor.compute.flops)
    assert cli_main(["report", str(tmp_path), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert run["source"] == "summary" and run["forecast"]["final_loss"] == pytest.approx(last.final_loss)


def test_logger_prefix_is_carried_by_every_panel_tag(tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="tb", prefix="exp")
    _, monitor = fit(tmp_path, logger, steps=40)
    sink = sink_of(monitor)
    exact, regexes = tb.layout_tags(sink.layout)
    assert all(t.startswith("exp-") for t in exact) and all(r.startswith("^exp\\-") or r.startswith("^exp-")
                                                            for r in regexes)
    assert tb.missing_tags(sink.layout, all_scalar_tags(logger.log_dir)) == []


@pytest.mark.parametrize("kind", ["csv", "none"])
def test_without_tensorboard_everything_still_works(tmp_path, kind):
    from pytorch_lightning.loggers import CSVLogger

    logger = CSVLogger(str(tmp_path), name="csv") if kind == "csv" else False
    trainer, monitor = fit(tmp_path, logger, steps=40)
    assert not any(isinstance(s, tb.TensorBoardSink) for s in monitor.sinks)
    assert monitor.forecast is not None
    directory = logger.log_dir if kind == "csv" else str(tmp_path)
    assert read_summary(os.path.join(directory, SUMMARY_FILENAME))["steps"] == 40
    assert not [f for _, _, fs in os.walk(tmp_path) for f in fs if "tfevents" in f]


def test_without_matplotlib_one_info_line_and_no_figures(tmp_path, monkeypatch, caplog):
    from pytorch_lightning.loggers import TensorBoardLogger

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    with caplog.at_level(logging.INFO, logger="lightning_scaling.tensorboard"):
        _, monitor = fit(tmp_path, logger, steps=40)
    lines = [r for r in caplog.records if "matplotlib is not installed" in r.getMessage()]
    assert len(lines) == 1
    ea = events(logger.log_dir)
    assert ea.Tags()["images"] == [] and ea.Tensors(tb.LAYOUT_TAG)
    assert tb.missing_tags(sink_of(monitor).layout, all_scalar_tags(logger.log_dir)) == []


def test_lightning_pytorch_flavour(tmp_path):
    lp = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_scaling.lightning import ScalingLawMonitor as LMonitor

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    _, monitor = fit(tmp_path, logger, trainer_cls=lp.Trainer, base=lp.LightningModule, monitor_cls=LMonitor,
                     steps=40)
    layout = sink_of(monitor).layout
    assert layout is not None
    assert tb.missing_tags(layout, all_scalar_tags(logger.log_dir)) == []


def test_opt_out_and_own_sink_are_respected(tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    own = tb.TensorBoardSink(logger, figures=False)
    _, monitor = fit(tmp_path, logger, steps=20, sinks=[own])
    assert [s for s in monitor.sinks if isinstance(s, tb.TensorBoardSink)] == [own]
    assert events(logger.log_dir).Tags()["images"] == []
    monitor2 = ScalingLawMonitor()
    monitor2.tensorboard = False
    assert tb.attach_tensorboard_sink(monitor2, type("T", (), {"loggers": [logger]})()) is None
    assert monitor2.sinks == []


def test_monitor_reused_with_a_new_logger_gets_a_fresh_sink(tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger

    first = TensorBoardLogger(str(tmp_path), name="a")
    _, monitor = fit(tmp_path, first, steps=20)
    old = sink_of(monitor)
    second = TensorBoardLogger(str(tmp_path), name="b")
    trainer = pl.Trainer(max_steps=40, logger=second, callbacks=[monitor], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(make_module(pl.LightningModule), loader())
    new = sink_of(monitor)
    assert new is not old and new.logger is second
    assert tb.LAYOUT_TAG in events(second.log_dir).Tags()["tensors"]


def png_size(image_event):
    from PIL import Image
    import io

    with Image.open(io.BytesIO(image_event.encoded_image_string)) as im:
        return im.format, im.size


def test_figures_are_drawn_in_a_helper_process_that_ends_with_the_run(tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    _, monitor = fit(tmp_path, logger, steps=40)
    sink = sink_of(monitor)
    assert sink.figure_pid is not None and sink.figure_pid != os.getpid()
    assert sink.helper_cpu_seconds > 0  # it imported matplotlib and drew, on its own clock
    ea = events(logger.log_dir)
    for tag in (tb.PanelTags().figure_trend, tb.PanelTags().figure_compute):
        final = ea.Images(tag)[-1]
        assert final.step == 40
        assert png_size(final) == ("PNG", (final.width, final.height)) and final.width > 100
    # its input closed at the end of training: the helper exits by itself
    deadline = __import__("time").monotonic() + 20
    while __import__("time").monotonic() < deadline:
        try:
            os.kill(sink.figure_pid, 0)
        except ProcessLookupError:
            break
        __import__("time").sleep(0.05)
    else:
        pytest.fail("the figure helper is still running 20 s after the run")


def test_periodic_figures_come_back_from_the_helper_at_their_own_steps(tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger

    class WarmSink(tb.TensorBoardSink):
        def setup(self, trainer, pl_module, monitor):
            super().setup(trainer, pl_module, monitor)
            self.figure_updates.helper.wait(60)  # warm before the first refit, so that no update is skipped

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    sink = WarmSink(logger, figure_every=2, max_figure_overhead=1.0)
    _, monitor = fit(tmp_path, logger, steps=STEPS, sinks=[sink])
    steps = [e.step for e in events(logger.log_dir).Images(tb.PanelTags().figure_trend)]
    refit_steps = {f.step for f in monitor.forecasts}
    assert len(steps) >= 2 and steps[-1] == STEPS
    assert set(steps[:-1]) <= refit_steps  # each update carries the step its data was taken at


@pytest.mark.parametrize("how, line", [("option", None), ("no_process", "no figure helper process"),
                                       ("helper_cannot_import", "figure helper process could not draw")])
def test_figures_drawn_in_this_process_when_there_is_no_helper(tmp_path, monkeypatch, caplog, how, line):
    from pytorch_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    kw = {}
    if how == "option":
        kw["sinks"] = [tb.TensorBoardSink(logger, figure_process=False)]
    elif how == "no_process":
        monkeypatch.setattr(sys, "executable", "")  # no interpreter to start a helper with
    else:  # the helper's Python finds a broken matplotlib first; this process has a good one
        fake = tmp_path / "shadow" / "matplotlib"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text("raise ImportError('a broken matplotlib')\n")
        monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    with caplog.at_level(logging.INFO, logger="lightning_scaling.tensorboard"):
        _, monitor = fit(tmp_path, logger, steps=40, **kw)
    sink = sink_of(monitor)
    assert sink.figure_pid is None
    notes = [r for r in caplog.records if r.name == "lightning_scaling.tensorboard"]
    if line is None:
        assert notes == [] and sink.helper_cpu_seconds == 0
    else:
        assert len(notes) == 1 and line in notes[0].getMessage()
    final = events(logger.log_dir).Images(tb.PanelTags().figure_trend)[-1]
    assert final.step == 40 and png_size(final)[0] == "PNG"


EXIT_SCRIPT = r"""
import sys, time, warnings
sys.path.insert(0, {tests!r})
import test_tensorboard_callback as t
from pytorch_lightning.loggers import TensorBoardLogger
from lightning_scaling.tensorboard import final

write = final.write_images_file
def slow_write(*args):
    time.sleep(1.0)  # the interpreter is exiting by now: only the exit hook keeps it alive
    return write(*args)
final.write_images_file = slow_write
logger = TensorBoardLogger({root!r}, name="tb")
monitor = t.ScalingLawMonitor(refit_every=10, background=False, tokens_per_batch=16)
trainer = t.pl.Trainer(max_steps=40, logger=logger, callbacks=[monitor], enable_progress_bar=False,
                       enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=5,
                       accelerator="cpu", devices=1)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    trainer.fit(t.make_module(t.pl.LightningModule), t.loader())
print("LOGDIR", logger.log_dir)
print("PENDING_AT_EXIT", not t.sink_of(monitor).wait_for_figures(0))
"""


def test_final_figures_reach_the_event_file_when_the_process_exits_right_after_fit(tmp_path):
    """fit returns before the final figures are written; a script that ends there still gets
    them in its event files (the exit hook waits for them)."""
    import subprocess

    pytest.importorskip("matplotlib")
    script = EXIT_SCRIPT.format(tests=os.path.dirname(__file__), root=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.startswith(("LOGDIR", "PENDING")))
    assert lines["PENDING_AT_EXIT"] == "True"  # the exit came while they were on their way
    log_dir = lines["LOGDIR"]
    assert any(name.endswith(tb.FINAL_FIGURES_SUFFIX) for name in os.listdir(log_dir))
    ea = events(log_dir)
    for tag in (tb.PanelTags().figure_trend, tb.PanelTags().figure_compute):
        final = ea.Images(tag)[-1]
        assert final.step == 40 and png_size(final)[0] == "PNG"
    assert ea.Tensors(tb.PanelTags().summary + "/text_summary")  # the main event file is whole too
