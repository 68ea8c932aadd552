"""``spt-run STAGE [key=value ...] [-m]``: the stage word, then Hydra.

The first word picks the stage; everything after it is handed to Hydra unchanged (plus
``stage=STAGE``), after :func:`spt_cli.preflight.preflight` checked every job. Each job runs in
:func:`run_job`: a locked run directory, a rerun sweep's reuse of earlier runs, the stage, its
record, and every failure turned into one line with an exit code.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import IO

from spt_cli import jobs
from spt_cli.config import GROUPS, STAGES, group_choices, searchpath_override, validate
from spt_cli.errors import ConfigError, RuntimeFailure, SptError
from spt_cli.preflight import preflight, resume_problem, split_overrides
from spt_cli.rundir import (
    ENVIRONMENT_ERRNOS,
    cleanup_failed_run,
    entries,
    existing_base,
    lock_run_dir,
    note_base,
)

_DEBUG = False
_FAILED: list[str] = []
# States of sweep jobs reused in their own (pinned) folder, which holds no same_as.json link.
_REUSED_IN_PLACE: list[str] = []


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
        lines.append(f"  {group:<14} {', '.join(group_choices(group)) or '-'}")
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


def _print_usage() -> None:
    try:
        print(usage())
    except SptError as exc:  # a bad $SPT_CONFIG_PATH
        _fail(str(exc), exc.exit_code)


# -- the Hydra job -----------------------------------------------------------------------------
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
    before: frozenset[str] = frozenset()
    try:
        if multirun:
            job = f"job {hc.job.num} ({' '.join(overrides)})"
            run_dir = _reuse_prior_run(cfg, run_dir, job, overrides)
            if run_dir is None:
                return None
        before = entries(run_dir)  # what this job did not create: a failure leaves it
        lock = lock_run_dir(run_dir)
        owner = True
        if multirun and not cfg.resume:
            # An earlier failure of this job in the same (pinned) folder: it runs again now.
            (run_dir / "failed.json").unlink(missing_ok=True)
        validate(cfg)
        if cfg.resume and (problem := resume_problem(run_dir)):
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
        elif isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
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
            cleanup_failed_run(run_dir, before)
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


def _reuse_prior_run(cfg, run_dir: Path, job: str, overrides: list[str]) -> Path | None:
    """The directory this sweep job should run in: None to skip a job that already completed
    with the same config (and code, unless ``reuse=any``), the old directory (resume=true) of
    a killed one, else ``run_dir``. A pinned sweep folder's finished result is never
    overwritten: a job whose folder holds one that is not reused fails instead."""
    from omegaconf import open_dict

    prior = jobs.find_prior(cfg, run_dir)
    if prior.state is None:
        return run_dir
    made = prior.made
    if prior.state == "occupied":
        raise ConfigError(jobs.occupied_problem(prior, str(cfg.reuse)))
    if prior.state == "stale":
        why = "reuse=never" if cfg.reuse == "never" else "it ran with other code"
        print(f"rerun: {job} completed before {made} ({prior.where}), not reused: {why}; "
              "reuse=any reuses it", file=sys.stderr)  # fmt: skip
        return run_dir
    in_place = prior.run_dir is not None and prior.run_dir == run_dir.resolve()
    if in_place:
        _REUSED_IN_PLACE.append(str(prior.state))
    else:
        jobs.link(run_dir, prior)
    if prior.state == "completed":
        code = "same code" if prior.same_code else "other code, reused as reuse=any asks"
        force = "reuse=never" if prior.same_code else "reuse=same_code"
        # A pinned folder's result is never overwritten: a rerun needs a folder of its own.
        force += " with another hydra.sweep.dir" if in_place else ""
        print(f"skip: {job} completed before {made} ({code}; {force} reruns it): "
              f"{prior.where}", file=sys.stderr)  # fmt: skip
        jobs.carry_record(cfg, prior, overrides)
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
        _print_usage()
        return
    stage, rest = args[0], args[1:]
    if stage not in STAGES:
        _fail(f"unknown stage '{stage}'; choose one of: {', '.join(STAGES)}", 2)
    if any(a in ("-h", "--help") for a in rest):
        _print_usage()
        return
    overrides, flags = split_overrides(rest)
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
    # Before Hydra creates the run (sweep) directory: a failed run removes only what it made.
    note_base(existing_base(out) if out is not None else None)
    _REUSED_IN_PLACE.clear()
    searchpath = searchpath_override()  # $SPT_CONFIG_PATH, checked by the preflight
    sys.argv = [sys.argv[0], *flags, f"stage={stage}", *overrides, *pinned, *searchpath]
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
    states += _REUSED_IN_PLACE
    skipped, resumed = states.count("completed"), states.count("resumable")
    if skipped or resumed:
        print(
            f"sweep: skipped {skipped} job(s) that completed before with the same config, "
            f"continued {resumed} killed job(s) from their checkpoints",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
