"""`layers.png`: per-layer selection frequency and mean final gate probability."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from spt_cli.files import atomic_write
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
    try:  # atomic: a reader never sees half a PNG
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)
    return True
