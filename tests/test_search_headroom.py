"""Headroom and signal ranks (spt_cli.search.headroom) on small control records with known
answers."""

from __future__ import annotations

import pytest

from spt_cli.search import headroom


def _control(scores: dict[str, tuple[float, float]], candidates=(1, 2, 3, 4), k: int = 2) -> dict:
    return {"task": "sst2", "seed": 13, "k": k, "candidates": list(candidates),
            "subsets": {key: {"dev": d, "test": t} for key, (d, t) in scores.items()}}  # fmt: skip


# dev and test rise with the blocks' mean index: "later is better" ranks them perfectly.
LATER = {"1,2": (0.1, 0.50), "1,3": (0.2, 0.52), "1,4": (0.3, 0.54),
         "2,3": (0.35, 0.55), "2,4": (0.5, 0.58), "3,4": (0.6, 0.60)}  # fmt: skip


def test_middle_k() -> None:
    # candidates 1..4 of a 5-block backbone: middle 2.5 -> [2, 3]
    assert headroom.middle_k(_control(LATER)) == [2, 3]
    # 1..5 of 6 blocks (MiniLM): [2, 3] and [3, 4] are equally near 3: the later one
    assert headroom.middle_k(_control({}, candidates=range(1, 6))) == [3, 4]
    # 1..11 of 12 blocks (MPNet), K = 4: [5, 6, 7, 8]
    assert headroom.middle_k(_control({}, candidates=range(1, 12), k=4)) == [5, 6, 7, 8]


def test_signal_tau_and_prior() -> None:
    control = _control(LATER)
    tau = headroom.signal_tau(control, headroom.later_is_better)
    # "1,4" and "2,3" tie on the prior (mean 2.5): tau-b below 1 but high
    assert tau["dev"] == pytest.approx(tau["test"]) and 0.9 < tau["dev"] < 1.0
    reverse = headroom.signal_tau(control, lambda c, layers: -headroom.later_is_better(c, layers))
    assert reverse["dev"] == pytest.approx(-tau["dev"])
    # a signal that scores fewer than three subsets says nothing
    sparse = headroom.signal_tau(control, lambda c, layers: 1.0 if layers[0] == 3 else None)
    assert sparse == {"dev": None, "test": None}


def test_headroom_row() -> None:
    row = headroom.headroom(_control(LATER))
    mean_test = sum(t for _, t in LATER.values()) / 6
    assert row["test_mean"] == pytest.approx(mean_test)
    assert row["last_k_gain"] == pytest.approx(0.60 - mean_test)
    assert row["last_k_pct"] == 100.0
    assert row["middle_k_gain"] == pytest.approx(0.55 - mean_test)
    assert row["dev_range"] == pytest.approx(0.5) and row["kendall"] == pytest.approx(1.0)
    by_task = headroom.headroom_by_task({("sst2", 13): _control(LATER)}, ["sst2", "mr"])
    assert [r["task"] for r in by_task] == ["sst2", "all"]  # no mr records: no mr row
    text = headroom.headroom_markdown(by_task)
    assert "| sst2 | 1 | 34.2 | 50.0 |" in text and "+0.95 / +0.95" not in text


def test_search_signals_rank_subsets_by_summed_block_scores() -> None:
    control = _control(LATER)
    # gates that rise with the block: same order as "later is better"; ablation reversed
    search = {"gate_probs": {"1": 0.1, "2": 0.2, "3": 0.3, "4": 0.4},
              "search_diagnostics": {"ablation_scores": {"1": 0.4, "2": 0.3, "3": 0.2,
                                                         "4": 0.1}}}  # fmt: skip
    signals = headroom.search_signals(search)
    assert set(signals) == {"final gates", "ablation on D_alpha"}
    gates = headroom.signal_tau(control, signals["final gates"])
    ablation = headroom.signal_tau(control, signals["ablation on D_alpha"])
    assert gates["dev"] == pytest.approx(-ablation["dev"]) and gates["dev"] > 0.9
    assert headroom.search_signals({"gate_probs": {}}) == {}  # nothing recorded: no signal
    rows = headroom.signal_rows({("sst2", 13): control, ("sst2", 21): control},
                                {("sst2", 13): search})  # fmt: skip
    by_name = {r["signal"]: r for r in rows}
    assert by_name["later is better (prior)"]["n"] == 2 and by_name["final gates"]["n"] == 1
    assert by_name["final gates"]["test"] == pytest.approx(gates["test"])
    assert "| final gates | 1 |" in headroom.signals_markdown(rows)


def test_reruns_give_each_search_signal_averaged_over_them() -> None:
    control = _control(LATER)
    # Two reruns with dev ablation: on dev, the later blocks help (mean 3 > 4 > 2 > 1 ...).
    one = {
        "gate_probs": {"1": 0.9, "2": 0.1, "3": 0.2, "4": 0.3},
        "search_diagnostics": {
            "ablation_scores": {"1": 0.1, "2": 0.2, "3": 0.3, "4": 0.4},
            "dev_ablation_scores": {"1": -1.0, "2": 0.0, "3": 2.0, "4": 1.0},
        },
    }
    two = {"gate_probs": {"1": 0.5, "2": 0.5, "3": 0.5, "4": 0.5},
           "search_diagnostics": {"ablation_scores": {"1": 0.0, "2": 0.0, "3": 0.0, "4": 0.0},
                                  "dev_ablation_scores": {"1": -1.0, "2": 0.0, "3": 0.0,
                                                          "4": 3.0}}}  # fmt: skip
    assert headroom.block_scores(one, "ablation on dev") == {1: -1.0, 2: 0.0, 3: 2.0, 4: 1.0}
    assert headroom.block_scores({"gate_probs": {}}, "ablation on dev") == {}
    assert headroom.mean_block_scores([one, two], "ablation on dev") == pytest.approx(
        {1: -1.0, 2: 0.0, 3: 1.0, 4: 2.0}
    )
    assert headroom.top_k_of(control, [one, two], "ablation on dev") == [3, 4]
    assert headroom.top_k_of(control, [one], "ablation on dev") == [3, 4]
    assert headroom.top_k_of(control, [one], "final gates") == [1, 4]
    assert headroom.top_k_of(control, [{"gate_probs": {}}], "ablation on dev") == []
    assert set(headroom.search_signals(one)) == set(headroom.SEARCH_SCORES)
    key = ("sst2", 13)
    rows = headroom.signal_rows({key: control}, {}, reruns=("reruns", {key: [one, two]}))
    by_name = {r["signal"]: r for r in rows}
    assert set(by_name) == {
        "later is better (prior)",
        "final gates (reruns)",
        "ablation on D_alpha (reruns)",
        "ablation on dev (reruns)",
    }
    expected = headroom.signal_tau(control, lambda c, s: sum({1: -1, 2: 0, 3: 1, 4: 2}[b]
                                                             for b in s))  # fmt: skip
    assert by_name["ablation on dev (reruns)"]["dev"] == pytest.approx(expected["dev"])
    assert by_name["ablation on dev (reruns)"]["dev"] > 0.5


def test_best_with_named_needs_the_signals_set_retrained() -> None:
    control = _control(LATER)  # last K [3, 4] (dev 0.6), middle K [2, 3] (0.35)
    assert headroom.best_with_named(control, [3, 4]) == [3, 4]
    control["extra"] = {"1,2": {"dev": 0.9, "test": 0.5}}
    del control["subsets"]["1,2"]
    assert headroom.best_with_named(control, [1, 2]) == [1, 2]  # a named set beside the sample
    del control["extra"]
    # Not retrained: no pick (it must not become the best of the last K and the middle K).
    assert headroom.best_with_named(control, [1, 2]) is None
    assert headroom.best_with_named(control, []) is None
    assert headroom.best_with_named(control, None) is None


def test_rerun_agreement_counts_equal_gates_and_equal_top_k() -> None:
    control = _control(LATER)  # K = 2
    key, other = ("sst2", 13), ("sst2", 21)
    first = {"gate_probs": {"1": 0.9, "2": 0.8, "3": 0.1, "4": 0.2}}
    same = {"gate_probs": dict(first["gate_probs"]), "config": {"search": {"seed": None}}}
    close = {"gate_probs": {"1": 0.91, "2": 0.8, "3": 0.1, "4": 0.2},
             "config": {"search": {"seed": None}}}  # fmt: skip
    moved = {"gate_probs": {"1": 0.1, "2": 0.8, "3": 0.1, "4": 0.9},
             "config": {"search": {"seed": None}}}  # fmt: skip
    seeded = {"gate_probs": dict(first["gate_probs"]), "config": {"search": {"seed": 1}}}
    controls = {key: control, other: control}
    searches = {key: first, other: first}
    reruns = {key: [same, close, seeded], other: [moved]}
    # seeded is a repeat under another search seed, not a rerun: left out
    assert headroom.rerun_agreement(controls, searches, reruns) == (3, 1, 2)
    assert headroom.rerun_agreement(controls, {}, reruns) == (0, 0, 0)


def test_dev_size_is_the_count_the_accuracies_share() -> None:
    # 32 dev examples: 0.71875 = 23/32 needs n = 32
    assert headroom.dev_size(_control({"1,2": (0.5, 0.5), "3,4": (0.71875, 0.6)})) == 32
    assert headroom.dev_size(_control({"1,2": (0.5, 0.5), "3,4": (0.75, 0.6)})) == 4
    assert headroom.dev_size(_control({"1,2": (0.31415926, 0.5)}), most=100) is None


def test_shrink_keeps_the_last_k_unless_the_margin_beats_the_noise() -> None:
    # n = 32, last K [3, 4] at dev 0.75: one standard error is sqrt(0.75 * 0.25 / 32) = 0.077
    near = _control({"3,4": (0.75, 0.60), "1,2": (0.8125, 0.70), "2,3": (0.5, 0.5),
                     "1,3": (0.53125, 0.5)})  # fmt: skip
    assert headroom.pick_on_dev(near, [[3, 4], [1, 2]]) == [1, 2]
    assert headroom.shrink_to_last_k(near, [[3, 4], [1, 2]]) == [3, 4]  # +0.0625 < 0.077
    assert headroom.shrink_to_last_k(near, [[3, 4], [1, 2]], z=0.5) == [1, 2]
    far = _control({"3,4": (0.75, 0.60), "1,2": (0.875, 0.70), "1,3": (0.53125, 0.5)})
    assert headroom.shrink_to_last_k(far, [[3, 4], [1, 2]]) == [1, 2]  # +0.125 > 0.077


def test_searched_set_is_the_searchs_own_pick_not_the_kept_one() -> None:
    published = {"selected_layers": [1, 2]}  # SPT-DARTS as published: kept = searched
    assert headroom.searched_set(published) == [1, 2]
    selection = {"rule": "best on dev: last_k", "searched_layers": [1, 2]}
    kept_other = {"selected_layers": [4, 5], "selection": selection}
    assert headroom.searched_set(kept_other) == [1, 2]
    fallback = {"selected_layers": [4, 5], "selection": {"rule": "last_k"}}  # no keep_best_of
    assert headroom.searched_set(fallback) == [4, 5]


def _proxy(scores: dict[str, float], steps: int = 25) -> dict:
    control = _control({key: (dev, 0.0) for key, dev in scores.items()})
    return {**control, "protocol": {"trainer": {"max_steps": steps}}}


def test_proxy_signal_ranks_by_the_short_retrains_dev() -> None:
    control = _control(LATER)
    proxy = _proxy({"1,2": 0.6, "1,3": 0.5, "1,4": 0.4, "2,3": 0.3, "2,4": 0.2})
    tau = headroom.signal_tau(control, headroom.proxy_signal(proxy))
    assert tau["dev"] == pytest.approx(-1.0)  # [3, 4] has no proxy: left out, the rest reversed
    rows = headroom.signal_rows({("sst2", 13): control}, {}, [{("sst2", 13): proxy}])
    assert [r["signal"] for r in rows] == ["later is better (prior)",
                                           "proxy retrain (25 steps), its dev"]  # fmt: skip
    assert headroom.proxy_steps(proxy) == 25


def test_proxy_screen_retrains_the_top_of_the_short_runs_and_keeps_the_best_on_dev() -> None:
    control = _control(LATER)
    control["extra"] = {"2,5": {"dev": 0.9, "test": 0.4}}  # a named set beside the sample
    # the proxy's top 3: [1, 2], [2, 5] and, of the three tied at 0.5, the latest: [2, 4]
    proxy = _proxy({"1,2": 0.8, "2,5": 0.7, "1,3": 0.5, "2,3": 0.5, "2,4": 0.5, "3,4": 0.1})
    assert headroom.proxy_screen(control, proxy) == [2, 5]  # best full dev among the three
    assert headroom.proxy_screen(control, proxy, top=1) == [1, 2]
    del control["extra"]
    assert headroom.proxy_screen(control, proxy) == [2, 4]  # [2, 4] beat [1, 3] on the tie
    assert headroom.proxy_screen(control, _proxy({"9,10": 0.5})) is None  # nothing in common


def test_gates_averaged_over_search_seeds() -> None:
    control = _control(LATER)
    one = {"gate_probs": {"1": 0.9, "2": 0.1, "3": 0.2, "4": 0.3}}
    two = {"gate_probs": {"1": 0.1, "2": 0.3, "3": 0.6, "4": 0.9}}
    three = {"gate_probs": {"1": 0.2, "2": 0.2, "3": 0.4, "4": 0.6, "5": 0.9}}  # 5: only here
    gates = headroom.mean_gates([one, two, three])
    assert gates == pytest.approx({1: 0.4, 2: 0.2, 3: 0.4, 4: 0.6})
    assert headroom.mean_gates_top_k(control, [one, two, three]) == [1, 4]  # 1 beats 3 on a tie
    assert headroom.mean_gates_top_k(control, [one]) == [1, 4]
    assert headroom.mean_gates_top_k(control, [two]) == [3, 4]
    score = headroom.mean_gates_signal([one, two, three])
    assert score(control, [2, 4]) == pytest.approx(0.8) and score(control, [4, 5]) is None
    rows = headroom.signal_rows({("sst2", 13): control}, {("sst2", 13): one},
                                repeats={("sst2", 13): [two, three]})  # fmt: skip
    assert "final gates, mean over search seeds" in [r["signal"] for r in rows]
    assert headroom.mean_gates([]) == {}


def test_seed_agreement_counts_pairs_of_equal_top_k() -> None:
    control = _control(LATER)  # candidates 1..4, K = 2: C(4, 2) = 6 subsets
    a = {"gate_probs": {"1": 0.9, "2": 0.8, "3": 0.1, "4": 0.1}}
    b = {"gate_probs": {"1": 0.7, "2": 0.6, "3": 0.2, "4": 0.5}}
    c = {"gate_probs": {"1": 0.1, "2": 0.2, "3": 0.6, "4": 0.9}}
    assert headroom.seed_agreement(control, [a, b, c]) == (1, 3, pytest.approx(1 / 6))
    assert headroom.seed_agreement(control, [a]) == (0, 0, pytest.approx(1 / 6))


def test_with_sets_lets_rules_choose_across_budgets() -> None:
    from spt_cli.search.study import dev_percentile

    control = _control(LATER)  # K = 2, the sample
    other = {
        **_control({}, k=1),
        "extra": {"4": {"dev": 0.55, "test": 0.7}, "1": {"dev": 0.05, "test": 0.4}},
    }
    both = headroom.with_sets(control, other)
    assert both["subsets"] == control["subsets"] and set(both["extra"]) == {"4", "1"}
    assert "extra" not in control  # the record itself is left as it was
    # a K=1 set ranked against the K=2 sample: 0.55 beats 5 of the 6 subsets
    assert dev_percentile([4], both) == pytest.approx(500 / 6)
    assert headroom.pick_on_dev(both, [[3, 4], [4]]) == [3, 4]  # 0.6 > 0.55
    assert headroom.pick_on_dev(both, [[2, 4], [4]]) == [4]
    with pytest.raises(ValueError, match="seed"):
        headroom.with_sets(control, {**other, "seed": 21})
