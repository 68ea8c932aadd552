"""Shared pieces of the model tests: tiny random-weight backbones built from a config (no
download), the task they are built for, and model inputs with head positions."""

from __future__ import annotations

from typing import Any

import torch

from spt_cli.model import build_model, load_backbone
from spt_cli.model.configs import head_config, method_config, model_config
from spt_cli.model.heads import TaskInfo

TASK = TaskInfo("sst2", 2, ["terrible", "great"], False, ["negative", "positive"])
TINY = ["tiny-bert", "tiny-roberta", "tiny-deberta", "tiny-mpnet", "tiny-gpt2", "tiny-llama"]
NO_PREFIX = ("tiny-deberta", "tiny-mpnet")  # attention without a key/value cache
# A search stage on the tiny BERT and the shared RTE 16-shot files, a few steps on one thread.
TINY_SEARCH = [
    "stage=search", "model=tiny-bert", "dataset=rte", "shots=16", "seed=13", "logger=none",
    "trainer.max_steps=4", "trainer.eval_every=2", "trainer.checkpoint_every=0",
    "trainer.batch_size=8", "trainer.eval_batch_size=16", "trainer.num_threads=1",
]  # fmt: skip


def build_tiny(
    name: str,
    method: str,
    head: str = "auto",
    task: TaskInfo = TASK,
    layers: list[int] | None = None,
    model_cfg: Any = None,
    backbone: tuple[Any, Any] | None = None,
    seed: int | None = None,
    **method_overrides: Any,
) -> tuple[Any, Any, Any]:
    """(gated model, backbone, tokenizer) for a tiny config name (or ``model_cfg``); ``seed``
    seeds the new prompt and head weights."""
    cfg = model_cfg if model_cfg is not None else model_config(name)
    hf, tok = backbone or load_backbone(cfg)
    if seed is not None:
        torch.manual_seed(seed)
    model = build_model(
        cfg,
        method_config(method, **method_overrides),
        head_config(head),
        task,
        backbone=hf,
        tokenizer=tok,
        layers=layers,
    )
    return model, hf, tok


def tiny_inputs(tok: Any, texts: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Padded inputs with the positions heads read: the mask (at most 2) and the last token."""
    enc = dict(tok(list(texts), padding=True, return_tensors="pt"))
    last = enc["attention_mask"].sum(1) - 1
    enc["mask_pos"] = torch.minimum(last, torch.full_like(last, 2))
    enc["label_pos"] = last
    return enc
