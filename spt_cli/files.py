"""Atomic file writes: a reader never sees a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spt_cli.errors import RuntimeFailure


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The rename is atomic on POSIX, so concurrent readers (``spt-run table``) see either the old
    file or the complete new one. OS errors become one-line :class:`RuntimeFailure` messages.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise RuntimeFailure(
            f"cannot write {path}: {exc.strerror or exc}; choose a writable hydra.run.dir"
        ) from exc
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        reason = exc.strerror or str(exc)
        raise RuntimeFailure(
            f"cannot write {path}: {reason}; free disk space or change hydra.run.dir"
        ) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """A JSON object read from ``path``; None when the file is missing, unreadable, not JSON or
    not an object (for optional files such as a run's earlier results)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _json_default(obj: Any) -> Any:
    # numpy / torch scalars and paths show up in metric dicts and configs.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def fill_block(text: str, name: str, body: str) -> str:
    """``text`` with what lies between ``<!-- name -->`` and ``<!-- /name -->`` replaced by
    ``body`` (a document section a script rebuilds from records; the prose around it stays).
    A missing or repeated marker is a ValueError naming it."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"expected one '{start}' ... '{end}' block")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"
