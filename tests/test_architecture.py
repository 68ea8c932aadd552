"""The layering docs/architecture.md describes: imports point down, never up, and no module
imports itself back through another (no cycle)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "spt_cli"
# Lowest first; a module may import its own layer and the layers below it.
LAYERS = [
    {"spt_cli", "errors", "net", "files"},
    {"config", "runlog", "jobs", "rundir", "plots"},
    {"data", "metrics", "backbones"},
    {"model", "train"},
    {"search", "tables"},
    {"stages"},
    {"preflight", "cli"},
]


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _modules() -> dict[str, set[str]]:
    """module -> the spt_cli modules it imports (at any place in the file); ``from pkg import
    sub`` counts as importing the submodule ``pkg.sub``."""
    files = {_name(p): p for p in PACKAGE.rglob("*.py")}
    out = {}
    for name, path in files.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spt_cli"):
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(files)
                imported |= subs or {node.module}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("spt_cli")}
        out[name] = imported
    return out


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "spt_cli"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to the docs)")


def test_imports_point_down():
    upward = [
        f"{mod} -> {target}"
        for mod, targets in _modules().items()
        for target in targets
        if _layer(target) > _layer(mod)
    ]
    assert not upward, upward


def test_train_does_not_import_the_model():
    # The loop, cache and search see models through the TrainableModel protocol only.
    for mod, targets in _modules().items():
        if mod.startswith(("spt_cli.train", "spt_cli.search")):
            assert not any(t.startswith("spt_cli.model") for t in targets), mod


def test_no_import_cycle():
    modules = _modules()
    graph = {m: {t for t in ts if t in modules} for m, ts in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [])
