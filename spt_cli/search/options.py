"""The search's option values and their one check (used by the CLI's preflight and the
architect; no torch import, so a typo is caught before anything heavy loads)."""

from __future__ import annotations

from typing import Any

from spt_cli.errors import ConfigError

CHOICES = {
    "order": ("first", "second"),
    "hessian": ("central", "forward"),
    "alpha_optimizer": ("adam", "sgd"),
    "alpha_grad": ("raw", "centred"),
    "gate_shift": ("none", "budget"),
    "select": ("gates", "ablation"),
}


def check_search_options(scfg: Any) -> None:
    """Refuse an unknown value of a ``search.*`` choice with a one-line error."""
    for key, choices in CHOICES.items():
        value = str(scfg[key])
        if value not in choices:
            options = " or ".join(choices)
            raise ConfigError(f"search.{key}={value} is not known; use search.{key}={options}")
