"""The controls analysis of docs/search.md (spt_cli.search.study) on small records with known
answers: percentiles, the permutation p, the test gain and the dev-test rank correlations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spt_cli.search import study


def _control(task: str, seed: int, scores: dict[str, tuple[float, float]]) -> dict:
    """A control record of K = 2 among candidates 1..4 (6 subsets): key -> (dev, test)."""
    return {
        "format": "spt-cli-controls/1", "task": task, "seed": seed, "k": 2,
        "candidates": [1, 2, 3, 4], "protocol": {"method": {"input_prompt": "none"}},
        "subsets": {k: {"dev": d, "test": t} for k, (d, t) in scores.items()},
    }  # fmt: skip


# dev and test in the same order: rank correlations 1; "3,4" is the best on both.
ORDERED = {"1,2": (0.1, 0.50), "1,3": (0.2, 0.52), "1,4": (0.3, 0.54),
           "2,3": (0.4, 0.56), "2,4": (0.5, 0.58), "3,4": (0.6, 0.60)}  # fmt: skip
# test in the reverse order of dev: rank correlations -1.
REVERSED = {k: (d, 1.1 - t) for k, (d, t) in ORDERED.items()}


@pytest.fixture
def controls() -> dict:
    return {("sst2", 13): _control("sst2", 13, ORDERED), ("mr", 13): _control("mr", 13, REVERSED)}


def test_percentiles_of_a_pick(controls) -> None:
    control = controls[("sst2", 13)]
    assert study.dev_percentile([3, 4], control) == 100.0  # beats the 5 others
    assert study.dev_percentile([1, 2], control) == 0.0
    assert study.dev_percentile([2, 3], control) == 60.0  # beats 3 of 5
    assert study.dev_percentile([1, 5], control) is None  # never retrained
    tied = _control("sst2", 13, {**ORDERED, "1,2": (0.4, 0.5)})
    assert study.dev_percentile([2, 3], tied) == 50.0  # 2 below, 1 tie counted half, 2 above


def test_reference_rules(controls) -> None:
    control = controls[("sst2", 13)]
    assert study.last_k(control) == [3, 4]
    assert study.best_on_dev(control) == [3, 4]
    assert study.mean_test(control) == pytest.approx(0.55)
    refs = study.reference_entries(controls)
    assert [r["variant"] for r in refs[:3]] == ["ref: last K blocks", "ref: best on dev",
                                                study.RANDOM]  # fmt: skip
    assert refs[0]["task"] == "mr"  # task-seed order


def test_score_rule_row(controls) -> None:
    row = study.score_rule("last", study.last_k, controls, ("sst2", "mr"))
    assert row["n"] == 2 and row["dev_pct"] == 100.0
    assert row["per_task"] == {"sst2": 100.0, "mr": 100.0}
    # sst2: 0.60 - 0.55; mr: 0.50 - 0.55 -> mean 0, one above, one below
    mean_gain, above, below = row["test_gain"]
    assert mean_gain == pytest.approx(0.0) and (above, below) == (1, 1)
    # the top pick on both task-seeds: a random pick matches it with probability 1/36
    assert row["p_vs_random"] == pytest.approx(1 / 36, abs=0.006)
    # the bottom pick: random picks reach it every time -> p = 1
    worst = study.score_rule("first", lambda c: [1, 2], controls, ("sst2", "mr"))
    assert worst["dev_pct"] == 0.0 and worst["p_vs_random"] == 1.0
    # a rule that picks nothing somewhere, and tasks shown apart
    some = study.score_rule("sst2 only", lambda c: [3, 4] if c["task"] == "sst2" else None,
                            controls, ("sst2",), pairs=("mr",))  # fmt: skip
    assert (some["n"], some["pairs_n"], some["pairs_dev_pct"]) == (1, 0, None)


def test_chance_p_bounds(controls) -> None:
    # p = (1 + hits) / (1 + draws): never 0, 1 when every draw reaches the mean
    entries = study.rule_entries("best", study.best_on_dev, controls)
    p = study.chance_p(entries, controls, draws=200)
    assert 1 / 201 <= p < 0.1
    assert study.chance_p([], controls) is None
    assert study.chance_p(study.rule_entries("w", lambda c: [1, 2], controls), controls,
                          draws=50) == 1.0  # fmt: skip


def test_spread_rank_correlations(controls) -> None:
    ordered, reversed_ = study.spread(controls[("sst2", 13)]), study.spread(controls[("mr", 13)])
    assert ordered["spearman"] == pytest.approx(1.0) and ordered["kendall"] == pytest.approx(1.0)
    assert reversed_["spearman"] == pytest.approx(-1.0)
    assert reversed_["kendall"] == pytest.approx(-1.0)
    assert ordered["dev_range"] == pytest.approx(0.5) and ordered["test_range"] == pytest.approx(
        0.1
    )
    assert ordered["best_dev_gain"] == pytest.approx(0.05)
    flat = study.spread(_control("sst2", 21, {k: (0.5, t) for k, (_, t) in ORDERED.items()}))
    assert flat["spearman"] is None and flat["kendall"] is None  # dev ties everywhere
    rows = study.spread_by_task(controls, ("sst2", "mr", "rte"))
    assert [r["task"] for r in rows] == ["sst2", "mr"]  # rte has no controls


def test_load_controls_keeps_complete_records_of_a_protocol(tmp_path: Path) -> None:
    full = _control("sst2", 13, ORDERED)
    part = _control("mr", 13, dict(list(ORDERED.items())[:3]))
    other = _control("subj", 13, ORDERED)
    other["protocol"]["method"]["input_prompt"] = "static"
    for i, rec in enumerate((full, part, other)):
        (tmp_path / f"{i}.json").write_text(json.dumps(rec))
    found = study.load_controls(
        tmp_path, 20, lambda r: r["protocol"]["method"]["input_prompt"] == "none"
    )
    assert list(found) == [("sst2", 13)]
    assert study.is_complete(part, max_subsets=3)  # a sampled protocol of 3 subsets


def test_markdown_rows(controls) -> None:
    rows = [study.score_rule("last", study.last_k, controls, ("sst2",)),
            study.score_entries(study.RANDOM, [e for e in study.reference_entries(controls)
                                               if e["variant"] == study.RANDOM], controls,
                                ("sst2",))]  # fmt: skip
    text = study.rows_markdown(rows, {"last": {"searches": 1, "separated": 1.0}}, ("sst2",))
    lines = text.splitlines()
    assert lines[2].startswith("| last | 1 | 100% | 100.0 (1) |")
    assert "+5.0 (1-0)" in lines[2]
    assert lines[3].split(" | ")[4] == ""  # the random row has no p
    table = study.spread_markdown(study.spread_by_task(controls, ("sst2",)))
    assert table.splitlines()[2] == "| sst2 | 1 | 50.0 | 10.0 | 5.0 | 1.0 |"


def test_kendall_is_none_on_constant_input():
    assert study.kendall([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert study.kendall([1, 1, 1], [1, 2, 3]) is None  # undefined: no nan, no warning


def test_load_searches_reads_the_records_in_path_order(tmp_path: Path):
    for task, seed in (("sst2", 13), ("mr", 21)):
        folder = tmp_path / task / "spt"
        folder.mkdir(parents=True)
        record = {"task": task, "seed": seed, "selected_layers": [1, 2]}
        (folder / f"search-16shot-seed{seed}-abc.json").write_text(json.dumps(record))
    (tmp_path / "mr" / "spt" / "results.json").write_text("{}")  # not a search record
    found = study.load_searches(tmp_path)
    assert [(r["task"], r["seed"]) for r in found] == [("mr", 21), ("sst2", 13)]
    assert study.load_searches(tmp_path, "*/spt/search-16shot-seed13-*.json")[0]["task"] == "sst2"
