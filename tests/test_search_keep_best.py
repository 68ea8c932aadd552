"""``search.keep_best_of``: the search's retrain also trains the named sets (the last K, the
middle K) and keeps the one best on dev, ties to the first listed, the searched set last; its
evidence lands in results.json and its artefact is the kept set's. In-process, tiny
random-weight BERT, one thread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import shared_data
from spt_cli.config import CONTROL_SETS, searchpath_override
from spt_cli.search import select
from spt_cli.search.headroom import pick_on_dev
from tiny import TINY_SEARCH

CONF = Path(__file__).resolve().parents[1] / "conf"

COMMON = TINY_SEARCH


def test_keep_best_breaks_ties_towards_the_first_listed() -> None:
    assert select.keep_best([0.5, 0.7, 0.7]) == 1
    assert select.keep_best([0.9, 0.7, 0.9]) == 0
    assert select.keep_best([0.1]) == 0
    assert set(select.NAMED_SETS) == set(CONTROL_SETS)
    assert select.named_sets(["middle_k", "last_k"], range(1, 12), 4) == [
        ("middle_k", [5, 6, 7, 8]), ("last_k", [8, 9, 10, 11])
    ]  # fmt: skip


def test_the_headroom_rule_is_the_product_rule() -> None:
    # pick_on_dev (how docs/search.md scores "best of ... on dev") breaks ties as keep_best
    control = {"subsets": {"1,2": {"dev": 0.5}, "2,3": {"dev": 0.5}}, "extra": {}}
    assert pick_on_dev(control, [[2, 3], [1, 2]]) == [2, 3]
    assert pick_on_dev(control, [[1, 2], [2, 3]]) == [1, 2]
    assert pick_on_dev(control, [None, [4, 5], [1, 2]]) == [1, 2]  # not retrained: passed over


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*COMMON, *overrides, *searchpath_override()])
    cfg.data.root = str(shared_data())
    return cfg


@pytest.mark.skipif(shared_data() is None, reason="needs the shared data mirror")
def test_search_keeps_the_best_on_dev_of_the_named_sets_and_its_own(tmp_path: Path, capsys) -> None:
    from spt_cli.stages.search import stage_search

    # Candidates 1..3, K = 1: the last K is [3], the middle K [2]; with no fallback the gates'
    # top one is kept whatever it is, so two or three distinct sets are compared.
    run = tmp_path / "run"
    stage_search(_compose(["search.budget=1", "search.fallback=none"]), run)
    res = json.loads((run / "results.json").read_text())
    sel = json.loads((run / "selected_layers.json").read_text())
    evidence = res["selection"]
    compared = evidence["compared"]
    rules = [c["rule"] for c in compared]
    assert rules[:2] == ["last_k", "middle_k"]
    assert [c["layers"] for c in compared[:2]] == [[3], [2]]
    assert evidence["searched_layers"] == sel["layers"]  # the search's own pick is kept apart
    if sel["layers"] in ([3], [2]):
        assert len(compared) == 2 and "(= " in evidence["reason"]
    else:
        assert rules == ["last_k", "middle_k", "searched"]
    best = compared[select.keep_best([c["dev"] for c in compared])]
    assert evidence["layers"] == best["layers"] == res["selected_layers"] == res["prompt_layers"]
    assert res["dev"]["accuracy"] == best["dev"] and res["test"]["accuracy"] == best["test"]
    # One artefact, the kept set's; the others are gone.
    artifact = json.loads((run / "artifact" / "artifact.json").read_text())
    assert artifact["method"]["layers"] == best["layers"]
    assert not (run / "artifacts").exists()
    out = capsys.readouterr()
    assert f"kept {best['rule']} {best['layers']}: best dev accuracy of" in out.out + out.err


@pytest.mark.skipif(shared_data() is None, reason="needs the shared data mirror")
def test_an_empty_keep_best_of_retrains_the_searched_set_alone(tmp_path: Path) -> None:
    from spt_cli.stages.search import stage_search

    run = tmp_path / "run"
    stage_search(_compose(["search.budget=1", "search.fallback=none", "search.keep_best_of=[]"]),
                 run)  # fmt: skip
    res = json.loads((run / "results.json").read_text())
    sel = json.loads((run / "selected_layers.json").read_text())
    assert res["selected_layers"] == sel["layers"] == res["prompt_layers"]
    assert "compared" not in res["selection"]
