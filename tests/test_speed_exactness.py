"""Every speed optimisation computes what the plain computation does.

- the last block computed only at the head's positions (``prune_last_block``);
- linear layers on the real positions only when a batch has padding (``pack_padding``);
- frozen lower layers in eval mode and their states cached per example (``lower_states``,
  ``forward(lower=...)``, ``LowerStateCache``, ``trainer.cache_lower_layers``);
- pooling bins computed once per forward;
- cheaper dropout in the backbone (same law, untouched eval mode);
- the second-order step's two finite-difference passes under one random state.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from conftest import FakeGatedModel, fake_features, search_cfg, trainer_cfg
from spt_cli.backbones import packing
from spt_cli.data import collate, get_task
from spt_cli.model import fast, load_backbone
from spt_cli.model.configs import model_config
from spt_cli.model.generators import pool_bins, pool_real_tokens
from spt_cli.runlog import RunLogger
from spt_cli.search.architect import Architect
from spt_cli.train.batches import BatchStream
from spt_cli.train.cache import LowerStateCache
from spt_cli.train.checkpoint import trainable_state
from spt_cli.train.loop import train
from tiny import NO_PREFIX, TINY, build_tiny, tiny_inputs

pytestmark = pytest.mark.usefixtures("one_thread")


def _build(name, method, head="auto", layers=None, **overrides):
    model, _, tok = build_tiny(name, method, head, layers=layers, seed=0, **overrides)
    return model, tok


def _inputs(tok, texts=("a truly great movie , i loved it", "bad", "fine , not more")):
    return tiny_inputs(tok, texts)


def _heads(name):
    return ["classifier", "lm" if name in ("tiny-gpt2", "tiny-llama") else "mlm"]


# -- last block at the head's positions only ---------------------------------------------------
# ptuning_v2 only where the family's attention takes key/value prefixes (no skipped cases).
@pytest.mark.parametrize(
    "name, method",
    [
        (n, m)
        for n in TINY
        for m in ("prompt_tuning", "spt", "lpt", "ptuning_v2")
        if not (m == "ptuning_v2" and n in NO_PREFIX)
    ],
)
def test_pruned_last_block_gives_the_full_logits(name, method):
    for head in _heads(name):
        model, tok = _build(name, method, head=head)
        model.eval()
        batch = _inputs(tok)
        with torch.no_grad():
            pruned = model(**batch)["logits"]
            model.prune_last_block = False
            full = model(**batch)["logits"]
        torch.testing.assert_close(pruned, full, atol=1e-6, rtol=1e-5)


def test_pruned_last_block_gradients_match():
    model, tok = _build("tiny-roberta", "spt", head="classifier")
    model.eval()  # no dropout: both passes compute the same function
    batch = {**_inputs(tok), "labels": torch.tensor([1, 0, 1])}
    grads = []
    for prune in (True, False):
        model.prune_last_block = prune
        model.zero_grad(set_to_none=True)
        model(**batch)["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for key in grads[0]:
        torch.testing.assert_close(grads[0][key], grads[1][key], atol=1e-6, rtol=1e-4)


def _logits_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out["logits"].detach(), grads


# -- linear layers on the real positions only ------------------------------------------------
@pytest.mark.parametrize("name", ["tiny-bert", "tiny-roberta"])
@pytest.mark.parametrize(
    "method,layers", [("prompt_tuning", None), ("spt", None), ("lpt", None), ("ptuning_v2", [1, 3])]
)
def test_packed_blocks_give_the_padded_logits_and_gradients(name, method, layers, monkeypatch):
    calls, grouped = [], []
    original, original_groups = packing.spread, packing.attend_groups
    monkeypatch.setattr(packing, "spread", lambda *a: calls.append(1) or original(*a))
    monkeypatch.setattr(
        packing, "attend_groups", lambda *a: grouped.append(1) or original_groups(*a)
    )
    texts = ("good " * 40, "bad", "fine , not more " * 4, "a truly great movie , i loved it")
    for head in ("classifier", "mlm"):
        model, tok = _build(name, method, head=head, layers=layers)
        model.eval()  # no dropout: both layouts compute the same function
        batch = {**_inputs(tok, texts), "labels": torch.tensor([1, 0, 1, 1])}
        results = []
        for pack in (True, False):
            model.backbone.pack_padding = pack
            results.append(_logits_and_grads(model, batch))
        torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=1e-5)
        assert results[0][1].keys() == results[1][1].keys()
        for key in results[0][1]:
            torch.testing.assert_close(results[0][1][key], results[1][1][key], atol=1e-6, rtol=1e-4)
    assert calls  # the packed path ran
    if method != "ptuning_v2":  # prefixes keep the padded layout for attention
        assert grouped  # ... with rows grouped by length for attention


# MPNet (relative position bias) and Llama (rotary positions, causal mask, grouped key/value
# heads): packed blocks and the pruned last block against the transformers modules.
@pytest.mark.parametrize(
    "name, method, layers",
    [
        (n, m, layers)
        for n in ("tiny-mpnet", "tiny-llama")
        for m, layers in (
            ("prompt_tuning", None),
            ("spt", None),
            ("lpt", None),
            ("spt_fixed", [1, 3]),
            ("ptuning_v2", [1, 3]),
        )
        if not (m == "ptuning_v2" and n in NO_PREFIX)
    ],
)
def test_packed_blocks_of_mpnet_and_llama_are_exact(name, method, layers, monkeypatch):
    calls, grouped = [], []
    original, original_groups = packing.spread, packing.attend_groups
    monkeypatch.setattr(packing, "spread", lambda *a: calls.append(1) or original(*a))
    monkeypatch.setattr(
        packing, "attend_groups", lambda *a: grouped.append(1) or original_groups(*a)
    )
    texts = ("good " * 40, "bad", "fine , not more " * 4, "a truly great movie , i loved it")
    for head in _heads(name):
        model, tok = _build(name, method, head=head, layers=layers)
        model.eval()  # no dropout: every path computes the same function
        batch = {**_inputs(tok, texts), "labels": torch.tensor([1, 0, 1, 1])}
        model.backbone.pack_padding, model.prune_last_block = False, False
        want = _logits_and_grads(model, batch)
        for pack, prune in ((True, True), (True, False), (False, True)):
            model.backbone.pack_padding, model.prune_last_block = pack, prune
            got = _logits_and_grads(model, batch)
            torch.testing.assert_close(got[0], want[0], atol=1e-6, rtol=1e-5)
            assert got[1].keys() == want[1].keys() and want[1]
            for key in want[1]:
                torch.testing.assert_close(got[1][key], want[1][key], atol=1e-6, rtol=1e-4)
    assert calls  # the packed path ran
    if method != "ptuning_v2":  # prefixes keep the padded layout for attention
        assert grouped  # ... with rows grouped by length for attention


def test_packed_llama_blocks_are_exact_with_left_padding():
    # The data layer pads on the right; left padding (no length groups, shifted rotary
    # positions of the real tokens) must still give the padded layout's numbers.
    model, tok = _build("tiny-llama", "lpt", head="lm")
    tok.padding_side = "left"
    model.eval()
    texts = ("good " * 40, "bad", "fine , not more " * 4)
    batch = dict(tok(list(texts), padding=True, return_tensors="pt"))
    batch["label_pos"] = torch.full((3,), batch["input_ids"].shape[1] - 1)
    batch["labels"] = torch.tensor([1, 0, 1])
    results = []
    for pack in (True, False):
        model.backbone.pack_padding = pack
        results.append(_logits_and_grads(model, batch))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=1e-5)
    for key in results[1][1]:
        torch.testing.assert_close(results[0][1][key], results[1][1][key], atol=1e-6, rtol=1e-4)


def test_mean_pooling_is_not_pruned_and_still_exact():
    model, tok = _build("tiny-bert", "lpt", head="classifier")
    model.head.pooling = "mean"
    model.eval()
    assert model.head.rows(_inputs(tok)["attention_mask"]) is None
    with torch.no_grad():
        out = model(**_inputs(tok))["logits"]
    assert out.shape == (3, 2)


def test_pool_bins_once_per_forward_equals_per_call():
    torch.manual_seed(0)
    x = torch.randn(3, 9, 5)
    mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5, [1] * 2 + [0] * 7])
    for mode in ("avg", "max"):
        assert torch.equal(
            pool_real_tokens(x, mask, 4, mode),
            pool_real_tokens(x, mask, 4, mode, pool_bins(mask, 4)),
        )


# -- frozen lower layers: eval mode and their cache ----------------------------------------------
@pytest.mark.parametrize(
    "method,layers,expected",
    [
        ("lpt", None, 2),
        ("spt_fixed", [1, 3], 1),
        ("fixed_layers", [3], 3),
        ("prompt_tuning", None, None),
        ("spt", None, 1),  # no input prompt by default: block 0 is frozen
        ("deep_prompt", None, None),
        ("finetune", None, None),
    ],
)
def test_cache_layer_is_the_first_prompt_layer_of_frozen_methods(method, layers, expected):
    model, _ = _build("tiny-bert", method, layers=layers)
    assert model.cache_layer == expected
    off, _ = _build("tiny-bert", method, layers=layers, frozen_eval=False)
    assert off.cache_layer is None


def test_frozen_eval_keeps_only_the_frozen_part_in_eval_mode():
    model, _ = _build("tiny-bert", "spt_fixed", layers=[2, 3])
    model.train()
    blocks = model.backbone.blocks()
    assert not any(m.training for b in blocks[:2] for m in b.modules())
    assert all(m.training for b in blocks[2:] for m in b.modules())
    assert not any(m.training for m in model.backbone.base.embeddings.modules())
    assert all(m.training for m in model.generators.modules())
    assert model.head is None or model.head.training
    model.eval()
    assert not any(m.training for m in model.modules())
    off, _ = _build("tiny-bert", "spt_fixed", layers=[2, 3], frozen_eval=False)
    off.train()
    assert all(m.training for m in off.modules())


@pytest.mark.parametrize(
    "name, method, layers",
    [
        (n, m, layers)
        for n in TINY
        for m, layers in (("lpt", None), ("spt_fixed", [2, 3]), ("ptuning_v2", [2, 3]))
        if not (m == "ptuning_v2" and n in NO_PREFIX)
    ],
)
def test_lower_states_resume_to_identical_logits(name, method, layers):
    for head in _heads(name):
        model, tok = _build(name, method, head=head, layers=layers)
        assert model.cache_layer is not None
        batch = _inputs(tok)
        model.eval()
        with torch.no_grad():
            plain = model(**batch)["logits"]
            lower = model.lower_states(
                batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
            )
            resumed = model(**batch, lower=lower)["logits"]
        assert not lower.requires_grad
        assert torch.equal(plain, resumed), (name, method, head)


def test_training_forward_with_cached_states_is_identical():
    # Train mode: the upper blocks' dropout draws the same random numbers either way, because
    # the frozen blocks (eval mode) draw none.
    model, tok = _build("tiny-bert", "spt_fixed", head="classifier", layers=[2, 3])
    model.train()
    batch = {**_inputs(tok), "labels": torch.tensor([1, 0, 1])}
    lower = model.lower_states(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    results = []
    for extra in ({}, {"lower": lower}):
        torch.manual_seed(5)
        model.zero_grad(set_to_none=True)
        out = model(**batch, **extra)
        out["loss"].backward()
        results.append(
            (out["logits"].detach(), [p.grad.clone() for p in model.weight_parameters()])
        )
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.equal(a, b)


def _features(tok, n=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    feats = []
    for i in range(n):
        length = int(torch.randint(4, 14, (1,), generator=gen))
        ids = [tok.cls_token_id] + torch.randint(1000, 2000, (length,), generator=gen).tolist()
        ids.append(tok.sep_token_id)
        feats.append(
            {
                "input_ids": ids,
                "attention_mask": [1] * len(ids),
                "token_type_ids": [0] * len(ids),
                "labels": i % 2,
                "mask_pos": 1,
            }
        )
    return feats


def test_cache_serves_batches_in_any_order_and_composition():
    model, tok = _build("tiny-bert", "lpt", head="classifier")
    model.eval()
    feats = _features(tok)
    cache = LowerStateCache(model, max_mb=64)
    first = BatchStream(feats, 4, seed=0, pad_token_id=0)
    other = BatchStream(feats, 5, seed=9, pad_token_id=0)  # other sizes, order, padding
    with torch.no_grad():
        for i in range(first.batches_per_epoch):
            cache.attach(first.batch(i))
        assert len(cache) == len(feats) and cache.misses == len(feats)
        for i in range(2 * other.batches_per_epoch):
            batch = other.batch(i)
            with_cache = cache.attach(batch)
            assert "lower" in with_cache
            plain = model(**batch)["logits"]
            cached = model(**with_cache)["logits"]
            torch.testing.assert_close(cached, plain, atol=1e-6, rtol=0)
    assert cache.misses == len(feats)  # every later row was a hit


def test_full_cache_falls_back_to_computing_the_rest():
    model, tok = _build("tiny-bert", "lpt", head="classifier")
    model.eval()
    feats = _features(tok)
    row_bytes = 4 * model.backbone.hidden_size * max(len(f["input_ids"]) for f in feats)
    cache = LowerStateCache(model, max_mb=3.5 * row_bytes / 2**20)  # room for ~3 rows
    stream = BatchStream(feats, 4, seed=0, pad_token_id=0)
    with torch.no_grad():
        for i in range(2 * stream.batches_per_epoch):
            batch = stream.batch(i)
            torch.testing.assert_close(
                model(**cache.attach(batch))["logits"], model(**batch)["logits"], atol=1e-6, rtol=0
            )
    assert 0 < len(cache) < len(feats) and cache.bytes <= cache.max_bytes


def test_cache_is_not_offered_without_frozen_lower_layers():
    cfg = OmegaConf.create({"cache_lower_layers": True, "cache_max_mb": 16})
    for method, overrides in (("prompt_tuning", {}), ("lpt", {"frozen_eval": False})):
        model, _ = _build("tiny-bert", method, **overrides)
        assert LowerStateCache.for_model(model, cfg) is None
    model, _ = _build("tiny-bert", "lpt")
    assert LowerStateCache.for_model(model, cfg) is not None
    cfg.cache_lower_layers = False
    assert LowerStateCache.for_model(model, cfg) is None


def _retrain(tmp_path, cache_on: bool, model=None, resume=False):
    if model is None:
        model, tok = _build("tiny-bert", "spt_fixed", head="mlm", layers=[2, 3])
    tok = model.tokenizer
    tcfg = trainer_cfg(
        batch_size=4,
        eval_batch_size=5,
        max_steps=9,
        eval_every=3,
        checkpoint_every=3,
        cache_lower_layers=cache_on,
        cache_max_mb=64,
    )
    torch.manual_seed(0)
    result = train(
        model,
        task=get_task("sst2"),
        train_features=_features(tok, 12, seed=0),
        dev_features=_features(tok, 7, seed=1),
        tcfg=tcfg,
        seed=3,
        pad_token_id=0,
        logger=RunLogger(tmp_path),
        phase="retrain",
        checkpoint_path=tmp_path / "ck.pt",
        progress=False,
        resume=resume,
    )
    return result, trainable_state(model)


def test_retrain_with_and_without_the_cache_gives_the_same_run(tmp_path):
    with_cache, state_a = _retrain(tmp_path / "a", True)
    without, state_b = _retrain(tmp_path / "b", False)
    assert with_cache.best_dev == without.best_dev and with_cache.best_step == without.best_step
    assert with_cache.last_dev == without.last_dev
    assert state_a.keys() == state_b.keys()
    for key in state_a:  # float noise only: states cached from other batch compositions
        torch.testing.assert_close(state_a[key], state_b[key], atol=1e-5, rtol=1e-4)


def test_cached_states_do_not_depend_on_the_batch_they_came_in():
    model, tok = _build("tiny-bert", "lpt", head="classifier")
    model.eval()
    feats = _features(tok)
    caches = []
    for size, seed in ((4, 0), (5, 9)):
        cache = LowerStateCache(model, max_mb=64)
        stream = BatchStream(feats, size, seed=seed, pad_token_id=0)
        with torch.no_grad():
            for i in range(stream.batches_per_epoch):
                cache.attach(stream.batch(i))
        caches.append(cache.store.states)
    assert caches[0].keys() == caches[1].keys()
    assert all(torch.equal(caches[0][k], caches[1][k]) for k in caches[0])


class _Killed(Exception):
    pass


def test_resume_with_the_cache_continues_bit_exactly(tmp_path):
    # The cache is rebuilt after a resume, from other batches: it must hold the same states.
    _, full = _retrain(tmp_path / "full", True)
    model, _ = _build("tiny-bert", "spt_fixed", head="mlm", layers=[2, 3])
    original, calls = model.forward, {"n": 0}

    def dies(*a, **k):
        calls["n"] += model.training
        if calls["n"] > 7:  # during step 8, after the checkpoint at step 6
            raise _Killed
        return original(*a, **k)

    model.forward = dies
    with pytest.raises(_Killed):
        _retrain(tmp_path / "part", True, model=model)
    model, _ = _build("tiny-bert", "spt_fixed", head="mlm", layers=[2, 3])
    result, resumed = _retrain(tmp_path / "part", True, model=model, resume=True)
    assert result.resumed_from == 6
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)


# -- second-order step -------------------------------------------------------------------------
def test_finite_difference_passes_see_the_same_dropout_masks():
    # At w+ = w- the two gate gradients must agree exactly, dropout or not: their gap is
    # divided by 2R, so mask noise would otherwise pose as curvature.
    torch.manual_seed(0)
    model = FakeGatedModel()
    model.drop.p = 0.5
    model.train()
    scfg = search_cfg(order="second", alpha_lr=0.1, xi=0.05)
    arch = Architect(model, scfg, weight_lr=0.05)
    batch = collate(fake_features(8, seed=1), 0)
    weights = {n: p.detach() for n, p in arch._weights().items()}
    g_plus, g_minus = arch._gate_grads_at(weights, dict(weights), [batch])
    assert all(torch.equal(a, b) for a, b in zip(g_plus, g_minus))
    # Different random states would have given different gradients here.
    other = torch.autograd.grad(arch._loss(weights, batch), arch.gates)
    assert not all(torch.equal(a, b) for a, b in zip(g_plus, other))


# -- dropout -----------------------------------------------------------------------------------
def test_fast_dropout_keeps_one_minus_p_and_scales():
    torch.manual_seed(0)
    drop = fast.FastDropout(0.1)
    x = torch.rand(1000, 1000) + 1.0
    x.requires_grad_(True)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 3e-3
    torch.testing.assert_close(y[kept], x[kept].detach() / 0.9)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.9)
    drop.eval()
    assert drop(x) is x


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_is_bernoulli_one_minus_p_at_every_position(p):
    torch.manual_seed(0)
    like = torch.empty(4000, 1001)  # not a multiple of 4: the last int64 draw is cut
    mask = fast.keep_mask(like, p)
    assert mask.shape == like.shape and set(mask.unique().tolist()) <= {0, 1}
    # Each int64 draw feeds four positions; every one of the four must keep at 1 - p
    # (the top 16-bit chunk of a non-negative int64 has only 15 random bits).
    flat = mask.flatten()[: 4000 * 1000].view(-1, 4).double()
    sigma = (p * (1 - p) / flat.shape[0]) ** 0.5
    for column in flat.T:
        assert abs(column.mean().item() - (1 - p)) < 5 * sigma
    # Neighbours are independent: P(both kept) = (1 - p)^2.
    both = (flat[:, 0] * flat[:, 1]).mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * sigma
    torch.manual_seed(0)
    assert torch.equal(fast.keep_mask(like, p), mask)  # deterministic for a seed


@pytest.mark.parametrize("masked", [False, True])
def test_dropout_attention_matches_its_autograd_reference(masked):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 4, dtype=torch.double, requires_grad=True) for _ in range(3))
    mask = None
    if masked:
        mask = torch.ones(2, 1, 7, 7, dtype=torch.bool)
        mask[1, :, :, 5:] = False  # padding of the second row
    p, scale = 0.3, 0.5
    torch.manual_seed(1)
    out = fast._DropoutAttention.apply(q, k, v, mask, p, scale)
    scores = (q * scale) @ k.transpose(-1, -2)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = scores.softmax(-1)
    torch.manual_seed(1)
    keep = fast.keep_mask(probs, p)  # the same draw as inside the function
    ref = (probs * keep / (1 - p)) @ v
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def _unfused_dropout_attention(q, k, v, p, scale, grad):
    """The attention step by step as it ran before its passes were fused: each product in a
    new (strided) tensor, matmul copying the strided operands itself."""
    torch.manual_seed(1)
    probs = torch.softmax(torch.matmul(q * scale, k.transpose(-1, -2)), -1)
    keep = fast.keep_mask(probs, p)
    out = torch.matmul(probs * keep, v).mul_(1.0 / (1.0 - p)).transpose(1, 2).contiguous()
    g = grad.transpose(1, 2) * (1.0 / (1.0 - p))
    dv = torch.matmul((probs * keep).transpose(-1, -2), g)
    dprobs = torch.matmul(g, v.transpose(-1, -2)).mul_(keep)
    dscores = torch._softmax_backward_data(dprobs, probs, -1, probs.dtype)
    dq = torch.matmul(dscores, k).mul_(scale)
    dk = torch.matmul(dscores.transpose(-1, -2), q).mul_(scale)
    return out, (dq, dk, dv)


@pytest.mark.parametrize("queries", [9, 1])  # every position; the pruned last block's one
def test_dropout_attention_gives_the_bits_of_its_unfused_passes(queries):
    # q, k, v strided as a block hands them over ([B, T, H, D] transposed to [B, H, T, D]).
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, queries, 4, 8, generator=gen).transpose(1, 2).requires_grad_()
    k, v = (torch.randn(3, 9, 4, 8, generator=gen).transpose(1, 2) for _ in range(2))
    k.requires_grad_()
    v.requires_grad_()
    grad = torch.randn(3, queries, 4, 8, generator=gen)
    torch.manual_seed(1)
    out = fast._DropoutAttention.apply(q, k, v, None, 0.1, 8**-0.5).transpose(1, 2)
    assert out.is_contiguous()  # the caller's .contiguous() copies nothing
    got = torch.autograd.grad(out, (q, k, v), grad)
    with torch.no_grad():
        want_out, want = _unfused_dropout_attention(q, k, v, 0.1, 8**-0.5, grad)
    assert torch.equal(out, want_out)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-roberta", "tiny-gpt2", "tiny-llama"])
def test_installed_dropout_leaves_eval_outputs_bit_identical(name):
    hf, tok = load_backbone(model_config(name))
    hf.eval()
    enc = dict(tok(["a truly great movie", "bad"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        before = hf.base_model(**enc).last_hidden_state
        fast.install(hf)
        after = hf.base_model(**enc).last_hidden_state
    assert hf.config._attn_implementation == fast.ATTN_NAME
    assert not any(type(m) is torch.nn.Dropout for m in hf.modules())
    assert torch.equal(before, after)


def test_training_with_fast_dropout_learns():
    model, tok = _build("tiny-bert", "lpt", head="classifier")
    assert model.backbone.config._attn_implementation == fast.ATTN_NAME
    model.train()
    texts = ("good " * 40, "bad", "fine , not more " * 4)  # packed, grouped by length
    batch = {**_inputs(tok, texts), "labels": torch.tensor([1, 0, 1])}
    opt = torch.optim.AdamW(model.weight_parameters(), lr=0.05)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = model(**batch)["loss"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and min(losses[-3:]) < losses[0]


def test_states_on_disk_are_shared_by_later_models_and_give_the_same_logits(tmp_path):
    from spt_cli.model.configs import model_config as cfg_of
    from spt_cli.train.cache import LowerStateStores, backbone_folder

    model, tok = _build("tiny-bert", "lpt", head="classifier")
    model.eval()
    folder = backbone_folder(tmp_path, cfg_of("tiny-bert"), model.backbone)
    feats = _features(tok)
    batch = BatchStream(feats, 6, seed=0, pad_token_id=0).batch(0)
    first = LowerStateCache(model, store=LowerStateStores(folder).for_layer(2, 64))
    with torch.no_grad():
        computed = model(**first.attach(batch))["logits"]
    assert first.misses == 6 and len(list(folder.rglob("*.pt"))) == 6

    # A later model over the same backbone (another process: a new store) reads the files.
    other, _ = _build("tiny-bert", "lpt", head="classifier")
    other.load_state_dict(model.state_dict())
    other.eval()
    other.lower_states = None  # would fail if called: every state must come from disk
    later = LowerStateCache(other, store=LowerStateStores(folder).for_layer(2, 64))
    with torch.no_grad():
        loaded = other(**later.attach(batch))["logits"]
    assert later.misses == 0 and torch.equal(loaded, computed)


def test_backbone_folder_names_weights_and_threads(tmp_path):
    from spt_cli.model.configs import model_config as cfg_of
    from spt_cli.train.cache import backbone_folder

    model, _ = _build("tiny-bert", "lpt")
    base = backbone_folder(tmp_path, cfg_of("tiny-bert"), model.backbone)
    assert base == backbone_folder(tmp_path, cfg_of("tiny-bert"), model.backbone)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if before != 1 else 2)
        assert backbone_folder(tmp_path, cfg_of("tiny-bert"), model.backbone) != base
    finally:
        torch.set_num_threads(before)
    with torch.no_grad():
        model.backbone.word_embeddings().weight[0, 0] += 1.0
    assert backbone_folder(tmp_path, cfg_of("tiny-bert"), model.backbone) != base
