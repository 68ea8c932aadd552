"""The split protocol (method.md section 3): which examples are train, dev and test.

Full data: test = the original dev set (GLUE dev / SuperGLUE val; MNLI matched and
mismatched), dev = a stratified seeded hold-out of train (`dev_ratio`, at most `dev_max`),
train = the rest. MR/CR/MPQA/Subj/TREC: LM-BFF's original/ train and test; with no test file, a
seeded stratified test set of `test_size` examples is cut from train first.

Few-shot K: LM-BFF's k-shot/<TASK>/<K>-<seed>/ files verbatim when they exist (their test
file too; else the full-data test). Otherwise K per class for train and the next K per class
for dev are drawn from the training pool with LM-BFF's own algorithm (numpy RandomState(seed)
shuffle of the pool, then the first K / next K of each class), which reproduces the official
files from the same pool (SST-2's pool is LM-BFF's original/SST-2/train.tsv when present).
STS-B is stratified on score < 2.5 vs >= 2.5, as LM-BFF does. SuperGLUE tasks without a full
train file draw from FewGLUE's train.jsonl (train) and dev32.jsonl (dev).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spt_cli.data import sources
from spt_cli.data.tasks import Example, TaskSpec, get_task
from spt_cli.errors import ConfigError, DataError


@dataclass
class TaskData:
    """A task's splits. `tests` maps split name (task.test_splits) to examples; `files` are
    the files read; `source` names the layout(s) used."""

    task: TaskSpec
    train: list[Example]
    dev: list[Example]
    tests: dict[str, list[Example]]
    files: list[str] = field(default_factory=list)
    source: str = ""


def strata_key(task: TaskSpec) -> Callable[[Example], Hashable]:
    """The class used for stratification: the label, or for regression LM-BFF's two bins."""
    if task.is_regression:
        return lambda ex: int(float(ex.label) >= 2.5)
    return lambda ex: ex.label


def strata_name(task: TaskSpec, key: Hashable) -> str:
    if task.is_regression:
        return "score >= 2.5" if key else "score < 2.5"
    return task.label_names[int(key)]  # type: ignore[arg-type]


def stratified_split(
    examples: list[Example], n_out: int, seed: int, key: Callable[[Example], Hashable]
) -> tuple[list[Example], list[Example]]:
    """(rest, held_out) with `n_out` held-out examples spread over classes in proportion
    (largest remainder), chosen with random.Random(seed); both keep the input order."""
    if n_out <= 0:
        return list(examples), []
    groups: dict[Hashable, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(key(ex), []).append(i)
    keys = sorted(groups, key=str)
    total = len(examples)
    exact = {k: n_out * len(groups[k]) / total for k in keys}
    quota = {k: int(exact[k]) for k in keys}
    by_remainder = sorted(keys, key=lambda k: (-(exact[k] - quota[k]), str(k)))
    for k in by_remainder[: n_out - sum(quota.values())]:
        quota[k] += 1
    rng = random.Random(seed)
    held: set[int] = set()
    for k in keys:
        idx = list(groups[k])
        rng.shuffle(idx)
        held.update(idx[: quota[k]])
    rest = [ex for i, ex in enumerate(examples) if i not in held]
    out = [ex for i, ex in enumerate(examples) if i in held]
    return rest, out


def sample_few_shot(
    pool: list[Example],
    task: TaskSpec,
    shots: int,
    seed: int,
    dev_pool: list[Example] | None = None,
    pool_name: str = "train",
) -> tuple[list[Example], list[Example]]:
    """K per class for train and K per class for dev (disjoint), LM-BFF's algorithm.

    With `dev_pool` (FewGLUE dev32) dev is drawn from it instead of the next K of `pool`.
    """
    key = strata_key(task)

    def groups_of(examples: list[Example]) -> dict[Hashable, list[Example]]:
        order = list(range(len(examples)))
        np.random.RandomState(seed).shuffle(order)  # LM-BFF: np.random.seed(seed); shuffle
        groups: dict[Hashable, list[Example]] = {}
        for i in order:  # classes in order of first appearance, as LM-BFF writes them
            groups.setdefault(key(examples[i]), []).append(examples[i])
        return groups

    def check(groups: dict[Hashable, list[Example]], need: int, name: str, what: str) -> None:
        classes = [0, 1] if task.is_regression else range(len(task.label_names))
        for c in classes:
            have = len(groups.get(c, []))
            if have < need:
                raise DataError(
                    f"shots={shots} exceeds the {have} examples of class '{strata_name(task, c)}'"
                    f" in {task.name} {name} ({what}); lower shots"
                )

    groups = groups_of(pool)
    if dev_pool is None:
        check(groups, 2 * shots, pool_name, f"K train + K dev = {2 * shots} needed")
        train = [ex for g in groups.values() for ex in g[:shots]]
        dev = [ex for g in groups.values() for ex in g[shots : 2 * shots]]
        return train, dev
    dev_groups = groups_of(dev_pool)
    check(groups, shots, pool_name, f"{shots} needed")
    check(dev_groups, shots, "dev32", f"{shots} needed")
    train = [ex for g in groups.values() for ex in g[:shots]]
    dev = [ex for g in dev_groups.values() for ex in g[:shots]]
    return train, dev


def check_disjoint(train: list[Example], dev: list[Example], where: str) -> None:
    """User-supplied few-shot files: no duplicate ids, and train and dev never overlap."""
    for name, split in (("train", train), ("dev", dev)):
        seen: set[str] = set()
        for ex in split:
            if ex.uid in seen:
                raise DataError(f"{where}: duplicate id {ex.uid} in {name}; remove the repeat")
            seen.add(ex.uid)
    overlap = sorted({ex.uid for ex in train} & {ex.uid for ex in dev})
    if overlap:
        raise DataError(
            f"{where}: {len(overlap)} example(s) in both train and dev (e.g. {overlap[0]}); "
            "few-shot train and dev must be disjoint"
        )


class _Search:
    """Looks for files under the candidate roots and remembers every path tried."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots
        self.tried: list[str] = []
        self.hub_reason: str | None = None

    def find(self, *rels: str) -> tuple[Path, list[Path]] | None:
        """(root, paths) of the first root holding all files `rels` (else None, recorded)."""
        for root in self.roots:
            paths = [root / rel for rel in rels]
            if all(p.is_file() for p in paths):
                return root, paths
            for p in paths:  # a root that does not exist is reported once, not per file
                if root.is_dir() and not p.is_file() and str(p) not in self.tried:
                    self.tried.append(str(p))
        return None

    def error(self, what: str) -> DataError:
        hub_reason = self.hub_reason
        absent = [str(r) for r in self.roots if not r.is_dir()]
        parts = [f"no {what} found; missing: {', '.join(self.tried) or '-'}"]
        if absent:
            parts.append(f"not a folder: {', '.join(absent)}")
        if hub_reason:
            parts.append(f"Hub: {hub_reason}")
        return DataError("; ".join(parts) + f". To fix: {sources.HOW_TO_GET_DATA}")


@dataclass
class _Full:
    train: list[Example]
    tests: dict[str, list[Example]]
    files: list[str]  # train file first
    source: str


def _read_tests(
    task: TaskSpec, layout: sources.FullLayout, root: Path
) -> tuple[dict[str, list[Example]], list[str]]:
    """A layout's test splits under `root`, optional ones (MNLI mismatched) when present."""
    tests, files = {}, []
    for name, rel in [*layout.tests.items(), *layout.optional_tests.items()]:
        path = root / rel
        if rel in layout.tests.values() or path.is_file():
            tests[name] = sources.read(task, path)
            files.append(str(path))
    return tests, files


def _load_full(
    task: TaskSpec, search: _Search, seed: int, test_size: int, allow_hub: bool,
    what: str = "full data",
) -> _Full:  # fmt: skip
    """A task's full training pool and test splits (local layouts first, then the Hub)."""
    for layout in sources.full_layouts(task):
        found = search.find(layout.train, *layout.tests.values())
        if found is None:
            continue
        root, (train_path, *_) = found
        tests, test_files = _read_tests(task, layout, root)
        train = sources.read(task, train_path)
        if layout.carve_test:
            if test_size >= len(train):
                raise ConfigError(
                    f"data.test_size={test_size} leaves no training data for {task.name} "
                    f"({len(train)} examples); lower data.test_size"
                )
            train, test = stratified_split(train, test_size, seed, strata_key(task))
            tests = {task.test_splits[0]: test}
        return _Full(train, tests, [str(train_path), *test_files], layout.source)
    search.hub_reason = "disabled (data.hub=false)"
    if allow_hub:
        try:
            train, tests, source = sources.load_from_hub(task)
            return _Full(train, tests, [source], source)
        except DataError as exc:
            search.hub_reason = str(exc)
    raise search.error(f"{task.name} {what}")


def _load_tests(
    task: TaskSpec, search: _Search, seed: int, test_size: int, allow_hub: bool
) -> tuple[dict[str, list[Example]], list[str]]:
    """Only the full-data test splits: a layout's test files even when its train file is
    missing (MNLI dev_matched, SuperGLUE val), else whatever _load_full finds."""
    for layout in sources.full_layouts(task):
        if layout.tests:
            found = search.find(*layout.tests.values())
            if found:
                return _read_tests(task, layout, found[0])
    full = _load_full(task, search, seed, test_size, allow_hub, what="test data")
    return full.tests, full.files[1:]


def load_task_data(
    task: str | TaskSpec,
    root: str | Path | None = None,
    shots: int = 0,
    seed: int = 13,
    dev_ratio: float = 0.1,
    dev_max: int = 1000,
    test_size: int = 2000,
    allow_hub: bool = True,
) -> TaskData:
    """Train/dev/test of `task` under the split protocol (module docstring); `shots=0` is full
    data. Deterministic: the same arguments always give the same examples in the same order."""
    spec = get_task(task)
    if shots < 0:
        raise ConfigError(f"shots={shots} must be >= 0 (0 = full data)")
    if not 0 <= dev_ratio < 1:
        raise ConfigError(f"data.dev_ratio={dev_ratio} must be in [0, 1)")
    if dev_max < 0 or test_size < 1:
        raise ConfigError("data.dev_max must be >= 0 and data.test_size >= 1")
    search = _Search(sources.candidate_roots(root))
    if shots == 0:
        full = _load_full(spec, search, seed, test_size, allow_hub)
        n_dev = min(dev_max, round(len(full.train) * dev_ratio))
        train, dev = stratified_split(full.train, n_dev, seed, strata_key(spec))
        return TaskData(spec, train, dev, full.tests, full.files, full.source)
    return _load_few_shot(spec, search, shots, seed, test_size, allow_hub)


def _load_few_shot(
    task: TaskSpec, search: _Search, shots: int, seed: int, test_size: int, allow_hub: bool
) -> TaskData:
    args = (search, seed, test_size, allow_hub)
    kshot = sources.kshot_files(task, shots, seed)
    found = search.find(*kshot[:2]) if kshot else None
    if found:
        # LM-BFF's files, verbatim. Ids of GLUE-style files are train-set ids, so an overlap
        # between train and dev is detectable; csv files have none (line-number uids).
        root, (train_path, dev_path) = found
        prefix = f"{task.name}/train/" if task.id_fields else None
        train = sources.read(task, train_path, prefix)
        dev = sources.read(task, dev_path, prefix)
        check_disjoint(train, dev, str(train_path.parent))
        test_path = root / kshot[2]
        if test_path.is_file():  # LM-BFF's test file (same content as the full-data test)
            tests, test_files = (
                {task.test_splits[0]: sources.read(task, test_path)},
                [str(test_path)],
            )
        else:
            tests, test_files = _load_tests(task, *args)
        files = [str(train_path), str(dev_path), *test_files]
        return TaskData(task, train, dev, tests, files, f"lm-bff k-shot {shots}-{seed}")

    try:
        full = _load_full(task, *args)
    except DataError:
        fewglue = sources.fewglue_files(task)
        found = search.find(*fewglue) if fewglue else None
        if not found:
            raise search.error(f"{task.name} {shots}-shot data") from None
        # No full train file: FewGLUE's train (and dev32) are the pools.
        _, (train_path, dev_path) = found
        tests, test_files = _load_tests(task, *args)
        train, dev = sample_few_shot(
            sources.read(task, train_path), task, shots, seed,
            dev_pool=sources.read(task, dev_path), pool_name="FewGLUE train",
        )  # fmt: skip
        files = [str(train_path), str(dev_path), *test_files]
        return TaskData(task, train, dev, tests, files, f"fewglue sample, seed {seed}")
    pool_found = search.find(task.kshot_pool) if task.kshot_pool else None
    if pool_found:  # LM-BFF sampled SST-2 from its own sentence-level train file
        pool_path = pool_found[1][0]
        pool = sources.read(task, pool_path, f"{task.name}/lm-bff-train/")
        train, dev = sample_few_shot(pool, task, shots, seed, pool_name="LM-BFF train")
        files = [str(pool_path), *full.files[1:]]
        return TaskData(task, train, dev, full.tests, files, f"lm-bff pool sample, seed {seed}")
    train, dev = sample_few_shot(full.train, task, shots, seed)
    return TaskData(task, train, dev, full.tests, full.files, f"{full.source} sample, seed {seed}")
