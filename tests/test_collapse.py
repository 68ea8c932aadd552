"""No silent collapse: single-class predictions reported, a fallback rule when the gates do
not separate, and the class-balanced D_alpha loss."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from table_runs import results_data, write_run

from conftest import FakeGatedModel, fake_features, search_cfg, trainer_cfg
from spt_cli.data import get_task
from spt_cli.errors import ConfigError
from spt_cli.metrics import SINGLE_CLASS, single_class
from spt_cli.runlog import RunLogger
from spt_cli.search.balance import balanced_loss, class_weights
from spt_cli.search.bilevel import alpha_class_weights, run_search
from spt_cli.search.select import choose_layers, last_k
from spt_cli.stages.results import degenerate, report
from spt_cli.tables import build_table, collect_runs, to_latex, to_markdown
from spt_cli.train.evaluate import evaluate

TASK = get_task("cr")


# -- single-class predictions ------------------------------------------------------------------
class _Constant(torch.nn.Module):
    """Always answers class ``c`` (a collapsed model)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c = c

    def forward(self, input_ids, attention_mask=None, **_):
        logits = torch.zeros(input_ids.shape[0], 2)
        logits[:, self.c] = 1.0
        return {"logits": logits}


def test_evaluate_marks_a_model_that_predicts_one_class():
    feats = fake_features(8)
    kw = dict(batch_size=4, pad_token_id=0, device=torch.device("cpu"))
    metrics = evaluate(_Constant(1), feats, TASK, **kw)
    assert metrics[SINGLE_CLASS] == 1.0 and metrics["accuracy"] == 0.5
    assert single_class([0, 1, 1]) is None and single_class([2, 2]) == 2


def test_results_field_and_result_line(capsys):
    found, clean = degenerate(
        TASK, {"dev": {"accuracy": 0.79, SINGLE_CLASS: 1.0}, "test": {"accuracy": 0.8}}
    )
    assert found == {"dev": "all 'positive'"}
    assert clean == {"dev": {"accuracy": 0.79}, "test": {"accuracy": 0.8}}
    found, _ = degenerate(TASK, {"test": {"accuracy": 0.5, SINGLE_CLASS + "_mm": 0.0}})
    assert found == {"test_mm": "all 'negative'"}
    results = {"task": "cr", "method": "spt", "seed": 13, "main_metric": "accuracy",
               "dev": {"accuracy": 0.79}, "test": {"accuracy": 0.5},
               "majority_baseline": {"test": {"accuracy": 0.5}},
               "degenerate": {"dev": "all 'positive'", "test": "all 'positive'"}}  # fmt: skip
    report(results)
    line = capsys.readouterr().out
    assert "SINGLE CLASS predicted: dev all 'positive', test all 'positive'" in line


def test_table_cell_is_marked(tmp_path):
    bad = results_data(task="cr", method="spt", seed=13, value=0.5)
    bad["degenerate"] = {"test": "all 'positive'"}
    write_run(tmp_path, "0_cr_spt_16-13", raw=json.dumps(bad), task="cr", method="spt", seed=13)
    write_run(tmp_path, "1_cr_lpt_16-13", task="cr", method="lpt", seed=13, value=0.79)
    table = build_table(collect_runs(tmp_path))
    md = to_markdown(table)
    assert "| 50.0†" in md and "79.0†" not in md
    assert "spt / cr / seed 13: test all 'positive'" in md
    assert r"50.0$^\dagger$" in to_latex(table)


# -- the fallback rule -------------------------------------------------------------------------
def _choose(select="gates", fallback="last_k", separated=False):
    return choose_layers(select=select, fallback=fallback, by_gates=[1, 2], by_ablation=[1, 3],
                         candidates=[1, 2, 3, 4, 5], budget=2, separated=separated,
                         evidence="every gate below 0.5")  # fmt: skip


def test_fallback_rule_when_the_gates_do_not_separate():
    assert last_k([3, 1, 5, 2, 4], 2) == [4, 5]
    layers, why = _choose()
    assert layers == [4, 5] and why["rule"] == "last_k"
    assert "did not separate (every gate below 0.5)" in why["reason"]
    assert _choose(fallback="ablation")[0] == [1, 3]
    assert _choose(fallback="none") == ([1, 2], {"rule": "gates", "reason": (
        "the gates did not separate (every gate below 0.5); search.fallback=none")})  # fmt: skip
    assert _choose(separated=True)[0] == [1, 2]  # separated: the gates decide
    assert _choose(select="ablation")[1]["rule"] == "ablation"


def test_search_records_the_fallback(tmp_path):
    torch.manual_seed(0)
    model = FakeGatedModel()
    model.drop.p = 0.0
    result = run_search(
        model,
        task=get_task("rte"),
        w_features=fake_features(16, seed=0),
        alpha_features=fake_features(16, seed=1),
        scfg=search_cfg(budget=1, alpha_lr=1e-4, fallback="last_k"),  # gates stay near 0.5
        tcfg=trainer_cfg(max_steps=3, eval_every=0),
        seed=3,
        pad_token_id=0,
        logger=RunLogger(tmp_path),
        checkpoint_path=tmp_path / "search.pt",
        progress=False,
    )
    diag = result.diagnostics
    assert not diag["separated"]
    assert result.layers == [3] and diag["selection"]["rule"] == "last_k"
    assert "search.fallback=last_k" in diag["warning"]


# -- class-balanced D_alpha loss -----------------------------------------------------------------
def test_class_weights_on_an_imbalanced_batch():
    labels = torch.tensor([1, 1, 1, 0])
    weights = class_weights(labels.tolist(), 2)
    torch.testing.assert_close(weights, torch.tensor([4 / (2 * 1), 4 / (2 * 3)]))
    logits = torch.tensor([[0.0, 2.0], [0.5, 0.0], [1.0, 1.0], [3.0, -1.0]])
    per = F.cross_entropy(logits, labels, reduction="none")
    w = weights[labels]
    torch.testing.assert_close(balanced_loss(logits, labels, weights), (w * per).sum() / w.sum())
    # Always answering the majority class costs as much as answering the minority one.
    majority = torch.tensor([[0.0, 5.0]] * 4)
    minority = torch.tensor([[5.0, 0.0]] * 4)
    torch.testing.assert_close(
        balanced_loss(majority, labels, weights), balanced_loss(minority, labels, weights)
    )
    assert class_weights([0, 0], 3).tolist() == [1.0, 0.0, 0.0]


def test_alpha_loss_switch():
    feats = [{"labels": y} for y in (0, 1, 1, 1)]
    assert alpha_class_weights(search_cfg(alpha_loss="mean"), TASK, feats) is None
    weights = alpha_class_weights(search_cfg(alpha_loss="balanced"), TASK, feats)
    torch.testing.assert_close(weights, torch.tensor([2.0, 2 / 3]))
    with pytest.raises(ConfigError, match="regression"):
        alpha_class_weights(search_cfg(alpha_loss="balanced"), get_task("stsb"), feats)
