"""The official GLUE/SuperGLUE metrics, computed locally with scikit-learn and SciPy.

Keys: accuracy; f1 (binary, positive class 1) and acc_and_f1 (their mean) for MRPC/QQP;
matthews (CoLA); pearson, spearman and corr (their mean) for STS-B; macro_f1 (CB). A task's
`metrics` names the keys it reports, `main_metric` the headline one. MNLI's mismatched split is
scored separately; callers store it with an `_mm` suffix.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from spt_cli.data.tasks import TaskSpec, get_task


def _array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor without importing torch here
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _corr(fn, preds: np.ndarray, labels: np.ndarray) -> float:
    # A constant prediction (e.g. the majority baseline) has no defined correlation: report 0.
    if len(preds) < 2 or np.ptp(preds) == 0 or np.ptp(labels) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(fn(preds, labels)[0])
    return 0.0 if math.isnan(value) else value


def compute_metrics(task: TaskSpec | str, preds: Any, labels: Any) -> dict[str, float]:
    """Score predictions against gold labels with the task's official metrics.

    `preds` are class indices, or logits of shape [N, C] (arg-maxed); regression: scores.
    Returns plain floats keyed as in `task.metrics`.
    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score, matthews_corrcoef

    spec = get_task(task)
    p, y = _array(preds), _array(labels)
    if spec.is_regression:
        p, y = p.reshape(-1).astype(float), y.reshape(-1).astype(float)
    elif p.ndim == 2:
        p = p.argmax(axis=-1)
    if len(p) != len(y):
        raise ValueError(f"{len(p)} predictions for {len(y)} labels")
    if len(y) == 0:
        return {name: 0.0 for name in spec.metrics}
    out: dict[str, float] = {}
    if spec.is_regression:
        out["pearson"] = _corr(pearsonr, p, y)
        out["spearman"] = _corr(spearmanr, p, y)
        out["corr"] = (out["pearson"] + out["spearman"]) / 2
    else:
        p, y = p.astype(int), y.astype(int)
        acc = float((p == y).mean())
        out["accuracy"] = acc
        if "f1" in spec.metrics:
            out["f1"] = float(f1_score(y, p, pos_label=1, average="binary", zero_division=0))
            out["acc_and_f1"] = (acc + out["f1"]) / 2
        if "matthews" in spec.metrics:
            out["matthews"] = float(matthews_corrcoef(y, p))  # 0.0 for a constant prediction
        if "macro_f1" in spec.metrics:
            labels_range = list(range(spec.num_labels))
            out["macro_f1"] = float(
                f1_score(y, p, labels=labels_range, average="macro", zero_division=0)
            )
    return {name: out[name] for name in (*spec.metrics, *out) if name in out}


# Key that :func:`spt_cli.train.evaluate.evaluate` adds to a classification split's metrics
# when every prediction is one class (its index, as a float like the metrics): a model that
# never left one class scores like the majority baseline, which a headline number hides.
SINGLE_CLASS = "single_class"


def single_class(preds: Any) -> int | None:
    """The one class index every prediction names, or None (several classes, or none)."""
    classes = np.unique(_array(preds).astype(int))
    return int(classes[0]) if len(classes) == 1 else None


def majority_baseline(
    task: TaskSpec | str, train_labels: Sequence[Any], eval_labels: Sequence[Any]
) -> dict[str, float]:
    """Metrics of always predicting train's majority class (lowest index on ties;
    regression: train's mean score) on `eval_labels`."""
    spec = get_task(task)
    n = len(eval_labels)
    if spec.is_regression:
        mean = float(np.mean(_array(train_labels).astype(float))) if len(train_labels) else 0.0
        return compute_metrics(spec, [mean] * n, eval_labels)
    counts = Counter(int(v) for v in _array(train_labels).reshape(-1))
    majority = min(counts, key=lambda c: (-counts[c], c)) if counts else 0
    return compute_metrics(spec, [majority] * n, eval_labels)
