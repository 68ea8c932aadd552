"""Padding packing: exact but faster blocks for batches with padding.

With padding, a block's linear layers (12 d^2 FLOPs per position, most of the block) can run
on the real positions only ("packed"); padded positions then hold zeros instead of unread
values. Attention either keeps the padded layout and its mask, or groups the rows by length so
that each group is padded to its own longest row only (attention costs length^2 per row).
The adapters that use this (BERT/RoBERTa, MPNet, Llama) take their blocks apart around these
helpers: the per-position parts (linear layers, norms, rotary positions) run on the packed
positions, attention on the groups or the padded layout.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# Packing is worth it from this share of padding on (few-shot RTE batches are about half
# padding).
PACK_MIN_PADDING = 0.1
# A group ends where a row is shorter than this share of the group's longest row.
GROUP_RATIO = 0.75
MAX_GROUPS = 4


@dataclass
class LengthGroups:
    """Rows of a right-padded batch grouped by length, as gathers over packed positions.

    ``index[g]`` [rows, width]: packed position of each (row, t) of group g, N (a zero row)
    past a row's end; ``real[g]``: the entries of ``index[g].view(-1)`` that are real;
    ``masks[g]``: boolean mask, [rows, 1, 1, width] (keys) or, causal, [rows, 1, width, width];
    ``inverse``: from the concatenated real
    entries of all groups back to packed order.
    """

    index: list[torch.Tensor]
    real: list[torch.Tensor]
    masks: list[torch.Tensor]
    inverse: torch.Tensor


def pack(
    mask2d: torch.Tensor, prefix_len: int = 0, causal: bool = False
) -> tuple[torch.Tensor | None, LengthGroups | None]:
    """(packed, groups) for a layout whose ``mask2d`` [B, prefix + T] covers prefix + T
    positions: ``packed`` [N] the flat indices of the N real positions among B * T, None when
    the batch has too little padding; ``groups`` its length groups (with causal masks for
    ``causal``), None with prefixes (prefix key/values come per row of the whole batch) or
    when grouping saves nothing."""
    real = mask2d[:, prefix_len:].reshape(-1)
    packed, groups = None, None
    limit = (1 - PACK_MIN_PADDING) * real.numel()
    if real.numel() and int(real.sum()) <= limit:
        packed = real.nonzero().squeeze(1)
        if not prefix_len:
            groups = length_groups(mask2d, causal)
    return packed, groups


def gather(hidden: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """[B, T, d] -> [N, d]: the values at the real positions ``packed``."""
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, packed)


def spread(values: torch.Tensor, packed: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """[N, d] values of the real positions -> [B, T, d] with zeros at the padding."""
    full = values.new_zeros(batch * length, values.shape[-1])
    return full.index_copy(0, packed, values).view(batch, length, -1)


def spread_heads(
    values: torch.Tensor, packed: torch.Tensor, batch: int, length: int, head_dim: int
) -> torch.Tensor:
    """[N, H * head_dim] values of the real positions -> [B, H, T, head_dim] (attention's
    layout) with zeros at the padding."""
    return spread(values, packed, batch, length).view(batch, length, -1, head_dim).transpose(1, 2)


def project(
    hidden: torch.Tensor,
    packed: torch.Tensor | None,
    *linears: Callable[[torch.Tensor], torch.Tensor],
) -> list[torch.Tensor]:
    """Per-position layers (e.g. key and value projections) on ``hidden`` [B, T, d], each
    [B, T, w]: with ``packed``, run on the real positions only (one gather for all) and
    spread back with zeros at the padding."""
    if packed is None:
        return [f(hidden) for f in linears]
    batch, length, _ = hidden.shape
    x = gather(hidden, packed)
    return [spread(f(x), packed, batch, length) for f in linears]


def length_groups(mask2d: torch.Tensor, causal: bool = False) -> LengthGroups | None:
    """Length groups of a right-padded batch, or None when they would not save attention
    work (rows of similar length) or the padding is not at the right. With ``causal`` each
    group's mask also hides later positions (a right-padded row keeps its positions 0..n-1,
    so the causal mask within a group is the layout's)."""
    lengths = mask2d.sum(1)
    width = mask2d.shape[1]
    positions = torch.arange(width, device=mask2d.device)
    if not bool((mask2d.bool() == (positions < lengths.unsqueeze(1))).all()):
        return None
    lens = lengths.tolist()
    order = sorted(range(len(lens)), key=lambda r: (-lens[r], r))
    groups: list[list[int]] = []
    for row in order:
        if groups and (lens[row] >= GROUP_RATIO * lens[groups[-1][0]] or len(groups) == MAX_GROUPS):
            groups[-1].append(row)
        else:
            groups.append([row])
    padded = len(lens) * width**2
    grouped = sum(len(g) * lens[g[0]] ** 2 for g in groups)
    if grouped > 0.75 * padded:
        return None
    total = int(lengths.sum())
    starts = torch.cumsum(lengths, 0) - lengths  # packed offset of each row (row-major)
    index, real, masks, order_real = [], [], [], []
    for group in groups:
        rows = torch.tensor(group, device=mask2d.device)
        span = lens[group[0]]
        t = positions[:span].unsqueeze(0)
        inside = t < lengths[rows].unsqueeze(1)  # [rows, span]
        idx = torch.where(inside, starts[rows].unsqueeze(1) + t, torch.full_like(t, total))
        flat = idx.reshape(-1)
        keep = inside.reshape(-1).nonzero().squeeze(1)
        index.append(idx)
        real.append(keep)
        mask = inside[:, None, None, :]
        if causal:
            mask = mask & torch.ones(span, span, dtype=torch.bool, device=mask.device).tril()
        masks.append(mask)
        order_real.append(flat[keep])
    inverse = torch.empty(total, dtype=torch.long, device=mask2d.device)
    inverse[torch.cat(order_real)] = torch.arange(total, device=mask2d.device)
    return LengthGroups(index, real, masks, inverse)


def attend_groups(
    inputs: list[torch.Tensor],
    groups: LengthGroups,
    head_dim: int,
    attend: Callable[..., torch.Tensor],
) -> torch.Tensor:
    """Attention over length groups of packed positions.

    ``inputs``: [N, H_i * head_dim] per packed position (queries, keys, values). Per group,
    ``attend(*parts, mask)`` gets them split into heads, [rows, H_i, width, head_dim] (zeros
    past a row's end), with the group's mask and returns [rows, width, ...]. Returns [N, e]
    in packed order.
    """
    widths = [t.shape[-1] for t in inputs]
    flat = torch.cat(inputs, -1)
    flat = torch.cat([flat, flat.new_zeros(1, flat.shape[1])])  # row N: the padding
    pieces = []
    for index, real, mask in zip(groups.index, groups.real, groups.masks):
        rows, width = index.shape
        g = flat.index_select(0, index.reshape(-1)).view(rows, width, -1)
        parts = (t.view(rows, width, -1, head_dim).transpose(1, 2) for t in g.split(widths, -1))
        out = attend(*parts, mask)
        pieces.append(out.reshape(rows * width, -1).index_select(0, real))
    return torch.cat(pieces).index_select(0, groups.inverse)


def additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True: attend) as the additive float mask eager attention adds."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        ~mask, torch.finfo(dtype).min
    )


def attention_function(module: nn.Module) -> Callable[..., tuple[torch.Tensor, object]]:
    """The attention function an attention module calls: the configured implementation from
    transformers' dispatch, falling back (as the modules do) to the eager function of the
    module's own modelling file."""
    eager = sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(module.config._attn_implementation, eager)


def attend(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    dropout: float,
) -> torch.Tensor:
    """Attention as a transformers attention ``module`` computes it in its forward: its
    configured function, its scaling, ``dropout`` only in training. Queries [B, H, q, S],
    keys/values [B, H', k, S] -> [B, q, H, S]."""
    out, _ = attention_function(module)(
        module,
        query,
        key,
        value,
        mask,
        dropout=dropout if module.training else 0.0,
        scaling=module.scaling,
    )
    return out
