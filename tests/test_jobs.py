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


def _other_code(path: Path) -> None:
    """Make a completed run's results.json (or a record) look produced by other code."""
    data = json.loads(path.read_text())
    where = data["versions"] if "versions" in data else data
    where.update(commit="0123456789ab", code="src-000000000000")
    path.write_text(json.dumps(data))


def test_rerun_in_a_pinned_sweep_folder_skips_completed_and_continues_killed(tmp_path):
    args = [*SWEEP, "hydra.sweep.dir=X", "-m", "seed=13,21"]
    spt_run(args, tmp_path)
    done, killed = sorted((tmp_path / "X").glob("*_rte_lpt_16-*"))
    kept = (done / "results.json").read_text()
    stamp = (done / "results.json").stat().st_mtime_ns
    # Killed after its last checkpoint, before it wrote results.json.
    (killed / "results.json").unlink()
    assert (killed / "checkpoints").is_dir()

    rerun = spt_run(args, tmp_path)
    assert "skipped 1 job(s)" in rerun.stderr and "continued 1 killed job(s)" in rerun.stderr
    assert "resumed from step" in rerun.stderr  # from the checkpoint, not from scratch
    job0 = f"job 0 (stage=train {' '.join(args[1:-3])} seed=13)"  # hydra.* are not the job's
    assert f"skip: {job0} completed before at commit " in rerun.stderr
    assert "(same code; reuse=never with another hydra.sweep.dir reruns it)" in rerun.stderr
    assert (done / "results.json").read_text() == kept  # not retrained, not rewritten
    assert (done / "results.json").stat().st_mtime_ns == stamp
    assert json.loads((killed / "results.json").read_text())["status"] == "completed"
    assert not list((tmp_path / "X").glob("*/same_as.json"))  # no job links to itself

    # The job index lost (a new job_index): the folder itself still says what ran there.
    again = spt_run([*args[:-2], "job_index=elsewhere", *args[-2:]], tmp_path)
    assert "skipped 2 job(s)" in again.stderr

    # A result of other code in the job's own folder is neither reused nor overwritten.
    _other_code(done / "results.json")
    kept = (done / "results.json").read_text()
    changed = spt_run(args, tmp_path, check=False)
    assert changed.returncode == 2  # refused before any job runs
    refusal = (
        f"{done.resolve()} holds this job's result at commit 0123456789ab with other code; "
        "reuse=any keeps it"
    )
    assert "error: sweep job 0 (" in changed.stderr and refusal in changed.stderr
    assert (done / "results.json").read_text() == kept
    assert "internal error" not in changed.stderr
    kept_anyway = spt_run([*args[:-2], "reuse=any", *args[-2:]], tmp_path)
    assert "skipped 2 job(s)" in kept_anyway.stderr
    said = "0123456789ab (other code, reused as reuse=any asks; reuse=same_code with another "
    assert said + "hydra.sweep.dir reruns it)" in kept_anyway.stderr
    assert (done / "results.json").read_text() == kept

    # Another config in the same pinned folder: nothing there is overwritten either.
    other = spt_run([*args[:-2], "trainer.lr=0.01", *args[-2:]], tmp_path, check=False)
    assert other.returncode == 2 and "internal error" not in other.stderr
    assert f"{done.resolve()} holds the completed result of another config" in other.stderr
    assert (done / "results.json").read_text() == kept


def test_a_result_of_other_code_is_rerun_unless_reuse_any(tmp_path):
    args = [*SWEEP, "records=results/t", "-m", "seed=13"]
    spt_run(args, tmp_path)
    (old,) = _results(tmp_path)
    (record,) = (tmp_path / "results" / "t").glob("rte/lpt/*.json")
    assert json.loads(record.read_text())["code"].startswith("src-")
    _other_code(old)
    _other_code(record)

    reused = spt_run([*args[:-2], "reuse=any", *args[-2:]], tmp_path)
    said = "0123456789ab (other code, reused as reuse=any asks; reuse=same_code reruns it)"
    assert said in reused.stderr
    assert _results(tmp_path) == [old]

    rerun = spt_run(args, tmp_path)
    assert "skip:" not in rerun.stderr
    assert "rerun: job 0 (stage=train" in rerun.stderr
    assert "completed before at commit 0123456789ab" in rerun.stderr
    assert "not reused: it ran with other code; reuse=any reuses it" in rerun.stderr
    assert len(_results(tmp_path)) == 2  # trained again, beside the old run
    from spt_cli.jobs import code_identity

    assert json.loads(record.read_text())["code"] == code_identity()  # record replaced

    # A table over runs of both commits says so.
    table = spt_run(["table", "runs=outputs/multirun", "logger=none"], tmp_path)
    assert "table: the runs come from 2 commits: 0123456789ab, " in table.stderr


def test_code_identity_follows_the_numeric_code_only(tmp_path):
    from spt_cli.jobs import source_identity

    pkg = tmp_path / "pkg"
    (pkg / "model").mkdir(parents=True)
    (pkg / "tables").mkdir()
    (pkg / "model" / "gates.py").write_text("def gate(x):\n    return x * 2\n")
    (pkg / "cli.py").write_text("print('hi')\n")
    (pkg / "tables" / "render.py").write_text("X = 1\n")
    first = source_identity(pkg)
    assert first.startswith("src-") and len(first) == 16
    # Comments, blank lines and the non-numeric modules leave it alone ...
    (pkg / "model" / "gates.py").write_text("# why\ndef gate(x):\n\n    return x * 2  \n")
    (pkg / "cli.py").write_text("print('bye')\n")
    (pkg / "tables" / "render.py").write_text("X = 2\n")
    assert source_identity(pkg) == first
    # ... a change to numeric code, or a new numeric module, does not.
    (pkg / "model" / "gates.py").write_text("def gate(x):\n    return x * 3\n")
    assert source_identity(pkg) != first
    (pkg / "model" / "gates.py").write_text("def gate(x):\n    return x * 2\n")
    (pkg / "model" / "new.py").write_text("Y = 0\n")
    assert source_identity(pkg) != first


def test_results_of_older_runs_get_the_identity_of_their_commit(tmp_path):
    """Results written before runs noted their code identity: derived from their commit."""
    from spt_cli.jobs import commit_identity, source_identity

    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    pkg = tmp_path / "pkg"
    (pkg / "model").mkdir(parents=True)
    (pkg / "model" / "gates.py").write_text("def gate(x):\n    return x * 2\n")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    then = source_identity(pkg)
    (pkg / "model" / "gates.py").write_text("def gate(x):\n    return x * 3\n")
    assert commit_identity(head, pkg) == then != source_identity(pkg)
    assert commit_identity(head + "+dirty", pkg) is None  # what ran is not in the commit
    assert commit_identity("0123456789ab", pkg) is None  # not in this history


def test_introduced_keys_keep_old_fingerprints() -> None:
    """A key added after records were written leaves their fingerprint alone at the value that
    computes what they computed, and in stages it cannot change; any other value is new."""
    from spt_cli.jobs import fingerprint

    old = {"stage": {"name": "search"}, "seed": 13, "search": {"budget": None}}
    before = dict(old, search={"budget": None, "fallback": "none", "alpha_loss": "mean"})
    assert fingerprint(before) == fingerprint(old)
    changed = dict(old, search={"budget": None, "fallback": "last_k", "alpha_loss": "mean"})
    assert fingerprint(changed) != fingerprint(old)
    # a baseline's search section does nothing: the new default leaves its fingerprint alone
    train = {**changed, "stage": {"name": "train"}}
    assert fingerprint(train) == fingerprint({**old, "stage": {"name": "train"}})


def test_carry_record_keeps_an_older_record_of_the_same_code(tmp_path, monkeypatch):
    """A record without ``code`` (written before runs noted it) is judged by its commit's
    identity, as find_prior judges it: the same code's record is kept, not rewritten."""
    from omegaconf import OmegaConf

    from spt_cli import jobs

    monkeypatch.setattr(jobs, "commit_identity", lambda commit: jobs.code_identity())
    cfg = OmegaConf.create({"records": str(tmp_path / "t"), "reuse": "same_code", "seed": 13})
    fp = jobs.fingerprint(cfg)
    old = {"task": "rte", "method": "lpt", "stage": "train", "shots": 16, "seed": 13,
           "status": "completed", "fingerprint": fp, "commit": "0123456789ab"}  # fmt: skip
    mine = jobs.record_path(tmp_path / "t", old, fp)
    mine.parent.mkdir(parents=True)
    mine.write_text(json.dumps(old))
    elsewhere = tmp_path / "grid.json"  # the same job's record under another records folder
    elsewhere.write_text(json.dumps({**old, "commit": "fedcba987654"}))
    prior = jobs.Prior("completed", record=elsewhere)
    assert jobs.carry_record(cfg, prior, []) is None
    assert json.loads(mine.read_text())["commit"] == "0123456789ab"
    # Under other code (its commit's identity differs) the record is replaced.
    monkeypatch.setattr(jobs, "commit_identity", lambda commit: "src-000000000000")
    assert jobs.carry_record(cfg, prior, []) == mine
    assert json.loads(mine.read_text())["commit"] == "fedcba987654"
