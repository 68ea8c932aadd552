"""Padding packing: exact but faster blocks for batches with padding.

With padding, a block's linear layers (12 d^2 FLOPs per position, most of the block) can run
on the real positions only ("packed"); padded positions then hold zeros instead of unread
values. Attention either keeps the padded layout and its mask, or groups the rows by length so
that each group is padded to its own longest row only (attention costs length^2 per row).
The adapters that use this (BERT/RoBERTa) take the blocks apart around these helpers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
    ``masks[g]`` [rows, 1, 1, width]: key mask; ``inverse``: from the concatenated real
    entries of all groups back to packed order.
    """

    index: list[torch.Tensor]
    real: list[torch.Tensor]
    masks: list[torch.Tensor]
    inverse: torch.Tensor


def pack(
    mask2d: torch.Tensor, prefix_len: int = 0
) -> tuple[torch.Tensor | None, LengthGroups | None]:
    """(packed, groups) for a layout whose ``mask2d`` [B, prefix + T] covers prefix + T
    positions: ``packed`` [N] the flat indices of the N real positions among B * T, None when
    the batch has too little padding; ``groups`` its length groups, None with prefixes
    (prefix key/values come per row of the whole batch) or when grouping saves nothing."""
    real = mask2d[:, prefix_len:].reshape(-1)
    packed, groups = None, None
    limit = (1 - PACK_MIN_PADDING) * real.numel()
    if real.numel() and int(real.sum()) <= limit:
        packed = real.nonzero().squeeze(1)
        if not prefix_len:
            groups = length_groups(mask2d)
    return packed, groups


def spread(values: torch.Tensor, packed: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """[N, d] values of the real positions -> [B, T, d] with zeros at the padding."""
    full = values.new_zeros(batch * length, values.shape[-1])
    return full.index_copy(0, packed, values).view(batch, length, -1)


def length_groups(mask2d: torch.Tensor) -> LengthGroups | None:
    """Length groups of a right-padded batch, or None when they would not save attention
    work (rows of similar length) or the padding is not at the right."""
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
        masks.append(inside[:, None, None, :])
        order_real.append(flat[keep])
    inverse = torch.empty(total, dtype=torch.long, device=mask2d.device)
    inverse[torch.cat(order_real)] = torch.arange(total, device=mask2d.device)
    return LengthGroups(index, real, masks, inverse)
