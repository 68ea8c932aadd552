"""The figures: each drawn by one function of spt_cli/plots.py, the one module that imports
matplotlib (scripts included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spt_cli import plots

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG"
HISTORY = [
    {"phase": "search", "step": s, "gates/layer_01": 0.5 + 0.01 * s, "gates/layer_03": 0.5}
    for s in range(1, 6)
]


def test_matplotlib_only_in_the_plot_module():
    users = [
        str(p.relative_to(REPO))
        for folder in ("spt_cli", "scripts")
        for p in (REPO / folder).rglob("*.py")
        if "matplotlib" in p.read_text(encoding="utf-8")
    ]
    assert users == ["spt_cli/plots.py"]


def test_gate_plots(tmp_path):
    assert plots.gate_layers(HISTORY) == [1, 3]
    out = plots.plot_gates(HISTORY, {1: 0.55, 3: 0.5}, [1], tmp_path / "gates.png")
    assert out.read_bytes()[:4] == PNG
    assert plots.plot_gates(HISTORY, {}, [], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    runs = plots.plot_gate_runs([("a", HISTORY), ("b", HISTORY[:2])], tmp_path / "runs.png")
    assert runs.read_bytes()[:4] == PNG


def test_other_plots(tmp_path):
    subsets = {"1": {"dev": 0.6, "test": 0.5}, "2": {"dev": 0.7, "test": 0.6}}
    record = {"task": "sst2", "seed": 13, "k": 1, "main_metric": "accuracy", "subsets": subsets}
    assert plots.plot_controls(record, "2", tmp_path / "c.png").read_bytes()[:4] == PNG
    freq, gates = np.array([[0.0, 1.0]]), np.array([[np.nan, 0.8]])
    assert plots.plot_layer_maps(["sst2"], freq, gates, tmp_path / "l.png").read_bytes()[:4] == PNG
    groups = {"none": [40.0, 60.0], "empty": []}
    assert plots.plot_percentiles(groups, "t", tmp_path / "p.png").read_bytes()[:4] == PNG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "l.png", "p.png"]
