"""Where the monitor's observations come from: ``training_step``'s loss or a logged metric.

``LossReader`` collects one observation per optimizer step: the mean of the step's
micro-batch losses (gradient accumulation undone), or, with ``monitor=`` or when
``training_step`` returns no loss, a metric read from ``trainer.callback_metrics``. Losses
stay tensors until a batch of observations is converted at once (one device sync).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..errors import InvalidInputError
from .compute import ComputeCounter

LOSS_NAMES = ("train_loss", "loss", "train/loss", "training_loss", "train_loss_step", "train/loss_step")
"""Names a training loss is commonly logged under, followed when training_step returns none."""

NO_LOSS_GRACE = 50
"""Optimizer steps without any loss before the configuration error."""


def loss_of(outputs: Any) -> torch.Tensor | None:
    """The scalar loss tensor in a training_step's output (a tensor, or a mapping with "loss"), or None.

    Kept as a tensor (Lightning hands it over detached): turning it into a float would wait
    for the device; the monitor converts a batch of them at once.

    >>> from collections import UserDict
    >>> loss_of(torch.tensor(2.5)), loss_of(UserDict(loss=torch.tensor([1.5]))), loss_of({"n": 3})
    (tensor(2.5000), tensor([1.5000]), None)
    """
    loss = outputs.get("loss") if isinstance(outputs, dict) or isinstance(outputs, Mapping) else outputs
    if loss is None or not hasattr(loss, "detach") or loss.numel() != 1:
        return None
    return loss.detach() if loss.requires_grad else loss


def to_floats(values: list) -> list[float]:
    """Floats from a mix of scalar tensors and numbers, with one device sync per device.

    >>> to_floats([torch.tensor(1.5), 2, torch.tensor([0.25])])
    [1.5, 2.0, 0.25]
    """
    out = [math.nan] * len(values)
    others: dict[Any, list[int]] = {}
    for i, v in enumerate(values):
        if not hasattr(v, "detach"):
            out[i] = float(v)
        elif v.is_cpu:  # no device to wait for: one call each is cheaper than stacking
            out[i] = float(v.item())
        else:
            others.setdefault(v.device, []).append(i)
    for indices in others.values():
        stacked = torch.stack([values[i].reshape(()) for i in indices]).tolist()
        for i, v in zip(indices, stacked):
            out[i] = float(v)
    return out


class LossReader:
    """One observation per optimizer step, from ``training_step``'s loss or a logged metric.

    Args:
        metric: the logged metric to follow (``monitor=``), or None for training_step's loss.
        compute: the run's ``ComputeCounter``; each observation carries its cumulative
            tokens and FLOPs at the moment it is taken.
        say: ``say(trainer, message)`` reports a one-time notice (rank zero).

    Attributes:
        pending: the optimizer steps not yet handed on, oldest first, each ``(step, tokens,
            flops, micro_batches, losses, factor)``: ``losses`` the step's micro-batch losses
            (tensors or floats; the observation is their mean times ``factor``), ``flops`` None
            while the FLOP rate is being measured (then priced by ``micro_batches``).
        followed: the metric read from ``callback_metrics`` (``metric``, or a training loss
            found under one of ``LOSS_NAMES``), or None.
        loss_name: what the observations measure.
        metric_seen: ``metric`` has been logged at least once.
    """

    def __init__(self, metric: str | None, compute: ComputeCounter, say: Callable[[Any, str], None]):
        self.metric = metric
        self.compute = compute
        self.say = say
        self.followed = metric
        self.loss_name = metric or "training_step loss"
        self.pending: list[tuple] = []
        self.metric_seen = False
        self.loss_seen = False
        self._micro: list = []  # this optimizer step's micro-batch losses (tensors or floats)
        self._factor = 1
        self._last_metric: Any = None
        self._steps_without_loss = 0

    def start(self) -> None:
        self._micro = []

    def add_micro_batch(self, trainer, pl_module, outputs: Any) -> None:
        """Keep a micro-batch's loss from training_step's ``outputs`` (when no metric is followed)."""
        if self.metric is not None:
            return
        loss = loss_of(outputs)
        if loss is not None:
            self._micro.append(loss)
            # Lightning divides the returned loss by accumulate_grad_batches; undone at the step
            self._factor = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1

    def on_optimizer_step(self, trainer, step: int, observed: int) -> None:
        """Take optimizer step ``step``'s observation; raises when no loss can be found at all
        (``observed``: observations already in the history)."""
        micro = self._micro
        if micro:  # the usual case, once per optimizer step: keep it short
            self._micro = []
            compute = self.compute
            row = (step, compute.tokens, compute.flops_now(), compute.micro_batches, micro, self._factor)
            pending = self.pending
            if pending and pending[-1][0] == step:
                pending[-1] = row
            else:
                pending.append(row)
            self.loss_seen = True
            return
        if self.followed is not None:
            self.read_metric(trainer, from_validation=False)
        elif self.metric is None:
            self._follow_logged_loss(trainer)
        self.check_found(trainer, epoch_end=False, observed=observed)

    def finish(self, step: int) -> None:
        """The last optimizer step's micro-batches, when the run ended before they were taken."""
        if self._micro:
            self._push(step, self._take_micro())

    def take(self) -> list[tuple[int, float, float, float]]:
        """The pending observations ``(step, tokens, flops, loss)`` as floats, oldest first
        (one device sync for all their losses)."""
        pending, self.pending = self.pending, []
        return self._as_floats(pending)

    def _as_floats(self, rows: list[tuple]) -> list[tuple[int, float, float, float]]:
        if not rows:
            return []
        values = to_floats([v for row in rows for v in row[4]])
        out, i = [], 0
        for step, tokens, flops, micro_batches, losses, factor in rows:
            n = len(losses)
            loss = values[i] * factor if n == 1 else sum(values[i:i + n]) * (factor / n)
            i += n
            if flops is None:
                flops = self.compute.flops_after(micro_batches)
            out.append((step, tokens, flops, loss))
        return out

    def _take_micro(self) -> tuple[list, int]:
        """The optimizer step's micro-batch losses and the factor that undoes Lightning's division."""
        micro, self._micro = self._micro, []
        return micro, self._factor

    def _push(self, step: int, losses: tuple[list, int]) -> None:
        compute = self.compute
        row = (step, compute.tokens, compute.flops_now(), compute.micro_batches, losses[0], losses[1])
        if self.pending and self.pending[-1][0] == step:
            self.pending[-1] = row
        else:
            self.pending.append(row)
        self.loss_seen = True

    def _follow_logged_loss(self, trainer) -> None:
        metrics = trainer.callback_metrics
        for name in LOSS_NAMES:
            if name in metrics:
                self.followed = self.loss_name = name
                self.say(trainer, f"ScalingLawMonitor: training_step returns no loss; following the logged "
                         f"metric '{name}' (set monitor= to choose another)")
                self.read_metric(trainer, from_validation=False)
                return

    def read_metric(self, trainer, from_validation: bool) -> bool:
        """Read the followed metric when it was logged anew; True when an observation was added."""
        name = self.followed
        value = trainer.callback_metrics.get(name)
        if value is None:
            if from_validation and not self.metric_seen:
                raise InvalidInputError(missing_metric_message(name, trainer.callback_metrics))
            return False
        self.metric_seen = True
        if value is self._last_metric:  # not logged anew since the last read
            return False
        self._last_metric = value
        if hasattr(value, "detach"):
            value = value.detach()
            if value.numel() != 1:
                raise InvalidInputError(f"ScalingLawMonitor: monitor={name!r} must be a scalar, got shape "
                                        f"{tuple(value.shape)}")
            value = value.reshape(())
        self._push(int(trainer.global_step), ([value], 1))
        return True

    def check_found(self, trainer, epoch_end: bool, observed: int = 0) -> None:
        """Raise the configuration error when no loss was found (at an epoch's end, or after
        ``NO_LOSS_GRACE`` optimizer steps); ``observed``: observations already in the history."""
        if self.loss_seen or observed or self.metric is not None:
            return
        if epoch_end and self.followed is None:
            self._follow_logged_loss(trainer)
        if self.pending or self.loss_seen:
            return
        self._steps_without_loss += 0 if epoch_end else 1
        if epoch_end or self._steps_without_loss >= NO_LOSS_GRACE:
            raise InvalidInputError(no_loss_message(trainer.callback_metrics, self._steps_without_loss))

    def never_logged(self, trainer) -> str:
        """The warning for a ``monitor=`` metric that was never logged."""
        return (f"ScalingLawMonitor: monitor={self.metric!r} was never logged, so nothing was forecast. "
                + missing_metric_message(self.metric, trainer.callback_metrics))

    def state_dict(self) -> dict[str, Any]:
        return {"loss_name": self.loss_name, "followed": self.followed,
                "pending": [[float(v) for v in p] for p in self._as_floats(self.pending)]}

    def load_state_dict(self, state: dict[str, Any], observed: int) -> None:
        self.loss_name = state.get("loss_name", self.loss_name)
        self.followed = state.get("followed", self.followed)
        self.loss_seen = observed > 0
        self.pending = [(int(p[0]), p[1], p[2], 0, [p[3]], 1) for p in state.get("pending", [])]


def _available(metrics: Mapping) -> str:
    names = sorted(k for k in metrics.keys() if not str(k).startswith("scaling/"))
    return ", ".join(f"'{n}'" for n in names) if names else "none"


def missing_metric_message(name: str | None, metrics: Mapping) -> str:
    return (
        f"ScalingLawMonitor(monitor={name!r}): no metric named {name!r} has been logged. Log it in your "
        f"LightningModule (self.log({name!r}, value)) or pass the name of a metric you do log as "
        f"ScalingLawMonitor(monitor=...). Logged metrics: {_available(metrics)}."
    )


def no_loss_message(metrics: Mapping, steps: int) -> str:
    return (
        "ScalingLawMonitor found no loss to follow: training_step returned no loss (a tensor or a dict "
        f"with 'loss') in {max(steps, 1)} optimizer step(s), and none of {', '.join(map(repr, LOSS_NAMES))} "
        "was logged. Fix: return the loss from training_step (`return loss` or `return {'loss': loss}`), "
        "or log it with `self.log('train_loss', loss)` and pass ScalingLawMonitor(monitor='train_loss'). "
        f"Logged metrics: {_available(metrics)}."
    )
