"""docs/architecture.md stays true to the code: every file it names exists and every dotted
name of the package it names (``stages.results.write_results``) can be imported."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
# Code spans, and the lines of the one-run diagram (a fenced block).
SPANS = re.findall(r"`([^`\n]+)`", DOC) + DOC.split("```")[1].splitlines()
PACKAGE = {p.stem for p in (REPO / "spt_cli").iterdir() if p.suffix == ".py" or p.is_dir()}
PATHS = sorted({s for s in SPANS if re.fullmatch(r"(spt_cli|tests|conf|scripts|docs)/[\w/.]+", s)})
CONFIG = OmegaConf.load(REPO / "conf" / "config.yaml")
DOTTED = sorted(
    {
        m.group(0)
        for s in SPANS
        for m in re.finditer(r"\b[a-z_]+(\.[A-Za-z_]\w*)+", s)
        if m.group(0).split(".")[0] in PACKAGE
        and not m.group(0).endswith((".py", ".json", ".jsonl", ".yaml"))
        and OmegaConf.select(CONFIG, m.group(0)) is None  # a config key (search.anneal)
    }
)


def test_the_doc_names_files_and_code():
    assert len(PATHS) > 20 and len(DOTTED) > 30


@pytest.mark.parametrize("path", PATHS)
def test_named_file_exists(path):
    assert (REPO / path).exists(), path


def _resolve(dotted: str) -> object:
    parts = ["spt_cli", *dotted.split(".")]
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("dotted", DOTTED)
def test_named_code_exists(dotted):
    _resolve(dotted)


def test_search_doc_headroom_blocks_are_what_the_records_give():
    """docs/search.md's generated blocks (scripts/headroom.py) match the committed records."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "scripts/headroom.py", "report", "--check"],
        cwd=root, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_fill_block_replaces_only_the_marked_text():
    from spt_cli.files import fill_block

    text = "a\n<!-- x -->\nold\n<!-- /x -->\nb"
    assert fill_block(text, "x", "new\n") == "a\n<!-- x -->\nnew\n<!-- /x -->\nb"
    with pytest.raises(ValueError, match="<!-- y -->"):
        fill_block(text, "y", "new")
    with pytest.raises(ValueError):
        fill_block(text + text, "x", "new")
