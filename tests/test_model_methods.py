"""Every method on every family, method/layer resolution, errors, parameter table, artefacts."""

from __future__ import annotations

import functools

import pytest
import torch

from spt_cli.errors import ConfigError
from spt_cli.model import (
    build_model,
    format_parameter_table,
    load_artifact,
    load_backbone,
    resolve_method,
    save_artifact,
)
from spt_cli.model.configs import head_config, method_config, model_config
from spt_cli.model.heads import TaskInfo
from tiny import NO_PREFIX, TASK, TINY, build_tiny, tiny_inputs

STSB = TaskInfo("stsb", 1, None, True, None)
METHODS = [
    "spt",
    "spt_fixed",
    "prompt_tuning",
    "deep_prompt",
    "ptuning_v2",
    "lpt",
    "fixed_layers",
    "random_layers",
    "finetune",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def _tokenizer(name):
    return load_backbone(model_config(name))[1]


def _build(name, method, head="auto", task=TASK, layers=None, **overrides):
    if layers is None and method in ("spt_fixed", "fixed_layers"):
        layers = [1, 3]
    return build_tiny(name, method, head, task, layers, **overrides)[0]


def _inputs(tok, texts=("a truly great movie , i loved it", "bad")):
    return tiny_inputs(tok, texts)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", TINY)
def test_every_method_runs_forward_backward(name, method):
    if method == "ptuning_v2" and name in NO_PREFIX:
        with pytest.raises(ConfigError, match="not supported for the"):
            _build(name, method)
        return
    model = _build(name, method)
    tok = _tokenizer(name)
    out = model(**_inputs(tok), labels=torch.tensor([1, 0]))
    assert out["logits"].shape == (2, 2) and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in model.weight_parameters() + model.gate_parameters()]
    assert grads and all(g is not None for g in grads)
    assert model.head_name == ("lm" if model.is_decoder else "mlm")


def test_regression_uses_one_output_and_mse():
    model = _build("tiny-bert", "lpt", task=STSB)
    assert model.head_name == "classifier"
    out = model(**_inputs(_tokenizer("tiny-bert")), labels=torch.tensor([0.5, 4.0]))
    assert out["logits"].shape == (2,)
    out["loss"].backward()


def test_mlm_full_vocab_loss_and_mean_pooling():
    model = build_model(
        model_config("tiny-roberta"),
        method_config("lpt"),
        head_config("mlm", full_vocab=True),
        TASK,
    )
    out = model(**_inputs(_tokenizer("tiny-roberta")), labels=torch.tensor([1, 0]))
    assert out["loss"] > 0 and out["logits"].shape == (2, 2)
    model = _build("tiny-gpt2", "lpt", head="classifier")
    model.head.pooling = "mean"
    assert model(**_inputs(_tokenizer("tiny-gpt2")))["logits"].shape == (2, 2)


@pytest.mark.parametrize(
    "method,expected",
    [
        ("spt", [1, 2, 3]),
        ("lpt", [2]),
        ("deep_prompt", [1, 2, 3]),
        ("ptuning_v2", [0, 1, 2, 3]),
        ("random_layers", None),
        ("prompt_tuning", []),
        ("finetune", []),
    ],
)
def test_default_layers_per_method(method, expected):
    spec = resolve_method(method_config(method), 4, "tiny")
    if expected is None:  # one seeded draw from 1..L-1, reproducible
        assert len(spec.layers) == 1 and 1 <= spec.layers[0] <= 3
        assert resolve_method(method_config(method), 4, "tiny").layers == spec.layers
        many = resolve_method(method_config(method, num_random_layers=3), 4, "tiny")
        assert many.layers == [1, 2, 3]
    else:
        assert spec.layers == expected
    if method == "finetune":
        assert spec.train_backbone and spec.num_tokens == 0


def test_every_method_yaml_has_the_same_schema():
    keys = {m: set(method_config(m)) for m in METHODS}
    assert all(k == keys["spt"] for k in keys.values()), keys


@pytest.mark.parametrize(
    "build,message",
    [
        (
            lambda: resolve_method(method_config("fixed_layers", layers=[99]), 6, "minilm"),
            r"layers=\[99\] is out of range for minilm \(blocks 0..5\)",
        ),
        (lambda: resolve_method(method_config("spt_fixed"), 6, "minilm"), "needs its prompt"),
        (lambda: resolve_method(method_config("spt", gate="fuzzy"), 6, "m"), "method.gate"),
        # The same rows of config.RULES as the preflight's, for a method built from Python.
        (
            lambda: resolve_method(method_config("spt", tau=0), 6, "m"),
            "method.tau must be a positive number, got 0; e.g. method.tau=1.0",
        ),
        (
            lambda: build_model(
                model_config("tiny-bert"),
                method_config("spt"),
                {**head_config(), "name": "linear"},
                TASK,
            ),
            r"head.name=linear is not known",
        ),
        (
            lambda: resolve_method(method_config("prompt_tuning", layers=[2]), 6, "m"),
            "no per-layer prompts",
        ),
        (lambda: _build("tiny-mpnet", "ptuning_v2"), "ptuning_v2 .*mpnet"),
        (lambda: _build("tiny-bert", "lpt", head="lm"), "use head=mlm"),
        (lambda: _build("tiny-bert", "lpt", head="mlm", task=STSB), "needs label words"),
    ],
)
def test_config_errors_are_one_line_with_a_fix(build, message):
    with pytest.raises(ConfigError, match=message) as err:
        build()
    assert "\n" not in str(err.value)


def test_minilm_mlm_head_is_refused():
    hf, tok = load_backbone(model_config("minilm"))
    with pytest.raises(ConfigError, match="has_lm_head: false"):
        build_model(
            model_config("minilm"),
            method_config("lpt"),
            head_config("mlm"),
            TASK,
            backbone=hf,
            tokenizer=tok,
        )


def test_prompt_positions_beyond_max_positions():
    hf, tok = load_backbone(model_config("tiny-roberta"))  # 514 - 2 = 512 positions
    args = (model_config("tiny-roberta"), method_config("prompt_tuning"), head_config(), TASK)
    with pytest.raises(ConfigError, match="num_tokens=10 \\+ sequence length 510 exceeds"):
        build_model(*args, backbone=hf, tokenizer=tok, max_seq_length=510)
    build_model(*args, backbone=hf, tokenizer=tok, max_seq_length=502)
    # A late prompt takes no position ids on an absolute-position model.
    late = (model_config("tiny-roberta"), method_config("lpt"), head_config(), TASK)
    build_model(*late, backbone=hf, tokenizer=tok, max_seq_length=512)


def test_parameter_table_counts_honestly():
    model = _build("tiny-bert", "spt", head="classifier", input_prompt="static", gate="soft")
    table = model.parameter_table()
    d, p, m = 32, 10, 64
    gen = d * m + m + m * d + d
    expected = {
        "input prompt (block 0, static)": p * d,
        "generator block 1 (pooled)": gen,
        "gates (soft, 3 layers)": 3,
        "head (classifier)": d * 2 + 2,
    }
    rows = {r["module"]: r["trainable"] for r in table["modules"]}
    assert {k: rows[k] for k in expected} == expected
    assert table["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert table["backbone"] == sum(p.numel() for p in model.backbone.parameters())
    assert table["percent"] == pytest.approx(100 * table["trainable"] / table["backbone"])
    text = format_parameter_table(table)
    assert "generator block 3 (pooled)" in text and "total trainable" in text
    finetune = _build("tiny-bert", "finetune", head="classifier").parameter_table()
    assert finetune["trainable"] == finetune["backbone"] + d * 2 + 2


@pytest.mark.parametrize(
    "name,method,head",
    [("tiny-roberta", "spt", "auto"), ("tiny-gpt2", "ptuning_v2", "classifier")],
)
def test_artifact_roundtrip_reproduces_logits(tmp_path, name, method, head):
    torch.manual_seed(1)
    model = _build(name, method, head=head).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)  # "trained" state
    enc = _inputs(_tokenizer(name))
    with torch.no_grad():
        before = model(**enc)["logits"]
    save_artifact(model, tmp_path / "art", {"task": "sst2", "seed": 13})
    files = sorted(p.name for p in (tmp_path / "art").iterdir())
    assert files == ["artifact.json", "prompt_state.safetensors"]
    loaded = load_artifact(tmp_path / "art")
    assert loaded.candidate_layers == model.candidate_layers
    assert loaded.head_name == model.head_name
    with torch.no_grad():
        after = loaded(**enc)["logits"]
    assert torch.equal(before, after)
    # A different backbone is refused with a clear message.
    with pytest.raises(ConfigError, match="load it with its own backbone"):
        load_artifact(tmp_path / "art", *load_backbone(model_config("tiny-llama")))


def test_build_from_whole_config_with_a_data_layer_task():
    from omegaconf import OmegaConf

    from spt_cli.data.tasks import get_task
    from spt_cli.model.heads import _label_word_ids

    cfg = OmegaConf.create(
        {
            "model": model_config("tiny-roberta"),
            "method": method_config("fixed_layers"),
            "head": head_config(),
            "layers": [1, 2],
            "data": {"max_seq_length": 128},
        }
    )
    task = get_task("rte")
    model = build_model(cfg, task)
    assert model.candidate_layers == [1, 2] and model.head_name == "mlm"
    assert model.task.num_labels == 2 and model.task.label_words == list(task.verbalizer)
    ids = _label_word_ids(_tokenizer("tiny-roberta"), task.verbalizer)
    assert model.label_word_ids.tolist() == ids
