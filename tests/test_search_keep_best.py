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


def test_keep_best_sets_at_k_and_at_half_k() -> None:
    cands = list(range(1, 12))
    names = ["last_k", "middle_k", "searched", "last_half", "middle_half", "searched_half"]
    sets = select.keep_best_sets(names, cands, 4, [2, 3, 5, 9], [3, 6])
    assert sets == [("last_k", [8, 9, 10, 11]), ("middle_k", [5, 6, 7, 8]),
                    ("searched", [2, 3, 5, 9]), ("last_half", [10, 11]),
                    ("middle_half", [6, 7]), ("searched_half", [3, 6])]  # fmt: skip
    # each set once (the first name wins), a searched_half that cannot be derived left out
    sets = select.keep_best_sets(names, cands, 4, [8, 9, 10, 11], None)
    assert [name for name, _ in sets] == ["last_k", "middle_k", "last_half", "middle_half"]
    # the searched set goes last when the list does not name it; K = 1: halves add nothing
    assert select.keep_best_sets(["last_half", "last_k"], cands, 1, [4], [4]) == [
        ("last_half", [11]), ("searched", [4])
    ]  # fmt: skip
    assert [select.half(k) for k in (1, 2, 3, 4, 10)] == [1, 1, 2, 2, 5]


def test_searched_half_is_left_out_when_the_gates_felt_k(capsys) -> None:
    from spt_cli.stages.search import _searched_half

    selection = {"layers": [2, 3], "probs": {"1": 0.9, "2": 0.1, "3": 0.8},
                 "diagnostics": {"ablation_scores": {"1": 0.0, "2": 0.0, "3": 0.0}},
                 "config": {"search": {"select": "gates", "fallback": "none",
                                       "threshold": None, "gate_shift": "none"}}}  # fmt: skip
    assert _searched_half(selection, ["searched_half"], 2, [1, 2, 3]) == [1]
    assert _searched_half(selection, ["last_half"], 2, [1, 2, 3]) is None  # not asked for
    selection["config"]["search"]["gate_shift"] = "budget"
    assert _searched_half(selection, ["searched_half"], 2, [1, 2, 3]) is None
    assert "searched_half left out" in "".join(capsys.readouterr())


@pytest.mark.skipif(shared_data() is None, reason="needs the shared data mirror")
def test_the_default_compares_the_sets_at_k_and_at_half_k(tmp_path: Path) -> None:
    from spt_cli.stages.search import stage_search
    from spt_cli.stages.selection import selection_at

    # Candidates 1..3, K = 2: last K [2, 3] (the middle K too), K/2 = 1: [3] and [2], and the
    # search's own rule at K = 1 re-derived from its gates.
    run = tmp_path / "run"
    stage_search(_compose(["search.budget=2"]), run)
    res = json.loads((run / "results.json").read_text())
    sel = json.loads((run / "selected_layers.json").read_text())
    compared = {c["rule"]: c["layers"] for c in res["selection"]["compared"]}
    assert compared["last_k"] == [2, 3] and "middle_k" not in compared  # the same set once
    assert compared["last_half"] == [3] and compared["middle_half"] == [2]
    half = selection_at(sel, 1, [1, 2, 3])
    assert compared.get("searched_half", half) == half  # absent only as a duplicate
    assert half in compared.values()
    devs = [c["dev"] for c in res["selection"]["compared"]]
    assert res["dev"]["accuracy"] == devs[select.keep_best(devs)]
