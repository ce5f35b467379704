"""The "Scaling law" panels in a real browser: TensorBoard served on 127.0.0.1, its dashboards
opened in headless Chromium, on a clean and a faulty replayed run (scripts/tensorboard_page_check.py)."""

import importlib.util
import json
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "tensorboard_page_check.py")


def load_script():
    spec = importlib.util.spec_from_file_location("tensorboard_page_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


page_check = load_script()
CHROMIUM = page_check.find_chromium()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_scaling_law_panels_on_a_clean_and_a_faulty_run(tmp_path, capsys):
    pytest.importorskip("pytorch_lightning")
    out = tmp_path / "shots"
    code = page_check.main(["--out", str(out), "--timeout", "45"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, [r["problems"] for r in result["runs"]]
    clean, fault = result["runs"]
    # every chart of the layout has points past the first 10% of the run; the trend reaches the end
    assert all(c["points"] and c["last_step"] > 0.1 * clean["last_step"] for c in clean["charts"].values())
    assert clean["trend_last_step"] == clean["last_step"] and fault["trend_last_step"] == fault["last_step"]
    # observed, forecast and trend in colours far apart, on the landing page and on Custom Scalars
    for run in (clean, fault):
        for page in ("timeseries", "custom_scalars"):
            assert min(run["colour_distances"][page].values()) >= page_check.MIN_COLOUR_DISTANCE
    # the verdicts agree with the data: the clean run ends inside, the faulty one missed the
    # forecast made before its fault, which it stayed above from the fault on
    assert clean["verdict"]["stated"]["word"] == clean["verdict"]["data_word"] == "inside"
    assert fault["verdict"]["stated"]["word"] == "missed (above)"
    assert fault["verdict"]["stated"]["made_at"] < fault["fault_step"] <= fault["behind"]["first_step_behind"]
    assert fault["behind"]["largest_percent_above"] > 3
    # the screenshots it judged, and the figures
    for run in (clean, fault):
        assert len(run["screenshots"]) == len(page_check.PAGES) and len(run["figures"]) == 2
        for path in run["screenshots"] + list(run["figures"].values()):
            with open(path, "rb") as fh:
                assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_each_judgement_fails_when_the_page_disagrees_with_the_data():
    observed = [(100, 2.0), (200, 1.6)]
    lower, upper, values = [(90, 1.4), (150, 1.5)], [(90, 1.5), (150, 1.7)], [(90, 1.45), (150, 1.6)]
    stated = page_check.parse_verdict("Final verdict: inside: the observed final loss 1.6 is inside the 90% "
                                      "interval [1.4, 1.5] of the forecast made at step 90 (...)")
    problems, info = page_check.verdict_problems(stated, observed, lower, upper, values, fault_step=None)
    assert info["data_word"] == "missed (above)" and any("says 'inside'" in p for p in problems)
    stated = dict(stated, word="missed (above)", observed=1.6)
    assert page_check.verdict_problems(stated, observed, lower, upper, values, fault_step=None)[0] == []
    # a faulty run called "inside" against a forecast after the fault, though it missed the one before
    stated = dict(stated, word="inside", lower=1.5, upper=1.7, made_at=150)
    problems, _ = page_check.verdict_problems(stated, observed, lower, upper, values, fault_step=120)
    assert problems and "before the fault (step 90)" in problems[0]
    assert page_check.verdict_problems(None, observed, lower, upper, values, None)[0] == [
        "the Text dashboard states no final verdict"]
    # colours too close; no behind-trend mark after the fault
    problems, _ = page_check.colour_problems({"a/scaling_observed": "#0077bb", "a/scaling_forecast": "#0078bc",
                                              "a/scaling_trend": "#cc3311"}, "timeseries")
    assert len(problems) == 1 and "cannot be told apart" in problems[0]
    problems, _ = page_check.behind_problems([(100, 0.0), (150, 4.0), (200, 0.0)], 160, "On trend")
    assert len(problems) == 2


def test_page_check_reports_a_missing_chromium(monkeypatch, capsys):
    monkeypatch.setenv("LS_CHROMIUM", "/nonexistent/chromium")
    assert page_check.main(["--run", "x", ".", "0"]) == 2
    assert "no chromium" in capsys.readouterr().err
