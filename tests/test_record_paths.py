"""Folders a run writes besides its run directory (``records=``, ``job_index=``) are checked
by the preflight, before any training, without creating anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spt_cli import preflight as pf
from spt_cli.cli import main
from spt_cli.errors import ConfigError

BASE = ["model=tiny-bert", "dataset=rte", "logger=none", "trainer.max_steps=1"]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def blocker(in_tmp: Path) -> Path:
    """A regular file where a folder is expected."""
    path = in_tmp / "file"
    path.write_text("not a folder\n")
    return path


def test_records_under_a_file_is_refused_before_anything_is_written(blocker, in_tmp, capsys):
    before = _tree(in_tmp)
    with pytest.raises(SystemExit) as exc:
        main(["train", *BASE, f"records={blocker}/y"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert err == (
        f"error: records={blocker}/y: {blocker} is not a directory; choose a writable folder"
    )
    assert "internal error" not in err and "hydra.run.dir" not in err
    assert _tree(in_tmp) == before  # no run directory, no records folder


def test_records_naming_a_file_is_refused(blocker):
    with pytest.raises(ConfigError, match=r"^records=.*file: .*file is not a directory;"):
        pf.preflight("train", [*BASE, f"records={blocker}"])


def test_records_in_a_read_only_folder_is_refused(in_tmp, monkeypatch):
    locked = in_tmp / "locked"
    locked.mkdir()
    real_access = os.access
    # os.access says yes to root for any folder, so the read-only folder is simulated.
    monkeypatch.setattr(pf.os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    with pytest.raises(ConfigError) as exc:
        pf.preflight("train", [*BASE, "records=locked/new/records"])
    assert str(exc.value) == (
        f"records=locked/new/records: {locked} is not writable; choose a writable folder"
    )
    assert not (locked / "new").exists()


def test_job_index_under_a_file_is_refused_in_a_sweep(blocker, in_tmp):
    with pytest.raises(ConfigError) as exc:
        pf.preflight(
            "train",
            [*BASE, "seed=13,21", f"job_index={blocker}/jobs", "hydra.sweep.dir=sweep"],
            multirun=True,
        )
    msg = str(exc.value)
    assert f"job_index={blocker}/jobs: {blocker} is not a directory" in msg
    assert msg.startswith("sweep job 0 ") and "\n" not in msg
    assert not (in_tmp / "sweep").exists()


def test_writable_new_folders_pass_and_are_not_created(in_tmp):
    pf.preflight(
        "train",
        [*BASE, "seed=13,21", "records=a/b/records", "job_index=c/jobs", "hydra.sweep.dir=s"],
        multirun=True,
    )
    assert _tree(in_tmp) == []


def test_null_records_is_not_checked(in_tmp):
    pf.preflight("train", [*BASE, "records=null"])
