"""Run directories: an exclusive lock per running job, and removal of what a run that failed
before producing anything worth keeping created (never a folder that was there before)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import IO

from spt_cli.errors import ConfigError

# The deepest folder that existed above the run (sweep) directory before the command started,
# for jobs that run in other processes (joblib, submitit) as well as in-process: set by the CLI
# before Hydra creates anything.
BASE_ENV = "SPT_RUN_BASE"
# What makes a failed run's directory worth keeping (a checkpoint to resume, a finished part).
KEEP = ("results.json", "checkpoints", "selected_layers.json", "summary.json", "artifact")


def existing_base(path: Path) -> Path | None:
    """The deepest existing folder above ``path`` (absolute, or relative to the working
    directory): everything below it on the way to ``path`` is what creating ``path`` makes.
    None when ``path`` exists already."""
    target = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if target.exists():
        return None
    while not target.exists():
        target = target.parent
    return target


def note_base(base: Path | None) -> None:
    """Remember, for this process and the jobs it starts, :func:`existing_base` of the run
    (sweep) directory the command is about to create (None: it exists, or is not known)."""
    if base is None:
        os.environ.pop(BASE_ENV, None)
    else:
        os.environ[BASE_ENV] = str(base)


def entries(run_dir: Path) -> frozenset[str]:
    """What ``run_dir`` holds besides the ``.hydra`` folder Hydra writes before a job starts:
    a job takes this before writing anything, to know what it did not create."""
    if not run_dir.is_dir():
        return frozenset()
    return frozenset(p.name for p in run_dir.iterdir() if p.name != ".hydra")


def cleanup_failed_run(run_dir: Path, before: frozenset[str]) -> None:
    """Remove what a failed run created, unless it holds something worth keeping.

    A run directory the command created goes whole, with its empty parents below the deepest
    folder that existed before the command (:func:`note_base`); in a directory that existed
    before (the user's, or an earlier run's) only the entries not in ``before`` go. A folder
    that existed before the command is never removed.
    """
    if not run_dir.exists() or any((run_dir / k).exists() for k in KEEP):
        return
    noted = os.environ.get(BASE_ENV)
    base = Path(noted) if noted else None
    here = run_dir.resolve()
    if base is not None and here != base and here.is_relative_to(base) and not before:
        shutil.rmtree(here, ignore_errors=True)
        parent = here.parent
        while parent != base and parent.is_relative_to(base):
            try:
                parent.rmdir()
            except OSError:  # not empty: another job's directory, or a file put there since
                break
            parent = parent.parent
        return
    for entry in run_dir.iterdir():
        if entry.name in before:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


# Errors of the machine, not of the code: a full disk, a read-only or forbidden path.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def flock_nowait(handle: IO[str], run_dir: Path) -> bool:
    """Take ``handle``'s exclusive lock without waiting: True if taken, False where locks are
    unsupported, ConfigError while another process holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise ConfigError(
            f"run directory {run_dir} is in use by another spt-run (pid {holder}); wait for "
            "it to finish or choose another hydra.run.dir"
        ) from None
    except OSError:  # e.g. ENOLCK on some network filesystems: go on unlocked
        return False
    return True


def lock_run_dir(run_dir: Path) -> IO[str]:
    """Hold an exclusive lock on ``run_dir`` for the job, so that two processes never write
    the same run directory (same hydra.run.dir, or a resume while the run still goes on).

    The lock is an advisory ``flock`` the kernel drops when the process dies, so a killed run
    can be resumed at once.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+", encoding="utf-8")  # held open for the job
    if flock_nowait(handle, run_dir):
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
    return handle


def check_not_in_use(run_dir: Path) -> None:
    """Refuse a run directory another spt-run holds before Hydra writes its config there."""
    lock = run_dir / ".lock"
    if lock.is_file():
        with open(lock, encoding="utf-8") as handle:
            flock_nowait(handle, run_dir)
