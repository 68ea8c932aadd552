"""`spt-run table`: aggregate run directories into paper-style tables and a layer figure.

Reads every run's `results.json` (schema in docs/architecture.md) below a multirun directory
or a glob, the `failed.json` of failed sweep jobs, and Hydra run directories that wrote neither
(killed or still running). Rows are methods, columns tasks + Avg; a cell is the mean ± sample
std over seeds of the task's main test metric x100. Nothing is dropped silently: cells averaged
over fewer seeds than their column are marked, and failed, missing and duplicate runs are
listed under each table.

Modules: `records` reads run directories, `aggregate` builds the tables, `render` writes
markdown / CSV / LaTeX, `figure` draws `layers.png`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from spt_cli.errors import ConfigError
from spt_cli.files import write_text
from spt_cli.tables.aggregate import Cell, GroupTable, Table, build_table
from spt_cli.tables.figure import plot_layers
from spt_cli.tables.records import RunRecord, collect_runs
from spt_cli.tables.render import format_params, task_label, to_csv, to_latex, to_markdown

__all__ = [
    "Cell",
    "GroupTable",
    "RunRecord",
    "Table",
    "build_table",
    "collect_runs",
    "format_params",
    "plot_layers",
    "run_table",
    "task_label",
    "to_csv",
    "to_latex",
    "to_markdown",
    "write_outputs",
]


def write_outputs(result: Table, out_dir: Path) -> list[Path]:
    """table.md, table.csv, table.tex and (when any run selected layers) layers.png."""
    files = []
    for name, text in (
        ("table.md", to_markdown(result)),
        ("table.csv", to_csv(result)),
        ("table.tex", to_latex(result)),
    ):
        files.append(write_text(out_dir / name, text))
    if plot_layers(result, out_dir / "layers.png"):
        files.append(out_dir / "layers.png")
    return files


def run_table(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """`spt-run table runs=<multirun dir or glob>`: aggregate, print markdown, write files."""
    runs = cfg.runs  # conf/config.yaml defaults it to null
    if runs is None or (isinstance(runs, str) and not runs.strip()):
        raise ConfigError(
            "table needs runs=<multirun dir or glob>; e.g. spt-run table runs=outputs/multirun/..."
        )
    patterns = [str(runs)] if isinstance(runs, str | Path) else [str(p) for p in runs]
    records = collect_runs(patterns, exclude=out_dir)
    if not records:
        raise ConfigError(
            f"table: no results.json or Hydra run directory under {', '.join(patterns)}; "
            "pass the multirun directory (outputs/multirun/STAGE/DATE) or a quoted glob"
        )
    result = build_table(records)
    files = write_outputs(result, Path(out_dir))
    print(to_markdown(result), end="")
    n_failed = sum(len(t.failed) for t in result.groups) + len(result.unattributed)
    return {"n_runs": len(records), "n_failed": n_failed, "files": [str(f) for f in files]}
