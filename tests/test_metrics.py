"""Every metric against values computed by hand, and the majority-class baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spt_cli.data import TASKS
from spt_cli.metrics import compute_metrics, majority_baseline


def test_accuracy_and_logits():
    assert compute_metrics("rte", [1, 0, 1, 1], [1, 0, 0, 1]) == {"accuracy": 0.75}
    logits = torch.tensor([[0.1, 0.9], [2.0, -1.0], [0.0, 1.0], [0.3, 0.2]])
    assert compute_metrics("sst2", logits, np.array([1, 0, 0, 0])) == {"accuracy": 0.75}


def test_f1_and_acc_and_f1_for_mrpc_qqp():
    # TP = 2, FP = 1, FN = 1 -> precision = recall = 2/3 = F1; accuracy 3/5.
    out = compute_metrics("mrpc", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert list(out) == ["accuracy", "f1", "acc_and_f1"]
    assert out["accuracy"] == pytest.approx(0.6)
    assert out["f1"] == pytest.approx(2 / 3)
    assert out["acc_and_f1"] == pytest.approx((0.6 + 2 / 3) / 2)
    assert compute_metrics("qqp", [0, 0], [1, 1])["f1"] == 0.0


def test_matthews_for_cola():
    # TP 2, TN 1, FP 1, FN 0 -> (2*1 - 1*0) / sqrt(3 * 2 * 2 * 1)
    out = compute_metrics("cola", [1, 1, 1, 0], [1, 1, 0, 0])
    assert out["matthews"] == pytest.approx(2 / math.sqrt(12))
    assert compute_metrics("cola", [1, 1, 1], [1, 0, 1])["matthews"] == 0.0  # constant prediction


def test_pearson_spearman_corr_for_stsb():
    # deviations (-1, 0, 1) and (-4/3, -1/3, 5/3): cov 3, r = 3 / sqrt(2 * 42/9)
    out = compute_metrics("stsb", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    pearson = 3 / math.sqrt(2 * 42 / 9)
    assert out["pearson"] == pytest.approx(pearson)
    assert out["spearman"] == pytest.approx(1.0)
    assert out["corr"] == pytest.approx((pearson + 1) / 2)
    assert list(out) == ["pearson", "spearman", "corr"]


def test_accuracy_and_macro_f1_for_cb():
    # per-class F1: 2/3, 2/3, 1 -> macro 7/9
    out = compute_metrics("cb", [0, 1, 1, 2], [0, 0, 1, 2])
    assert out == pytest.approx({"accuracy": 0.75, "macro_f1": 7 / 9})


def test_every_task_reports_its_main_metric_as_plain_floats():
    for task in TASKS.values():
        labels = [0.5, 4.5, 2.0] if task.is_regression else [0, 1, 0]
        out = compute_metrics(task, [0.4, 4.0, 2.5] if task.is_regression else [0, 1, 1], labels)
        assert task.main_metric in out and all(type(v) is float for v in out.values())


def test_majority_baseline():
    assert majority_baseline("rte", [0, 1, 1], [1, 0, 0, 0]) == {"accuracy": 0.25}
    assert majority_baseline("rte", [0, 1], [0, 0, 1]) == pytest.approx({"accuracy": 2 / 3})  # tie
    # always 1 on (1, 0, 0, 0): precision 1/4, recall 1 -> F1 0.4
    mrpc = majority_baseline("mrpc", [1, 1, 0], [1, 0, 0, 0])
    assert mrpc == pytest.approx({"accuracy": 0.25, "f1": 0.4, "acc_and_f1": 0.325})
    stsb = majority_baseline("stsb", [1.0, 3.0], [0.0, 5.0, 2.0])
    assert stsb == {"pearson": 0.0, "spearman": 0.0, "corr": 0.0}  # constant: no correlation


def test_length_mismatch():
    with pytest.raises(ValueError, match="2 predictions for 3 labels"):
        compute_metrics("rte", [0, 1], [0, 1, 1])
