"""``spt-run search``: SPT-DARTS on D_w / D_alpha, the selected layers, then (by default) the
retrain of those layers on the whole training split."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from spt_cli.config import to_plain
from spt_cli.plots import plot_gates
from spt_cli.runlog import RunLogger, read_metrics
from spt_cli.search.diagnostics import format_diagnostics
from spt_cli.stages.common import Setup, build, encode_split, logger_for, pad_id, say, setup
from spt_cli.stages.results import Fit, report, write_results
from spt_cli.stages.selection import read_selection, write_selection
from spt_cli.stages.train import fit_and_test

SEARCH_CKPT = "checkpoints/search.pt"


def stage_search(cfg: DictConfig, run_dir: Path) -> float | None:
    """Search, show the selection, then retrain it (``retrain=false``: stop after the search)."""
    from spt_cli.model import check_stage, retrain_method

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
        fit = fit_and_test(cfg, s, retrain_method(cfg.method, layers), run_dir, logger, "retrain")
        fit.method = name
        results = write_results(cfg, run_dir, s, "search", fit, t0, **found)
        logger.summary({"test": results["test"], "dev": results["dev"] or {}})
        report(results)
        return (results["dev"] or {}).get(s.task.main_metric)
    finally:
        logger.finish()


def search(cfg: DictConfig, s: Setup, run_dir: Path, logger: RunLogger) -> dict[str, Any]:
    """Run the bi-level search and write ``selected_layers.json``; return its content."""
    from spt_cli.model import format_parameter_table
    from spt_cli.search.bilevel import run_search, search_budget, split_train

    model = build(cfg, cfg.method, s)
    budget = search_budget(cfg.search, model.candidate_layers, model.num_layers)
    say("search", f"head={model.head_name} candidates={model.candidate_layers} budget={budget}")
    print(format_parameter_table(model.parameter_table()))
    portion, seed = float(cfg.search.alpha_portion), int(cfg.seed)
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
