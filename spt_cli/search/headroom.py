"""Headroom of a regime and selection signals ranked against the truth, from control records.

A *regime* is a backbone, a data size and a protocol: its control records hold every retrained
K-subset of each task-seed (or a seeded sample). Before comparing selection rules, this module
says how much room a rule has (how far apart the subsets are, what the best on dev gains over
a random pick, what "the last K" or "the middle K" gain) and how well a *signal* (any score per
subset: a prior, gates, an ablation) ranks the subsets as dev and test do (Kendall tau, as
NAS benchmarks report it). Nothing here trains a model.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from spt_cli.search import select
from spt_cli.search.controls import lookup
from spt_cli.search.study import (
    TaskSeed,
    dev_percentile,
    fmt,
    kendall,
    last_k,
    markdown_table,
    mean,
    mean_test,
    spread,
    subset_layers,
)

# subset (sorted block indices) -> score; higher = the signal prefers it
Signal = Callable[[dict[str, Any], list[int]], float | None]


def middle_k(control: dict[str, Any]) -> list[int]:
    """The K consecutive candidates centred nearest the backbone's middle block (LPT's)."""
    return select.middle_k(control["candidates"], control["k"])


def later_is_better(control: dict[str, Any], layers: list[int]) -> float:
    """The prior "later blocks are better prompt layers": the mean block index."""
    return statistics.fmean(layers)


def signal_tau(control: dict[str, Any], signal: Signal) -> dict[str, float | None]:
    """Kendall tau of a signal's scores with the subsets' dev and test scores (the subsets
    the signal scores; None when it scores fewer than three)."""
    rows = []
    for key, v in control["subsets"].items():
        score = signal(control, subset_layers(key))
        if score is not None:
            rows.append((score, v["dev"], v["test"]))
    if len(rows) < 3:
        return {"dev": None, "test": None}
    scores, devs, tests = zip(*rows)
    return {"dev": kendall(scores, devs), "test": kendall(scores, tests)}


def gain(control: dict[str, Any], layers: Sequence[int]) -> float | None:
    """Test of ``layers`` minus the mean test of all subsets (None: not retrained)."""
    entry = lookup(control, layers)
    return None if entry is None else entry["test"] - mean_test(control)


def headroom(control: dict[str, Any]) -> dict[str, float | None]:
    """One task-seed's room for a selection rule: `spread` plus the last K's and the middle
    K's test gain and dev percentile, and how "later is better" ranks the subsets."""
    out: dict[str, float | None] = dict(spread(control))
    out["dev_mean"] = statistics.fmean(v["dev"] for v in control["subsets"].values())
    out["test_mean"] = mean_test(control)
    for name, rule in (("last_k", last_k), ("middle_k", middle_k)):
        layers = rule(control)
        out[f"{name}_gain"] = gain(control, layers)
        out[f"{name}_pct"] = dev_percentile(layers, control)
    prior = signal_tau(control, later_is_better)
    out["later_tau_dev"], out["later_tau_test"] = prior["dev"], prior["test"]
    return out


def headroom_by_task(controls: dict[TaskSeed, dict], tasks: Sequence[str]) -> list[dict]:
    """Per task (and an "all" row): task-seeds and the mean of `headroom` over them."""
    rows = []
    groups = [(t, [c for (task, _), c in controls.items() if task == t]) for t in tasks]
    groups.append(("all", [c for (task, _), c in controls.items() if task in tasks]))
    for task, mine in groups:
        if not mine:
            continue
        stats = [headroom(c) for c in mine]
        row: dict[str, Any] = {"task": task, "n": len(mine)}
        row.update({key: mean(s[key] for s in stats) for key in stats[0]})
        rows.append(row)
    return rows


def headroom_markdown(rows: list[dict]) -> str:
    """The headroom table (x100 for scores; tau as is)."""
    head = ["task", "task-seeds", "dev mean", "dev range", "test mean", "test range",
            "best-on-dev test gain", "last K gain (dev pct)", "middle K gain (dev pct)",
            "dev-test tau", "later-is-better tau dev / test"]  # fmt: skip
    table = []
    for r in rows:
        table.append([
            r["task"], str(r["n"]), fmt(r["dev_mean"], 100), fmt(r["dev_range"], 100),
            fmt(r["test_mean"], 100), fmt(r["test_range"], 100),
            fmt(r["best_dev_gain"], 100, True),
            f"{fmt(r['last_k_gain'], 100, True)} ({fmt(r['last_k_pct'])})",
            f"{fmt(r['middle_k_gain'], 100, True)} ({fmt(r['middle_k_pct'])})",
            "-" if r["kendall"] is None else f"{r['kendall']:.2f}",
            f"{_tau(r['later_tau_dev'])} / {_tau(r['later_tau_test'])}",
        ])  # fmt: skip
    return markdown_table(head, table)


def _tau(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


# The per-block scores a search record can carry, by signal name: final gate probabilities,
# and the ablation scores (the loss change when one candidate's prompt is removed from the
# trained supernet; higher = more useful) on D_alpha and, with search.dev_ablation, on dev.
SEARCH_SCORES = ("final gates", "ablation on D_alpha", "ablation on dev")


def block_scores(search: dict[str, Any], name: str) -> dict[int, float]:
    """One search record's per-block scores of signal ``name`` (one of `SEARCH_SCORES`;
    empty when the record lacks them)."""
    diag = search.get("search_diagnostics") or {}
    found = {
        "final gates": search.get("gate_probs"),
        "ablation on D_alpha": diag.get("ablation_scores"),
        "ablation on dev": diag.get("dev_ablation_scores"),
    }[name]
    return {int(b): float(s) for b, s in (found or {}).items()}


def mean_block_scores(searches: Sequence[dict[str, Any]], name: str) -> dict[int, float]:
    """Per-block scores of signal ``name`` averaged over the searches that carry them (blocks
    every one of them scored); empty when none does."""
    found = [s for s in (block_scores(r, name) for r in searches) if s]
    blocks = set.intersection(*(set(s) for s in found)) if found else set()
    return {b: statistics.fmean(s[b] for s in found) for b in sorted(blocks)}


def summed(scores: dict[int, float]) -> Signal:
    """A subset's score: the sum of its blocks' scores (None when a block has none)."""

    def signal(control: dict[str, Any], layers: list[int]) -> float | None:
        known = [scores[b] for b in layers if b in scores]
        return sum(known) if len(known) == len(layers) else None

    return signal


def search_signals(search: dict[str, Any]) -> dict[str, Signal]:
    """The selection signals one search record carries (`SEARCH_SCORES`), each scoring a
    subset by the sum over its blocks."""
    scores = {name: block_scores(search, name) for name in SEARCH_SCORES}
    return {name: summed(found) for name, found in scores.items() if found}


def signal_rows(
    controls: dict[TaskSeed, dict],
    searches: dict[TaskSeed, dict[str, Any]],
    proxies: Sequence[dict[TaskSeed, dict[str, Any]]] = (),
    repeats: dict[TaskSeed, list[dict[str, Any]]] | None = None,
    reruns: tuple[str, dict[TaskSeed, list[dict[str, Any]]]] | None = None,
) -> list[dict[str, Any]]:
    """Per signal: the mean Kendall tau with the subsets' dev and test over the task-seeds it
    scores ("later is better" on every task-seed; search signals where a search ran; a short
    retrain's dev where a proxy record was made, one signal per step count; the gates averaged
    over the search and its ``repeats`` under other search seeds; with ``reruns`` = (label,
    searches per task-seed), each search signal of those searches, averaged over them, named
    "<signal> (<label>)": e.g. searches rerun with ``search.dev_ablation``)."""
    taus: dict[str, list[dict[str, float | None]]] = {"later is better (prior)": []}
    for key, control in sorted(controls.items()):
        taus["later is better (prior)"].append(signal_tau(control, later_is_better))
        signals = dict(search_signals(searches.get(key, {})))
        for made in proxies:
            if key in made:
                name = f"proxy retrain ({proxy_steps(made[key])} steps), its dev"
                signals[name] = proxy_signal(made[key])
        if repeats and repeats.get(key) and key in searches:
            signals["final gates, mean over search seeds"] = mean_gates_signal(
                [searches[key], *repeats[key]]
            )
        if reruns and reruns[1].get(key):
            for name in SEARCH_SCORES:
                if found := mean_block_scores(reruns[1][key], name):
                    signals[f"{name} ({reruns[0]})"] = summed(found)
        for name, signal in signals.items():
            taus.setdefault(name, []).append(signal_tau(control, signal))
    return [
        {"signal": name, "n": len(rows), "dev": mean(r["dev"] for r in rows),
         "test": mean(r["test"] for r in rows)}
        for name, rows in taus.items()
    ]  # fmt: skip


def signals_markdown(rows: list[dict[str, Any]]) -> str:
    """The signal table: mean Kendall tau with dev and test, and over how many task-seeds."""
    head = ["signal (subset score)", "task-seeds", "tau with dev", "tau with test"]
    return markdown_table(head, ([r["signal"], str(r["n"]), _tau(r["dev"]), _tau(r["test"])]
                                 for r in rows))  # fmt: skip


def pick_on_dev(control: dict[str, Any], sets: Sequence[Sequence[int] | None]) -> list[int] | None:
    """The retrained set among ``sets`` with the best dev (ties: the earlier in ``sets``, as
    ``search.keep_best_of`` breaks them): a rule that pays one retrain per set and chooses on
    dev, never on test. Sets that are None or not retrained are passed over."""
    found = [list(s) for s in sets if s and lookup(control, s) is not None]
    if not found:
        return None
    return found[select.keep_best([lookup(control, s)["dev"] for s in found])]


def best_with_named(control: dict[str, Any], chosen: Sequence[int] | None) -> list[int] | None:
    """The best on dev of the last K, the middle K and ``chosen`` (a signal's top K): None when
    ``chosen`` is empty or was not retrained, so that such a task-seed is left out rather than
    scored as the choice between the other two."""
    if not chosen or lookup(control, chosen) is None:
        return None
    return pick_on_dev(control, [last_k(control), middle_k(control), chosen])


def with_sets(control: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """``control`` with every set ``other`` retrained (a record of the same task-seed and
    protocol, e.g. at another budget K) added to its named sets: rules may then choose among
    sets of several sizes, each ranked against ``control``'s sample. A ValueError when the
    two records are not of one task-seed, candidate list and protocol."""
    same = ("task", "seed", "model", "shots", "candidates", "main_metric", "protocol")
    if differ := [key for key in same if control.get(key) != other.get(key)]:
        raise ValueError(f"the records differ in {', '.join(differ)}")
    extra = {**other.get("subsets", {}), **other.get("extra", {}), **control.get("extra", {})}
    return {**control, "extra": extra}


def searched_set(search: dict[str, Any]) -> list[int]:
    """The layers a search record's own rule kept (gates or fallback): with
    ``search.keep_best_of`` its ``selected_layers`` are the best on dev of several retrained
    sets, and the searched one is under ``selection.searched_layers``."""
    return (search.get("selection") or {}).get("searched_layers") or search["selected_layers"]


def dev_size(control: dict[str, Any], most: int = 5000) -> int | None:
    """How many examples the subsets' dev accuracies count over: the smallest n that makes
    every one of them a whole number of examples (records keep the scores, not the split's
    size). None when no n up to ``most`` does (a metric that is not a share of examples)."""
    devs = [v["dev"] for part in ("subsets", "extra") for v in control.get(part, {}).values()]
    for n in range(1, most + 1):
        if all(abs(d * n - round(d * n)) < 1e-6 for d in devs):
            return n
    return None


def shrink_to_last_k(
    control: dict[str, Any], sets: Sequence[Sequence[int] | None], z: float = 1.0
) -> list[int] | None:
    """``pick_on_dev`` among ``sets`` (the last K first), unless the winner's dev beats the
    last K's by no more than ``z`` binomial standard errors of the last K's dev accuracy
    (sqrt(p (1 - p) / n), n = `dev_size`): then the last K, the prior, as if the margin were
    dev noise."""
    best, last = pick_on_dev(control, sets), lookup(control, sets[0] or [])
    n = dev_size(control)
    if best is None or last is None or n is None:
        return best
    p = last["dev"]
    noise = z * math.sqrt(max(p * (1 - p), 1 / n) / n)
    return best if lookup(control, best)["dev"] - p > noise else list(sets[0] or [])


def versus_last_k(entries: list[dict], controls: dict[TaskSeed, dict]) -> tuple[int, int, int]:
    """(above, level, below): task-seeds where a rule's set beats the last K on test."""
    counts = [0, 0, 0]
    for e in entries:
        control = controls[(e["task"], e["seed"])]
        mine, last = lookup(control, e["layers"]), lookup(control, last_k(control))
        if mine is not None and last is not None:
            diff = mine["test"] - last["test"]
            counts[0 if diff > 0 else 1 if diff == 0 else 2] += 1
    return counts[0], counts[1], counts[2]


def rules_markdown(rows: list[tuple[str, list[dict]]], controls: dict[TaskSeed, dict]) -> str:
    """Selection rules side by side: task-seeds, mean dev percentile (against the subsets),
    mean test and test against the last K (above-level-below)."""
    head = ["rule", "task-seeds", "dev pct", "test x100", "test vs last K (above-level-below)"]
    table = []
    for name, entries in rows:
        scored = [e for e in entries if e.get("dev_pct") is not None]
        above, level, below = versus_last_k(scored, controls)
        table.append([name, str(len(scored)), fmt(mean(e["dev_pct"] for e in scored)),
                      fmt(mean(e["test"] for e in scored), 100),
                      f"{above}-{level}-{below}"])  # fmt: skip
    return markdown_table(head, table)


def proxy_steps(proxy: dict[str, Any]) -> int:
    """The step count a proxy control record's retrains ran (``trainer.max_steps``)."""
    return int(proxy["protocol"]["trainer"]["max_steps"])


def proxy_signal(proxy: dict[str, Any]) -> Signal:
    """A short retrain as a signal: a subset's dev after the proxy's few steps (a control
    record made with ``trainer.max_steps`` cut; None for a subset it did not retrain)."""

    def signal(control: dict[str, Any], layers: list[int]) -> float | None:
        found = lookup(proxy, layers)
        return None if found is None else found["dev"]

    return signal


def proxy_screen(control: dict[str, Any], proxy: dict[str, Any], top: int = 3) -> list[int] | None:
    """Successive halving in two rungs: every set both records hold (the sample and the named
    sets) is retrained for the proxy's few steps, the ``top`` best of them on that dev are
    retrained in full, and the best of those on dev is kept. Ties on the proxy's dev (a
    16-shot dev has few distinct values) go to the later blocks, the prior that holds best
    where the search has no room."""
    sets = [subset_layers(key) for part in ("subsets", "extra") for key in control.get(part, {})]
    scored = [(found["dev"], statistics.fmean(s), s) for s in sets
              if (found := lookup(proxy, s)) is not None]  # fmt: skip
    if not scored:
        return None
    scored.sort(key=lambda row: (-row[0], -row[1], row[2]))
    return pick_on_dev(control, [s for _, _, s in scored[:top]])


def mean_gates(searches: Sequence[dict[str, Any]]) -> dict[int, float]:
    """Each candidate's final gate probability averaged over searches of one task-seed that
    differ in ``search.seed`` only (blocks every search gated)."""
    return mean_block_scores(searches, "final gates")


def mean_gates_signal(searches: Sequence[dict[str, Any]]) -> Signal:
    """A subset's score under gates averaged over several search seeds: the sum over its
    blocks (as `search_signals` scores the gates of one search)."""
    return summed(mean_gates(searches))


def mean_gates_top_k(control: dict[str, Any], searches: Sequence[dict[str, Any]]) -> list[int]:
    """The K candidates with the largest gates averaged over search seeds (the search's own
    rule, `select.select_layers`, on the mean; ties to the lower block as there)."""
    return top_k_of(control, searches, "final gates")


def top_k_of(control: dict[str, Any], searches: Sequence[dict[str, Any]], name: str) -> list[int]:
    """The K candidates with the largest scores of signal ``name`` (`SEARCH_SCORES`) averaged
    over ``searches`` (the search's own rule, `select.select_layers`; empty without scores)."""
    scores = mean_block_scores(searches, name)
    return select.select_layers(scores, control["k"]) if scores else []


def seed_agreement(
    control: dict[str, Any], searches: Sequence[dict[str, Any]]
) -> tuple[int, int, float]:
    """How often two searches of one task-seed under different search seeds keep the same top
    K of their gates: (agreeing pairs, pairs, the chance of two random K-subsets agreeing)."""
    picks = [tuple(top_k_of(control, [s], "final gates")) for s in searches]
    pairs = [(a, b) for i, a in enumerate(picks) for b in picks[i + 1 :]]
    chance = 1 / math.comb(len(control["candidates"]), control["k"])
    return sum(a == b for a, b in pairs), len(pairs), chance


def rerun_agreement(
    controls: dict[TaskSeed, dict], searches: dict[TaskSeed, dict], reruns: dict[TaskSeed, list]
) -> tuple[int, int, int]:
    """How searches rerun at their own seed (``search.seed`` unset in the rerun) compare with
    the searches they repeat: (pairs, the same gates bit for bit, the same top K of gates)."""
    pairs = [(key, searches[key], rec) for key, recs in sorted(reruns.items())
             if key in searches and key in controls
             for rec in recs if rec["config"]["search"].get("seed") is None]  # fmt: skip
    equal = sum(a["gate_probs"] == b["gate_probs"] for _, a, b in pairs)
    same_k = sum(
        top_k_of(controls[key], [a], "final gates") == top_k_of(controls[key], [b], "final gates")
        for key, a, b in pairs
    )
    return len(pairs), equal, same_k
