"""Frozen transformers backbones behind one adapter interface.

- :mod:`~spt_cli.backbones.base`: the interface the gated model's block loop uses
  (``BackboneAdapter``, ``BlockContext``);
- :mod:`~spt_cli.backbones.registry`: the families, their checkpoints and adapters;
- :mod:`~spt_cli.backbones.loading`: model paths, tokenizers and weights;
- :mod:`~spt_cli.backbones.packing`: padding packing, the exact faster path of BERT-like blocks;
- one module per family adapter: ``bert``, ``deberta``, ``mpnet``, ``gpt2``, ``llama`` (the
  decoders share ``decoder``).
"""

from spt_cli.backbones.base import BackboneAdapter, BlockContext
from spt_cli.backbones.loading import load_backbone, resolve_model_path, tiny_tokenizer
from spt_cli.backbones.registry import DECODER_FAMILIES, FAMILIES, REGISTRY, make_adapter

__all__ = [
    "DECODER_FAMILIES",
    "FAMILIES",
    "REGISTRY",
    "BackboneAdapter",
    "BlockContext",
    "load_backbone",
    "make_adapter",
    "resolve_model_path",
    "tiny_tokenizer",
]
