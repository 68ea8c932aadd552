"""Assemble a GatedPromptModel from the ``model/``, ``method/`` and ``head/`` configs."""

from __future__ import annotations

from typing import Any

from torch import nn

from spt_cli.backbones import load_backbone, make_adapter
from spt_cli.config import as_dict
from spt_cli.errors import ConfigError
from spt_cli.model.gated import GatedPromptModel
from spt_cli.model.heads import head_settings, label_word_ids, resolve_head, task_info
from spt_cli.model.methods import resolve_method


def build_model(
    model_cfg: Any,
    method_cfg: Any = None,
    head_cfg: Any = None,
    task: Any = None,
    *,
    backbone: nn.Module | None = None,
    tokenizer: Any = None,
    layers: list[int] | None = None,
    max_seq_length: int | None = None,
) -> GatedPromptModel:
    """Build the model for one run.

    ``backbone``/``tokenizer``: an already loaded (transformers model, tokenizer) pair, else
    ``load_backbone(model_cfg)``. ``layers`` overrides ``method.layers`` (the top-level
    ``layers=`` of retrain/train). ``max_seq_length`` is checked against the positions.
    Prompt/generator/head initialisation draws from torch's global RNG: seed before.

    ``build_model(cfg, task, ...)`` with a whole composed config also works (see
    :func:`build_model_from_cfg`).
    """
    root = as_dict(model_cfg)
    if "model" in root and "method" in root and head_cfg is None and task is None:
        return build_model_from_cfg(
            root, method_cfg, backbone=backbone, tokenizer=tokenizer,
            **({"layers": layers} if layers is not None else {}),
            **({"max_seq_length": max_seq_length} if max_seq_length is not None else {}),
        )  # fmt: skip
    if task is None:
        raise ConfigError("build_model needs the task (a TaskSpec, task dict or TaskInfo)")
    mcfg, meth, hcfg = root, as_dict(method_cfg), head_settings(head_cfg)
    if backbone is None:
        backbone, tokenizer = load_backbone(mcfg)
    elif tokenizer is None:
        raise ConfigError("build_model got a backbone without its tokenizer; pass both")
    adapter = make_adapter(backbone, mcfg["family"])
    name = str(mcfg.get("name") or mcfg["family"])
    spec = resolve_method(meth, adapter.num_layers, name, layers)
    info = task_info(task)
    head_name = resolve_head(hcfg, adapter.is_decoder, adapter.has_lm_head, info, name)
    ids = None
    if head_name in ("mlm", "lm"):
        ids = label_word_ids(tokenizer, task)
    model = GatedPromptModel(adapter, spec, info, head_name, hcfg, mcfg, ids, tokenizer)
    if max_seq_length is not None:
        model._check_length(int(max_seq_length))
    return model


def build_model_from_cfg(cfg: Any, task: Any, **kwargs: Any) -> GatedPromptModel:
    """``build_model`` from a whole composed config (cfg.model, cfg.method, cfg.head, and the
    top-level ``layers`` and ``data.max_seq_length`` when present)."""
    root = as_dict(cfg)
    kwargs.setdefault("layers", root.get("layers"))
    kwargs.setdefault("max_seq_length", (root.get("data") or {}).get("max_seq_length"))
    return build_model(root["model"], root["method"], root.get("head") or {}, task, **kwargs)
