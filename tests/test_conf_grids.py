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
                   "method.tau=1.0", "search.tau_end=0.2"],
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
    # results/search_study/centred/sst2/spt/search-16shot-seed13-1126f78e73ed.json: searched
    # before search.fallback and search.keep_best_of existed, i.e. with fallback=none and
    # keep_best_of=[]; today's defaults are another job
    centred = [*STUDY, "search_variant=centred"]
    old = [*centred, "search.fallback=none", "search.keep_best_of=[]"]
    assert _fingerprint(old) == "1126f78e73ed"
    assert _fingerprint(centred) != "1126f78e73ed"


def test_command_line_wins_over_a_variant() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*STUDY, "search_variant=centred", "method.gate=hard"])
    assert cfg.method.gate == "hard" and cfg.search.alpha_grad == "centred"


# -- the few-shot table's grids (conf/experiment/grid_fewshot_*.yaml) ----------------------------
GRIDS = {"grid_fewshot_prompts": "train", "grid_fewshot_random_layers": "train",
         "grid_fewshot_finetune": "train", "grid_fewshot_spt": "search"}  # fmt: skip
# What scripts/fewshot_table.py passed before the grids became experiment files.
OLD_COMMON = ["experiment=cpu_fewshot", "logger=none", "trainer.num_threads=1",
              "lower_cache_dir=outputs/lower_states"]  # fmt: skip
# spt: the search defaults of that time, which grid_fewshot_spt now pins (SPT-DARTS as published).
OLD_FIXED = {"random_layers": ["method.layer_seed=$\\{seed\\}"],
             "spt": ["search.fallback=none", "search.keep_best_of=[]"]}  # fmt: skip


def _grid_jobs():
    from spt_cli.tables.grid import read_grid

    for name, stage in GRIDS.items():
        grid = read_grid(name)
        for method in grid.methods:
            for setting in grid.settings:
                yield name, stage, method, setting


def test_grids_sweep_what_the_table_chose_from() -> None:
    from spt_cli.tables.grid import read_grid

    methods = [m for name in GRIDS for m in read_grid(name).methods]
    assert methods == ["head_only", "prompt_tuning", "deep_prompt", "ptuning_v2", "lpt",
                       "random_layers", "finetune", "spt"]  # fmt: skip
    finetune = read_grid("grid_fewshot_finetune")
    assert finetune.settings[1] == ["trainer.backbone_lr=2e-5", "trainer.max_steps=300"]
    assert (finetune.tasks, finetune.seeds) == (["sst2", "mr", "mpqa", "subj", "trec"], [13, 21])


@pytest.mark.parametrize("job", list(_grid_jobs()), ids=lambda j: f"{j[2]}-{'-'.join(j[3])}")
def test_grid_job_is_the_former_command(job) -> None:
    name, stage, method, setting = job
    cell = ["dataset=mr", "seed=21"]
    new = [f"stage={stage}", f"experiment={name}", f"method={method}", *setting, *cell]
    old = [f"stage={stage}", *OLD_COMMON, f"method={method}", *OLD_FIXED.get(method, []),
           *setting, *cell]  # fmt: skip
    assert _fingerprint(new) == _fingerprint(old)


@pytest.mark.parametrize(
    ("name", "stage", "overrides", "fp"),
    [  # results/fewshot_grid/sst2/<method>/<stage>-16shot-seed13-<fp>.json
        ("grid_fewshot_prompts", "train", ["method=lpt", "trainer.lr=1e-3"], "6ae663b9670e"),
        ("grid_fewshot_random_layers", "train", ["method=random_layers", "trainer.lr=2e-2"],
         "59f05a753d51"),
        ("grid_fewshot_finetune", "train",
         ["method=finetune", "trainer.backbone_lr=2e-5", "trainer.max_steps=300"], "07a14172a2d3"),
        # searched before search.fallback and keep_best_of existed; the grid pins their off values
        ("grid_fewshot_spt", "search", ["method=spt", "trainer.lr=5e-3"], "97847e3bc668"),
    ],
)  # fmt: skip
def test_grid_job_matches_a_committed_record(name, stage, overrides, fp) -> None:
    cfg = [f"stage={stage}", f"experiment={name}", *overrides, "dataset=sst2", "seed=13"]
    assert _fingerprint(cfg) == fp
