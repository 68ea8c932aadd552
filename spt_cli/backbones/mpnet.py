"""The MPNet adapter.

With padding, the blocks are taken apart so that their linear layers run on the real positions
only (:mod:`spt_cli.backbones.packing`), as for BERT; ``pack_padding = False`` runs every block
as the transformers module.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from spt_cli.backbones import packing
from spt_cli.backbones.base import BackboneAdapter, BlockContext


class MPNetAdapter(BackboneAdapter):
    """MPNet: absolute positions in the embeddings plus a relative position bias per block."""

    pack_padding = True

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
        packed, groups = packing.pack(mask2d) if self.pack_padding else (None, None)
        if groups is not None:
            # MPNet's attention adds its mask: convert the groups' boolean masks once per
            # layout rather than in every block (in the dtype of the padded layout's mask).
            additive = [packing.additive(m, hidden.dtype) for m in groups.masks]
            groups = dataclasses.replace(groups, masks=additive)
        return BlockContext(
            mask=mask,
            mask2d=mask2d,
            extra={"position_bias": bias, "packed": packed, "groups": groups},
        )

    @staticmethod
    def _attention(
        sa: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
        bias: torch.Tensor,
    ) -> torch.Tensor:
        """MPNetSelfAttention's attention (the module has no dispatch function to call) for
        queries [B, H, q, S] and keys/values [B, H, k, S]: [B, q, H * S] before ``o``.
        ``tests/test_speed_exactness.py`` holds it to the module's own forward."""
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(sa.attention_head_size)
        scores = scores + bias
        if mask is not None:
            scores = scores + mask
        probs = sa.dropout(nn.functional.softmax(scores, dim=-1))
        out = torch.matmul(probs, value).permute(0, 2, 1, 3)
        return out.reshape(out.shape[0], out.shape[1], -1)

    @staticmethod
    def _finish(layer: nn.Module, attended: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The block after attention: ``o``, residual + LayerNorm, feed-forward."""
        att = layer.attention
        out = att.LayerNorm(att.dropout(att.attn.o(attended)) + residual)
        return layer.output(layer.intermediate(out), out)

    def run_block(self, index, hidden, ctx, cache=None):
        layer = self.blocks()[index]
        bias = ctx.extra["position_bias"]
        packed = ctx.extra["packed"]
        if packed is None:
            return layer(hidden, ctx.mask, bias)[0]
        batch, length, _ = hidden.shape
        sa = layer.attention.attn
        size = sa.attention_head_size
        x = packing.gather(hidden, packed)
        parts = [sa.q(x), sa.k(x), sa.v(x)]
        groups = ctx.extra["groups"]
        if groups is not None:

            def attend(
                q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
            ) -> torch.Tensor:
                # Rows start at position 0, so the group's bias is the layout's top-left corner.
                width = q.shape[2]
                return self._attention(sa, q, k, v, mask, bias[:1, :, :width, :width])

            out = packing.attend_groups(parts, groups, size, attend)
        else:
            q, k, v = (packing.spread_heads(t, packed, batch, length, size) for t in parts)
            out = self._attention(sa, q, k, v, ctx.mask, bias)
            out = packing.gather(out, packed)
        return packing.spread(self._finish(layer, out, x), packed, batch, length)

    def run_block_rows(self, index, hidden, ctx, rows, cache=None):
        # Queries, attention output and feed-forward at the kept positions only; keys and
        # values at every (real) position.
        layer = self.blocks()[index]
        sa = layer.attention.attn
        batch = hidden.shape[0]
        at = torch.arange(batch, device=hidden.device)
        kept = hidden[at, rows].unsqueeze(1)  # [B, 1, d]
        heads = (batch, -1, sa.num_attention_heads, sa.attention_head_size)
        query = sa.q(kept).view(heads).transpose(1, 2)
        key, value = (
            t.view(heads).transpose(1, 2)
            for t in packing.project(hidden, ctx.extra["packed"], sa.k, sa.v)
        )
        bias = ctx.extra["position_bias"][at, :, rows].unsqueeze(2)  # [B, H, 1, keys]
        mask = ctx.mask
        if mask is not None and mask.shape[-2] > 1:
            mask = mask[at, :, rows].unsqueeze(2)  # [B, 1, 1, keys]: the kept queries' rows
        out = self._attention(sa, query, key, value, mask, bias)
        return self._finish(layer, out, kept)

    def lm_logits(self, hidden):
        return self.model.lm_head(hidden)
