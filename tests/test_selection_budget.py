"""A finished search's selection at another budget K, re-derived from its saved gates and
ablation scores (``controls from_search=<run dir or record> search.budget=K``), and controls
that retrain the named sets only (``controls.max_subsets=0``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import shared_data
from spt_cli.config import searchpath_override
from spt_cli.errors import ConfigError
from spt_cli.search.select import derive_selection
from spt_cli.stages.selection import read_search, selection_at, write_selection

CONF = Path(__file__).resolve().parents[1] / "conf"
CANDIDATES = [1, 2, 3, 4, 5, 6]
# Gates that separate at K=2 (5 and 2 stand 0.3 above the rest) but not at K=4 (0.03 apart).
PROBS = {1: 0.45, 2: 0.80, 3: 0.50, 4: 0.10, 5: 0.85, 6: 0.48}
ABLATION = {1: 0.9, 2: -0.1, 3: 0.2, 4: 0.8, 5: 0.0, 6: 0.1}


def selection(layers: list[int], **search: object) -> dict:
    cfg = {"select": "gates", "fallback": "last_k", "threshold": None, "gate_shift": "none",
           "budget_penalty": 0.0, **search}  # fmt: skip
    return {
        "layers": layers,
        "probs": {str(k): v for k, v in PROBS.items()},
        "diagnostics": {"ablation_scores": {str(k): v for k, v in ABLATION.items()}},
        "config": {"search": cfg},
    }


def test_derive_selection_follows_the_rule_at_each_budget() -> None:
    at2 = derive_selection(PROBS, ABLATION, CANDIDATES, 2, "gates", "last_k")
    assert at2[0] == [2, 5] and at2[1]["rule"] == "gates"
    at4 = derive_selection(PROBS, ABLATION, CANDIDATES, 4, "gates", "last_k")
    assert at4[0] == [3, 4, 5, 6] and at4[1]["rule"] == "last_k"  # did not separate
    assert at4[2] == [2, 3, 5, 6] and at4[3] == [1, 3, 4, 6]  # the gates' and ablation's picks
    assert derive_selection(PROBS, ABLATION, CANDIDATES, 2, "ablation", "none")[0] == [1, 4]


def test_selection_at_keeps_the_search_budget_and_rederives_another() -> None:
    searched = selection([3, 4, 5, 6])
    assert selection_at(searched, 4, CANDIDATES) == [3, 4, 5, 6]
    assert selection_at(searched, 2, CANDIDATES) == [2, 5]
    # no fallback: at K=3 the gates' top 3 are kept though they do not separate
    assert selection_at(selection([3, 4, 5, 6], fallback="none"), 3, CANDIDATES) == [2, 3, 5]


@pytest.mark.parametrize(
    ("search", "named"),
    [({"gate_shift": "budget"}, "gate_shift"), ({"budget_penalty": 0.5}, "budget_penalty"),
     ({"threshold": 0.6}, "threshold")],
)  # fmt: skip
def test_selection_at_refuses_gates_that_depend_on_k(search: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        selection_at(selection([3, 4, 5, 6], **search), 2, CANDIDATES)


def test_selection_at_refuses_other_candidates() -> None:
    with pytest.raises(ConfigError, match="candidates"):
        selection_at(selection([3, 4, 5, 6]), 2, [1, 2, 3, 4, 5])


def test_read_search_takes_a_run_dir_or_a_record(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_selection(run, selection([3, 4, 5, 6]))
    assert read_search(run)["layers"] == [3, 4, 5, 6]
    record = {
        "stage": "search", "method": "spt", "selected_layers": [1, 2, 3, 4],
        "selection": {"rule": "middle_k", "searched_layers": [3, 4, 5, 6]},
        "gate_probs": selection([])["probs"], "search_diagnostics": selection([])["diagnostics"],
        "config": selection([])["config"],
    }  # fmt: skip
    path = tmp_path / "search-16shot-seed13-abc.json"
    path.write_text(json.dumps(record))
    found = read_search(path)
    assert found["layers"] == [3, 4, 5, 6]  # the searched set, not the one the retrain kept
    assert selection_at(found, 2, CANDIDATES) == [2, 5]
    path.write_text(json.dumps({**record, "stage": "train"}))
    with pytest.raises(ConfigError, match="not a search record"):
        read_search(path)
    with pytest.raises(ConfigError, match="no selected_layers.json"):
        read_search(tmp_path / "missing")


@pytest.mark.skipif(shared_data() is None, reason="needs the shared data mirror")
def test_controls_named_sets_only_at_another_budget(tmp_path: Path, capsys) -> None:
    from spt_cli.stages.controls import stage_controls

    run = tmp_path / "search"
    searched = selection([2, 3])  # the tiny BERT's candidates are blocks 1..3
    write_selection(
        run,
        {
            **searched,
            "probs": {"1": 0.9, "2": 0.1, "3": 0.2},
            "diagnostics": {"ablation_scores": {"1": 0, "2": 0, "3": 0}},
        },
    )
    records = tmp_path / "records"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[
            "stage=controls", "model=tiny-bert", "dataset=rte", "shots=16", "seed=13",
            "logger=none", "trainer.max_steps=2", "trainer.eval_every=2",
            "trainer.checkpoint_every=0", "trainer.batch_size=8", "trainer.eval_batch_size=16",
            "trainer.num_threads=1", "search.budget=1",
            "controls.max_subsets=0", f"controls.records={records}", f"from_search={run}",
            *searchpath_override(),
        ])  # fmt: skip
    cfg.data.root = str(shared_data())
    stage_controls(cfg, tmp_path / "controls")
    said = "".join(capsys.readouterr())
    assert "the search kept [2, 3]; at K=1 its rule keeps [1]" in said
    (path,) = records.rglob("*.json")
    data = json.loads(path.read_text())
    assert data["k"] == 1 and data["subsets"] == {}
    # last K [3], middle K [2], the search's rule at K=1: its one separated gate [1]
    assert set(data["extra"]) == {"3", "2", "1"}
    results = json.loads((tmp_path / "controls" / "results.json").read_text())
    assert results["subsets"] == 0 and results["searched_layers"] == [1]
    assert results["searched_dev"] == data["extra"]["1"]["dev"]
