"""Where a task's files are: data roots, the layouts in them, and the Hugging Face Hub."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt_cli.data.readers import read_file, superglue_example
from spt_cli.data.tasks import Example, TaskSpec
from spt_cli.errors import DataError
from spt_cli.net import unreachable

# The repository checkout (editable install): spt_cli/data/sources.py -> repo root.
_REPO = Path(__file__).resolve().parents[2]
_RELATIVE_ROOTS = ("data", "../shared/data", "../../shared/data")

HOW_TO_GET_DATA = (
    "set data.root=PATH or SPT_DATA_DIR=PATH to a folder with the GLUE/SuperGLUE/LM-BFF layouts "
    "(glue/<TASK>/train.tsv, superglue/<Task>/train.jsonl, original/<task>/train.csv, "
    "k-shot/<TASK>/<K>-<seed>/; see ../shared/data/README.md), or allow the Hub (data.hub=true) "
    "on a machine that reaches it"
)


def candidate_roots(root: str | Path | None = None) -> list[Path]:
    """Data roots to search, in order: `root` alone if given, else $SPT_DATA_DIR alone, else
    ./data, ../shared/data, ../../shared/data relative to the cwd and to the repo checkout."""
    if root not in (None, ""):
        return [Path(root).expanduser().resolve()]
    env = os.environ.get("SPT_DATA_DIR")
    if env:
        return [Path(env).expanduser().resolve()]
    roots: list[Path] = []
    for base in (Path.cwd(), _REPO):
        for rel in _RELATIVE_ROOTS:
            path = (base / rel).resolve()
            if path not in roots:
                roots.append(path)
    return roots


@dataclass
class FullLayout:
    """One way to get a task's full data: a train file plus test files (relative paths).

    `carve_test`: the layout has no test file; a seeded stratified test set is cut from train.
    """

    source: str
    train: str
    tests: dict[str, str]
    optional_tests: dict[str, str] = field(default_factory=dict)
    carve_test: bool = False


def full_layouts(task: TaskSpec) -> list[FullLayout]:
    """The layouts that hold `task`'s full data, preferred first."""
    out = []
    if task.glue:
        base = f"glue/{task.glue}"
        if task.name == "mnli":
            out.append(
                FullLayout(
                    "glue",
                    f"{base}/train.tsv",
                    {"test_matched": f"{base}/dev_matched.tsv"},
                    {"test_mismatched": f"{base}/dev_mismatched.tsv"},
                )
            )
        else:
            out.append(FullLayout("glue", f"{base}/train.tsv", {"test": f"{base}/dev.tsv"}))
    if task.superglue:
        base = f"superglue/{task.superglue}"
        out.append(FullLayout("superglue", f"{base}/train.jsonl", {"test": f"{base}/val.jsonl"}))
    if task.original:
        base = f"original/{task.original}"
        out.append(FullLayout("lm-bff original", f"{base}/train.csv", {"test": f"{base}/test.csv"}))
        out.append(
            FullLayout("lm-bff original (seeded test split)", f"{base}/train.csv", {}, {}, True)
        )
    return out


def kshot_files(task: TaskSpec, shots: int, seed: int) -> tuple[str, str, str] | None:
    """(train, dev, test) paths of LM-BFF's k-shot folder for (task, K, seed), relative."""
    folder = task.glue or task.original
    if not folder:
        return None
    base = f"k-shot/{folder}/{shots}-{seed}"
    ext = "tsv" if task.glue else "csv"
    dev = "dev_matched" if task.name == "mnli" else "dev"
    return f"{base}/train.{ext}", f"{base}/{dev}.{ext}", f"{base}/test.{ext}"


def fewglue_files(task: TaskSpec) -> tuple[str, str] | None:
    """(train, dev32) of the FewGLUE layout, relative."""
    if not task.fewglue:
        return None
    return f"fewglue/{task.fewglue}/train.jsonl", f"fewglue/{task.fewglue}/dev32.jsonl"


def uid_prefix(task: TaskSpec, path: str | Path) -> str:
    """uid prefix for a file: `<task>/<file stem>/`, so ids never collide across files."""
    return f"{task.name}/{Path(path).stem}/"


def read(task: TaskSpec, path: Path, prefix: str | None = None) -> list[Example]:
    return read_file(path, task, uid_prefix(task, path) if prefix is None else prefix)


# --- Hugging Face Hub -------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}


def hub_unavailable_reason(timeout: float = 3.0) -> str | None:
    """Why the Hub cannot be used now (offline flag, no connection), or None.

    Checked before `datasets` is touched: its own retries take minutes without a network.
    """
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"offline ({var}={os.environ[var]})"
    reason = unreachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout)
    return reason


def _hub_splits(task: TaskSpec) -> dict[str, str]:
    if task.name == "mnli":
        return {"train": "train", "test_matched": "validation_matched",
                "test_mismatched": "validation_mismatched"}  # fmt: skip
    return {"train": "train", "test": "validation"}


def hub_examples(task: TaskSpec, rows: Any, split: str) -> list[Example]:
    """Hub rows (dicts, labels already indices) -> Examples."""
    out = []
    fields = task.hub_fields or task.text_fields
    for number, row in enumerate(rows):
        uid = f"{task.name}/hub-{split}/{row.get('idx', number)}"
        where = f"{task.hub[0] if task.hub else 'hub'}[{split}] row {number}"
        if task.superglue:
            out.append(superglue_example(task, row, uid, where, label_is_index=True))
            continue
        label = float(row["label"]) if task.is_regression else int(row["label"])
        text_b = str(row[fields[1]]).strip() if len(fields) > 1 else None
        out.append(Example(str(row[fields[0]]).strip(), text_b, label, uid))
    return out


def load_from_hub(task: TaskSpec) -> tuple[list[Example], dict[str, list[Example]], str]:
    """(train, tests, source) from the Hub; raises DataError with the reason when it fails."""
    if not task.hub:
        raise DataError("no Hub copy known for this task")
    reason = hub_unavailable_reason()
    if reason:
        raise DataError(reason)
    try:
        import datasets

        path, config = task.hub
        loaded = datasets.load_dataset(path, config)
        splits = {
            name: hub_examples(task, loaded[hub_split], hub_split)
            for name, hub_split in _hub_splits(task).items()
            if hub_split in loaded
        }
    except Exception as exc:  # any failure of the Hub path falls back to the error listing
        raise DataError(f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}") from None
    train = splits.pop("train", None)
    if not train or task.test_splits[0] not in splits:
        raise DataError(f"{task.hub} lacks the train or validation split")
    return train, splits, f"hub {task.hub[0]}/{task.hub[1]}"
