"""The ``method/`` config schema and its resolution to concrete layers for one backbone.

A method is one yaml file in ``conf/method/``: its keys (defaults and meanings in
``_base.yaml``) say everything it does, and :func:`resolve_method` is the one reader that turns
them into a :class:`MethodSpec`. No code elsewhere asks which method it runs, only what the
spec says (``spec.stage``, ``spec.gate``, ``spec.layers`` ...).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from spt_cli.config import ROLE_KEYS, as_dict, check_section, default_budget, read_config_file
from spt_cli.errors import ConfigError


@dataclass
class MethodSpec:
    """A method config resolved for one backbone: ``layers`` is concrete (0-based blocks).

    Field meanings and defaults: ``conf/method/_base.yaml`` (the one place they are defined).
    """

    name: str
    stage: str
    retrain_as: str | None
    default_layers: str
    num_tokens: int
    input_prompt: str
    generator: str
    pool: str
    bottleneck: int
    dropout: float
    layers: list[int]
    gate: str
    tau: float
    train_backbone: bool
    num_random_layers: int | None
    layer_seed: int
    prefix_projection: bool
    prefix_hidden: int
    frozen_eval: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> MethodSpec:
        """A spec saved by :meth:`to_dict` (an artefact); keys added since it was saved take
        their ``_base.yaml`` defaults (they choose stages and default layers, never a
        number of a model whose layers are already concrete)."""
        base = as_dict(read_config_file("method", "_base"))
        return cls(**{**{k: base[k] for k in ROLE_KEYS}, **saved})


def _choice(cfg: dict[str, Any], key: str) -> str:
    """A choice key as a name (null, allowed where RULES says so, is ``none``)."""
    return "none" if cfg[key] is None else str(cfg[key])


def method_settings(method_cfg: Any) -> dict[str, Any]:
    """``method_cfg`` over the defaults of ``conf/method/_base.yaml``; unknown keys refused,
    values checked by the ``method.*`` rows of ``config.RULES``."""
    base = as_dict(read_config_file("method", "_base"))
    given = as_dict(method_cfg)
    unknown = sorted(set(given) - set(base))
    if unknown:
        raise ConfigError(
            f"unknown method key(s) {', '.join(unknown)}; the keys are in conf/method/_base.yaml"
        )
    settings = {**base, **given}
    check_section("method", settings)
    return settings


def check_stage(method_cfg: Any, stage: str) -> None:
    """Refuse, with a one-line ConfigError, a method run by a stage it does not belong to
    (``stage``: the CLI word; retrain and controls retrain a search method's layers)."""
    settings = method_settings(method_cfg)
    name, belongs = str(settings["name"]), _choice(settings, "stage")
    if stage == "train" and belongs == "search":
        raise ConfigError(
            f"method={name} is searched, not trained: "
            "use spt-run search (or spt-run retrain layers=[..])"
        )
    if stage in ("search", "retrain", "controls") and belongs != "search":
        raise ConfigError(
            f"{stage} needs a searched method (method.stage=search, e.g. method=spt), not "
            f"method={name}; use spt-run train method={name} for baselines"
        )


def retrain_method(search_cfg: Any, layers: list[int]) -> Any:
    """The method that retrains a search's ``layers``: the file ``method.retrain_as`` names,
    with the search's prompt settings (p, generator, m, input prompt ...), so that the retrain
    builds a model of the family the search searched. Returns a DictConfig."""
    from omegaconf import OmegaConf

    cfg = method_settings(search_cfg)
    if cfg["retrain_as"] is None:
        raise ConfigError(
            f"method={cfg['name']} names no method.retrain_as to retrain its layers with"
        )
    base = read_config_file("method", str(cfg["retrain_as"]))
    # What the retrained model is (name, stage, layers, gates) comes from its own file.
    own = ("name", "layers", "gate", *ROLE_KEYS)
    shared = {k: v for k, v in as_dict(search_cfg).items() if k not in own}
    return OmegaConf.merge(base, shared, {"layers": list(layers)})


def resolve_method(
    method_cfg: Any, num_layers: int, model_name: str, layers: list[int] | None = None
) -> MethodSpec:
    """Validate a method config and fill in its layers for an L-block backbone: ``layers``,
    else ``method.layers``, else ``method.default_layers`` (see :func:`_default_layers`)."""
    cfg = method_settings(method_cfg)
    name = str(cfg["name"])
    spec = MethodSpec(
        name=name,
        stage=_choice(cfg, "stage"),
        retrain_as=None if cfg["retrain_as"] is None else str(cfg["retrain_as"]),
        default_layers=_choice(cfg, "default_layers"),
        num_tokens=int(cfg["num_tokens"] or 0),
        input_prompt=_choice(cfg, "input_prompt"),
        generator=_choice(cfg, "generator"),
        pool=_choice(cfg, "pool"),
        bottleneck=int(cfg["bottleneck"]),
        dropout=float(cfg["dropout"]),
        layers=[],
        gate=_choice(cfg, "gate"),
        tau=float(cfg["tau"]),
        train_backbone=bool(cfg["train_backbone"]),
        num_random_layers=cfg["num_random_layers"],
        layer_seed=int(cfg["layer_seed"] or 0),
        prefix_projection=bool(cfg["prefix_projection"]),
        prefix_hidden=int(cfg["prefix_hidden"]),
        frozen_eval=bool(cfg["frozen_eval"]),
    )
    if layers is None:
        layers = cfg["layers"]
    if layers is None:
        layers = _default_layers(spec, num_layers)
    layers = [int(x) for x in layers]
    bad = [x for x in layers if not 0 <= x < num_layers]
    if bad:
        raise ConfigError(
            f"layers={bad} is out of range for {model_name} (blocks 0..{num_layers - 1})"
        )
    spec.layers = sorted(set(layers))
    if spec.generator == "none" and spec.layers:
        raise ConfigError(
            f"method={name} has no per-layer prompts (generator: none) but layers={spec.layers}; "
            "use method=fixed_layers for prompts at given blocks"
        )
    if spec.generator == "prefix":
        if spec.input_prompt != "none" or spec.gate != "hard":
            raise ConfigError(
                "generator=prefix (ptuning_v2) injects key/value prefixes only; "
                "set input_prompt=none and gate=hard"
            )
    if spec.num_tokens == 0:  # p = 0: no prompt anywhere, the plain backbone
        spec.input_prompt, spec.layers = "none", []
    return spec


def _default_layers(spec: MethodSpec, num_layers: int) -> list[int]:
    """``method.default_layers`` for an L-block backbone: upper 1..L-1 (SPT's candidates, deep
    prompts above the input prompt), all 0..L-1, middle [L // 2], random (``num_random_layers``,
    default ``config.default_budget``, drawn from 1..L-1 with ``layer_seed``), given (refused:
    no default); none without per-layer prompts."""
    candidates = list(range(1, num_layers))
    if spec.generator == "none":
        return []
    if spec.default_layers == "all":
        return list(range(num_layers))
    if spec.default_layers == "middle":
        return [num_layers // 2]
    if spec.default_layers == "random":
        k = spec.num_random_layers
        k = default_budget(num_layers) if k is None else int(k)
        if not 0 < k <= len(candidates):
            raise ConfigError(
                f"method.num_random_layers={k} must be in 1..{len(candidates)} for this backbone"
            )
        return sorted(random.Random(spec.layer_seed).sample(candidates, k))
    if spec.default_layers == "given":
        raise ConfigError(
            f"method={spec.name} needs its prompt layers: pass layers=[...] (0-based blocks, "
            "e.g. layers=[2,4]) or retrain from a search"
        )
    return candidates
