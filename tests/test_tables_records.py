"""`spt-run table` over compact records (`records=DIR`), skipped sweep jobs (`same_as.json`),
empty cells that say why, and the row / column order."""

from __future__ import annotations

import json
from pathlib import Path

from table_runs import table_cfg, write_record, write_run

from spt_cli.tables import build_table, collect_runs, run_table, to_csv, to_markdown

RUNS = [  # (task, method, seed, test, stage)
    *[("rte", "prompt_tuning", s, v, "train") for s, v in ((13, 0.60), (21, 0.62), (42, 0.64))],
    *[("sst2", "prompt_tuning", s, v, "train") for s, v in ((13, 0.80), (21, 0.82), (42, 0.84))],
    *[("rte", "spt", s, v, "retrain") for s, v in ((13, 0.70), (21, 0.74), (42, 0.73))],
    ("sst2", "spt", 13, 0.85, "retrain"),
    ("rte", "head_only", 13, 0.55, "train"),
]


def as_runs(root: Path) -> Path:
    for i, (task, method, seed, value, stage) in enumerate(RUNS):
        write_run(root, f"{i}_{task}_{method}_16-{seed}", task=task, method=method, seed=seed,
                  value=value, stage=stage, majority=0.5, overrides=[f"seed={seed}"])  # fmt: skip
    return root


def as_records(root: Path) -> Path:
    for task, method, seed, value, stage in RUNS:
        write_record(root / "fewshot", task=task, method=method, seed=seed, value=value,
                     stage=stage, majority=0.5, overrides=[f"seed={seed}"])  # fmt: skip
    return root


def test_records_only_folder_gives_the_same_table(tmp_path: Path) -> None:
    from_runs = build_table(collect_runs(as_runs(tmp_path / "outputs")))
    records = collect_runs(as_records(tmp_path / "results"))
    assert len(records) == len(RUNS) and all(r.source == "record" for r in records)
    from_records = build_table(records)
    assert to_markdown(from_records) == to_markdown(from_runs)
    assert to_csv(from_records) == to_csv(from_runs)
    assert "| head_only | 1.00K | – | 55.0 (1/3) |" in to_markdown(from_records)


def test_run_dirs_and_their_records_count_once(tmp_path: Path) -> None:
    as_runs(tmp_path / "outputs")
    as_records(tmp_path / "results")
    both = build_table(collect_runs([tmp_path / "outputs", tmp_path / "results"]))
    group = both.groups[0]
    assert group.cells[("spt", "rte")].n == 3 and group.duplicates == []
    assert len(group.copies) == len(RUNS) and all(r.source == "record" for r in group.copies)
    assert f"counted once: {len(RUNS)}." in to_markdown(both)


def test_record_identity_numbers_and_unreadable_records(tmp_path: Path) -> None:
    path = write_record(tmp_path, task="mrpc", method="lpt", seed=21, value=0.8, dev=0.75,
                        metric="f1", overrides=["dataset=mrpc", "seed=21"])  # fmt: skip
    bad = path.with_name("train-16shot-seed13-0123456789ab.json")
    bad.write_text(json.dumps({"format": "spt-cli-record/9", "task": "mrpc"}))
    (tmp_path / "notes.json").write_text("{}")  # not named like a record: not read
    records = {r.path.name: r for r in collect_runs(tmp_path)}
    assert set(records) == {path.name, bad.name}
    rec = records[path.name]
    assert (rec.task, rec.method, rec.seed, rec.shots, rec.model) == (
        "mrpc",
        "lpt",
        21,
        16,
        "minilm",
    )
    assert (rec.test, rec.dev, rec.main_metric, rec.status) == (0.8, 0.75, "f1", "completed")
    assert records[bad.name].status == "unreadable"
    assert "spt-cli-record/9" in records[bad.name].reason
    assert [r.path.name for r in collect_runs(str(tmp_path / "mrpc" / "*" / "*.json"))] == sorted(
        [path.name, bad.name]
    )


def test_search_only_record_is_not_a_failure(tmp_path: Path) -> None:
    write_record(tmp_path, task="rte", method="spt", seed=13, stage="search", value=None,
                 selected_layers=[1, 3], gate_probs={"1": 0.9, "3": 0.8})  # fmt: skip
    group = build_table(collect_runs(tmp_path)).groups[0]
    assert group.failed == [] and [r.selected_layers for r in group.search_only] == [[1, 3]]


def skipped_job(sweep: Path, name: str, target: str, state: str = "completed") -> Path:
    """A job a rerun sweep skipped: .hydra/ and same_as.json, nothing else."""
    parts = name.split("_")  # NUM_TASK_METHOD_SHOTS-SEED, as hydra.sweep.subdir names it
    task, method, seed = parts[1], "_".join(parts[2:-1]), int(parts[-1].split("-")[1])
    job = write_run(sweep, name, task=task, method=method, seed=seed, results=False)
    (job / "same_as.json").write_text(json.dumps({"state": state, "same_as": target}))
    return job


def test_skipped_sweep_jobs_follow_their_pointer(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "outputs" / "multirun" / "train" / "first"
    original = write_run(first, "0_rte_lpt_16-13", task="rte", method="lpt", seed=13, value=0.6)
    record = write_record(tmp_path / "results" / "t", task="rte", method="lpt", seed=21,
                          value=0.7)  # fmt: skip
    rerun = tmp_path / "outputs" / "multirun" / "train" / "rerun"
    skipped_job(rerun, "0_rte_lpt_16-13", str(original))  # absolute run directory
    skipped_job(rerun, "1_rte_lpt_16-21", str(record.relative_to(tmp_path)))  # relative record
    skipped_job(rerun, "2_rte_lpt_16-42", "results/t/rte/lpt/gone.json")

    def check(records) -> None:
        status = {(r.seed, r.status) for r in records}
        assert status == {(13, "completed"), (21, "completed"), (42, "missing")}
        assert len(records) == 3  # each original once, however often it is reached
        assert not any(r.status == "incomplete" for r in records)

    check(collect_runs(rerun))
    check(collect_runs(tmp_path / "outputs"))  # the original also found directly
    check(collect_runs([tmp_path / "outputs", tmp_path / "results"]))
    group = build_table(collect_runs(rerun)).groups[0]
    assert group.cells[("lpt", "rte")].values == [0.6, 0.7]
    (gone,) = group.failed
    assert gone.reason == "skipped as a repeat of results/t/rte/lpt/gone.json, which is not there"
    md = to_markdown(build_table(collect_runs(rerun)))
    assert "killed" not in md


def test_skipped_job_moved_to_a_resumed_run(tmp_path: Path) -> None:
    # state "resumable": the job ran on in its old directory, which is where its result is.
    old = write_run(tmp_path / "a", "0_rte_lpt_16-13", task="rte", method="lpt", seed=13,
                    value=0.6)  # fmt: skip
    skipped_job(tmp_path / "b", "0_rte_lpt_16-13", str(old), state="resumable")
    records = collect_runs(tmp_path / "b")
    assert [(r.path, r.status) for r in records] == [(old.resolve(), "completed")]


def test_a_column_without_test_numbers_says_why(tmp_path: Path) -> None:
    write_record(tmp_path, task="rte", method="lpt", seed=13, value=0.6)
    write_record(tmp_path, task="qqp", method="lpt", seed=13, value=None, metric="f1")
    job = tmp_path / "sweep" / "1_qqp_spt_16-13"
    job.mkdir(parents=True)
    overrides = ["dataset=qqp", "method=spt", "seed=13", "shots=16", "model=minilm"]
    error = "qqp: no labelled test file in the mirror"
    failure = {"status": "failed", "error": error, "overrides": overrides}
    (job / "failed.json").write_text(json.dumps(failure))
    write_record(tmp_path, task="rte", method="spt", seed=13, value=0.7, stage="retrain")
    md = to_markdown(build_table(collect_runs(tmp_path)))
    assert "Empty cells (runs but no test number):" in md
    assert (
        "- QQP: no run has a test number: 1× completed but test has no finite f1; "
        "1× failed: qqp: no labelled test file in the mirror"
    ) in md
    assert "| lpt | 1.00K | – | 60.0 | 60.0 (1/2 tasks) |" in md  # QQP precedes RTE


def test_an_empty_cell_in_a_filled_column_says_why(tmp_path: Path) -> None:
    write_record(tmp_path, task="rte", method="lpt", seed=13, value=0.6)
    write_run(tmp_path / "runs", "0_rte_spt_16-13", task="rte", method="spt", seed=13,
              stage="retrain", status="failed")  # fmt: skip
    md = to_markdown(build_table(collect_runs(tmp_path)))
    assert "- spt / RTE: no test number: 1× status 'failed'" in md


def test_head_only_row_and_task_order(tmp_path: Path) -> None:
    for i, (method, task) in enumerate(
        [
            ("spt", "cr"),
            ("finetune", "rte"),
            ("head_only", "qqp"),
            ("zeta", "sst2"),
            ("prompt_tuning", "boolq"),
        ]  # fmt: skip
    ):
        write_record(tmp_path, task=task, method=method, seed=13, value=0.5 + i / 10)
    group = build_table(collect_runs(tmp_path)).groups[0]
    assert group.methods == ["head_only", "finetune", "prompt_tuning", "spt", "zeta"]
    assert group.tasks == ["sst2", "qqp", "rte", "cr", "boolq"]
    md = to_markdown(build_table(collect_runs(tmp_path)))
    assert md.index("| Majority") < md.index("| head_only") < md.index("| finetune")
    assert "| Method | Params | SST-2 | QQP | RTE | CR | BoolQ | Avg |" in md


def test_run_table_over_a_records_folder(tmp_path: Path) -> None:
    as_records(tmp_path / "results")
    summary = run_table(table_cfg(str(tmp_path / "results")), tmp_path / "out")
    assert summary["n_runs"] == len(RUNS) and summary["n_failed"] == 0
    assert {Path(f).name for f in summary["files"]} == {
        "table.md", "table.csv", "table.tex", "paired.csv",
    }  # fmt: skip


def test_test_class_majority_row_from_the_records_that_have_it(tmp_path: Path) -> None:
    from spt_cli.tables import to_latex

    root = tmp_path / "fewshot"
    # MRPC-like: train is balanced, so train's majority (the first label) scores low on a test
    # set that is mostly the other class; the older record has no test-class baseline.
    write_record(root, task="mrpc", method="lpt", seed=13, value=0.55, majority=0.158)
    write_record(root, task="mrpc", method="lpt", seed=21, value=0.57, majority=0.158,
                 majority_test=0.748)  # fmt: skip
    write_record(root, task="rte", method="lpt", seed=13, value=0.50, majority=0.527)
    table = build_table(collect_runs(root))
    md = to_markdown(table)
    assert "| Majority | – | 15.8 | 52.7 | 34.2 |" in md
    assert "| Majority (test class) | – | 74.8 | – | 74.8 (1/2 tasks) |" in md
    assert md.index("| Majority |") < md.index("| Majority (test class)") < md.index("| lpt")
    assert "the test set's own majority class" in md
    rows = [line.split(",") for line in to_csv(table).splitlines()]
    assert [r[2:5] for r in rows if r[2] == "Majority (test class)"] == [
        ["Majority (test class)", "mrpc", "accuracy"]
    ]
    assert "Majority (test class) & -- & 74.8 & -- & 74.8 (1/2 tasks) \\\\" in to_latex(table)


def test_no_test_class_row_without_records_that_have_it(tmp_path: Path) -> None:
    table = build_table(collect_runs(as_records(tmp_path / "results")))
    assert "Majority (test class)" not in to_markdown(table)


def test_table_seeds_keeps_only_those_seeds(tmp_path: Path, capsys) -> None:
    import pytest

    from spt_cli.errors import ConfigError

    root = as_records(tmp_path / "results")
    cfg = table_cfg(str(root))
    cfg.table.seeds = [13, 21]
    run_table(cfg, tmp_path / "out")
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| prompt_tuning | 1.00K | 81.0 ± 1.4 | 61.0 ± 1.4 | 71.0 |" in md  # seeds 13, 21
    assert "left out 3 run(s) of other seeds" in capsys.readouterr().err
    cfg.table.seeds = [7]
    with pytest.raises(ConfigError, match=r"table.seeds=\[7\]: no run of these seeds"):
        run_table(cfg, tmp_path / "out2")
    cfg.table.seeds = ["x"]
    with pytest.raises(ConfigError, match="give a list of integers"):
        run_table(cfg, tmp_path / "out3")
