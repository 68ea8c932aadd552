"""The model families: the transformers checkpoints each accepts and its adapter.

Adding a family is one adapter module and one line in ``REGISTRY``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from spt_cli.backbones.base import BackboneAdapter
from spt_cli.backbones.bert import BertLikeAdapter
from spt_cli.backbones.deberta import DebertaAdapter
from spt_cli.backbones.gpt2 import GPT2Adapter
from spt_cli.backbones.llama import LlamaAdapter
from spt_cli.backbones.mpnet import MPNetAdapter
from spt_cli.errors import ConfigError


@dataclass(frozen=True)
class Family:
    model_types: tuple[str, ...]  # transformers model_type values the family accepts
    adapter: type[BackboneAdapter]


REGISTRY: dict[str, Family] = {
    "bert": Family(("bert",), BertLikeAdapter),
    "roberta": Family(("roberta",), BertLikeAdapter),
    "deberta-v2": Family(("deberta-v2",), DebertaAdapter),
    "deberta": Family(("deberta",), DebertaAdapter),  # DeBERTa v1 shares the v2 access layer
    "mpnet": Family(("mpnet",), MPNetAdapter),
    "gpt2": Family(("gpt2",), GPT2Adapter),
    "llama": Family(("llama",), LlamaAdapter),
}

# family -> transformers model_type values it accepts
FAMILIES: dict[str, tuple[str, ...]] = {name: f.model_types for name, f in REGISTRY.items()}
DECODER_FAMILIES: tuple[str, ...] = tuple(
    name for name, f in REGISTRY.items() if f.adapter.is_decoder
)


def make_adapter(model: nn.Module, family: str) -> BackboneAdapter:
    """Wrap a transformers model in its family's access layer."""
    if family not in REGISTRY:
        raise ConfigError(
            f"model.family={family!r} is not supported; choose one of {', '.join(REGISTRY)}"
        )
    return REGISTRY[family].adapter(model, family)
