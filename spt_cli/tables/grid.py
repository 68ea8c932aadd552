"""One setting per method from a grid (`spt-run table table.grids=[...]`): the protocol of the
few-shot table (docs/results.md), where each method's learning rate is chosen once, on the mean
dev over every task and seed of its grid, not per cell as `table.select=dev` does.

A grid is an experiment file (``conf/experiment/<name>.yaml``) whose ``hydra.sweeper.params``
sweep ``method``, ``dataset``, ``seed`` and the keys that make a setting (e.g. ``trainer.lr``);
the settings are those keys' product, spelled as the file spells them (``trainer.lr=1e-3``), and
a run belongs to the setting its config holds (values compared as numbers: 1e-3 == 0.001).
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from spt_cli.config import find_config_file, group_choices, read_own_config_file
from spt_cli.errors import ConfigError
from spt_cli.tables.records import RunRecord
from spt_cli.tables.select import holds

GRID_FILE = "choices.json"
NOT_SETTINGS = ("method", "dataset", "seed")  # swept, but not what is chosen


@dataclass
class Grid:
    """The runs an experiment file's sweep launches."""

    name: str
    methods: list[str]
    settings: list[list[str]]  # each a list of key=value, in the sweep's order
    tasks: list[str]
    seeds: list[int]


def _values(params: dict[str, Any], key: str, name: str) -> list[str]:
    if key not in params:
        raise ConfigError(f"table.grids: experiment={name} sweeps no {key}= (hydra.sweeper.params)")
    return [v.strip() for v in str(params[key]).split(",") if v.strip()]


def read_grid(name: str) -> Grid:
    """The grid of ``conf/experiment/<name>.yaml``: the file's own ``hydra.sweeper.params``
    (not those of the experiments it builds on, whose group overrides only Hydra resolves)."""
    if find_config_file("experiment", name) is None:
        known = ", ".join(c for c in group_choices("experiment") if c.startswith("grid"))
        raise ConfigError(f"table.grids: experiment={name} does not exist; e.g. {known}")
    cfg = read_own_config_file("experiment", name)
    params = OmegaConf.to_container(OmegaConf.select(cfg, "hydra.sweeper.params") or {})
    assert isinstance(params, dict)
    keys = [k for k in params if k not in NOT_SETTINGS]
    if not keys:
        raise ConfigError(f"table.grids: experiment={name} sweeps no setting (e.g. trainer.lr)")
    per_key = [[f"{k}={v}" for v in _values(params, k, name)] for k in keys]
    return Grid(
        name=name,
        methods=_values(params, "method", name),
        settings=[list(s) for s in itertools.product(*per_key)],
        tasks=_values(params, "dataset", name),
        seeds=[int(s) for s in _values(params, "seed", name)],
    )


def _setting_of(rec: RunRecord, settings: list[list[str]]) -> int | None:
    """Index of the grid setting a run's config holds (None: no setting of the grid)."""
    for i, setting in enumerate(settings):
        if all(holds(rec.config, item) for item in setting):
            return i
    return None


def grid_choices(records: list[RunRecord], grids: list[Grid]) -> dict[str, dict[str, Any]]:
    """Per method of the grids (in their order), the setting with the best mean dev main
    metric over the grid's tasks x seeds (a tie keeps the earlier setting), with every
    setting's mean dev x100; a method is left out until each of its settings has a run with a
    dev number on every task and seed of the grid. Test is never read."""
    out: dict[str, dict[str, Any]] = {}
    for grid in grids:
        wanted = {(t, s) for t in grid.tasks for s in grid.seeds}
        for method in grid.methods:
            scores: dict[int, list[float]] = {i: [] for i in range(len(grid.settings))}
            covered: dict[int, set[tuple[str, int]]] = {i: set() for i in scores}
            for rec in records:
                if rec.method != method or rec.dev is None or (rec.task, rec.seed) not in wanted:
                    continue
                i = _setting_of(rec, grid.settings)
                if i is not None:
                    scores[i].append(rec.dev)
                    covered[i].add((str(rec.task), int(rec.seed)))  # type: ignore[arg-type]
            if any(covered[i] != wanted for i in scores):
                continue  # the grid is not finished for this method
            means = {i: statistics.fmean(v) for i, v in scores.items()}
            best = max(means, key=lambda i: (means[i], -i))
            out[method] = {
                "setting": grid.settings[best],
                "dev_mean": {
                    " ".join(grid.settings[i]): round(100 * m, 2) for i, m in means.items()
                },
            }
    return out
