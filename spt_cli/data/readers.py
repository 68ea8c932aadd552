"""Readers for the benchmark file layouts; each returns a list of `Example`.

- GLUE TSV (also LM-BFF k-shot TSV): tab-separated, quoting disabled (GLUE texts contain
  unbalanced quotes), columns read by header name, UTF-8 with an optional byte-order mark.
- LM-BFF csv (original/ and k-shot/ for mr, cr, mpqa, subj, trec): headerless `label,sentence`.
- SuperGLUE / FewGLUE JSONL: one JSON object a line.

Every file must be UTF-8 (all files of the mirror are): other bytes are a DataError naming the
file and line rather than a silent latin-1 guess. Blank lines are skipped. Errors name file,
line and the fix.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spt_cli.data.tasks import Example, TaskSpec
from spt_cli.errors import DataError

csv.field_size_limit(1 << 24)  # BoolQ/MultiRC passages exceed the csv module's 128 KiB default


def read_text(path: str | Path) -> str:
    """The file's text as UTF-8 (BOM stripped); DataError for a missing or non-UTF-8 file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"missing data file {path}; set data.root or SPT_DATA_DIR") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: byte 0x{data[exc.start]:02x} is not valid UTF-8; "
            "re-save the file as UTF-8"
        ) from None


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) without line ends; blank lines skipped.

    Splits on \\n only: str.splitlines() would also split on \\x85 or \\u2028 inside a text.
    """
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield number, line


def parse_label(task: TaskSpec, raw: Any, where: str) -> int | float:
    """A raw file label -> index into task.label_names (float score for regression)."""
    if task.is_regression:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise DataError(f"{where}: score '{raw}' of {task.name} is not a number") from None
    text = str(raw).lower() if isinstance(raw, bool) else str(raw).strip()
    try:
        return task.raw_labels.index(text)
    except ValueError:
        raise DataError(
            f"{where}: label '{raw}' is not a {task.name} label (valid: "
            f"{', '.join(task.raw_labels)}); fix the file or choose the matching dataset"
        ) from None


def read_glue_tsv(path: str | Path, task: TaskSpec, uid_prefix: str = "") -> list[Example]:
    """A GLUE (or LM-BFF k-shot) TSV file with labels.

    Columns are found by header name (MNLI copies differ in their columns); CoLA has no
    header and uses `task.tsv_columns`. A row with another column count than the header is an
    error, since a stray tab or quote would otherwise shift the label column.
    """
    lines = list(_lines(read_text(path)))
    numbers = [n for n, _ in lines]
    rows = list(csv.reader((line for _, line in lines), delimiter="\t", quoting=csv.QUOTE_NONE))
    if task.tsv_columns:
        header, body, body_numbers = list(task.tsv_columns), rows, numbers
    else:
        if not rows:
            raise DataError(f"{path}: empty file; expected a header line and rows")
        header, body, body_numbers = [c.strip() for c in rows[0]], rows[1:], numbers[1:]
    index = {name: i for i, name in enumerate(header)}
    text_fields = [f for f in task.text_fields if f]
    wanted = [*text_fields, task.label_field, *task.id_fields]
    missing = [name for name in wanted if name not in index]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(header)}); "
            f"is this a {task.name} file?"
        )
    examples = []
    for number, row in zip(body_numbers, body):
        where = f"{path}:{number}"
        if len(row) != len(header):
            raise DataError(f"{where}: expected {len(header)} columns, got {len(row)}")
        texts = [row[index[f]].strip() for f in text_fields]
        label = parse_label(task, row[index[task.label_field]], where)
        key = "-".join(row[index[f]].strip() for f in task.id_fields) or f"L{number}"
        examples.append(
            Example(texts[0], texts[1] if len(texts) > 1 else None, label, uid_prefix + key)
        )
    return examples


def read_lmbff_csv(path: str | Path, task: TaskSpec, uid_prefix: str = "") -> list[Example]:
    """An LM-BFF headerless `label,sentence` csv (quoted where needed; empty sentences kept,
    as LM-BFF keeps them, so sampling indices match the official files)."""
    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    examples = []
    try:
        for row in reader:
            number = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            where = f"{path}:{number}"
            if len(row) != 2:
                raise DataError(f"{where}: expected 2 columns (label,sentence), got {len(row)}")
            label = parse_label(task, row[0], where)
            examples.append(Example(row[1].strip(), None, label, f"{uid_prefix}L{number}"))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed csv ({exc})") from None
    return examples


def superglue_example(
    task: TaskSpec, row: dict[str, Any], uid: str, where: str, label_is_index: bool = False
) -> Example:
    """One SuperGLUE record (JSONL or Hub row) -> Example, rendering the task's text fields."""

    def field(key: str) -> str:
        if key not in row:
            raise DataError(f"{where}: missing field '{key}' for {task.name}")
        return str(row[key]).strip()

    name = task.name
    if name == "copa":
        question = field("question")
        text_a = f"{field('premise')} What was the {'cause' if question == 'cause' else 'effect'}?"
        text_b = f"{field('choice1').rstrip('.')} or {field('choice2')}"
    elif name == "wic":
        text_a = f"{field('sentence1')} {field('sentence2')}"
        text_b = field("word")
    else:
        text_a = field(task.text_fields[0])
        text_b = field(task.text_fields[1]) if task.is_pair else None
    if "label" not in row:
        raise DataError(f"{where}: no 'label' (test files carry none); use the train/val files")
    raw = row["label"]
    if label_is_index and not task.is_regression:
        label: int | float = int(raw)
    else:
        label = parse_label(task, raw, where)
    return Example(text_a, text_b, label, uid)


def read_superglue_jsonl(path: str | Path, task: TaskSpec, uid_prefix: str = "") -> list[Example]:
    """A SuperGLUE or FewGLUE JSONL file (one object a line; `idx` gives the uid)."""
    examples = []
    for number, line in _lines(read_text(path)):
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg}); fix or remove the line") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        key = row.get("idx", f"L{number}")
        examples.append(superglue_example(task, row, f"{uid_prefix}{key}", where))
    return examples


def read_file(path: str | Path, task: TaskSpec, uid_prefix: str = "") -> list[Example]:
    """Dispatch on the file type: .tsv GLUE, .csv LM-BFF, .jsonl SuperGLUE/FewGLUE."""
    suffix = Path(path).suffix
    if suffix == ".tsv":
        return read_glue_tsv(path, task, uid_prefix)
    if suffix == ".csv":
        return read_lmbff_csv(path, task, uid_prefix)
    if suffix == ".jsonl":
        return read_superglue_jsonl(path, task, uid_prefix)
    raise DataError(f"{path}: unknown file type '{suffix}' (expected .tsv, .csv or .jsonl)")
