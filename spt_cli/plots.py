"""Every figure spt-cli draws, each from plain data its caller hands over: ``gates.png``
(search), ``controls.png`` (controls), ``layers.png`` (table) and the search study's
percentiles and gate trajectories (``scripts/search_study.py``). Written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spt_cli.files import atomic_write


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG (a reader never sees half of one) and close it."""
    target = Path(path)
    try:
        atomic_write(target, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        _pyplot().close(fig)
    return target


def gate_layers(history: list[dict]) -> list[int]:
    """The layers with a ``gates/layer_XX`` key in some metrics record."""
    keys = {k for r in history for k in r if k.startswith("gates/layer_")}
    return sorted(int(k.rsplit("_", 1)[1]) for k in keys)


def draw_gate_trajectories(ax: Any, history: list[dict], layers: Sequence[int]) -> None:
    """One line per layer: its gate probability (``gates/layer_XX``) over the search steps of
    ``history`` (a search's metrics records)."""
    for layer in layers:
        key = f"gates/layer_{layer:02d}"
        pts = [(r["step"], r[key]) for r in history if key in r]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=f"layer {layer}", lw=1.5)
    ax.set_xlabel("search step")
    ax.set_ylim(0, 1)


def plot_gates(
    history: list[dict], final: dict[int, float], selected: list[int], path: str | Path
) -> Path | None:
    """``gates.png``: the gate trajectories of one search and a bar chart of its final gates,
    the selected layers in red. None, writing nothing, without gates."""
    layers = sorted(final)
    if not layers:
        return None
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    draw_gate_trajectories(ax1, history, layers)
    ax1.set_ylabel("gate probability a_l")
    ax1.set_title("Gate probabilities during search")
    ax1.legend(fontsize=7, ncol=2)
    colors = ["tab:red" if layer in selected else "tab:gray" for layer in layers]
    ax2.bar(range(len(layers)), [final[layer] for layer in layers], color=colors)
    ax2.set_xticks(range(len(layers)), [str(layer) for layer in layers])
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("layer")
    ax2.set_title("Final (red: selected)")
    fig.tight_layout()
    return _save(fig, path)


def plot_gate_runs(runs: Sequence[tuple[str, list[dict]]], path: str | Path) -> Path:
    """The gate trajectories of several searches side by side: ``(title, metrics records of
    the search phase)`` each."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.4), squeeze=False)
    for ax, (title, history) in zip(axes[0], runs):
        draw_gate_trajectories(ax, history, gate_layers(history))
        ax.set_title(title, fontsize=8)
    axes[0][0].set_ylabel("gate a_l")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_controls(record: dict[str, Any], chosen: str | None, path: str | Path) -> Path:
    """``controls.png``: dev (bars) and test (dots) of every retrained subset of a control
    record, best dev first; the subset keyed ``chosen`` (the searched set) in red, the named
    sets retrained beside the sample (the record's ``extra``: the last K, the middle K) in blue."""
    plt = _pyplot()
    named = {k: v for k, v in record.get("extra", {}).items() if k not in record["subsets"]}
    items = sorted(
        [*record["subsets"].items(), *named.items()], key=lambda kv: (-kv[1]["dev"], kv[0])
    )
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(items) + 2), 3.6))
    xs = range(len(items))
    colors = [
        "tab:red" if k == chosen else "tab:blue" if k in named else "tab:gray" for k, _ in items
    ]
    ax.bar(xs, [v["dev"] for _, v in items], color=colors, alpha=0.7, label="dev")
    ax.plot(xs, [v["test"] for _, v in items], "ko", ms=4, label="test")
    ax.set_xticks(list(xs), [f"[{k}]" for k, _ in items], rotation=60, fontsize=7)
    ax.set_ylabel(record.get("main_metric", "score"))
    what = f"{len(record['subsets'])} {record['k']}-subsets" if record["subsets"] else "no sample"
    title = f"{record['task']} seed {record['seed']}: {what} retrained"
    notes = [*(["red: searched"] if chosen else []), *(["blue: named"] if named else [])]
    ax.set_title(title + (f" ({', '.join(notes)})" if notes else ""), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_layer_maps(labels: list[str], freq: Any, gates: Any, path: str | Path) -> Path:
    """``layers.png``: two row x layer heat maps, the fraction of seeds that selected a layer
    (``freq``) and the mean final gate probability (``gates``, NaN where none was recorded,
    drawn grey)."""
    import matplotlib
    import numpy as np

    plt = _pyplot()
    rows, num_layers = freq.shape
    width = max(8.0, 2 * (2.0 + 0.32 * num_layers))
    fig, axes = plt.subplots(1, 2, figsize=(width, 1.2 + 0.45 * rows), squeeze=False)
    panels = (
        (axes[0, 0], freq, "Selected in fraction of seeds", "Blues"),
        (axes[0, 1], np.ma.masked_invalid(gates), "Mean final gate probability", "Oranges"),
    )
    for ax, data, title, cmap_name in panels:
        # grey = no gate probability recorded, distinct from a probability of 0
        cmap = matplotlib.colormaps[cmap_name].with_extremes(bad="lightgray")
        image = ax.imshow(data, aspect="auto", vmin=0.0, vmax=1.0, cmap=cmap)
        if num_layers * rows <= 400:  # numbers stay legible up to ~24 layers x 16 rows
            for (i, j), value in np.ndenumerate(np.ma.filled(data, np.nan)):
                if np.isfinite(value) and value > 0:
                    color = "white" if value > 0.6 else "black"
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color=color)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer (block index)")
        ax.set_xticks(range(num_layers))
        ax.set_xticklabels([str(i) for i in range(num_layers)], fontsize=7)
        ax.set_yticks(range(rows))
        ax.set_yticklabels(labels, fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout()
    return _save(fig, path, dpi=120)


def plot_percentiles(groups: dict[str, list[float]], title: str, path: str | Path) -> Path:
    """Dev percentiles of the selected sets, one column of dots per group with its mean, and
    the lines of chance (50) and the target (70)."""
    import statistics

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.1 * len(groups) + 2, 3.8))
    for i, vals in enumerate(groups.values()):
        if vals:
            jitter = [i + 0.25 * ((j % 5) - 2) / 2 for j in range(len(vals))]
            ax.plot(jitter, vals, "o", alpha=0.45, ms=4)
            ax.plot([i - 0.3, i + 0.3], [statistics.fmean(vals)] * 2, "k-", lw=2)
    ax.axhline(50, color="gray", ls="--", lw=1, label="chance (a random K-subset)")
    ax.axhline(70, color="tab:red", ls=":", lw=1, label="target 70")
    ax.set_xticks(range(len(groups)), list(groups), rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("dev percentile of the selected set")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)
