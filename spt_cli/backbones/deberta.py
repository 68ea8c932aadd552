"""The DeBERTa adapter, for the deberta-v2 family (v2, v3) and DeBERTa v1 (e.g.
microsoft/deberta-large), which shares it."""

from __future__ import annotations

import torch
from torch import nn

from spt_cli.backbones.base import BackboneAdapter, BlockContext


class DebertaAdapter(BackboneAdapter):
    """DeBERTa v1/v2/v3: disentangled relative attention (rel_embeddings, get_rel_pos) and,
    in v2-xlarge style configs, a convolution after block 0."""

    def blocks(self) -> nn.ModuleList:
        return self.base.encoder.layer

    @property
    def uses_token_types(self) -> bool:
        return int(getattr(self.config, "type_vocab_size", 0) or 0) > 0

    def max_positions(self) -> int | None:
        # Without absolute position embeddings only relative (bucketed) positions are used.
        if getattr(self.config, "position_biased_input", True):
            return int(self.config.max_position_embeddings)
        return None

    def embed(self, input_ids, token_type_ids, attention_mask, prompt=None, position_offset=0):
        emb = self.base.embeddings
        if token_type_ids is None:  # as DebertaV2Model.forward does
            token_type_ids = torch.zeros_like(input_ids)
        if prompt is None:
            return emb(input_ids=input_ids, token_type_ids=token_type_ids, mask=attention_mask)
        batch, p = input_ids.shape[0], prompt.shape[1]
        words = emb.word_embeddings(input_ids)
        return emb(
            inputs_embeds=torch.cat([prompt.to(words.dtype), words], 1),
            token_type_ids=torch.cat([token_type_ids.new_zeros(batch, p), token_type_ids], 1),
            mask=torch.cat([attention_mask.new_ones(batch, p), attention_mask], 1),
        )

    def begin(self):
        return {"rel_embeddings": self.base.encoder.get_rel_embedding()}

    def context(self, hidden, mask2d, state, position_offset=0, prefix_len=0):
        enc = self.base.encoder
        return BlockContext(
            mask=enc.get_attention_mask(mask2d),
            mask2d=mask2d,
            extra={
                "relative_pos": enc.get_rel_pos(hidden),
                "rel_embeddings": state["rel_embeddings"],
            },
        )

    def run_block(self, index, hidden, ctx, cache=None):
        out = self.blocks()[index](
            hidden,
            ctx.mask,
            relative_pos=ctx.extra["relative_pos"],
            rel_embeddings=ctx.extra["rel_embeddings"],
        )[0]
        conv = getattr(self.base.encoder, "conv", None)
        if index == 0 and conv is not None:
            out = conv(hidden, out, ctx.mask2d)
        return out

    def lm_logits(self, hidden):
        m = self.model
        if getattr(m, "legacy", True) and hasattr(m, "cls"):
            return m.cls(hidden)
        return m.lm_predictions(hidden, self.base.embeddings.word_embeddings)
