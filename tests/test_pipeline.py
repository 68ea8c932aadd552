"""End to end through the console script on tiny random-weight backbones (offline, seconds):
search -> selection -> retrain -> test, baselines, retrain/eval from saved runs, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SPT_RUN, TINY, run_dirs, spt_run


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    """One tiny search (+retrain) with W&B offline; several tests read its run directory."""
    cwd = tmp_path_factory.mktemp("search")
    # [last_k, middle_k]: on candidates 1..3 at K = 2 both are [2, 3], the fallback's set too,
    # so one retrain (phase "retrain"); the K/2 sets of the default: test_search_keep_best.py
    args = ["search", *TINY, "trainer.max_steps=6", "search.budget=2",
            "search.keep_best_of=[last_k,middle_k]"]  # fmt: skip
    # WANDB_MODE unset: the default logger=wandb runs offline.
    proc = spt_run(args, cwd, env_extra={"WANDB_MODE": "offline"})
    (run,) = run_dirs(cwd, "search")
    return cwd, run, proc, args


def test_search_writes_every_output(search_run):
    _, run, proc, _ = search_run
    for name in (
        ".hydra/config.yaml",
        "metrics.jsonl",
        "results.json",
        "selected_layers.json",
        "gates.png",
        "artifact/artifact.json",
        "artifact/prompt_state.safetensors",
        "checkpoints/search.pt",
        "checkpoints/retrain.pt",
    ):
        assert (run / name).exists(), name
    assert run.relative_to(run.parents[4]).parts[:4] == ("search", "rte", "spt", "16-13")
    assert (run / "gates.png").read_bytes()[:4] == b"\x89PNG"
    sel = json.loads((run / "selected_layers.json").read_text())
    assert len(sel["layers"]) == 2 and set(sel["layers"]) <= {1, 2, 3}
    assert set(sel["probs"]) == {"1", "2", "3"}
    # Six steps leave the gates unseparated: search.fallback=last_k keeps the last 2 blocks
    # and says so; the top-2 gates stay in the diagnostics.
    ranked = sorted(sel["probs"], key=lambda k: (-sel["probs"][k], int(k)))
    assert sorted(int(k) for k in ranked[:2]) == sel["diagnostics"]["by_gates"]
    assert not sel["diagnostics"]["separated"]
    assert sel["layers"] == [2, 3] and sel["selection"]["rule"] == "last_k"
    assert "search.fallback=last_k" in sel["selection"]["reason"]
    assert "layers chosen by last_k: the gates did not separate" in proc.stderr
    res = json.loads((run / "results.json").read_text())
    assert res["selection"] == sel["selection"] and isinstance(res["degenerate"], dict)
    assert res["status"] == "completed" and res["method"] == "spt"
    assert res["selected_layers"] == sel["layers"] == res["prompt_layers"]
    assert 0.0 <= res["test"]["accuracy"] <= 1.0
    assert res["majority_baseline"]["test"]["accuracy"] == pytest.approx(146 / 277)
    # RTE test: 146 of 277 are entailment (label 0), which is also 16-shot train's tie-break
    assert res["majority_baseline"]["test_class"]["accuracy"] == pytest.approx(146 / 277)
    assert res["parameters"]["trainable"] > 0
    assert "torch" in res["versions"]
    assert "result: rte spt (seed 13)" in proc.stdout


def test_metrics_log_holds_gate_series_and_both_phases(search_run):
    _, run, _, _ = search_run
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    search = [r for r in lines if r["phase"] == "search"]
    assert [r["step"] for r in search] == list(range(1, 7))
    assert all(f"gates/layer_0{i}" in r for r in search for i in (1, 2, 3))
    assert all("search/gate_entropy" in r and "search/alpha_loss" in r for r in search)
    assert [r["step"] for r in lines if r["phase"] == "retrain"] == list(range(1, 7))


def test_wandb_offline_run_holds_gate_series(search_run):
    _, run, _, _ = search_run
    (wb,) = list(run.glob("wandb/offline-run-*/run-*.wandb"))
    blob = wb.read_bytes()
    # One history record per search step carries each layer's gate (binary protobuf log).
    assert blob.count(b"gates/layer_01") >= 6
    assert b"selected_layers" in blob


def test_same_config_and_seed_give_the_same_numbers(search_run):
    cwd, run, _, args = search_run
    spt_run([*args, "logger=none"], cwd)
    first, second = run_dirs(cwd, "search")
    a = json.loads((first / "results.json").read_text())
    b = json.loads((second / "results.json").read_text())
    assert first != second
    assert (a["selected_layers"], a["dev"], a["test"], a["gate_probs"]) == (
        b["selected_layers"],
        b["dev"],
        b["test"],
        b["gate_probs"],
    )


def test_eval_of_saved_artifact_reproduces_test_metrics(search_run):
    cwd, run, _, _ = search_run
    spt_run(["eval", f"artifact={run}/artifact", "dataset=rte", "shots=16", "logger=none"], cwd)
    (ev,) = run_dirs(cwd, "eval")
    got = json.loads((ev / "results.json").read_text())
    want = json.loads((run / "results.json").read_text())
    assert got["test"] == want["test"]
    assert got["dev"] == want["dev"]


def test_retrain_from_search_uses_its_layers(search_run):
    cwd, run, _, _ = search_run
    spt_run(["retrain", f"from_search={run}", *TINY, "trainer.max_steps=6", "logger=none"], cwd)
    (rt,) = run_dirs(cwd, "retrain")
    got = json.loads((rt / "results.json").read_text())
    want = json.loads((run / "results.json").read_text())
    assert got["prompt_layers"] == want["selected_layers"]
    # Same layers, data, seed and steps as the search's retrain phase: the same numbers.
    assert got["test"] == want["test"]


def test_every_baseline_trains_in_one_sweep(tmp_path):
    methods = "prompt_tuning,deep_prompt,ptuning_v2,lpt,random_layers,finetune"
    proc = spt_run(
        ["train", "-m", f"method={methods}", *TINY, "trainer.max_steps=2", "logger=none"], tmp_path
    )
    results = sorted(tmp_path.glob("outputs/multirun/train/*/*/results.json"))
    got = {json.loads(p.read_text())["method"]: json.loads(p.read_text()) for p in results}
    assert set(got) == set(methods.split(","))
    assert len({p.parent for p in results}) == 6  # one directory per job
    for name, res in got.items():
        assert res["status"] == "completed", name
        assert res["parameters"]["trainable"] > 0, name
    # Fine-tuning trains the backbone; prompt tuning only p x d input embeddings.
    assert (
        got["finetune"]["parameters"]["trainable"]
        > 100 * got["prompt_tuning"]["parameters"]["trainable"]
    )
    assert got["lpt"]["prompt_layers"] == [2]  # the middle of 4 blocks
    assert proc.returncode == 0


def _wait_for_checkpoint(path: Path, proc, timeout=300) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before its first checkpoint:\n{proc.stderr.read()}")
        if time.time() - t0 > timeout:
            raise AssertionError("no checkpoint in time")
        time.sleep(0.2)


@pytest.mark.slow
def test_sigkill_during_search_then_resume_gives_identical_results(tmp_path):
    # A long search and a short retrain, so the kill lands inside the search on any machine.
    args = [
        "search", *TINY, "search.max_steps=60", "trainer.max_steps=4",
        "trainer.checkpoint_every=3", "logger=none",
    ]  # fmt: skip
    spt_run([*args, "hydra.run.dir=full"], tmp_path)
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(
        [SPT_RUN, *args, "hydra.run.dir=killed"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_checkpoint(tmp_path / "killed/checkpoints/search.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed/results.json").exists()
    assert not (tmp_path / "killed/selected_layers.json").exists()
    spt_run([*args, "hydra.run.dir=killed", "resume=true"], tmp_path)
    full = json.loads((tmp_path / "full/results.json").read_text())
    resumed = json.loads((tmp_path / "killed/results.json").read_text())
    assert resumed["selected_layers"] == full["selected_layers"]
    assert resumed["gate_probs"] == full["gate_probs"]
    assert resumed["test"] == full["test"] and resumed["dev"] == full["dev"]
    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "killed/metrics.jsonl").read_text().splitlines()
        if '"search"' in x
    ]
    assert steps == list(range(1, 61))


@pytest.mark.slow
def test_real_minilm_search_rte_16shot_defaults(tmp_path):
    """The README's main job: real MiniLM weights, RTE 16-shot, default settings."""
    t0 = time.time()
    proc = spt_run(["search", "dataset=rte", "shots=16", "logger=none"], tmp_path)
    wall = time.time() - t0
    (run,) = run_dirs(tmp_path, "search")
    res = json.loads((run / "results.json").read_text())
    assert res["model"] == "minilm" and res["head"] == "classifier"
    assert len(res["selection"]["searched_layers"]) == 2  # K = round(6 / 3)
    assert len(res["selected_layers"]) in (1, 2)  # kept: a set at K or at K/2
    assert 0.0 <= res["test"]["accuracy"] <= 1.0
    print(f"wall {wall:.0f}s; {proc.stdout.strip().splitlines()[-1]}")
