#!/usr/bin/env python
"""Check the "Scaling law" panels in a real browser: TensorBoard + headless Chromium.

1. Without --logdir, trains a tiny model with ``ScalingLawMonitor`` and a TensorBoardLogger
   into a temporary directory (the run the panels are drawn from); with --replay CSV, replays
   a recorded loss curve through the same Trainer + monitor instead (``ReplayModule``).
2. Starts ``tensorboard --logdir DIR --host 127.0.0.1 --port <free>`` and waits until its
   custom-scalars layout route serves the "Scaling law" category.
3. Asks TensorBoard's own data routes for every tag of the layout: each must have points.
4. Opens the Custom Scalars dashboard in headless Chromium (Debian's ``chromium``), driven
   over the DevTools protocol on a pipe (``--remote-debugging-pipe``: no extra Python
   packages), waits until the chart cards have rendered, reads the text of the page through
   its shadow roots (TensorBoard's dashboards are web components, so ``--dump-dom`` does not
   show them) and saves a screenshot.
5. Stops Chromium and TensorBoard, prints a JSON result; exit status 0 when every check
   passed, 1 when one failed, 2 when it could not run (no chromium, TensorBoard did not start).

    python scripts/tensorboard_page_check.py --screenshot page.png

The README's docs/tensorboard.png (a modded-nanogpt 124M run replayed):

    python scripts/tensorboard_page_check.py --replay \
        tests/data/curves/modded_nanogpt_ValueEmbed_00008ea0.csv --n-params 124e6 \
        --width 1280 --height 900 --shrink 1024 --screenshot docs/tensorboard.png
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
)
CATEGORY = "Scaling law"


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


# ------------------------------------------------------------------------------ the run


def make_demo_run(logdir: str, steps: int = 240) -> str:
    """Train a tiny regression model with ScalingLawMonitor + TensorBoardLogger; returns the
    logger's run directory. The monitor adds its TensorBoard sink by itself."""
    import warnings

    import torch

    try:
        import pytorch_lightning as pl
        from pytorch_lightning.loggers import TensorBoardLogger
    except ImportError:  # the lightning.pytorch flavour only
        import lightning.pytorch as pl
        from lightning.pytorch.loggers import TensorBoardLogger
    from lightning_scaling import ScalingLawMonitor

    class Tiny(pl.LightningModule):
        flops_per_batch = 6 * (8 * 64 + 64 * 1) * 32  # 6 * parameters * samples per batch

        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.02)

    torch.set_num_threads(1)  # a tiny model: more threads only contend
    torch.manual_seed(0)
    x = torch.randn(8192, 8)
    y = torch.sin(x.sum(1, keepdim=True)) + 0.1 * torch.randn(8192, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    logger = TensorBoardLogger(logdir, name="demo")
    monitor = ScalingLawMonitor(refit_every=max(4, steps // 12), background=False, tokens_per_batch=32)
    trainer = pl.Trainer(max_steps=steps, logger=logger, callbacks=[monitor],
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, log_every_n_steps=5, accelerator="cpu",
                         devices=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Tiny(), loader)
    return logger.log_dir


def make_replay_run(logdir: str, csv_path: str, n_params: float | None = None) -> str:
    """Replay a recorded curve (columns step, tokens, loss, lr) through a Trainer with
    ScalingLawMonitor + TensorBoardLogger; returns the logger's run directory."""
    import warnings

    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger

    from lightning_scaling import ScalingLawMonitor
    from lightning_scaling.trainer.replay import ReplayModule

    module = ReplayModule(csv_path, n_params=n_params)
    name = os.path.splitext(os.path.basename(csv_path))[0]
    logger = TensorBoardLogger(logdir, name=name)
    monitor = ScalingLawMonitor(refit_every=max(4, module.n_steps // 60), background=False)
    trainer = pl.Trainer(max_steps=module.n_steps, logger=logger, callbacks=[monitor], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False,
                         log_every_n_steps=max(1, module.n_steps // 200), accelerator="cpu", devices=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module)
    return logger.log_dir


def shrink_png(path: str, width: int) -> None:
    """Scale a screenshot to ``width`` pixels and reduce it to 96 colours (Pillow)."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    height = round(image.height * width / image.width)
    image = image.resize((width, height), Image.LANCZOS)
    image.quantize(colors=96, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


# ------------------------------------------------------------------------------ TensorBoard


def _get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


@contextmanager
def tensorboard_server(logdir: str, port: int | None = None, timeout: float = 40.0):
    """Run TensorBoard on 127.0.0.1 until the layout route serves the "Scaling law" category;
    yields (base_url, layout). Stops the server on exit."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1",
           "--port", str(port), "--load_fast", "false", "--reload_interval", "1"]
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
            try:
                layout = _get_json(base + "/data/plugin/custom_scalars/layout", timeout=2.0)
                if any(c.get("title") == CATEGORY for c in layout.get("category", [])):
                    break
            except (OSError, ValueError):
                pass
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


def check_data_routes(base: str, layout: dict) -> dict:
    """For every chart of the layout: does TensorBoard serve points for its tags?"""
    runs = _get_json(base + "/data/runs")
    scalar_tags = _get_json(base + "/data/plugin/scalars/tags")  # {run: {tag: {...}}}
    charts = {}
    for category in layout.get("category", []):
        for chart in category.get("chart", []):
            title = chart.get("title")
            if "margin" in chart:
                tags = {t for s in chart["margin"]["series"] for t in (s["value"], s["lower"], s["upper"])}
                ok = all(any(t in scalar_tags.get(r, {}) for r in runs) for t in tags)
                points = 0
                if ok:
                    for r in runs:
                        for t in tags:
                            if t in scalar_tags.get(r, {}):
                                q = urllib.parse.urlencode({"run": r, "tag": t})
                                points += len(_get_json(f"{base}/data/plugin/scalars/scalars?{q}"))
            else:
                points = 0
                for regex in chart["multiline"]["tag"]:
                    for r in runs:
                        q = urllib.parse.urlencode({"run": r, "tag": regex})
                        answer = _get_json(f"{base}/data/plugin/custom_scalars/scalars?{q}")
                        points += sum(len(v) for v in answer.get("tag_to_events", {}).values())
                ok = points > 0
            charts[title] = {"category": category.get("title"), "kind": "margin" if "margin" in chart else "multiline",
                             "has_data": bool(ok and points > 0), "points": points}
    return {"runs": runs, "charts": charts}


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
        try:
            self.call("Browser.close", session=False, timeout=5)
        except (PageCheckError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


# Collects the visible text and the custom elements of the page, through every shadow root.
_PAGE_PROBE = r"""
(() => {
  const texts = [], counts = {};
  let lines = 0;
  const walk = (root) => {
    const it = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
    for (let n = it.currentNode; n; n = it.nextNode()) {
      if (n.nodeType === Node.TEXT_NODE) {
        const t = n.textContent.trim();
        if (t) texts.push(t);
        continue;
      }
      const name = n.localName || '';
      if (name.includes('chart')) counts[name] = (counts[name] || 0) + 1;
      if (name === 'path' && n.getAttribute('d') && n.getAttribute('d').length > 40) lines += 1;
      if (n.shadowRoot) walk(n.shadowRoot);
    }
  };
  walk(document);
  return JSON.stringify({texts, counts, lines, url: location.href});
})()
"""


def browse(chromium: str, url: str, screenshot: str | None, expected: list[str], *, width: int = 1400,
           height: int = 1000, timeout: float = 40.0) -> dict:
    """Open ``url`` in headless Chromium, wait until every text in ``expected`` is on the
    page and curves are drawn, then take a screenshot. Returns what the page showed."""
    browser = DevTools(chromium, width, height, timeout=timeout)
    try:
        browser.open_page()
        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        browser.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        seen: dict = {}
        while time.monotonic() < deadline:
            result = browser.call("Runtime.evaluate", {"expression": _PAGE_PROBE, "returnByValue": True})
            value = result.get("result", {}).get("value")
            seen = json.loads(value) if value else {}
            page_text = "\n".join(seen.get("texts", []))
            if all(e in page_text for e in expected) and seen.get("lines", 0) >= len(expected) - 1:
                time.sleep(0.5)  # let the last charts finish their animation before the picture
                break
            time.sleep(0.4)
        if screenshot:
            shot = browser.call("Page.captureScreenshot", {"format": "png"})
            with open(screenshot, "wb") as fh:
                fh.write(base64.b64decode(shot["data"]))
        page_text = "\n".join(seen.get("texts", []))
        return {"found": {e: e in page_text for e in expected}, "chart_elements": seen.get("counts", {}),
                "drawn_paths": seen.get("lines", 0), "url": seen.get("url")}
    finally:
        browser.close()


# ------------------------------------------------------------------------------ the check


def check_page(logdir: str, screenshot: str | None, chromium: str, *, width: int = 1400,
               height: int = 1000, timeout: float = 40.0) -> dict:
    """Serve ``logdir`` with TensorBoard and check the Scaling law dashboard; returns a result
    dict with ``ok`` and ``problems``."""
    problems: list[str] = []
    with tensorboard_server(logdir, timeout=timeout) as (base, layout):
        routes = check_data_routes(base, layout)
        for title, chart in routes["charts"].items():
            if not chart["has_data"]:
                problems.append(f"chart {title!r}: no data behind its tags")
        titles = [c["title"] for cat in layout["category"] if cat["title"].startswith(CATEGORY)
                  for c in cat["chart"]]
        first = next(cat for cat in layout["category"] if cat["title"] == CATEGORY)
        expected = [CATEGORY] + [c["title"] for c in first["chart"]]
        page = browse(chromium, base + "/#custom_scalars", screenshot, expected, width=width,
                      height=height, timeout=timeout)
        for text, found in page["found"].items():
            if not found:
                problems.append(f"the page does not show {text!r}")
        if page["drawn_paths"] < len(first["chart"]):
            problems.append(f"only {page['drawn_paths']} curves drawn on the page")
    return {"ok": not problems, "problems": problems, "url": base + "/#custom_scalars",
            "layout_charts": titles, "data_routes": routes, "page": page, "screenshot": screenshot}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", help="TensorBoard log directory (default: train a tiny demo run)")
    parser.add_argument("--screenshot", default="tensorboard_page.png", help="PNG to write")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=240, help="steps of the demo run")
    parser.add_argument("--replay", metavar="CSV", help="replay this recorded curve instead of the demo run")
    parser.add_argument("--n-params", type=float, default=None, help="model parameters of the replayed run")
    parser.add_argument("--shrink", type=int, metavar="WIDTH", help="scale the screenshot to WIDTH pixels")
    parser.add_argument("--timeout", type=float, default=40.0, help="seconds per wait")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("tensorboard_page_check: no chromium on PATH (apt-get install -y chromium)", file=sys.stderr)
        return 2
    tmp = None
    try:
        logdir = args.logdir
        if logdir is None:
            tmp = tempfile.mkdtemp(prefix="ls-page-check-")
            if args.replay:
                make_replay_run(tmp, args.replay, args.n_params)
            else:
                make_demo_run(tmp, steps=args.steps)
            logdir = tmp
        result = check_page(logdir, args.screenshot, chromium, width=args.width, height=args.height,
                            timeout=args.timeout)
    except PageCheckError as exc:
        print(f"tensorboard_page_check: {exc}", file=sys.stderr)
        return 2
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.shrink and args.screenshot and os.path.exists(args.screenshot):
        shrink_png(args.screenshot, args.shrink)
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
