"""The shipped ``model/``, ``method/`` and ``head/`` yaml files as plain dicts, outside Hydra
(tests, scripts, notebooks), read through :func:`spt_cli.config.read_config_file`."""

from __future__ import annotations

from typing import Any

from spt_cli.config import as_dict, read_config_file


def group_config(group: str, name: str) -> dict[str, Any]:
    """``conf/<group>/<name>.yaml`` (with its defaults) as a dict."""
    return as_dict(read_config_file(group, name))


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
    return {**group_config("model", name), **overrides}


def method_config(name: str, **overrides: Any) -> dict[str, Any]:
    return {**group_config("method", name), **overrides}


def head_config(name: str = "auto", **overrides: Any) -> dict[str, Any]:
    return {**group_config("head", name), **overrides}
