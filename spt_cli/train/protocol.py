"""What the training loop, the search and the lower-layer cache need from a model.

:class:`spt_cli.model.GatedPromptModel` is the implementation; tests use a small fake with the
same methods. Every method is required: a model without gates returns empty lists, a model
without frozen lower layers has ``cache_layer = None``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class TrainableModel(Protocol):
    """A prompt model whose weights the loop trains and whose gates a search may step."""

    candidate_layers: list[int]
    num_layers: int

    def __call__(self, **batch: Any) -> dict[str, torch.Tensor]:
        """``{"logits": ..., "loss": ...}`` (loss when the batch has labels)."""
        ...

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every trainable non-gate parameter (prompts, generators, head; backbone if trained)."""
        ...

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The trainable backbone parameters (fine-tuning), trained at ``trainer.backbone_lr``;
        empty for a frozen backbone."""
        ...

    def gate_parameters(self) -> list[nn.Parameter]:
        """The gate logits alpha (empty without soft gates); only a search steps them."""
        ...

    def gate_values(self) -> torch.Tensor:
        """Differentiable a_l per candidate layer."""
        ...

    def gate_probs(self) -> torch.Tensor:
        """Detached a_l per candidate layer."""
        ...

    def set_gate_budget(self, budget: float | None) -> None:
        """Hold sum_l a_l at ``budget`` (a shift of every gate's logit); None: no shift."""
        ...

    def override_gates(self, values: torch.Tensor | None) -> None:
        """Use ``values`` as the gates of every forward (None: the learned gates again)."""
        ...

    mix_observer: Any
    """None, or called as ``observer(layer, a_l, G_l(H_X), H_P)`` at every gated mixture."""

    @property
    def tau(self) -> float:
        """The gate temperature."""
        ...

    def set_tau(self, tau: float) -> None:
        """Set the gate temperature (annealing)."""
        ...

    @property
    def cache_layer(self) -> int | None:
        """First block whose input depends on trained weights, when every block below it is
        frozen and deterministic (then :meth:`lower_states` may be cached); else None."""
        ...

    def lower_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The states [B, n, d] entering block ``cache_layer``."""
        ...

    def train(self, mode: bool = True) -> Any: ...

    def to(self, device: torch.device) -> Any: ...

    def named_parameters(self) -> Any: ...
