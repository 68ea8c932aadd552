"""The few-shot comparison of docs/results.md: MiniLM-L6, LM-BFF 16-shot splits, every method.

    python scripts/fewshot_table.py grid [METHOD ...]    # learning-rate grid, chosen on dev
    python scripts/fewshot_table.py choose               # results/fewshot/choices.json
    python scripts/fewshot_table.py table [METHOD ...] [--seeds 13,21] [--tasks rte,mrpc]
                                                         # chosen settings x tasks x seeds
    python scripts/fewshot_table.py report [--seeds 13,21]  # spt-run table -> results/fewshot/table

Protocol (the same for every method): each method's learning rate (fine-tuning: backbone
learning rate and steps) is chosen from a small grid on the mean dev accuracy over the five
single-sentence tasks (SST-2, MR, MPQA, Subj, TREC) and seeds 13 and 21, then run on every task
and all five seeds. One choice per method, not per task as LM-BFF does: the grid on every task
would triple the table's cost, and on the pair tasks MiniLM stays at chance, so their dev
scores carry no signal for a learning rate. Test is never looked at to choose.

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
import time
from pathlib import Path

from spt_cli.files import write_json, write_text

REPO = Path(__file__).resolve().parents[1]
GRID_TASKS = ("sst2", "mr", "mpqa", "subj", "trec")
# QQP: the data mirror has no labelled test file for it (LM-BFF's k-shot QQP has train/dev only).
TASKS = ("sst2", "mr", "mpqa", "subj", "trec", "mnli", "mrpc", "qnli", "rte", "cr")
GRID_SEEDS = (13, 21)
SEEDS = (13, 21, 42, 87, 100)
COMMON = ["experiment=cpu_fewshot", "logger=none", "trainer.num_threads=1",
          "lower_cache_dir=outputs/lower_states"]  # fmt: skip
LRS = ("trainer.lr=1e-3", "trainer.lr=5e-3", "trainer.lr=2e-2")
# method -> (stage, fixed overrides, grid of settings)
METHODS: dict[str, tuple[str, list[str], list[list[str]]]] = {
    "head_only": ("train", ["method=head_only"], [[lr] for lr in LRS]),
    "prompt_tuning": ("train", ["method=prompt_tuning"], [[lr] for lr in LRS]),
    "deep_prompt": ("train", ["method=deep_prompt"], [[lr] for lr in LRS]),
    "ptuning_v2": ("train", ["method=ptuning_v2"], [[lr] for lr in LRS]),
    "lpt": ("train", ["method=lpt"], [[lr] for lr in LRS]),
    # A new random set of K = 2 blocks per seed (SPT's budget).
    "random_layers": (
        "train",
        ["method=random_layers", "method.layer_seed=${seed}"],
        [[lr] for lr in LRS],
    ),
    "finetune": (
        "train",
        ["method=finetune"],
        [
            [f"trainer.backbone_lr={blr}", f"trainer.max_steps={steps}"]
            for blr in ("2e-5", "1e-4")
            for steps in (100, 300)
        ],
    ),
    # SPT: search + retrain with the search defaults chosen in docs/search.md.
    "spt": ("search", ["method=spt"], [[lr] for lr in LRS]),
}
GRID = REPO / "results" / "fewshot_grid"
TABLE = REPO / "results" / "fewshot"


def spt_run(args: list[str]) -> int:
    cmd = [sys.executable, "-m", "spt_cli.cli", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=REPO, env={**os.environ, "WANDB_MODE": "disabled"})


def sweep(method: str, setting: list[str], tasks, seeds, records: Path, common=COMMON) -> int:
    """One ``spt-run -m`` over tasks x seeds for a method at one setting (resumable: what is
    recorded is skipped)."""
    stage, fixed, _ = METHODS[method]
    return spt_run([stage, *common, *fixed, *setting, f"records={records}", "-m",
                    f"dataset={','.join(tasks)}", f"seed={','.join(map(str, seeds))}"])  # fmt: skip


def cmd_grid(opts: argparse.Namespace) -> int:
    code = 0
    for method in opts.methods or list(METHODS):
        for setting in METHODS[method][2]:
            code = sweep(method, setting, GRID_TASKS, GRID_SEEDS, GRID) or code
    return code


def _setting_of(record: dict, grid: list[list[str]]) -> int | None:
    """Index of the grid setting a record was run with, read from its config (its override
    text is Hydra's rewrite: ``trainer.lr=1e-3`` comes back as ``0.001``)."""
    from spt_cli.tables.select import holds

    for i, setting in enumerate(grid):
        if all(holds(record.get("config"), item) for item in setting):
            return i
    return None


def choices() -> dict[str, dict]:
    """Per method, the grid setting with the best mean dev over every grid task and seed."""
    out = {}
    for method, (_, _, grid) in METHODS.items():
        scores: dict[int, list[float]] = {i: [] for i in range(len(grid))}
        for path in GRID.glob(f"*/{method}/*.json"):
            rec = json.loads(path.read_text())
            i = _setting_of(rec, grid)
            if i is not None and rec.get("dev"):
                scores[i].append(rec["dev"][rec["main_metric"]])
        expected = len(GRID_TASKS) * len(GRID_SEEDS)
        complete = {i: v for i, v in scores.items() if len(v) == expected}
        if len(complete) < len(grid):
            continue  # the grid is not finished for this method
        means = {i: statistics.fmean(v) for i, v in complete.items()}
        best = max(means, key=lambda i: (means[i], -i))  # ties: the earlier setting
        out[method] = {
            "setting": grid[best],
            "dev_mean": {" ".join(grid[i]): round(100 * m, 2) for i, m in means.items()},
        }
    return out


def cmd_choose(opts: argparse.Namespace) -> int:
    found = choices()
    TABLE.mkdir(parents=True, exist_ok=True)
    # Atomic: a second queue may be reading the file while this one chooses.
    write_json(TABLE / "choices.json", found)
    for method, c in found.items():
        print(f"{method:>14}: {' '.join(c['setting'])}   (mean dev x100: {c['dev_mean']})")
    missing = [m for m in METHODS if m not in found]
    if missing:
        print(f"grid not finished for: {', '.join(missing)}")
    return 0


def run_chosen(methods, tasks, seeds, records: Path, common=COMMON) -> int:
    """Every method at its grid choice (results/fewshot/choices.json) over tasks x seeds."""
    chosen = json.loads((TABLE / "choices.json").read_text())
    code, t0 = 0, time.time()
    for method in methods:
        if method not in chosen:
            print(f"skip {method}: the grid has chosen no setting for it yet (grid, choose)")
            continue
        code = sweep(method, chosen[method]["setting"], tasks, seeds, records, common) or code
    print(f"table commands: {time.time() - t0:.0f} s wall", flush=True)
    return code


def cmd_table(opts: argparse.Namespace) -> int:
    return run_chosen(opts.methods or list(METHODS), opts.tasks, opts.seeds, TABLE)


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
    sub.add_parser("grid").add_argument("methods", nargs="*", choices=list(METHODS))
    p = sub.add_parser("table")
    p.add_argument("methods", nargs="*", choices=list(METHODS))
    # A table can grow a few seeds at a time (every method on seed 13 first, say), so that a
    # session that ends early leaves whole columns rather than whole rows.
    p.add_argument("--seeds", type=seed_list, default=SEEDS)
    p.add_argument("--tasks", type=lambda s: s.split(","), default=TASKS)
    sub.add_parser("choose")
    # --seeds: the table at the seeds every method has finished, while it is still growing
    p = sub.add_parser("report")
    p.add_argument("--seeds", type=seed_list, default=None)
    opts = parser.parse_args()
    return {"grid": cmd_grid, "choose": cmd_choose, "table": cmd_table,
            "report": cmd_report}[opts.cmd](opts)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
