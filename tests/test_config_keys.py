"""No dead or misleading keys: every key of the shipped config tree is read by some code."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONF_ROOTS = (REPO / "conf", REPO / "tests" / "conf")


def _source(path: Path) -> str:
    """A module's text; config.RULES left out: checking a key's value is not using the key."""
    text = path.read_text()
    if path.name == "config.py":
        text = re.sub(r"\nRULES: .*?\n}\n", "\n", text, flags=re.S)
    return text


SOURCE = "\n".join(_source(p) for p in (REPO / "spt_cli").rglob("*.py"))

# Subtrees handed over whole to another library, not read key by key here.
WHOLE = (
    "hydra",  # Hydra's own settings (run dirs, sweeper, launcher)
    "model.from_config",  # a transformers config dict for random-weight test models
)


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1]


def _keys() -> dict[str, set[Path]]:
    """Every key of the shipped tree and of the tests' own (tests/conf: the tiny models)."""
    found: dict[str, set[Path]] = {}
    for root, path in ((r, p) for r in CONF_ROOTS for p in r.rglob("*.yaml")):
        group = path.parent.relative_to(root).as_posix()
        data = yaml.safe_load(path.read_text()) or {}
        text = path.read_text()
        prefix = "" if group == "." or "@package _global_" in text else f"{group}."
        for key in _leaves(data):
            full = prefix + key
            if not full.startswith(WHOLE) and "defaults" not in full.split("."):
                found.setdefault(full, set()).add(path.relative_to(REPO))
    return found


# How code reads each section's keys (the names its readers give the section); a key counts as
# read when one of these forms appears in spt_cli/. Other sections: the key's name as an
# attribute or a string anywhere.
READERS = {
    "search": (r"scfg\.{leaf}\b", r"search\.{leaf}\b"),
    "trainer": (r"tcfg\.{leaf}\b", r"trainer\.{leaf}\b"),
    "method": (r"cfg\[\"{leaf}\"\]", r"spec\.{leaf}\b"),
    "controls": (r"controls\.{leaf}\b",),
    "data": (r"data\.{leaf}\b",),
}


def _read_by_code(key: str) -> bool:
    section, leaf = key.split(".", 1)[0], re.escape(key.rsplit(".", 1)[-1])
    forms = READERS.get(section, (r"(\.|[\"']){leaf}\b",)) if "." in key else (r"\.{leaf}\b",)
    return any(re.search(form.format(leaf=leaf), SOURCE) for form in forms)


def test_the_config_tree_has_keys_to_check():
    keys = _keys()
    assert "search.alpha_lr" in keys and "trainer.backbone_lr" in keys and len(keys) > 60


def test_every_config_key_is_read_by_some_code():
    dead = {k: sorted(map(str, v)) for k, v in _keys().items() if not _read_by_code(k)}
    assert not dead, f"keys in conf/ or tests/conf/ that no code reads: {dead}"


def test_a_key_nobody_reads_is_caught():
    assert not _read_by_code("search.no_code_reads_this_key")
    # The search's old `stochastic` switch: read by no code (the gates' own flag comes from
    # method.gate), which is why it went.
    assert not _read_by_code("search.stochastic")
    assert not _read_by_code("search.warmup_epochs")
    assert _read_by_code("search.weight_stop_loss") and _read_by_code("trainer.backbone_lr")


def test_no_call_site_default_for_a_shipped_setting():
    # Trainer, search, data, controls and table keys have their defaults in the yaml files;
    # code that read one with a fallback (``tcfg.get("lr", 5e-3)``) would hide a second default.
    section = r"(tcfg|scfg|cfg\.(trainer|search|data|controls|table|method|head))"
    fallback = re.compile(
        rf"{section}\.get\(\s*[\"'][\w.]+[\"']\s*,|getattr\(\s*{section}\s*,[^,)]+,"
        rf"|OmegaConf\.select\(\s*{section}[^)]*default="
    )
    found = [m.group(0) for m in fallback.finditer(SOURCE)]
    assert not found, found
    assert fallback.search('tcfg.get("lr", 5e-3)') and fallback.search("getattr(scfg, 'xi', 0)")
