"""SPT-DARTS' bi-level loop: split the training data, warm up the weights, then per step one
alpha update on D_alpha followed by one weight update on D_w; finally derive the layers.

As DARTS' ``train_search.py``: :class:`BilevelStep` is the whole step, the architect's alpha
step then the weight step, which is the training loop's own
(:meth:`spt_cli.train.loop.Trainer.weight_step`), so the search trains its weights exactly as
every other phase does. The Trainer repeats the step and keeps its bookkeeping (evaluation,
logging, checkpoints); it knows nothing of the search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from spt_cli.config import default_budget
from spt_cli.errors import ConfigError
from spt_cli.runlog import RunLogger
from spt_cli.search.architect import Architect
from spt_cli.search.balance import class_weights
from spt_cli.search.diagnostics import MixMeter, diagnose
from spt_cli.search.protocol import SearchableModel
from spt_cli.search.select import derive_selection
from spt_cli.train.batches import BatchStream
from spt_cli.train.cache import LowerStateStores
from spt_cli.train.loop import Trainer


@dataclass
class SearchResult:
    """What a finished search derived: the selected layers, every candidate's gate, and the
    diagnostics of :mod:`spt_cli.search.diagnostics`."""

    layers: list[int]
    probs: dict[int, float]
    budget: int
    threshold: float | None
    diagnostics: dict[str, Any]


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


def alpha_class_weights(
    scfg: Any, task: Any, alpha_features: Sequence[dict]
) -> torch.Tensor | None:
    """The class weights of D_alpha for ``search.alpha_loss=balanced``; None for ``mean``."""
    if str(scfg.alpha_loss) == "mean":
        return None
    if task.is_regression:
        raise ConfigError(
            f"search.alpha_loss={scfg.alpha_loss} needs classes; {task.name} is a regression "
            "task: use search.alpha_loss=mean"
        )
    return class_weights([int(f["labels"]) for f in alpha_features], int(task.num_labels))


class BilevelStep:
    """One SPT-DARTS step (DARTS' ``train_search.py``): alpha on a D_alpha batch, then the
    weights on D_w. It holds the loop's state: with ``search.weight_stop_loss`` the weight
    steps stop once the D_w loss falls below it (``weights_frozen_at``), the alpha steps go on.
    """

    def __init__(
        self, architect: Architect, trainer: Trainer, alpha_stream: BatchStream, scfg: Any
    ) -> None:
        self.architect, self.trainer, self.alpha_stream = architect, trainer, alpha_stream
        self.warmup = int(scfg.warmup_steps)
        self.stop_loss = None if scfg.weight_stop_loss is None else float(scfg.weight_stop_loss)
        self.weights_frozen_at: int | None = None

    def __call__(self, step: int) -> dict[str, float]:
        trainer, logs = self.trainer, {}
        w_batches = None  # fetched by the weight step itself during the warm-up
        if step >= self.warmup:  # warm-up: weights only, the gates stay where they started
            # The weight step's own micro-batches, fetched once for both: a second-order
            # virtual step sees the data the weight step then trains on.
            w_batches = list(trainer.step_batches(step))
            alpha_batch = trainer.fetch(self.alpha_stream, step)
            logs.update(self.architect.step(w_batches, alpha_batch, step, trainer.total))
        if self.weights_frozen_at is None:
            logs.update(trainer.weight_step(step, w_batches))
            if self.stop_loss is not None and logs["train/loss"] < self.stop_loss:
                self.weights_frozen_at = step + 1  # D_w fitted: alpha steps only from here
        logs.update(self.architect.log_values())
        return logs

    def state_dict(self) -> dict:
        return {**self.architect.state_dict(), "weights_frozen_at": self.weights_frozen_at}

    def load_state_dict(self, state: dict) -> None:
        self.architect.load_state_dict(state)
        self.weights_frozen_at = state.get("weights_frozen_at")


def build_bilevel(
    model: SearchableModel,
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
    lower_stores: LowerStateStores | None = None,
) -> BilevelStep:
    """The search's step over ``model`` as :func:`run_search` runs it: the architect (gate
    optimiser, budget K, D_alpha class weights), the Trainer of the weights on D_w (AdamW,
    clipping, schedule, accumulation, lower-layer cache) and the D_alpha stream.
    ``step(i)`` is search step i; ``step.trainer.fit(step)`` runs the whole search."""
    budget = search_budget(scfg, model.candidate_layers, model.num_layers)
    weights = alpha_class_weights(scfg, task, alpha_features)
    architect = Architect(
        model, OmegaConf.merge(scfg, {"budget": budget}), float(tcfg.lr), class_weights=weights
    )
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
        lower_stores=lower_stores,
    )
    alpha_stream = BatchStream(alpha_features, int(tcfg.batch_size), seed + 1, pad_token_id)
    return BilevelStep(architect, trainer, alpha_stream, scfg)


def run_search(
    model: SearchableModel,
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
    lower_stores: LowerStateStores | None = None,
    dev_features: Sequence[dict] | None = None,
) -> SearchResult:
    """Search the gates of ``model`` on D_w (``w_features``) and D_alpha (``alpha_features``).
    With ``dev_features`` (``search.dev_ablation``), the diagnostics also hold the ablation
    scores on dev (``dev_ablation_scores``): measured after the search, they select nothing."""
    bilevel = build_bilevel(
        model,
        task=task,
        w_features=w_features,
        alpha_features=alpha_features,
        scfg=scfg,
        tcfg=tcfg,
        seed=seed,
        pad_token_id=pad_token_id,
        logger=logger,
        checkpoint_path=checkpoint_path,
        resume=resume,
        progress=progress,
        lower_stores=lower_stores,
    )
    architect, trainer = bilevel.architect, bilevel.trainer
    budget = int(architect.budget)
    # Checkpointed under "architect": the key search checkpoints have always used.
    trainer.fit(bilevel, state={"architect": bilevel})
    probs = {int(layer): float(p) for layer, p in zip(model.candidate_layers, model.gate_probs())}
    alphas = {int(k): float(a) for k, a in zip(model.candidate_layers, architect.alphas())}
    threshold = None if scfg.threshold is None else float(scfg.threshold)
    # Both selections are kept (the ablation costs 2 passes over D_alpha per layer); the
    # diagnostics say what the other one would have chosen.
    scores = ablation_scores(model, trainer, alpha_features)
    select, fallback = str(scfg.select), str(scfg.fallback)
    layers, selection, by_gates, by_ablation = derive_selection(
        probs, scores, model.candidate_layers, budget, select, fallback, threshold
    )
    mix = mixture_norms(model, trainer, alpha_features)
    steps = architect.steps
    diag = diagnose(
        probs,
        alphas,
        layers,
        budget,
        architect.lr,
        steps,
        mix,
        select,
        fallback,
        by_gates or layers,
    )
    diag.update({"select": select, "ablation_scores": scores, "by_gates": by_gates,
                 "by_ablation": by_ablation, "selection": selection,
                 "weights_frozen_at": bilevel.weights_frozen_at})  # fmt: skip
    if dev_features is not None:
        diag["dev_ablation_scores"] = ablation_scores(model, trainer, dev_features)
    # Its own phase: the "search" records stay one per step.
    logger.log(_flat(diag), step=trainer.total, phase="search_summary")
    return SearchResult(layers, probs, budget, threshold, diag)


def _eval_batches(trainer: Trainer, features: Sequence[dict]):
    """D_alpha in order, on the device, with cached lower states: for end-of-search passes."""
    from spt_cli.train.batches import eval_batches
    from spt_cli.train.evaluate import to_device

    for batch in eval_batches(features, int(trainer.tcfg.eval_batch_size), trainer.pad_token_id):
        batch = to_device(batch, trainer.device)
        yield trainer.cache.attach(batch) if trainer.cache is not None else batch


@torch.no_grad()
def mixture_norms(
    model: SearchableModel, trainer: Trainer, features: Sequence[dict]
) -> dict[int, tuple[float, float]]:
    """Mean ||a_l G_l|| and ||(1 - a_l) H_P|| per candidate layer on ``features`` (eval mode)."""
    meter = MixMeter()
    model.eval()
    model.mix_observer = meter
    try:
        for batch in _eval_batches(trainer, features):
            model(**batch)
    finally:
        model.mix_observer = None
    return meter.means()


@torch.no_grad()
def ablation_scores(
    model: SearchableModel, trainer: Trainer, features: Sequence[dict]
) -> dict[int, float]:
    """Per candidate layer, the loss on ``features`` (D_alpha, or dev) with its gate alone
    switched off (a_l = 0) minus the loss with it switched on (a_l = 1), the other gates as
    learned, dropout off (DARTS-PT's perturbation-based selection): large = the layer's new
    prompt helps."""
    model.eval()
    base = model.gate_probs()
    batches = list(_eval_batches(trainer, features))

    def loss(values: torch.Tensor) -> float:
        model.override_gates(values)
        total = sum(float(model(**b)["loss"]) * len(b["labels"]) for b in batches)
        return total / sum(len(b["labels"]) for b in batches)

    scores = {}
    try:
        for i, layer in enumerate(model.candidate_layers):
            off, on = base.clone(), base.clone()
            off[i], on[i] = 0.0, 1.0
            scores[int(layer)] = loss(off) - loss(on)
    finally:
        model.override_gates(None)
    return scores


def _flat(diag: dict[str, Any]) -> dict[str, float]:
    """The per-layer diagnostics as flat ``diag/...`` scalars for metrics.jsonl and W&B."""
    out = {"diag/gap": float(diag["gap"]), "diag/separated": float(diag["separated"])}
    for layer, d in diag["layers"].items():
        for key in ("drift", "new_term", "carried_term"):
            out[f"diag/{key}/layer_{int(layer):02d}"] = float(d[key])
    return out
