"""The GPT-2 adapter."""

from __future__ import annotations

import torch
from torch import nn

from spt_cli.backbones.base import BlockContext
from spt_cli.backbones.decoder import DecoderAdapter


class GPT2Adapter(DecoderAdapter):
    """GPT-2: learned absolute positions, pre-LN blocks, final ln_f."""

    def blocks(self) -> nn.ModuleList:
        return self.base.h

    def max_positions(self) -> int | None:
        return int(self.config.n_positions)

    def embed(self, input_ids, token_type_ids, attention_mask, prompt=None, position_offset=0):
        tr = self.base
        x = tr.wte(input_ids)
        if prompt is not None:
            x = torch.cat([prompt.to(x.dtype), x], 1)
        pos = self._positions(x.shape[1], position_offset, x)
        return tr.drop(x + tr.wpe(pos))

    def context(self, hidden, mask2d, state, position_offset=0, prefix_len=0):
        pos = self._positions(hidden.shape[1], position_offset, hidden)
        mask = self._causal(hidden, mask2d, pos, prefix_len)
        return BlockContext(mask=mask, mask2d=mask2d, extra={"position_ids": pos})

    def run_block(self, index, hidden, ctx, cache=None):
        return self.blocks()[index](hidden, cache, ctx.mask, position_ids=ctx.extra["position_ids"])

    def final(self, hidden):
        return self.base.ln_f(hidden)
