"""Every key of the composed default config is checked before any work starts: each leaf gets
wrong values (a wrong type, a negative number, a number above its documented maximum) and
``validate`` must refuse each with a one-line ConfigError naming the key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from spt_cli.config import read_config_file, validate
from spt_cli.errors import ConfigError
from spt_cli.preflight import _compose

# Sections walked key by key; top-level scalars are walked too.
SECTIONS = ("trainer", "method", "head", "search", "controls", "table", "data", "split")
# Top-level sections not walked here, and why.
NOT_WALKED = {
    "hydra": "Hydra's own settings, checked by Hydra",
    "stage": "set by the CLI from the first word of `spt-run STAGE`",
    "model": "a backbone's description (ids, sizes), read by its adapter",
    "dataset": "a task's description, read by spt_cli.data",
    "logger": "the wandb settings, handed to wandb",
}
# Keys that take any value, and why.
ANY_VALUE = {
    "from_search": "a path (a search run directory); checked when the retrain reads it",
    "artifact": "a path (a saved artefact); checked when eval reads it",
    "runs": "a path or glob (runs to tabulate); checked when the table collects them",
    "records": "a path; the preflight checks it can take records (test_record_paths)",
    "job_index": "a path; the preflight checks it can take the index (test_record_paths)",
    "lower_cache_dir": "a path; created when the first run writes its cache",
    "data.root": "a path (a data folder); checked when data are read",
    "controls.records": "a path; created when controls writes its first record",
    "method.name": "the method's name, free (each method file sets its own)",
    "method.retrain_as": "a method file name: the retrain reads that file, which must exist",
    "table.rows": "the table's row order: method names; a method not listed sorts after them",
    "table.reference": "the paired table's reference method: a name, no row when absent",
    "table.grids": "experiment file names of grids, read by spt-run table when it runs",
}
# Documented maxima (the yaml comments and README); a value above must be refused.
MAXIMA = {
    "data.dev_ratio": 1,
    "trainer.warmup_ratio": 1,
    "method.dropout": 1,
    "head.dropout": 1,
    "search.alpha_portion": 1,
    "search.threshold": 1,
}


def _leaves(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, DictConfig):
        for key in node:
            yield from _leaves(node._get_node(key), f"{prefix}{key}.")
    else:
        yield prefix[:-1], OmegaConf.to_container(node) if OmegaConf.is_list(node) else node


def _walked(cfg: DictConfig) -> Iterator[tuple[str, Any]]:
    for key in cfg:
        if key in SECTIONS:
            yield from _leaves(cfg[key], f"{key}.")
        elif key not in NOT_WALKED:
            yield from _leaves(cfg._get_node(key), f"{key}.")


def _value(node: Any) -> Any:
    return node._value() if hasattr(node, "_value") else node


def _wrong_values(key: str, default: Any) -> list[Any]:
    """Values no key of this default's type may take."""
    if isinstance(default, bool):
        return ["oops", 2, [1]]
    if isinstance(default, int | float):
        above = [MAXIMA[key] + 0.5] if key in MAXIMA else []
        return ["oops", [1], -1, *above]
    if isinstance(default, str):  # a string with choices
        return [5, "oops", [1]]
    if isinstance(default, list):
        return ["oops", 5, [-1], ["oops"]]
    assert default is None, f"{key}: no wrong values known for {default!r}"
    above = [MAXIMA[key] + 0.5] if key in MAXIMA else []
    return ["oops", -1, *above]  # a null-able override: a number or a list when set


@pytest.fixture(scope="module")
def default_cfg() -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="spt_cli.conf", version_base="1.3"):
        cfg = _compose("search", [])
    GlobalHydra.instance().clear()
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def test_the_default_config_is_valid(default_cfg):
    validate(default_cfg)


def test_exemptions_name_existing_keys(default_cfg):
    keys = {k for k, _ in _walked(default_cfg)}
    assert set(ANY_VALUE) <= keys, f"stale ANY_VALUE entries: {set(ANY_VALUE) - keys}"
    assert set(SECTIONS) <= set(default_cfg)
    # The default method (spt) carries every key of method/_base and head/auto of head/_base.
    for group in ("method", "head"):
        base = {f"{group}.{k}" for k in read_config_file(group, "_base")}
        assert base <= keys, f"{group}/_base keys not walked: {base - keys}"


def test_every_key_refuses_wrong_values(default_cfg):
    leaves = [(k, _value(v)) for k, v in _walked(default_cfg) if k not in ANY_VALUE]
    assert len(leaves) > 60  # every section was walked
    unchecked = []
    for key, default in leaves:
        for bad in _wrong_values(key, default):
            cfg = default_cfg.copy()
            OmegaConf.update(cfg, key, bad, merge=False)
            try:
                validate(cfg)
            except ConfigError as exc:
                msg = str(exc)
                if key not in msg or "\n" in msg:
                    unchecked.append(f"{key}={bad!r}: message does not name the key: {msg}")
            else:
                unchecked.append(f"{key}={bad!r} is accepted")
    assert not unchecked, "keys validate() does not check (check them in spt_cli/config.py " + (
        "RULES, or list them in ANY_VALUE with a reason):\n" + "\n".join(unchecked)
    )
