"""The stages of ``spt-run``: data, search, retrain, train, eval and table.

Each stage takes the composed config and its run directory, writes its outputs there
atomically, and returns the dev main metric (for Hydra sweepers) or None.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from spt_cli.config import STAGES
from spt_cli.errors import ConfigError


def run_stage(name: str, cfg: DictConfig, run_dir: Path, overrides: list[str]) -> float | None:
    """Run stage ``name`` of one composed configuration in ``run_dir``."""
    if name == "data":
        from spt_cli.stages.data import stage_data

        return stage_data(cfg, run_dir)
    if name == "search":
        from spt_cli.stages.search import stage_search

        return stage_search(cfg, run_dir)
    if name in ("train", "retrain"):
        from spt_cli.stages.train import stage_train

        return stage_train(cfg, run_dir, name)
    if name == "eval":
        from spt_cli.stages.evaluate import stage_eval

        return stage_eval(cfg, run_dir, overrides)
    if name == "controls":
        from spt_cli.stages.controls import stage_controls

        return stage_controls(cfg, run_dir)
    if name == "table":
        from spt_cli.tables import run_table

        run_table(cfg, run_dir)
        return None
    raise ConfigError(f"unknown stage '{name}'; choose one of: {', '.join(STAGES)}")
