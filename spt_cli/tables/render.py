"""Renderers: the aggregated tables as markdown, CSV and LaTeX, with the notes under each,
the settings chosen on dev, and the paired comparison of SPT with each baseline."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import Counter

from spt_cli.tables import paired
from spt_cli.tables.aggregate import Cell, GroupTable, Table, _task_key
from spt_cli.tables.records import RunRecord
from spt_cli.tables.select import Choice

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
MAJORITY = "Majority"  # train's majority class (ties: the first label), scored on test
MAJORITY_TEST = "Majority (test class)"  # test's own majority class: LM-BFF's Majority row
MISSING_CELL = "–"


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


DEGENERATE_MARK = "†"  # a seed of the cell predicted a single class on dev or test


def degenerate_runs(table: GroupTable, method: str, task: str) -> list[RunRecord]:
    """The averaged runs of a cell whose model predicted a single class on some split."""
    return [
        r
        for r in table.records
        if r.completed and r.method == method and r.task == task and r.degenerate
    ]


def _cell_text(cell: Cell | None, pm: str = " ± ", mark: bool = False) -> str:
    if cell is None:
        return MISSING_CELL
    text = f"{100 * cell.mean:.1f}" + (DEGENERATE_MARK if mark else "")
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


def _references(table: GroupTable) -> list[tuple[str, dict[str, float]]]:
    """The reference rows above the methods: train's majority class always, the test class's
    when any record has it."""
    rows = [(MAJORITY, table.majority)]
    if table.majority_test:
        rows.append((MAJORITY_TEST, table.majority_test))
    return rows


def _reference_avg(table: GroupTable, values: dict[str, float]) -> str:
    if not values:
        return MISSING_CELL
    text = f"{100 * statistics.fmean(values.values()):.1f}"
    if len(values) < len(table.tasks):
        text += f" ({len(values)}/{len(table.tasks)} tasks)"
    return text


def _rows(table: GroupTable) -> list[list[str]]:
    """Header plus body rows as text, shared by the markdown writer."""
    rows = [["Method", "Params", *map(task_label, table.tasks), "Avg"]]
    for label, values in _references(table):
        cells = [f"{100 * values[t]:.1f}" if t in values else MISSING_CELL for t in table.tasks]
        rows.append([label, MISSING_CELL, *cells, _reference_avg(table, values)])
    for method in table.methods:
        cells = [
            _cell_text(table.cells.get((method, t)), mark=bool(degenerate_runs(table, method, t)))
            for t in table.tasks
        ]
        rows.append(
            [method, format_params(table.params.get(method)), *cells, _avg_text(table, method)]
        )
    return rows


def _dev(value: float | None) -> str:
    return "no dev number" if value is None else f"{100 * value:.1f}"


def choice_text(choice: Choice) -> str:
    """`prompt_tuning / SST-2: trainer.lr=0.02 (dev 61.2 vs 0.005: 58.1; seeds 13 21)`."""
    best, *rest = choice.scores
    others = ", ".join(f"{choice.short(s)}: {_dev(s.dev)}" for s in rest)
    if choice.common:
        over = "seeds " + " ".join(map(str, choice.seeds))
    else:
        over = "no seed common to all settings: each on its own seeds"
    return (
        f"{choice.method} / {task_label(choice.task)}: {choice.chosen} "
        f"(dev {_dev(best.dev)} vs {others}; {over})"
    )


def _why(runs: list[RunRecord]) -> str:
    """The reasons a set of runs gave no test number, most common first: `2× status ...`."""
    counts = Counter(r.reason or r.status for r in runs)
    parts = [f"{n}× {reason}" for reason, n in counts.most_common(3)]
    if len(counts) > 3:
        parts.append(f"{sum(counts.values()) - sum(n for _, n in counts.most_common(3))} more")
    return "; ".join(parts)


def _empty_notes(table: GroupTable) -> list[str]:
    lines = []
    for method, task, runs in table.empty:
        if method is None:
            lines.append(f"- {task_label(task)}: no run has a test number: {_why(runs)}")
        else:
            lines.append(f"- {method} / {task_label(task)}: no test number: {_why(runs)}")
    return ["Empty cells (runs but no test number):", *lines] if lines else []


def _choice_notes(table: GroupTable) -> list[str]:
    if not table.choices:
        return []
    return [
        "Chosen on dev (table.select=dev): for cells run with several settings, the one with "
        "the best mean dev main metric x100 over the seeds every setting has (test not looked "
        "at); the cell reports its test over all its seeds. "
        f"{len(table.unchosen)} runs of the other settings are not averaged.",
        *(f"- {choice_text(c)}" for c in table.choices),
    ]


def _notes(table: GroupTable) -> list[str]:
    lines: list[str] = []
    if table.metrics:
        metrics = ", ".join(
            f"{task_label(t)} {table.metrics[t]}" for t in table.tasks if t in table.metrics
        )
        lines.append(f"Main metric (test, x100; mean ± sample std over seeds): {metrics}.")
    if table.majority_test:
        lines.append(
            f"{MAJORITY}: always train's majority class (ties: the first label), scored on test; "
            f"{MAJORITY_TEST}: always the test set's own majority class (a chance line that "
            "reads test labels)."
        )
    if any(c.n < c.expected for c in table.cells.values()):
        lines.append("(n/N): averaged over n of the N seeds run for that task; see below.")
    single = [r for m in table.methods for t in table.tasks for r in degenerate_runs(table, m, t)]
    if single:
        lines.append(
            f"{DEGENERATE_MARK}: averaged over runs whose model predicted a single class "
            "(a degenerate model, scored like the majority line):"
        )
        for r in single:
            found = ", ".join(f"{split} {what}" for split, what in r.degenerate.items())
            lines.append(f"- {r.ident()}: {found} ({r.where})")
    lines += _choice_notes(table)
    lines += _empty_notes(table)
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
    if table.copies:
        lines.append(
            f"Runs read twice (as run directory and record), counted once: {len(table.copies)}."
        )
    return lines


def paired_grid(table: GroupTable) -> tuple[list[str], list[list[str]]] | None:
    """(header, rows) of the paired table: a row per baseline, a column per task. Rows are
    labelled ``<reference> - <baseline>`` so that no row shares its label with the main table's."""
    pairs = paired.compare(table)
    if not pairs:
        return None
    by = {(p.baseline, p.task): p for p in pairs}
    baselines = [m for m in table.methods if any(p.baseline == m for p in pairs)]
    tasks = [t for t in table.tasks if any(p.task == t for p in pairs)]
    every = {p.baseline: p for p in paired.pooled(pairs)}
    rows = [
        [
            f"{table.reference} - {b}",
            *(paired.cell_text(by[(b, t)]) if (b, t) in by else MISSING_CELL for t in tasks),
            paired.cell_text(every[b]),
        ]
        for b in baselines
    ]
    header = [f"{table.reference} - baseline", *map(task_label, tasks), paired.ALL.capitalize()]
    return header, rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|:--|" + "--:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_markdown(result: Table) -> str:
    """All tables as GitHub markdown, each with a heading and its notes."""
    out = io.StringIO()
    for i, table in enumerate(result.groups):
        if i:
            out.write("\n")
        out.write(f"### {table.title}\n\n")
        if table.methods:
            rows = _rows(table)
            out.write(_markdown_table(rows[0], rows[1:]))
        else:
            out.write("No run with a test result in this setting.\n")
        notes = _notes(table)
        if notes:
            out.write("\n" + "\n".join(notes) + "\n")
        grid = paired_grid(table)
        if grid is not None:
            out.write(f"\n#### {paired.title(table)}\n\n")
            out.write(_markdown_table(*grid))
            out.write("\n" + "\n".join(paired.notes(table)) + "\n")
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
    "trainable_params", "setting",
)  # fmt: skip


def to_csv(result: Table) -> str:
    """One row per cell (unscaled metric, full precision), plus Majority and Avg rows; `setting`:
    the setting a cell kept when it was run with several (table.select=dev)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)

    def num(value: float | None) -> str:
        if value is None:
            return ""
        return str(int(value)) if float(value).is_integer() and abs(value) >= 1 else repr(value)

    for table in result.groups:
        base = [table.model or "", "" if table.shots is None else table.shots]
        for label, values in _references(table):
            for task in table.tasks:
                if task in values:
                    writer.writerow(
                        [*base, label, task, table.metrics.get(task, ""),
                         num(values[task]), "", "", "", "", "", ""]
                    )  # fmt: skip
        chosen = {(c.method, c.task): c.chosen for c in table.choices}
        for method in table.methods:
            params = num(table.params.get(method))
            for task in table.tasks:
                cell = table.cells.get((method, task))
                if cell is None:
                    continue
                writer.writerow(
                    [*base, method, task, table.metrics.get(task, ""), num(cell.mean),
                     num(cell.std), cell.n, cell.expected, " ".join(map(str, cell.seeds)), params,
                     chosen.get((method, task), "")]
                )  # fmt: skip
            avg, n = table.average(method)
            if avg is not None:
                writer.writerow(
                    [*base, method, "Avg", "", num(avg), "", n, len(table.tasks), "", params, ""]
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


def _tex_cell(cell: Cell | None, mark: bool = False) -> str:
    if cell is None:
        return "--"
    text = f"{100 * cell.mean:.1f}" + (r"$^\dagger$" if mark else "")
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
        for label, values in _references(table):
            cells = [f"{100 * values[t]:.1f}" if t in values else "--" for t in table.tasks]
            out.write(" & ".join([_tex(label), "--", *cells, _tex(_reference_avg(table, values))]))
            out.write(" \\\\\n")
        out.write("\\midrule\n")
        for method in table.methods:
            row = [
                _tex(method),
                _tex(format_params(table.params.get(method))),
                *(
                    _tex_cell(table.cells.get((method, t)), bool(degenerate_runs(table, method, t)))
                    for t in table.tasks
                ),
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
        grid = paired_grid(table)
        if grid is not None:
            header, rows = grid
            out.write("\n\\begin{table}[t]\n\\centering\n\\small\n")
            out.write("\\begin{tabular}{l " + "c" * (len(header) - 1) + "}\n\\toprule\n")
            out.write(" & ".join(_tex(h) for h in header) + " \\\\\n\\midrule\n")
            for row in rows:
                out.write(" & ".join(_tex(c) for c in row) + " \\\\\n")
            out.write("\\bottomrule\n\\end{tabular}\n")
            out.write(rf"\caption{{{_tex(table.title)}: {_tex(paired.title(table))}.}}" + "\n")
            out.write("\\end{table}\n")
            for line in paired.notes(table):
                out.write(f"% {line}\n")
    return out.getvalue()


CHOICE_FIELDS = (
    "model", "shots", "method", "task", "setting", "chosen", "dev_compared", "compared_seeds",
    "dev_all", "seeds",
)  # fmt: skip


def to_choices_csv(result: Table) -> str:
    """One row per setting of every cell that had several (unscaled dev, full precision)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CHOICE_FIELDS)
    for table in result.groups:
        base = [table.model or "", "" if table.shots is None else table.shots]
        for choice in table.choices:
            for score in choice.scores:
                compared = choice.seeds if choice.common else score.seeds
                writer.writerow(
                    [*base, choice.method, choice.task, score.setting,
                     int(score.setting == choice.chosen),
                     "" if score.dev is None else repr(score.dev), " ".join(map(str, compared)),
                     "" if score.dev_all is None else repr(score.dev_all),
                     " ".join(map(str, score.seeds))]
                )  # fmt: skip
    return out.getvalue()
