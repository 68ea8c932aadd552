"""Renderers: the aggregated tables as markdown, CSV and LaTeX, with the notes under each."""

from __future__ import annotations

import csv
import io
import math
import statistics

from spt_cli.tables.aggregate import Cell, GroupTable, Table, _task_key

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
MAJORITY = "Majority"
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
