"""`spt-run table`: aggregate runs into paper-style tables, a paired comparison and a figure.

Reads every run's `results.json` (schema in docs/architecture.md) below a multirun directory
or a glob, compact record files (`records=DIR`, any depth), the `failed.json` of failed sweep
jobs, and Hydra run directories that wrote neither (killed or still running); a skipped sweep
job's `same_as.json` is followed to its original. Rows are methods, columns tasks + Avg; a cell
is the mean ± sample std over seeds of the task's main test metric x100. A cell run with several
settings (a grid) keeps the one best on dev (`table.select=dev`) or is refused
(`table.select=all`). Nothing is dropped silently: cells averaged over fewer seeds than their
column are marked; the choices, empty cells, failed, missing and duplicate runs are listed under
each table; the reference method (`table.reference`, SPT) is compared with each other row
per seed (sign test). Row order: `table.rows`.

Modules: `records` reads runs, `collect` finds them, `select` tells settings apart and chooses,
`aggregate` builds the tables, `paired` compares SPT with the baselines, `render` writes
markdown / CSV / LaTeX, `figure` computes `layers.png` (drawn by `spt_cli.plots`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from spt_cli.config import SELECT_MODES
from spt_cli.errors import ConfigError
from spt_cli.files import write_json, write_text
from spt_cli.tables.aggregate import Cell, GroupTable, Layout, Table, build_table
from spt_cli.tables.collect import collect_runs
from spt_cli.tables.figure import plot_layers
from spt_cli.tables.grid import GRID_FILE, grid_choices, read_grid
from spt_cli.tables.paired import compare, sign_test, to_paired_csv
from spt_cli.tables.records import RunRecord
from spt_cli.tables.render import (
    format_params,
    task_label,
    to_choices_csv,
    to_csv,
    to_latex,
    to_markdown,
)

__all__ = [
    "Cell",
    "GroupTable",
    "Layout",
    "RunRecord",
    "Table",
    "build_table",
    "collect_runs",
    "compare",
    "format_params",
    "plot_layers",
    "run_table",
    "sign_test",
    "task_label",
    "to_choices_csv",
    "to_csv",
    "to_latex",
    "to_markdown",
    "to_paired_csv",
    "write_outputs",
]


def write_outputs(result: Table, out_dir: Path) -> list[Path]:
    """table.md, table.csv, table.tex; paired.csv when the reference method and another row
    share a seed; choices.csv when a cell had several settings; layers.png when any run selected
    layers."""
    files = []
    outputs = [
        ("table.md", to_markdown(result)),
        ("table.csv", to_csv(result)),
        ("table.tex", to_latex(result)),
    ]
    if any(compare(g) for g in result.groups):
        outputs.append(("paired.csv", to_paired_csv(result)))
    if any(g.choices for g in result.groups):
        outputs.append(("choices.csv", to_choices_csv(result)))
    for name, text in outputs:
        files.append(write_text(out_dir / name, text))
    if plot_layers(result, out_dir / "layers.png"):
        files.append(out_dir / "layers.png")
    return files


def _of_seeds(records: list[RunRecord], seeds: Any) -> list[RunRecord]:
    """The records of `table.seeds` (all when null); says how many it left out."""
    if seeds is None:
        return records
    try:
        wanted = {int(s) for s in (seeds if isinstance(seeds, ListConfig | list) else [seeds])}
    except (TypeError, ValueError):
        raise ConfigError(f"table.seeds={seeds!r}: give a list of integers, e.g. "
                          "table.seeds=[13,21]") from None  # fmt: skip
    kept = [r for r in records if r.seed in wanted]
    if not kept:
        raise ConfigError(f"table.seeds={sorted(wanted)}: no run of these seeds; drop the key "
                          "to see every seed")  # fmt: skip
    if len(kept) < len(records):
        print(f"table: table.seeds={sorted(wanted)}: left out {len(records) - len(kept)} "
              "run(s) of other seeds", file=sys.stderr)  # fmt: skip
    return kept


def _write_grid_choices(records: list[RunRecord], grids: Any, out_dir: Path) -> Path:
    """`table.grids`: one setting per method of the grids, written to choices.json."""
    names = [str(g) for g in grids] if isinstance(grids, ListConfig | list) else [str(grids)]
    read = [read_grid(name) for name in names]
    found = grid_choices(records, read)
    for method, choice in found.items():
        setting = " ".join(choice["setting"])
        print(f"{method:>14}: {setting}   (mean dev x100: {choice['dev_mean']})", file=sys.stderr)
    every = [m for grid in read for m in grid.methods]
    missing = [m for m in every if m not in found]
    if missing:
        print(f"table.grids: grid not finished for: {', '.join(missing)}", file=sys.stderr)
    return write_json(out_dir / GRID_FILE, found)


def run_table(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """`spt-run table runs=<folder or glob>`: aggregate, print markdown, write files."""
    runs = cfg.runs  # conf/config.yaml defaults it to null
    if runs is None or (isinstance(runs, str) and not runs.strip()):
        raise ConfigError(
            "table needs runs=<multirun dir, records folder or glob>; "
            "e.g. spt-run table runs=outputs/multirun/... or runs=results/fewshot"
        )
    select = str(cfg.table.select)
    if select not in SELECT_MODES:
        raise ConfigError(f"table.select={select!r}; choose one of: {', '.join(SELECT_MODES)}")
    patterns = [str(runs)] if isinstance(runs, str | Path) else [str(p) for p in runs]
    records = collect_runs(patterns, exclude=out_dir)
    if not records:
        raise ConfigError(
            f"table: no results.json, record or Hydra run directory under "
            f"{', '.join(patterns)}; pass the multirun directory (outputs/multirun/STAGE/DATE), "
            "a records folder or a quoted glob"
        )
    records = _of_seeds(records, cfg.table.seeds)
    commits = sorted({r.commit or "unknown" for r in records if r.completed})
    if len(commits) > 1:
        # Numbers of several code versions side by side: say so, the reader decides.
        print(f"table: the runs come from {len(commits)} commits: {', '.join(commits)}",
              file=sys.stderr)  # fmt: skip
    result = build_table(records, select, Layout.from_conf(cfg.table))
    files = write_outputs(result, Path(out_dir))
    if cfg.table.grids is not None:
        files.append(_write_grid_choices(records, cfg.table.grids, Path(out_dir)))
    print(to_markdown(result), end="")
    n_failed = sum(len(t.failed) for t in result.groups) + len(result.unattributed)
    return {"n_runs": len(records), "n_failed": n_failed, "files": [str(f) for f in files]}
