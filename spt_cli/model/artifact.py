"""Inference artefact: the trained prompt state (safetensors) and a config json.

The directory holds everything needed to rebuild the model except the backbone weights,
which are loaded again by name/path (and revision). Random-weight test backbones are rebuilt
from their config dict and seed, so their artefacts reproduce as well.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from spt_cli.backbones import FAMILIES, load_backbone, make_adapter
from spt_cli.errors import ConfigError
from spt_cli.model.gated import GatedPromptModel
from spt_cli.model.heads import TaskInfo
from spt_cli.model.methods import MethodSpec

FORMAT = "spt-cli-artifact"
VERSION = 1
STATE_FILE = "prompt_state.safetensors"
CONFIG_FILE = "artifact.json"


def _fingerprint(adapter: Any) -> dict[str, Any]:
    cfg = adapter.config
    return {
        "family": adapter.family,
        "model_type": cfg.model_type,
        "num_layers": adapter.num_layers,
        "hidden_size": adapter.hidden_size,
        "vocab_size": int(adapter.word_embeddings().weight.shape[0]),
    }


def _trainable_state(model: GatedPromptModel) -> dict[str, torch.Tensor]:
    # Everything outside the frozen backbone, plus the backbone when it was fine-tuned.
    keep_backbone = model.spec.train_backbone
    return {
        name: t.detach().clone().contiguous().cpu()  # clone: safetensors refuses shared storage
        for name, t in model.state_dict().items()
        if keep_backbone or not name.startswith("backbone.")
    }


def save_artifact(model: GatedPromptModel, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``path/artifact.json`` and ``path/prompt_state.safetensors``.

    The files go to a hidden sibling that is renamed into place when complete, so a killed or
    failed save (a full disk) never leaves a directory that looks like a usable artefact.
    """
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    config = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.model_cfg,
        "method": model.spec.to_dict(),
        "head": {**model.head_cfg, "name": model.head_name},
        "task": model.task.to_dict(),
        "label_word_ids": model.label_word_ids.tolist(),
        "candidate_layers": model.candidate_layers,
        "gate_probs": [float(x) for x in model.gate_probs()],
        "backbone": _fingerprint(model.backbone),
        "meta": meta,
    }
    try:
        tmp.mkdir(parents=True)
        save_file(_trainable_state(model), str(tmp / STATE_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
        if out.exists():  # a resumed run saves again
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def find_artifact(path: str | Path) -> Path:
    """The artefact directory ``path``, or ``path/artifact`` when ``path`` is a run directory."""
    path = Path(path)
    if not (path / CONFIG_FILE).exists() and (path / "artifact" / CONFIG_FILE).exists():
        return path / "artifact"
    return path


def read_artifact_config(path: str | Path) -> dict[str, Any]:
    """The json of the artefact in ``path`` (see :func:`find_artifact`), checked: a missing,
    unreadable or foreign file is a one-line ConfigError."""
    file = find_artifact(path) / CONFIG_FILE
    if not file.exists():
        raise ConfigError(
            f"{path} holds no saved artefact ({CONFIG_FILE}); point it at <run dir>/artifact"
        )
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{file} is not valid JSON ({exc}); re-save the artefact (rerun the training) or "
            "load another one"
        ) from None
    if (
        not isinstance(config, dict)
        or config.get("format") != FORMAT
        or int(config.get("version", 0)) > VERSION
    ):
        raise ConfigError(f"{file} is not a version-{VERSION} {FORMAT} file; re-save it")
    return config


def load_artifact(path: str | Path, backbone: nn.Module | None = None, tokenizer: Any = None):
    """Rebuild a GatedPromptModel from an artefact directory or its run directory (in eval
    mode).

    The backbone is loaded from the saved model config unless ``backbone``/``tokenizer`` are
    given; a backbone of another architecture is refused with a ConfigError.
    """
    path = find_artifact(path)
    config = read_artifact_config(path)
    model_cfg = config["model"]
    if backbone is None:
        backbone, tokenizer = load_backbone(model_cfg)
    adapter = None
    found: dict[str, Any] = {"model_type": backbone.config.model_type}
    if _family_ok(backbone, model_cfg):
        adapter = make_adapter(backbone, model_cfg["family"])
        found = _fingerprint(adapter)
    saved = config["backbone"]
    if adapter is None or found != saved:
        raise ConfigError(
            f"artefact {path} was trained on {model_cfg.get('name')} "
            f"({saved['model_type']}, {saved['num_layers']} blocks, hidden {saved['hidden_size']}, "
            f"vocab {saved['vocab_size']}); the given backbone differs ({_describe(found)}); "
            "load it with its own backbone"
        )
    spec = MethodSpec.from_dict(config["method"])
    task = TaskInfo(**config["task"])
    model = GatedPromptModel(
        adapter, spec, task, config["head"]["name"], config["head"], model_cfg,
        config["label_word_ids"] or None, tokenizer,
    )  # fmt: skip
    state = load_file(str(Path(path) / STATE_FILE))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise ConfigError(
            f"artefact {path} does not match its config (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); re-save it"
        )
    return model.eval()


def _family_ok(backbone: nn.Module, model_cfg: dict[str, Any]) -> bool:
    return backbone.config.model_type in FAMILIES.get(model_cfg.get("family"), ())


def _describe(fp: dict[str, Any]) -> str:
    if "num_layers" not in fp:
        return str(fp.get("model_type"))
    return (
        f"{fp['model_type']}, {fp['num_layers']} blocks, hidden {fp['hidden_size']}, "
        f"vocab {fp['vocab_size']}"
    )
