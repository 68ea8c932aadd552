"""The shared training loop: determinism, exact resume, best-dev restore, NaN stop."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from conftest import FakeGatedModel, fake_features, trainer_cfg
from spt_cli.data import get_task
from spt_cli.errors import RuntimeFailure
from spt_cli.runlog import RunLogger, read_metrics
from spt_cli.train.batches import BatchStream
from spt_cli.train.checkpoint import trainable_state
from spt_cli.train.loop import Interrupted, train

TASK = get_task("rte")


def run(tmp_path, model=None, **kw):
    if model is None:
        torch.manual_seed(0)
        model = FakeGatedModel()
    logger = RunLogger(tmp_path)
    opts = dict(
        task=TASK,
        train_features=fake_features(40),
        dev_features=fake_features(16, seed=1),
        tcfg=trainer_cfg(**kw.pop("tcfg", {})),
        seed=3,
        pad_token_id=0,
        logger=logger,
        phase="train",
        checkpoint_path=tmp_path / "checkpoints" / "train.pt",
        progress=False,
    )
    opts.update(kw)
    result = train(model, **opts)
    return model, result


def test_batch_stream_is_a_function_of_seed_and_index():
    feats = fake_features(21)
    a, b = (
        BatchStream(feats, 4, seed=5, pad_token_id=0),
        BatchStream(feats, 4, seed=5, pad_token_id=0),
    )
    assert a.batches_per_epoch == 6
    # Random access in any order gives the same batch.
    for i in [7, 0, 13, 7]:
        assert torch.equal(a.batch(i)["input_ids"], b.batch(i)["input_ids"])
    # One epoch covers every example exactly once.
    seen = sorted(tuple(r.tolist()) for i in range(6) for r in a.batch(i)["labels"].split(1))
    assert len(seen) == 21
    c = BatchStream(feats, 4, seed=6, pad_token_id=0)
    assert not all(torch.equal(a.batch(i)["input_ids"], c.batch(i)["input_ids"]) for i in range(6))


def test_same_seed_same_numbers(tmp_path):
    m1, r1 = run(tmp_path / "a")
    m2, r2 = run(tmp_path / "b")
    assert r1.best_dev == r2.best_dev
    assert_same_parameters(m1, m2)


class Killed(Exception):
    pass


def hooked_model(n: int, action) -> FakeGatedModel:
    """The seeded model of ``run``, calling ``action`` before its ``n``-th training forward."""
    torch.manual_seed(0)
    model = FakeGatedModel()
    orig, calls = model.forward, {"n": 0}

    def forward(*a, **k):
        calls["n"] += model.training
        if model.training and calls["n"] == n:
            action()
        return orig(*a, **k)

    model.forward = forward
    return model


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n


def test_resume_continues_exactly(tmp_path):
    full_model, full = run(tmp_path / "full")
    # The same run dies during step 10 (after the checkpoint at step 8), then resumes.
    part = tmp_path / "part"

    def die():
        raise Killed

    with pytest.raises(Killed):
        run(part, model=hooked_model(10, die))
    ck = torch.load(part / "checkpoints" / "train.pt", weights_only=False)
    assert ck["step"] == 8
    resumed_model, resumed = run(part, resume=True)
    assert resumed.resumed_from == 8
    assert resumed.best_dev == full.best_dev
    assert_same_parameters(full_model, resumed_model)
    steps = [r["step"] for r in read_metrics(part / "metrics.jsonl")]
    assert steps == list(range(1, 13))  # no duplicated lines after resume


def test_sigterm_checkpoints_the_step_and_resumes_exactly(tmp_path):
    """A scheduler's SIGTERM during step 5: the step finishes, is checkpointed, the run stops
    with 143 (128 + 15), and a resume ends where an uninterrupted run does."""
    full_model, full = run(tmp_path / "full")
    part = tmp_path / "part"
    model = hooked_model(5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="stopped by SIGTERM at train step 5; checkpoint") as e:
        run(part, model=model)
    assert e.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is handler  # the loop's handler is gone again
    assert torch.load(part / "checkpoints" / "train.pt", weights_only=False)["step"] == 5
    resumed_model, resumed = run(part, resume=True)
    assert resumed.resumed_from == 5 and resumed.best_dev == full.best_dev
    assert_same_parameters(full_model, resumed_model)


def test_best_dev_state_is_restored(tmp_path):
    model, result = run(tmp_path, tcfg={"max_steps": 16, "eval_every": 2})
    ck = torch.load(tmp_path / "checkpoints" / "train.pt", weights_only=False)
    best = ck["best"]
    assert result.best_step == best["step"]
    state = trainable_state(model)
    for n, t in best["state"].items():
        assert torch.equal(state[n], t), n
    dev_lines = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "dev/accuracy" in r]
    assert max(r["dev/accuracy"] for r in dev_lines) == result.best_dev["accuracy"]


def test_gates_are_not_trained_by_the_weight_step(tmp_path):
    model, _ = run(tmp_path)
    assert torch.equal(model.alpha, torch.zeros(3))


def test_nan_loss_stops_with_the_step_and_keeps_checkpoint(tmp_path):
    model = FakeGatedModel()
    orig = model.forward
    calls = {"n": 0}

    def poisoned(*a, **k):
        out = orig(*a, **k)
        calls["n"] += 1
        if calls["n"] > 6:
            out["loss"] = out["loss"] * float("nan")
        return out

    model.forward = poisoned
    with pytest.raises(
        RuntimeFailure, match=r"non-finite loss .* step 7; last good checkpoint: step 4"
    ):
        run(tmp_path, model=model, dev_features=None)
    assert (tmp_path / "checkpoints" / "train.pt").exists()


def test_finetuning_trains_the_backbone_at_backbone_lr():
    """The optimiser puts every backbone weight in a group at trainer.backbone_lr and the
    prompts/head at trainer.lr (the backbone once trained at the prompt lr: 250x too high)."""
    from spt_cli.train.loop import build_optimizer
    from tiny import build_tiny

    model, _, _ = build_tiny("tiny-bert", "finetune", head="classifier")
    tcfg = trainer_cfg(lr=5e-3, backbone_lr=2e-5)
    groups = build_optimizer(model, tcfg).param_groups
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    backbone = [p for p in model.backbone.parameters()]
    assert backbone and all(lr_of[id(p)] == 2e-5 for p in backbone)
    head = [p for n, p in model.named_parameters() if n.startswith("head.")]
    assert head and all(lr_of[id(p)] == 5e-3 for p in head)
    assert len(lr_of) == len(model.weight_parameters())


def test_models_implement_the_training_contract():
    from spt_cli.train.protocol import TrainableModel
    from tiny import build_tiny

    for model in (FakeGatedModel(), build_tiny("tiny-bert", "spt")[0]):
        assert isinstance(model, TrainableModel)


def test_a_model_with_nothing_to_train_is_one_clear_error():
    from spt_cli.errors import ConfigError
    from spt_cli.train.loop import build_optimizer
    from tiny import build_tiny

    model, _, _ = build_tiny("tiny-bert", "head_only", head="mlm")
    with pytest.raises(ConfigError, match="nothing to train.*use head=classifier"):
        build_optimizer(model, trainer_cfg())


def test_weight_step_on_prefetched_batches_is_the_same_step(tmp_path):
    """The search fetches a step's micro-batches once for its alpha and weight steps: handing
    them to weight_step trains exactly as letting it fetch them."""
    from spt_cli.train.loop import Trainer

    states = []
    for prefetch in (False, True):
        torch.manual_seed(0)
        model = FakeGatedModel()
        trainer = Trainer(
            model, task=TASK, train_features=fake_features(16), dev_features=None,
            tcfg=trainer_cfg(grad_accum=2), seed=3, pad_token_id=0,
            logger=RunLogger(tmp_path / str(prefetch)), phase="train",
            checkpoint_path=tmp_path / f"{prefetch}.pt", progress=False,
        )  # fmt: skip
        torch.manual_seed(1)  # the same dropout draws in both
        for step in range(3):
            batches = list(trainer.step_batches(step)) if prefetch else None
            if batches is not None:
                assert len(batches) == 2
            trainer.weight_step(step, batches)
        states.append(trainable_state(model))
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_the_foreach_adamw_updates_as_the_per_tensor_loop():
    """build_optimizer's foreach AdamW (fewer passes) gives the bits of torch's CPU default."""
    from spt_cli.train.loop import build_optimizer

    states = []
    for foreach in (True, False):
        torch.manual_seed(0)
        model = FakeGatedModel()
        opt = build_optimizer(model, trainer_cfg(weight_decay=0.01))
        assert all(g["foreach"] for g in opt.param_groups)
        for group in opt.param_groups:
            group["foreach"] = foreach
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            for param in model.weight_parameters():
                param.grad = torch.randn(param.shape, generator=gen)
            opt.step()
        states.append(trainable_state(model))
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
