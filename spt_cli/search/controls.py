"""The measure of a search: retrain every K-subset of the candidate layers (or a seeded sample
when there are many) with the retrain's own settings, and rank the searched set among them.

The retrains depend on the task, seed and protocol only, not on how a search ran, so they are
computed once per task-seed and kept as a compact record (one JSON file) that every search
variant is ranked against.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spt_cli.errors import ConfigError
from spt_cli.files import write_json

FORMAT = "spt-cli-controls/1"


def layer_subsets(
    candidates: Sequence[int], k: int, max_subsets: int, seed: int
) -> list[tuple[int, ...]]:
    """Every K-subset of ``candidates`` when there are at most ``max_subsets``, else a seeded
    sample of that many (sorted, so the order does not depend on the draw)."""
    every = list(itertools.combinations(sorted(candidates), k))
    if len(every) <= max_subsets:
        return every
    return sorted(random.Random(seed).sample(every, max_subsets))


def shard_of(sets: Sequence[tuple[int, ...]], shard: int, shards: int) -> list[tuple[int, ...]]:
    """Every ``shards``-th of ``sets`` from ``shard`` on: the part one of ``shards`` processes
    retrains. It depends on the list only, never on what a record holds yet, so shards started
    at different times still split the work without overlap."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not one of 0..{shards - 1}")
    return list(sets[shard::shards])


def subset_key(layers: Sequence[int]) -> str:
    """``"2,4"``: a subset as a record key."""
    return ",".join(str(int(x)) for x in sorted(layers))


def percentile(score: float, others: Sequence[float]) -> float:
    """Share (%) of ``others`` that ``score`` beats, ties counted half: 100 = best of all,
    50 = a typical member, 0 = worst."""
    if not others:
        return float("nan")
    below = sum(o < score for o in others)
    ties = sum(o == score for o in others)
    return 100.0 * (below + 0.5 * ties) / len(others)


def rank(
    selected: Sequence[int],
    subsets: dict[str, dict[str, Any]],
    split: str = "dev",
    extra: dict[str, dict[str, Any]] | None = None,
):
    """(rank 1 = best, percentile) of ``selected`` by its ``split`` score against ``subsets``
    (the reference: the other subsets when it is one of them, all of them when it is one of
    the ``extra`` sets retrained beside them); None when the set was not retrained."""
    key = subset_key(selected)
    if key in subsets:
        score = subsets[key][split]
    elif extra and key in extra:
        score = extra[key][split]
    else:
        return None
    others = [v[split] for k, v in subsets.items() if k != key]
    place = 1 + sum(o > score for o in others)
    return place, percentile(score, others)


def lookup(record: dict[str, Any], layers: Sequence[int]) -> dict[str, Any] | None:
    """The retrain of ``layers`` in a control record: one of its subsets or one of the extra
    sets retrained beside them (None: not retrained)."""
    key = subset_key(layers)
    return record["subsets"].get(key) or record.get("extra", {}).get(key)


def protocol_hash(protocol: dict[str, Any]) -> str:
    text = json.dumps(protocol, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class ControlRecord:
    """The retrains of one task-seed under one protocol, as a JSON file updated per subset.

    The file name ends with the protocol's hash, so controls made with other settings (another
    retrain family, learning rate, step count) live beside these instead of mixing with them.
    """

    def __init__(self, folder: Path, identity: dict[str, Any], protocol: dict[str, Any]) -> None:
        digest = protocol_hash(protocol)
        name = f"{identity['task']}-seed{identity['seed']}-{digest}.json"
        self.path = folder / str(identity["model"]) / f"{identity['shots']}shot" / name
        self.data: dict[str, Any] = {
            "format": FORMAT,
            **identity,
            "protocol_hash": digest,
            "protocol": protocol,
            "subsets": {},
            "extra": {},
        }
        if self.path.exists():
            self._merge(json.loads(self.path.read_text(encoding="utf-8")))

    @property
    def subsets(self) -> dict[str, dict[str, Any]]:
        """The sample (or every subset): what percentiles are computed against."""
        return self.data["subsets"]

    @property
    def extra(self) -> dict[str, dict[str, Any]]:
        """Named sets retrained beside the sample (the last K, a searched set), ranked against
        it but not part of it."""
        return self.data["extra"]

    def has(self, layers: Sequence[int]) -> bool:
        return lookup(self.data, layers) is not None

    def refresh(self) -> None:
        """Take in what another process (a second shard) added to the file meanwhile."""
        if self.path.exists():
            self._merge(json.loads(self.path.read_text(encoding="utf-8")))

    def add(self, layers: Sequence[int], entry: dict[str, Any], *, extra: bool = False) -> None:
        """Keep one retrain's scores (in the sample, or ``extra``) and rewrite the file
        (atomically), with whatever another process added to it meanwhile. A lock beside the
        file makes read-merge-write one step, so two shards never drop each other's entries."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.refresh()
            (self.extra if extra else self.subsets)[subset_key(layers)] = entry
            write_json(self.path, self.data)

    def _merge(self, on_disk: dict[str, Any]) -> None:
        # The file name says task, seed and protocol, not the budget: a K = 2 run must not
        # add its sets to a record of K = 4 subsets (the sample it is ranked against).
        for key in ("k", "candidates"):
            if key in on_disk and key in self.data and on_disk[key] != self.data[key]:
                raise ConfigError(
                    f"{self.path} holds subsets of K={on_disk.get('k')} among "
                    f"{on_disk.get('candidates')}, this run's are K={self.data.get('k')} among "
                    f"{self.data.get('candidates')}; give them their own folder, e.g. "
                    f"controls.records=results/controls_k{self.data.get('k')}"
                )
        for part in ("subsets", "extra"):
            self.data[part] = {**on_disk.get(part, {}), **self.data[part]}
