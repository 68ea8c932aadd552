"""Finding runs below folders and globs: run directories, record files and `same_as.json` links.

A rerun sweep leaves, for each job it skipped (or continued elsewhere), a directory holding only
`.hydra/` and `same_as.json` ({"state": ..., "same_as": "<run dir or record>"}). Such a directory
is no run of its own: the pointer is followed (the original is read once, however it is reached)
and only a pointer to something that is gone is reported.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt_cli.jobs import LINK_FILE
from spt_cli.tables.records import (
    NON_RESULT_STAGES,
    RECORD_NAME,
    RunRecord,
    _fill_identity,
    _identity_from_config,
    read_failed,
    read_hydra_config,
    read_hydra_overrides,
    read_record,
    read_results,
)


@dataclass
class _Found:
    """Paths below the patterns, resolved (so a run reached twice is read once)."""

    results: set[Path] = field(default_factory=set)
    failed: set[Path] = field(default_factory=set)
    run_dirs: set[Path] = field(default_factory=set)
    records: set[Path] = field(default_factory=set)
    links: set[Path] = field(default_factory=set)  # same_as.json files

    def add_file(self, path: Path) -> None:
        if path.name == "results.json":
            self.results.add(path.resolve())
        elif path.name == "failed.json":
            self.failed.add(path.resolve())
        elif path.name == LINK_FILE:
            self.links.add(path.resolve())
        elif path.suffix == ".json" and RECORD_NAME.match(path.name):
            self.records.add(path.resolve())

    def add_tree(self, root: Path) -> None:
        if (root / ".hydra" / "config.yaml").is_file():
            self.run_dirs.add(root.resolve())
        for name in ("results.json", "failed.json", LINK_FILE):
            for path in root.rglob(name):
                self.add_file(path)
        for path in root.rglob("*shot-seed*.json"):
            self.add_file(path)
        self.run_dirs.update(p.parent.parent.resolve() for p in root.rglob(".hydra/config.yaml"))

    def add(self, path: Path) -> None:
        if path.is_file():
            self.add_file(path)
        elif path.is_dir():
            self.add_tree(path)


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _link_target(link: Path) -> tuple[str, Path | None]:
    """The path a same_as.json names, and where it is now (None: gone or unreadable). A relative
    path is relative to where the sweep ran: the working directory or an ancestor of the job."""
    try:
        target = str(json.loads(link.read_text(encoding="utf-8"))["same_as"])
    except (OSError, ValueError, KeyError, TypeError):
        return "?", None
    path = Path(target)
    bases = [Path()] if path.is_absolute() else [Path.cwd(), *link.parent.parents]
    for base in bases:
        if (base / path).exists():
            return target, (base / path).resolve()
    return target, None


def _follow_links(found: _Found) -> list[tuple[Path, str]]:
    """Add what each same_as.json points to; returns (job dir, target) for dangling ones."""
    dangling: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    todo = sorted(found.links)
    while todo:  # a target may itself be a skipped job with a link of its own
        link = todo.pop()
        if link in seen:
            continue
        seen.add(link)
        target, where = _link_target(link)
        if where is None:
            dangling.append((link.parent, target))
            continue
        before = set(found.links)
        found.add(where)
        if where.is_dir() and not (where / LINK_FILE).exists():
            found.run_dirs.add(where)  # an original with no result is reported as incomplete
        todo.extend(sorted(found.links - before))
    return dangling


def collect_runs(
    pattern: str | Path | Sequence[str | Path], exclude: Path | None = None
) -> list[RunRecord]:
    """Read every run below folders, run directories, results.json / record files or globs.

    A directory with failed.json (a failed sweep job) is a `failed` run; one with
    `.hydra/config.yaml` but neither file anywhere below it is `incomplete` (killed or still
    running), unless it is a skipped job's `same_as.json` directory, whose original is read
    instead. Record files (`records=DIR`) are runs of their own, at any depth. Directories of the
    `table` and `data` stages, and anything under `exclude` (the table's own output directory),
    are skipped. Sorted by path: the same order on every call.
    """
    patterns = [pattern] if isinstance(pattern, str | Path) else list(pattern)
    found = _Found()
    for pat in map(str, patterns):
        for root in sorted(glob.glob(pat, recursive=True)) if _is_glob(pat) else [pat]:
            found.add(Path(root))
    dangling = _follow_links(found)
    link_dirs = {p.parent for p in found.links}
    excluded = exclude.resolve() if exclude is not None else None
    configs: dict[Path, dict[str, Any] | None] = {d: read_hydra_config(d) for d in found.run_dirs}

    def owner(path: Path) -> Path | None:
        """The nearest enclosing Hydra run directory (supplies a fallback identity)."""
        return next((p for p in path.parents if p in configs), None)

    def skip(path: Path, run_dir: Path | None) -> bool:
        if excluded is not None and (path == excluded or excluded in path.parents):
            return True
        cfg = configs.get(run_dir) if run_dir else None
        return bool(cfg) and _identity_from_config(cfg)["stage"] in NON_RESULT_STAGES

    records: list[RunRecord] = []
    for path in sorted(found.results):
        run_dir = owner(path)
        if not skip(path, run_dir):
            cfg = configs.get(run_dir) if run_dir else None
            overrides = read_hydra_overrides(run_dir) if run_dir else None
            records.append(read_results(path, cfg, overrides))

    for path in sorted(found.records):
        if not skip(path, None):
            records.append(read_record(path))

    result_dirs = {p.parent for p in found.results}
    for path in sorted(found.failed):
        run_dir = owner(path)
        if path.parent in result_dirs or skip(path, run_dir):
            continue
        rec = read_failed(path, configs.get(run_dir) if run_dir else None)
        if rec.stage not in NON_RESULT_STAGES:
            records.append(rec)

    for job_dir, target in dangling:
        if skip(job_dir, job_dir if job_dir in configs else None):
            continue
        rec = RunRecord(
            path=job_dir,
            status="missing",
            reason=f"skipped as a repeat of {target}, which is not there",
            overrides=read_hydra_overrides(job_dir),
        )
        if cfg := configs.get(job_dir):
            _fill_identity(rec, _identity_from_config(cfg))
        records.append(rec)

    done_dirs = result_dirs | {p.parent for p in found.failed}
    for run_dir in sorted(found.run_dirs):
        if run_dir in link_dirs or skip(run_dir, run_dir):
            continue
        if any(d == run_dir or run_dir in d.parents for d in done_dirs):
            continue
        rec = RunRecord(path=run_dir, status="incomplete", reason="no results.json (killed?)")
        cfg = configs[run_dir]
        if cfg is None:
            rec.reason = "no results.json and .hydra/config.yaml unreadable"
        else:
            _fill_identity(rec, _identity_from_config(cfg))
            rec.overrides, rec.config = read_hydra_overrides(run_dir), cfg
        records.append(rec)
    records.sort(key=lambda r: str(r.path))
    return records
