"""`spt-run table`: aggregate run directories into paper-style tables and a layer figure.

Reads every run's `results.json` (schema in docs/architecture.md) below a multirun directory
or a glob, the `failed.json` of failed sweep jobs, and Hydra run directories that wrote neither
(killed or still running). Rows
are methods, columns tasks + Avg; a cell is the mean ± sample std over seeds of the task's main
test metric x100. Nothing is dropped silently: cells averaged over fewer seeds than their
column are marked, and failed, missing and duplicate runs are listed under each table.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import re
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt_cli.errors import ConfigError

# Paper order (LPT / SPT tables): baselines first, SPT last; then anything else alphabetically.
METHOD_ORDER = (
    "finetune",
    "prompt_tuning",
    "deep_prompt",
    "ptuning_v2",
    "lpt",
    "fixed_layers",
    "random_layers",
    "spt",
)
TASK_ORDER = ("sst2", "mr", "mpqa", "subj", "trec", "mnli", "mrpc", "qnli", "qqp", "rte")
TASK_LABELS = {
    "sst2": "SST-2",
    "sst5": "SST-5",
    "mr": "MR",
    "cr": "CR",
    "mpqa": "MPQA",
    "subj": "Subj",
    "trec": "TREC",
    "mnli": "MNLI",
    "mrpc": "MRPC",
    "qnli": "QNLI",
    "qqp": "QQP",
    "rte": "RTE",
    "snli": "SNLI",
    "cola": "CoLA",
    "stsb": "STS-B",
    "boolq": "BoolQ",
    "cb": "CB",
    "copa": "COPA",
    "wic": "WiC",
    "wsc": "WSC",
    "multirc": "MultiRC",
    "record": "ReCoRD",
}
# Which result to keep when one (model, shots, task, method, seed) was run more than once:
# the retrained model is the reported one for SPT; a plain re-evaluation ranks below training.
STAGE_RANK = {"retrain": 0, "train": 1, "search": 2, "eval": 3}
# Stages whose run directories hold no per-task result (skipped, never reported as failed).
NON_RESULT_STAGES = {"table", "data"}
MAJORITY = "Majority"
MISSING_CELL = "–"


@dataclass
class RunRecord:
    """One run: its identity, outcome and, when completed, its headline numbers."""

    path: Path
    task: str | None = None
    method: str | None = None
    model: str | None = None
    shots: int | None = None
    seed: int | None = None
    stage: str | None = None
    status: str = "missing"  # "completed", a run's own failure status, "incomplete", "unreadable"
    reason: str | None = None  # why a non-completed run failed, one line
    main_metric: str | None = None
    test: float | None = None  # main metric on the test split, unscaled
    majority: float | None = None  # majority-class baseline, same metric and split
    trainable: int | None = None
    selected_layers: list[int] | None = None
    gate_probs: dict[int, float] | None = None

    @property
    def completed(self) -> bool:
        """Finished with a test number: the only runs that are averaged."""
        return self.status == "completed" and self.test is not None

    @property
    def search_only(self) -> bool:
        """A finished `search retrain=false`: selected layers but, by design, no test number."""
        return self.status == "completed" and self.test is None and self.stage == "search"

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.model, self.shots, self.task, self.method, self.seed)

    @property
    def where(self) -> str:
        """The run directory, relative to the working directory when below it."""
        try:
            return str(self.path.relative_to(Path.cwd()))
        except ValueError:
            return str(self.path)

    def ident(self) -> str:
        """Short human-readable identity, e.g. `spt / rte / seed 13`."""
        seed = "?" if self.seed is None else self.seed
        return f"{self.method or '?'} / {self.task or '?'} / seed {seed}"


@dataclass
class Cell:
    """Aggregate of one (method, task) cell, unscaled."""

    values: list[float]
    seeds: list[int]
    expected: int  # distinct seeds run in this column (any method, completed or not)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None


@dataclass
class GroupTable:
    """One table per (model, shots) group; `notes` lists everything not averaged."""

    model: str | None
    shots: int | None
    methods: list[str]
    tasks: list[str]
    metrics: dict[str, str]  # task -> main metric name
    cells: dict[tuple[str, str], Cell]  # (method, task) -> cell; absent = no completed run
    params: dict[str, float]  # method -> mean trainable parameter count
    majority: dict[str, float]  # task -> mean majority-class baseline
    failed: list[RunRecord] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    duplicates: list[RunRecord] = field(default_factory=list)
    search_only: list[RunRecord] = field(default_factory=list)
    records: list[RunRecord] = field(default_factory=list)  # one per seed, after de-duplication

    def average(self, method: str) -> tuple[float | None, int]:
        """Mean of the method's cell means over the tasks it has, and how many tasks that is."""
        means = [self.cells[(method, t)].mean for t in self.tasks if (method, t) in self.cells]
        return (statistics.fmean(means) if means else None), len(means)

    @property
    def title(self) -> str:
        model = self.model or "unknown model"
        if self.shots is None:
            setting = "unknown data setting"
        elif self.shots > 0:
            setting = f"{self.shots}-shot"
        else:
            setting = "full data"
        return f"{model} · {setting}"


@dataclass
class Table:
    """The whole aggregation: one `GroupTable` per (model, shots) setting, in a fixed order,
    plus the runs whose task or method could not be read (listed, never averaged)."""

    groups: list[GroupTable]
    records: list[RunRecord]
    unattributed: list[RunRecord] = field(default_factory=list)


# ----------------------------------------------------------------------------- collection


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _task_key(task: str) -> str:
    return task.lower().replace("-", "").replace("_", "")


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _metric(split: Any, name: str | None) -> float | None:
    """The named metric of a split dict; for several test sets ({"matched": {...}, ...}) the
    first one (MNLI matched comes first), since a table cell holds one number."""
    if not isinstance(split, dict) or not name:
        return None
    if name in split:
        return _finite(split[name])
    for sub in split.values():
        if isinstance(sub, dict) and name in sub:
            return _finite(sub[name])
    return None


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _name(value: Any) -> str | None:
    """A config group's name: a plain string, or the `name` key of a group dict."""
    if isinstance(value, dict):
        value = value.get("name")
    return str(value) if value not in (None, "") else None


def _identity_from_config(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": _name(cfg.get("dataset")),
        "method": _name(cfg.get("method")),
        "model": _name(cfg.get("model")),
        "shots": _as_int(cfg.get("shots")),
        "seed": _as_int(cfg.get("seed")),
        "stage": _name(cfg.get("stage")),
    }


def _fill_identity(rec: RunRecord, ident: dict[str, Any]) -> None:
    for key, value in ident.items():
        if getattr(rec, key) is None and value is not None:
            setattr(rec, key, value)


def _read_results(path: Path, run_cfg: dict[str, Any] | None) -> RunRecord:
    rec = RunRecord(path=path.parent)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        rec.status = "unreadable"
        rec.reason = f"results.json unreadable ({type(exc).__name__}: {exc})".splitlines()[0]
        if run_cfg:
            _fill_identity(rec, _identity_from_config(run_cfg))
        return rec

    rec.task = _name(data.get("task"))
    rec.method = _name(data.get("method"))
    rec.model = _name(data.get("model"))
    rec.shots = _as_int(data.get("shots"))
    rec.seed = _as_int(data.get("seed"))
    rec.stage = _name(data.get("stage"))
    # Fall back on the embedded config, then on the run directory's Hydra config.
    for cfg in (data.get("config"), run_cfg):
        if isinstance(cfg, dict):
            _fill_identity(rec, _identity_from_config(cfg))

    rec.status = str(data.get("status") or "missing status")
    rec.main_metric = data.get("main_metric") if isinstance(data.get("main_metric"), str) else None
    rec.test = _metric(data.get("test"), rec.main_metric)
    majority = data.get("majority_baseline")
    if isinstance(majority, dict):
        rec.majority = _metric(majority.get("test"), rec.main_metric)
    params = data.get("parameters")
    if isinstance(params, dict):
        rec.trainable = _as_int(params.get("trainable"))
    layers = data.get("selected_layers")
    if isinstance(layers, list):
        rec.selected_layers = sorted({v for v in (_as_int(x) for x in layers) if v is not None})
    probs = data.get("gate_probs")
    if isinstance(probs, dict):
        rec.gate_probs = {
            int(k): float(v) for k, v in probs.items() if _as_int(k) is not None and _finite(v)
        } or None

    if rec.status != "completed":
        error = data.get("error")
        rec.reason = f"status {rec.status!r}" + (f": {error}" if error else "")
    elif rec.test is None and not rec.search_only:
        rec.status = "no metric"
        rec.reason = f"completed but test has no finite {rec.main_metric or 'main_metric'!s}"
    return rec


# hydra.sweep.subdir of conf/config.yaml, NUM_TASK_METHOD_SHOTS-SEED, e.g. 3_rte_prompt_tuning_16-87
# (task names hold no underscore, method names may).
_SUBDIR = re.compile(r"^\d+_(?P<task>[^_]+)_(?P<method>.+)_(?P<shots>\d+)-(?P<seed>-?\d+)$")
_OVERRIDE_KEYS = {"dataset": "task", "method": "method", "model": "model", "shots": "shots",
                  "seed": "seed", "stage": "stage"}  # fmt: skip


def _identity_from_dirname(run_dir: Path) -> dict[str, Any]:
    match = _SUBDIR.match(run_dir.name)
    if not match:
        return {}
    ident: dict[str, Any] = match.groupdict()
    ident["shots"], ident["seed"] = int(ident["shots"]), int(ident["seed"])
    return ident


def _identity_from_overrides(overrides: Any) -> dict[str, Any]:
    """`dataset=rte`, `seed=13`, ... from a job's command-line overrides."""
    ident: dict[str, Any] = {}
    for item in overrides if isinstance(overrides, list) else []:
        key, sep, value = str(item).lstrip("+~").partition("=")
        field_name = _OVERRIDE_KEYS.get(key)
        if sep and field_name:
            ident[field_name] = _as_int(value) if field_name in ("shots", "seed") else value
    return ident


def _read_yaml(path: Path) -> dict[str, Any] | None:
    """A config as plain containers, unresolved (interpolations such as ${now:...} cannot be
    resolved outside Hydra; the identity keys are literals)."""
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # a half-written file must not stop the whole table
        return None
    return cfg if isinstance(cfg, dict) else None


def _read_hydra_config(run_dir: Path) -> dict[str, Any] | None:
    return _read_yaml(run_dir / ".hydra" / "config.yaml")


def _sweep_config(run_dir: Path) -> dict[str, Any] | None:
    """The sweep's multirun.yaml (its non-swept values) in the nearest parent that has one."""
    for parent in run_dir.parents:
        if (parent / "multirun.yaml").is_file():
            return _read_yaml(parent / "multirun.yaml")
    return None


def _read_failed(path: Path, run_cfg: dict[str, Any] | None) -> RunRecord:
    """failed.json, written by a sweep job that failed (the CLI removes the rest of its
    directory, .hydra included, so the identity comes from overrides and the directory name)."""
    rec = RunRecord(path=path.parent, status="failed")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    error = str(data.get("error") or "").strip().splitlines()
    rec.reason = "failed" + (f": {error[0]}" if error else "")
    _fill_identity(rec, _identity_from_overrides(data.get("overrides")))
    _fill_identity(rec, _identity_from_dirname(rec.path))
    for cfg in (run_cfg, _sweep_config(rec.path)):
        if cfg:
            _fill_identity(rec, _identity_from_config(cfg))
    return rec


def _find(pattern: str | Path) -> tuple[set[Path], set[Path], set[Path]]:
    """results.json files, failed.json files and Hydra run directories below the matches."""
    pattern = str(pattern)
    roots = sorted(glob.glob(pattern, recursive=True)) if _is_glob(pattern) else [pattern]
    results: set[Path] = set()
    failed: set[Path] = set()
    run_dirs: set[Path] = set()
    for root in map(Path, roots):
        if root.is_file():
            if root.name == "results.json":
                results.add(root.resolve())
            elif root.name == "failed.json":
                failed.add(root.resolve())
            continue
        if not root.is_dir():
            continue
        if (root / ".hydra" / "config.yaml").is_file():
            run_dirs.add(root.resolve())
        results.update(p.resolve() for p in root.rglob("results.json"))
        failed.update(p.resolve() for p in root.rglob("failed.json"))
        run_dirs.update(p.parent.parent.resolve() for p in root.rglob(".hydra/config.yaml"))
    return results, failed, run_dirs


def collect_runs(
    pattern: str | Path | Sequence[str | Path], exclude: Path | None = None
) -> list[RunRecord]:
    """Read every run below a multirun directory, a run directory, a results.json or a glob.

    A directory with failed.json (a failed sweep job) is a `failed` run; one with
    `.hydra/config.yaml` but neither file anywhere below it is `incomplete` (killed or still
    running). Directories of the `table` and `data` stages, and anything under `exclude` (the
    table's own output directory), are skipped. Sorted by path: the same order on every call.
    """
    patterns = [pattern] if isinstance(pattern, str | Path) else list(pattern)
    results: set[Path] = set()
    failed: set[Path] = set()
    run_dirs: set[Path] = set()
    for pat in patterns:
        found = _find(pat)
        results |= found[0]
        failed |= found[1]
        run_dirs |= found[2]
    excluded = exclude.resolve() if exclude is not None else None
    configs: dict[Path, dict[str, Any] | None] = {d: _read_hydra_config(d) for d in run_dirs}

    def owner(path: Path) -> Path | None:
        """The nearest enclosing Hydra run directory (supplies a fallback identity)."""
        return next((p for p in path.parents if p in configs), None)

    def skip(path: Path, run_dir: Path | None) -> bool:
        if excluded is not None and (path == excluded or excluded in path.parents):
            return True
        cfg = configs.get(run_dir) if run_dir else None
        return bool(cfg) and _identity_from_config(cfg)["stage"] in NON_RESULT_STAGES

    records: list[RunRecord] = []
    for path in sorted(results):
        run_dir = owner(path)
        if not skip(path, run_dir):
            records.append(_read_results(path, configs.get(run_dir) if run_dir else None))

    result_dirs = {p.parent for p in results}
    for path in sorted(failed):
        run_dir = owner(path)
        if path.parent in result_dirs or skip(path, run_dir):
            continue
        rec = _read_failed(path, configs.get(run_dir) if run_dir else None)
        if rec.stage not in NON_RESULT_STAGES:
            records.append(rec)

    done_dirs = result_dirs | {p.parent for p in failed}
    for run_dir in sorted(run_dirs):
        if skip(run_dir, run_dir):
            continue
        if any(d == run_dir or run_dir in d.parents for d in done_dirs):
            continue
        rec = RunRecord(path=run_dir, status="incomplete", reason="no results.json (killed?)")
        cfg = configs[run_dir]
        if cfg is None:
            rec.reason = "no results.json and .hydra/config.yaml unreadable"
        else:
            _fill_identity(rec, _identity_from_config(cfg))
        records.append(rec)
    records.sort(key=lambda r: str(r.path))
    return records


# ----------------------------------------------------------------------------- aggregation


def _method_sort_key(method: str) -> tuple[int, str]:
    return (
        (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)
    )


def _task_sort_key(task: str) -> tuple[int, str]:
    key = _task_key(task)
    return (TASK_ORDER.index(key), "") if key in TASK_ORDER else (len(TASK_ORDER), key)


def _group_sort_key(group: tuple[str | None, int | None]) -> tuple[str, int]:
    model, shots = group
    return (model or "~", -1 if shots is None else shots)


def _table_order(rec: RunRecord) -> tuple[Any, ...]:
    """Method order, then task order, then seed: how failed and duplicate runs are listed."""
    return (
        _method_sort_key(rec.method or "~"),
        _task_sort_key(rec.task or "~"),
        rec.seed is None,
        rec.seed or 0,
        str(rec.path),
    )


def _dedupe(records: Iterable[RunRecord]) -> tuple[list[RunRecord], list[RunRecord]]:
    """One record per identity: completed beats failed, then by stage rank, then the later
    path (Hydra's timestamped directories sort in time order). Returns (kept, ignored)."""
    by_key: dict[tuple[Any, ...], list[RunRecord]] = defaultdict(list)
    for rec in records:
        by_key[rec.key].append(rec)
    kept: list[RunRecord] = []
    ignored: list[RunRecord] = []
    for recs in by_key.values():
        recs.sort(key=lambda r: str(r.path), reverse=True)  # stable sorts: latest path wins ties
        recs.sort(
            key=lambda r: (
                not r.completed,
                not r.search_only,
                STAGE_RANK.get(r.stage or "", len(STAGE_RANK)),
            )
        )
        kept.append(recs[0])
        ignored.extend(recs[1:])
    return kept, ignored


def _build_group(model: str | None, shots: int | None, records: list[RunRecord]) -> GroupTable:
    kept, duplicates = _dedupe(records)
    # Search-only runs carry layers (for layers.png) but no test number: not part of the grid.
    search_only = [r for r in kept if r.search_only]
    records, kept = kept, [r for r in kept if not r.search_only]
    methods = sorted({r.method for r in kept if r.method}, key=_method_sort_key)
    tasks = sorted({r.task for r in kept if r.task}, key=_task_sort_key)

    metrics: dict[str, str] = {}
    for rec in kept:
        if rec.task and rec.main_metric:
            metrics.setdefault(rec.task, rec.main_metric)

    done = [r for r in kept if r.completed and r.method and r.task]
    failed = [r for r in kept if not r.completed]
    # The seeds a column "should" have: every seed any method ran (or tried) on the task.
    column_seeds: dict[str, set[int]] = defaultdict(set)
    for rec in kept:
        if rec.task and rec.seed is not None:
            column_seeds[rec.task].add(rec.seed)

    per_cell: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for rec in done:
        per_cell[(rec.method, rec.task)].append(rec)
    cells: dict[tuple[str, str], Cell] = {}
    for (method, task), recs in per_cell.items():
        recs.sort(key=lambda r: (r.seed is None, r.seed or 0))
        cells[(method, task)] = Cell(
            values=[r.test for r in recs],  # type: ignore[misc]  # completed => not None
            seeds=[r.seed for r in recs if r.seed is not None],
            expected=max(len(column_seeds[task]), len(recs)),
        )

    tried: dict[tuple[str, str], set[int]] = defaultdict(set)
    for rec in kept:
        if rec.method and rec.task and rec.seed is not None:
            tried[(rec.method, rec.task)].add(rec.seed)
    missing: list[str] = []
    for method in methods:
        for task in tasks:
            absent = sorted(column_seeds[task] - tried[(method, task)])
            if not tried[(method, task)]:
                missing.append(f"{method} / {task}: no runs")
            elif absent:
                seeds = ", ".join(map(str, absent))
                missing.append(f"{method} / {task}: no run for seed {seeds}")

    params: dict[str, float] = {}
    for method in methods:
        counts = [r.trainable for r in done if r.method == method and r.trainable is not None]
        if counts:
            params[method] = statistics.fmean(counts)

    majority: dict[str, float] = {}
    for task in tasks:
        values = [r.majority for r in done if r.task == task and r.majority is not None]
        if values:
            majority[task] = statistics.fmean(values)

    return GroupTable(
        model=model,
        shots=shots,
        methods=methods,
        tasks=tasks,
        metrics=metrics,
        cells=cells,
        params=params,
        majority=majority,
        failed=sorted(failed, key=_table_order),
        missing=missing,
        duplicates=sorted(duplicates, key=_table_order),
        search_only=sorted(search_only, key=_table_order),
        records=sorted(records, key=lambda r: str(r.path)),
    )


def build_table(records: Iterable[RunRecord]) -> Table:
    """Group records by (model, shots) and build one table per group, in a fixed order.

    Settings are never averaged together: mixed shots or backbones give separate tables.
    """
    records = list(records)
    groups: dict[tuple[str | None, int | None], list[RunRecord]] = defaultdict(list)
    unattributed: list[RunRecord] = []
    for rec in records:
        if rec.method is None or rec.task is None:
            unattributed.append(rec)
        else:
            groups[(rec.model, rec.shots)].append(rec)
    tables = [
        _build_group(model, shots, groups[(model, shots)])
        for model, shots in sorted(groups, key=_group_sort_key)
    ]
    return Table(groups=tables, records=records, unattributed=unattributed)


# ----------------------------------------------------------------------------- formatting


def format_params(count: float | None) -> str:
    """Parameter count with a K/M/B suffix and three significant digits: 12.3K, 1.20M."""
    if count is None:
        return MISSING_CELL
    rounded = float(f"{count:.3g}")  # round first, so 99,960 gives 100K, not 100.0K
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(rounded) >= div:
            scaled = rounded / div
            digits = max(0, 2 - math.floor(math.log10(abs(scaled))))
            return f"{scaled:.{digits}f}{suffix}"
    return f"{rounded:.0f}"


def task_label(task: str) -> str:
    return TASK_LABELS.get(_task_key(task), task)


def _cell_text(cell: Cell | None, pm: str = " ± ") -> str:
    if cell is None:
        return MISSING_CELL
    text = f"{100 * cell.mean:.1f}"
    if cell.std is not None:
        text += f"{pm}{100 * cell.std:.1f}"
    if cell.n < cell.expected:
        text += f" ({cell.n}/{cell.expected})"
    return text


def _avg_text(table: GroupTable, method: str) -> str:
    avg, n = table.average(method)
    if avg is None:
        return MISSING_CELL
    text = f"{100 * avg:.1f}"
    if n < len(table.tasks):
        text += f" ({n}/{len(table.tasks)} tasks)"
    return text


def _majority_avg(table: GroupTable) -> str:
    if not table.majority:
        return MISSING_CELL
    text = f"{100 * statistics.fmean(table.majority.values()):.1f}"
    if len(table.majority) < len(table.tasks):
        text += f" ({len(table.majority)}/{len(table.tasks)} tasks)"
    return text


def _rows(table: GroupTable) -> list[list[str]]:
    """Header plus body rows as text, shared by the markdown writer."""
    rows = [["Method", "Params", *map(task_label, table.tasks), "Avg"]]
    majority = [
        f"{100 * table.majority[t]:.1f}" if t in table.majority else MISSING_CELL
        for t in table.tasks
    ]
    rows.append([MAJORITY, MISSING_CELL, *majority, _majority_avg(table)])
    for method in table.methods:
        cells = [_cell_text(table.cells.get((method, t))) for t in table.tasks]
        rows.append(
            [method, format_params(table.params.get(method)), *cells, _avg_text(table, method)]
        )
    return rows


def _notes(table: GroupTable) -> list[str]:
    lines: list[str] = []
    if table.metrics:
        metrics = ", ".join(
            f"{task_label(t)} {table.metrics[t]}" for t in table.tasks if t in table.metrics
        )
        lines.append(f"Main metric (test, x100; mean ± sample std over seeds): {metrics}.")
    if any(c.n < c.expected for c in table.cells.values()):
        lines.append("(n/N): averaged over n of the N seeds run for that task; see below.")
    if table.failed:
        lines.append(f"Failed or incomplete runs ({len(table.failed)}), not averaged:")
        lines += [f"- {r.ident()}: {r.reason or r.status} ({r.where})" for r in table.failed]
    if table.missing:
        lines.append(f"Missing runs ({len(table.missing)}):")
        lines += [f"- {m}" for m in table.missing]
    if table.search_only:
        lines.append(
            f"Search-only runs ({len(table.search_only)}; retrain=false, no test number, "
            "layers in layers.png):"
        )
        lines += [
            f"- {r.ident()} layers {r.selected_layers} ({r.where})" for r in table.search_only
        ]
    if table.duplicates:
        lines.append(
            f"Duplicate runs ignored ({len(table.duplicates)}), another run of the same seed kept:"
        )
        lines += [
            f"- {r.ident()} [{r.stage or '?'}, {r.status}] ({r.where})" for r in table.duplicates
        ]
    return lines


def to_markdown(result: Table) -> str:
    """All tables as GitHub markdown, each with a heading and its notes."""
    out = io.StringIO()
    for i, table in enumerate(result.groups):
        if i:
            out.write("\n")
        out.write(f"### {table.title}\n\n")
        if table.methods:
            rows = _rows(table)
            out.write("| " + " | ".join(rows[0]) + " |\n")
            out.write("|:--|" + "--:|" * (len(rows[0]) - 1) + "\n")
            for row in rows[1:]:
                out.write("| " + " | ".join(row) + " |\n")
        else:
            out.write("No run with a test result in this setting.\n")
        notes = _notes(table)
        if notes:
            out.write("\n" + "\n".join(notes) + "\n")
    if result.unattributed:
        out.write(
            f"\nRuns without a readable task/method ({len(result.unattributed)}), not averaged:\n"
        )
        for rec in result.unattributed:
            out.write(f"- {rec.reason or rec.status} ({rec.where})\n")
    if not result.groups and not result.unattributed:
        out.write("No runs.\n")
    return out.getvalue()


CSV_FIELDS = (
    "model", "shots", "method", "task", "metric", "mean", "std", "n", "n_expected", "seeds",
    "trainable_params",
)  # fmt: skip


def to_csv(result: Table) -> str:
    """One row per cell (unscaled metric, full precision), plus Majority and Avg rows."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)

    def num(value: float | None) -> str:
        if value is None:
            return ""
        return str(int(value)) if float(value).is_integer() and abs(value) >= 1 else repr(value)

    for table in result.groups:
        base = [table.model or "", "" if table.shots is None else table.shots]
        for task in table.tasks:
            if task in table.majority:
                writer.writerow(
                    [*base, MAJORITY, task, table.metrics.get(task, ""),
                     num(table.majority[task]), "", "", "", "", ""]
                )  # fmt: skip
        for method in table.methods:
            params = num(table.params.get(method))
            for task in table.tasks:
                cell = table.cells.get((method, task))
                if cell is None:
                    continue
                writer.writerow(
                    [*base, method, task, table.metrics.get(task, ""), num(cell.mean),
                     num(cell.std), cell.n, cell.expected, " ".join(map(str, cell.seeds)), params]
                )  # fmt: skip
            avg, n = table.average(method)
            if avg is not None:
                writer.writerow(
                    [*base, method, "Avg", "", num(avg), "", n, len(table.tasks), "", params]
                )
    return out.getvalue()


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "_": r"\_",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "–": "--",
    "·": r"$\cdot$",
}


def _tex(text: str) -> str:
    """Escape plain text for LaTeX, one character at a time (so escapes are not re-escaped)."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def _tex_cell(cell: Cell | None) -> str:
    if cell is None:
        return "--"
    text = f"{100 * cell.mean:.1f}"
    if cell.std is not None:
        text += rf"$_{{\pm {100 * cell.std:.1f}}}$"
    if cell.n < cell.expected:
        text += rf"\textsuperscript{{{cell.n}/{cell.expected}}}"
    return text


def to_latex(result: Table) -> str:
    """booktabs tables (needs \\usepackage{booktabs}); the notes go into LaTeX comments."""
    out = io.StringIO()
    out.write("% Generated by `spt-run table`. Needs \\usepackage{booktabs}.\n")
    for table in result.groups:
        if not table.methods:
            continue
        out.write("\n\\begin{table}[t]\n\\centering\n\\small\n")
        out.write("\\begin{tabular}{l r " + "c" * (len(table.tasks) + 1) + "}\n\\toprule\n")
        header = ["Method", "Params", *map(task_label, table.tasks), "Avg"]
        out.write(" & ".join(_tex(h) for h in header) + " \\\\\n\\midrule\n")
        majority = [
            f"{100 * table.majority[t]:.1f}" if t in table.majority else "--" for t in table.tasks
        ]
        out.write(" & ".join([MAJORITY, "--", *majority, _tex(_majority_avg(table))]))
        out.write(" \\\\\n\\midrule\n")
        for method in table.methods:
            row = [
                _tex(method),
                _tex(format_params(table.params.get(method))),
                *(_tex_cell(table.cells.get((method, t))) for t in table.tasks),
                _tex(_avg_text(table, method)),
            ]
            out.write(" & ".join(row) + " \\\\\n")
        out.write("\\bottomrule\n\\end{tabular}\n")
        caption = (
            rf"{_tex(table.title)}: test main metric $\times$100, mean$_{{\pm\mathrm{{std}}}}$"
        )
        out.write(rf"\caption{{{caption} over seeds.}}" + "\n")
        out.write("\\end{table}\n")
        for line in _notes(table):
            out.write(f"% {line}\n")
    return out.getvalue()


# ----------------------------------------------------------------------------- figure


def _layer_rows(result: Table) -> list[tuple[str, list[RunRecord]]]:
    """(row label, finished records with selected layers) per (group, method, task)."""
    rows: list[tuple[tuple[Any, ...], str, list[RunRecord]]] = []
    multi_group = len(result.groups) > 1
    for gi, table in enumerate(result.groups):
        groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
        for rec in table.records:
            finished = rec.completed or rec.search_only
            if finished and rec.selected_layers is not None and rec.method and rec.task:
                groups[(rec.method, rec.task)].append(rec)
        methods = {m for m, _ in groups}
        for (method, task), recs in groups.items():
            label = task_label(task)
            if len(methods) > 1:
                label += f" · {method}"
            if multi_group:
                label += f" · {table.title}"
            order = (gi, _method_sort_key(method), _task_sort_key(task))
            rows.append((order, label, recs))
    rows.sort(key=lambda row: row[0])
    return [(label, recs) for _, label, recs in rows]


def plot_layers(result: Table, path: Path) -> bool:
    """Write `layers.png` (selection frequency and mean final gate probability per layer).
    Returns False, writing nothing, when no completed run has selected layers."""
    rows = _layer_rows(result)
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt
    import numpy as np

    num_layers = 1 + max(
        max([*(r.selected_layers or []), *(r.gate_probs or {})], default=0)
        for _, recs in rows
        for r in recs
    )
    freq = np.zeros((len(rows), num_layers))
    gates = np.full((len(rows), num_layers), np.nan)
    for i, (_, recs) in enumerate(rows):
        for rec in recs:
            for layer in rec.selected_layers or []:
                freq[i, layer] += 1 / len(recs)
        probs: dict[int, list[float]] = defaultdict(list)
        for rec in recs:
            for layer, p in (rec.gate_probs or {}).items():
                probs[layer].append(p)
        for layer, values in probs.items():
            gates[i, layer] = statistics.fmean(values)

    width = max(8.0, 2 * (2.0 + 0.32 * num_layers))
    fig, axes = plt.subplots(1, 2, figsize=(width, 1.2 + 0.45 * len(rows)), squeeze=False)
    labels = [f"{label} (n={len(recs)})" for label, recs in rows]
    panels = (
        (axes[0, 0], freq, "Selected in fraction of seeds", "Blues"),
        (axes[0, 1], np.ma.masked_invalid(gates), "Mean final gate probability", "Oranges"),
    )
    for ax, data, title, cmap_name in panels:
        # grey = no gate probability recorded, distinct from a probability of 0
        cmap = matplotlib.colormaps[cmap_name].with_extremes(bad="lightgray")
        image = ax.imshow(data, aspect="auto", vmin=0.0, vmax=1.0, cmap=cmap)
        if num_layers * len(rows) <= 400:  # numbers stay legible up to ~24 layers x 16 rows
            for (i, j), value in np.ndenumerate(np.ma.filled(data, np.nan)):
                if np.isfinite(value) and value > 0:
                    color = "white" if value > 0.6 else "black"
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color=color)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer (block index)")
        ax.set_xticks(range(num_layers))
        ax.set_xticklabels([str(i) for i in range(num_layers)], fontsize=7)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels, fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout()
    # Write next to the target, then rename, so a reader never sees half a PNG.
    fd, tmp = tempfile.mkstemp(prefix=".layers-", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


# ----------------------------------------------------------------------------- entry point


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_outputs(result: Table, out_dir: Path) -> list[Path]:
    """table.md, table.csv, table.tex and (when any run selected layers) layers.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for name, text in (
        ("table.md", to_markdown(result)),
        ("table.csv", to_csv(result)),
        ("table.tex", to_latex(result)),
    ):
        _write_atomic(out_dir / name, text)
        files.append(out_dir / name)
    if plot_layers(result, out_dir / "layers.png"):
        files.append(out_dir / "layers.png")
    return files


def run_table(cfg: Any, out_dir: Path) -> dict[str, Any]:
    """`spt-run table runs=<multirun dir or glob>`: aggregate, print markdown, write files."""
    runs = cfg.get("runs") if hasattr(cfg, "get") else getattr(cfg, "runs", None)
    if runs is None or (isinstance(runs, str) and not runs.strip()):
        raise ConfigError(
            "table needs runs=<multirun dir or glob>; e.g. spt-run table runs=outputs/multirun/..."
        )
    patterns = [str(runs)] if isinstance(runs, str | Path) else [str(p) for p in runs]
    records = collect_runs(patterns, exclude=out_dir)
    if not records:
        raise ConfigError(
            f"table: no results.json or Hydra run directory under {', '.join(patterns)}; "
            "pass the multirun directory (outputs/multirun/STAGE/DATE) or a quoted glob"
        )
    result = build_table(records)
    files = write_outputs(result, Path(out_dir))
    print(to_markdown(result), end="")
    n_failed = sum(len(t.failed) for t in result.groups) + len(result.unattributed)
    return {"n_runs": len(records), "n_failed": n_failed, "files": [str(f) for f in files]}
