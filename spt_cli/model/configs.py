"""Read the shipped ``model/``, ``method/`` and ``head/`` yaml files outside Hydra (tests,
scripts, notebooks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from spt_cli.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def _conf_dir() -> Path:
    try:  # the installed package ships the tree as spt_cli.conf
        import spt_cli.conf

        return Path(spt_cli.conf.__file__).parent
    except ImportError:  # pragma: no cover
        return CONF_DIR


def group_config(group: str, name: str) -> dict[str, Any]:
    """The yaml ``conf/<group>/<name>.yaml`` as a dict."""
    path = _conf_dir() / group / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (_conf_dir() / group).glob("*.yaml"))
        raise ConfigError(f"{group}={name} does not exist; choose one of {', '.join(known)}")
    return yaml.safe_load(path.read_text()) or {}


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
    return {**group_config("model", name), **overrides}


def method_config(name: str, **overrides: Any) -> dict[str, Any]:
    return {**group_config("method", name), **overrides}


def head_config(name: str = "auto", **overrides: Any) -> dict[str, Any]:
    return {**group_config("head", name), **overrides}
