"""``selected_layers.json``: a search's selection, written once by the search and read by a
resumed search, ``retrain`` and ``controls`` (``from_search=<search run dir>``; ``controls``
also takes a search's record file, and re-derives its selection at the controls' budget)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spt_cli.errors import ConfigError
from spt_cli.files import read_json_object, write_json
from spt_cli.jobs import INTRODUCED

SELECTION_FILE = "selected_layers.json"


def write_selection(run_dir: Path, selection: dict[str, Any]) -> Path:
    """Write a search's selection (``layers``, ``probs``, ``selection``, ``diagnostics``, ...)."""
    return write_json(run_dir / SELECTION_FILE, selection)


def read_selection(run_dir: str | Path, missing_ok: bool = False) -> dict[str, Any] | None:
    """The selection a finished search wrote in ``run_dir``; a missing file is a ConfigError
    (``missing_ok``: None, for a resumed search that has not selected yet), and so is a file
    without a list of integer ``layers``."""
    path = Path(run_dir) / SELECTION_FILE
    if not path.exists():
        if missing_ok:
            return None
        raise ConfigError(
            f"from_search={run_dir} has no {SELECTION_FILE} (missing or unfinished search); "
            "point it at a finished spt-run search directory"
        )
    try:
        selection = json.loads(path.read_text(encoding="utf-8"))
        selection["layers"] = [int(x) for x in selection["layers"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{path} is not a valid selection file ({exc}); rerun the search"
        ) from exc
    return selection


def searched_layers(from_search: str | Path) -> list[int]:
    """The layers kept by the search in ``from_search`` (a search run directory)."""
    return read_selection(from_search)["layers"]


def kept_layers(run_dir: str | Path) -> list[int] | None:
    """The layers a search run's own retrain kept (``results.json``: with
    ``search.keep_best_of`` the best on dev of several sets, which may not be the searched
    one); None when the run did not retrain (``retrain=false``) or its results are unreadable."""
    results = read_json_object(Path(run_dir) / "results.json") or {}
    try:
        return [int(x) for x in results["selected_layers"]]
    except (KeyError, TypeError, ValueError):
        return None


def read_search(from_search: str | Path) -> dict[str, Any]:
    """A finished search's selection from its run directory (``selected_layers.json``) or its
    record (a ``spt-run search`` record file, e.g. under ``results/``), in the run
    directory's form: ``layers`` (the searched set), ``probs``, ``diagnostics``, ``config``."""
    path = Path(from_search)
    if not path.is_file():
        return read_selection(path)
    try:
        return search_from_record(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"from_search={path} is not a search record ({exc}); point it at a search run "
            "directory or a search's record file"
        ) from exc


def search_from_record(record: dict[str, Any]) -> dict[str, Any]:
    """A search record's selection in the run directory's form (see :func:`read_search`);
    a ValueError or KeyError when it is not the record of a finished SPT search."""
    if record.get("stage") != "search" or not record.get("gate_probs"):
        raise ValueError("not the record of a search with gates")
    # keep_best_of may have kept another set: the searched one is then named apart.
    chosen = (record.get("selection") or {}).get("searched_layers")
    layers = [int(x) for x in (chosen or record["selected_layers"])]
    return {"layers": layers, "probs": record["gate_probs"],
            "diagnostics": record["search_diagnostics"], "config": record["config"],
            "selection": record.get("selection")}  # fmt: skip


def gates_felt_k(search: dict[str, Any]) -> str | None:
    """Why a search's selection (its ``search`` config section) cannot be re-derived at
    another budget without searching again, or None when it can."""
    if search.get("threshold") is not None:
        return "search.threshold chose its layers"
    if str(search.get("gate_shift")) == "budget":
        return "its gates were held at K (search.gate_shift=budget)"
    if search.get("budget_penalty"):
        return "its gates felt K (search.budget_penalty)"
    return None


def selection_at(selection: dict[str, Any], budget: int, candidates: list[int]) -> list[int]:
    """The layers the search would have kept at budget K: its own when K is its budget, else
    re-derived from its final gates and ablation scores by its own rule (``search.select``,
    ``search.fallback``). A ConfigError when the search's gates depend on K (a budget-held
    gate shift or penalty) or a threshold chose its layers: those need a new search."""
    from spt_cli.search.select import derive_selection

    layers = selection["layers"]
    if budget == len(layers):
        return layers
    scfg = selection["config"]["search"]
    if why := gates_felt_k(scfg):
        raise ConfigError(
            f"the search chose {len(layers)} layers and {why}, so its choice at K={budget} "
            f"needs a new search: run spt-run search search.budget={budget}"
        )
    diag = selection.get("diagnostics") or {}
    probs = {int(k): float(v) for k, v in selection["probs"].items()}
    ablation = {int(k): float(v) for k, v in (diag.get("ablation_scores") or {}).items()}
    if sorted(probs) != sorted(candidates):
        raise ConfigError(
            f"the search's candidates {sorted(probs)} are not the controls' {candidates}; "
            "use the search's method.layers"
        )
    # A search from before search.fallback existed ran as its value from then (the one
    # jobs.INTRODUCED keeps for fingerprints): the top-K gates, whatever they did.
    fallback = scfg["fallback"] if "fallback" in scfg else INTRODUCED[("search", "fallback")][0]
    return derive_selection(probs, ablation, candidates, budget, str(scfg["select"]),
                            str(fallback))[0]  # fmt: skip
