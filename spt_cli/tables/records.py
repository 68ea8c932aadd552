"""Reading run directories: `results.json`, `failed.json` and Hydra configs into `RunRecord`s.

A run's identity (task, method, model, shots, seed, stage) comes from its results, then its
embedded config, its `.hydra/config.yaml`, and for failed sweep jobs the command-line overrides,
the sweep subdirectory name and the sweep's `multirun.yaml`.
"""

from __future__ import annotations

import glob
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Stages whose run directories hold no per-task result (skipped, never reported as failed).
NON_RESULT_STAGES = {"table", "data"}


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
    majority: float | None = None  # majority-class baseline, same metric and split
    trainable: int | None = None
    selected_layers: list[int] | None = None
    gate_probs: dict[int, float] | None = None

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
        return f"{self.method or '?'} / {self.task or '?'} / seed {seed}"


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


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


def _read_results(path: Path, run_cfg: dict[str, Any] | None) -> RunRecord:
    rec = RunRecord(path=path.parent)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        rec.status = "unreadable"
        rec.reason = f"results.json unreadable ({type(exc).__name__}: {exc})".splitlines()[0]
        if run_cfg:
            _fill_identity(rec, _identity_from_config(run_cfg))
        return rec

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

    rec.status = str(data.get("status") or "missing status")
    rec.main_metric = data.get("main_metric") if isinstance(data.get("main_metric"), str) else None
    rec.test = _metric(data.get("test"), rec.main_metric)
    majority = data.get("majority_baseline")
    if isinstance(majority, dict):
        rec.majority = _metric(majority.get("test"), rec.main_metric)
    params = data.get("parameters")
    if isinstance(params, dict):
        rec.trainable = _as_int(params.get("trainable"))
    layers = data.get("selected_layers")
    if isinstance(layers, list):
        rec.selected_layers = sorted({v for v in (_as_int(x) for x in layers) if v is not None})
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


def _read_hydra_config(run_dir: Path) -> dict[str, Any] | None:
    return _read_yaml(run_dir / ".hydra" / "config.yaml")


def _sweep_config(run_dir: Path) -> dict[str, Any] | None:
    """The sweep's multirun.yaml (its non-swept values) in the nearest parent that has one."""
    for parent in run_dir.parents:
        if (parent / "multirun.yaml").is_file():
            return _read_yaml(parent / "multirun.yaml")
    return None


def _read_failed(path: Path, run_cfg: dict[str, Any] | None) -> RunRecord:
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
    _fill_identity(rec, _identity_from_overrides(data.get("overrides")))
    _fill_identity(rec, _identity_from_dirname(rec.path))
    for cfg in (run_cfg, _sweep_config(rec.path)):
        if cfg:
            _fill_identity(rec, _identity_from_config(cfg))
    return rec


def _find(pattern: str | Path) -> tuple[set[Path], set[Path], set[Path]]:
    """results.json files, failed.json files and Hydra run directories below the matches."""
    pattern = str(pattern)
    roots = sorted(glob.glob(pattern, recursive=True)) if _is_glob(pattern) else [pattern]
    results: set[Path] = set()
    failed: set[Path] = set()
    run_dirs: set[Path] = set()
    for root in map(Path, roots):
        if root.is_file():
            if root.name == "results.json":
                results.add(root.resolve())
            elif root.name == "failed.json":
                failed.add(root.resolve())
            continue
        if not root.is_dir():
            continue
        if (root / ".hydra" / "config.yaml").is_file():
            run_dirs.add(root.resolve())
        results.update(p.resolve() for p in root.rglob("results.json"))
        failed.update(p.resolve() for p in root.rglob("failed.json"))
        run_dirs.update(p.parent.parent.resolve() for p in root.rglob(".hydra/config.yaml"))
    return results, failed, run_dirs


def collect_runs(
    pattern: str | Path | Sequence[str | Path], exclude: Path | None = None
) -> list[RunRecord]:
    """Read every run below a multirun directory, a run directory, a results.json or a glob.

    A directory with failed.json (a failed sweep job) is a `failed` run; one with
    `.hydra/config.yaml` but neither file anywhere below it is `incomplete` (killed or still
    running). Directories of the `table` and `data` stages, and anything under `exclude` (the
    table's own output directory), are skipped. Sorted by path: the same order on every call.
    """
    patterns = [pattern] if isinstance(pattern, str | Path) else list(pattern)
    results: set[Path] = set()
    failed: set[Path] = set()
    run_dirs: set[Path] = set()
    for pat in patterns:
        found = _find(pat)
        results |= found[0]
        failed |= found[1]
        run_dirs |= found[2]
    excluded = exclude.resolve() if exclude is not None else None
    configs: dict[Path, dict[str, Any] | None] = {d: _read_hydra_config(d) for d in run_dirs}

    def owner(path: Path) -> Path | None:
        """The nearest enclosing Hydra run directory (supplies a fallback identity)."""
        return next((p for p in path.parents if p in configs), None)

    def skip(path: Path, run_dir: Path | None) -> bool:
        if excluded is not None and (path == excluded or excluded in path.parents):
            return True
        cfg = configs.get(run_dir) if run_dir else None
        return bool(cfg) and _identity_from_config(cfg)["stage"] in NON_RESULT_STAGES

    records: list[RunRecord] = []
    for path in sorted(results):
        run_dir = owner(path)
        if not skip(path, run_dir):
            records.append(_read_results(path, configs.get(run_dir) if run_dir else None))

    result_dirs = {p.parent for p in results}
    for path in sorted(failed):
        run_dir = owner(path)
        if path.parent in result_dirs or skip(path, run_dir):
            continue
        rec = _read_failed(path, configs.get(run_dir) if run_dir else None)
        if rec.stage not in NON_RESULT_STAGES:
            records.append(rec)

    done_dirs = result_dirs | {p.parent for p in failed}
    for run_dir in sorted(run_dirs):
        if skip(run_dir, run_dir):
            continue
        if any(d == run_dir or run_dir in d.parents for d in done_dirs):
            continue
        rec = RunRecord(path=run_dir, status="incomplete", reason="no results.json (killed?)")
        cfg = configs[run_dir]
        if cfg is None:
            rec.reason = "no results.json and .hydra/config.yaml unreadable"
        else:
            _fill_identity(rec, _identity_from_config(cfg))
        records.append(rec)
    records.sort(key=lambda r: str(r.path))
    return records
