"""Headroom study (docs/search.md, "Where a selection could win"): per regime, how far apart
the retrained layer subsets are and how rules and signals do against them, from committed
records only (nothing is trained here; the records come from scripts/headroom_fulldata.sh and
`spt-run controls`).

    python scripts/headroom.py report          # -> results/headroom/report.md, docs/search.md
    python scripts/headroom.py report --check  # docs/search.md is what the records give
    python scripts/headroom.py sets headroom-b # signal sets the controls lack (to retrain)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from spt_cli.config import primary_defaults
from spt_cli.files import fill_block
from spt_cli.search import select
from spt_cli.search.controls import lookup
from spt_cli.search.headroom import (
    best_with_named,
    block_scores,
    headroom_by_task,
    headroom_markdown,
    mean_gates_top_k,
    middle_k,
    pick_on_dev,
    proxy_screen,
    proxy_steps,
    rerun_agreement,
    rules_markdown,
    searched_set,
    seed_agreement,
    shrink_to_last_k,
    signal_rows,
    signals_markdown,
    top_k_of,
    with_sets,
)
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
    rule_entries,
    score_entries,
    score_rule,
)
from spt_cli.stages.selection import search_from_record, selection_at

ROOT = Path(__file__).resolve().parent.parent
CONTROLS = ROOT / "results" / "controls"
# Short retrains of the same subsets (scripts/headroom_proxy.sh), one folder per step count
# (steps25/, ...), each laid out as CONTROLS.
PROXIES = ROOT / "results" / "proxies"
# Searches repeated under other search seeds (search.seed), per regime block: (their folder,
# laid out as the searches they repeat, and the script that made them).
REPEATS = {
    "headroom-fewshot": (ROOT / "results" / "searches" / "minilm_seeds",
                         "scripts/headroom_seeds.sh"),
    "headroom-b": (ROOT / "results" / "searches" / "mpnet_seeds",
                   "MODEL=mpnet scripts/headroom_devabl.sh"),
}  # fmt: skip
# Searches made with search.dev_ablation=true (scripts/headroom_devabl.sh), per regime block:
# (what they are, their folder). Their signals, ablation on dev among them, are ranked on the
# same searches.
RERUNS = {
    "headroom-fewshot": ("the table's searches rerun",
                         ROOT / "results" / "searches" / "minilm_devabl"),
    "headroom-b": ("searches under search seed 1", ROOT / "results" / "searches" / "mpnet_seeds"),
}  # fmt: skip
OUT = ROOT / "results" / "headroom"
# A regime's sets at another budget K (scripts/headroom_budget.sh): its block -> (K, the
# records' folder, laid out as CONTROLS).
BUDGETS = {
    "headroom-fewshot": (1, ROOT / "results" / "controls_k1" / "minilm" / "16shot"),
    "headroom-b": (2, ROOT / "results" / "controls_k2" / "mpnet" / "16shot"),
}

# regime -> (control folder, tasks, the searches to score (a folder of search records) and
# what they are)
DOC = ROOT / "docs" / "search.md"

# regime -> (its block in docs/search.md, control folder, tasks, the searches to score (a
# folder of search records) and what they are)
REGIMES = {
    "(a) MiniLM, full data": ("headroom-a", "minilm/0shot",
                              ("sst2", "mr", "mpqa", "subj", "trec", "cr"),
                              ROOT / "results" / "fulldata", "table"),
    "MiniLM, 16 shots": ("headroom-fewshot", "minilm/16shot",
                         ("sst2", "mr", "mpqa", "subj", "trec"),
                         ROOT / "results" / "fewshot", "table"),
    "(b) MPNet, 16 shots": ("headroom-b", "mpnet/16shot", ("sst2", "trec", "cr"),
                            ROOT / "results" / "searches" / "mpnet", "scripts/headroom_mpnet.sh"),
}  # fmt: skip


def latest_searches(folder: Path, controls: dict) -> dict:
    """(task, seed) -> the search record the table keeps (the later path) for the task-seeds
    with controls."""
    latest = {(rec["task"], rec["seed"]): rec for rec in load_searches(folder)}
    return {key: rec for key, rec in sorted(latest.items()) if key in controls}


def searched_entries(searches: dict, controls: dict, source: str) -> list[list[dict]]:
    """Entries of one search per task-seed: the gates' own top K, the layers the search kept
    (the gates, or its fallback when they did not separate) and the ablation's pick."""
    names = [f"SPT-DARTS {what} ({source})" for what in ("gates", "kept", "ablation")]
    rows: dict[str, list[dict]] = {name: [] for name in names}
    for key, rec in searches.items():
        diag = rec.get("search_diagnostics") or {}
        picks = dict(zip(names, (diag.get("by_gates") or searched_set(rec),
                                 searched_set(rec), diag.get("by_ablation"))))  # fmt: skip
        for name, layers in picks.items():
            if layers:
                rows[name].append(entry(name, *key, layers, controls[key]))
    return list(rows.values())


def by_task_seed(folder: Path | None, controls: dict, keep) -> dict:
    """(task, seed) -> the search records below ``folder`` that ``keep`` accepts, for the
    task-seeds with controls (none without a folder)."""
    out: dict = {}
    for rec in load_searches(folder) if folder is not None else []:
        key = (rec["task"], rec["seed"])
        if key in controls and keep(rec):
            out.setdefault(key, []).append(rec)
    return out


def load_repeats(folder: Path | None, controls: dict) -> dict:
    """The search records made with ``search.seed`` set, per task-seed."""
    return by_task_seed(
        folder, controls, lambda rec: rec["config"]["search"].get("seed") is not None
    )


def load_reruns(folder: Path | None, controls: dict) -> dict:
    """The search records that hold ablation scores on dev, per task-seed."""
    return by_task_seed(folder, controls, lambda rec: bool(block_scores(rec, "ablation on dev")))


def regime_records(
    folder: str, tasks: tuple[str, ...], found: Path, block: str
) -> tuple[dict, dict, dict, dict]:
    """A regime's complete control records, its searches (the latest per task-seed), their
    repeats under other search seeds and the searches made with dev ablation."""
    controls = load_controls(CONTROLS / folder, MAX_SUBSETS, one_thread_no_input_prompt)
    controls = {key: c for key, c in controls.items() if key[0] in tasks}
    repeats = load_repeats(REPEATS[block][0] if block in REPEATS else None, controls)
    reruns = load_reruns(RERUNS[block][1] if block in RERUNS else None, controls)
    return controls, latest_searches(found, controls), repeats, reruns


def rule_rows(
    controls: dict,
    searches: dict,
    source: str,
    proxies: list[dict],
    repeats: dict,
    reruns: tuple[str, dict] | None = None,
) -> list[tuple[str, list[dict]]]:
    """Each rule's pick per task-seed: fixed sets, the search's, choices on dev among a few
    retrained sets (one retrain per set) and, where short retrains were made, screens on them."""

    def kept(control: dict) -> list[int] | None:
        rec = searches.get((control["task"], control["seed"]))
        return searched_set(rec) if rec else None

    rules = {
        "last K": last_k,
        "middle K": middle_k,
        f"SPT-DARTS kept ({source})": kept,
        "best of last K, middle K on dev": lambda c: pick_on_dev(c, [last_k(c), middle_k(c)]),
        "best of last K, searched on dev": lambda c: (
            kept(c) and pick_on_dev(c, [last_k(c), kept(c)])
        ),
        "best of last K, middle K, searched on dev": (
            lambda c: kept(c) and pick_on_dev(c, [last_k(c), middle_k(c), kept(c)])
        ),
        "the same, but the last K unless the dev margin exceeds one standard error": (
            lambda c: kept(c) and shrink_to_last_k(c, [last_k(c), middle_k(c), kept(c)])
        ),
        "best on dev (every subset: the ceiling)": best_on_dev,
    }
    if repeats:

        def seeded(control: dict) -> list[int] | None:
            key = (control["task"], control["seed"])
            if key not in repeats or key not in searches:
                return None
            return mean_gates_top_k(control, [searches[key], *repeats[key]])

        rules["gates averaged over search seeds, top K"] = seeded
        rules["best of last K, middle K, the averaged gates' top K on dev"] = lambda c: (
            best_with_named(c, seeded(c))
        )
    if reruns and reruns[1]:
        label, found = reruns

        def by_dev_ablation(control: dict) -> list[int] | None:
            key = (control["task"], control["seed"])
            return top_k_of(control, found[key], "ablation on dev") if key in found else None

        rules[f"ablation on dev, top K ({label})"] = by_dev_ablation
        rules["best of last K, middle K, the ablation on dev's top K on dev"] = lambda c: (
            best_with_named(c, by_dev_ablation(c))
        )
    for made in proxies:
        steps = proxy_steps(next(iter(made.values())))
        for top in (1, 3):
            rules[f"screen: every set for {steps} steps, its best {top} in full, best on dev"] = (
                lambda c, top=top, made=made: (
                    (p := made.get((c["task"], c["seed"]))) and proxy_screen(c, p, top)
                )
            )
    return [(name, rule_entries(name, rule, controls)) for name, rule in rules.items()]


def run_times(controls: dict, searches: dict) -> str:
    """Median per-run times of a regime from its records (``wall_time_s``): a search, and a
    retrain of one subset (the controls')."""
    retrains = [v["wall_time_s"] for c in controls.values()
                for part in ("subsets", "extra") for v in c.get(part, {}).values()
                if "wall_time_s" in v]  # fmt: skip
    found = [r for r in searches.values() if r.get("wall_time_s")]
    parts = [f"a retrain {statistics.median(retrains):.0f} s (median of {len(retrains)})"]
    if found:
        with_retrain = sum(r.get("prompt_layers") is not None for r in found)
        median = statistics.median(r["wall_time_s"] for r in found)
        parts.insert(0, f"a search {median:.0f} s (median of {len(found)}, {with_retrain} "
                        "of them with their retrain)")  # fmt: skip
    return "Per-run times (records' `wall_time_s`, one torch thread, a shared 2-core machine): " + (
        "; ".join(parts) + "."
    )


def regime_report(block: str, folder: str, tasks: tuple[str, ...], found: Path, source: str) -> str:
    """A regime's generated block: headroom per task, searches and fixed rules against the
    subsets, selection rules, signals, per-run times."""
    controls, searches, repeats, made_with = regime_records(folder, tasks, found, block)
    if not controls:
        return f"No complete control records in `results/controls/{folder}/` yet."
    reruns = (RERUNS[block][0], made_with) if block in RERUNS else None
    proxies = []  # per step count: (task, seed) -> proxy record
    for steps in sorted(PROXIES.glob(f"steps*/{folder}")):
        made = load_controls(steps, MAX_SUBSETS, one_thread_no_input_prompt)
        if made := {key: p for key, p in made.items() if key in controls}:
            proxies.append(made)
    seeds = sorted({s for _, s in controls})
    lines = [f"Control records: `results/controls/{folder}/` ({len(controls)} complete "
             f"task-seeds, seeds {', '.join(map(str, seeds))}). "
             + run_times(controls, searches), "",
             headroom_markdown(headroom_by_task(controls, tasks)), ""]  # fmt: skip
    rules = [("ref: last K blocks", last_k), ("ref: middle K blocks", middle_k),
             ("ref: best on dev", best_on_dev)]  # fmt: skip
    rows = []
    for picks in searched_entries(searches, controls, source):
        if picks:
            rows.append(score_entries(picks[0]["variant"], picks, controls, tasks))
    rows += [score_rule(n, r, controls, tasks) for n, r in rules]
    rows.append(score_entries(RANDOM, random_entries(controls), controls, tasks))
    lines += [rows_markdown(rows, {}, tasks), ""]
    lines += ["Selection rules (the ones that retrain a few sets choose among them on dev):", "",
              rules_markdown(rule_rows(controls, searches, source, proxies, repeats, reruns),
                             controls),
              ""]  # fmt: skip
    made = (f"; proxy records of {', '.join(str(len(p)) for p in proxies)} task-seeds, "
            "`scripts/headroom_proxy.sh`") if proxies else ""  # fmt: skip
    if repeats:
        made += (f"; {sum(map(len, repeats.values()))} repeated searches of {len(repeats)} "
                 f"task-seeds, `{REPEATS[block][1]}`")  # fmt: skip
    if reruns and reruns[1]:
        made += (
            f"; {sum(map(len, reruns[1].values()))} searches with `search.dev_ablation=true` "
            f"of {len(reruns[1])} task-seeds ({reruns[0]}), `scripts/headroom_devabl.sh`"
        )
    lines += [f"Signals ranked against the subsets ({len(searches)} searches, `{source}`{made}):",
              "", signals_markdown(signal_rows(controls, searches, proxies, repeats, reruns)),
              ""]  # fmt: skip
    if reruns and (agree := rerun_agreement(controls, searches, reruns[1]))[0]:
        lines += [f"The reruns of {agree[0]} searches at their own seed on today's code give the "
                  f"same gates bit for bit in {agree[1]} and the same top K of the gates in "
                  f"{agree[2]}.", ""]  # fmt: skip
    if repeats:
        counts = [seed_agreement(controls[key], [searches[key], *more])
                  for key, more in sorted(repeats.items()) if key in searches]  # fmt: skip
        same, pairs = sum(c[0] for c in counts), sum(c[1] for c in counts)
        chance = sum(c[1] * c[2] for c in counts)
        lines += [
            f"Searches of one task-seed under different search seeds keep the same top K "
            f"in {same} of {pairs} pairs ({chance:.{1 if chance >= 1 else 2}f} expected of random "
            "picks).",
            "",
        ]
    return "\n".join(lines)


def budget_report(other: int, made: Path, folder: str, tasks: tuple[str, ...], found: Path) -> str:
    """The product's rule at the regime's K and at K = ``other`` (the last K, the middle K and
    the search's own rule re-derived at that K, best on dev), and K itself chosen on dev;
    every set ranked against the regime's sample, test against its last K."""
    controls, searches, _, _ = regime_records(folder, tasks, found, block="")
    merged, at_other = {}, {}
    for path in sorted(made.glob("*.json")):
        rec = json.loads(path.read_text(encoding="utf-8"))
        key = (rec["task"], rec["seed"])
        if key not in controls or key not in searches:
            continue
        cands = rec["candidates"]
        sets = [select.last_k(cands, other), select.middle_k(cands, other),
                selection_at(search_from_record(searches[key]), other, cands)]  # fmt: skip
        both = with_sets(controls[key], rec)
        if all(lookup(both, s) is not None for s in sets):  # every set the rules need
            merged[key], at_other[key] = both, sets
    if not merged:
        return f"No complete K = {other} records in `{made.relative_to(ROOT)}` yet."

    def default(c: dict) -> list[int] | None:
        kept = searched_set(searches[(c["task"], c["seed"])])
        return pick_on_dev(c, [last_k(c), middle_k(c), kept])

    def default_other(c: dict) -> list[int] | None:
        return pick_on_dev(c, at_other[(c["task"], c["seed"])])

    def product_sets(c: dict) -> list[tuple[str, list[int]]]:
        # The sets `spt-run search` compares by default, built by the product's own code.
        key = (c["task"], c["seed"])
        names = [str(x) for x in primary_defaults("search").keep_best_of]
        return select.keep_best_sets(names, c["candidates"], c["k"],
                                     searched_set(searches[key]), at_other[key][2])  # fmt: skip

    k = next(iter(merged.values()))["k"]
    rules = {
        f"last K (K = {k})": last_k,
        f"the rule at K = {k}: best of last K, middle K, searched on dev": default,
        f"last {other}": lambda c: at_other[(c["task"], c["seed"])][0],
        f"middle {other}": lambda c: at_other[(c["task"], c["seed"])][1],
        f"the search's own rule at K = {other}": lambda c: at_other[(c["task"], c["seed"])][2],
        f"the rule at K = {other}: best of last {other}, middle {other}, the search's rule on "
        "dev": default_other,
        f"both, K chosen on dev: the best of the six sets, ties to K = {k} (the default)": (
            lambda c: pick_on_dev(c, [layers for _, layers in product_sets(c)])
        ),
    }  # fmt: skip
    rows = [(name, rule_entries(name, rule, merged)) for name, rule in rules.items()]
    return "\n".join([
        f"Budget: K = {other} beside K = {k} on {len(merged)} task-seeds (records "
        f"`{made.relative_to(ROOT)}/`, `scripts/headroom_budget.sh`; dev percentiles against "
        f"the K = {k} sample, test against the last {k}):", "", rules_markdown(rows, merged),
    ])  # fmt: skip


# The decoder path (SmolLM2's LM head) beside MiniLM's classifier head: (label, records).
DECODER = (
    ("SmolLM2-135M, LM head", ROOT / "results" / "decoder" / "sst2"),
    ("MiniLM-L6, classifier head (few-shot table)", ROOT / "results" / "fewshot" / "sst2"),
)


def decoder_block() -> str:
    """SPT (search + retrain) and LPT on SST-2 16-shot seed 13, per backbone, from records."""
    lines = ["| backbone | method | head | layers | dev acc | test acc | wall time |",
             "|:--|:--|:--|:--|--:|--:|--:|"]  # fmt: skip
    for label, folder in DECODER:
        for method in ("spt", "lpt"):
            for path in sorted(folder.glob(f"{method}/*-16shot-seed13-*.json")):
                rec = json.loads(path.read_text(encoding="utf-8"))
                layers = rec.get("selected_layers") or rec.get("prompt_layers") or "-"
                lines.append(
                    f"| {label} | {method} | {rec.get('head')} | {layers} | "
                    f"{100 * rec['dev']['accuracy']:.1f} | {100 * rec['test']['accuracy']:.1f} | "
                    f"{rec['wall_time_s']:.0f} s |"
                )
    return "\n".join(lines)


def cmd_report(opts: argparse.Namespace) -> int:
    """Write results/headroom/report.md and docs/search.md's generated blocks; with
    ``--check``, write nothing and fail when docs/search.md is not what the records give."""
    blocks = {
        name: (block, regime_report(block, *spec)) for name, (block, *spec) in REGIMES.items()
    }
    for block, (other, made) in BUDGETS.items():
        name = next(name for name, (b, *_) in REGIMES.items() if b == block)
        spec = REGIMES[name][1:4]
        blocks[f"{name}: the budget"] = (f"{block}-budget", budget_report(other, made, *spec))
    blocks["The decoder path"] = ("decoder", decoder_block())
    doc = DOC.read_text(encoding="utf-8")
    new = doc
    for block, body in blocks.values():
        new = fill_block(new, block, body)
    if opts.check:
        if new != doc:
            print("docs/search.md differs from the records: run python scripts/headroom.py report")
            return 1
        return 0
    parts = ["<!-- python scripts/headroom.py report: generated from committed records -->", ""]
    parts += [f"### {name}\n\n{body}" for name, (_, body) in blocks.items()]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.md").write_text("\n".join(parts), encoding="utf-8")
    DOC.write_text(new, encoding="utf-8")
    print("\n".join(parts))
    return 0


def cmd_sets(opts: argparse.Namespace) -> int:
    """Print, per task-seed of a regime, the signal sets its rules need and its controls lack
    (the averaged gates' top K, the ablation on dev's top K): ``task seed [[..],[..]]``, one
    line each, for `spt-run controls controls.sets=...` (scripts/headroom_signal_sets.sh)."""
    name = next((n for n, (b, *_) in REGIMES.items() if b == opts.block), None)
    if name is None:
        blocks = ", ".join(b for b, *_ in REGIMES.values())
        print(f"headroom.py sets: no regime block {opts.block!r}; one of {blocks}", file=sys.stderr)
        return 2
    controls, searches, repeats, reruns = regime_records(*REGIMES[name][1:4], opts.block)
    for key, control in sorted(controls.items()):
        wanted = []
        if key in reruns:
            wanted.append(top_k_of(control, reruns[key], "ablation on dev"))
        if key in repeats and key in searches:
            wanted.append(mean_gates_top_k(control, [searches[key], *repeats[key]]))
        missing = [s for s in dict.fromkeys(map(tuple, wanted)) if s and lookup(control, s) is None]
        if missing:
            print(key[0], key[1], "[" + ",".join("[" + ",".join(map(str, s)) + "]"
                                                 for s in missing) + "]")  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    report = sub.add_parser("report")
    report.add_argument(
        "--check",
        action="store_true",
        help="fail if docs/search.md differs from the records; write nothing",
    )
    sets = sub.add_parser("sets", help="the signal sets a regime's controls lack")
    sets.add_argument("block", help="a regime's block in docs/search.md, e.g. headroom-b")
    opts = parser.parse_args()
    return {"report": cmd_report, "sets": cmd_sets}[opts.cmd](opts)


if __name__ == "__main__":
    raise SystemExit(main())
