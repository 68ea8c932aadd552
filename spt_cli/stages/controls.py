"""``spt-run controls``: retrain every K-subset of the candidate layers (the measure of a
search; a seeded sample when there are many) and, with ``from_search=<search run or record>``,
rank the searched set among them (at another K: the set the search's rule keeps at that K)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from spt_cli.config import to_plain
from spt_cli.errors import ConfigError
from spt_cli.files import write_json
from spt_cli.plots import plot_controls
from spt_cli.stages.common import candidates_and_budget, logger_for, say, setup
from spt_cli.stages.selection import read_search, selection_at
from spt_cli.stages.train import fit_and_test


def stage_controls(cfg: DictConfig, run_dir: Path) -> float | None:
    """Retrain the subsets a record lacks, print them best first, rank a searched set."""
    from spt_cli.model.methods import ROLE_KEYS, check_stage, retrain_method
    from spt_cli.search.controls import ControlRecord, layer_subsets, shard_of, subset_key

    t0 = time.time()
    check_stage(cfg.method, "controls")
    shard, shards = int(cfg.controls.shard), int(cfg.controls.shards)
    if shard >= shards:
        raise ConfigError(f"controls.shard={shard} must be below controls.shards={shards}; "
                          f"e.g. controls.shard=0 controls.shards={shards}")  # fmt: skip
    found = read_search(cfg.from_search) if cfg.from_search else None
    s = setup(cfg)
    logger = logger_for(cfg, run_dir, "controls", s.task.name)
    try:
        candidates, k = candidates_and_budget(cfg, s)
        searched = selection_at(found, k, candidates) if found is not None else None
        if found is not None and searched != found["layers"]:
            say("controls", f"the search kept {found['layers']}; at K={k} its rule keeps "
                f"{searched}")  # fmt: skip
        subsets = layer_subsets(candidates, k, int(cfg.controls.max_subsets), int(cfg.seed))
        identity = {
            "task": s.task.name, "model": str(cfg.model.name), "shots": int(cfg.shots),
            "seed": int(cfg.seed), "k": k, "candidates": candidates,
            "main_metric": s.task.main_metric,
        }  # fmt: skip
        protocol = {
            # Role keys (which stage, which default layers) change no retrained number.
            "method": {
                k: v
                for k, v in to_plain(retrain_method(cfg.method, [])).items()
                if k not in ROLE_KEYS
            },
            "trainer": to_plain(cfg.trainer),
            "data": to_plain(cfg.data),
            "head": to_plain(cfg.head),
        }
        record = ControlRecord(Path(str(cfg.controls.records)), identity, protocol)
        # Named sets (the last K, the middle K, a searched set) are retrained beside a sample
        # and ranked against it, without joining it. With controls.shards > 1 this process
        # takes its share of them all; the record file merges the shards' retrains.
        named_sets = [x for x in dict.fromkeys(_named_sets(cfg, candidates, k, searched))
                      if x not in subsets]  # fmt: skip
        if not subsets and not named_sets:
            raise ConfigError("controls.max_subsets=0 and no named set or from_search: nothing "
                              "to retrain; set controls.include=[last_k,middle_k]")  # fmt: skip
        mine = shard_of([*subsets, *named_sets], shard, shards)
        todo = [(x, x in named_sets) for x in mine if not record.has(x)]
        have = sum(record.has(x) for x in subsets)
        named = sum(extra for _, extra in todo)
        part = f" (shard {shard} of 0..{shards - 1})" if shards > 1 else ""
        say("controls", f"{len(subsets)} subsets of {k} among {candidates}; {have} in "
            f"{record.path}, {len(todo)} to retrain{part} ({named} named sets)")  # fmt: skip
        for i, (layers, extra) in enumerate(todo):
            started = time.time()
            method = retrain_method(cfg.method, list(layers))
            phase = "subset_" + "_".join(map(str, layers))
            fit = fit_and_test(cfg, s, method, run_dir, logger, phase, artifact=None,
                               verbose=False)  # fmt: skip
            main = s.task.main_metric
            record.add(layers, {
                "dev": fit.dev[main], "test": fit.test[main], "best_step": fit.best_step,
                "dev_metrics": fit.dev, "test_metrics": fit.test,
                "wall_time_s": round(time.time() - started, 1),
            }, extra=extra)  # fmt: skip
            say("controls", f"{i + 1}/{len(todo)} layers {list(layers)}: dev {fit.dev[main]:.4f} "
                f"test {fit.test[main]:.4f} ({time.time() - started:.0f} s)")  # fmt: skip
        record.refresh()  # the other shards' retrains too
        summary = _summary(record.data, searched)
        print(_table(record.data, searched, summary))
        chosen = subset_key(searched) if searched is not None else None
        plot_controls(record.data, chosen, run_dir / "controls.png")
        write_json(run_dir / "results.json", {
            "task": s.task.name, "method": str(cfg.method.name), "stage": "controls",
            "model": identity["model"],
            "shots": identity["shots"], "seed": identity["seed"], "status": "completed",
            "main_metric": s.task.main_metric, "record": str(record.path), **summary,
            "wall_time_s": round(time.time() - t0, 2), "config": to_plain(cfg),
        })  # fmt: skip
        return summary.get("dev_percentile")
    finally:
        logger.finish()


def _named_sets(
    cfg: DictConfig, candidates: list[int], k: int, searched: list[int] | None
) -> list[tuple[int, ...]]:
    """The sets ``controls.include`` names, those ``controls.sets`` lists, then the searched
    one (sorted tuples); a listed set that is not K distinct candidates is a ConfigError."""
    from spt_cli.search.select import named_sets

    sets = [layers for _, layers in named_sets(cfg.controls.include, candidates, k)]
    for given in cfg.controls.sets:
        layers = [int(x) for x in given]
        if len(set(layers)) != k or not set(layers) <= set(candidates):
            raise ConfigError(
                f"controls.sets entry {layers} must be K={k} distinct blocks among the "
                f"candidates {candidates}; e.g. 'controls.sets=[{list(candidates)[-k:]}]'"
            )
        sets.append(layers)
    return [tuple(sorted(x)) for x in [*sets, *([searched] if searched else [])]]


def _summary(record: dict[str, Any], searched: list[int] | None) -> dict[str, Any]:
    """Where the searched set stands among the subsets, on dev (the measure) and test (shown)."""
    from spt_cli.search.controls import lookup, rank

    subsets = record["subsets"]
    if not subsets:  # controls.max_subsets=0: nothing to rank against
        entry = lookup(record, searched) if searched is not None else None
        return {"subsets": 0, **({"searched_layers": searched, "searched_dev": entry["dev"],
                                  "searched_test": entry["test"]} if entry else {})}  # fmt: skip
    out: dict[str, Any] = {
        "subsets": len(subsets),
        "dev_best": max(v["dev"] for v in subsets.values()),
        "test_mean": sum(v["test"] for v in subsets.values()) / len(subsets),
    }
    if searched is None:
        return out
    extra = record.get("extra")
    on_dev, on_test = rank(searched, subsets, "dev", extra), rank(searched, subsets, "test", extra)
    if on_dev is None:
        print(f"warning: the searched set {searched} is not among the retrained subsets",
              file=sys.stderr)  # fmt: skip
        return out
    entry = lookup(record, searched)
    out.update({
        "searched_layers": searched, "dev_rank": on_dev[0], "dev_percentile": on_dev[1],
        "test_rank": on_test[0], "test_percentile": on_test[1],
        "searched_dev": entry["dev"], "searched_test": entry["test"],
    })  # fmt: skip
    return out


def _table(record: dict[str, Any], searched: list[int] | None, summary: dict[str, Any]) -> str:
    """The subsets best dev first, the searched one marked, and its rank."""
    from spt_cli.search.controls import subset_key

    chosen = subset_key(searched) if searched is not None else None
    main = record["main_metric"]
    lines = [f"{'layers':<14} {'dev ' + main:>14} {'test ' + main:>15}"]
    named = record.get("extra", {})
    items = sorted(
        [*record["subsets"].items(), *named.items()], key=lambda kv: (-kv[1]["dev"], kv[0])
    )
    for key, v in items:
        mark = "  <- searched" if key == chosen else ""
        mark += (
            "  (named, beside the sample)" if key in named and key not in record["subsets"] else ""
        )
        lines.append(f"[{key}]".ljust(14) + f" {v['dev']:>14.4f} {v['test']:>15.4f}{mark}")
    if "dev_percentile" in summary:
        lines.append(
            f"searched {summary['searched_layers']}: dev rank {summary['dev_rank']} of "
            f"{summary['subsets']} (percentile {summary['dev_percentile']:.0f}); test rank "
            f"{summary['test_rank']} (shown, never used to choose)"
        )
    return "\n".join(lines)
