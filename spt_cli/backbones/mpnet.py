"""The MPNet adapter."""

from __future__ import annotations

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from spt_cli.backbones.base import BackboneAdapter, BlockContext


class MPNetAdapter(BackboneAdapter):
    """MPNet: absolute positions in the embeddings plus a relative position bias per block."""

    def blocks(self) -> nn.ModuleList:
        return self.base.encoder.layer

    @property
    def uses_token_types(self) -> bool:
        return False

    def max_positions(self) -> int | None:
        return int(self.config.max_position_embeddings) - 2  # padding_idx 1 is hard-coded

    def embed(self, input_ids, token_type_ids, attention_mask, prompt=None, position_offset=0):
        emb = self.base.embeddings
        if prompt is None:
            return emb(input_ids=input_ids)
        words = emb.word_embeddings(input_ids)
        return emb(inputs_embeds=torch.cat([prompt.to(words.dtype), words], 1))

    def context(self, hidden, mask2d, state, position_offset=0, prefix_len=0):
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=mask2d
        )
        bias = self.base.encoder.compute_position_bias(hidden)
        return BlockContext(mask=mask, mask2d=mask2d, extra={"position_bias": bias})

    def run_block(self, index, hidden, ctx, cache=None):
        return self.blocks()[index](hidden, ctx.mask, ctx.extra["position_bias"])[0]

    def lm_logits(self, hidden):
        return self.model.lm_head(hidden)
