"""BERT and RoBERTa (incl. MiniLM): absolute positions, post-LN blocks.

With padding, the blocks are taken apart so that their linear layers run on the real positions
only (:mod:`spt_cli.backbones.packing`); ``pack_padding = False`` runs every block as the
transformers module instead (e.g. for hooks).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from spt_cli.backbones import packing
from spt_cli.backbones.base import BackboneAdapter, BlockContext, offset_cache


class BertLikeAdapter(BackboneAdapter):
    """BERT and RoBERTa (incl. MiniLM): absolute positions, post-LN blocks."""

    supports_prefix = True
    pack_padding = True

    def blocks(self) -> nn.ModuleList:
        return self.base.encoder.layer

    def max_positions(self) -> int | None:
        if self.family == "roberta":  # positions start after padding_idx
            return int(self.config.max_position_embeddings) - int(self.config.pad_token_id) - 1
        return int(self.config.max_position_embeddings)

    def embed(self, input_ids, token_type_ids, attention_mask, prompt=None, position_offset=0):
        emb = self.base.embeddings
        if prompt is None:
            return emb(
                input_ids=input_ids, token_type_ids=token_type_ids, cache_length=position_offset
            )
        words = emb.word_embeddings(input_ids)
        if token_type_ids is not None:
            token_type_ids = torch.cat(
                [token_type_ids.new_zeros(input_ids.shape[0], prompt.shape[1]), token_type_ids], 1
            )
        return emb(
            inputs_embeds=torch.cat([prompt.to(words.dtype), words], 1),
            token_type_ids=token_type_ids,
        )

    def context(self, hidden, mask2d, state, position_offset=0, prefix_len=0):
        cache = offset_cache(hidden.shape[0], prefix_len, hidden) if prefix_len else None
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=mask2d, cache=cache
        )
        packed, groups = packing.pack(mask2d, prefix_len) if self.pack_padding else (None, None)
        return BlockContext(mask=mask, mask2d=mask2d, extra={"packed": packed, "groups": groups})

    @staticmethod
    def _plain(layer: nn.Module) -> bool:
        """A BertLayer/RobertaLayer without cross-attention (what the split paths handle)."""
        return not getattr(layer, "add_cross_attention", False) and hasattr(
            layer.attention.self, "query"
        )

    @staticmethod
    def _attend(layer: nn.Module, query, key, value, mask) -> torch.Tensor:
        """The layer's attention as BertSelfAttention computes it: [B, queries, heads, size]."""
        sa = layer.attention.self
        return packing.attend(sa, query, key, value, mask, sa.dropout.p)

    def run_block(self, index, hidden, ctx, cache=None):
        layer = self.blocks()[index]
        packed = ctx.extra.get("packed")
        if packed is None or not self._plain(layer):
            return layer(hidden, ctx.mask, cache=cache)
        # BertLayer taken apart so that its linear layers see the real positions only.
        batch, length, _ = hidden.shape
        sa = layer.attention.self
        x = packing.gather(hidden, packed)
        groups = ctx.extra.get("groups")
        if groups is not None and cache is None:
            # Rows grouped by length, each group padded to its own longest row only.
            out = packing.attend_groups(
                [sa.query(x), sa.key(x), sa.value(x)],
                groups,
                sa.attention_head_size,
                lambda q, k, v, mask: self._attend(layer, q, k, v, mask),
            )
        else:
            query, key, value = (
                packing.spread_heads(f(x), packed, batch, length, sa.attention_head_size)
                for f in (sa.query, sa.key, sa.value)
            )
            if cache is not None:
                key, value = cache.update(key, value, sa.layer_idx)
            out = self._attend(layer, query, key, value, ctx.mask)
            out = packing.gather(out.flatten(2), packed)
        out = layer.feed_forward_chunk(layer.attention.output(out, x))
        return packing.spread(out, packed, batch, length)

    def run_block_rows(self, index, hidden, ctx, rows, cache=None):
        # BertLayer / RobertaLayer taken apart: queries, attention output and feed-forward
        # for the kept positions only; keys and values (and the cache) for all of them.
        layer = self.blocks()[index]
        if not self._plain(layer):
            return super().run_block_rows(index, hidden, ctx, rows, cache)
        sa = layer.attention.self
        batch = hidden.shape[0]
        at = torch.arange(batch, device=hidden.device)
        kept = hidden[at, rows].unsqueeze(1)  # [B, 1, d]
        heads = (batch, -1, sa.num_attention_heads, sa.attention_head_size)
        query = sa.query(kept).view(heads).transpose(1, 2)
        key, value = (
            t.view(heads).transpose(1, 2)
            for t in packing.project(hidden, ctx.extra.get("packed"), sa.key, sa.value)
        )
        if cache is not None:
            key, value = cache.update(key, value, sa.layer_idx)
        mask = ctx.mask
        if mask is not None and mask.dim() == 4 and mask.shape[-2] > 1:
            mask = mask[at, :, rows].unsqueeze(2)  # [B, 1, 1, keys]: the kept queries' rows
        out = self._attend(layer, query, key, value, mask)
        out = layer.attention.output(out.reshape(batch, 1, -1).contiguous(), kept)
        return layer.feed_forward_chunk(out)

    def lm_logits(self, hidden):
        if self.family == "bert":
            return self.model.cls(hidden)
        return self.model.lm_head(hidden)
