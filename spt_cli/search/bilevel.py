"""SPT-DARTS' bi-level loop: split the training data, warm up the weights, then per step one
alpha update on D_alpha followed by one weight update on D_w; finally derive the layers.

As DARTS' ``train_search.py``: the architect step and the weight step alternate in one loop;
the weight step is the training loop's own (:meth:`spt_cli.train.loop.Trainer.weight_step`),
so the search trains its weights exactly as every other phase does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from spt_cli.errors import ConfigError
from spt_cli.runlog import RunLogger
from spt_cli.search.architect import Architect
from spt_cli.search.select import default_budget, select_layers
from spt_cli.train.batches import BatchStream
from spt_cli.train.loop import Trainer
from spt_cli.train.protocol import TrainableModel


@dataclass
class SearchResult:
    """What a finished search derived: the selected layers and every candidate's gate."""

    layers: list[int]
    probs: dict[int, float]
    budget: int
    threshold: float | None


def split_train(task: Any, examples: list, portion: float, seed: int) -> tuple[list, list]:
    """(D_w, D_alpha): a stratified, seeded share ``portion`` of train becomes D_alpha (the
    task's dev split is never used by the search)."""
    from spt_cli.data.splits import strata_key, stratified_split

    n_alpha = max(1, min(len(examples) - 1, int(round(len(examples) * portion))))
    return stratified_split(examples, n_alpha, seed, strata_key(task))


def search_budget(scfg: Any, candidates: Sequence[int], num_layers: int) -> int:
    """K, the number of layers to keep: ``search.budget``, else about a third of the blocks
    (capped at the number of candidates)."""
    if scfg.budget is None:
        budget = min(default_budget(num_layers), len(candidates))
    else:
        budget = int(scfg.budget)
    if not 1 <= budget <= len(candidates):
        raise ConfigError(
            f"search.budget={budget} must be between 1 and the {len(candidates)} candidate "
            f"layers {list(candidates)}"
        )
    return budget


def run_search(
    model: TrainableModel,
    *,
    task: Any,
    w_features: Sequence[dict],
    alpha_features: Sequence[dict],
    scfg: Any,
    tcfg: Any,
    seed: int,
    pad_token_id: int,
    logger: RunLogger,
    checkpoint_path: Path,
    resume: bool = False,
    progress: bool = True,
) -> SearchResult:
    """Search the gates of ``model`` on D_w (``w_features``) and D_alpha (``alpha_features``)."""
    budget = search_budget(scfg, model.candidate_layers, model.num_layers)
    architect = Architect(model, OmegaConf.merge(scfg, {"budget": budget}), float(tcfg.lr))
    trainer = Trainer(
        model,
        task=task,
        train_features=w_features,
        dev_features=alpha_features,  # logged as dev/*, never used to pick a state
        tcfg=tcfg,
        seed=seed,
        pad_token_id=pad_token_id,
        logger=logger,
        phase="search",
        checkpoint_path=checkpoint_path,
        resume=resume,
        select_on_dev=False,
        max_steps=scfg.max_steps,
        progress=progress,
        extra={"architect": architect},
    )
    alpha_stream = BatchStream(alpha_features, int(tcfg.batch_size), seed + 1, pad_token_id)
    warmup = int(scfg.warmup_epochs) * trainer.stream.batches_per_epoch

    def bilevel_step(step: int) -> dict[str, float]:
        logs: dict[str, float] = {}
        if step >= warmup:  # warm-up: weights only, the gates stay where they started
            w_batch = trainer.batch(step * trainer.grad_accum)
            alpha_batch = trainer.fetch(alpha_stream, step)
            logs.update(architect.step(w_batch, alpha_batch, step, trainer.total))
        logs.update(trainer.weight_step(step))
        logs.update(architect.log_values())
        return logs

    trainer.fit(bilevel_step)
    probs = {int(layer): float(p) for layer, p in zip(model.candidate_layers, model.gate_probs())}
    threshold = None if scfg.threshold is None else float(scfg.threshold)
    layers = select_layers(probs, budget, threshold)
    if not layers:
        raise ConfigError(
            f"search.threshold={threshold} keeps no layer (max gate probability "
            f"{max(probs.values()):.3f}); lower it or use search.budget"
        )
    return SearchResult(layers=layers, probs=probs, budget=budget, threshold=threshold)
