"""The real benchmark mirror (../shared/data beside the checkout, or $SPT_DATA_DIR): official
split sizes, LM-BFF k-shot files read verbatim, and our sampler reproducing them."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import pytest

from spt_cli.data import load_task_data
from spt_cli.data.readers import read_file
from spt_cli.data.splits import sample_few_shot
from spt_cli.data.tasks import get_task
from spt_cli.errors import DataError


def _mirror() -> Path | None:
    for cand in (
        os.environ.get("SPT_DATA_DIR"),
        Path(__file__).resolve().parents[2] / "shared/data",
    ):
        if cand and (Path(cand) / "glue").is_dir():
            return Path(cand)
    return None


MIRROR = _mirror()
pytestmark = pytest.mark.skipif(MIRROR is None, reason="benchmark mirror ../shared/data not found")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# (task, train before the dev hold-out, test) -- the official counts.
OFFICIAL = [
    ("rte", 2490, {"test": 277}),
    ("sst2", 67349, {"test": 872}),
    ("mrpc", 3668, {"test": 408}),
    ("trec", 5452, {"test": 500}),
    ("cola", 8551, {"test": 1043}),
    ("stsb", 5749, {"test": 1500}),
    ("mr", 8662, {"test": 2000}),
    ("mpqa", 8606, {"test": 2000}),
    ("subj", 8000, {"test": 2000}),
    ("cr", 1775, {"test": 2000}),
    ("copa", 400, {"test": 100}),
]


@pytest.mark.parametrize(("task", "n_train", "tests"), OFFICIAL, ids=[t[0] for t in OFFICIAL])
def test_full_split_sizes(task, n_train, tests):
    data = load_task_data(task, root=MIRROR)
    assert len(data.train) + len(data.dev) == n_train
    assert len(data.dev) == min(1000, round(n_train * 0.1))
    assert {name: len(v) for name, v in data.tests.items()} == tests
    assert not {ex.uid for ex in data.train} & {ex.uid for ex in data.dev}


def test_missing_full_data_is_reported():
    for task in ("mnli", "qnli", "qqp", "boolq"):
        with pytest.raises(DataError, match=f"no {task} full data found; missing: .*train"):
            load_task_data(task, root=MIRROR)


def _raw_rows(path: Path) -> list[list[str]]:
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".csv":
        return [r for r in csv.reader(text.splitlines()) if r]
    rows = [line.split("\t") for line in text.split("\n") if line.strip()]
    return rows if path.parts[-3] == "CoLA" else rows[1:]


@pytest.mark.parametrize(
    ("task", "folder", "text_col", "label_col"),
    [
        ("rte", "RTE", 1, 3),
        ("sst2", "SST-2", 0, 1),
        ("trec", "trec", 1, 0),
        ("cola", "CoLA", 3, 1),
        ("mnli", "MNLI", 8, 11),
        ("stsb", "STS-B", 7, 9),
    ],  # fmt: skip
)
def test_kshot_files_used_verbatim(task, folder, text_col, label_col):
    spec = get_task(task)
    for seed in (13, 42):
        data = load_task_data(task, root=MIRROR, shots=16, seed=seed)
        kdir = MIRROR / "k-shot" / folder / f"16-{seed}"
        dev_name = "dev_matched" if task == "mnli" else "dev"
        ext = "csv" if folder == "trec" else "tsv"
        for split, name in ((data.train, "train"), (data.dev, dev_name)):
            raw = _raw_rows(kdir / f"{name}.{ext}")
            assert [ex.text_a for ex in split] == [r[text_col].strip() for r in raw]
            labels = [r[label_col] for r in raw]
            if spec.is_regression:
                assert [ex.label for ex in split] == [float(v) for v in labels]
            else:
                assert [spec.raw_labels[ex.label] for ex in split] == labels
        n_classes = 2 if spec.is_regression else len(spec.label_names)
        assert len(data.train) == len(data.dev) == 16 * n_classes
        if not spec.is_regression:
            assert set(Counter(ex.label for ex in data.train).values()) == {16}
        assert data.source == f"lm-bff k-shot 16-{seed}"
    assert len(load_task_data(task, root=MIRROR, shots=16, seed=21).train) == 16 * n_classes


def test_kshot_test_files_match_full_test():
    few = load_task_data("rte", root=MIRROR, shots=16, seed=13).tests["test"]
    full = load_task_data("rte", root=MIRROR).tests["test"]
    assert [(e.text_a, e.label) for e in few] == [(e.text_a, e.label) for e in full]
    mnli = load_task_data("mnli", root=MIRROR, shots=16, seed=13)
    assert {k: len(v) for k, v in mnli.tests.items()} == {"test_matched": 9815}


@pytest.mark.parametrize(
    ("task", "pool", "kshot"),
    [
        ("rte", "glue/RTE/train.tsv", "k-shot/RTE/16-{seed}"),
        ("sst2", "original/SST-2/train.tsv", "k-shot/SST-2/16-{seed}"),
        ("mr", "original/mr/train.csv", "k-shot/mr/16-{seed}"),
    ],  # fmt: skip
)
def test_sampler_reproduces_lmbff_files(task, pool, kshot):
    """Without k-shot files we sample as LM-BFF did; from the same pool, the official files."""
    spec = get_task(task)
    examples = read_file(MIRROR / pool, spec)
    for seed in (13, 87):
        train, dev = sample_few_shot(examples, spec, 16, seed)
        ext = Path(pool).suffix
        ref_train = read_file(MIRROR / kshot.format(seed=seed) / f"train{ext}", spec)
        ref_dev = read_file(MIRROR / kshot.format(seed=seed) / f"dev{ext}", spec)
        assert [(e.text_a, e.label) for e in train] == [(e.text_a, e.label) for e in ref_train]
        assert [(e.text_a, e.label) for e in dev] == [(e.text_a, e.label) for e in ref_dev]


def test_sampled_few_shot_when_no_kshot_folder():
    a = load_task_data("sst2", root=MIRROR, shots=8, seed=1)
    b = load_task_data("sst2", root=MIRROR, shots=8, seed=1)
    c = load_task_data("sst2", root=MIRROR, shots=8, seed=2)
    assert [e.uid for e in a.train] == [e.uid for e in b.train] != [e.uid for e in c.train]
    assert Counter(e.label for e in a.train) == Counter(e.label for e in a.dev) == {0: 8, 1: 8}
    assert not {e.uid for e in a.train} & {e.uid for e in a.dev}
    assert len(a.tests["test"]) == 872
    copa = load_task_data("copa", root=MIRROR, shots=16, seed=13)
    assert Counter(e.label for e in copa.train) == {0: 16, 1: 16}
