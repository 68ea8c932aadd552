"""The adapter interface: what the gated model's block loop needs from a frozen backbone.

The gated prompt model runs its own loop over a backbone's blocks, so that prompt positions
can be inserted between blocks. Each family adapter exposes just what that loop needs: the
embeddings (optionally with a prompt prepended to the word embeddings), a per-layout "context"
(the 4-D attention mask and whatever positional state the blocks take), one call per block, the
final norm and the pretrained LM head. The adapters call transformers' own modules and mask
builders; nothing is forked, so with no prompt the loop reproduces ``model(...)``.

Shapes: B rows, T positions in a layout (text plus any prompt positions), d the hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache


@dataclass
class BlockContext:
    """What the blocks need for one sequence layout (text only, or with prompt/prefix)."""

    mask: Any  # 4-D mask in the format the attention implementation wants (or None)
    mask2d: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)


class BackboneAdapter(nn.Module):
    """Uniform access to one family's embeddings, blocks, final norm and LM head.

    A family implements ``blocks``, ``embed``, ``context``, ``run_block`` and ``lm_logits``;
    the rest has defaults that families override where their model differs.
    """

    family: str = ""
    # A causal (left-to-right) decoder.
    is_decoder: bool = False
    # The blocks take P-tuning v2 prefixes as a key/value cache.
    supports_prefix: bool = False
    # Hidden-state prompts inserted at a middle block take position ids (rotary attention
    # computes positions over the whole sequence, so they count against max_positions).
    layer_prompts_take_positions: bool = False
    # Batches with padding run the blocks' linear layers on the real positions only
    # (:mod:`spt_cli.backbones.packing`). Families with such a path set it True by default;
    # False runs every block as the transformers module (e.g. for hooks on the blocks).
    pack_padding: bool = False

    def __init__(self, model: nn.Module, family: str) -> None:
        super().__init__()
        self.model = model
        self.family = family

    # -- structure -------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def base(self) -> nn.Module:
        return self.model.base_model

    @property
    def has_lm_head(self) -> bool:
        return self.model is not self.model.base_model

    def blocks(self) -> nn.ModuleList:
        """The transformer blocks, bottom to top."""
        raise NotImplementedError

    @property
    def num_layers(self) -> int:
        return len(self.blocks())

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def embed_dim(self) -> int:
        """Width of the word embeddings (the input prompt lives there)."""
        return int(self.word_embeddings().weight.shape[1])

    def word_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def uses_token_types(self) -> bool:
        return int(getattr(self.config, "type_vocab_size", 0) or 0) > 1

    def max_positions(self) -> int | None:
        """Longest sequence (text + prompt positions that take positions) the model accepts."""
        return int(self.config.max_position_embeddings)

    def kv_shape(self) -> tuple[int, int]:
        """(key/value heads, head dim) for prefix key/values."""
        heads = int(self.config.num_attention_heads)
        return heads, self.hidden_size // heads

    # -- computation -----------------------------------------------------------------------
    def embed(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        prompt: torch.Tensor | None = None,
        position_offset: int = 0,
    ) -> torch.Tensor:
        """Embedding output [B, p + n, d] for ``input_ids`` [B, n]; with ``prompt`` [B, p, e]
        it is prepended to the word embeddings and the embeddings module runs on
        inputs_embeds (exactly as PEFT prompt tuning)."""
        raise NotImplementedError

    def begin(self) -> dict[str, Any]:
        """Per-forward state shared by all layouts (e.g. DeBERTa's relative embeddings)."""
        return {}

    def context(
        self,
        hidden: torch.Tensor,
        mask2d: torch.Tensor,
        state: dict[str, Any],
        position_offset: int = 0,
        prefix_len: int = 0,
    ) -> BlockContext:
        """Masks/positions for ``hidden`` [B, T, d]; ``mask2d`` covers prefix + T positions."""
        raise NotImplementedError

    def run_block(
        self, index: int, hidden: torch.Tensor, ctx: BlockContext, cache: Any = None
    ) -> torch.Tensor:
        """Block ``index`` on ``hidden`` [B, T, d] -> [B, T, d]; ``cache`` holds the prefix
        key/values of this block (families with ``supports_prefix``)."""
        raise NotImplementedError

    def run_block_rows(
        self,
        index: int,
        hidden: torch.Tensor,
        ctx: BlockContext,
        rows: torch.Tensor,
        cache: Any = None,
    ) -> torch.Tensor:
        """Block ``index``'s output at one position per row (``rows`` [B]): [B, 1, d].

        Keys and values still come from every position. This generic version runs the whole
        block and keeps those positions; families override it to compute the queries,
        attention output and feed-forward of those positions only.
        """
        out = self.run_block(index, hidden, ctx, cache)
        return out[torch.arange(out.shape[0], device=out.device), rows].unsqueeze(1)

    def final(self, hidden: torch.Tensor) -> torch.Tensor:
        """The final norm after the last block (decoders); identity for post-LN encoders."""
        return hidden

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits [..., vocab] from the pretrained MLM/LM head, for ``hidden``
        [..., d]."""
        raise NotImplementedError


def offset_cache(batch: int, length: int, like: torch.Tensor) -> DynamicCache:
    """A one-layer cache of ``length`` dummy positions: lets the mask builders size a mask
    for queries that follow a prefix of that length."""
    dummy = like.new_zeros(batch, 1, length, 1)
    return DynamicCache(ddp_cache_data=[(dummy, dummy)])
