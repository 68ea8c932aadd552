"""The per-method choice on dev (spt_cli.tables.grid, which scripts/fewshot_table.py choose
runs through `spt-run table table.grids=[...]`) and the script's machine-time summary.

The choice decides which setting of every method goes into the paper table, so it is checked
on hand-made records: best mean dev wins, an unfinished grid chooses nothing, test is ignored.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import fewshot_table  # noqa: E402

from spt_cli.tables.collect import collect_runs  # noqa: E402
from spt_cli.tables.grid import grid_choices, read_grid  # noqa: E402

GRID = read_grid("grid_fewshot_prompts")  # lpt among its methods; tasks x seeds 13, 21


def _record(root: Path, task: str, method: str, seed: int, lr: float, dev: float,
            test: float = 0.5, wall: float = 10.0) -> None:  # fmt: skip
    path = root / task / method / f"train-16shot-seed{seed}-{round(lr * 1e6):012x}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {"format": "spt-cli-record/1", "task": task, "method": method, "seed": seed,
           "main_metric": "accuracy", "status": "completed",
           "dev": {"accuracy": dev}, "test": {"accuracy": test}, "wall_time_s": wall,
           "config": {"trainer": {"lr": lr}}}  # fmt: skip
    path.write_text(json.dumps(rec))


def _fill(root: Path, method: str, dev_of_lr: dict[float, float], skip: int = 0) -> None:
    cells = [(t, s) for t in GRID.tasks for s in GRID.seeds]
    for lr, dev in dev_of_lr.items():
        for task, seed in cells[skip if lr == 0.02 else 0 :]:
            # test is the reverse of dev: a choice that looked at test would pick another lr
            _record(root, task, method, seed, lr, dev, test=1.0 - dev)


@pytest.fixture
def grid(tmp_path):
    return tmp_path


def choices(root: Path) -> dict:
    return grid_choices(collect_runs([str(root)]), [GRID])


def test_choice_is_the_best_mean_dev_and_ignores_test(grid):
    _fill(grid, "lpt", {0.001: 0.60, 0.005: 0.70, 0.02: 0.65})
    found = choices(grid)
    assert found["lpt"]["setting"] == ["trainer.lr=5e-3"]
    assert found["lpt"]["dev_mean"] == {"trainer.lr=1e-3": 60.0, "trainer.lr=5e-3": 70.0,
                                        "trainer.lr=2e-2": 65.0}  # fmt: skip


def test_an_unfinished_grid_chooses_nothing(grid):
    _fill(grid, "lpt", {0.001: 0.60, 0.005: 0.70, 0.02: 0.90}, skip=1)
    assert "lpt" not in choices(grid)


def test_machine_time_sums_run_wall_times_per_method(tmp_path):
    _record(tmp_path, "sst2", "lpt", 13, 0.005, 0.7, wall=30.0)
    _record(tmp_path, "mr", "lpt", 13, 0.005, 0.7, wall=90.0)
    _record(tmp_path, "mr", "head_only", 13, 0.02, 0.6, wall=6.0)
    text = fewshot_table.machine_time(tmp_path)
    assert "lpt:    2 runs,     2.0 min (mean 60 s)" in text
    assert "head_only:    1 runs,     0.1 min (mean 6 s)" in text
    assert text.splitlines()[-1].strip().startswith("all:    3 runs,    0.04 h")


def test_fulldata_script_parses_its_arguments():
    import subprocess

    cmd = [sys.executable, str(REPO / "scripts" / "fulldata_table.py"), "table", "--help"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--seeds" in proc.stdout and "spt" in proc.stdout


def test_choices_markdown_marks_the_chosen_setting(grid):
    _fill(grid, "lpt", {0.001: 0.60, 0.005: 0.70, 0.02: 0.65})
    md = fewshot_table.choices_markdown(choices(grid))
    assert "| lpt | trainer.lr=1e-3: 60.0; **trainer.lr=5e-3: 70.0**; trainer.lr=2e-2: 65.0 |" in md
