"""Synthetic runs for the `spt-run table` tests: run directories and compact records written
as the CLI writes them (no training)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import OmegaConf


def table_cfg(runs, select: str = "dev"):
    """What run_table reads of the composed config: runs, and conf/config.yaml's table section
    with ``table.select`` set."""
    from spt_cli.config import primary_defaults

    table = primary_defaults("table")
    table.select = select
    return OmegaConf.create({"runs": runs, "table": table})


def results_data(
    *,
    task: str,
    method: str,
    seed: int,
    value: float | None = None,
    dev: float | None = 0.5,
    shots: int = 16,
    model: str = "minilm",
    stage: str = "train",
    status: str = "completed",
    metric: str = "accuracy",
    majority: float | None = None,
    majority_test: float | None = None,
    trainable: int = 1000,
    selected_layers: list[int] | None = None,
    gate_probs: dict[str, float] | None = None,
) -> dict:
    """The keys of a results.json (and of a record) that tables read."""
    return {
        "task": task,
        "method": method,
        "stage": stage,
        "model": model,
        "shots": shots,
        "seed": seed,
        "status": status,
        "main_metric": metric,
        "dev": {} if dev is None else {metric: dev},
        "test": {} if value is None else {metric: value},
        "majority_baseline": {
            **({"test": {metric: majority}} if majority is not None else {}),
            **({"test_class": {metric: majority_test}} if majority_test is not None else {}),
        },
        "parameters": {"trainable": trainable, "backbone": 22_000_000, "percent": 0.1},
        "selected_layers": selected_layers,
        "gate_probs": gate_probs,
    }


def write_run(
    root: Path,
    name: str,
    *,
    results: bool = True,
    raw: str | None = None,
    overrides: list[str] | None = None,
    **kw,
) -> Path:
    """A Hydra-like run directory: .hydra/config.yaml (and overrides.yaml when `overrides` is
    given), and results.json (`results_data(**kw)`) unless results=False."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    data = results_data(**kw)
    cfg = {
        "dataset": {"name": data["task"]},
        "method": {"name": data["method"]},
        "model": {"name": data["model"]},
        "stage": {"name": data["stage"]},
        "shots": data["shots"],
        "seed": data["seed"],
        "hydra_time": "${now:%H}",  # an unresolvable interpolation must not break reading
    }
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    if overrides is not None:
        (run / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if raw is not None:
        (run / "results.json").write_text(raw)
    elif results:
        (run / "results.json").write_text(json.dumps(data))
    return run


def write_record(
    root: Path,
    *,
    overrides: list[str] | None = None,
    config: dict | None = None,
    fingerprint: str | None = None,
    **kw,
) -> Path:
    """A compact record where `records=DIR` puts it:
    <task>/<method>/<stage>-<K>shot-seed<S>-<fp>.json."""
    data = results_data(**kw)
    overrides = list(overrides or [])
    fp = (
        fingerprint
        or hashlib.sha256(json.dumps([data, overrides], sort_keys=True).encode()).hexdigest()[:12]
    )
    name = f"{data['stage']}-{data['shots']}shot-seed{data['seed']}-{fp}.json"
    path = root / data["task"] / data["method"] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"format": "spt-cli-record/1", "fingerprint": fp, "commit": "abc", **data}
    record |= {"overrides": overrides, "config": config or {}}
    path.write_text(json.dumps(record))
    return path
