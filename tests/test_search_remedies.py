"""The search's remedies and diagnostics, each switch shown to change what it claims to."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import FakeGatedModel, fake_features, search_cfg, trainer_cfg
from spt_cli.data import collate, get_task
from spt_cli.runlog import RunLogger, read_metrics
from spt_cli.search.architect import Architect
from spt_cli.search.bilevel import ablation_scores, build_bilevel, run_search
from spt_cli.search.diagnostics import (
    MixMeter,
    diagnose,
    format_diagnostics,
    separation,
    warning,
)
from spt_cli.train.checkpoint import trainable_state
from spt_cli.train.loop import Trainer

TASK = get_task("rte")


def _model() -> FakeGatedModel:
    torch.manual_seed(0)
    model = FakeGatedModel()
    model.drop.p = 0.0
    return model


def _options(tmp_path, steps=6, tcfg=None, **options) -> dict:
    return dict(
        task=TASK,
        w_features=fake_features(16, seed=0),
        alpha_features=fake_features(16, seed=1),
        scfg=search_cfg(budget=1, alpha_lr=0.2, **options),
        tcfg=tcfg or trainer_cfg(max_steps=steps, eval_every=0),
        seed=3,
        pad_token_id=0,
        logger=RunLogger(tmp_path),
        checkpoint_path=tmp_path / "search.pt",
        progress=False,
    )


def _search(tmp_path, model=None, steps=6, **options):
    model = model or _model()
    result = run_search(model, **_options(tmp_path, steps, **options))
    return model, result


def _batches():
    return collate(fake_features(8, seed=1), 0), collate(fake_features(8, seed=2), 0)


def test_sgd_moves_alpha_by_lr_times_the_gradient():
    model = _model()
    arch = Architect(model, search_cfg(alpha_optimizer="sgd", alpha_lr=0.5,
                                       alpha_weight_decay=0.0), weight_lr=0.05)  # fmt: skip
    w, a = _batches()
    loss = model(**a)["loss"]
    (grad,) = torch.autograd.grad(loss, [model.alpha])
    before = model.alpha.detach().clone()
    arch.step([w], a, 0, 10)
    torch.testing.assert_close(model.alpha.detach(), before - 0.5 * grad)


def test_centred_gradients_keep_the_mean_of_alpha():
    moved = {}
    for mode in ("raw", "centred"):
        model = _model()
        arch = Architect(model, search_cfg(alpha_optimizer="sgd", alpha_grad=mode, alpha_lr=5.0,
                                           alpha_weight_decay=0.0), weight_lr=0.05)  # fmt: skip
        w, a = _batches()
        for step in range(3):
            arch.step([w], a, step, 3)
        moved[mode] = float(model.alpha.detach().mean())
    assert abs(moved["centred"]) < 1e-6
    assert abs(moved["raw"]) > 1e-4  # the common drift that centring removes


def test_budget_shift_keeps_the_expected_number_of_open_gates():
    model = _model()
    arch = Architect(model, search_cfg(budget=2, gate_shift="budget", alpha_lr=0.5), 0.05)
    w, a = _batches()
    for step in range(5):
        arch.step([w], a, step, 5)
        assert float(model.gate_values().detach().sum()) == pytest.approx(2.0, abs=1e-4)
    assert float(model.alpha.detach().std()) > 0  # the gates still move relative to each other


def test_weight_stop_freezes_the_weights_but_not_the_gates(tmp_path):
    model = _model()
    weights_before = {n: p.detach().clone() for n, p in model.named_parameters() if n != "alpha"}
    model, result = _search(tmp_path, model, steps=5, weight_stop_loss=100.0)
    assert result.diagnostics["weights_frozen_at"] == 1
    changed = [n for n, p in model.named_parameters()
               if n != "alpha" and not torch.equal(p.detach(), weights_before[n])]  # fmt: skip
    assert changed  # the first weight step ran ...
    once, _ = _search(tmp_path / "b", steps=1)  # ... and only it: the weights of a 1-step search
    for (n, p), (_, q) in zip(model.named_parameters(), once.named_parameters()):
        if n != "alpha":
            assert torch.equal(p, q), n
    assert result.diagnostics["alpha_steps"] == 5


def test_warmup_steps_hold_the_gates(tmp_path):
    model, result = _search(tmp_path, steps=4, warmup_steps=4)
    assert torch.equal(model.alpha.detach(), torch.zeros(3))
    assert result.diagnostics["alpha_steps"] == 0
    model, result = _search(tmp_path / "b", steps=4, warmup_steps=2)
    assert result.diagnostics["alpha_steps"] == 2


def test_ablation_scores_are_the_loss_change_of_each_gate(tmp_path):
    model, result = _search(tmp_path, steps=4, select="ablation")
    scores = result.diagnostics["ablation_scores"]
    assert set(scores) == {1, 2, 3}
    best = max(scores, key=scores.get)
    assert result.layers == [best]
    # Recompute one score by hand: D_alpha loss with gate 2 off minus with it on.
    batch = collate(fake_features(16, seed=1), 0)
    base = model.gate_probs()
    with torch.no_grad():
        losses = []
        for value in (0.0, 1.0):
            fixed = base.clone()
            fixed[1] = value
            model.override_gates(fixed)
            losses.append(float(model(**batch)["loss"]))
        model.override_gates(None)
    assert scores[2] == pytest.approx(losses[0] - losses[1], rel=1e-5)


def test_dev_ablation_is_measured_on_dev_and_selects_nothing(tmp_path):
    dev = fake_features(12, seed=5)
    _, plain = _search(tmp_path / "plain", steps=4)
    model = _model()
    result = run_search(model, **_options(tmp_path / "dev", 4), dev_features=dev)
    assert "dev_ablation_scores" not in plain.diagnostics
    scores = result.diagnostics["dev_ablation_scores"]
    assert set(scores) == {1, 2, 3}
    # Same search, same selection and D_alpha scores: it is measured after the search.
    assert result.layers == plain.layers and result.probs == plain.probs
    assert result.diagnostics["ablation_scores"] == plain.diagnostics["ablation_scores"]
    assert scores != result.diagnostics["ablation_scores"]  # another split, other numbers
    trainer = Trainer(
        model, task=TASK, train_features=fake_features(8), dev_features=None, tcfg=trainer_cfg(),
        seed=0, pad_token_id=0, logger=RunLogger(tmp_path), phase="search",
        checkpoint_path=tmp_path / "x.pt", progress=False,
    )  # fmt: skip
    assert ablation_scores(model, trainer, dev) == pytest.approx(scores)
    table = format_diagnostics(result.diagnostics)
    assert "ablation on dev" in table and "ablation on dev" not in format_diagnostics(
        plain.diagnostics
    )


def test_diagnostics_drift_norms_and_the_metrics_log(tmp_path):
    model, result = _search(tmp_path, steps=5)
    diag = result.diagnostics
    for layer, alpha in zip((1, 2, 3), model.alpha.detach()):
        entry = diag["layers"][str(layer)]
        assert entry["drift"] == pytest.approx(abs(float(alpha)) / (0.2 * 5))
        assert entry["new_term"] > 0 and entry["carried_term"] > 0
    last = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "diag/gap" in r]
    assert last and "diag/drift/layer_02" in last[-1]


def test_mix_meter_measures_both_terms():
    meter = MixMeter()
    new, old = torch.ones(2, 3, 4), 2 * torch.ones(2, 3, 4)
    meter(5, torch.tensor(0.25), new, old)
    new_term, old_term = meter.means()[5]
    assert new_term == pytest.approx(0.25 * math.sqrt(12))
    assert old_term == pytest.approx(0.75 * 2 * math.sqrt(12))


@pytest.mark.parametrize(
    "probs, separated, text",
    [
        ({1: 0.9, 2: 0.2, 3: 0.1}, True, None),
        ({1: 0.02, 2: 0.01, 3: 0.015}, False, "every gate below 0.5"),
        ({1: 0.61, 2: 0.58, 3: 0.3}, False, "only 0.030 apart"),
    ],
)
def test_separation_and_its_warning(probs, separated, text):
    selected = [max(probs, key=probs.get)]
    sep = separation(probs, selected)
    assert sep["separated"] is separated
    message = warning(probs, sep, 1)
    assert (message is None) if text is None else (text in message)
    diag = diagnose(probs, {k: 0.0 for k in probs}, selected, 1, 0.05, 10, {})
    assert diag["separated"] is separated


def test_ablation_needs_no_trainer_state_beyond_its_batches(tmp_path):
    model = _model()
    trainer = Trainer(
        model, task=TASK, train_features=fake_features(8), dev_features=None, tcfg=trainer_cfg(),
        seed=0, pad_token_id=0, logger=RunLogger(tmp_path), phase="search",
        checkpoint_path=tmp_path / "x.pt", progress=False,
    )  # fmt: skip
    scores = ablation_scores(model, trainer, fake_features(8, seed=4))
    assert set(scores) == {1, 2, 3} and model.fixed is None  # the override is undone


@pytest.mark.parametrize("order", ["first", "second"])
def test_build_bilevel_steps_by_hand_train_as_run_search(tmp_path, order):
    """What scripts/bench.py times (build_bilevel's step called directly) is the search's own
    step: four steps by hand leave the gates and weights of a four-step run_search, bit for
    bit (dropout on, two micro-batches a step, clipping and the schedule of the Trainer)."""
    tcfg = trainer_cfg(max_steps=4, eval_every=0, grad_accum=2, max_grad_norm=0.5)
    states = []
    for by_hand in (False, True):
        torch.manual_seed(0)
        model = FakeGatedModel()
        options = _options(tmp_path / str(by_hand), tcfg=tcfg, order=order)
        torch.manual_seed(1)
        if by_hand:
            step = build_bilevel(model, **options)
            assert step.trainer.phase == "search" and not step.trainer.select_on_dev
            assert step.architect.budget == 1 and step.trainer.total == 4
            model.train()
            for i in range(4):
                step(i)
        else:
            run_search(model, **options)
        states.append((model.gate_probs(), trainable_state(model)))
    (gates, weights), (gates_hand, weights_hand) = states
    assert torch.equal(gates, gates_hand)
    assert weights.keys() == weights_hand.keys()
    for key in weights:
        assert torch.equal(weights[key], weights_hand[key]), key
