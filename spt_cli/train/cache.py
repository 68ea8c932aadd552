"""Cache of the frozen states entering a model's first prompt layer ("cached lower layers").

With ``method.frozen_eval`` the frozen blocks below the first prompt layer run in eval mode
(no dropout), so the states they hand to that layer are a pure function of the input ids: they
are computed once per example and reused by every later epoch and dev evaluation. Entries are
keyed by the example's unpadded token ids (and token types), so batches may come in any order
or composition. Each example's states are computed on their own (unpadded), so they do not
depend on the batch an example first came in: a resumed run rebuilds the same cache. Only real
positions are stored; padding is filled with zeros, which no real position ever reads (padded
keys are masked, and heads and pooling read real positions only).

The cache is bounded by ``max_mb``: once full, new examples are computed each time they are
seen (the fallback, one at a time as above) and nothing is evicted, so a working set larger
than the cap degrades to about the uncached speed instead of thrashing.

With ``lower_cache_dir`` the states also go to disk, one file per example under a folder named
by the backbone's identity (its config, a sample of its weights, the torch version and thread
count, which can change the last bits), the block and the example's token ids: every later run
over the same backbone (another method or seed, the same test set) loads them instead of
recomputing them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

from spt_cli.files import atomic_write
from spt_cli.train.protocol import TrainableModel

_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class LowerStateStore:
    """Per-example states entering one block, bounded by ``max_mb``.

    The states depend on the frozen backbone and the block only, so one store may serve every
    model that freezes the blocks below that block (the layer-subset controls, a search's
    retrain and its baselines in one process): see :class:`LowerStateStores`.
    """

    def __init__(self, max_mb: float = 1024.0, label: str = "", disk: Path | None = None) -> None:
        self.max_bytes = int(float(max_mb) * 2**20)
        self.label = label
        self.disk = disk
        self.bytes = 0
        self.states: dict[bytes, torch.Tensor] = {}
        self._warned = False

    def __len__(self) -> int:
        return len(self.states)

    def _file(self, key: bytes) -> Path:
        assert self.disk is not None
        digest = hashlib.sha1(key).hexdigest()
        return self.disk / digest[:2] / f"{digest}.pt"

    def get(self, key: bytes) -> torch.Tensor | None:
        states = self.states.get(key)
        if states is None and self.disk is not None and (path := self._file(key)).exists():
            states = torch.load(path, weights_only=True)
            self._keep(key, states)
        return states

    def put(self, key: bytes, states: torch.Tensor) -> None:
        self._keep(key, states)
        if self.disk is not None and not (path := self._file(key)).exists():
            atomic_write(path, lambda tmp: torch.save(states.cpu(), tmp))

    def _keep(self, key: bytes, states: torch.Tensor) -> None:
        size = states.numel() * states.element_size()
        if self.bytes + size > self.max_bytes:
            if not self._warned:
                self._warned = True
                where = f"[{self.label}] " if self.label else ""
                print(
                    f"{where}lower-layer cache full at {self.bytes / 2**20:.0f} MB "
                    f"({len(self.states)} examples); the rest are recomputed each step "
                    "(raise trainer.cache_max_mb to cache more)",
                    file=sys.stderr,
                )
            return
        self.states[key] = states
        self.bytes += size


class LowerStateStores:
    """One :class:`LowerStateStore` per block, for models over the same frozen backbone;
    ``disk``: this backbone's folder on disk (see :func:`backbone_folder`), or None."""

    def __init__(self, disk: Path | None = None) -> None:
        self.disk = disk
        self._by_layer: dict[int, LowerStateStore] = {}

    def for_layer(self, layer: int, max_mb: float, label: str = "") -> LowerStateStore:
        if layer not in self._by_layer:
            disk = None if self.disk is None else self.disk / f"block{layer:02d}"
            self._by_layer[layer] = LowerStateStore(max_mb, label, disk)
        return self._by_layer[layer]


def backbone_folder(root: Path, model_cfg: dict[str, Any], backbone: torch.nn.Module) -> Path:
    """``root/<model name>-<identity>``: the identity hashes the model config, every weight
    tensor's name and shape and a strided sample of its values, the torch version and the
    thread count (the last two can change float results)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(model_cfg, sort_keys=True, default=str).encode())
    digest.update(f"{torch.__version__}|{torch.get_num_threads()}".encode())
    with torch.no_grad():
        for name, param in backbone.state_dict().items():
            flat = param.detach().flatten()
            digest.update(f"{name}{tuple(param.shape)}".encode())
            digest.update(flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())
    return root / f"{model_cfg['name']}-{digest.hexdigest()[:16]}"


class LowerStateCache:
    """A model's view of the lower-layer states of its first prompt layer, on its device."""

    def __init__(
        self,
        model: TrainableModel,
        max_mb: float = 1024.0,
        label: str = "",
        store: LowerStateStore | None = None,
    ) -> None:
        self.model = model
        self.store = store if store is not None else LowerStateStore(max_mb, label)
        self.hits = 0
        self.misses = 0

    @property
    def bytes(self) -> int:
        return self.store.bytes

    @property
    def max_bytes(self) -> int:
        return self.store.max_bytes

    @classmethod
    def for_model(
        cls,
        model: TrainableModel,
        tcfg: Any,
        label: str = "",
        stores: LowerStateStores | None = None,
    ) -> LowerStateCache | None:
        """The cache a training run should use: None when off or when nothing is cacheable
        (``model.cache_layer`` is None). ``stores``: states shared with other models over the
        same backbone (else a store of its own)."""
        layer = model.cache_layer
        if not bool(tcfg.cache_lower_layers) or layer is None:
            return None
        max_mb = float(tcfg.cache_max_mb or 0)
        store = (stores or LowerStateStores()).for_layer(layer, max_mb, label)
        return cls(model, store=store)

    def __len__(self) -> int:
        return len(self.store)

    def _row_keys(self, batch: dict[str, torch.Tensor]) -> tuple[list[bytes], list[int]] | None:
        mask = batch["attention_mask"].to("cpu", torch.long)
        lengths = mask.sum(1)
        # Only right-padded rows (real tokens first) can be trimmed to their real part.
        width = mask.shape[1]
        if not bool((mask == (torch.arange(width) < lengths.unsqueeze(1))).all()):
            return None
        ids = batch["input_ids"].to("cpu").numpy()
        tt = batch.get("token_type_ids")
        types = tt.to("cpu").numpy() if tt is not None else None
        keys, lens = [], lengths.tolist()
        for i, n in enumerate(lens):
            key = ids[i, :n].tobytes()
            if types is not None:
                key += b"|" + types[i, :n].tobytes()
            keys.append(key)
        return keys, lens

    def attach(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``batch`` plus ``lower``: the states entering the first prompt layer [B, n, d]."""
        rows = self._row_keys(batch)
        if rows is None:
            return batch
        keys, lens = rows
        found: dict[bytes, torch.Tensor] = {}
        for i, key in enumerate(keys):
            if key in found:
                continue
            states = self.store.get(key)
            if states is None:
                self.misses += 1
                states = self._compute(batch, i, lens[i])
                self.store.put(key, states)
            else:
                self.hits += 1
            found[key] = states
        first = found[keys[0]]
        lower = first.new_zeros(len(keys), batch["attention_mask"].shape[1], first.shape[-1])
        for i, key in enumerate(keys):
            lower[i, : lens[i]] = found[key]
        return {**batch, "lower": lower}

    def _compute(self, batch: dict[str, torch.Tensor], row: int, length: int) -> torch.Tensor:
        # One example at a time, unpadded: its states then depend on the example only, not on
        # the batch it first came in, so a resumed run rebuilds exactly the same cache.
        one = {k: batch[k][row : row + 1, :length] for k in _KEYS if k in batch}
        # Stored states outlive an evaluation's inference mode: make them normal tensors.
        with torch.inference_mode(False), torch.no_grad():
            return self.model.lower_states(**one)[0].clone()
