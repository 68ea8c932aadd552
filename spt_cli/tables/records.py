"""Reading runs into `RunRecord`s: run directories (`results.json`, `failed.json`, Hydra
configs) and compact record files (`spt-cli-record/1`, written by `records=DIR`).

A run's identity (task, method, model, shots, seed, stage) comes from its results, then its
embedded config, its `.hydra/config.yaml`, and for failed sweep jobs the command-line overrides,
the sweep subdirectory name and the sweep's `multirun.yaml`. A record file carries the same keys
as `results.json` plus the job's overrides, so it reads the same way without a run directory.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt_cli.jobs import RECORD_FORMAT, noted_versions

# Stages whose run directories hold no per-task result (skipped, never reported as failed).
NON_RESULT_STAGES = {"table", "data"}
# spt_cli.jobs.record_path: <stage>-<shots>shot-seed<seed>-<fingerprint>.json
RECORD_NAME = re.compile(r"^[^/]+-\d+shot-seed-?\d+-[0-9a-f]{12}\.json$")


@dataclass
class RunRecord:
    """One run: its identity, outcome and, when completed, its headline numbers."""

    path: Path
    task: str | None = None
    method: str | None = None
    model: str | None = None
    shots: int | None = None
    seed: int | None = None
    stage: str | None = None
    status: str = "missing"  # "completed", a run's own failure status, "incomplete", "unreadable"
    reason: str | None = None  # why a non-completed run failed, one line
    main_metric: str | None = None
    test: float | None = None  # main metric on the test split, unscaled
    majority: float | None = None  # train's majority class on test, same metric
    majority_test: float | None = None  # test's own majority class (LM-BFF's Majority row)
    trainable: int | None = None
    selected_layers: list[int] | None = None
    gate_probs: dict[int, float] | None = None
    dev: float | None = None  # main metric on dev: what table.select=dev compares
    # Splits on which the model predicted a single class: {"test": "all 'positive'"}.
    degenerate: dict[str, str] = field(default_factory=dict)
    overrides: list[str] | None = None  # the job's command-line overrides, when known
    config: dict[str, Any] | None = field(default=None, repr=False)  # composed config, if known
    fingerprint: str | None = None  # records only (run directories do not store it)
    commit: str | None = None  # the git commit that produced it, when noted
    source: str = "run"  # "run": a run directory (path); "record": a record file (path)
    # What sets this run apart from the other runs of its table cell (its overrides that differ
    # there, e.g. "trainer.lr=0.02"), and a sort key for it; filled in by the aggregation.
    setting: str = ""
    setting_order: tuple[Any, ...] = ()

    @property
    def completed(self) -> bool:
        """Finished with a test number: the only runs that are averaged."""
        return self.status == "completed" and self.test is not None

    @property
    def search_only(self) -> bool:
        """A finished `search retrain=false`: selected layers but, by design, no test number."""
        return self.status == "completed" and self.test is None and self.stage == "search"

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.model, self.shots, self.task, self.method, self.seed)

    @property
    def where(self) -> str:
        """The run directory, relative to the working directory when below it."""
        try:
            return str(self.path.relative_to(Path.cwd()))
        except ValueError:
            return str(self.path)

    def ident(self) -> str:
        """Short human-readable identity, e.g. `spt / rte / seed 13`."""
        seed = "?" if self.seed is None else self.seed
        setting = f" [{self.setting}]" if self.setting else ""
        return f"{self.method or '?'} / {self.task or '?'} / seed {seed}{setting}"


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _metric(split: Any, name: str | None) -> float | None:
    """The named metric of a split dict; for several test sets ({"matched": {...}, ...}) the
    first one (MNLI matched comes first), since a table cell holds one number."""
    if not isinstance(split, dict) or not name:
        return None
    if name in split:
        return _finite(split[name])
    for sub in split.values():
        if isinstance(sub, dict) and name in sub:
            return _finite(sub[name])
    return None


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _name(value: Any) -> str | None:
    """A config group's name: a plain string, or the `name` key of a group dict."""
    if isinstance(value, dict):
        value = value.get("name")
    return str(value) if value not in (None, "") else None


def _identity_from_config(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": _name(cfg.get("dataset")),
        "method": _name(cfg.get("method")),
        "model": _name(cfg.get("model")),
        "shots": _as_int(cfg.get("shots")),
        "seed": _as_int(cfg.get("seed")),
        "stage": _name(cfg.get("stage")),
    }


def _fill_identity(rec: RunRecord, ident: dict[str, Any]) -> None:
    for key, value in ident.items():
        if getattr(rec, key) is None and value is not None:
            setattr(rec, key, value)


def _load_object(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def read_results(
    path: Path, run_cfg: dict[str, Any] | None, overrides: list[str] | None = None
) -> RunRecord:
    """A run directory's results.json (`run_cfg`, `overrides`: its .hydra files, if any)."""
    rec = RunRecord(path=path.parent, overrides=overrides, config=run_cfg)
    try:
        data = _load_object(path)
    except (OSError, ValueError) as exc:
        rec.status = "unreadable"
        rec.reason = f"results.json unreadable ({type(exc).__name__}: {exc})".splitlines()[0]
        if run_cfg:
            _fill_identity(rec, _identity_from_config(run_cfg))
        return rec
    return _from_results(rec, data, run_cfg)


def read_record(path: Path) -> RunRecord:
    """A compact record file (`spt-cli-record/1`): one run, no run directory needed."""
    rec = RunRecord(path=path, source="record")
    try:
        data = _load_object(path)
        if data.get("format") != RECORD_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {RECORD_FORMAT!r}")
    except (OSError, ValueError) as exc:
        rec.status = "unreadable"
        rec.reason = f"record unreadable ({type(exc).__name__}: {exc})".splitlines()[0]
        return rec
    overrides = data.get("overrides")
    rec.overrides = [str(o) for o in overrides] if isinstance(overrides, list) else None
    rec.fingerprint = str(data["fingerprint"]) if data.get("fingerprint") else None
    # The identity of a record missing a key: its overrides (dataset=rte, seed=13, ...).
    _from_results(rec, data, None)
    _fill_identity(rec, _identity_from_overrides(rec.overrides))
    return rec


def _from_results(
    rec: RunRecord, data: dict[str, Any], run_cfg: dict[str, Any] | None
) -> RunRecord:
    """Fill `rec` from the keys results.json and records share."""
    rec.task = _name(data.get("task"))
    rec.method = _name(data.get("method"))
    rec.model = _name(data.get("model"))
    rec.shots = _as_int(data.get("shots"))
    rec.seed = _as_int(data.get("seed"))
    rec.stage = _name(data.get("stage"))
    # Fall back on the embedded config, then on the run directory's Hydra config.
    for cfg in (data.get("config"), run_cfg):
        if isinstance(cfg, dict):
            _fill_identity(rec, _identity_from_config(cfg))
    if isinstance(data.get("config"), dict):
        rec.config = data["config"]

    commit = noted_versions(data).get("commit")
    rec.commit = str(commit) if commit else None
    rec.status = str(data.get("status") or "missing status")
    rec.main_metric = data.get("main_metric") if isinstance(data.get("main_metric"), str) else None
    rec.test = _metric(data.get("test"), rec.main_metric)
    rec.dev = _metric(data.get("dev"), rec.main_metric)
    majority = data.get("majority_baseline")
    if isinstance(majority, dict):
        rec.majority = _metric(majority.get("test"), rec.main_metric)
        rec.majority_test = _metric(majority.get("test_class"), rec.main_metric)
    params = data.get("parameters")
    if isinstance(params, dict):
        rec.trainable = _as_int(params.get("trainable"))
    layers = data.get("selected_layers")
    if isinstance(layers, list):
        rec.selected_layers = sorted({v for v in (_as_int(x) for x in layers) if v is not None})
    single = data.get("degenerate")  # absent in results written before it was kept
    if isinstance(single, dict):
        rec.degenerate = {str(k): str(v) for k, v in single.items()}
    probs = data.get("gate_probs")
    if isinstance(probs, dict):
        rec.gate_probs = {
            int(k): float(v) for k, v in probs.items() if _as_int(k) is not None and _finite(v)
        } or None

    if rec.status != "completed":
        error = data.get("error")
        rec.reason = f"status {rec.status!r}" + (f": {error}" if error else "")
    elif rec.test is None and not rec.search_only:
        rec.status = "no metric"
        rec.reason = f"completed but test has no finite {rec.main_metric or 'main_metric'!s}"
    return rec


# hydra.sweep.subdir of conf/config.yaml, NUM_TASK_METHOD_SHOTS-SEED, e.g. 3_rte_prompt_tuning_16-87
# (task names hold no underscore, method names may).
_SUBDIR = re.compile(r"^\d+_(?P<task>[^_]+)_(?P<method>.+)_(?P<shots>\d+)-(?P<seed>-?\d+)$")
_OVERRIDE_KEYS = {"dataset": "task", "method": "method", "model": "model", "shots": "shots",
                  "seed": "seed", "stage": "stage"}  # fmt: skip


def _identity_from_dirname(run_dir: Path) -> dict[str, Any]:
    match = _SUBDIR.match(run_dir.name)
    if not match:
        return {}
    ident: dict[str, Any] = match.groupdict()
    ident["shots"], ident["seed"] = int(ident["shots"]), int(ident["seed"])
    return ident


def _identity_from_overrides(overrides: Any) -> dict[str, Any]:
    """`dataset=rte`, `seed=13`, ... from a job's command-line overrides."""
    ident: dict[str, Any] = {}
    for item in overrides if isinstance(overrides, list) else []:
        key, sep, value = str(item).lstrip("+~").partition("=")
        field_name = _OVERRIDE_KEYS.get(key)
        if sep and field_name:
            ident[field_name] = _as_int(value) if field_name in ("shots", "seed") else value
    return ident


def _read_yaml(path: Path) -> dict[str, Any] | None:
    """A config as plain containers, unresolved (interpolations such as ${now:...} cannot be
    resolved outside Hydra; the identity keys are literals)."""
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # a half-written file must not stop the whole table
        return None
    return cfg if isinstance(cfg, dict) else None


def read_hydra_config(run_dir: Path) -> dict[str, Any] | None:
    return _read_yaml(run_dir / ".hydra" / "config.yaml")


def read_hydra_overrides(run_dir: Path) -> list[str] | None:
    """The job's command-line overrides from `.hydra/overrides.yaml` (a list of `key=value`)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # a half-written file must not stop the whole table
        return None
    return [str(o) for o in data] if isinstance(data, list) else None


def _sweep_config(run_dir: Path) -> dict[str, Any] | None:
    """The sweep's multirun.yaml (its non-swept values) in the nearest parent that has one."""
    for parent in run_dir.parents:
        if (parent / "multirun.yaml").is_file():
            return _read_yaml(parent / "multirun.yaml")
    return None


def read_failed(path: Path, run_cfg: dict[str, Any] | None) -> RunRecord:
    """failed.json, written by a sweep job that failed (the CLI removes the rest of its
    directory, .hydra included, so the identity comes from overrides and the directory name)."""
    rec = RunRecord(path=path.parent, status="failed")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    error = str(data.get("error") or "").strip().splitlines()
    rec.reason = "failed" + (f": {error[0]}" if error else "")
    overrides = data.get("overrides")
    rec.overrides = [str(o) for o in overrides] if isinstance(overrides, list) else None
    _fill_identity(rec, _identity_from_overrides(rec.overrides))
    _fill_identity(rec, _identity_from_dirname(rec.path))
    for cfg in (run_cfg, _sweep_config(rec.path)):
        if cfg:
            _fill_identity(rec, _identity_from_config(cfg))
            # The sweep's values stand in for the keys its overrides leave at their defaults.
            rec.config = rec.config or cfg
    return rec
