"""``results.json`` of the search, retrain, train and eval stages: its one writer, and the
headline line it prints (``controls`` writes a summary of another shape: stages/controls.py)."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from spt_cli.config import to_plain
from spt_cli.files import write_json
from spt_cli.jobs import code_commit, code_identity
from spt_cli.metrics import SINGLE_CLASS
from spt_cli.stages.common import Setup, majority


@dataclass
class Fit:
    """What training (or evaluating) one model produced; None where a stage has no model."""

    method: str
    head: str | None = None
    layers: list[int] | None = None
    dev: dict[str, float] | None = None
    test: dict[str, float] | None = None
    parameters: dict[str, Any] | None = None
    best_step: int | None = None
    steps: int | None = None


def versions() -> dict[str, str | None]:
    """Package versions recorded in every results.json, the code's git commit and the identity
    of its numeric code (what a rerun sweep compares before reusing the result)."""
    import datasets
    import transformers

    import spt_cli

    return {
        "spt_cli": spt_cli.__version__,
        "commit": code_commit(),
        "code": code_identity(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
    }


def degenerate(
    task: Any, splits: dict[str, dict[str, float] | None]
) -> tuple[dict[str, str], dict[str, dict[str, float] | None]]:
    """``({split: "all '<label>'"}, the splits' metrics without the SINGLE_CLASS keys)`` from
    the metrics of :func:`spt_cli.train.evaluate.evaluate` (a suffix such as ``_mm`` names
    the test split it came from)."""
    found: dict[str, str] = {}
    clean: dict[str, dict[str, float] | None] = {}
    for split, metrics in splits.items():
        if metrics is None:
            clean[split] = None
            continue
        clean[split] = {k: v for k, v in metrics.items() if not k.startswith(SINGLE_CLASS)}
        for key, value in metrics.items():
            if key.startswith(SINGLE_CLASS):
                found[split + key[len(SINGLE_CLASS) :]] = f"all {task.label_names[int(value)]!r}"
    return found, clean


def write_results(
    cfg: DictConfig, run_dir: Path, s: Setup, stage: str, fit: Fit, t0: float, **extra: Any
) -> dict[str, Any]:
    """Write ``results.json`` (schema in docs/architecture.md) atomically; return it."""
    single, clean = degenerate(s.task, {"dev": fit.dev, "test": fit.test})
    results = {
        "task": s.task.name,
        "method": fit.method,
        "stage": stage,
        "model": str(cfg.model.name),
        "shots": int(cfg.shots),
        "seed": int(cfg.seed),
        "status": "completed",
        "main_metric": s.task.main_metric,
        "head": fit.head,
        "dev": clean["dev"],
        "test": clean["test"],
        # Splits on which the model predicted a single class ({} when none did).
        "degenerate": single,
        "majority_baseline": majority(s),
        "parameters": fit.parameters,
        "selected_layers": extra.pop("selected_layers", None),
        "gate_probs": extra.pop("gate_probs", None),
        "prompt_layers": fit.layers,
        "best_step": fit.best_step,
        "steps": fit.steps,
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
    single = results.get("degenerate")  # absent in results written before it was kept
    if single:
        found = ", ".join(f"{split} {what}" for split, what in single.items())
        parts.append(f"SINGLE CLASS predicted: {found}")
    print("result: " + " | ".join(parts))
