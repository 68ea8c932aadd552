"""What every stage does before and after training: data, backbone, encoding, test metrics."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from spt_cli.config import as_dict, split_name, to_plain
from spt_cli.errors import DataError
from spt_cli.runlog import RunLogger
from spt_cli.train.cache import LowerStateCache, LowerStateStores, backbone_folder


def seed_everything(seed: int) -> None:
    """Seed every RNG a run touches, so the same config and seed give the same numbers."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Setup:
    """Everything a stage needs before training: task, data, backbone and tokenizer."""

    task: Any
    data: Any
    backbone: Any
    tokenizer: Any
    # Frozen lower-layer states, shared by every model built over this backbone in the run.
    stores: LowerStateStores = field(default_factory=LowerStateStores)
    # Tokenised splits, keyed by (id of the example list, head, max length): a stage that
    # trains several models (controls, search.keep_best_of) tokenises each split once. The
    # list is kept beside its rows so that its id cannot be reused while the entry lives.
    encoded: dict[tuple[int, str, int], tuple[Any, list[dict]]] = field(default_factory=dict)


def load_data(cfg: DictConfig):
    """The task spec and its train/dev/test splits under the configured protocol."""
    from spt_cli.data import get_task, load_task_data

    task = get_task(str(cfg.dataset.name))
    data = load_task_data(
        task.name,
        root=cfg.data.root,
        shots=int(cfg.shots) if split_name(cfg) == "few_shot" else 0,
        seed=int(cfg.seed),
        dev_ratio=float(cfg.data.dev_ratio),
        dev_max=int(cfg.data.dev_max),
        test_size=int(cfg.data.test_size),
        allow_hub=bool(cfg.data.hub),
    )
    # A file with a header and no rows reads as zero examples, which would only fail later
    # and obscurely (an empty batch stream, an empty summary). Full-data dev may be empty
    # (data.dev_ratio=0); a few-shot dev comes from a file or K per class.
    splits = {"train": data.train, **data.tests}
    if split_name(cfg) == "few_shot":
        splits["dev"] = data.dev
    empty = [name for name, examples in splits.items() if not examples]
    if empty:
        raise DataError(
            f"no {'/'.join(empty)} examples for {task.name} in {', '.join(data.files)}; "
            "a file holds no data rows: add rows or point data.root at complete files"
        )
    return task, data


def setup(cfg: DictConfig) -> Setup:
    """Load data first (cheap, and the commonest source of errors), then the backbone."""
    from spt_cli.model import load_backbone

    task, data = load_data(cfg)
    backbone, tokenizer = load_backbone(cfg.model)
    disk = None
    if cfg.lower_cache_dir:
        disk = backbone_folder(Path(str(cfg.lower_cache_dir)), as_dict(cfg.model), backbone)
    return Setup(task, data, backbone, tokenizer, LowerStateStores(disk))


def build(cfg: DictConfig, method_cfg: DictConfig, s: Setup, seed: int | None = None):
    """A fresh prompt model over the shared frozen backbone, seeded for determinism (with
    ``seed``, else the run's ``seed``)."""
    from spt_cli.model import build_model

    seed_everything(int(cfg.seed) if seed is None else seed)
    return build_model(
        cfg.model, method_cfg, cfg.head, s.task, backbone=s.backbone, tokenizer=s.tokenizer
    )


def candidates_and_budget(cfg: DictConfig, s: Setup) -> tuple[list[int], int]:
    """The blocks a search may prompt (``method.layers`` resolved on this backbone) and its
    budget K (``search.budget``, or about a third of the blocks)."""
    from spt_cli.model import make_adapter, resolve_method
    from spt_cli.search.bilevel import search_budget

    num_layers = make_adapter(s.backbone, str(cfg.model.family)).num_layers
    candidates = resolve_method(cfg.method, num_layers, str(cfg.model.name)).layers
    return candidates, search_budget(cfg.search, candidates, num_layers)


def encode_split(cfg: DictConfig, s: Setup, examples, head: str) -> list[dict]:
    """Tokenise examples for ``head``; rows as dicts for the batch streams (read, never
    changed, by them). Once per split and head in a Setup."""
    from spt_cli.data import encode

    key = (id(examples), head, int(cfg.data.max_seq_length))
    if key not in s.encoded:
        ds = encode(examples, s.tokenizer, s.task, int(cfg.data.max_seq_length), head)
        s.encoded[key] = (examples, ds.to_list())
    return s.encoded[key][1]


def pad_id(tokenizer) -> int:
    """Padding id (decoders without a pad token pad with eos)."""
    from spt_cli.data import pad_token_id

    return pad_token_id(tokenizer)


def logger_for(cfg: DictConfig, run_dir: Path, job_type: str, task: str) -> RunLogger:
    """The run's metrics sink (W&B group: task-method-shots)."""
    return RunLogger(
        run_dir,
        cfg.logger,
        job_type=job_type,
        group=f"{task}-{cfg.method.name}-{cfg.shots}",
        run_config=to_plain(cfg),
        name=f"{job_type}-{task}-{cfg.method.name}-{cfg.shots}-{cfg.seed}",
    )


def test_metrics(model, cfg: DictConfig, s: Setup, head: str, device) -> dict[str, float]:
    """Metrics on every test split; extra splits (MNLI mismatched) get a suffix (``_mm``)."""
    from spt_cli.train.evaluate import evaluate

    cache = LowerStateCache.for_model(model, cfg.trainer, "test", s.stores)
    out: dict[str, float] = {}
    for i, (name, examples) in enumerate(s.data.tests.items()):
        feats = encode_split(cfg, s, examples, head)
        metrics = evaluate(
            model,
            feats,
            s.task,
            batch_size=int(cfg.trainer.eval_batch_size),
            pad_token_id=pad_id(s.tokenizer),
            device=device,
            cache=cache,
            progress=f"test {name}",
        )
        suffix = "" if i == 0 else "_" + ("mm" if name.endswith("mismatched") else name)
        out.update({k + suffix: v for k, v in metrics.items()})
    return out


def majority(s: Setup) -> dict[str, dict[str, float]]:
    """Majority-class baselines: train's majority class on dev and the first test split, and
    (``test_class``) the test split's own majority class, LM-BFF's "Majority" row: a chance line
    that looks at test labels, so a reference, never a method to choose."""
    from spt_cli.metrics import majority_baseline

    train_labels = [ex.label for ex in s.data.train]
    test_labels = [ex.label for ex in next(iter(s.data.tests.values()))]
    return {
        "dev": majority_baseline(s.task, train_labels, [ex.label for ex in s.data.dev]),
        "test": majority_baseline(s.task, train_labels, test_labels),
        "test_class": majority_baseline(s.task, test_labels, test_labels),
    }


def say(phase: str, message: str) -> None:
    """A progress line on stderr, tagged with the phase (``[search] ...``)."""
    print(f"[{phase}] {message}", file=sys.stderr)
