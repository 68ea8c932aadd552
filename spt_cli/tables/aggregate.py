"""Aggregation: de-duplicate runs and average them into one `GroupTable` per (model, shots)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from spt_cli.tables.records import RunRecord

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
# Which result to keep when one (model, shots, task, method, seed) was run more than once:
# the retrained model is the reported one for SPT; a plain re-evaluation ranks below training.
STAGE_RANK = {"retrain": 0, "train": 1, "search": 2, "eval": 3}


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


def _task_key(task: str) -> str:
    return task.lower().replace("-", "").replace("_", "")


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
