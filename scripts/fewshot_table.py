"""The few-shot comparison of docs/results.md: MiniLM-L6, LM-BFF 16-shot splits, every method.

    python scripts/fewshot_table.py grid [METHOD ...]    # the grid experiments (below), -m
    python scripts/fewshot_table.py choose               # spt-run table table.grids=[...]
                                                         # -> results/fewshot/choices.json
    python scripts/fewshot_table.py table [METHOD ...] [--seeds 13,21] [--tasks rte,mrpc]
                                                         # chosen settings x tasks x seeds
    python scripts/fewshot_table.py report [--seeds 13,21]  # spt-run table -> results/fewshot/table
    python scripts/fewshot_table.py table --seeds 13 --records results/fewshot_rerun \
        --lower-cache outputs/lower_states_rerun       # one seed again, into a fresh folder
    python scripts/fewshot_table.py compare results/fewshot_rerun  # its run times against the
                                                         # table's, the same numbers?, projection

Protocol (the same for every method): each method's learning rate (fine-tuning: backbone
learning rate and steps) is chosen from a small grid on the mean dev accuracy over the five
single-sentence tasks (SST-2, MR, MPQA, Subj, TREC) and seeds 13 and 21, then run on every task
and all five seeds. The grids are experiment files (conf/experiment/grid_fewshot_*.yaml, their
hydra.sweeper.params) and the choice is `spt-run table`'s (table.grids, spt_cli/tables/grid.py);
this script only says which runs to launch. One choice per method, not per task as LM-BFF
does: the grid on every task would triple the table's cost, and on the pair tasks MiniLM stays
at chance, so their dev scores carry no signal for a learning rate. Test is never looked at to
choose.

Every run leaves a record (results/fewshot_grid/, results/fewshot/); rerunning a command skips
what is recorded. Runs use one torch thread so that two commands can share the 2 cores (see
scripts/search_study.py); frozen lower-layer states go to outputs/lower_states and are shared
by later runs (other methods and seeds: the test sets are the same files).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spt_cli.files import write_text

REPO = Path(__file__).resolve().parents[1]
# QQP: the data mirror has no labelled test file for it (LM-BFF's k-shot QQP has train/dev only).
TASKS = ("sst2", "mr", "mpqa", "subj", "trec", "mnli", "mrpc", "qnli", "rte", "cr")
SEEDS = (13, 21, 42, 87, 100)
# The grid experiments (conf/experiment/grid_fewshot_*.yaml: methods, settings, tasks, seeds)
# and the stage that runs them, in the table's method order.
GRIDS = {
    "grid_fewshot_prompts": "train",
    "grid_fewshot_random_layers": "train",
    "grid_fewshot_finetune": "train",
    "grid_fewshot_spt": "search",  # search + retrain with the defaults of docs/search.md
}
# Set by grid_fewshot_random_layers for the few-shot runs; spelled here for other experiments.
FIXED = {"random_layers": ["method.layer_seed=${seed}"]}
GRID = REPO / "results" / "fewshot_grid"
TABLE = REPO / "results" / "fewshot"


def spt_run(args: list[str]) -> int:
    cmd = [sys.executable, "-m", "spt_cli.cli", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=REPO, env={**os.environ, "WANDB_MODE": "disabled"})


def grid_of() -> dict[str, str]:
    """method -> the grid experiment that sweeps it."""
    from spt_cli.tables.grid import read_grid

    return {m: name for name in GRIDS for m in read_grid(name).methods}


GRID_OF = grid_of()  # read once: every command looks methods up in it
METHODS = list(GRID_OF)


def cmd_grid(opts: argparse.Namespace) -> int:
    code, wanted = 0, opts.methods or METHODS
    for name, stage in GRIDS.items():
        methods = [m for m, grid in GRID_OF.items() if grid == name and m in wanted]
        if methods:
            args = [stage, f"experiment={name}", "logger=none", f"method={','.join(methods)}"]
            code = spt_run([*args, "-m"]) or code
    return code


def cmd_choose(opts: argparse.Namespace) -> int:
    """``spt-run table table.grids=[...]`` over the grid records -> results/fewshot/choices.json."""
    with tempfile.TemporaryDirectory() as tmp:
        grids = f"table.grids=[{','.join(GRIDS)}]"
        code = spt_run(["table", f"runs={GRID}", "logger=none", grids, f"hydra.run.dir={tmp}"])
        if code == 0:
            # Atomic: a second queue may be reading the file while this one chooses.
            write_text(TABLE / "choices.json", (Path(tmp) / "choices.json").read_text())
    return code


def run_chosen(
    methods, tasks, seeds, records: Path, common: list[str] | None = None, extra: list[str] = ()
) -> int:
    """Every method at its grid choice (results/fewshot/choices.json) over tasks x seeds: with
    its grid experiment (few-shot), or with the ``common`` overrides (another experiment);
    ``extra`` overrides go last."""
    chosen = json.loads((TABLE / "choices.json").read_text())
    stages = {m: GRIDS[g] for m, g in GRID_OF.items()}
    code, t0 = 0, time.time()
    for method in methods:
        if method not in chosen:
            print(f"skip {method}: the grid has chosen no setting for it yet (grid, choose)")
            continue
        setup = (
            [f"experiment={GRID_OF[method]}", "logger=none"]
            if common is None
            else [*common, *FIXED.get(method, [])]
        )
        code = spt_run([stages[method], *setup, f"method={method}", *chosen[method]["setting"],
                        f"records={records}", *extra, "-m", f"dataset={','.join(tasks)}",
                        f"seed={','.join(map(str, seeds))}"]) or code  # fmt: skip
    print(f"table commands: {time.time() - t0:.0f} s wall", flush=True)
    return code


def cmd_table(opts: argparse.Namespace) -> int:
    extra = [f"lower_cache_dir={opts.lower_cache}"] if opts.lower_cache else []
    return run_chosen(opts.methods or list(METHODS), opts.tasks, opts.seeds, opts.records,
                      extra=extra)  # fmt: skip


# Methods whose first prompt is above the input, so their runs read the frozen lower states
# (lower_cache_dir) when an earlier run computed them. The table's runs on the grid's five
# tasks found them computed by the grid; a rerun with its own --lower-cache computes them.
READS_LOWER_STATES = {"head_only", "lpt", "random_layers", "spt"}


def cmd_compare(opts: argparse.Namespace) -> int:
    from spt_cli.tables.grid import read_grid
    from spt_cli.tables.rerun import compare_rerun

    grid_tasks = set(read_grid("grid_fewshot_prompts").tasks)

    def like(key: tuple[str, str, int]) -> bool:
        task, method, _ = key
        return not (method in READS_LOWER_STATES and task in grid_tasks)

    text = compare_rerun(TABLE, opts.rerun, queues=2, like=like)
    print(text)
    write_text(opts.rerun / "comparison.md", text + "\n")
    return 0


def seed_list(text: str) -> list[int]:
    """``13,21`` -> [13, 21] (a command-line option)."""
    return [int(x) for x in text.split(",")]


def machine_time(records: Path) -> str:
    """Runs and summed run wall time of a folder of records, per method and in all."""
    per: dict[str, list[float]] = {}
    for path in records.glob("*/*/*.json"):
        rec = json.loads(path.read_text())
        per.setdefault(rec["method"], []).append(float(rec.get("wall_time_s") or 0.0))
    lines = [f"{m:>14}: {len(v):4d} runs, {sum(v) / 60:7.1f} min (mean {statistics.fmean(v):.0f} s)"
             for m, v in sorted(per.items())]  # fmt: skip
    total = [t for v in per.values() for t in v]
    lines.append(f"{'all':>14}: {len(total):4d} runs, {sum(total) / 3600:7.2f} h of run wall time")
    return "\n".join(lines)


def choices_markdown(found: dict[str, dict]) -> str:
    """The grid as a markdown table: mean dev x100 of every setting, the chosen one in bold."""
    lines = ["| method | setting: mean dev x100 over 5 tasks x seeds 13 21 (chosen in bold) |",
             "|:--|:--|"]  # fmt: skip
    for method, c in found.items():
        chosen = " ".join(c["setting"])
        cells = [f"**{k}: {v:.1f}**" if k == chosen else f"{k}: {v:.1f}"
                 for k, v in c["dev_mean"].items()]  # fmt: skip
        lines.append(f"| {method} | {'; '.join(cells)} |")
    return "\n".join(lines)


def report(records: Path, seeds: list[int] | None = None) -> int:
    """``spt-run table`` over a folder of records (only `seeds` when given), written to
    ``<records>/table``, and the machine time the records took (``machine_time.txt``)."""
    out = records / "table"
    only = [f"table.seeds=[{','.join(map(str, seeds))}]"] if seeds else []
    code = spt_run(["table", f"runs={records}", f"hydra.run.dir={out}", "logger=none", *only])
    text = machine_time(records)
    print(text)
    write_text(out / "machine_time.txt", text + "\n")
    return code


def cmd_report(opts: argparse.Namespace) -> int:
    code = report(TABLE, opts.seeds)
    grid = choices_markdown(json.loads((TABLE / "choices.json").read_text()))
    print(grid)
    write_text(TABLE / "table" / "grid.md", grid + "\n")
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("grid").add_argument("methods", nargs="*", choices=METHODS)
    p = sub.add_parser("table")
    p.add_argument("methods", nargs="*", choices=METHODS)
    # A table can grow a few seeds at a time (every method on seed 13 first, say), so that a
    # session that ends early leaves whole columns rather than whole rows.
    p.add_argument("--seeds", type=seed_list, default=SEEDS)
    p.add_argument("--tasks", type=lambda s: s.split(","), default=TASKS)
    # A rerun into another folder (and with its own lower-layer states, so that it pays for
    # computing them as a fresh table does) measures today's run times against the table's.
    p.add_argument("--records", type=Path, default=TABLE)
    p.add_argument("--lower-cache", default=None, help="lower_cache_dir for these runs")
    sub.add_parser("choose")
    p = sub.add_parser("compare")
    p.add_argument("rerun", type=Path, help="a folder of rerun records (table --records)")
    # --seeds: the table at the seeds every method has finished, while it is still growing
    p = sub.add_parser("report")
    p.add_argument("--seeds", type=seed_list, default=None)
    opts = parser.parse_args()
    return {"grid": cmd_grid, "choose": cmd_choose, "table": cmd_table,
            "report": cmd_report, "compare": cmd_compare}[opts.cmd](opts)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
