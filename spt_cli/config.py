"""Config checks and derived values that Hydra's schema-less yaml cannot express."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
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
    "controls": "retrain K-subsets of SPT's candidates; rank a search (from_search=DIR|RECORD)",
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


def check_search_options(scfg: Any) -> None:
    """Refuse an unknown value of a ``search.*`` choice with a one-line error (the rows of
    :data:`RULES` built from :data:`SEARCH_CHOICES`)."""
    for key in SEARCH_CHOICES:
        check_value(f"search.{key}", scfg[key], RULES[f"search.{key}"])


# ``reuse``: what a rerun sweep may reuse of an earlier run of the same config (spt_cli.jobs).
REUSE_POLICIES = ("same_code", "any", "never")

# Choices of the method and head keys (read by spt_cli.model too, so they live here once).
INPUT_PROMPTS = ("static", "none")
GENERATORS = ("pooled", "naive", "static", "prefix", "none")
POOLS = ("avg", "max")
GATES = ("soft", "stochastic", "hard")
HEADS = ("auto", "classifier", "mlm", "lm")
POOLINGS = ("auto", "first", "last", "mean")
# A method's role keys: the stage that runs it, and the blocks it prompts when no layers are set.
METHOD_STAGES = ("train", "search")
DEFAULT_LAYERS = ("upper", "all", "middle", "random", "given")
# Keys that say which stage runs a method and how its layers are chosen, not what a model with
# concrete layers computes (spt_cli.jobs leaves them out of fingerprints at shipped values).
ROLE_KEYS = ("stage", "retrain_as", "default_layers")
# Named layer sets (spt_cli.search.select.NAMED_SETS): controls.include retrains them beside a
# sample of subsets; search.keep_best_of retrains them beside the searched set (best on dev kept).
CONTROL_SETS = ("last_k", "middle_k")
# search.keep_best_of's entries: those sets and the searched one, at K or at K/2 ("_half")
KEEP_BEST_SETS = (*CONTROL_SETS, "searched", "last_half", "middle_half", "searched_half")


def default_budget(num_layers: int) -> int:
    """About a third of the blocks (method.md): round(L / 3), at least 1. A search's K when
    ``search.budget`` is unset, and ``random_layers``' count when ``num_random_layers`` is."""
    return max(1, int(math.floor(num_layers / 3 + 0.5)))


# table.select: how a cell run with several settings is resolved (spt_cli.tables.select).
SELECT_MODES = ("dev", "all")


@dataclass(frozen=True)
class Num:
    """A number key: ``low``/``high`` bounds (inclusive unless ``*_open``), ``integer`` for
    ints only, ``nullable`` when null means "use a default" (or "off")."""

    example: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    nullable: bool = False

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed (None when it is)."""
        if value is None and self.nullable:
            return None
        kinds = int if self.integer else int | float
        if isinstance(value, bool) or not isinstance(value, kinds):
            return "must be an integer" if self.integer else f"must be {self.kind()}"
        too_low = self.low is not None and (
            value <= self.low if self.low_open else value < self.low
        )
        too_high = self.high is not None and (
            value >= self.high if self.high_open else value > self.high
        )
        if too_low or too_high or value != value:  # value != value: NaN
            return f"must be {self.range()}"
        return None

    def kind(self) -> str:
        """What the key holds in words: ``a positive number`` reads better than ``> 0``."""
        if self.low == 0 and self.low_open and self.high is None:
            return "a positive number"
        return "a number"

    def range(self) -> str:
        """The allowed range in words, e.g. ``>= 0`` or ``in (0, 1)``."""
        if self.high is None:
            if self.kind() != "a number":
                return self.kind()
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


@dataclass(frozen=True)
class Choice:
    """A key with a fixed set of values (``nullable``: null is also accepted)."""

    choices: tuple[str, ...]
    nullable: bool = False


@dataclass(frozen=True)
class Choices:
    """A list of names, each from a fixed set (e.g. the named layer sets a stage adds)."""

    choices: tuple[str, ...]


@dataclass(frozen=True)
class Flag:
    """A true/false key."""


@dataclass(frozen=True)
class IntList:
    """A list of integers >= ``low`` (e.g. block indices or seeds); null if ``nullable``."""

    example: str
    low: int = 0
    nullable: bool = True


@dataclass(frozen=True)
class IntLists:
    """A list of lists of integers >= ``low`` (e.g. layer sets)."""

    example: str
    low: int = 0


@dataclass(frozen=True)
class NumList:
    """A list of ``length`` numbers, each in [low, high) (e.g. Adam's betas)."""

    example: str
    length: int
    low: float
    high: float


Rule = Num | Choice | Choices | Flag | IntList | IntLists | NumList

# Every key the preflight checks, with its type and range. Keys left out take any value
# (paths, names); tests/test_config_walk.py lists those and fails on a key in neither.
RULES: dict[str, Rule] = {
    "seed": Num("13", low=0, integer=True),
    "shots": Num("0", low=0, integer=True),
    "resume": Flag(),
    "retrain": Flag(),
    "debug": Flag(),
    "reuse": Choice(REUSE_POLICIES),
    "data.max_seq_length": Num("128", low=8, integer=True),
    "data.dev_ratio": Num("0.1", low=0, high=1, low_open=True, high_open=True),
    "data.dev_max": Num("1000", low=1, integer=True),
    "data.test_size": Num("2000", low=1, integer=True),
    "data.hub": Flag(),
    "split.name": Choice(("few_shot", "full")),
    "trainer.batch_size": Num("16", low=1, integer=True),
    "trainer.eval_batch_size": Num("64", low=1, integer=True),
    "trainer.grad_accum": Num("1", low=1, integer=True, nullable=True),
    "trainer.lr": Num("5e-3", low=0, low_open=True),
    "trainer.backbone_lr": Num("2e-5", low=0, low_open=True),
    "trainer.weight_decay": Num("0.01", low=0),
    "trainer.warmup_ratio": Num("0.06", low=0, high=1),
    "trainer.max_grad_norm": Num("1.0", low=0, nullable=True),  # 0 or null: no clipping
    "trainer.max_steps": Num("100", low=1, integer=True, nullable=True),
    "trainer.epochs": Num("3", low=1, integer=True, nullable=True),
    "trainer.eval_every": Num("25", low=0, integer=True, nullable=True),
    "trainer.patience": Num("0", low=0, integer=True, nullable=True),
    "trainer.checkpoint_every": Num("25", low=0, integer=True, nullable=True),
    "trainer.device": Choice(("auto", "cpu", "cuda")),
    "trainer.precision": Choice(("fp32", "bf16")),
    "trainer.num_threads": Num("2", low=1, integer=True, nullable=True),
    "trainer.cache_lower_layers": Flag(),
    "trainer.cache_max_mb": Num("1024", low=0, nullable=True),
    "method.num_tokens": Num("10", low=0, integer=True),
    "method.input_prompt": Choice(INPUT_PROMPTS, nullable=True),
    "method.generator": Choice(GENERATORS, nullable=True),
    "method.pool": Choice(POOLS),
    "method.bottleneck": Num("64", low=1, integer=True),
    "method.dropout": Num("0.1", low=0, high=1, high_open=True),
    "method.layers": IntList("[2,4]"),
    "method.stage": Choice(METHOD_STAGES),
    "method.default_layers": Choice(DEFAULT_LAYERS),
    "method.gate": Choice(GATES),
    "method.tau": Num("1.0", low=0, low_open=True),
    "method.train_backbone": Flag(),
    "method.num_random_layers": Num("4", low=1, integer=True, nullable=True),
    "method.layer_seed": Num("0", low=0, integer=True),
    "method.prefix_projection": Flag(),
    "method.prefix_hidden": Num("512", low=1, integer=True),
    "method.frozen_eval": Flag(),
    "head.name": Choice(HEADS),
    "head.pooling": Choice(POOLINGS),
    "head.full_vocab": Flag(),
    "head.dropout": Num("0.1", low=0, high=1, high_open=True),
    "search.alpha_portion": Num("0.5", low=0, high=1, low_open=True, high_open=True),
    "search.budget": Num("4", low=1, integer=True, nullable=True),
    "search.threshold": Num("0.5", low=0, high=1, high_open=True, nullable=True),
    "search.alpha_lr": Num("0.05", low=0, low_open=True),
    "search.alpha_betas": NumList("[0.5,0.999]", length=2, low=0, high=1),
    "search.alpha_weight_decay": Num("1e-3", low=0),
    "search.weight_stop_loss": Num("0.1", low=0, nullable=True),
    "search.xi": Num("5e-3", low=0, nullable=True),
    "search.warmup_steps": Num("0", low=0, integer=True),
    "search.tau_end": Num("1.0", low=0, low_open=True),
    "search.anneal": Flag(),
    "search.budget_penalty": Num("0.0", low=0),
    "search.max_steps": Num("100", low=1, integer=True, nullable=True),
    "search.seed": Num("1", low=0, integer=True, nullable=True),
    "search.dev_ablation": Flag(),
    "table.select": Choice(SELECT_MODES),
    "table.seeds": IntList("[13,21]"),
    "controls.max_subsets": Num("20", low=0, integer=True),
    "controls.shards": Num("2", low=1, integer=True),
    "controls.shard": Num("0", low=0, integer=True),
    "controls.include": Choices(CONTROL_SETS),
    "controls.sets": IntLists("[[1,5,7,9]]"),
    "search.keep_best_of": Choices(KEEP_BEST_SETS),
    **{f"search.{k}": Choice(v) for k, v in SEARCH_CHOICES.items()},
}


def _is_int(x: Any) -> bool:
    """An int that is not a bool (True is an int to Python, not to a user)."""
    return isinstance(x, int) and not isinstance(x, bool)


def check_section(section: str, values: Mapping[str, Any]) -> None:
    """The :data:`RULES` rows of ``section`` (e.g. ``method``) applied to the keys ``values``
    holds: the checks of :func:`validate` for a section built outside a composed config (a
    method or head from Python)."""
    for key, rule in RULES.items():
        head, _, leaf = key.partition(".")
        if head == section and leaf in values:
            check_value(key, values[leaf], rule)


def _is_list(value: Any) -> bool:
    return OmegaConf.is_list(value) or isinstance(value, list | tuple)


def check_value(key: str, value: Any, rule: Rule) -> None:
    """Refuse ``value`` of ``key`` when ``rule`` does not allow it: a one-line ConfigError."""
    if isinstance(rule, Num):
        if (problem := rule.problem(value)) is not None:
            # Out of range: the nearest allowed integer is the most useful example.
            near = rule.integer and _is_int(value) and rule.low is not None and value < rule.low
            example = f"{rule.low:g}" if near else rule.example
            null = f" (or {key}=null)" if rule.nullable else ""
            raise ConfigError(f"{key} {problem}, got {value!r}; e.g. {key}={example}{null}")
    elif isinstance(rule, Choice):
        if value is None and rule.nullable:
            return
        if OmegaConf.is_config(value) or str(value) not in rule.choices:
            raise ConfigError(
                f"{key}={_show(value)} is not known; use {' | '.join(rule.choices)} "
                f"(e.g. {key}={rule.choices[0]})"
            )
    elif isinstance(rule, Choices):
        if not OmegaConf.is_list(value) or not all(str(x) in rule.choices for x in value):
            raise ConfigError(
                f"{key} must be a list of names from {' | '.join(rule.choices)}, got "
                f"{_show(value)}; e.g. {key}=[{','.join(rule.choices)}]"
            )
    elif isinstance(rule, Flag):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {_show(value)}; e.g. {key}=true")
    elif isinstance(rule, IntList):
        if value is None and rule.nullable:
            return
        if not _is_list(value) or not all(_is_int(x) and x >= rule.low for x in value):
            raise ConfigError(
                f"{key} must be a list of integers >= {rule.low}, got {_show(value)}; "
                f"e.g. {key}={rule.example}"
            )
    elif isinstance(rule, IntLists):
        ok = _is_list(value) and all(
            _is_list(x) and x and all(_is_int(y) and y >= rule.low for y in x) for x in value
        )
        if not ok:
            raise ConfigError(
                f"{key} must be a list of lists of integers >= {rule.low}, got {_show(value)}; "
                f"e.g. '{key}={rule.example}'"
            )
    else:
        ok = _is_list(value) and len(value) == rule.length
        ok = ok and all(
            isinstance(x, int | float) and not isinstance(x, bool) and rule.low <= x < rule.high
            for x in value
        )
        if not ok:
            raise ConfigError(
                f"{key} must be a list of {rule.length} numbers in [{rule.low:g}, {rule.high:g}), "
                f"got {_show(value)}; e.g. {key}={rule.example}"
            )


def _show(value: Any) -> str:
    """A value as the user would type it on the command line."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_show(x) for x in value) + "]"
    return str(value)


# Extra config folders, searched after the shipped tree (``os.pathsep``-separated), each with
# group folders of its own (``model/``, ``method/``, ...): a user's backbones or methods
# without editing the package; the tests' random-weight models (tests/conf/model/tiny-*.yaml).
CONFIG_PATH_ENV = "SPT_CONFIG_PATH"


def conf_dir():
    """The shipped Hydra config tree (a Traversable; a real directory in every install)."""
    return resources.files("spt_cli.conf")


def extra_conf_dirs() -> list[Path]:
    """The folders of ``$SPT_CONFIG_PATH``, in order; one that is not a folder is refused."""
    dirs = [Path(p) for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p]
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(
                f"{CONFIG_PATH_ENV}: {d} is not a folder; point it at folders of config groups "
                f"(e.g. <dir>/model/<name>.yaml) or unset it"
            )
    return [d.resolve() for d in dirs]


def searchpath_override(*extra: Path) -> list[str]:
    """Hydra's ``hydra.searchpath`` override that adds the ``$SPT_CONFIG_PATH`` folders (then
    ``extra``) after the shipped tree; [] when there are none."""
    dirs = [*extra_conf_dirs(), *extra]
    if not dirs:
        return []
    return ["hydra.searchpath=[" + ",".join(f"'file://{d}'" for d in dirs) + "]"]


def _group_dirs(group: str) -> list[Any]:
    """``<tree>/<group>`` of the shipped tree and of each extra folder."""
    out = []
    for base in [conf_dir(), *extra_conf_dirs()]:
        for part in group.split("/"):
            base = base / part
        out.append(base)
    return out


def find_config_file(group: str, choice: str) -> Any | None:
    """The file of ``group=choice`` Hydra would compose (the shipped tree first), or None."""
    for base in _group_dirs(group):
        if (base / f"{choice}.yaml").is_file():
            return base / f"{choice}.yaml"
    return None


def group_choices(group: str) -> list[str]:
    """Names of the yaml files of a config group (shipped and in ``$SPT_CONFIG_PATH``), sorted
    (``_base`` and other ``_`` files are shared defaults, not choices)."""
    return sorted(
        {
            p.name[:-5]
            for base in _group_dirs(group)
            if base.is_dir()
            for p in base.iterdir()
            if p.name.endswith(".yaml") and p.name[0] != "_"
        }
    )


def read_own_config_file(group: str, choice: str) -> DictConfig:
    """One file of a config group as written: its ``defaults`` list unmerged."""
    path = find_config_file(group, choice)
    if path is None:
        known = ", ".join(group_choices(group))
        raise ConfigError(f"{group}={choice} does not exist; choose one of {known}")
    cfg = OmegaConf.create(path.read_text(encoding="utf-8"))
    assert isinstance(cfg, DictConfig)
    return cfg


def read_config_file(group: str, choice: str) -> DictConfig:
    """One file of a config group (e.g. ``method/spt_fixed``) outside Hydra, with the
    files its ``defaults`` list names from the same group merged in as Hydra merges them.

    The one yaml reader of the project (with :func:`read_own_config_file`): the stages, tests
    and scripts read group files through it, so a default lives in one yaml file only."""
    cfg = read_own_config_file(group, choice)
    path = find_config_file(group, choice)
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


def validate(cfg: DictConfig) -> None:
    """Check values that do not depend on data or the model; raise a one-line ConfigError.

    Every key of ``RULES`` present in ``cfg`` is checked (a stage's config may lack a section),
    then the checks across keys."""
    for key, rule in RULES.items():
        node, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, node) if node else cfg
        if isinstance(parent, DictConfig) and leaf in parent:
            check_value(key, parent[leaf], rule)
    if cfg.trainer.get("max_steps") is None and cfg.trainer.get("epochs") is None:
        raise ConfigError("set trainer.max_steps or trainer.epochs")
    if cfg.split.name == "few_shot" and cfg.shots == 0:
        raise ConfigError("split=few_shot needs shots=K (K > 0), e.g. shots=16")
    layers = cfg.get("layers")
    if layers is not None:
        if not OmegaConf.is_list(layers) or not all(_is_int(x) and x >= 0 for x in layers):
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
