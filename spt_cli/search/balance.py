"""Class-balanced loss for the search's gate step (``search.alpha_loss=balanced``).

On an imbalanced D_alpha (CR: 79 % positive) the mean loss is lowest for a model that answers
the majority class, so alpha can improve it by closing every gate. Weighting each class by its
inverse frequency in D_alpha makes always answering one class cost as much as chance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Per-class weights n / (C * n_c) from the labels of a split (C: classes present; a class
    absent from the split gets weight 0, it never occurs in a loss there)."""
    counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=num_classes)
    if len(counts) > num_classes:
        raise ValueError(f"label {len(counts) - 1} out of range for {num_classes} classes")
    present = int((counts > 0).sum())
    total = float(counts.sum())
    weights = torch.zeros(num_classes)
    for c, n in enumerate(counts.tolist()):
        if n:
            weights[c] = total / (present * n)
    return weights


def balanced_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Cross entropy over the class logits, each example weighted by its class's weight and the
    sum normalised by the batch's total weight (``F.cross_entropy(weight=...)``)."""
    return F.cross_entropy(logits.float(), labels.long(), weight=weights.to(logits.device))
