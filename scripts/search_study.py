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
import math
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
# Soft gates, no annealing: the plain DARTS mixture the remedies start from (spelled out, so the
# variants stay what they were when the defaults change).
SOFT = ["method.gate=soft", "search.anneal=false", "search.tau_end=1.0"]
VARIANTS: dict[str, list[str]] = {
    # the search before this study: a static input prompt from block 0 under the gated layers
    "static": ["method.input_prompt=static", *SOFT],
    # the same search without the input prompt: the retrain's model family (the shipped
    # default, chosen by this study)
    "none": [*FAMILY, *SOFT],
    "centred": [*FAMILY, *SOFT, "search.alpha_grad=centred"],
    "budget": [*FAMILY, *SOFT, "search.gate_shift=budget"],
    "ablation": [*FAMILY, *SOFT, "search.select=ablation"],
    "wstop": [*FAMILY, *SOFT, "search.weight_stop_loss=0.01"],
    # SGD at Adam's learning rate: the mean |gradient| of alpha is about 0.9 (median 0.17,
    # heavy-tailed; MiniLM SST-2), so the steps have Adam's scale on average but follow the
    # gradient's size.
    "sgd": [*FAMILY, *SOFT, "search.alpha_optimizer=sgd"],
    # stochastic gates, temperature annealed 1 -> 0.2
    "stochastic": [
        *FAMILY,
        "method.gate=stochastic",
        "search.anneal=true",
        "method.tau=1.0",
        "search.tau_end=0.2",
    ],
}
MAX_SUBSETS = 20  # controls.max_subsets of conf/config.yaml
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
    """(task, seed) -> complete control record of the study's protocol (no input prompt, one
    thread); a record still being filled is left out (a rank among part of the subsets would
    mislead)."""
    out = {}
    for path in CONTROLS.glob("minilm/16shot/*.json"):
        data = json.loads(path.read_text())
        proto = data["protocol"]
        expected = min(math.comb(len(data["candidates"]), data["k"]), MAX_SUBSETS)
        if (proto["method"]["input_prompt"] == "none" and proto["trainer"]["num_threads"] == 1
                and len(data["subsets"]) == expected):  # fmt: skip
            out[(data["task"], data["seed"])] = data
    return out


def load_searches(variant: str) -> dict[tuple[str, int], dict]:
    out = {}
    for path in (RECORDS / variant).glob("*/spt/search-16shot-seed*.json"):
        data = json.loads(path.read_text())
        out[(data["task"], data["seed"])] = data
    return out


def percentile_of(layers: list[int], control: dict, split: str = "dev") -> float | None:
    from spt_cli.search.controls import rank

    found = rank(layers, control["subsets"], split)
    return None if found is None else found[1]


def _entry(name: str, task: str, seed: int, layers: list[int], control: dict | None) -> dict:
    from spt_cli.search.controls import subset_key

    entry: dict = {"variant": name, "task": task, "seed": seed, "layers": layers}
    if control is not None and subset_key(layers) in control["subsets"]:
        entry["dev_pct"] = percentile_of(layers, control)
        entry["test"] = control["subsets"][subset_key(layers)]["test"]
    return entry


def study_rows(controls: dict) -> list[dict]:
    """One row per (variant, task, seed) search, plus the reference rows."""
    rows = []
    for name in VARIANTS:
        for (task, seed), rec in sorted(load_searches(name).items()):
            diag = rec.get("search_diagnostics") or {}
            entry = _entry(name, task, seed, rec["selected_layers"], controls.get((task, seed)))
            entry["separated"] = bool(diag.get("separated"))
            if diag.get("by_ablation") and controls.get((task, seed)):
                entry["ablation_pct"] = percentile_of(diag["by_ablation"], controls[(task, seed)])
            rows.append(entry)
    for (task, seed), control in sorted(controls.items()):
        # A person's pick: the last K blocks (late prompts work, LPT); and the best subset on
        # dev (what a search could at most reach on this measure).
        k, cands = control["k"], control["candidates"]
        rows.append(_entry("ref: last K blocks", task, seed, sorted(cands)[-k:], control))
        best = max(control["subsets"], key=lambda key: (control["subsets"][key]["dev"], key))
        rows.append(_entry("ref: best on dev", task, seed, [int(x) for x in best.split(",")],
                           control))  # fmt: skip
        mean_test = statistics.fmean(v["test"] for v in control["subsets"].values())
        rows.append({"variant": "ref: random K-subset", "task": task, "seed": seed,
                     "dev_pct": 50.0, "test": mean_test})  # fmt: skip
    return rows


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _fmt(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None else f"{scale * value:.1f}"


def chance_p(entries: list[dict], controls: dict, draws: int = 20000) -> float | None:
    """One-sided p of the mean dev percentile: how often a random K-subset per task-seed (the
    same task-seeds, drawn uniformly among the retrained subsets) reaches at least this mean."""
    import random

    if not entries:
        return None
    observed = statistics.fmean(e["dev_pct"] for e in entries)
    pools = []
    for e in entries:
        control = controls[(e["task"], e["seed"])]
        pools.append([percentile_of([int(x) for x in key.split(",")], control)
                      for key in control["subsets"]])  # fmt: skip
    rng = random.Random(0)
    hits = sum(
        statistics.fmean(rng.choice(pool) for pool in pools) >= observed - 1e-9
        for _ in range(draws)
    )
    return (1 + hits) / (1 + draws)


def _fmt_p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _test_gain(entries: list[dict], rows: list[dict]) -> str:
    """Mean test of the selected sets minus the mean test of all K-subsets of the same
    task-seed (x100), and on how many task-seeds the selected set is above / below it."""
    rand = [r for r in rows if r["variant"] == "ref: random K-subset"]
    base = {(r["task"], r["seed"]): r["test"] for r in rand}
    diffs = [e["test"] - base[(e["task"], e["seed"])] for e in entries
             if e.get("test") is not None and (e["task"], e["seed"]) in base]  # fmt: skip
    if not diffs:
        return "-"
    above, below = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    return f"{100 * statistics.fmean(diffs):+.1f} ({above}-{below})"


def format_table(rows: list[dict], controls: dict) -> str:
    """Variant x task: mean dev percentile of the selected sets (25 single-sentence task-seeds
    where controls exist), how often random picks reach that mean (p), share of separated
    searches, mean test of the selected sets."""
    head = ["variant", "searches", "separated", "dev pct (n)", "p vs random",
            *[t.upper() if t != "subj" else "Subj" for t in SINGLE], "test x100",
            "test - subsets' mean (above-below)",
            "ablation pct", "pairs dev pct (n)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|:--" + "|--:" * (len(head) - 1) + "|"]
    names = list(dict.fromkeys(r["variant"] for r in rows))
    for name in names:
        mine = [r for r in rows if r["variant"] == name]
        single = [r for r in mine if r["task"] in SINGLE and r.get("dev_pct") is not None]
        pairs = [r for r in mine if r["task"] in PAIRS and r.get("dev_pct") is not None]
        searches = [r for r in mine if "separated" in r and r["task"] in SINGLE]
        sep = f"{100 * _mean([float(r['separated']) for r in searches]):.0f}%" if searches else ""
        per_task = [_fmt(_mean([r["dev_pct"] for r in single if r["task"] == t])) for t in SINGLE]
        cells = [
            name, str(len(searches)) if searches else "", sep,
            f"{_fmt(_mean([r['dev_pct'] for r in single]))} ({len(single)})",
            "" if name == "ref: random K-subset" else _fmt_p(chance_p(single, controls)),
            *per_task,
            _fmt(_mean([r.get("test") for r in single]), 100),
            "" if name == "ref: random K-subset" else _test_gain(single, rows),
            _fmt(_mean([r.get("ablation_pct") for r in single])),
            f"{_fmt(_mean([r['dev_pct'] for r in pairs]))} ({len(pairs)})",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def controls_table(controls: dict) -> str:
    """Per task (mean over its seeds): how far apart the subsets are, and whether dev ranks
    them as test does (Spearman's rho between a subset's dev and its test)."""
    from scipy.stats import spearmanr

    lines = ["| task | task-seeds | dev range (min-max) x100 | test range x100 | "
             "test of best dev - mean test | dev-test Spearman rho |",
             "|:--|--:|--:|--:|--:|--:|"]  # fmt: skip
    for task in (*SINGLE, *PAIRS):
        mine = [c for (t, _), c in controls.items() if t == task]
        if not mine:
            continue
        dev_rng, test_rng, gain, rho = [], [], [], []
        for c in mine:
            devs = [v["dev"] for v in c["subsets"].values()]
            tests = [v["test"] for v in c["subsets"].values()]
            dev_rng.append(max(devs) - min(devs))
            test_rng.append(max(tests) - min(tests))
            best = max(c["subsets"].values(), key=lambda v: v["dev"])
            gain.append(best["test"] - statistics.fmean(tests))
            value = spearmanr(devs, tests).statistic
            rho.append(None if value != value else value)  # nan: dev ties everywhere
        lines.append(
            f"| {task} | {len(mine)} | {_fmt(_mean(dev_rng), 100)} | {_fmt(_mean(test_rng), 100)}"
            f" | {_fmt(_mean(gain), 100)} | {_fmt(_mean(rho))} |"
        )
    return "\n".join(lines)


def plot_percentiles(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in dict.fromkeys(r["variant"] for r in rows) if n != "ref: random K-subset"]
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2, 3.8))
    for i, name in enumerate(names):
        vals = [r["dev_pct"] for r in rows if r["variant"] == name and r["task"] in SINGLE
                and r.get("dev_pct") is not None]  # fmt: skip
        if vals:
            jitter = [i + 0.25 * ((j % 5) - 2) / 2 for j in range(len(vals))]
            ax.plot(jitter, vals, "o", alpha=0.45, ms=4)
            ax.plot([i - 0.3, i + 0.3], [statistics.fmean(vals)] * 2, "k-", lw=2)
    ax.axhline(50, color="gray", ls="--", lw=1, label="chance (a random K-subset)")
    ax.axhline(70, color="tab:red", ls=":", lw=1, label="target 70")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("dev percentile of the selected set")
    ax.set_title("Selected sets among every K-subset, 16-shot single-sentence tasks", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_trajectories(cases: list[tuple[str, Path]], path: Path) -> None:
    """Gate probabilities over the search steps of a few searches (from their metrics.jsonl)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cases), figsize=(5 * len(cases), 3.4), squeeze=False)
    for ax, (title, metrics) in zip(axes[0], cases):
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        records = [r for r in records if r.get("phase") == "search"]
        keys = sorted({k for r in records for k in r if k.startswith("gates/")})
        for key in keys:
            pts = [(r["step"], r[key]) for r in records if key in r]
            ax.plot(*zip(*pts), label=f"block {int(key[-2:])}")
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("search step")
    axes[0][0].set_ylabel("gate a_l")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
