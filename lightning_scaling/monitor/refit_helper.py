"""The refit helper process: refits run outside the training process, over a pipe.

A refit is mostly Python (scipy's least squares calling back into the laws), so on a thread
of the training process it holds the GIL for tens of milliseconds in slices of the switch
interval, and any step that needs the GIL meanwhile waits. :class:`RefitProcess` runs
refits in a helper instead: ``python -c`` with the package's directory registered as
``lightning_scaling`` without running its ``__init__`` (numpy and scipy only: no torch, no
Lightning; about 0.4 CPU s to start), serving :func:`serve`.

Messages both ways are pickled dicts, each behind its byte length (8 bytes, little endian).
A request is ``{"arrays": {step, tokens, flops, loss}, "kwargs": make_forecast's keyword
arguments, "lr": the schedule, or None, or "same" for the one sent last}``; a reply
``{"forecast": Forecast or None, "error": exception or None, "cpu_s": the job's CPU seconds,
"process_cpu_s": the helper's CPU seconds so far, its start-up included}``.
The helper runs single-threaded numerical libraries (a refit is small; the training process
keeps the cores) and ends when its input closes.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

_HEADER = struct.Struct("<Q")  # byte length of the pickled message that follows

#: the directory of the ``lightning_scaling`` package
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _send(stream, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream) -> Any:
    """The next message, or None at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    size = _HEADER.unpack(header)[0]
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def serve(stdin, stdout) -> None:
    """The helper's loop: one reply per request, until stdin ends.

    >>> import io, numpy as np
    >>> requests = io.BytesIO()
    >>> s = np.arange(1.0, 101.0)
    >>> _send(requests, {"arrays": {"step": s, "tokens": s, "flops": s, "loss": 2 + 5 * s ** -0.5},
    ...                  "kwargs": {"target_step": 400}, "lr": None})
    >>> replies = io.BytesIO()
    >>> serve(io.BytesIO(requests.getvalue()), replies)
    >>> reply = _receive(io.BytesIO(replies.getvalue()))
    >>> reply["error"], reply["forecast"].target_step, abs(reply["forecast"].final_loss - 2.25) < 0.02
    (None, 400, True)
    """
    from ..core.curve import fit_curve
    from .forecast import make_forecast

    lr = None
    while True:
        request = _receive(stdin)
        if request is None:
            return
        start = time.process_time()
        if not isinstance(request.get("lr"), str):
            lr = request.get("lr")
        try:
            forecast, error = make_forecast(request["arrays"], fit_fn=fit_curve, lr=lr, **request["kwargs"]), None
        except Exception as exc:  # answered, never the end of the helper
            forecast, error = None, _picklable(exc)
        _send(stdout, {"forecast": forecast, "error": error, "cpu_s": time.process_time() - start,
                       "process_cpu_s": time.process_time()})


# The helper runs at a lower priority (nice 10): where the cores are all busy, a refit waits,
# not the training process. Replies go out on a copy of stdout; stdout itself is pointed at
# stderr (discarded), so that anything a library prints cannot corrupt them.
_HELPER_CODE = (
    "import os, sys, types\n"
    "if hasattr(os, 'nice'):\n"
    "    os.nice(10)\n"
    "replies = os.fdopen(os.dup(1), 'wb')\n"
    "os.dup2(2, 1)\n"
    "package = types.ModuleType('lightning_scaling')\n"
    "package.__path__ = [sys.argv[1]]\n"
    "sys.modules['lightning_scaling'] = package\n"
    "from lightning_scaling.monitor.refit_helper import serve\n"
    "serve(sys.stdin.buffer, replies)\n"
)


class RefitProcess:
    """A helper process that runs refits (see the module docstring); used from one thread.

    Started when made (raises OSError when no process can start); ``run`` sends a request and
    waits for its reply (raises OSError when the helper is gone); ``close`` ends it.
    ``cpu_seconds``: the helper's CPU time so far as it last reported (its start-up included).
    """

    def __init__(self):
        if not sys.executable:
            raise OSError("no Python executable to start a refit helper with")
        env = dict(os.environ, PYTHONSAFEPATH="1")
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = "1"
        self.process = subprocess.Popen([sys.executable, "-c", _HELPER_CODE, PACKAGE_DIR], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, close_fds=True)
        self.pid = self.process.pid
        self._lr_sent: Any = None
        self.cpu_seconds = 0.0
        weakref.finalize(self, _close_input, self.process)

    def run(self, request: dict) -> tuple[Any, BaseException | None, float]:
        """``(forecast, error, the helper's CPU seconds for it)`` of one request."""
        lr = request.get("lr")
        if lr is not None and lr is self._lr_sent:
            request = dict(request, lr="same")
        try:
            _send(self.process.stdin, request)
            self._lr_sent = lr
            reply = _receive(self.process.stdout)
        except (ValueError, pickle.UnpicklingError, EOFError) as exc:  # a closed or broken pipe
            raise OSError(f"the refit helper's pipe broke ({type(exc).__name__}: {exc})") from None
        if reply is None:
            raise OSError(f"the refit helper ended (exit status {self.process.poll()})")
        self.cpu_seconds = float(reply.get("process_cpu_s", self.cpu_seconds))
        return reply["forecast"], reply["error"], float(reply["cpu_s"])

    def close(self, timeout: float = 60.0) -> None:
        """Close the helper's input: it ends after the request in hand; a daemon thread reaps it
        (and kills it if it is still there after ``timeout`` seconds)."""
        _close_input(self.process)
        threading.Thread(target=_reap, args=(self.process, timeout), daemon=True,
                         name="lightning-scaling-refit-reap").start()


def _close_input(process: subprocess.Popen) -> None:
    try:
        process.stdin.close()
    except (OSError, ValueError):
        pass


def _reap(process: subprocess.Popen, timeout: float) -> None:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
