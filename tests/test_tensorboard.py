"""lightning_scaling.tensorboard without a Trainer: the layout, the writers, the state the panels
derive (smoothed loss, lagged and held trend, episodes), the verdict and the text, written with
a real SummaryWriter and read back with TensorBoard's EventAccumulator."""

import math
import os
from types import SimpleNamespace

import numpy as np
import pytest

from lightning_scaling import tensorboard as tb
from lightning_scaling.tensorboard.state import END_AFTER, PanelState
from lightning_scaling.tensorboard.verdict import (
    final_verdict,
    informative,
    judged_forecast,
)

SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.custom_scalar import layout_pb2  # noqa: E402


def reload(path):
    ea = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    ea.Reload()
    return ea


def test_layout_round_trips_and_each_series_is_a_run_of_its_own(tmp_path):
    tags = tb.PanelTags()
    layout = tb.build_layout(tags, "convex_bound", ["L0", "A", "alpha", "C"], level=0.8, target_step=800)
    w = SummaryWriter(str(tmp_path))
    tb.write_layout(w, layout, step=3)
    w.close()
    (event,) = reload(tmp_path).Tensors(tb.LAYOUT_TAG)
    back = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    assert back == layout and event.step == 3
    assert [c.title for c in back.category] == [tb.CATEGORY, tb.CATEGORY_DETAILS]
    glance = {c.title: c for c in back.category[0].chart}
    forecast = glance[f"{tb.CHART_FORECAST.replace('interval', '80% interval')} at step 800"]
    assert [(s.value, s.lower, s.upper) for s in forecast.margin.series] == [
        (tags.margin_forecast, tags.margin_forecast_lower, tags.margin_forecast_upper)]
    assert f"{tb.CHART_TREND} (80%)" in glance and tb.CHART_BEHIND in glance
    assert [c.title for c in back.category[1].chart] == ["convex_bound: L0", "convex_bound: A", "convex_bound: alpha",
                                                         "convex_bound: C"]
    # the run order gives TensorBoard's colours: observed next to both forecast and trend
    assert tb.SERIES_RUNS.index(tb.RUN_OBSERVED) == 1 and tb.SERIES_RUNS[0] == tb.RUN_FORECAST
    assert tb.SERIES_RUNS[2] == tb.RUN_TREND
    # "Scaling law/..." sorts before Lightning's "epoch" and "hp_metric" (capitals first)
    assert sorted([tags.forecast, "epoch", "hp_metric", tags.loss]) == [tags.forecast, tags.loss, "epoch", "hp_metric"]


def test_missing_tags_checks_margin_tags_and_multiline_regexes():
    tags = tb.PanelTags()
    layout = tb.build_layout(tags, "mmf", ["E"])
    exact, regexes = tb.layout_tags(layout)
    assert tags.margin_loss_upper in exact and regexes == ["^scaling/param/mmf/E$"]
    everything = exact | {tags.param("mmf", "E")}
    assert tb.missing_tags(layout, everything) == []
    assert tb.missing_tags(layout, everything - {tags.margin_loss_upper}) == [tags.margin_loss_upper]
    # anchored: a longer tag does not satisfy the chart of another
    assert tb.missing_tags(layout, (everything - {tags.param("mmf", "E")}) | {"scaling/param/mmf/Ex"}) == [
        "^scaling/param/mmf/E$"]


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


def forecast(step, final, lower, upper, target=100, level=0.9, fit=None, law="power"):
    return SimpleNamespace(step=step, final_loss=final, lower=lower, upper=upper, target_step=target, level=level,
                           fit=fit, law=law, x_axis="step", target_loss=None)


def test_the_verdict_judges_a_forecast_made_before_the_last_stretch_and_says_missed():
    early, late, last = forecast(50, 2.0, 1.9, 2.1), forecast(90, 2.05, 2.0, 2.1), forecast(100, 2.3, 1.5, 3.0)
    verdict, _ = final_verdict(2.25, 100, [early, late, last])
    assert verdict.forecast is late and verdict.word == "missed (above)"  # not the last, which has seen it all
    assert "Final verdict: missed (above)" in verdict.sentence() and "made at step 90" in verdict.sentence()
    assert final_verdict(2.02, 100, [early, late, last])[0].word == "inside"
    assert final_verdict(1.95, 100, [early, late, last])[0].word == "missed (below)"
    # a run that ended behind its trend is judged against the forecast it fell behind
    episode = SimpleNamespace(since=60, held=early)
    assert judged_forecast([early, late, last], episode)[0] is early
    # no verdict before the planned end; early forecasts with huge intervals are not drawn
    assert final_verdict(2.25, 70, [early])[0] is None
    assert not informative(forecast(5, 2.0, 0.12, 9.0)) and informative(late)


def test_state_smooths_compares_with_a_lagged_fit_and_holds_it_through_an_episode():
    state = PanelState()
    state.configure(planned_steps=400)  # window 10 steps, trend lag 20 steps
    fits = {s: forecast(s, 2.0, 1.9, 2.1, target=400, fit=SimpleNamespace(ok=True)) for s in (100, 120, 140, 160)}
    for step in range(1, 161):
        state.observe({"step": step, "loss": 2.0 + (step % 2), "tokens": 10.0 * step})
        if step in fits:
            state.add_forecast(fits[step])
    point = state.point()
    assert (point.step, point.n, point.loss, point.x["step"], point.x["tokens"]) == (160, 10, 2.5, 155.5, 1555.0)
    assert state.trend_forecast(160) == (fits[140], None)  # at least 5% of the run earlier
    state.on_event({"kind": "divergence", "step": 150, "message": "spike"})
    episode = state.on_event({"kind": "behind_trend", "step": 162, "message": "behind",
                              "detail": {"since_step": 150, "reference_step": 120}})
    assert episode.held is fits[140] and episode.since == 150 and state.open_episode is episode  # newest before
    assert state.on_event({"kind": "behind_trend", "step": 170, "message": "again"}) is None  # same episode
    assert [m.kind for m in state.marks] == ["divergence", "behind_trend", "behind_trend"]
    assert state.trend_forecast(155) == (fits[140], episode)  # the held fit, from the onset on
    for i, loss in enumerate([2.3, 2.3, 2.0, 2.0, 2.0, 2.0]):  # 15% above, then back inside its band
        p = tb.state.Point(step=170 + 10 * i, loss=loss, raw=loss, n=10, x={})
        state.place(p, 2.0, 1.9, 2.1, episode)
        assert p.behind == (pytest.approx(15.0) if i < 2 else 0.0)
    assert episode.end == 170 + 10 * (2 + END_AFTER - 1) and episode.peak == pytest.approx(15.0)
    assert state.open_episode is None and state.trend_forecast(300) == (fits[160], None)


def test_summary_text_puts_verdict_trend_and_warnings_first():
    summary = {
        "run": "demo", "x_axis": "step", "loss_name": "train_loss", "steps": 1000, "flops": 1.2e18, "tokens": 4e9,
        "fit": {"law": "saturating_power", "params": {"E": 1.9, "A": 120.0, "alpha": 0.31},
                "diagnostics": {"posterior_sd": {"alpha": 0.02}}},
        "forecast": {"final_loss": 2.3, "lower": 2.25, "upper": 2.36, "level": 0.9, "step": 990,
                     "law": "saturating_power", "target_step": 1000},
        "forecasts": [{"step": 500, "final_loss": 2.2, "lower": 2.15, "upper": 2.26, "target_step": 1000}],
        "warnings": ["step 402: ScalingLawMonitor: divergence: the loss spiked to 2.85",
                     "step 410: ScalingLawMonitor: behind trend: the smoothed loss 2.37 at step 410"],
    }
    status = {"finished": True, "observed": 2.31, "smoothing_steps": 25, "planned": 1000,
              "verdict_line": "**Final verdict: missed (above)**: ...", "trend_line": "**Behind trend since step 402**"}
    md = tb.summary_markdown(summary, status)
    lines = md.splitlines()
    order = [next(i for i, line in enumerate(lines) if key in line) for key in
             ("Final verdict", "Behind trend since", "Heading for 2.3", "Warnings (2: 1 behind trend, 1 divergence)",
              "behind trend: the smoothed", "divergence: the loss", "**Law:**")]
    assert order == sorted(order) and order[-1] < 20  # what matters first, above the fold
    assert "L = E + A * x**-alpha" in md and "not estimated" not in md
    assert "| alpha | 0.31 | 0.02 |" in md and "| E | 1.9 |  |" in md  # an sd column: only where known
    assert "| step 500 | 50% | 2.2 | [2.15, 2.26] | above |" in md and "1.2e+18 FLOPs" in md


def test_tabulated_trend_band_matches_the_fit():
    import lightning_scaling as ls
    from lightning_scaling.monitor.monitoring import Forecast
    from lightning_scaling.tensorboard.band import band_at, tabulate_band

    rng = np.random.default_rng(0)
    x = np.arange(1, 400, dtype=float)
    fit = ls.fit_curve(x, (2 + 3 * x**-0.4) * np.exp(0.01 * rng.standard_normal(x.size)))
    assert fit.ok
    f = Forecast(step=399, final_loss=float(fit.predict(1000)), lower=0.0, upper=0.0, level=0.9,
                 law=fit.law, target_step=1000, fit=fit)
    band = tabulate_band(f)
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
        assert helper.submit({"bad": ("trend", {"no_such_argument": 1})}) is not None
        assert helper.submit({"x": ("trend", {})}) is None  # one job at a time
        (reply,) = helper.wait(60)
        assert "no_such_argument" in reply["error"] and reply["images"] == {}
        job = {"step": [10, 20, 30], "loss": [2.0, 1.9, 1.85], "trend": [2.0, 1.9, 1.8], "lower": [1.9, 1.8, 1.7],
               "upper": [2.1, 2.0, 1.9], "forecast": (1.8, 1.7, 1.9), "target_step": 40.0,
               "episodes": [(20, None, "behind since 20")], "marks": [(20, "behind_trend")]}
        job_id = helper.submit({"t": ("trend", job)})
        (reply,) = helper.wait(60)
        png, height, width = reply["images"]["t"]
        assert reply["id"] == job_id and reply["error"] is None
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and (height, width) == (480, 640)
        assert helper.render_cpu_seconds > 0 and helper.cpu_seconds > helper.render_cpu_seconds
        # a job queued behind a pending one (the end of training's): both answered, in order
        first = helper.submit({"a": ("trend", job)})
        queued = helper.submit({"b": ("trend", job)}, queue=True)
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
    assert np.all(to_plot_axis(steps, None, grid) == grid)
    assert np.isnan(to_plot_axis(steps, np.full(6, np.nan), grid)).all()


def test_per_step_series_are_buffered_then_written_into_their_runs(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    sink = tb.TensorBoardSink(writer=writer, every=2, figures=False)
    sink.MAX_BUFFERED = 8
    trainer = SimpleNamespace(global_step=0, log_every_n_steps=2)
    monitor = SimpleNamespace(forecast=None, planned_steps=200)  # smoothing over 5 steps
    observed = tmp_path / tb.RUN_OBSERVED
    for step in range(1, 41):  # one observation per call, as the monitor's flushes do
        obs = {"step": step, "loss": 3.0 / step, "flops": 1e9 * step, "tokens": 64.0 * step}
        sink.on_observation(trainer, None, monitor, [obs])
        if step == 15:  # 8 were due by step 14 (1, 2, 4, ..., 14; 15 is not due): one batch out
            sink.series.runs.flush()
            assert [e.step for e in reload(observed).Scalars(tb.PanelTags().loss)] == [1, *range(2, 15, 2)]
    assert [p.step for p in sink.series.due] == [32, 34, 36, 38, 40]  # 16..30 went out at step 30
    sink.close()
    writer.close()
    assert sorted(os.listdir(tmp_path / tb.RUN_OBSERVED)) and set(tb.SERIES_RUNS) - {tb.RUN_TARGET} <= set(
        os.listdir(tmp_path))
    points = reload(observed).Scalars(tb.PanelTags().loss)
    assert [e.step for e in points] == [1, *range(2, 41, 2)]
    assert points[-1].value == pytest.approx(np.mean([3.0 / s for s in range(36, 41)]), rel=1e-6)  # smoothed


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


def run_sink(tmp_path, monitor, losses, *, every=5, refit_every=20, events=(), figures=False):
    """Feed ``losses`` (one per step) through a sink as the monitor would, refitting every
    ``refit_every`` steps; returns (sink, writer's directory)."""
    import lightning_scaling as ls
    from lightning_scaling.monitor.monitoring import make_forecast

    writer = SummaryWriter(str(tmp_path))
    sink = tb.TensorBoardSink(writer=writer, every=every, figures=figures, figure_process=False)
    trainer = SimpleNamespace(global_step=0, log_every_n_steps=every)
    sink.setup(trainer, None, monitor)
    events = dict(events)
    for step, loss in enumerate(losses, start=1):
        monitor.history.append(step=step, key=step, loss=loss, tokens=64.0 * step, flops=1e9 * step)
        trainer.global_step = step
        if step in events:
            sink.on_event(trainer, None, monitor, events[step])
        sink.on_observation(trainer, None, monitor, [{"step": step, "loss": loss, "tokens": 64.0 * step,
                                                     "flops": 1e9 * step}])
        if step % refit_every == 0:
            f = make_forecast(monitor.history.arrays(), fit_fn=ls.fit_curve, target_step=monitor.planned_steps,
                              level=0.9)
            monitor.forecasts.append(f)
            monitor.forecast = f
            sink.on_refit(trainer, None, monitor, f)
    sink.on_train_end(trainer, None, monitor)
    writer.close()
    return sink


def stand_in_monitor(losses, planned, **extra):
    from lightning_scaling.monitor.history import LossHistory

    return RecordingMonitor(history=LossHistory(), forecast=None, forecasts=[], planned_steps=float(planned),
                            level=0.9, loss_name="train_loss", summary_path=None,
                            summary=lambda trainer: {"run": "demo", "steps": len(losses), "warnings": extra.get(
                                "warnings", []), "final_loss": float(np.mean(losses[-5:]))})


def test_a_fault_stays_above_the_held_trend_and_the_verdict_says_missed(tmp_path):
    from lightning_scaling.tensorboard.view import MONITOR_ATTRIBUTES

    rng = np.random.default_rng(1)
    steps = np.arange(1, 401, dtype=float)
    losses = ((2 + 3 * steps**-0.4) * np.exp(0.01 * rng.standard_normal(steps.size))
              * np.where(steps > 200, 1.10, 1.0)).tolist()  # +10% from step 201 on
    behind = {"kind": "behind_trend", "step": 215, "message": "ScalingLawMonitor: behind trend: ...",
              "detail": {"since_step": 201, "reference_step": 180}}
    monitor = stand_in_monitor(losses, 400, warnings=["step 215: ScalingLawMonitor: behind trend: ..."])
    sink = run_sink(tmp_path, monitor, losses, events=[(215, behind)], figures=True)
    assert monitor.read == set(MONITOR_ATTRIBUTES)  # read through MonitorView only
    tags = sink.tags
    held = next(f for f in monitor.forecasts if f.step == 200)  # the newest made before the onset (201)
    trend = {e.step: e.value for e in reload(tmp_path / tb.RUN_TREND).Scalars(tags.loss)}
    upper = {e.step: e.value for e in reload(tmp_path / tb.RUN_UPPER).Scalars(tags.loss)}
    observed = {e.step: e.value for e in reload(tmp_path / tb.RUN_OBSERVED).Scalars(tags.loss)}
    behind_pct = {e.step: e.value for e in reload(tmp_path / tb.RUN_OBSERVED).Scalars(tags.behind)}
    # after the fault the trend is the held fit (from step 200), not the later fits that absorbed it
    assert trend[400] == pytest.approx(float(held.fit.predict(395.5)), rel=2e-3)
    assert all(observed[s] > upper[s] for s in range(250, 401, 5))
    assert behind_pct[400] == pytest.approx(100 * (observed[400] / trend[400] - 1), rel=1e-3) and behind_pct[400] > 5
    assert max(v for s, v in behind_pct.items() if s < 200) == 0.0
    assert observed[400] == pytest.approx(np.mean(losses[-10:]), rel=1e-6)  # the smoothed loss, 2.5% of the run
    ea = reload(tmp_path)
    texts = ea.Tensors(tags.summary + "/text_summary")
    assert len(texts) >= 3 and texts[0].step < 100  # written at refits, not only at the end
    md = texts[-1].tensor_proto.string_val[0].decode()
    assert "**Final verdict: missed (above)**" in md and "forecast made at step 200" in md
    assert "**Behind trend since step 201**" in md and "Heading for" in md
    assert set(ea.Tags()["images"]) == {tags.figure_trend, tags.figure_compute}
    assert tb.missing_tags(sink.layout, {t for d in [tmp_path, *[tmp_path / r for r in tb.SERIES_RUNS[:5]]]
                                         for t in reload(d).Tags()["scalars"]}) == []


def test_the_layout_follows_the_law_in_use(tmp_path):
    from lightning_scaling.monitor.history import LossHistory

    history = LossHistory()
    writer = SummaryWriter(str(tmp_path))
    sink = tb.TensorBoardSink(writer=writer, every=5, figures=False)
    trainer = SimpleNamespace(global_step=0, log_every_n_steps=5)
    monitor = SimpleNamespace(history=history, forecast=None, forecasts=[], planned_steps=100.0, level=0.9)
    for step, (law, names) in ((10, ("mmf", ("E", "A", "x_h", "alpha"))), (20, ("mmf", ("E", "A", "x_h", "alpha"))),
                               (30, ("convex_bound", ("L0", "A", "alpha", "C")))):
        trainer.global_step = step
        fit = SimpleNamespace(ok=True, law=law, params=dict.fromkeys(names, 1.0))
        f = forecast(step, 2.0, 1.9, 2.1, target=100, fit=fit, law=law)
        f.target_loss = 1.95  # the target line: a run of its own in the forecast chart
        sink.on_refit(trainer, None, monitor, f)
    sink.close()
    writer.close()
    target = reload(tmp_path / tb.RUN_TARGET).Scalars(tb.PanelTags().forecast)
    assert [e.step for e in target] == [10, 20, 30] and target[-1].value == pytest.approx(1.95)
    layouts = reload(tmp_path).Tensors(tb.LAYOUT_TAG)
    assert [e.step for e in layouts] == [10, 30]  # rewritten when the law changed, at a later step
    last = layout_pb2.Layout.FromString(layouts[-1].tensor_proto.string_val[0])
    assert [c.title for c in last.category[1].chart] == ["convex_bound: L0", "convex_bound: A",
                                                         "convex_bound: alpha", "convex_bound: C"]
    params = reload(tmp_path).Tags()["scalars"]
    assert "scaling/param/mmf/x_h" in params and "scaling/param/convex_bound/L0" in params  # no chart mixes laws
