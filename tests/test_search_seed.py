"""``search.seed``: the search's own randomness (init, D_w/D_alpha split, batch order) apart
from the data seed, so one task-seed's search can be repeated (multi-seed gates); null is the
data seed, bit for bit, and keeps every committed record's fingerprint. In-process, tiny
random-weight BERT, one thread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import shared_data
from spt_cli.config import searchpath_override
from spt_cli.jobs import fingerprint
from tiny import TINY_SEARCH

CONF = Path(__file__).resolve().parents[1] / "conf"

COMMON = [*TINY_SEARCH, "retrain=false", "search.fallback=none", "search.keep_best_of=[]"]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*COMMON, *overrides, *searchpath_override()])
    if shared_data() is not None:
        cfg.data.root = str(shared_data())
    return cfg


def test_a_null_search_seed_keeps_the_fingerprint_a_set_one_changes_it() -> None:
    from spt_cli.config import to_plain

    unset = fingerprint(_compose([]))
    plain = to_plain(_compose([]))
    del plain["search"]["seed"]  # the config before the key existed
    assert fingerprint(plain) == unset
    assert fingerprint(_compose(["search.seed=13"])) != unset
    # a retrain or train stage does not search: the key cannot change it
    assert fingerprint(_compose(["stage=train", "search.seed=7"])) == fingerprint(
        _compose(["stage=train"])
    )


@pytest.mark.skipif(shared_data() is None, reason="needs the shared data mirror")
def test_search_seed_repeats_the_search_on_the_same_data(tmp_path: Path) -> None:
    from spt_cli.stages.search import stage_search

    gates = {}
    for name, extra in (("null", []), ("same", ["search.seed=13"]), ("other", ["search.seed=1"])):
        stage_search(_compose(extra), tmp_path / name)
        gates[name] = json.loads((tmp_path / name / "selected_layers.json").read_text())
    assert gates["same"]["probs"] == gates["null"]["probs"]  # null = the data seed, bit for bit
    assert gates["other"]["probs"] != gates["null"]["probs"]
    # the data is the same few-shot draw: D_w and D_alpha split it anew, at the same sizes
    assert (gates["other"]["d_w"], gates["other"]["d_alpha"]) == (
        gates["null"]["d_w"], gates["null"]["d_alpha"]
    )  # fmt: skip


def test_dev_ablation_keeps_the_fingerprint_off_and_changes_it_on() -> None:
    from spt_cli.config import to_plain

    off = _compose([])
    plain = to_plain(off)
    del plain["search"]["dev_ablation"]  # the config before the key existed
    assert fingerprint(plain) == fingerprint(off)
    assert fingerprint(_compose(["search.dev_ablation=true"])) != fingerprint(off)


@pytest.mark.skipif(shared_data() is None, reason="needs the shared data mirror")
def test_dev_ablation_scores_every_candidate_on_dev_and_changes_no_gate(tmp_path: Path) -> None:
    from spt_cli.errors import ConfigError
    from spt_cli.stages.search import stage_search

    found = {}
    for name, extra in (("off", []), ("on", ["search.dev_ablation=true"])):
        stage_search(_compose(extra), tmp_path / name)
        found[name] = json.loads((tmp_path / name / "selected_layers.json").read_text())
    on, off = found["on"], found["off"]
    assert on["probs"] == off["probs"] and on["layers"] == off["layers"]
    scores = on["diagnostics"]["dev_ablation_scores"]
    assert set(scores) == set(on["probs"]) and len(set(scores.values())) > 1
    assert "dev_ablation_scores" not in off["diagnostics"]
    # A full-data split too small to hold out a dev example: refused before any training.
    with pytest.raises(ConfigError, match="search.dev_ablation=true needs dev examples"):
        stage_search(
            _compose(["search.dev_ablation=true", "shots=0", "split=full", "data.dev_ratio=1e-6"]),
            tmp_path / "none",
        )
