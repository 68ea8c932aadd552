"""``spt-run STAGE [key=value ...] [-m]``: the stage word, then Hydra.

The first word picks the stage; everything after it is handed to Hydra unchanged (plus
``stage=STAGE``). Before Hydra creates a run directory the overrides are checked here, so a
typo costs a one-line error with the valid choices, exit code 2, and nothing written.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import time
from pathlib import Path
from typing import IO

from spt_cli import jobs
from spt_cli.config import GROUPS, STAGES, group_choices, validate
from spt_cli.errors import ConfigError, RuntimeFailure, SptError

_DEBUG = False
_FAILED: list[str] = []
_STAGE_OVERRIDES: list[str] = []


def _fail(message: str, code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def usage() -> str:
    """``spt-run --help``: stages, config groups with their choices, common keys."""
    lines = [
        "usage: spt-run STAGE [key=value ...] [-m] [--debug]",
        "",
        "Selective Prompt Tuning (SPT), SPT-DARTS and prompt-tuning baselines.",
        "",
        "stages:",
    ]
    lines += [f"  {name:<8} {desc}" for name, desc in STAGES.items()]
    lines += ["", "config groups (group=choice):"]
    for group in GROUPS:
        lines.append(f"  {group:<10} {', '.join(group_choices(group)) or '-'}")
    lines += [
        "",
        "common keys: shots=16 (few-shot K; 0 = full data)  seed=13  data.root=DIR",
        "  data.max_seq_length=128  trainer.batch_size  trainer.lr  trainer.max_steps",
        "  trainer.eval_every  method.num_tokens (p)  search.order=first|second",
        "  search.budget=K  logger=wandb|none  resume=true hydra.run.dir=RUN_DIR",
        "",
        "examples:",
        "  spt-run data dataset=rte shots=16",
        "  spt-run search dataset=rte shots=16",
        "  spt-run search dataset=rte shots=16 -m seed=13,21,42",
        "  spt-run train method=lpt dataset=rte shots=16",
        "  spt-run table runs=outputs/multirun",
        "",
        "Hydra flags (--cfg job, --info, -m) pass through; --debug keeps Python tracebacks.",
    ]
    return "\n".join(lines)


# -- checks before Hydra -----------------------------------------------------------------------
def _split_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """Separate key=value overrides from Hydra flags (``-m``, ``--cfg job``, ...)."""
    overrides, flags = [], []
    takes_value = {
        "--cfg",
        "-c",
        "--package",
        "-p",
        "--info",
        "--config-name",
        "-cn",
        "--config-path",
        "-cp",
        "--config-dir",
        "-cd",
        "--experimental-rerun",
    }
    it = iter(args)
    for a in it:
        if a.startswith("-"):
            flags.append(a)
            if a in takes_value and a != "--info":
                nxt = next(it, None)
                if nxt is not None:
                    flags.append(nxt)
        else:
            overrides.append(a)
    return overrides, flags


def _sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Every job of the command: the cartesian product of its sweeps (Hydra's basic sweeper
    order), each job as plain ``key=value`` overrides."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    choices = []
    for text in overrides:
        try:
            ov = parser.parse_override(text)
        except Exception as exc:  # noqa: BLE001 - Hydra's grammar errors are multi-line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"cannot parse override '{text}': {first}") from exc
        if ov.is_sweep_override():
            values = list(ov.sweep_string_iterator())
            if not values:
                raise ConfigError(f"override '{text}' sweeps over no value")
            choices.append([f"{ov.get_key_element()}={v}" for v in values])
        else:
            choices.append([text])
    return [list(job) for job in itertools.product(*choices)]


def _check_group_choices(overrides: list[str]) -> None:
    """Unknown group choices get the list of valid ones (Hydra's message spans many lines)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for text in overrides:
        ov = parser.parse_override(text)
        key = ov.key_or_group
        if key not in GROUPS or ov.is_delete():
            continue
        choices = group_choices(key)
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.value()]
        for v in values:
            if key == "experiment" and (v is None or str(v) == "null"):
                continue
            if str(v) not in choices:
                raise ConfigError(f"unknown {key} '{v}'; choose one of: {', '.join(choices)}")


def _compose_message(exc: Exception) -> str:
    """One line from Hydra/OmegaConf composition errors."""
    text = str(exc).strip()
    if "is not in struct" in text or "Could not override" in text:
        key = text.split("'")[1] if "'" in text else text
        return (
            f"unknown config key '{key}'; check the spelling (spt-run --help lists the keys) "
            f"or add a new key with +{key}=VALUE"
        )
    return text.splitlines()[0] if text else type(exc).__name__


def _resume_problem(run_dir: Path) -> str | None:
    """Why ``resume=true`` cannot continue in ``run_dir`` (None when it can)."""
    if (run_dir / "checkpoints").is_dir():
        return None
    return (
        f"resume=true but {run_dir} has no checkpoint; pass hydra.run.dir=<the run directory "
        "to continue>, or drop resume=true"
    )


def _check_output_dir(path: Path) -> None:
    """The directory Hydra is about to create must be creatable: Hydra's own failure there is
    a traceback, and nothing has been written yet."""
    target = path if path.is_absolute() else Path.cwd() / path
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        problem = f"{existing} is not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    else:
        return
    raise RuntimeFailure(
        f"cannot create the run directory {path}: {problem}; choose a writable "
        "hydra.run.dir (hydra.sweep.dir with -m)"
    )


def _output_dir(cfg, multirun: bool) -> Path | None:
    """The run (or sweep) directory of the composed config; None if it needs Hydra's runtime."""
    try:
        return Path(str(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir))
    except Exception:  # noqa: BLE001 - interpolations only Hydra's runtime can resolve
        return None


def _compose(stage: str, job: list[str]):
    """The composed config of one job (Hydra's own keys: only the output directories, since
    launcher options need plugins that plain composition does not load)."""
    from hydra import compose

    plain = [o for o in job if not o.lstrip("+~").startswith("hydra")]
    dirs = [o for o in job if o.split("=", 1)[0] in ("hydra.run.dir", "hydra.sweep.dir")]
    try:
        return compose(
            config_name="config",
            overrides=[f"stage={stage}", *plain, *dirs],
            return_hydra_config=True,
        )
    except SptError:
        raise
    except Exception as exc:  # noqa: BLE001 - any composition failure is the user's input
        raise ConfigError(_compose_message(exc)) from exc


def _sweeper_params(cfg, overrides: list[str]) -> list[str]:
    """``hydra.sweeper.params`` sweeps (set by an experiment) for keys the command line does
    not set itself: Hydra's basic sweeper adds those to every job."""
    params = cfg.hydra.sweeper.get("params") or {}
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    return [f"{k}={v}" for k, v in params.items() if k not in given]


def preflight(stage: str, overrides: list[str], multirun: bool = False) -> Path | None:
    """Compose every job of the command and validate it, before any file is written: values,
    the output directory, and ``resume=true``'s checkpoint. A sweep with one bad job fails
    here, not after its good jobs ran.

    Returns the run directory (the sweep directory with ``multirun``) where it resolves."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    _check_group_choices(overrides)
    jobs = _sweep_jobs(overrides) if multirun else [overrides]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="spt_cli.conf", version_base="1.3"):
            cfg = _compose(stage, jobs[0])
            if multirun:
                jobs = _sweep_jobs(overrides + _sweeper_params(cfg, overrides))
            for i, job in enumerate(jobs):
                job_cfg = cfg if i == 0 else _compose(stage, job)
                try:
                    validate(job_cfg)
                except ConfigError as exc:
                    if len(jobs) == 1:
                        raise
                    raise ConfigError(f"sweep job {i} ({' '.join(job)}): {exc}") from None
    finally:
        GlobalHydra.instance().clear()
    out = _output_dir(cfg, multirun)
    if out is None:
        return None
    _check_output_dir(out)
    if not multirun:
        _check_not_in_use(out)
    if cfg.resume and not multirun:
        if not any(o.startswith("hydra.run.dir=") for o in overrides):
            raise ConfigError(
                "resume=true needs hydra.run.dir=<the run directory to continue> "
                "(a new run directory has no checkpoint)"
            )
        if problem := _resume_problem(out):
            raise ConfigError(problem)
    return out


# -- the Hydra job -----------------------------------------------------------------------------
def _cleanup_failed_run(run_dir: Path) -> None:
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
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _flock(handle: IO[str], run_dir: Path) -> bool:
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


def _lock_run_dir(run_dir: Path) -> IO[str]:
    """Hold an exclusive lock on ``run_dir`` for the job, so that two processes never write
    the same run directory (same hydra.run.dir, or a resume while the run still goes on).

    The lock is an advisory ``flock`` the kernel drops when the process dies, so a killed run
    can be resumed at once.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+", encoding="utf-8")  # held open for the job
    if _flock(handle, run_dir):
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
    return handle


def _check_not_in_use(run_dir: Path) -> None:
    """Refuse a run directory another spt-run holds before Hydra writes its config there."""
    lock = run_dir / ".lock"
    if lock.is_file():
        with open(lock, encoding="utf-8") as handle:
            _flock(handle, run_dir)


def run_job(cfg) -> float | None:
    """Run one composed configuration (one job of a multirun)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from spt_cli.files import write_json
    from spt_cli.stages import run_stage

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    if cfg.trainer.num_threads:
        import torch

        torch.set_num_threads(int(cfg.trainer.num_threads))
    lock: IO[str] | None = None
    owner = False  # False while another process may own run_dir: never clean it up then
    try:
        if multirun:
            run_dir = _reuse_prior_run(cfg, run_dir, f"job {hc.job.num} ({' '.join(overrides)})")
            if run_dir is None:
                return None
        lock = _lock_run_dir(run_dir)
        owner = True
        validate(cfg)
        if cfg.resume and (problem := _resume_problem(run_dir)):
            raise ConfigError(problem)
        if multirun:
            jobs.remember(cfg, run_dir)
        value = run_stage(str(cfg.stage.name), cfg, run_dir, overrides)
        _record(cfg, run_dir, overrides)
        return value
    except (SptError, KeyboardInterrupt, Exception) as exc:
        if (_DEBUG or cfg.debug) and not isinstance(exc, KeyboardInterrupt):
            raise  # --debug, debug=true, HYDRA_FULL_ERROR=1: the traceback, for developers
        if isinstance(exc, KeyboardInterrupt):
            message, code = "interrupted", 130
        elif isinstance(exc, SptError):
            message, code = str(exc), exc.exit_code
        elif isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:
            where = f" {exc.filename}" if exc.filename else ""
            message = (
                f"cannot write{where}: {exc.strerror}; free disk space or choose a writable "
                "hydra.run.dir"
            )
            code = RuntimeFailure.exit_code
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            message = f"internal error {type(exc).__name__}: {first} (rerun with --debug)"
            code = 1
        # 130 / 143: Ctrl-C or SIGTERM. The run keeps its checkpoint, and a sweep stops
        # instead of starting its next job (a scheduler's SIGKILL follows its SIGTERM).
        stopped = code in (130, 143)
        if owner and not cfg.resume and not stopped:
            _cleanup_failed_run(run_dir)
        if multirun and not stopped:
            # A sweep goes on with its other jobs; this one is recorded as failed for `table`.
            print(f"error: job {hc.job.num} ({' '.join(overrides)}): {message}", file=sys.stderr)
            _FAILED.append(f"{hc.job.num}: {message}")
            try:
                if owner:
                    write_json(
                        run_dir / "failed.json",
                        {"status": "failed", "error": message, "overrides": overrides},
                    )
            except SptError:
                pass
            return None
        _fail(message, code)
    finally:
        if lock is not None:
            lock.close()
    return None


def _reuse_prior_run(cfg, run_dir: Path, job: str) -> Path | None:
    """The directory this sweep job should run in: None to skip a job that already completed
    with the same config, the old directory (resume=true) of a killed one, else ``run_dir``."""
    from omegaconf import open_dict

    prior = jobs.find_prior(cfg, run_dir)
    if prior.state is None:
        return run_dir
    jobs.link(run_dir, prior)
    if prior.state == "completed":
        print(f"skip: {job} completed before: {prior.run_dir or prior.record}", file=sys.stderr)
        return None
    print(f"continue: {job} from the checkpoint in {prior.run_dir}", file=sys.stderr)
    with open_dict(cfg):
        cfg.resume = True
    return prior.run_dir


def _record(cfg, run_dir: Path, overrides: list[str]) -> None:
    """The compact record of a completed run, when ``records`` names a folder."""
    import json

    path = run_dir / "results.json"
    if cfg.records and path.exists():
        results = json.loads(path.read_text(encoding="utf-8"))
        if results.get("status") == "completed":
            jobs.write_record(cfg, results, overrides)


def _hydra_entry() -> None:
    import hydra

    hydra.main(config_path="pkg://spt_cli.conf", config_name="config", version_base="1.3")(
        run_job
    )()


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``spt-run``."""
    global _DEBUG
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        args.remove("--debug")
        _DEBUG = True
    _DEBUG = _DEBUG or os.environ.get("HYDRA_FULL_ERROR") == "1"
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return
    stage, rest = args[0], args[1:]
    if stage not in STAGES:
        _fail(f"unknown stage '{stage}'; choose one of: {', '.join(STAGES)}", 2)
    if any(a in ("-h", "--help") for a in rest):
        print(usage())
        return
    overrides, flags = _split_overrides(rest)
    if any(o.split("=", 1)[0] == "stage" for o in overrides):
        _fail("give the stage as the first word (spt-run STAGE ...), not stage=...", 2)
    multirun = any(f in ("-m", "--multirun") for f in flags)
    try:
        out = preflight(stage, overrides, multirun=multirun)
    except SptError as exc:
        if _DEBUG:
            raise
        _fail(str(exc), exc.exit_code)
    if _DEBUG:
        os.environ["HYDRA_FULL_ERROR"] = "1"
    pinned = []
    explicit_sweep_dir = any(o.startswith("hydra.sweep.dir=") for o in overrides)
    if multirun and out is not None and not explicit_sweep_dir and "'" not in str(out):
        # Hydra resolves the default ${now:...} sweep dir itself; pin the one preflight
        # resolved, to find the failed.json of jobs that ran in other processes afterwards.
        pinned = [f"hydra.sweep.dir='{out}'"]
    sys.argv = [sys.argv[0], *flags, f"stage={stage}", *overrides, *pinned]
    started = time.time()
    _hydra_entry()
    if multirun and out is not None:
        _report_reused(out, since=started)
    failed = list(_FAILED)
    if multirun and out is not None and not failed:
        # Launchers that run jobs in other processes (joblib, submitit) do not fill _FAILED.
        failed = _failed_jobs(out, since=started)
    if failed:
        # Each job's full message is in its failed.json (and was printed as it failed); the
        # closing line keeps a short form of each so it stays readable for long sweeps.
        short = [f if len(f) <= 120 else f[:117] + "..." for f in failed]
        _fail(f"{len(failed)} job(s) of the sweep failed: " + "; ".join(short), 1)


def _failed_jobs(sweep_dir: Path, since: float) -> list[str]:
    """``<job dir>: <error>`` for each failed.json this sweep wrote below ``sweep_dir``."""
    import json

    out = []
    for path in sorted(sweep_dir.glob("*/failed.json")):
        try:
            if path.stat().st_mtime < since - 1:  # a previous sweep's, in a reused sweep dir
                continue
            error = json.loads(path.read_text(encoding="utf-8")).get("error", "?")
        except (OSError, ValueError):
            error = "unreadable failed.json"
        out.append(f"{path.parent.name}: {error}")
    return out


def _report_reused(sweep_dir: Path, since: float) -> None:
    """One line saying how many jobs of the sweep were skipped or continued (a rerun sweep)."""
    import json

    states: list[str] = []
    for path in sweep_dir.glob(f"*/{jobs.LINK_FILE}"):
        try:
            if path.stat().st_mtime >= since - 1:
                states.append(json.loads(path.read_text(encoding="utf-8"))["state"])
        except (OSError, ValueError, KeyError):
            continue
    skipped, resumed = states.count("completed"), states.count("resumable")
    if skipped or resumed:
        print(
            f"sweep: skipped {skipped} job(s) that completed before with the same config, "
            f"continued {resumed} killed job(s) from their checkpoints",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
