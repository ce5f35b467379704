"""The "Scaling law" panels in a real browser: TensorBoard served on 127.0.0.1, the Custom
Scalars dashboard opened in headless Chromium (scripts/tensorboard_page_check.py)."""

import importlib.util
import os
import socket
import urllib.parse

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
def test_scaling_law_panels_render_in_chromium(tmp_path):
    pytest.importorskip("pytorch_lightning")
    run_dir = page_check.make_demo_run(str(tmp_path / "logs"), steps=120)
    assert os.path.exists(os.path.join(run_dir, "scaling_summary.json"))
    shot = str(tmp_path / "page.png")
    result = page_check.check_page(str(tmp_path / "logs"), shot, CHROMIUM, timeout=45)
    assert result["ok"], result["problems"]
    # the browser showed the category and both Margin charts (text read through the shadow DOM)
    found = result["page"]["found"]
    assert found[page_check.CATEGORY] and found["Forecast final loss (band) vs observed loss"]
    assert found["Trend at the current step (band) vs observed loss"]
    assert result["page"]["chart_elements"].get("tf-custom-scalar-margin-chart-card") == 2
    # TensorBoard's own data routes serve points behind every chart
    assert all(c["has_data"] for c in result["data_routes"]["charts"].values())
    with open(shot, "rb") as fh:
        png = fh.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 30_000
    # the server is stopped
    port = urllib.parse.urlparse(result["url"]).port
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_page_check_reports_a_missing_chromium(monkeypatch, capsys):
    monkeypatch.setenv("LS_CHROMIUM", "/nonexistent/chromium")
    assert page_check.main(["--logdir", "."]) == 2
    assert "no chromium" in capsys.readouterr().err
