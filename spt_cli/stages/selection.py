"""``selected_layers.json``: a search's selection, written once by the search and read by a
resumed search, ``retrain`` and ``controls`` (``from_search=<search run dir>``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spt_cli.errors import ConfigError
from spt_cli.files import write_json

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
