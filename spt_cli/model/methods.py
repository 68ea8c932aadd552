"""The ``method/`` config schema and its resolution to concrete layers for one backbone."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from spt_cli.errors import ConfigError

INPUT_PROMPTS = ("static", "none")
GENERATORS = ("pooled", "naive", "static", "prefix", "none")
POOLS = ("avg", "max")
GATES = ("soft", "stochastic", "hard")
# Methods whose layers must be given (a search result or a hand-picked list).
NEEDS_LAYERS = ("spt_fixed", "fixed_layers")


@dataclass
class MethodSpec:
    """A method config resolved for one backbone: ``layers`` is concrete (0-based blocks)."""

    name: str
    num_tokens: int = 10
    input_prompt: str = "none"
    generator: str = "pooled"
    pool: str = "avg"
    bottleneck: int = 64
    dropout: float = 0.1
    layers: list[int] = field(default_factory=list)
    gate: str = "hard"
    tau: float = 1.0
    train_backbone: bool = False
    num_random_layers: int | None = None
    layer_seed: int = 0
    prefix_projection: bool = False
    prefix_hidden: int = 512
    frozen_eval: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def soft_gates(self) -> bool:
        return self.gate in ("soft", "stochastic") and self.generator != "prefix"

    @property
    def has_prompts(self) -> bool:
        return self.num_tokens > 0 and (self.input_prompt == "static" or bool(self.layers))


def _choice(cfg: dict[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = cfg.get(key, default)
    value = "none" if value is None else str(value)
    if value not in choices:
        raise ConfigError(
            f"method.{key}={value!r} is not valid; choose one of {', '.join(choices)}"
        )
    return value


def resolve_method(
    method_cfg: dict[str, Any], num_layers: int, model_name: str, layers: list[int] | None = None
) -> MethodSpec:
    """Validate a method config and fill in its default layers for an L-block backbone.

    Defaults when ``layers`` is null: soft/stochastic gates (spt) -> candidates 1..L-1;
    lpt -> [L // 2]; deep_prompt -> 1..L-1 (block 0 gets the input prompt); prefix
    (ptuning_v2) -> 0..L-1; random_layers -> ``num_random_layers`` (default round(L/3))
    blocks drawn from 1..L-1 with ``layer_seed``; spt_fixed/fixed_layers need a list.
    """
    cfg = dict(method_cfg)
    name = str(cfg.get("name") or "custom")
    spec = MethodSpec(
        name=name,
        num_tokens=int(cfg.get("num_tokens", 10) or 0),
        input_prompt=_choice(cfg, "input_prompt", INPUT_PROMPTS, "none"),
        generator=_choice(cfg, "generator", GENERATORS, "pooled"),
        pool=_choice(cfg, "pool", POOLS, "avg"),
        bottleneck=int(cfg.get("bottleneck", 64)),
        dropout=float(cfg.get("dropout", 0.1)),
        gate=_choice(cfg, "gate", GATES, "hard"),
        tau=float(cfg.get("tau", 1.0)),
        train_backbone=bool(cfg.get("train_backbone", False)),
        num_random_layers=cfg.get("num_random_layers"),
        layer_seed=int(cfg.get("layer_seed", 0) or 0),
        prefix_projection=bool(cfg.get("prefix_projection", False)),
        prefix_hidden=int(cfg.get("prefix_hidden", 512)),
        frozen_eval=bool(cfg.get("frozen_eval", True)),
    )
    if spec.num_tokens < 0:
        raise ConfigError(f"method.num_tokens={spec.num_tokens} must be >= 0")
    if spec.tau <= 0:
        raise ConfigError(f"method.tau={spec.tau} must be > 0")
    if layers is None:
        layers = cfg.get("layers")
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
