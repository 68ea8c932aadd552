"""Prediction and official-metric evaluation of a model on a split."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from spt_cli.metrics import SINGLE_CLASS, compute_metrics, single_class
from spt_cli.train.batches import length_sorted_batches
from spt_cli.train.cache import LowerStateCache

# Splits of more batches than this get a progress bar (MNLI's test set takes minutes on CPU).
PROGRESS_MIN = 8


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move every tensor of a batch to ``device``."""
    return {k: v.to(device) for k, v in batch.items()}


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    features: Sequence[dict],
    *,
    batch_size: int,
    pad_token_id: int,
    device: torch.device,
    regression: bool = False,
    cache: LowerStateCache | None = None,
    progress: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions (class index, or value for regression) and gold labels, in input order.

    Examples are batched longest first (less padding) and put back in input order.
    ``cache``: the training run's lower-layer cache (dev examples are evaluated repeatedly).
    ``progress``: a progress bar's label, shown for splits of more than a few batches.
    """
    was_training = model.training
    model.eval()
    order, batches = length_sorted_batches(features, batch_size, pad_token_id)
    bar = tqdm(
        batches,
        total=-(-len(features) // batch_size),
        desc=progress,
        disable=progress is None or len(features) <= PROGRESS_MIN * batch_size,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=1.0,
        leave=False,
    )
    preds, labels = [], []
    for batch in bar:
        gold = batch.pop("labels")
        batch = to_device(batch, device)
        if cache is not None:
            batch = cache.attach(batch)
        logits = model(**batch)["logits"].float().cpu()
        preds.append(logits.reshape(-1) if regression else logits.argmax(dim=-1))
        labels.append(gold)
    model.train(was_training)
    unsort = np.empty_like(order)
    unsort[order] = np.arange(len(order))
    return torch.cat(preds).numpy()[unsort], torch.cat(labels).numpy()[unsort]


def evaluate(
    model: torch.nn.Module,
    features: Sequence[dict],
    task,
    *,
    batch_size: int,
    pad_token_id: int,
    device: torch.device,
    cache: LowerStateCache | None = None,
    progress: str | None = None,
) -> dict[str, float]:
    """Official metrics of ``model`` on ``features``; a classification model that predicts one
    class on all of them also gets ``SINGLE_CLASS``: that class's index."""
    preds, labels = predict(
        model,
        features,
        batch_size=batch_size,
        pad_token_id=pad_token_id,
        device=device,
        regression=bool(task.is_regression),
        cache=cache,
        progress=progress,
    )
    metrics = compute_metrics(task, preds, labels)
    only = None if task.is_regression else single_class(preds)
    if only is not None:
        metrics[SINGLE_CLASS] = float(only)
    return metrics
