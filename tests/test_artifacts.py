"""Artefacts written before the model and backbone code moved (commit d9bf930) still load and
give the logits that commit computed; a fine-tuned model keeps its tensor names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spt_cli.model import build_model, load_artifact, load_backbone
from spt_cli.model.configs import head_config, method_config, model_config
from tiny import TASK

OLD = Path(__file__).parent / "fixtures" / "artifacts_d9bf930"
CASES = sorted(p.name for p in OLD.iterdir() if (p / "artifact").is_dir())


def test_fixture_folder_holds_every_case():
    assert len(CASES) == 5


@pytest.mark.parametrize("name", CASES)
def test_old_artifact_loads_and_gives_the_same_logits(name):
    expected = torch.load(OLD / name / "expected.pt", weights_only=False)
    model = load_artifact(OLD / name / "artifact")
    with torch.no_grad():
        logits = model(**expected["inputs"])["logits"]
    torch.testing.assert_close(logits, expected["logits"], rtol=1e-5, atol=1e-6)


def test_finetuned_state_keeps_its_tensor_names():
    cfg = model_config("tiny-bert")
    hf, tok = load_backbone(cfg)
    model = build_model(
        cfg, method_config("finetune"), head_config("classifier"), TASK, backbone=hf, tokenizer=tok
    )
    old = (OLD / "finetune_state_keys.txt").read_text().split()
    assert list(model.state_dict()) == old
