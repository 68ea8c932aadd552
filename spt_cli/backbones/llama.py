"""The Llama adapter."""

from __future__ import annotations

import torch
from torch import nn

from spt_cli.backbones.base import BlockContext
from spt_cli.backbones.decoder import DecoderAdapter


class LlamaAdapter(DecoderAdapter):
    """Llama: rotary positions computed for the (extended) sequence, RMSNorm at the end."""

    layer_prompts_take_positions = True  # rotary positions cover the whole sequence

    def blocks(self) -> nn.ModuleList:
        return self.base.layers

    def kv_shape(self) -> tuple[int, int]:
        heads = int(self.config.num_attention_heads)
        kv = int(getattr(self.config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(self.config, "head_dim", None) or self.hidden_size // heads)
        return kv, head_dim

    def embed(self, input_ids, token_type_ids, attention_mask, prompt=None, position_offset=0):
        x = self.base.embed_tokens(input_ids)
        if prompt is not None:
            x = torch.cat([prompt.to(x.dtype), x], 1)
        return x

    def context(self, hidden, mask2d, state, position_offset=0, prefix_len=0):
        # Rotary attention is relative, so giving prompts positions 0..p-1 and text p..
        # keeps every text-text offset of the prompt-free layers below.
        pos = self._positions(hidden.shape[1], position_offset, hidden)
        mask = self._causal(hidden, mask2d, pos, prefix_len)
        rope = self.base.rotary_emb(hidden, position_ids=pos)
        return BlockContext(
            mask=mask, mask2d=mask2d, extra={"position_ids": pos, "position_embeddings": rope}
        )

    def run_block(self, index, hidden, ctx, cache=None):
        return self.blocks()[index](
            hidden,
            attention_mask=ctx.mask,
            position_ids=ctx.extra["position_ids"],
            position_embeddings=ctx.extra["position_embeddings"],
            cache=cache,
        )

    def final(self, hidden):
        return self.base.norm(hidden)
