"""Layout and writers of lightning_scaling.tensorboard, written with a real SummaryWriter and
read back with TensorBoard's EventAccumulator."""

import math

import numpy as np
import pytest

from lightning_scaling import tensorboard as tb

SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.custom_scalar import layout_pb2  # noqa: E402


def reload(path):
    ea = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    ea.Reload()
    return ea


@pytest.mark.parametrize("total, unit, size", [
    (3e17, "MFLOPs", 1e6), (5e11, "FLOPs", 1.0), (1e12, "kFLOPs", 1e3), (2e25, "PFLOPs", 1e15),
    (0.0, "FLOPs", 1.0), (math.nan, "FLOPs", 1.0), (4e9, "tokens", 1.0),
])
def test_axis_unit_keeps_planned_total_below_1e12_steps(total, unit, size):
    base = "tokens" if unit.endswith("tokens") else "FLOPs"
    assert tb.axis_unit(total, base) == (unit, size)
    if total > 0:
        assert total / size < tb.MAX_AXIS_STEPS < 2**63


def test_layout_round_trips_through_an_event_file(tmp_path):
    tags = tb.PanelTags(observed="train_loss")
    layout = tb.build_layout(tags, ["E", "A", "alpha"], tb.compute_axis_tag("GFLOPs"))
    w = SummaryWriter(str(tmp_path))
    tb.write_layout(w, layout)
    w.close()
    ea = reload(tmp_path)
    (event,) = ea.Tensors(tb.LAYOUT_TAG)
    back = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    assert back == layout
    assert [c.title for c in back.category] == [tb.CATEGORY, tb.CATEGORY_DETAILS]
    glance = back.category[0].chart
    assert {c.title for c in glance} == {tb.CHART_FORECAST, tb.CHART_TREND}
    forecast = next(c for c in glance if c.title == tb.CHART_FORECAST)
    values = [(s.value, s.lower, s.upper) for s in forecast.margin.series]
    assert values == [(tags.forecast, tags.forecast_lower, tags.forecast_upper),
                      ("train_loss", "train_loss", "train_loss")]
    detail_titles = [c.title for c in back.category[1].chart]
    assert detail_titles[:3] == ["Fitted parameter E", "Fitted parameter A", "Fitted parameter alpha"]
    assert "Loss vs compute (step axis = GFLOPs)" in detail_titles


def test_missing_tags_checks_margin_tags_and_multiline_regexes():
    tags = tb.PanelTags()
    layout = tb.build_layout(tags, ["E"])
    exact, regexes = tb.layout_tags(layout)
    assert tags.forecast in exact and "^scaling/param/E$" in regexes
    everything = exact | {tags.param("E"), tags.residual, tags.flops, tags.tokens}
    assert tb.missing_tags(layout, everything) == []
    assert tb.missing_tags(layout, everything - {tags.trend_upper}) == [tags.trend_upper]
    # anchored: a longer tag does not satisfy the chart of another
    assert tb.missing_tags(layout, (everything - {tags.param("E")}) | {"scaling/param/Ex"}) == [
        "^scaling/param/E$"]


def test_scalars_text_and_image_read_back(tmp_path):
    w = SummaryWriter(str(tmp_path))
    n = tb.write_scalars(w, 7, {"scaling/flops": 3.2e18, "scaling/tokens": None,
                                "scaling/trend": math.nan, "scaling/param/E": np.float64(1.5)})
    assert n == 2
    tb.write_text(w, "scaling/summary", "### hello\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n", 9)
    tb.write_image(w, "scaling/figure", np.zeros((20, 30, 3), dtype=np.uint8), 9)
    w.close()
    ea = reload(tmp_path)
    assert set(ea.Tags()["scalars"]) == {"scaling/flops", "scaling/param/E"}
    (flops,) = ea.Scalars("scaling/flops")
    assert flops.step == 7 and flops.value == pytest.approx(3.2e18, rel=1e-6)  # float32 keeps 7 digits
    (text,) = ea.Tensors("scaling/summary/text_summary")
    assert b"### hello" in text.tensor_proto.string_val[0]
    (img,) = ea.Images("scaling/figure")
    assert (img.width, img.height, img.step) == (30, 20, 9)


def summary_for_text(**over):
    d = {
        "run": "demo", "x_axis": "step", "loss_name": "train_loss", "steps": 1000,
        "final_loss": 2.31, "flops": 1.2e18, "tokens": 4e9, "n_params": 1.25e8,
        "fit": {"law": "power", "params": {"E": 1.9, "A": 120.0, "alpha": 0.31},
                "diagnostics": {"param_intervals": {"E": [1.8, 2.0]}}},
        "forecast": {"final_loss": 2.3, "lower": 2.25, "upper": 2.36, "level": 0.9, "step": 500,
                     "law": "power", "target_step": 1000},
        "warnings": ["BehindTrendWarning: loss above the band at step 700"],
    }
    d.update(over)
    return d


def test_summary_markdown_says_law_params_forecast_compute_warnings():
    md = tb.summary_markdown(summary_for_text())
    assert "`power`" in md and "| E | 1.9 | [1.8, 2] |" in md and "| alpha | 0.31 | not estimated |" in md
    assert "2.3 (" in md and "units of `train_loss`" in md and "90% interval [2.25, 2.36]" in md and "**inside**" in md
    assert "1.2e+18 FLOPs" in md and "4e+09 tokens" in md
    assert "BehindTrendWarning" in md
    md2 = tb.summary_markdown(summary_for_text(final_loss=2.5, warnings=[], fit=None, forecast=None))
    assert "No fit was possible" in md2 and "**Warnings:** none" in md2 and "none made" in md2


def test_tabulated_trend_band_matches_the_fit():
    import lightning_scaling as ls
    from lightning_scaling.monitor.monitoring import Forecast
    from lightning_scaling.tensorboard.band import band_at, tabulate_band

    rng = np.random.default_rng(0)
    x = np.arange(1, 400, dtype=float)
    fit = ls.fit_curve(x, (2 + 3 * x**-0.4) * np.exp(0.01 * rng.standard_normal(x.size)))
    assert fit.ok
    forecast = Forecast(step=399, final_loss=float(fit.predict(1000)), lower=0.0, upper=0.0, level=0.9,
                        law=fit.law, target_step=1000, fit=fit)
    band = tabulate_band(forecast)
    for xq in (3.0, 57.5, 399.0, 800.0, 5000.0):  # 5000: past the grid, evaluated directly
        trend, lo, hi = band_at(band, xq, 0.9)
        exp_lo, exp_hi = fit.interval(xq, level=0.9)
        assert trend == pytest.approx(fit.predict(xq), rel=1e-3)
        assert (lo, hi) == pytest.approx((exp_lo, exp_hi), rel=1e-3)


def test_figure_process_survives_a_bad_job_and_draws_the_next():
    pytest.importorskip("matplotlib")
    from lightning_scaling.tensorboard.helper import FigureProcess

    helper = FigureProcess()
    helper.start()
    try:
        assert helper.wait(60) == [] and helper.matplotlib is True
        assert helper.submit({"bad": ("forecast_history", {"no_such_argument": 1})}) is not None
        assert helper.submit({"x": ("forecast_history", {})}) is None  # one job at a time
        (reply,) = helper.wait(60)
        assert "no_such_argument" in reply["error"] and reply["images"] == {}
        job = {"made_at": [10, 20, 30], "final": [2.0, 1.9, 1.85], "lower": [1.5, 1.7, 1.8], "upper": [2.5, 2.1, 1.9]}
        job_id = helper.submit({"fh": ("forecast_history", job)})
        (reply,) = helper.wait(60)
        png, height, width = reply["images"]["fh"]
        assert reply["id"] == job_id and reply["error"] is None
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and (height, width) == (400, 640)
        assert helper.render_cpu_seconds > 0 and helper.cpu_seconds > helper.render_cpu_seconds
        # a job queued behind a pending one (the end of training's): both answered, in order
        first = helper.submit({"a": ("forecast_history", job)})
        queued = helper.submit({"b": ("forecast_history", job)}, queue=True)
        assert helper.busy and queued == first + 1
        replies = helper.wait(60)
        assert [r["id"] for r in replies] == [first, queued] and not helper.busy
        assert [list(r["images"]) for r in replies] == [["a"], ["b"]]
    finally:
        process = helper.process
        helper.close()
    assert process.wait(timeout=20) == 0 and not helper.alive


def test_plot_axis_matches_project_compute_inside_and_past_the_record():
    from lightning_scaling.core.compute import project_compute
    from lightning_scaling.tensorboard.figure_data import to_plot_axis

    steps = np.array([1.0, 2.0, 5.0, 9.0, np.nan, 12.0])
    flops = np.array([10.0, 21.0, 50.0, np.nan, 80.0, 130.0])
    grid = np.array([1.0, 3.5, 9.0, 12.0, 20.0, 400.0])
    expected = [project_compute(steps, flops, float(s)) for s in grid]
    assert to_plot_axis(steps, flops, grid) == pytest.approx(expected, rel=1e-12)
    assert to_plot_axis(steps, None, grid) is not None and np.all(to_plot_axis(steps, None, grid) == grid)
    assert np.isnan(to_plot_axis(steps, np.full(6, np.nan), grid)).all()


def test_per_step_series_are_buffered_then_written_in_batches(tmp_path):
    from types import SimpleNamespace

    writer = SummaryWriter(str(tmp_path))
    sink = tb.TensorBoardSink(writer=writer, every=2, figures=False)
    sink.MAX_BUFFERED = 8
    trainer = SimpleNamespace(global_step=0, log_every_n_steps=2)
    monitor = SimpleNamespace(forecast=None, planned_steps=100)
    for step in range(1, 41):  # one observation per call, as the monitor's flushes do
        obs = {"step": step, "loss": 3.0 / step, "flops": 1e9 * step, "tokens": 64.0 * step}
        sink.on_observation(trainer, None, monitor, [obs])
        if step == 15:  # 8 were due by step 14 (1, 2, 4, ..., 14; 15 is not due): one batch out
            writer.flush()
            assert [e.step for e in reload(tmp_path).Scalars("scaling/observed_loss")] == [1, *range(2, 15, 2)]
    assert [obs["step"] for obs, _ in sink.series.due] == [32, 34, 36, 38, 40]  # 16..30 went out at step 30
    sink.close()
    writer.close()
    ea = reload(tmp_path)
    assert [e.step for e in ea.Scalars("scaling/observed_loss")] == [1, *range(2, 41, 2)]
    assert ea.Scalars("scaling/tokens")[-1].value == 64.0 * 40


class RecordingMonitor:
    """A monitor with the attributes MonitorView documents, recording each one read."""

    def __init__(self, **attributes):
        object.__setattr__(self, "read", set())
        for name, value in attributes.items():
            object.__setattr__(self, name, value)

    def __getattribute__(self, name):
        if name != "read" and not name.startswith("__"):
            object.__getattribute__(self, "read").add(name)
        return object.__getattribute__(self, name)


def test_the_sink_reads_the_monitor_through_its_documented_view_only(tmp_path):
    pytest.importorskip("matplotlib")
    from types import SimpleNamespace

    import lightning_scaling as ls
    from lightning_scaling.monitor.history import LossHistory
    from lightning_scaling.monitor.monitoring import Forecast
    from lightning_scaling.tensorboard.view import MONITOR_ATTRIBUTES

    history = LossHistory()
    steps = np.arange(1, 201, dtype=float)
    loss = 2 + 3 * steps**-0.4
    for s, y in zip(steps, loss):
        history.append(step=s, key=s, loss=y, tokens=64 * s, flops=1e9 * s)
    fit = ls.fit_curve(steps, loss)
    lo, hi = fit.interval(400.0, level=0.9)
    forecast = Forecast(step=200, final_loss=float(fit.predict(400.0)), lower=float(lo), upper=float(hi), level=0.9,
                        law=fit.law, target_step=400, fit=fit)
    monitor = RecordingMonitor(history=history, forecast=forecast, forecasts=[forecast], planned_steps=400.0,
                               level=0.9, loss_name="train_loss", summary_path=None,
                               summary=lambda trainer: {"run": "demo", "final_loss": float(loss[-1])})
    writer = SummaryWriter(str(tmp_path))
    sink = tb.TensorBoardSink(writer=writer, every=10, figure_process=False)
    trainer = SimpleNamespace(global_step=200, log_every_n_steps=10)
    sink.setup(trainer, None, monitor)
    sink.on_observation(trainer, None, monitor, [{"step": 200, "loss": float(loss[-1]), "flops": 2e11,
                                                  "tokens": 12800.0}])
    sink.on_refit(trainer, None, monitor, forecast)
    sink.on_train_end(trainer, None, monitor)
    writer.close()
    assert monitor.read == set(MONITOR_ATTRIBUTES)
    ea = reload(tmp_path)
    assert tb.missing_tags(sink.layout, ea.Tags()["scalars"]) == []
    assert set(ea.Tags()["images"]) == {"scaling/figure/loss_vs_compute", "scaling/figure/forecast_history"}
    assert ea.Tensors("scaling/summary/text_summary")
