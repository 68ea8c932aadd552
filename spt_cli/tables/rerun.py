"""A rerun of some of a table's jobs against the table's own records: the same numbers? how
long now? and what the whole table would take at the rerun's per-method speed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Key = tuple[str, str, int]  # (task, method, seed)


def read_records(folder: Path) -> dict[Key, dict[str, Any]]:
    """Record files ``<task>/<method>/*.json`` of a folder, by (task, method, seed)."""
    found: dict[Key, dict[str, Any]] = {}
    for path in sorted(folder.glob("*/*/*.json")):
        rec = json.loads(path.read_text())
        found[(str(rec["task"]), str(rec["method"]), int(rec["seed"]))] = rec
    return found


def same_numbers(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two records of one job: dev, test, the selected layers."""
    return [k for k in ("dev", "test", "selected_layers") if old.get(k) != new.get(k)]


def compare_rerun(
    table: Path, rerun: Path, queues: float = 2.0, like: Callable[[Key], bool] | None = None
) -> str:
    """Markdown: per method, the rerun's summed run time against the same jobs in ``table``,
    their ratio, and the table's total run time scaled by it (projected); the projected wall
    time on ``queues`` parallel one-thread queues; and every job whose numbers moved.

    ``like``: the jobs whose two runs started alike (e.g. both computing the frozen lower
    states, or both reading them); a method's ratio comes from those of its jobs (from all of
    them when it has none), and the jobs column counts them."""
    old, new = read_records(table), read_records(rerun)
    if not new:
        raise ValueError(f"no records under {rerun}: run `fewshot_table.py table --records`")
    missing = sorted(k for k in new if k not in old)
    if missing:
        raise ValueError(f"{len(missing)} rerun jobs are not in {table}, e.g. {missing[0]}")
    lines = [
        "| method | jobs | table (s) | rerun (s) | rerun / table | table, all seeds (h) "
        "| projected (h) |",
        "|:--|--:|--:|--:|--:|--:|--:|",
    ]
    moved: list[str] = []
    old_s = projected_s = 0.0
    for method in sorted({m for _, m, _ in new}):
        keys = [k for k in new if k[1] == method]
        timed = [k for k in keys if like is None or like(k)] or keys
        before = sum(float(old[k]["wall_time_s"]) for k in timed)
        after = sum(float(new[k]["wall_time_s"]) for k in timed)
        total = sum(float(r["wall_time_s"]) for k, r in old.items() if k[1] == method)
        ratio = after / before
        old_s += total
        projected_s += total * ratio
        lines.append(
            f"| {method} | {len(timed)} | {before:.0f} | {after:.0f} | {ratio:.3f} "
            f"| {total / 3600:.2f} | {total * ratio / 3600:.2f} |"
        )
        moved += [f"{k[0]} {k[1]} seed {k[2]}: {', '.join(d)}"
                  for k in sorted(keys) if (d := same_numbers(old[k], new[k]))]  # fmt: skip
    old_h, new_h = old_s / 3600, projected_s / 3600
    lines += [
        f"| all | {len(new)} | | | {new_h / old_h:.3f} | {old_h:.2f} | {new_h:.2f} |",
        "",
        f"Projected table: {new_h:.2f} h of run time, {new_h / queues:.2f} h of wall time on "
        f"{queues:g} one-thread queues if they never wait (the table's own: {old_h:.2f} h, "
        f"{old_h / queues:.2f} h).",
        "",
        f"Jobs whose numbers moved: {len(moved)} of {len(new)}.",
        *[f"- {m}" for m in moved],
    ]
    return "\n".join(lines)
