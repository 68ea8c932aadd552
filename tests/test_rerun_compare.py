"""A rerun of some of a table's jobs compared with the table's records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spt_cli.tables.rerun import compare_rerun


def _record(folder: Path, task: str, method: str, seed: int, wall: float, test: float) -> None:
    path = folder / task / method / f"train-16shot-seed{seed}-{seed:012x}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {"task": task, "method": method, "seed": seed, "wall_time_s": wall,
           "dev": {"accuracy": 0.5}, "test": {"accuracy": test}}  # fmt: skip
    path.write_text(json.dumps(rec))


def test_projection_scales_each_method_by_its_rerun(tmp_path):
    table, rerun = tmp_path / "table", tmp_path / "rerun"
    for seed in (13, 21):
        _record(table, "sst2", "lpt", seed, 100.0, 0.7)
        _record(table, "sst2", "spt", seed, 300.0, 0.6)
    _record(rerun, "sst2", "lpt", 13, 50.0, 0.7)  # twice as fast, same numbers
    _record(rerun, "sst2", "spt", 13, 300.0, 0.65)  # as fast, test moved
    text = compare_rerun(table, rerun, queues=2)
    assert "| lpt | 1 | 100 | 50 | 0.500 | 0.06 | 0.03 |" in text
    # table 800 s; projected 2 x 50 + 2 x 300 = 700 s = 0.19 h, 0.10 h on two queues
    assert "Projected table: 0.19 h of run time, 0.10 h of wall time" in text
    assert "Jobs whose numbers moved: 1 of 2." in text and "- sst2 spt seed 13: test" in text


def test_like_restricts_the_ratio_to_jobs_that_started_alike(tmp_path):
    table, rerun = tmp_path / "table", tmp_path / "rerun"
    _record(table, "sst2", "lpt", 13, 10.0, 0.7)  # read cached states
    _record(table, "rte", "lpt", 13, 100.0, 0.5)  # computed them
    _record(rerun, "sst2", "lpt", 13, 40.0, 0.7)  # computed them: not alike
    _record(rerun, "rte", "lpt", 13, 80.0, 0.5)
    text = compare_rerun(table, rerun, like=lambda key: key[0] == "rte")
    assert "| lpt | 1 | 100 | 80 | 0.800 |" in text
    assert "| lpt | 2 | 110 | 120 | 1.091 |" in compare_rerun(table, rerun)


def test_a_rerun_job_the_table_lacks_is_an_error(tmp_path):
    _record(tmp_path / "table", "sst2", "lpt", 13, 100.0, 0.7)
    _record(tmp_path / "rerun", "sst2", "lpt", 42, 100.0, 0.7)
    with pytest.raises(ValueError, match="not in"):
        compare_rerun(tmp_path / "table", tmp_path / "rerun")
