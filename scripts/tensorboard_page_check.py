#!/usr/bin/env python
"""Check the "Scaling law" panels as a user sees them: real TensorBoard, headless Chromium.

By default a recorded loss curve is replayed twice through a real Trainer with
``ScalingLawMonitor``: clean, and with a fault halfway (the loss +15% from then on: a clear
fault, outside an honest interval made before it). Each run is served by TensorBoard on
127.0.0.1 and opened in Chromium (Debian's ``chromium``, driven over the DevTools protocol on
a pipe): Time Series (where TensorBoard lands), Custom Scalars, Text
and Images, each saved as a screenshot, the figures too. The check fails when a "Scaling law"
chart has no points or only points from the first 10% of the run; when the observed loss and
the forecast (or the trend) cannot be told apart by colour on Time Series or Custom Scalars, or
``epoch``/``hp_metric`` come before the "Scaling law" cards; when a faulty run shows no
behind-trend mark after the fault; when the final verdict in the Text dashboard disagrees with
the data TensorBoard serves. It prints a JSON result; exit status 0 (passed), 1 (a check
failed) or 2 (could not run: no chromium, TensorBoard did not start).

    python scripts/tensorboard_page_check.py --out page_check     # the two replays
    python scripts/tensorboard_page_check.py --run clean runs/clean/version_0 0 \
        --run fault runs/fault/version_0 400 --out docs --shrink 1100

The second made the README's screenshots (docs/tensorboard_*.png), from the GPT example
(``examples/gpt/train.py``, clean and with ``--inject-fault 400``).
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import math
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager, suppress

from lightning_scaling.tensorboard.layout import CATEGORY, RUN_FORECAST, RUN_OBSERVED, RUN_TREND, PanelTags

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
)
TAGS = PanelTags()
#: A chart must hold points later than this share of the run.
EARLY_SHARE = 0.1
#: Smallest CIE76 distance (Lab units) between two series' colours; about 2.3 is "just
#: noticeable", and TensorBoard's palettes' neighbours differ by 40 or more.
MIN_COLOUR_DISTANCE = 20.0
#: The bundled curve the default runs replay, and the fault injected in one of them.
DEFAULT_CURVE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests", "data", "curves",
                             "modded_nanogpt_ValueEmbed_00008ea0.csv")
DEFAULT_FAULT = 0.15
FAULT_AT = 0.5


class PageCheckError(Exception):
    """The check could not run at all (exit status 2)."""


def find_chromium() -> str | None:
    """Path of a Chromium-like browser on PATH (env LS_CHROMIUM overrides), or None."""
    override = os.environ.get("LS_CHROMIUM")
    if override:
        return shutil.which(override) or (override if os.path.exists(override) else None)
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ the runs


def make_replay_run(logdir: str, csv_path: str = DEFAULT_CURVE, *, fault: float = 0.0, name: str | None = None,
                    n_params: float | None = 124e6) -> tuple[str, int | None]:
    """Replay a recorded curve (columns step, tokens, loss, lr) through a Trainer with
    ScalingLawMonitor + TensorBoardLogger; with ``fault``, every loss from ``FAULT_AT`` of the
    recorded run on is ``1 + fault`` times higher. Returns (the logger's run directory, the
    trainer step the fault starts at or None)."""
    import warnings

    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger

    from lightning_scaling import ScalingLawMonitor
    from lightning_scaling.trainer.replay import ReplayModule

    probe = ReplayModule(csv_path, n_params=n_params)
    start = FAULT_AT * float(probe.recorded_steps[-1])
    perturb = (lambda step, loss: loss * (1.0 + fault) if step >= start else loss) if fault else None
    module = ReplayModule(csv_path, n_params=n_params, perturb=perturb)
    fault_step = next(g + 1 for g, s in enumerate(module.recorded_steps) if s >= start) if fault else None
    name = name or os.path.splitext(os.path.basename(csv_path))[0] + ("_fault" if fault else "")
    logger = TensorBoardLogger(logdir, name=name)
    monitor = ScalingLawMonitor(refit_every=max(4, module.n_steps // 60), background=False)
    trainer = pl.Trainer(max_steps=module.n_steps, logger=logger, callbacks=[monitor], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False,
                         log_every_n_steps=max(1, module.n_steps // 100), accelerator="cpu", devices=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module)
    [sink.wait_for_figures(60) for sink in monitor.sinks if hasattr(sink, "wait_for_figures")]
    return logger.log_dir, fault_step


# ------------------------------------------------------------------------------ TensorBoard


def _get_json(url: str, timeout: float = 10.0, raw: bool = False):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read() if raw else json.loads(resp.read().decode("utf-8"))


@contextmanager
def tensorboard_server(logdir: str, port: int | None = None, timeout: float = 60.0):
    """Run TensorBoard on 127.0.0.1 until its layout route serves the "Scaling law" category
    and the series' runs; yields (base_url, layout). Stops the server on exit."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1", "--port", str(port),
           "--reload_interval", "1"]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        layout = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log.seek(0)
                tail = log.read().decode("utf-8", "replace")[-800:]
                raise PageCheckError(f"tensorboard exited with status {proc.returncode}: {tail}")
            with suppress(OSError, ValueError):
                layout = _get_json(base + "/data/plugin/custom_scalars/layout", timeout=2.0)
                if (any(c.get("title") == CATEGORY for c in layout.get("category", []))
                        and any(r.endswith(RUN_OBSERVED) for r in _get_json(base + "/data/runs", timeout=2.0))):
                    break
            time.sleep(0.25)
        else:
            raise PageCheckError(f"tensorboard served no {CATEGORY!r} layout within {timeout:.0f} s "
                                 f"(last answer: {json.dumps(layout)[:300] if layout else 'none'})")
        yield base, layout
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class Data:
    """What TensorBoard serves of one run (the series' runs under it): its own routes."""

    def __init__(self, base: str, layout: dict):
        self.base, self.layout = base, layout
        self.runs = _get_json(base + "/data/runs")
        self.tags = _get_json(base + "/data/plugin/scalars/tags")  # {run: {tag: {...}}}
        observed = [r for r in self.runs if r.endswith(RUN_OBSERVED)]
        if len(observed) != 1:
            raise PageCheckError(f"expected one {RUN_OBSERVED!r} run, found {observed or 'none'} (serve one run)")
        self.prefix = observed[0][: -len(RUN_OBSERVED)]

    def run(self, name: str) -> str:
        return self.prefix + name

    def scalars(self, run: str, tag: str) -> list[tuple[int, float]]:
        """[(step, value)] of ``tag`` in ``run`` ([] when absent)."""
        if tag not in self.tags.get(run, {}):
            return []
        q = urllib.parse.urlencode({"run": run, "tag": tag})
        return [(int(e[1]), float(e[2])) for e in _get_json(f"{self.base}/data/plugin/scalars/scalars?{q}")]

    def chart_points(self) -> dict:
        """{chart title: (points, largest step)} for the charts of the "Scaling law" categories."""
        charts = {}
        for category in (c for c in self.layout.get("category", []) if c.get("title", "").startswith(CATEGORY)):
            for chart in category.get("chart", []):
                if "margin" in chart:
                    wanted = {t for s in chart["margin"]["series"] for t in (s["value"], s["lower"], s["upper"])}
                    match = wanted.__contains__
                else:
                    match = re.compile("|".join(f"(?:{rx})" for rx in chart["multiline"]["tag"])).match
                steps = [s for run, tags in self.tags.items() for tag in tags if match(tag)
                         for s, _ in self.scalars(run, tag)]
                charts[chart.get("title")] = (len(steps), max(steps) if steps else None)
        return charts

    def images(self) -> dict[str, bytes]:
        """{tag: PNG} of the newest image of each image tag of the main run."""
        out = {}
        listing = _get_json(self.base + "/data/plugin/images/tags")
        for run, tags in listing.items():
            for tag in tags:
                q = urllib.parse.urlencode({"run": run, "tag": tag, "sample": 0})
                entries = _get_json(f"{self.base}/data/plugin/images/images?{q}")
                if entries:
                    out[tag] = _get_json(f"{self.base}/data/plugin/images/individualImage?{entries[-1]['query']}",
                                         raw=True)
        return out


# ------------------------------------------------------------------------------ Chromium


class DevTools:
    """A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (fd 3: to
    the browser, fd 4: from it; messages are JSON ended by a NUL byte)."""

    def __init__(self, chromium: str, width: int, height: int, timeout: float):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        self.profile = tempfile.mkdtemp(prefix="ls-chromium-")
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
               f"--window-size={width},{height}", "--remote-debugging-pipe", "about:blank"]

        # The protocol wants fds 3 and 4. Copies at fds >= 10 (closed on exec) are moved there
        # in the child, so that neither end overwrites the other; close_fds=False keeps the
        # moved fds (Python's own fds are not inheritable, so nothing else leaks).
        high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)

        def move_fds():
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(cmd, preexec_fn=move_fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(high_r)
        os.close(high_w)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.timeout = timeout
        self.session = None

    def call(self, method: str, params: dict | None = None, session: bool = True, timeout: float | None = None):
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise PageCheckError(f"chromium: {method}: {reply['error'].get('message')}")
                    return reply.get("result", {})
            if time.monotonic() > deadline:
                raise PageCheckError(f"chromium did not answer {method} in time")
            ready, _, _ = select.select([self._from_browser], [], [], 0.5)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise PageCheckError(f"chromium exited (status {self.proc.poll()}) during {method}")
                self._buffer += chunk

    def open_page(self):
        targets = self.call("Target.getTargets", session=False)["targetInfos"]
        page = next((t for t in targets if t.get("type") == "page"), None)
        target_id = page["targetId"] if page else self.call("Target.createTarget", {"url": "about:blank"},
                                                            session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target_id, "flatten": True},
                                 session=False)["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")

    def close(self):
        with suppress(PageCheckError, OSError):
            self.call("Browser.close", session=False, timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            with suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)


# The visible text of the page, through every shadow root, and the runs' colours: Time
# Series' swatch buttons, the legacy dashboards' checkboxes (labelled by their row's text).
_PAGE_PROBE = r"""
(() => {
  const texts = [], colours = {};
  const label = (el) => {  // the first line of text of the element's row
    for (let row = el, i = 0; row && i < 6; row = row.parentElement, i++)
      if ((row.innerText || '').trim()) return row.innerText.trim().split('\n')[0].trim();
    return '';
  };
  const walk = (root) => {
    const it = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
    for (let n = it.currentNode; n; n = it.nextNode()) {
      if (n.nodeType === Node.TEXT_NODE) {
        const t = n.textContent.trim();
        if (t) texts.push(t);
        continue;
      }
      if (n.classList && n.classList.contains('run-color-swatch')) {
        colours[label(n)] = getComputedStyle(n).backgroundColor;
      } else if (n.localName === 'paper-checkbox') {
        const m = (n.getAttribute('style') || '').match(/--paper-checkbox-checked-color:\s*([^;]+)/);
        if (m) colours[label(n)] = m[1].trim();
      }
      if (n.shadowRoot) walk(n.shadowRoot);
    }
  };
  walk(document);
  return JSON.stringify({texts, colours, url: location.href});
})()
"""

#: The dashboards visited, what each must show before its screenshot, and the file suffix.
PAGES = (  # Time Series shows a card's title as its group and the rest ("Scaling law", "/1 final ...")
    ("timeseries", "", ("/" + TAGS.forecast.split("/", 1)[1], "/" + TAGS.loss.split("/", 1)[1])),
    ("custom_scalars", "#custom_scalars", ("Forecast of the final loss", "Observed loss (smoothed)")),
    ("text", "#text", ("Scaling law:",)),
    ("images", "#images", ("figure: loss and trend",)),
)


def browse(chromium: str, base: str, prefix: str | None, *, width: int = 1400, height: int = 1000,
           timeout: float = 40.0, settle: float = 2.0) -> dict:
    """Visit ``PAGES`` in headless Chromium; for each, wait until its texts show, let the
    charts draw (``settle`` s), save ``<prefix>_<page>.png``; returns {page: {"text", "colours",
    "found", "screenshot"}}."""
    browser = DevTools(chromium, width, height, timeout=timeout)
    seen = {}
    try:
        browser.open_page()
        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        def probe() -> tuple[dict, str]:
            value = browser.call("Runtime.evaluate", {"expression": _PAGE_PROBE, "returnByValue": True})
            page = json.loads(value.get("result", {}).get("value") or "{}")
            return page, "\n".join(page.get("texts", []))

        for name, fragment, expected in PAGES:
            browser.call("Page.navigate", {"url": f"{base}/{fragment}"})
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not all(e in probe()[1] for e in expected):
                time.sleep(0.4)
            time.sleep(settle)  # the charts' first drawing and animation
            page, text = probe()
            shot = f"{prefix}_{name}.png" if prefix else None
            if shot:
                with open(shot, "wb") as fh:
                    fh.write(base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"})["data"]))
            seen[name] = {"text": text, "colours": page.get("colours", {}),
                          "found": {e: e in text for e in expected}, "screenshot": shot}
        return seen
    finally:
        browser.close()


# ------------------------------------------------------------------------------ judgements


def _lab(colour: str) -> tuple[float, float, float]:
    """CIE L*a*b* (D65) of a CSS colour ("#rrggbb" or "rgb(r, g, b)")."""
    c = colour.strip()
    rgb = [int(c[i:i + 2], 16) for i in (1, 3, 5)] if c.startswith("#") else [
        int(float(v)) for v in re.findall(r"[\d.]+", c)[:3]]
    r, g, b = ((v / 255) / 12.92 if v / 255 <= 0.04045 else ((v / 255 + 0.055) / 1.055) ** 2.4 for v in rgb)
    xyz = (0.4124 * r + 0.3576 * g + 0.1805 * b, 0.2126 * r + 0.7152 * g + 0.0722 * b,
           0.0193 * r + 0.1192 * g + 0.9505 * b)
    fx, fy, fz = (t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116
                  for t in (v / w for v, w in zip(xyz, (0.95047, 1.0, 1.08883))))
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def colour_distance(a: str, b: str) -> float:
    """CIE76 distance of two CSS colours.

    >>> round(colour_distance("#0077bb", "rgb(0, 119, 187)"), 6), colour_distance("#0077bb", "#cc3311") > 50
    (0.0, True)
    """
    return math.dist(_lab(a), _lab(b))


def colour_problems(colours: dict[str, str], where: str) -> tuple[list[str], dict]:
    """Problems when the observed loss's colour is too close to the forecast's or the
    trend's (``colours``: {run label: CSS colour} as the page shows them)."""
    find = lambda run: next((c for label, c in colours.items() if label.endswith(run)), None)  # noqa: E731
    observed, problems, distances = find(RUN_OBSERVED), [], {}
    for other in (RUN_FORECAST, RUN_TREND):
        colour = find(other)
        if observed is None or colour is None:
            problems.append(f"{where}: no colour shown for {RUN_OBSERVED if observed is None else other}")
            continue
        distances[other] = round(colour_distance(observed, colour), 1)
        if distances[other] < MIN_COLOUR_DISTANCE:
            problems.append(f"{where}: {RUN_OBSERVED} ({observed}) and {other} ({colour}) cannot be told apart "
                            f"by colour (distance {distances[other]})")
    return problems, distances


_VERDICT = re.compile(
    r"Final verdict: (inside|missed \((?:above|below)\))\W+the observed final loss ([\d.eE+-]+)[^\[]*?interval "
    r"\[([\d.eE+-]+), ([\d.eE+-]+)\] of the forecast made at step ([\d,]+)")


def parse_verdict(text: str) -> dict | None:
    """The final verdict as the Text dashboard states it, None when it states none.

    >>> parse_verdict("Final verdict: missed (above): the observed final loss 1.65 is 10% above the 90% "
    ...               "interval [1.2, 1.5] of the forecast made at step 352 (...)")["word"]
    'missed (above)'
    """
    m = _VERDICT.search(text)
    return m and {"word": m.group(1), "observed": float(m.group(2)), "lower": float(m.group(3)),
                  "upper": float(m.group(4)), "made_at": int(m.group(5).replace(",", ""))}


def data_word(observed: float, lower: float, upper: float) -> str:
    """What the data say: "inside", "missed (above)" or "missed (below)"."""
    return "inside" if lower <= observed <= upper else ("missed (above)" if observed > upper else "missed (below)")


def verdict_problems(stated: dict | None, observed_series, forecast_lower, forecast_upper, forecast_series,
                     fault_step: int | None) -> tuple[list[str], dict]:
    """Problems of the final verdict against the data: ``observed_series`` [(step, smoothed
    loss)], the forecasts' interval ends and values [(step, value)] as TensorBoard serves them."""
    if not observed_series:
        return ["no observed loss served"], {}
    last_step, observed = observed_series[-1]
    info = {"observed_final": observed, "last_step": last_step, "stated": stated}
    if stated is None:
        return ["the Text dashboard states no final verdict"], info
    problems = []
    if not math.isclose(stated["observed"], observed, rel_tol=2e-3):
        problems.append(f"the verdict's observed final loss {stated['observed']} is not the last smoothed loss "
                        f"served ({observed:.5g})")
    lo = dict(forecast_lower).get(stated["made_at"], stated["lower"])
    hi = dict(forecast_upper).get(stated["made_at"], stated["upper"])
    if not (math.isclose(lo, stated["lower"], rel_tol=2e-3) and math.isclose(hi, stated["upper"], rel_tol=2e-3)):
        problems.append(f"the verdict's interval [{stated['lower']}, {stated['upper']}] is not the one served "
                        f"for the forecast made at step {stated['made_at']} ([{lo:.5g}, {hi:.5g}])")
    expected = data_word(observed, lo, hi)
    info["data_word"] = expected
    if stated["word"] != expected:
        problems.append(f"the final verdict says {stated['word']!r}, but {observed:.5g} against [{lo:.5g}, {hi:.5g}] "
                        f"is {expected!r}")
    if fault_step is not None:
        before = [s for s, _ in forecast_series if s < fault_step]
        if before:
            s = before[-1]
            lo_f, hi_f = dict(forecast_lower)[s], dict(forecast_upper)[s]
            info["before_fault"] = {"made_at": s, "interval": [lo_f, hi_f], "word": data_word(observed, lo_f, hi_f)}
            if info["before_fault"]["word"] != "inside" and stated["word"] == "inside":
                problems.append(f"the final verdict says 'inside', but {observed:.5g} is outside [{lo_f:.5g}, "
                                f"{hi_f:.5g}], the newest forecast made before the fault (step {s})")
    return problems, info


def behind_problems(behind_series, fault_step: int, text: str) -> tuple[list[str], dict]:
    """Problems when a faulty run shows no behind-trend mark after the fault: the behind-trend
    series (% above the trend) never above zero from the fault on, or no text saying so."""
    after = [(s, v) for s, v in behind_series if s >= fault_step and v > 0]
    problems = [] if after else [(f"no behind-trend mark after the fault at step {fault_step}: the series "
                                  f"{TAGS.behind!r} never rises above zero")]
    if not re.search(r"Behind trend since step|behind from step", text):
        problems.append("the Text dashboard does not say that the run fell behind its trend")
    return problems, {"first_step_behind": after[0][0] if after else None,
                      "largest_percent_above": max((v for _, v in after), default=0.0)}


# ------------------------------------------------------------------------------ the check


def check_run(logdir: str, chromium: str, *, fault_step: int | None = None, prefix: str | None = None,
              width: int = 1400, height: int = 1000, timeout: float = 40.0) -> dict:
    """Serve ``logdir`` (one run) with TensorBoard and check its panels; returns a result dict
    with ``ok`` and ``problems``."""
    problems: list[str] = []
    with tensorboard_server(logdir, timeout=max(timeout, 60.0)) as (base, layout):
        data = Data(base, layout)
        observed = data.scalars(data.run(RUN_OBSERVED), TAGS.loss)
        last_step = observed[-1][0] if observed else 0
        trend_end = max((st for st, _ in data.scalars(data.run(RUN_TREND), TAGS.loss)), default=None)
        problems += [] if trend_end == last_step else [f"the trend stops at step {trend_end}, before {last_step}"]
        charts = data.chart_points()
        for title, (count, largest) in charts.items():
            if not count:
                problems.append(f"chart {title!r}: no points")
            elif largest <= EARLY_SHARE * last_step:
                problems.append(f"chart {title!r}: points only from the first {100 * EARLY_SHARE:.0f}% of the run "
                                f"(up to step {largest} of {last_step})")
        pages = browse(chromium, base, prefix, width=width, height=height, timeout=timeout)
        for name, page in pages.items():
            problems += [f"{name}: the page does not show {text!r}" for text, ok in page["found"].items() if not ok]
        distances = {}
        for name in ("timeseries", "custom_scalars"):
            found, distances[name] = colour_problems(pages[name]["colours"], name)
            problems += found
        text, first = pages["timeseries"]["text"], pages["timeseries"]["text"].find(PAGES[0][2][0])
        problems += [f"timeseries: {tag!r} comes before the Scaling law cards" for tag in ("epoch", "hp_metric")
                     if first < 0 or 0 <= text.find(f"\n{tag}\n") < first]
        forecast_run = data.run(RUN_FORECAST)
        lower = data.scalars(forecast_run, TAGS.margin_forecast_lower)
        upper = data.scalars(forecast_run, TAGS.margin_forecast_upper)
        forecasts = data.scalars(forecast_run, TAGS.margin_forecast)
        found, verdict = verdict_problems(parse_verdict(pages["text"]["text"]), observed, lower, upper, forecasts,
                                          fault_step)
        problems += found
        behind = None
        if fault_step is not None:
            found, behind = behind_problems(data.scalars(data.run(RUN_OBSERVED), TAGS.behind), fault_step,
                                            pages["text"]["text"])
            problems += found
        figures = {}
        if prefix:
            for tag, png in data.images().items():
                path = f"{prefix}_{re.sub(r'[^a-z0-9]+', '_', tag.split('/')[-1].lower()).strip('_')}.png"
                with open(path, "wb") as fh:
                    fh.write(png)
                figures[tag] = path
    return {"ok": not problems, "problems": problems, "logdir": logdir, "fault_step": fault_step,
            "last_step": last_step, "trend_last_step": trend_end,
            "charts": {t: {"points": c, "last_step": s} for t, (c, s) in charts.items()},
            "colour_distances": distances, "verdict": verdict, "behind": behind,
            "screenshots": [p["screenshot"] for p in pages.values() if p["screenshot"]], "figures": figures}


def shrink_png(path: str, width: int) -> None:
    """Scale a screenshot to ``width`` pixels (Pillow); full colour, so the series keep theirs."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    image.resize((width, round(image.height * width / image.width)), Image.LANCZOS).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", nargs=3, action="append", metavar=("NAME", "DIR", "FAULT_STEP"),
                        help="check this run instead (its directory; FAULT_STEP 0: a clean run); repeatable")
    parser.add_argument("--replay", metavar="CSV", default=DEFAULT_CURVE, help="the curve the default runs replay")
    parser.add_argument("--fault", type=float, default=DEFAULT_FAULT, help="relative loss fault of the faulty replay")
    parser.add_argument("--out", default="page_check", help="folder for the screenshots and figures")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--shrink", type=int, metavar="WIDTH", help="scale the screenshots to WIDTH pixels")
    parser.add_argument("--timeout", type=float, default=40.0, help="seconds per wait")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("tensorboard_page_check: no chromium on PATH (apt-get install -y chromium)", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="ls-page-check-")
    results = []
    try:
        if args.run:
            runs = [(name, directory, int(fault) or None) for name, directory, fault in args.run]
        else:
            clean, _ = make_replay_run(os.path.join(tmp, "clean"), args.replay)
            faulty, fault_step = make_replay_run(os.path.join(tmp, "fault"), args.replay, fault=args.fault)
            runs = [("clean", clean, None), ("fault", faulty, fault_step)]
        for name, logdir, fault_step in runs:
            result = check_run(logdir, chromium, fault_step=fault_step, prefix=os.path.join(args.out, name),
                               width=args.width, height=args.height, timeout=args.timeout)
            result["name"] = name
            results.append(result)
    except PageCheckError as exc:
        print(f"tensorboard_page_check: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for path in (p for r in results for p in r["screenshots"]) if args.shrink else ():
        shrink_png(path, args.shrink)
    print(json.dumps({"ok": all(r["ok"] for r in results), "runs": results}, indent=2))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
