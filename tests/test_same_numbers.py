"""Same config, same numbers: one SPT retrain gives bit-identical dev and test metrics whether
it runs as ``spt-run retrain``, with the on-disk lower-layer cache (``lower_cache_dir``, first
filling it, then loading from it) or as one subset of ``spt-run controls`` after other subsets
have filled the shared lower-layer store. In-process, tiny random-weight BERT, one thread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import shared_data
from spt_cli.config import searchpath_override

CONF = Path(__file__).resolve().parents[1] / "conf"
pytestmark = pytest.mark.skipif(shared_data() is None, reason="needs the shared data mirror")

COMMON = [
    "model=tiny-bert", "dataset=rte", "shots=16", "seed=13", "logger=none",
    "trainer.max_steps=6", "trainer.eval_every=2", "trainer.checkpoint_every=0",
    "trainer.batch_size=8", "trainer.eval_batch_size=16", "trainer.num_threads=1",
]  # fmt: skip
LAYERS = [1, 3]


def _cfg(stage: str, extra: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        overrides = [f"stage={stage}", *COMMON, *extra, *searchpath_override()]
        cfg = compose("config", overrides=overrides)
    cfg.data.root = str(shared_data())
    return cfg


def _losses(run_dir: Path, phase: str) -> list[float]:
    """Training losses per step from ``metrics.jsonl``: continuous, so a last-bit change
    anywhere in training shows here even when accuracy does not move."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if r.get("phase") == phase and "train/loss" in r]


def _retrain(run_dir: Path, extra: list[str]) -> tuple[dict, dict, int, list[float]]:
    from spt_cli.stages.train import stage_train

    stage_train(_cfg("retrain", [f"layers=[{LAYERS[0]},{LAYERS[1]}]", *extra]), run_dir,
                "retrain")  # fmt: skip
    res = json.loads((run_dir / "results.json").read_text())
    return res["dev"], res["test"], res["best_step"], _losses(run_dir, "retrain")


def _control(run_dir: Path, records: Path) -> tuple[dict, dict, int, list[float]]:
    from spt_cli.stages.controls import stage_controls

    # Candidates 1..3 with K = 2: subsets [1,2] then [1,3], so [1,3] reuses the block-1
    # states that [1,2] computed and stored (train, dev and test).
    stage_controls(_cfg("controls", ["method.layers=[1,2,3]", "search.budget=2",
                                     f"controls.records={records}"]), run_dir)  # fmt: skip
    (path,) = records.rglob("*.json")
    entry = json.loads(path.read_text())["subsets"][",".join(map(str, LAYERS))]
    phase = "subset_" + "_".join(map(str, LAYERS))
    return entry["dev_metrics"], entry["test_metrics"], entry["best_step"], _losses(run_dir, phase)


def test_retrain_disk_cache_and_controls_give_the_same_numbers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the CLI does this from trainer.num_threads
    try:
        plain = _retrain(tmp_path / "plain", [])
        disk = f"lower_cache_dir={tmp_path / 'lower'}"
        filling = _retrain(tmp_path / "fill", [disk])
        assert any((tmp_path / "lower").rglob("*.pt")), "the disk cache was not written"
        loading = _retrain(tmp_path / "load", [disk])
        control = _control(tmp_path / "controls", tmp_path / "records")
    finally:
        torch.set_num_threads(before)
    assert len(plain[3]) == 6 and len(set(plain[3])) > 1  # a run that trained
    assert filling == plain
    assert loading == plain
    assert control == plain
