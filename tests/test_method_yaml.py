"""A method is one yaml file: a new one, written into a config folder of its own and found by
Hydra's search path, is composed, resolved and trained on tiny-bert without touching code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from conftest import REPO, shared_data
from spt_cli.config import searchpath_override
from spt_cli.errors import ConfigError
from spt_cli.model import check_stage, resolve_method

NEW_METHOD = """\
# A test-only method: static prompts at every block from the input on, no generator.
defaults: [_base, _self_]
name: every_block_static
generator: static
num_tokens: 4
default_layers: all
"""


def _compose(conf: Path, *overrides: str):
    """The composed config, with ``conf`` on Hydra's search path after the shipped tree (and
    the tests' models)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="spt_cli.conf", version_base="1.3"):
            return compose(config_name="config", overrides=[*searchpath_override(conf), *overrides])
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    folder = tmp_path / "conf"
    (folder / "method").mkdir(parents=True)
    (folder / "method" / "every_block_static.yaml").write_text(NEW_METHOD)
    return folder


def test_a_new_method_is_one_yaml_file(conf):
    cfg = _compose(conf, "method=every_block_static")
    spec = resolve_method(cfg.method, num_layers=4, model_name="tiny")
    assert (spec.name, spec.layers, spec.generator, spec.gate) == (
        "every_block_static",
        [0, 1, 2, 3],
        "static",
        "hard",
    )
    check_stage(cfg.method, "train")  # a train method (the _base default)
    with pytest.raises(ConfigError, match="search needs a searched method"):
        check_stage(cfg.method, "search")


def test_a_new_method_trains_on_tiny_bert(conf, tmp_path, monkeypatch, one_thread):
    from spt_cli.stages import run_stage

    data = shared_data()
    if data is None:
        pytest.skip("no data mirror")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_dir = tmp_path / "run"
    overrides = ["method=every_block_static", "model=tiny-bert", "dataset=sst2", "shots=16",
                 "trainer.max_steps=2", "logger=none", f"data.root={data}"]  # fmt: skip
    cfg = _compose(conf, "stage=train", *overrides)
    run_stage("train", cfg, run_dir, overrides)
    res = json.loads((run_dir / "results.json").read_text())
    assert res["method"] == "every_block_static" and res["prompt_layers"] == [0, 1, 2, 3]
    assert res["steps"] == 2 and 0.0 <= res["test"]["accuracy"] <= 1.0


def test_no_code_branches_on_a_method_name():
    # Behaviour follows the method's keys; the names live in conf/method/ only (the tables
    # group results by name and take their row order and reference from table.rows and
    # table.reference, so they name none either).
    names = [p.stem for p in (REPO / "conf" / "method").glob("[!_]*.yaml")]
    alternatives = "|".join(names)
    pattern = re.compile(rf"""(==|!=|\bin)\s*\(?["']({alternatives})["']""")
    found = [
        f"{path.relative_to(REPO)}: {line.strip()}"
        for path in (REPO / "spt_cli").rglob("*.py")
        for line in path.read_text().splitlines()
        if pattern.search(line)
    ]
    assert not found, found
