"""SPT-DARTS architect: first-order update, second-order hypergradient, layer selection."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from conftest import FakeGatedModel, fake_features, search_cfg
from spt_cli.config import default_budget
from spt_cli.data import collate
from spt_cli.model.gates import binary_entropy
from spt_cli.search.architect import Architect
from spt_cli.search.select import select_layers


def scfg(**kw):
    base = dict(
        order="first",
        alpha_lr=0.1,
        alpha_betas=[0.5, 0.999],
        alpha_weight_decay=0.0,
        xi=0.05,
        budget=None,
        budget_penalty=0.0,
        anneal=False,
        tau_end=1.0,
        hessian="central",
    )
    base.update(kw)
    return search_cfg(**base)


def batches():
    return collate(fake_features(8, seed=1), 0), collate(fake_features(8, seed=2), 0)


def test_first_order_moves_only_the_gates():
    torch.manual_seed(0)
    model = FakeGatedModel()
    model.drop.p = 0.0
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    arch = Architect(model, scfg(), weight_lr=0.05)
    w, a = batches()
    arch.step([w], a, 0, 10)
    after = dict(model.named_parameters())
    assert not torch.equal(before["alpha"], after["alpha"])
    for n in before:
        if n != "alpha":
            assert torch.equal(before[n], after[n]), n


def exact_unrolled_gradient(model, w_batch, a_batch, xi, rng_state=None):
    """grad_alpha L_val(w - xi grad_w L_train(w, alpha), alpha) by autograd through the virtual
    step; with ``rng_state``, the two passes draw from it as the architect's passes do."""
    weights = {n: p for n, p in model.named_parameters() if p.requires_grad and n != "alpha"}
    names = list(weights)
    if rng_state is not None:
        torch.set_rng_state(rng_state)
    train_loss = functional_call(model, weights, args=(), kwargs=w_batch)["loss"]
    g = torch.autograd.grad(train_loss, [weights[n] for n in names], create_graph=True)
    virtual = {n: weights[n] - xi * gi for n, gi in zip(names, g)}
    val = functional_call(model, virtual, args=(), kwargs=a_batch)["loss"]
    return torch.autograd.grad(val, model.alpha)[0], virtual


def double_model():
    torch.manual_seed(0)
    model = FakeGatedModel().double()
    model.drop.p = 0.0
    model.alpha.data = torch.tensor([0.3, -0.2, 0.5], dtype=torch.double)
    return model


@pytest.mark.parametrize("hessian,rtol", [("central", 1e-3), ("forward", 2e-3)])
def test_second_order_matches_exact_unrolled_gradient(hessian, rtol):
    """DARTS' finite-difference hypergradient ~ the exact gradient through the virtual step
    (the one-sided difference has an O(R) error, the central one O(R^2))."""
    model = double_model()
    w_batch, a_batch = batches()
    xi = 0.05
    arch = Architect(model, scfg(order="second", xi=xi, hessian=hessian), weight_lr=xi)
    approx_loss, approx = arch._second_order([w_batch], a_batch)
    approx = torch.stack(approx)

    exact, virtual = exact_unrolled_gradient(model, w_batch, a_batch, xi)
    assert torch.allclose(approx, exact, rtol=rtol, atol=1e-7)
    # ... and differs from the first-order gradient (the correction term matters here).
    detached = {n: v.detach() for n, v in virtual.items()}
    first_loss = functional_call(model, detached, args=(), kwargs=a_batch)["loss"]
    first = torch.autograd.grad(first_loss, model.alpha)[0]
    assert not torch.allclose(first, exact, rtol=rtol, atol=1e-7)
    assert torch.isfinite(approx_loss)


def test_forward_difference_replays_the_virtual_pass_dropout_masks():
    """With dropout, the w+ pass must see the virtual pass's masks: the difference over the
    tiny R is then the curvature under those masks, not mask noise. The stream afterwards is
    where the two passes a first-order reading of the batches would leave it (no mask reuse)."""
    model = double_model()
    model.drop.p = 0.5
    w_batch, a_batch = batches()
    xi = 0.05
    arch = Architect(model, scfg(order="second", xi=xi, hessian="forward"), weight_lr=xi)
    torch.manual_seed(123)
    start = torch.get_rng_state()
    _, approx = arch._second_order([w_batch], a_batch)
    after = torch.get_rng_state()
    exact, _ = exact_unrolled_gradient(model, w_batch, a_batch, xi, rng_state=start)
    assert torch.allclose(torch.stack(approx), exact, rtol=2e-3, atol=1e-7)

    torch.set_rng_state(start)
    model(**w_batch)
    model(**a_batch)
    assert torch.equal(after, torch.get_rng_state())


@pytest.mark.parametrize("hessian,passes", [("central", 4), ("forward", 3)])
def test_second_order_passes_per_alpha_step(hessian, passes, monkeypatch):
    model = double_model()
    calls = []
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    arch = Architect(model, scfg(order="second", hessian=hessian), weight_lr=0.05)
    w, a = batches()
    arch.step([w], a, 0, 10)
    assert len(calls) == passes


@pytest.mark.parametrize("hessian", ["central", "forward"])
def test_second_order_with_accumulation_sees_every_micro_batch(hessian):
    """With trainer.grad_accum micro-batches, L_train of the virtual step is their mean, as in
    the weight step: two halves give the hypergradient of the whole batch."""
    model = double_model()
    rows = fake_features(8, seed=1)
    whole, halves = collate(rows, 0), [collate(rows[:4], 0), collate(rows[4:], 0)]
    a_batch = batches()[1]
    arch = Architect(model, scfg(order="second", hessian=hessian), weight_lr=0.05)
    _, from_whole = arch._second_order([whole], a_batch)
    _, from_halves = arch._second_order(halves, a_batch)
    _, first_half = arch._second_order(halves[:1], a_batch)
    torch.testing.assert_close(torch.stack(from_halves), torch.stack(from_whole))
    assert not torch.allclose(torch.stack(first_half), torch.stack(from_whole))


def test_unknown_hessian_is_a_config_error():
    from spt_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="search.hessian=exact"):
        Architect(FakeGatedModel(), scfg(order="second", hessian="exact"), weight_lr=0.05)


def test_budget_penalty_pushes_gate_sum_to_budget():
    torch.manual_seed(0)
    model = FakeGatedModel()
    arch = Architect(model, scfg(budget=1, budget_penalty=100.0, alpha_lr=0.2), weight_lr=0.05)
    w, a = batches()
    for i in range(30):
        arch.step([w], a, i, 30)
    assert abs(float(model.gate_probs().sum()) - 1.0) < 0.3


def test_temperature_annealing_reaches_the_end_value():
    model = FakeGatedModel()
    model.set_tau(2.0)  # method.tau: the one temperature, where the anneal starts
    arch = Architect(model, scfg(anneal=True, tau_end=0.5), weight_lr=0.05)
    w, a = batches()
    arch.step([w], a, 0, 5)
    assert model.tau == pytest.approx(2.0)
    arch.step([w], a, 4, 5)
    assert model.tau == pytest.approx(0.5)


def test_select_layers_budget_threshold_and_ties():
    probs = {1: 0.4, 2: 0.9, 3: 0.4, 4: 0.7, 5: 0.1}
    assert select_layers(probs, budget=2) == [2, 4]
    assert select_layers(probs, budget=3) == [1, 2, 4]  # tie 1 vs 3 -> lower layer
    assert select_layers(probs, threshold=0.5) == [2, 4]
    assert select_layers(probs, budget=1, threshold=0.95) == []
    assert default_budget(6) == 2 and default_budget(24) == 8 and default_budget(2) == 1


def test_binary_entropy_bounds():
    assert float(binary_entropy(torch.tensor([0.0, 1.0]))) < 1e-4
    assert float(binary_entropy(torch.tensor([0.5]))) == pytest.approx(0.6931, abs=1e-4)
