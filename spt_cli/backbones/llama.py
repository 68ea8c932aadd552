"""The Llama adapter (incl. SmolLM2).

With padding, the blocks are taken apart so that their norms, linear layers and rotary
positions run on the real positions only (:mod:`spt_cli.backbones.packing`); attention runs on
rows grouped by length (causal within each group) or, with prefixes, on the padded layout.
``pack_padding = False`` runs every block as the transformers module.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from spt_cli.backbones import packing
from spt_cli.backbones.base import BlockContext
from spt_cli.backbones.decoder import DecoderAdapter


class LlamaAdapter(DecoderAdapter):
    """Llama: rotary positions computed for the (extended) sequence, RMSNorm at the end."""

    layer_prompts_take_positions = True  # rotary positions cover the whole sequence
    pack_padding = True

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
        extra = {"position_ids": pos, "position_embeddings": rope, "packed": None}
        if self.pack_padding:
            packed, groups = packing.pack(mask2d, prefix_len, causal=True)
            if packed is not None:
                # Each packed position keeps the rotary angle of its column in the layout.
                columns = packed % hidden.shape[1]
                cos, sin = (r[0].index_select(0, columns) for r in rope)
                extra.update(packed=packed, groups=groups, packed_rope=(cos, sin))
        return BlockContext(mask=mask, mask2d=mask2d, extra=extra)

    def run_block(self, index, hidden, ctx, cache=None):
        layer = self.blocks()[index]
        packed = ctx.extra["packed"]
        if packed is None:
            return layer(
                hidden,
                attention_mask=ctx.mask,
                position_ids=ctx.extra["position_ids"],
                position_embeddings=ctx.extra["position_embeddings"],
                cache=cache,
            )
        # LlamaDecoderLayer taken apart; everything but attention is per position.
        batch, length, _ = hidden.shape
        sa = layer.self_attn
        x = packing.gather(hidden, packed)  # the residual stream at the real positions
        normed = layer.input_layernorm(x)
        n = x.shape[0]
        query = sa.q_proj(normed).view(n, -1, sa.head_dim)
        key = sa.k_proj(normed).view(n, -1, sa.head_dim)
        value = sa.v_proj(normed)
        cos, sin = ctx.extra["packed_rope"]
        query, key = apply_rotary_pos_emb(query, key, cos, sin)  # [N, heads, head_dim]
        parts = [query.reshape(n, -1), key.reshape(n, -1), value]
        groups = ctx.extra["groups"]
        if groups is not None and cache is None:
            out = packing.attend_groups(
                parts,
                groups,
                sa.head_dim,
                lambda q, k, v, mask: packing.attend(sa, q, k, v, mask, sa.attention_dropout),
            )
        else:
            q, k, v = (packing.spread_heads(t, packed, batch, length, sa.head_dim) for t in parts)
            if cache is not None:
                k, v = cache.update(k, v, sa.layer_idx)
            out = packing.gather(
                packing.attend(sa, q, k, v, ctx.mask, sa.attention_dropout).flatten(2), packed
            )
        h = x + sa.o_proj(out)
        h = h + layer.mlp(layer.post_attention_layernorm(h))
        return packing.spread(h, packed, batch, length)

    def run_block_rows(self, index, hidden, ctx, rows, cache=None):
        if ctx.mask is None:
            # Causal attention without a mask tensor (no padding, no prefix): the kept query's
            # key range would have to be built here; the whole block is as exact.
            return super().run_block_rows(index, hidden, ctx, rows, cache)
        # The query, attention output and feed-forward at the kept positions only; keys and
        # values (and the cache) at every position.
        layer = self.blocks()[index]
        sa = layer.self_attn
        batch, length, _ = hidden.shape
        at = torch.arange(batch, device=hidden.device)
        kept = hidden[at, rows].unsqueeze(1)  # [B, 1, d]
        cos, sin = ctx.extra["position_embeddings"]  # [1, T, head_dim]
        query = sa.q_proj(layer.input_layernorm(kept)).view(batch, 1, -1, sa.head_dim)
        query = query.transpose(1, 2)  # [B, heads, 1, head_dim]
        angles = cos[0, rows].unsqueeze(1), sin[0, rows].unsqueeze(1)  # [B, 1, head_dim]
        query, _ = apply_rotary_pos_emb(query, query, *angles)
        packed = ctx.extra["packed"]
        if packed is None:
            normed = layer.input_layernorm(hidden)
            key = sa.k_proj(normed).view(batch, length, -1, sa.head_dim).transpose(1, 2)
            value = sa.v_proj(normed).view(batch, length, -1, sa.head_dim).transpose(1, 2)
            key, _ = apply_rotary_pos_emb(key, key, cos, sin)
        else:
            normed = layer.input_layernorm(packing.gather(hidden, packed))
            n = normed.shape[0]
            key = sa.k_proj(normed).view(n, -1, sa.head_dim)
            pc, ps = ctx.extra["packed_rope"]
            key, _ = apply_rotary_pos_emb(key, key, pc, ps)
            key, value = (
                packing.spread_heads(t.reshape(n, -1), packed, batch, length, sa.head_dim)
                for t in (key, sa.v_proj(normed))
            )
        if cache is not None:
            key, value = cache.update(key, value, sa.layer_idx)
        mask = ctx.mask.expand(batch, -1, -1, -1)[at, :, rows].unsqueeze(2)  # [B, 1, 1, keys]
        out = packing.attend(sa, query, key, value, mask, sa.attention_dropout).reshape(
            batch, 1, -1
        )
        h = kept + sa.o_proj(out)
        return h + layer.mlp(layer.post_attention_layernorm(h))

    def final(self, hidden):
        return self.base.norm(hidden)
