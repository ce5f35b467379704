"""Compute accounting: cumulative optimizer steps, micro-batches, samples, tokens and FLOPs.

Where each number comes from, in order of preference:

- FLOPs per micro-batch (forward + backward, one process): the ``flops_per_batch=`` argument;
  the module's ``flops_per_batch`` attribute (the convention of Lightning's
  ``ThroughputMonitor``); one forward pass measured with ``torch.utils.flop_counter``'s
  formulas on a meta copy of the module (no real arithmetic, on a thread: ``trainer.flops``),
  times 3 for forward plus backward; else ``6 * N * tokens`` with N the non-embedding
  parameters (Kaplan et al. 2020: 2N per token forward, 4N backward).
- Tokens per micro-batch: the ``tokens_per_batch=`` argument (an int, or a callable on the
  batch); the module's ``tokens_per_batch`` attribute; else the element count of the batch's
  integer input tensor (``input_ids`` in a dict batch, else the first integer tensor found:
  for an ``(x, y)`` language-model batch, x).

Every micro-batch under gradient accumulation counts, and under data parallelism each count
is multiplied by the world size (every process is assumed to see batches of the same shape).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..errors import InvalidInputError
from .flops import FlopMeasurement, measure_flops_per_batch

__all__ = ["ComputeCounter", "count_parameters", "infer_samples", "infer_tokens", "measure_flops_per_batch"]

log = logging.getLogger(__name__)

_STATE_FORMAT = "lightning-scaling/compute"
_STATE_VERSION = 1


# -- inspecting modules and batches ----------------------------------------------------------
def count_parameters(module: Any) -> tuple[int, int]:
    """(all parameters, non-embedding parameters) of a torch module, shared tensors once.

    Non-embedding means every parameter except the weights of ``torch.nn.Embedding`` modules
    (token and learned position tables): the N of Kaplan et al. and of Chinchilla. A weight
    tied between an embedding and an output layer counts as an embedding.
    """
    embedding_ids = {
        id(m.weight) for m in module.modules() if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))
    }
    seen: set[int] = set()
    total = non_embedding = 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if id(p) not in embedding_ids:
            non_embedding += p.numel()
    return total, non_embedding


def _iter_tensors(batch: Any):
    """Tensors of a (nested) batch in a stable order: dict keys as given, sequences in order."""
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, Mapping):
        for v in batch.values():
            yield from _iter_tensors(v)
    elif isinstance(batch, (list, tuple)):
        for v in batch:
            yield from _iter_tensors(v)


def infer_tokens(batch: Any) -> int | None:
    """Tokens in one micro-batch: ``input_ids`` of a dict batch, else the first integer tensor.

    None when the batch holds no integer tensor (the run is then not a token model, or the
    caller must say: ``tokens_per_batch=``).
    """
    if isinstance(batch, Mapping) and isinstance(batch.get("input_ids"), torch.Tensor):
        return int(batch["input_ids"].numel())
    for t in _iter_tensors(batch):
        if not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool:
            return int(t.numel())
    return None


def _tensor_paths(batch: Any, path: tuple = ()):
    """(path, tensor) for every tensor of a (nested) batch, in ``_iter_tensors`` order."""
    if isinstance(batch, torch.Tensor):
        yield path, batch
    elif isinstance(batch, Mapping):
        for k, v in batch.items():
            yield from _tensor_paths(v, path + (k,))
    elif isinstance(batch, (list, tuple)):
        for i, v in enumerate(batch):
            yield from _tensor_paths(v, path + (i,))


def _at(batch: Any, path: tuple) -> Any:
    for key in path:
        batch = batch[key]
    return batch


def _cached_rule(batch: Any, pick: Callable[[Any], bool], measure: Callable[[Any], int], fallback):
    """A per-batch counter that remembers where the first batch kept its tensor.

    Looking the tensor up by its path costs a few index operations; walking the whole batch
    every step costs more. When a later batch has another structure, ``fallback`` walks it.
    """
    found = next((p for p, t in _tensor_paths(batch) if pick(t)), None)
    if found is None:
        return None

    dtype = _at(batch, found).dtype
    if len(found) == 1:  # an (x, y) tuple or a flat dict: one index (this runs every step)
        key = found[0]

        def rule(b: Any) -> int | None:
            try:
                t = b[key]
                if t.dtype is dtype:
                    return measure(t)
            except (KeyError, IndexError, TypeError, AttributeError):
                pass
            return fallback(b)

        return rule

    def nested_rule(b: Any) -> int | None:
        try:
            t = _at(b, found)
            if t.dtype is dtype:
                return measure(t)
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
        return fallback(b)

    return nested_rule


def infer_samples(batch: Any) -> int | None:
    """Samples in one micro-batch: the leading dimension of the first tensor with one."""
    for t in _iter_tensors(batch):
        if t.dim() > 0:
            return int(t.shape[0])
    return None


# -- the running count ---------------------------------------------------------------------
class ComputeCounter:
    """Cumulative compute of a run, with where each rate came from.

    Args:
        flops_per_batch: FLOPs of forward + backward of one micro-batch on one process.
        tokens_per_batch: tokens of one micro-batch on one process: an int, or a callable
            ``f(batch) -> int``.

    Attributes (cumulative over all processes, plain Python numbers):
        steps: optimizer steps; micro_batches: micro-batches per process;
        samples: samples (NaN when no tensor in the batch has a leading dimension);
        tokens: tokens (NaN while unknown); flops: FLOPs (NaN while unknown).
        flops_source, tokens_source: one line each saying where the rate came from.
        n_params, n_params_non_embedding: of the module, counted at ``setup``.

    A measured FLOP rate is measured on a thread (``trainer.flops``) while training goes on;
    the micro-batches counted meanwhile are priced when it answers, in the order they came,
    so every number is what an answer on the spot would have given. Reading ``flops``,
    ``flops_source`` or ``flops_after`` waits for the answer; ``measuring`` says whether one
    is still awaited.
    """

    def __init__(
        self,
        flops_per_batch: float | None = None,
        tokens_per_batch: int | Callable[[Any], int] | None = None,
    ):
        if flops_per_batch is not None and not (_is_number(flops_per_batch) and flops_per_batch > 0):
            raise InvalidInputError(f"flops_per_batch must be a positive number of FLOPs, got {flops_per_batch!r}")
        if tokens_per_batch is not None and not callable(tokens_per_batch):
            if not (_is_number(tokens_per_batch) and tokens_per_batch > 0):
                raise InvalidInputError(
                    f"tokens_per_batch must be a positive int or a callable on the batch, got {tokens_per_batch!r}"
                )
        self._flops_arg = flops_per_batch
        self._tokens_arg = tokens_per_batch
        self.world_size = 1
        self.n_params: int | None = None
        self.n_params_non_embedding: int | None = None
        self._flops_source = "unknown (no batch seen yet)"
        self.tokens_source = "unknown (no batch seen yet)"
        self._flops_rate: float | None = None  # FLOPs per micro-batch, or ...
        self._flops_per_token: float | None = None  # ... FLOPs per token when tokens vary
        self._tokens_rule: Callable[[Any], int | None] | None = None
        self._samples_rule: Callable[[Any], int | None] | None = None
        self._resolved = False
        self._measurement: FlopMeasurement | None = None
        self._tokens0: int | None = None  # tokens of the measured micro-batch
        self._unpriced: list[int | None] = []  # tokens of each micro-batch counted while measuring
        self._priced: dict[int, float] = {}  # micro-batch count -> cumulative FLOPs, for those
        self.steps = 0
        self.micro_batches = 0
        self.samples = 0.0
        self.tokens = math.nan
        self._flops = math.nan

    def setup(self, module: Any, world_size: int = 1) -> None:
        """Count the module's parameters and remember the world size (call once per fit)."""
        self.settle()
        self.world_size = max(1, int(world_size))
        try:
            self.n_params, self.n_params_non_embedding = count_parameters(module)
        except Exception:  # a module without parameters() is unusual but not our business
            self.n_params = self.n_params_non_embedding = None
        self._resolved = False

    # -- reading -------------------------------------------------------------------------------
    @property
    def measuring(self) -> bool:
        """Is a FLOP measurement still running (``flops`` would wait for it)?"""
        return self._measurement is not None and not self._measurement.done

    @property
    def flops(self) -> float:
        self.settle()
        return self._flops

    @property
    def flops_source(self) -> str:
        self.settle()
        return self._flops_source

    def flops_now(self) -> float | None:
        """The cumulative FLOPs now, or None while a measurement is awaited (never waits)."""
        return self._flops if self._measurement is None else None

    def flops_after(self, micro_batches: int) -> float:
        """The cumulative FLOPs once ``micro_batches`` micro-batches were counted (waits for a
        measurement; exact for the micro-batches counted while it ran, and for the newest)."""
        self.settle()
        return self._priced.get(micro_batches, self._flops)

    # -- counting ------------------------------------------------------------------------------
    def count_micro_batch(self, module: Any, batch: Any) -> None:
        """Add one micro-batch of every process (call on every rank, once per batch)."""
        # the training loop's hot path: a few attribute reads and sums, NaN tested as x != x
        if not self._resolved:
            self._resolve(module, batch)
        w = self.world_size
        self.micro_batches += 1
        rule = self._samples_rule
        if rule is not None:
            n = rule(batch)
            if n is not None:
                self.samples += n * w
        rule = self._tokens_rule
        tokens = None
        if rule is not None:
            tokens = rule(batch)
            if tokens is not None:
                tokens = int(tokens)
                total = self.tokens
                self.tokens = (0.0 if total != total else total) + tokens * w
        if self._measurement is not None:
            self._unpriced.append(tokens)
        else:
            self._price(tokens)

    def _price(self, tokens: int | None) -> None:
        """Add one micro-batch's FLOPs (``tokens``: its tokens on one process, or None)."""
        if self._flops_rate is not None:
            flops = self._flops_rate
        elif self._flops_per_token is not None and tokens is not None:
            flops = self._flops_per_token * tokens
        else:
            return
        total = self._flops
        self._flops = (0.0 if total != total else total) + flops * self.world_size

    def settle(self, timeout: float = 60.0) -> None:
        """Wait for a FLOP measurement in flight and price the micro-batches counted meanwhile."""
        measurement = self._measurement
        if measurement is None:
            return
        measured, error = measurement.result(timeout)
        self._measurement = None
        self._choose_flops(measured, error)
        first = self.micro_batches - len(self._unpriced) + 1
        for i, tokens in enumerate(self._unpriced):
            self._price(tokens)
            self._priced[first + i] = self._flops
        self._unpriced = []

    def _resolve(self, module: Any, batch: Any) -> None:
        """Decide, on the first micro-batch, where tokens and FLOPs come from."""
        self.settle()
        self._resolved = True
        self._priced = {}
        # tokens
        module_tokens = getattr(module, "tokens_per_batch", None)
        if self._tokens_arg is not None:
            rule = self._tokens_arg
            self._tokens_rule = rule if callable(rule) else (lambda _b, n=int(rule): n)
            self.tokens_source = "tokens_per_batch= (callable)" if callable(rule) else "tokens_per_batch= argument"
        elif module_tokens is not None and (callable(module_tokens) or _is_number(module_tokens)):
            rule = module_tokens
            self._tokens_rule = rule if callable(rule) else (lambda _b, n=int(rule): n)
            self.tokens_source = "module attribute tokens_per_batch"
        elif infer_tokens(batch) is not None:
            self._tokens_rule = infer_tokens
            if not (isinstance(batch, Mapping) and "input_ids" in batch):
                self._tokens_rule = _cached_rule(batch, _is_integer, _numel, infer_tokens)
            self.tokens_source = "inferred: element count of the batch's integer input tensor"
        else:
            self._tokens_rule = None
            self.tokens_source = "unknown: no integer input tensor (pass tokens_per_batch=)"
        self._samples_rule = _cached_rule(batch, lambda t: t.dim() > 0, _length, infer_samples)
        self._tokens0 = self._tokens_of(batch)
        # FLOPs
        module_flops = getattr(module, "flops_per_batch", None)
        self._flops_rate = self._flops_per_token = None
        if self._flops_arg is not None:
            self._flops_rate = float(self._flops_arg)
            self._flops_source = "flops_per_batch= argument"
        elif _is_number(module_flops) and module_flops > 0:
            self._flops_rate = float(module_flops)
            self._flops_source = "module attribute flops_per_batch"
        else:
            try:
                self._measurement = FlopMeasurement(module, batch)
                self._flops_source = "being measured"
            except Exception as exc:  # the fallback below is the documented answer
                self._choose_flops(None, exc)

    def _choose_flops(self, measured: float | None, error: BaseException | None) -> None:
        """The FLOP rate from a measurement's answer, else ``6 * N * tokens``; why a measurement
        did not count goes to the debug log (the fallback is a normal path, not an error)."""
        tokens0 = self._tokens0
        if measured is not None:
            if tokens0:
                self._flops_per_token = measured / tokens0
            else:
                self._flops_rate = measured
            self._flops_source = "measured: torch.utils.flop_counter, one forward on the meta device x3"
            return
        why = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
        log.debug("ScalingLawMonitor: FLOPs not measured (%s)", why)
        if tokens0 and self.n_params_non_embedding:
            self._flops_per_token = 6.0 * self.n_params_non_embedding
            self._flops_source = f"6*N*tokens with N = {self.n_params_non_embedding:,} non-embedding parameters"
        else:
            self._flops_source = "unknown: not measurable and no token count (pass flops_per_batch=)"

    def _tokens_of(self, batch: Any) -> int | None:
        if self._tokens_rule is None:
            return None
        n = self._tokens_rule(batch)
        return None if n is None else int(n)

    def totals(self) -> dict[str, float]:
        return {
            "steps": float(self.steps),
            "micro_batches": float(self.micro_batches),
            "samples": float(self.samples),
            "tokens": float(self.tokens),
            "flops": float(self.flops),
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain Python numbers only (weights_only-safe). Rates are re-resolved on resume."""
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "steps": int(self.steps),
            "micro_batches": int(self.micro_batches),
            "samples": float(self.samples),
            "tokens": float(self.tokens),
            "flops": float(self.flops),
            "flops_source": self.flops_source,
            "tokens_source": self.tokens_source,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != _STATE_FORMAT:
            raise InvalidInputError("not a ComputeCounter state (missing or wrong 'format')")
        if int(state.get("version", 0)) > _STATE_VERSION:
            raise InvalidInputError(
                f"compute state version {state['version']} is newer than this lightning-scaling understands"
            )
        self.settle()
        self.steps = int(state["steps"])
        self.micro_batches = int(state["micro_batches"])
        self.samples = float(state["samples"])
        self.tokens = float(state["tokens"])
        self._flops = float(state["flops"])
        self._flops_source = str(state.get("flops_source", self._flops_source))
        self.tokens_source = str(state.get("tokens_source", self.tokens_source))


def _numel(t: Any) -> int:
    return t.numel()


def _length(t: Any) -> int:
    return t.shape[0]


def _is_integer(t: Any) -> bool:
    return not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
