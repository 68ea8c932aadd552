"""`spt-run table` over grids: one setting per cell chosen on dev (never test), or refused; and
the paired comparison of SPT with each baseline (sign test numbers checked by hand)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from table_runs import table_cfg, write_record

from spt_cli.errors import ConfigError
from spt_cli.tables import (
    build_table,
    collect_runs,
    compare,
    run_table,
    sign_test,
    to_markdown,
    to_paired_csv,
)
from spt_cli.tables.paired import reading
from spt_cli.tables.select import holds

SEEDS = (13, 21, 42)


def grid(root: Path) -> None:
    """prompt_tuning on SST-2 at three learning rates: the best on dev is the worst on test."""
    dev = {"0.001": 0.550, "0.005": 0.581, "0.02": 0.612}
    test = {"0.001": 0.85, "0.005": 0.90, "0.02": 0.70}
    for lr in dev:
        for i, seed in enumerate(SEEDS):
            write_record(
                root, task="sst2", method="prompt_tuning", seed=seed, dev=dev[lr],
                value=test[lr] + i / 100,
                overrides=["stage=train", "dataset=sst2", "method=prompt_tuning", f"seed={seed}",
                           f"trainer.lr={lr}", "records=results/grid", "logger=none"],
            )  # fmt: skip


def test_select_dev_keeps_the_best_dev_setting_not_the_best_test(tmp_path: Path) -> None:
    grid(tmp_path / "records")
    table = build_table(collect_runs(tmp_path / "records"))
    group = table.groups[0]
    cell = group.cells[("prompt_tuning", "sst2")]
    assert cell.values == pytest.approx([0.70, 0.71, 0.72])  # lr=0.02: best dev, worst test
    (choice,) = group.choices
    assert choice.chosen == "trainer.lr=0.02"
    assert [s.setting for s in choice.scores] == [
        "trainer.lr=0.02",
        "trainer.lr=0.005",
        "trainer.lr=0.001",
    ]
    assert len(group.unchosen) == 6 and group.duplicates == [] and group.failed == []
    md = to_markdown(table)
    assert (
        "- prompt_tuning / SST-2: trainer.lr=0.02 (dev 61.2 vs 0.005: 58.1, 0.001: 55.0; "
        "seeds 13 21 42)"
    ) in md
    assert "| prompt_tuning | 1.00K | 71.0 ± 1.0 | 71.0 |" in md


def test_choices_csv_written(tmp_path: Path) -> None:
    grid(tmp_path / "records")
    out = tmp_path / "out"
    summary = run_table(table_cfg(str(tmp_path / "records")), out)
    assert "choices.csv" in [Path(f).name for f in summary["files"]]
    rows = list(csv.DictReader(io.StringIO((out / "choices.csv").read_text())))
    assert [(r["setting"], r["chosen"]) for r in rows] == [
        ("trainer.lr=0.02", "1"),
        ("trainer.lr=0.005", "0"),
        ("trainer.lr=0.001", "0"),
    ]
    assert float(rows[0]["dev_compared"]) == pytest.approx(0.612)
    assert rows[0]["compared_seeds"] == "13 21 42" and "test" not in rows[0]
    cells = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    pt = next(r for r in cells if (r["method"], r["task"]) == ("prompt_tuning", "sst2"))
    assert pt["setting"] == "trainer.lr=0.02" and float(pt["mean"]) == pytest.approx(0.71)


def test_settings_compared_on_the_seeds_all_have(tmp_path: Path) -> None:
    # lr=0.01 on seeds 13 21 42, lr=0.1 on 13 21 87. Over its own seeds lr=0.01 looks better
    # (a lucky seed 42); over the common seeds 13 21, lr=0.1 is better, and is kept: the cell
    # then reports all three of its seeds.
    dev = {("0.01", 13): 0.60, ("0.01", 21): 0.60, ("0.01", 42): 0.95,
           ("0.1", 13): 0.62, ("0.1", 21): 0.62, ("0.1", 87): 0.40}  # fmt: skip
    for (lr, seed), value in dev.items():
        over = [f"seed={seed}", f"trainer.lr={lr}"]
        write_record(tmp_path, task="rte", method="lpt", seed=seed, dev=value,
                     value=0.5 + seed / 1000, overrides=over)  # fmt: skip
    group = build_table(collect_runs(tmp_path)).groups[0]
    (choice,) = group.choices
    assert choice.chosen == "trainer.lr=0.1"
    assert choice.seeds == [13, 21] and choice.common
    assert [s.dev for s in choice.scores] == pytest.approx([0.62, 0.60])
    assert [s.dev_all for s in choice.scores] == pytest.approx([0.5466667, 0.7166667])
    cell = group.cells[("lpt", "rte")]
    assert cell.seeds == [13, 21, 87] and (cell.n, cell.expected) == (3, 4)
    assert "(dev 62.0 vs 0.01: 60.0; seeds 13 21)" in to_markdown(
        build_table(collect_runs(tmp_path))
    )


def test_a_tie_on_dev_keeps_the_setting_that_sorts_first(tmp_path: Path) -> None:
    # Sorted by value, 2e-2 (0.02) comes before 0.1 (as text it would not).
    for lr, value in (("0.1", 0.9), ("2e-2", 0.6)):
        for seed in SEEDS:
            write_record(tmp_path, task="rte", method="lpt", seed=seed, dev=0.7, value=value,
                         overrides=[f"seed={seed}", f"trainer.lr={lr}"])  # fmt: skip
    group = build_table(collect_runs(tmp_path)).groups[0]
    assert group.choices[0].chosen == "trainer.lr=2e-2"
    assert group.cells[("lpt", "rte")].mean == pytest.approx(0.6)


def test_select_all_refuses_to_mix_settings(tmp_path: Path) -> None:
    grid(tmp_path / "records")
    with pytest.raises(ConfigError) as err:
        run_table(table_cfg(str(tmp_path / "records"), select="all"), tmp_path / "out")
    message = str(err.value)
    assert "prompt_tuning / sst2 (minilm · 16-shot) has runs of 3 settings" in message
    assert "trainer.lr=0.001; trainer.lr=0.005; trainer.lr=0.02" in message
    with pytest.raises(ConfigError, match="table.select='best'"):
        run_table(table_cfg(str(tmp_path / "records"), select="best"), tmp_path / "out")


def test_select_all_accepts_one_setting_per_cell(tmp_path: Path) -> None:
    for seed in SEEDS:
        write_record(tmp_path, task="rte", method="lpt", seed=seed, value=0.6,
                     overrides=[f"seed={seed}", "trainer.lr=0.01"])  # fmt: skip
    summary = run_table(table_cfg(str(tmp_path), select="all"), tmp_path / "out")
    assert summary["n_runs"] == 3


def test_defaults_and_bookkeeping_do_not_split_a_cell(tmp_path: Path) -> None:
    # trainer.lr=5e-3 given, and left at its default 0.005: one setting. Where records go,
    # the logger, Hydra's dirs and the thread count change no number.
    write_record(tmp_path, task="rte", method="lpt", seed=13, value=0.6,
                 overrides=["seed=13", "trainer.lr=5e-3", "records=a", "trainer.num_threads=1"],
                 config={"trainer": {"lr": 0.005}})  # fmt: skip
    write_record(tmp_path, task="rte", method="lpt", seed=21, value=0.7,
                 overrides=["seed=21", "logger=none", "hydra.sweep.dir=x", "+debug=true"],
                 config={"trainer": {"lr": 0.005}})  # fmt: skip
    group = build_table(collect_runs(tmp_path)).groups[0]
    assert group.choices == [] and group.duplicates == []
    assert group.cells[("lpt", "rte")].n == 2
    assert all(r.setting == "" for r in group.records)


def test_a_real_difference_left_at_default_is_a_setting(tmp_path: Path) -> None:
    write_record(tmp_path, task="rte", method="lpt", seed=13, value=0.6, dev=0.7,
                 overrides=["seed=13", "trainer.max_steps=200"],
                 config={"trainer": {"max_steps": 200}})  # fmt: skip
    write_record(tmp_path, task="rte", method="lpt", seed=13, value=0.9, dev=0.6,
                 overrides=["seed=13"], config={"trainer": {"max_steps": 100}})  # fmt: skip
    group = build_table(collect_runs(tmp_path)).groups[0]
    assert group.choices[0].chosen == "trainer.max_steps=200"
    assert group.cells[("lpt", "rte")].values == [0.6]


# -- paired comparison ---------------------------------------------------------------------------
def test_sign_test_by_hand() -> None:
    assert sign_test(3, 1) == pytest.approx(0.625)  # 2 * (1 + 4) / 16
    assert sign_test(4, 1) == pytest.approx(0.375)  # 2 * (1 + 5) / 32
    assert sign_test(5, 0) == pytest.approx(0.0625)  # 2 / 32: the floor with 5 seeds
    assert sign_test(0, 5) == pytest.approx(0.0625)
    assert sign_test(2, 2) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(6, 0) == pytest.approx(0.03125)
    assert sign_test(9, 1) == pytest.approx(2 * 11 / 1024)


SEEDS5 = (13, 21, 42, 87, 100)


def five_seed_runs(root: Path) -> None:
    """lpt at 50.0 on every seed; spt +1, +2, -1, +3, 0 points: 3 wins, 1 tie, 1 loss."""
    for seed, diff in zip(SEEDS5, (1, 2, -1, 3, 0)):
        write_record(root, task="rte", method="lpt", seed=seed, value=0.50)
        write_record(root, task="rte", method="spt", seed=seed, value=0.50 + diff / 100,
                     stage="retrain")  # fmt: skip
        write_record(root, task="sst2", method="head_only", seed=seed, value=0.80)
    write_record(root, task="sst2", method="spt", seed=13, value=0.70, stage="retrain")


def test_paired_differences_wins_ties_losses(tmp_path: Path) -> None:
    five_seed_runs(tmp_path)
    group = build_table(collect_runs(tmp_path)).groups[0]
    pairs = {(p.baseline, p.task): p for p in compare(group)}
    assert set(pairs) == {("head_only", "sst2"), ("lpt", "rte")}
    lpt = pairs[("lpt", "rte")]
    assert lpt.seeds == list(SEEDS5)
    assert lpt.diffs == pytest.approx([0.01, 0.02, -0.01, 0.03, 0.0])
    assert (lpt.wins, lpt.ties, lpt.losses) == (3, 1, 1)
    assert lpt.mean == pytest.approx(0.01) and lpt.p == pytest.approx(0.625)
    head = pairs[("head_only", "sst2")]
    assert head.seeds == [13] and (head.wins, head.ties, head.losses) == (0, 0, 1)


def test_paired_table_markdown_and_csv(tmp_path: Path) -> None:
    five_seed_runs(tmp_path)
    table = build_table(collect_runs(tmp_path))
    md = to_markdown(table)
    assert "#### SPT vs baselines (paired over seeds)" in md
    assert "| spt - baseline | SST-2 | RTE | All |" in md
    assert "| spt - head_only | -10.0 (0-0-1, p=1) | – | -10.0 (0-0-1, p=1) |" in md
    assert "| spt - lpt | – | +1.0 (3-1-1, p=0.625) | +1.0 (3-1-1, p=0.625) |" in md
    assert (
        "With 5 seeds the smallest possible two-sided sign-test p is 0.0625 (5-0-0), so no "
        "single cell can reach 0.05"
    ) in md
    assert md.index("| Method |") < md.index("#### SPT vs baselines")
    rows = list(csv.DictReader(io.StringIO(to_paired_csv(table))))
    lpt = next(r for r in rows if r["baseline"] == "lpt")
    assert (lpt["task"], lpt["n"], lpt["wins"], lpt["ties"], lpt["losses"]) == (
        "rte", "5", "3", "1", "1",
    )  # fmt: skip
    assert float(lpt["p_sign"]) == pytest.approx(0.625)
    assert float(lpt["mean_diff"]) == pytest.approx(0.01)
    summary = run_table(table_cfg(str(tmp_path)), tmp_path / "out")
    assert "paired.csv" in [Path(f).name for f in summary["files"]]
    assert "SPT vs baselines" in (tmp_path / "out" / "table.tex").read_text()


def test_pooled_column_takes_every_task_seed_pair_of_a_row(tmp_path: Path) -> None:
    from spt_cli.tables.paired import pooled

    five_seed_runs(tmp_path)
    for seed, diff in zip(SEEDS5, (2, 1, 1, 4, 2)):  # sst2: five wins more for spt over lpt
        write_record(tmp_path, task="sst2", method="lpt", seed=seed, value=0.60)
        if seed != 13:
            write_record(tmp_path, task="sst2", method="spt", seed=seed,
                         value=0.60 + diff / 100, stage="retrain")  # fmt: skip
    table = build_table(collect_runs(tmp_path))
    rows = {p.baseline: p for p in pooled(compare(table.groups[0]))}
    lpt = rows["lpt"]  # sst2: 13 (+10) 21 42 87 100 (+1 +1 +4 +2); rte: +1 +2 -1 +3 0
    assert lpt.task == "all" and len(lpt.diffs) == 10
    assert (lpt.wins, lpt.ties, lpt.losses) == (8, 1, 1)
    assert lpt.mean == pytest.approx(0.023)
    assert lpt.p == pytest.approx(sign_test(8, 1))  # 2 * 10 / 512
    md = to_markdown(table)
    row = "| spt - lpt | +3.6 (5-0-0, p=0.0625) | +1.0 (3-1-1, p=0.625) | +2.3 (8-1-1, p=0.0391) |"
    assert row in md
    assert "All: every task-seed pair of the row pooled" in md
    csv_rows = list(csv.DictReader(io.StringIO(to_paired_csv(table))))
    pooled_lpt = next(r for r in csv_rows if (r["baseline"], r["task"]) == ("lpt", "all"))
    assert (pooled_lpt["n"], pooled_lpt["wins"], pooled_lpt["losses"]) == ("10", "8", "1")


def test_reading_with_more_seeds() -> None:
    from spt_cli.tables.paired import Paired

    six = [Paired("lpt", "rte", list(range(6)), [0.01] * 6)]
    assert reading(six).startswith("With 6 seeds a cell reaches p < 0.05 only at 6-0-0 or better")
    ten = [Paired("lpt", "rte", list(range(10)), [0.01] * 10)]
    assert reading(ten).startswith("With 10 seeds a cell reaches p < 0.05 only at 9-0-1 or better")


def test_no_paired_table_without_spt(tmp_path: Path) -> None:
    write_record(tmp_path, task="rte", method="lpt", seed=13, value=0.5)
    table = build_table(collect_runs(tmp_path))
    assert compare(table.groups[0]) == []
    assert "paired over seeds" not in to_markdown(table)


def test_holds_compares_config_values_as_settings() -> None:
    config = {"trainer": {"lr": 0.001, "max_steps": 300}, "method": {"name": "lpt"}}
    assert holds(config, "trainer.lr=1e-3") and holds(config, "trainer.lr=0.001")
    assert holds(config, "trainer.max_steps=300") and holds(config, "method.name=lpt")
    assert not holds(config, "trainer.lr=5e-3")
    assert not holds(config, "trainer.backbone_lr=2e-5")  # not in the config
    assert not holds(None, "trainer.lr=1e-3")


def test_rows_and_reference_come_from_the_table_keys(tmp_path: Path) -> None:
    from spt_cli.tables import Layout

    for method, value in (("spt", 0.7), ("lpt", 0.6), ("mine", 0.65)):
        write_record(tmp_path, task="rte", method=method, seed=13, value=value)
    records = collect_runs(tmp_path)
    shipped = build_table(records).groups[0]  # conf/config.yaml: spt last, unlisted after it
    assert shipped.methods == ["lpt", "spt", "mine"] and shipped.reference == "spt"
    assert Layout.from_conf().rows[-1] == "spt"
    # another order and another reference method: no name is special to the code
    group = build_table(records, layout=Layout(rows=("mine", "spt"), reference="mine")).groups[0]
    assert group.methods == ["mine", "spt", "lpt"]
    pairs = {p.baseline: p for p in compare(group)}
    assert set(pairs) == {"spt", "lpt"} and pairs["lpt"].mean == pytest.approx(0.05)
    md = to_markdown(build_table(records, layout=Layout(rows=(), reference="mine")))
    assert "MINE vs baselines (paired over seeds)" in md and "| mine - lpt |" in md
    assert compare(build_table(records, layout=Layout(("spt",), None)).groups[0]) == []


def test_run_table_reads_rows_and_reference(tmp_path: Path) -> None:
    for method in ("spt", "lpt"):
        write_record(tmp_path / "runs", task="rte", method=method, seed=13, value=0.6)
    cfg = table_cfg(str(tmp_path / "runs"))
    cfg.table.rows, cfg.table.reference = ["spt", "lpt"], None
    run_table(cfg, tmp_path / "out")
    md = (tmp_path / "out" / "table.md").read_text()
    assert md.index("| spt |") < md.index("| lpt |") and "paired over seeds" not in md
