"""Experiment presets and launcher configs compose, and sweep the seeds they document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
LMBFF_SEEDS = [13, 21, 42, 87, 100]
CPU_FULLDATA_TASKS = ["sst2", "mr", "mpqa", "subj", "trec", "mrpc", "rte", "cola", "stsb"]
PAPER_MODELS = {"": "roberta-large", "_deberta": "deberta-large", "_gpt2": "gpt2-large"}


def _compose(overrides: list[str], hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra)


def _sweep_seeds(cfg) -> list[int]:
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    return [int(s) for s in str(params.get("seed", "")).split(",") if s]


def test_expected_experiments_exist() -> None:
    expected = {"cpu_fewshot", "cpu_fulldata", "paper_fewshot", "paper_fulldata"}
    expected |= {f"paper_{s}{v}" for s in ("fewshot", "fulldata") for v in ("_deberta", "_gpt2")}
    assert expected <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_is_global_package(name: str) -> None:
    first = (CONF / "experiment" / f"{name}.yaml").read_text().splitlines()[0]
    assert first == "# @package _global_"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_validates(name: str) -> None:
    from spt_cli.config import validate

    cfg = _compose([f"experiment={name}", "dataset=rte"], hydra=True)
    assert cfg.dataset.name == "rte"  # the command line still picks the task
    assert cfg.trainer.max_steps is not None or cfg.trainer.epochs is not None
    assert set(_sweep_seeds(cfg)) <= set(LMBFF_SEEDS) and _sweep_seeds(cfg)
    cfg = _compose([f"experiment={name}", "dataset=rte"])
    validate(cfg)


@pytest.mark.parametrize("setting", ["fewshot", "fulldata"])
@pytest.mark.parametrize("variant", sorted(PAPER_MODELS))
def test_paper_presets(setting: str, variant: str) -> None:
    cfg = _compose([f"experiment=paper_{setting}{variant}", "dataset=sst2"], hydra=True)
    assert cfg.model.name == PAPER_MODELS[variant]
    if setting == "fewshot":
        assert cfg.shots == 16 and cfg.trainer.max_steps == 1000
        assert _sweep_seeds(cfg) == LMBFF_SEEDS
    else:
        assert cfg.shots == 0 and cfg.trainer.epochs == 10 and cfg.trainer.max_steps is None
        assert cfg.data.max_seq_length == 256


def test_cpu_fewshot() -> None:
    cfg = _compose(["experiment=cpu_fewshot", "dataset=sst2"], hydra=True)
    assert cfg.model.name == "minilm"
    assert cfg.shots == 16 and cfg.seed == 13
    assert (cfg.trainer.max_steps, cfg.trainer.eval_every) == (100, 25)
    assert cfg.trainer.device == "cpu" and cfg.trainer.num_threads == 2
    assert _sweep_seeds(cfg) == LMBFF_SEEDS
    # the command line still wins over the preset
    cfg = _compose(["experiment=cpu_fewshot", "trainer.max_steps=10", "shots=8"])
    assert (cfg.trainer.max_steps, cfg.shots) == (10, 8)


@pytest.mark.parametrize("task", CPU_FULLDATA_TASKS)
def test_cpu_fulldata_tasks(task: str) -> None:
    cfg = _compose(["experiment=cpu_fulldata", f"dataset={task}"])
    assert cfg.model.name == "minilm" and cfg.shots == 0
    assert cfg.trainer.max_steps == 300  # the documented cap
    assert task in (CONF / "experiment" / "cpu_fulldata.yaml").read_text()


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("slurm", "SlurmLauncher"),
        ("submitit_slurm", "SlurmLauncher"),
        ("local", "LocalLauncher"),
        ("submitit_local", "LocalLauncher"),
        ("joblib", "JoblibLauncher"),
    ],
)
def test_launchers_compose(launcher: str, target: str) -> None:
    cfg = _compose([f"hydra/launcher={launcher}"], hydra=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":  # ours, not the plugin's defaults
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min == 240
    if launcher == "joblib":  # the plugin's own config is not shadowed
        assert "n_jobs" in cfg.hydra.launcher


def test_slurm_launcher_writes_a_valid_sbatch_script(tmp_path: Path, monkeypatch) -> None:
    """Our slurm.yaml through submitit's own parameter mapping, up to the sbatch file."""
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit checks that srun exists
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")

    cfg = _compose(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], hydra=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    params.pop("_target_")
    params.pop("submitit_folder")
    executor = submitit.AutoExecutor(
        cluster="slurm",
        folder=tmp_path / "sub",
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    params = {k if k in base else f"slurm_{k}": v for k, v in params.items()}
    params["name"] = "spt"  # ${hydra.job.name}: only resolvable inside a running app
    executor.update_parameters(**params)  # raises on an option sbatch does not know
    script = executor._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--time=240", "--mem=64GB"):
        assert f"#SBATCH {line}" in script


APP = """
import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(config_path={conf!r}, config_name="config", version_base="1.3")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "job.json").write_text(json.dumps(
        {{"seed": cfg.seed, "task": cfg.dataset.name, "steps": cfg.trainer.max_steps}}))


if __name__ == "__main__":
    main()
"""


def _multirun(tmp_path: Path, *overrides: str) -> list[dict]:
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(APP.format(conf=str(CONF))))
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, str(app), "-m", *overrides, f"hydra.sweep.dir={sweep}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted(sweep.glob("*/job.json"), key=lambda p: int(p.parent.name.split("_")[0]))
    return [json.loads(p.read_text()) for p in jobs]


def test_basic_sweeper_sweeps_the_preset_seeds(tmp_path: Path) -> None:
    jobs = _multirun(tmp_path, "experiment=cpu_fewshot", "dataset=sst2")
    assert [j["seed"] for j in jobs] == LMBFF_SEEDS
    assert {j["task"] for j in jobs} == {"sst2"} and {j["steps"] for j in jobs} == {100}


def test_command_line_seed_replaces_the_preset_sweep(tmp_path: Path) -> None:
    jobs = _multirun(tmp_path, "experiment=cpu_fewshot", "seed=21,42", "dataset=rte,sst2")
    assert sorted((j["seed"], j["task"]) for j in jobs) == [
        (21, "rte"), (21, "sst2"), (42, "rte"), (42, "sst2")
    ]  # fmt: skip


def test_submitit_local_launcher_runs_the_sweep(tmp_path: Path) -> None:
    jobs = _multirun(tmp_path, "experiment=cpu_fewshot", "seed=13,21", "hydra/launcher=local")
    assert [j["seed"] for j in jobs] == [13, 21]
