"""The layer loop against references: the backbone's own forward, an LPT reference written
here, PEFT's prompt tuning, and the real MiniLM offline."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from spt_cli.model import load_backbone
from spt_cli.model.configs import model_config
from tiny import TINY, build_tiny

DEBERTA_V1 = {
    "name": "tiny-deberta-v1",
    "family": "deberta",
    "path": None,
    "has_lm_head": True,
    "seed": 0,
    "from_config": {
        "model_type": "deberta",
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 37,
        "relative_attention": True,
        "pos_att_type": ["c2p", "p2c"],
        "type_vocab_size": 0,
        "initializer_range": 0.2,
    },
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model_cfg(name):
    return DEBERTA_V1 if name == "tiny-deberta-v1" else model_config(name)


def _batch(tok, pair: bool = False) -> dict[str, torch.Tensor]:
    texts = ["a truly great movie , i loved every minute of it", "bad"]
    enc = tok(texts, ["yes indeed", "no"] if pair else None, padding=True, return_tensors="pt")
    assert enc["attention_mask"][1].sum() < enc["attention_mask"].shape[1]  # really padded
    return dict(enc)


def _positions(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask_pos, label_pos): a real token inside each row, and each row's last real token."""
    last = mask.sum(1) - 1
    return torch.minimum(last, torch.full_like(last, 2)), last


def _build(name, method, backbone=None, **method_overrides):
    hf, tok = backbone or load_backbone(_model_cfg(name))
    hf.eval()
    model, _, _ = build_tiny(
        name, method, model_cfg=_model_cfg(name), backbone=(hf, tok), **method_overrides
    )
    return model.eval(), hf, tok


@pytest.mark.parametrize("name", [*TINY, "tiny-deberta-v1"])
@pytest.mark.parametrize("no_prompt", ["p0", "no_layers"])
def test_no_prompt_equals_backbone_forward(name, no_prompt):
    if no_prompt == "p0":
        model, hf, tok = _build(name, "spt", num_tokens=0)
    else:
        model, hf, tok = _build(name, "spt_fixed", layers=[])
    assert model.candidate_layers == [] and model.input_prompt is None
    enc = _batch(tok, pair=name == "tiny-bert")
    mask = enc["attention_mask"]
    real = mask.bool()
    with torch.no_grad():
        ours = model.encode(enc["input_ids"], mask, enc.get("token_type_ids"))
        ref = hf.base_model(**enc).last_hidden_state
        torch.testing.assert_close(ours[real], ref[real], atol=1e-5, rtol=0)
        # The pretrained LM head's logits too, at the head's position.
        mask_pos, label_pos = _positions(mask)
        out = model(**enc, mask_pos=mask_pos, label_pos=label_pos)
        pos = label_pos if model.is_decoder else mask_pos
        full = hf(**enc).logits[torch.arange(2), pos][:, model.label_word_ids]
        torch.testing.assert_close(out["logits"], full, atol=1e-5, rtol=0)


def _additive(mask2d: torch.Tensor) -> torch.Tensor:
    return (1.0 - mask2d[:, None, None, :].float()) * torch.finfo(torch.float32).min


def test_lpt_equals_independent_reference_on_roberta():
    layer, p = 2, 10
    model, hf, tok = _build("tiny-roberta", "lpt", layers=[layer], num_tokens=p)
    torch.manual_seed(0)
    for param in model.generators.parameters():  # make the generator matter
        param.data.normal_(0, 0.5)
    enc = _batch(tok)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    mask_pos, _ = _positions(mask)
    blocks = hf.roberta.encoder.layer
    gen = model.generators[str(layer)]
    with torch.no_grad():
        h = hf.roberta.embeddings(input_ids=ids)
        for block in blocks[:layer]:
            h = block(h, _additive(mask))
        prompts = []
        for row in range(ids.shape[0]):  # the pooled generator, one unpadded row at a time
            z = gen.down(h[row, : int(mask[row].sum())])
            z = F.adaptive_avg_pool1d(z.T.unsqueeze(0), p)[0].T
            prompts.append(gen.up(F.relu(z)))
        h = torch.cat([torch.stack(prompts), h], 1)
        ext = torch.cat([torch.ones(ids.shape[0], p, dtype=mask.dtype), mask], 1)
        for block in blocks[layer:]:
            h = block(h, _additive(ext))
        states = h[:, p:][torch.arange(ids.shape[0]), mask_pos]
        ref = hf.lm_head(states)[:, model.label_word_ids]
        ours = model(input_ids=ids, attention_mask=mask, mask_pos=mask_pos)["logits"]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-roberta"])
def test_prompt_tuning_equals_peft(name):
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    p = 10
    model, hf, tok = _build(name, "prompt_tuning", num_tokens=p)
    torch.manual_seed(0)
    model.input_prompt.weight.data.normal_(0, 1.0)
    # PEFT wraps a sequence classifier that shares our backbone's encoder weights.
    seq = AutoModelForSequenceClassification.from_config(hf.config)
    seq.base_model.load_state_dict(hf.base_model.state_dict(), strict=False)
    peft = get_peft_model(
        copy.deepcopy(seq),
        PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=p),
    ).eval()
    peft.prompt_encoder["default"].embedding.weight.data.copy_(model.input_prompt.weight)
    enc = _batch(tok, pair=name == "tiny-bert")
    real = enc["attention_mask"].bool()
    with torch.no_grad():
        theirs = peft(**enc, output_hidden_states=True).hidden_states[-1][:, p:]
        ours = model.encode(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=0)


def test_real_minilm_offline_forward_backward():
    hf, tok = load_backbone(model_config("minilm"))
    assert hf.config.num_hidden_layers == 6 and hf.config.hidden_size == 384
    # No prompt: the loop equals the checkpoint's own forward.
    base, _, _ = _build("minilm", "spt", backbone=(hf, tok), num_tokens=0)
    enc = _batch(tok, pair=True)
    real = enc["attention_mask"].bool()
    with torch.no_grad():
        ours = base.encode(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        torch.testing.assert_close(ours[real], hf(**enc).last_hidden_state[real], atol=1e-5, rtol=0)
    model, _, _ = _build("minilm", "spt", backbone=(hf, tok))
    model.train()
    assert model.head_name == "classifier"  # MiniLM has no pretrained MLM head
    assert model.candidate_layers == [1, 2, 3, 4, 5]
    out = model(**enc, labels=torch.tensor([1, 0]))
    out["loss"].backward()
    assert model.gates.alpha.grad is not None and model.gates.alpha.grad.abs().sum() > 0
    assert all(p.grad is None for p in hf.parameters())
