"""Checks before Hydra runs anything: every job of a command is composed and validated, the
output directory must be creatable, ``resume=true`` must find a checkpoint. A typo costs a
one-line error with the valid choices, exit code 2, and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from spt_cli.config import GROUPS, group_choices, searchpath_override, validate
from spt_cli.errors import ConfigError, RuntimeFailure, SptError
from spt_cli.jobs import find_prior, occupied_problem
from spt_cli.rundir import check_not_in_use


def split_overrides(args: list[str]) -> tuple[list[str], list[str]]:
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


def resume_problem(run_dir: Path) -> str | None:
    """Why ``resume=true`` cannot continue in ``run_dir`` (None when it can)."""
    if (run_dir / "checkpoints").is_dir():
        return None
    return (
        f"resume=true but {run_dir} has no checkpoint; pass hydra.run.dir=<the run directory "
        "to continue>, or drop resume=true"
    )


def folder_problem(path: Path) -> str | None:
    """Why a folder at ``path`` cannot be created or written (None when it can), found without
    creating anything: no component may be a file, and the nearest existing ancestor (or the
    folder itself) must be a writable directory."""
    target = path if path.is_absolute() else Path.cwd() / path
    existing = target
    # exists() is False below a file too (NotADirectoryError), so this stops at the file.
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def _check_output_dir(path: Path) -> None:
    """The directory Hydra is about to create must be creatable: Hydra's own failure there is
    a traceback, and nothing has been written yet."""
    problem = folder_problem(path)
    if problem is None:
        return
    raise RuntimeFailure(
        f"cannot create the run directory {path}: {problem}; choose a writable "
        "hydra.run.dir (hydra.sweep.dir with -m)"
    )


def check_folder_keys(cfg, multirun: bool) -> None:
    """The folders a run writes besides its run directory (``records``; ``job_index`` in a
    sweep; ``controls.records`` for controls) must take files: found now, not after training.
    A one-line ConfigError names the key as the user set it."""
    keys = ["records"]
    if multirun:
        keys.append("job_index")  # only sweeps note their jobs there
    if str(cfg.stage.name) == "controls":
        keys.append("controls.records")
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value is None or str(value) == "":
            continue  # null: that output is off
        if problem := folder_problem(Path(str(value))):
            raise ConfigError(f"{key}={value}: {problem}; choose a writable folder")


def _output_dir(cfg, multirun: bool) -> Path | None:
    """The run (or sweep) directory of the composed config; None if it needs Hydra's runtime."""
    try:
        return Path(str(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir))
    except Exception:  # noqa: BLE001 - interpolations only Hydra's runtime can resolve
        return None


def _compose(stage: str, job: list[str]):
    """The composed config of one job (Hydra's own keys: only the output directories, since
    launcher options need plugins that plain composition does not load, and the
    ``$SPT_CONFIG_PATH`` folders)."""
    from hydra import compose

    plain = [o for o in job if not o.lstrip("+~").startswith("hydra")]
    dirs = [o for o in job if o.split("=", 1)[0] in ("hydra.run.dir", "hydra.sweep.dir")]
    try:
        return compose(
            config_name="config",
            overrides=[f"stage={stage}", *plain, *dirs, *searchpath_override()],
            return_hydra_config=True,
        )
    except SptError:
        raise
    except Exception as exc:  # noqa: BLE001 - any composition failure is the user's input
        raise ConfigError(_compose_message(exc)) from exc


def _occupied(cfg, num: int) -> str | None:
    """Why sweep job ``num`` cannot run in its folder of a pinned sweep folder (one holding a
    finished result the rerun would not reuse), found before Hydra writes its config there;
    the job checks again as it starts."""
    try:
        with open_dict(cfg):
            cfg.hydra.job.num = num
        job_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    except Exception:  # noqa: BLE001 - interpolations only Hydra's runtime can resolve
        return None
    if not job_dir.is_dir():
        return None
    job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    prior = find_prior(job_cfg, job_dir)
    return occupied_problem(prior, str(cfg.reuse)) if prior.state == "occupied" else None


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
                    check_folder_keys(job_cfg, multirun)
                except ConfigError as exc:
                    if len(jobs) == 1:
                        raise
                    raise ConfigError(f"sweep job {i} ({' '.join(job)}): {exc}") from None
                if multirun and (problem := _occupied(job_cfg, i)):
                    raise ConfigError(f"sweep job {i} ({' '.join(job)}): {problem}")
    finally:
        GlobalHydra.instance().clear()
    out = _output_dir(cfg, multirun)
    if out is None:
        return None
    _check_output_dir(out)
    if not multirun:
        check_not_in_use(out)
    if cfg.resume and not multirun:
        if not any(o.startswith("hydra.run.dir=") for o in overrides):
            raise ConfigError(
                "resume=true needs hydra.run.dir=<the run directory to continue> "
                "(a new run directory has no checkpoint)"
            )
        if problem := resume_problem(out):
            raise ConfigError(problem)
    return out
