"""`lightning-scaling report LOGDIR` on real summaries and event files."""

import json
import os
import subprocess
import sys

import pytest

from lightning_scaling.cli import main
from lightning_scaling.io import SUMMARY_FILENAME

from test_io import summary_dict, write_scalars


@pytest.fixture
def logdir(tmp_path):
    run_a = tmp_path / "lightning_logs" / "version_0"
    run_a.mkdir(parents=True)
    (run_a / SUMMARY_FILENAME).write_text(json.dumps(summary_dict(run="a")))
    write_scalars(tmp_path / "plain", {"loss": [(s, 4.0 * (s + 1) ** -0.2) for s in range(0, 400, 4)]})
    return tmp_path


def test_table_one_row_per_run(logdir, capsys):
    assert main(["report", str(logdir)]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["run", "source", "steps", "final"]
    assert len(lines) == 3 and err == ""
    row_a = next(line for line in lines if line.startswith("lightning_logs/version_0"))
    assert "3 [2.9, 3.2] @200" in row_a and "1.2e+15 FLOPs" in row_a and "power" in row_a
    row_b = next(line for line in lines if line.startswith("plain"))
    assert "events" in row_b


def test_the_warnings_column_shows_the_most_important_warning(tmp_path, capsys):
    warnings = ["step 402: ScalingLawMonitor: divergence: the loss spiked to 2.85 at step 402",
                "step 410: ScalingLawMonitor: behind trend: the smoothed loss 2.374 at step 410",
                "step 510: ScalingLawMonitor: divergence: the loss spiked to 2.2 at step 510"]
    run = tmp_path / "fault"
    run.mkdir()
    (run / SUMMARY_FILENAME).write_text(json.dumps(summary_dict(warnings=warnings)))
    assert main(["report", str(tmp_path)]) == 0
    row = capsys.readouterr().out.strip().splitlines()[1]
    assert "3: step 410: behind trend" in row  # not the last (a divergence), nor the first
    stopped = warnings + ["step 600: stopped: behind trend: the loss stayed above its band"]
    (run / SUMMARY_FILENAME).write_text(json.dumps(summary_dict(warnings=stopped)))
    assert main(["report", str(tmp_path)]) == 0
    assert "4: step 600: stopped" in capsys.readouterr().out


def test_json_and_plot(logdir, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "runs.png"
    assert main(["report", str(logdir), "--json", "--plot", str(png)]) == 0
    payload = json.loads(capsys.readouterr().out)
    runs = {r["run"]: r for r in payload["runs"]}
    assert runs["lightning_logs/version_0"]["forecast"]["upper"] == 3.2
    assert runs["plain"]["loss_name"] == "loss" and runs["plain"]["source"] == "events"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_bad_runs_are_reported_and_others_still_listed(logdir, capsys):
    corrupt = logdir / "corrupt"
    corrupt.mkdir()
    (corrupt / "events.out.tfevents.1.host").write_bytes(os.urandom(300))
    newer = logdir / "newer"
    newer.mkdir()
    (newer / SUMMARY_FILENAME).write_text(json.dumps(summary_dict(version=3)))
    assert main(["report", str(logdir)]) == 0
    out, err = capsys.readouterr()
    assert "lightning_logs/version_0" in out and "plain" in out
    assert "corrupt: no readable TensorBoard data" in err
    assert "newer: scaling_summary.json: run summary version 3 is newer" in err


def test_tag_option_for_runs_without_summary(tmp_path, capsys):
    write_scalars(tmp_path / "r", {"my/obj": [(s, 1.0 + 1 / (s + 1)) for s in range(20)]})
    assert main(["report", str(tmp_path)]) == 2
    assert "no loss tag" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--tag", "nope", "--tag", "my/obj"]) == 0
    assert "r " in capsys.readouterr().out


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "missing", "no such directory"),
    (lambda p: p, "no runs found"),
])
def test_nothing_readable_exits_2(tmp_path, capsys, setup, message):
    assert main(["report", str(setup(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_report_path_does_not_import_torch(logdir):
    code = ("import sys; from lightning_scaling.cli import main; rc = main(['report', sys.argv[1]]); "
            "bad = [m for m in ('torch', 'pytorch_lightning', 'lightning') if m in sys.modules]; "
            "sys.exit(10 if bad else rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(logdir)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
