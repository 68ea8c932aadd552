"""Gates, generators, gradients, the no-grad region and padding invariance."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from spt_cli.model import load_backbone
from spt_cli.model.configs import model_config
from spt_cli.model.gates import StochasticGates
from spt_cli.model.generators import pool_real_tokens
from tiny import TINY, build_tiny, tiny_inputs

pytestmark = pytest.mark.usefixtures("one_thread")


def _build(name, method, head="auto", **overrides):
    model, _, tok = build_tiny(name, method, head, **overrides)
    return model, tok


def _inputs(tok, texts=("a truly great movie , i loved it", "bad")):
    return tiny_inputs(tok, texts)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_pool_real_tokens_matches_adaptive_pool_per_row(mode):
    torch.manual_seed(0)
    x = torch.randn(3, 9, 5)
    mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5, [1] * 2 + [0] * 7])
    ref_pool = F.adaptive_avg_pool1d if mode == "avg" else F.adaptive_max_pool1d
    out = pool_real_tokens(x, mask, 4, mode)
    for row in range(3):
        n = int(mask[row].sum())
        ref = ref_pool(x[row, :n].T.unsqueeze(0), 4)[0].T
        torch.testing.assert_close(out[row], ref)


def test_gate_closed_carries_prompt_open_replaces_it():
    model, tok = _build("tiny-bert", "spt", input_prompt="static")  # gates at blocks 1, 2, 3
    model.eval()
    model.prune_last_block = False  # the hooks below observe whole blocks, the last one too
    model.backbone.pack_padding = False  # ... run as transformers modules
    p = model.spec.num_tokens
    assert model.candidate_layers == [1, 2, 3]
    with torch.no_grad():
        model.gates.alpha.copy_(torch.tensor([-1e4, 1e4, 0.0]))  # a = 0, 1, 0.5
    torch.testing.assert_close(model.gate_probs(), torch.tensor([0.0, 1.0, 0.5]))
    block_in, block_out, gen_out = {}, {}, {}

    def record(key, inputs=None, outputs=None):
        def hook(module, args, output):  # returns None: the output is left as it is
            if inputs is not None:
                inputs[key] = args[0]
            outputs[key] = output

        return hook

    hooks = [
        block.register_forward_hook(record(i, block_in, block_out))
        for i, block in enumerate(model.backbone.blocks())
    ]
    hooks += [
        gen.register_forward_hook(record(k, None, gen_out)) for k, gen in model.generators.items()
    ]
    with torch.no_grad():
        model(**_inputs(tok))
    for h in hooks:
        h.remove()
    # Gate 0 at block 1: the prompt states leaving block 0 enter block 1 unchanged.
    torch.testing.assert_close(block_in[1][:, :p], block_out[0][:, :p], atol=0, rtol=0)
    assert not torch.allclose(block_in[1][:, :p], gen_out["1"])
    # Gate 1 at block 2: the generator's output replaces them.
    torch.testing.assert_close(block_in[2][:, :p], gen_out["2"], atol=0, rtol=0)
    assert not torch.allclose(block_in[2][:, :p], block_out[1][:, :p])
    # a = 0.5 at block 3: the even mixture.
    mix = 0.5 * gen_out["3"] + 0.5 * block_out[2][:, :p]
    torch.testing.assert_close(block_in[3][:, :p], mix)
    # Text states always pass through untouched.
    torch.testing.assert_close(block_in[2][:, p:], block_out[1][:, p:], atol=0, rtol=0)


def test_stochastic_gates_are_hard_forward_with_straight_through_grad():
    torch.manual_seed(0)
    gates = StochasticGates(5, tau=0.5)
    values = gates()
    assert set(values.tolist()) <= {0.0, 1.0}
    values.sum().backward()
    assert gates.alpha.grad is not None and gates.alpha.grad.abs().sum() > 0
    gates.eval()
    torch.testing.assert_close(gates(), torch.full((5,), 0.5))


@pytest.mark.parametrize(
    "method,layers", [("lpt", [2]), ("spt_fixed", [2, 3]), ("ptuning_v2", [2, 3])]
)
def test_only_trainable_params_get_grads_and_no_graph_below_first_prompt(method, layers):
    model, tok = _build("tiny-roberta", method, head="classifier", layers=layers)
    model.train()
    model.prune_last_block = False  # the hooks below observe whole blocks, the last one too
    model.backbone.pack_padding = False  # ... run as transformers modules
    outputs, grad_mode = {}, {}

    def record(i):
        def hook(module, args, output):
            outputs[i] = output
            grad_mode[i] = torch.is_grad_enabled()

        return hook

    hooks = [
        block.register_forward_hook(record(i)) for i, block in enumerate(model.backbone.blocks())
    ]
    out = model(**_inputs(tok), labels=torch.tensor([1, 0]))
    for h in hooks:
        h.remove()
    for i in range(layers[0]):  # below the first prompt layer: no autograd graph at all
        assert outputs[i].grad_fn is None and not outputs[i].requires_grad
        assert not grad_mode[i]  # ran under torch.no_grad: nothing is recorded for backward
    for i in range(layers[0], model.num_layers):
        assert outputs[i].requires_grad and grad_mode[i]
    out["loss"].backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and not any(n.startswith("backbone.") for n in trainable)
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert {id(p) for p in model.weight_parameters()} == {
        id(p) for n, p in model.named_parameters() if p.requires_grad
    }


@pytest.mark.parametrize(
    "input_prompt,gates,layers",
    [("none", [0.0, 1.0, 0.0], [2]), ("none", [1.0, 0.0, 1.0], [1, 3]),
     ("static", [0.0, 1.0, 0.0], [2])],
)  # fmt: skip
def test_hard_gates_make_the_search_model_the_retrain_model(input_prompt, gates, layers):
    """One model family: the search model with gates fixed at 0/1 computes what the retrain's
    spt_fixed model on the open layers computes with the same weights."""
    backbone = load_backbone(model_config("tiny-bert"))
    search, _, tok = build_tiny("tiny-bert", "spt", backbone=backbone, seed=3,
                                input_prompt=input_prompt)  # fmt: skip
    fixed, _, _ = build_tiny("tiny-bert", "spt_fixed", layers=layers, backbone=backbone,
                             input_prompt=input_prompt)  # fmt: skip
    missing, _ = fixed.load_state_dict(search.state_dict(), strict=False)
    assert missing == []
    search.eval()
    fixed.eval()
    search.override_gates(torch.tensor(gates))
    with torch.no_grad():
        want = fixed(**_inputs(tok))["logits"]
        got = search(**_inputs(tok))["logits"]
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        search.override_gates(torch.tensor([0.0, 1.0, 1.0]))  # another model: differs
        assert not torch.allclose(search(**_inputs(tok))["logits"], want)


def test_lower_states_draw_no_stochastic_gates():
    """The frozen blocks below the first gate hold no gate: computing their states (the
    lower-state cache, filled at other steps in a resumed run) must not move the RNG."""
    model, tok = _build("tiny-bert", "spt", gate="stochastic")
    model.train()
    assert model.cache_layer == 1
    before = torch.get_rng_state()
    enc = _inputs(tok)
    model.lower_states(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
    assert torch.equal(torch.get_rng_state(), before)
    model(**_inputs(tok))  # a full forward does draw the gates
    assert not torch.equal(torch.get_rng_state(), before)


def test_spt_gate_and_weight_groups_are_disjoint_and_complete():
    model, tok = _build("tiny-bert", "spt")
    gates = {id(p) for p in model.gate_parameters()}
    weights = {id(p) for p in model.weight_parameters()}
    assert gates == {id(model.gates.alpha)} and not gates & weights
    assert gates | weights == {id(p) for p in model.parameters() if p.requires_grad}
    out = model(**_inputs(tok), labels=torch.tensor([1, 0]))
    (out["loss"] + model.gate_values().sum()).backward()
    assert model.gates.alpha.grad is not None
    model.set_tau(0.1)
    assert model.tau == 0.1
    torch.testing.assert_close(model.gate_probs(), torch.full((3,), 0.5))


def test_finetune_trains_the_backbone():
    model, tok = _build("tiny-bert", "finetune", head="classifier")
    assert model.candidate_layers == [] and all(p.requires_grad for p in model.parameters())
    model(**_inputs(tok), labels=torch.tensor([1, 0]))["loss"].backward()
    word = model.backbone.word_embeddings().weight
    assert word.grad is not None and word.grad.abs().sum() > 0


CASES = [(name, "spt") for name in TINY] + [
    ("tiny-bert", "ptuning_v2"),
    ("tiny-gpt2", "ptuning_v2"),
    ("tiny-llama", "ptuning_v2"),
    ("tiny-roberta", "deep_prompt"),
    ("tiny-llama", "lpt"),
]


@pytest.mark.parametrize("name,method", CASES)
@pytest.mark.parametrize("head", ["auto", "classifier"])
def test_padding_invariance(name, method, head):
    model, tok = _build(name, method, head=head)
    model.eval()
    with torch.no_grad():
        for alpha in model.gate_parameters():  # learned gates only; hard ones have none
            alpha.normal_()
        texts = ("bad", "a truly great movie , i loved every minute of it")
        batch = model(**_inputs(tok, texts))["logits"]
        alone = model(**_inputs(tok, texts[:1]))["logits"]
    torch.testing.assert_close(batch[:1], alone, atol=1e-5, rtol=0)


def test_functional_call_uses_the_given_parameters():
    model, tok = _build("tiny-bert", "spt")
    model.eval()
    enc = _inputs(tok)
    params = dict(model.named_parameters())
    with torch.no_grad():
        direct = model(**enc)["logits"]
        same = torch.func.functional_call(model, params, (), enc)["logits"]
        moved = {k: (v + 1.0 if k == "gates.alpha" else v) for k, v in params.items()}
        other = torch.func.functional_call(model, moved, (), enc)["logits"]
        torch.testing.assert_close(same, direct)
        assert not torch.allclose(other, direct)
        torch.testing.assert_close(model(**enc)["logits"], direct)  # module left untouched


def test_every_gate_type_is_a_choice_of_method_gate():
    # config.GATES (checked by the preflight) and GATE_TYPES (built by the model) name the
    # same types: a new gate type is one class, one GATE_TYPES entry and its name in GATES.
    from spt_cli.config import GATES
    from spt_cli.model.gates import GATE_TYPES

    assert set(GATE_TYPES) == set(GATES)
