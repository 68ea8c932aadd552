"""Smoke test of scripts/bench.py on a tiny backbone: it runs and reports every measure.

No timing assertions: speed targets are measured by the benchmark itself, not in tests.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import bench  # noqa: E402

STEPS = {
    "prompt_tuning",
    "peft_prompt_tuning",
    "spt_fixed_mid",
    "deep_prompt",
    "search_first",
    "search_second",
    "search_second_forward",
    "mm_reference",
    "epoch_nocache",
    "epoch_cache",
}
RATIOS = {"P1", "P2", "P3_first", "P3_second", "P3_second_forward", "P4", "P6", "P6_of_bound",
          "e2e_s", "retrain_vs_minilm"}  # fmt: skip


# MPNet (relative position bias) and Llama (a decoder: PEFT pools at the last token) too.
@pytest.mark.parametrize("name", ["tiny-bert", "tiny-mpnet", "tiny-llama"])
def test_bench_quick_reports_every_measure(tmp_path, name):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "scripts" / "bench.py"), "--model", name]
    cmd += ["--repeats", "1", "--quick", "--batch", "4", "--length", "32", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"model", "machine", "steps", "flops", "ratios", "targets", "met", "memory"} <= set(
        result
    )
    assert result["model"] == name and result["batch"] == 4 and result["length"] == 32
    assert STEPS <= set(result["steps"])
    for timing in result["steps"].values():
        assert timing["median_s"] > 0 and len(timing["times_s"]) == 1
    assert set(result["ratios"]) == RATIOS and set(result["targets"]) == RATIOS
    for key in RATIOS - {"e2e_s", "retrain_vs_minilm"}:  # with --e2e, --runs only
        assert result["ratios"][key] > 0, key
        assert isinstance(result["met"][key], bool)
    assert result["ratios"]["e2e_s"] is None and result["ratios"]["retrain_vs_minilm"] is None
    flops = result["flops"]
    assert flops["mm_reference_gflops"] > 0
    assert all(flops["per_step"][name] > 0 for name in STEPS if name in flops["per_step"])
    for name in STEPS - {"mm_reference", "epoch_nocache", "epoch_cache"}:
        assert result["memory"][name]["saved_mb"] > 0
        assert "peak_rss_mb" in result["memory"][name]  # measured with --rss only
    assert result["p6_by_layer"] and result["machine"]["threads"] >= 1
    assert result["p6_flop_bound"] > 1  # the cache saves FLOPs
    assert all(flops["per_step"][name] > 0 for name in ("epoch_nocache", "epoch_cache"))
    # The markdown table goes to stdout.
    assert "| P1 ours / PEFT prompt tuning step |" in proc.stdout


def test_per_run_times_runs_each_kind_on_the_last_k(monkeypatch):
    calls = []
    monkeypatch.setattr(bench, "spt_run_seconds", lambda args: calls.append(args) or 1.0)
    times = bench.per_run_times("mpnet", 12)
    assert set(times) == {"search_16shot_s", "retrain_16shot_s", "retrain_fulldata_s",
                          "minilm_retrain_16shot_s"}  # fmt: skip
    stages = [(c[0], next(a for a in c if a.startswith("experiment="))) for c in calls]
    assert stages == [("search", "experiment=cpu_fewshot"), ("retrain", "experiment=cpu_fewshot"),
                      ("retrain", "experiment=cpu_fulldata"),
                      ("retrain", "experiment=cpu_fewshot")]  # fmt: skip
    assert "layers=[8,9,10,11]" in calls[1] and "model=minilm" in calls[3]
    # the last K at the default budget on 12 and 6 blocks, every run on one thread
    assert all("trainer.num_threads=1" in c for c in calls)
    calls.clear()
    bench.per_run_times("minilm", 6)
    assert "layers=[4,5]" in calls[1] and "layers=[4,5]" in calls[2]


def test_p3_times_the_search_loops_own_step():
    """P3's search step is the search's BilevelStep (alpha step, then the Trainer's weight step
    with its schedule and lower-layer cache), not a hand-written copy of it."""
    from spt_cli.model import load_backbone
    from spt_cli.model.configs import model_config
    from spt_cli.search.bilevel import BilevelStep

    mcfg = model_config("tiny-bert")
    hf, tok = load_backbone(mcfg)
    model = bench.ours(mcfg, hf, tok, "spt", 4)
    w_feats, a_feats = (bench.few_shot_features(tok, 4, 16, seed) for seed in (0, 1))
    step = bench.search_step(model, "first", w_feats, a_feats, bench.loop_config(4), 0)
    bilevel = step.step_fn
    assert isinstance(bilevel, BilevelStep)
    gates = model.gate_probs().clone()
    step()
    step()
    assert bilevel.architect.steps == 2 and bilevel.trainer.scheduler.last_epoch == 2
    assert bilevel.trainer.cache is not None and bilevel.trainer.cache.hits > 0
    assert not torch.equal(model.gate_probs(), gates)


def test_flops_count_the_cpu_attention_kernel():
    """Eval-mode blocks run CPU scaled-dot-product attention, which FlopCounterMode alone
    counts as 0 FLOPs (P6's bound and the GFLOP/s of eval-mode blocks would be too low)."""
    q, k, v = (torch.randn(2, 3, 5, 4, requires_grad=True) for _ in range(3))
    attention = torch.nn.functional.scaled_dot_product_attention
    with torch.no_grad():
        forward = bench.count_flops(lambda: attention(q, k, v))
    assert forward == 2 * (2 * 2 * 3 * 5 * 5 * 4)  # q k^T and probs v
    assert bench.count_flops(lambda: attention(q, k, v).sum().backward()) > 2 * forward


def test_profile_step_splits_the_step_time_into_its_categories(tmp_path):
    out = tmp_path / "profile.json"
    cmd = [sys.executable, str(REPO / "scripts" / "profile_step.py"), "--model", "tiny-bert"]
    cmd += ["--steps", "1", "--batch", "4", "--length", "16", "--epoch", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    profiles = json.loads(out.read_text())["profiles"]
    assert set(profiles) == {"prompt_tuning", "epoch_nocache", "epoch_cache"}
    for prof in profiles.values():
        ms = prof["ms"]
        assert sum(ms.values()) >= prof["profiled_ms"] * 0.999  # every ms is somewhere
        assert ms["linear"] > 0 and ms["attention"] > 0 and ms["dropout"] > 0
        assert prof["flops"]["linear"] > 0 and prof["flops"]["attention"] > 0
    assert "| linear |" in proc.stdout


def test_the_minilm_reference_step_is_fed_minilm_tokens():
    """``--runs`` times MiniLM's step beside the backbone's: each model's memory is measured
    on its own tokenizer's batch (SmolLM2's ids index past MiniLM's vocabulary)."""
    import argparse

    args = argparse.Namespace(model="tiny-bert", batch=2, length=16, tokens=4)
    steps, models, batches, ctx = bench.build_steps(args, minilm_step=True)
    assert "minilm_prompt_tuning" in steps and set(batches) == set(steps) == set(models)
    own = bench.make_batch(bench.load_backbone(bench.model_config("minilm"))[1], 2, 16, 0)
    assert torch.equal(batches["minilm_prompt_tuning"]["input_ids"], own["input_ids"])
    assert all(batches[name] is ctx[3] for name in steps if name != "minilm_prompt_tuning")
    assert bench.saved_mb(models["minilm_prompt_tuning"], batches["minilm_prompt_tuning"]) > 0
