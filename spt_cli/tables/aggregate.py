"""Aggregation: de-duplicate runs, keep one setting per cell (`select`) and average the rest
into one `GroupTable` per (model, shots)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spt_cli.config import SELECT_MODES, primary_defaults
from spt_cli.errors import ConfigError
from spt_cli.tables.records import RunRecord
from spt_cli.tables.select import Choice, assign_settings, choose

TASK_ORDER = ("sst2", "mr", "mpqa", "subj", "trec", "mnli", "mrpc", "qnli", "qqp", "rte", "cr")
# Which result to keep when one (model, shots, task, method, seed) was run more than once:
# the retrained model is the reported one for SPT; a plain re-evaluation ranks below training.
STAGE_RANK = {"retrain": 0, "train": 1, "search": 2, "eval": 3}


@dataclass(frozen=True)
class Layout:
    """Which methods a table lists first and which one it compares with the rest: `table.rows`
    (row order; methods not listed follow alphabetically) and `table.reference` (the method
    paired with every other row over seeds; None: no paired table)."""

    rows: tuple[str, ...]
    reference: str | None

    @classmethod
    def from_conf(cls, table: Any = None) -> Layout:
        """From a config's ``table`` section (default: conf/config.yaml's)."""
        node = primary_defaults("table") if table is None else table
        return cls(rows=tuple(str(m) for m in node.rows or ()),
                   reference=None if node.reference is None else str(node.reference))  # fmt: skip


def method_key(method: str, rows: Sequence[str]) -> tuple[int, str]:
    """Sort key of a method: its place in ``rows``, else after them, alphabetically."""
    return (rows.index(method), "") if method in rows else (len(rows), method)


@dataclass
class Cell:
    """Aggregate of one (method, task) cell, unscaled."""

    values: list[float]
    seeds: list[int]
    expected: int  # distinct seeds run in this column (any method, completed or not)
    per_seed: dict[int, float] = field(default_factory=dict)  # for paired comparisons

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
    majority: dict[str, float]  # task -> train's majority class, scored on test
    majority_test: dict[str, float] = field(default_factory=dict)  # task -> test's own class
    failed: list[RunRecord] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    duplicates: list[RunRecord] = field(default_factory=list)
    search_only: list[RunRecord] = field(default_factory=list)
    records: list[RunRecord] = field(default_factory=list)  # one per seed, after de-duplication
    choices: list[Choice] = field(default_factory=list)  # cells with several settings
    unchosen: list[RunRecord] = field(default_factory=list)  # runs of the settings not kept
    copies: list[RunRecord] = field(default_factory=list)  # one run read twice (dir + record)
    # Columns or cells with runs but no test number: (method, or None for the whole task,
    # task, the runs), to say why they are empty.
    empty: list[tuple[str | None, str, list[RunRecord]]] = field(default_factory=list)
    rows: tuple[str, ...] = ()  # table.rows: the method order `methods` follows
    reference: str | None = None  # table.reference: the method paired with the others

    def average(self, method: str) -> tuple[float | None, int]:
        """Mean of the method's cell means over the tasks it has, and how many tasks that is."""
        means = [self.cells[(method, t)].mean for t in self.tasks if (method, t) in self.cells]
        return (statistics.fmean(means) if means else None), len(means)

    @property
    def title(self) -> str:
        return group_title(self.model, self.shots)


def group_title(model: str | None, shots: int | None) -> str:
    """`minilm · 16-shot`, `minilm · full data`."""
    if shots is None:
        setting = "unknown data setting"
    elif shots > 0:
        setting = f"{shots}-shot"
    else:
        setting = "full data"
    return f"{model or 'unknown model'} · {setting}"


@dataclass
class Table:
    """The whole aggregation: one `GroupTable` per (model, shots) setting, in a fixed order,
    plus the runs whose task or method could not be read (listed, never averaged)."""

    groups: list[GroupTable]
    records: list[RunRecord]
    unattributed: list[RunRecord] = field(default_factory=list)


def _task_key(task: str) -> str:
    return task.lower().replace("-", "").replace("_", "")


def _task_sort_key(task: str) -> tuple[int, str]:
    key = _task_key(task)
    return (TASK_ORDER.index(key), "") if key in TASK_ORDER else (len(TASK_ORDER), key)


def _group_sort_key(group: tuple[str | None, int | None]) -> tuple[str, int]:
    model, shots = group
    return (model or "~", -1 if shots is None else shots)


def _table_order(rec: RunRecord, rows: Sequence[str]) -> tuple[Any, ...]:
    """Method order, then task order, then seed: how failed and duplicate runs are listed."""
    return (
        method_key(rec.method or "~", rows),
        _task_sort_key(rec.task or "~"),
        rec.seed is None,
        rec.seed or 0,
        str(rec.path),
    )


def _same_run(a: RunRecord, b: RunRecord) -> bool:
    """One run read twice: as its run directory and as its record, or as two copies of one
    record (same fingerprint), with the same outcome and numbers."""
    same_source = a.source == b.source and not (a.fingerprint and a.fingerprint == b.fingerprint)
    return not same_source and (a.status, a.test, a.dev) == (b.status, b.test, b.dev)


def _dedupe(
    records: Iterable[RunRecord],
) -> tuple[list[RunRecord], list[RunRecord], list[RunRecord]]:
    """One record per identity and setting: completed beats failed, then by stage rank, then
    the later path (Hydra's timestamped directories sort in time order). Returns (kept,
    ignored duplicates, copies of a kept run)."""
    by_key: dict[tuple[Any, ...], list[RunRecord]] = defaultdict(list)
    for rec in records:
        by_key[(*rec.key, rec.setting)].append(rec)
    kept: list[RunRecord] = []
    ignored: list[RunRecord] = []
    copies: list[RunRecord] = []
    for recs in by_key.values():
        recs.sort(key=lambda r: str(r.path), reverse=True)  # stable sorts: latest path wins ties
        recs.sort(
            key=lambda r: (
                not r.completed,
                not r.search_only,
                STAGE_RANK.get(r.stage or "", len(STAGE_RANK)),
                r.source != "run",  # the run directory has more (logs, artefact) than its record
            )
        )
        kept.append(recs[0])
        for rec in recs[1:]:
            (copies if _same_run(recs[0], rec) else ignored).append(rec)
    return kept, ignored, copies


def _select(
    graded: list[RunRecord], select: str, where: str, rows: Sequence[str]
) -> tuple[list[RunRecord], list[Choice], list[RunRecord]]:
    """Keep one setting per cell: (runs reported or listed, choices, runs of other settings).
    Failed runs of any setting stay listed; only completed runs of unchosen settings go."""
    by_cell: dict[tuple[str, str], dict[str, list[RunRecord]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for rec in graded:
        if rec.completed and rec.method and rec.task:
            by_cell[(rec.method, rec.task)][rec.setting].append(rec)
    choices: list[Choice] = []
    kept_setting: dict[tuple[str, str], str] = {}
    for (method, task), settings in sorted(
        by_cell.items(), key=lambda kv: (method_key(kv[0][0], rows), _task_sort_key(kv[0][1]))
    ):
        choice = choose(method, task, settings, select, where)
        if choice is not None:
            choices.append(choice)
            kept_setting[(method, task)] = choice.chosen

    def reported(rec: RunRecord) -> bool:
        chosen = kept_setting.get((rec.method or "", rec.task or ""))
        return chosen is None or rec.setting == chosen or not rec.completed

    return (
        [r for r in graded if reported(r)],
        choices,
        [r for r in graded if not reported(r)],
    )


def _empty_cells(
    methods: list[str], tasks: list[str], cells: dict[tuple[str, str], Cell], runs: list[RunRecord]
) -> list[tuple[str | None, str, list[RunRecord]]]:
    """Columns, then cells, that have runs but no test number (not: no runs at all)."""
    empty: list[tuple[str | None, str, list[RunRecord]]] = []
    for task in tasks:
        task_runs = [r for r in runs if r.task == task]
        if not any((m, task) in cells for m in methods):
            empty.append((None, task, task_runs))
            continue
        for method in methods:
            cell_runs = [r for r in task_runs if r.method == method]
            if cell_runs and (method, task) not in cells:
                empty.append((method, task, cell_runs))
    return empty


def _build_group(
    model: str | None, shots: int | None, records: list[RunRecord], select: str, layout: Layout
) -> GroupTable:
    # Search-only runs carry layers (for layers.png) but no test number: not part of the grid.
    assign_settings(r for r in records if not r.search_only)
    kept, duplicates, copies = _dedupe(records)
    search_only = [r for r in kept if r.search_only]
    graded, choices, unchosen = _select(
        [r for r in kept if not r.search_only], select, group_title(model, shots), layout.rows
    )
    methods = sorted({r.method for r in graded if r.method},
                     key=lambda m: method_key(m, layout.rows))  # fmt: skip

    def listed(recs: list[RunRecord]) -> list[RunRecord]:
        return sorted(recs, key=lambda r: _table_order(r, layout.rows))

    tasks = sorted({r.task for r in graded if r.task}, key=_task_sort_key)

    metrics: dict[str, str] = {}
    for rec in graded:
        if rec.task and rec.main_metric:
            metrics.setdefault(rec.task, rec.main_metric)

    done = [r for r in graded if r.completed and r.method and r.task]
    failed = [r for r in graded if not r.completed]
    # The seeds a column "should" have: every seed any method ran (or tried) on the task.
    column_seeds: dict[str, set[int]] = defaultdict(set)
    for rec in graded + unchosen:
        if rec.task and rec.seed is not None:
            column_seeds[rec.task].add(rec.seed)

    per_cell: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for rec in done:
        per_cell[(rec.method, rec.task)].append(rec)  # type: ignore[index]  # done: both set
    cells: dict[tuple[str, str], Cell] = {}
    for (method, task), recs in per_cell.items():
        recs.sort(key=lambda r: (r.seed is None, r.seed or 0))
        cells[(method, task)] = Cell(
            values=[r.test for r in recs],  # type: ignore[misc]  # completed => not None
            seeds=[r.seed for r in recs if r.seed is not None],
            expected=max(len(column_seeds[task]), len(recs)),
            per_seed={r.seed: r.test for r in recs if r.seed is not None and r.test is not None},
        )

    tried: dict[tuple[str, str], set[int]] = defaultdict(set)
    for rec in graded:
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

    def per_task(value: Callable[[RunRecord], float | None]) -> dict[str, float]:
        """Task -> mean of a reference baseline over the runs that have it (records written
        before the test-class baseline existed lack that one; any run of the task has it)."""
        out = {}
        for task in tasks:
            values = [v for r in done if r.task == task and (v := value(r)) is not None]
            if values:
                out[task] = statistics.fmean(values)
        return out

    return GroupTable(
        model=model,
        shots=shots,
        methods=methods,
        tasks=tasks,
        metrics=metrics,
        cells=cells,
        params=params,
        majority=per_task(lambda r: r.majority),
        majority_test=per_task(lambda r: r.majority_test),
        failed=listed(failed),
        missing=missing,
        duplicates=listed(duplicates),
        search_only=listed(search_only),
        records=sorted(graded + search_only, key=lambda r: str(r.path)),
        choices=choices,
        unchosen=listed(unchosen),
        copies=listed(copies),
        empty=_empty_cells(methods, tasks, cells, graded),
        rows=layout.rows,
        reference=layout.reference,
    )


def build_table(
    records: Iterable[RunRecord], select: str = "dev", layout: Layout | None = None
) -> Table:
    """Group records by (model, shots) and build one table per group, in a fixed order;
    `layout`: row order and paired reference (default: conf/config.yaml's `table` keys).

    Settings are never averaged together: mixed shots or backbones give separate tables, and a
    cell with runs of several settings keeps one (`select="dev"`: the best mean dev main metric
    over the seeds all settings have) or raises ConfigError (`select="all"`).
    """
    if select not in SELECT_MODES:
        raise ConfigError(f"table.select={select!r}; choose one of: {', '.join(SELECT_MODES)}")
    layout = layout or Layout.from_conf()
    records = list(records)
    groups: dict[tuple[str | None, int | None], list[RunRecord]] = defaultdict(list)
    unattributed: list[RunRecord] = []
    for rec in records:
        if rec.method is None or rec.task is None:
            unattributed.append(rec)
        else:
            groups[(rec.model, rec.shots)].append(rec)
    tables = [
        _build_group(model, shots, groups[(model, shots)], select, layout)
        for model, shots in sorted(groups, key=_group_sort_key)
    ]
    return Table(groups=tables, records=records, unattributed=unattributed)
