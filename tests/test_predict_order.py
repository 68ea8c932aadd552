"""Prediction batches longest first and puts predictions back in input order."""

from __future__ import annotations

import numpy as np
import torch

from spt_cli.train.batches import length_sorted_batches
from spt_cli.train.evaluate import predict


def _features(lengths: list[int]) -> list[dict]:
    # The first token id names the example, the label is its parity.
    return [
        {"input_ids": [i + 1] + [7] * (n - 1), "attention_mask": [1] * n, "labels": (i + 1) % 2}
        for i, n in enumerate(lengths)
    ]


class _EchoFirstToken(torch.nn.Module):
    """Predicts the parity of each row's first token; records each batch's width."""

    def __init__(self) -> None:
        super().__init__()
        self.widths: list[int] = []

    def forward(self, input_ids, attention_mask=None, **_):
        self.widths.append(input_ids.shape[1])
        return {"logits": torch.nn.functional.one_hot(input_ids[:, 0] % 2, 2).float()}


def test_batches_go_longest_first_and_keep_ties_in_file_order():
    order, batches = length_sorted_batches(_features([3, 9, 3, 5, 9, 1]), 2, pad_token_id=0)
    assert order.tolist() == [1, 4, 3, 0, 2, 5]
    assert [b["input_ids"].shape[1] for b in batches] == [9, 5, 3]


def test_predictions_come_back_in_input_order():
    lengths = [4, 30, 2, 17, 30, 8, 1, 12, 5]
    feats = _features(lengths)
    model = _EchoFirstToken()
    preds, labels = predict(model, feats, batch_size=4, pad_token_id=0, device=torch.device("cpu"))
    expected = np.array([(i + 1) % 2 for i in range(len(lengths))])
    assert preds.tolist() == expected.tolist() and labels.tolist() == expected.tolist()
    # Each batch is padded to its own longest row: 30 30 17 12 | 8 5 4 2 | 1.
    assert model.widths == [30, 8, 1]
