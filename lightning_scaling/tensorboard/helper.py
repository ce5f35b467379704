"""The figure helper process: figures drawn outside the training process, over a pipe.

:class:`FigureProcess` renders figures in a helper process, so that a training process does
not run matplotlib's drawing (about 0.05 CPU s a figure) nor, where nothing else has imported
it, matplotlib's import (about 0.3 CPU s). A thread would not do: the drawing is Python code
that holds the GIL the training loop needs between its kernels.

The helper is started with ``python -c``; it loads ``figures.py`` and this file by their
paths, without the package's ``__init__`` (no torch, no scipy: numpy, matplotlib and Pillow
only), and runs :func:`serve` with ``figures.render_pngs``. Messages both ways are pickled
dicts, each behind its byte length (8 bytes, little endian); see :func:`serve` for the
protocol. This file imports nothing of the package.
"""

from __future__ import annotations

import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable

import numpy as np

#: The figures drawn once before the first job, so that fonts are loaded by then.
_WARM_UP_X = np.geomspace(1.0, 1e3, 8)
WARM_UP_JOB = {
    "trend": ("trend", {"step": _WARM_UP_X, "loss": 1 / _WARM_UP_X, "trend": 1 / _WARM_UP_X,
                        "lower": 0.5 / _WARM_UP_X, "upper": 2 / _WARM_UP_X, "forecast": (1e-3, 5e-4, 2e-3),
                        "target_step": 1e3, "episodes": [(10.0, None, "behind")], "marks": [(10.0, "divergence")]}),
    "loss_vs_compute": ("loss_vs_compute", {"x": _WARM_UP_X, "loss": 1 / _WARM_UP_X, "x_label": "x",
                                            "grid_x": _WARM_UP_X, "trend": 1 / _WARM_UP_X, "lower": 0.5 / _WARM_UP_X,
                                            "upper": 2 / _WARM_UP_X, "planned_end": 1e3,
                                            "forecast": (1e-3, 5e-4, 2e-3)}),
}
#: figures.py, loaded by the helper for its drawing functions
FIGURES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures.py")


_HEADER = struct.Struct("<Q")  # byte length of the pickled message that follows


def _send(stream, message) -> None:
    data = pickle.dumps(message, protocol=4)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream):
    """The next message, or None at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    size = _HEADER.unpack(header)[0]
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def serve(stdin, stdout, render: Callable[[dict], dict]) -> None:
    """The helper's loop: answer the warm-up message, then one reply per job, until stdin ends.

    ``render`` draws a job's figures: {tag: (kind, kwargs)} -> {tag: (PNG, height, width)}
    (``figures.render_pngs``). Jobs are {"id": int, "figures": {tag: (kind, kwargs)}};
    replies {"id", "images": {tag: (PNG, height, width)}, "error": str | None, "cpu_s": this
    process's CPU seconds so far, "render_cpu_s": CPU seconds of this job}. The warm-up reply
    (id 0) says whether matplotlib imports ("matplotlib": bool) and comes after a first
    drawing, so that fonts are loaded before the first real job.

    >>> import io
    >>> jobs = io.BytesIO()
    >>> _send(jobs, {"id": 1, "figures": {"a": ("kind", {})}})
    >>> replies = io.BytesIO()
    >>> serve(io.BytesIO(jobs.getvalue()), replies, lambda figures: {tag: (b"PNG", 1, 2) for tag in figures})
    >>> replies.seek(0)
    0
    >>> _receive(replies)["matplotlib"], _receive(replies)["images"], _receive(replies)
    (True, {'a': (b'PNG', 1, 2)}, None)
    """
    try:
        render(WARM_UP_JOB)
        _send(stdout, {"id": 0, "matplotlib": True, "error": None, "cpu_s": time.process_time(), "pid": os.getpid()})
    except ImportError as exc:
        _send(stdout, {"id": 0, "matplotlib": False, "error": f"{type(exc).__name__}: {exc}",
                       "cpu_s": time.process_time(), "pid": os.getpid()})
        return
    while True:
        job = _receive(stdin)
        if job is None:
            return
        start = time.process_time()
        try:
            images, error = render(job["figures"]), None
        except Exception as exc:  # one bad figure must not end the helper
            images, error = {}, f"{type(exc).__name__}: {exc}"
        _send(stdout, {"id": job["id"], "images": images, "error": error, "cpu_s": time.process_time(),
                       "render_cpu_s": time.process_time() - start})


# The replies go out on a copy of stdout; stdout itself is pointed at stderr (discarded), so
# that anything a library prints cannot corrupt them.
_HELPER_CODE = (
    "import importlib.util, os, sys\n"
    "replies = os.fdopen(os.dup(1), 'wb')\n"
    "os.dup2(2, 1)\n"
    "def load(name, path):\n"
    "    spec = importlib.util.spec_from_file_location(name, path)\n"
    "    module = importlib.util.module_from_spec(spec)\n"
    "    spec.loader.exec_module(module)\n"
    "    return module\n"
    "figures = load('_lightning_scaling_figures', sys.argv[1])\n"
    "helper = load('_lightning_scaling_figure_helper', sys.argv[2])\n"
    "helper.serve(sys.stdin.buffer, replies, figures.render_pngs)\n"
)


class FigureProcess:
    """A helper process that renders figures (see the module docstring); used from one thread.

    ``start`` launches it and returns at once (the helper imports matplotlib meanwhile);
    ``submit`` sends a job unless one is already being rendered (or, with ``queue=True``,
    behind it: the helper answers jobs in order); ``results`` returns the replies that have
    arrived, without waiting; ``wait`` waits for the pending jobs up to a deadline; ``close``
    ends the helper. A reader thread, blocked on the helper's output, takes
    the replies in: it costs no CPU while it waits.

    Attributes:
        matplotlib: None until the helper has said, then whether it could import matplotlib.
        cpu_seconds: CPU seconds the helper has used so far (imports included), as it reported.
        render_cpu_seconds: CPU seconds of its last job (its drawing and PNG encoding).
        pid: the helper's process id.
    """

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.matplotlib: bool | None = None
        self.error: str | None = None
        self.cpu_seconds = 0.0
        self.render_cpu_seconds = 0.0
        self.pid: int | None = None
        self._replies: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None
        self._pending: list[int] = []  # ids of the jobs sent and not answered yet, oldest first
        self._next_id = 1

    def start(self) -> None:
        """Launch the helper; raises OSError when no process can be started."""
        if not sys.executable:
            raise OSError("no Python executable to start a figure helper with")
        env = dict(os.environ, MPLBACKEND="Agg", PYTHONSAFEPATH="1")
        self.process = subprocess.Popen([sys.executable, "-c", _HELPER_CODE, FIGURES_FILE, os.path.abspath(__file__)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        env=env, close_fds=True)
        self.pid = self.process.pid
        # the thread holds the queue and the stream, not self: a FigureProcess dropped without
        # close() is collected, and its finalizer closes the helper's input, which ends it
        self._reader = threading.Thread(target=_read_replies, args=(self.process.stdout, self._replies),
                                        daemon=True, name="lightning-scaling-figures")
        self._reader.start()
        weakref.finalize(self, _close_input, self.process)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def busy(self) -> bool:
        """True while a job is being rendered (or waits to be)."""
        return bool(self._pending)

    def submit(self, figures: dict, *, queue: bool = False) -> int | None:
        """Send {tag: (kind, kwargs)} to be rendered; returns the job's id, or None (nothing
        sent) when the helper is gone or, unless ``queue``, while a job is pending."""
        if (self._pending and not queue) or not self.alive:
            return None
        job_id, self._next_id = self._next_id, self._next_id + 1
        try:
            _send(self.process.stdin, {"id": job_id, "figures": figures})
        except (OSError, ValueError):
            return None
        self._pending.append(job_id)
        return job_id

    def _take(self, reply, out: list) -> None:
        if reply is None:
            self._pending = []
            if self.matplotlib is None:
                self.matplotlib = False
                self.error = self.error or "the figure helper ended before it could draw"
            return
        self.cpu_seconds = float(reply.get("cpu_s", self.cpu_seconds))
        if reply["id"] == 0:
            self.matplotlib = bool(reply.get("matplotlib"))
            self.error = reply.get("error")
            self.pid = reply.get("pid", self.pid)
            return
        self.render_cpu_seconds = float(reply.get("render_cpu_s", 0.0))
        if reply["id"] in self._pending:
            self._pending.remove(reply["id"])
        out.append(reply)

    def results(self) -> list[dict]:
        """Replies to jobs that have arrived since the last call (never waits)."""
        out: list[dict] = []
        while True:
            try:
                reply = self._replies.get_nowait()
            except queue.Empty:
                return out
            self._take(reply, out)

    def wait(self, timeout: float) -> list[dict]:
        """Replies until every pending job's has arrived (and the warm-up's, when still due), or
        ``timeout`` seconds have passed, or the helper is gone."""
        deadline = time.monotonic() + max(0.0, timeout)
        out = self.results()
        # not `self.alive`: a helper that has just exited may still have replies in the pipe;
        # the reader thread's end-of-stream marker ends the wait instead
        while (self._pending or self.matplotlib is None) and self.process is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                reply = self._replies.get(timeout=left)
            except queue.Empty:
                break
            self._take(reply, out)
        return out

    def close(self, timeout: float = 5.0) -> None:
        """End the helper without waiting for it: its input closes, so it finishes and exits
        (its interpreter's shutdown takes ~0.1 s); a daemon thread reaps it and kills it if it
        is still there after ``timeout`` seconds."""
        process, self.process = self.process, None
        self._pending = []
        if process is None:
            return
        _close_input(process)
        threading.Thread(target=_reap, args=(process, timeout), daemon=True,
                         name="lightning-scaling-figures-reap").start()


def _read_replies(stream, replies: queue.Queue) -> None:
    try:
        while True:
            reply = _receive(stream)
            if reply is None:
                break
            replies.put(reply)
    except (OSError, ValueError, pickle.UnpicklingError, EOFError):
        pass
    finally:
        stream.close()
    replies.put(None)  # the helper is gone


def _close_input(process: subprocess.Popen) -> None:
    try:
        process.stdin.close()
    except OSError:
        pass


def _reap(process: subprocess.Popen, timeout: float) -> None:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
