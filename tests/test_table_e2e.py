"""A real 2-seed multirun on a tiny backbone, aggregated by `spt-run table`."""

from __future__ import annotations

import json

import pytest

from conftest import TINY, spt_run


@pytest.mark.slow
def test_two_seed_multirun_then_table(tmp_path):
    spt_run(
        ["search", "-m", "seed=13,21", *TINY, "trainer.max_steps=4", "logger=none",
         "hydra.sweep.dir=sweep"],
        tmp_path,
    )  # fmt: skip
    spt_run(
        ["train", "-m", "seed=13,21", "method=prompt_tuning", *TINY, "trainer.max_steps=4",
         "logger=none", "hydra.sweep.dir=sweep_pt"],
        tmp_path,
    )  # fmt: skip
    proc = spt_run(["table", "runs=sweep*", "hydra.run.dir=table"], tmp_path)
    out = tmp_path / "table"
    md = (out / "table.md").read_text()
    assert (out / "table.csv").exists() and (out / "table.tex").exists()
    assert (out / "layers.png").read_bytes()[:4] == b"\x89PNG"
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("|")}
    spt_row = next(v for k, v in rows.items() if k.lower().startswith("spt"))
    pt_row = next(v for k, v in rows.items() if k.lower().startswith("prompt"))
    # Mean ± std over the two seeds, computed from the runs' own results.json.
    accs = [
        100 * json.loads(p.read_text())["test"]["accuracy"]
        for p in sorted((tmp_path / "sweep").glob("*/results.json"))
    ]
    assert len(accs) == 2
    assert f"{sum(accs) / 2:.1f}" in spt_row and "±" in spt_row
    assert "±" in pt_row
    assert any(k.lower().startswith("majority") for k in rows)
    assert "table.md" in proc.stdout or "|" in proc.stdout
