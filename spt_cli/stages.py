"""The stages of ``spt-run``: data, search, retrain, train, eval (table lives in tables.py).

Each stage takes the composed config and its run directory, writes its outputs there
atomically, and returns the dev main metric (for Hydra sweepers) or None.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from spt_cli.config import load_group_file, split_name, to_plain
from spt_cli.errors import ConfigError, DataError
from spt_cli.files import write_json
from spt_cli.runlog import RunLogger, plot_gates, read_metrics

SEARCH_CKPT = "checkpoints/search.pt"


def seed_everything(seed: int) -> None:
    """Seed every RNG a run touches, so the same config and seed give the same numbers."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def versions() -> dict[str, str]:
    """Package versions recorded in every results.json."""
    import datasets
    import transformers

    import spt_cli

    return {
        "spt_cli": spt_cli.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
    }


# -- shared setup ----------------------------------------------------------------------------
@dataclass
class Setup:
    """Everything a stage needs before training: task, data, backbone and tokenizer."""

    task: Any
    data: Any
    backbone: Any
    tokenizer: Any


def load_data(cfg: DictConfig):
    """The task spec and its train/dev/test splits under the configured protocol."""
    from spt_cli.data import get_task, load_task_data

    task = get_task(str(cfg.dataset.name))
    data = load_task_data(
        task.name,
        root=cfg.data.root,
        shots=int(cfg.shots) if split_name(cfg) == "few_shot" else 0,
        seed=int(cfg.seed),
        dev_ratio=float(cfg.data.dev_ratio),
        dev_max=int(cfg.data.dev_max),
        test_size=int(cfg.data.test_size),
        allow_hub=bool(cfg.data.hub),
    )
    # A file with a header and no rows reads as zero examples, which would only fail later
    # and obscurely (an empty batch stream, an empty summary). Full-data dev may be empty
    # (data.dev_ratio=0); a few-shot dev comes from a file or K per class.
    splits = {"train": data.train, **data.tests}
    if split_name(cfg) == "few_shot":
        splits["dev"] = data.dev
    empty = [name for name, examples in splits.items() if not examples]
    if empty:
        raise DataError(
            f"no {'/'.join(empty)} examples for {task.name} in {', '.join(data.files)}; "
            "a file holds no data rows: add rows or point data.root at complete files"
        )
    return task, data


def setup(cfg: DictConfig) -> Setup:
    """Load data first (cheap, and the commonest source of errors), then the backbone."""
    from spt_cli.model import load_backbone

    task, data = load_data(cfg)
    backbone, tokenizer = load_backbone(cfg.model)
    return Setup(task, data, backbone, tokenizer)


def build(cfg: DictConfig, method_cfg: DictConfig, s: Setup):
    """A fresh prompt model over the shared frozen backbone, seeded for determinism."""
    from spt_cli.model import build_model

    seed_everything(int(cfg.seed))
    return build_model(
        cfg.model, method_cfg, cfg.head, s.task, backbone=s.backbone, tokenizer=s.tokenizer
    )


def encode_split(cfg: DictConfig, s: Setup, examples, head: str) -> list[dict]:
    """Tokenise examples for ``head``; rows as dicts for the batch streams."""
    from spt_cli.data import encode

    ds = encode(examples, s.tokenizer, s.task, int(cfg.data.max_seq_length), head)
    return ds.to_list()


def pad_id(tokenizer) -> int:
    """Padding id (decoders without a pad token pad with eos)."""
    from spt_cli.data import pad_token_id

    return pad_token_id(tokenizer)


def alpha_split(task, examples: list, portion: float, seed: int) -> tuple[list, list]:
    """(D_w, D_alpha): a stratified, seeded share ``portion`` of train becomes D_alpha."""
    from spt_cli.data.splits import strata_key, stratified_split

    n_alpha = max(1, min(len(examples) - 1, int(round(len(examples) * portion))))
    return stratified_split(examples, n_alpha, seed, strata_key(task))


def logger_for(cfg: DictConfig, run_dir: Path, job_type: str, task: str) -> RunLogger:
    """The run's metrics sink (W&B group: task-method-shots)."""
    return RunLogger(
        run_dir,
        cfg.logger,
        job_type=job_type,
        group=f"{task}-{cfg.method.name}-{cfg.shots}",
        run_config=to_plain(cfg),
        name=f"{job_type}-{task}-{cfg.method.name}-{cfg.shots}-{cfg.seed}",
    )


def test_metrics(model, cfg: DictConfig, s: Setup, head: str, device) -> dict[str, float]:
    """Metrics on every test split; extra splits (MNLI mismatched) get a suffix (``_mm``)."""
    from spt_cli.train.evaluate import evaluate

    out: dict[str, float] = {}
    for i, (name, examples) in enumerate(s.data.tests.items()):
        feats = encode_split(cfg, s, examples, head)
        metrics = evaluate(
            model,
            feats,
            s.task,
            batch_size=int(cfg.trainer.eval_batch_size),
            pad_token_id=pad_id(s.tokenizer),
            device=device,
        )
        suffix = "" if i == 0 else "_" + ("mm" if name.endswith("mismatched") else name)
        out.update({k + suffix: v for k, v in metrics.items()})
    return out


def majority(s: Setup) -> dict[str, dict[str, float]]:
    """Majority-class baseline on dev and the first test split."""
    from spt_cli.metrics import majority_baseline

    train_labels = [ex.label for ex in s.data.train]
    first_test = next(iter(s.data.tests.values()))
    return {
        "dev": majority_baseline(s.task, train_labels, [ex.label for ex in s.data.dev]),
        "test": majority_baseline(s.task, train_labels, [ex.label for ex in first_test]),
    }


def save_artifact(model, path: Path, meta: dict[str, Any]) -> Path:
    """``model.save_artifact`` into a hidden sibling, renamed into place when complete: a
    killed or failed save (full disk) never leaves an ``artifact/`` that looks usable."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_artifact(tmp, meta)
        if path.exists():  # a resumed run saves again
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def fit_and_test(
    cfg: DictConfig,
    s: Setup,
    method_cfg: DictConfig,
    run_dir: Path,
    logger: RunLogger,
    phase: str,
    train_examples: list | None = None,
) -> dict[str, Any]:
    """Train ``method_cfg`` on the training split, select on dev, test; save the artefact."""
    from spt_cli.model import format_parameter_table
    from spt_cli.train.loop import resolve_device, train

    model = build(cfg, method_cfg, s)
    table = model.parameter_table()
    print(f"[{phase}] method={method_cfg.name} head={model.head_name}", file=sys.stderr)
    print(format_parameter_table(table))
    head = model.head_name
    train_feats = encode_split(cfg, s, train_examples or s.data.train, head)
    dev_feats = encode_split(cfg, s, s.data.dev, head)
    result = train(
        model,
        task=s.task,
        train_features=train_feats,
        dev_features=dev_feats,
        tcfg=cfg.trainer,
        seed=int(cfg.seed),
        pad_token_id=pad_id(s.tokenizer),
        logger=logger,
        phase=phase,
        checkpoint_path=run_dir / "checkpoints" / f"{phase}.pt",
        resume=bool(cfg.resume),
    )
    device = resolve_device(str(cfg.trainer.device))
    dev = result.best_dev or result.last_dev
    test = test_metrics(model, cfg, s, head, device)
    save_artifact(
        model,
        run_dir / "artifact",
        {"task": s.task.name, "stage": phase, "seed": int(cfg.seed), "shots": int(cfg.shots)},
    )
    return {
        "method": str(method_cfg.name),
        "head": head,
        "layers": list(model.spec.layers or []),
        "dev": dev,
        "test": test,
        "parameters": table,
        "best_step": result.best_step,
        "steps": result.steps,
        "train_wall_time_s": result.wall_time_s,
    }


def write_results(
    cfg: DictConfig, run_dir: Path, s: Setup, stage: str, fit: dict, t0: float, **extra: Any
) -> dict[str, Any]:
    """Write ``results.json`` (schema in docs/architecture.md) atomically; return it."""
    results = {
        "task": s.task.name,
        "method": fit["method"],
        "stage": stage,
        "model": str(cfg.model.name),
        "shots": int(cfg.shots),
        "seed": int(cfg.seed),
        "status": "completed",
        "main_metric": s.task.main_metric,
        "head": fit["head"],
        "dev": fit["dev"],
        "test": fit["test"],
        "majority_baseline": majority(s),
        "parameters": fit["parameters"],
        "selected_layers": extra.pop("selected_layers", None),
        "gate_probs": extra.pop("gate_probs", None),
        "prompt_layers": fit.get("layers"),
        "best_step": fit.get("best_step"),
        "steps": fit.get("steps"),
        "wall_time_s": round(time.time() - t0, 2),
        "versions": versions(),
        "config": to_plain(cfg),
        **extra,
    }
    write_json(run_dir / "results.json", results)
    return results


def report(results: dict[str, Any]) -> None:
    """Print the headline numbers of a finished run."""
    main = results["main_metric"]
    test = results.get("test") or {}
    base = (results.get("majority_baseline") or {}).get("test", {})
    parts = [f"{results['task']} {results['method']} (seed {results['seed']})"]
    if results.get("selected_layers") is not None:
        parts.append(f"layers {results['selected_layers']}")
    if results.get("dev"):
        parts.append(f"dev {main} {results['dev'].get(main, float('nan')):.4f}")
    if main in test:
        parts.append(f"test {main} {test[main]:.4f} (majority {base.get(main, float('nan')):.4f})")
    print("result: " + " | ".join(parts))


# -- method configs --------------------------------------------------------------------------
def fixed_method(search_method: DictConfig, layers: list[int]) -> DictConfig:
    """``spt_fixed`` on ``layers`` with the search's prompt settings (p, generator, m, ...)."""
    base = load_group_file("method", "spt_fixed")
    shared = {
        k: search_method[k]
        for k in search_method
        if k in base and k not in ("name", "layers", "gate", "input_prompt")
    }
    merged = OmegaConf.merge(base, shared, {"layers": list(layers)})
    assert isinstance(merged, DictConfig)
    return merged


# -- stages ----------------------------------------------------------------------------------
def stage_data(cfg: DictConfig, run_dir: Path) -> None:
    """Print a readable summary of the task's splits and write summary.json."""
    from spt_cli.data import encode, format_summary, summarize

    task, data = load_data(cfg)
    tokenizer = None
    try:
        from spt_cli.model import load_backbone

        tokenizer = load_backbone(cfg.model)[1]
    except Exception as exc:  # noqa: BLE001 - token lengths are optional in the summary
        print(f"warning: no tokenizer for token lengths ({exc})", file=sys.stderr)
    summary = summarize(data, tokenizer=tokenizer)
    summary["split"] = split_name(cfg)
    summary["shots"] = int(cfg.shots)
    summary["seed"] = int(cfg.seed)
    example = data.train[0]
    rendered = None
    if tokenizer is not None:
        head = "mlm" if tokenizer.mask_token else "lm"
        ds = encode([example], tokenizer, task, int(cfg.data.max_seq_length), head)
        rendered = tokenizer.decode(ds[0]["input_ids"])
    print(format_summary(summary, example, rendered))
    write_json(run_dir / "summary.json", summary)


def stage_search(cfg: DictConfig, run_dir: Path) -> float | None:
    """SPT-DARTS search on D_w / D_alpha, derive the layers, then (by default) retrain."""
    from spt_cli.model import format_parameter_table
    from spt_cli.search.darts import Architect, default_budget, select_layers
    from spt_cli.train.batches import BatchStream
    from spt_cli.train.loop import train

    t0 = time.time()
    if str(cfg.method.name) != "spt":
        raise ConfigError(
            f"search needs method=spt (got method={cfg.method.name}); "
            f"use spt-run train method={cfg.method.name} for baselines"
        )
    s = setup(cfg)
    logger = logger_for(cfg, run_dir, "search", s.task.name)
    try:
        model = build(cfg, cfg.method, s)
        n_cand = len(model.candidate_layers)
        budget = (
            cfg.search.budget if cfg.search.budget is not None else default_budget(model.num_layers)
        )
        budget = min(int(budget), n_cand) if cfg.search.budget is None else int(budget)
        if not 1 <= budget <= n_cand:
            raise ConfigError(
                f"search.budget={budget} must be between 1 and the {n_cand} candidate layers "
                f"{list(model.candidate_layers)}"
            )
        sel_path = run_dir / "selected_layers.json"
        if cfg.resume and sel_path.exists():
            selection = json.loads(sel_path.read_text())
            print(
                f"[search] resumed: search already finished, layers {selection['layers']}",
                file=sys.stderr,
            )
        else:
            print(
                f"[search] head={model.head_name} "
                f"candidates={list(model.candidate_layers)} budget={budget}",
                file=sys.stderr,
            )
            print(format_parameter_table(model.parameter_table()))
            d_w, d_alpha = alpha_split(
                s.task, list(s.data.train), float(cfg.search.alpha_portion), int(cfg.seed)
            )
            head = model.head_name
            w_feats = encode_split(cfg, s, d_w, head)
            a_feats = encode_split(cfg, s, d_alpha, head)
            warmup = (
                int(cfg.search.warmup_epochs)
                * BatchStream(w_feats, int(cfg.trainer.batch_size), 0, 0).batches_per_epoch
            )
            scfg = OmegaConf.merge(cfg.search, {"budget": budget})
            architect = Architect(model, scfg, float(cfg.trainer.lr))
            train(
                model,
                task=s.task,
                train_features=w_feats,
                dev_features=a_feats,
                tcfg=cfg.trainer,
                seed=int(cfg.seed),
                pad_token_id=pad_id(s.tokenizer),
                logger=logger,
                phase="search",
                checkpoint_path=run_dir / SEARCH_CKPT,
                resume=bool(cfg.resume),
                select_on_dev=False,
                architect=architect,
                alpha_features=a_feats,
                alpha_warmup_steps=warmup,
                max_steps=cfg.search.max_steps,
            )
            probs = {
                int(layer): float(p) for layer, p in zip(model.candidate_layers, model.gate_probs())
            }
            threshold = cfg.search.threshold
            layers = select_layers(probs, budget, None if threshold is None else float(threshold))
            if not layers:
                raise ConfigError(
                    f"search.threshold={threshold} keeps no layer (max gate probability "
                    f"{max(probs.values()):.3f}); lower it or use search.budget"
                )
            selection = {
                "layers": layers,
                "probs": {str(k): v for k, v in probs.items()},
                "budget": budget,
                "threshold": threshold,
                "d_w": len(d_w),
                "d_alpha": len(d_alpha),
                "config": to_plain(cfg),
            }
            write_json(sel_path, selection)
        layers = selection["layers"]
        probs = {int(k): v for k, v in selection["probs"].items()}
        history = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("phase") == "search"]
        png = plot_gates(history, probs, layers, run_dir / "gates.png")
        if png is not None:
            logger.image("gates", png)
        print(
            f"[search] selected layers {layers} (gate probabilities "
            + ", ".join(f"{k}: {v:.3f}" for k, v in sorted(probs.items()))
            + ")",
            file=sys.stderr,
        )
        logger.summary(
            {
                "selected_layers": str(layers),
                "final_gates": {f"layer_{k:02d}": v for k, v in probs.items()},
            }
        )
        if not cfg.retrain:
            write_json(
                run_dir / "results.json",
                {
                    "task": s.task.name,
                    "method": "spt",
                    "stage": "search",
                    "model": str(cfg.model.name),
                    "shots": int(cfg.shots),
                    "seed": int(cfg.seed),
                    "status": "completed",
                    "main_metric": s.task.main_metric,
                    "dev": None,
                    "test": None,
                    "majority_baseline": majority(s),
                    "parameters": None,
                    "selected_layers": layers,
                    "gate_probs": selection["probs"],
                    "wall_time_s": round(time.time() - t0, 2),
                    "versions": versions(),
                    "config": to_plain(cfg),
                },
            )
            return None
        fit = fit_and_test(cfg, s, fixed_method(cfg.method, layers), run_dir, logger, "retrain")
        fit["method"] = "spt"
        results = write_results(
            cfg,
            run_dir,
            s,
            "search",
            fit,
            t0,
            selected_layers=layers,
            gate_probs=selection["probs"],
        )
        logger.summary({"test": results["test"], "dev": results["dev"] or {}})
        report(results)
        return (results["dev"] or {}).get(s.task.main_metric)
    finally:
        logger.finish()


def stage_train(cfg: DictConfig, run_dir: Path, stage: str = "train") -> float | None:
    """Train a method (baselines, or spt_fixed for retrain) with the shared loop, then test."""
    t0 = time.time()
    method_cfg = cfg.method
    if stage == "train" and str(method_cfg.name) == "spt":
        raise ConfigError(
            "method=spt is searched, not trained: "
            "use spt-run search (or spt-run retrain layers=[..])"
        )
    if stage == "retrain":
        layers = resolve_retrain_layers(cfg)
        method_cfg = fixed_method(
            cfg.method if str(cfg.method.name) == "spt" else load_group_file("method", "spt"),
            layers,
        )
    elif cfg.get("layers") is not None:
        method_cfg = OmegaConf.merge(method_cfg, {"layers": list(cfg.layers)})
    s = setup(cfg)
    logger = logger_for(cfg, run_dir, stage, s.task.name)
    try:
        fit = fit_and_test(cfg, s, method_cfg, run_dir, logger, stage)
        if stage == "retrain":
            fit["method"] = "spt"
        results = write_results(
            cfg,
            run_dir,
            s,
            stage,
            fit,
            t0,
            selected_layers=fit["layers"] if stage == "retrain" else None,
        )
        logger.summary({"test": results["test"], "dev": results["dev"] or {}})
        report(results)
        return (results["dev"] or {}).get(s.task.main_metric)
    finally:
        logger.finish()


def resolve_retrain_layers(cfg: DictConfig) -> list[int]:
    """Layers for ``retrain``: ``layers=[..]`` or ``from_search=<search run dir>``."""
    if cfg.get("layers") is not None:
        return [int(x) for x in cfg.layers]
    src = cfg.get("from_search")
    if not src:
        raise ConfigError(
            "retrain needs from_search=<search run dir> or layers=[..], e.g. layers=[2,4]"
        )
    path = Path(str(src)) / "selected_layers.json"
    if not path.exists():
        raise ConfigError(
            f"from_search={src} has no selected_layers.json (missing or unfinished search); "
            "point it at a finished spt-run search directory"
        )
    try:
        layers = json.loads(path.read_text())["layers"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise ConfigError(
            f"{path} is not a valid selection file ({exc}); rerun the search"
        ) from exc
    return [int(x) for x in layers]


def stage_eval(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> float | None:
    """Evaluate a saved artefact on the dataset's dev and test splits."""
    from spt_cli.model import load_artifact
    from spt_cli.train.evaluate import evaluate
    from spt_cli.train.loop import resolve_device

    t0 = time.time()
    if not cfg.get("artifact"):
        raise ConfigError(
            "eval needs artifact=<dir>, e.g. artifact=outputs/search/rte/.../artifact"
        )
    from spt_cli.model.artifact import CONFIG_FILE

    art = Path(str(cfg.artifact))
    if not (art / CONFIG_FILE).exists() and (art / "artifact" / CONFIG_FILE).exists():
        art = art / "artifact"  # a run directory was given
    if not (art / CONFIG_FILE).exists():
        raise ConfigError(
            f"artifact={cfg.artifact} holds no saved artefact ({CONFIG_FILE}); "
            "point it at <run dir>/artifact"
        )
    try:
        meta = json.loads((art / CONFIG_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{art / CONFIG_FILE} is not valid JSON ({exc.msg}); re-save the artefact "
            "(rerun the training) or point artifact= at another one"
        ) from None
    saved_model = (meta.get("model") or {}).get("name")
    if (
        any(o.startswith("model=") for o in overrides)
        and saved_model
        and saved_model != str(cfg.model.name)
    ):
        raise ConfigError(
            f"artifact was trained on backbone {saved_model}, not model={cfg.model.name}; "
            f"drop the model override or use model={saved_model}"
        )
    model = load_artifact(art)
    task, data = load_data(cfg)
    s = Setup(task, data, None, model.tokenizer)
    device = resolve_device(str(cfg.trainer.device))
    model.to(device)
    head = model.head_name
    dev = evaluate(
        model,
        encode_split(cfg, s, data.dev, head),
        task,
        batch_size=int(cfg.trainer.eval_batch_size),
        pad_token_id=pad_id(s.tokenizer),
        device=device,
    )
    test = test_metrics(model, cfg, s, head, device)
    fit = {
        "method": str(meta.get("method", {}).get("name", "artifact")),
        "head": head,
        "dev": dev,
        "test": test,
        "parameters": model.parameter_table(),
        "layers": list(model.spec.layers or []),
    }
    results = write_results(cfg, run_dir, s, "eval", fit, t0, artifact=str(art))
    report(results)
    return dev.get(task.main_metric)
