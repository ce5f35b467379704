"""The GPT as a LightningModule: loss, AdamW, warm-up + cosine schedule, FLOP accounting."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pytorch_lightning as pl
import torch

from .model import GPT, GPTConfig, flops_per_token


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay.

    Attributes:
        lr: peak learning rate (reached after ``warmup_steps``).
        min_lr_ratio: final LR as a fraction of the peak (cosine decays to ``lr * min_lr_ratio``).
        warmup_steps: optimizer steps of linear warm-up from ~0 to ``lr``.
        weight_decay: decoupled weight decay, applied to matrices only (not to LayerNorm weights).
        betas: AdamW's (beta1, beta2).
    """

    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)


class WarmupCosine:
    """LR multiplier at optimizer step ``s`` (for ``LambdaLR``): linear warm-up, then cosine.

    A picklable object rather than a lambda, so the scheduler can be copied (the scaling
    monitor simulates the future LR on a copy of the scheduler) and saved in checkpoints.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float):
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            factor = (step + 1) / (self.warmup_steps + 1)
        else:
            decay_steps = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / decay_steps)
            factor = self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return factor


class GPTLightningModule(pl.LightningModule):
    """A byte-level GPT trained with next-token cross-entropy (nats per byte).

    Logs ``train_loss`` every step and ``val_loss`` per validation run, both in nats per
    byte. Exposes ``flops_per_batch`` (training FLOPs of one batch on one device, the
    convention of Lightning's ThroughputMonitor) and ``tokens_per_batch`` so a scaling-law
    forecast can run on a compute axis, and ``n_params`` (non-embedding parameters N).

    Args:
        model: shape of the transformer.
        optim: optimizer and schedule settings.
        batch_size: examples per batch per device (used for the FLOP and token counts).
        total_steps: planned optimizer steps (length of the cosine); by default the
            trainer's ``max_steps`` or its estimate of the stepping batches.
        compile: compile the transformer with ``torch.compile``. Only the plain-PyTorch
            model is compiled, in place (``nn.Module.compile``): the Lightning hooks stay
            eager and the checkpoint keys stay the same.
    """

    def __init__(self, model: GPTConfig | dict | None = None, optim: OptimConfig | dict | None = None,
                 batch_size: int = 32, total_steps: int | None = None, compile: bool = False):
        super().__init__()
        model = model if isinstance(model, GPTConfig) else GPTConfig(**(model or {}))
        if isinstance(optim, dict):
            optim = OptimConfig(**{**optim, "betas": tuple(optim.get("betas", (0.9, 0.95)))})
        optim = optim or OptimConfig()
        # plain dicts, so checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters({"model": asdict(model), "optim": {**asdict(optim), "betas": list(optim.betas)},
                                   "batch_size": batch_size, "total_steps": total_steps,
                                   "compile": compile})
        self.config = model
        self.optim_config = optim
        self.batch_size = batch_size
        self.total_steps = total_steps
        self.model = GPT(model)
        if compile:
            self.model.compile()

    @property
    def n_params(self) -> int:
        """Non-embedding parameters N."""
        return self.model.n_params

    @property
    def tokens_per_batch(self) -> int:
        """Tokens (bytes) in one training batch on one device."""
        return self.batch_size * self.config.seq_len

    @property
    def flops_per_batch(self) -> float:
        """Training FLOPs of one batch on one device: (6·N + 6·n_layer·seq_len·d_model)·tokens.

        See :func:`model.flops_per_token` for the derivation.
        """
        return flops_per_token(self.config) * self.tokens_per_batch

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(idx, targets)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        loss = self(inputs, targets)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        inputs, targets = batch
        self.log("val_loss", self(inputs, targets), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        opt = self.optim_config
        matrices = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        vectors = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": matrices, "weight_decay": opt.weight_decay},
                  {"params": vectors, "weight_decay": 0.0}]
        fused = self.device.type == "cuda"
        optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=tuple(opt.betas), fused=fused)
        total = self.total_steps
        if total is None:
            total = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        schedule = WarmupCosine(opt.warmup_steps, int(total), opt.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
