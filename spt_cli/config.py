"""Config checks and derived values that Hydra's schema-less yaml cannot express."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

from omegaconf import DictConfig, OmegaConf

from spt_cli.errors import ConfigError

STAGES: dict[str, str] = {
    "data": "load a benchmark split and print its sizes, labels and an example",
    "search": "SPT-DARTS: search the prompt layers, then retrain them and test",
    "retrain": "train spt_fixed on layers from a search run (from_search=DIR) or layers=[..]",
    "train": "train a baseline method (prompt_tuning, deep_prompt, lpt, ...) and test it",
    "eval": "evaluate a saved inference artefact (artifact=DIR) on a dataset",
    "table": "aggregate run directories (runs=DIR or glob) into a paper-style table",
    "controls": "retrain every K-subset of SPT's candidate layers; rank a search (from_search=DIR)",
}

# Groups a user picks with `group=choice`, shown by `spt-run --help`.
GROUPS = (
    "model", "dataset", "split", "method", "head", "trainer", "logger", "experiment",
    "search_variant",
)  # fmt: skip


# The search's choice keys and their values; checked by the preflight (validate) and by the
# architect (a search started from Python).
SEARCH_CHOICES = {
    "order": ("first", "second"),
    "hessian": ("central", "forward"),
    "alpha_optimizer": ("adam", "sgd"),
    "alpha_grad": ("raw", "centred"),
    "gate_shift": ("none", "budget"),
    "select": ("gates", "ablation"),
    "fallback": ("none", "last_k", "ablation"),
    "alpha_loss": ("mean", "balanced"),
}

# ``reuse``: what a rerun sweep may reuse of an earlier run of the same config (spt_cli.jobs).
REUSE_POLICIES = ("same_code", "any", "never")


def check_search_options(scfg: Any) -> None:
    """Refuse an unknown value of a ``search.*`` choice with a one-line error."""
    for key, choices in SEARCH_CHOICES.items():
        value = str(scfg[key])
        if value not in choices:
            options = " or ".join(choices)
            raise ConfigError(f"search.{key}={value} is not known; use search.{key}={options}")


def conf_dir():
    """The shipped Hydra config tree (a Traversable; a real directory in every install)."""
    return resources.files("spt_cli.conf")


def group_choices(group: str) -> list[str]:
    """Names of the yaml files of a config group, sorted (``_base`` and other ``_`` files are
    shared defaults, not choices)."""
    base = conf_dir()
    for part in group.split("/"):
        base = base / part
    if not base.is_dir():
        return []
    return sorted(
        p.name[:-5] for p in base.iterdir() if p.name.endswith(".yaml") and p.name[0] != "_"
    )


def read_config_file(group: str, choice: str) -> DictConfig:
    """One file of the shipped config tree (e.g. ``method/spt_fixed``) outside Hydra, with the
    files its ``defaults`` list names from the same group merged in as Hydra merges them.

    The one yaml reader of the project: the stages, tests and scripts read group files through
    it, so a default lives in one yaml file only."""
    path = conf_dir() / group / f"{choice}.yaml"
    if not path.is_file():
        known = ", ".join(group_choices(group))
        raise ConfigError(f"{group}={choice} does not exist; choose one of {known}")
    cfg = OmegaConf.create(path.read_text(encoding="utf-8"))
    assert isinstance(cfg, DictConfig)
    defaults = list(cfg.pop("defaults", None) or [])
    if "_self_" not in defaults:
        defaults.append("_self_")  # Hydra's place for it when a file does not say
    parts = []
    for entry in defaults:
        if entry == "_self_":
            parts.append(cfg)
        elif isinstance(entry, str) and "/" not in entry and "@" not in entry:
            parts.append(read_config_file(group, entry))
        else:
            raise ConfigError(f"{path}: defaults entry {entry!r} is not a same-group file name")
    merged = OmegaConf.merge(*parts)
    assert isinstance(merged, DictConfig)
    return merged


def primary_defaults(section: str) -> DictConfig:
    """A section of the primary config (``conf/config.yaml``), e.g. ``search``: its defaults."""
    cfg = OmegaConf.create((conf_dir() / "config.yaml").read_text(encoding="utf-8"))
    node = cfg[section]
    assert isinstance(node, DictConfig)
    return node


def _int(cfg: DictConfig, key: str, minimum: int | None = None, allow_none: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {value!r}; e.g. {key}=16")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value}; e.g. {key}={minimum}")


def _positive(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{key} must be a positive number, got {value!r}; e.g. {key}=5e-3")


def validate(cfg: DictConfig) -> None:
    """Check values that do not depend on data or the model; raise a one-line ConfigError."""
    _int(cfg, "shots", 0)
    _int(cfg, "seed")
    _int(cfg, "data.max_seq_length", 8)
    _int(cfg, "trainer.batch_size", 1)
    _int(cfg, "trainer.eval_batch_size", 1)
    _int(cfg, "trainer.grad_accum", 1, allow_none=True)
    _int(cfg, "trainer.max_steps", 1, allow_none=True)
    _int(cfg, "trainer.epochs", 1, allow_none=True)
    if cfg.trainer.get("max_steps") is None and cfg.trainer.get("epochs") is None:
        raise ConfigError("set trainer.max_steps or trainer.epochs")
    _positive(cfg, "trainer.lr")
    _int(cfg, "trainer.eval_every", 0, allow_none=True)
    _int(cfg, "trainer.patience", 0, allow_none=True)
    _int(cfg, "method.num_tokens", 0)
    if str(cfg.trainer.get("precision", "fp32")) not in ("fp32", "bf16"):
        raise ConfigError(
            f"trainer.precision={cfg.trainer.precision} is not known; use fp32 or bf16"
        )
    if str(cfg.trainer.get("device", "auto")) not in ("auto", "cpu", "cuda"):
        raise ConfigError(
            f"trainer.device={cfg.trainer.device} is not known; use auto, cpu or cuda"
        )
    s = cfg.search
    check_search_options(s)
    _int(cfg, "search.budget", 1, allow_none=True)
    _int(cfg, "search.max_steps", 1, allow_none=True)
    portion = s.alpha_portion
    if not isinstance(portion, int | float) or not 0 < portion < 1:
        raise ConfigError(
            f"search.alpha_portion must be in (0, 1), got {portion!r}; "
            "e.g. search.alpha_portion=0.5"
        )
    if str(cfg.reuse) not in REUSE_POLICIES:
        raise ConfigError(
            f"reuse={cfg.reuse} is not known; use {' | '.join(REUSE_POLICIES)} (e.g. reuse=any)"
        )
    if cfg.split.name == "few_shot" and cfg.shots == 0:
        raise ConfigError("split=few_shot needs shots=K (K > 0), e.g. shots=16")
    layers = cfg.get("layers")
    if layers is not None:
        if not OmegaConf.is_list(layers) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in layers
        ):
            raise ConfigError(
                f"layers must be a list of block indices, e.g. layers=[2,4]; got {layers}"
            )
        if len(layers) == 0:
            raise ConfigError(
                "layers=[] names no prompt layer, which is a head-only model, not SPT; give "
                "blocks, e.g. layers=[2,4], or train the head alone: spt-run train method=head_only"
            )


def split_name(cfg: DictConfig) -> str:
    """``few_shot`` whenever shots > 0 (so `shots=16` alone selects it), else the split group."""
    return "few_shot" if int(cfg.shots) > 0 else str(cfg.split.name)


def to_plain(cfg: Any) -> Any:
    """A resolved, JSON-friendly copy of a config node."""
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def as_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict from a DictConfig, a mapping or None."""
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if isinstance(cfg, Mapping):
        return {k: (as_dict(v) if isinstance(v, Mapping) else v) for k, v in cfg.items()}
    raise TypeError(f"expected a mapping, got {type(cfg).__name__}")
