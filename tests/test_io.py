"""lightning_scaling.io on real files: CSV, run summaries, TensorBoard event files."""

import json
import os

import numpy as np
import pytest

from lightning_scaling.errors import InvalidInputError
from lightning_scaling.io import (
    SUMMARY_FILENAME,
    event_files,
    find_runs,
    load_run,
    read_csv,
    read_scalars,
    read_summary,
)

SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter


def write_scalars(logdir, series, **kw):
    """series: {tag: [(step, value), ...]} written with torch's SummaryWriter."""
    w = SummaryWriter(str(logdir), **kw)
    for tag, points in series.items():
        for step, value in points:
            w.add_scalar(tag, value, step)
    w.close()
    return [os.path.join(logdir, f) for f in sorted(os.listdir(logdir)) if "tfevents" in f]


def summary_dict(**over):
    d = {
        "format": "lightning-scaling/run-summary", "version": 1, "run": "r", "n_params": 1e6,
        "tokens": 2e8, "flops": 1.2e15, "steps": 100, "final_loss": 3.1, "loss_name": "train_loss",
        "x_axis": "step",
        "curve": {"step": [10, 50, 100], "tokens": None, "flops": [1.2e14, 6e14, 1.2e15],
                  "loss": [5.0, 3.5, 3.1]},
        "fit": None,
        "forecast": {"final_loss": 3.0, "lower": 2.9, "upper": 3.2, "level": 0.9, "step": 100,
                     "law": "power", "target_step": 200},
        "forecasts": [], "schedule": None, "warnings": ["w1"], "stopped_reason": None,
    }
    d.update(over)
    return d


# -- CSV ------------------------------------------------------------------------------


def test_read_csv_blank_cells_are_nan(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("step,loss,lr\n1,3.5,\n2,,0.1\n\n3,3.0,0.1\n")
    cols = read_csv(p)
    assert list(cols) == ["step", "loss", "lr"]
    np.testing.assert_array_equal(cols["step"], [1, 2, 3])
    assert np.isnan(cols["loss"][1]) and np.isnan(cols["lr"][0])


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ("step,loss\n", "no data rows"),
    ("step,loss\n1,abc\n", "row 2, column 'loss'"),
])
def test_read_csv_bad_input_is_one_clear_error(tmp_path, text, message):
    p = tmp_path / "c.csv"
    p.write_text(text)
    with pytest.raises(InvalidInputError, match=message):
        read_csv(p)


def test_read_csv_missing_file(tmp_path):
    with pytest.raises(InvalidInputError, match="no such file"):
        read_csv(tmp_path / "nope.csv")


# -- run summaries --------------------------------------------------------------------


def test_read_summary_keeps_unknown_keys(tmp_path):
    p = tmp_path / SUMMARY_FILENAME
    p.write_text(json.dumps(summary_dict(new_key={"x": 1})))
    assert read_summary(p)["new_key"] == {"x": 1}


@pytest.mark.parametrize("content, message", [
    (json.dumps(summary_dict(version=2)), "version 2 is newer.*upgrade"),
    (json.dumps(summary_dict(version="one")), "invalid version"),
    (json.dumps({"format": "something-else", "version": 1}), "not a lightning-scaling run summary"),
    ("{not json", "not valid JSON"),
])
def test_read_summary_refuses_clearly(tmp_path, content, message):
    p = tmp_path / SUMMARY_FILENAME
    p.write_text(content)
    with pytest.raises(InvalidInputError, match=message):
        read_summary(p)


# -- event files ----------------------------------------------------------------------


def test_read_scalars_matches_event_accumulator(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_scalars(tmp_path, {"train_loss": [(s, 5.0 / (s + 1)) for s in range(0, 300, 3)],
                             "scaling/flops": [(s, 1e18 * s) for s in range(0, 300, 30)]})
    ours = read_scalars(tmp_path)
    ea = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    ea.Reload()
    assert set(ours.tags()) == set(ea.Tags()["scalars"])
    for tag in ours.tags():
        steps, values = ours.series[tag]
        ref = ea.Scalars(tag)
        np.testing.assert_array_equal(steps, [e.step for e in ref])
        np.testing.assert_array_equal(values, [e.value for e in ref])
    assert ours.problems == []
    only = read_scalars(tmp_path, tags={"train_loss"})
    assert only.tags() == ["train_loss"]


def test_read_scalars_tf2_tensor_scalars(tmp_path):
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    w = EventFileWriter(str(tmp_path))
    for step in range(5):
        value = Summary.Value(tag="loss", tensor=TensorProto(dtype=1, float_val=[1.0 / (step + 1)]))
        w.add_event(Event(step=step, summary=Summary(value=[value])))
    value = Summary.Value(tag="loss", tensor=TensorProto(
        dtype=2, tensor_content=np.array([0.125], "<f8").tobytes()))
    w.add_event(Event(step=7, summary=Summary(value=[value])))
    w.close()
    steps, values = read_scalars(tmp_path).series["loss"]
    np.testing.assert_array_equal(steps, [0, 1, 2, 3, 4, 7])
    np.testing.assert_allclose(values, [1, 0.5, 1 / 3, 0.25, 0.2, 0.125], rtol=1e-6)


def test_truncated_file_reads_complete_records_silently(tmp_path):
    (path,) = write_scalars(tmp_path, {"loss": [(s, float(s)) for s in range(50)]})
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-7])  # the last record is half written: a live file
    out = read_scalars(path)
    steps, _ = out.series["loss"]
    assert steps[0] == 0 and 45 <= steps[-1] < 49
    assert out.problems == []


def test_corrupt_record_stops_reading_and_says_where(tmp_path):
    (path,) = write_scalars(tmp_path, {"loss": [(s, float(s)) for s in range(50)]})
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 40] = b"\xff" * 40
    open(path, "wb").write(bytes(data))
    out = read_scalars(path)
    steps, _ = out.series["loss"]
    assert 10 < steps.size < 50
    assert any("corrupt" in p or "unparseable" in p for p in out.problems)


def test_resumed_run_later_write_wins(tmp_path):
    write_scalars(tmp_path / "r", {"loss": [(s, 1.0) for s in range(10)]}, filename_suffix=".a")
    write_scalars(tmp_path / "r", {"loss": [(s, 2.0) for s in range(5, 15)]}, filename_suffix=".b")
    steps, values = read_scalars(tmp_path / "r").series["loss"]
    np.testing.assert_array_equal(steps, np.arange(15))
    assert values[4] == 1.0 and values[5] == 2.0


# -- runs under a log directory ---------------------------------------------------------


def test_find_runs_and_load(tmp_path):
    (tmp_path / "a" / "version_0").mkdir(parents=True)
    (tmp_path / "a" / "version_0" / SUMMARY_FILENAME).write_text(json.dumps(summary_dict()))
    write_scalars(tmp_path / "b", {"train/loss": [(s, 4.0 - s / 100) for s in range(100)]})
    (tmp_path / ".hidden").mkdir()
    write_scalars(tmp_path / ".hidden", {"loss": [(0, 1.0)]})
    (tmp_path / "notes").mkdir()
    runs, problems = find_runs(tmp_path)
    assert [r.name for r in runs] == ["a/version_0", "b"] and problems == []
    a = load_run(runs[0])
    assert a.source == "summary" and a.final_loss == 3.1 and a.flops_total == 1.2e15
    assert a.tokens is None and a.flops.tolist() == [1.2e14, 6e14, 1.2e15] and a.law == "power"
    b = load_run(runs[1])
    assert b.source == "events" and b.loss_name == "train/loss" and b.steps == 100
    assert b.final_loss == pytest.approx(4.0 - 0.99, abs=1e-6)


def test_find_runs_follows_linked_run_folders_once_and_skips_the_panels_series_runs(tmp_path):
    from lightning_scaling.io.runs import SERIES_RUN_NAMES
    from lightning_scaling.tensorboard.layout import SERIES_RUNS

    assert SERIES_RUN_NAMES == set(SERIES_RUNS)  # the two lists agree
    elsewhere = tmp_path / "elsewhere" / "sweep_run"
    elsewhere.mkdir(parents=True)
    (elsewhere / SUMMARY_FILENAME).write_text(json.dumps(summary_dict()))
    for name in ("scaling_observed", "scaling_forecast"):  # the panels' series: part of the run above
        write_scalars(elsewhere / name, {"Scaling law/2 loss vs trend band": [(1, 2.0)]})
    logs = tmp_path / "logs"
    logs.mkdir()
    os.symlink(elsewhere, logs / "linked")  # a run folder linked in
    os.symlink(logs, logs / "linked" / "loop")  # and a link back up: read once, no loop
    write_scalars(logs / "scaling_observed", {"loss": [(0, 1.0), (1, 0.9)]})  # not inside a run: a run
    runs, problems = find_runs(logs)
    assert [r.name for r in runs] == ["linked", "scaling_observed"] and problems == []
    assert load_run(runs[0]).source == "summary"


def test_newer_summary_falls_back_to_event_scalars(tmp_path):
    write_scalars(tmp_path, {"loss": [(s, 2.0) for s in range(10)]})
    (tmp_path / SUMMARY_FILENAME).write_text(json.dumps(summary_dict(version=9)))
    (run,) = find_runs(tmp_path)[0]
    rec = load_run(run)
    assert rec.source == "events" and "newer" in rec.problems[0]


def test_events_with_callback_scalars_and_logger_prefix(tmp_path):
    write_scalars(tmp_path, {"pre-train_loss": [(s, 3.0) for s in range(10)],
                             "pre-scaling/forecast_final_loss": [(9, 2.5)],
                             "pre-scaling/forecast_lower": [(9, 2.4)],
                             "pre-scaling/forecast_upper": [(9, 2.7)],
                             "pre-scaling/flops": [(s, 1e18 * (s + 1)) for s in range(10)]})
    (run,) = find_runs(tmp_path)[0]
    rec = load_run(run)
    assert rec.loss_name == "pre-train_loss"
    assert rec.forecast["final_loss"] == 2.5 and rec.forecast["upper"] == pytest.approx(2.7)
    assert rec.flops_total == pytest.approx(1e19, rel=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "no such directory"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "not a directory"),
])
def test_find_runs_bad_logdir(tmp_path, make, message):
    with pytest.raises(InvalidInputError, match=message):
        find_runs(make(tmp_path))


def test_event_files_order_writer_numbers_as_numbers(tmp_path):
    names = ["events.out.tfevents.1700000000.host.42.10.b", "events.out.tfevents.1700000000.host.42.9.a",
             "events.out.tfevents.1699999999.host.42.11"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    assert [os.path.basename(p) for p in event_files(tmp_path)] == [names[2], names[1], names[0]]
