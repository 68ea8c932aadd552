"""Deriving the prompt layers from the searched gates."""

from __future__ import annotations

import math


def default_budget(num_layers: int) -> int:
    """About a third of the layers (method.md): round(L / 3), at least 1."""
    return max(1, int(math.floor(num_layers / 3 + 0.5)))


def select_layers(
    probs: dict[int, float], budget: int | None = None, threshold: float | None = None
) -> list[int]:
    """Derive the prompt layers: every layer above ``threshold`` if given, else the ``budget``
    layers with the largest gate probability (ties broken towards the lower layer)."""
    if threshold is not None:
        return sorted(layer for layer, p in probs.items() if p > threshold)
    ranked = sorted(probs, key=lambda layer: (-probs[layer], layer))
    return sorted(ranked[: int(budget)])
