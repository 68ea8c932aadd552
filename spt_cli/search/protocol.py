"""What a search needs from a model beyond what training needs: its gates.

:class:`spt_cli.model.GatedPromptModel` is the implementation; tests use a small fake with the
same methods. Like DARTS' ``arch_parameters()``, the search reaches the gates through these
members only; the weights are trained through :class:`spt_cli.train.protocol.TrainableModel`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from spt_cli.train.protocol import TrainableModel


@runtime_checkable
class SearchableModel(TrainableModel, Protocol):
    """A trainable prompt model with gates a_l at its candidate layers."""

    candidate_layers: list[int]
    num_layers: int

    mix_observer: Any
    """None, or called as ``observer(layer, a_l, G_l(H_X), H_P)`` at every gated mixture."""

    def gate_parameters(self) -> list[nn.Parameter]:
        """The gate logits alpha (empty without learned gates); only the architect steps them."""
        ...

    def gate_values(self) -> torch.Tensor:
        """Differentiable a_l per candidate layer."""
        ...

    def gate_probs(self) -> torch.Tensor:
        """Detached a_l per candidate layer."""
        ...

    def gate_entropy(self) -> float:
        """Mean entropy of the gates (the gate type's own measure of indecision)."""
        ...

    def set_gate_budget(self, budget: float | None) -> None:
        """Hold sum_l a_l at ``budget`` (the gate type's way); None: free gates."""
        ...

    def override_gates(self, values: torch.Tensor | None) -> None:
        """Use ``values`` as the gates of every forward (None: the learned gates again)."""
        ...

    @property
    def tau(self) -> float:
        """The gate temperature (``method.tau`` at the start)."""
        ...

    def set_tau(self, tau: float) -> None:
        """Set the gate temperature (annealing)."""
        ...
