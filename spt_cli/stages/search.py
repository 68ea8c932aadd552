"""``spt-run search``: SPT-DARTS on D_w / D_alpha, the selected layers, then (by default) the
retrain of those layers on the whole training split."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from spt_cli.config import to_plain
from spt_cli.errors import ConfigError
from spt_cli.plots import plot_gates
from spt_cli.runlog import RunLogger, read_metrics
from spt_cli.search.diagnostics import format_diagnostics
from spt_cli.stages.common import (
    Setup,
    build,
    candidates_and_budget,
    encode_split,
    logger_for,
    pad_id,
    say,
    setup,
)
from spt_cli.stages.results import Fit, report, write_results
from spt_cli.stages.selection import read_selection, write_selection
from spt_cli.stages.train import fit_and_test

SEARCH_CKPT = "checkpoints/search.pt"


def stage_search(cfg: DictConfig, run_dir: Path) -> float | None:
    """Search, show the selection, then retrain it (``retrain=false``: stop after the search)."""
    from spt_cli.model import check_stage

    t0 = time.time()
    check_stage(cfg.method, "search")
    name = str(cfg.method.name)
    s = setup(cfg)
    logger = logger_for(cfg, run_dir, "search", s.task.name)
    try:
        selection = read_selection(run_dir, missing_ok=True) if cfg.resume else None
        if selection is None:
            selection = search(cfg, s, run_dir, logger)
        else:
            say("search", f"resumed: search already finished, layers {selection['layers']}")
        show_selection(run_dir, selection, logger)
        layers, probs = selection["layers"], selection["probs"]
        found = {"selected_layers": layers, "gate_probs": probs,
                 "search_diagnostics": selection.get("diagnostics"),
                 "selection": selection.get("selection")}  # fmt: skip
        if not cfg.retrain:
            write_results(cfg, run_dir, s, "search", Fit(method=name), t0, **found)
            return None
        fit, kept = retrain_best_on_dev(cfg, s, selection, run_dir, logger)
        fit.method = name
        if kept is not None:
            found.update(selected_layers=kept["layers"], selection=kept)
        results = write_results(cfg, run_dir, s, "search", fit, t0, **found)
        logger.summary({"test": results["test"], "dev": results["dev"] or {}})
        report(results)
        return (results["dev"] or {}).get(s.task.main_metric)
    finally:
        logger.finish()


def retrain_best_on_dev(
    cfg: DictConfig, s: Setup, selection: dict[str, Any], run_dir: Path, logger: RunLogger
) -> tuple[Fit, dict[str, Any] | None]:
    """Retrain the searched layers and, with ``search.keep_best_of``, the sets it lists too
    (the last K, the middle K blocks, the same at K/2 and the search's own rule at K/2), and
    keep the one best on dev (ties: in the order the key lists them, the searched set last
    unless listed); test is measured for each, shown, never used to choose. Returns the kept
    fit and, when sets were compared, the evidence: the search's own rule, each set's dev and
    test, and what was kept (None with one set)."""
    from spt_cli.model import retrain_method
    from spt_cli.search.select import keep_best, keep_best_sets

    searched = sorted(selection["layers"])
    sets: list[tuple[str, list[int]]] = [("searched", searched)]
    if cfg.search.keep_best_of:
        candidates, budget = candidates_and_budget(cfg, s)
        # A threshold search keeps its own count of layers: compare sets of that size.
        k = len(searched) if selection.get("threshold") is not None else budget
        names = [str(x) for x in cfg.search.keep_best_of]
        sets = keep_best_sets(names, candidates, k, searched,
                              _searched_half(selection, names, k, candidates))  # fmt: skip
    same = [rule for rule, layers in sets if layers == searched and rule != "searched"]
    if len(sets) == 1:  # nothing to compare: the searched set alone (or it is the only set)
        return fit_and_test(cfg, s, retrain_method(cfg.method, searched), run_dir, logger,
                            "retrain"), None  # fmt: skip
    fits = []
    for rule, layers in sets:
        phase = "retrain" if rule == "searched" else f"retrain_{rule}"
        say("search", f"retraining {rule} {layers} (search.keep_best_of: kept if best on dev)")
        fits.append(fit_and_test(cfg, s, retrain_method(cfg.method, layers), run_dir, logger,
                                 phase, artifact=f"artifacts/{rule}"))  # fmt: skip
    main = s.task.main_metric
    best = keep_best([f.dev[main] for f in fits])
    rule, layers = sets[best]
    compared = [{"rule": r, "layers": x, "dev": f.dev[main], "test": f.test[main]}
                for (r, x), f in zip(sets, fits)]  # fmt: skip
    devs = ", ".join(f"{c['rule']} {c['layers']} {c['dev']:.4f}" for c in compared)
    searched_by = selection.get("selection") or {"rule": "gates", "reason": "the top-K gates"}
    reason = (
        f"best dev {main} of {devs} (search.keep_best_of; ties go to the set listed first); "
        f"the searched set {searched}{f' (= {same[0]})' if same else ''} by "
        f"{searched_by['rule']}: {searched_by['reason']}"
    )
    say("search", f"kept {rule} {layers}: {reason}")
    _replace_dir(run_dir / f"artifacts/{rule}", run_dir / "artifact")
    evidence = {"rule": f"best on dev: {rule}", "reason": reason, "layers": layers,
                "searched_layers": searched, "searched_by": searched_by,
                "compared": compared}  # fmt: skip
    return fits[best], evidence


def _searched_half(
    selection: dict[str, Any], names: list[str], k: int, candidates: list[int]
) -> list[int] | None:
    """The search's own rule at K/2 when ``search.keep_best_of`` lists ``searched_half``;
    None (said) when its gates felt K and the rule cannot be re-derived without a search."""
    from spt_cli.search.select import half
    from spt_cli.stages.selection import gates_felt_k, selection_at

    if "searched_half" not in names:
        return None
    if why := gates_felt_k(selection["config"]["search"]):
        say("search", f"searched_half left out of search.keep_best_of: {why}")
        return None
    return selection_at(selection, half(k), candidates)


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the kept set's artefact into place; the others go with their folder."""
    import shutil

    shutil.rmtree(dst, ignore_errors=True)
    src.rename(dst)
    shutil.rmtree(src.parent, ignore_errors=True)


def search(cfg: DictConfig, s: Setup, run_dir: Path, logger: RunLogger) -> dict[str, Any]:
    """Run the bi-level search and write ``selected_layers.json``; return its content."""
    from spt_cli.model import format_parameter_table
    from spt_cli.search.bilevel import run_search, search_budget, split_train

    dev_ablation = bool(cfg.search.dev_ablation)
    if dev_ablation and not s.data.dev:
        raise ConfigError(
            f"search.dev_ablation=true needs dev examples and {s.task.name} has none here: "
            "raise data.dev_ratio or drop search.dev_ablation"
        )
    # The search's randomness (init, split, batch order) follows search.seed when it is set
    # apart from the data seed; the retrain after it keeps seed, like every control retrain.
    seed = int(cfg.seed) if cfg.search.seed is None else int(cfg.search.seed)
    model = build(cfg, cfg.method, s, seed=seed)
    budget = search_budget(cfg.search, model.candidate_layers, model.num_layers)
    say("search", f"head={model.head_name} candidates={model.candidate_layers} budget={budget}")
    print(format_parameter_table(model.parameter_table()))
    portion = float(cfg.search.alpha_portion)
    d_w, d_alpha = split_train(s.task, list(s.data.train), portion, seed)
    result = run_search(
        model,
        task=s.task,
        w_features=encode_split(cfg, s, d_w, model.head_name),
        alpha_features=encode_split(cfg, s, d_alpha, model.head_name),
        scfg=cfg.search,
        tcfg=cfg.trainer,
        seed=seed,
        pad_token_id=pad_id(s.tokenizer),
        logger=logger,
        checkpoint_path=run_dir / SEARCH_CKPT,
        resume=bool(cfg.resume),
        lower_stores=s.stores,
        dev_features=encode_split(cfg, s, s.data.dev, model.head_name) if dev_ablation else None,
    )
    selection = {
        "layers": result.layers,
        "probs": {str(k): v for k, v in result.probs.items()},
        "budget": result.budget,
        "threshold": result.threshold,
        "d_w": len(d_w),
        "d_alpha": len(d_alpha),
        "selection": result.diagnostics["selection"],
        "diagnostics": result.diagnostics,
        "config": to_plain(cfg),
    }
    write_selection(run_dir, selection)
    return selection


def show_selection(run_dir: Path, selection: dict[str, Any], logger: RunLogger) -> None:
    """gates.png, the console line and the W&B summary of a selection."""
    layers = selection["layers"]
    probs = {int(k): v for k, v in selection["probs"].items()}
    history = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("phase") == "search"]
    png = plot_gates(history, probs, layers, run_dir / "gates.png")
    if png is not None:
        logger.image("gates", png)
    gates = ", ".join(f"{k}: {v:.3f}" for k, v in sorted(probs.items()))
    say("search", f"selected layers {layers} (gate probabilities {gates})")
    rule = selection.get("selection")  # absent in selections written before the fallback rule
    if rule is not None:
        say("search", f"layers chosen by {rule['rule']}: {rule['reason']}")
    summary: dict[str, Any] = {
        "selected_layers": str(layers),
        "final_gates": {f"layer_{k:02d}": v for k, v in probs.items()},
    }
    diag = selection.get("diagnostics")  # absent in selections written before diagnostics
    if diag is not None:
        print(format_diagnostics(diag))
        if diag["warning"]:
            print(f"warning: {diag['warning']}", file=sys.stderr)
        keep = ("separated", "gap", "layers")
        summary["diagnostics"] = {k: diag[k] for k in keep}
    logger.summary(summary)
