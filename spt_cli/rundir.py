"""Run directories: an exclusive lock per running job, and removal of a run that failed before
producing anything worth keeping."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import IO

from spt_cli.errors import ConfigError


def cleanup_failed_run(run_dir: Path) -> None:
    """Remove a run directory that failed before producing anything worth keeping."""
    keep = ("results.json", "checkpoints", "selected_layers.json", "summary.json", "artifact")
    if not run_dir.exists() or any((run_dir / k).exists() for k in keep):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    # Drop the now-empty parents (outputs/<stage>/<task>/...) but never the cwd.
    parent, stop = run_dir.parent, Path.cwd().resolve()
    while parent.resolve() != stop and parent != parent.parent:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


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
