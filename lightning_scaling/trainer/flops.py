"""FLOPs of one micro-batch, measured on the meta device, off the training thread.

The module is never touched: a structural copy of it (the same classes and hooks, every
parameter and buffer replaced by a meta tensor of the same shape) runs one forward pass under
a counting ``TorchDispatchMode``, whose stack is thread-local, so the training thread's own
operations are never counted. The counting uses ``torch.utils.flop_counter``'s table of
FLOP formulas (matrix products, convolutions, attention); ``FlopCounterMode`` itself is not
used because its module tracker installs global module hooks that would run on the training
thread too.

How the copy is run: ``forward`` by the common conventions (a tensor: ``forward(batch)``; a
dict: ``forward(**batch)``; a list or tuple: ``forward(batch[0])``); when that fails or counts
nothing, the module's own ``training_step(batch, 0)`` (automatic optimization only; its
``log`` and ``log_dict`` do nothing on the copy), the way the module actually runs a batch.
Backward is taken as twice the forward, the usual estimate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry

from ..errors import InvalidInputError


PAUSE_S = 50e-6
"""How long a polite measurement sleeps after each operation (seconds): long enough for a
thread waiting for the GIL to take it (releasing it for a zero-length sleep hands it over
only if the waiter wakes first)."""


class _Politeness:
    """Whether a measurement pauses after each operation so that it never holds the GIL for
    more than one operation while the training thread may want it (see ``PAUSE_S``)."""

    def __init__(self, polite: bool) -> None:
        self.polite = polite

    def pause(self) -> None:
        if self.polite:
            time.sleep(PAUSE_S)


class _CountFlops(TorchDispatchMode):
    """Sums the FLOPs of the operations ``flop_registry`` knows (the rest cost nothing here)."""

    def __init__(self, manners: _Politeness) -> None:
        super().__init__()
        self.total = 0
        self.manners = manners

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        self.manners.pause()
        return out


def _no_log(*_args: Any, **_kwargs: Any) -> None:
    return None


def _meta_tensor(t: torch.Tensor, memo: dict[int, Any], parameter: bool) -> torch.Tensor:
    out = memo.get(id(t))
    if out is None:
        out = torch.empty_like(t, device="meta")
        if parameter:
            out = torch.nn.Parameter(out, requires_grad=t.requires_grad)
        memo[id(t)] = out
    return out


def meta_copy(module: torch.nn.Module, memo: dict[int, Any] | None = None,
              manners: _Politeness | None = None) -> torch.nn.Module:
    """A structural copy of ``module`` with meta parameters and buffers (tied ones stay tied).

    The copy shares the module's classes, hooks and plain attributes; its lists, dicts and
    sets are copies, so a forward pass that appends to one leaves the module's alone.
    """
    memo = {} if memo is None else memo
    if id(module) in memo:
        return memo[id(module)]
    if manners is not None:
        manners.pause()
    state = dict(module.__dict__)  # one C-level copy: atomic with respect to other threads
    for name, value in state.items():
        if type(value) in (list, dict, set):
            state[name] = type(value)(value)
    state["_parameters"] = {k: None if p is None else _meta_tensor(p, memo, True)
                            for k, p in list(module._parameters.items())}
    state["_buffers"] = {k: None if b is None else _meta_tensor(b, memo, False)
                         for k, b in list(module._buffers.items())}
    clone = object.__new__(type(module))
    memo[id(module)] = clone
    state["_modules"] = {k: None if m is None else meta_copy(m, memo, manners)
                         for k, m in list(module._modules.items())}
    object.__setattr__(clone, "__dict__", state)
    return clone


def forward_inputs(batch: Any) -> tuple[tuple, dict]:
    """How a module's forward is called on a batch, by the common conventions.

    A tensor: ``forward(batch)``; a dict: ``forward(**batch)`` (Hugging Face style); a list or
    tuple: ``forward(batch[0])`` (the ``(inputs, targets)`` convention).
    """
    if isinstance(batch, torch.Tensor):
        return (batch,), {}
    if isinstance(batch, Mapping):
        return (), dict(batch)
    if isinstance(batch, (list, tuple)) and batch:
        return (batch[0],), {}
    raise InvalidInputError(f"cannot tell how to call forward on a batch of type {type(batch).__name__}")


def to_meta(batch: Any) -> Any:
    """The batch with every tensor replaced by a meta tensor of the same shape and dtype."""
    return tree_map(lambda x: torch.empty_like(x, device="meta") if isinstance(x, torch.Tensor) else x, batch)


def _compiled(module: torch.nn.Module) -> bool:
    """Does the module hold a ``torch.compile``d part (whose code is bound to the real module)?"""
    return any(type(m).__name__ == "OptimizedModule" or getattr(m, "_compiled_call_impl", None) is not None
               for m in module.modules())


def _count(run, manners: _Politeness) -> int:
    counter = _CountFlops(manners)
    with torch.no_grad(), counter:
        run()
    return counter.total


def measure_flops_per_batch(module: Any, batch: Any, manners: _Politeness | None = None) -> float:
    """FLOPs of forward + backward on one micro-batch (3 x one forward), measured on a meta copy.

    ``batch`` may hold real or meta tensors. Tries ``forward`` by the common conventions, then
    (automatic optimization only) the module's ``training_step``; raises the first failure
    when neither counts any FLOPs (callers fall back to ``6 * N * tokens``). ``manners``: pause
    after each operation (``FlopMeasurement`` does, on its thread).
    """
    if _compiled(module):
        raise InvalidInputError("a torch.compile'd module is not measured (its compiled code runs the real weights)")
    manners = manners or _Politeness(False)
    batch = to_meta(batch)
    copy = meta_copy(module, manners=manners)
    failure: Exception | None = None
    try:
        args, kwargs = forward_inputs(batch)
        forward = _count(lambda: copy(*args, **kwargs), manners)
    except Exception as exc:  # the training_step below is the other way in
        forward, failure = 0, exc
    if not forward > 0 and callable(getattr(module, "training_step", None)) and getattr(
            module, "automatic_optimization", False):
        copy.__dict__["log"] = copy.__dict__["log_dict"] = _no_log
        try:
            forward = _count(lambda: copy.training_step(batch, 0), manners)
        except Exception as exc:
            failure = failure or exc
    if not forward > 0:
        raise failure or InvalidInputError("the measured forward pass counted no FLOPs (no matmul or convolution ran)")
    return 3.0 * float(forward)


class FlopMeasurement:
    """``measure_flops_per_batch`` on a daemon thread, started on the training thread.

    The training thread only turns the batch into meta tensors (microseconds) and starts the
    thread. The thread is polite: it pauses after each operation, so the training thread never
    waits for the GIL behind it for longer than one meta operation (tens of microseconds),
    where a thread that holds on waits out the interpreter's switch interval (5 ms) at every
    handover. ``result()`` waits for the answer, and the thread stops pausing meanwhile:
    ``(FLOPs, None)`` or ``(None, the exception)``.
    """

    def __init__(self, module: Any, batch: Any):
        self._answer: tuple[float | None, BaseException | None] = (None, None)
        self._manners = _Politeness(True)
        meta_batch = to_meta(batch)
        self._thread = threading.Thread(target=self._run, args=(module, meta_batch), daemon=True,
                                        name="lightning-scaling-flops")
        self._thread.start()

    def _run(self, module: Any, meta_batch: Any) -> None:
        try:
            self._answer = (measure_flops_per_batch(module, meta_batch, self._manners), None)
        except BaseException as exc:  # answered to the caller, never raised on the thread
            self._answer = (None, exc)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float | None = None) -> tuple[float | None, BaseException | None]:
        self._manners.polite = False  # the caller waits: nothing to be polite to
        self._thread.join(timeout)
        if self._thread.is_alive():
            return None, TimeoutError(f"no answer within {timeout} s")
        return self._answer
