"""Headroom study (docs/search.md, "Where a selection could win"): per regime, how far apart
the retrained layer subsets are and how rules and signals do against them, from committed
records only (nothing is trained here; the records come from scripts/headroom_fulldata.sh and
`spt-run controls`).

    python scripts/headroom.py report     # -> results/headroom/report.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spt_cli.search.headroom import headroom_by_task, headroom_markdown, middle_k
from spt_cli.search.study import (
    MAX_SUBSETS,
    RANDOM,
    best_on_dev,
    entry,
    last_k,
    load_controls,
    load_searches,
    one_thread_no_input_prompt,
    random_entries,
    rows_markdown,
    score_entries,
    score_rule,
)

ROOT = Path(__file__).resolve().parent.parent
CONTROLS = ROOT / "results" / "controls"
OUT = ROOT / "results" / "headroom"

# regime -> (control folder, tasks, the full-data table's searches to score, if any)
REGIMES = {
    "(a) MiniLM, full data": ("minilm/0shot", ("sst2", "mr", "mpqa", "subj", "trec", "cr"),
                              ROOT / "results" / "fulldata"),
    "MiniLM, 16 shots (docs/search.md above)": ("minilm/16shot",
                                                ("sst2", "mr", "mpqa", "subj", "trec"), None),
}  # fmt: skip


def searched_entries(folder: Path, controls: dict) -> list[list[dict]]:
    """Entries of the searches in a table's records, one search per task-seed (the later path,
    as the table keeps it): the gates' own top K, the layers the search kept (the gates, or
    its fallback when they did not separate) and the ablation's pick."""
    latest = {(rec["task"], rec["seed"]): rec for rec in load_searches(folder)}
    rows: dict[str, list[dict]] = {"SPT-DARTS gates (table)": [], "SPT-DARTS kept (table)": [],
                                   "SPT-DARTS ablation (table)": []}  # fmt: skip
    for key, rec in sorted(latest.items()):
        if key not in controls:
            continue
        diag = rec.get("search_diagnostics") or {}
        picks = {"SPT-DARTS gates (table)": diag.get("by_gates") or rec["selected_layers"],
                 "SPT-DARTS kept (table)": rec["selected_layers"],
                 "SPT-DARTS ablation (table)": diag.get("by_ablation")}  # fmt: skip
        for name, layers in picks.items():
            if layers:
                rows[name].append(entry(name, *key, layers, controls[key]))
    return list(rows.values())


def regime_report(name: str, folder: str, tasks: tuple[str, ...], searches: Path | None) -> str:
    controls = load_controls(CONTROLS / folder, MAX_SUBSETS, one_thread_no_input_prompt)
    seeds = sorted({s for _, s in controls})
    lines = [f"### {name}", "",
             f"Control records: `results/controls/{folder}/` ({len(controls)} complete "
             f"task-seeds, seeds {', '.join(map(str, seeds))}).", "",
             headroom_markdown(headroom_by_task(controls, tasks)), ""]  # fmt: skip
    rules = [("ref: last K blocks", last_k), ("ref: middle K blocks", middle_k),
             ("ref: best on dev", best_on_dev)]  # fmt: skip
    rows = []
    if searches is not None:
        for found in searched_entries(searches, controls):
            if found:
                rows.append(score_entries(found[0]["variant"], found, controls, tasks))
    rows += [score_rule(n, r, controls, tasks) for n, r in rules]
    rows.append(score_entries(RANDOM, random_entries(controls), controls, tasks))
    lines += [rows_markdown(rows, {}, tasks), ""]
    return "\n".join(lines)


def cmd_report(_: argparse.Namespace) -> int:
    parts = ["<!-- python scripts/headroom.py report: generated from committed records -->", ""]
    parts += [regime_report(name, *spec) for name, spec in REGIMES.items()]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.md").write_text("\n".join(parts), encoding="utf-8")
    print("\n".join(parts))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("report")
    opts = parser.parse_args()
    return {"report": cmd_report}[opts.cmd](opts)


if __name__ == "__main__":
    raise SystemExit(main())
