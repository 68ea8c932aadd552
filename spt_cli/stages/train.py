"""``spt-run train`` and ``spt-run retrain``: one method trained with the shared loop, selected
on dev, tested; also the retrain half of ``spt-run search``."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from spt_cli.errors import ConfigError
from spt_cli.runlog import RunLogger
from spt_cli.stages.common import Setup, build, encode_split, logger_for, pad_id, say, setup
from spt_cli.stages.common import test_metrics as measure_test
from spt_cli.stages.results import Fit, report, write_results
from spt_cli.stages.selection import kept_layers, searched_layers


def fit_and_test(
    cfg: DictConfig,
    s: Setup,
    method_cfg: DictConfig,
    run_dir: Path,
    logger: RunLogger,
    phase: str,
    artifact: str | None = "artifact",
    verbose: bool = True,
) -> Fit:
    """Train ``method_cfg`` on the training split, select on dev, test; save the artefact in
    ``run_dir/<artifact>`` (None: keep only the numbers; ``verbose=False``: no table, no
    progress bar)."""
    from spt_cli.model import format_parameter_table, save_artifact
    from spt_cli.train.loop import resolve_device, train

    model = build(cfg, method_cfg, s)
    table = model.parameter_table()
    if verbose:
        say(phase, f"method={method_cfg.name} head={model.head_name}")
        print(format_parameter_table(table))
    head = model.head_name
    result = train(
        model,
        task=s.task,
        train_features=encode_split(cfg, s, s.data.train, head),
        dev_features=encode_split(cfg, s, s.data.dev, head),
        tcfg=cfg.trainer,
        seed=int(cfg.seed),
        pad_token_id=pad_id(s.tokenizer),
        logger=logger,
        phase=phase,
        checkpoint_path=run_dir / "checkpoints" / f"{phase}.pt",
        resume=bool(cfg.resume),
        progress=verbose,
        lower_stores=s.stores,
    )
    test = measure_test(model, cfg, s, head, resolve_device(str(cfg.trainer.device)))
    if artifact is not None:
        meta = {"task": s.task.name, "stage": phase, "seed": int(cfg.seed), "shots": int(cfg.shots)}
        save_artifact(model, run_dir / artifact, meta)
    return Fit(
        method=str(method_cfg.name),
        head=head,
        layers=list(model.spec.layers or []),
        dev=result.best_dev or result.last_dev,
        test=test,
        parameters=table,
        best_step=result.best_step,
        steps=result.steps,
    )


def resolve_retrain_layers(cfg: DictConfig) -> list[int]:
    """Layers for ``retrain``: ``layers=[..]`` or ``from_search=<search run dir>``."""
    if cfg.layers is not None:
        return [int(x) for x in cfg.layers]
    src = cfg.from_search
    if not src:
        raise ConfigError(
            "retrain needs from_search=<search run dir> or layers=[..], e.g. layers=[2,4]"
        )
    layers = searched_layers(str(src))
    kept = kept_layers(str(src))
    if kept is not None and sorted(kept) != sorted(layers):
        arg = ",".join(map(str, kept))
        say(
            "retrain",
            f"from_search retrains the searched set {layers}; the search's own retrain kept "
            f"{kept} on dev (search.keep_best_of): layers=[{arg}] retrains that one",
        )
    return layers


def stage_train(cfg: DictConfig, run_dir: Path, stage: str = "train") -> float | None:
    """Train a method (a baseline, or for retrain the search method's ``retrain_as`` on the
    given layers) with the shared loop, then test."""
    from spt_cli.model import check_stage, retrain_method

    t0 = time.time()
    method_cfg = cfg.method
    check_stage(method_cfg, stage)
    if stage == "retrain":
        method_cfg = retrain_method(cfg.method, resolve_retrain_layers(cfg))
    elif cfg.layers is not None:
        method_cfg = OmegaConf.merge(method_cfg, {"layers": list(cfg.layers)})
    s = setup(cfg)
    logger = logger_for(cfg, run_dir, stage, s.task.name)
    try:
        fit = fit_and_test(cfg, s, method_cfg, run_dir, logger, stage)
        if stage == "retrain":  # reported under the searched method's name
            fit.method = str(cfg.method.name)
        selected = fit.layers if stage == "retrain" else None
        results = write_results(cfg, run_dir, s, stage, fit, t0, selected_layers=selected)
        logger.summary({"test": results["test"], "dev": results["dev"] or {}})
        report(results)
        return (results["dev"] or {}).get(s.task.main_metric)
    finally:
        logger.finish()
