"""Deterministic, resumable batching: batch i is a pure function of (seed, i)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from spt_cli.data import collate


class BatchStream:
    """Yields training batches from seeded per-epoch permutations.

    Batch ``i`` belongs to epoch ``i // batches_per_epoch``, whose order is drawn from
    ``np.random.default_rng([seed, epoch])``. A resumed run therefore needs only the step
    counter to continue with exactly the batches an uninterrupted run would have seen.
    """

    def __init__(
        self,
        features: Sequence[dict],
        batch_size: int,
        seed: int,
        pad_token_id: int,
        shuffle: bool = True,
    ) -> None:
        if len(features) == 0:
            raise ValueError("BatchStream needs at least one example")
        self.features = features
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.pad_token_id = pad_token_id
        self.shuffle = shuffle
        self.batches_per_epoch = math.ceil(len(features) / self.batch_size)
        self._order_epoch = -1
        self._order: np.ndarray | None = None

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            n = len(self.features)
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, epoch]).permutation(n)
            else:
                self._order = np.arange(n)
            self._order_epoch = epoch
        assert self._order is not None
        return self._order

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """The ``index``-th batch of the stream (0-based, across epochs)."""
        epoch, pos = divmod(int(index), self.batches_per_epoch)
        order = self._epoch_order(epoch)
        idx = order[pos * self.batch_size : (pos + 1) * self.batch_size]
        return collate([self.features[i] for i in idx], self.pad_token_id)


def eval_batches(features: Sequence[dict], batch_size: int, pad_token_id: int):
    """Batches in file order (the search's end-of-search passes, which average over them)."""
    for start in range(0, len(features), batch_size):
        yield collate(list(features[start : start + batch_size]), pad_token_id)


def length_sorted_batches(
    features: Sequence[dict], batch_size: int, pad_token_id: int
) -> tuple[np.ndarray, Iterator[dict[str, torch.Tensor]]]:
    """(order, batches) for prediction: examples longest first, so that each batch is padded
    to about its own rows' length (attention costs length^2 per row). ``order[i]`` is the
    file position of the i-th example batched; a stable sort keeps ties in file order."""
    lengths = np.array([len(f["input_ids"]) for f in features])
    order = np.argsort(-lengths, kind="stable")
    batches = (
        collate([features[i] for i in order[start : start + batch_size]], pad_token_id)
        for start in range(0, len(features), batch_size)
    )
    return order, batches
