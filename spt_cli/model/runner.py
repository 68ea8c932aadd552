"""Running backbone blocks for one forward of the gated model: the layouts, the key/value
prefixes and the exact-but-faster paths, kept out of the model's block loop.

- A block's context (4-D mask, positions) depends on the layout of its input only: text alone,
  text with p prompt positions in front, or text with p key/value prefixes. Each is built once
  per forward, when first needed.
- P-tuning v2's prefixes reach the blocks that take them as a key/value cache.
- The last block is computed only at the one position per row the head reads (``rows``): its
  other positions are never used, so the result is the same.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from spt_cli.backbones import BackboneAdapter, BlockContext


class BlockRunner:
    """Calls the backbone's blocks for one forward (``mask`` [B, n]: the text's mask)."""

    def __init__(
        self,
        backbone: BackboneAdapter,
        mask: torch.Tensor,
        num_tokens: int,
        prefix_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] | None,
        has_prefix: bool,
        rows: torch.Tensor | None,
    ) -> None:
        self.backbone, self.mask, self.p = backbone, mask, num_tokens
        self.state = backbone.begin()
        self.contexts: dict[str, BlockContext] = {}
        # With prefixes the positions shift by p in every block, also below the first prefix.
        self.offset = num_tokens if has_prefix else 0
        self.kv = prefix_kv
        self.cache = None
        if prefix_kv is not None:
            layers = [prefix_kv.get(i, (None, None)) for i in range(max(prefix_kv) + 1)]
            self.cache = DynamicCache(ddp_cache_data=layers)
        self.rows = rows
        self.last = backbone.num_layers - 1
        self.pruned = False

    def _context(self, kind: str, hidden: torch.Tensor) -> BlockContext:
        if kind not in self.contexts:
            mask, batch = self.mask, self.mask.shape[0]
            if kind != "text":
                mask = torch.cat([mask.new_ones(batch, self.p), mask], 1)
            prefix_len = self.p if kind == "prefix" else 0
            self.contexts[kind] = self.backbone.context(
                hidden, mask, self.state, self.offset, prefix_len
            )
        return self.contexts[kind]

    def block(self, layer: int, h: torch.Tensor, has_prompt: bool) -> torch.Tensor:
        """Block ``layer`` on ``h`` ([prompt; text] when ``has_prompt``)."""
        bb = self.backbone
        if self.kv is not None and layer in self.kv:
            ctx, cache = self._context("prefix", h), self.cache
        else:
            ctx, cache = self._context("ext" if has_prompt else "text", h), None
        if self.rows is not None and layer == self.last:
            self.pruned = True
            return bb.run_block_rows(layer, h, ctx, self._at(has_prompt), cache)
        if cache is not None:
            return bb.run_block(layer, h, ctx, cache)
        return bb.run_block(layer, h, ctx)

    def finish(self, h: torch.Tensor, has_prompt: bool) -> torch.Tensor:
        """Final text states [B, n, d] (prompt positions dropped), or [B, d] at ``rows``."""
        if self.rows is not None and not self.pruned:  # the last block ran elsewhere (no prompt)
            at = self._at(has_prompt)
            h = h[torch.arange(h.shape[0], device=h.device), at].unsqueeze(1)
            self.pruned = True
        h = self.backbone.final(h)
        if self.pruned:
            return h[:, 0]
        return h[:, self.p :] if has_prompt else h

    def _at(self, has_prompt: bool) -> torch.Tensor:
        assert self.rows is not None
        return self.rows + self.p if has_prompt else self.rows
