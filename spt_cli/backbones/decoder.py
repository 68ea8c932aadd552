"""What the causal decoders (GPT-2, Llama) share: positions, the causal mask and the LM head."""

from __future__ import annotations

import torch
from transformers.masking_utils import create_causal_mask

from spt_cli.backbones.base import BackboneAdapter, offset_cache


class DecoderAdapter(BackboneAdapter):
    """Base of the causal decoders: position ids from an offset, the causal mask (sized for
    key/value prefixes) and the LM head."""

    is_decoder = True
    supports_prefix = True

    @property
    def uses_token_types(self) -> bool:
        return False

    def _positions(self, length: int, offset: int, like: torch.Tensor) -> torch.Tensor:
        return (torch.arange(length, device=like.device) + offset).unsqueeze(0)

    def _causal(self, hidden, mask2d, position_ids, prefix_len):
        cache = offset_cache(hidden.shape[0], prefix_len, hidden) if prefix_len else None
        return create_causal_mask(
            config=self.config,
            inputs_embeds=hidden,
            attention_mask=mask2d,
            cache=cache,
            position_ids=position_ids,
        )

    def lm_logits(self, hidden):
        return self.model.lm_head(hidden)
