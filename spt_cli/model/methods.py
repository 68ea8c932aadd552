"""The ``method/`` config schema and its resolution to concrete layers for one backbone."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from spt_cli.config import GATES, GENERATORS, INPUT_PROMPTS, POOLS, as_dict, read_config_file
from spt_cli.errors import ConfigError

# Methods whose layers must be given (a search result or a hand-picked list).
NEEDS_LAYERS = ("spt_fixed", "fixed_layers")


@dataclass
class MethodSpec:
    """A method config resolved for one backbone: ``layers`` is concrete (0-based blocks).

    Field meanings and defaults: ``conf/method/_base.yaml`` (the one place they are defined).
    """

    name: str
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

    @property
    def soft_gates(self) -> bool:
        return self.gate in ("soft", "stochastic") and self.generator != "prefix"

    @property
    def has_prompts(self) -> bool:
        return self.num_tokens > 0 and (self.input_prompt == "static" or bool(self.layers))


def _choice(cfg: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = "none" if cfg[key] is None else str(cfg[key])
    if value not in choices:
        raise ConfigError(
            f"method.{key}={value!r} is not valid; choose one of {', '.join(choices)}"
        )
    return value


def method_settings(method_cfg: Any) -> dict[str, Any]:
    """``method_cfg`` over the defaults of ``conf/method/_base.yaml``; unknown keys refused."""
    base = as_dict(read_config_file("method", "_base"))
    given = as_dict(method_cfg)
    unknown = sorted(set(given) - set(base))
    if unknown:
        raise ConfigError(
            f"unknown method key(s) {', '.join(unknown)}; the keys are in conf/method/_base.yaml"
        )
    return {**base, **given}


def resolve_method(
    method_cfg: Any, num_layers: int, model_name: str, layers: list[int] | None = None
) -> MethodSpec:
    """Validate a method config and fill in its default layers for an L-block backbone.

    Defaults when ``layers`` is null: soft/stochastic gates (spt) -> candidates 1..L-1;
    lpt -> [L // 2]; deep_prompt -> 1..L-1 (block 0 gets the input prompt); prefix
    (ptuning_v2) -> 0..L-1; random_layers -> ``num_random_layers`` (default round(L/3))
    blocks drawn from 1..L-1 with ``layer_seed``; spt_fixed/fixed_layers need a list.
    """
    cfg = method_settings(method_cfg)
    name = str(cfg["name"])
    spec = MethodSpec(
        name=name,
        num_tokens=int(cfg["num_tokens"] or 0),
        input_prompt=_choice(cfg, "input_prompt", INPUT_PROMPTS),
        generator=_choice(cfg, "generator", GENERATORS),
        pool=_choice(cfg, "pool", POOLS),
        bottleneck=int(cfg["bottleneck"]),
        dropout=float(cfg["dropout"]),
        layers=[],
        gate=_choice(cfg, "gate", GATES),
        tau=float(cfg["tau"]),
        train_backbone=bool(cfg["train_backbone"]),
        num_random_layers=cfg["num_random_layers"],
        layer_seed=int(cfg["layer_seed"] or 0),
        prefix_projection=bool(cfg["prefix_projection"]),
        prefix_hidden=int(cfg["prefix_hidden"]),
        frozen_eval=bool(cfg["frozen_eval"]),
    )
    if spec.num_tokens < 0:
        raise ConfigError(f"method.num_tokens={spec.num_tokens} must be >= 0")
    if spec.tau <= 0:
        raise ConfigError(f"method.tau={spec.tau} must be > 0")
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
    candidates = list(range(1, num_layers))
    if spec.generator == "none":
        return []
    if spec.generator == "prefix":
        return list(range(num_layers))
    if spec.name == "lpt":
        return [num_layers // 2]
    if spec.name == "random_layers":
        k = spec.num_random_layers
        k = max(1, round(num_layers / 3)) if k is None else int(k)
        if not 0 < k <= len(candidates):
            raise ConfigError(
                f"method.num_random_layers={k} must be in 1..{len(candidates)} for this backbone"
            )
        return sorted(random.Random(spec.layer_seed).sample(candidates, k))
    if spec.name in NEEDS_LAYERS:
        raise ConfigError(
            f"method={spec.name} needs its prompt layers: pass layers=[...] (0-based blocks, "
            "e.g. layers=[2,4]) or retrain from a search"
        )
    return candidates  # spt's candidates, deep_prompt's every block above the input
