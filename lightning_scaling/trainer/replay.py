"""``ReplayModule``: a LightningModule whose training loss is a recorded loss curve.

Real curves, replayed through a real ``Trainer``, exercise the whole callback: the recorded
loss comes back from ``training_step``, and the recorded learning rate drives a real
``LambdaLR`` scheduler (so ``future_lrs`` and schedule-aware fits see the recorded schedule).

One trainer step stands for ``stride`` recorded optimizer steps: trainer step g (the value of
``global_step`` after it) covers recorded steps ((g-1)*stride, g*stride]. Its loss is the
mean of the losses measured in that range (None, a skipped step, when none was), its LR the
mean recorded LR there (so the summed LR, the schedule-aware laws' S1, stays exact up to
the factor ``stride``), and its tokens ``stride * tokens_per_step``: the token (and FLOP)
axis stays true, and the step axis is the recorded one divided by ``stride``.

CSV layout (../shared/data): columns ``step, tokens, loss, lr``; blank where unknown. Under
distributed training Lightning cannot skip a step, so every trainer step needs a measured loss.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..errors import InvalidInputError


def read_curve_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``step, tokens, loss, lr`` of a curve CSV as float arrays (NaN where blank), sorted by step."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InvalidInputError(f"cannot read curve {path}: {exc}") from None
    if not rows:
        raise InvalidInputError(f"curve {path} has no rows")
    missing = {"step", "loss"} - set(rows[0].keys())
    if missing:
        raise InvalidInputError(f"curve {path} lacks column(s) {sorted(missing)} "
                                "(needs step, loss; tokens, lr optional)")

    def col(name: str) -> np.ndarray:
        out = np.full(len(rows), math.nan)
        for i, r in enumerate(rows):
            v = r.get(name)
            if v not in (None, ""):
                try:
                    out[i] = float(v)
                except ValueError:
                    raise InvalidInputError(f"curve {path}, row {i + 2}: {name}={v!r} is not a number") from None
        return out

    arrays = {name: col(name) for name in ("step", "tokens", "loss", "lr")}
    if not np.isfinite(arrays["step"]).all():
        raise InvalidInputError(f"curve {path}: every row needs a step")
    order = np.argsort(arrays["step"], kind="stable")
    return {k: v[order] for k, v in arrays.items()}


class _ReplayLogic:
    """Replay a recorded loss curve (step, loss, lr) as the training loss of a real Trainer.

    Args:
        curve: a CSV path (columns ``step, tokens, loss, lr``) or a dict of those arrays.
        stride: recorded steps per trainer step. Default: the larger of the median gap
            between measured losses and ceil(final step / 1000).
        tokens_per_step: tokens per recorded optimizer step (default: from the tokens column).
        n_params: non-embedding parameters N; with tokens known, ``flops_per_batch`` is
            ``6 * N * tokens_per_batch`` (else the monitor's own accounting applies).
        perturb: ``f(recorded_step, loss) -> loss`` applied to each replayed loss (fault
            injection in benchmarks and tests).
        final_step: the run's last recorded step (default: the largest step in the CSV).

    Attributes:
        n_steps: trainer steps of the whole replay (use as ``Trainer(max_steps=...)``).
        tokens_per_batch, flops_per_batch: read by ``ScalingLawMonitor`` (None when unknown).
        losses, lrs: per trainer step (index g-1 for step g); NaN loss means skipped.

    Example::

        >>> from pytorch_lightning import Trainer
        >>> from lightning_scaling import ScalingLawMonitor
        >>> from lightning_scaling.replay import ReplayModule
        >>> module = ReplayModule("curve.csv")                               # doctest: +SKIP
        >>> Trainer(max_steps=module.n_steps, callbacks=[ScalingLawMonitor()]).fit(module)  # doctest: +SKIP
    """

    def __init__(
        self,
        curve: str | os.PathLike | dict[str, Any],
        *,
        stride: int | None = None,
        tokens_per_step: float | None = None,
        n_params: float | None = None,
        perturb: Callable[[float, float], float] | None = None,
        final_step: float | None = None,
    ):
        super().__init__()
        arrays = read_curve_csv(curve) if not isinstance(curve, dict) else {
            k: np.asarray(curve.get(k, np.full(len(curve["step"]), np.nan)), dtype=float)
            for k in ("step", "tokens", "loss", "lr")
        }
        step, loss, lr, tokens = arrays["step"], arrays["loss"], arrays["lr"], arrays["tokens"]
        measured = np.isfinite(loss) & (step > 0)
        if measured.sum() < 2:
            raise InvalidInputError("a replayed curve needs at least 2 measured losses at steps > 0")
        final = float(final_step) if final_step is not None else float(step.max())
        if stride is None:
            gaps = np.diff(step[measured])
            stride = int(max(1, round(float(np.median(gaps))) if gaps.size else 1, math.ceil(final / 1000)))
        if not (isinstance(stride, (int, np.integer)) and stride >= 1):
            raise InvalidInputError(f"stride must be a positive int, got {stride!r}")
        self.stride = int(stride)
        self.final_step = final
        self.n_steps = int(math.ceil(final / self.stride))
        self.perturb = perturb

        # per trainer step g (index g-1): recorded steps ((g-1)*stride, g*stride]
        seg = np.ceil(step / self.stride).astype(int) - 1
        seg = np.clip(seg, 0, self.n_steps - 1)
        ok = measured & (step <= final)
        sums = np.bincount(seg[ok], weights=loss[ok], minlength=self.n_steps)
        counts = np.bincount(seg[ok], minlength=self.n_steps)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.losses = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        self.recorded_steps = np.arange(1, self.n_steps + 1, dtype=float) * self.stride

        has_lr = np.isfinite(lr)
        if has_lr.any():
            lr_sums = np.bincount(seg[has_lr], weights=lr[has_lr], minlength=self.n_steps)
            lr_counts = np.bincount(seg[has_lr], minlength=self.n_steps)
            lrs = np.where(lr_counts > 0, lr_sums / np.maximum(lr_counts, 1), np.nan)
            known = np.flatnonzero(np.isfinite(lrs))
            lrs = np.interp(np.arange(self.n_steps), known, lrs[known])  # fill gaps from neighbours
            self.lrs = lrs
        else:
            self.lrs = None

        if tokens_per_step is None:
            both = np.isfinite(tokens) & (step > 0)
            if both.any():
                tokens_per_step = float(np.median(tokens[both] / step[both]))
        self.tokens_per_step = tokens_per_step
        self.tokens_per_batch = None if tokens_per_step is None else int(round(tokens_per_step * self.stride))
        self.n_params = n_params
        self.flops_per_batch = (
            None if (n_params is None or self.tokens_per_batch is None)
            else 6.0 * float(n_params) * self.tokens_per_batch
        )
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def setup(self, stage: str) -> None:
        world = getattr(self.trainer, "world_size", 1) if self._trainer is not None else 1
        if stage == "fit" and world > 1 and not np.isfinite(self.losses).all():
            empty = int(np.sum(~np.isfinite(self.losses)))
            raise InvalidInputError(
                f"ReplayModule: {empty} of {self.n_steps} trainer steps have no measured loss, and Lightning "
                "cannot skip a step under distributed training; replay a curve measured in every "
                f"stride of {self.stride} recorded steps (or pass a larger stride=)"
            )

    def recorded_step(self, trainer_step: float) -> float:
        """The recorded optimizer step a trainer step (global_step) stands for."""
        return float(trainer_step) * self.stride

    def forward(self, x):
        return x * self.weight

    def train_dataloader(self):

        # float placeholders (the step comes from global_step); no integer tensor, so the
        # monitor does not count them as tokens
        index = torch.arange(self.n_steps, dtype=torch.float64)
        return DataLoader(TensorDataset(index), batch_size=1, shuffle=False)

    def training_step(self, batch, batch_idx):
        # the step about to be taken, not the batch: resumes restart the epoch's dataloader
        g = min(int(self.global_step), self.n_steps - 1)
        value = float(self.losses[g])
        if not math.isfinite(value):
            return None  # nothing measured in this segment: Lightning skips the step
        if self.perturb is not None:
            value = float(self.perturb(self.recorded_step(g + 1), value))
        # zero gradient through a real parameter, so the optimizer and scheduler really step
        return self.weight.sum() * 0.0 + torch.tensor(value, dtype=torch.float32)

    def configure_optimizers(self):
        if self.lrs is None:
            return torch.optim.SGD([self.weight], lr=1e-3)
        peak = float(np.max(self.lrs)) or 1.0
        optimizer = torch.optim.SGD([self.weight], lr=peak)
        ratios = (self.lrs / peak).tolist()
        last = len(ratios) - 1

        def factor(i: int) -> float:  # LR of optimizer step i+1 (0-based scheduler count i)
            return ratios[min(i, last)]

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class ReplayModule(_ReplayLogic, pl.LightningModule):
    __doc__ = _ReplayLogic.__doc__
