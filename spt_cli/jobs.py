"""Resumable sweeps and compact records.

A job's *fingerprint* hashes its composed config, leaving out what cannot change its numbers
(Hydra's own settings, logging, resume flags, where records go). A sweep remembers every job it
starts in ``job_index`` (fingerprint -> run directory); rerunning the sweep command skips a job
whose run completed with the same fingerprint, or whose compact record exists, and continues a
killed job in its old run directory from its checkpoint.

A *record* is a small JSON copy of a completed run's results (config essentials, metrics,
selected layers and gates, parameters, wall time, commit) written under ``records`` when that
key is set: one file per run, meant to be committed, from which ``spt-run table`` rebuilds
tables without rerunning anything.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from spt_cli.config import to_plain
from spt_cli.files import write_json

# Top-level keys that never change a run's numbers.
NOT_FINGERPRINTED = (
    "hydra", "resume", "debug", "logger", "records", "job_index", "runs", "lower_cache_dir",
    "table",
)  # fmt: skip
RECORD_FORMAT = "spt-cli-record/1"
LINK_FILE = "same_as.json"


def fingerprint(cfg: DictConfig) -> str:
    """12 hex digits identifying what a job computes (its config without bookkeeping keys)."""
    plain = {k: v for k, v in to_plain(cfg).items() if k not in NOT_FINGERPRINTED}
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@lru_cache(maxsize=1)
def code_commit() -> str | None:
    """The git commit of the installed spt_cli checkout (``+dirty`` with local changes)."""
    where = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


# -- records -----------------------------------------------------------------------------------
def record_path(records: Path, results: dict[str, Any], fp: str) -> Path:
    """``<records>/<task>/<method>/<stage>-<shots>shot-seed<seed>-<fingerprint>.json``."""
    name = f"{results['stage']}-{results['shots']}shot-seed{results['seed']}-{fp}.json"
    return records / str(results["task"]) / str(results["method"]) / name


def make_record(results: dict[str, Any], fp: str, overrides: list[str]) -> dict[str, Any]:
    """The compact form of a completed run's ``results.json``: same keys for what tables
    read, plus the config sections that set the numbers and the job's overrides."""
    config = results.get("config") or {}
    keep = ("task", "method", "stage", "model", "shots", "seed", "status", "main_metric",
            "head", "dev", "test", "majority_baseline", "selected_layers", "gate_probs",
            "prompt_layers", "best_step", "steps", "search_diagnostics", "wall_time_s",
            "degenerate", "selection")  # fmt: skip
    # The commit that ran it (a record carried later, for a skipped job, keeps it); results
    # written before runs noted their commit fall back on the code's commit now.
    commit = (results.get("versions") or {}).get("commit") or code_commit()
    record = {"format": RECORD_FORMAT, "fingerprint": fp, "commit": commit}
    record.update({k: results[k] for k in keep if k in results})
    params = results.get("parameters") or {}
    counts = ("trainable", "backbone", "percent")
    record["parameters"] = {k: params[k] for k in counts if k in params}
    record["overrides"] = list(overrides)
    sections = ("method", "trainer", "search", "data")
    record["config"] = {k: config[k] for k in sections if k in config}
    return record


def write_record(cfg: DictConfig, results: dict[str, Any], overrides: list[str]) -> Path | None:
    """Write the run's record under ``cfg.records`` (nothing when that key is null)."""
    if not cfg.records:
        return None
    fp = fingerprint(cfg)
    path = record_path(Path(str(cfg.records)), results, fp)
    write_json(path, make_record(results, fp, overrides))
    return path


def find_record(records: Path, fp: str) -> Path | None:
    """A completed record with fingerprint ``fp`` below ``records``."""
    for path in sorted(records.glob(f"*/*/*-{fp}.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if data.get("fingerprint") == fp and data.get("status") == "completed":
            return path
    return None


# -- the job index -----------------------------------------------------------------------------
@dataclass
class Prior:
    """What an earlier run of the same job left: ``completed`` (skip it), ``resumable`` (a
    checkpoint to continue from) or nothing."""

    state: str | None = None
    run_dir: Path | None = None
    record: Path | None = None


def _completed(run_dir: Path) -> bool:
    try:
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return results.get("status") == "completed"


def find_prior(cfg: DictConfig, run_dir: Path) -> Prior:
    """The earlier run of this job (same fingerprint) that a rerun sweep should reuse."""
    fp = fingerprint(cfg)
    if cfg.records and (rec := find_record(Path(str(cfg.records)), fp)):
        return Prior("completed", record=rec)
    entry = Path(str(cfg.job_index)) / f"{fp}.json"
    try:
        old = Path(json.loads(entry.read_text(encoding="utf-8"))["run_dir"])
    except (OSError, ValueError, KeyError):
        return Prior()
    if old.resolve() == run_dir.resolve() or not old.is_dir():
        return Prior()
    if _completed(old):
        return Prior("completed", run_dir=old)
    if (old / "checkpoints").is_dir() and not (old / "failed.json").exists():
        return Prior("resumable", run_dir=old)
    return Prior()


def remember(cfg: DictConfig, run_dir: Path) -> None:
    """Note in the job index that this job runs in ``run_dir``."""
    entry = Path(str(cfg.job_index)) / f"{fingerprint(cfg)}.json"
    write_json(entry, {"run_dir": str(run_dir.resolve())})


def carry_record(cfg: DictConfig, prior: Prior, overrides: list[str]) -> Path | None:
    """A skipped job's record in ``cfg.records`` too, when it completed under another records
    folder (a grid's runs reused by a table sweep); nothing when it is there already."""
    if not cfg.records or prior.state != "completed":
        return None
    fp = fingerprint(cfg)
    if find_record(Path(str(cfg.records)), fp):
        return None
    if prior.record is not None:
        record = json.loads(prior.record.read_text(encoding="utf-8"))
        path = record_path(Path(str(cfg.records)), record, fp)
        write_json(path, record)
        return path
    assert prior.run_dir is not None
    results = json.loads((prior.run_dir / "results.json").read_text(encoding="utf-8"))
    return write_record(cfg, results, overrides)


def link(run_dir: Path, prior: Prior) -> None:
    """Leave a pointer in the new (unused) job directory to where the job's result lives."""
    target = prior.run_dir or prior.record
    write_json(run_dir / LINK_FILE, {"state": prior.state, "same_as": str(target)})
