"""``spt-run controls`` retrains named sets (``controls.include``: the last K, the middle K, a
searched set) beside its seeded sample: they are kept apart from the sample, ranked against
it, and never retrained twice. In-process, tiny random-weight BERT, one thread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import shared_data
from spt_cli.config import searchpath_override
from spt_cli.search import select
from spt_cli.search.controls import ControlRecord, lookup, rank

CONF = Path(__file__).resolve().parents[1] / "conf"

COMMON = [
    "model=tiny-bert", "dataset=rte", "shots=16", "seed=13", "logger=none",
    "trainer.max_steps=2", "trainer.eval_every=2", "trainer.checkpoint_every=0",
    "trainer.batch_size=8", "trainer.eval_batch_size=16", "trainer.num_threads=1",
]  # fmt: skip


def test_named_sets() -> None:
    assert select.last_k(range(1, 12), 4) == [8, 9, 10, 11]
    assert select.middle_k(range(1, 12), 4) == [5, 6, 7, 8]
    assert select.middle_k([1, 2, 3], 2) == [2, 3]  # a tie goes to the later set


def test_a_named_set_is_ranked_against_the_sample_not_in_it(tmp_path: Path) -> None:
    record = ControlRecord(tmp_path, {"task": "t", "model": "m", "shots": 16, "seed": 1}, {})
    for key, dev in (((1, 2), 0.2), ((1, 3), 0.4), ((2, 3), 0.6)):
        record.add(key, {"dev": dev, "test": dev})
    record.add((3, 4), {"dev": 0.5, "test": 0.1}, extra=True)
    again = ControlRecord(tmp_path, {"task": "t", "model": "m", "shots": 16, "seed": 1}, {})
    assert list(again.subsets) == ["1,2", "1,3", "2,3"] and list(again.extra) == ["3,4"]
    # 0.5 beats two of the three sample members: rank 2, percentile 66.7
    assert rank([3, 4], again.subsets, "dev", again.extra) == (2, pytest.approx(200 / 3))
    assert rank([3, 4], again.subsets, "dev") is None  # without the named sets: not retrained
    assert lookup(again.data, [4, 3])["test"] == 0.1 and again.has([1, 3])


@pytest.mark.skipif(shared_data() is None, reason="needs the shared data mirror")
def test_controls_retrain_the_sample_then_the_named_sets_once(tmp_path: Path, capsys) -> None:
    from spt_cli.stages.controls import stage_controls

    records = tmp_path / "records"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[
            "stage=controls", *COMMON, "method.layers=[1,2,3]", "search.budget=2",
            "controls.max_subsets=1", f"controls.records={records}", *searchpath_override(),
        ])  # fmt: skip
    cfg.data.root = str(shared_data())
    stage_controls(cfg, tmp_path / "a")
    (path,) = records.rglob("*.json")
    data = json.loads(path.read_text())
    assert len(data["subsets"]) == 1  # the seeded sample
    # last K and middle K of candidates 1..3 are both [2, 3]: one named retrain, unless the
    # sample drew it already
    assert set(data["subsets"]) | set(data["extra"]) >= {"2,3"}
    assert not set(data["subsets"]) & set(data["extra"])
    capsys.readouterr()
    stage_controls(cfg, tmp_path / "b")  # nothing left to retrain
    said = capsys.readouterr()
    assert "0 to retrain" in said.out + said.err
    assert json.loads(path.read_text()) == data
