"""``lightning-scaling extrapolate`` end to end: table, --json, --plot, and every bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_scaling.cli import main

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "lightning_scaling" / "data" / "gemstones_256x23.csv"
MODDED = Path(__file__).parent / "data" / "curves" / "modded_nanogpt_ValueEmbed_00008ea0.csv"


def cli(*args, cwd=REPO):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "lightning_scaling", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_readme_main_command_prints_a_table():
    r = cli("extrapolate", "lightning_scaling/data/gemstones_256x23.csv", "--x", "tokens", "--at", "3.5e11")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "tokens" in out and "90% interval" in out and "law:" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("3.5e+11"))
    loss, lo, hi = (float(v.strip("[],")) for v in row.split()[1:4])
    assert lo <= loss <= hi and 3.3 < loss < 3.45  # the run ends at 3.375 nats
    assert r.stderr == ""


def test_json_and_plot(tmp_path):
    png = tmp_path / "fit.png"
    r = cli("extrapolate", BUNDLED, "--x", "tokens", "--at", "3.5e11", "--at", "1e12",
            "--level", "0.8", "--json", "--plot", png)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [f["x"] for f in d["forecasts"]] == [3.5e11, 1e12]
    assert all(f["lower"] <= f["loss"] <= f["upper"] and f["level"] == 0.8 for f in d["forecasts"])
    assert d["fit"]["format"] == "lightning-scaling/curve-fit"
    assert d["x_unit"] == "tokens" and d["measured_rows"] == 175
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def run_main(capsys, *args):
    code = main(["extrapolate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path, text, name="c.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def good_rows(n=40):
    return "".join(f"{s},{2 + 30 * s ** -0.5:.6f}\n" for s in range(10, 10 * n + 1, 10))


@pytest.mark.parametrize("content, args, message", [
    (None, ["--at", "5"], "no such file"),
    ("", ["--at", "5"], "empty file"),
    ("step,loss\n", ["--at", "5"], "no data rows"),
    ("step,loss\n1,2\n2,abc\n", ["--at", "5"], "not a number"),
    ("step,value\n1,2\n", ["--at", "5"], "no column 'loss'"),
    ("step,loss\n1,\n2,\n", ["--at", "5"], "blank on every row"),
    ("step,loss\n1,3\n2,2.5\n3,2.2\n", ["--at", "5"], "too few points"),
    ("step,loss\n" + "".join(f"{s},{2 + 0.001 * s}\n" for s in range(1, 40)), ["--at", "80"],
     "no downward trend"),
    ("step,loss\n" + good_rows(), ["--at", "-5"], "--at must be positive"),
    ("step,loss\n" + good_rows(), ["--at", "500", "--level", "1.5"], "--level"),
    ("step,loss,lr\n1,3,\n2,2.5,0.1\n", ["--at", "5", "--lr", "lr"], "LR on every row"),
    ("step,loss\n" + good_rows(), ["--at", "500", "--x", "tokens"], "no column 'tokens'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, content, args, message):
    path = tmp_path / "missing.csv" if content is None else write(tmp_path, content)
    code, out, err = run_main(capsys, path, *args)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert out == ""


def test_bad_input_in_a_subprocess_has_no_traceback(tmp_path):
    r = cli("extrapolate", write(tmp_path, "step,loss\n1,2\n2,x\n"), "--at", "5")
    assert r.returncode == 2
    assert r.stderr.startswith("lightning-scaling extrapolate: error:") and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1


def test_blank_loss_rows_are_skipped_and_table_has_units(tmp_path, capsys):
    rows = "".join(f"{s},{2 + 30 * s ** -0.5:.6f}\n" if s % 20 == 0 else f"{s},\n"
                   for s in range(10, 2001, 10))
    code, out, err = run_main(capsys, write(tmp_path, "step,loss\n" + rows), "--at", "8000")
    assert code == 0, err
    assert "100 measured rows of 200" in out
    assert "steps" in out and "(4x beyond data)" in out


def test_lr_column_is_passed_through(capsys):
    code, out, err = run_main(capsys, MODDED, "--lr", "lr", "--at", "1530")
    # the schedule-aware fitter (issue 3) answers; either a forecast or one clear line
    assert code in (0, 2)
    assert ("1530" in out) if code == 0 else (err.count("\n") == 1)


def test_plot_without_matplotlib_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, out, err = run_main(capsys, BUNDLED, "--x", "tokens", "--at", "3.5e11", "--plot", tmp_path / "f.png")
    assert code == 2 and "needs matplotlib" in err and err.count("\n") == 1
    assert not (tmp_path / "f.png").exists()
