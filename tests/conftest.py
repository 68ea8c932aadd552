"""Shared fixtures: a tiny gated model with the GatedPromptModel contract (no transformers),
the shared data mirror, and an isolated working directory for CLI runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from spt_cli.config import CONFIG_PATH_ENV
from spt_cli.model.gates import binary_entropy, budget_shift

REPO = Path(__file__).resolve().parents[1]
# The random-weight test models (model=tiny-bert, ...) live in tests/conf/model/, outside the
# user-facing conf/model/: every test and every spt-run it starts finds them through
# $SPT_CONFIG_PATH (spt_cli.config.CONFIG_PATH_ENV), set here before any config is read.
TEST_CONF = REPO / "tests" / "conf"
os.environ[CONFIG_PATH_ENV] = str(TEST_CONF)  # hermetic: a user's own folders are not seen

SPT_RUN = str(Path(sys.executable).with_name("spt-run"))
TINY = ["model=tiny-bert", "dataset=rte", "shots=16", "trainer.eval_every=2"]


def spt_run(args, cwd, env_extra=None, check=True) -> subprocess.CompletedProcess:
    """Run the console script offline with W&B off (unless ``env_extra`` says otherwise)."""
    env = {**os.environ, "WANDB_MODE": "disabled", **(env_extra or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([SPT_RUN, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"spt-run {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


def run_dirs(root: Path, stage: str) -> list[Path]:
    """Run directories of ``stage`` under ``root/outputs``, oldest first."""
    return sorted(p.parent for p in root.glob(f"outputs/{stage}/**/.hydra"))


def shared_data() -> Path | None:
    """The benchmark mirror: $SPT_DATA_DIR, else ../shared/data beside the checkout."""
    env = os.environ.get("SPT_DATA_DIR")
    for p in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if p.is_dir():
            return p
    return None


class FakeGatedModel(nn.Module):
    """Bag-of-embeddings classifier with SPT-style gates over 3 candidate 'layers'.

    Small and fast, but with the parts the loop and the architect rely on: separate gate and
    weight parameters, dropout (so RNG state matters), a differentiable gate mixture.
    """

    def __init__(self, vocab: int = 64, dim: int = 8, num_labels: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.emb.weight.requires_grad_(False)  # the "frozen backbone"
        self.gens = nn.ModuleList(nn.Linear(dim, dim) for _ in range(3))
        self.alpha = nn.Parameter(torch.zeros(3))
        self.head = nn.Linear(dim, num_labels)
        self.drop = nn.Dropout(0.1)
        self.candidate_layers = [1, 2, 3]
        self.num_layers = 4
        self.tau = 1.0
        self.head_name = "classifier"
        self.budget = None
        self.fixed = None
        self.mix_observer = None

    def gate_parameters(self):
        return [self.alpha]

    def backbone_parameters(self):
        return []

    cache_layer = None  # the bag of embeddings has no frozen lower blocks to cache

    def lower_states(self, input_ids, attention_mask, token_type_ids=None):
        raise ValueError("FakeGatedModel has no frozen lower layers")

    def weight_parameters(self):
        return [p for n, p in self.named_parameters() if p.requires_grad and n != "alpha"]

    def gate_values(self) -> torch.Tensor:
        if self.fixed is not None:
            return self.fixed
        shift = 0.0 if self.budget is None else budget_shift(self.alpha, self.tau, self.budget)
        return torch.sigmoid((self.alpha - shift) / self.tau)

    def set_gate_budget(self, budget):
        self.budget = budget

    def override_gates(self, values):
        self.fixed = values

    def gate_probs(self) -> torch.Tensor:
        return self.gate_values().detach()

    def gate_entropy(self) -> float:
        return float(binary_entropy(self.gate_probs()))

    def set_tau(self, tau: float) -> None:
        self.tau = float(tau)

    def forward(self, input_ids, attention_mask, labels=None, **_):
        m = attention_mask.unsqueeze(-1).float()
        h = (self.emb(input_ids) * m).sum(1) / m.sum(1).clamp(min=1)
        a = self.gate_values()
        for i, g in enumerate(self.gens):
            new = torch.tanh(g(self.drop(h)))
            if self.mix_observer is not None:
                self.mix_observer(self.candidate_layers[i], a[i], new, h)
            h = a[i] * new + (1 - a[i]) * h
        logits = self.head(h)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def search_cfg(**overrides):
    """A ``search`` config: the shipped defaults of conf/config.yaml with ``overrides``."""
    from omegaconf import OmegaConf

    from spt_cli.config import primary_defaults

    return OmegaConf.merge(primary_defaults("search"), overrides)


def fake_features(n: int = 40, seed: int = 0) -> list[dict]:
    """Token-id rows whose label is decided by the presence of token 5 (learnable)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = int(torch.randint(3, 9, (1,), generator=g))
        ids = torch.randint(6, 64, (length,), generator=g).tolist()
        label = i % 2
        if label:
            ids[int(torch.randint(0, length, (1,), generator=g))] = 5
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "labels": label})
    return rows


@pytest.fixture
def fake_model() -> FakeGatedModel:
    torch.manual_seed(0)
    return FakeGatedModel()


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in an empty working directory (outputs/ lands there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-tensor tests: avoids OpenMP spin-waits when other
    jobs share the two cores (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trainer_cfg(**overrides):
    """A small CPU ``trainer`` config for loop tests (12 steps of 8, dev every 4), over the
    shipped defaults of conf/trainer/default.yaml."""
    from omegaconf import OmegaConf

    from spt_cli.config import read_config_file

    small = dict(
        batch_size=8,
        eval_batch_size=16,
        grad_accum=1,
        lr=0.05,
        weight_decay=0.0,
        warmup_ratio=0.1,
        max_grad_norm=1.0,
        max_steps=12,
        epochs=None,
        eval_every=4,
        patience=0,
        checkpoint_every=4,
        device="cpu",
        precision="fp32",
    )
    return OmegaConf.merge(read_config_file("trainer", "default"), small, overrides)
