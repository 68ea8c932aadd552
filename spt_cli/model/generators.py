"""Prompt sources: the static input prompt, the per-layer generators G_l (pooled, naive,
static) and P-tuning v2's key/value prefixes.

Every generator maps the text states entering a block, H_X [B, n, d], and a :class:`TextView`
of the batch (mask, summary-token index, pooling bins) to a prompt [B, p, d].
"""

from __future__ import annotations

from functools import cached_property

import torch
from torch import nn
from torch.nn import functional as F


def pool_bins(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Bin membership [B, size, n] (bool) of adaptive pooling over each row's real tokens.

    Bin j covers real-token ranks [floor(j L / size), ceil((j + 1) L / size)) for a row with L
    real tokens, which is exactly ``F.adaptive_{avg,max}_pool1d`` applied to the unpadded row.
    It depends on the mask only, so one forward computes it once for all its generators.
    """
    mask = mask.to(torch.long)
    lengths = mask.sum(1, keepdim=True)  # [B, 1]
    rank = mask.cumsum(1) - 1  # rank of each real token among the real tokens
    j = torch.arange(size, device=mask.device).unsqueeze(0)  # [1, size]
    start = torch.div(j * lengths, size, rounding_mode="floor")
    end = torch.div((j + 1) * lengths + size - 1, size, rounding_mode="floor")
    return (
        (rank.unsqueeze(1) >= start.unsqueeze(2))
        & (rank.unsqueeze(1) < end.unsqueeze(2))
        & mask.bool().unsqueeze(1)
    )


def pool_real_tokens(
    x: torch.Tensor,
    mask: torch.Tensor,
    size: int,
    mode: str,
    bins: torch.Tensor | None = None,
) -> torch.Tensor:
    """Adaptive avg/max pooling of ``x`` [B, n, m] over each row's real tokens to ``size`` bins.

    Padding never enters a bin (see :func:`pool_bins`; ``bins`` is its result when the caller
    already has it), so the result is independent of how much padding a batch has.
    """
    member = pool_bins(mask, size) if bins is None else bins
    if mode == "avg":
        weights = member.to(x.dtype)
        weights = weights / weights.sum(-1, keepdim=True).clamp(min=1.0)
        return weights @ x
    if mode == "max":
        filled = x.unsqueeze(1).masked_fill(~member.unsqueeze(-1), float("-inf"))
        out = filled.amax(2)
        return torch.where(member.any(-1, keepdim=True), out, torch.zeros_like(out))
    raise ValueError(f"unknown pool mode {mode!r}")


class TextView:
    """What generators read about one forward's text besides its states: the mask [B, n], the
    summary token's index [B] and the pooling bins, computed once per forward on first use."""

    def __init__(self, mask: torch.Tensor, summary_index: torch.Tensor, num_tokens: int) -> None:
        self.mask, self.summary_index, self.num_tokens = mask, summary_index, num_tokens

    @cached_property
    def bins(self) -> torch.Tensor:
        return pool_bins(self.mask, self.num_tokens)


class StaticPrompt(nn.Module):
    """A learned p x d prompt, the same for every example."""

    def __init__(self, num_tokens: int, dim: int, init: torch.Tensor | None = None) -> None:
        super().__init__()
        if init is None:
            # Hidden-state prompts: small normal init, like transformers' initializer_range.
            init = torch.randn(num_tokens, dim) * 0.02
        self.weight = nn.Parameter(init.clone().detach().float())

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.weight.unsqueeze(0).expand(batch_size, -1, -1)


class StaticGenerator(StaticPrompt):
    """Generator interface around a static prompt (deep prompt tuning)."""

    def forward(self, hidden: torch.Tensor, text: TextView) -> torch.Tensor:  # type: ignore[override]
        return super().forward(hidden.shape[0])


class PooledGenerator(nn.Module):
    """LPT's pooling prompt generator: down d->m, adaptive pool over real tokens to p
    positions, ReLU, up m->d, dropout."""

    def __init__(self, dim: int, bottleneck: int, num_tokens: int, pool: str, dropout: float):
        super().__init__()
        self.num_tokens = num_tokens
        self.pool = pool
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, text: TextView) -> torch.Tensor:
        z = pool_real_tokens(self.down(hidden), text.mask, self.num_tokens, self.pool, text.bins)
        return self.dropout(self.up(F.relu(z)))


class NaiveGenerator(nn.Module):
    """LPT's naive generator: the summary token's state (first token of an encoder, last real
    token of a decoder), d->m, ReLU, m->p*d, dropout."""

    def __init__(self, dim: int, bottleneck: int, num_tokens: int, dropout: float) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, num_tokens * dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, text: TextView) -> torch.Tensor:
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        summary = hidden[rows, text.summary_index]
        out = self.up(F.relu(self.down(summary)))
        return self.dropout(out.view(hidden.shape[0], self.num_tokens, hidden.shape[-1]))


class PrefixEncoder(nn.Module):
    """P-tuning v2 key/value prefixes (THUDM's PrefixEncoder): a [p, n_layers * 2 * kv_dim]
    table, or with ``projection`` an embedding [p, d] -> Linear -> tanh -> Linear; dropout on
    the key/values as THUDM applies it."""

    def __init__(
        self,
        num_tokens: int,
        layers: list[int],
        kv_heads: int,
        head_dim: int,
        dim: int,
        projection: bool,
        hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.num_tokens, self.layers = num_tokens, list(layers)
        self.kv_heads, self.head_dim = kv_heads, head_dim
        out = len(self.layers) * 2 * kv_heads * head_dim
        self.projection = projection
        if projection:
            self.embedding = nn.Parameter(torch.randn(num_tokens, dim))
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, out))
        else:
            self.embedding = nn.Parameter(torch.randn(num_tokens, out))  # nn.Embedding's init
        self.dropout = nn.Dropout(dropout)

    def forward(self, batch_size: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        table = self.mlp(self.embedding) if self.projection else self.embedding
        table = self.dropout(table.unsqueeze(0).expand(batch_size, -1, -1))
        # [B, p, n_layers * 2, heads, head_dim] -> per layer ([B, heads, p, head_dim]) * 2
        kv = table.reshape(
            batch_size, self.num_tokens, len(self.layers) * 2, self.kv_heads, self.head_dim
        ).permute(2, 0, 3, 1, 4)
        return {layer: (kv[2 * i], kv[2 * i + 1]) for i, layer in enumerate(self.layers)}
