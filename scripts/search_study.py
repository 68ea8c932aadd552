"""Does SPT-DARTS pick better layers than chance? The search variants of docs/search.md.

    python scripts/search_study.py controls            # every K-subset retrained per task-seed
    python scripts/search_study.py run none centred    # the searches of some variants
    python scripts/search_study.py report              # docs/search.md's tables and figures

Everything is resumable: controls are kept per subset in results/controls/, searches as records
in results/search_study/<variant>/ (a rerun skips what is recorded). Searches run without a
retrain: the retrain of the set a search selects is one of the controls, computed once per
task-seed (the same seed, data and trainer settings give the same model), so a variant costs
only its searches. Runs use one torch thread: two such jobs on the 2 cores finish 1.37x more
work per hour than one job with two threads (measured: 56 s vs 38 s per MR retrain).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SINGLE = ("sst2", "mr", "subj", "mpqa", "trec")  # MiniLM learns these at 16 shots
PAIRS = ("rte", "mrpc")  # hard cases: the backbone stays at chance
SEEDS = (13, 21, 42, 87, 100)
COMMON = ["experiment=cpu_fewshot", "logger=none", "trainer.num_threads=1"]
# The retrain family every variant is measured against: no input prompt, nothing below the
# first selected block (spt_fixed).
FAMILY = ["method.input_prompt=none"]
# The search variants compared, in the report's row order: conf/search_variant/<name>.yaml
# (`spt-run search search_variant=<name>`), where each one's switches are documented.
VARIANTS = ("static", "none", "centred", "budget", "ablation", "wstop", "sgd", "stochastic")
RECORDS = REPO / "results" / "search_study"
CONTROLS = REPO / "results" / "controls"


def spt_run(args: list[str]) -> int:
    """``spt-run`` from this checkout (PYTHONPATH may point at a frozen copy of the code)."""
    cmd = [sys.executable, "-m", "spt_cli.cli", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=REPO, env={**os.environ, "WANDB_MODE": "disabled"})


def tasks(which: str) -> list[str]:
    return list(SINGLE) + (list(PAIRS) if which == "all" else [])


def cmd_controls(opts: argparse.Namespace) -> int:
    datasets = ",".join(tasks(opts.tasks))
    seeds = ",".join(map(str, SEEDS))
    return spt_run(["controls", *COMMON, *FAMILY, "-m", f"dataset={datasets}", f"seed={seeds}"])


def cmd_run(opts: argparse.Namespace) -> int:
    code = 0
    for name in opts.variants:
        sweep = [f"dataset={','.join(tasks(opts.tasks))}", f"seed={','.join(map(str, SEEDS))}"]
        args = ["search", *COMMON, f"search_variant={name}", "retrain=false",
                f"records={RECORDS / name}", "-m", *sweep]  # fmt: skip
        code = spt_run(args) or code
    return code


# -- report --------------------------------------------------------------------------------------
def load_controls() -> dict[tuple[str, int], dict]:
    """(task, seed) -> complete control record of the study's protocol (no input prompt, one
    thread)."""
    from spt_cli.search.study import MAX_SUBSETS, one_thread_no_input_prompt
    from spt_cli.search.study import load_controls as load

    return load(CONTROLS / "minilm" / "16shot", MAX_SUBSETS, one_thread_no_input_prompt)


def load_searches(variant: str) -> dict[tuple[str, int], dict]:
    """(task, seed) -> the variant's 16-shot search record."""
    from spt_cli.search.study import load_searches as load

    found = load(RECORDS / variant, "*/spt/search-16shot-seed*.json")
    return {(rec["task"], rec["seed"]): rec for rec in found}


def study_rows(controls: dict) -> list[dict]:
    """One entry per (variant, task, seed) search, plus the reference rows."""
    from spt_cli.search.study import dev_percentile, entry, reference_entries

    rows = []
    for name in VARIANTS:
        for (task, seed), rec in sorted(load_searches(name).items()):
            diag = rec.get("search_diagnostics") or {}
            item = entry(name, task, seed, rec["selected_layers"], controls.get((task, seed)))
            item["separated"] = bool(diag.get("separated"))
            if diag.get("by_ablation") and controls.get((task, seed)):
                item["ablation_pct"] = dev_percentile(diag["by_ablation"], controls[(task, seed)])
            rows.append(item)
    return rows + reference_entries(controls)


def format_table(rows: list[dict], controls: dict) -> str:
    """Variant x task: mean dev percentile of the selected sets (the single-sentence
    task-seeds with controls), p vs random picks, share of separated searches, test."""
    from spt_cli.search.study import mean, rows_markdown, score_entries

    scored, extra = [], {}
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        scored.append(score_entries(name, mine, controls, SINGLE, PAIRS))
        searches = [r for r in mine if "separated" in r and r["task"] in SINGLE]
        single = [r for r in mine if r["task"] in SINGLE and r.get("dev_pct") is not None]
        extra[name] = {
            "searches": len(searches),
            "separated": mean(float(r["separated"]) for r in searches),
            "ablation_pct": mean(r.get("ablation_pct") for r in single),
        }
    return rows_markdown(scored, extra, SINGLE)


def controls_table(controls: dict) -> str:
    """Per task (mean over its seeds): how far apart the subsets are, and whether dev ranks
    them as test does."""
    from spt_cli.search.study import spread_by_task, spread_markdown

    return spread_markdown(spread_by_task(controls, (*SINGLE, *PAIRS)))


def plot_percentiles(rows: list[dict], path: Path) -> None:
    """Dev percentiles of the single-sentence tasks' selected sets, per variant."""
    from spt_cli.plots import plot_percentiles as plot
    from spt_cli.search.study import RANDOM

    names = [n for n in dict.fromkeys(r["variant"] for r in rows) if n != RANDOM]
    single = [r for r in rows if r["task"] in SINGLE and r.get("dev_pct") is not None]
    groups = {name: [r["dev_pct"] for r in single if r["variant"] == name] for name in names}
    plot(groups, "Selected sets among every K-subset, 16-shot single-sentence tasks", path)


def plot_trajectories(cases: list[tuple[str, Path]], path: Path) -> None:
    """Gate probabilities over the search steps of a few searches (from their metrics.jsonl)."""
    from spt_cli.plots import plot_gate_runs
    from spt_cli.runlog import read_metrics

    search = [(title, read_metrics(m)) for title, m in cases]
    plot_gate_runs([(t, [r for r in h if r.get("phase") == "search"]) for t, h in search], path)


def find_run(variant: str, task: str, seed: int) -> Path | None:
    """The run directory (outputs/) of a recorded search, for its metrics.jsonl."""
    for rec_path in (RECORDS / variant).glob(f"{task}/spt/search-16shot-seed{seed}-*.json"):
        fp = json.loads(rec_path.read_text())["fingerprint"]
        entry = REPO / "outputs" / ".jobs" / f"{fp}.json"
        if entry.exists():
            run = Path(json.loads(entry.read_text())["run_dir"])
            if (run / "metrics.jsonl").exists():
                return run
    return None


def cmd_report(opts: argparse.Namespace) -> int:
    controls = load_controls()
    rows = study_rows(controls)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rows.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = format_table(rows, controls) + "\n\n" + controls_table(controls) + "\n"
    (out / "report.md").write_text(text)
    print(text)
    plot_percentiles(rows, out / "percentiles.png")
    for case in opts.cases:  # variant:task:seed:title, or a run directory:title
        first, title = case.split(":", 1)
        run: Path | None = Path(first)
        if not run.is_dir():
            variant, task, seed, title = case.split(":", 3)
            run = find_run(variant, task, int(seed))
        if run is None:
            print(f"no run directory with metrics.jsonl for {case!r}", file=sys.stderr)
        else:
            opts.found.append((title, run / "metrics.jsonl"))
    if opts.found:
        plot_trajectories(opts.found, out / "trajectories.png")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("controls")
    c.add_argument("--tasks", choices=("single", "all"), default="all")
    r = sub.add_parser("run")
    r.add_argument("variants", nargs="+", choices=list(VARIANTS))
    r.add_argument("--tasks", choices=("single", "all"), default="single")
    p = sub.add_parser("report")
    p.add_argument("--out", default=str(REPO / "results" / "search_study"))
    p.add_argument("--case", dest="cases", action="append", default=[],
                   help="VARIANT:TASK:SEED:TITLE or RUN_DIR:TITLE: a search to plot")  # fmt: skip
    opts = parser.parse_args()
    opts.found = []
    return {"controls": cmd_controls, "run": cmd_run, "report": cmd_report}[opts.cmd](opts)


if __name__ == "__main__":
    sys.exit(main())
