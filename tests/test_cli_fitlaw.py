"""``lightning-scaling fit-law`` end to end: CSV, a folder of run summaries, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lightning_scaling.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHINCHILLA = os.path.join(ROOT, "tests", "data", "chinchilla_points.csv")
TRUE = {"E": 1.8, "A": 400.0, "B": 1800.0, "alpha": 0.34, "beta": 0.37}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lightning_scaling", "fit-law", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def summary(run, n_params, tokens, final_loss, version=1):
    """A run summary as the callback writes it (schema in docs/dev/TEAM.md)."""
    return {"format": "lightning-scaling/run-summary", "version": version, "run": run,
            "n_params": n_params, "tokens": tokens, "flops": None if n_params is None or tokens is None
            else 6.0 * n_params * tokens, "steps": 1000, "final_loss": final_loss,
            "loss_name": "val_loss", "x_axis": "tokens",
            "curve": {"step": [0, 1000], "tokens": [0, tokens], "flops": None, "loss": [10.0, final_loss]},
            "fit": None, "forecast": None, "forecasts": [], "schedule": None, "warnings": [],
            "stopped_reason": None, "extra_key_from_the_future": {"ignored": True}}


@pytest.fixture()
def summary_dir(tmp_path):
    rng = np.random.default_rng(0)
    k = 0
    for n in np.logspace(7, 9, 5):
        for tpp in (5, 20, 80):
            d = n * tpp
            loss = (TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]) \
                * np.exp(rng.normal(0, 0.003))
            run_dir = tmp_path / f"run{k:02d}" / "version_0"
            run_dir.mkdir(parents=True)
            (run_dir / "scaling_summary.json").write_text(json.dumps(summary(f"run{k:02d}", n, d, loss)))
            k += 1
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "scaling_summary.json").write_text('{"format": "lightning-scaling/run-summary", "vers')
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "scaling_summary.json").write_text(json.dumps(summary("newer", 1e8, 2e9, 3.0, version=2)))
    unsized = tmp_path / "unsized"
    unsized.mkdir()
    (unsized / "scaling_summary.json").write_text(json.dumps(summary("unsized", None, 2e9, 3.0)))
    return tmp_path


def test_csv_end_to_end_json_budget_and_plot(tmp_path):
    png = tmp_path / "iso.png"
    res = run_cli(CHINCHILLA, "--budget", "5.76e23", "--bootstrap", "40", "--json", "--plot", str(png))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["columns"] == {"N": "N_params", "D": "D_tokens", "loss": "loss"}
    assert out["n_points"] == 245 and out["units"]["loss"] == "nats"
    for k, (lo, hi) in out["intervals"].items():
        assert lo <= out["params"][k] <= hi
    (opt,) = out["compute_optimal"]
    assert opt["flops"] == 5.76e23
    assert 6 * opt["n_params"] * opt["tokens"] == pytest.approx(5.76e23, rel=1e-9)
    assert opt["intervals"]["N"][0] < opt["n_params"] < opt["intervals"]["N"][1]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_text_output_names_units(capsys):
    assert main(["fit-law", CHINCHILLA, "--bootstrap", "0", "--budget", "1e21"]) == 0
    out = capsys.readouterr().out
    assert "no intervals" in out
    assert "parameters" in out and "tokens" in out and "nats" in out and "FLOPs" in out
    assert "compute-optimal for C = 1e+21 FLOPs" in out


def test_folder_of_run_summaries_skips_and_reports_bad_files(summary_dir):
    res = run_cli(str(summary_dir), "--json", "--bootstrap", "30")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["n_points"] == 15
    assert out["columns"] == {"N": "n_params", "D": "tokens", "loss": "final_loss"}
    assert len(out["skipped"]) == 3
    notes = [line for line in res.stderr.splitlines() if "note:" in line]
    assert len(notes) == 3
    assert any("broken" in n and "JSON" in n for n in notes)
    assert any("newer" in n and "version 2" in n for n in notes)
    assert any("unsized" in n and "n_params" in n for n in notes)
    assert out["params"]["alpha"] == pytest.approx(TRUE["alpha"], abs=0.05)


def test_bad_input_in_a_subprocess_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("N,D,loss\n1e8,1e9,3.1\n2e8,abc,3.0\n")
    res = run_cli(str(bad))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "row 3" in res.stderr and "'abc'" in res.stderr


def _write(tmp_path, text, name="runs.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("make_args, match", [
    (lambda t: [str(t / "missing.csv")], "no such file"),
    (lambda t: [_write(t, "")], "empty"),
    (lambda t: [_write(t, "N,D,loss\n")], "no data rows"),
    (lambda t: [_write(t, "size,D,loss\n1,2,3\n")], "no N"),
    (lambda t: [_write(t, "N,D,loss\n1,2,3\n"), "--loss", "val"], "no column 'val'"),
    (lambda t: [_write(t, "N,D,loss\n1e8,1e9,3\n2e8,2e9,2.9\n")], "at least 5"),
    (lambda t: [_write(t, "N,D,loss\n" + "".join(f"1e8,{d},3\n" for d in (1e9, 2e9, 3e9, 4e9, 5e9)))],
     "same model size"),
    (lambda t: [_write(t, "N,D,loss\n" + "".join(f"{n},{n * 20},3\n" for n in (1e7, 1e8, 1e9, 2e9, 5e9)))],
     "tokens-per-parameter"),
    (lambda t: [_write(t, "N,D,loss\n" + "".join(f"{n},{n * 7},-1\n" for n in (1e7, 1e8, 1e9, 2e9, 5e9)))],
     "> 0"),
    (lambda t: [str(t)], "no scaling_summary.json"),
    (lambda t: [CHINCHILLA, "--budget", "-1"], "--budget"),
    (lambda t: [CHINCHILLA, "--level", "1.5"], "--level"),
    (lambda t: [CHINCHILLA, "--bootstrap", "-3"], "--bootstrap"),
])
def test_bad_input_is_one_line_on_stderr_and_exit_2(tmp_path, capsys, make_args, match):
    assert main(["fit-law", *make_args(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("lightning-scaling fit-law: error:")
    assert match in captured.err


def test_folder_where_no_summary_is_usable(tmp_path, capsys):
    d = tmp_path / "only_newer"
    d.mkdir()
    (d / "scaling_summary.json").write_text(json.dumps(summary("x", 1e8, 1e9, 3.0, version=7)))
    assert main(["fit-law", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none of 1 run summaries is usable" in err and "version 7" in err


def test_plot_without_matplotlib_fails_before_fitting(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert main(["fit-law", CHINCHILLA, "--plot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs matplotlib" in err and "lightning-scaling[plots]" in err
    assert not (tmp_path / "x.png").exists()
