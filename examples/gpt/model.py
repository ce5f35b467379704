"""A compact decoder-only transformer (GPT) over bytes, in plain PyTorch.

Assumptions worth stating, since the scaling-law forecast depends on them:

* What counts as a parameter: ``n_params`` (N) is the *non-embedding* parameter count
  (Kaplan et al. 2020): every weight except the token and position embeddings. The output
  layer shares the token embedding (tied weights), so it is not counted either.
* How FLOPs are estimated (:func:`flops_per_token`): 6·N per token for the matrix
  multiplies (2 forward, 4 backward), plus the attention scores and the weighted sum of
  values, 6·n_layer·seq_len·d_model per token under a causal mask (derivation there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    """Shape of the transformer.

    Attributes:
        vocab_size: number of distinct tokens; 256 for raw bytes.
        seq_len: context length in tokens (bytes).
        n_layer: transformer blocks.
        n_head: attention heads per block; ``d_model`` must be divisible by it.
        d_model: width of the residual stream.
        mlp_ratio: hidden width of the MLP as a multiple of ``d_model``.
        dropout: dropout probability on attention output and MLP output (0 = off).
    """

    vocab_size: int = 256
    seq_len: int = 128
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    mlp_ratio: int = 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "n_layer", "n_head", "d_model", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_head:
            raise ValueError(
                f"GPTConfig.d_model ({self.d_model}) must be divisible by n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")


def non_embedding_params(config: GPTConfig) -> int:
    """N, the non-embedding parameter count of :class:`GPT` for ``config`` (no biases).

    Per block: attention 4·d² (q, k, v and output projections), MLP 2·r·d² (r =
    ``mlp_ratio``), two LayerNorm weights 2·d; plus the final LayerNorm's d.
    Equals ``GPT(config).n_params``.
    """
    d = config.d_model
    per_block = 4 * d * d + 2 * config.mlp_ratio * d * d + 2 * d
    return config.n_layer * per_block + d


def flops_per_token(config: GPTConfig) -> float:
    """Training FLOPs (forward + backward) per token: 6·N + 6·n_layer·seq_len·d_model.

    Derivation. A weight matrix applied to one token costs one multiply-add (2 FLOPs) per
    weight in the forward pass and twice that in the backward pass (gradients with respect
    to the input and to the weight): 6·N per token (Kaplan et al. 2020).

    Attention adds work that has no weights. For the query at position t, the scores
    q·k over t keys cost 2·t·d_model FLOPs and the weighted sum of t values another
    2·t·d_model. Under the causal mask a query sees (seq_len + 1)/2 ≈ seq_len/2 keys on
    average, so the forward pass costs 2·seq_len·d_model per token per layer, and forward +
    backward 3× that: 6·n_layer·seq_len·d_model per token. (PaLM's MFU formula counts the
    full square, 12·n_layer·seq_len·d_model; flash attention skips the masked half, so the
    causal count is the work actually needed.)

    Left out, as in the usual convention: the output layer over the vocabulary
    (6·d_model·vocab_size per token; tied to the embedding, so not in N), LayerNorms,
    softmax and GELU. For the GPU preset (d_model 512) they are under 1% of the total.
    """
    n = non_embedding_params(config)
    return 6.0 * n + 6.0 * config.n_layer * config.seq_len * config.d_model


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a causal mask (flash attention on a GPU)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.proj.is_residual_projection = True
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        # (batch, heads, time, head_dim), the layout scaled_dot_product_attention expects
        q, k, v = (t.view(batch, time, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(batch, time, width)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.mlp_ratio * config.d_model
        self.up = nn.Linear(config.d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, config.d_model, bias=False)
        self.down.is_residual_projection = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.d_model, bias=False)
        self.attn = CausalSelfAttention(config)
        self.ln_mlp = nn.LayerNorm(config.d_model, bias=False)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_attn(x)))
        return x + self.drop(self.mlp(self.ln_mlp(x)))


class GPT(nn.Module):
    """Decoder-only transformer with learned positions and tied input/output embeddings.

    ``forward(idx)`` maps token ids of shape (batch, time) to logits (batch, time, vocab);
    ``forward(idx, targets)`` returns the mean cross-entropy in nats per token instead.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.seq_len, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model, bias=False)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2 initialisation: N(0, 0.02), and residual projections scaled down by
        # sqrt(2·n_layer) so the residual stream's variance does not grow with depth.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            std = 0.02
            if getattr(module, "is_residual_projection", False):
                std /= math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)

    @property
    def n_params(self) -> int:
        """Non-embedding parameters N (token and position embeddings excluded)."""
        embedding = {id(self.tok_emb.weight), id(self.pos_emb.weight)}
        return sum(p.numel() for p in self.parameters() if id(p) not in embedding)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        time = idx.shape[1]
        if time > self.config.seq_len:
            raise ValueError(f"sequence of {time} tokens is longer than seq_len={self.config.seq_len}")
        pos = torch.arange(time, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        # tied output layer: the token embedding matrix maps the residual stream to logits
        logits = F.linear(self.ln_f(x), self.tok_emb.weight)
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))
