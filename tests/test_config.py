"""The config tree: every dataset x split x method x model composes and validates."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from spt_cli.config import GROUPS, STAGES, group_choices, searchpath_override, split_name, validate
from spt_cli.data import CANONICAL, get_task


@pytest.fixture(scope="module")
def composer():
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="spt_cli.conf", version_base="1.3"):
        yield lambda *ov, **kw: compose(
            config_name="config", overrides=[*ov, *searchpath_override()], **kw
        )
    GlobalHydra.instance().clear()


def test_every_canonical_task_has_a_dataset_config():
    assert set(CANONICAL) <= set(group_choices("dataset"))
    for name in group_choices("dataset"):
        assert get_task(name).name in (name, "cr")


@pytest.mark.parametrize("dataset", group_choices("dataset"))
@pytest.mark.parametrize("split, shots", [("full", 0), ("few_shot", 16)])
def test_dataset_x_split_composes(composer, dataset, split, shots):
    cfg = composer("stage=search", f"dataset={dataset}", f"split={split}", f"shots={shots}")
    validate(cfg)
    assert cfg.dataset.name == dataset
    assert split_name(cfg) == split


def test_shots_alone_selects_the_few_shot_split(composer):
    cfg = composer("stage=search", "shots=16")
    assert cfg.split.name == "full" and split_name(cfg) == "few_shot"


@pytest.mark.parametrize("group", [g for g in GROUPS if g not in ("dataset", "split")])
def test_every_choice_of_every_group_composes(composer, group):
    for choice in group_choices(group):
        cfg = composer("stage=train", f"{group}={choice}")
        validate(cfg)


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_sets_its_name_and_run_dir(composer, stage):
    cfg = composer(
        f"stage={stage}", "dataset=mrpc", "shots=16", "seed=21", return_hydra_config=True
    )
    assert cfg.stage.name == stage
    run_dir = OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]
    assert run_dir.startswith(f"outputs/{stage}/")
    if stage not in ("table", "data"):
        assert "${dataset.name}/${method.name}/${shots}-${seed}/" in run_dir


def test_documented_keys_exist(composer):
    cfg = composer("stage=search")
    for key in (
        "dataset.name", "model.name", "method.name", "method.num_tokens", "shots", "seed",
        "data.root", "data.max_seq_length", "trainer.batch_size", "trainer.lr",
        "trainer.max_steps", "trainer.eval_every", "search.order", "search.budget",
        "logger.name", "resume",
    ):  # fmt: skip
        assert key.split(".")[0] in cfg, key
        node = cfg
        for part in key.split("."):
            assert part in node, key
            node = node[part]
