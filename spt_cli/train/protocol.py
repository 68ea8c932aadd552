"""What the training loop and the lower-layer cache need from a model.

:class:`spt_cli.model.GatedPromptModel` is the implementation; tests use a small fake with the
same methods. Every method is required: a model without frozen lower layers has
``cache_layer = None``. What a search needs beyond this (the gates) is
:class:`spt_cli.search.protocol.SearchableModel`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class TrainableModel(Protocol):
    """A prompt model whose weights the loop trains."""

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
