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
from spt_cli.search.controls import (
    ControlRecord,
    layer_subsets,
    lookup,
    rank,
    shard_of,
    subset_key,
)

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


def test_shards_split_the_sets_without_overlap() -> None:
    sets = [(1, 2), (1, 3), (2, 3), (3, 4), (4, 5)]
    parts = [shard_of(sets, i, 2) for i in range(2)]
    assert parts == [[(1, 2), (2, 3), (4, 5)], [(1, 3), (3, 4)]]
    assert shard_of(sets, 0, 1) == sets
    with pytest.raises(ValueError, match="shard 2 is not one of 0..1"):
        shard_of(sets, 2, 2)


def test_two_writers_keep_each_others_entries(tmp_path: Path) -> None:
    ident = {"task": "t", "model": "m", "shots": 16, "seed": 1}
    a, b = ControlRecord(tmp_path, ident, {}), ControlRecord(tmp_path, ident, {})
    a.add((1, 2), {"dev": 0.1, "test": 0.1})
    b.add((1, 3), {"dev": 0.2, "test": 0.2})  # b never read a's entry before this
    a.add((2, 3), {"dev": 0.3, "test": 0.3}, extra=True)
    again = ControlRecord(tmp_path, ident, {})
    assert list(again.subsets) == ["1,2", "1,3"] and list(again.extra) == ["2,3"]
    a.refresh()
    assert a.subsets == again.subsets


@pytest.mark.skipif(shared_data() is None, reason="needs the shared data mirror")
def test_two_shards_retrain_each_set_once(tmp_path: Path, capsys) -> None:
    from spt_cli.stages.controls import stage_controls

    records = tmp_path / "records"
    common = ["stage=controls", *COMMON, "method.layers=[1,2,3]", "search.budget=2",
              "controls.max_subsets=2", f"controls.records={records}", "controls.shards=2",
              *searchpath_override()]  # fmt: skip
    said = []
    for shard in (1, 0):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[*common, f"controls.shard={shard}"])
        cfg.data.root = str(shared_data())
        stage_controls(cfg, tmp_path / f"shard{shard}")
        out = capsys.readouterr()
        said.append(out.out + out.err)
    (path,) = records.rglob("*.json")
    data = json.loads(path.read_text())
    # the seeded sample of two subsets plus [2, 3] (the last K and the middle K), each
    # retrained once by one of the shards
    sets = {subset_key(x) for x in layer_subsets([1, 2, 3], 2, 2, 13)} | {"2,3"}
    assert set(data["subsets"]) | set(data["extra"]) == sets
    retrained = [line for text in said for line in text.splitlines() if " layers [" in line]
    assert len(retrained) == len(sets) and all(" layers [" in text for text in said)
    assert "(shard 1 of 0..1)" in said[0] and "(shard 0 of 0..1)" in said[1]
    # the shard that ran last prints the whole record, the other shard's retrains included
    assert all(f"[{k}]" in said[1] for k in sets)


def test_a_shard_beyond_the_count_is_refused(tmp_path: Path) -> None:
    from spt_cli.errors import ConfigError
    from spt_cli.stages.controls import stage_controls

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[
            "stage=controls", *COMMON, "controls.shards=2", "controls.shard=2",
            *searchpath_override(),
        ])  # fmt: skip
    with pytest.raises(ConfigError, match="controls.shard=2 must be below controls.shards=2"):
        stage_controls(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_record_of_another_budget_is_not_mixed_in(tmp_path: Path) -> None:
    from spt_cli.errors import ConfigError

    four = {
        "task": "t",
        "model": "m",
        "shots": 16,
        "seed": 1,
        "k": 4,
        "candidates": [1, 2, 3, 4, 5],
    }
    ControlRecord(tmp_path, four, {}).add((1, 2, 3, 4), {"dev": 0.5, "test": 0.5})
    with pytest.raises(ConfigError, match="K=4 among .*this run's are K=2.*controls_k2"):
        ControlRecord(tmp_path, {**four, "k": 2}, {})
    assert len(ControlRecord(tmp_path, four, {}).subsets) == 1


def test_listed_sets_are_retrained_beside_the_named_ones(tmp_path: Path) -> None:
    from spt_cli.errors import ConfigError
    from spt_cli.stages.controls import stage_controls

    records = tmp_path / "records"

    def cfg_with(sets: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[
                "stage=controls", *COMMON, "method.layers=[1,2,3]", "search.budget=2",
                "controls.max_subsets=0", "controls.include=[]", f"controls.sets={sets}",
                f"controls.records={records}", *searchpath_override(),
            ])  # fmt: skip
        cfg.data.root = str(shared_data())
        return cfg

    stage_controls(cfg_with("[[3,1]]"), tmp_path / "a")
    (path,) = records.rglob("*.json")
    data = json.loads(path.read_text())
    assert data["subsets"] == {} and list(data["extra"]) == ["1,3"]
    for bad in ("[[1,1]]", "[[1,2,3]]", "[[1,9]]"):
        with pytest.raises(ConfigError, match=r"controls.sets entry .* must be K=2 distinct"):
            stage_controls(cfg_with(bad), tmp_path / "b")
