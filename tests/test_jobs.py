"""Resumable sweeps and compact records: a rerun sweep skips completed jobs, continues killed
ones from their checkpoints, and records let a new checkout skip what was run before."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from conftest import SPT_RUN, TINY, spt_run

SWEEP = ["train", "method=lpt", *TINY, "trainer.max_steps=4", "logger=none"]


def _results(root: Path) -> list[Path]:
    return sorted(root.glob("outputs/multirun/**/results.json"))


def test_rerun_sweep_skips_completed_jobs_and_records_let_a_new_checkout_skip(tmp_path):
    args = [*SWEEP, "records=results/t", "-m", "seed=13,21"]
    spt_run(args, tmp_path)
    first = _results(tmp_path)
    records = sorted((tmp_path / "results" / "t").glob("rte/lpt/*.json"))
    assert len(first) == 2 and len(records) == 2
    record = json.loads(records[0].read_text())
    assert record["status"] == "completed" and record["test"]["accuracy"] >= 0
    assert record["config"]["trainer"]["max_steps"] == 4 and "seed=13" in record["overrides"]

    again = spt_run(args, tmp_path)
    assert "skipped 2 job(s)" in again.stderr
    assert _results(tmp_path) == first  # no training: no new results.json
    links = list(tmp_path.glob(f"outputs/multirun/**/{'same_as.json'}"))
    assert len(links) == 2
    # Reused under another records folder (a grid's runs in a table sweep): records carried.
    table = spt_run([*SWEEP, "records=results/u", "-m", "seed=13,21"], tmp_path)
    assert "skipped 2 job(s)" in table.stderr and _results(tmp_path) == first
    carried = sorted((tmp_path / "results" / "u").glob("rte/lpt/*.json"))
    assert [p.name for p in carried] == [p.name for p in records]

    # A fresh checkout has the committed records but no outputs/: still nothing to run, and a
    # new seed runs.
    shutil.rmtree(tmp_path / "outputs")
    third = spt_run([*SWEEP, "records=results/t", "-m", "seed=13,21,42"], tmp_path)
    assert "skipped 2 job(s)" in third.stderr
    assert len(_results(tmp_path)) == 1
    # Another config is another job.
    other = spt_run([*SWEEP, "records=results/t", "trainer.lr=0.01", "-m", "seed=13"], tmp_path)
    assert "skipped" not in other.stderr


def test_killed_sweep_continues_from_its_checkpoint(tmp_path):
    args = [
        "train", "method=lpt", *TINY, "trainer.max_steps=150", "trainer.eval_every=0",
        "trainer.checkpoint_every=1", "logger=none", "-m", "seed=13,21",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["WANDB_MODE"] = "disabled"
    proc = subprocess.Popen([SPT_RUN, *args], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)  # fmt: skip
    t0 = time.time()
    while not list(tmp_path.glob("outputs/multirun/**/checkpoints/train.pt")):
        assert proc.poll() is None and time.time() - t0 < 300, proc.stderr.read()[-2000:]
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    killed = next(tmp_path.glob("outputs/multirun/**/checkpoints/train.pt")).parent.parent
    assert not (killed / "results.json").exists()

    rerun = spt_run(args, tmp_path)
    assert "continued 1 killed job(s)" in rerun.stderr
    assert "resumed from step" in rerun.stderr
    assert (killed / "results.json").exists()  # finished in its old directory
    assert len(_results(tmp_path)) == 2


def test_a_record_keeps_the_commit_that_ran_it():
    from spt_cli.jobs import code_commit, make_record

    results = {"task": "rte", "status": "completed", "versions": {"commit": "0123456789ab"}}
    # carried later (a skipped job's record in a table sweep): still the run's commit
    assert make_record(results, "fp", [])["commit"] == "0123456789ab"
    # results written before runs noted their commit: the code's commit now
    assert make_record({"task": "rte"}, "fp", [])["commit"] == code_commit()
