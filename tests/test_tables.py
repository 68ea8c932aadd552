"""`spt-run table`: aggregation of synthetic run directories (numbers checked by hand)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from table_runs import table_cfg, write_run

from spt_cli.errors import ConfigError
from spt_cli.tables import (
    build_table,
    collect_runs,
    format_params,
    run_table,
    to_csv,
    to_latex,
    to_markdown,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
    """Few-shot minilm sweep over {prompt_tuning, lpt, spt} x {rte, sst2} x seeds 13 21 42."""
    root = tmp_path / "outputs" / "multirun" / "train" / "2026-01-01_00-00-00"
    n = iter(range(100))

    def run(**kw):
        return write_run(root, f"{next(n)}_{kw['task']}_{kw['method']}_16-{kw['seed']}", **kw)

    for seed, value in zip((13, 21, 42), (0.60, 0.62, 0.64)):
        run(task="rte", method="prompt_tuning", seed=seed, value=value, majority=0.527)
    for seed, value in zip((13, 21, 42), (0.80, 0.82, 0.84)):
        run(task="sst2", method="prompt_tuning", seed=seed, value=value, majority=0.509)
    probs = {"1": 0.9, "2": 0.2, "3": 0.7, "4": 0.1, "5": 0.3}
    run(task="rte", method="spt", seed=13, value=0.70, trainable=12_345, selected_layers=[1, 3],
        gate_probs=probs, stage="retrain")  # fmt: skip
    run(task="rte", method="spt", seed=21, value=0.74, trainable=12_345, selected_layers=[1, 5],
        gate_probs={"1": 0.7, "5": 0.9}, stage="retrain")  # fmt: skip
    run(task="rte", method="spt", seed=42, status="failed", stage="retrain")
    run(task="sst2", method="spt", seed=13, value=0.85, trainable=12_345, selected_layers=[2],
        stage="retrain")  # fmt: skip
    # spt/sst2 seeds 21 and 42: never started (no directory at all)
    run(task="rte", method="lpt", seed=13, value=0.55, trainable=2_000_000)
    run(task="rte", method="lpt", seed=21, raw="{not json")
    run(task="sst2", method="lpt", seed=21, results=False)  # killed before writing results
    # lpt/rte seed 42 and lpt/sst2 seeds 13, 42: missing
    return root


def _records(root: Path):
    return collect_runs(root)


def test_collect_reads_completed_failed_and_incomplete(multirun: Path) -> None:
    records = collect_runs(multirun)
    assert len(records) == 13
    by_status = {}
    for rec in records:
        by_status.setdefault(rec.status, []).append(rec.ident())
    assert len(by_status["completed"]) == 10
    assert by_status["failed"] == ["spt / rte / seed 42"]
    assert by_status["unreadable"] == ["lpt / rte / seed 21"]  # identity from .hydra/config.yaml
    assert by_status["incomplete"] == ["lpt / sst2 / seed 21"]
    # deterministic order
    assert [r.path for r in records] == [r.path for r in collect_runs(multirun)]


def test_cells_mean_std_markers_and_order(multirun: Path) -> None:
    table = build_table(collect_runs(multirun))
    assert len(table.groups) == 1
    group = table.groups[0]
    assert (group.model, group.shots) == ("minilm", 16)
    assert group.methods == ["prompt_tuning", "lpt", "spt"]  # paper order, not alphabetical
    assert group.tasks == ["sst2", "rte"]

    pt = group.cells[("prompt_tuning", "rte")]
    assert pt.mean == pytest.approx(0.62)
    assert pt.std == pytest.approx(0.02)  # sample std (ddof=1) of .60 .62 .64
    assert (pt.n, pt.expected) == (3, 3)
    spt = group.cells[("spt", "rte")]
    assert spt.mean == pytest.approx(0.72)
    assert spt.std == pytest.approx(0.0282843, abs=1e-6)  # sqrt(2 * 0.02**2 / 1)
    assert (spt.n, spt.expected) == (2, 3)
    one = group.cells[("spt", "sst2")]
    assert one.std is None and one.n == 1
    assert ("lpt", "sst2") not in group.cells

    md = to_markdown(table)
    lines = md.splitlines()
    assert lines[0] == "### minilm · 16-shot"
    assert "| Method | Params | SST-2 | RTE | Avg |" in lines
    assert "| Majority | – | 50.9 | 52.7 | 51.8 |" in lines
    assert "| prompt_tuning | 1.00K | 82.0 ± 2.0 | 62.0 ± 2.0 | 72.0 |" in lines
    assert "| lpt | 2.00M | – | 55.0 (1/3) | 55.0 (1/2 tasks) |" in lines
    assert "| spt | 12.3K | 85.0 (1/3) | 72.0 ± 2.8 (2/3) | 78.5 |" in lines
    # the order of rows in the file follows the method order
    assert (
        md.index("| Majority") < md.index("| prompt_tuning") < md.index("| lpt") < md.index("| spt")
    )


def test_failed_and_missing_runs_are_listed(multirun: Path) -> None:
    group = build_table(collect_runs(multirun)).groups[0]
    failed = {r.ident(): r.reason for r in group.failed}
    assert set(failed) == {"spt / rte / seed 42", "lpt / rte / seed 21", "lpt / sst2 / seed 21"}
    assert failed["spt / rte / seed 42"] == "status 'failed'"
    assert failed["lpt / sst2 / seed 21"] == "no results.json (killed?)"
    assert failed["lpt / rte / seed 21"].startswith("results.json unreadable")
    assert group.missing == [
        "lpt / sst2: no run for seed 13, 42",
        "lpt / rte: no run for seed 42",
        "spt / sst2: no run for seed 21, 42",
    ]
    md = to_markdown(build_table(collect_runs(multirun)))
    assert "Failed or incomplete runs (3), not averaged:" in md
    assert "- spt / rte / seed 42: status 'failed'" in md
    assert "Missing runs (3):" in md
    assert "- spt / sst2: no run for seed 21, 42" in md


def test_method_without_any_run_on_a_task(tmp_path: Path) -> None:
    write_run(tmp_path, "a", task="rte", method="spt", seed=13, value=0.7)
    write_run(tmp_path, "b", task="mrpc", method="lpt", seed=13, value=0.8, metric="f1")
    group = build_table(collect_runs(tmp_path)).groups[0]
    assert group.tasks == ["mrpc", "rte"]
    assert group.missing == ["lpt / rte: no runs", "spt / mrpc: no runs"]
    md = to_markdown(build_table(collect_runs(tmp_path)))
    assert "| spt | 1.00K | – | 70.0 | 70.0 (1/2 tasks) |" in md
    assert "MRPC f1, RTE accuracy" in md  # main metric named per task


def test_other_methods_and_tasks_sort_after_paper_ones(tmp_path: Path) -> None:
    for i, (method, task) in enumerate(
        [("zeta", "cola"), ("alpha", "boolq"), ("spt", "rte"), ("finetune", "sst2")]
    ):
        write_run(tmp_path, str(i), task=task, method=method, seed=1, value=0.5)
    group = build_table(collect_runs(tmp_path)).groups[0]
    assert group.methods == ["finetune", "spt", "alpha", "zeta"]
    assert group.tasks == ["sst2", "rte", "boolq", "cola"]


def test_mixed_shots_and_models_give_separate_tables(tmp_path: Path) -> None:
    write_run(tmp_path, "a", task="rte", method="spt", seed=13, value=0.70, shots=16)
    write_run(tmp_path, "b", task="rte", method="spt", seed=13, value=0.80, shots=0)
    write_run(tmp_path, "c", task="rte", method="spt", seed=13, value=0.90, model="roberta-large")
    table = build_table(collect_runs(tmp_path))
    assert [g.title for g in table.groups] == [
        "minilm · full data",
        "minilm · 16-shot",
        "roberta-large · 16-shot",
    ]
    assert [g.cells[("spt", "rte")].mean for g in table.groups] == [0.80, 0.70, 0.90]
    md = to_markdown(table)
    assert md.count("### ") == 3


def test_duplicate_seed_prefers_completed_retrain(tmp_path: Path) -> None:
    write_run(tmp_path, "1", task="rte", method="spt", seed=13, value=0.60, stage="search")
    write_run(tmp_path, "2", task="rte", method="spt", seed=13, value=0.70, stage="retrain")
    write_run(tmp_path, "3", task="rte", method="spt", seed=13, status="failed", stage="retrain")
    group = build_table(collect_runs(tmp_path)).groups[0]
    assert group.cells[("spt", "rte")].values == [0.70]
    assert group.failed == []
    assert sorted(r.path.name for r in group.duplicates) == ["1", "3"]
    assert "Duplicate runs ignored (2)" in to_markdown(build_table(collect_runs(tmp_path)))


def test_nested_test_splits_use_the_first(tmp_path: Path) -> None:
    run = write_run(tmp_path, "m", task="mnli", method="spt", seed=13, value=0.1)
    data = json.loads((run / "results.json").read_text())
    data["test"] = {"matched": {"accuracy": 0.61}, "mismatched": {"accuracy": 0.63}}
    (run / "results.json").write_text(json.dumps(data))
    group = build_table(collect_runs(tmp_path)).groups[0]
    assert group.cells[("spt", "mnli")].mean == pytest.approx(0.61)


def test_completed_without_metric_counts_as_failed(tmp_path: Path) -> None:
    write_run(tmp_path, "a", task="rte", method="spt", seed=13, value=None)
    write_run(tmp_path, "b", task="rte", method="spt", seed=21, value=float("nan"))
    group = build_table(collect_runs(tmp_path)).groups[0]
    assert group.cells == {}
    assert [r.status for r in group.failed] == ["no metric", "no metric"]


def test_glob_and_single_results_file(multirun: Path) -> None:
    records = collect_runs(str(multirun / "*_rte_prompt_tuning_*"))
    assert len(records) == 3 and all(r.method == "prompt_tuning" for r in records)
    one = collect_runs(multirun / "0_rte_prompt_tuning_16-13" / "results.json")
    assert [r.test for r in one] == [0.60]
    assert collect_runs(str(multirun / "nothing-*")) == []
    assert collect_runs(multirun / "does-not-exist") == []


def test_table_and_data_stage_dirs_are_skipped(tmp_path: Path) -> None:
    write_run(tmp_path, "a", task="rte", method="spt", seed=13, value=0.7)
    write_run(tmp_path, "t", task="rte", method="spt", seed=13, stage="table", results=False)
    write_run(tmp_path, "d", task="rte", method="spt", seed=21, stage="data", results=False)
    assert [r.path.name for r in collect_runs(tmp_path)] == ["a"]


def test_format_params() -> None:
    assert format_params(None) == "–"
    assert format_params(512) == "512"
    assert format_params(12_345) == "12.3K"
    assert format_params(1_234_567) == "1.23M"
    assert format_params(355_000_000) == "355M"
    assert format_params(1.5e9) == "1.50B"
    assert format_params(99_960) == "100K"  # rounds before choosing digits
    assert format_params(999_960) == "1.00M"  # ... and before choosing the unit
    assert format_params(9_996) == "10.0K"
    assert format_params(50_370) == "50.4K"


def test_csv_raw_numbers(multirun: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(build_table(collect_runs(multirun))))))
    spt_rte = next(r for r in rows if (r["method"], r["task"]) == ("spt", "rte"))
    assert float(spt_rte["mean"]) == pytest.approx(0.72)
    assert float(spt_rte["std"]) == pytest.approx(0.0282843, abs=1e-6)
    assert (spt_rte["n"], spt_rte["n_expected"], spt_rte["seeds"]) == ("2", "3", "13 21")
    assert spt_rte["metric"] == "accuracy" and spt_rte["shots"] == "16"
    spt_sst2 = next(r for r in rows if (r["method"], r["task"]) == ("spt", "sst2"))
    assert spt_sst2["std"] == ""  # one seed: no std
    majority = [r for r in rows if r["method"] == "Majority"]
    assert [(r["task"], float(r["mean"])) for r in majority] == [("sst2", 0.509), ("rte", 0.527)]
    avg = next(r for r in rows if (r["method"], r["task"]) == ("lpt", "Avg"))
    assert (avg["n"], avg["n_expected"]) == ("1", "2")


def test_latex_booktabs(multirun: Path) -> None:
    tex = to_latex(build_table(collect_runs(multirun)))
    for token in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}", "\\caption{"):
        assert token in tex
    assert "prompt\\_tuning & 1.00K & 82.0$_{\\pm 2.0}$ & 62.0$_{\\pm 2.0}$ & 72.0 \\\\" in tex
    assert "72.0$_{\\pm 2.8}$\\textsuperscript{2/3}" in tex
    assert "% - spt / rte / seed 42: status 'failed'" in tex


def test_run_table_writes_files(multirun: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "table_out"
    summary = run_table(table_cfg(str(multirun)), out)
    assert summary["n_runs"] == 13
    assert summary["n_failed"] == 3
    names = [Path(f).name for f in summary["files"]]
    assert names == ["table.md", "table.csv", "table.tex", "paired.csv", "layers.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temp files left
    md = (out / "table.md").read_text()
    assert capsys.readouterr().out == md
    assert "| spt | 12.3K |" in md
    assert (out / "layers.png").read_bytes()[:8] == PNG_MAGIC


def test_run_table_ignores_its_own_output_dir(multirun: Path) -> None:
    # `runs=outputs/**` can match the table run's own directory (which has .hydra/ but no
    # results.json); it must not be reported as a failed run.
    out = write_run(multirun, "table_run", task="x", method="y", seed=0, results=False)
    summary = run_table(table_cfg(str(multirun)), out)
    assert summary["n_runs"] == 13


def test_no_layers_png_without_selected_layers(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "a", task="rte", method="prompt_tuning", seed=13, value=0.6)
    summary = run_table(table_cfg(str(runs)), tmp_path / "out")
    assert [Path(f).name for f in summary["files"]] == ["table.md", "table.csv", "table.tex"]


def test_layers_png_for_mixed_methods(multirun: Path, tmp_path: Path) -> None:
    from spt_cli.tables.figure import _layer_rows, plot_layers

    write_run(multirun, "r", task="rte", method="random_layers", seed=13, value=0.6,
              selected_layers=[0, 23])  # fmt: skip
    table = build_table(collect_runs(multirun))
    rows = _layer_rows(table)
    assert [label for label, _ in rows] == ["RTE · random_layers", "SST-2 · spt", "RTE · spt"]
    path = tmp_path / "layers.png"
    assert plot_layers(table, path)
    assert path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("runs", [None, "", "  "])
def test_run_table_needs_runs(runs, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="table needs runs="):
        run_table(table_cfg(runs), tmp_path)


def test_run_table_nothing_matched_names_pattern(tmp_path: Path) -> None:
    pattern = str(tmp_path / "outputs" / "multirun" / "nope*")
    with pytest.raises(ConfigError, match="nope"):
        run_table(table_cfg(pattern), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failed_sweep_job_without_hydra_dir(tmp_path: Path) -> None:
    # The CLI removes a failed job's directory (.hydra included) and writes failed.json: the
    # identity then comes from the overrides, the sweep subdir name and multirun.yaml.
    sweep = tmp_path / "sweep"
    write_run(sweep, "0_rte_prompt_tuning_16-13", task="rte", method="prompt_tuning", seed=13,
              value=0.6)  # fmt: skip
    sweep_cfg = {"model": {"name": "minilm"}, "stage": {"name": "train"}, "seed": 13, "shots": 16}
    (sweep / "multirun.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(sweep_cfg)))
    job = sweep / "1_rte_prompt_tuning_16-21"
    job.mkdir()
    failure = {
        "status": "failed",
        "error": "loss is NaN at step 12\nmore",
        "overrides": ["seed=21", "experiment=cpu_fewshot"],
    }
    (job / "failed.json").write_text(json.dumps(failure))
    records = collect_runs(sweep)
    assert [(r.ident(), r.model, r.shots, r.status) for r in records] == [
        ("prompt_tuning / rte / seed 13", "minilm", 16, "completed"),
        ("prompt_tuning / rte / seed 21", "minilm", 16, "failed"),
    ]
    group = build_table(records).groups[0]
    assert [r.reason for r in group.failed] == ["failed: loss is NaN at step 12"]
    assert "60.0 (1/2)" in to_markdown(build_table(records))


def test_failed_json_beside_results_json_is_ignored(tmp_path: Path) -> None:
    run = write_run(tmp_path, "a", task="rte", method="spt", seed=13, value=0.7)
    (run / "failed.json").write_text(json.dumps({"status": "failed", "error": "x"}))
    assert [r.status for r in collect_runs(tmp_path)] == ["completed"]


def test_search_only_runs_feed_layers_not_cells(tmp_path: Path) -> None:
    write_run(tmp_path, "a", task="rte", method="spt", seed=13, stage="search", value=None,
              selected_layers=[2, 4], gate_probs={"2": 0.9, "4": 0.8})  # fmt: skip
    table = build_table(collect_runs(tmp_path))
    group = table.groups[0]
    assert group.cells == {} and group.failed == [] and group.missing == []
    assert [r.ident() for r in group.search_only] == ["spt / rte / seed 13"]
    md = to_markdown(table)
    assert "No run with a test result in this setting." in md
    assert "Search-only runs (1;" in md and "layers [2, 4]" in md
    summary = run_table(table_cfg(str(tmp_path)), tmp_path / "out")
    assert summary["n_failed"] == 0
    assert (tmp_path / "out" / "layers.png").read_bytes()[:8] == PNG_MAGIC
