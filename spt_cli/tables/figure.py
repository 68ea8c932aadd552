"""The data of `layers.png` (per-layer selection frequency and mean final gate probability);
plots.plot_layer_maps draws it."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from spt_cli.plots import plot_layer_maps
from spt_cli.tables.aggregate import Table, _task_sort_key, method_key
from spt_cli.tables.records import RunRecord
from spt_cli.tables.render import task_label


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
            order = (gi, method_key(method, table.rows), _task_sort_key(task))
            rows.append((order, label, recs))
    rows.sort(key=lambda row: row[0])
    return [(label, recs) for _, label, recs in rows]


def plot_layers(result: Table, path: Path) -> bool:
    """Write `layers.png` (selection frequency and mean final gate probability per layer).
    Returns False, writing nothing, when no completed run has selected layers."""
    rows = _layer_rows(result)
    if not rows:
        return False
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
    labels = [f"{label} (n={len(recs)})" for label, recs in rows]
    plot_layer_maps(labels, freq, gates, path)
    return True
