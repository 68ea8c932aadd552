"""The one training loop shared by search (weights), retrain, train and finetune.

AdamW with linear warm-up and decay, gradient clipping and accumulation, evaluation every N
steps, early stopping, best-dev restore, resumable checkpoints, SIGINT handling and a stop on
non-finite loss.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from spt_cli.errors import RuntimeFailure, SptError
from spt_cli.runlog import RunLogger
from spt_cli.train.batches import BatchStream
from spt_cli.train.cache import LowerStateCache
from spt_cli.train.checkpoint import (
    load_checkpoint,
    load_trainable_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    trainable_state,
)
from spt_cli.train.evaluate import evaluate, to_device


class Interrupted(SptError):
    """Ctrl-C or SIGTERM: the checkpoint is saved; exit code 130 or 143 (128 + the signal), as a
    shell reports them."""

    exit_code = 130


class Architect(Protocol):
    """The alpha side of a bi-level search (see ``spt_cli.search.darts``)."""

    def step(self, w_batch: dict, alpha_batch: dict, step: int, total: int) -> dict[str, float]:
        """Update the gates on ``alpha_batch``; return scalars to log."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def log_values(self) -> dict[str, float]:
        """Per-step values to log (gate probabilities, entropy)."""


@dataclass
class TrainResult:
    """What a finished training phase hands back."""

    steps: int
    best_step: int | None
    best_dev: dict[str, float] | None
    last_dev: dict[str, float] | None
    wall_time_s: float
    resumed_from: int | None = None
    history: list[dict] = field(default_factory=list)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warm-up to the base lr over ``warmup`` steps, then linear decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def total_steps(tcfg: Any, n_train: int) -> int:
    """Optimiser steps of a phase: ``max_steps``, else ``epochs`` over the training split."""
    if tcfg.get("max_steps") is not None:
        return int(tcfg.max_steps)
    per_epoch = math.ceil(n_train / (int(tcfg.batch_size) * int(tcfg.get("grad_accum") or 1)))
    return int(tcfg.epochs) * per_epoch


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from spt_cli.errors import ConfigError

        raise ConfigError(
            "trainer.device=cuda but no CUDA device is visible; use trainer.device=auto"
        )
    return torch.device(name)


def build_optimizer(model: torch.nn.Module, tcfg: Any) -> torch.optim.Optimizer:
    """AdamW over the weight parameters (not the gates); a smaller lr for a trained backbone."""
    weights = list(model.weight_parameters())
    backbone_ids = {id(p) for p in getattr(model, "backbone_parameters", lambda: [])()}
    groups = [
        {"params": [p for p in weights if id(p) not in backbone_ids], "lr": float(tcfg.lr)},
        {
            "params": [p for p in weights if id(p) in backbone_ids],
            "lr": float(tcfg.get("backbone_lr") or tcfg.lr),
        },
    ]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=float(tcfg.lr), weight_decay=float(tcfg.weight_decay))


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


def train(
    model: torch.nn.Module,
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
    architect: Architect | None = None,
    alpha_features: Sequence[dict] | None = None,
    alpha_warmup_steps: int = 0,
    max_steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model``'s weight parameters; return the best-dev (or last) state's summary.

    With ``select_on_dev`` the best dev checkpoint (task main metric) is restored at the end;
    the search phase passes ``False`` (its dev set is D_alpha, which must not pick a state).
    """
    t0 = time.time()
    device = resolve_device(str(tcfg.get("device", "auto")))
    model.to(device)
    main = task.main_metric
    grad_accum = int(tcfg.get("grad_accum") or 1)
    n_steps = int(max_steps) if max_steps is not None else total_steps(tcfg, len(train_features))
    stream = BatchStream(train_features, int(tcfg.batch_size), seed, pad_token_id)
    alpha_stream = (
        BatchStream(alpha_features, int(tcfg.batch_size), seed + 1, pad_token_id)
        if architect is not None and alpha_features
        else None
    )
    optimizer = build_optimizer(model, tcfg)
    scheduler = linear_schedule(optimizer, int(float(tcfg.warmup_ratio) * n_steps), n_steps)
    eval_every = int(tcfg.get("eval_every") or 0)
    ckpt_every = int(tcfg.get("checkpoint_every") or 0)
    patience = int(tcfg.get("patience") or 0)
    use_bf16 = str(tcfg.get("precision", "fp32")) == "bf16" and device.type == "cuda"
    # States entering the first prompt layer, computed once per example (trainer.
    # cache_lower_layers). Not under bf16 autocast: evaluation runs in fp32, and one cache
    # must hold the same states for both.
    cache = None if use_bf16 else LowerStateCache.for_model(model, tcfg, label=phase)

    def fetch(source: BatchStream, index: int) -> dict[str, torch.Tensor]:
        batch = to_device(source.batch(index), device)
        return cache.attach(batch) if cache is not None else batch

    step = 0
    best: dict[str, Any] = {"metric": -math.inf, "step": None, "dev": None, "state": None}
    last_dev: dict[str, float] | None = None
    bad_evals = 0
    resumed_from = None
    if resume and checkpoint_path.exists():
        ck = load_checkpoint(checkpoint_path)
        load_trainable_state(model, ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if architect is not None and ck.get("architect") is not None:
            architect.load_state_dict(ck["architect"])
        step, best, bad_evals, last_dev = ck["step"], ck["best"], ck["bad_evals"], ck["last_dev"]
        set_rng_state(ck["rng"])
        resumed_from = step
        logger.truncate_after(phase, step)
        print(f"[{phase}] resumed from step {step} ({checkpoint_path})", file=sys.stderr)

    def checkpoint() -> None:
        save_checkpoint(
            checkpoint_path,
            {
                "phase": phase,
                "step": step,
                "model": trainable_state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "architect": architect.state_dict() if architect is not None else None,
                "best": best,
                "bad_evals": bad_evals,
                "last_dev": last_dev,
                "rng": rng_state(),
            },
        )

    def run_eval() -> dict[str, float] | None:
        if not dev_features:
            return None
        return evaluate(
            model,
            dev_features,
            task,
            batch_size=int(tcfg.get("eval_batch_size") or tcfg.batch_size),
            pad_token_id=pad_token_id,
            device=device,
            cache=cache,
        )

    model.train()
    bar = tqdm(
        total=n_steps,
        initial=step,
        desc=phase,
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=1.0,
    )
    stopped_early = False
    # closing(bar): the bar is finished before an error line is printed, not after it.
    with _StopFlag() as stop, contextlib.closing(bar):
        while step < n_steps:
            logs: dict[str, float] = {}
            if architect is not None and alpha_stream is not None and step >= alpha_warmup_steps:
                logs.update(
                    architect.step(
                        fetch(stream, step * grad_accum),
                        fetch(alpha_stream, step),
                        step,
                        n_steps,
                    )
                )
            optimizer.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for micro in range(grad_accum):
                batch = fetch(stream, step * grad_accum + micro)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    loss = model(**batch)["loss"] / grad_accum
                if not torch.isfinite(loss):
                    where = (
                        f"last good checkpoint: step {_ckpt_step(checkpoint_path)} in "
                        f"{checkpoint_path}"
                        if checkpoint_path.exists()
                        else "no checkpoint was written yet"
                    )
                    raise RuntimeFailure(
                        f"non-finite loss ({loss.item()}) at {phase} step {step + 1}; {where}; "
                        "lower trainer.lr or check the data"
                    )
                loss.backward()
                loss_sum += float(loss.detach())
            # Gates are stepped by the architect only; drop grads the weight loss left on them.
            for p in getattr(model, "gate_parameters", lambda: [])():
                p.grad = None
            if tcfg.get("max_grad_norm"):
                torch.nn.utils.clip_grad_norm_(
                    [p for g in optimizer.param_groups for p in g["params"]],
                    float(tcfg.max_grad_norm),
                )
            optimizer.step()
            scheduler.step()
            step += 1
            logs["train/loss"] = loss_sum
            logs["train/lr"] = scheduler.get_last_lr()[0]
            if architect is not None:
                logs.update(architect.log_values())
            if eval_every and (step % eval_every == 0 or step == n_steps):
                last_dev = run_eval()
                if last_dev is not None:
                    logs.update({f"dev/{k}": v for k, v in last_dev.items()})
                    if select_on_dev:
                        if last_dev[main] > best["metric"]:
                            best = {
                                "metric": last_dev[main],
                                "step": step,
                                "dev": last_dev,
                                "state": trainable_state(model),
                            }
                            bad_evals = 0
                        else:
                            bad_evals += 1
            logger.log(logs, step=step, phase=phase)
            post = {"loss": f"{loss_sum:.4f}"}
            if last_dev is not None:
                post[f"dev_{main}"] = f"{last_dev[main]:.4f}"
            if "search/gate_entropy" in logs:
                post["H"] = f"{logs['search/gate_entropy']:.3f}"
            bar.set_postfix(post, refresh=False)
            bar.update(1)
            if ckpt_every and step % ckpt_every == 0 or step == n_steps:
                checkpoint()
            if stop.hit:
                checkpoint()
                bar.close()
                how = "interrupted" if stop.signum == signal.SIGINT else "stopped by SIGTERM"
                raise Interrupted(
                    f"{how} at {phase} step {step}; checkpoint saved in {checkpoint_path}; "
                    "continue with the same command plus resume=true "
                    f"hydra.run.dir={checkpoint_path.parent.parent}",
                    exit_code=128 + int(stop.signum),
                )
            if select_on_dev and patience and bad_evals >= patience:
                stopped_early = True
                checkpoint()
                break
    bar.close()
    if stopped_early:
        print(f"[{phase}] early stop at step {step} (patience {patience})", file=sys.stderr)
    if select_on_dev and best["state"] is not None:
        # Report test on the best dev state, never on the best test epoch.
        load_trainable_state(model, best["state"])
    return TrainResult(
        steps=step,
        best_step=best["step"],
        best_dev=best["dev"],
        last_dev=last_dev,
        wall_time_s=time.time() - t0,
        resumed_from=resumed_from,
    )


def _ckpt_step(path: Path) -> int | str:
    try:
        return int(load_checkpoint(path)["step"])
    except Exception:  # noqa: BLE001 - only used inside an error message
        return "?"
