"""Score a layer-selection rule against the controls, from records alone (docs/search.md).

A control record (``results/controls/<model>/<shots>shot/<task>-seed<seed>-<protocol>.json``,
format in ``spt_cli.search.controls``) holds the dev and test score of every retrained
K-subset of one task-seed. A *rule* maps such a record to the subset it would pick (the set a
search selected, the last K blocks, the best on dev, ...); this module turns the picks into
per task-seed *entries* (dev percentile among the other subsets, test) and the entries into a
table row: mean dev percentile, a permutation p against random picks, test minus the subsets'
mean. No model is trained: any rule can be scored as long as its picks were retrained.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from spt_cli.search import select
from spt_cli.search.controls import lookup, rank

TaskSeed = tuple[str, int]
Rule = Callable[[dict[str, Any]], Sequence[int] | None]  # control record -> subset (None: none)
RANDOM = "ref: random K-subset"  # the chance row: every subset of a task-seed, equally likely
MAX_SUBSETS = 20  # controls.max_subsets the committed control records were made with


def is_complete(control: dict[str, Any], max_subsets: int) -> bool:
    """Whether every subset the controls stage retrains (``controls.max_subsets``) is there;
    a rank among part of the subsets would mislead."""
    expected = min(math.comb(len(control["candidates"]), control["k"]), max_subsets)
    return len(control["subsets"]) == expected


def load_controls(
    folder: Path,
    max_subsets: int,
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[TaskSeed, dict[str, Any]]:
    """(task, seed) -> complete control record among ``folder/*.json`` (one model and shots,
    e.g. ``results/controls/minilm/16shot``) for which ``keep(record)`` holds (a protocol)."""
    out: dict[TaskSeed, dict[str, Any]] = {}
    for path in folder.glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if (keep is None or keep(data)) and is_complete(data, max_subsets):
            out[(data["task"], data["seed"])] = data
    return out


def one_thread_no_input_prompt(data: dict[str, Any]) -> bool:
    """The study's protocol (a ``keep`` of `load_controls`): no input prompt under the
    retrained gates, one torch thread."""
    proto = data["protocol"]
    return proto["method"]["input_prompt"] == "none" and proto["trainer"]["num_threads"] == 1


def load_searches(folder: Path, pattern: str = "*/spt/search-*.json") -> list[dict[str, Any]]:
    """The search records (``records=DIR`` of ``spt-run search``) below ``folder`` matching
    ``pattern``, in path order."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob(pattern))]


def subset_layers(key: str) -> list[int]:
    """``"2,4"`` -> [2, 4]."""
    return [int(x) for x in key.split(",")]


def dev_percentile(layers: Sequence[int], control: dict[str, Any], split: str = "dev"):
    """Percentile of ``layers`` among the other subsets by ``split`` (None: not retrained)."""
    found = rank(layers, control["subsets"], split, control.get("extra"))
    return None if found is None else found[1]


def entry(name: str, task: str, seed: int, layers: Sequence[int], control: dict | None) -> dict:
    """One pick as the study lists it: ``dev_pct`` and ``test`` when the set was retrained."""
    out: dict[str, Any] = {"variant": name, "task": task, "seed": seed, "layers": list(layers)}
    found = None if control is None else lookup(control, layers)
    if found is not None:
        out["dev_pct"] = dev_percentile(layers, control)
        out["test"] = found["test"]
    return out


def rule_entries(name: str, rule: Rule, controls: dict[TaskSeed, dict]) -> list[dict]:
    """The entries of a rule applied to every task-seed (task, seed order); a task-seed where
    it picks nothing is left out."""
    out = []
    for (task, seed), control in sorted(controls.items()):
        layers = rule(control)
        if layers is not None:
            out.append(entry(name, task, seed, [int(x) for x in layers], control))
    return out


def last_k(control: dict[str, Any]) -> list[int]:
    """A person's pick: the last K candidate blocks (late prompts work, LPT), as the search's
    ``search.fallback=last_k`` takes them."""
    return select.last_k(control["candidates"], control["k"])


def best_on_dev(control: dict[str, Any]) -> list[int]:
    """The best subset on dev (ties: the larger key): what a search could at most reach."""
    subsets = control["subsets"]
    return subset_layers(max(subsets, key=lambda key: (subsets[key]["dev"], key)))


def mean_test(control: dict[str, Any]) -> float:
    """Mean test over the retrained subsets: the test of a random pick, in expectation."""
    return statistics.fmean(v["test"] for v in control["subsets"].values())


def random_entry(task: str, seed: int, control: dict[str, Any]) -> dict:
    """The random-pick row of a task-seed: dev percentile 50 and the subsets' mean test, in
    expectation."""
    return {"variant": RANDOM, "task": task, "seed": seed, "dev_pct": 50.0,
            "test": mean_test(control)}  # fmt: skip


def random_entries(controls: dict[TaskSeed, dict]) -> list[dict]:
    """The random-pick row of every task-seed (task, seed order)."""
    return [random_entry(task, seed, control) for (task, seed), control in sorted(controls.items())]


def reference_entries(controls: dict[TaskSeed, dict]) -> list[dict]:
    """Per task-seed: the last K blocks, the best on dev and the random-pick row."""
    rows = []
    for (task, seed), control in sorted(controls.items()):
        rows.append(entry("ref: last K blocks", task, seed, last_k(control), control))
        rows.append(entry("ref: best on dev", task, seed, best_on_dev(control), control))
        rows.append(random_entry(task, seed, control))
    return rows


def chance_p(
    entries: list[dict], controls: dict[TaskSeed, dict], draws: int = 20000, seed: int = 0
) -> float | None:
    """One-sided permutation p of the entries' mean dev percentile: how often a random subset
    per task-seed (the same task-seeds, uniform among the retrained subsets) reaches at least
    that mean; (1 + hits) / (1 + draws), so never 0."""
    if not entries:
        return None
    observed = statistics.fmean(e["dev_pct"] for e in entries)
    pools = []
    for e in entries:
        control = controls[(e["task"], e["seed"])]
        pools.append([dev_percentile(subset_layers(key), control) for key in control["subsets"]])
    rng = random.Random(seed)
    hits = sum(
        statistics.fmean(rng.choice(pool) for pool in pools) >= observed - 1e-9
        for _ in range(draws)
    )
    return (1 + hits) / (1 + draws)


def test_gain(entries: list[dict], controls: dict[TaskSeed, dict]) -> tuple[float, int, int] | None:
    """Mean of (test of the pick - mean test of its task-seed's subsets), and on how many
    task-seeds the pick is above / below that mean. None without a retrained pick."""
    diffs = [e["test"] - mean_test(controls[(e["task"], e["seed"])]) for e in entries
             if e.get("test") is not None and (e["task"], e["seed"]) in controls]  # fmt: skip
    if not diffs:
        return None
    return statistics.fmean(diffs), sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None (None when there are none)."""
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def score_entries(
    name: str,
    entries: list[dict],
    controls: dict[TaskSeed, dict],
    tasks: Sequence[str],
    pairs: Sequence[str] = (),
) -> dict[str, Any]:
    """One table row from a rule's entries: over the task-seeds of ``tasks``, the number
    scored, the mean dev percentile, the permutation p vs random picks, the mean per task, the
    mean test and the test gain over the subsets' mean; ``pairs``: tasks shown apart (their
    mean dev percentile only). The random row gets no p and no gain (it is the reference)."""
    main = [e for e in entries if e["task"] in tasks and e.get("dev_pct") is not None]
    apart = [e for e in entries if e["task"] in pairs and e.get("dev_pct") is not None]
    chance = name == RANDOM
    return {
        "name": name,
        "n": len(main),
        "dev_pct": mean(e["dev_pct"] for e in main),
        "p_vs_random": None if chance else chance_p(main, controls),
        "per_task": {t: mean(e["dev_pct"] for e in main if e["task"] == t) for t in tasks},
        "test": mean(e.get("test") for e in main),
        "test_gain": None if chance else test_gain(main, controls),
        "pairs_n": len(apart),
        "pairs_dev_pct": mean(e["dev_pct"] for e in apart),
    }


def score_rule(
    name: str,
    rule: Rule,
    controls: dict[TaskSeed, dict],
    tasks: Sequence[str],
    pairs: Sequence[str] = (),
) -> dict[str, Any]:
    """The table row of a selection rule (control record -> subset), scored without training."""
    return score_entries(name, rule_entries(name, rule, controls), controls, tasks, pairs)


def _nan_none(value: float) -> float | None:
    return None if value != value else float(value)  # nan: dev (or test) ties everywhere


def kendall(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall's tau-b of two score lists (None when either is constant)."""
    from scipy.stats import kendalltau

    with warnings.catch_warnings():  # constant input: reported as None, not a warning
        warnings.simplefilter("ignore")
        return _nan_none(kendalltau(xs, ys).statistic)


def spread(control: dict[str, Any]) -> dict[str, float | None]:
    """How far apart one task-seed's subsets are and whether dev ranks them as test does:
    dev and test range (max - min), test of the best dev subset minus the mean test, and the
    dev-test Spearman rho and Kendall tau over the subsets (None when undefined: ties)."""
    from scipy.stats import spearmanr

    devs = [v["dev"] for v in control["subsets"].values()]
    tests = [v["test"] for v in control["subsets"].values()]
    best = max(control["subsets"].values(), key=lambda v: v["dev"])
    with warnings.catch_warnings():  # constant input: reported as None, not a warning
        warnings.simplefilter("ignore")
        rho = spearmanr(devs, tests).statistic
    return {
        "dev_range": max(devs) - min(devs),
        "test_range": max(tests) - min(tests),
        "best_dev_gain": best["test"] - statistics.fmean(tests),
        "spearman": _nan_none(rho),
        "kendall": kendall(devs, tests),
    }


def spread_by_task(controls: dict[TaskSeed, dict], tasks: Sequence[str]) -> list[dict]:
    """Per task of ``tasks`` with controls: task-seeds and the mean over them of `spread`."""
    rows = []
    for task in tasks:
        mine = [spread(c) for (t, _), c in controls.items() if t == task]
        if mine:
            row: dict[str, Any] = {"task": task, "n": len(mine)}
            row.update({key: mean(s[key] for s in mine) for key in mine[0]})
            rows.append(row)
    return rows


# -- markdown (docs/search.md) ------------------------------------------------------------------
def fmt(value: float | None, scale: float = 1.0, sign: bool = False) -> str:
    """``scale * value`` to one decimal (``sign``: with + or -); "-" for None."""
    if value is None:
        return "-"
    return f"{scale * value:+.1f}" if sign else f"{scale * value:.1f}"


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table: the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(head) + " |", "|:--" + "|--:" * (len(head) - 1) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _task_head(task: str) -> str:
    return "Subj" if task == "subj" else task.upper()


def rows_markdown(rows: list[dict], extra: dict[str, dict[str, Any]], tasks: Sequence[str]) -> str:
    """The variant table: one `score_entries` row each; ``extra[name]`` adds the search-only
    columns (``searches``, ``separated`` share, ``ablation_pct``) where a row has them."""
    head = ["variant", "searches", "separated", "dev pct (n)", "p vs random",
            *[_task_head(t) for t in tasks], "test x100",
            "test - subsets' mean (above-below)",
            "ablation pct", "pairs dev pct (n)"]  # fmt: skip
    table = []
    for row in rows:
        more = extra.get(row["name"], {})
        searches, separated = more.get("searches", 0), more.get("separated")
        gain = row["test_gain"]
        table.append([
            row["name"], str(searches) if searches else "",
            f"{100 * separated:.0f}%" if searches else "",
            f"{fmt(row['dev_pct'])} ({row['n']})",
            "" if row["name"] == RANDOM else _fmt_p(row["p_vs_random"]),
            *[fmt(row["per_task"][t]) for t in tasks],
            fmt(row["test"], 100),
            "" if row["name"] == RANDOM
            else "-" if gain is None else f"{100 * gain[0]:+.1f} ({gain[1]}-{gain[2]})",
            fmt(more.get("ablation_pct")),
            f"{fmt(row['pairs_dev_pct'])} ({row['pairs_n']})",
        ])  # fmt: skip
    return markdown_table(head, table)


def _fmt_p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def spread_markdown(rows: list[dict]) -> str:
    """The controls table: per task, the mean `spread` over its task-seeds."""
    head = ["task", "task-seeds", "dev range (min-max) x100", "test range x100",
            "test of best dev - mean test", "dev-test Spearman rho"]  # fmt: skip
    return markdown_table(head, (
        [r["task"], str(r["n"]), fmt(r["dev_range"], 100), fmt(r["test_range"], 100),
         fmt(r["best_dev_gain"], 100), fmt(r["spearman"])]
        for r in rows
    ))  # fmt: skip
