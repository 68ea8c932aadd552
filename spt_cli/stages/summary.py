"""The `data` stage's summary: split sizes, label distributions, majority baseline, lengths."""

from __future__ import annotations

from typing import Any

import numpy as np

from spt_cli.data.splits import TaskData
from spt_cli.data.tasks import TASKS, Example, TaskSpec
from spt_cli.metrics import majority_baseline

_PERCENTILES = (50, 90, 95, 99)


def label_counts(task: TaskSpec, examples: list[Example]) -> dict[str, int]:
    """Examples per label name (regression: per unit score bin "0-1" ... "4-5")."""
    if task.is_regression:
        bins = [f"{i}-{i + 1}" for i in range(5)]
        counts = dict.fromkeys(bins, 0)
        for ex in examples:
            counts[bins[min(max(int(float(ex.label)), 0), 4)]] += 1
        return counts
    counts = dict.fromkeys(task.label_names, 0)
    for ex in examples:
        counts[task.label_names[int(ex.label)]] += 1
    return counts


def token_lengths(tokenizer: Any, examples: list[Example]) -> dict[str, int]:
    """Percentiles (50/90/95/99) and max of the plain (pair) encoding's length, untruncated."""
    if not examples:
        return {}
    a = [ex.text_a for ex in examples]
    b = [ex.text_b or "" for ex in examples]
    pair = any(ex.text_b is not None for ex in examples)
    enc = tokenizer(a, b if pair else None, truncation=False)["input_ids"]
    lengths = np.array([len(ids) for ids in enc])
    out = {f"p{p}": int(np.percentile(lengths, p)) for p in _PERCENTILES}
    out["max"] = int(lengths.max())
    return out


def summarize(task_data: TaskData, tokenizer: Any = None) -> dict[str, Any]:
    """A JSON-ready summary: task, source, files, per-split n and label counts, the majority
    baseline on each test split, and (with a tokenizer) token-length percentiles."""

    task = task_data.task
    splits = {"train": task_data.train, "dev": task_data.dev, **task_data.tests}
    train_labels = [ex.label for ex in task_data.train]
    summary: dict[str, Any] = {
        "task": task.name,
        "source": task_data.source,
        "files": list(task_data.files),
        "main_metric": task.main_metric,
        "splits": {
            name: {"n": len(examples), "label_counts": label_counts(task, examples)}
            for name, examples in splits.items()
        },
        "majority_baseline": {
            name: majority_baseline(task, train_labels, [ex.label for ex in examples])
            for name, examples in task_data.tests.items()
        },
    }
    if tokenizer is not None:
        for name, examples in splits.items():
            summary["splits"][name]["token_lengths"] = token_lengths(tokenizer, examples)
    return summary


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()

    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def _clip(text: str, width: int = 300) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def format_summary(
    summary: dict[str, Any], example_raw: Example | None = None, example_rendered: str | None = None
) -> str:
    """A readable terminal report of `summarize`'s output, with one example raw and rendered."""
    out = [f"task {summary['task']}   source: {summary.get('source', '')}", "files read:"]
    out += [f"  {f}" for f in summary.get("files", [])]
    splits = summary["splits"]
    labels = list(next(iter(splits.values()))["label_counts"]) if splits else []
    with_lengths = any("token_lengths" in s for s in splits.values())
    header = ["split", "n", *labels]
    if with_lengths:
        header += ["tokens p50/p90/p95/p99/max"]
    rows = []
    for name, s in splits.items():
        row = [name, str(s["n"]), *(str(s["label_counts"].get(k, 0)) for k in labels)]
        if with_lengths:
            t = s.get("token_lengths") or {}
            row.append("/".join(str(t.get(k, "-")) for k in ("p50", "p90", "p95", "p99", "max")))
        rows.append(row)
    out += ["", *_table(header, rows), ""]
    for name, metrics in summary.get("majority_baseline", {}).items():
        values = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        out.append(f"majority baseline on {name}: {values}")
    if example_raw is not None:
        out += ["", "example (raw):"]
        out.append(f"  text_a: {_clip(example_raw.text_a)}")
        if example_raw.text_b is not None:
            out.append(f"  text_b: {_clip(example_raw.text_b)}")
        label = str(example_raw.label)
        names = TASKS[summary["task"]].label_names if summary["task"] in TASKS else ()
        if names and isinstance(example_raw.label, int) and 0 <= example_raw.label < len(names):
            label += f" ({names[example_raw.label]})"
        out.append(f"  label:  {label}   uid: {example_raw.uid}")
    if example_rendered:
        out += ["example (rendered):", f"  {_clip(example_rendered, 600)}"]
    return "\n".join(out)
