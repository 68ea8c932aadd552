"""Several settings in one table cell (a grid, e.g. over trainer.lr): tell them apart, then keep
the one with the best dev score (`table.select=dev`) or refuse to mix them (`table.select=all`).

A run's *setting* is its overrides minus the keys that never define a configuration (the cell's
identity: seed, dataset, model, method, shots, stage; bookkeeping such as records= or logger=)
and minus every key that has one value across the cell. Keys are compared by value, with a
run's own config standing in for a key it left at its default: `trainer.lr=5e-3` and an unset
lr of 0.005 are one setting.

Dev is the only thing compared; test never is. Settings are scored on the mean dev main metric
over the seeds that every candidate setting has, so a setting run on more seeds is neither
favoured nor penalised; a tie goes to the setting that sorts first.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from spt_cli.config import SELECT_MODES
from spt_cli.errors import ConfigError
from spt_cli.jobs import NOT_FINGERPRINTED
from spt_cli.tables.records import RunRecord

IDENTITY_KEYS = ("seed", "dataset", "model", "method", "shots", "stage")
# Keys that say where or how a job ran, not what it computed. from_search and artifact are
# per-seed paths; retrain=true|false only says whether search and retrain share one process.
BOOKKEEPING = frozenset(
    {
        *NOT_FINGERPRINTED, "from_search", "artifact", "retrain", "trainer.num_threads",
        "trainer.device", "trainer.eval_batch_size", "trainer.checkpoint_every",
        "trainer.cache_lower_layers", "trainer.cache_max_mb", "data.root", "data.hub",
    }
)  # fmt: skip
UNSET = (9, "")  # a key neither overridden nor in the run's config: sorts after every value


def _ignored(key: str) -> bool:
    top = key.split(".", 1)[0]
    return key in IDENTITY_KEYS or key in BOOKKEEPING or top in NOT_FINGERPRINTED


def _norm(value: Any) -> tuple[Any, ...]:
    """A comparable, sortable form of an override value (text) or a config value: numbers by
    value (1e-3 == 0.001 == 1.0e-3), everything else by its YAML meaning."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            return (1, value)
        if isinstance(value, str):
            try:
                return (0, float(value))  # YAML 1.1 reads 1e-3 as text
            except ValueError:
                return (1, value)
    if isinstance(value, bool) or value is None:
        return (1, json.dumps(value))
    if isinstance(value, int | float):
        return (0, float(value))
    if isinstance(value, list | tuple):
        return (2, tuple(_norm(v) for v in value))
    return (3, json.dumps(value, sort_keys=True, default=str))


def _text(value: Any) -> str:
    """How a config value is shown when no override spelled it."""
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)


def _overrides(rec: RunRecord) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in rec.overrides or []:
        key, sep, value = str(item).lstrip("+~").partition("=")
        if sep and not _ignored(key):
            out[key] = value
    return out


def _lookup(config: dict[str, Any] | None, key: str) -> tuple[bool, Any]:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def holds(config: dict[str, Any] | None, setting: str) -> bool:
    """Whether ``config`` has ``key=value`` (values compared as settings are: 1e-3 == 0.001)."""
    key, _, value = setting.partition("=")
    known, found = _lookup(config, key)
    return known and _norm(found) == _norm(value)


def assign_settings(records: Iterable[RunRecord]) -> None:
    """Set `setting` and `setting_order` of each record, per (model, shots, method, task) cell."""
    cells: dict[tuple[Any, ...], list[RunRecord]] = defaultdict(list)
    for rec in records:
        cells[(rec.model, rec.shots, rec.method, rec.task)].append(rec)
    for recs in cells.values():
        recs.sort(key=lambda r: str(r.path))
        given = [_overrides(r) for r in recs]
        keys = sorted({k for o in given for k in o})
        values: dict[str, list[tuple[tuple[Any, ...], str]]] = {}
        for key in keys:
            column = []
            for rec, over in zip(recs, given, strict=True):
                if key in over:
                    column.append((_norm(over[key]), over[key]))
                else:
                    known, value = _lookup(rec.config, key)
                    column.append((_norm(value), _text(value)) if known else (UNSET, "unset"))
            if len({norm for norm, _ in column}) > 1:
                values[key] = column
        varying = sorted(values)
        labels: dict[tuple[Any, ...], str] = {}  # one spelling per setting: its first run's
        for i, rec in enumerate(recs):
            order = tuple((k, values[k][i][0]) for k in varying)
            labels.setdefault(order, " ".join(f"{k}={values[k][i][1]}" for k in varying))
            rec.setting, rec.setting_order = labels[order], order


@dataclass
class Score:
    """One candidate setting of a cell, as compared on dev (unscaled)."""

    setting: str
    order: tuple[Any, ...]
    dev: float | None  # mean dev main metric over the compared seeds; None: no dev number
    seeds: list[int]  # seeds with a completed run of this setting (all reported if chosen)
    dev_all: float | None  # mean dev over all of this setting's seeds


@dataclass
class Choice:
    """The setting kept for one table cell, and what it was compared with."""

    method: str
    task: str
    chosen: str
    scores: list[Score]  # chosen first, then by dev score (best first)
    seeds: list[int]  # the seeds compared on: those every candidate has
    common: bool  # False: no seed common to all candidates; each scored on its own seeds

    def short(self, score: Score) -> str:
        """`trainer.lr=0.005` as `0.005` when only one key varies (the chosen label names it)."""
        if len(score.order) == 1 and "=" in score.setting:
            return score.setting.split("=", 1)[1]
        return score.setting


def _setting_order(recs: list[RunRecord]) -> tuple[Any, ...]:
    return recs[0].setting_order


def choose(
    method: str, task: str, by_setting: dict[str, list[RunRecord]], select: str, where: str
) -> Choice | None:
    """The setting to report for a cell whose completed runs come from several settings.

    `by_setting`: completed runs (with a test number) per setting. None for a single setting.
    select=all refuses several; select=dev keeps the best mean dev over the common seeds.
    """
    if len(by_setting) < 2:
        return None
    if select == "all":
        listed = "; ".join(sorted(by_setting, key=lambda s: _setting_order(by_setting[s])))
        raise ConfigError(
            f"table.select=all: {method} / {task} ({where}) has runs of {len(by_setting)} "
            f"settings ({listed}); pass table.select=dev to keep the best on dev, or narrow runs="
        )
    if select != "dev":
        raise ConfigError(f"table.select={select!r}; choose one of: {', '.join(SELECT_MODES)}")
    dev: dict[str, dict[int, float]] = {}
    for setting, recs in by_setting.items():
        dev[setting] = {r.seed: r.dev for r in recs if r.seed is not None and r.dev is not None}
    candidates = [s for s in by_setting if dev[s]]
    common = set.intersection(*(set(dev[s]) for s in candidates)) if candidates else set()
    scores: list[Score] = []
    for setting in sorted(by_setting, key=lambda s: _setting_order(by_setting[s])):
        own = dev[setting]
        compared = [own[s] for s in sorted(common)] if common else list(own.values())
        scores.append(
            Score(
                setting=setting,
                order=_setting_order(by_setting[setting]),
                dev=statistics.fmean(compared) if compared else None,
                seeds=sorted(r.seed for r in by_setting[setting] if r.seed is not None),
                dev_all=statistics.fmean(own.values()) if own else None,
            )
        )
    best: Score | None = None
    for score in scores:  # in sort order, so a tie keeps the earlier setting
        if score.dev is not None and (best is None or score.dev > best.dev):  # type: ignore[operator]
            best = score
    if best is None:
        raise ConfigError(
            f"table.select=dev: {method} / {task} ({where}) has runs of {len(by_setting)} "
            "settings and none has a dev number to choose by; pass runs= of one setting"
        )
    rest = sorted(
        (s for s in scores if s is not best),
        key=lambda s: (s.dev is None, -(s.dev or 0.0), s.order),
    )
    return Choice(
        method=method,
        task=task,
        chosen=best.setting,
        scores=[best, *rest],
        seeds=sorted(common),
        common=bool(common),
    )
