"""Study settings kept as config: docs/search.md's search variants (conf/search_variant) compose
to the same jobs, hence the same fingerprints and records, as the overrides they replace."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from spt_cli.config import GROUPS, group_choices
from spt_cli.jobs import fingerprint

CONF = Path(__file__).resolve().parents[1] / "conf"
STUDY = ["stage=search", "experiment=cpu_fewshot", "logger=none", "trainer.num_threads=1",
         "retrain=false", "dataset=sst2", "seed=13"]  # fmt: skip
SOFT = ["method.input_prompt=none", "method.gate=soft", "search.anneal=false",
        "search.tau_end=1.0"]  # fmt: skip
# The switches scripts/search_study.py passed before the variants became a config group.
VARIANT_OVERRIDES = {
    "static": ["method.input_prompt=static", "method.gate=soft", "search.anneal=false",
               "search.tau_end=1.0"],
    "none": SOFT,
    "centred": [*SOFT, "search.alpha_grad=centred"],
    "budget": [*SOFT, "search.gate_shift=budget"],
    "ablation": [*SOFT, "search.select=ablation"],
    "wstop": [*SOFT, "search.weight_stop_loss=0.01"],
    "sgd": [*SOFT, "search.alpha_optimizer=sgd"],
    "stochastic": ["method.input_prompt=none", "method.gate=stochastic", "search.anneal=true",
                   "search.tau_start=1.0", "search.tau_end=0.2"],
}  # fmt: skip


def _fingerprint(overrides: list[str]) -> str:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return fingerprint(compose("config", overrides=overrides))


def test_search_variants_are_a_listed_group() -> None:
    assert "search_variant" in GROUPS  # so `spt-run --help` lists the choices
    assert set(group_choices("search_variant")) == set(VARIANT_OVERRIDES)
    for name in VARIANT_OVERRIDES:
        first = (CONF / "search_variant" / f"{name}.yaml").read_text().splitlines()[0]
        assert first == "# @package _global_"


@pytest.mark.parametrize("name", sorted(VARIANT_OVERRIDES))
def test_search_variant_is_its_overrides(name: str) -> None:
    assert _fingerprint([*STUDY, f"search_variant={name}"]) == _fingerprint(
        [*STUDY, *VARIANT_OVERRIDES[name]]
    )


def test_search_variant_matches_a_committed_record() -> None:
    # results/search_study/centred/sst2/spt/search-16shot-seed13-1126f78e73ed.json
    assert _fingerprint([*STUDY, "search_variant=centred"]) == "1126f78e73ed"


def test_command_line_wins_over_a_variant() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*STUDY, "search_variant=centred", "method.gate=hard"])
    assert cfg.method.gate == "hard" and cfg.search.alpha_grad == "centred"
