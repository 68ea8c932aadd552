"""The one training loop shared by search (weights), retrain, train and finetune.

:class:`Trainer` owns one phase: AdamW with linear warm-up and decay, gradient clipping and
accumulation, evaluation every N steps, early stopping, best-dev restore, resumable
checkpoints, Ctrl-C/SIGTERM handling and a stop on non-finite loss. :meth:`Trainer.weight_step`
is one optimiser step on the training batches; :meth:`Trainer.fit` repeats a step function
(the weight step, or another phase's step built around it) and does the bookkeeping around it.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from spt_cli.errors import ConfigError, RuntimeFailure, SptError
from spt_cli.runlog import RunLogger
from spt_cli.train.batches import BatchStream
from spt_cli.train.cache import LowerStateCache, LowerStateStores
from spt_cli.train.checkpoint import (
    load_checkpoint,
    load_trainable_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    trainable_state,
)
from spt_cli.train.evaluate import evaluate, to_device
from spt_cli.train.protocol import TrainableModel


class Interrupted(SptError):
    """Ctrl-C or SIGTERM: the checkpoint is saved; exit code 130 or 143 (128 + the signal), as a
    shell reports them."""

    exit_code = 130


class Stateful(Protocol):
    """Something whose state a checkpoint keeps beside the model's (e.g. a step function's)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class TrainResult:
    """What a finished training phase hands back."""

    steps: int
    best_step: int | None
    best_dev: dict[str, float] | None
    last_dev: dict[str, float] | None
    resumed_from: int | None = None


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warm-up to the base lr over ``warmup`` steps, then linear decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def total_steps(tcfg: Any, n_train: int) -> int:
    """Optimiser steps of a phase: ``max_steps``, else ``epochs`` over the training split."""
    if tcfg.max_steps is not None:
        return int(tcfg.max_steps)
    per_epoch = math.ceil(n_train / (int(tcfg.batch_size) * int(tcfg.grad_accum)))
    return int(tcfg.epochs) * per_epoch


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.device=cuda but no CUDA device is visible; use trainer.device=auto"
        )
    return torch.device(name)


def build_optimizer(model: TrainableModel, tcfg: Any) -> torch.optim.Optimizer:
    """AdamW over the weight parameters (not the gates): prompts, generators and head at
    ``trainer.lr``, a trained backbone (fine-tuning) at ``trainer.backbone_lr``."""
    backbone_ids = {id(p) for p in model.backbone_parameters()}
    weights = model.weight_parameters()
    if not weights:
        raise ConfigError(
            "nothing to train: the model has no trainable weight (e.g. method=head_only with a "
            "frozen pretrained LM head); use head=classifier or a method with prompts"
        )
    groups = [
        {"params": [p for p in weights if id(p) not in backbone_ids], "lr": float(tcfg.lr)},
        {"params": [p for p in weights if id(p) in backbone_ids], "lr": float(tcfg.backbone_lr)},
    ]
    groups = [g for g in groups if g["params"]]
    # foreach: the same update as torch's CPU default (a loop over the tensors), bit for bit,
    # in fewer passes (fine-tuning's 22M MiniLM weights: 86 instead of 106 ms a step);
    # fused=True would be faster still but rounds differently.
    return torch.optim.AdamW(
        groups, lr=float(tcfg.lr), weight_decay=float(tcfg.weight_decay), foreach=True
    )


class _StopFlag:
    """Turns the first Ctrl-C (SIGINT) or SIGTERM (a scheduler stopping or preempting the job,
    e.g. SLURM before its SIGKILL) into a flag the loop checks between steps."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def hit(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> _StopFlag:
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not in the main thread (e.g. a joblib worker thread)
                pass
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.hit:  # a second signal stops at once
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


StepFn = Callable[[int], dict[str, float]]


class Trainer:
    """One training phase of ``model``'s weight parameters on ``train_features``.

    With ``select_on_dev`` the best dev state (task main metric) is restored at the end; the
    search passes ``False`` (its dev set is D_alpha, which must not pick a state).
    ``lower_stores`` shares frozen lower-layer states with other models of the process. With
    ``resume``, :meth:`fit` continues from the checkpoint.
    """

    def __init__(
        self,
        model: TrainableModel,
        *,
        task: Any,
        train_features: Sequence[dict],
        dev_features: Sequence[dict] | None,
        tcfg: Any,
        seed: int,
        pad_token_id: int,
        logger: RunLogger,
        phase: str,
        checkpoint_path: Path,
        resume: bool = False,
        select_on_dev: bool = True,
        max_steps: int | None = None,
        progress: bool = True,
        lower_stores: LowerStateStores | None = None,
    ) -> None:
        self.model, self.task, self.tcfg = model, task, tcfg
        self.dev_features, self.pad_token_id = dev_features, pad_token_id
        self.logger, self.phase, self.checkpoint_path = logger, phase, checkpoint_path
        self.select_on_dev, self.progress = select_on_dev, progress
        self.resume = resume
        self.state: dict[str, Stateful] = {}
        self.device = resolve_device(str(tcfg.device))
        model.to(self.device)
        self.grad_accum = int(tcfg.grad_accum)
        n_train = len(train_features)
        self.total = int(max_steps) if max_steps is not None else total_steps(tcfg, n_train)
        self.stream = BatchStream(train_features, int(tcfg.batch_size), seed, pad_token_id)
        self.optimizer = build_optimizer(model, tcfg)
        warmup = int(float(tcfg.warmup_ratio) * self.total)
        self.scheduler = linear_schedule(self.optimizer, warmup, self.total)
        self.bf16 = str(tcfg.precision) == "bf16" and self.device.type == "cuda"
        # States entering the first prompt layer, computed once per example. Not under bf16
        # autocast: evaluation runs in fp32, and one cache must hold the same states for both.
        self.cache = (
            None if self.bf16 else LowerStateCache.for_model(model, tcfg, phase, lower_stores)
        )
        self.step = 0
        self.best: dict[str, Any] = {"metric": -math.inf, "step": None, "dev": None, "state": None}
        self.last_dev: dict[str, float] | None = None
        self.bad_evals = 0
        self.resumed_from: int | None = None

    # -- batches -----------------------------------------------------------------------------
    def fetch(self, source: BatchStream, index: int) -> dict[str, torch.Tensor]:
        """Batch ``index`` of ``source`` on the device, with cached lower-layer states."""
        batch = to_device(source.batch(index), self.device)
        return self.cache.attach(batch) if self.cache is not None else batch

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """Training batch ``index`` (micro-batch index with gradient accumulation)."""
        return self.fetch(self.stream, index)

    # -- one step ----------------------------------------------------------------------------
    def step_batches(self, step: int) -> Iterator[dict[str, torch.Tensor]]:
        """The training micro-batches of ``step`` (``trainer.grad_accum`` of them), fetched one
        at a time as they are consumed."""
        return (self.batch(step * self.grad_accum + micro) for micro in range(self.grad_accum))

    def weight_step(
        self, step: int, batches: Sequence[dict[str, torch.Tensor]] | None = None
    ) -> dict[str, float]:
        """One optimiser step of the weights on the training batch(es) of ``step``;
        ``batches``: those of :meth:`step_batches`, when the caller has fetched them already."""
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for batch in self.step_batches(step) if batches is None else batches:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = self.model(**batch)["loss"] / self.grad_accum
            if not torch.isfinite(loss):
                self._non_finite(loss, step)
            loss.backward()
            loss_sum += float(loss.detach())
        if self.tcfg.max_grad_norm:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, float(self.tcfg.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        return {"train/loss": loss_sum, "train/lr": self.scheduler.get_last_lr()[0]}

    def evaluate(self) -> dict[str, float] | None:
        """Official metrics on the dev features (None without dev features)."""
        if not self.dev_features:
            return None
        return evaluate(
            self.model,
            self.dev_features,
            self.task,
            batch_size=int(self.tcfg.eval_batch_size),
            pad_token_id=self.pad_token_id,
            device=self.device,
            cache=self.cache,
        )

    # -- the loop ----------------------------------------------------------------------------
    def fit(
        self, step_fn: StepFn | None = None, state: dict[str, Stateful] | None = None
    ) -> TrainResult:
        """Run ``step_fn(step)`` (default :meth:`weight_step`) up to the last step; evaluate,
        log and checkpoint after each; restore the best dev state at the end. ``state``:
        objects checkpointed (and on resume restored) with the model, under their keys."""
        step_fn = step_fn or self.weight_step
        self.state = dict(state or {})
        if self.resume and self.checkpoint_path.exists():
            self._restore()
        self.model.train()
        bar = tqdm(
            total=self.total,
            initial=self.step,
            desc=self.phase,
            disable=not self.progress,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        stopped_early = False
        # closing(bar): the bar is finished before an error line is printed, not after it.
        with _StopFlag() as stop, contextlib.closing(bar):
            while self.step < self.total:
                logs = step_fn(self.step)
                self.step += 1
                self._after_step(logs, bar)
                if stop.hit:
                    self._interrupted(stop, bar)
                if self.select_on_dev and self._patience_spent():
                    stopped_early = True
                    self.checkpoint()
                    break
        if stopped_early:
            patience = self.tcfg.patience
            print(f"[{self.phase}] early stop at step {self.step} (patience {patience})",
                  file=sys.stderr)  # fmt: skip
        if self.select_on_dev and self.best["state"] is not None:
            # Report test on the best dev state, never on the best test epoch.
            load_trainable_state(self.model, self.best["state"])
        return TrainResult(
            steps=self.step,
            best_step=self.best["step"],
            best_dev=self.best["dev"],
            last_dev=self.last_dev,
            resumed_from=self.resumed_from,
        )

    def _after_step(self, logs: dict[str, float], bar: Any) -> None:
        step, eval_every = self.step, int(self.tcfg.eval_every or 0)
        if eval_every and (step % eval_every == 0 or step == self.total):
            self.last_dev = self.evaluate()
            if self.last_dev is not None:
                logs.update({f"dev/{k}": v for k, v in self.last_dev.items()})
                if self.select_on_dev:
                    self._track_best(self.last_dev)
        self.logger.log(logs, step=step, phase=self.phase)
        main = self.task.main_metric
        post = {"loss": f"{logs.get('train/loss', float('nan')):.4f}"}
        if self.last_dev is not None:
            post[f"dev_{main}"] = f"{self.last_dev[main]:.4f}"
        bar.set_postfix(post, refresh=False)
        bar.update(1)
        every = int(self.tcfg.checkpoint_every or 0)
        if every and step % every == 0 or step == self.total:
            self.checkpoint()

    def _track_best(self, dev: dict[str, float]) -> None:
        main = self.task.main_metric
        if dev[main] > self.best["metric"]:
            state = trainable_state(self.model)
            self.best = {"metric": dev[main], "step": self.step, "dev": dev, "state": state}
            self.bad_evals = 0
        else:
            self.bad_evals += 1

    def _patience_spent(self) -> bool:
        patience = int(self.tcfg.patience or 0)
        return bool(patience) and self.bad_evals >= patience

    # -- checkpoints and failures --------------------------------------------------------------
    def checkpoint(self) -> None:
        """Save everything a resumed run needs to continue bit-identically."""
        payload = {
            "phase": self.phase,
            "step": self.step,
            "model": trainable_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best": self.best,
            "bad_evals": self.bad_evals,
            "last_dev": self.last_dev,
            "rng": rng_state(),
        }
        payload.update({name: obj.state_dict() for name, obj in self.state.items()})
        save_checkpoint(self.checkpoint_path, payload)

    def _restore(self) -> None:
        ck = load_checkpoint(self.checkpoint_path)
        load_trainable_state(self.model, ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        for name, obj in self.state.items():
            if ck.get(name) is not None:
                obj.load_state_dict(ck[name])
        self.step, self.best = ck["step"], ck["best"]
        self.bad_evals, self.last_dev = ck["bad_evals"], ck["last_dev"]
        set_rng_state(ck["rng"])
        self.resumed_from = self.step
        self.logger.truncate_after(self.phase, self.step)
        print(f"[{self.phase}] resumed from step {self.step} ({self.checkpoint_path})",
              file=sys.stderr)  # fmt: skip

    def _non_finite(self, loss: torch.Tensor, step: int) -> None:
        path = self.checkpoint_path
        where = (
            f"last good checkpoint: step {_ckpt_step(path)} in {path}"
            if path.exists()
            else "no checkpoint was written yet"
        )
        raise RuntimeFailure(
            f"non-finite loss ({loss.item()}) at {self.phase} step {step + 1}; {where}; "
            "lower trainer.lr or check the data"
        )

    def _interrupted(self, stop: _StopFlag, bar: Any) -> None:
        self.checkpoint()
        bar.close()
        how = "interrupted" if stop.signum == signal.SIGINT else "stopped by SIGTERM"
        raise Interrupted(
            f"{how} at {self.phase} step {self.step}; checkpoint saved in "
            f"{self.checkpoint_path}; continue with the same command plus resume=true "
            f"hydra.run.dir={self.checkpoint_path.parent.parent}",
            exit_code=128 + int(stop.signum or 0),
        )


def train(model: TrainableModel, **options: Any) -> TrainResult:
    """Train ``model`` for one phase (see :class:`Trainer` for the options)."""
    return Trainer(model, **options).fit()


def _ckpt_step(path: Path) -> int | str:
    try:
        return int(load_checkpoint(path)["step"])
    except Exception:  # noqa: BLE001 - only used inside an error message
        return "?"
