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
import statistics
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
VARIANTS: dict[str, list[str]] = {
    # today's search: a static input prompt from block 0 under the gated layers
    "static": ["method.input_prompt=static"],
    # the same search without the input prompt: the retrain's model family
    "none": FAMILY,
    "centred": [*FAMILY, "search.alpha_grad=centred"],
    "budget": [*FAMILY, "search.gate_shift=budget"],
    "ablation": [*FAMILY, "search.select=ablation"],
    "wstop": [*FAMILY, "search.weight_stop_loss=0.01"],
    "sgd": [*FAMILY, "search.alpha_optimizer=sgd", "search.alpha_lr=50"],
    "stochastic": [*FAMILY, "method.gate=stochastic", "search.anneal=true",
                   "search.tau_start=1.0", "search.tau_end=0.2"],  # fmt: skip
}
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
        args = ["search", *COMMON, *VARIANTS[name], "retrain=false",
                f"records={RECORDS / name}", "-m", *sweep]  # fmt: skip
        code = spt_run(args) or code
    return code


# -- report --------------------------------------------------------------------------------------
def load_controls() -> dict[tuple[str, int], dict]:
    """(task, seed) -> control record of the study's protocol (no input prompt, one thread)."""
    out = {}
    for path in CONTROLS.glob("minilm/16shot/*.json"):
        data = json.loads(path.read_text())
        proto = data["protocol"]
        if proto["method"]["input_prompt"] == "none" and proto["trainer"]["num_threads"] == 1:
            out[(data["task"], data["seed"])] = data
    return out


def load_searches(variant: str) -> dict[tuple[str, int], dict]:
    out = {}
    for path in (RECORDS / variant).glob("*/spt/search-16shot-seed*.json"):
        data = json.loads(path.read_text())
        out[(data["task"], data["seed"])] = data
    return out


def percentile_of(layers: list[int], control: dict, split: str = "dev") -> float | None:
    sys.path.insert(0, str(REPO))
    from spt_cli.search.controls import rank

    found = rank(layers, control["subsets"], split)
    return None if found is None else found[1]


def cmd_report(opts: argparse.Namespace) -> int:
    from spt_cli.search.controls import subset_key

    controls = load_controls()
    rows = []
    for name in VARIANTS:
        searches = load_searches(name)
        if not searches:
            continue
        for (task, seed), rec in sorted(searches.items()):
            control = controls.get((task, seed))
            diag = rec.get("search_diagnostics") or {}
            entry = {"variant": name, "task": task, "seed": seed,
                     "layers": rec["selected_layers"], "separated": diag.get("separated"),
                     "by_ablation": diag.get("by_ablation")}  # fmt: skip
            if control is not None:
                key = subset_key(rec["selected_layers"])
                entry["dev_pct"] = percentile_of(rec["selected_layers"], control)
                found = control["subsets"].get(key)
                entry["test"] = None if found is None else found["test"]
                if diag.get("by_ablation"):
                    entry["ablation_pct"] = percentile_of(diag["by_ablation"], control)
            rows.append(entry)
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "controls": summarize_controls(controls)}, indent=1))
    print(format_table(rows, controls))
    return 0


def summarize_controls(controls: dict) -> dict:
    """Per task-seed: subsets, mean test, the best-dev subset's test, dev spread."""
    out = {}
    for (task, seed), c in sorted(controls.items()):
        subs = c["subsets"]
        best = max(subs.values(), key=lambda v: v["dev"])
        out[f"{task}-{seed}"] = {
            "n": len(subs),
            "test_mean": statistics.fmean(v["test"] for v in subs.values()),
            "test_of_best_dev": best["test"],
            "dev_min": min(v["dev"] for v in subs.values()),
            "dev_max": max(v["dev"] for v in subs.values()),
        }
    return out


def format_table(rows: list[dict], controls: dict) -> str:
    lines = [
        "| variant | searches | separated | dev pct, single (n) | test, single | "
        "dev pct, pairs (n) | ablation pct, single |",
        "|:--|--:|--:|--:|--:|--:|--:|",
    ]
    for name in VARIANTS:
        mine = [r for r in rows if r["variant"] == name]
        if not mine:
            continue
        single = [r for r in mine if r["task"] in SINGLE and r.get("dev_pct") is not None]
        pairs = [r for r in mine if r["task"] in PAIRS and r.get("dev_pct") is not None]
        sep = sum(bool(r["separated"]) for r in mine) / len(mine)

        def mean(rs, key):
            vals = [r[key] for r in rs if r.get(key) is not None]
            return (f"{statistics.fmean(vals):.1f}", len(vals)) if vals else ("-", 0)

        lines.append(
            f"| {name} | {len(mine)} | {100 * sep:.0f}% | {mean(single, 'dev_pct')[0]} "
            f"({len(single)}) | {mean([dict(r, t=100 * r['test']) for r in single], 't')[0]} | "
            f"{mean(pairs, 'dev_pct')[0]} ({len(pairs)}) | {mean(single, 'ablation_pct')[0]} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("controls")
    c.add_argument("--tasks", choices=("single", "all"), default="all")
    r = sub.add_parser("run")
    r.add_argument("variants", nargs="+", choices=list(VARIANTS))
    r.add_argument("--tasks", choices=("single", "all"), default="single")
    p = sub.add_parser("report")
    p.add_argument("--out", default=str(REPO / "results" / "search_study" / "summary.json"))
    opts = parser.parse_args()
    return {"controls": cmd_controls, "run": cmd_run, "report": cmd_report}[opts.cmd](opts)


if __name__ == "__main__":
    sys.exit(main())
